"""Role dlami on localhost: the GPU health gate with a replaying nvidia-smi (no GPU on this machine, so the
GPU is mocked), and playbooks/configure.yml on the local inventory. The role on real hosts over SSH is
tested by its molecule scenario (roles/dlami/molecule/default)."""
from __future__ import annotations

import hashlib
import stat
import tempfile
from pathlib import Path

import yaml
from ansible.module_utils.dlfleet_nvidia import QUERY_FIELDS
from helpers import ROOT, run_playbook

FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"


def _mock_nvidia_smi(tmp_path: Path, fixture: str) -> tuple[Path, Path]:
    """An nvidia-smi replaying a real capture, logging `-pm` calls (there is no GPU here)."""
    log = tmp_path / "nvidia-smi.log"
    query = FIXTURES / fixture / "query.csv"
    script = tmp_path / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
case "$1" in
  "") cat {FIXTURES / fixture / 'summary.txt'} ;;
  --query-gpu={','.join(QUERY_FIELDS)}) {'cat ' + str(query) if query.exists() else 'exit 6'} ;;
  -pm) echo "$*" >> {log}; echo "Enabled persistence mode" ;;
  *) exit 2 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def _run_gate(tmp_path: Path, **role_vars):
    play = [{"name": "Gate", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Run the role's NVIDIA tasks",
                        "ansible.builtin.include_role": {"name": "dlami", "tasks_from": "nvidia.yml"},
                        "vars": {"dlami_become": False, **role_vars}}]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT / "tests", prefix=".tmp-play-",
                                     delete=False) as fh:
        yaml.safe_dump(play, fh)
    try:
        return run_playbook(fh.name)
    finally:
        Path(fh.name).unlink(missing_ok=True)


def _failure(run) -> str:
    return " ".join(r.get("msg", "") for _, _, r in run.all_results() if r.get("failed"))


def test_gate_passes_a_healthy_mocked_gpu_host(tmp_path):
    smi, _ = _mock_nvidia_smi(tmp_path, "h200-device")
    run = _run_gate(tmp_path, dlami_nvidia_smi=str(smi), dlami_expected_gpu_count=1)
    assert run.rc == 0, run.stdout[-3000:]
    facts = run.results("dlami : Gather NVIDIA GPU facts")["nvidia_gpu"]
    assert facts["names"] == ["NVIDIA H200"]


def test_gate_fails_a_mocked_host_missing_gpus_of_its_instance_type(tmp_path):
    smi, _ = _mock_nvidia_smi(tmp_path, "a100-580")
    run = _run_gate(tmp_path, dlami_nvidia_smi=str(smi), dlami_instance_type="p4d.24xlarge")
    assert run.rc != 0
    assert "fails the GPU health gate: 2 GPU(s) visible, the instance type promises 8" in _failure(run)


def test_gate_fails_a_mocked_gpu_with_an_old_driver(tmp_path):
    smi, _ = _mock_nvidia_smi(tmp_path, "k80-410")
    run = _run_gate(tmp_path, dlami_nvidia_smi=str(smi), dlami_instance_type="p2.xlarge")
    assert run.rc != 0
    assert "NVIDIA driver 410.104 is older than the minimum 460.27.03" in _failure(run)


def test_persistence_mode_is_turned_on_where_off_on_a_mocked_gpu(tmp_path):
    smi, log = _mock_nvidia_smi(tmp_path, "k80-410")   # persistence Off
    run = _run_gate(tmp_path, dlami_nvidia_smi=str(smi), dlami_min_driver_version="", dlami_gpu_persistence_mode=True)
    assert run.rc == 0, run.stdout[-3000:]
    assert log.read_text().split() == ["-pm", "1"]
    (tmp_path / "on").mkdir()
    smi, log = _mock_nvidia_smi(tmp_path / "on", "h200-device")   # already on: nothing to do
    run = _run_gate(tmp_path, dlami_nvidia_smi=str(smi), dlami_gpu_persistence_mode=True)
    assert run.rc == 0 and not log.exists()


def test_cpu_only_host_needs_require_gpu_false(tmp_path):
    missing = str(tmp_path / "no-nvidia-smi")
    run = _run_gate(tmp_path, dlami_nvidia_smi=missing, dlami_require_gpu=True)  # the local inventory says false
    assert run.rc != 0
    assert "has no usable NVIDIA GPU (nvidia-smi not found)" in _failure(run)
    assert "dlami_require_gpu: false" in _failure(run)
    run = _run_gate(tmp_path, dlami_nvidia_smi=missing, dlami_require_gpu=False)
    assert run.rc == 0
    assert "CPU-only" in run.results("dlami : Report a CPU-only host")["msg"]


def test_configure_playbook_on_the_local_inventory_stays_inside_the_project():
    bashrc = Path.home() / ".bashrc"
    before = hashlib.sha256(bashrc.read_bytes()).hexdigest() if bashrc.exists() else None
    facts_file = Path("/etc/ansible/facts.d/dlami.fact")
    had_facts = facts_file.exists()
    first = run_playbook("playbooks/configure.yml")
    assert first.rc == 0, first.stdout[-3000:]
    env = first.results("dlami : Set the env facts for later roles")["ansible_facts"]
    assert env["dlami_python"] == str(ROOT / ".run" / "envs" / "mxnet" / "bin" / "python")
    assert (ROOT / ".run" / "envs" / "mxnet" / "bin" / "python").exists()
    assert first.results("dlami : Check whether the env imports MXNet")["stdout"] == "1.9.1"
    second = run_playbook("playbooks/configure.yml")
    assert second.rc == 0 and second.changed == 0
    after = hashlib.sha256(bashrc.read_bytes()).hexdigest() if bashrc.exists() else None
    assert after == before
    assert facts_file.exists() == had_facts
