"""AWS module runs on the controller with the venv's botocore data cache (scripts/botocore_data_cache.py) and without.

One playbook of localhost AWS module runs against the embedded emulator, as the provision, teardown and SageMaker
plays make them: amazon.aws's (`ec2_vpc_net_info`, `s3_bucket_info`, `ec2_key_info`) and dlfleet's own
(`dlami_info`: EC2 and SSM clients; `ec2_gpu_quota_info`: EC2 and Service Quotas). It runs ROUNDS times each way,
alternating (off, on, off, on, ...) in this one process, after one warm-up run with the cache on (which fills it, as
the first run after `make venv` does). A run's CPU is the ansible-playbook process tree's (user + system, from the
children's rusage): the playbook's own start and workers too, which the cache does not touch.

Writes RESULTS.md next to this file: per-run CPU and wall, the medians and their ratio (on / off).

    .venv/bin/python benchmarks/botocore_data_cache/run.py [--rounds 3]
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

TASKS = {"amazon.aws.ec2_vpc_net_info": {"region": "us-east-1"}, "amazon.aws.s3_bucket_info": {"region": "us-east-1"},
         "amazon.aws.ec2_key_info": {"region": "us-east-1"}, "dlami_info": {"region": "us-east-1"},
         "ec2_gpu_quota_info": {"region": "us-east-1", "fleet": [{"instance_type": "g5.xlarge", "count": 1}]}}
EACH = 4


def playbook() -> str:
    lines = ["- name: AWS module runs on the controller", "  hosts: localhost", "  connection: local",
             "  gather_facts: false", "  vars:", '    ansible_python_interpreter: "{{ ansible_playbook_python }}"',
             "  tasks:"]
    for module, args in TASKS.items():
        lines += [f"    - name: {module}", f"      {module}: {args!r}".replace("'", '"'),
                  f'      loop: "{{{{ range({EACH}) | list }}}}"']
    return "\n".join(lines) + "\n"


def run_once(path: Path, env: dict[str, str], cache: bool) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(path)], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "DLFLEET_BOTOCORE_CACHE": "1" if cache else "0"})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        side = "on" if cache else "off"
        sys.exit(f"the playbook failed (cache {side}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    runs_n = len(TASKS) * EACH

    with tempfile.TemporaryDirectory(prefix="bench-botocore-data-") as tmp:
        work = Path(tmp)
        path = work / "aws.yml"
        path.write_text(playbook())
        state = work / "emulator"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_", "DLFLEET_"))}
        subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "start", "--state-dir", str(state), "--no-persist"],
                       check=True, env=base, capture_output=True)
        try:
            env = {**base, **read_env(state / "env"), "ANSIBLE_NOCOLOR": "1",
                   "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}"}
            run_once(path, env, cache=True)   # warm-up: fills the cache, as the first run after `make venv`
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for i in range(args.rounds):
                for cache in (False, True):
                    cpu, wall = run_once(path, env, cache)
                    runs[cache].append((cpu, wall))
                    print(f"round {i + 1} cache {'on ' if cache else 'off'}: {cpu:.2f} CPU-s, {wall:.2f} s",
                          flush=True)
        finally:
            subprocess.run([str(ROOT / "scripts" / "aws-emulator"), "stop", "--state-dir", str(state)], env=base,
                           capture_output=True)

    med = {c: (statistics.median(r[0] for r in runs[c]), statistics.median(r[1] for r in runs[c])) for c in runs}
    ansible = subprocess.run([str(BIN / "ansible-playbook"), "--version"], capture_output=True, text=True)
    lines = [
        "# AWS module runs on the controller: botocore data cache on and off",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/botocore_data_cache/run.py`: one "
        f"playbook of {runs_n} localhost module runs ({EACH} each of {', '.join(f'`{m}`' for m in TASKS)}) against "
        f"the embedded emulator, {args.rounds} rounds, off and on alternating in one process, after one warm-up "
        "run that fills the cache. CPU is the whole ansible-playbook process tree's.",
        "",
        "| round | cache off: CPU-s | wall s | cache on: CPU-s | wall s |",
        "|---|---|---|---|---|",
        *[f"| {i + 1} | {off[0]:.2f} | {off[1]:.2f} | {on[0]:.2f} | {on[1]:.2f} |"
          for i, (off, on) in enumerate(zip(runs[False], runs[True], strict=True))],
        f"| median | {med[False][0]:.2f} | {med[False][1]:.2f} | {med[True][0]:.2f} | {med[True][1]:.2f} |",
        "",
        f"- CPU, on / off: **{med[True][0] / med[False][0]:.2f}** "
        f"({(med[False][0] - med[True][0]) / runs_n:.3f} CPU-s less per module run).",
        f"- Wall, on / off: **{med[True][1] / med[False][1]:.2f}**.",
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
