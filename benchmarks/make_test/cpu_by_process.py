"""Where a whole command's CPU goes, by kind of process: the kernel's process accounting (acct(2)) records every
process that ends, with its CPU time, parent and command name, including the short ones (each module run, each
Ansible worker) that sampling misses. For the suite: which share is Ansible's controller, which the module runs,
which the trainers.

    .venv/bin/python benchmarks/make_test/cpu_by_process.py -- make test     # run it with accounting on
    .venv/bin/python benchmarks/make_test/cpu_by_process.py --read FILE      # read an accounting file again

Needs root. Accounting is for the whole machine: run it on an otherwise idle one, or the neighbours count too.
Processes still alive when the command ends (none, for `make test`) are not in the file.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RECORD = struct.Struct("<BBHIIIIIIfHHHHHHHH16s")   # struct acct_v3 (64 bytes)
AHZ = 100                                          # the unit of its CPU times


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    cpu_s: float
    wall_s: float


def _comp(value: int) -> int:
    """comp_t: a 13-bit mantissa and a 3-bit base-8 exponent."""
    return (value & 0x1FFF) << (3 * ((value >> 13) & 7))


def read(path: Path) -> list[Proc]:
    data = path.read_bytes()
    procs = []
    for off in range(0, len(data) - RECORD.size + 1, RECORD.size):
        fields = RECORD.unpack_from(data, off)
        if fields[1] != 3:
            raise SystemExit(f"{path}: record {off // RECORD.size} is not acct v3 (version {fields[1]})")
        procs.append(Proc(pid=fields[6], ppid=fields[7], comm=fields[18].split(b"\0")[0].decode(errors="replace"),
                          cpu_s=(_comp(fields[10]) + _comp(fields[11])) / AHZ, wall_s=fields[9] / AHZ))
    return procs


def parents(procs: list[Proc]) -> list[str]:
    """Each process's parent's name. A process is recorded when it ends, so its parent is the next record of that
    pid (pids are reused over a long run: the parent's pid may have named other processes before)."""
    later: dict[int, str] = {}
    names = [""] * len(procs)
    for index in range(len(procs) - 1, -1, -1):
        names[index] = later.get(procs[index].ppid, "")
        later[procs[index].pid] = procs[index].comm
    return names


def kind(proc: Proc, parent: str) -> str:
    """The kind of process, from its name and its parent's: an ansible-playbook forks its workers (same name)."""
    if proc.comm == "ansible-playboo":
        return "ansible-playbook workers (forked per task and host)" if parent == "ansible-playboo" \
            else "ansible-playbook main processes"
    if proc.comm.startswith("python") and parent == "sh":
        return "python started by a shell (module runs on the controller and hosts)"
    if proc.comm.startswith("python"):
        return f"{proc.comm} (other: pytest workers, emulators, trainers, servers)"
    return proc.comm


def report(procs: list[Proc], wall_s: float | None = None) -> str:
    cpu: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for proc, parent in zip(procs, parents(procs), strict=True):
        cpu[kind(proc, parent)] += proc.cpu_s
        count[kind(proc, parent)] += 1
    total = sum(cpu.values())
    lines = [f"{total:.0f} CPU-s in {len(procs)} processes" + (f", {wall_s:.0f} s wall" if wall_s else ""), "",
             "| kind | processes | CPU-s | share | CPU-s each |", "|---|---|---|---|---|"]
    for name, secs in cpu.most_common():
        if secs < 0.005 * total:
            continue
        lines.append(f"| {name} | {count[name]} | {secs:.0f} | {secs / total:.0%} | {secs / count[name]:.2f} |")
    return "\n".join(lines)


def run(command: list[str]) -> tuple[list[Proc], float]:
    libc = ctypes.CDLL(None, use_errno=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acct"
        path.touch(mode=0o600)
        if libc.acct(str(path).encode()) != 0:
            raise SystemExit(f"acct(2) failed: {os.strerror(ctypes.get_errno())} (needs root and process accounting)")
        start = time.monotonic()
        try:
            rc = subprocess.call(command)
        finally:
            libc.acct(None)
        wall = time.monotonic() - start
        print(f"command exited {rc}", file=sys.stderr)
        return read(path), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read", type=Path, help="an accounting file to read instead of running a command")
    parser.add_argument("command", nargs="*", help="the command to run with accounting on (after --)")
    args = parser.parse_args()
    if args.read:
        print(report(read(args.read)))
    elif args.command:
        print(report(*run(args.command)))
    else:
        parser.error("give a command (after --) or --read FILE")


if __name__ == "__main__":
    main()
