# The logic of sagemaker_tuning_job: the tuning request, its checks and views, the trials and best jobs as results,
# ensure_present and ensure_absent. The module (library/sagemaker_tuning_job.py) holds its documentation and main().
from __future__ import annotations

from ansible.module_utils.dlfleet_aws import tag_list
from ansible.module_utils.dlfleet_sagemaker import (
    TUNING_TERMINAL,
    SageMakerError,
    check_name,
    check_training_params,
)
from ansible.module_utils.dlfleet_sagemaker_backend import create_once
from ansible.module_utils.dlfleet_sagemaker_code import Storage, default_code_location, source_bundle
from ansible.module_utils.dlfleet_sagemaker_requests import (
    decode_hyperparameters,
    definition_view,
    differences,
    framework_hyperparameters,
    image_cache_path,
    image_uri,
    immutable_mismatch,
    resource_tags,
    sync_tags,
    training_definition,
)
from ansible.module_utils.dlfleet_sagemaker_results import snake, wait_for

RANGE_KEYS = {"continuous": "ContinuousParameterRanges", "integer": "IntegerParameterRanges",
              "categorical": "CategoricalParameterRanges"}


def _number(value: float, integer: bool) -> str:
    return str(int(value)) if integer else repr(float(value))


def check_tuning_params(p: dict) -> None:
    check_name("tuning job", p["name"], max_len=32)
    check_training_params(p)
    if not p["objective"]:
        raise SageMakerError("objective is required: give objective.metric_name (and its regex)")
    ranges = p["parameter_ranges"]
    if not ranges:
        raise SageMakerError("parameter_ranges is empty: name at least one hyperparameter to tune")
    names = [r["name"] for r in ranges]
    if len(set(names)) != len(names):
        raise SageMakerError(f"parameter_ranges: names {names} repeat; give each hyperparameter one range")
    for item in ranges:
        where = f"parameter_ranges[{item['name']}]"
        if item["name"] in (p["hyperparameters"] or {}):
            raise SageMakerError(f"{where}: {item['name']!r} is also a static hyperparameter; tune it or fix it, "
                                 f"not both")
        if item["type"] == "categorical":
            if not item["values"]:
                raise SageMakerError(f"{where}: a categorical range needs `values`")
            continue
        low, high = item["min_value"], item["max_value"]
        if low is None or high is None or low >= high:
            raise SageMakerError(f"{where}: needs min_value < max_value (got {low!r} and {high!r})")
        if item["type"] == "integer" and (low != int(low) or high != int(high)):
            raise SageMakerError(f"{where}: an integer range needs whole bounds (got {low!r} and {high!r})")
        if item["scaling"] == "Logarithmic" and low <= 0:
            raise SageMakerError(f"{where}: Logarithmic scaling needs min_value > 0 (got {low!r})")
        if item["scaling"] == "ReverseLogarithmic" and not (0 <= low < high < 1 and item["type"] == "continuous"):
            raise SageMakerError(f"{where}: ReverseLogarithmic scaling needs a continuous range within [0, 1)")
    if p["strategy"] == "Grid":
        if any(r["type"] != "categorical" for r in ranges):
            raise SageMakerError("strategy Grid searches categorical ranges only: turn the others into categorical "
                                 "values, or pick another strategy")
    elif not p["max_jobs"]:
        raise SageMakerError(f"max_jobs is required with strategy {p['strategy']}: say how many trials may run")
    if (p["max_jobs"] is not None and p["max_jobs"] < 1) or p["max_parallel_jobs"] < 1:
        raise SageMakerError("max_jobs and max_parallel_jobs must be at least 1")
    if p["strategy"] == "Hyperband" and p["early_stopping"] != "Off":
        raise SageMakerError("strategy Hyperband stops trials itself: set early_stopping: 'Off'")
    if p["hyperband"] and p["strategy"] != "Hyperband":
        raise SageMakerError("hyperband settings apply to strategy Hyperband only")
    metric = p["objective"]["metric_name"]
    known = {m["name"] for m in p["metric_definitions"]}
    if metric not in known and not p["objective"]["regex"]:
        raise SageMakerError(f"objective metric {metric!r} has no regex: give objective.regex, or a metric_definitions "
                             f"entry named {metric!r}")
    if p["warm_start"] and not 1 <= len(p["warm_start"]["parents"]) <= 5:
        raise SageMakerError("warm_start.parents takes 1 to 5 tuning job names")


