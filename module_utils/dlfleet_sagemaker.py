# Shared code of the SageMaker modules, what a spec says: constants, the error every SageMaker module reports,
# the option specs the modules share, and validation (every check before any call). By concern, the rest:
# dlfleet_sagemaker_code (code packing, the deploy-time repack, storage), dlfleet_sagemaker_requests (images,
# hyperparameters, request builders, idempotency views), dlfleet_sagemaker_results (results, waiting),
# dlfleet_sagemaker_backend (the backend interface: AWS here, local mode in dlfleet_sagemaker_local; run_module),
# and each module's ensure_* in dlfleet_sagemaker_<module>.
from __future__ import annotations

import os
import re
from typing import Any

from ansible.module_utils.dlfleet_aws import DlfleetError
from ansible.module_utils.dlfleet_s3 import normalize_prefix
from ansible.module_utils.dlfleet_tags import TAGS_SPEC

LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
TRAINING_TERMINAL = ("Completed", "Failed", "Stopped")
TUNING_TERMINAL = ("Completed", "Failed", "Stopped")
ENDPOINT_STABLE = ("InService", "Failed", "OutOfService")
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
DEFAULT_SOURCE_EXCLUDE = ["__pycache__", "*.pyc", ".*"]
# The framework containers read these from the hyperparameters (JSON-encoded, like every value).
SAGEMAKER_HP_PROGRAM = "sagemaker_program"
SAGEMAKER_HP_SUBMIT_DIR = "sagemaker_submit_directory"
SAGEMAKER_HP_REGION = "sagemaker_region"
SAGEMAKER_HP_LOG_LEVEL = "sagemaker_container_log_level"
SAGEMAKER_HP_JOB_NAME = "sagemaker_job_name"
SAGEMAKER_HP_PS = "sagemaker_parameter_server_enabled"


class SageMakerError(DlfleetError):
    """A failure of a SageMaker module: a message that says what was asked, what happened and what to do, the error
    code (ValidationException unless said), and further return values (details)."""

    default_code = "ValidationException"


# --------------------------------------------------------------------------------------------------
# Option specs shared by the modules (DOCUMENTATION in each module mirrors them)
# --------------------------------------------------------------------------------------------------

def common_spec() -> dict[str, Any]:
    """Options every SageMaker module has: tags (and purge_tags), local mode and waiting."""
    return dict(
        **TAGS_SPEC,
        fleet=dict(type="str"),
        owner=dict(type="str", default="dlfleet"),
        ttl=dict(type="str", default="8h"),
        local_dir=dict(type="path", default="~/.dlfleet/sagemaker-local"),
        local_python=dict(type="str", default="python3"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=86400),
    )


def code_spec() -> dict[str, Any]:
    """Where the code comes from and which framework image runs it."""
    return dict(
        entry_point=dict(type="str"),
        source_dir=dict(type="path"),
        source_exclude=dict(type="list", elements="str", default=list(DEFAULT_SOURCE_EXCLUDE)),
        code_location=dict(type="str"),
        framework=dict(type="str", default="mxnet", choices=["mxnet"]),
        framework_version=dict(type="str", default="1.9.0"),
        py_version=dict(type="str", default="py38"),
        image_uri=dict(type="str"),
        container_log_level=dict(type="int", default=20),
        kms_key_id=dict(type="str"),
    )


