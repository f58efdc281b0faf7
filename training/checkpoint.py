"""Atomic files and per-epoch checkpoints.

A checkpoint is a folder ``epoch-NNNN/`` holding ``params`` (network parameters), ``trainer.states`` (optimizer
state such as momentum), and ``state.json`` (epoch, metrics so far, RNG state, run identity). It is written as
``.epoch-NNNN.tmp-PID/`` and renamed into place once every file is flushed to disk, so a reader sees a whole
checkpoint or none. ``state.json`` is written last, and a folder without it is ignored. The newest ``keep``
checkpoints are kept.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

CHECKPOINT_RE = re.compile(r"epoch-(\d{4,})")
PARAMS_FILE = "params"
TRAINER_FILE = "trainer.states"
STATE_FILE = "state.json"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(root: Path, epoch: int, write_params: Callable[[str], None], write_trainer: Callable[[str], None],
         state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``epoch`` (the number of finished epochs) under root, then prune older ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_params(str(tmp / PARAMS_FILE))
    write_trainer(str(tmp / TRAINER_FILE))
    with open(tmp / STATE_FILE, "w") as fh:
        json.dump({**state, "epoch": epoch}, fh, indent=2, sort_keys=True)
    for name in (PARAMS_FILE, TRAINER_FILE, STATE_FILE):
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    if final.exists():  # a rerun of the same epoch after a crash between rename and prune
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    for old in sorted(checkpoints(root))[:-keep] if keep > 0 else []:
        shutil.rmtree(root / f"epoch-{old:04d}", ignore_errors=True)
    return final


def checkpoints(root: Path) -> list[int]:
    """Epoch numbers of the complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = CHECKPOINT_RE.fullmatch(entry.name)
        if match and (entry / STATE_FILE).is_file() and (entry / PARAMS_FILE).is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def load_state(root: Path, epoch: int) -> tuple[Path, dict]:
    folder = root / f"epoch-{epoch:04d}"
    return folder, json.loads((folder / STATE_FILE).read_text())


def clean_partials(root: Path) -> None:
    """Remove half-written checkpoints left by a killed process."""
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".epoch-") and ".tmp-" in entry.name:
                shutil.rmtree(entry, ignore_errors=True)