def tuning_request(p: dict, image: str, bundle: dict, region: str) -> dict:
    objective = p["objective"]
    if objective["regex"] and objective["metric_name"] not in {m["name"] for m in p["metric_definitions"]}:
        p = dict(p, metric_definitions=[*p["metric_definitions"],
                                        {"name": objective["metric_name"], "regex": objective["regex"]}])
    static = dict(p["hyperparameters"] or {})
    static.update(framework_hyperparameters(p, p["name"], bundle["program"], bundle["uri"], region))
    definition = training_definition(p, image, static)
    definition["StaticHyperParameters"] = definition.pop("HyperParameters")
    ranges: dict = {key: [] for key in RANGE_KEYS.values()}
    for item in sorted(p["parameter_ranges"], key=lambda r: r["name"]):
        if item["type"] == "categorical":
            ranges["CategoricalParameterRanges"].append(
                {"Name": item["name"], "Values": [_json_value(v) for v in item["values"]]})
        else:
            integer = item["type"] == "integer"
            ranges[RANGE_KEYS[item["type"]]].append({
                "Name": item["name"], "MinValue": _number(item["min_value"], integer),
                "MaxValue": _number(item["max_value"], integer), "ScalingType": item["scaling"]})
    config: dict = {
        "Strategy": p["strategy"],
        "HyperParameterTuningJobObjective": {"Type": objective["type"], "MetricName": objective["metric_name"]},
        "ResourceLimits": {"MaxParallelTrainingJobs": p["max_parallel_jobs"]},
        "ParameterRanges": ranges,
        "TrainingJobEarlyStoppingType": p["early_stopping"],
    }
    if p["max_jobs"]:
        config["ResourceLimits"]["MaxNumberOfTrainingJobs"] = p["max_jobs"]
    if p["random_seed"] is not None:
        config["RandomSeed"] = p["random_seed"]
    if p["hyperband"]:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {
            k: v for k, v in (("MinResource", p["hyperband"]["min_resource"]),
                              ("MaxResource", p["hyperband"]["max_resource"])) if v is not None}}
    request = {"HyperParameterTuningJobName": p["name"], "HyperParameterTuningJobConfig": config,
               "TrainingJobDefinition": definition}
    if p["warm_start"]:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": n} for n in p["warm_start"]["parents"]],
            "WarmStartType": p["warm_start"]["type"]}
    tags = resource_tags(p)
    if tags:
        request["Tags"] = tag_list(tags)
    return request


def _json_value(value: str) -> str:
    """Categorical values JSON-encoded, as the SageMaker SDK sends them for framework containers."""
    import json
    return json.dumps(value)


