"""Trainer throughput, side by side: (a) our trainer end to end, (b) the GluonCV recipe, (c) the bare compute limit.

Same CPU, same model (ResNet-20 v1), same batch (128), same thread setting, on synthetic CIFAR-10 (real-looking
images, mixed labels). Ratios are taken within a round and the median over rounds is reported.

    benchmarks/trainer_throughput/run.sh [--rounds 3] [--batches 5] [--threads 2]

Each variant is a long-lived process (variants.py) that runs a burst of timed steps when told. Every burst of a
baseline X sits between two bursts of (a), and a/X is taken against the mean of those two: on a machine whose load
from other work changes by the minute, drift cancels to first order. Both wall-clock img/s and img per CPU-second
(all threads and child processes of the variant, DataLoader workers included) are reported: under heavy load the
wall clock also measures how much of the CPU each variant wins from the scheduler (more processes win more),
while CPU-seconds measure the work each needs per image.

(a)  our trainer's training loop (training.train.Trainer.train_epoch): batch sampling, augmentation, copy in,
     forward, backward, step, metrics.
(b)  the GluonCV recipe, hybridized (its documented command line) and imperative (the script without --mode).
(c)  forward, backward and step on one resident batch, imperative and hybridized; the faster is the limit.

With --full-epoch, it then trains one real epoch on a full-size (50,000-image) synthetic set through the CLI
(`python -m training.train`, defaults otherwise) and reports that epoch's seconds from its metrics.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# name: (variants.py variant, mode)
VARIANTS = {"a_trainer": ("trainer", "imperative"), "b_recipe_hybrid": ("recipe", "hybrid"),
            "b_recipe_imperative": ("recipe", "imperative"), "c_bare_imperative": ("bare", "imperative"),
            "c_bare_hybrid": ("bare", "hybrid")}
OTHERS = [name for name in VARIANTS if name != "a_trainer"]


class Variant:
    """One variant's process; `burst(k)` runs k timed steps in it and returns (images, seconds)."""

    def __init__(self, name: str, data_dir: Path, size: int, env: dict[str, str], work: Path):
        variant, mode = VARIANTS[name]
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "variants.py"), variant, "--data-dir", str(data_dir), "--mode", mode,
             "--size", str(size), "--work", str(work / name)],
            cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, command: str | None, expect: str) -> list[str]:
        if command:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(f"BENCH {expect}"):
                return line.split()[2:]
        raise SystemExit(f"{self.name}: process ended (exit {self.proc.wait()}) before answering {command!r}")

    def ready(self) -> None:
        self._ask(None, "READY")

    def burst(self, k: int) -> tuple[int, float, float]:
        images, wall, cpu = self._ask(f"run {k}", "DONE")
        return int(images), float(wall), float(cpu)

    def eval_seconds_per_image(self) -> float:
        return float(self._ask("eval", "EVAL")[0])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def measure_full_epoch(work: Path, env: dict[str, str]) -> dict:
    """One real training epoch on a 50,000-image synthetic set (10,000 test images), through the CLI."""
    out = work / "full_epoch"
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (a finished one would be a no-op)
    subprocess.run([sys.executable, "-m", "training.train", "--dataset", "synthetic", "--data-dir",
                    str(work / "data50k"), "--synthetic-size", "50000", "--epochs", "1", "--output-dir", str(out),
                    "--log-interval", "100"],
                   cwd=ROOT, env=env, check=True)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"seconds": metrics["seconds"], "train_seconds": metrics["train_seconds"],
            "images_per_sec": metrics["images_per_sec"], "val_acc": metrics["val_acc"],
            "synthetic_data": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds: a, b1, a, b2, a, c1, a, c2, a (order rotates)")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per burst")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for every variant")
    parser.add_argument("--size", type=int, default=5000, help="synthetic training images (test split: size / 5)")
    parser.add_argument("--work", type=Path, default=ROOT / ".run" / "bench" / "trainer_throughput")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--full-epoch", action="store_true", help="then train one real epoch on 50,000 images")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from training import data

    data_dir = data.ensure_synthetic(args.work / "data", args.size)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()
    variants = {name: Variant(name, data_dir, args.size, env, args.work) for name in VARIANTS}
    try:
        for v in variants.values():
            v.ready()
        totals = {name: [0, 0.0, 0.0] for name in VARIANTS}
        ratios_to_a: dict[str, list[float]] = {name: [] for name in OTHERS}

        def burst(name: str, r: int) -> float:
            images, wall, cpu = variants[name].burst(args.batches)
            for i, value in enumerate((images, wall, cpu)):
                totals[name][i] += value
            print(f"round {r + 1}: {name:22s} {images / wall:8.1f} img/s   {images / cpu:6.1f} img per CPU-second "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            return images / wall

        for r in range(args.rounds):
            a_before = burst("a_trainer", r)
            for name in OTHERS[r % len(OTHERS):] + OTHERS[:r % len(OTHERS)]:  # rotate the order every round
                other = burst(name, r)
                a_after = burst("a_trainer", r)
                ratios_to_a[name].append((a_before + a_after) / 2 / other)  # a, X, a: drift cancels to first order
                a_before = a_after
        eval_per_image = variants["a_trainer"].eval_seconds_per_image()
    finally:
        for v in variants.values():
            v.close()

    ratios = {"a/b (recipe as documented, hybrid)": ratios_to_a["b_recipe_hybrid"],
              "a/b (recipe without --mode, imperative)": ratios_to_a["b_recipe_imperative"],
              "a/c (faster bare mode)": [min(ci, ch) for ci, ch in zip(ratios_to_a["c_bare_imperative"],
                                                                       ratios_to_a["c_bare_hybrid"], strict=True)],
              "c imperative / c hybrid": [ch / ci for ci, ch in zip(ratios_to_a["c_bare_imperative"],
                                                                    ratios_to_a["c_bare_hybrid"], strict=True)]}
    medians = {k: statistics.median(v) for k, v in ratios.items()}
    overall = {name: images / wall for name, (images, wall, _) in totals.items()}
    per_cpu = {name: images / cpu for name, (images, _, cpu) in totals.items()}
    cpu_ratios = {"a/b (recipe as documented, hybrid)": per_cpu["a_trainer"] / per_cpu["b_recipe_hybrid"],
                  "a/b (recipe without --mode, imperative)": per_cpu["a_trainer"] / per_cpu["b_recipe_imperative"],
                  "a/c (faster bare mode)": per_cpu["a_trainer"] / max(per_cpu["c_bare_imperative"],
                                                                      per_cpu["c_bare_hybrid"]),
                  "c imperative / c hybrid": per_cpu["c_bare_imperative"] / per_cpu["c_bare_hybrid"]}
    epoch_estimate = 50000 / overall["a_trainer"] + 10000 * eval_per_image
    full_epoch = measure_full_epoch(args.work, env) if args.full_epoch else None
    report = {
        "ratios_median": medians, "ratios_per_round": ratios, "images_per_sec_overall": overall,
        "images_per_cpu_second": per_cpu, "ratios_by_cpu_seconds": cpu_ratios,
        "full_epoch_seconds_estimate": epoch_estimate,
        "full_epoch_note": "estimated from partial epochs: 50000 / (a) img/s + 10000 test images x measured "
                           "evaluation seconds per image",
        "full_epoch_measured": full_epoch,
        "setup": {"omp_num_threads": args.threads, "batch_size": 128, "model": "resnet20_v1", "rounds": args.rounds,
                  "timed_batches_per_burst": args.batches, "synthetic_size": args.size,
                  "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                  **{pkg: metadata.version(pkg) for pkg in ("mxnet", "numpy", "gluoncv")},
                  "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
    }
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nOMP_NUM_THREADS={args.threads}, batch 128, ResNet-20 v1, {args.rounds} interleaved rounds, bursts "
          f"of {args.batches} timed batches, synthetic CIFAR-10")
    for name in VARIANTS:
        print(f"  {name:22s} {overall[name]:8.1f} img/s (all rounds)   {per_cpu[name]:6.1f} img per CPU-second")
    print("  ratio                                    wall clock, median of rounds     by CPU-seconds")
    for name, value in medians.items():
        print(f"  {name:40s} {value:5.2f}  (rounds: {', '.join(f'{x:.2f}' for x in ratios[name])})"
              f"{cpu_ratios[name]:10.2f}")
    print(f"  full 50k-image epoch (estimated from partial epochs): {epoch_estimate:.0f} s "
          f"({epoch_estimate / 60:.1f} min)")
    if full_epoch:
        print(f"  full 50k-image epoch (measured, one real epoch through the CLI): {full_epoch['seconds']:.0f} s "
              f"({full_epoch['images_per_sec']:.0f} img/s training, validation accuracy {full_epoch['val_acc']:.3f} "
              f"on SYNTHETIC data)")
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
