"""The SageMaker modules in AWS mode, through ansible-playbook, against the session emulator over HTTP.

moto 5.2.5 lacks StopTrainingJob, UpdateEndpoint, StopHyperParameterTuningJob and
ListTrainingJobsForHyperParameterTuningJob; the emulator adds them (scripts/emulator/ext_sagemaker.py).
Nothing trains in the emulator: a job is InProgress for as long as the SSM parameter
/dlfleet/emulator/sagemaker/training-seconds says, then Completed with no metrics.
"""
from __future__ import annotations

import contextlib
import io
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from helpers import ROOT, run_playbook

FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
SECONDS_PARAMETER = "/dlfleet/emulator/sagemaker/training-seconds"
MODEL_KEY = "output/m/output/model.tar.gz"


def play(tasks: list[dict[str, Any]], env: dict[str, str], check: bool = False) -> dict[str, dict[str, Any]]:
    """Run `tasks` as one play on localhost; returns each task's result by name (failures included)."""
    for task in tasks:
        task.setdefault("ignore_errors", True)
    book = [{"name": "SageMaker modules under test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book))
    try:
        run = run_playbook(path, env=env, check=check)
    finally:
        path.unlink()
    return {task["name"]: run.results(task["name"]) for task in tasks}


@pytest.fixture(scope="module")
def bucket(emulator) -> str:
    """A bucket holding a training job's model.tar.gz (the one the endpoints serve): parameters, and the trainer's
    own copy of the inference code in code/."""
    name = f"smt-{uuid.uuid4().hex[:10]}"
    s3 = emulator.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=MODEL_KEY, Body=tar_gz({"model-0000.params": b"weights",
                                                          "code/inference.py": b"# the trainer's copy"}))
    return name


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """local_dir of these tests: in AWS mode it only holds the image-URI cache."""
    return str(tmp_path_factory.mktemp("sagemaker-cache"))


@pytest.fixture
def slow_jobs(emulator) -> Iterator[None]:
    """Emulated training jobs stay InProgress for a minute while the test runs."""
    ssm = emulator.client("ssm")
    ssm.put_parameter(Name=SECONDS_PARAMETER, Value="60", Type="String", Overwrite=True)
    yield
    ssm.delete_parameter(Name=SECONDS_PARAMETER)


def training_args(bucket: str, name: str, local_dir: str, **changes: Any) -> dict[str, Any]:
    args = {"name": name, "role_arn": ROLE, "entry_point": "tiny_train.py", "source_dir": str(FIXTURES),
            "instance_type": "ml.m5.xlarge", "hyperparameters": {"epochs": 2, "lr": 0.1},
            "channels": [{"name": "training", "uri": f"s3://{bucket}/data"}],
            "metric_definitions": [{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+)"}],
            "output_path": f"s3://{bucket}/output", "fleet": "smt", "owner": "tests", "ttl": "1h",
            "local_dir": local_dir}
    args.update(changes)
    return args


def job_names(emulator) -> set[str]:
    pages = emulator.client("sagemaker").get_paginator("list_training_jobs").paginate()
    return {j["TrainingJobName"] for page in pages for j in page["TrainingJobSummaries"]}


def test_training_job_check_create_rerun_and_immutable_spec(emulator, aws_env, bucket, cache_dir) -> None:
    name = f"smt-train-{uuid.uuid4().hex[:6]}"
    args = training_args(bucket, name, cache_dir)
    results = play([
        {"name": "Check", "sagemaker_training_job": args, "check_mode": True},
        {"name": "Create", "sagemaker_training_job": args},
        {"name": "Again", "sagemaker_training_job": args},
        {"name": "Other spec", "sagemaker_training_job": {**args, "hyperparameters": {"epochs": 3, "lr": 0.1}}},
        {"name": "Other tags", "sagemaker_training_job": {**args, "tags": {"team": "vision"}}},
    ], aws_env)
    created, again, other, retagged = (results[k] for k in ("Create", "Again", "Other spec", "Other tags"))
    assert results["Check"]["changed"] is True  # and it made nothing: "Create" below still creates
    assert created["changed"] is True and created["status"] == "Completed", created
    described = emulator.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert created["model_artifact"] == described["ModelArtifacts"]["S3ModelArtifacts"]
    assert created["model_artifact"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"
    assert created["billable_seconds"] == described["BillableTimeInSeconds"]
    hps = created["training_job"]["hyperparameters"]
    assert hps["sagemaker_submit_directory"] == created["source"]["uri"] and hps["sagemaker_program"] == "tiny_train.py"
    assert described["HyperParameters"]["sagemaker_program"] == '"tiny_train.py"'  # JSON-encoded on the wire
    key = created["source"]["uri"].split(f"s3://{bucket}/", 1)[1]
    head = emulator.client("s3").head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256" and created["source"]["uploaded"] is True

    assert again["changed"] is False and again["source"]["uploaded"] is False
    assert other.get("failed") and "hyperparameters.epochs: existing '2', requested '3'" in other["msg"]
    assert "immutable" in other["msg"]
    assert retagged["changed"] is True
    tags = emulator.client("sagemaker").list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags}["team"] == "vision"


def test_absent_stops_a_running_job(emulator, aws_env, bucket, cache_dir, slow_jobs) -> None:
    name = f"smt-stop-{uuid.uuid4().hex[:6]}"
    args = training_args(bucket, name, cache_dir, wait=False)
    results = play([
        {"name": "Start", "sagemaker_training_job": args},
        {"name": "Stop", "sagemaker_training_job": {"name": name, "state": "absent"}},
        {"name": "Stop again", "sagemaker_training_job": {"name": name, "state": "absent"}},
    ], aws_env)
    assert results["Start"]["status"] == "InProgress"
    assert results["Stop"]["changed"] is True and results["Stop"]["status"] == "Stopped"
    assert results["Stop again"]["changed"] is False
    described = emulator.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Stopped"


BAD = [  # through the module end to end; test_sagemaker_units.py checks many more in-process
    ({"instance_type": "p3.2xlarge"}, "not a SageMaker instance type"),
    ({"role_arn": "SageMakerRole"}, "not an IAM role ARN"),
    ({"entry_point": "nope.py"}, "is not in source_dir"),
    ({"hyperparameters": {"epochs": [1, 2]}}, "hyperparameters.epochs is a list"),
    ({"framework_version": "0.1"}, "Supported mxnet version"),
]


def test_bad_inputs_fail_clearly_and_create_nothing(emulator, aws_env, bucket, cache_dir) -> None:
    before = job_names(emulator)
    objects_before = emulator.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    tasks = [{"name": f"Bad {i}", "sagemaker_training_job": {**training_args(bucket, f"smt-bad-{i}", cache_dir),
                                                             **changes}}
             for i, (changes, _message) in enumerate(BAD)]
    results = play(tasks, aws_env)
    for i, (_changes, message) in enumerate(BAD):
        result = results[f"Bad {i}"]
        assert result.get("failed") and message in result["msg"], (message, result.get("msg"))
    assert job_names(emulator) == before
    assert emulator.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == objects_before


def endpoint_args(bucket: str, name: str, local_dir: str, **changes: Any) -> dict[str, Any]:
    args = {"name": name, "role_arn": ROLE, "local_dir": local_dir, "model_data": f"s3://{bucket}/{MODEL_KEY}",
            "entry_point": "tiny_train.py", "source_dir": str(FIXTURES), "instance_type": "ml.m5.large",
            "fleet": "smt", "owner": "tests", "ttl": "1h"}
    args.update(changes)
    return args


def endpoint_parts(emulator, name: str) -> dict[str, list[str]]:
    sm = emulator.client("sagemaker")
    return {
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints(NameContains=name)["Endpoints"]],
        "configs": sorted(c["EndpointConfigName"]
                          for c in sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]),
        "models": sorted(m["ModelName"] for m in sm.list_models(NameContains=name)["Models"]),
    }


