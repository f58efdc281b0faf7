#!/usr/bin/python
# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: sagemaker_endpoint
short_description: Deploy a model to a SageMaker endpoint (model, endpoint config, endpoint), blue/green
version_added: "1.0.0"
description:
  - Makes sure endpoint O(name) serves the given model with the given variants.
  - The model and the endpoint config are named after the endpoint and a hash of their spec
    (C(<name>-<8 hex>)), so an unchanged spec is no change, and a changed one gets a new model and config.
  - A change is a blue/green update, as SageMaker does it. The new config is created, C(UpdateEndpoint)
    switches the endpoint to it, and once it is InService the old config and model are deleted. When the
    update fails, the endpoint keeps serving the old config and the new resources are removed.
  - With O(entry_point), the inference code is packed like the training code (content-hashed
    C(sourcedir.tar.gz)). With O(model_data) too, the model is repacked as the SageMaker SDK does it for the
    MXNet serving images, whose handler imports the code from the model's C(code/) folder only (never from
    C(SAGEMAKER_SUBMIT_DIRECTORY)); C(code/) is replaced by the packed code, and the result is stored once under
    O(code_location) as C(<digest>/model.tar.gz), the digest covering the model (S3 ETag and size, or the file's
    sha256) and the code. The model then names C(SAGEMAKER_PROGRAM) and
    C(SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code).
    Without O(model_data), C(SAGEMAKER_SUBMIT_DIRECTORY) is the code archive's URI.
  - O(state=absent) deletes the endpoint, then every endpoint config and model this module made for it,
    so nothing is left behind.
  - With O(instance_type=local) the model is served on 127.0.0.1 through the inference script's C(model_fn)
    and C(transform_fn) (C(/ping), C(/invocations)), by a process of O(local_python) whose pidfile is under
    O(local_dir); O(state=absent) stops it. A local update starts the new server on the same port and stops
    the old one when the new one answers.
author:
  - dlfleet maintainers (@dlfleet)
