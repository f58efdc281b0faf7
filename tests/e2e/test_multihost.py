"""Multi-host training through playbooks/train.yml: one MXNet dist_sync job on two local test hosts
(tests/testhosts, reached over SSH) with the role's default layout (a server and a worker on each host, the
scheduler on the first), on tiny synthetic data, trained to the end.

Real parts: SSH, the DLAMI env layouts of the test-host profiles, MXNet's parameter server (scheduler,
server and workers talking over TCP between the hosts' loopback addresses), the trainer. No GPU: CPU only.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, PlaybookResult, run_playbook
from testhosts.testhosts import HostSpec, LocalHosts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="test hosts need root (namespaces, mounts, loops)")

STATE = ROOT / ".run" / "testhosts" / "pytest-multihost"
SUBNET = "127.0.13"
HOSTS = [HostSpec("mh-venv", "dlami-venv"), HostSpec("mh-conda", "dlami-legacy-conda")]
EPOCHS = 2
# Any process of a training job (scheduler and servers run psnode.py; the brackets keep pgrep from matching itself)
TRAINING_PROCESSES = "training[.](train|launch)|training/(train|psnode)[.]py|import [m]xnet"
TASK = "mxnet_train : {}".format  # task names as the json callback reports them
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"
JOB = {
    "mxnet_train_run": "multihost",
    "mxnet_train_dataset": "synthetic",
    "mxnet_train_synthetic_size": 1024,  # images, sharded between the 2 workers
    "mxnet_train_epochs": EPOCHS,
    "mxnet_train_batch_size": 32,
    "mxnet_train_log_interval": 4,       # batches between progress lines
    "mxnet_train_kvstore": "dist_sync",
    "mxnet_train_scheduler_port": 9291,
    "mxnet_train_port_base": 9300,
    "mxnet_train_poll_interval": 5,      # seconds
    "mxnet_train_env": {"OMP_NUM_THREADS": "1"},
}


@pytest.fixture(scope="module")
def fleet():
    hosts = LocalHosts(STATE, SUBNET)
    hosts.destroy()
    hosts.create(HOSTS)
    yield hosts
    hosts.destroy()


@pytest.fixture(scope="module")
def inventory(fleet: LocalHosts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hosts in group gpu_fleet; the trainer runs in each profile's MXNet env (what role dlami finds)."""
    inv = fleet.inventory("gpu_fleet")
    for host in inv["all"]["children"]["gpu_fleet"]["hosts"].values():
        host["mxnet_train_python"] = f"{host['testhost_env']['prefix']}/bin/python"
    path = tmp_path_factory.mktemp("multihost") / "inventory.yml"
    path.write_text(yaml.safe_dump(inv, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def order(inventory: Path) -> list[str]:
    """The hosts in inventory order: the first runs the scheduler, servers and workers go round-robin."""
    return list(yaml.safe_load(inventory.read_text())["all"]["children"]["gpu_fleet"]["hosts"])


@pytest.fixture(scope="module")
def trained(inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PlaybookResult, Path]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    run = run_playbook("playbooks/train.yml", inventory=inventory,
                       extra_vars={**JOB, "mxnet_train_artifacts_dir": str(artifacts)})
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return run, artifacts


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scheduler_server_and_workers_are_dealt_over_the_hosts(trained, order):
    run, artifacts = trained
    start = TASK("Start the training processes")
    started = {host: [item["item"]["name"] for item in run.results(start, host)["results"]] for host in order}
    # the role's defaults: one server and one worker per host (as the SageMaker MXNet toolkit runs them)
    assert started == {order[0]: ["scheduler", "server-0", "worker-0"], order[1]: ["server-1", "worker-1"]}
    logs = {host: sorted(p.name for p in (artifacts / host).glob("*.log")) for host in order}
    assert logs == {order[0]: ["scheduler.log", "server-0.log", "train.log"],
                    order[1]: ["server-1.log", "train.log"]}


def test_both_workers_train_every_epoch_once_as_one_job(trained, order):
    _, artifacts = trained
    ranks = set()
    for host in order:
        out = artifacts / host
        assert [m["epoch"] for m in _metrics(out / "metrics.jsonl")] == list(range(1, EPOCHS + 1))
        config = json.loads((out / "config.json").read_text())
        assert config["kvstore"] == "dist_sync"
        assert config["extra"]["num_workers"] == 2
        ranks.add(config["extra"]["rank"])
        assert json.loads((out / "COMPLETE").read_text())["epochs"] == EPOCHS
        assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((out / "model-symbol.json").read_text())["nodes"]
        assert f"done: {EPOCHS} epochs" in (out / "train.log").read_text()
    assert ranks == {0, 1}


def test_workers_end_with_the_same_model(trained, order):
    """dist_sync: both workers hold the weights of the one server; trained apart, they would differ widely."""
    _, artifacts = trained
    compare = (
        "import sys, mxnet as mx, numpy as np\n"
        "a, b = (mx.nd.load(p) for p in sys.argv[1:3])\n"
        "assert sorted(a) == sorted(b)\n"
        "print(max(float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a))\n"
    )
    params = [str(artifacts / host / "model-0000.params") for host in order]
    # MXNet lives in the training env only; it is never imported by the controller
    out = subprocess.run([str(TRAIN_PYTHON), "-c", compare, *params], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1e-5


def test_progress_shows_while_the_job_runs(trained, order):
    """Each log line is printed (on stderr, stamped with the time it was shown) as it comes: the first epoch's
    line well before the second's, not all of them at the end."""
    run, _ = trained
    shown = re.findall(rf"^(\d\d):(\d\d):(\d\d)\.(\d) {re.escape(order[1])} \| (.*)$", run.stderr, re.MULTILINE)

    def when(pattern: str) -> float:
        h, m, s, tenth, _ = next(x for x in shown if re.search(pattern, x[4]))
        return int(h) * 3600 + int(m) * 60 + int(s) + int(tenth) / 10

    assert shown, run.stderr[-3000:]
    assert when(r"epoch 1/2 ") < when(r"epoch 2/2 "), shown
    followed = run.results(TASK("Follow the training until every process has ended"), order[1])
    assert followed["rounds"] >= 2 and any("epoch 2/2" in line for line in followed["tail"])


def test_finished_job_runs_again_as_a_no_op(trained, inventory: Path, fleet: LocalHosts, order):
    _, artifacts = trained
    again = run_playbook("playbooks/train.yml", inventory=inventory,
                         extra_vars={**JOB, "mxnet_train_artifacts_dir": str(artifacts)})
    assert again.rc == 0, again.stdout[-4000:]
    assert again.changed == 0, [(n, h) for n, h, r in again.all_results() if r.get("changed")]
    assert all(again.results(TASK("Start the training processes"), h).get("skipped") for h in order)
    for host in order:
        left = fleet.ssh(host, f"pgrep -a -f '{TRAINING_PROCESSES}' || true").stdout.strip()
        assert left == ""


def test_failed_worker_stops_the_whole_job_on_every_host(trained, inventory: Path, fleet: LocalHosts, order):
    """A worker that dies (here: a flag the trainer refuses) ends the job; the scheduler and the server, which
    would wait for it forever, are stopped on every host, and the play fails naming the worker."""
    _, artifacts = trained
    broken = {**JOB, "mxnet_train_run": "multihost-broken", "mxnet_train_extra_args": ["--no-such-flag"],
              "mxnet_train_artifacts_dir": str(artifacts / "broken")}
    run = run_playbook("playbooks/train.yml", inventory=inventory, extra_vars=broken)
    assert run.rc != 0
    assert run.failed == 2
    failure = run.results(TASK("Fail with the reason"), order[0])["msg"]
    assert re.search(r"Training processes failed: .*worker-[01] \(rc=2", failure), failure
    assert "--no-such-flag" in failure
    for host in order:
        left = fleet.ssh(host, f"pgrep -a -f '{TRAINING_PROCESSES}' || true").stdout.strip()
        assert left == ""
