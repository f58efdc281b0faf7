"""AWS module runs on the controller with the venv's botocore data cache (scripts/botocore_data_cache.py) and without.

One playbook of localhost AWS module runs against the embedded emulator, as the provision, teardown and SageMaker
plays make them: amazon.aws's (`ec2_vpc_net_info`, `s3_bucket_info`, `ec2_key_info`) and dlfleet's own
(`dlami_info`: EC2 and SSM clients; `ec2_gpu_quota_info`: EC2 and Service Quotas). It runs ROUNDS times each way,
alternating (off, on, off, on, ...) in this one process, after one warm-up run each way (the one with the cache on
fills it, as the first run after `make venv` does). A run's CPU is the ansible-playbook process tree's (user +
system, from the children's rusage): the playbook's own start and workers too, which the cache does not touch.

Writes RESULTS.md next to this file: per-run CPU and wall, the medians and their ratio (on / off).

    .venv/bin/python benchmarks/botocore_data_cache/run.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from side_by_side import ROOT, alternate, emulator, machine, measure, medians, report  # noqa: E402

BIN = ROOT / ".venv" / "bin"
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


def run(path: Path, env: dict[str, str], cache: bool):
    return measure([str(BIN / "ansible-playbook"), str(path)], {**env, "DLFLEET_BOTOCORE_CACHE": "1" if cache else "0"},
                   f"the playbook (cache {'on' if cache else 'off'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    runs_n = len(TASKS) * EACH

    with tempfile.TemporaryDirectory(prefix="bench-botocore-data-") as tmp, emulator(Path(tmp), BIN) as env:
        path = Path(tmp) / "aws.yml"
        path.write_text(playbook())
        runs = alternate({"off": lambda: run(path, env, False), "on": lambda: run(path, env, True)}, args.rounds)

    off, on = medians(runs["off"]), medians(runs["on"])
    report(args.results, [
        "# AWS module runs on the controller: botocore data cache on and off",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/botocore_data_cache/run.py`: one "
        f"playbook of {runs_n} localhost module runs ({EACH} each of {', '.join(f'`{m}`' for m in TASKS)}) against "
        f"the embedded emulator, {args.rounds} rounds, off and on alternating in one process, after one warm-up "
        "run each. CPU is the whole ansible-playbook process tree's.",
    ], runs, {"off": "cache off", "on": "cache on"}, [
        f"- CPU, on / off: **{on[0] / off[0]:.2f}** ({(off[0] - on[0]) / runs_n:.3f} CPU-s less per module run).",
        f"- Wall, on / off: **{on[1] / off[1]:.2f}**.",
    ], machine(BIN / "ansible-playbook"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
