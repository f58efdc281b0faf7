"""The second `make run` (a no-op) against the first, full one, timed in one invocation.

On a fresh run name and a fresh emulator state dir (as after a clone): `make run` once (the whole pipeline:
the baseline), then `make run` again (the no-op: the run is complete). For context, the no-op is also timed
the way scripts/run-local ran it before it learnt to stop early for a complete run (emulator start, site.yml
with every stage skipped, teardown, emulator stop), step by step, on the same state.

Writes RESULTS.md next to this file: wall times and their ratio, the changed count of every PLAY RECAP, the
slowest tasks of the no-op paths (profile_tasks), and the machine with its load while each part ran (this box
is shared; timings are noisy). The run's artifacts are removed afterwards and artifacts/latest put back,
unless --keep.

    .venv/bin/python benchmarks/rerun_noop/run.py             # the local inventory's defaults -> RESULTS.md
    .venv/bin/python benchmarks/rerun_noop/run.py --quick     # 1 epoch on 320 images: a quicker first run
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = ROOT / ".venv" / "bin"
EMULATOR = ROOT / "scripts" / "aws-emulator"
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written

TARGET_S = 30.0   # the no-op budget
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
QUICK = {"mxnet_train_epochs": 1, "mxnet_train_synthetic_size": 320, "sagemaker_synthetic_size": 320,
         "sagemaker_hyperparameters": {"dataset": "synthetic", "synthetic-size": 320, "model": "resnet20_v1",
                                       "epochs": 1, "batch-size": 64, "lr": 0.05, "log-interval": 16}}


class LoadSampler:
    """Samples the 1-minute load average every second while a part runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(1.0)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else os.getloadavg()[0]


@dataclass
class Part:
    name: str
    wall_s: float
    load: float
    rc: int
    recaps: list[int] = field(default_factory=list)   # changed= of every PLAY RECAP, in order
    slowest: list[str] = field(default_factory=list)  # profile_tasks lines


def env_for(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DLFLEET_EMULATOR_DIR=str(state_dir),
               ANSIBLE_NOCOLOR="1")
    return env


def timed(name: str, argv: list[str], env: dict[str, str], log: Path) -> Part:
    with LoadSampler() as load:
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    log.write_text(out)
    slowest = []
    for block in out.split("TASKS RECAP")[1:]:
        lines = [ln for ln in block.splitlines() if re.search(r" -+ [0-9.]+s$", ln)]
        slowest += lines[:3]
    part = Part(name, wall, load.mean, proc.returncode, [int(m[2]) for m in RECAP.findall(proc.stdout)], slowest)
    print(f"{name}: {wall:.1f} s, rc {proc.returncode}, changed {part.recaps}, load {load.mean:.1f}", flush=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed (rc {proc.returncode}); see {log}")
    return part


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    mem = "?"
    try:
        kib = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                       if ln.startswith("MemTotal")))
        mem = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    ansible = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True)
    return {"cpu": f"{cpu}, {os.cpu_count()} logical CPUs", "memory": mem,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "ansible": ansible.stdout.splitlines()[0] if ansible.stdout else "?"}


def write_results(path: Path, args: argparse.Namespace, name: str, parts: dict[str, Part], old: list[Part],
                  info: dict[str, str]) -> None:
    first, second = parts["first"], parts["second"]
    old_total = sum(p.wall_s for p in old)
    met = "met" if second.wall_s <= TARGET_S else "NOT met"
    lines = [
        "# Second `make run` (no-op) against the first one",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/rerun_noop/run.py"
        f"{' --quick' if args.quick else ''}`, run `{name}`, a fresh emulator state dir, "
        f"{'1 epoch on 320 images (--quick)' if args.quick else 'the local inventory defaults'}.",
        "",
        "| part | wall (s) | changed per PLAY RECAP | mean load (1 min) |",
        "|---|---|---|---|",
        f"| first `make run` (whole pipeline, baseline) | {first.wall_s:.1f} | {first.recaps} | {first.load:.1f} |",
        f"| second `make run` (no-op) | {second.wall_s:.1f} | {second.recaps} | {second.load:.1f} |",
        f"| no-op the earlier way: emulator start + site.yml + teardown + emulator stop | {old_total:.1f} | "
        f"{[c for p in old for c in p.recaps]} | {sum(p.load * p.wall_s for p in old) / old_total:.1f} |",
        "",
        f"- Ratio second / first: **{second.wall_s / first.wall_s:.3f}** "
        f"({first.wall_s / second.wall_s:.0f}x faster).",
        f"- Ratio second / the earlier no-op: **{second.wall_s / old_total:.3f}**.",
        f"- Target: second run <= {TARGET_S:.0f} s: **{met}** ({second.wall_s:.1f} s).",
        "",
        "The earlier no-op, step by step:",
        "",
        "| step | wall (s) |",
        "|---|---|",
        *[f"| {p.name} | {p.wall_s:.1f} |" for p in old],
        "",
        "Slowest tasks (profile_tasks) of the second `make run`:",
        "",
        "```",
        *(second.slowest or ["(none)"]),
        "```",
        "",
        "and of the earlier no-op's playbooks:",
        "",
        "```",
        *[ln for p in old for ln in p.slowest],
        "```",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "The box is shared with other jobs: the load column says how busy it was while each part ran. On 2 CPUs",
        "a load of 8-12 stretches every process start (python, ansible-playbook, each module) several times over.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch on 320 images instead of the defaults")
    parser.add_argument("--keep", action="store_true", help="keep the run's artifacts and the new artifacts/latest")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    name = f"bench-noop-{dt.datetime.now():%Y%m%d%H%M%S}"
    work = ROOT / ".run" / "bench" / "rerun_noop" / name
    work.mkdir(parents=True)
    state_dir = work / "emulator"
    extra = ["-e", f"dlfleet_fleet_name={name}"]
    if args.quick:
        (work / "quick.json").write_text(json.dumps(QUICK))
        extra = ["-e", f"@{work / 'quick.json'}", *extra]
    latest = ROOT / "artifacts" / "latest"
    latest_before = os.readlink(latest) if latest.is_symlink() else None
    info = machine()
    env = env_for(state_dir)
    make = ["make", "-s", "run", f"ARGS={' '.join(extra)}"]
    try:
        parts = {"first": timed("first make run", make, env, work / "first.log"),
                 "second": timed("second make run", make, env, work / "second.log")}
        old = [timed("emulator start", [str(EMULATOR), "start", "--state-dir", str(state_dir)], env,
                     work / "old-start.log")]
        aws = env | read_env(state_dir / "env")
        try:
            old.append(timed("site.yml", [str(BIN / "ansible-playbook"), "site.yml", *extra], aws,
                             work / "old-site.log"))
            old.append(timed("teardown.yml", [str(BIN / "ansible-playbook"), "playbooks/teardown.yml", *extra], aws,
                             work / "old-teardown.log"))
        finally:
            old.append(timed("emulator stop", [str(EMULATOR), "stop", "--state-dir", str(state_dir)], env,
                             work / "old-stop.log"))
    finally:
        if not args.keep:
            for path in (ROOT / "artifacts" / name, ROOT / ".run" / "hosts" / "localhost" / "runs" / name,
                         ROOT / ".run" / "sagemaker" / "training-jobs" / f"{name}-resnet20"):
                shutil.rmtree(path, ignore_errors=True)
            if latest.is_symlink() and os.readlink(latest) == name:
                latest.unlink()
                if latest_before and (ROOT / "artifacts" / latest_before).exists():
                    latest.symlink_to(latest_before)
    write_results(args.results, args, name, parts, old, info)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
