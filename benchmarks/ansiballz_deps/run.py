"""playbooks/provision.yml with the controller venv's module_utils import cache (scripts/ansiballz_deps.py) and without.

provision.yml is the playbook most of the suite's runs are made of: 21 module runs of 12 modules (dlfleet's own,
amazon.aws's, community.crypto's and ansible-core's), each of whose payloads the task workers build once per
playbook run. It runs ROUNDS times each way against the embedded emulator, alternating (off, on, off, on, ...) in
this one process, after one warm-up run with the cache on (which fills it, as the first run after `make venv`
does); each run launches a fleet of its own. A run's CPU is the ansible-playbook process tree's (user + system,
from the children's rusage), so it holds the module runs too, which the cache does not touch.

Writes RESULTS.md next to this file: per-run CPU and wall, the medians and their ratio (on / off).

    .venv/bin/python benchmarks/ansiballz_deps/run.py [--rounds 3]
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
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written


def run_once(work: Path, env: dict[str, str], cache: bool) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"dlfleet_fleet_name": name, "dlfleet_owner": "bench", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(work / "run"), "dlfleet_artifacts_dir": str(work / "artifacts" / name)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/provision.yml", "-e", json.dumps(extra)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**env, "DLFLEET_ANSIBALLZ_DEPS": "1" if cache else "0"})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        side = "on" if cache else "off"
        sys.exit(f"provision.yml failed (cache {side}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ansiballz-deps-") as tmp:
        work = Path(tmp)
        state = work / "emulator"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "DLFLEET_"))}
        subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "start", "--state-dir", str(state), "--no-persist"],
                       check=True, env=base, capture_output=True)
        try:
            env = {**base, **read_env(state / "env"), "ANSIBLE_NOCOLOR": "1",
                   "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}"}
            run_once(work, env, cache=True)   # warm-up: fills the cache, as the first run after `make venv`
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(args.rounds):
                for cache in (False, True):
                    cpu, wall = run_once(work, env, cache)
                    runs[cache].append((cpu, wall))
                    print(f"round {i + 1} cache {'on ' if cache else 'off'}: {cpu:.2f} CPU-s, {wall:.2f} s",
                          flush=True)
        finally:
            subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "stop", "--state-dir", str(state)], env=base,
                           capture_output=True)

    med = {c: (statistics.median(r[0] for r in runs[c]), statistics.median(r[1] for r in runs[c])) for c in runs}
    ratio_cpu = med[True][0] / med[False][0]
    ratio_wall = med[True][1] / med[False][1]
    ansible = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True)
    lines = [
        "# provision.yml: the module_utils import cache on and off",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/ansiballz_deps/run.py`: "
        "`playbooks/provision.yml` on the embedded emulator (a new fleet each run; 21 module runs of 12 modules), "
        f"{args.rounds} rounds, off and on alternating in one process, after one warm-up run that fills the cache. "
        "CPU is the whole ansible-playbook process tree's: its main process, the task workers (where the cache "
        "works) and the module runs (which it does not touch).",
        "",
        "| round | cache off: CPU-s | wall s | cache on: CPU-s | wall s |",
        "|---|---|---|---|---|",
        *[f"| {i + 1} | {off[0]:.2f} | {off[1]:.2f} | {on[0]:.2f} | {on[1]:.2f} |"
          for i, (off, on) in enumerate(zip(runs[False], runs[True], strict=True))],
        f"| median | {med[False][0]:.2f} | {med[False][1]:.2f} | {med[True][0]:.2f} | {med[True][1]:.2f} |",
        "",
        f"- CPU, on / off: **{ratio_cpu:.2f}** ({med[False][0] - med[True][0]:.2f} CPU-s less per provision.yml).",
        f"- Wall, on / off: **{ratio_wall:.2f}**.",
        "",
        f"Machine: {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}; {ansible.stdout.splitlines()[0] if ansible.stdout else 'ansible ?'}. "
        "The box is shared: compare the two columns of one round, not runs of other days.",
        "",
    ]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
