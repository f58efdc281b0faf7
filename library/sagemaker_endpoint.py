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
  tags:
    description: Tags for the endpoint, its config and its model.
    type: dict
    default: {}
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

import datetime
import json
import os

from ansible.module_utils.dlfleet_aws import tag_list
from ansible.module_utils.dlfleet_sagemaker import (
    ENDPOINT_STABLE,
    MODEL_CODE_DIR,
    SageMakerError,
    Storage,
    check_instance_type,
    check_name,
    check_uri,
    code_spec,
    common_spec,
    create_once,
    image_cache_path,
    image_uri,
    is_local,
    repack_model,
    resource_tags,
    run_module,
    sha8,
    snake,
    source_bundle,
    wait_for,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

ENDPOINT_TAG = "dlfleet:endpoint"  # marks the configs and models made for an endpoint, for cleanup


def variants_of(params: dict) -> list[dict]:
    if params["variants"]:
        return params["variants"]
    return [{"name": "AllTraffic", "instance_type": params["instance_type"],
             "instance_count": params["instance_count"], "weight": 1.0}]


def mode_of(params: dict) -> bool:
    """True for local mode. Every variant is local, or none is."""
    types = [v["instance_type"] for v in (params["variants"] or []) if v.get("instance_type")]
    types += [params["instance_type"]] if params["instance_type"] else []
    local = [is_local(t) for t in types]
    if any(local) and not all(local):
        raise SageMakerError(f"instance types {types} mix local and AWS: an endpoint runs in one place, so use "
                             f"'local' for all variants or ml.* types for all")
    return bool(local) and all(local)


def check_params(params: dict, local: bool) -> None:
    check_name("endpoint", params["name"])
    variants = variants_of(params)
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise SageMakerError(f"variants: names {names} repeat; give each variant its own name")
    for variant in variants:
        check_instance_type(variant["instance_type"], f"variants[{variant['name']}].instance_type")
        if variant["instance_count"] < 1:
            raise SageMakerError(f"variants[{variant['name']}].instance_count is {variant['instance_count']}; "
                                 f"it must be at least 1")
    if local and len(variants) != 1:
        raise SageMakerError(f"local mode serves one variant; got {len(variants)} ({names})")
    if not local and not (params["role_arn"] or "").startswith("arn:"):
        raise SageMakerError(f"role_arn {params['role_arn']!r} is not an IAM role ARN: pass the model's execution "
                             f"role, for example 'arn:aws:iam::123456789012:role/SageMakerRole'")
    if params["model_data"]:
        check_uri("model_data", params["model_data"], local)
        if params["model_data"].startswith("file://") and not os.path.isfile(params["model_data"][7:]):
            raise SageMakerError(f"model_data {params['model_data']!r} does not exist on this machine")
    if params["source_dir"] and not params["entry_point"]:
        raise SageMakerError("source_dir without entry_point: name the inference script, for example "
                             "'inference.py'")
    if params["entry_point"] and not params["model_data"] and not params["code_location"]:
        raise SageMakerError("entry_point needs model_data or code_location: it decides where the code goes")


def model_request(params: dict, region: str, image: str, bundle: dict | None, tags: dict) -> dict:
    env = {str(k): str(v) for k, v in (params["env"] or {}).items()}
    model_data = params["model_data"]
    if bundle:
        # repacked (bundle["model_uri"]): the code is in the model's code/ folder, where the serving image looks
        submit = MODEL_CODE_DIR if bundle.get("model_uri") else bundle["uri"]
        env.update(SAGEMAKER_PROGRAM=bundle["program"], SAGEMAKER_SUBMIT_DIRECTORY=submit,
                   SAGEMAKER_REGION=region, SAGEMAKER_CONTAINER_LOG_LEVEL=str(params["container_log_level"]))
        model_data = bundle.get("model_uri") or model_data
    container = {"Image": image, "Environment": env}
    if model_data:
        container["ModelDataUrl"] = model_data
    spec = {"PrimaryContainer": container,
            "ExecutionRoleArn": params["role_arn"] or "arn:aws:iam::000000000000:role/local"}
    name = f"{params['name'][:54]}-{sha8(spec)}"
    return {"ModelName": name, **spec, "Tags": tag_list({**tags, ENDPOINT_TAG: params["name"]})}


def config_request(params: dict, model_name: str, tags: dict) -> dict:
    variants = [{"VariantName": v["name"], "ModelName": model_name, "InstanceType": v["instance_type"],
                 "InitialInstanceCount": v["instance_count"], "InitialVariantWeight": float(v["weight"])}
                for v in variants_of(params)]
    spec: dict = {"ProductionVariants": variants}
    if params["kms_key_id"] and not is_local(variants[0]["InstanceType"]):
        spec["KmsKeyId"] = params["kms_key_id"]
    name = f"{params['name'][:54]}-{sha8(spec)}"
    return {"EndpointConfigName": name, **spec, "Tags": tag_list({**tags, ENDPOINT_TAG: params["name"]})}


def wait_endpoint(backend, name: str, params: dict, log) -> tuple[dict, list[str]]:
    timeout = params["wait_timeout"]
    return wait_for(lambda: backend.describe_endpoint(name), lambda r: r.get("EndpointStatus", "Deleted"),
                    (*ENDPOINT_STABLE, "Deleted"), timeout, backend.poll_seconds, f"endpoint {name}", log)


def owned(backend, kind: str, name: str, endpoint: str) -> bool:
    """Whether a model or config carries this endpoint's cleanup tag."""
    record = backend.describe_model(name) if kind == "model" else backend.describe_endpoint_config(name)
    if record is None:
        return False
    arn = record.get("ModelArn") or record.get("EndpointConfigArn")
    return backend.list_tags(arn).get(ENDPOINT_TAG) == endpoint


def cleanup(backend, endpoint: str, keep_configs: set, keep_models: set, check_mode: bool) -> dict:
    """Delete this endpoint's configs and models that nothing uses any more."""
    deleted: dict = {"endpoint_configs": [], "models": []}
    for config in backend.list_endpoint_configs(endpoint):
        if config not in keep_configs and owned(backend, "config", config, endpoint):
            deleted["endpoint_configs"].append(config)
            if not check_mode:
                backend.delete_endpoint_config(config)
    for model in backend.list_models(endpoint):
        if model not in keep_models and owned(backend, "model", model, endpoint):
            deleted["models"].append(model)
            if not check_mode:
                backend.delete_model(model)
    return deleted


def smoke(backend, name: str, smoke_test: dict):
    body, content_type = backend.invoke_endpoint(name, smoke_test["body"].encode(), smoke_test["content_type"],
                                                 smoke_test["accept"])
    text = body.decode("utf-8", "replace")
    if "json" in (content_type or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def ensure_present(backend, storage: Storage, params: dict, check_mode: bool, region: str, log) -> dict:
    check_params(params, mode_of(params))
    backend.prepare()
    name = params["name"]
    tags = resource_tags(params)
    first_type = variants_of(params)[0]["instance_type"]
    image = image_uri(params, region, "inference", first_type, image_cache_path(params))
    bundle = None
    if params["entry_point"]:
        default = (params["model_data"] or "").rsplit("/", 1)[0] + "/code"
        bundle = source_bundle(params, default)
        if params["model_data"]:
            bundle["model_uri"] = repack_model(storage, params["model_data"], bundle, check_mode)
    model = model_request(params, region, image, bundle, tags)
    config = config_request(params, model["ModelName"], tags)
    endpoint = backend.describe_endpoint(name)
    if endpoint and endpoint["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating") and params["wait"] \
            and not check_mode:
        endpoint, _seen = wait_endpoint(backend, name, params, log)
    before = {"endpoint_config_name": endpoint["EndpointConfigName"] if endpoint else None,
              "status": endpoint["EndpointStatus"] if endpoint else None}
    after = {"endpoint_config_name": config["EndpointConfigName"], "status": "InService"}
    result = {"changed": False, "updated": False, "model_name": model["ModelName"],
              "endpoint_config_name": config["EndpointConfigName"], "image_uri": image,
              "deleted": {"endpoint_configs": [], "models": []}, "diff": {"before": before, "after": after}}
    if endpoint and endpoint["EndpointStatus"] == "Failed":
        raise SageMakerError(f"endpoint {name!r} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
                             f"SageMaker cannot update a failed endpoint: run with state: absent, then again",
                             code="EndpointFailed")
    needs_switch = endpoint is None or endpoint["EndpointConfigName"] != config["EndpointConfigName"]
    if needs_switch:
        result["changed"] = True
        if check_mode:
            result["updated"] = endpoint is not None
            return result
        if bundle and not bundle.get("model_uri"):
            storage.put_if_absent(bundle["uri"], bundle["data"])
        # the names carry the spec's hash: one that exists already is this very spec
        if backend.describe_model(model["ModelName"]) is None:
            create_once(lambda: backend.create_model(model), lambda: backend.describe_model(model["ModelName"]))
        if backend.describe_endpoint_config(config["EndpointConfigName"]) is None:
            create_once(lambda: backend.create_endpoint_config(config),
                        lambda: backend.describe_endpoint_config(config["EndpointConfigName"]))
        if endpoint is None:
            request = {"EndpointName": name, "EndpointConfigName": config["EndpointConfigName"],
                       "Tags": tag_list(tags)}
            create_once(lambda: backend.create_endpoint(request), lambda: backend.describe_endpoint(name),
                        lambda found: found.get("EndpointConfigName") == config["EndpointConfigName"])
        else:
            create_once(lambda: backend.update_endpoint(name, config["EndpointConfigName"]),
                        lambda: backend.describe_endpoint(name),
                        lambda found: found.get("EndpointStatus") == "Updating"
                        or found.get("EndpointConfigName") == config["EndpointConfigName"])
            result["updated"] = True
        if params["wait"]:
            endpoint, seen = wait_endpoint(backend, name, params, log)
            result["status_changes"] = seen
            if endpoint.get("EndpointStatus") != "InService" or \
                    endpoint.get("EndpointConfigName") != config["EndpointConfigName"]:
                reason = endpoint.get("FailureReason", "no reason given")
                if endpoint.get("EndpointStatus") == "InService":  # an update rolled back: drop the new parts
                    cleanup(backend, name, {endpoint["EndpointConfigName"]}, set(), False)
                raise SageMakerError(f"endpoint {name!r} did not reach InService with config "
                                     f"{config['EndpointConfigName']!r}: {reason}", code="EndpointFailed",
                                     status=endpoint.get("EndpointStatus"))
    else:
        have = backend.list_tags(endpoint["EndpointArn"])
        if have != tags:
            result["changed"] = True
            if not check_mode:
                backend.update_tags(endpoint["EndpointArn"], tags, have)
    endpoint = backend.describe_endpoint(name) or endpoint or {}
    in_use = endpoint.get("EndpointConfigName") or config["EndpointConfigName"]
    if endpoint.get("EndpointStatus") == "InService":  # only then is the old config surely unused
        serving = backend.describe_endpoint_config(in_use) or {}
        models = {v["ModelName"] for v in serving.get("ProductionVariants", [])}
        result["deleted"] = cleanup(backend, name, {in_use}, models, check_mode)
        result["changed"] = result["changed"] or bool(result["deleted"]["endpoint_configs"]
                                                      or result["deleted"]["models"])
    result.update(endpoint=snake(endpoint), status=endpoint.get("EndpointStatus"),
                  endpoint_url=backend.endpoint_url(name))
    if params["smoke_test"] and not check_mode and endpoint.get("EndpointStatus") == "InService":
        result["smoke_response"] = smoke(backend, name, params["smoke_test"])
    return result


def ensure_absent(backend, params: dict, check_mode: bool, log) -> dict:
    name = params["name"]
    check_name("endpoint", name)
    endpoint = backend.describe_endpoint(name)
    result = {"changed": False, "updated": False, "status": None,
              "deleted": {"endpoint_configs": [], "models": []},
              "diff": {"before": {"status": endpoint["EndpointStatus"] if endpoint else None},
                       "after": {"status": None}}}
    if endpoint:
        result["changed"] = True
        result["endpoint"] = snake(endpoint)   # as it was: its creation time prices the hours it ran
        if not check_mode:
            backend.delete_endpoint(name)
            if params["wait"]:
                wait_endpoint(backend, name, params, log)
            result["removed_time"] = datetime.datetime.now(datetime.UTC).isoformat()
    result["deleted"] = cleanup(backend, name, set(), set(), check_mode)
    result["changed"] = result["changed"] or bool(result["deleted"]["endpoint_configs"] or
                                                  result["deleted"]["models"])
    return result


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
