# SageMaker's training container, as local processes: what `instance_type: local` runs for a training or tuning
# job (the inference container is sagemaker_local.serving).
#
# Standard library only (boto3 when a URI is s3://), for the Pythons of the training environments (3.8 to 3.11).
# The local backend (sagemaker_local.backend) starts each of these detached, as `python -m sagemaker_local ...`
# in the training environment, so that a job outlives the task that started it and `state: absent` can stop it:
#   train <job_dir>     the training container: /opt/ml layout rooted in <job_dir>/algo-N, SM_* env,
#                       hyperparameters as CLI args, model.tar.gz to output_path
#   tune <tuning_dir>   a tuning job: trials as local training jobs, objective from the logs
#   serve ...           the inference container (sagemaker_local.serving)
# The job's record (record.json) has the DescribeTrainingJob / DescribeHyperParameterTuningJob shape, so
# the modules read local jobs exactly as they read AWS answers.
from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from typing import Any

PACKAGE = "sagemaker_local"   # run as `python -m sagemaker_local` in the training environment
ACCOUNT = "000000000000"
LOG_TAIL = 40
STOP_GRACE_SECONDS = 10


# ----------------------------------------------------------------------------------------------------
# Records: atomic JSON files, shared with the module side
# ----------------------------------------------------------------------------------------------------

def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()  # noqa: UP017 - runs under the training venv's Python too


def parse_iso(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


_WRITES = itertools.count()


def write_json(path: str, data: Any) -> None:
    # a temporary file of each write's own: a SIGTERM handler may write the same record on the same thread while an
    # interrupted write of it is half done
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}-{next(_WRITES)}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def arn(region: str, kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name}"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat); tells a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None
        return fields[19]
    except (OSError, IndexError):
        return None


def alive(pid: int | None, start: str | None) -> bool:
    return bool(pid) and start is not None and process_start_time(int(pid)) == start


def terminate_group(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after `grace` seconds."""
    start = process_start_time(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and start is not None and process_start_time(pid) == start:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def tail(path: str, lines: int = LOG_TAIL) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in data.splitlines() if line.strip()][-lines:]


# ----------------------------------------------------------------------------------------------------
# Storage: s3:// through boto3 (AWS or the emulator, from the inherited AWS_* env), file:// on disk
# ----------------------------------------------------------------------------------------------------

_S3 = None


def s3():
    global _S3
    if _S3 is None:
        try:
            import boto3
        except ImportError as err:
            raise RuntimeError(
                f"local mode reads and writes s3:// URIs with boto3, which the training environment "
                f"({sys.executable}) lacks: pip install boto3 there (make venv does), or use file:// URIs") from err

        _S3 = boto3.client("s3", region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    return _S3


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


def fetch_prefix(uri: str, dest: str) -> list[str]:
    """Copy everything under `uri` (a prefix or one object) into `dest`; returns the relative names."""
    os.makedirs(dest, exist_ok=True)
    names: list[str] = []
    if uri.startswith("file://"):
        src = uri[len("file://"):]
        if os.path.isfile(src):
            _link_or_copy(src, os.path.join(dest, os.path.basename(src)))
            return [os.path.basename(src)]
        for dirpath, _dirs, files in os.walk(src):
            for name in sorted(files):
                rel = os.path.relpath(os.path.join(dirpath, name), src)
                target = os.path.join(dest, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _link_or_copy(os.path.join(dirpath, name), target)
                names.append(rel)
        return names
    bucket, prefix = split_s3(uri)
    paginator = s3().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.endswith("/"):
                continue
            rel = key[len(prefix):].lstrip("/") if key != prefix else os.path.basename(key)
            target = inside(dest, rel, f"s3://{bucket}/{key}: object name")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3().download_file(bucket, key, target)
            names.append(rel)
    return names


def _link_or_copy(src: str, dest: str) -> None:
    """Hard links make a local channel instant; a copy where linking is not possible."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dest)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def fetch_file(uri: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    if uri.startswith("file://"):
        shutil.copyfile(uri[len("file://"):], dest)
    else:
        bucket, key = split_s3(uri)
        s3().download_file(bucket, key, dest)


def put_file(path: str, uri: str, kms_key_id: str | None) -> None:
    if uri.startswith("file://"):
        target = uri[len("file://"):]
        if os.path.exists(target) and os.path.samefile(path, target):
            return  # staged as a hard link of this very file (checkpoints restored from a file:// URI)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
    else:
        bucket, key = split_s3(uri)
        s3().upload_file(path, bucket, key, ExtraArgs=sse_args(kms_key_id))


def put_tree(root: str, uri: str, kms_key_id: str | None) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            put_file(path, uri.rstrip("/") + "/" + os.path.relpath(path, root), kms_key_id)


def pack_dir(root: str, dest: str) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name)


