#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_tuning_job
short_description: Run a SageMaker hyperparameter tuning job, in AWS or locally without docker
version_added: "1.0.0"
description:
  - Makes sure the tuning job O(name) exists with the given spec, waits for it, and returns the best training
    job, its hyperparameters and its objective value.
  - The training definition takes the same options as M(sagemaker_training_job); O(hyperparameters) are the
    static ones, and O(parameter_ranges) the tuned ones (continuous, integer, categorical, with scaling).
  - Tuning job names are immutable. The same spec under an existing name is no change; another spec is an
    error that lists what differs. O(state=absent) stops a running tuning job.
  - With O(instance_type=local) the trials really run, one local training job each (see
    M(sagemaker_training_job)), at most O(max_parallel_jobs) at a time. The objective is read from each
    trial's log with the metric definitions. V(Grid) enumerates the categorical grid and V(Random) samples
    with the ranges' scaling. V(Bayesian) and V(Hyperband) have no local model, so they sample like V(Random)
    and a warning says so. O(early_stopping=Auto) stops a trial whose best objective so far is worse than the
    median of finished trials at the same epoch. With O(warm_start), parents must exist; their trials count
    for the overall best job.
author:
  - dlfleet maintainers (@dlfleet)
options:
  name:
    description: Tuning job name, 1-32 letters, digits and hyphens.
    type: str
    required: true
  state:
    description:
      - V(present) creates the tuning job (and waits, see O(wait)); V(absent) stops it if it is running.
      - To address a local tuning job with V(absent), also give O(instance_type=local).
    type: str
    choices: [present, absent]
    default: present
  strategy:
    description: Search strategy.
    type: str
    choices: [Bayesian, Random, Hyperband, Grid]
    default: Bayesian
  objective:
    description: The metric to optimise.
    type: dict
    suboptions:
      metric_name:
        description: Metric name, as in O(metric_definitions).
        type: str
        required: true
      type:
        description: Whether larger or smaller is better.
        type: str
        choices: [Maximize, Minimize]
        default: Maximize
      regex:
        description: Regex (one group) that reads the metric from the log; added to O(metric_definitions).
        type: str
  parameter_ranges:
    description: The tuned hyperparameters.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Hyperparameter name.
        type: str
        required: true
      type:
        description: Range type.
        type: str
        required: true
        choices: [continuous, integer, categorical]
      min_value:
        description: Lower bound (continuous, integer).
        type: float
      max_value:
        description: Upper bound (continuous, integer).
        type: float
      scaling:
        description: How values are spread over the range (continuous, integer).
        type: str
        choices: [Auto, Linear, Logarithmic, ReverseLogarithmic]
        default: Auto
      values:
        description: The choices (categorical).
        type: list
        elements: str
  max_jobs:
    description: Most training jobs to run. Required except with V(Grid), where it caps the grid.
    type: int
  max_parallel_jobs:
    description: Most training jobs at a time.
    type: int
    default: 1
  early_stopping:
    description: Stop trials that are not promising (not with V(Hyperband), which stops trials itself).
    type: str
    choices: ["Off", Auto]
    default: "Off"
  random_seed:
    description: Seed of the search, for repeatable trials.
    type: int
  hyperband:
    description: Hyperband's resource bounds, in epochs.
    type: dict
    suboptions:
      min_resource:
        description: Fewest epochs a trial runs before it may be stopped.
        type: int
      max_resource:
        description: Most epochs a trial runs.
        type: int
  warm_start:
    description: Start from what earlier tuning jobs learnt.
    type: dict
    suboptions:
      parents:
        description: Names of up to 5 parent tuning jobs.
        type: list
        elements: str
        required: true
      type:
        description: How the parents relate to this job.
        type: str
        choices: [IdenticalDataAndAlgorithm, TransferLearning]
        default: IdenticalDataAndAlgorithm
  metric_definitions:
    default: []
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
- name: Tune the learning rate and optimizer on SageMaker
  sagemaker_tuning_job:
    name: cifar10-lr-001
    strategy: Bayesian
    objective: {metric_name: validation-accuracy, type: Maximize, regex: "validation-accuracy=([0-9.]+)"}
    parameter_ranges:
      - {name: lr, type: continuous, min_value: 0.01, max_value: 0.5, scaling: Logarithmic}
      - {name: optimizer, type: categorical, values: [sgd, nag]}
    max_jobs: 8
    max_parallel_jobs: 2
    early_stopping: Auto
    role_arn: arn:aws:iam::123456789012:role/SageMakerRole
    entry_point: train.py
    source_dir: training
    instance_type: ml.p3.2xlarge
    hyperparameters: {epochs: 10}
    channels: [{name: training, uri: s3://my-bucket/data/cifar10}]
    output_path: s3://my-bucket/tuning

- name: Run four small trials on this machine
  sagemaker_tuning_job:
    name: cifar10-lr-local
    strategy: Random
    objective: {metric_name: validation-accuracy, regex: "validation-accuracy=([0-9.]+)"}
    parameter_ranges:
      - {name: lr, type: continuous, min_value: 0.02, max_value: 0.4, scaling: Logarithmic}
    max_jobs: 4
    entry_point: train.py
    source_dir: training
    instance_type: local
    local_python: .venv-train/bin/python
    hyperparameters: {epochs: 1, dataset: synthetic}
    channels: [{name: training, uri: "file:///data/cifar10"}]
    output_path: "file:///tmp/tuning"
"""

RETURN = r"""
tuning_job:
  description: The DescribeHyperParameterTuningJob answer in snake_case.
  returned: when the tuning job exists
  type: dict
status:
  description: HyperParameterTuningJobStatus.
  returned: always
  type: str
  sample: Completed
best_training_job:
  description: The best trial, with its tuned hyperparameters, objective value and model artifact.
  returned: when a trial reported the objective
  type: dict
  sample: {name: cifar10-lr-001-003-1a2b3c4d, hyperparameters: {lr: 0.12}, objective_metric: validation-accuracy,
           objective_value: 0.91, model_artifact: s3://my-bucket/tuning/cifar10-lr-001-003-1a2b3c4d/output/model.tar.gz}
overall_best_training_job:
  description: The best trial including the warm-start parents' trials.
  returned: when a trial reported the objective
  type: dict
training_job_counts:
  description: TrainingJobStatusCounters.
  returned: always
  type: dict
trials:
  description: Every trial, with status, tuned hyperparameters, objective value and billable seconds.
  returned: always
  type: list
  elements: dict
source:
  description: The code archive, its SHA-256 and whether this run uploaded it.
  returned: with state=present
  type: dict
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
"""

from ansible.module_utils.dlfleet_sagemaker import (
    common_spec,
    is_local,
    training_spec,
)
from ansible.module_utils.dlfleet_sagemaker_backend import run_module
from ansible.module_utils.dlfleet_sagemaker_logs import FOLLOW_SPEC, refuse_follow_without_plugin
from ansible.module_utils.dlfleet_sagemaker_tuning import ensure_absent, ensure_present
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main() -> None:
    argument_spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        strategy=dict(type="str", default="Bayesian", choices=["Bayesian", "Random", "Hyperband", "Grid"]),
        objective=dict(type="dict", options=dict(
            metric_name=dict(type="str", required=True),
            type=dict(type="str", default="Maximize", choices=["Maximize", "Minimize"]),
            regex=dict(type="str"),
        )),
        parameter_ranges=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            type=dict(type="str", required=True, choices=["continuous", "integer", "categorical"]),
            min_value=dict(type="float"),
            max_value=dict(type="float"),
            scaling=dict(type="str", default="Auto", choices=["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]),
            values=dict(type="list", elements="str"),
        )),
        max_jobs=dict(type="int"),
        max_parallel_jobs=dict(type="int", default=1),
        early_stopping=dict(type="str", default="Off", choices=["Off", "Auto"]),
        random_seed=dict(type="int"),
        hyperband=dict(type="dict", options=dict(min_resource=dict(type="int"), max_resource=dict(type="int"))),
        warm_start=dict(type="dict", options=dict(
            parents=dict(type="list", elements="str", required=True),
            type=dict(type="str", default="IdenticalDataAndAlgorithm",
                      choices=["IdenticalDataAndAlgorithm", "TransferLearning"]),
        )),
        **FOLLOW_SPEC,
        **training_spec(),
        **common_spec(),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["objective", "entry_point", "instance_type", "output_path"])],
        required_together=[("subnets", "security_group_ids")],
    )
    refuse_follow_without_plugin(module)
    run_module(module, lambda params: is_local(params["instance_type"]), ensure_present, ensure_absent, module)


if __name__ == "__main__":
    main()
