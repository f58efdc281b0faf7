"""Kills: no finished epoch is lost when training dies under playbooks/train.yml.

- The trainer gets SIGKILL in the middle of an epoch: the play fails; running it again finishes the run.
- The host drops off mid-play (its init is killed, as in a crash: sshd and the trainer die with it): the play
  fails with the host unreachable; once the host is back with its disk, running the play again finishes.
- A spot interruption: the job is killed on host A, its checkpoint location is carried to host B (as an S3
  sync or a re-attached EBS volume would carry it), and the same job started on B resumes there.

In each case metrics.jsonl ends with every epoch exactly once, and the epochs finished before the kill keep the
values recorded before the kill (wall times included, which a redone epoch would change).

Real parts: two local test hosts (tests/testhosts) reached over SSH, the dlami-venv profile's MXNet env, the
role mxnet_train, the trainer on tiny generated data (ResNet-8 at a quarter of the width). No GPU: CPU only.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT, PlaybookResult, run_playbook
from testhosts.testhosts import HostSpec, LocalHosts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="test hosts need root (namespaces, mounts, loops)")

STATE = ROOT / ".run" / "testhosts" / "pytest-kills"
SUBNET = "127.0.14"
HOST_A, HOST_B = "kill-a", "kill-b"
SIGKILL_RUN, DROPOFF_RUN = "sigkill", "dropoff"
CHECKPOINTS = "/home/ubuntu/checkpoints"   # each run's checkpoint location on a host: <this>/<run>/<process>
# Epochs of each run. B is crashed first and A killed after that, so A's run is longer: however far A got while
# B was being crashed, an epoch of A is still ahead to be killed in (with equal runs A could finish first).
RUN_EPOCHS = {SIGKILL_RUN: 5, DROPOFF_RUN: 3}
BATCHES = 32  # per epoch: 512 images / 16
JOB = {
    "mxnet_train_dataset": "synthetic",
    "mxnet_train_synthetic_size": 512,   # training images
    "mxnet_train_model": "resnet8_v1",
    "mxnet_train_extra_args": ["--base-width", "4"],  # channels of the first stage (16 in the paper)
    "mxnet_train_batch_size": 16,
    "mxnet_train_lr": 0.05,
    "mxnet_train_log_interval": 4,       # batches between progress lines: 8 an epoch, the kill lands inside one
    "mxnet_train_kvstore": "local",
    "mxnet_train_poll_interval": 2,      # seconds
    "mxnet_train_env": {"OMP_NUM_THREADS": "1"},
    "mxnet_train_checkpoint_dir": CHECKPOINTS + "/{{ mxnet_train_run }}",
}
SUMMARY_RE = re.compile(r"^epoch (\d+)/(\d+)  train-loss", re.M)
PROGRESS_RE = re.compile(r"^epoch (\d+) batch (\d+)/(\d+) ", re.M)


@pytest.fixture(scope="module")
def fleet() -> Iterator[LocalHosts]:
    hosts = LocalHosts(STATE, SUBNET)
    hosts.destroy()
    hosts.create([HostSpec(HOST_A, "dlami-venv"), HostSpec(HOST_B, "dlami-venv")])
    yield hosts
    hosts.destroy()


def _inventory(fleet: LocalHosts, path: Path, runs: dict[str, str]) -> Path:
    """The hosts named in `runs`, each training the run given there, in the MXNet env of its profile."""
    inv = fleet.inventory("gpu_fleet")
    hosts = inv["all"]["children"]["gpu_fleet"]["hosts"]
    for name in list(hosts):
        if name not in runs:
            del hosts[name]
            continue
        hosts[name]["mxnet_train_run"] = runs[name]
        hosts[name]["mxnet_train_epochs"] = RUN_EPOCHS[runs[name]]
        hosts[name]["mxnet_train_python"] = f"{hosts[name]['testhost_env']['prefix']}/bin/python"
    path.write_text(yaml.safe_dump(inv))
    return path


def _run_dir(fleet: LocalHosts, host: str, run: str) -> Path:
    """The run directory of the role on the host, read from the controller through the host's upper layer."""
    return fleet.host_dir(host) / "upper" / "home" / "ubuntu" / "dlfleet" / "runs" / run


def _metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _play(inventory: Path, artifacts: Path) -> PlaybookResult:
    # a short SSH timeout: a host that is gone shows as unreachable soon
    return run_playbook("playbooks/train.yml", inventory=inventory, timeout=600, env={"ANSIBLE_TIMEOUT": "10"},
                        extra_vars={**JOB, "mxnet_train_artifacts_dir": str(artifacts)})


