"""The local SageMaker runtime (the sagemaker_local package) and its client in module_utils: the API's answers and
errors on the wire, the client's errors, the one backend interface that AWS and local mode both implement (so that no
module asks which backend it has), and a tuning job's trial summaries. The client's calls over the wire, and the
runtime's jobs and endpoints, run for real in tests/emulator/test_sagemaker_local.py and tests/conformance."""
from __future__ import annotations

import inspect
import io
import json
import re
import threading
import time
from pathlib import Path

from ansible.module_utils import dlfleet_sagemaker_backend as sm_backend
from ansible.module_utils import dlfleet_sagemaker_local as client
from helpers import ROOT

from sagemaker_local import api, backend, container


def _api(tmp_path: Path, method: str, **args) -> tuple[int, dict]:
    request = {"root": str(tmp_path), "python": "/usr/bin/python3", "region": "eu-west-1", "args": args}
    out = io.StringIO()
    code = api.main(method, stdin=io.StringIO(json.dumps(request)), stdout=out)
    return code, json.loads(out.getvalue())


def test_the_api_answers_as_sagemaker_does_missing_things_included(tmp_path: Path) -> None:
    assert _api(tmp_path, "describe_training_job", name="nope") == (0, {"result": None})
    assert _api(tmp_path, "list_models", name_contains="x") == (0, {"result": []})
    code, answer = _api(tmp_path, "stop_training_job", name="nope")
    assert code == 0 and answer["error"] == {
        "code": "ValidationException",
        "message": "Could not find training job 'arn:aws:sagemaker:eu-west-1:000000000000:training-job/nope'."}
    code, answer = _api(tmp_path, "delete_everything")
    assert code == 0 and answer["error"]["code"] == "InvalidAction" and "describe_training_job" in \
        answer["error"]["message"]


def test_a_fault_of_the_runtime_is_an_internal_failure_with_its_cause(tmp_path: Path, capsys) -> None:
    out = io.StringIO()
    assert api.main("describe_model", stdin=io.StringIO("{}"), stdout=out) == 1
    answer = json.loads(out.getvalue())["error"]
    assert answer == {"code": "InternalFailure", "message": "the local runtime failed: KeyError: 'root'"}
    assert "Traceback" in capsys.readouterr().err


