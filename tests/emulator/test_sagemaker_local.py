"""SageMaker local mode (instance_type: local), through ansible-playbook: jobs run as local processes under the
training-container contract, endpoints as loopback HTTP servers. No docker, no AWS: S3 is the session emulator.

The end-to-end test trains the real trainer (training/train.py, MXNet) on a small synthetic CIFAR-10 set and
compares the endpoint's HTTP answers with the inference handlers run directly on the same model.
The other tests use tests/fixtures/sagemaker/tiny_train.py, a standard-library script that records the contract
it was run under, so that they take seconds.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from ansible.module_utils import dlfleet_sagemaker as sm
from ansible.module_utils import dlfleet_sagemaker_local as client
from helpers import ROOT, run_playbook

TRAIN_PYTHON = str(ROOT / ".venv-train" / "bin" / "python")
FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
CODE_EXCLUDE = ["__pycache__", "*.pyc", ".*", "requirements.txt"]
RECORD = 1 + 3072


def play(tasks: list[dict[str, Any]], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Run `tasks` as one play on localhost; returns each task's result by name (failures included)."""
    for task in tasks:
        task.setdefault("ignore_errors", True)
    book = [{"name": "SageMaker local mode under test", "hosts": "localhost", "gather_facts": False,
             "tasks": tasks}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book))
    try:
        run = run_playbook(path, env=env, timeout=600)
    finally:
        path.unlink()
    return {task["name"]: run.results(task["name"]) for task in tasks}


def _alive(info_path: Path) -> bool:
    return _running(json.loads(info_path.read_text()))


