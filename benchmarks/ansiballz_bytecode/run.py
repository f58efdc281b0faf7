"""Localhost module runs with the controller venv's payload bytecode cache (scripts/ansiballz_bytecode.py) and without.

One playbook of localhost tasks, the kind every provision, teardown and SageMaker play is made of: `command`,
`stat` and `set_fact`-free module calls, plus amazon.aws calls (EC2, S3) and one of dlfleet's own modules
against the embedded emulator. It runs ROUNDS times each way, alternating (off, on, off, on, ...) in this one
process, after one warm-up run with the cache on (which fills it, as the first run after `make venv` does).
Each run's CPU is the ansible-playbook process tree's (user + system, from the children's rusage).

Writes RESULTS.md next to this file: per-run CPU and wall, the medians and their ratio (on / off).

    .venv/bin/python benchmarks/ansiballz_bytecode/run.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT))
from scripts.emulator.cli import read_env  # noqa: E402 - the emulator's env file, read where it is written

PLAYBOOK = """\
- name: Localhost module runs, as the controller-side plays make them
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: A command
      ansible.builtin.command: "true"
      changed_when: false
      loop: "{{ range(10) | list }}"
    - name: A stat
      ansible.builtin.stat:
        path: /etc/hostname
      loop: "{{ range(5) | list }}"
    - name: EC2 (amazon.aws)
      amazon.aws.ec2_vpc_net_info:
        region: us-east-1
      loop: "{{ range(5) | list }}"
    - name: S3 (amazon.aws)
      amazon.aws.s3_bucket_info:
        region: us-east-1
      loop: "{{ range(5) | list }}"
    - name: dlfleet's own (dlami_info, the SSM lookup of the DLAMI)
      dlami_info:
        region: us-east-1
      loop: "{{ range(5) | list }}"
"""
TASKS = 30


def run_once(playbook: Path, env: dict[str, str], cache: bool) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook)], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "DLFLEET_ANSIBALLZ_CACHE": "1" if cache else "0"})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"the playbook failed (cache {'on' if cache else 'off'}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ansiballz-") as tmp:
        work = Path(tmp)
        playbook = work / "localhost.yml"
        playbook.write_text(PLAYBOOK)
        state = work / "emulator"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
        subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "start", "--state-dir", str(state)], check=True,
                       env=base, capture_output=True)
        try:
            env = {**base, **read_env(state / "env"), "ANSIBLE_NOCOLOR": "1",
                   "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}"}
            run_once(playbook, env, cache=True)   # warm-up: fills the cache, as the first run after `make venv`
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(args.rounds):
                for cache in (False, True):
                    cpu, wall = run_once(playbook, env, cache)
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
        "# Localhost module runs: payload bytecode cache on and off",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/ansiballz_bytecode/run.py`: one "
        f"playbook of {TASKS} localhost module runs (10 `command`, 5 `stat`, 5 `amazon.aws.ec2_vpc_net_info`, "
        "5 `amazon.aws.s3_bucket_info`, 5 `dlami_info`; the AWS calls against the embedded emulator), "
        f"{args.rounds} rounds, off and on alternating in one process, after one warm-up run that fills the cache.",
        "",
        "| round | cache off: CPU-s | wall s | cache on: CPU-s | wall s |",
        "|---|---|---|---|---|",
        *[f"| {i + 1} | {off[0]:.2f} | {off[1]:.2f} | {on[0]:.2f} | {on[1]:.2f} |"
          for i, (off, on) in enumerate(zip(runs[False], runs[True], strict=True))],
        f"| median | {med[False][0]:.2f} | {med[False][1]:.2f} | {med[True][0]:.2f} | {med[True][1]:.2f} |",
        "",
        f"- CPU, on / off: **{ratio_cpu:.2f}** ({(med[False][0] - med[True][0]) / TASKS:.3f} CPU-s less per module "
        "run).",
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
