"""Local-mode overhead: sagemaker_training_job with instance_type local, against train.py run directly.

Both sides run the same trainer (training/train.py) with the same hyperparameters on the same generated
CIFAR-10 set, with the same OMP_NUM_THREADS, in interleaved repetitions (direct, local, local, direct, ...)
so that drift in the shared machine's load hits both alike.

- direct: `cd training && python train.py --data-dir D --output-dir O <hyperparameters>`, timed as a process.
- local:  `ansible-playbook local_job.yml`: one sagemaker_training_job task (pack and store the code, stage the
  /opt/ml layout, run the job under the container contract, pack and store model.tar.gz, wait), timed as the
  whole ansible-playbook process. The job's record splits that time into its phases.

    .venv/bin/python benchmarks/sagemaker_local/run.py                 # 3 pairs -> RESULTS.md
    .venv/bin/python benchmarks/sagemaker_local/run.py --pairs 1 --size 512 --epochs 1   # a quick look
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
BIN = Path(sys.executable).parent
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"


def hyperparameters(args: argparse.Namespace) -> dict[str, object]:
    return {"dataset": "synthetic", "synthetic-size": args.size, "model": "resnet20_v1", "epochs": args.epochs,
            "batch-size": args.batch_size, "lr": 0.05, "log-interval": 0}


def cli(hps: dict[str, object]) -> list[str]:
    return [item for key in sorted(hps) for item in (f"--{key}", str(hps[key]))]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_direct(work: Path, data: Path, hps: dict[str, object], env: dict[str, str]) -> dict[str, float]:
    out = work / f"direct-{uuid.uuid4().hex[:8]}"
    argv = [str(TRAIN_PYTHON), "train.py", *cli(hps), "--data-dir", str(data), "--output-dir", str(out)]
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(argv, cwd=ROOT / "training", env=env, check=True, capture_output=True)
    return {"wall": time.perf_counter() - start, "cpu": children_cpu() - cpu}


def _phase_seconds(record: dict) -> dict[str, float]:
    stamps = {t["status"]: dt.datetime.fromisoformat(t["start_time"]).timestamp()
              for t in record["secondary_status_transitions"]}
    created = dt.datetime.fromisoformat(record["creation_time"]).timestamp()
    return {"prepare": stamps["Training"] - created, "train": stamps["Uploading"] - stamps["Training"],
            "upload": stamps["Completed"] - stamps["Uploading"]}


def run_local(work: Path, data: Path, hps: dict[str, object], env: dict[str, str]) -> dict[str, float]:
    job = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"bench_job": job, "bench_source": str(ROOT / "training"), "bench_python": str(TRAIN_PYTHON),
             "bench_local_dir": str(work / "local"), "bench_hyperparameters": hps, "bench_data": str(data),
             "bench_output": str(work / "output")}
    argv = [str(BIN / "ansible-playbook"), str(HERE / "local_job.yml"), "-e", json.dumps(extra)]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env={**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
                                               "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                                               "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json"},
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    ansible_cpu = children_cpu() - cpu  # ansible-playbook and the module; the detached job is counted below
    task = json.loads(done.stdout[done.stdout.index("{"):])["plays"][0]["tasks"][0]
    record = task["hosts"]["localhost"]["training_job"]
    job_record = json.loads((work / "local" / "training-jobs" / job / "record.json").read_text())
    job_cpu = job_record["_local"]["cpu_seconds"]  # the job's supervisor and the trainer it ran
    span = task["task"]["duration"]
    task_wall = (dt.datetime.fromisoformat(span["end"].replace("Z", "+00:00"))
                 - dt.datetime.fromisoformat(span["start"].replace("Z", "+00:00"))).total_seconds()
    return {"wall": wall, "task": task_wall, "cpu": ansible_cpu + job_cpu, "ansible_cpu": ansible_cpu,
            **_phase_seconds(record)}


def report(args: argparse.Namespace, runs: list[tuple[str, dict[str, float]]]) -> str:
    direct = [r for side, r in runs if side == "direct"]
    local = [r for side, r in runs if side == "local"]
    med = statistics.median
    wall_d, wall_l = med(r["wall"] for r in direct), med(r["wall"] for r in local)
    cpu_d, cpu_l = med(r["cpu"] for r in direct), med(r["cpu"] for r in local)
    module = med(r["task"] - r["train"] for r in local)  # what local mode adds around the trainer process
    ansible = med(r["wall"] - r["task"] for r in local)  # ansible-playbook's own start and end
    total = med(r["wall"] - r["train"] for r in local)  # everything but the trainer process
    rows = "\n".join(
        f"| {i // 2 + 1} | {side} | {r['wall']:.1f} | "
        + (f"{r['task']:.1f} | {r['train']:.1f} | {r['prepare']:.2f} | {r['upload']:.2f} | "
           f"{r['task'] - r['train']:.2f} |" if side == "local" else "- | - | - | - | - |")
        + f" {r['cpu']:.1f} |" for i, (side, r) in enumerate(runs))
    load = os.getloadavg()
    return f"""# SageMaker local mode: overhead against train.py run directly

