#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_job_progress
short_description: One look at a running SageMaker job, what changed and its new log lines
version_added: "1.0.0"
description:
  - Waits at most O(timeout) seconds for something new about the training or tuning job O(name), and returns it.
    For a training job, new secondary-status transitions, a status change and the log lines written since
    O(cursor). For a tuning job, its counters and best objective when they change.
  - The log is CloudWatch Logs in AWS (group C(/aws/sagemaker/TrainingJobs), one stream per instance, read with
    each stream's forward token so that no line comes twice) and the container log of a local job
    (O(instance_type=local)).
  - The action plugins of M(sagemaker_training_job) and M(sagemaker_tuning_job) call it in a loop to print a job's
    progress as it comes. It reads only, and changes nothing.
  - CloudWatch Logs shows a line some seconds after it was written, so a job's last lines can come after its end.
    The action plugins read on after a job has ended, one poll apart, until a look brings no new line.
author:
  - dlfleet maintainers (@dlfleet)
options:
  kind:
    description: What O(name) is.
    type: str
    choices: [training, tuning]
    default: training
  name:
    description: The job's name.
    type: str
    required: true
  instance_type:
    description: The job's instance type; V(local) or V(local_gpu) read the local job under O(local_dir).
    type: str
  local_dir:
    description: Local mode state, as given to the job's module.
    type: path
    default: ~/.dlfleet/sagemaker-local
  local_python:
    description: Local mode interpreter, as given to the job's module (only recorded here).
    type: str
    default: python3
  cursor:
    description: Where the last look stopped reading the log (RV(cursor) of the last call); empty reads from the start.
    type: dict
    default: {}
  seen:
    description: What the last look had seen (RV(seen) of the last call); empty reports every transition.
    type: dict
    default: {}
  timeout:
    description: Longest wait for something new, in seconds; V(0) looks once.
    type: int
    default: 30
  limit:
    description: Most log lines returned by one call; the rest come with the next (RV(more)).
    type: int
    default: 1000
  read_log:
    description: Read the training job's log (V(false) reports the status only).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_aws_read
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Look at a training job for up to 30 seconds
  sagemaker_job_progress:
    name: cifar10-resnet20-001
    region: us-east-1
    cursor: "{{ last.cursor | default({}) }}"
    seen: "{{ last.seen | default({}) }}"
  register: last
"""

RETURN = r"""
status:
  description: The job's status (TrainingJobStatus or HyperParameterTuningJobStatus).
  returned: always
  type: str
  sample: InProgress
terminal:
  description: Whether the job has ended (Completed, Failed or Stopped).
  returned: always
  type: bool
messages:
  description: What changed, as the SageMaker SDK prints it (C(Starting - Preparing the instances for training)).
  returned: always
  type: list
  elements: str
lines:
  description:
    - New log lines, oldest first.
    - A job on several instances (its C(ResourceConfig.InstanceCount)) prefixes every line with C([algo-N]).
  returned: always
  type: list
  elements: str
more:
  description: Whether more log lines were waiting than O(limit) allowed.
  returned: always
  type: bool
cursor:
  description: Pass it back as O(cursor) to read on from here.
  returned: always
  type: dict
seen:
  description: Pass it back as O(seen) to hear only of later changes.
  returned: always
  type: dict
best_training_job:
  description: The tuning job's best training job so far.
  returned: with kind=tuning
  type: str
log_error:
  description: Why the log could not be read (for example a missing logs:GetLogEvents permission); the status still is.
  returned: when the log could not be read
  type: str
"""

import time

from ansible.module_utils import dlfleet_sagemaker_logs as logs
from ansible.module_utils.dlfleet_aws import AWS_ERRORS
from ansible.module_utils.dlfleet_sagemaker import TRAINING_TERMINAL, TUNING_TERMINAL, SageMakerError, is_local
from ansible.module_utils.dlfleet_sagemaker_backend import backend_for
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def instance_count(record: dict) -> int:
    """The training job's InstanceCount (its lines are labelled [algo-N] when it is more than one)."""
    try:
        return max(1, int((record.get("ResourceConfig") or {}).get("InstanceCount") or 1))
    except (TypeError, ValueError):
        return 1


def look(backend, params: dict, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Describe the job (and read its log) until something is new, it has ended, or the timeout is over."""
    kind, name = params["kind"], params["name"]
    describe = backend.describe_training_job if kind == "training" else backend.describe_tuning_job
    terminal_states = TRAINING_TERMINAL if kind == "training" else TUNING_TERMINAL
    status_key = "TrainingJobStatus" if kind == "training" else "HyperParameterTuningJobStatus"
    news = logs.training_news if kind == "training" else logs.tuning_news
    deadline = clock() + max(0, params["timeout"])
    cursor, seen = dict(params["cursor"] or {}), dict(params["seen"] or {})
    messages: list[str] = []
    lines: list[str] = []
    more = False
    log_error = None
    while True:
        record = describe(name)
        if record is None:
            raise SageMakerError(f"{kind} job {name!r} does not exist (region {backend.module.region}): start it "
                                 f"first, or check the name and region", code="ResourceNotFound")
        found, seen = news(record, seen)
        messages += found
        status = record.get(status_key, "Unknown")
        terminal = status in terminal_states
        if kind == "training" and params["read_log"] and log_error is None:
            try:
                got, cursor, more = backend.training_log_since(name, cursor, params["limit"] - len(lines), terminal,
                                                               instance_count(record))
                lines += got
            except AWS_ERRORS as err:
                log_error = f"the job's log could not be read: {err}"
        if messages or lines or terminal or more or clock() >= deadline:
            break
        sleep(min(backend.look_seconds, max(0.0, deadline - clock())))
    result = {"changed": False, "status": status, "terminal": terminal, "messages": messages, "lines": lines,
              "more": more, "cursor": cursor, "seen": seen}
    if kind == "tuning":
        result["best_training_job"] = seen.get("summary", {}).get("best_training_job")
    if log_error:
        result["log_error"] = log_error
    return result


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=dict(
            kind=dict(type="str", default="training", choices=["training", "tuning"]),
            name=dict(type="str", required=True),
            instance_type=dict(type="str"),
            local_dir=dict(type="path", default="~/.dlfleet/sagemaker-local"),
            local_python=dict(type="str", default="python3"),
            cursor=dict(type="dict", default={}),
            seen=dict(type="dict", default={}),
            timeout=dict(type="int", default=30),
            limit=dict(type="int", default=1000),
            read_log=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["limit"] < 1 or params["timeout"] < 0:
        module.fail_json(msg=f"limit={params['limit']} must be at least 1 and timeout={params['timeout']} 0 or more")
    try:
        local = is_local(params["instance_type"])
        if not local and not module.region:
            raise SageMakerError("no AWS region: set `region` or AWS_REGION / AWS_DEFAULT_REGION", code="NoRegion")
        backend = backend_for(module, local)
        result = look(backend, params)
    except SageMakerError as err:
        module.fail_json(**err.fail_json_kwargs())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
