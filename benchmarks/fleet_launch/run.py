"""Fleet launch benchmark: ec2_gpu_fleet against amazon.aws.ec2_instance (exact_count), side by side.

For each N, each side launches N instances through a real `ansible-playbook` run against the same embedded
AWS emulator (a moto server on loopback), which is reset before every run so that both start from the same
empty account. Measured per run: the API requests the emulator logged (its requests.jsonl) and the wall
time of the whole ansible-playbook process. Each run is then checked: exactly N live instances carry the
fleet tag. A second, no-change run of each side is measured too (what every later `make run` pays).

    .venv/bin/python benchmarks/fleet_launch/run.py                 # N = 1, 10, 100, 500 -> RESULTS.md
    .venv/bin/python benchmarks/fleet_launch/run.py --sizes 1,10    # a quick look, printed only
"""
from __future__ import annotations

import argparse
import collections
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
from dataclasses import dataclass
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = Path(sys.executable).parent
EMULATOR = ROOT / "scripts" / "aws-emulator"
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written

SIDES = {"dlfleet": HERE / "dlfleet.yml", "peer": HERE / "peer.yml"}
DLAMI = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"


@dataclass
class Run:
    side: str
    n: int
    phase: str            # "launch" or "rerun"
    requests: int
    wall_s: float
    cpu_s: float          # user + system CPU of ansible-playbook and everything it ran (not the emulator)
    actions: dict[str, int]
    live: int


class Emulator:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        subprocess.run([str(EMULATOR), "start", "--state-dir", str(state_dir), "--no-persist"], check=True,
                       stdout=subprocess.DEVNULL)
        self.env = read_env(state_dir / "env")
        self.ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def reset(self) -> None:
        subprocess.run([str(EMULATOR), "reset", "--state-dir", str(self.state_dir)], check=True,
                       stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run([str(EMULATOR), "stop", "--state-dir", str(self.state_dir)], check=False,
                       stdout=subprocess.DEVNULL)

    def log_lines(self) -> list[str]:
        path = self.state_dir / "requests.jsonl"
        return path.read_text().splitlines() if path.exists() else []

    def live(self, fleet: str) -> int:
        paginator = self.ec2.get_paginator("describe_instances")
        filters = [{"Name": "tag:dlfleet:fleet", "Values": [fleet]},
                   {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        return sum(len(r["Instances"]) for page in paginator.paginate(Filters=filters)
                   for r in page["Reservations"])

    def newest_dlami(self) -> str:
        images = self.ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [DLAMI]}])
        return max(images["Images"], key=lambda i: i["CreationDate"])["ImageId"]


def play(emu: Emulator, side: str, n: int, fleet: str, image_id: str, phase: str) -> Run:
    env = {**os.environ, **emu.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "ANSIBLE_STDOUT_CALLBACK": "default"}
    cmd = [str(BIN / "ansible-playbook"), str(SIDES[side]),
           "-e", json.dumps({"fleet": fleet, "n": n, "image_id": image_id})]
    start_line = len(emu.log_lines())
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{side} N={n} {phase} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    lines = emu.log_lines()[start_line:]
    actions = collections.Counter(json.loads(line)["action"] for line in lines if line.strip())
    live = emu.live(fleet)
    if live != n:
        raise SystemExit(f"{side} N={n} {phase}: {live} live instances, expected exactly {n}")
    return Run(side, n, phase, sum(actions.values()), wall, cpu, dict(actions), live)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def _median(runs: list[Run], side: str, n: int, phase: str, field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs if (r.side, r.n, r.phase) == (side, n, phase))