def inside(dest: str, rel: str, what: str) -> str:
    """os.path.join(dest, rel), or ValueError when `rel` is absolute, climbs out with `..`, or passes through a link
    that leads out of `dest`."""
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, rel))
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/") or \
            (target != root and not target.startswith(root + os.sep)):
        raise ValueError(f"{what} {rel!r} would land outside {dest}: refused, nothing of it is written")
    return os.path.join(root, rel)


def unpack(archive: str, dest: str) -> None:
    """Extract a code or model archive into `dest`: plain files and folders with relative names only. A link, a
    device, an absolute name or a `..` in any member refuses the whole archive before anything is written (a link
    member followed by a member under it would otherwise write wherever the link points)."""
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: member {member.name!r} is a link or a special file: refused, nothing "
                                 f"of the archive is written")
            inside(dest, member.name, f"{archive}: member")
        if hasattr(tarfile, "data_filter"):   # Python 3.8.17+, 3.11.4+: the standard library's own check as well
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)  # members checked above


# ----------------------------------------------------------------------------------------------------
# The training container contract
# ----------------------------------------------------------------------------------------------------

def decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def cli_args(hps: dict[str, Any]) -> list[str]:
    """Hyperparameters as the framework containers pass them: sorted `--name value` pairs."""
    args: list[str] = []
    for key in sorted(hps):
        value = hps[key]
        args.append(f"--{key}" if len(key) > 1 else f"-{key}")
        if isinstance(value, dict):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append(str(value))
    return args


DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"  # CheckpointConfig's LocalPath when the request gives none


def host_layout(job_dir: str, host: str, checkpoint_path: str = DEFAULT_CHECKPOINT_PATH) -> dict[str, str]:
    """A host's folders: its filesystem root is <job_dir>/<host>, so /opt/ml is <job_dir>/<host>/opt/ml and
    CheckpointConfig's LocalPath (any absolute path) lands under the same root."""
    root = os.path.join(job_dir, host, "opt", "ml")
    return {
        "root": root,
        "config": os.path.join(root, "input", "config"),
        "data": os.path.join(root, "input", "data"),
        "code": os.path.join(root, "code"),
        "model": os.path.join(root, "model"),
        "output": os.path.join(root, "output"),
        "output_data": os.path.join(root, "output", "data"),
        "intermediate": os.path.join(root, "output", "intermediate"),
        "checkpoints": os.path.join(job_dir, host, checkpoint_path.lstrip("/")),
        "log": os.path.join(job_dir, f"{host}.log"),
    }