Measured {dt.date.today().isoformat()} by `benchmarks/sagemaker_local/run.py --pairs {args.pairs} --size {args.size}
--epochs {args.epochs} --batch-size {args.batch_size}` on this machine ({os.cpu_count()} vCPUs, {platform.machine()},
shared with other work: load average {load[2]:.1f} over the last 15 minutes at the end; OMP_NUM_THREADS={args.threads}),
Python {platform.python_version()}, mxnet 1.9.1 CPU. Same trainer, hyperparameters, generated data and thread count
on both sides; interleaved repetitions (direct, local, local, direct, ...).

| median of {args.pairs} runs | direct train.py | local mode | local / direct |
|---|---|---|---|
| wall time, whole command (s) | {wall_d:.1f} | {wall_l:.1f} | {wall_l / wall_d:.3f} |
| local mode's own wall time around the trainer (s) | | {module:.2f} | {1 + module / wall_d:.3f} |
| ansible-playbook start and end (s) | | {ansible:.2f} | {1 + ansible / wall_d:.3f} |
| **overhead: whole command minus the trainer (s)** | | **{total:.2f}** | **{1 + total / wall_d:.3f}** |
| CPU time, every process (s) | {cpu_d:.1f} | {cpu_l:.1f} | {cpu_l / cpu_d:.3f} |

- *Local mode's own wall time* is the module task's duration (ansible's JSON callback) minus the trainer process's
  (the job's Training phase): packing and storing the code, staging /opt/ml, starting the supervisor, packing and
  storing model.tar.gz, and the module's polling. It is measured inside each local run, so the machine's load
  varies little within it; the ratio puts it over the median direct run.
- *ansible-playbook start and end* is what any task run through ansible-playbook pays.
- *Overhead* is both together, per local run: its whole wall time minus its trainer process. It is the figure to
  read: the trainer process is the same program with the same arguments on both sides.
- The whole-command wall ratio compares runs minutes apart on a shared machine, so it carries that machine's
  swings in load (see the per-run table). CPU time counts every process: for local mode ansible-playbook (which
  also spends CPU while it waits on a long task), the module, the job's supervisor and the trainer.

Per run (seconds; local phases from the job's secondary status transitions):

| pair | side | wall | module task | trainer | prepare | upload | task - trainer | CPU |
|---|---|---|---|---|---|---|---|---|
{rows}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved direct/local pairs")
    parser.add_argument("--size", type=int, default=8192, help="generated training images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS on both sides")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="where the report goes")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    hps = hyperparameters(args)
    with tempfile.TemporaryDirectory(prefix="dlfleet-bench-sm-") as tmp:
        work = Path(tmp)
        data = work / "data"
        subprocess.run([str(TRAIN_PYTHON), "-m", "training.data", "synthetic", "--out", str(data), "--size",
                        str(args.size)], cwd=ROOT, check=True, capture_output=True)
        run_local(work, data, {**hps, "epochs": 1, "limit-batches": 2}, env)  # warm the caches; not counted
        runs: list[tuple[str, dict[str, float]]] = []
        for pair in range(args.pairs):
            order = ("direct", "local") if pair % 2 == 0 else ("local", "direct")
            for side in order:
                result = (run_direct if side == "direct" else run_local)(work, data, hps, env)
                runs.append((side, result))
                print(f"pair {pair + 1} {side}: {result['wall']:.1f} s", flush=True)
    text = report(args, runs)
    print(text)
    print(json.dumps({"args": vars(args) | {"output": str(args.output)}, "runs": runs}))
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
