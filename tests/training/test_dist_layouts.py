"""kvstore dist_sync in every layout of 1 to 3 workers and 1 to 3 parameter servers, on loopback.

Each layout trains a tiny network for one short epoch through `training.launch --local` and must end with the
same parameters, bit for bit, on every worker. MXNet maps kvstore keys to servers in a way that broke with two or
more servers for large keys (training/dist.py), so the server count matters as much as the worker count. A run
that hangs is killed with its whole process group and fails. Select these alone with `-m dist_layouts`.

The selected layouts run two at a time, largest first (a job's processes spend part of their time waiting on each
other, and a one-worker job keeps one core busy at most); each test then checks its own layout's result.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import ROOT, SYNTHETIC_SIZE, train_env

from training import checkpoint, launch

LAYOUTS = [(workers, servers) for workers in (1, 2, 3) for servers in (1, 2, 3)]
RUN_TIMEOUT = 180  # seconds for one layout, start to finish; a healthy run takes a fraction of it
SIDE_BY_SIDE = 2  # layouts running at the same time
TRAIN_ARGS = ["--model", "resnet8_v1", "--base-width", "4", "--batch-size", "16", "--epochs", "1",
              "--limit-batches", "2", "--log-interval", "0", "--keep-checkpoints", "1"]


class Jobs:
    """training.launch --local jobs, each on a free port in its own process group, so that a job can be killed
    whole (scheduler, servers and workers) when it overruns its time or the test session ends."""

    def __init__(self) -> None:
        self.running: set[subprocess.Popen] = set()
        self.started: list[int] = []  # process group ids, in order
        self.lock = threading.Lock()

    def run(self, workers: int, servers: int, train_args: list[str], timeout: int = RUN_TIMEOUT) -> tuple[int, str]:
        """(exit status, output) of one job; fails the test when the job is still running after timeout seconds."""
        cmd = [sys.executable, "-m", "training.launch", "--local", "--num-workers", str(workers), "--num-servers",
               str(servers), "--scheduler-port", str(launch.free_port()), "--", *train_args]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=train_env(threads=1), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        with self.lock:
            self.running.add(proc)
            self.started.append(proc.pid)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            output, _ = proc.communicate()
            pytest.fail(f"{workers} workers x {servers} servers: still running after {timeout} s, killed\n{output}")
        finally:
            with self.lock:
                self.running.discard(proc)
        return proc.returncode, output

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the job's own process group (start_new_session)

    def kill_all(self) -> None:
        with self.lock:
            for proc in self.running:
                self.kill(proc)


def _params(path: Path) -> dict[str, np.ndarray]:
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


@pytest.fixture(scope="module")
def layout_runs(request: pytest.FixtureRequest, synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Start every selected layout (two at a time, largest first); maps (workers, servers) to (output folder,
    future of (exit status, output))."""
    selected = {(item.callspec.params["workers"], item.callspec.params["servers"]) for item in request.session.items
                if getattr(item, "originalname", "") == "test_layout_ends_with_identical_parameters_on_every_worker"}
    jobs, pool = Jobs(), ThreadPoolExecutor(SIDE_BY_SIDE)
    runs: dict[tuple[int, int], tuple[Path, Future]] = {}
    for workers, servers in sorted(selected, reverse=True):
        out = tmp_path_factory.mktemp(f"layout-{workers}w-{servers}s")
        args = ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
                *TRAIN_ARGS, "--output-dir", str(out)]
        runs[workers, servers] = out, pool.submit(jobs.run, workers, servers, args)
    yield runs
    for _, future in runs.values():
        future.cancel()  # those not started yet
    jobs.kill_all()  # those still running (an interrupted session)
    pool.shutdown(wait=True)


@pytest.mark.dist_layouts
@pytest.mark.parametrize(("workers", "servers"), LAYOUTS, ids=[f"{w}w-{s}s" for w, s in LAYOUTS])
def test_layout_ends_with_identical_parameters_on_every_worker(workers: int, servers: int, layout_runs) -> None:
    out, future = layout_runs[workers, servers]
    status, output = future.result()
    assert status == 0, output
    params = []
    for rank in range(workers):
        folder = out / f"worker-{rank}"
        assert (folder / "COMPLETE").is_file(), output
        assert checkpoint.checkpoints(folder / "checkpoints") == [1]
        params.append(_params(folder / "checkpoints" / "epoch-0001" / checkpoint.PARAMS_FILE))
    assert len(params[0]) > 10
    for rank, theirs in enumerate(params[1:], start=1):
        assert theirs.keys() == params[0].keys()
        unequal = [name for name in params[0] if not np.array_equal(params[0][name], theirs[name])]
        assert not unequal, f"worker {rank} differs from worker 0 in {unequal}"


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.dist_layouts
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_a_job_past_its_time_fails_and_is_killed_whole(synthetic_dir: Path, tmp_path: Path) -> None:
    jobs = Jobs()
    args = ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TRAIN_ARGS, "--output-dir", str(tmp_path)]
    with pytest.raises(pytest.fail.Exception, match="still running after 2 s, killed"):
        jobs.run(2, 2, args, timeout=2)
    (pgid,) = jobs.started
    deadline = time.time() + 10
    while _group_members(pgid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _group_members(pgid) and not jobs.running
