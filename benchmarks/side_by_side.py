"""What the side-by-side benchmarks of Ansible runs share: an emulator of their own for a while, one run's CPU and
wall, the rounds that alternate the two sides in one process, and the table of the results.

A run's CPU is the process tree's of the command (user + system, from this process's children's rusage): the
command waits for its children, so their CPU is in it.
"""
from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written

Run = tuple[float, float]   # (CPU-s, wall s)


@contextlib.contextmanager
def emulator(work: Path, bin_dir: Path | None = None) -> Iterator[dict[str, str]]:
    """A seeded emulator of this benchmark's own under `work`, stopped afterwards; yields the environment for runs
    against it (no ANSIBLE_, AWS_ or DLFLEET_ variables of the caller's; `bin_dir` first on PATH where given)."""
    state = work / "emulator"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "DLFLEET_"))}
    script = str(ROOT / "scripts" / "aws-emulator")
    subprocess.run([script, "start", "--state-dir", str(state), "--no-persist"], check=True, env=base,
                   capture_output=True)
    try:
        env = {**base, **read_env(state / "env"), "ANSIBLE_NOCOLOR": "1"}
        if bin_dir is not None:
            env["PATH"] = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"
        yield env
    finally:
        subprocess.run([script, "stop", "--state-dir", str(state)], env=base, capture_output=True)


def measure(command: list[str], env: dict[str, str], what: str) -> Run:
    """Run `command` from the project root; its CPU and wall. Exits with its output where it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def alternate(sides: dict[str, Callable[[], Run]], rounds: int) -> dict[str, list[Run]]:
    """Each side once to warm up (it fills the caches a first run after `make venv` fills), then `rounds` rounds
    of every side in turn."""
    for run in sides.values():
        run()
    runs: dict[str, list[Run]] = {side: [] for side in sides}
    for i in range(rounds):
        for side, run in sides.items():
            cpu, wall = run()
            runs[side].append((cpu, wall))
            print(f"round {i + 1} {side}: {cpu:.2f} CPU-s, {wall:.2f} s", flush=True)
    return runs


def medians(runs: list[Run]) -> Run:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def table(runs: dict[str, list[Run]], labels: dict[str, str]) -> list[str]:
    """A markdown table: a round a row, CPU and wall of each side, and the medians."""
    heads = " | ".join(f"{labels[side]}: CPU-s | wall s" for side in runs)
    sides = list(runs)
    lines = [f"| round | {heads} |", "|---|" + "---|---|" * len(sides)]
    for i in range(len(runs[sides[0]])):
        cells = " | ".join(f"{runs[s][i][0]:.2f} | {runs[s][i][1]:.2f}" for s in sides)
        lines.append(f"| {i + 1} | {cells} |")
    cells = " | ".join(f"{medians(runs[s])[0]:.2f} | {medians(runs[s])[1]:.2f}" for s in sides)
    lines.append(f"| median | {cells} |")
    return lines


def machine(ansible_playbook: Path | None = None) -> str:
    """The line that says where it ran."""
    words = f"Machine: {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}"
    if ansible_playbook is not None:
        out = subprocess.run([str(ansible_playbook), "--version"], capture_output=True, text=True)
        words += f"; Python {platform.python_version()}; {out.stdout.splitlines()[0] if out.stdout else 'ansible ?'}"
    return words + ". The box is shared: compare the columns of one round, not runs of other days."


def report(path: Path, intro: list[str], runs: dict[str, list[Run]], labels: dict[str, str], verdict: list[str],
           where: str) -> None:
    """Write RESULTS.md (the intro, the table, the verdict lines, where it ran) and print its end."""
    lines = [*intro, "", *table(runs, labels), "", *verdict, "", where, ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines[-(len(verdict) + 3):]))