def training_spec() -> dict[str, Any]:
    """The training job definition (shared by sagemaker_training_job and sagemaker_tuning_job)."""
    spec = code_spec()
    spec.update(
        role_arn=dict(type="str"),
        hyperparameters=dict(type="dict", default={}),
        channels=dict(
            type="list", elements="dict", default=[],
            options=dict(
                name=dict(type="str", required=True),
                uri=dict(type="str", required=True),
                content_type=dict(type="str"),
                distribution=dict(type="str", default="FullyReplicated",
                                  choices=["FullyReplicated", "ShardedByS3Key"]),
                input_mode=dict(type="str", choices=["File", "Pipe", "FastFile"]),
                compression=dict(type="str", default="None", choices=["None", "Gzip"]),
            ),
        ),
        instance_type=dict(type="str"),
        instance_count=dict(type="int", default=1),
        volume_size=dict(type="int", default=30),
        max_run=dict(type="int", default=86400),
        use_spot=dict(type="bool", default=False),
        max_wait=dict(type="int"),
        checkpoint_s3_uri=dict(type="str"),
        checkpoint_local_path=dict(type="str", default="/opt/ml/checkpoints"),
        distribution=dict(
            type="dict",
            options=dict(parameter_server=dict(type="dict", options=dict(enabled=dict(type="bool", default=False)))),
        ),
        metric_definitions=dict(
            type="list", elements="dict", default=[],
            options=dict(name=dict(type="str", required=True), regex=dict(type="str", required=True)),
        ),
        output_path=dict(type="str"),
        subnets=dict(type="list", elements="str"),
        security_group_ids=dict(type="list", elements="str"),
        enable_network_isolation=dict(type="bool", default=False),
    )
    return spec


# --------------------------------------------------------------------------------------------------
# Validation: every check runs before anything is created, and names the value and the fix
# --------------------------------------------------------------------------------------------------

def is_local(instance_type: str | None) -> bool:
    return instance_type in LOCAL_INSTANCE_TYPES


def check_name(kind: str, name: str, max_len: int = 63) -> None:
    if not name or len(name) > max_len or not NAME_RE.fullmatch(name):
        raise SageMakerError(
            f"{kind} name {name!r} is not valid: use 1-{max_len} letters, digits and hyphens, starting and "
            f"ending with a letter or digit (for example 'cifar10-resnet20-001')")


def check_instance_type(instance_type: str, what: str = "instance_type") -> None:
    if is_local(instance_type):
        return
    if not re.match(r"^ml\.[a-z0-9]+\.[a-z0-9]+$", instance_type or ""):
        raise SageMakerError(
            f"{what} {instance_type!r} is not a SageMaker instance type: use an ml.* type such as "
            f"'ml.p3.2xlarge' or 'ml.m5.xlarge', or 'local' to run on this machine without AWS")


def check_uri(what: str, uri: str, local: bool, allow_file: bool = True) -> None:
    """s3:// anywhere; file:// only in local mode (AWS cannot read this machine's disk)."""
    if uri.startswith("s3://"):
        match = S3_URI_RE.match(uri)
        if not match:
            raise SageMakerError(f"{what} {uri!r} is not a valid S3 URI: use s3://<bucket>/<prefix>")
        if match["key"]:
            try:   # the purge's own rule: what is written under a prefix is what teardown removes
                normalize_prefix(match["key"])
            except ValueError as err:
                raise SageMakerError(f"{what} {uri!r}: the key {err}") from None
        return
    if uri.startswith("file://"):
        if not allow_file:
            raise SageMakerError(f"{what} {uri!r}: only s3:// URIs are accepted here")
        if not local:
            raise SageMakerError(
                f"{what} {uri!r} is a local path, which SageMaker in AWS cannot read: upload it to S3 and pass "
                f"the s3:// URI, or use instance_type 'local'")
        return
    raise SageMakerError(f"{what} {uri!r} must start with s3:// (or file:// in local mode)")


def check_hyperparameters(hyperparameters: dict[str, Any], what: str = "hyperparameters") -> None:
    for key, value in hyperparameters.items():
        if key.startswith("sagemaker_"):
            raise SageMakerError(
                f"{what}.{key}: names starting with 'sagemaker_' are set by the module itself; remove it "
                f"(entry_point, source_dir, container_log_level and distribution set them)")
        if isinstance(value, bool | int | float | str):
            continue
        raise SageMakerError(
            f"{what}.{key} is a {type(value).__name__} ({value!r}): SageMaker passes each hyperparameter to the "
            f"script as one command-line value, so use a number, a string or a boolean")


