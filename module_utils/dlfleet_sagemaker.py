# Shared code of the SageMaker modules: option specs, validation, source packing, request builders,
# idempotency checks, waiting with progress, results, and the AWS backend (one thin retried wrapper per
# SageMaker call). The local backend (instance_type: local, dlfleet_sagemaker_local) is a client of the local
# runtime (the sagemaker_local package) and answers the same calls with the same record shapes: every module runs
# one code path in both modes, and what differs between them is a method or attribute of the backend.
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from datetime import datetime
from typing import Any

from ansible.module_utils import dlfleet_sagemaker_logs as logs
from ansible.module_utils.dlfleet_aws import aws_retry, error_code, fleet_tags, tag_dict, tag_list
from ansible.module_utils.dlfleet_s3 import normalize_prefix

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # the module reports missing botocore through AnsibleAWSModule
    BotoCoreError = ClientError = Exception  # type: ignore[assignment,misc]

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


class SageMakerError(Exception):
    """A failure with a message that says what was asked, what happened and what to do."""

    def __init__(self, message: str, code: str = "ValidationException", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


# --------------------------------------------------------------------------------------------------
# Option specs shared by the modules (DOCUMENTATION in each module mirrors them)
# --------------------------------------------------------------------------------------------------

def common_spec() -> dict[str, Any]:
    """Options every SageMaker module has: tags, local mode and waiting."""
    return dict(
        tags=dict(type="dict", default={}),
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


# --------------------------------------------------------------------------------------------------
# Code packing: deterministic sourcedir.tar.gz, named by its content hash
# --------------------------------------------------------------------------------------------------

def _excluded(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, pat) for part in parts for pat in patterns) or any(
        fnmatch.fnmatch(rel, pat) for pat in patterns)


def pack_source(root: str, exclude: list[str]) -> bytes:
    """tar.gz of `root` (a directory, or one file) that depends on file names, modes and contents only:
    sorted entries, zero mtimes and owners, no gzip name or time. Equal code gives equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if os.path.isfile(root):
            _add_file(tar, root, os.path.basename(root))
        else:
            for dirpath, dirnames, filenames in os.walk(root):
                rel_dir = os.path.relpath(dirpath, root)
                dirnames[:] = sorted(d for d in dirnames
                                     if not _excluded(os.path.normpath(os.path.join(rel_dir, d)), exclude))
                for name in sorted(filenames):
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    if not _excluded(rel, exclude):
                        _add_file(tar, os.path.join(dirpath, name), rel)
    return buf.getvalue()


def _add_file(tar: tarfile.TarFile, path: str, arcname: str) -> None:
    info = tarfile.TarInfo(arcname)
    with open(path, "rb") as fh:
        data = fh.read()
    info.size = len(data)
    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def source_bundle(p: dict[str, Any], default_location: str) -> dict[str, Any]:
    """Pack the code and name its place: <code_location>/<sha256[:20]>/sourcedir.tar.gz."""
    root, program = resolve_entry_point(p["entry_point"], p["source_dir"])
    data = pack_source(root, p["source_exclude"])
    digest = hashlib.sha256(data).hexdigest()
    location = (p["code_location"] or default_location).rstrip("/")
    return {"program": program, "data": data, "sha256": digest,
            "uri": f"{location}/{digest[:20]}/sourcedir.tar.gz"}


# The serving images of the MXNet framework (1.4 and later) run multi-model-server, whose handler imports the
# inference code from the model's own code/ folder and never downloads SAGEMAKER_SUBMIT_DIRECTORY: the SDK repacks
# model.tar.gz at deploy time, and so does sagemaker_endpoint.
MODEL_CODE_DIR = "/opt/ml/model/code"


def _safe_member(member: tarfile.TarInfo, uri: str) -> None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or not (member.isfile() or member.isdir()):
        raise SageMakerError(f"{uri}: member {name!r} is not a plain file or folder inside the archive; a model "
                             f"archive holds files and folders only, with relative names", code="InvalidModelData")


def _rel(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name.rstrip("/")


def repack_model(storage: Storage, model_uri: str, bundle: dict[str, Any], check_mode: bool) -> str:
    """The SDK's deploy-time repack: `model_uri`'s archive with its code/ folder replaced by the code bundle, stored
    next to the bundle as <location>/<digest>/model.tar.gz. The digest covers the model's identity (S3 ETag and
    size, or the local file's sha256) and the code's, so the same pair is stored once and named the same on every
    run; in check mode only the name is worked out."""
    identity = storage.identity(model_uri)
    digest = hashlib.sha256(f"{identity}\n{bundle['sha256']}".encode()).hexdigest()
    uri = bundle["uri"].rsplit("/", 2)[0] + f"/{digest[:20]}/model.tar.gz"
    if check_mode or storage.exists(uri):
        return uri
    tmp = storage.fetch_temp(model_uri)
    try:
        buf = io.BytesIO()
        with tarfile.open(tmp, "r:*") as src, \
                gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
            for member in src:
                _safe_member(member, model_uri)
                if _rel(member.name).split("/", 1)[0] in ("", "code"):
                    continue   # the archive's root entry, and the trainer's copy of the code: the deployed one goes in
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
            with tarfile.open(fileobj=io.BytesIO(bundle["data"]), mode="r:gz") as code:
                for member in code:
                    _safe_member(member, bundle["uri"])
                    if not _rel(member.name):
                        continue
                    data = code.extractfile(member) if member.isfile() else None
                    member.name = "code/" + _rel(member.name)
                    out.addfile(member, data)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SageMakerError(f"{model_uri} is not a readable model.tar.gz ({err}): give the model_artifact of a "
                             f"finished training job", code="InvalidModelData") from err
    finally:
        os.unlink(tmp)
    storage.put_if_absent(uri, buf.getvalue())
    return uri


def default_code_location(output_path: str) -> str:
    return output_path.rstrip("/") + "/code"


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


def resource_tags(p: dict[str, Any]) -> dict[str, str]:
    """The user's tags, with the dlfleet tags merged over them when `fleet` is given."""
    tags = {str(k): str(v) for k, v in (p.get("tags") or {}).items()}
    if p.get("fleet"):
        try:
            tags = fleet_tags(p["fleet"], p["owner"], p["ttl"], tags)
        except ValueError as err:
            raise SageMakerError(str(err)) from err
    return tags


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


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """Describe* answers with datetimes (AWS) or ISO strings (local) as JSON-safe data."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not str(k).startswith("_") and k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def snake(record: dict[str, Any], keep: tuple[str, ...] = ("HyperParameters", "StaticHyperParameters",
                                                            "Environment", "Tags", "TunedHyperParameters")
          ) -> dict[str, Any]:
    from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
    return camel_dict_to_snake_dict(plain(record), ignore_list=list(keep))


def final_metrics(describe: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in describe.get("FinalMetricDataList") or []}


def training_result(describe: dict[str, Any] | None, tags: dict[str, str] | None = None,
                    log_tail: list[str] | None = None, transitions: list[str] | None = None) -> dict[str, Any]:
    if not describe:
        return {"training_job": {}, "model_artifact": None, "final_metrics": {}, "billable_seconds": None,
                "status": None, "secondary_status_transitions": [], "log_tail": log_tail or []}
    job = snake(describe)
    job["tags"] = tags or {}
    job["hyperparameters"] = decode_hyperparameters(describe.get("HyperParameters"))
    job.pop("hyper_parameters", None)
    return {
        "training_job": job,
        "model_artifact": (describe.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        "final_metrics": final_metrics(describe),
        "billable_seconds": describe.get("BillableTimeInSeconds"),
        "status": describe.get("TrainingJobStatus"),
        "secondary_status_transitions": [
            f"{t.get('Status')}: {t.get('StatusMessage', '')}".rstrip(": ")
            for t in describe.get("SecondaryStatusTransitions") or []],
        "status_changes": transitions or [],
        "log_tail": log_tail or [],
    }


# --------------------------------------------------------------------------------------------------
# Waiting with progress
# --------------------------------------------------------------------------------------------------

def wait_for(describe, status_of, terminal: tuple[str, ...], timeout: int, poll: float,
             what: str, log=None) -> tuple[dict[str, Any], list[str]]:
    """Poll `describe()` until `status_of(record)` is terminal. Returns the last record and every status
    change seen, each as 'status[/secondary]: message'. Times out with a message naming the state."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    record: dict[str, Any] = {}
    pause = min(poll, 1.0)
    while True:
        record = describe() or {}
        status = status_of(record)
        if not seen or seen[-1] != status:
            seen.append(status)
            if log:
                log(f"{what}: {status}")
        if status.split("/")[0] in terminal:
            return record, seen
        if time.monotonic() > deadline:
            raise SageMakerError(
                f"{what} still {status} after wait_timeout={timeout}s: raise wait_timeout, or set wait: false "
                f"and check on it later", code="Timeout")
        time.sleep(pause)
        pause = min(poll, pause * 2)  # quick first looks, then no more than one call per `poll` seconds


def training_status(record: dict[str, Any]) -> str:
    status = record.get("TrainingJobStatus", "Unknown")
    secondary = record.get("SecondaryStatus")
    return f"{status}/{secondary}" if secondary and secondary != status else status


# --------------------------------------------------------------------------------------------------
# Storage: S3 (AWS or the emulator) and file:// (local mode), with SSE and skip-if-present
# --------------------------------------------------------------------------------------------------

def split_s3(uri: str) -> tuple[str, str]:
    match = S3_URI_RE.match(uri)
    if not match:
        raise SageMakerError(f"{uri!r} is not an S3 URI")
    return match.group("bucket"), match.group("key") or ""


class Storage:
    """Puts and checks objects by URI. S3 writes always ask for server-side encryption."""

    def __init__(self, s3_factory, kms_key_id: str | None = None) -> None:
        self._s3_factory = s3_factory
        self._s3 = None
        self.kms_key_id = kms_key_id

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def sse_args(self) -> dict[str, str]:
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def exists(self, uri: str) -> bool:
        if uri.startswith("file://"):
            return os.path.exists(uri[len("file://"):])
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.head_object)(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if error_code(err) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise SageMakerError(f"cannot read {uri}: {err}", code=error_code(err) or "S3Error") from err

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """Store `data` at `uri` unless something is there already (the URI carries the content hash)."""
        if self.exists(uri):
            return False
        if uri.startswith("file://"):
            path = uri[len("file://"):]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            return True
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.put_object)(Bucket=bucket, Key=key, Body=data, **self.sse_args())
        except ClientError as err:
            code = error_code(err)
            hint = " Create the bucket first (playbooks/sagemaker.yml does)." if code == "NoSuchBucket" else ""
            raise SageMakerError(f"cannot upload {uri}: {err}.{hint}", code=code or "S3Error") from err
        return True

    def identity(self, uri: str) -> str:
        """What names this object's content: the local file's sha256, or the S3 object's ETag and size."""
        if uri.startswith("file://"):
            path = uri[len("file://"):]
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError as err:
                raise SageMakerError(f"cannot read {uri}: {err}", code="InvalidModelData") from err
            return f"sha256:{digest.hexdigest()}"
        bucket, key = split_s3(uri)
        try:
            head = aws_retry(self.s3.head_object)(Bucket=bucket, Key=key)
        except ClientError as err:
            if error_code(err) in ("404", "NoSuchKey", "NotFound"):
                raise SageMakerError(f"{uri} does not exist: give the model_artifact of a finished training job",
                                     code="InvalidModelData") from err
            raise SageMakerError(f"cannot read {uri}: {err}", code=error_code(err) or "S3Error") from err
        return f"etag:{head.get('ETag', '').strip(chr(34))}:{head.get('ContentLength', 0)}"

    def fetch_temp(self, uri: str) -> str:
        """A copy of the object in a temporary file (the caller removes it)."""
        import tempfile
        fd, path = tempfile.mkstemp(prefix="dlfleet-model-", suffix=".tar.gz")
        os.close(fd)
        try:
            self.download(uri, path)
        except BaseException:
            os.unlink(path)
            raise
        return path

    def download(self, uri: str, dest: str) -> None:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        if uri.startswith("file://"):
            with open(uri[len("file://"):], "rb") as src, open(dest, "wb") as out:
                out.write(src.read())
            return
        bucket, key = split_s3(uri)
        try:
            aws_retry(self.s3.download_file)(bucket, key, dest)
        except ClientError as err:
            raise SageMakerError(f"cannot download {uri}: {err}", code=error_code(err) or "S3Error") from err


