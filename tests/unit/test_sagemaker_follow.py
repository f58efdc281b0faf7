"""Following a SageMaker job, with SageMaker and CloudWatch Logs mocked (a simulated job answers DescribeTrainingJob,
DescribeLogStreams and GetLogEvents with AWS's paging and forward tokens, so that thousands of rounds take seconds):
the action plugin's loop (playbooks/action_plugins/sagemaker_training_job.py) runs the real round of
sagemaker_job_progress (look) and the real log readers (module_utils/dlfleet_sagemaker_logs) in place of the module
calls. Each line is shown once and in order, also the last ones that CloudWatch shows only after the job's end,
memory stays flat over thousands of rounds, the time bound holds, every line of a multi-instance job is labelled with
its instance and the streams go in algo-N order, the local container log is read from byte offsets
(sagemaker_local.logs), and the metric definitions give the curves' series from the first instance alone. The modules
and the playbook run for real in tests/emulator (test_sagemaker_local.py, test_sagemaker_aws.py)."""
from __future__ import annotations

import gc
import importlib.util
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ansible.errors import AnsibleActionFail
from ansible.module_utils import dlfleet_sagemaker_curves as curves
from ansible.module_utils import dlfleet_sagemaker_logs as logs
from ansible.module_utils.dlfleet_sagemaker_backend import AwsBackend
from helpers import ROOT

from library import sagemaker_job_progress as progress
from sagemaker_local import logs as local_logs

SPEC = importlib.util.spec_from_file_location(
    "sagemaker_training_job_action_under_test", ROOT / "playbooks/action_plugins/sagemaker_training_job.py")
action_mod = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(action_mod)
FOLLOW_CODE = (ROOT / "playbooks/action_plugins/sagemaker_training_job.py", Path(progress.__file__),
               Path(logs.__file__))


class NotFound(Exception):
    pass


class SimulatedJob:
    """A training job on `hosts` instances: each DescribeTrainingJob moves it one step on; each step writes one log
    event per instance into its CloudWatch stream; it ends after `steps` steps. As in CloudWatch Logs, an event is
    readable some time after it was written: the last step's events only one DescribeTrainingJob after the one that
    said Completed (the final metrics that come after the job's end)."""

    def __init__(self, name: str, steps: int, hosts: int = 1, lag: bool = True) -> None:
        self.name = name
        self.lag = lag
        self.late: tuple[int, int] | None = None   # (events readable per stream, from which look on all are)
        self.steps = steps
        self.step = 0
        self.resources = {"InstanceType": "ml.m5.xlarge", "InstanceCount": hosts}
        self.looks = 0
        self.streams = {f"{name}/algo-{i + 1}-1700000000": [] for i in range(hosts)}
        self.module = SimpleNamespace(region="us-east-1")
        self.look_seconds = AwsBackend.look_seconds

    # SageMaker
    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        if name != self.name:
            return None
        self.looks += 1
        if self.step < self.steps:
            self.step += 1
            self.write_step()
        transitions = [{"Status": "Starting", "StatusMessage": "Preparing the instances for training"}]
        done = self.step >= self.steps
        if self.step >= 2:
            transitions.append({"Status": "Training", "StatusMessage": "Training image download completed."})
        if done:
            transitions.append({"Status": "Completed", "StatusMessage": "Training job completed"})
        return {"TrainingJobName": name, "TrainingJobStatus": "Completed" if done else "InProgress",
                "SecondaryStatus": transitions[-1]["Status"], "SecondaryStatusTransitions": transitions,
                "ResourceConfig": self.resources}

    def write_step(self) -> None:
        if self.step < 2:
            return
        if self.lag and self.step >= self.steps:   # the last events come late: readable from the next look on
            self.late = (len(next(iter(self.streams.values()))), self.looks + 1)
        for stream in self.streams.values():
            # kept as tuples: a kept dict could take a dict-keys block freed by the follow's own code, which tracemalloc
            # would still count as the follow's
            stream.append((self.step, f"step {self.step} loss=0.{self.step % 97:02d};\n"))

    # CloudWatch Logs, with AWS's tokens: a forward token names the last event read, and comes back unchanged
    # when there is nothing new
    def describe_log_streams(self, logGroupName: str, logStreamNamePrefix: str, nextToken: str | None = None):
        assert logGroupName == logs.LOG_GROUP
        names = sorted(s for s in self.streams if s.startswith(logStreamNamePrefix))
        return {"logStreams": [{"logStreamName": s} for s in names]}

    def get_log_events(self, logGroupName: str, logStreamName: str, startFromHead: bool, limit: int,
                       nextToken: str | None = None):
        assert startFromHead
        events = self.streams[logStreamName]
        start = int(nextToken[2:]) if nextToken else 0
        readable = len(events) if self.late is None or self.looks >= self.late[1] else self.late[0]
        page = [{"timestamp": t, "message": m} for t, m in events[start:min(start + limit, readable)]]
        return {"events": page, "nextForwardToken": f"f/{start + len(page)}"}

    def training_log_since(self, name: str, cursor: dict, limit: int, final: bool, hosts: int):
        """AwsBackend.training_log_since, with this job as the CloudWatch Logs client."""
        return logs.aws_read(self, name, cursor, limit, call, hosts)


