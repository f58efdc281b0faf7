"""kvstore dist_sync on loopback: 1 scheduler, 1 server, 2 workers started by training.launch --local."""
from __future__ import annotations

import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import SYNTHETIC_SIZE, TINY, run_module, train_env

from training import checkpoint, dist, launch, train


def _params(path: Path) -> dict[str, np.ndarray]:
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def test_two_workers_one_server_end_with_equal_parameters(synthetic_dir: Path, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = ["--local", "--num-workers", "2", "--num-servers", "1", "--",
            "--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TINY, "--epochs", "2", "--limit-batches", "6", "--output-dir", str(out), "--checkpoint-dir", str(ckpt)]
    result = run_module("training.launch", args, env=train_env(threads=1))
    assert result.returncode == 0, result.stdout + result.stderr
    workers = [out / "worker-0", out / "worker-1"]
    configs = [json.loads((w / "config.json").read_text()) for w in workers]
    assert sorted(c["extra"]["rank"] for c in configs) == [0, 1]
    assert all(c["extra"]["num_workers"] == 2 and c["kvstore"] == "dist_sync" for c in configs)
    # each worker trained on its own shard: their training metrics differ ...
    histories = [[json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()] for w in workers]
    assert [m["epoch"] for m in histories[0]] == [1, 2] == [m["epoch"] for m in histories[1]]
    assert histories[0][0]["train_loss"] != histories[1][0]["train_loss"]
    # ... but the model they hold is the same, bit for bit, after every epoch and in the export
    for epoch in (1, 2):
        assert checkpoint.checkpoints(ckpt / "worker-0") == checkpoint.checkpoints(ckpt / "worker-1") == [1, 2]
        a = _params(ckpt / "worker-0" / f"epoch-{epoch:04d}" / checkpoint.PARAMS_FILE)
        b = _params(ckpt / "worker-1" / f"epoch-{epoch:04d}" / checkpoint.PARAMS_FILE)
        assert a.keys() == b.keys() and len(a) > 10
        unequal = [name for name in a if not np.array_equal(a[name], b[name])]
        assert not unequal, f"epoch {epoch}: workers differ in {unequal}"
    first = _params(ckpt / "worker-0" / "epoch-0001" / checkpoint.PARAMS_FILE)
    last = _params(ckpt / "worker-0" / "epoch-0002" / checkpoint.PARAMS_FILE)
    assert any(not np.array_equal(first[n], last[n]) for n in first)  # and it did train
    assert histories[0][-1]["val_acc"] == histories[1][-1]["val_acc"]
    exported = [_params(w / "model-0000.params") for w in workers]
    assert all(np.array_equal(exported[0][n], exported[1][n]) for n in exported[0])


def test_worker_arguments_and_environment() -> None:
    assert launch.worker_args(["--epochs", "1"]) == ["--epochs", "1", "--kvstore", "dist_sync"]
    assert launch.worker_args(["--kvstore", "local"]) == ["--kvstore", "dist_sync"]
    assert launch.worker_args(["--kvstore=dist_device_sync"]) == ["--kvstore=dist_device_sync"]
    env = launch.role_env("server", "10.0.0.5", 9091, 4, 2, node_host="10.0.0.7", base={})
    assert env == {"DMLC_ROLE": "server", "DMLC_PS_ROOT_URI": "10.0.0.5", "DMLC_PS_ROOT_PORT": "9091",
                   "DMLC_NUM_WORKER": "4", "DMLC_NUM_SERVER": "2", "DMLC_NODE_HOST": "10.0.0.7"}


def test_dist_kvstore_without_a_job_is_a_clear_error(synthetic_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    with pytest.raises(SystemExit, match=r"training\.launch"):
        train.main(["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size",
                    str(SYNTHETIC_SIZE), *TINY, "--epochs", "1", "--kvstore", "dist_sync", "--output-dir",
                    str(tmp_path)], env={})


def test_kvstore_keys_are_small_consecutive_and_spread_over_servers() -> None:
    """MXNet 1.9.1 picks server (key * 9973) % num_servers in a C int: keys must stay below 2**31 / 9973."""
    layout = dist.key_layout(num_trainable=62, num_stats=40)
    keys = [dist.RESUME_KEY, *layout["param"], *layout["grad"], *layout["stat"]]
    assert keys == list(range(len(keys))) and len(layout["param"]) == 102 and len(layout["stat"]) == 40
    assert max(keys) * 9973 < 2**31 and dist.KEY_LIMIT * 9973 >= 2**31 > (dist.KEY_LIMIT - 1) * 9973
    for servers in (2, 3, 4):
        load = np.bincount([(k * 9973) % servers for k in keys], minlength=servers)
        assert load.max() - load.min() <= 1  # consecutive keys take the servers in turn
    with pytest.raises(ValueError, match="kvstore keys"):
        dist.key_layout(dist.KEY_LIMIT, 0)


@pytest.mark.parametrize(("raised", "code", "message"), [
    (RuntimeError("boom"), 1, "RuntimeError: boom"),
    (SystemExit("workers disagree"), 1, "workers disagree"),
    (SystemExit(3), 3, "exiting with 3"),
    (KeyboardInterrupt(), 130, "exiting with 130"),
])
def test_failed_dist_worker_exits_at_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                          raised: BaseException, code: int, message: str) -> None:
    """A normal exit would wait in the kvstore's destructor for the other workers: the job hung instead of failing."""
    exits = []
    monkeypatch.setattr(dist.DistSync, "created", True)
    monkeypatch.setattr(dist.os, "_exit", exits.append)
    with dist.fail_fast():
        raise raised
    assert exits == [code] and message in capsys.readouterr().err


def test_without_a_dist_kvstore_errors_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist.DistSync, "created", False)
    with pytest.raises(RuntimeError, match="boom"), dist.fail_fast():
        raise RuntimeError("boom")
    monkeypatch.setattr(dist.DistSync, "created", True)
    with pytest.raises(SystemExit), dist.fail_fast():  # a successful exit is not a failure
        raise SystemExit(0)