options:
  name:
    description: Endpoint name, 1-63 letters, digits and hyphens.
    type: str
    required: true
  state:
    description:
      - V(present) deploys; V(absent) deletes endpoint, configs and models.
      - To address a local endpoint with V(absent), also give O(instance_type=local).
    type: str
    choices: [present, absent]
    default: present
  role_arn:
    description: Execution role of the model. Required in AWS; recorded only in local mode.
    type: str
  model_data:
    description: URI of the C(model.tar.gz) (s3://, or file:// in local mode), for example a training job's
      C(model_artifact).
    type: str
  entry_point:
    description: Inference script (C(model_fn), C(transform_fn)), relative to O(source_dir) when set.
    type: str
  source_dir:
    description: Directory holding the inference code.
    type: path
  source_exclude:
    description: Glob patterns of names left out of the code archive.
    type: list
    elements: str
    default: ["__pycache__", "*.pyc", ".*"]
  code_location:
    description: Prefix for the code archive. Defaults to the folder of O(model_data) plus C(/code).
    type: str
  framework:
    description: Framework whose inference image serves the model.
    type: str
    choices: [mxnet]
    default: mxnet
  framework_version:
    description: Framework version, looked up with the SageMaker SDK's C(image_uris.retrieve).
    type: str
    default: "1.9.0"
  py_version:
    description: Python version tag of the image.
    type: str
    default: py38
  image_uri:
    description: An explicit inference image; overrides the framework lookup.
    type: str
  container_log_level:
    description: Python logging level in the container (C(SAGEMAKER_CONTAINER_LOG_LEVEL)).
    type: int
    default: 20
  kms_key_id:
    description: KMS key for the code upload (SSE-KMS) and the endpoint config's storage.
    type: str
  env:
    description: Environment variables of the model container.
    type: dict
    default: {}
  instance_type:
    description: Instance type of the single variant when O(variants) is not given; V(local) to serve here.
    type: str
  instance_count:
    description: Instance count of the single variant when O(variants) is not given.
    type: int
    default: 1
  variants:
    description: Production variants, all serving the model. Local mode serves one variant.
    type: list
    elements: dict
    suboptions:
      name:
        description: Variant name.
        type: str
        default: AllTraffic
      instance_type:
        description: Instance type.
        type: str
        required: true
      instance_count:
        description: Initial instance count.
        type: int
        default: 1
      weight:
        description: Initial traffic weight.
        type: float
        default: 1.0
  smoke_test:
    description: A request sent once the endpoint is InService; the task fails when it fails.
    type: dict
    suboptions:
      body:
        description: Request body.
        type: str
        required: true
      content_type:
        description: Content-Type of the body.
        type: str
        default: application/json
      accept:
        description: Accept header.
        type: str
        default: application/json
  local_dir:
    description: Local mode state (records, model servers and their pidfiles), and a cache of image URIs.
    type: path
    default: ~/.dlfleet/sagemaker-local
  local_python:
    description: Local mode interpreter that runs the inference script.
    type: str
    default: python3
  wait:
    description: Wait until the endpoint is InService (or gone, with O(state=absent)).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait.
    type: int
    default: 1800
attributes:
  check_mode:
    support: full
    details: Reports what would be created, updated or deleted, and changes nothing.
  diff_mode:
    support: full
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_tags
  - dlfleet_tags.tags
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Deploy the trained model (the seed chapter's estimator.deploy)
  sagemaker_endpoint:
    name: cifar10
    role_arn: arn:aws:iam::123456789012:role/SageMakerRole
    model_data: "{{ train.model_artifact }}"
    entry_point: inference.py
    source_dir: training
    instance_type: ml.m5.xlarge
    smoke_test:
      body: "{{ [[[[0] * 32] * 32] * 3] | to_json }}"
    fleet: dlfleet-prod

- name: Serve it on this machine instead
  sagemaker_endpoint:
    name: cifar10-local
    model_data: "{{ train.model_artifact }}"
    entry_point: inference.py
    source_dir: training
    instance_type: local
    local_python: .venv-train/bin/python
    local_dir: .run/sagemaker

- name: Remove the endpoint, its configs and its models
  sagemaker_endpoint:
    name: cifar10
    state: absent
"""

RETURN = r"""
endpoint:
  description: The DescribeEndpoint answer in snake_case; with state=absent, the endpoint as it was before its removal.
  returned: when the endpoint exists
  type: dict
  sample: {endpoint_name: cifar10, endpoint_status: InService, endpoint_config_name: cifar10-1a2b3c4d}
removed_time:
  description: When this run removed the endpoint (ISO 8601, UTC; once it is gone when O(wait) is set).
  returned: with state=absent, when an endpoint was removed (not in check mode)
  type: str
  sample: "2026-12-07T16:40:12.123456+00:00"
status:
  description: EndpointStatus (null once deleted).
  returned: always
  type: str
  sample: InService
endpoint_url:
  description: Where requests go (the runtime URL in AWS, http://127.0.0.1:PORT/invocations locally).
  returned: with state=present
  type: str
model_name:
  description: The model the endpoint serves.
  returned: with state=present
  type: str
  sample: cifar10-5e6f7a8b
endpoint_config_name:
  description: The endpoint config in use.
  returned: with state=present
  type: str
  sample: cifar10-1a2b3c4d
updated:
  description: Whether this run switched the endpoint to a new config (blue/green).
  returned: always
  type: bool
deleted:
  description: Configs and models this run deleted (replaced, orphaned, or all of them with state=absent).
  returned: always
  type: dict
  sample: {endpoint_configs: [cifar10-00aa11bb], models: [cifar10-22cc33dd]}
smoke_response:
  description: The smoke test's answer (parsed when it is JSON).
  returned: when smoke_test is set
  type: raw
"""

from ansible.module_utils.dlfleet_sagemaker import (
    code_spec,
    common_spec,
)
from ansible.module_utils.dlfleet_sagemaker_backend import run_module
from ansible.module_utils.dlfleet_sagemaker_endpoint import ensure_absent, ensure_present, mode_of
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def main() -> None:
    spec = code_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        role_arn=dict(type="str"),
        model_data=dict(type="str"),
        env=dict(type="dict", default={}),
        instance_type=dict(type="str"),
        instance_count=dict(type="int", default=1),
        variants=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", default="AllTraffic"),
            instance_type=dict(type="str", required=True),
            instance_count=dict(type="int", default=1),
            weight=dict(type="float", default=1.0),
        )),
        smoke_test=dict(type="dict", options=dict(
            body=dict(type="str", required=True),
            content_type=dict(type="str", default="application/json"),
            accept=dict(type="str", default="application/json"),
        )),
        **common_spec(),
    )
    spec["wait_timeout"]["default"] = 1800
    module = AnsibleAWSModule(
        argument_spec=spec,
        supports_check_mode=True,
        mutually_exclusive=[("variants", "instance_type")],
        required_if=[("state", "present", ("variants", "instance_type"), True)],
    )
    run_module(module, mode_of, ensure_present, ensure_absent, module.log)


if __name__ == "__main__":
    main()
