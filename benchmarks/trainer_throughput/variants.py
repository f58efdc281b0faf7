"""One benchmark variant per process, driven over stdin so that the variants can take turns in short bursts.

    python variants.py {trainer,recipe,bare} --data-dir D --mode {hybrid,imperative} [--size N]

Protocol: after setup and WARMUP untimed steps the process prints `BENCH READY`; then each line `run K` makes it
run K more timed steps and print `BENCH DONE <images> <wall seconds> <cpu seconds>`; `eval` prints
`BENCH EVAL <seconds per image>` (trainer only); end of input ends it.

trainer: our trainer's own training loop (training.train.Trainer.train_epoch, limited to K batches): batch
        sampling, vectorised augmentation, copy in, forward, backward, step, metrics on the device.
recipe: what an ML engineer writes from GluonCV's CIFAR-10 training script (scripts/classification/cifar/
        train_cifar10.py): gluoncv's cifar_resnet20_v1, Xavier init, NAG (lr 0.1, momentum 0.9, wd 1e-4), a gluon
        DataLoader with 2 worker processes applying gluoncv's RandomCrop(32, pad=4), RandomFlipLeftRight,
        ToTensor and Normalize per image, shuffle and last_batch='discard'; per batch the loss sum is read back
        with asscalar() and the accuracy metric is updated, as the script does. The CIFAR10 dataset class would
        download the real data, so the same uint8 HWC images come from an ArrayDataset over the benchmark's data.
        "--mode hybrid" is the recipe's documented command line; "imperative" is the script without --mode.
        Each burst starts a fresh iterator and runs LEAD_IN untimed batches first: the loader prefetches
        2 x workers batches, so the timed batches see the steady state, with the workers transforming while
        the network trains, as they do through an epoch. The sampler (random order, as shuffle=True) ends each
        pass with the burst, so no worker is still busy when the next variant's burst starts.
bare:   the compute limit: forward, backward and trainer step of our ResNet-20 v1 on one resident batch of
        normalised images, no data pipeline, nothing read back but a wait for the step to finish.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from training import data, models  # noqa: E402  (the project root is put on the path just above)

BATCH = 128  # images per step, as in the comparison
WARMUP = 3  # untimed steps after setup (MKLDNN primitive creation, first allocations)
LEAD_IN = 4  # recipe only: untimed batches at the start of each burst (= the DataLoader's prefetch depth)
GLUONCV_MEAN = [0.4914, 0.4822, 0.4465]  # the recipe's normalisation constants, as it gives them
GLUONCV_STD = [0.2023, 0.1994, 0.2010]


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) used so far by this process and its live descendants, such as the
    DataLoader's worker processes. A contention-robust measure of the work done, next to the wall clock."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)  # ppid, utime + stime
    tree, total, frontier = {os.getpid()}, 0.0, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        total += stats.get(parent, (0, 0.0))[1]
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return total


class Clock:
    """Wall and CPU time of a timed section."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), tree_cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, tree_cpu_seconds() - self.cpu


class BurstSampler(gluon.data.Sampler):
    """Random order like shuffle=True, but each pass yields exactly `batches` batches, so that no prefetched work of
    the DataLoader's workers is left running into the next variant's burst."""

    def __init__(self, length: int):
        self.length, self.batches = length, 1
        self.rng = np.random.default_rng(0)

    def __iter__(self):
        return iter(self.rng.permutation(self.length)[:self.batches * BATCH].tolist())

    def __len__(self) -> int:
        return self.batches * BATCH


