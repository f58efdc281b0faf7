#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_gpu_facts
short_description: Gather NVIDIA GPU facts from nvidia-smi, and judge the host's GPU health
version_added: "1.0.0"
description:
  - Runs C(nvidia-smi) (the summary table, for the driver and CUDA versions) and
    C(nvidia-smi --query-gpu=... --format=csv,noheader,nounits) (one line per GPU), and returns count, names,
    memory, driver and CUDA versions, persistence mode, uncorrected ECC errors, temperature and utilisation.
  - A host without C(nvidia-smi) is a CPU-only host, reported with O(ignore_missing) as C(present=false) and
    C(count=0), not as a failure. A C(nvidia-smi) that fails (no driver loaded) is reported in C(error).
  - With O(expected_count) and/or O(min_driver_version) it lists, in RV(health_problems), what makes the host
    unfit to train on (fewer GPUs than the instance type promises, an older driver, uncorrected ECC errors);
    the module itself never fails on them, the caller decides (role dlami's health gate does).
  - Reads only. The parsing lives in module_utils/dlfleet_nvidia.py, which also runs alone with plain python.
options:
  nvidia_smi:
    description: The nvidia-smi program, by name (looked up in PATH) or path.
    type: str
    default: nvidia-smi
  ignore_missing:
    description: Report a host without nvidia-smi as CPU-only. With V(false) such a host fails.
    type: bool
    default: true
  expected_count:
    description: GPUs the instance type promises (for example 8 on p3.16xlarge); a different count is a problem.
    type: int
  min_driver_version:
    description: Lowest acceptable NVIDIA driver version (for example V(460.27.03), CUDA 11.2's minimum).
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details: Reads only; there is never a change to show.
  facts:
    support: full
  platform:
    platforms: posix
author:
  - dlfleet maintainers (@dlfleet)
"""

EXAMPLES = r"""
- name: Gather NVIDIA GPU facts
  nvidia_gpu_facts:

- name: Gather facts and judge a p3.8xlarge (4 V100) with a CUDA 11.2 capable driver
  nvidia_gpu_facts:
    expected_count: 4
    min_driver_version: "460.27.03"
  register: gpu

- name: Fail a host whose GPUs are not what was paid for
  ansible.builtin.assert:
    that: gpu.health_problems | length == 0
    fail_msg: "{{ gpu.health_problems | join('; ') }}"
"""

RETURN = r"""
ansible_facts:
  description: The facts, under C(nvidia_gpu).
  returned: always
  type: dict
  contains:
    nvidia_gpu:
      description: Same as RV(nvidia_gpu).
      type: dict
      returned: always
nvidia_gpu:
  description: GPU facts. Lists are per GPU, in index order; a value nvidia-smi does not report is null.
  returned: always
  type: dict
  contains:
    present:
      description: Whether any GPU is visible.
      type: bool
    count:
      description: Number of GPUs.
      type: int
      sample: 8
    names:
      description: Product names.
      type: list
      elements: str
      sample: ["Tesla V100-SXM2-16GB"]
    memory_total_mib:
      description: Memory per GPU, MiB.
      type: list
      elements: int
    driver_version:
      description: NVIDIA driver version.
      type: str
      sample: "535.161.08"
    cuda_version:
      description: Highest CUDA version the driver supports.
      type: str
      sample: "12.2"
    persistence_mode:
      description: Persistence mode on, per GPU.
      type: list
      elements: bool
    ecc_uncorrected_volatile:
      description: Uncorrected ECC errors since the driver loaded, per GPU.
      type: list
      elements: int
    ecc_uncorrected_aggregate:
      description: Uncorrected ECC errors over the board's life, per GPU.
      type: list
      elements: int
    temperature_c:
      description: GPU temperature, degrees Celsius.
      type: list
      elements: int
    utilization_gpu_pct:
      description: GPU utilisation, percent.
      type: list
      elements: int
    source:
      description: Where the per-GPU facts came from, C(query) (CSV) or C(summary) (table); null without GPUs.
      type: str
    error:
      description: Why nvidia-smi failed, when it did (then the host counts no GPU and this is a health problem).
      type: str
    query_error:
      description: Why the CSV query failed while the summary worked (the facts then come from the summary).
      type: str
    gpus:
      description: Every fact per GPU (index, name, uuid, bus_id, memory, ECC, temperature, power...).
      type: list
      elements: dict
health_problems:
  description: What makes the host unfit, one sentence each; empty when healthy or when nothing was asked.
  returned: always
  type: list
  elements: str
  sample: ["7 GPU(s) visible, the instance type promises 8: a GPU fell off the bus ..."]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.dlfleet_nvidia import NvidiaSmiError, gather, health_problems


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            ignore_missing=dict(type="bool", default=True),
            expected_count=dict(type="int"),
            min_driver_version=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["expected_count"] is not None and params["expected_count"] < 0:
        module.fail_json(msg=f"expected_count={params['expected_count']} is negative; give the GPUs per instance")

    def run(cmd: list[str]) -> tuple[int, str, str]:
        return module.run_command(cmd, environ_update={"LC_ALL": "C"})

    try:
        facts = gather(run, params["nvidia_smi"])
    except NvidiaSmiError as exc:
        module.fail_json(msg=f"cannot parse the output of {params['nvidia_smi']}: {exc}")
    if not facts["present"] and facts["error"] is None and not params["ignore_missing"]:
        module.fail_json(msg=f"{params['nvidia_smi']} not found on this host; install the NVIDIA driver or "
                             "set ignore_missing=true for a CPU-only host", nvidia_gpu=facts)
    problems = health_problems(facts, params["expected_count"], params["min_driver_version"])
    module.exit_json(changed=False, ansible_facts={"nvidia_gpu": facts}, nvidia_gpu=facts, health_problems=problems)


if __name__ == "__main__":
    main()
