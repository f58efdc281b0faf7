# The logic of sagemaker_training_job: a training job's ensure_present (create, adopt, wait, result) and ensure_absent
# (stop). The module (library/sagemaker_training_job.py) holds its documentation and main().
from __future__ import annotations

from ansible.module_utils.dlfleet_sagemaker import (
    TRAINING_TERMINAL,
    SageMakerError,
    check_name,
    check_training_params,
)
from ansible.module_utils.dlfleet_sagemaker_backend import create_once
from ansible.module_utils.dlfleet_sagemaker_code import Storage, default_code_location, source_bundle
from ansible.module_utils.dlfleet_sagemaker_requests import (
    definition_view,
    differences,
    image_cache_path,
    image_uri,
    immutable_mismatch,
    sync_tags,
    training_job_request,
)
from ansible.module_utils.dlfleet_sagemaker_results import training_result, training_status, wait_for


def wait_job(backend, name: str, params: dict, log) -> tuple[dict, list[str]]:
    return wait_for(lambda: backend.describe_training_job(name), training_status, TRAINING_TERMINAL,
                    params["wait_timeout"], backend.poll_seconds, f"training job {name}", log)


def finish(backend, record: dict, params: dict, seen: list[str], changed: bool) -> dict:
    name = params["name"]
    tail = backend.training_log_tail(name, params["log_tail_lines"])
    tags = backend.list_tags(record["TrainingJobArn"])
    result = training_result(record, tags, tail, seen)
    result["changed"] = changed
    if record.get("TrainingJobStatus") == "Failed":
        raise SageMakerError(
            f"training job {name!r} failed: {record.get('FailureReason', 'no reason given')}. Fix the cause "
            f"(see log_tail), then run it under a new name: job names are immutable",
            code="TrainingJobFailed", **result)
    return result


def ensure_present(backend, storage: Storage, params: dict, check_mode: bool, region: str, log) -> dict:
    name = params["name"]
    check_name("training job", name)
    check_training_params(params)
    backend.prepare()
    image = image_uri(params, region, "training", params["instance_type"], image_cache_path(params))
    bundle = source_bundle(params, default_code_location(params["output_path"]))
    request = training_job_request(params, name, image, bundle, region)
    existing = backend.describe_training_job(name)
    diff = {"before": definition_view(existing) if existing else {}, "after": definition_view(request)}
    source = {"uri": bundle["uri"], "sha256": bundle["sha256"], "uploaded": False}
    if existing:
        diffs = differences(definition_view(existing), definition_view(request))
        if diffs:
            raise immutable_mismatch("training job", name, diffs)
        changed, diff["before"]["tags"], diff["after"]["tags"] = sync_tags(
            backend, existing["TrainingJobArn"], params, check_mode)
        record, seen = existing, [training_status(existing)]
        if params["wait"] and existing["TrainingJobStatus"] not in TRAINING_TERMINAL and not check_mode:
            record, seen = wait_job(backend, name, params, log)
        result = finish(backend, record, params, seen, changed)
    elif check_mode:
        result = training_result(None)
        result.update(changed=True, status="(would be created)")
    else:
        source["uploaded"] = storage.put_if_absent(bundle["uri"], bundle["data"])
        create_once(lambda: backend.create_training_job(request), lambda: backend.describe_training_job(name),
                    lambda found: not differences(definition_view(found), definition_view(request)))
        record = backend.describe_training_job(name) or {}
        seen = [training_status(record)]
        if params["wait"]:
            record, seen = wait_job(backend, name, params, log)
        result = finish(backend, record, params, seen, True)
    result.update(source=source, image_uri=image, diff=diff)
    return result


def ensure_absent(backend, params: dict, check_mode: bool, log) -> dict:
    name = params["name"]
    check_name("training job", name)
    existing = backend.describe_training_job(name)
    if not existing or existing["TrainingJobStatus"] not in ("InProgress", "Stopping"):
        result = training_result(existing)
        same = {"status": result["status"]}
        result.update(changed=False, diff={"before": same, "after": same})
        return result
    diff = {"before": {"status": existing["TrainingJobStatus"]}, "after": {"status": "Stopped"}}
    if check_mode:
        result = training_result(existing)
        result.update(changed=True, diff=diff)
        return result
    if existing["TrainingJobStatus"] == "InProgress":
        create_once(lambda: backend.stop_training_job(name), lambda: backend.describe_training_job(name),
                    lambda found: found["TrainingJobStatus"] in ("Stopping", "Stopped"))
    record, seen = existing, [training_status(existing)]
    if params["wait"]:
        record, seen = wait_job(backend, name, params, log)
    result = training_result(record, backend.list_tags(record["TrainingJobArn"]),
                             backend.training_log_tail(name, params["log_tail_lines"]), seen)
    result.update(changed=True, diff=diff)
    return result
