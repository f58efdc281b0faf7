"""Fixtures for the training package's tests (run in the training venv: .venv-train/bin/pytest tests/training)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A tiny network and batch: the tests exercise the real code paths in seconds on two shared cores.
TINY = ["--model", "resnet8_v1", "--base-width", "8", "--batch-size", "64", "--log-interval", "0"]
SYNTHETIC_SIZE = 1500  # training images of the shared synthetic data set (test split: 300)


def train_env(threads: int = 2, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "DMLC_"))}
    env.update({"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_module(module: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT,
               timeout: int = 900) -> subprocess.CompletedProcess:
    """python -m <module> <args> with the training venv's interpreter; output captured as text. The timeout only
    guards against a hang: a 3-epoch run that takes 20 s alone took over 240 s on 2 cores at load 13."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env or train_env(), text=True,
                          capture_output=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CIFAR-10 set in the binary format, made by the CLI."""
    out = tmp_path_factory.mktemp("synthetic")
    result = run_module("training.data", ["synthetic", "--out", str(out), "--size", str(SYNTHETIC_SIZE)])
    assert result.returncode == 0, result.stderr
    return out