def tuning_view(d: dict) -> dict:
    config = d.get("HyperParameterTuningJobConfig", {})
    ranges = config.get("ParameterRanges") or {}
    return {
        "strategy": config.get("Strategy"),
        "objective": config.get("HyperParameterTuningJobObjective"),
        "limits": {k: v for k, v in (config.get("ResourceLimits") or {}).items()
                   if k in ("MaxNumberOfTrainingJobs", "MaxParallelTrainingJobs")},
        "ranges": {key: sorted(({**r, "ScalingType": r.get("ScalingType", "Auto")} if "MinValue" in r else r
                                for r in ranges.get(key) or []), key=lambda r: r["Name"])
                   for key in RANGE_KEYS.values()},
        "early_stopping": config.get("TrainingJobEarlyStoppingType", "Off"),
        "random_seed": config.get("RandomSeed"),
        "warm_start": sorted(j["HyperParameterTuningJobName"] for j in
                             (d.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs") or []),
        "definition": definition_view(d.get("TrainingJobDefinition") or {}),
    }


def best_job(backend, summary: dict | None) -> dict | None:
    if not summary or not summary.get("TrainingJobName"):
        return None
    objective = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    job = backend.describe_training_job(summary["TrainingJobName"]) or {}
    return {
        "name": summary["TrainingJobName"],
        "status": summary.get("TrainingJobStatus"),
        "hyperparameters": decode_hyperparameters(summary.get("TunedHyperParameters")),
        "objective_metric": objective.get("MetricName"),
        "objective_value": objective.get("Value"),
        "model_artifact": (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
    }


def trials_of(backend, name: str, metric: str) -> list[dict]:
    out = []
    for trial in backend.list_tuning_trials(name):
        value = (trial.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        job = backend.describe_training_job(trial["TrainingJobName"]) or {}   # its billable time, for the cost
        out.append({"name": trial["TrainingJobName"], "status": trial.get("TrainingJobStatus"),
                    "hyperparameters": decode_hyperparameters(trial.get("TunedHyperParameters")),
                    "objective_value": value, "billable_seconds": job.get("BillableTimeInSeconds")})
    return out


def tuning_result(backend, record: dict | None, metric: str | None) -> dict:
    if not record:
        return {"tuning_job": {}, "status": None, "best_training_job": None, "overall_best_training_job": None,
                "training_job_counts": {}, "trials": []}
    job = snake(record)
    definition = (record.get("TrainingJobDefinition") or {})
    job["static_hyperparameters"] = decode_hyperparameters(definition.get("StaticHyperParameters"))
    return {
        "tuning_job": job,
        "status": record.get("HyperParameterTuningJobStatus"),
        "best_training_job": best_job(backend, record.get("BestTrainingJob")),
        "overall_best_training_job": best_job(backend, record.get("OverallBestTrainingJob")
                                              or record.get("BestTrainingJob")),
        "training_job_counts": record.get("TrainingJobStatusCounters") or {},
        "trials": trials_of(backend, record["HyperParameterTuningJobName"], metric) if metric else [],
    }


def wait_tuning(backend, name: str, params: dict, log) -> dict:
    record, _seen = wait_for(lambda: backend.describe_tuning_job(name),
                             lambda r: r.get("HyperParameterTuningJobStatus", "Unknown"), TUNING_TERMINAL,
                             params["wait_timeout"], backend.poll_seconds, f"tuning job {name}", log)
    return record


def ensure_present(backend, storage: Storage, params: dict, check_mode: bool, region: str, module) -> dict:
    name = params["name"]
    check_tuning_params(params)
    backend.prepare()
    warning = backend.strategy_warning(params["strategy"])
    if warning:
        module.warn(warning)
    image = image_uri(params, region, "training", params["instance_type"], image_cache_path(params))
    bundle = source_bundle(params, default_code_location(params["output_path"]))
    request = tuning_request(params, image, bundle, region)
    metric = params["objective"]["metric_name"]
    for parent in (params["warm_start"] or {}).get("parents") or []:
        if backend.describe_tuning_job(parent) is None:
            raise SageMakerError(f"warm_start parent tuning job {parent!r} does not exist: name an existing tuning "
                                 f"job, or drop warm_start", code="ValidationException")
    existing = backend.describe_tuning_job(name)
    diff = {"before": tuning_view(existing) if existing else {}, "after": tuning_view(request)}
    source = {"uri": bundle["uri"], "sha256": bundle["sha256"], "uploaded": False}
    changed = False
    if existing:
        diffs = differences(tuning_view(existing), tuning_view(request))
        if diffs:
            raise immutable_mismatch("tuning job", name, diffs)
        changed, _have, _want = sync_tags(backend, existing["HyperParameterTuningJobArn"], params, check_mode)
        record = existing
    elif check_mode:
        result = tuning_result(backend, None, metric)
        result.update(changed=True, status="(would be created)", source=source, diff=diff)
        return result
    else:
        source["uploaded"] = storage.put_if_absent(bundle["uri"], bundle["data"])
        create_once(lambda: backend.create_tuning_job(request), lambda: backend.describe_tuning_job(name),
                    lambda found: not differences(tuning_view(found), tuning_view(request)))
        changed = True
        record = backend.describe_tuning_job(name) or {}
    if params["wait"] and record.get("HyperParameterTuningJobStatus") not in TUNING_TERMINAL and not check_mode:
        record = wait_tuning(backend, name, params, module.log)
    result = tuning_result(backend, record, metric)
    result.update(changed=changed, source=source, diff=diff, image_uri=image)
    if result["status"] == "Failed":
        raise SageMakerError(f"tuning job {name!r} failed: {record.get('FailureReason', 'no reason given')}",
                             code="TuningJobFailed", **result)
    return result


def ensure_absent(backend, params: dict, check_mode: bool, module) -> dict:
    name = params["name"]
    check_name("tuning job", name, max_len=32)
    existing = backend.describe_tuning_job(name)
    metric = (params["objective"] or {}).get("metric_name")
    status = (existing or {}).get("HyperParameterTuningJobStatus")
    if status not in ("InProgress", "Stopping"):
        result = tuning_result(backend, existing, metric)
        result.update(changed=False, diff={"before": {"status": status}, "after": {"status": status}})
        return result
    result_diff = {"before": {"status": status}, "after": {"status": "Stopped"}}
    if check_mode:
        result = tuning_result(backend, existing, metric)
        result.update(changed=True, diff=result_diff)
        return result
    if status == "InProgress":
        create_once(lambda: backend.stop_tuning_job(name), lambda: backend.describe_tuning_job(name),
                    lambda found: found["HyperParameterTuningJobStatus"] in ("Stopping", "Stopped"))
    record = wait_tuning(backend, name, params, module.log) if params["wait"] else existing
    result = tuning_result(backend, record, metric)
    result.update(changed=True, diff=result_diff)
    return result
