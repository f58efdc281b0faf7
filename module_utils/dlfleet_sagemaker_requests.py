# The SageMaker modules' requests: framework image lookup, hyperparameters as the containers read them, the
# resource tags, the Create* request builders, and the comparable views of a spec that SageMaker never
# changes after create (idempotency).
from __future__ import annotations

import json
import os
from typing import Any

from ansible.module_utils.dlfleet_aws import fleet_tags, tag_list
from ansible.module_utils.dlfleet_sagemaker import (
    SAGEMAKER_HP_JOB_NAME,
    SAGEMAKER_HP_LOG_LEVEL,
    SAGEMAKER_HP_PROGRAM,
    SAGEMAKER_HP_PS,
    SAGEMAKER_HP_REGION,
    SAGEMAKER_HP_SUBMIT_DIR,
    SageMakerError,
)
from ansible.module_utils.dlfleet_tags import check_user_tags, compare_tags

# --------------------------------------------------------------------------------------------------
# Images and hyperparameters
# --------------------------------------------------------------------------------------------------


def image_uri(p: dict[str, Any], region: str, scope: str, instance_type: str, cache_path: str | None = None) -> str:
    """The explicit image_uri, else the framework image from the SageMaker SDK's image_uris table. Lookups are
    cached per sagemaker-core version in `cache_path`: importing the SDK takes seconds, the answer never changes."""
    if p.get("image_uri"):
        return p["image_uri"]
    lookup_type = "ml.m5.xlarge" if instance_type == "local" else (
        "ml.p3.2xlarge" if instance_type == "local_gpu" else instance_type)
    key = image_cache_key(p, region, scope, lookup_type)
    cache = _read_cache(cache_path)
    if key in cache:
        return cache[key]
    try:
        from sagemaker.core import image_uris  # imported here: it takes seconds and only this needs it
    except ImportError as err:
        raise SageMakerError(
            "sagemaker-core is not installed in the controller's Python: pip install sagemaker-core, or give "
            "image_uri explicitly", code="MissingDependency") from err
    try:
        uri = image_uris.retrieve(p["framework"], region=region, version=p["framework_version"],
                                  py_version=p["py_version"], instance_type=lookup_type, image_scope=scope)
    except ValueError as err:
        raise SageMakerError(
            f"no {p['framework']} {scope} image for framework_version {p['framework_version']!r}, "
            f"py_version {p['py_version']!r}, instance_type {instance_type!r} in {region}: {err} "
            f"Pick a listed version, or give image_uri") from err
    if cache_path:
        cache[key] = uri
        try:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = f"{cache_path}.tmp-{os.getpid()}"
            with open(tmp, "w") as fh:
                json.dump(cache, fh, indent=1, sort_keys=True)
            os.replace(tmp, cache_path)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return uri


def image_cache_key(p: dict[str, Any], region: str, scope: str, lookup_type: str) -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        sdk = version("sagemaker-core")
    except (ImportError, PackageNotFoundError):
        sdk = "unknown"
    return "|".join([sdk, p["framework"], p["framework_version"], p["py_version"], scope, region, lookup_type])