def test_model_records_and_tags_round_trip_through_the_api(tmp_path: Path) -> None:
    request = {"ModelName": "m-1", "PrimaryContainer": {"Image": "img"}, "Tags": [{"Key": "a", "Value": "1"}]}
    assert _api(tmp_path, "create_model", request=request) == (0, {"result": None})
    _code, answer = _api(tmp_path, "describe_model", name="m-1")
    arn = answer["result"]["ModelArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:000000000000:model/m-1" and "Tags" not in answer["result"]
    assert _api(tmp_path, "list_tags", arn=arn)[1] == {"result": {"a": "1"}}
    assert _api(tmp_path, "update_tags", arn=arn, to_set={"b": "2"}, to_unset=["a"])[1] == {"result": None}
    assert _api(tmp_path, "list_tags", arn=arn)[1] == {"result": {"b": "2"}}
    assert _api(tmp_path, "update_tags", arn=arn, to_set={"c": "3"}, to_unset=[])[1] == {"result": None}
    assert _api(tmp_path, "list_tags", arn=arn)[1] == {"result": {"b": "2", "c": "3"}}
    assert _api(tmp_path, "list_models", name_contains="m-")[1] == {"result": ["m-1"]}


def test_a_trial_summary_carries_its_objective_from_the_trial_metrics(tmp_path: Path) -> None:
    runtime = backend.LocalSageMaker(str(tmp_path), "python3", "us-east-1")
    objective = {"Type": "Maximize", "MetricName": "validation-accuracy"}
    tuning = tmp_path / "tuning-jobs" / "t"
    tuning.mkdir(parents=True)
    container.write_json(str(tuning / "record.json"), {
        "HyperParameterTuningJobConfig": {"HyperParameterTuningJobObjective": objective},
        "_local": {"trials": ["t-001", "t-002"]}})
    for trial, metrics in (("t-001", [{"MetricName": "validation-accuracy", "Value": 0.4},
                                      {"MetricName": "train-loss", "Value": 1.5}]), ("t-002", [])):
        folder = tmp_path / "training-jobs" / trial
        folder.mkdir(parents=True)
        container.write_json(str(folder / "record.json"), {
            "TrainingJobName": trial, "TrainingJobStatus": "Completed", "FinalMetricDataList": metrics,
            "_local": {"tuned": {"lr": "0.1"}}})
    first, second = runtime.list_tuning_trials("t")
    assert first["FinalHyperParameterTuningJobObjectiveMetric"] == {**objective, "Value": 0.4}
    assert first["TunedHyperParameters"] == {"lr": "0.1"}
    assert second["FinalHyperParameterTuningJobObjectiveMetric"] is None


def _public(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in ("logs_client", "child_env")}


def test_aws_and_local_backends_have_one_interface() -> None:
    aws, local = _public(sm_backend.AwsBackend), _public(client.LocalBackend)
    assert set(aws) == set(local)
    for name, signature in aws.items():
        assert list(signature.parameters) == list(local[name].parameters), name
    for attribute in ("poll_seconds", "look_seconds"):
        assert getattr(sm_backend.AwsBackend, attribute) > getattr(client.LocalBackend, attribute) > 0
    runtime_calls = {name for name in aws if name not in ("prepare", "strategy_warning")}
    assert runtime_calls == set(api.METHODS)


def test_no_module_asks_which_backend_it_has_and_no_runtime_is_left_in_the_modules() -> None:
    code = {path: path.read_text() for folder in ("library", "module_utils", "playbooks/action_plugins")
            for path in (ROOT / folder).glob("*.py")}
    for path, text in code.items():
        assert not re.search(r"backend\.mode\b|\bmode\s*=\s*\"(aws|local)\"", text), path
        assert not re.search(r"class (TrainingRun|TuningRun)|ThreadingHTTPServer|import sagemaker_local", text), path
    assert not (ROOT / "module_utils" / "dlfleet_sagemaker_container.py").exists()


def test_a_stop_that_comes_while_the_job_writes_its_record_neither_deadlocks_nor_loses_the_record(
        tmp_path: Path, monkeypatch) -> None:
    """SIGTERM's handler runs on the thread it interrupts. One that came while the job was saving its record (holding
    the record's lock) took the lock again and waited for ever: the job never ended, nor did a tuning job waiting for
    it. Here the handler is called from inside a save, as the signal would run it."""
    job = tmp_path / "job"
    job.mkdir()
    container.write_json(str(job / "request.json"), {"TrainingJobName": "j", "ResourceConfig": {"InstanceCount": 1}})
    container.write_json(str(job / "record.json"), {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"})
    run = container.TrainingRun(str(job))
    real_write = container.write_json
    signalled = []

    def write_then_signal(path, data):
        real_write(path, data)
        if not signalled:
            signalled.append(True)
            run.on_term(15, None)   # the signal arrives here, before the lock is released

    monkeypatch.setattr(container, "write_json", write_then_signal)
    monkeypatch.setattr(run, "kill_all", lambda: None)
    saving = threading.Thread(target=run.save, kwargs={"SecondaryStatus": "Training"}, daemon=True)
    saving.start()
    saving.join(timeout=20)
    assert not saving.is_alive(), "the save never returned: the stop deadlocked on the record's lock"
    deadline = time.monotonic() + 20
    while run.record.get("TrainingJobStatus") != "Stopping" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.stop_reason == "Stopped"
    record = json.loads((job / "record.json").read_text())
    assert record["TrainingJobStatus"] == "Stopping" and record["SecondaryStatus"] == "Stopping"
    assert not list(job.glob("record.json.tmp-*"))


def test_a_stop_after_the_job_ended_leaves_its_final_status(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    container.write_json(str(job / "request.json"), {"TrainingJobName": "j", "ResourceConfig": {"InstanceCount": 1}})
    container.write_json(str(job / "record.json"), {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"})
    run = container.TrainingRun(str(job))
    run.stopping()
    assert json.loads((job / "record.json").read_text())["TrainingJobStatus"] == "Completed"
