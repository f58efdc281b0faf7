"""The conformance tier's plumbing: SageMaker training jobs laid out for the real toolkits (sagemaker-training +
sagemaker-mxnet-training, Python 3.8 in .venv-py38), from the project's own pieces: the source archive from our packer
(module_utils/dlfleet_sagemaker.py pack_source, with the playbook's excludes), hyperparameters JSON-encoded by our
request builder (as the SageMaker SDK sends them), data from our generator (training.data), and the metric
definitions the inventory declares.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ansible.module_utils import dlfleet_sagemaker_endpoint as endpoint_module
from ansible.module_utils.dlfleet_sagemaker_code import Storage, pack_source, repack_model
from ansible.module_utils.dlfleet_sagemaker_local import LocalBackend
from ansible.module_utils.dlfleet_sagemaker_requests import (
    encode_hyperparameters,
    framework_hyperparameters,
    training_job_request,
)
from helpers import ROOT

from sagemaker_local import container

PY38_VENV = Path(os.environ.get("DLFLEET_PY38_VENV") or ROOT / ".venv-py38")
PY38 = PY38_VENV / "bin" / "python"
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"  # local mode's default local_python (the inventory's)
TRAINING_MODULE = "sagemaker_mxnet_container.training:main"  # what the SageMaker MXNet training image sets
# The smallest real job: a tiny network on a few hundred generated images, one epoch.
TINY_HPS: dict[str, Any] = {"dataset": "synthetic", "synthetic-size": 256, "model": "resnet8_v1", "base-width": 4,
                            "epochs": 1, "batch-size": 32, "log-interval": 0}
SYNTHETIC_SIZE = 256


def require_py38() -> None:
    """The tier never skips: without the image's Python it fails and says how to get it."""
    if not PY38.is_file():
        raise RuntimeError(f"{PY38} is missing: `make test-conformance` builds .venv-py38 (Python 3.8 through pyenv: "
                           f"`pyenv install 3.8`)")


def playbook_code_exclude() -> list[str]:
    """What playbooks/sagemaker.yml leaves out of the code archive (the user's default)."""
    play = yaml.safe_load((ROOT / "playbooks" / "sagemaker.yml").read_text())[0]
    return list(play["vars"]["__sagemaker_code_exclude"])


def declared_metrics() -> list[dict[str, str]]:
    """The metric definitions every training job gets by default (the settings' one home, role dlfleet_defaults)."""
    defaults = yaml.safe_load((ROOT / "roles" / "dlfleet_defaults" / "defaults" / "main.yml").read_text())
    return list(defaults["sagemaker_metric_definitions"])


def pack_code(source: Path, dest: Path) -> Path:
    """sourcedir.tar.gz of `source`, made by our packer with the playbook's excludes."""
    dest.write_bytes(pack_source(str(source), playbook_code_exclude()))
    return dest


def hyperparameters(user: dict[str, Any], submit_dir: str, parameter_server: bool = False) -> dict[str, str]:
    """hyperparameters.json as a job made by our modules carries it: every value JSON-encoded."""
    params = {"container_log_level": 20, "distribution": {"parameter_server": {"enabled": parameter_server}}}
    hps = {**user, **framework_hyperparameters(params, "conformance-job", "train.py", submit_dir, "us-east-1")}
    return encode_hyperparameters(hps)