# --------------------------------------------------------------------------------------------------
# The AWS backend: one thin, retried wrapper per SageMaker call; "not found" decided here, once
# --------------------------------------------------------------------------------------------------

def not_found(err: BaseException) -> bool:
    code = error_code(err)
    if code in ("ResourceNotFound", "ResourceNotFoundException", "NoSuchEntity"):
        return True
    message = str(getattr(err, "response", {}).get("Error", {}).get("Message", "")).lower()
    return code == "ValidationException" and ("could not find" in message or "not found" in message
                                              or "does not exist" in message)


def _call(fn, what: str, missing_ok: bool = False, **kwargs):
    try:
        answer = fn(aws_retry=True, **kwargs)
        if isinstance(answer, dict):
            answer.pop("ResponseMetadata", None)
        return answer
    except (ClientError, BotoCoreError) as err:
        if missing_ok and not_found(err):
            return None
        raise SageMakerError(f"{what} failed: {err}", code=error_code(err) or "AWSError") from err


def _logs_call(fn, **kwargs):
    """A retried CloudWatch Logs call; None when the group or stream does not exist (yet)."""
    try:
        return aws_retry(fn)(**kwargs)
    except ClientError as err:
        if error_code(err) == "ResourceNotFoundException":
            return None
        raise


class AwsBackend:
    """SageMaker in AWS (or the emulator): boto3 clients with dlfleet's retry policy."""

    poll_seconds = 15.0   # longest pause between two Describe* calls while waiting
    look_seconds = 5.0    # pause between two looks of sagemaker_job_progress

    def __init__(self, module) -> None:
        self.module = module
        self.sm = module.client("sagemaker", retry_decorator=aws_retry)
        self._runtime = None
        self._logs = None

    def prepare(self) -> None:
        """What must hold before a job or endpoint is created (AWS checks the rest itself)."""

    def strategy_warning(self, strategy: str) -> str | None:
        """A warning when the tuning strategy runs otherwise than asked (never in AWS)."""
        return None

    def logs_client(self):
        if self._logs is None:
            self._logs = self.module.client("logs", retry_decorator=aws_retry)
        return self._logs

    # training jobs
    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_training_job, f"DescribeTrainingJob {name}", True, TrainingJobName=name)

    def create_training_job(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_training_job, f"CreateTrainingJob {request['TrainingJobName']}", **request)

    def stop_training_job(self, name: str) -> None:
        _call(self.sm.stop_training_job, f"StopTrainingJob {name}", TrainingJobName=name)

    def training_log_tail(self, name: str, lines: int) -> list[str]:
        """The newest lines of the job's CloudWatch log streams, when there are any."""
        if lines <= 0:
            return []
        logs_client = self.logs_client()
        group = "/aws/sagemaker/TrainingJobs"
        try:
            streams = aws_retry(logs_client.describe_log_streams)(
                logGroupName=group, logStreamNamePrefix=f"{name}/").get("logStreams", [])
            out: list[str] = []
            for stream in streams[:4]:
                events = aws_retry(logs_client.get_log_events)(
                    logGroupName=group, logStreamName=stream["logStreamName"], limit=lines,
                    startFromHead=False).get("events", [])
                out += [e["message"].rstrip("\n") for e in events]
            return out[-lines:]
        except (ClientError, BotoCoreError):
            return []  # no log group yet (or no logs permission): progress goes on without the tail

    def training_log_since(self, name: str, cursor: dict[str, Any], limit: int, final: bool,
                           hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
        """The job's CloudWatch log lines after `cursor`, labelled with their instance when `hosts` > 1 (botocore
        errors other than a missing group or stream are raised)."""
        return logs.aws_read(self.logs_client(), name, cursor, limit, _logs_call, hosts)

    # tuning jobs
    def describe_tuning_job(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_hyper_parameter_tuning_job, f"DescribeHyperParameterTuningJob {name}", True,
                     HyperParameterTuningJobName=name)

    def create_tuning_job(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_hyper_parameter_tuning_job,
              f"CreateHyperParameterTuningJob {request['HyperParameterTuningJobName']}", **request)

    def stop_tuning_job(self, name: str) -> None:
        _call(self.sm.stop_hyper_parameter_tuning_job, f"StopHyperParameterTuningJob {name}",
              HyperParameterTuningJobName=name)

    def list_tuning_trials(self, name: str) -> list[dict[str, Any]]:
        paginator = self.sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        try:
            pages = aws_retry(lambda: list(paginator.paginate(HyperParameterTuningJobName=name)))()
        except (ClientError, BotoCoreError) as err:
            raise SageMakerError(f"ListTrainingJobsForHyperParameterTuningJob {name} failed: {err}",
                                 code=error_code(err) or "AWSError") from err
        return [s for page in pages for s in page.get("TrainingJobSummaries", [])]

    # models, endpoint configs, endpoints
    def describe_model(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_model, f"DescribeModel {name}", True, ModelName=name)

    def create_model(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_model, f"CreateModel {request['ModelName']}", **request)

    def delete_model(self, name: str) -> None:
        _call(self.sm.delete_model, f"DeleteModel {name}", True, ModelName=name)

    def list_models(self, name_contains: str) -> list[str]:
        pages = aws_retry(lambda: list(self.sm.get_paginator("list_models").paginate(NameContains=name_contains)))()
        return [m["ModelName"] for page in pages for m in page.get("Models", [])]

    def describe_endpoint_config(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_endpoint_config, f"DescribeEndpointConfig {name}", True,
                     EndpointConfigName=name)

    def create_endpoint_config(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_endpoint_config, f"CreateEndpointConfig {request['EndpointConfigName']}", **request)

    def delete_endpoint_config(self, name: str) -> None:
        _call(self.sm.delete_endpoint_config, f"DeleteEndpointConfig {name}", True, EndpointConfigName=name)

    def list_endpoint_configs(self, name_contains: str) -> list[str]:
        pages = aws_retry(lambda: list(
            self.sm.get_paginator("list_endpoint_configs").paginate(NameContains=name_contains)))()
        return [c["EndpointConfigName"] for page in pages for c in page.get("EndpointConfigs", [])]

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_endpoint, f"DescribeEndpoint {name}", True, EndpointName=name)

    def create_endpoint(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_endpoint, f"CreateEndpoint {request['EndpointName']}", **request)

    def update_endpoint(self, name: str, config_name: str) -> None:
        _call(self.sm.update_endpoint, f"UpdateEndpoint {name}", EndpointName=name, EndpointConfigName=config_name)

    def delete_endpoint(self, name: str) -> None:
        _call(self.sm.delete_endpoint, f"DeleteEndpoint {name}", True, EndpointName=name)

    def invoke_endpoint(self, name: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        if self._runtime is None:
            self._runtime = self.module.client("sagemaker-runtime", retry_decorator=aws_retry)
        answer = _call(self._runtime.invoke_endpoint, f"InvokeEndpoint {name}", EndpointName=name, Body=body,
                       ContentType=content_type, Accept=accept)
        return answer["Body"].read(), answer.get("ContentType", accept)

    def endpoint_url(self, name: str) -> str:
        return f"https://runtime.sagemaker.{self.module.region}.amazonaws.com/endpoints/{name}/invocations"

    # tags
    def list_tags(self, arn: str) -> dict[str, str]:
        pages = aws_retry(lambda: list(self.sm.get_paginator("list_tags").paginate(ResourceArn=arn)))()
        return tag_dict([t for page in pages for t in page.get("Tags", [])])

    def update_tags(self, arn: str, want: dict[str, str], have: dict[str, str]) -> bool:
        drop = [k for k in have if k not in want]
        add = {k: v for k, v in want.items() if have.get(k) != v}
        if drop:
            _call(self.sm.delete_tags, f"DeleteTags {arn}", ResourceArn=arn, TagKeys=drop)
        if add:
            _call(self.sm.add_tags, f"AddTags {arn}", ResourceArn=arn, Tags=tag_list(add))
        return bool(drop or add)


def create_once(create, describe, matches=None) -> bool:
    """Create, and when the call fails but the resource exists (a retried create whose first answer was lost:
    AWS then says it already exists), adopt it if it is what was asked for. Returns True when adopted."""
    try:
        create()
        return False
    except SageMakerError as err:
        found = describe()
        if found is None or (matches is not None and not matches(found)):
            raise
        err.details.clear()
        return True


def region_of(module, local: bool) -> str:
    region = module.region
    if not region:
        if local:
            return "us-east-1"
        raise SageMakerError("no AWS region: set `region` or AWS_REGION / AWS_DEFAULT_REGION", code="NoRegion")
    return region


def backend_for(module, local: bool):
    """The AWS backend, or the local one (instance_type: local); both answer the same calls."""
    if not local:
        return AwsBackend(module)
    from ansible.module_utils.dlfleet_sagemaker_local import LocalBackend
    return LocalBackend(module)


def s3_client_factory(module):
    return lambda: module.client("s3", retry_decorator=aws_retry)


def run_module(module, local_of, ensure_present, ensure_absent, log) -> None:
    """main() of every SageMaker module: pick the backend (AWS or local), call ensure_present/ensure_absent,
    and answer through exit_json or fail_json. `local_of(params)` says whether the spec runs locally."""
    params = module.params
    try:
        local = local_of(params)
        region = region_of(module, local)
        backend = backend_for(module, local)
        if params["state"] == "present":
            storage = Storage(s3_client_factory(module), params["kms_key_id"])
            result = ensure_present(backend, storage, params, module.check_mode, region, log)
        else:
            result = ensure_absent(backend, params, module.check_mode, log)
    except SageMakerError as err:
        module.fail_json(msg=str(err), error_code=err.code, **err.details)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def sha8(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]