def call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except NotFound:
        return None




def round_params(args: dict) -> dict:
    return {"kind": "training", "cursor": {}, "seen": {}, "timeout": 30, "limit": 1000, "read_log": True, **args}


class Screen(list):
    """What the plugin shows: status lines kept; log lines checked against the simulated job's as they come (each
    stream's next step, none twice) and counted, not kept, so that memory measures the follow alone."""

    def __init__(self) -> None:
        super().__init__()
        self.next_step = {1: 2, 2: 2}
        self.log_lines = 0
        self.status_before_last_line = 0

    def append(self, text: str) -> None:
        if not text.startswith("[algo-"):
            super().append(text)
            return
        self.status_before_last_line = len(self)
        host = int(text[len("[algo-")])
        step = self.next_step[host]
        assert text == f"[algo-{host}] step {step} loss=0.{step % 97:02d};", (text, step)
        self.next_step[host] = step + 1
        self.log_lines += 1


def plugin_for(job: SimulatedJob, log_file: Path | None, shown: list[str], **task_args: Any):
    args = {"name": job.name, "instance_type": "ml.m5.xlarge", "region": "us-east-1", "follow": True,
            "follow_interval": 30, **task_args}
    if log_file:
        args["log_file"] = str(log_file)
    task = SimpleNamespace(args=args, async_val=0, check_mode=False, action="sagemaker_training_job")
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))
    plugin = action_mod.ActionModule(task, connection, SimpleNamespace(), None, None, None)
    plugin.module_calls = []

    def module(task_vars, module_args):
        plugin.module_calls.append(module_args.get("wait", True))
        record = job.describe_training_job(job.name)
        return {"changed": len(plugin.module_calls) == 1, "status": record["TrainingJobStatus"]}

    plugin._module = module
    plugin._progress = lambda task_vars, a: progress.look(job, round_params(a), sleep=lambda s: None)
    plugin._show = lambda name, text: shown.append(text)
    plugin._remove_tmp_path = lambda path, **kw: None
    plugin.slept = []
    plugin.sleep = plugin.slept.append
    return plugin


def test_three_thousand_mocked_rounds_show_each_line_once_and_in_order_with_flat_memory(tmp_path: Path) -> None:
    job = SimulatedJob("cifar10-001", steps=3500, hosts=2)
    shown = Screen()
    log_file = tmp_path / "sagemaker" / "training-job.log"
    plugin = plugin_for(job, log_file, shown)
    samples = []
    real = plugin._progress

    def measured(task_vars, args):
        if job.step in (500, 3000):   # what the follow's own code holds (the simulated job keeps every event)
            gc.collect()
            ours = [tracemalloc.Filter(True, str(f)) for f in FOLLOW_CODE]
            snapshot = tracemalloc.take_snapshot().filter_traces(ours)
            samples.append(sum(stat.size for stat in snapshot.statistics("filename")))
        return real(task_vars, args)

    plugin._progress = measured
    tracemalloc.start()
    try:
        result = plugin.run(task_vars={})
    finally:
        tracemalloc.stop()
    assert not result.get("failed"), result
    followed = result["followed"]
    assert followed["rounds"] >= 3000 and followed["status"] == "Completed"
    # every event once: each stream's lines in order, none twice (the forward tokens), all of them
    assert shown.next_step == {1: 3501, 2: 3501} and shown.log_lines == 2 * 3499
    # the last step's lines came one read after Completed (one poll later), and one more read found nothing new
    assert plugin.slept == [action_mod.FINAL_POLL, action_mod.FINAL_POLL]
    saved = log_file.read_text().splitlines()
    assert len(saved) == shown.log_lines and saved[:2] == ["[algo-1] step 2 loss=0.02;", "[algo-2] step 2 loss=0.02;"]
    expected = [f"[algo-{h}] step {s} loss=0.{s % 97:02d};" for s in range(3482, 3501) for h in (1, 2)]
    assert saved[-len(expected):] == expected
    status = list(shown)
    assert status[:2] == ["Starting - Preparing the instances for training",
                          "Training - Training image download completed."]
    assert status[-3:-1] == ["Completed - Training job completed", "status Completed"]
    assert shown.status_before_last_line == len(status) - 3   # the end is told after the last line
    assert status[-1] == f"{shown.log_lines} log lines saved in {log_file}"
    assert len(followed["tail"]) == action_mod.TAIL_LINES and followed["tail"][-1] == expected[-1]
    assert plugin.module_calls == [False, True]   # created without waiting, then the result of the ended job
    growth = samples[1] - samples[0]
    assert growth < 64 * 1024, f"memory grew by {growth} bytes between round 500 and round 3,000"