def container_env(request: dict[str, Any], host: str, hosts: list[str], layout: dict[str, str],
                  channels: list[str], num_gpus: int) -> dict[str, str]:
    """SM_* variables as the SageMaker training toolkit sets them, rooted in the job's work dir."""
    raw = request.get("HyperParameters") or {}
    decoded = {k: decode(v) for k, v in raw.items()}
    user_hps = {k: v for k, v in decoded.items() if not k.startswith("sagemaker_")}
    program = decoded.get("sagemaker_program", "")
    resource = read_json(os.path.join(layout["config"], "resourceconfig.json"), {})
    input_config = read_json(os.path.join(layout["config"], "inputdataconfig.json"), {})
    env = {
        "SM_HOSTS": json.dumps(hosts),
        "SM_CURRENT_HOST": host,
        "SM_NETWORK_INTERFACE_NAME": "lo",
        "SM_HPS": json.dumps(user_hps),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_MODEL_DIR": layout["model"],
        "SM_INPUT_DIR": os.path.dirname(layout["config"]),
        "SM_INPUT_CONFIG_DIR": layout["config"],
        "SM_INPUT_DATA_CONFIG": json.dumps(input_config),
        "SM_RESOURCE_CONFIG": json.dumps(resource),
        "SM_OUTPUT_DIR": layout["output"],
        "SM_OUTPUT_DATA_DIR": layout["output_data"],
        "SM_OUTPUT_INTERMEDIATE_DIR": layout["intermediate"],
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_LOG_LEVEL": str(decoded.get("sagemaker_container_log_level", 20)),
        "SM_MODULE_NAME": program[:-3] if program.endswith(".py") else program,
        "SM_MODULE_DIR": str(decoded.get("sagemaker_submit_directory", "")),
        "SM_USER_ENTRY_POINT": program,
        "SM_FRAMEWORK_MODULE": "sagemaker_mxnet_container.training:main",
        "SM_USER_ARGS": json.dumps(cli_args(user_hps)),
        "SM_CURRENT_INSTANCE_TYPE": request["ResourceConfig"]["InstanceType"],
        "SM_IS_MASTER": str(host == hosts[0]).lower(),
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        "TRAINING_JOB_ARN": arn(os.environ.get("AWS_REGION", "us-east-1"), "training-job",
                                request["TrainingJobName"]),
    }
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = os.path.join(layout["data"], name)
    for key, value in user_hps.items():
        env[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["SM_TRAINING_ENV"] = json.dumps({
        "hosts": hosts, "current_host": host, "hyperparameters": user_hps, "channel_input_dirs": {
            name: os.path.join(layout["data"], name) for name in channels},
        "model_dir": layout["model"], "output_data_dir": layout["output_data"], "job_name":
            request["TrainingJobName"], "num_gpus": num_gpus, "user_entry_point": program,
    })
    return env


class TrainingRun:
    """One local training job, from Starting to a terminal status; owns record.json while it runs."""

    def __init__(self, job_dir: str) -> None:
        self.dir = job_dir
        self.record_path = os.path.join(job_dir, "record.json")
        self.request = read_json(os.path.join(job_dir, "request.json"))
        self.record = read_json(self.record_path)
        self.local = self.record.get("_local", {})
        self.python = self.local.get("python", sys.executable)
        self.region = self.local.get("region", "us-east-1")
        self.kms = (self.request.get("OutputDataConfig") or {}).get("KmsKeyId")
        count = int(self.request["ResourceConfig"]["InstanceCount"])
        self.hosts = [f"algo-{i + 1}" for i in range(count)]
        self.procs: list[subprocess.Popen] = []
        self.stop_reason: str | None = None
        self.lock = threading.RLock()
        self.metrics: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[float]] = {}
        self.checkpoint = self.request.get("CheckpointConfig") or {}

    def layout(self, host: str) -> dict[str, str]:
        return host_layout(self.dir, host, self.checkpoint.get("LocalPath") or DEFAULT_CHECKPOINT_PATH)

    # record plumbing
    def save(self, **changes: Any) -> None:
        with self.lock:
            self.record.update(changes)
            self.record["LastModifiedTime"] = now_iso()
            write_json(self.record_path, self.record)

    def secondary(self, status: str, message: str, **changes: Any) -> None:
        """A secondary status transition, saved in one write with `changes` (a final TrainingJobStatus goes with its
        secondary status: a reader never sees Stopped while the secondary status still says Uploading)."""
        transitions = list(self.record.get("SecondaryStatusTransitions") or [])
        stamp = now_iso()
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = stamp
        transitions.append({"Status": status, "StartTime": stamp, "StatusMessage": message})
        self.save(SecondaryStatus=status, SecondaryStatusTransitions=transitions, **changes)

    def on_term(self, _signum, _frame) -> None:
        # The handler runs on the main thread, possibly while it holds self.lock in save(): it only marks the stop and
        # leaves the record and the processes to a thread of their own, which waits for the lock (taking it here
        # deadlocked a job stopped at that moment: it never ended, and nor did the tuning job waiting for it).
        if self.stop_reason is None:
            self.stop_reason = "Stopped"
            threading.Thread(target=self.stopping, daemon=True).start()

    def stopping(self) -> None:
        """Stopping in the record (unless the job has already ended), then the job's processes stopped."""
        with self.lock:
            if self.record.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped"):
                return
            self.secondary("Stopping", "Stopping the training job", TrainingJobStatus="Stopping")
        self.kill_all()

    def kill_all(self) -> None:
        for proc in list(self.procs):
            if proc.poll() is None:
                threading.Thread(target=terminate_group, args=(proc.pid,), daemon=True).start()

    # phases
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        start = time.time()
        failure = None
        try:
            self.secondary("Starting", "Preparing the instances for training")
            self.prepare()
            if self.stop_reason is None:
                self.secondary("Downloading", "Downloading input data")
                self.download()
            if self.stop_reason is None:
                self.save(TrainingStartTime=now_iso())
                self.secondary("Training", "Training image download completed. Training in progress.")
                failure = self.train()
            self.collect_metrics()
            self.secondary("Uploading", "Uploading generated training model")
            self.upload()
        except Exception as err:  # anything outside the user's script is an internal error, as in SageMaker
            failure = failure or f"InternalServerError: local runtime: {err}\n{traceback.format_exc(limit=3)}"
        end = now_iso()
        started = parse_iso(self.record["TrainingStartTime"]) if self.record.get("TrainingStartTime") else start
        seconds = round(time.time() - started)
        times = {"TrainingEndTime": end, "TrainingTimeInSeconds": max(1, seconds),
                 "BillableTimeInSeconds": max(1, seconds), "_local": self.cpu_accounting()}
        if failure:
            self.secondary("Failed", "Training job failed", TrainingJobStatus="Failed", FailureReason=failure[:1024],
                           **times)
            return 1
        if self.stop_reason:
            status = "MaxRuntimeExceeded" if self.stop_reason == "MaxRuntimeExceeded" else "Stopped"
            message = ("Training job stopped: it ran longer than MaxRuntimeInSeconds"
                       if status == "MaxRuntimeExceeded" else "Training job stopped")
            self.secondary(status, message, TrainingJobStatus="Stopped", **times)
            return 0
        self.secondary("Completed", "Training job completed", TrainingJobStatus="Completed", **times)
        return 0

    def cpu_accounting(self) -> dict[str, Any]:
        """The job's record of CPU seconds: this supervisor and every process it waited for (the trainer)."""
        used = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))
        return {**self.record.get("_local", {}), "cpu_seconds": round(used, 3)}

    def prepare(self) -> None:
        channels = [c["ChannelName"] for c in self.request.get("InputDataConfig") or []]
        input_config = {}
        for channel in self.request.get("InputDataConfig") or []:
            source = channel["DataSource"].get("S3DataSource") or channel["DataSource"].get("FileDataSource") or {}
            input_config[channel["ChannelName"]] = {
                "TrainingInputMode": channel.get("InputMode", "File"),
                "S3DistributionType": source.get("S3DataDistributionType") or source.get(
                    "FileDataDistributionType", "FullyReplicated"),
                "RecordWrapperType": "None",
                **({"ContentType": channel["ContentType"]} if channel.get("ContentType") else {}),
            }
        hps = self.request.get("HyperParameters") or {}
        for host in self.hosts:
            layout = self.layout(host)
            for key in ("config", "data", "code", "model", "output_data", "intermediate"):
                os.makedirs(layout[key], exist_ok=True)
            if self.checkpoint:  # SageMaker makes CheckpointConfig's LocalPath for a job that has one
                os.makedirs(layout["checkpoints"], exist_ok=True)
            for name in channels:
                os.makedirs(os.path.join(layout["data"], name), exist_ok=True)
            write_json(os.path.join(layout["config"], "hyperparameters.json"), hps)
            write_json(os.path.join(layout["config"], "inputdataconfig.json"), input_config)
            write_json(os.path.join(layout["config"], "resourceconfig.json"), {
                "current_host": host, "hosts": self.hosts, "current_group_name": "homogeneousCluster",
                "current_instance_type": self.request["ResourceConfig"]["InstanceType"],
                "instance_groups": [{"instance_group_name": "homogeneousCluster", "hosts": self.hosts,
                                     "instance_type": self.request["ResourceConfig"]["InstanceType"]}],
                "network_interface_name": "lo"})
            for name in ("failure", "success"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(layout["output"], name))

    def download(self) -> None:
        hps = {k: decode(v) for k, v in (self.request.get("HyperParameters") or {}).items()}
        submit = hps.get("sagemaker_submit_directory")
        if submit:
            archive = os.path.join(self.dir, "sourcedir.tar.gz")
            fetch_file(submit, archive)
            for host in self.hosts:
                code = self.layout(host)["code"]
                shutil.rmtree(code, ignore_errors=True)
                unpack(archive, code)
        for channel in self.request.get("InputDataConfig") or []:
            source = channel["DataSource"].get("S3DataSource") or {}
            uri = source.get("S3Uri") or channel["DataSource"].get("FileDataSource", {}).get("FileUri")
            sharded = (source.get("S3DataDistributionType") or channel["DataSource"].get(
                "FileDataSource", {}).get("FileDataDistributionType")) == "ShardedByS3Key"
            first = self.layout(self.hosts[0])
            dest = os.path.join(first["data"], channel["ChannelName"])
            names = sorted(fetch_prefix(uri, dest))
            for host in self.hosts[1:]:
                other = os.path.join(self.layout(host)["data"], channel["ChannelName"])
                for name in names:
                    target = os.path.join(other, name)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    _link_or_copy(os.path.join(dest, name), target)
            if sharded:  # each host keeps every len(hosts)-th object, as S3 key sharding does
                for index, host in enumerate(self.hosts):
                    folder = os.path.join(self.layout(host)["data"], channel["ChannelName"])
                    for position, name in enumerate(names):
                        if position % len(self.hosts) != index:
                            os.unlink(os.path.join(folder, name))
        checkpoint = self.checkpoint.get("S3Uri")
        if checkpoint:
            for host in self.hosts:
                fetch_prefix(checkpoint.rstrip("/") + "/" if checkpoint.startswith("s3://") else checkpoint,
                             self.layout(host)["checkpoints"])

    def num_gpus(self) -> int:
        if self.request["ResourceConfig"]["InstanceType"] != "local_gpu":
            return 0
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return 0
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, log_path: str) -> subprocess.Popen:
        log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - owned by the child for its whole life
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def train(self) -> str | None:
        hps = {k: decode(v) for k, v in (self.request.get("HyperParameters") or {}).items()}
        program = hps.get("sagemaker_program")
        user_hps = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
        channels = [c["ChannelName"] for c in self.request.get("InputDataConfig") or []]
        gpus = self.num_gpus()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_"))}
        base["PYTHONUNBUFFERED"] = "1"
        workers: list[tuple[str, subprocess.Popen]] = []
        dist = bool(hps.get("sagemaker_parameter_server_enabled"))
        dmlc: dict[str, str] = {}
        if len(self.hosts) > 1 and not dist:
            # The script lays out its own parameter-server job (training/launch.py). Every "host" is this machine,
            # where the names algo-N resolve to nothing and port 8000 may be taken: name them and a free port.
            base["DLFLEET_HOST_ADDRESSES"] = json.dumps({h: "127.0.0.1" for h in self.hosts})
            base["DLFLEET_SCHEDULER_PORT"] = str(free_port())
        if dist:
            dmlc = {"DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": str(free_port()),
                    "DMLC_NUM_SERVER": str(len(self.hosts)), "DMLC_NUM_WORKER": str(len(self.hosts))}
            first = self.layout(self.hosts[0])
            self.spawn([self.python, "-c", "import mxnet"], {**base, **dmlc, "DMLC_ROLE": "scheduler"},
                       first["code"], os.path.join(self.dir, "scheduler.log"))
            for host in self.hosts:
                self.spawn([self.python, "-c", "import mxnet"], {**base, **dmlc, "DMLC_ROLE": "server"},
                           self.layout(host)["code"], os.path.join(self.dir, f"{host}-server.log"))
        for host in self.hosts:
            layout = self.layout(host)
            env = {**base, **container_env(self.request, host, self.hosts, layout, channels, gpus)}
            if dist:
                env.update(dmlc, DMLC_ROLE="worker")
            argv = [self.python, program, *cli_args(user_hps)]
            with open(layout["log"], "ab") as log:
                if os.path.isfile(os.path.join(layout["code"], "requirements.txt")):
                    log.write(f"requirements.txt: local mode does not pip-install it (the SageMaker training "
                              f"toolkit runs `pip install -r requirements.txt` in its throwaway container); what it "
                              f"lists must already be installed for {self.python}\n".encode())
                log.write(f"Invoking script with the following command:\n{' '.join(argv)}\n".encode())
            workers.append((host, self.spawn(argv, env, layout["code"], layout["log"])))
        max_run = int(self.request["StoppingCondition"]["MaxRuntimeInSeconds"])
        deadline = time.monotonic() + max_run
        last_metrics = 0.0
        while any(proc.poll() is None for _host, proc in workers):
            time.sleep(0.2)
            if time.monotonic() > deadline and self.stop_reason is None:
                self.stop_reason = "MaxRuntimeExceeded"
                self.kill_all()
            if time.monotonic() - last_metrics > 2:
                self.collect_metrics()
                last_metrics = time.monotonic()
        self.kill_all()  # parameter servers and scheduler end with the workers
        if self.stop_reason:
            return None
        failures = []
        for host, proc in workers:
            failure = report_outcome(self.layout(host)["output"], proc.returncode, proc.args)
            if failure is not None:
                failures.append(failure)
        # SageMaker's FailureReason: the failure file's first 1024 characters (of the first host that wrote one)
        return f"AlgorithmError: {failures[0]}" if failures else None

    def collect_metrics(self) -> None:
        """Final metric values from the logs, with the job's MetricDefinitions, as CloudWatch does."""
        definitions = (self.request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        if not definitions:
            return
        compiled = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
        found: dict[str, list[float]] = {}
        for host in self.hosts[:1]:
            try:
                with open(self.layout(host)["log"], errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            for name, regex in compiled:
                for match in regex.finditer(text):
                    with contextlib.suppress(ValueError, IndexError):
                        found.setdefault(name, []).append(float(match.group(1)))
        stamp = now_iso()
        final = [{"MetricName": name, "Value": values[-1], "Timestamp": stamp} for name, values in found.items()]
        if final:
            local = dict(self.record.get("_local", {}))
            local["metric_history"] = found
            self.save(FinalMetricDataList=final, _local=local)

    def upload(self) -> None:
        output = self.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        base = f"{output}/{self.request['TrainingJobName']}/output"
        merged = os.path.join(self.dir, "model-merged")
        shutil.rmtree(merged, ignore_errors=True)
        os.makedirs(merged)
        for host in reversed(self.hosts):  # algo-1 written last: the master's files win
            shutil.copytree(self.layout(host)["model"], merged, dirs_exist_ok=True)
        archive = os.path.join(self.dir, "model.tar.gz")
        pack_dir(merged, archive)
        put_file(archive, f"{base}/model.tar.gz", self.kms)
        self.save(ModelArtifacts={"S3ModelArtifacts": f"{base}/model.tar.gz"})
        data_dir = self.layout(self.hosts[0])["output_data"]
        if os.listdir(data_dir):
            out = os.path.join(self.dir, "output.tar.gz")
            pack_dir(data_dir, out)
            put_file(out, f"{base}/output.tar.gz", self.kms)
        checkpoint = self.checkpoint.get("S3Uri")
        if checkpoint:
            put_tree(self.layout(self.hosts[0])["checkpoints"], checkpoint, self.kms)


def report_outcome(output_dir: str, returncode: int, argv: list[str]) -> str | None:
    """The training toolkit's last step: output/success for a run that ended well, else output/failure with what
    sagemaker-training 5.x writes (unless the script wrote its own reason there first: the toolkit keeps an existing
    file). The MXNet toolkit does not capture the script's stderr, so its message is empty. Returns the failure."""
    path = os.path.join(output_dir, "failure")
    if returncode == 0:
        with open(os.path.join(output_dir, "success"), "w"):
            pass
        return None
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(f'ExecuteUserScriptError:\nExitCode {returncode}\nErrorMessage ""\nCommand "{" ".join(argv)}"')
    with open(path, errors="replace") as fh:
        return fh.read()[:1024]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------------------------------
# Tuning: trials as local training jobs, sampled per strategy, objective read from the trial's metrics
# ----------------------------------------------------------------------------------------------------

def _scaled(low: float, high: float, scaling: str, rng: random.Random) -> float:
    if scaling == "Logarithmic":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if scaling == "ReverseLogarithmic":
        return 1.0 - math.exp(rng.uniform(math.log(1.0 - high), math.log(1.0 - low)))
    return rng.uniform(low, high)


def sample(ranges: dict[str, Any], rng: random.Random) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in ranges.get("ContinuousParameterRanges") or []:
        value = _scaled(float(item["MinValue"]), float(item["MaxValue"]), item.get("ScalingType", "Auto"), rng)
        values[item["Name"]] = repr(round(value, 8))
    for item in ranges.get("IntegerParameterRanges") or []:
        low, high = int(item["MinValue"]), int(item["MaxValue"])
        value = round(_scaled(low, high, item.get("ScalingType", "Auto"), rng))
        values[item["Name"]] = str(min(high, max(low, value)))
    for item in ranges.get("CategoricalParameterRanges") or []:
        values[item["Name"]] = rng.choice(item["Values"])
    return values


def grid(ranges: dict[str, Any]) -> list[dict[str, str]]:
    items = ranges.get("CategoricalParameterRanges") or []
    names = [i["Name"] for i in items]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*[i["Values"] for i in items])]