def test_endpoint_create_rerun_blue_green_update_and_absent(emulator, aws_env, bucket, cache_dir) -> None:
    name = f"smt-ep-{uuid.uuid4().hex[:6]}"
    args = endpoint_args(bucket, name, cache_dir)
    results = play([
        {"name": "Check", "sagemaker_endpoint": args, "check_mode": True},
        {"name": "Create", "sagemaker_endpoint": {**args, "smoke_test": {"body": "[1]"}}},
        {"name": "Again", "sagemaker_endpoint": args},
    ], aws_env)
    created, again = results["Create"], results["Again"]
    assert results["Check"]["changed"] is True  # and it made nothing: "Create" below still creates
    assert created["changed"] is True and created["status"] == "InService"
    assert "smoke_response" in created
    parts = endpoint_parts(emulator, name)
    assert parts == {"endpoints": [name], "configs": [created["endpoint_config_name"]],
                     "models": [created["model_name"]]}
    sm = emulator.client("sagemaker")
    model = sm.describe_model(ModelName=created["model_name"])
    env = model["PrimaryContainer"]["Environment"]
    # the model repacked as the SDK does it for the MXNet serving image: the code in the model's code/ folder
    assert env["SAGEMAKER_PROGRAM"] == "tiny_train.py" and env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    repacked = model["PrimaryContainer"]["ModelDataUrl"]
    assert repacked.startswith(f"s3://{bucket}/output/m/output/code/") and repacked.endswith("/model.tar.gz")
    s3 = emulator.client("s3")
    stored = s3.get_object(Bucket=bucket, Key=repacked.split("/", 3)[3])
    assert stored["ServerSideEncryption"] == "AES256"
    files = members(stored["Body"].read())
    assert files["model-0000.params"] == b"weights" and "code/inference.py" not in files
    assert files["code/tiny_train.py"] == (FIXTURES / "tiny_train.py").read_bytes()
    assert results["Check"]["model_name"] == created["model_name"]   # check mode names the same repacked model
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="output/m/")["Contents"]]
    assert sorted(keys) == sorted([MODEL_KEY, repacked.split("/", 3)[3]])   # no code archive besides the model
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]}
    assert tags["dlfleet:fleet"] == "smt" and tags["dlfleet:endpoint"] == name

    assert again["changed"] is False and again["deleted"] == {"endpoint_configs": [], "models": []}

    results = play([
        {"name": "Update", "sagemaker_endpoint": {**args, "env": {"MODEL_VERSION": "2"}}},
        {"name": "Update again", "sagemaker_endpoint": {**args, "env": {"MODEL_VERSION": "2"}}},
        {"name": "Remove", "sagemaker_endpoint": {"name": name, "state": "absent"}},
        {"name": "Remove again", "sagemaker_endpoint": {"name": name, "state": "absent"}},
    ], aws_env)
    updated, again2 = results["Update"], results["Update again"]
    assert updated["changed"] is True and updated["updated"] is True
    assert updated["endpoint_config_name"] != created["endpoint_config_name"]
    assert updated["endpoint"]["endpoint_config_name"] == updated["endpoint_config_name"]
    assert updated["deleted"] == {"endpoint_configs": [created["endpoint_config_name"]],
                                  "models": [created["model_name"]]}
    assert again2["changed"] is False and again2["endpoint_config_name"] == updated["endpoint_config_name"]
    assert results["Remove"]["changed"] is True
    assert results["Remove"]["deleted"] == {"endpoint_configs": [updated["endpoint_config_name"]],
                                            "models": [updated["model_name"]]}
    assert endpoint_parts(emulator, name) == {"endpoints": [], "configs": [], "models": []}
    assert results["Remove again"]["changed"] is False