def generate_data(dest: Path, size: int = SYNTHETIC_SIZE) -> Path:
    subprocess.run([str(PY38), "-m", "training.data", "synthetic", "--out", str(dest), "--size", str(size)],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return dest


def lay_out_host(base: Path, host: str, hosts: list[str], hps: dict[str, str], channels: dict[str, Path],
                 checkpoints: bool = False) -> Path:
    """/opt/ml of one host under `base`, as SageMaker lays it out before the container starts."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels}))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": host, "hosts": hosts, "current_group_name": "homogeneousCluster",
        "current_instance_type": "ml.c5.xlarge", "network_interface_name": "eth0",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.c5.xlarge",
                             "hosts": hosts}]}))
    for name, source in channels.items():
        shutil.copytree(source, base / "input" / "data" / name)
    for folder in ("model", "output/data", "code"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    if checkpoints:
        (base / "checkpoints").mkdir()
    return base


def toolkit_env(base: Path, **extra: str) -> dict[str, str]:
    """The training image's environment for its `train` entry point, with /opt/ml relocated to `base`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_", "SAGEMAKER_", "PYTHON"))}
    env.update(SAGEMAKER_BASE_DIR=str(base), SAGEMAKER_TRAINING_MODULE=TRAINING_MODULE,
               PATH=f"{PY38_VENV / 'bin'}:{env.get('PATH', '')}",  # the toolkit runs `python -c 'import mxnet'`
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", AWS_DEFAULT_REGION="us-east-1", **extra)
    return env


def toolkit_command(base: Path) -> list[str]:
    return [str(PY38_VENV / "bin" / "train")]


def host_script(base: Path) -> str:
    """A bash script that runs one host's `train` in its own environment (for hosts.sh)."""
    exports = "".join(f"export {k}={json.dumps(v)}\n" for k, v in toolkit_env(base).items() if k.isidentifier())
    return f"{exports}cd {json.dumps(str(base))}\nexec {' '.join(json.dumps(c) for c in toolkit_command(base))}\n"


def run_hosts(work: Path, bases: dict[str, Path], timeout: int = 400) -> dict[str, int]:
    """The image's `train` entry point on each host (algo-1, algo-2), each in a network namespace of its own with
    names that resolve (hosts.sh); returns each host's exit status. Its log (stdout and stderr, as CloudWatch gets
    them) is in work/<host>.out."""
    scripts = []
    for host in sorted(bases):
        script = work / f"{host}.sh"
        script.write_text(host_script(bases[host]))
        scripts.append(str(script))
    cmd = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash",
           str(Path(__file__).with_name("hosts.sh")), str(work), *scripts]
    done = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, check=False)
    if not (work / "rc").is_file():
        raise AssertionError(f"hosts.sh failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return dict(zip(sorted(bases), (int(x) for x in (work / "rc").read_text().split()), strict=True))


@dataclass
class Job:
    base: Path  # the host's relocated /opt/ml
    rc: int
    log: str


def toolkit_job(work: Path, name: str, user_hps: dict, code: Path, data: Path, checkpoints: bool = False) -> Job:
    folder = work / name
    folder.mkdir()
    hps = hyperparameters(user_hps, str(code))
    base = lay_out_host(folder / "algo-1", "algo-1", ["algo-1"], hps, {"training": data}, checkpoints)
    rc = run_hosts(folder, {"algo-1": base})["algo-1"]
    return Job(base, rc, (folder / "algo-1.out").read_text())


# ------------------------------------------------------------------------------------------------------------------
# Our local mode (instance_type: local), the same jobs and models through the project's own request builders
# ------------------------------------------------------------------------------------------------------------------

def local_training_request(name: str, user: dict[str, Any], code: Path, data: Path, output: Path,
                           instance_count: int = 1, parameter_server: bool = False) -> dict[str, Any]:
    """CreateTrainingJob as sagemaker_training_job builds it for instance_type local (file:// URIs)."""
    params = {"hyperparameters": user, "metric_definitions": declared_metrics(), "role_arn": None,
              "channels": [{"name": "training", "uri": f"file://{data}", "distribution": "FullyReplicated",
                            "compression": "None", "content_type": None, "input_mode": None}],
              "output_path": f"file://{output}", "instance_type": "local", "instance_count": instance_count,
              "volume_size": 30, "max_run": 3600, "enable_network_isolation": False, "use_spot": False,
              "kms_key_id": None, "checkpoint_s3_uri": None, "checkpoint_local_path": "/opt/ml/checkpoints",
              "subnets": [], "security_group_ids": [], "container_log_level": 20, "tags": {}, "fleet": None,
              "distribution": {"parameter_server": {"enabled": parameter_server}}}
    bundle = {"program": "train.py", "uri": f"file://{code}"}
    return training_job_request(params, name, "local-image", bundle, "us-east-1")


def run_local_job(jobs_dir: Path, request: dict[str, Any], timeout: int = 400) -> tuple[Path, dict[str, Any]]:
    """The local runtime's supervisor (`python -m sagemaker_local train`), in the foreground, in the inventory's
    local_python (the training environment, as the local backend runs it); returns the job folder and its final
    DescribeTrainingJob record."""
    job_dir = jobs_dir / request["TrainingJobName"]
    job_dir.mkdir(parents=True)
    (job_dir / "request.json").write_text(json.dumps(request))
    record = container.initial_training_record(request, "us-east-1", str(TRAIN_PYTHON))
    (job_dir / "record.json").write_text(json.dumps(record))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_"))},
           "OMP_NUM_THREADS": "1", "AWS_REGION": "us-east-1"}
    subprocess.run([str(TRAIN_PYTHON), "-m", container.PACKAGE, "train", str(job_dir)], env=env, check=False,
                   timeout=timeout, capture_output=True)
    return job_dir, json.loads((job_dir / "record.json").read_text())


