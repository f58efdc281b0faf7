"""`make test` from a clean clone, timed: the tiered, parallel suite against the flat one it replaced.

Each side is a fresh `git clone` of this repository at a ref (default: HEAD for the new side; --baseline REF for the
old side, for example the last commit before the tiers), and runs `make test` in it exactly as CI does, from
nothing: both venvs, the OS packages check, lint, and every test. Sides alternate when --rounds > 1. Timed from
outside (no limit inside a test): the whole command's wall time, the CPU time of its process tree, the load average
while it ran, and the test counts that pytest and molecule printed.

Writes RESULTS.md (and results.json) next to this file. Needs root (the test hosts), like `make test`.

    .venv/bin/python benchmarks/make_test/run.py                          # HEAD only
    .venv/bin/python benchmarks/make_test/run.py --baseline 910db5b       # HEAD vs the flat suite, side by side
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUMMARY = re.compile(r"^=*\s*(?P<body>(?:\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed|deselected)"
                     r"(?:, )?)+) in (?P<secs>[\d.]+)s", re.MULTILINE)


@dataclass
class Side:
    label: str
    ref: str
    commit: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    load_mean: float = 0.0
    rc: int = -1
    counts: dict[str, int] = field(default_factory=dict)   # passed/failed/skipped... summed over pytest runs
    pytest_runs: list[str] = field(default_factory=list)     # each pytest summary line
    tail: str = ""


def sample_load(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(os.getloadavg()[0])
        stop.wait(2.0)


def run_side(label: str, ref: str, keep: bool, make_args: tuple[str, ...] = ()) -> Side:
    side = Side(label, ref)
    work = Path(tempfile.mkdtemp(prefix="dlfleet-make-test-"))
    clone = work / "dlfleet"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", ref], cwd=clone, check=True)
        side.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                                     capture_output=True, text=True).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "ANSIBLE_", "AWS_"))}
        env["CI"] = "true"
        stop, loads = threading.Event(), []
        sampler = threading.Thread(target=sample_load, args=(stop, loads), daemon=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        sampler.start()
        proc = subprocess.run(["make", *make_args, "test"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        side.wall_s = round(time.monotonic() - start, 1)
        stop.set()
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        side.cpu_s = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1)
        side.load_mean = round(sum(loads) / len(loads), 2) if loads else 0.0
        side.rc = proc.returncode
        out = proc.stdout + proc.stderr
        (HERE / f"make-test-{label}.log").write_text(out)
        for m in SUMMARY.finditer(out):
            side.pytest_runs.append(m.group(0).strip("= "))
            for part in m.group("body").split(", "):
                n, what = part.split(" ", 1)
                what = "errors" if what.startswith("error") else what
                side.counts[what] = side.counts.get(what, 0) + int(n)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
        side.counts["molecule_scenarios_verified"] = len(re.findall(r"^INFO\s+\S+ \S+ verify: Executed: Successful",
                                                                   plain, re.MULTILINE))
        side.tail = out[-1500:]
    finally:
        if not keep:
            # the test hosts of a clone live under its .run/: make sure none is left before removing it
            hosts = clone / "tests" / "testhosts" / "testhosts.py"
            for state in sorted((clone / ".run" / "testhosts").glob("*")) if hosts.exists() else []:
                if state.name != "images":
                    subprocess.run(["python3", str(hosts), "--state-dir", str(state), "destroy"],
                                   capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)
    return side


def write_results(sides: list[Side]) -> None:
    new = [s for s in sides if s.label == "tiered"]
    old = [s for s in sides if s.label == "baseline"]
    lines = [
        "# `make test` from a clean clone",
        "",
        f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores (Python {platform.python_version()}), by "
        "`benchmarks/make_test/run.py`; each side a fresh clone running "
        "`make test` as CI does (venvs included).",
        "",
        "| side | ref | rc | wall | CPU (process tree) | mean load | tests (pytest, summed) | molecule scenarios |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sides:
        counts = ", ".join(f"{v} {k}" for k, v in s.counts.items() if k != "molecule_scenarios_verified")
        lines.append(f"| {s.label} | {s.ref} ({s.commit}) | {s.rc} | {s.wall_s:.0f} s ({s.wall_s / 60:.1f} min) | "
                     f"{s.cpu_s:.0f} s | {s.load_mean} | {counts} | {s.counts.get('molecule_scenarios_verified', 0)} |")
    if new and old:
        ratio = (sum(s.wall_s for s in new) / len(new)) / (sum(s.wall_s for s in old) / len(old))
        lines += ["", f"Wall-time ratio, tiered / baseline: **{ratio:.2f}x**"]
    lines += ["", "pytest summaries per side:", ""]
    for s in sides:
        lines += [f"- {s.label}: " + "; ".join(s.pytest_runs)]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    # the output's tail stays in make-test-<side>.log (not kept in git: it names the clone's temporary paths)
    (HERE / "results.json").write_text(json.dumps([asdict(s) | {"tail": ""} for s in sides], indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="the tiered side's commit (default HEAD)")
    parser.add_argument("--baseline", help="the flat suite's commit, run alternately with --ref")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the clones (for a look at a failure)")
    parser.add_argument("--baseline-keep-going", action="store_true",
                        help="make -k on the baseline side: go on past a failing part (an old commit may fail one "
                             "test on this CPU), so that its whole suite is still timed")
    parser.add_argument("--baseline-only", action="store_true",
                        help="run only the baseline side and add it to the sides already in results.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("make test needs root (the test hosts)")
    ref = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    sides: list[Side] = []
    if args.baseline_only:
        if not args.baseline:
            parser.error("--baseline-only needs --baseline REF")
        sides = [Side(**s) for s in json.loads((HERE / "results.json").read_text())]
    for _ in range(args.rounds):
        if not args.baseline_only:
            sides.append(run_side("tiered", ref, args.keep))
            print(json.dumps(asdict(sides[-1]) | {"tail": None}), flush=True)
        if args.baseline:
            sides.append(run_side("baseline", args.baseline, args.keep,
                                  ("-k",) if args.baseline_keep_going else ()))
            print(json.dumps(asdict(sides[-1]) | {"tail": None}), flush=True)
        write_results(sides)
    return 0 if all(s.rc == 0 for s in sides) else 1


if __name__ == "__main__":
    raise SystemExit(main())
