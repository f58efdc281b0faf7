"""The mxnet_train_follow action plugin's loop, with the remote calls mocked (a simulated host answers in place of
the mxnet_train_progress and async_status modules, so that thousands of rounds take a second): rounds without
recursion, flat memory over 5,000 rounds, exit statuses read once a process ends, a failure on one host stopping
the others. The module itself and the whole role run for real in tests/e2e (test_multihost, test_kills) and in the
mxnet_train molecule scenario."""
from __future__ import annotations

import gc
import importlib.util
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleActionFail
from helpers import ROOT

SPEC = importlib.util.spec_from_file_location(
    "mxnet_train_follow_under_test", ROOT / "roles/mxnet_train/action_plugins/mxnet_train_follow.py")
follow = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(follow)


class SimulatedHost:
    """A host whose processes write one log line per round and end at given rounds with given exit codes."""

    def __init__(self, ends: dict[str, tuple[int, int]], status_lag: int = 0) -> None:
        self.ends = ends                  # name -> (round it ends at, rc)
        self.status_lag = status_lag      # rounds between a process's end and its async status being written
        self.round = 0
        self.progress_calls = 0
        self.status_calls: list[str] = []

    def progress(self, task_vars, args, running, shown):
        self.progress_calls += 1
        self.round += 1
        now_running = [n for n in running if self.round < self.ends[n][0]]
        ended = [n for n in running if n not in now_running]
        count = int(shown.get("train", 0))
        return {"changed": False, "running": now_running, "ended": ended, "waited": 0.0,
                "lines": [f"train: batch {count + 1} loss 0.{count % 97:02d}"], "counts": {"train": count + 1}}

    def job_status(self, task_vars, jid, async_dir):
        name = jid.removeprefix("jid-")
        self.status_calls.append(name)
        end, rc = self.ends[name]
        if self.round < end + self.status_lag:
            return {"finished": False, "started": True}
        return {"finished": True, "rc": rc, **({"msg": "non-zero return code"} if rc else {})}


def action(host: SimulatedHost, task_uuid: str = "task-1", **args) -> object:
    task = SimpleNamespace(
        args={"pid_dir": "/run/pids", "jobs": {n: f"jid-{n}" for n in host.ends}, "logs": {"train": "/log"},
              "follow": "train", "interval": 30, "run": "unit", **args},
        async_val=0, check_mode=False, action="mxnet_train_follow", _uuid=task_uuid,
        get_play=lambda: SimpleNamespace(_uuid="play-1"))
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))
    plugin = follow.ActionModule(task, connection, SimpleNamespace(), None, None, None)
    plugin._progress = host.progress
    plugin._job_status = host.job_status
    plugin._remote_expand_user = lambda path, **kw: path
    plugin.get_shell_option = lambda option, default=None: default
    plugin._remove_tmp_path = lambda path, **kw: None
    return plugin


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(follow.display, "display", lambda *a, **k: None)


def run(plugin, host="h1") -> dict:
    return plugin.run(task_vars={"inventory_hostname": host})


def test_five_thousand_rounds_without_recursion_and_with_flat_memory() -> None:
    host = SimulatedHost({"train": (6001, 0), "server-0": (6001, 0)})
    plugin = action(host)
    samples = []
    real = host.progress

    def measured(*a):
        if host.round in (1000, 5500):
            gc.collect()
            samples.append(tracemalloc.get_traced_memory()[0])
        return real(*a)

    host.progress = measured
    plugin._progress = measured
    tracemalloc.start()
    try:
        result = run(plugin)
    finally:
        tracemalloc.stop()
    assert not result.get("failed"), result
    assert result["rounds"] == host.progress_calls == 6001 >= 5000
    assert result["shown"] == {"train": 6001}
    assert len(result["tail"]) == follow.TAIL_LINES and result["tail"][-1] == "train: batch 6001 loss 0.83"
    assert sorted(host.status_calls) == ["server-0", "train"]    # each exit status read once, when it ended
    growth = samples[1] - samples[0]
    assert growth < 64 * 1024, f"memory grew by {growth} bytes between round 1,000 and round 5,500"


def test_an_ended_process_whose_status_is_not_written_yet_is_asked_again() -> None:
    host = SimulatedHost({"train": (3, 0)}, status_lag=2)
    result = run(action(host))
    assert not result.get("failed"), result
    assert host.status_calls == ["train", "train", "train"]
    assert result["running"] == []


def test_a_failed_process_fails_its_host_and_stops_the_other_hosts_next_round(tmp_path: Path) -> None:
    failing = SimulatedHost({"train": (4, 0), "worker-1": (4, 137)})
    result = run(action(failing), "h1")
    assert result["failed"] and "h1 worker-1 (rc=137" in result["msg"], result
    stop_files = list(tmp_path.glob("dlfleet-follow-*.stop"))
    assert len(stop_files) == 1
    other = SimulatedHost({"train": (10_000, 0)})
    stopped = run(action(other), "h2")
    assert stopped["failed"] and "h1 worker-1 (rc=137" in stopped["msg"], stopped
    assert "cannot finish on h2 either" in stopped["msg"]
    assert other.progress_calls == 0
    # another task (a new play, or the role included again) is not stopped by that file
    fresh = SimulatedHost({"train": (2, 0)})
    assert not run(action(fresh, task_uuid="task-2"), "h2").get("failed")


def test_a_job_that_never_reports_its_end_fails_past_the_time_bound() -> None:
    host = SimulatedHost({"train": (10**9, 0)})
    plugin = action(host, max_seconds=90)
    ticks = iter(range(0, 10**6, 30))
    plugin.clock = lambda: next(ticks)
    with pytest.raises(AnsibleActionFail, match=r"still running after \d+ s .*past the jobs' time limit: train"):
        run(plugin)


@pytest.mark.parametrize(("args", "fragment"), [({"interval": 0}, "interval=0 must be at least 1"),
                                                ({"interval": "30s"}, "'interval' is of type .* convert to int"),
                                                ({"jobs": {}}, "needs pid_dir and jobs")])
def test_bad_arguments_are_refused(args: dict, fragment: str) -> None:
    with pytest.raises(AnsibleActionFail, match=fragment):
        run(action(SimulatedHost({"train": (2, 0)}), **args))