def table(runs: list[Run], phase: str) -> list[str]:
    rows = ["| N | requests dlfleet | requests ec2_instance | request ratio | wall s dlfleet | wall s ec2_instance "
            "| wall ratio | CPU s dlfleet | CPU s ec2_instance | CPU ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({r.n for r in runs}):
        req_a, req_b = (_median(runs, side, n, phase, "requests") for side in SIDES)
        wall_a, wall_b = (_median(runs, side, n, phase, "wall_s") for side in SIDES)
        cpu_a, cpu_b = (_median(runs, side, n, phase, "cpu_s") for side in SIDES)
        rows.append(f"| {n} | {req_a:g} | {req_b:g} | {ratio(req_a, req_b)} | {wall_a:.1f} | {wall_b:.1f} "
                    f"| {ratio(wall_a, wall_b)} | {cpu_a:.1f} | {cpu_b:.1f} | {ratio(cpu_a, cpu_b)} |")
    return rows


def top_actions(runs: list[Run], n: int) -> list[str]:
    first: dict[str, Run] = {}
    for r in runs:
        if r.n == n and r.phase == "launch":
            first.setdefault(r.side, r)
    rows = []
    for side, r in sorted(first.items()):
        common = ", ".join(f"{k} {v}" for k, v in sorted(r.actions.items(), key=lambda kv: -kv[1]))
        rows.append(f"- {'ec2_gpu_fleet' if side == 'dlfleet' else 'ec2_instance'}: {common}")
    return rows


def report(runs: list[Run], sizes: list[int], repeat: int) -> str:
    import ansible
    import moto
    cores = os.cpu_count()
    lines = [
        "# Fleet launch benchmark: ec2_gpu_fleet vs amazon.aws.ec2_instance (exact_count)",
        "",
        f"Measured {dt.date.today().isoformat()} by `benchmarks/fleet_launch/run.py` on {platform.machine()}, "
        f"{cores} CPU cores (shared), Python {platform.python_version()}, ansible-core {ansible.__version__}, "
        f"moto {moto.__version__}. Both sides run as real `ansible-playbook` processes against the same embedded "
        f"emulator, reset before every run; each run is verified to leave exactly N live instances. Each figure "
        f"is the median of {repeat} run(s) per side, the sides alternating which goes first. "
        "Requests are counted from the emulator's request log. Wall time is the whole ansible-playbook process, "
        "Ansible's own start-up included (the same for both sides); CPU time is the user + system time of that "
        "process and everything it ran, which the shared machine's load disturbs less than wall time (the "
        "emulator's own CPU is not in it: that cost follows the request counts). Ratios are dlfleet / "
        "ec2_instance: lower is better.",
        "",
        "Both launch g5.xlarge from the same DLAMI with an encrypted 80 GiB gp3 root, IMDSv2 required and the "
        "dlfleet tags, and wait: `ec2_gpu_fleet` until running and status checks OK, `ec2_instance` "
        "(`state: running`) until running.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/fleet_launch/run.py` (N = 1, 10, 100, 500, three runs each; "
        "writes this file).",
        "",
        "## Launch N instances into an empty account",
        "",
        *table(runs, "launch"),
        "",
        "## Second run, nothing to change",
        "",
        *table(runs, "rerun"),
        "",
        f"## Where the requests go at N = {max(sizes)}",
        "",
        *top_actions(runs, max(sizes)),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100,500", help="comma-separated fleet sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and size; the median is reported")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown file to write (default: RESULTS.md when the full size set runs)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    out = args.out or (HERE / "RESULTS.md" if args.sizes == parser.get_default("sizes") else None)

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fleet-launch-") as tmp:
        emu = Emulator(Path(tmp) / "emulator")
        try:
            image_id = emu.newest_dlami()
            for n in sizes:
                for rep in range(args.repeat):
                    for side in (list(SIDES) if rep % 2 == 0 else list(SIDES)[::-1]):
                        emu.reset()
                        emu.newest_dlami()  # the first request after a reset seeds the backend: keep it out
                        fleet = f"bench-{side}-{n}"
                        for phase in ("launch", "rerun"):
                            run = play(emu, side, n, fleet, image_id, phase)
                            runs.append(run)
                            print(f"{side:8} N={n:<4} {phase:6} requests={run.requests:<6} "
                                  f"wall={run.wall_s:7.1f}s cpu={run.cpu_s:6.1f}s", flush=True)
        finally:
            emu.stop()
    text = report(runs, sizes, args.repeat)
    print(text)
    if out:
        out.write_text(text)
        print(f"written: {out}")


if __name__ == "__main__":
    main()
