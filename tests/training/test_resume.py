"""Never lose finished work: SIGKILL mid-epoch, rerun, and every finished epoch is kept, each logged once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SYNTHETIC_SIZE, TINY, run_module, train_env

from training import checkpoint, train


def _args(synthetic_dir: Path, out: Path, lr: str = "0.1") -> list[str]:
    return ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TINY, "--epochs", "4", "--limit-batches", "8", "--lr", lr, "--output-dir", str(out), "--log-interval", "1"]


def _metrics(out: Path) -> list[str]:
    return (out / "metrics.jsonl").read_text().splitlines()


def test_sigkill_mid_epoch_then_rerun_keeps_finished_epochs(synthetic_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = _args(synthetic_dir, out)
    proc = subprocess.Popen([sys.executable, "-m", "training.train", *args], cwd=ROOT, env=train_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("epoch 3 batch 3/"):  # epochs 1 and 2 are done, epoch 3 is under way
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    kept = _metrics(out)
    assert [json.loads(m)["epoch"] for m in kept] == [1, 2]
    assert checkpoint.checkpoints(out / "checkpoints") == [1, 2]
    assert not (out / "COMPLETE").exists()

    with pytest.raises(SystemExit, match=r"other settings \(lr\)"):  # a changed command does not resume silently
        train.main(_args(synthetic_dir, out, lr="0.05"), env={})

    result = run_module("training.train", args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stdout and "2 of 4 epochs already done" in result.stdout
    assert "epoch 1 batch" not in result.stdout and "epoch 2 batch" not in result.stdout
    final = _metrics(out)
    assert [json.loads(m)["epoch"] for m in final] == [1, 2, 3, 4]  # every epoch exactly once
    assert final[:2] == kept  # the finished epochs are the ones from before the kill
    assert checkpoint.checkpoints(out / "checkpoints") == [3, 4]  # the newest two are kept
    assert json.loads((out / "COMPLETE").read_text())["epochs"] == 4


def test_half_written_checkpoints_are_ignored_and_cleaned(tmp_path: Path) -> None:
    def write(path: str) -> None:
        Path(path).write_bytes(b"x")

    checkpoint.save(tmp_path, 1, write, write, {"history": []})
    (tmp_path / ".epoch-0002.tmp-123").mkdir()  # killed while writing
    (tmp_path / "epoch-0003").mkdir()  # no state.json: never completed
    (tmp_path / "epoch-0003" / checkpoint.PARAMS_FILE).write_bytes(b"x")
    assert checkpoint.checkpoints(tmp_path) == [1]
    checkpoint.clean_partials(tmp_path)
    assert not (tmp_path / ".epoch-0002.tmp-123").exists()
    _, state = checkpoint.load_state(tmp_path, 1)
    assert state["epoch"] == 1


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.jsonl"
    checkpoint.atomic_write_text(target, "a\n")
    checkpoint.atomic_write_text(target, "b\n")
    assert target.read_text() == "b\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
