# The logic of sagemaker_endpoint: the model, endpoint config and endpoint requests, blue/green updates, the smoke
# test, cleanup, ensure_present and ensure_absent. The module (library/sagemaker_endpoint.py) holds its documentation
# and main().
from __future__ import annotations

import datetime
import json
import os

from ansible.module_utils.dlfleet_aws import tag_list
from ansible.module_utils.dlfleet_sagemaker import (
    ENDPOINT_STABLE,
    SageMakerError,
    check_instance_type,
    check_name,
    check_uri,
    is_local,
)
from ansible.module_utils.dlfleet_sagemaker_backend import create_once, sha8
from ansible.module_utils.dlfleet_sagemaker_code import MODEL_CODE_DIR, Storage, repack_model, source_bundle
from ansible.module_utils.dlfleet_sagemaker_requests import image_cache_path, image_uri, resource_tags, sync_tags
from ansible.module_utils.dlfleet_sagemaker_results import snake, wait_for

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
        if sync_tags(backend, endpoint["EndpointArn"], params, check_mode)[0]:
            result["changed"] = True
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