class TuningRun:
    """One local tuning job: up to MaxParallelTrainingJobs trials at a time, the median stopping rule
    for early stopping, the best trial by the objective."""

    def __init__(self, tuning_dir: str) -> None:
        self.dir = tuning_dir
        self.record_path = os.path.join(tuning_dir, "record.json")
        self.request = read_json(os.path.join(tuning_dir, "request.json"))
        self.record = read_json(self.record_path)
        self.local = self.record["_local"]
        self.jobs_dir = self.local["training_jobs_dir"]
        self.stopping = False
        self.running: dict[str, subprocess.Popen] = {}

    def save(self, **changes: Any) -> None:
        self.record.update(changes)
        self.record["LastModifiedTime"] = now_iso()
        write_json(self.record_path, self.record)

    def on_term(self, _signum, _frame) -> None:
        self.stopping = True
        self.save(HyperParameterTuningJobStatus="Stopping")
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)

    def candidates(self) -> list[dict[str, str]]:
        config = self.request["HyperParameterTuningJobConfig"]
        ranges = config.get("ParameterRanges") or {}
        limit = (config.get("ResourceLimits") or {}).get("MaxNumberOfTrainingJobs")
        if config["Strategy"] == "Grid":
            combos = grid(ranges)
            return combos[:limit] if limit else combos
        rng = random.Random(config.get("RandomSeed", self.request["HyperParameterTuningJobName"]))
        return [sample(ranges, rng) for _ in range(int(limit))]

    def start_trial(self, index: int, tuned: dict[str, str]) -> str:
        definition = self.request["TrainingJobDefinition"]
        suffix = "%08x" % random.getrandbits(32)  # noqa: UP031 - matches SageMaker's trial names
        name = f"{self.request['HyperParameterTuningJobName']}-{index:03d}-{suffix}"
        hps = dict(definition.get("StaticHyperParameters") or {})
        hps.update(tuned)
        request = {
            "TrainingJobName": name,
            "AlgorithmSpecification": definition["AlgorithmSpecification"],
            "RoleArn": definition.get("RoleArn"),
            "InputDataConfig": definition.get("InputDataConfig") or [],
            "OutputDataConfig": definition["OutputDataConfig"],
            "ResourceConfig": definition["ResourceConfig"],
            "StoppingCondition": definition["StoppingCondition"],
            "HyperParameters": hps,
            "EnableManagedSpotTraining": definition.get("EnableManagedSpotTraining", False),
            "EnableNetworkIsolation": definition.get("EnableNetworkIsolation", False),
        }
        if definition.get("CheckpointConfig"):
            request["CheckpointConfig"] = definition["CheckpointConfig"]
        job_dir = os.path.join(self.jobs_dir, name)
        os.makedirs(job_dir)
        region = self.local["region"]
        record = initial_training_record(request, region, self.local["python"])
        record["TuningJobArn"] = self.record["HyperParameterTuningJobArn"]
        record["_local"]["tuned"] = tuned
        write_json(os.path.join(job_dir, "request.json"), request)
        write_json(os.path.join(job_dir, "record.json"), record)
        self.running[name] = launch("train", job_dir)
        trials = self.local.setdefault("trials", [])
        trials.append(name)
        self.save(_local=self.local)
        return name

    def objective(self, record: dict[str, Any]) -> float | None:
        metric = self.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
        for item in record.get("FinalMetricDataList") or []:
            if item["MetricName"] == metric:
                return float(item["Value"])
        return None

    def better(self, a: float, b: float) -> bool:
        kind = self.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["Type"]
        return a > b if kind == "Maximize" else a < b

    def early_stop(self, finished: list[dict[str, Any]]) -> None:
        """Median stopping rule: a running trial whose best objective so far is worse than the median of
        the finished trials' values at the same step is stopped."""
        config = self.request["HyperParameterTuningJobConfig"]
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Auto" or len(finished) < 2:
            return
        metric = config["HyperParameterTuningJobObjective"]["MetricName"]
        maximize = config["HyperParameterTuningJobObjective"]["Type"] == "Maximize"
        for name, proc in list(self.running.items()):
            record = read_json(os.path.join(self.jobs_dir, name, "record.json"), {})
            history = (record.get("_local", {}).get("metric_history") or {}).get(metric) or []
            if not history or proc.poll() is not None:
                continue
            step = len(history) - 1
            peers = [h[min(step, len(h) - 1)] for h in
                     ((f.get("_local", {}).get("metric_history") or {}).get(metric) for f in finished) if h]
            if len(peers) < 2:
                continue
            best = max(history) if maximize else min(history)
            median = statistics.median(peers)
            if (best < median) if maximize else (best > median):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    def summarize(self) -> None:
        counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        best: dict[str, Any] | None = None
        best_value: float | None = None
        metric = self.request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        for name in self.local.get("trials", []):
            record = read_json(os.path.join(self.jobs_dir, name, "record.json"), {})
            status = record.get("TrainingJobStatus", "InProgress")
            key = {"Failed": "NonRetryableError"}.get(status, status)
            counters[key if key in counters else "InProgress"] += 1
            value = self.objective(record)
            if status in ("Completed", "Stopped") and value is not None:
                objective["Succeeded"] += 1
                if best_value is None or self.better(value, best_value):
                    best_value, best = value, record
            elif status in ("Failed", "Stopped", "Completed"):
                objective["Failed"] += 1
            else:
                objective["Pending"] += 1
        changes: dict[str, Any] = {"TrainingJobStatusCounters": counters, "ObjectiveStatusCounters": objective}
        if best is not None:
            changes["BestTrainingJob"] = trial_summary(best, metric, best_value)
            overall = best
            overall_value = best_value
            for parent in self.local.get("parent_trials", []):
                if parent.get("value") is not None and self.better(parent["value"], overall_value):
                    overall = read_json(parent["record"], {})
                    overall_value = parent["value"]
            changes["OverallBestTrainingJob"] = trial_summary(overall, metric, overall_value)
        self.save(**changes)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        config = self.request["HyperParameterTuningJobConfig"]
        parallel = int((config.get("ResourceLimits") or {}).get("MaxParallelTrainingJobs", 1))
        pending = list(enumerate(self.candidates(), start=1))
        finished: list[dict[str, Any]] = []
        while (pending or self.running) and not self.stopping:
            while pending and len(self.running) < parallel and not self.stopping:
                index, tuned = pending.pop(0)
                self.start_trial(index, tuned)
            time.sleep(0.5)
            for name, proc in list(self.running.items()):
                if proc.poll() is not None:
                    del self.running[name]
                    finished.append(read_json(os.path.join(self.jobs_dir, name, "record.json"), {}))
            self.early_stop(finished)
            self.summarize()
        for proc in self.running.values():
            proc.wait()
        self.summarize()
        end = now_iso()
        if self.stopping:
            self.save(HyperParameterTuningJobStatus="Stopped", HyperParameterTuningEndTime=end)
            return 0
        if "BestTrainingJob" not in self.record:
            reasons = [read_json(os.path.join(self.jobs_dir, n, "record.json"), {}).get("FailureReason", "")
                       for n in self.local.get("trials", [])]
            reason = next((r for r in reasons if r), "no trial reported the objective metric")
            self.save(HyperParameterTuningJobStatus="Failed", HyperParameterTuningEndTime=end,
                      FailureReason=f"No training job succeeded with an objective value: {reason}"[:1024])
            return 1
        self.save(HyperParameterTuningJobStatus="Completed", HyperParameterTuningEndTime=end)
        return 0