def _kill_mid_epoch(fleet: LocalHosts, host: str, run: str, play: Future, kill: Callable[[], Any],
                    at_least: int = 1) -> tuple[list[dict[str, Any]], str]:
    """Once at least `at_least` epochs are in metrics.jsonl and the next epoch is under way (not past its
    middle), `kill`. Returns the metrics and the log as they were once the trainer was dead."""
    run_dir = _run_dir(fleet, host, run)
    log = run_dir / "logs" / "train.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert not play.done(), f"the play ended before the kill:\n{play.result().stdout[-3000:]}"
        text = log.read_text() if log.exists() else ""
        done = len(_metrics(run_dir / "output" / "metrics.jsonl"))
        under_way = [int(b) for e, b, _ in PROGRESS_RE.findall(text) if int(e) == done + 1]
        if at_least <= done < RUN_EPOCHS[run] and under_way and max(under_way) <= BATCHES // 2:
            kill()
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{host} did not reach epoch {at_least + 1} in time:\n{log.read_text()[-2000:]}")
    time.sleep(1)   # the trainer is gone: whatever it wrote is on disk
    return _metrics(run_dir / "output" / "metrics.jsonl"), log.read_text()


def _assert_killed_inside_an_epoch(log: str, finished: int) -> None:
    """The last line the dead trainer wrote is a progress line of the epoch after the finished ones."""
    last = PROGRESS_RE.findall(log)[-1]
    assert int(last[0]) == finished + 1 and int(last[1]) < int(last[2]), last
    assert [int(e) for e, _ in SUMMARY_RE.findall(log)] == list(range(1, finished + 1))


def _assert_resumed(final: list[dict[str, Any]], before: list[dict[str, Any]], log: str, location: str,
                   epochs: int) -> None:
    """Every epoch once, the epochs finished before the kill with the values recorded then (wall times included,
    which an epoch trained again would change), and the resume from the last of them."""
    assert [m["epoch"] for m in final] == list(range(1, epochs + 1))
    assert before and final[:len(before)] == before
    assert f"resumed from {location}/epoch-{len(before):04d}: {len(before)} of {epochs} epochs already done" in log, \
        log[-3000:]