def resolve_entry_point(entry_point: str | None, source_dir: str | None) -> tuple[str, str]:
    """(directory to pack, program name inside it). Fails when the entry point is not where it is said to be."""
    if not entry_point:
        raise SageMakerError("entry_point is required: name the training script, for example 'train.py'")
    if source_dir:
        source_dir = os.path.abspath(os.path.expanduser(source_dir))
        if not os.path.isdir(source_dir):
            raise SageMakerError(f"source_dir {source_dir!r} is not a directory: point it at the training code")
        if os.path.isabs(entry_point) or ".." in entry_point.split("/"):
            raise SageMakerError(
                f"entry_point {entry_point!r} must be a path relative to source_dir {source_dir!r}")
        if not os.path.isfile(os.path.join(source_dir, entry_point)):
            raise SageMakerError(
                f"entry_point {entry_point!r} is not in source_dir {source_dir!r}: give the script's path "
                f"relative to source_dir, or fix source_dir")
        return source_dir, entry_point
    path = os.path.abspath(os.path.expanduser(entry_point))
    if not os.path.isfile(path):
        raise SageMakerError(f"entry_point {entry_point!r} does not exist: give a script file, or set source_dir")
    return path, os.path.basename(path)


def check_training_params(p: dict[str, Any], hp_key: str = "hyperparameters") -> None:
    """Everything a training definition can get wrong, checked before any call."""
    local = is_local(p["instance_type"])
    check_instance_type(p["instance_type"])
    resolve_entry_point(p["entry_point"], p["source_dir"])
    check_hyperparameters(p[hp_key] or {}, hp_key)
    if not (p["role_arn"] or "").startswith("arn:") and not local:
        raise SageMakerError(
            f"role_arn {p['role_arn']!r} is not an IAM role ARN: pass the execution role, for example "
            f"'arn:aws:iam::123456789012:role/SageMakerRole'")
    for key, low in (("instance_count", 1), ("volume_size", 1), ("max_run", 1), ("container_log_level", 0)):
        if p[key] is not None and p[key] < low:
            raise SageMakerError(f"{key} is {p[key]}; it must be at least {low}")
    check_uri("output_path", p["output_path"], local)
    if p["code_location"]:
        check_uri("code_location", p["code_location"], local)
    if p["checkpoint_s3_uri"]:
        check_uri("checkpoint_s3_uri", p["checkpoint_s3_uri"], local)
    names = [c["name"] for c in p["channels"]]
    if len(set(names)) != len(names):
        raise SageMakerError(f"channels: names {names} repeat; give each channel one entry")
    for channel in p["channels"]:
        if not re.match(r"^[A-Za-z0-9\.\-_]{1,64}$", channel["name"]):
            raise SageMakerError(f"channels: name {channel['name']!r} may hold letters, digits, '.', '-' and '_'")
        check_uri(f"channels[{channel['name']}].uri", channel["uri"], local)
        if channel["uri"].startswith("file://") and not os.path.exists(channel["uri"][len("file://"):]):
            raise SageMakerError(f"channels[{channel['name']}].uri {channel['uri']!r} does not exist on this machine")
    if p["use_spot"]:
        if p["max_wait"] is None or p["max_wait"] < p["max_run"]:
            raise SageMakerError(
                f"use_spot needs max_wait >= max_run (max_wait={p['max_wait']}, max_run={p['max_run']}): "
                f"max_wait counts the time waiting for spot capacity plus the run itself")
    elif p["max_wait"] is not None:
        raise SageMakerError("max_wait applies to spot training only: set use_spot: true, or drop max_wait")
    for metric in p["metric_definitions"]:
        try:
            regex = re.compile(metric["regex"])
        except re.error as err:
            raise SageMakerError(f"metric_definitions[{metric['name']}].regex {metric['regex']!r}: {err}") from err
        if regex.groups < 1:
            raise SageMakerError(
                f"metric_definitions[{metric['name']}].regex {metric['regex']!r} has no group: put the value in "
                f"parentheses, for example 'validation-accuracy=([0-9.]+)'")
    if bool(p["subnets"]) != bool(p["security_group_ids"]):
        raise SageMakerError("subnets and security_group_ids go together: give both for a VPC job, or neither")
