"""playbooks/provision.yml with the controller venv's module_utils import cache (scripts/ansiballz_deps.py) and
without.

provision.yml is the playbook most of the suite's runs are made of: 21 module runs of 12 modules (dlfleet's own,
amazon.aws's, community.crypto's and ansible-core's), each of whose payloads the task workers build once per
playbook run. It runs ROUNDS times each way against the embedded emulator, alternating (off, on, off, on, ...) in
this one process, after one warm-up run each way (the one with the cache on fills it, as the first run after `make
venv` does); each run launches a fleet of its own. A run's CPU is the ansible-playbook process tree's (user +
system, from the children's rusage), so it holds the module runs too, which the cache does not touch.

Writes RESULTS.md next to this file: per-run CPU and wall, the medians and their ratio (on / off).

    .venv/bin/python benchmarks/ansiballz_deps/run.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from side_by_side import ROOT, alternate, emulator, machine, measure, medians, report  # noqa: E402

BIN = ROOT / ".venv" / "bin"


def provision(work: Path, env: dict[str, str], cache: bool):
    name = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"dlfleet_fleet_name": name, "dlfleet_owner": "bench", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(work / "run"), "dlfleet_artifacts_dir": str(work / "artifacts" / name)}
    return measure([str(BIN / "ansible-playbook"), "playbooks/provision.yml", "-e", json.dumps(extra)],
                   {**env, "DLFLEET_ANSIBALLZ_DEPS": "1" if cache else "0"},
                   f"provision.yml (cache {'on' if cache else 'off'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ansiballz-deps-") as tmp, \
            emulator(Path(tmp), BIN) as env:
        runs = alternate({"off": lambda: provision(Path(tmp), env, False),
                          "on": lambda: provision(Path(tmp), env, True)}, args.rounds)

    off, on = medians(runs["off"]), medians(runs["on"])
    report(args.results, [
        "# provision.yml: the module_utils import cache on and off",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/ansiballz_deps/run.py`: "
        "`playbooks/provision.yml` on the embedded emulator (a new fleet each run; 21 module runs of 12 modules), "
        f"{args.rounds} rounds, off and on alternating in one process, after one warm-up run each. "
        "CPU is the whole ansible-playbook process tree's: its main process, the task workers (where the cache "
        "works) and the module runs (which it does not touch).",
    ], runs, {"off": "cache off", "on": "cache on"}, [
        f"- CPU, on / off: **{on[0] / off[0]:.2f}** ({off[0] - on[0]:.2f} CPU-s less per provision.yml).",
        f"- Wall, on / off: **{on[1] / off[1]:.2f}**.",
    ], machine(BIN / "ansible-playbook"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
