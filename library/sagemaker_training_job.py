#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_training_job
short_description: Run a SageMaker training job (framework script mode), in AWS or locally without docker
version_added: "1.0.0"
description:
  - Makes sure the training job O(name) exists with the given spec, and by default waits for it to finish.
  - The code in O(source_dir) is packed into a deterministic C(sourcedir.tar.gz) named by its SHA-256, so
    unchanged code is never uploaded twice. Uploads ask for server-side encryption (SSE-S3, or SSE-KMS with
    O(kms_key_id)).
  - Hyperparameters are JSON-encoded as the SageMaker framework containers expect, with C(sagemaker_program),
    C(sagemaker_submit_directory), C(sagemaker_region), C(sagemaker_container_log_level) and
    C(sagemaker_job_name) injected.
  - Job names are immutable. The same spec under an existing name is no change; another spec under that
    name is an error that lists what differs. Only tags can change on an existing job.
  - With O(instance_type=local) the job runs on this machine as a process of O(local_python), under the
    training container contract (C(/opt/ml) layout rooted in a work dir under O(local_dir), C(SM_*)
    variables, hyperparameters as command-line arguments, C(model.tar.gz) uploaded to O(output_path)).
    Its record is kept under O(local_dir); options, return values and errors are the same as in AWS.
  - O(state=absent) stops a job that is still running. SageMaker keeps finished jobs; there is no delete.
author:
  - dlfleet maintainers (@dlfleet)
options:
  name:
    description: Training job name, 1-63 letters, digits and hyphens.
    type: str
    required: true
  state:
    description:
      - V(present) creates the job (and waits, see O(wait)); V(absent) stops it if it is running.
      - To address a local job with V(absent), also give O(instance_type=local).
    type: str
    choices: [present, absent]
    default: present
  metric_definitions:
    default: []
  log_tail_lines:
    description: How many of the job's newest log lines to return (CloudWatch in AWS, the local log otherwise).
    type: int
    default: 20
notes:
  - Progress (status and secondary status changes) is returned in RV(status_changes) and
    RV(secondary_status_transitions), and written to the controller's log.
  - In local mode, VPC settings, network isolation and spot are recorded but not enforced (a local process has
    this machine's network and is never interrupted); file:// channels are hard-linked into the work dir, as
    the SageMaker SDK's local mode mounts them, so a script must not write into its input.
  - A C(requirements.txt) is not pip-installed in local mode; O(local_python) must already have what it lists.
attributes:
  action:
    support: full
    details: Its action plugin does O(follow) and O(log_file); the module alone refuses them.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Reports what would be created or stopped, and uploads nothing.
  diff_mode:
    support: full
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - sagemaker_job
  - sagemaker_job.follow
  - sagemaker_job.metric_definitions
  - dlfleet_tags
  - dlfleet_tags.tags
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Train on SageMaker (the seed chapter's MXNet estimator)
  sagemaker_training_job:
    name: cifar10-resnet20-001
    role_arn: arn:aws:iam::123456789012:role/SageMakerRole
    entry_point: train.py
    source_dir: training
    source_exclude: ["__pycache__", "*.pyc", ".*", requirements.txt]
    framework_version: "1.9.0"
    py_version: py38
    instance_type: ml.p3.2xlarge
    hyperparameters: {epochs: 30, batch-size: 1024, lr: 0.4}
    channels:
      - {name: training, uri: s3://my-bucket/data/cifar10}
    metric_definitions:
      - {name: validation-accuracy, regex: "validation-accuracy=([0-9.]+)"}
    output_path: s3://my-bucket/output
    use_spot: true
    max_run: 7200
    max_wait: 14400
    checkpoint_s3_uri: s3://my-bucket/checkpoints/cifar10-resnet20-001
    fleet: dlfleet-prod

- name: Train the same code on this machine, no docker
  sagemaker_training_job:
    name: cifar10-local-001
    entry_point: train.py
    source_dir: training
    instance_type: local
    local_python: .venv-train/bin/python
    local_dir: .run/sagemaker
    hyperparameters: {epochs: 1, dataset: synthetic}
    channels:
      - {name: training, uri: "file:///data/cifar10"}
    output_path: s3://my-bucket/output

- name: Stop a running job
  sagemaker_training_job:
    name: cifar10-resnet20-001
    state: absent
"""

RETURN = r"""
training_job:
  description: The DescribeTrainingJob answer in snake_case, with decoded C(hyperparameters) and C(tags).
  returned: when the job exists
  type: dict
  sample: {training_job_name: cifar10-001, training_job_status: Completed, hyperparameters: {epochs: 1}}
model_artifact:
  description: URI of the job's C(model.tar.gz).
  returned: always
  type: str
  sample: s3://my-bucket/output/cifar10-001/output/model.tar.gz
final_metrics:
  description: Last value of each metric definition.
  returned: always
  type: dict
  sample: {validation-accuracy: 0.91}
billable_seconds:
  description: Billable time of the job (spot savings included), in seconds.
  returned: always
  type: int
  sample: 412
status:
  description: TrainingJobStatus.
  returned: always
  type: str
  sample: Completed
secondary_status_transitions:
  description: The job's secondary status transitions, as C(Status - message) lines.
  returned: always
  type: list
  elements: str
  sample: ["Starting: Preparing the instances for training", "Training: Training in progress."]
status_changes:
  description: Status changes this task saw while waiting, as C(status/secondary) strings.
  returned: always
  type: list
  elements: str
  sample: ["InProgress/Starting", "InProgress/Training", "Completed"]
log_tail:
  description: The newest lines of the job's log (CloudWatch in AWS, the local log in local mode).
  returned: always
  type: list
  elements: str
source:
  description: The code archive, its SHA-256 and whether this run uploaded it.
  returned: with state=present
  type: dict
  sample: {uri: s3://my-bucket/output/code/3f2a.../sourcedir.tar.gz, sha256: 3f2a..., uploaded: false}
followed:
  description: What the action plugin showed and saved while it followed the job (with O(follow) or O(log_file)).
  returned: with follow or log_file, when the task waited
  type: dict
  contains:
    rounds: {description: Looks at the job (sagemaker_job_progress calls), type: int}
    lines: {description: Log lines saved in O(log_file), type: int}
    tail: {description: The newest log lines shown, type: list, elements: str}
    log_file: {description: The saved log, type: str}
    log_written: {description: Whether O(log_file) was (re)written, type: bool}
    status: {description: The job's status when the follow ended, type: str}
image_uri:
  description: The training image.
  returned: with state=present
  type: str
  sample: 763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-gpu-py38
"""

from ansible.module_utils.dlfleet_sagemaker import (
    common_spec,
    is_local,
    training_spec,
)
from ansible.module_utils.dlfleet_sagemaker_backend import run_module
from ansible.module_utils.dlfleet_sagemaker_logs import FOLLOW_SPEC, refuse_follow_without_plugin
from ansible.module_utils.dlfleet_sagemaker_training import ensure_absent, ensure_present
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main() -> None:
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        log_tail_lines=dict(type="int", default=20),
        **FOLLOW_SPEC,
        **training_spec(),
        **common_spec(),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["entry_point", "instance_type", "output_path"])],
        required_together=[("subnets", "security_group_ids")],
    )
    refuse_follow_without_plugin(module)
    run_module(module, lambda params: is_local(params["instance_type"]), ensure_present, ensure_absent, module.log)


if __name__ == "__main__":
    main()
