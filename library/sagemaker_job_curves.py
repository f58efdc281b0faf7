#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_job_curves
short_description: Plot a SageMaker training job's metrics from its log, as SageMaker records them
version_added: "1.0.0"
description:
  - Runs each of O(metric_definitions) over each line of the job's saved log (O(log_file), as the action plugin of
    M(sagemaker_training_job) saves it), taking the regex's first group as the value, in log order. That is how
    SageMaker records a job's metrics from its CloudWatch log in AWS, and how local mode reads the container log.
  - Writes the series as JSON (O(metrics_file)) and plots them as a PNG (O(dest)), one panel per metric, with
    matplotlib in the Python of O(python) (the training environment, which draws the hosts' C(curves.png) too).
  - Changed only when the series change (or the PNG is missing). A log without any metric writes nothing.
author:
  - dlfleet maintainers (@dlfleet)
options:
  log_file:
    description: The job's log on the controller.
    type: path
    required: true
  metric_definitions:
    required: true
  dest:
    description: The PNG to write.
    type: path
    required: true
  metrics_file:
    description: The series as JSON. Defaults to O(dest) with C(.json) in place of C(.png).
    type: path
  job:
    description: The job's name, for the title.
    type: str
    required: true
  mode:
    description: Where the job ran, for the title.
    type: str
    choices: [aws, local]
    default: aws
  python:
    description: An interpreter that has matplotlib (the training environment's).
    type: str
    default: python3
  instance_count:
    description:
      - The job's instance count. With more than one, every line of the log is labelled C([algo-N]) and only the
        first instance's lines (C([algo-1])) give the series, as SageMaker records a job's metrics.
      - Left out, it is told from the log's first line.
    type: int
attributes:
  check_mode:
    support: full
    details: Reports whether the figure would change, and writes nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller, on its files.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - sagemaker_job.metric_definitions
"""

EXAMPLES = r"""
- name: Plot the training job's metrics
  sagemaker_job_curves:
    log_file: artifacts/run-1/sagemaker/training-job.log
    metric_definitions:
      - {name: validation-accuracy, regex: "validation-accuracy=([0-9.]+);"}
    dest: artifacts/run-1/sagemaker/training-curves.png
    job: cifar10-resnet20-001
    python: .venv-train/bin/python
    instance_count: 2
"""

RETURN = r"""
metrics:
  description: Number of points per metric.
  returned: always
  type: dict
  sample: {validation-accuracy: 3, train-loss: 24}
final:
  description: Last value of each metric.
  returned: always
  type: dict
  sample: {validation-accuracy: 0.41}
png:
  description: The PNG, or null when the log had no metric.
  returned: always
  type: str
metrics_json:
  description: The series' JSON file, or null when the log had no metric.
  returned: always
  type: str
"""

import inspect
import json
import os
import re
import shutil
import subprocess
import tempfile

from ansible.module_utils import dlfleet_sagemaker_curves as curves
from ansible.module_utils.basic import AnsibleModule

PLOT_TIMEOUT = 300


def check(params: dict) -> None:
    """Bad input is named before anything is read or written."""
    if not os.path.isfile(params["log_file"]):
        raise ValueError(f"log_file {params['log_file']!r} does not exist: run the training job with log_file set "
                         f"(sagemaker_training_job's action plugin saves it), or point log_file at the job's log")
    for metric in params["metric_definitions"]:
        try:
            regex = re.compile(metric["regex"])
        except re.error as err:
            raise ValueError(f"metric_definitions[{metric['name']}].regex {metric['regex']!r}: {err}") from None
        if regex.groups < 1:
            raise ValueError(f"metric_definitions[{metric['name']}].regex {metric['regex']!r} has no group: put the "
                             f"value in parentheses")
    if params["instance_count"] is not None and params["instance_count"] < 1:
        raise ValueError(f"instance_count={params['instance_count']} must be 1 or more: give the job's instance "
                         f"count (sagemaker_instance_count), or leave it out")
    python = params["python"]
    if not (shutil.which(python) if os.sep not in python else os.access(python, os.X_OK)):
        raise ValueError(f"python {python!r} is not an executable Python: point it at the training environment's "
                         f"interpreter, which has matplotlib (sagemaker_local_python)")


def draw(python: str, data: dict, dest: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(data, fh)
    try:
        proc = subprocess.run([python, "-c", inspect.getsource(curves), fh.name, dest], capture_output=True,
                              text=True, timeout=PLOT_TIMEOUT, check=False)
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        raise ValueError(f"plotting with {python} failed (rc={proc.returncode}): {proc.stderr.strip()[-1500:]}. "
                         f"The interpreter needs matplotlib (the training environment has it)")


def ensure(params: dict, check_mode: bool) -> dict:
    check(params)
    dest = params["dest"]
    metrics_file = params["metrics_file"] or re.sub(r"\.png$", "", dest) + ".json"
    series, cut = curves.log_series(params["log_file"], params["metric_definitions"], params["instance_count"])
    data = {"job": params["job"], "mode": params["mode"], "log_file": os.path.basename(params["log_file"]),
            "metrics": series, "cut": cut}
    result = {"changed": False, "metrics": {k: len(v) for k, v in series.items()},
              "final": {k: v[-1] for k, v in series.items()}, "png": dest if series else None,
              "metrics_json": metrics_file if series else None}
    if not series:
        return result
    try:
        with open(metrics_file) as fh:
            before = json.load(fh)
    except (OSError, ValueError):
        before = None
    if before == data and os.path.exists(dest):
        return result
    result["changed"] = True
    result["diff"] = {"before": {"metrics": {k: len(v) for k, v in ((before or {}).get("metrics") or {}).items()}},
                      "after": {"metrics": result["metrics"]}}
    if check_mode:
        return result
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    draw(params["python"], data, dest)
    tmp = f"{metrics_file}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, metrics_file)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            log_file=dict(type="path", required=True),
            metric_definitions=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True), regex=dict(type="str", required=True))),
            dest=dict(type="path", required=True),
            metrics_file=dict(type="path"),
            job=dict(type="str", required=True),
            mode=dict(type="str", default="aws", choices=["aws", "local"]),
            python=dict(type="str", default="python3"),
            instance_count=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    try:
        result = ensure(module.params, module.check_mode)
    except (ValueError, OSError, subprocess.TimeoutExpired) as err:
        module.fail_json(msg=str(err))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
