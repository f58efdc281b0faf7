"""kvstore dist_sync on loopback: 1 scheduler, 1 server, 2 workers started by training.launch --local."""
from __future__ import annotations

import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import SYNTHETIC_SIZE, TINY, run_module, train_env

from training import checkpoint, launch, train


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
