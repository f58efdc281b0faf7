"""The same Ansible work from two controller venvs made from two builds of CPython 3.11.

Which interpreter the venvs are made from (scripts/find-python) decides the CPU of every ansible-playbook, task
worker and localhost module run. This runs `playbooks/provision.yml` on the embedded emulator (a new fleet each
run; 21 module runs of 12 modules, all on the controller) from venv A and from venv B, alternating (A, B, A, B, ...)
in this one process, after one warm-up run each (which fills each venv's payload caches, as the first run after
`make venv` does). A run's CPU is the ansible-playbook process tree's (user + system, from the children's rusage).
The emulator is the same process for both sides.

Make the second venv as the Makefile makes the first, from the other interpreter, for example:

    make VENV=.run/venv-other PYTHON=/path/to/python3.11 .run/venv-other/.installed
    .venv/bin/python benchmarks/python_build/run.py --venv-a .venv --venv-b .run/venv-other [--rounds 3]

Writes RESULTS.md next to this file: each side's interpreter, per-run CPU and wall, the medians and their ratio.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written

DESCRIBE = ("import os, platform, sys\n"
            "maps = open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else ''\n"
            "print(os.path.realpath(sys._base_executable), platform.python_version(), "
            "'shared libpython' if 'libpython3' in maps else 'interpreter in the executable')")


def describe(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", DESCRIBE], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run_once(venv: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"dlfleet_fleet_name": name, "dlfleet_owner": "bench", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(work / "run"), "dlfleet_artifacts_dir": str(work / "artifacts" / name)}
    bin_dir = venv / "bin"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([str(bin_dir / "ansible-playbook"), "playbooks/provision.yml", "-e", json.dumps(extra)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"provision.yml failed from {venv}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv-a", type=Path, required=True, help="the baseline venv")
    parser.add_argument("--venv-b", type=Path, required=True, help="the venv made from the other interpreter")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    venvs = {"A": args.venv_a.resolve(), "B": args.venv_b.resolve()}
    about = {side: describe(venv) for side, venv in venvs.items()}

    with tempfile.TemporaryDirectory(prefix="bench-python-build-") as tmp:
        work = Path(tmp)
        state = work / "emulator"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "DLFLEET_"))}
        subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "start", "--state-dir", str(state), "--no-persist"],
                       check=True, env=base, capture_output=True)
        try:
            env = {**base, **read_env(state / "env"), "ANSIBLE_NOCOLOR": "1"}
            for venv in venvs.values():
                run_once(venv, work, env)   # warm-up: fills the venv's payload caches
            runs: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
            for i in range(args.rounds):
                for side, venv in venvs.items():
                    cpu, wall = run_once(venv, work, env)
                    runs[side].append((cpu, wall))
                    print(f"round {i + 1} {side}: {cpu:.2f} CPU-s, {wall:.2f} s", flush=True)
        finally:
            subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "stop", "--state-dir", str(state)], env=base,
                           capture_output=True)

    med = {s: (statistics.median(r[0] for r in runs[s]), statistics.median(r[1] for r in runs[s])) for s in runs}
    lines = [
        "# The same Ansible work from venvs of two CPython builds",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/python_build/run.py`: "
        "`playbooks/provision.yml` on the embedded emulator (a new fleet each run; 21 module runs of 12 modules, "
        f"all on the controller), {args.rounds} rounds, A and B alternating in one process, after one warm-up run "
        "each. CPU is the whole ansible-playbook process tree's.",
        "",
        f"- A: `{args.venv_a}`: {about['A']}",
        f"- B: `{args.venv_b}`: {about['B']}",
        "",
        "| round | A: CPU-s | wall s | B: CPU-s | wall s |",
        "|---|---|---|---|---|",
        *[f"| {i + 1} | {a[0]:.2f} | {a[1]:.2f} | {b[0]:.2f} | {b[1]:.2f} |"
          for i, (a, b) in enumerate(zip(runs["A"], runs["B"], strict=True))],
        f"| median | {med['A'][0]:.2f} | {med['A'][1]:.2f} | {med['B'][0]:.2f} | {med['B'][1]:.2f} |",
        "",
        f"- CPU, B / A: **{med['B'][0] / med['A'][0]:.2f}**.",
        f"- Wall, B / A: **{med['B'][1] / med['A'][1]:.2f}**.",
        "",
        f"Machine: {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}. The box is shared: "
        "compare the two columns of one round, not runs of other days.",
        "",
    ]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