def test_a_round_caps_its_lines_and_the_next_goes_on_from_the_cursor() -> None:
    job = SimulatedJob("cifar10-002", steps=10**6)
    for _ in range(30):
        job.describe_training_job(job.name)
    first = progress.look(job, round_params({"name": job.name, "limit": 10}), sleep=lambda s: None)
    assert first["more"] and len(first["lines"]) == 10
    second = progress.look(job, round_params({"name": job.name, "limit": 1000, "cursor": first["cursor"],
                                                           "seen": first["seen"]}), sleep=lambda s: None)
    steps = [int(x.split()[1]) for x in first["lines"] + second["lines"]]
    assert steps == list(range(2, 2 + 10 + len(second["lines"])))
    assert second["messages"] == []     # the transitions were told in the first round


def test_a_quiet_job_waits_the_round_out_then_returns_nothing_new() -> None:
    job = SimulatedJob("cifar10-003", steps=10**6)
    seen = {"transitions": 2, "status": "InProgress"}
    job.describe_training_job = lambda name: {"TrainingJobStatus": "InProgress", "SecondaryStatusTransitions": [{}, {}]}
    ticks = iter(range(0, 1000))
    slept = []
    out = progress.look(job, round_params({"name": job.name, "seen": seen, "timeout": 20}),
                        sleep=slept.append, clock=lambda: next(ticks))
    assert out["messages"] == [] and out["lines"] == [] and not out["terminal"]
    assert slept and all(0 <= s <= AwsBackend.look_seconds for s in slept) and out["status"] == "InProgress"


def test_a_job_past_wait_timeout_fails_naming_it() -> None:
    job = SimulatedJob("cifar10-004", steps=10**9)
    plugin = plugin_for(job, None, [], wait_timeout=90)
    ticks = iter(range(0, 10**6, 30))
    plugin.clock = lambda: next(ticks)
    with pytest.raises(AnsibleActionFail, match=r"still InProgress after wait_timeout=90s .*raise wait_timeout"):
        plugin.run(task_vars={})


def test_check_mode_and_no_follow_run_the_module_as_it_is() -> None:
    job = SimulatedJob("cifar10-005", steps=3)
    plugin = plugin_for(job, None, [], follow=False)
    plugin._module = lambda task_vars, args: {"changed": False, "args": args}
    result = plugin.run(task_vars={})
    assert "follow" not in result["args"] and "follow_interval" not in result["args"] and "followed" not in result


def test_the_local_container_log_is_read_from_byte_offsets(tmp_path: Path) -> None:
    (tmp_path / "algo-1.log").write_bytes(b"one\ntwo\nthr")
    (tmp_path / "algo-1-server.log").write_bytes(b"not the container log\n")
    lines, cursor, more = local_logs.local_read(str(tmp_path), {}, 100, final=False)
    assert lines == ["one", "two"] and not more      # a line without its newline waits
    with open(tmp_path / "algo-1.log", "ab") as fh:
        fh.write(b"ee\nfour")
    lines, cursor, _ = local_logs.local_read(str(tmp_path), cursor, 100, final=False)
    assert lines == ["three"]
    lines, cursor, _ = local_logs.local_read(str(tmp_path), cursor, 100, final=True)
    assert lines == ["four"]                          # the job has ended: its last words are shown
    assert local_logs.local_read(str(tmp_path), cursor, 100, final=True)[0] == []


def test_tuning_news_says_counts_and_best_objective_on_each_change() -> None:
    record = {"HyperParameterTuningJobStatus": "InProgress",
              "TrainingJobStatusCounters": {"Completed": 1, "InProgress": 1, "NonRetryableError": 0, "Stopped": 0}}
    first, seen = logs.tuning_news(record, {})
    assert first == ["InProgress: 1 completed, 1 in progress, 0 stopped, 0 failed; no objective value yet"]
    assert logs.tuning_news(record, seen) == ([], seen)
    record["BestTrainingJob"] = {"TrainingJobName": "t-002", "FinalHyperParameterTuningJobObjectiveMetric": {
        "MetricName": "validation-accuracy", "Value": 0.41}}
    record["TrainingJobStatusCounters"].update(Completed=2, InProgress=0, NonRetryableError=1)
    news, _ = logs.tuning_news(record, seen)
    assert news == ["InProgress: 2 completed, 0 in progress, 0 stopped, 1 failed; best validation-accuracy 0.41 "
                    "(t-002)"]