def test_endpoint_bad_input_creates_nothing(emulator, aws_env, bucket, cache_dir) -> None:
    name = f"smt-bad-ep-{uuid.uuid4().hex[:6]}"
    mixed = endpoint_args(bucket, name, cache_dir)
    del mixed["instance_type"]
    results = play([
        {"name": "Mixed", "sagemaker_endpoint": {**mixed, "variants": [{"instance_type": "local"},
                                                                       {"name": "b", "instance_type": "ml.m5.large"}]}},
        {"name": "No role", "sagemaker_endpoint": endpoint_args(bucket, name, cache_dir, role_arn=None)},
        {"name": "Local data", "sagemaker_endpoint": endpoint_args(bucket, name, cache_dir,
                                                                   model_data="file:///tmp/m.tar.gz")},
    ], aws_env)
    assert "mix local and AWS" in results["Mixed"]["msg"]
    assert "not an IAM role ARN" in results["No role"]["msg"]
    assert "SageMaker in AWS cannot read" in results["Local data"]["msg"]
    assert endpoint_parts(emulator, name) == {"endpoints": [], "configs": [], "models": []}


def test_tuning_job_create_describe_rerun(emulator, aws_env, bucket, cache_dir) -> None:
    name = f"smt-tune-{uuid.uuid4().hex[:6]}"
    args = {**training_args(bucket, name, cache_dir), "strategy": "Bayesian", "max_jobs": 4, "max_parallel_jobs": 2,
            "early_stopping": "Auto",
            "objective": {"metric_name": "validation-accuracy", "type": "Maximize"},
            "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.3,
                                  "scaling": "Logarithmic"},
                                 {"name": "optimizer", "type": "categorical", "values": ["sgd", "nag"]}],
            "hyperparameters": {"epochs": 2}}
    results = play([
        {"name": "Create", "sagemaker_tuning_job": args},
        {"name": "Again", "sagemaker_tuning_job": args},
        {"name": "Other strategy", "sagemaker_tuning_job": {**args, "strategy": "Random"}},
        {"name": "Missing parent", "sagemaker_tuning_job": {**args, "name": f"{name}-w",
                                                            "warm_start": {"parents": ["smt-no-such-tuning"]}}},
    ], aws_env)
    assert results["Create"]["changed"] is True and results["Create"]["status"] == "Completed"
    described = emulator.client("sagemaker").describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = described["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "optimizer", "Values": ['"sgd"', '"nag"']}]
    assert results["Create"]["best_training_job"] is None  # nothing trains in the emulator
    assert results["Again"]["changed"] is False
    assert "strategy: existing 'Bayesian', requested 'Random'" in results["Other strategy"]["msg"]
    assert "smt-no-such-tuning" in results["Missing parent"]["msg"]
    summaries = emulator.client("sagemaker").list_hyper_parameter_tuning_jobs(NameContains=f"{name}-w")
    assert summaries["HyperParameterTuningJobSummaries"] == []


def test_creates_survive_lost_answers_and_throttling_with_exactly_one_of_each(faulty_aws, bucket, cache_dir) -> None:
    """A create whose answer is lost is retried by botocore; AWS then says 'already exists', and the module
    adopts what it made instead of failing or making a second one."""
    job = f"smt-fault-{uuid.uuid4().hex[:6]}"
    endpoint = f"smt-fault-ep-{uuid.uuid4().hex[:6]}"
    for action in ("CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        faulty_aws.once("lost_response", action)
    faulty_aws.configure(throttle=0.1, seed=11)
    results = play([
        {"name": "Train", "sagemaker_training_job": training_args(bucket, job, cache_dir)},
        {"name": "Deploy", "sagemaker_endpoint": endpoint_args(bucket, endpoint, cache_dir)},
    ], faulty_aws.env)
    assert results["Train"]["status"] == "Completed", results["Train"].get("msg")
    assert results["Deploy"]["status"] == "InService", results["Deploy"].get("msg")
    assert faulty_aws.counters["lost_response"] == 4 and faulty_aws.counters["throttle"] > 0
    emulator = faulty_aws.emulator
    assert [j for j in job_names(emulator) if j.startswith(job)] == [job]
    parts = endpoint_parts(emulator, endpoint)
    assert parts == {"endpoints": [endpoint], "configs": [results["Deploy"]["endpoint_config_name"]],
                     "models": [results["Deploy"]["model_name"]]}


def test_follow_prints_the_cloudwatch_log_once_in_order_and_saves_it(emulator, aws_env, bucket, cache_dir,
                                                                     tmp_path) -> None:
    """The action plugin of sagemaker_training_job follows a job in AWS mode: DescribeTrainingJob for its status and
    CloudWatch Logs (DescribeLogStreams, GetLogEvents with forward tokens) for its log. Nothing runs in the emulator,
    so the test writes the log events SageMaker's container would write (two instances' streams, before and while
    the job runs) and then stops the job: every event is shown once, in order and labelled with its instance (the
    job's InstanceCount is 2), the status change after the last line, and the log file holds them all."""
    name = f"smt-follow-{uuid.uuid4().hex[:6]}"
    sm, logs = emulator.client("sagemaker"), emulator.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    streams = [f"{name}/algo-{i}-1700000000" for i in (1, 2)]
    for stream in streams:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    written: list[str] = []

    def put(stream: str, message: str) -> None:
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": int(time.time() * 1000), "message": message}])
        written.append(f"[{stream.split('/')[1].rsplit('-', 1)[0]}] {message}")

    for stream in streams:
        put(stream, "Invoking script with the following command:")

    requests = emulator.state_dir / "requests.jsonl"

    def reads() -> int:
        """GetLogEvents calls so far (the emulator's request log): the follow's reads of the log."""
        return requests.read_text().count('"action":"GetLogEvents"')

    def wait_for(ready) -> None:
        for _ in range(1200):   # bounded: a follow that stops reading fails the asserts below instead of hanging
            if ready():
                return
            time.sleep(0.25)

    def container() -> None:
        """Once the job is InProgress and followed, write each epoch's lines into both streams, each after the
        follow has read the log again; then stop the job."""
        wait_for(lambda: name in job_names(emulator)
                 and sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress")
        for epoch in range(1, 6):
            seen = reads()
            wait_for(lambda seen=seen: reads() > seen)
            for stream in streams:
                put(stream, f"epoch={epoch}; validation-accuracy={epoch / 10:.4f};")
        seen = reads()
        wait_for(lambda: reads() > seen)
        sm.stop_training_job(TrainingJobName=name)

    log_file = tmp_path / "training-job.log"
    task = {"name": "Follow", "sagemaker_training_job": {**training_args(bucket, name, cache_dir), "instance_count": 2,
                                                         "follow": True, "follow_interval": 1,
                                                         "log_file": str(log_file)}}
    book = tmp_path / "follow.yml"
    book.write_text(yaml.safe_dump([{"name": "Follow a job", "hosts": "localhost", "gather_facts": False,
                                     "tasks": [task]}]))
    ssm = emulator.client("ssm")
    ssm.put_parameter(Name=SECONDS_PARAMETER, Value="600", Type="String", Overwrite=True)
    writer = threading.Thread(target=container, daemon=True)
    writer.start()
    try:
        run = run_playbook(book, env=aws_env)
    finally:
        ssm.delete_parameter(Name=SECONDS_PARAMETER)
        writer.join(timeout=60)
    result = run.results("Follow")
    assert result["status"] == "Stopped", (result.get("msg"), run.stderr[-3000:])
    shown = re.findall(rf"^\d\d:\d\d:\d\d\.\d {re.escape(name)} \| (.*)$", run.stderr, re.MULTILINE)
    log_lines = [s for s in shown if s.startswith("[algo-")]
    for host in ("algo-1", "algo-2"):   # each stream in its order, each event once
        assert [s for s in log_lines if s.startswith(f"[{host}]")] == [w for w in written if w.startswith(f"[{host}]")]
    assert len(log_lines) == len(written) == 12
    assert "status Stopped" in shown and shown.index("status Stopped") > shown.index(log_lines[-1])
    saved = log_file.read_text().splitlines()
    assert sorted(saved) == sorted(written) and len(saved) == len(written)
    assert result["followed"]["lines"] == 12 and result["followed"]["rounds"] >= 3   # epochs came between reads
