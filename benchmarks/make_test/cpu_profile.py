"""pytest plugin: the machine's CPU time (all processes, from /proc/stat) and the wall time of each test and of each
test file, for finding where a serial run's CPU goes. Run the tests one at a time (no -n) on an otherwise idle
machine, or the figures include the neighbours' work:

    PYTHONPATH=benchmarks/make_test .venv/bin/pytest -p cpu_profile -q tests/emulator
    CPU_PROFILE_OUT=cpu.json ...                         # where the figures go (default cpu-profile.json)

At the end it prints the files by CPU, largest first, and writes every test's figures as JSON.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import pytest

_TICK = os.sysconf("SC_CLK_TCK")
_rows: list[dict] = []


def _busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]                      # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK           # user nice system idle iowait irq softirq steal


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu0, wall0 = _busy_s(), time.monotonic()
    yield
    _rows.append({"nodeid": item.nodeid, "cpu_s": round(_busy_s() - cpu0, 2),
                  "wall_s": round(time.monotonic() - wall0, 2)})


def pytest_sessionfinish(session):
    if not _rows:
        return
    with open(os.environ.get("CPU_PROFILE_OUT", "cpu-profile.json"), "w") as f:
        json.dump(_rows, f, indent=1)
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in _rows:
        acc = files[row["nodeid"].split("::", 1)[0]]
        acc[0] += row["cpu_s"]
        acc[1] += row["wall_s"]
        acc[2] += 1
    total = sum(v[0] for v in files.values())
    lines = [f"{'cpu s':>8} {'wall s':>8} {'tests':>5}  file   (total CPU {total:.0f} s)"]
    ranked = sorted(files.items(), key=lambda kv: -kv[1][0])
    lines += [f"{c:8.1f} {w:8.1f} {n:5d}  {name}" for name, (c, w, n) in ranked]
    print("\n" + "\n".join(lines))