class LocalModule:
    """What LocalBackend (the local runtime's client) reads from an Ansible module: its params and region (no AWS
    call is made for file://)."""

    def __init__(self, local_dir: Path) -> None:
        self.params = {"local_dir": str(local_dir), "local_python": str(TRAIN_PYTHON), "kms_key_id": None}
        self.region = "us-east-1"

    def client(self, *_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("file:// URIs only: no AWS client")


def repack(model_archive: Path, code_archive: Path, location: Path) -> Path:
    """The model as sagemaker_endpoint deploys it (repack_model: the SDK's repack for the MXNet serving images), in
    `location`; its path."""
    data = code_archive.read_bytes()
    bundle = {"program": "inference.py", "data": data, "sha256": hashlib.sha256(data).hexdigest(),
              "uri": f"file://{location}/{hashlib.sha256(data).hexdigest()[:20]}/sourcedir.tar.gz"}
    uri = repack_model(Storage(lambda: None), f"file://{model_archive}", bundle, check_mode=False)
    return Path(uri[len("file://"):])


def deploy_local(local_dir: Path, name: str, model_archive: Path, code_archive: Path,
                 timeout: float = 120) -> tuple[LocalBackend, str]:
    """A local endpoint of the model, as sagemaker_endpoint makes it (the model repacked with the inference code in
    its code/, SAGEMAKER_PROGRAM, SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code); returns the backend and the
    endpoint's URL once it is InService."""
    backend = LocalBackend(LocalModule(local_dir))
    params = {"name": name, "env": {}, "container_log_level": 20, "model_data": f"file://{model_archive}",
              "role_arn": None, "instance_type": "local", "instance_count": 1, "weight": 1.0, "variants": None,
              "kms_key_id": None}
    bundle = {"program": "inference.py", "uri": "unused: the code is in the repacked model",
              "model_uri": f"file://{repack(model_archive, code_archive, local_dir / 'code')}"}
    model = endpoint_module.model_request(params, "us-east-1", "local-image", bundle, {})
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    config = endpoint_module.config_request(params, model["ModelName"], {})
    backend.create_model(model)
    backend.create_endpoint_config(config)
    backend.create_endpoint({"EndpointName": name, "EndpointConfigName": config["EndpointConfigName"]})
    deadline = time.monotonic() + timeout
    while True:
        record = backend.describe_endpoint(name)
        if record["EndpointStatus"] != "Creating":
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"local endpoint {name} still Creating after {timeout} s")
        time.sleep(0.2)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    return backend, backend.endpoint_url(name)


def post(url: str, body: bytes, content_type: str | None, accept: str | None) -> tuple[int, str | None, bytes]:
    """POST exactly these headers (urllib would add a Content-Type of its own when none is given)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v is not None}
    try:
        conn.request("POST", parts.path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type"), answer.read()
    finally:
        conn.close()


def real_handler(model_dir: Path, requests: list[dict[str, Any]], work: Path) -> dict[str, dict[str, Any]]:
    """The table through the serving image's MXNet handler service (mms_driver.py, in .venv-py38)."""
    (work / "requests.json").write_text(json.dumps(requests))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "PYTHON"))}
    env.update(SAGEMAKER_PROGRAM="inference.py", PYTHONPATH=str(model_dir / "code"), OMP_NUM_THREADS="1")
    done = subprocess.run([str(PY38), str(Path(__file__).with_name("mms_driver.py")), str(model_dir),
                           str(work / "requests.json"), str(work / "answers.json")], env=env, text=True,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "answers.json").read_text())