def test_metric_definitions_over_the_log_give_the_series_as_sagemaker_records_them(tmp_path: Path) -> None:
    definitions = [{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+);"},
                   {"name": "train-loss", "regex": "train-loss=([0-9.]+);"},
                   {"name": "never", "regex": "never=([0-9.]+)"}]
    lines = ["epoch 1 train-loss=2.1; validation-accuracy=0.12;", "noise", "train-loss=1.7;",
             "epoch 2 train-loss=1.5; validation-accuracy=0.25;", "validation-accuracy=.;"]
    series, cut = curves.metric_series(lines, definitions)
    assert series == {"validation-accuracy": [0.12, 0.25], "train-loss": [2.1, 1.7, 1.5]} and not cut
    two_instances = [f"[algo-{h}] validation-accuracy={h / 10 + n / 100:.2f};" for n in range(3) for h in (1, 2)]
    assert curves.metric_series(curves.first_instance(two_instances), definitions)[0] == {
        "validation-accuracy": [0.1, 0.11, 0.12]}
    (tmp_path / "sagemaker").mkdir()
    (tmp_path / "sagemaker" / curves.METRICS_JSON).write_text(
        '{"job": "j-1", "mode": "local", "metrics": {"validation-accuracy": [0.12, 0.25]}}')
    assert curves.report_lines(tmp_path / "sagemaker")[-1] == "| validation-accuracy | 2 | 0.12 | 0.25 | 0.12 | 0.25 |"
    (tmp_path / "sagemaker" / curves.CURVES_PNG).write_bytes(b"png")
    link = f"![SageMaker training curves](sagemaker/{curves.CURVES_PNG})"
    assert curves.report_lines(tmp_path / "sagemaker")[-1] == link


def test_every_line_of_a_multi_instance_job_is_labelled_and_streams_go_in_algo_order(tmp_path: Path) -> None:
    job = SimulatedJob("cifar10-006", steps=10**6, hosts=12)
    later = {s: e for s, e in job.streams.items() if "/algo-2-" not in s}
    job.streams = {s: e for s, e in job.streams.items() if "/algo-2-" in s}   # algo-2's stream comes first
    job.describe_training_job(job.name)
    first = progress.look(job, round_params({"name": job.name}), sleep=lambda s: None)
    assert first["lines"] == ["[algo-2] step 2 loss=0.02;"]
    job.streams.update(later)
    second = progress.look(job, round_params({"name": job.name, "cursor": first["cursor"],
                                                           "seen": first["seen"]}), sleep=lambda s: None)
    assert [x.split("]")[0] for x in second["lines"]] == [f"[algo-{h}" for h in range(1, 13)]   # algo-10 after algo-9
    (tmp_path / "algo-2.log").write_bytes(b"alone\n")
    (tmp_path / "algo-10.log").write_bytes(b"ten\n")
    assert local_logs.local_read(str(tmp_path), {}, 100, final=False, hosts=12)[0] == ["[algo-2] alone",
                                                                                       "[algo-10] ten"]
    assert local_logs.local_read(str(tmp_path), {}, 100, final=False, hosts=1)[0] == ["alone", "ten"]
    definitions = [{"name": "acc", "regex": "acc=([0-9.]+)"}]
    mixed = ["acc=0.9 unlabelled", "[algo-2] acc=0.5", "[algo-1] acc=0.1"]
    assert curves.metric_series(curves.first_instance(mixed, 2), definitions)[0] == {"acc": [0.1]}
    assert curves.metric_series(curves.first_instance(mixed[1:]), definitions)[0] == {"acc": [0.1]}
    assert curves.metric_series(curves.first_instance(["acc=0.3"]), definitions)[0] == {"acc": [0.3]}


@pytest.mark.parametrize(("value", "error"), [(-1, r"wait_timeout=-1 is negative"),
                                              ("soon", r"wait_timeout='soon' is not a whole number"),
                                              (1.5, r"wait_timeout=1.5 is not a whole number")])
def test_a_bad_wait_timeout_fails_before_the_module_runs(value: Any, error: str) -> None:
    job = SimulatedJob("cifar10-007", steps=3)
    for follow in (True, False):
        plugin = plugin_for(job, None, [], wait_timeout=value, follow=follow)
        with pytest.raises(AnsibleActionFail, match=error):
            plugin.run(task_vars={})
        assert plugin.module_calls == []


def test_wait_timeout_zero_looks_once_and_fails_rather_than_waiting_a_day() -> None:
    job = SimulatedJob("cifar10-008", steps=50)
    plugin = plugin_for(job, None, [], wait_timeout=0)
    ticks = iter(range(10**6))
    plugin.clock = lambda: next(ticks)
    with pytest.raises(AnsibleActionFail, match=r"still InProgress after wait_timeout=0s \(1 rounds\)"):
        plugin.run(task_vars={})