def _sigkill_trainer(run: str) -> None:
    """SIGKILL, straight from this machine (no SSH round trip: the kill lands where the log says), the trainer
    of `run`: the process whose command line is `python -m training.train ... --output-dir .../runs/<run>/...`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"training.train" in argv and any(f"/runs/{run}/".encode() in arg for arg in argv):
            found.append(int(entry.name))
    assert len(found) == 1, found
    os.kill(found[0], signal.SIGKILL)


def _crash(fleet: LocalHosts, host: str) -> None:
    """Kill the host's init: the kernel ends every process of its PID namespace (sshd, the trainer, the play's
    async wrapper), as when a machine loses power. Its disk (the overlay's upper layer) stays."""
    init_pid = json.loads((fleet.host_dir(host) / "host.json").read_text())["init_pid"]
    os.kill(init_pid, signal.SIGKILL)


@dataclass
class Scenario:
    first: PlaybookResult                      # the play during which both kills happened
    again: PlaybookResult                      # the same play run again on both hosts
    on_b: PlaybookResult                       # the job killed on A, started on B
    before: dict[str, list[dict[str, Any]]]    # metrics.jsonl of each killed run, once its trainer was dead
    logs: dict[str, str]                       # train.log of each killed run, once its trainer was dead
    artifacts: Path                            # results of `again`
    spot_artifacts: Path                       # results of `on_b`


@pytest.fixture(scope="module")
def scenario(fleet: LocalHosts, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """One play trains run `sigkill` on A and run `dropoff` on B. B is crashed in the middle of an epoch (first,
    so that A's failure does not stop B's job before B drops off), then A's trainer gets SIGKILL in the middle of
    an epoch. B is started again, A's checkpoint location of `sigkill` is carried to B, the play runs again on
    both, and then `sigkill` is started on B."""
    tmp = tmp_path_factory.mktemp("kills")
    runs = {HOST_A: SIGKILL_RUN, HOST_B: DROPOFF_RUN}
    inventory = _inventory(fleet, tmp / "inventory.yml", runs)
    artifacts, spot_artifacts = tmp / "artifacts", tmp / "spot-artifacts"
    before, logs = {}, {}
    with ThreadPoolExecutor(1) as pool:
        play = pool.submit(_play, inventory, artifacts)
        before[DROPOFF_RUN], logs[DROPOFF_RUN] = _kill_mid_epoch(fleet, HOST_B, DROPOFF_RUN, play,
                                                                 lambda: _crash(fleet, HOST_B))
        before[SIGKILL_RUN], logs[SIGKILL_RUN] = _kill_mid_epoch(
            fleet, HOST_A, SIGKILL_RUN, play, lambda: _sigkill_trainer(SIGKILL_RUN))
        first = play.result()
    assert not fleet.running(HOST_B)
    assert fleet.create([HostSpec(HOST_B, "dlami-venv", address=fleet.describe(HOST_B)["address"])])[0]["created"]

    # The spot interruption: the job's checkpoint location, as the kill left it on A, goes to B.
    location = f"{CHECKPOINTS}/{SIGKILL_RUN}"
    pack = subprocess.run(fleet.ssh_command(HOST_A, [f"tar -C {location} -cf - ."]), capture_output=True,
                          check=True, timeout=60).stdout
    subprocess.run(fleet.ssh_command(HOST_B, [f"mkdir -p {location} && tar -C {location} -xf -"]),
                   input=pack, check=True, timeout=60)

    again = _play(inventory, artifacts)
    on_b = _play(_inventory(fleet, tmp / "spot.yml", {HOST_B: SIGKILL_RUN}), spot_artifacts)
    return Scenario(first, again, on_b, before, logs, artifacts, spot_artifacts)


def test_sigkill_mid_epoch_then_rerun_loses_no_finished_epoch(scenario: Scenario):
    failures = " ".join(res.get("msg", "") for _, host, res in scenario.first.all_results()
                        if host == HOST_A and res.get("failed"))
    assert "rc=-9" in failures, failures    # the play reports the trainer killed by SIGKILL
    _assert_killed_inside_an_epoch(scenario.logs[SIGKILL_RUN], len(scenario.before[SIGKILL_RUN]))

    assert scenario.again.rc == 0, scenario.again.stdout[-4000:]
    out = scenario.artifacts / HOST_A
    _assert_resumed(_metrics(out / "metrics.jsonl"), scenario.before[SIGKILL_RUN], (out / "train.log").read_text(),
                    f"{CHECKPOINTS}/{SIGKILL_RUN}/train", RUN_EPOCHS[SIGKILL_RUN])
    assert [int(e) for e, _ in SUMMARY_RE.findall((out / "train.log").read_text())] == list(
        range(1, RUN_EPOCHS[SIGKILL_RUN] + 1))
    assert json.loads((out / "COMPLETE").read_text())["epochs"] == RUN_EPOCHS[SIGKILL_RUN]


def test_host_dropping_off_mid_play_then_rerun_loses_no_finished_epoch(scenario: Scenario):
    assert scenario.first.rc != 0
    assert scenario.first.stats(HOST_B).get("unreachable", 0) == 1, scenario.first.stdout[-3000:]
    _assert_killed_inside_an_epoch(scenario.logs[DROPOFF_RUN], len(scenario.before[DROPOFF_RUN]))

    assert scenario.again.rc == 0, scenario.again.stdout[-4000:]
    out = scenario.artifacts / HOST_B
    _assert_resumed(_metrics(out / "metrics.jsonl"), scenario.before[DROPOFF_RUN], (out / "train.log").read_text(),
                    f"{CHECKPOINTS}/{DROPOFF_RUN}/train", RUN_EPOCHS[DROPOFF_RUN])
    assert [int(e) for e, _ in SUMMARY_RE.findall((out / "train.log").read_text())] == list(
        range(1, RUN_EPOCHS[DROPOFF_RUN] + 1))


def test_spot_interruption_resumes_on_another_host_from_the_same_checkpoints(scenario: Scenario):
    assert scenario.on_b.rc == 0, scenario.on_b.stdout[-4000:]
    out = scenario.spot_artifacts / HOST_B
    log_b = (out / "train.log").read_text()
    done_on_a = len(scenario.before[SIGKILL_RUN])
    _assert_resumed(_metrics(out / "metrics.jsonl"), scenario.before[SIGKILL_RUN], log_b,
                    f"{CHECKPOINTS}/{SIGKILL_RUN}/train", RUN_EPOCHS[SIGKILL_RUN])
    # B trained only the epochs A had not finished, and never started at epoch 1
    assert [int(e) for e, _ in SUMMARY_RE.findall(log_b)] == list(range(done_on_a + 1, RUN_EPOCHS[SIGKILL_RUN] + 1))
    assert "epoch 1 batch" not in log_b