def trial_summary(record: dict[str, Any], metric: dict[str, Any], value: float | None) -> dict[str, Any]:
    return {
        "TrainingJobName": record.get("TrainingJobName"),
        "TrainingJobArn": record.get("TrainingJobArn"),
        "TuningJobName": (record.get("TuningJobArn") or "").rsplit("/", 1)[-1],
        "CreationTime": record.get("CreationTime"),
        "TrainingStartTime": record.get("TrainingStartTime"),
        "TrainingEndTime": record.get("TrainingEndTime"),
        "TrainingJobStatus": record.get("TrainingJobStatus"),
        "TunedHyperParameters": record.get("_local", {}).get("tuned", {}),
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "Type": metric["Type"], "MetricName": metric["MetricName"], "Value": value},
        "ObjectiveStatus": "Succeeded",
    }


def launch(command: str, job_dir: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m sagemaker_local command job_dir` detached (own session) in this Python, logging to
    job_dir/supervisor.log, and write job_dir/supervisor.json (pid and kernel start time) so that others can tell
    it is alive and stop it."""
    with open(os.path.join(job_dir, "supervisor.log"), "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", PACKAGE, command, job_dir], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    write_json(os.path.join(job_dir, "supervisor.json"), {"pid": proc.pid, "start": process_start_time(proc.pid)})
    return proc


def supervisor_alive(job_dir: str) -> bool:
    info = read_json(os.path.join(job_dir, "supervisor.json"), {}) or {}
    return alive(info.get("pid"), info.get("start"))


def initial_training_record(request: dict[str, Any], region: str, python: str) -> dict[str, Any]:
    """DescribeTrainingJob's shape, as a job looks the moment it is created."""
    stamp = now_iso()
    record = {key: value for key, value in request.items() if key != "Tags"}
    record.update(
        TrainingJobArn=arn(region, "training-job", request["TrainingJobName"]),
        TrainingJobStatus="InProgress",
        SecondaryStatus="Starting",
        SecondaryStatusTransitions=[],
        CreationTime=stamp,
        LastModifiedTime=stamp,
        ModelArtifacts={"S3ModelArtifacts": None},
        _local={"python": python, "region": region},
    )
    return record
