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
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from side_by_side import alternate, emulator, machine, measure, medians, report  # noqa: E402

DESCRIBE = ("import os, platform, sys\n"
            "maps = open('/proc/self/maps').read() if os.path.exists('/proc/self/maps') else ''\n"
            "print(os.path.realpath(sys._base_executable), platform.python_version(), "
            "'shared libpython' if 'libpython3' in maps else 'interpreter in the executable')")


def describe(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", DESCRIBE], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def provision(venv: Path, work: Path, env: dict[str, str]):
    name = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"dlfleet_fleet_name": name, "dlfleet_owner": "bench", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(work / "run"), "dlfleet_artifacts_dir": str(work / "artifacts" / name)}
    bin_dir = venv / "bin"
    return measure([str(bin_dir / "ansible-playbook"), "playbooks/provision.yml", "-e", json.dumps(extra)],
                   {**env, "PATH": f"{bin_dir}:{env['PATH']}"}, f"provision.yml from {venv}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv-a", type=Path, required=True, help="the baseline venv")
    parser.add_argument("--venv-b", type=Path, required=True, help="the venv made from the other interpreter")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    venvs = {"A": args.venv_a.resolve(), "B": args.venv_b.resolve()}
    about = {side: describe(venv) for side, venv in venvs.items()}

    with tempfile.TemporaryDirectory(prefix="bench-python-build-") as tmp, emulator(Path(tmp)) as env:
        runs = alternate({side: (lambda venv=venv: provision(venv, Path(tmp), env)) for side, venv in venvs.items()},
                         args.rounds)

    a, b = medians(runs["A"]), medians(runs["B"])
    report(args.results, [
        "# The same Ansible work from venvs of two CPython builds",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/python_build/run.py`: "
        "`playbooks/provision.yml` on the embedded emulator (a new fleet each run; 21 module runs of 12 modules, "
        f"all on the controller), {args.rounds} rounds, A and B alternating in one process, after one warm-up run "
        "each. CPU is the whole ansible-playbook process tree's.",
        "",
        f"- A: `{args.venv_a}`: {about['A']}",
        f"- B: `{args.venv_b}`: {about['B']}",
    ], runs, {"A": "A", "B": "B"}, [
        f"- CPU, B / A: **{b[0] / a[0]:.2f}**.",
        f"- Wall, B / A: **{b[1] / a[1]:.2f}**.",
    ], machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