def _read_cache(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def image_cache_path(params: dict[str, Any]) -> str:
    return os.path.join(os.path.abspath(os.path.expanduser(params["local_dir"])), "image-uris.json")


def encode_hyperparameters(hps: dict[str, Any]) -> dict[str, str]:
    """JSON-encode every value, as the SageMaker framework containers json.loads each one."""
    return {str(k): json.dumps(v) for k, v in sorted(hps.items())}


def decode_hyperparameters(hps: dict[str, str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (hps or {}).items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def framework_hyperparameters(p: dict[str, Any], name: str, program: str, submit_uri: str,
                              region: str) -> dict[str, Any]:
    hps: dict[str, Any] = {
        SAGEMAKER_HP_PROGRAM: program,
        SAGEMAKER_HP_SUBMIT_DIR: submit_uri,
        SAGEMAKER_HP_REGION: region,
        SAGEMAKER_HP_LOG_LEVEL: p["container_log_level"],
        SAGEMAKER_HP_JOB_NAME: name,
    }
    if ((p.get("distribution") or {}).get("parameter_server") or {}).get("enabled"):
        hps[SAGEMAKER_HP_PS] = True
    return hps


def user_tags(p: dict[str, Any]) -> dict[str, str] | None:
    """The user's `tags` as strings; None when not given (the resource's user tags stay as they are)."""
    try:
        return check_user_tags(p.get("tags"))
    except ValueError as err:
        raise SageMakerError(str(err)) from None


def identity_tags(p: dict[str, Any]) -> dict[str, str]:
    """dlfleet's tags (fleet, owner, ttl) when `fleet` is given."""
    if not p.get("fleet"):
        return {}
    try:
        return fleet_tags(p["fleet"], p["owner"], p["ttl"])
    except ValueError as err:
        raise SageMakerError(str(err)) from err


def resource_tags(p: dict[str, Any]) -> dict[str, str]:
    """The tags a new resource gets: the user's, with the dlfleet tags merged over them."""
    return {**(user_tags(p) or {}), **identity_tags(p)}


def sync_tags(backend, arn: str, p: dict[str, Any], check_mode: bool) -> tuple[bool, dict[str, str], dict[str, str]]:
    """Bring an existing resource's tags to `tags` + `purge_tags` (amazon.aws semantics: aws:* keys never touched,
    dlfleet:* never removed). Returns (changed, tags before, tags after); check mode only predicts."""
    have = backend.list_tags(arn)
    to_set, to_unset = compare_tags(have, user_tags(p), p.get("purge_tags", True), identity_tags(p))
    after = {**{k: v for k, v in have.items() if k not in to_unset}, **to_set}
    if (to_set or to_unset) and not check_mode:
        backend.update_tags(arn, to_set, to_unset)
    return bool(to_set or to_unset), have, after


# --------------------------------------------------------------------------------------------------
# Request builders
# --------------------------------------------------------------------------------------------------

def channel_config(channel: dict[str, Any]) -> dict[str, Any]:
    uri = channel["uri"]
    if uri.startswith("file://"):  # local mode only, the shape the SageMaker SDK's local mode uses
        source = {"FileDataSource": {"FileUri": uri, "FileDataDistributionType": channel["distribution"]}}
    else:
        source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                   "S3DataDistributionType": channel["distribution"]}}
    config: dict[str, Any] = {"ChannelName": channel["name"], "DataSource": source,
                              "CompressionType": channel["compression"]}
    if channel.get("content_type"):
        config["ContentType"] = channel["content_type"]
    if channel.get("input_mode"):
        config["InputMode"] = channel["input_mode"]
    return config


def training_definition(p: dict[str, Any], image: str, static_hps: dict[str, Any]) -> dict[str, Any]:
    """The parts of CreateTrainingJob that a tuning job's TrainingJobDefinition shares."""
    algorithm: dict[str, Any] = {"TrainingImage": image, "TrainingInputMode": "File"}
    if p["metric_definitions"]:
        algorithm["MetricDefinitions"] = [{"Name": m["name"], "Regex": m["regex"]} for m in p["metric_definitions"]]
    definition: dict[str, Any] = {
        "AlgorithmSpecification": algorithm,
        "RoleArn": p["role_arn"] or "arn:aws:iam::000000000000:role/local",
        "InputDataConfig": [channel_config(c) for c in p["channels"]],
        "OutputDataConfig": {"S3OutputPath": p["output_path"]},
        "ResourceConfig": {"InstanceType": p["instance_type"], "InstanceCount": p["instance_count"],
                           "VolumeSizeInGB": p["volume_size"]},
        "StoppingCondition": {"MaxRuntimeInSeconds": p["max_run"]},
        "EnableNetworkIsolation": p["enable_network_isolation"],
        "EnableManagedSpotTraining": p["use_spot"],
        "HyperParameters": encode_hyperparameters(static_hps),
    }
    if not definition["InputDataConfig"]:
        del definition["InputDataConfig"]
    if p["kms_key_id"]:
        definition["OutputDataConfig"]["KmsKeyId"] = p["kms_key_id"]
    if p["use_spot"]:
        definition["StoppingCondition"]["MaxWaitTimeInSeconds"] = p["max_wait"]
    if p["checkpoint_s3_uri"]:
        definition["CheckpointConfig"] = {"S3Uri": p["checkpoint_s3_uri"], "LocalPath": p["checkpoint_local_path"]}
    if p["subnets"]:
        definition["VpcConfig"] = {"Subnets": p["subnets"], "SecurityGroupIds": p["security_group_ids"]}
    return definition


def training_job_request(p: dict[str, Any], name: str, image: str, bundle: dict[str, Any],
                         region: str) -> dict[str, Any]:
    hps = dict(p["hyperparameters"] or {})
    hps.update(framework_hyperparameters(p, name, bundle["program"], bundle["uri"], region))
    request = {"TrainingJobName": name, **training_definition(p, image, hps)}
    tags = resource_tags(p)
    if tags:
        request["Tags"] = tag_list(tags)
    return request


# --------------------------------------------------------------------------------------------------
# Idempotency: the parts of a spec that SageMaker never changes after create, compared field by field
# --------------------------------------------------------------------------------------------------

def _channel_view(channel: dict[str, Any]) -> dict[str, Any]:
    source = channel.get("DataSource", {})
    s3 = source.get("S3DataSource") or {}
    local = source.get("FileDataSource") or {}
    return {
        "uri": (s3.get("S3Uri") or local.get("FileUri") or "").rstrip("/"),
        "distribution": s3.get("S3DataDistributionType") or local.get("FileDataDistributionType")
        or "FullyReplicated",
        "content_type": channel.get("ContentType"),
        "compression": channel.get("CompressionType") or "None",
        "input_mode": channel.get("InputMode"),
    }


def definition_view(d: dict[str, Any]) -> dict[str, Any]:
    """A comparable projection of a training definition: a request or a Describe* answer."""
    algorithm = d.get("AlgorithmSpecification", {})
    resources = d.get("ResourceConfig", {})
    stopping = d.get("StoppingCondition", {})
    vpc = d.get("VpcConfig") or {}
    hps = d.get("HyperParameters", d.get("StaticHyperParameters")) or {}
    return {
        "image": algorithm.get("TrainingImage"),
        "metric_definitions": sorted((m["Name"], m["Regex"]) for m in algorithm.get("MetricDefinitions") or []),
        "role_arn": d.get("RoleArn"),
        "hyperparameters": dict(sorted(hps.items())),
        "channels": {c["ChannelName"]: _channel_view(c) for c in d.get("InputDataConfig") or []},
        "output_path": (d.get("OutputDataConfig", {}).get("S3OutputPath") or "").rstrip("/"),
        "instance_type": resources.get("InstanceType"),
        "instance_count": resources.get("InstanceCount"),
        "volume_size": resources.get("VolumeSizeInGB"),
        "max_run": stopping.get("MaxRuntimeInSeconds"),
        "max_wait": stopping.get("MaxWaitTimeInSeconds"),
        "use_spot": bool(d.get("EnableManagedSpotTraining")),
        "checkpoint_s3_uri": (d.get("CheckpointConfig") or {}).get("S3Uri"),
        "network_isolation": bool(d.get("EnableNetworkIsolation")),
        "vpc": {"subnets": sorted(vpc.get("Subnets") or []),
                "security_group_ids": sorted(vpc.get("SecurityGroupIds") or [])},
    }


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Human-readable list of what differs between two projections."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            out += differences(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    if before != after:
        return [f"{path}: existing {before!r}, requested {after!r}"]
    return []


def immutable_mismatch(kind: str, name: str, diffs: list[str]) -> SageMakerError:
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    return SageMakerError(
        f"{kind} {name!r} already exists with another spec ({shown}). SageMaker {kind} names are immutable: "
        f"give this spec a new name, or restore the old values to keep the existing {kind}",
        code="ResourceInUse", differences=diffs)