def _running(info: dict) -> bool:
    """The server process of `info` still runs (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{info['pid']}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and fields[19] == info["start"]
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sagemaker-local")
    yield path
    for info in [*path.rglob("server.json"), *path.rglob("supervisor.json")]:  # nothing may outlive the tests
        if _alive(info):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads(info.read_text())["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CIFAR-10 set in the binary format (256 train / 51 test images)."""
    out = tmp_path_factory.mktemp("cifar")
    subprocess.run([TRAIN_PYTHON, "-m", "training.data", "synthetic", "--out", str(out), "--size", "256"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def bucket(emulator) -> str:
    name = f"sml-{uuid.uuid4().hex[:10]}"
    emulator.client("s3").create_bucket(Bucket=name)
    return name


def base(local_dir: Path, **changes: Any) -> dict[str, Any]:
    args = {"instance_type": "local", "local_python": TRAIN_PYTHON, "local_dir": str(local_dir)}
    args.update(changes)
    return args


def tiny(local_dir: Path, name: str, out: Path, **changes: Any) -> dict[str, Any]:
    args = base(local_dir, name=name, entry_point="tiny_train.py", source_dir=str(FIXTURES),
                output_path=f"file://{out}",
                metric_definitions=[{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+)"}])
    args.update(changes)
    return args


def http(url: str, body: bytes | None = None, content_type: str = "application/x-npy") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.status, answer.read()


def npy(images: bytes, count: int) -> bytes:
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, 3, 32, 32), }" % count  # noqa: UP031
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + images


def direct_predictions(model_dir: Path, payload: Path) -> dict[str, Any]:
    """The inference handlers run in the training env without any server: the reference answer."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import inference; "
              "m = inference.model_fn(sys.argv[2]); "
              "print(inference.transform_fn(m, open(sys.argv[3], 'rb').read(), 'application/x-npy', "
              "'application/json')[0])")
    out = subprocess.run([TRAIN_PYTHON, "-c", script, str(ROOT / "training"), str(model_dir), str(payload)],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def s3_tar(emulator, uri: str, dest: Path) -> Path:
    bucket, key = uri[len("s3://"):].split("/", 1)
    data = emulator.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest)
    return dest


def test_real_training_then_endpoint_answers_like_the_handlers(emulator, aws_env, local_dir, cifar, bucket,
                                                               tmp_path) -> None:
    s3 = emulator.client("s3")
    for path in cifar.iterdir():
        s3.upload_file(str(path), bucket, f"data/{path.name}")
    job = f"sml-real-{uuid.uuid4().hex[:6]}"
    endpoint = f"sml-ep-{uuid.uuid4().hex[:6]}"
    train = base(local_dir, name=job, entry_point="train.py", source_dir=str(ROOT / "training"),
                 source_exclude=CODE_EXCLUDE, output_path=f"s3://{bucket}/output",
                 hyperparameters={"dataset": "synthetic", "synthetic-size": 256, "epochs": 1, "batch-size": 32,
                                  "base-width": 4, "log-interval": 0},
                 channels=[{"name": "training", "uri": f"s3://{bucket}/data"}],
                 metric_definitions=[{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+);"}])
    deploy = base(local_dir, name=endpoint, entry_point="inference.py", source_dir=str(ROOT / "training"),
                  source_exclude=CODE_EXCLUDE, smoke_test={"body": json.dumps([[[0] * 32] * 32] * 3)})
    results = play([
        {"name": "Train", "sagemaker_training_job": train, "register": "train"},
        {"name": "Train again", "sagemaker_training_job": train},
        {"name": "Deploy", "sagemaker_endpoint": {**deploy, "model_data": "{{ train.model_artifact }}"}},
        {"name": "Deploy again", "sagemaker_endpoint": {**deploy, "model_data": "{{ train.model_artifact }}"}},
        {"name": "Score", "sagemaker_endpoint_invoke": {"name": endpoint, "instance_type": "local",
                                                        "local_dir": str(local_dir), "local_python": TRAIN_PYTHON,
                                                        "cifar10_batch": str(cifar / "test_batch.bin"),
                                                        "batch_size": 20}},
    ], aws_env)
    trained = results["Train"]
    assert trained["changed"] is True and trained["status"] == "Completed", trained.get("msg")
    assert results["Train again"]["changed"] is False

    # the container contract, as the job saw it
    opt = local_dir / "training-jobs" / job / "algo-1" / "opt" / "ml"
    config = opt / "input" / "config"
    hps = json.loads((config / "hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hps.values())  # JSON-encoded, as SageMaker writes the file
    assert {k: json.loads(v) for k, v in hps.items()} == trained["training_job"]["hyperparameters"]
    assert json.loads(hps["epochs"]) == 1 and json.loads(hps["sagemaker_program"]) == "train.py"
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"training"}
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    assert sorted(p.name for p in (opt / "input" / "data" / "training").iterdir()) == sorted(
        p.name for p in cifar.iterdir())

    # what went to S3: the model, and the trainer's own metrics in output.tar.gz
    model_dir = s3_tar(emulator, trained["model_artifact"], tmp_path / "model")
    assert {"model-symbol.json", "model-0000.params", "synset.txt"} <= {p.name for p in model_dir.iterdir()}
    output = s3_tar(emulator, trained["model_artifact"].replace("model.tar.gz", "output.tar.gz"), tmp_path / "out")
    last = json.loads((output / "metrics.jsonl").read_text().splitlines()[-1])
    assert trained["final_metrics"]["validation-accuracy"] == pytest.approx(last["val_acc"], abs=1e-6)
    assert trained["billable_seconds"] >= 1
    assert any("validation-accuracy=" in line for line in trained["log_tail"])

    deployed = results["Deploy"]
    assert deployed["changed"] is True and deployed["status"] == "InService", deployed.get("msg")
    assert len(deployed["smoke_response"]["predictions"]) == 1
    assert results["Deploy again"]["changed"] is False
    url = deployed["endpoint_url"]
    assert http(url.replace("/invocations", "/ping"))[0] == 200

    # a real HTTP prediction equals the handlers' own answer on the same images
    data = (cifar / "test_batch.bin").read_bytes()
    count = len(data) // RECORD
    images = b"".join(data[i * RECORD + 1:(i + 1) * RECORD] for i in range(count))
    labels = [data[i * RECORD] for i in range(count)]
    payload = tmp_path / "test.npy"
    payload.write_bytes(npy(images, count))
    status, body = http(url, payload.read_bytes())
    served = json.loads(body)
    reference = direct_predictions(model_dir, payload)
    assert status == 200 and served == reference
    accuracy = sum(p["class"] == y for p, y in zip(reference["predictions"], labels, strict=True)) / count
    score = results["Score"]
    assert score["count"] == count and score["requests"] == -(-count // 20)
    assert score["accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # blue/green: a new model version takes over the same port; the old server is gone
    old_servers = list((local_dir / "endpoints" / endpoint).glob("*/server.json"))
    assert len(old_servers) == 1 and _alive(old_servers[0])
    old_info = json.loads(old_servers[0].read_text())
    results = play([
        {"name": "Update", "sagemaker_endpoint": {**deploy, "model_data": trained["model_artifact"],
                                                             "env": {"MODEL_VERSION": "2"}}},
    ], aws_env)
    updated = results["Update"]
    assert updated["changed"] is True and updated["updated"] is True, updated.get("msg")
    assert updated["endpoint_url"] == url
    assert updated["deleted"] == {"endpoint_configs": [deployed["endpoint_config_name"]],
                                  "models": [deployed["model_name"]]}
    assert not old_servers[0].parent.exists()
    assert not _running(old_info)
    assert json.loads(http(url, payload.read_bytes())[1]) == reference

    # absent: endpoint, config, model and server all gone
    new_info = json.loads(next((local_dir / "endpoints" / endpoint).glob("*/server.json")).read_text())
    results = play([{"name": "Remove", "sagemaker_endpoint": base(local_dir, name=endpoint, state="absent")},
                    {"name": "Remove again", "sagemaker_endpoint": base(local_dir, name=endpoint, state="absent")}],
                   aws_env)
    assert results["Remove"]["changed"] is True and results["Remove again"]["changed"] is False
    assert results["Remove"]["deleted"] == {"endpoint_configs": [updated["endpoint_config_name"]],
                                            "models": [updated["model_name"]]}
    assert not _running(new_info)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http(url.replace("/invocations", "/ping"))
    assert not (local_dir / "endpoints" / endpoint).exists()
    assert not [p for p in (local_dir / "models").iterdir() if p.name.startswith(endpoint)]
    assert not [p for p in (local_dir / "endpoint-configs").iterdir() if p.name.startswith(endpoint)]


def test_contract_sharding_parameter_server_and_checkpoint_resume(aws_env, local_dir, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"part-{i}.bin").write_bytes(bytes([i]) * 10)
    name = f"sml-dist-{uuid.uuid4().hex[:6]}"
    args = tiny(local_dir, name, tmp_path / "out", instance_count=2,
                hyperparameters={"epochs": 2, "lr": 0.25},
                distribution={"parameter_server": {"enabled": True}},
                channels=[{"name": "training", "uri": f"file://{data}", "distribution": "ShardedByS3Key"}])
    checkpoints = tmp_path / "checkpoints"
    first = tiny(local_dir, f"{name}-a", tmp_path / "out", hyperparameters={"epochs": 2},
                 checkpoint_s3_uri=f"file://{checkpoints}")
    results = play([{"name": "Train", "sagemaker_training_job": args},
                    {"name": "Checkpointed", "sagemaker_training_job": first},
                    {"name": "Resumed", "sagemaker_training_job": {**first, "name": f"{name}-b"}}], aws_env)
    result = results["Train"]
    assert result["status"] == "Completed", result.get("msg")
    # spot-style resume: the second job starts with the first one's checkpoints from checkpoint_s3_uri
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-1", "epoch-2"]
    resumed = json.loads((local_dir / "training-jobs" / f"{name}-b" / "algo-1/opt/ml/model/contract.json").read_text())
    assert resumed["checkpoints_at_start"] == ["epoch-1", "epoch-2"]
    assert results["Checkpointed"]["status"] == results["Resumed"]["status"] == "Completed"
    assert result["final_metrics"] == {"validation-accuracy": 0.5}  # the script prints lr * epochs
    seen = {}
    for host in ("algo-1", "algo-2"):
        contract = json.loads((local_dir / "training-jobs" / name / host / "opt/ml/model/contract.json").read_text())
        seen[host] = contract["channels"]["training"]
        assert contract["argv"] == ["--epochs", "2", "--lr", "0.25"]
        assert contract["sm_hps"] == {"epochs": 2, "lr": 0.25}
        assert contract["resource"]["current_host"] == host and contract["resource"]["hosts"] == ["algo-1", "algo-2"]
        assert contract["env"]["DMLC_ROLE"] == "worker" and contract["env"]["DMLC_NUM_WORKER"] == "2"
        assert contract["env"]["TRAINING_JOB_NAME"] == name
        assert contract["cwd"].endswith(f"{host}/opt/ml/code")
    assert sorted(seen["algo-1"] + seen["algo-2"]) == [f"part-{i}.bin" for i in range(4)]
    assert not set(seen["algo-1"]) & set(seen["algo-2"])
    for log in ("scheduler.log", "algo-1-server.log", "algo-2-server.log"):
        assert (local_dir / "training-jobs" / name / log).exists()


def test_failure_reason_stop_and_max_run(aws_env, local_dir, tmp_path) -> None:
    out = tmp_path / "out"
    failing = tiny(local_dir, f"sml-fail-{uuid.uuid4().hex[:6]}", out, hyperparameters={"fail": "disk on fire"})
    slow = tiny(local_dir, f"sml-slow-{uuid.uuid4().hex[:6]}", out, hyperparameters={"epochs": 30, "sleep": 1},
                wait=False)
    capped = tiny(local_dir, f"sml-cap-{uuid.uuid4().hex[:6]}", out, hyperparameters={"epochs": 30, "sleep": 1},
                  max_run=2)
    results = play([
        {"name": "Fail", "sagemaker_training_job": failing},
        {"name": "Fail again", "sagemaker_training_job": failing},
        {"name": "Start", "sagemaker_training_job": slow},
        {"name": "Stop", "sagemaker_training_job": {**slow, "state": "absent", "wait": True}},
        {"name": "Stop again", "sagemaker_training_job": {**slow, "state": "absent"}},
        {"name": "Capped", "sagemaker_training_job": capped},
    ], aws_env)
    for key in ("Fail", "Fail again"):
        assert results[key].get("failed") and "disk on fire" in results[key]["msg"]
        assert results[key]["status"] == "Failed"
    assert results["Fail again"]["changed"] is False
    job_dir = local_dir / "training-jobs" / failing["name"]
    assert (job_dir / "algo-1/opt/ml/output/failure").read_text() == "disk on fire"

    assert results["Start"]["status"] == "InProgress"
    stopped = results["Stop"]
    assert stopped["changed"] is True and stopped["status"] == "Stopped"
    assert results["Stop again"]["changed"] is False
    assert not _alive(local_dir / "training-jobs" / slow["name"] / "supervisor.json")
    assert stopped["training_job"]["training_time_in_seconds"] < 30

    capped_result = results["Capped"]
    assert capped_result["status"] == "Stopped"
    assert capped_result["training_job"]["secondary_status"] == "MaxRuntimeExceeded"


def test_local_tuning_runs_real_trials(aws_env, local_dir, tmp_path) -> None:
    out = tmp_path / "out"
    objective = {"metric_name": "validation-accuracy", "type": "Maximize"}
    first = f"sml-t1-{uuid.uuid4().hex[:5]}"
    common = tiny(local_dir, first, out, objective=objective, hyperparameters={"epochs": 1}, max_parallel_jobs=2)
    random_tuning = {**common, "strategy": "Random", "max_jobs": 3, "random_seed": 5,
                     "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.2, "max_value": 0.6,
                                           "scaling": "Logarithmic"}]}
    grid = {**common, "name": f"sml-t2-{uuid.uuid4().hex[:5]}", "strategy": "Grid", "max_parallel_jobs": 1,
            "early_stopping": "Auto", "hyperparameters": {"epochs": 6, "sleep": 0.6},
            "parameter_ranges": [{"name": "lr", "type": "categorical", "values": ["0.1", "0.09", "0.001"]}]}
    warm = {**random_tuning, "name": f"sml-t3-{uuid.uuid4().hex[:5]}", "random_seed": 9, "max_jobs": 2,
            "warm_start": {"parents": [first]},
            "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.05}]}
    best_log = tmp_path / "tuning-best-job.log"
    results = play([
        {"name": "Random", "sagemaker_tuning_job": {**random_tuning, "follow": True, "follow_interval": 2,
                                                    "log_file": str(best_log)}},
        {"name": "Random again", "sagemaker_tuning_job": random_tuning},
        {"name": "Grid", "sagemaker_tuning_job": grid},
        {"name": "Warm", "sagemaker_tuning_job": warm},
        {"name": "Missing parent", "sagemaker_tuning_job": {**warm, "name": "sml-t4-none",
                                                            "warm_start": {"parents": ["sml-none"]}}},
    ], aws_env)
    tuned = results["Random"]
    assert tuned["status"] == "Completed", tuned.get("msg")
    trials = tuned["trials"]
    assert len(trials) == 3 and all(t["status"] == "Completed" for t in trials)
    assert all(t["billable_seconds"] >= 1 for t in trials)   # what the report prices the tuning job by
    assert all(0.2 <= t["hyperparameters"]["lr"] <= 0.6 for t in trials)
    for trial in trials:  # the script prints lr * epochs: the objective really came from each trial's log
        assert trial["objective_value"] == pytest.approx(min(0.99, round(trial["hyperparameters"]["lr"], 4)),
                                                         abs=1e-4)
    best = max(trials, key=lambda t: t["objective_value"])
    assert tuned["best_training_job"]["name"] == best["name"]
    assert tuned["best_training_job"]["objective_value"] == best["objective_value"]
    assert tuned["best_training_job"]["model_artifact"] == f"file://{out}/{best['name']}/output/model.tar.gz"
    assert tuned["training_job_counts"]["Completed"] == 3
    # followed: the best trial's log saved, the one whose metric line gave the objective
    assert tuned["followed"]["status"] == "Completed" and tuned["followed"]["log_file"] == str(best_log)
    assert f"validation-accuracy={best['objective_value']:.4f};" in best_log.read_text()
    assert results["Random again"]["changed"] is False

    grid_result = results["Grid"]
    assert sorted(str(t["hyperparameters"]["lr"]) for t in grid_result["trials"]) == ["0.001", "0.09", "0.1"]
    statuses = {str(t["hyperparameters"]["lr"]): t["status"] for t in grid_result["trials"]}
    assert statuses == {"0.1": "Completed", "0.09": "Completed", "0.001": "Stopped"}  # the median rule
    assert grid_result["best_training_job"]["hyperparameters"] == {"lr": "0.1"}  # categorical: strings

    warm_result = results["Warm"]
    assert warm_result["status"] == "Completed"
    assert warm_result["best_training_job"]["name"] in {t["name"] for t in warm_result["trials"]}
    assert warm_result["overall_best_training_job"]["name"] == best["name"]  # a parent's trial wins
    assert "sml-none" in results["Missing parent"]["msg"]
    assert not (local_dir / "tuning-jobs" / "sml-t4-none").exists()


def test_local_bad_inputs_create_nothing(aws_env, local_dir, tmp_path) -> None:
    out = tmp_path / "out"
    results = play([
        {"name": "No python", "sagemaker_training_job": tiny(local_dir, "sml-bad-1", out,
                                                             local_python="/nonexistent/python")},
        {"name": "No data", "sagemaker_training_job": tiny(local_dir, "sml-bad-2", out, channels=[
            {"name": "training", "uri": f"file://{tmp_path}/missing"}])},
        {"name": "No script", "sagemaker_training_job": tiny(local_dir, "sml-bad-3", out, entry_point="x.py")},
        {"name": "Two variants", "sagemaker_endpoint": {
            "name": "sml-bad-ep", "local_python": TRAIN_PYTHON, "local_dir": str(local_dir),
            "variants": [{"name": "a", "instance_type": "local"}, {"name": "b", "instance_type": "local"}]}},
    ], aws_env)
    assert "not an executable Python" in results["No python"]["msg"]
    assert "does not exist on this machine" in results["No data"]["msg"]
    assert "is not in source_dir" in results["No script"]["msg"]
    assert "local mode serves one variant" in results["Two variants"]["msg"]
    for name in ("sml-bad-1", "sml-bad-2", "sml-bad-3"):
        assert not (local_dir / "training-jobs" / name).exists()
    assert not (local_dir / "endpoints" / "sml-bad-ep").exists()
    assert not out.exists()


def test_an_endpoint_whose_model_does_not_load_answers_503_per_request(aws_env, local_dir, tmp_path) -> None:
    """As in the MXNet serving container: the server comes up, the model has no worker, every request gets 503 (with
    the load error in our body); the deploy's smoke test reports it."""
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz"):
        pass
    name = f"sml-broken-{uuid.uuid4().hex[:6]}"
    args = base(local_dir, name=name, model_data=f"file://{archive}", entry_point="broken_inference.py",
                source_dir=str(FIXTURES), smoke_test={"body": "[]"})
    results = play([
        {"name": "Deploy", "sagemaker_endpoint": args},
        {"name": "Deploy again", "sagemaker_endpoint": args},
        {"name": "Remove", "sagemaker_endpoint": base(local_dir, name=name, state="absent")},
    ], aws_env)
    for key in ("Deploy", "Deploy again"):
        assert results[key].get("failed") and "(503)" in results[key]["msg"], results[key].get("msg")
        assert "the archive is empty" in results[key]["msg"]  # the model's own error, in the answer
    assert results["Remove"]["changed"] is True
    assert not (local_dir / "endpoints" / name).exists()


def test_a_channel_object_named_to_climb_out_is_refused_and_nothing_lands_outside(
        emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Local mode copies a channel from S3 into /opt/ml/input/data/<channel>: an object key holding `../` must not
    write outside it (S3 keys are any string; here the emulator's S3, over HTTP)."""
    from sagemaker_local import container

    s3 = emulator.client("s3")
    bucket = f"sm-local-keys-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/train/part-0.bin", Body=b"ok")
    monkeypatch.setattr(container, "_S3", s3)
    channel = tmp_path / "opt" / "ml" / "input" / "data" / "training"
    assert container.fetch_prefix(f"s3://{bucket}/data", str(channel)) == ["train/part-0.bin"]
    s3.put_object(Bucket=bucket, Key="data/../../../../escape.txt", Body=b"owned")
    with pytest.raises(ValueError, match="would land outside"):
        container.fetch_prefix(f"s3://{bucket}/data", str(tmp_path / "again" / "training"))
    assert not list(tmp_path.rglob("escape.txt"))


SHOWN = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d) (\S+) \| (.*)$", re.MULTILINE)


def _task(run, name: str) -> dict[str, Any]:
    return next(t["task"] for p in run.data["plays"] for t in p["tasks"] if t["task"]["name"] == name)


def _seconds_into(task: dict[str, Any], shown: tuple[str, ...]) -> tuple[float, float]:
    """(when the line was shown, when the task ended), in seconds after the task began (local clock)."""
    start, end = (datetime.fromisoformat(task["duration"][k].replace("Z", "+00:00")).astimezone()
                  for k in ("start", "end"))
    of_day = int(shown[0]) * 3600 + int(shown[1]) * 60 + int(shown[2]) + int(shown[3]) / 10
    began = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    return (of_day - int(began * 10) / 10) % 86400, (end - start).total_seconds()


def test_playbook_shows_progress_while_the_job_runs_saves_its_log_and_reports_its_curves(aws_env, tmp_path) -> None:
    """playbooks/sagemaker.yml (train stage, local mode, the real trainer) then playbooks/report.yml: the status
    transitions and log lines are shown on stderr while the task runs (each stamped before the task ended, the first
    log line before the job's end), the whole log is saved as artifacts/<run>/sagemaker/training-job.log, the
    metric definitions over it give training-curves.png and its series, and report.md shows them. A second run
    shows no line again and changes nothing."""
    run = f"sml-follow-{uuid.uuid4().hex[:6]}"
    artifacts = tmp_path / "artifacts" / run
    extra = {"dlfleet_fleet_name": run, "dlfleet_artifacts_dir": str(artifacts),
             "dlfleet_run_dir": str(tmp_path / "run"), "sagemaker_synthetic_size": 128,
             "sagemaker_hyperparameters": {"dataset": "synthetic", "synthetic-size": 128, "model": "resnet20_v1",
                                           "epochs": 2, "batch-size": 32, "base-width": 4, "lr": 0.05,
                                           "log-interval": 0}}
    tags = ["sagemaker_upload", "sagemaker_train"]
    (artifacts / "sagemaker").mkdir(parents=True)   # the play's untagged folder task does not run under --tags
    first = run_playbook("playbooks/sagemaker.yml", extra_vars=extra, env=aws_env, tags=tags, timeout=900)
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-3000:]
    name = f"{run}-resnet20"
    task = _task(first, "Run the training job")
    shown = [m for m in SHOWN.findall(first.stderr) if m[4] == name]
    texts = [m[5] for m in shown]
    assert "Starting - Preparing the instances for training" in texts, first.stderr[-3000:]
    assert texts.index("Starting - Preparing the instances for training") < texts.index("status Completed")
    epoch_lines = [m for m in shown if re.search(r"^epoch=1; .*validation-accuracy=", m[5])]
    assert epoch_lines, texts
    when = {text: _seconds_into(task, m[:4]) for m in shown for text in [m[5]]}
    ended = _seconds_into(task, shown[0][:4])[1]
    assert all(at <= ended for at, _ in when.values()), (when, ended)
    assert when[epoch_lines[0][5]][0] <= when["status Completed"][0]

    sagemaker = artifacts / "sagemaker"
    log = (sagemaker / "training-job.log").read_text().splitlines()
    assert [line for line in log if line.startswith("epoch=")] == [t for t in texts if t.startswith("epoch=")]
    assert len([line for line in log if line.startswith("epoch=")]) == 2
    series = json.loads((sagemaker / "training-curves.json").read_text())["metrics"]
    accuracies = [float(re.search(r"validation-accuracy=([0-9.]+);", line).group(1))
                  for line in log if line.startswith("epoch=")]
    assert series["validation-accuracy"] == accuracies and len(series["train-loss"]) == 2
    assert (sagemaker / "training-curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    job = json.loads((sagemaker / "training_job.json").read_text())
    assert job["final_metrics"]["validation-accuracy"] == pytest.approx(accuracies[-1])

    report = run_playbook("playbooks/report.yml", extra_vars=extra, env=aws_env)
    assert report.rc == 0, report.stdout[-3000:]
    text = (artifacts / "report.md").read_text()
    assert "![SageMaker training curves](sagemaker/training-curves.png)" in text
    assert f"| validation-accuracy | 2 | {accuracies[0]:.4g} | {accuracies[-1]:.4g} |" in text

    again = run_playbook("playbooks/sagemaker.yml", extra_vars=extra, env=aws_env, tags=tags, timeout=900)
    assert again.rc == 0, again.stdout[-4000:]
    assert again.changed == 0, [(n, h) for n, h, r in again.all_results() if r.get("changed")]
    assert not [m for m in SHOWN.findall(again.stderr) if m[4] == name and m[5].startswith("epoch=")]
    assert (sagemaker / "training-job.log").read_text().splitlines() == log


def test_a_failed_scoring_still_removes_the_endpoint_and_fails_the_run(emulator, aws_env, bucket, tmp_path) -> None:
    """playbooks/sagemaker.yml in local mode, the default: the model is trained (the real trainer, tiny), then the
    held-out test batch on this machine is cut short (a corrupt file, as a broken download leaves it) and the run
    deploys and scores again. Scoring fails; the endpoint, its config, its model and its serving process are gone
    all the same, and the run ends failed with the scoring's own error."""
    run = f"sml-fail-{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / "run"
    extra = {"dlfleet_run": run, "dlfleet_fleet_name": run, "dlfleet_run_dir": str(run_dir),
             "dlfleet_artifacts_dir": str(tmp_path / "artifacts"), "sagemaker_bucket": bucket,
             "sagemaker_synthetic_size": 256, "sagemaker_eval_batch_size": 20,
             "sagemaker_hyperparameters": {"dataset": "synthetic", "synthetic-size": 256, "epochs": 1,
                                           "batch-size": 32, "base-width": 4, "log-interval": 0}}
    trained = run_playbook("playbooks/sagemaker.yml", extra_vars=extra, env=aws_env,
                           tags=["sagemaker_upload", "sagemaker_train"], timeout=600)
    assert trained.rc == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    [test_batch] = (run_dir / "sagemaker" / "data").rglob("test_batch.bin")
    test_batch.write_bytes(test_batch.read_bytes()[:RECORD * 3 + 100])   # not a whole number of images

    failed = run_playbook("playbooks/sagemaker.yml", extra_vars=extra, env=aws_env, timeout=600)
    assert failed.rc != 0, failed.stdout[-3000:]
    deployed = failed.results("Deploy the model to the endpoint")
    assert deployed.get("changed") is True and deployed["status"] == "InService", deployed.get("msg")
    scored = failed.results("Score the endpoint on the held-out test images")
    assert scored.get("failed") is True and "multiple of 3073 bytes" in scored["msg"], scored
    removed = failed.results("Remove the endpoint, its config and its model (also after a failed deploy or scoring)")
    assert removed.get("changed") is True and not removed.get("failed"), removed
    assert removed["deleted"] == {"endpoint_configs": [deployed["endpoint_config_name"]],
                                  "models": [deployed["model_name"]]}
    # the failure is the run's: nothing after the block ran, no evaluation was written
    assert [t for t, _, r in failed.all_results() if r.get("failed")] == [
        "Score the endpoint on the held-out test images"]
    assert not (tmp_path / "artifacts" / "sagemaker" / "evaluation.json").exists()
    # the endpoint's hours are recorded for the cost report all the same: from its creation to its removal
    record = json.loads((tmp_path / "artifacts" / "sagemaker" / "endpoint.json").read_text())
    assert record["endpoint"] == f"{run}-cifar10" and record["deleted"] == removed["removed_time"], record
    assert record["created"] and record["created"] == removed["endpoint"]["creation_time"] == \
        deployed["endpoint"]["creation_time"], (record, removed.get("endpoint"), deployed.get("endpoint"))

    endpoint = f"{run}-cifar10"
    local = run_dir / "sagemaker"
    assert not (local / "endpoints" / endpoint).exists()
    assert not [p for p in (local / "models").iterdir() if p.name.startswith(endpoint)]
    assert not [p for p in (local / "endpoint-configs").iterdir() if p.name.startswith(endpoint)]
    assert not [p for p in [*local.rglob("server.json"), *local.rglob("supervisor.json")] if _alive(p)]
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http(deployed["endpoint_url"].replace("/invocations", "/ping"))
    sm = emulator.client("sagemaker")
    assert not [e for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"].startswith(run)]
    assert not [m for m in sm.list_models()["Models"] if m["ModelName"].startswith(run)]
def _client(tmp_path: Path, python: str) -> client.LocalBackend:
    """The local backend (module_utils), as a module makes it: a client of the runtime in `python`."""
    module = SimpleNamespace(params={"local_dir": str(tmp_path), "local_python": python}, region="us-east-1")
    return client.LocalBackend(module)


def test_the_client_raises_the_runtime_errors_as_sagemaker_errors(tmp_path: Path) -> None:
    local = _client(tmp_path, TRAIN_PYTHON)
    assert local.describe_endpoint("nope") is None
    with pytest.raises(sm.SageMakerError) as err:
        local.stop_tuning_job("nope")
    assert err.value.code == "ValidationException" and "Could not find hyper parameter tuning job" in str(err.value)


def test_a_python_without_the_runtime_or_a_missing_python_is_named_with_the_fix(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"$0: No module named sagemaker_local\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(sm.SageMakerError) as err:
        _client(tmp_path, str(fake)).describe_training_job("j")
    assert "has no local SageMaker runtime (sagemaker_local)" in str(err.value) and "make venv" in str(err.value)
    missing = _client(tmp_path, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(sm.SageMakerError) as err:
        missing.prepare()
    assert "is not an executable Python" in str(err.value)
    with pytest.raises(sm.SageMakerError) as err:
        missing.describe_training_job("j")
    assert "is not an executable Python" in str(err.value)