def recipe(data_dir: Path, mode: str):
    from gluoncv.data import transforms as gcv_transforms
    from gluoncv.model_zoo import get_model
    from mxnet.gluon.data.vision import transforms

    cifar = data.load(data_dir)
    images = mx.nd.array(cifar.train_images.transpose(0, 2, 3, 1), dtype="uint8")  # HWC, as CIFAR10 yields them
    dataset = gluon.data.ArrayDataset(images, cifar.train_labels)
    transform_train = transforms.Compose([
        gcv_transforms.RandomCrop(32, pad=4),
        transforms.RandomFlipLeftRight(),
        transforms.ToTensor(),
        transforms.Normalize(GLUONCV_MEAN, GLUONCV_STD),
    ])
    sampler = BurstSampler(len(dataset))
    loader = gluon.data.DataLoader(dataset.transform_first(transform_train), batch_size=BATCH, sampler=sampler,
                                   last_batch="discard", num_workers=2)
    ctx = [mx.cpu()]
    net = get_model("cifar_resnet20_v1", classes=10)
    if mode == "hybrid":
        net.hybridize()
    net.initialize(mx.init.Xavier(), ctx=ctx)
    trainer = gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.1, "wd": 1e-4, "momentum": 0.9})
    train_metric = mx.metric.Accuracy()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    train_loss = 0.0

    def step(batch) -> None:
        nonlocal train_loss
        x = gluon.utils.split_and_load(batch[0], ctx_list=ctx, batch_axis=0)
        y = gluon.utils.split_and_load(batch[1], ctx_list=ctx, batch_axis=0)
        with autograd.record():
            output = [net(xi) for xi in x]
            loss = [loss_fn(yhat, yi) for yhat, yi in zip(output, y, strict=True)]
        for one in loss:
            one.backward()
        trainer.step(BATCH)
        train_loss += sum(one.sum().asscalar() for one in loss)
        train_metric.update(y, output)

    def burst(k: int) -> tuple[int, Clock]:
        sampler.batches = LEAD_IN + k
        batches = iter(loader)
        for _ in range(LEAD_IN):
            step(next(batches))
        with Clock() as clock:
            for _ in range(k):
                step(next(batches))
        return k * BATCH, clock

    return burst


def bare(data_dir: Path, mode: str):
    cifar = data.load(data_dir)
    x = mx.nd.array(data.BatchAugmenter().normalize(cifar.train_images[:BATCH]))
    y = mx.nd.array(cifar.train_labels[:BATCH].astype(np.float32))  # real, mixed labels (no denormal trap)
    net = models.get_model("resnet20_v1")
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net(x[:1])
    if mode == "hybrid":
        net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.1, "wd": 1e-4, "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def burst(k: int) -> tuple[int, Clock]:
        with Clock() as clock:
            for _ in range(k):
                with autograd.record():
                    loss = loss_fn(net(x), y)
                loss.backward()
                trainer.step(BATCH)
                loss.wait_to_read()
        return k * BATCH, clock

    return burst


def ours(data_dir: Path, mode: str, size: int, work: Path):
    from training import train

    args = ["--dataset", "synthetic", "--data-dir", str(data_dir), "--synthetic-size", str(size), "--model",
            "resnet20_v1", "--batch-size", str(BATCH), "--epochs", "1000", "--log-interval", "0",
            "--output-dir", str(work), "--hybridize", str(mode == "hybrid"), "--gpus", "0"]
    trainer = train.Trainer(train.resolve_config(args, {}), work)
    epoch = 0

    def burst(k: int) -> tuple[int, Clock]:
        nonlocal epoch
        trainer.cfg.limit_batches = k
        with Clock() as clock:
            metrics = trainer.train_epoch(epoch)
        epoch += 1
        return metrics["images"], clock

    def evaluate() -> float:
        start = time.perf_counter()
        trainer.evaluate()
        return (time.perf_counter() - start) / len(trainer.data.test_labels)

    return burst, evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=("trainer", "recipe", "bare"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("hybrid", "imperative"), required=True)
    parser.add_argument("--size", type=int, default=5000, help="synthetic set size (trainer: must match the data)")
    parser.add_argument("--work", type=Path, default=Path("bench-out"), help="trainer: output folder")
    args = parser.parse_args()
    evaluate = None
    if args.variant == "trainer":
        burst, evaluate = ours(args.data_dir, args.mode, args.size, args.work)
    else:
        burst = (recipe if args.variant == "recipe" else bare)(args.data_dir, args.mode)
    burst(WARMUP)
    print("BENCH READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["run"]:
            images, clock = burst(int(command[1]))
            print(f"BENCH DONE {images} {clock.wall:.6f} {clock.cpu:.3f}", flush=True)
        elif command == ["eval"] and evaluate is not None:
            print(f"BENCH EVAL {evaluate():.9f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
