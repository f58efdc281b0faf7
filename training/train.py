"""CIFAR-10 training with MXNet Gluon: one script for EC2 hosts, SageMaker script mode and local runs.

    python -m training.train --dataset synthetic --synthetic-size 5000 --epochs 2 --output-dir out
    cd training && python train.py --epochs 2 ...        (SageMaker entry point; SM_* variables honoured)

Serving is inference.py's job (the MXNet serving container imports the module named by SAGEMAKER_PROGRAM from
/opt/ml/model/code; export_model ships inference.py there): this script only trains.

Measured (benchmarks/trainer_throughput; ResNet-20 v1, batch 128, OMP_NUM_THREADS=2, 2 shared Xeon vCPUs with
AVX-512/AMX, Python 3.11, mxnet 1.9.1 CPU/MKLDNN, numpy 1.23.5; interleaved with the baselines): 0.92-0.97x the
bare forward/backward/step loop at load 1-2 (0.86x at load 6-15); 1.5-1.6x the GluonCV recipe's img/s as
documented (hybridized) at load 1-2, 1.9-2.2x at load 6-15; about 1.0x the recipe run imperative, which already
runs at the compute limit. Imperative is the default: hybridize measured 1.3x slower (1.6x more CPU per image).
A full 50k-image synthetic epoch: 138 s. Details in training/README.md.

Outputs in --output-dir: metrics.jsonl (one line per epoch), curves.png, config.json, the exported model
(model-symbol.json, model-0000.params, model-shapes.json, synset.txt; in --model-dir when that differs) and
COMPLETE, written last. Checkpoints every epoch (atomic); rerunning the same command resumes, and a finished
run does nothing and says so.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

try:
    from training import checkpoint, data, dist, inference, launch, models
    from training.compat import zip_strict
except ImportError:  # flat layout: `cd training && python train.py`, or SageMaker's code folder
    import checkpoint
    import data
    import dist
    import inference
    import launch
    import models
    from compat import zip_strict

CHECKPOINTS_UNDER_BASE = "checkpoints"  # CheckpointConfig's default LocalPath is /opt/ml/checkpoints (SM_MODEL_DIR's
#                                        sibling); SageMaker syncs it with CheckpointConfig's S3Uri
FAILURE_FILE = "failure"  # in $SM_OUTPUT_DIR: SageMaker's FailureReason is its first 1024 characters
COMPLETE_FILE = "COMPLETE"
METRICS_FILE = "metrics.jsonl"
# config keys that do not change what is trained: a rerun may differ in these and still resume
NON_IDENTITY_KEYS = {"data_dir", "test_dir", "output_dir", "model_dir", "checkpoint_dir", "log_interval",
                     "keep_checkpoints", "gpus"}


@dataclass
class Config:
    """Every hyperparameter and path, with its unit. CLI flags are the field names with dashes (or underscores)."""

    dataset: str = "cifar10"  # cifar10 (real, downloaded and verified) or synthetic (generated, labelled so)
    data_dir: str = ""  # data folder; default $SM_CHANNEL_TRAINING, else ./data/<dataset>
    test_dir: str = ""  # test/validation data folder; default $SM_CHANNEL_TEST, else the data folder
    synthetic_size: int = 50000  # training images generated for --dataset synthetic (test split: size / 5)
    synthetic_seed: int = 0  # generator seed for --dataset synthetic
    model: str = "resnet20_v1"  # resnet<6n+2>_v1|v2 or wrn<6n+4>_<k>
    base_width: int = 16  # channels of the first stage (16 in the papers; smaller for quick tests)
    dropout: float = 0.0  # dropout probability inside v2 / WRN blocks
    epochs: int = 30  # passes over the training set
    batch_size: int = 128  # images per step on this worker (split over its GPUs)
    lr: float = 0.1  # peak learning rate
    optimizer: str = "nag"  # nag (Nesterov momentum) or sgd (heavy-ball momentum)
    momentum: float = 0.9  # momentum coefficient
    wd: float = 1e-4  # L2 weight decay
    lr_schedule: str = "cosine"  # cosine (to zero) or step (x lr_decay at each of lr_decay_epochs)
    warmup_epochs: float = 0.0  # linear warmup from 0 to lr, in epochs (fractions allowed)
    lr_decay: float = 0.1  # step schedule: factor per decay
    lr_decay_epochs: str = ""  # step schedule: comma-separated epochs; default 50% and 75% of epochs
    label_smoothing: float = 0.0  # probability mass spread over the other classes (0 = off)
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup coefficient (0 = off)
    dtype: str = "float32"  # float32, or bfloat16 (AMP, CPUs with AVX512-BF16/AMX; measure before using)
    hybridize: bool = False  # run the network as a cached graph (static_alloc/static_shape); off: measured slower
    kvstore: str = "local"  # local, device, or dist_sync (MXNet parameter server; launch with training.launch)
    gpus: int = -1  # GPUs to use; -1 = $SM_NUM_GPUS, else all visible; 0 = CPU
    seed: int = 42  # seed for initialisation, shuffling, augmentation
    log_interval: int = 50  # print a progress line every this many batches (0 = never)
    limit_batches: int = 0  # stop each epoch after this many batches (0 = full epochs; for smoke tests/benchmarks)
    output_dir: str = ""  # results; default $SM_OUTPUT_DATA_DIR, else ./output
    model_dir: str = ""  # exported model; default $SM_MODEL_DIR, else the output folder
    checkpoint_dir: str = ""  # default /opt/ml/checkpoints when it exists (SageMaker), else OUT/checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept
    extra: dict = field(default_factory=dict)  # run facts filled in at start (versions, threads, rank)


CHOICES = {"dataset": ("cifar10", "synthetic"), "optimizer": ("nag", "sgd"), "lr_schedule": ("cosine", "step"),
           "dtype": ("float32", "bfloat16"), "kvstore": ("local", "device", "dist_sync", "dist_device_sync")}


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class UsageError(SystemExit):
    """A bad flag or hyperparameter: exit status 2 as with argparse, and the message kept for the failure file."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}"
        print(text, file=sys.stderr, flush=True)
        raise UsageError(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    comments = _field_comments()
    for f in fields(Config):
        if f.name == "extra":
            continue
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        text = comments.get(f.name, "").replace("%", "%%")
        kwargs = {"dest": f.name, "default": None, "help": f"{text} (default: {f.default!r})"}
        if f.type in ("bool", bool):
            kwargs.update(nargs="?", const=True, type=str2bool, metavar="BOOL")
        else:
            kwargs["type"] = {"int": int, "float": float}.get(str(f.type), str)
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
            if f.name == "model":
                kwargs["help"] += f"; e.g. {', '.join(models.model_names())}"
        parser.add_argument(*flags, **kwargs)
    return parser


def _field_comments() -> dict[str, str]:
    """The '# unit' comment of each Config field, read from this file (one source for code and --help)."""
    comments, inside = {}, False
    for line in Path(__file__).read_text().splitlines():
        inside = inside or line.startswith("class Config")
        if inside and ":" in line and "#" in line and line.startswith("    ") and not line.strip().startswith("#"):
            comments[line.split(":")[0].strip()] = line.split("#", 1)[1].strip()
        if inside and line.startswith("CHOICES"):
            break
    return comments


def _strip_platform_args(argv: list[str]) -> list[str]:
    """Drop hyperparameters that SageMaker adds for itself (sagemaker_*, and _tuning_objective_metric)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith(("--sagemaker_", "--_")):
            skip = "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def resolve_config(argv: list[str], env: dict[str, str]) -> Config:
    """CLI > SM_HPS > defaults; then fill paths from SM_* variables."""
    parser = build_parser()
    args = vars(parser.parse_args(_strip_platform_args(argv)))
    cfg = Config()
    known = {f.name: f for f in fields(Config)}
    for key, value in json.loads(env.get("SM_HPS") or "{}").items():
        name = key.replace("-", "_")
        if name in known and name != "extra" and args.get(name) is None:
            kind = str2bool if known[name].type in ("bool", bool) else type(getattr(cfg, name))
            setattr(cfg, name, kind(value))
    for name, value in args.items():
        if value is not None:
            setattr(cfg, name, value)
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            parser.error(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: choose one of {', '.join(choices)}")
    cfg.data_dir = cfg.data_dir or env.get("SM_CHANNEL_TRAINING") or f"data/{cfg.dataset}"
    cfg.test_dir = cfg.test_dir or env.get("SM_CHANNEL_TEST") or ""
    cfg.output_dir = cfg.output_dir or env.get("SM_OUTPUT_DATA_DIR") or "output"
    cfg.model_dir = cfg.model_dir or env.get("SM_MODEL_DIR") or cfg.output_dir
    if not cfg.checkpoint_dir:
        managed = sagemaker_checkpoint_dir(env)
        cfg.checkpoint_dir = managed if managed and os.path.isdir(managed) else os.path.join(cfg.output_dir,
                                                                                             "checkpoints")
    if cfg.gpus < 0:
        cfg.gpus = int(env["SM_NUM_GPUS"]) if env.get("SM_NUM_GPUS") else mx.context.num_gpus()
    _validate(cfg, parser)
    return cfg


def sagemaker_checkpoint_dir(env: dict[str, str]) -> str | None:
    """CheckpointConfig's default local path, /opt/ml/checkpoints, seen from the job's SM_MODEL_DIR (/opt/ml/model):
    the same folder in SageMaker and under a relocated /opt/ml (SAGEMAKER_BASE_DIR, local mode). SageMaker creates
    it only for a job with a CheckpointConfig; a job with another LocalPath passes --checkpoint-dir."""
    if not env.get("SM_MODEL_DIR"):
        return None
    return os.path.join(os.path.dirname(os.path.normpath(env["SM_MODEL_DIR"])), CHECKPOINTS_UNDER_BASE)


def _validate(cfg: Config, parser: argparse.ArgumentParser) -> None:
    try:
        models.get_model(cfg.model, base_width=cfg.base_width)
    except ValueError as err:
        parser.error(str(err))
    for name in ("epochs", "batch_size", "synthetic_size", "base_width"):
        if getattr(cfg, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be at least 1")
    if cfg.lr <= 0:
        parser.error(f"--lr {cfg.lr}: must be positive")
    if cfg.dtype == "bfloat16" and cfg.gpus > 0:
        parser.error("--dtype bfloat16 is for CPUs; use float32 on GPUs")
    if cfg.dtype == "bfloat16" and not bfloat16_supported():
        parser.error("--dtype bfloat16: MXNet has no bfloat16 kernels for this CPU (oneDNN's need AVX-512); "
                     "use float32")


def bfloat16_supported() -> bool:
    """Whether MXNet runs bfloat16 convolutions on this CPU. Without AVX-512 (an AVX2-only CPU, for one) its oneDNN
    kernels are missing and training would fail in the first batch with "could not create a primitive descriptor"."""
    bf16 = np.dtype([("bfloat16", np.uint16)])  # MXNet's own spelling of the type
    try:
        x = mx.nd.ones((1, 1, 3, 3), ctx=mx.cpu()).astype(bf16)
        mx.nd.Convolution(x, x, kernel=(3, 3), num_filter=1, no_bias=True).wait_to_read()
    except mx.base.MXNetError:
        return False
    return True


# -------------------------------------------------------------------------------------------------- schedule
def decay_epochs(cfg: Config) -> list[float]:
    if cfg.lr_decay_epochs:
        return [float(e) for e in cfg.lr_decay_epochs.split(",") if e.strip()]
    return [0.5 * cfg.epochs, 0.75 * cfg.epochs]


def lr_at(cfg: Config, t: float) -> float:
    """Learning rate at t epochs into training (fractional)."""
    if t < cfg.warmup_epochs:
        return cfg.lr * t / cfg.warmup_epochs
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(t >= e for e in decay_epochs(cfg))
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - cfg.warmup_epochs) / span)))


# --------------------------------------------------------------------------------------------------- outputs
def identity(cfg: Config) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in NON_IDENTITY_KEYS and k != "extra"}


def write_metrics(out: Path, history: list[dict]) -> None:
    checkpoint.atomic_write_text(out / METRICS_FILE, "".join(json.dumps(m, sort_keys=True) + "\n" for m in history))


def plot_curves(out: Path, history: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [m["train_acc"] for m in history], marker="o", label="train accuracy")
    ax_acc.plot(epochs, [m["val_acc"] for m in history], marker="o", label="validation accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = out / f".curves.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out / "curves.png")


def export_model(net: gluon.HybridBlock, model_dir: Path, label_names: list[str], ctx: mx.Context) -> None:
    """Export Normalize + net as model-symbol.json / model-0000.params (raw 0..255 NCHW input), with shapes
    and label names; also ship the inference handlers as code/inference.py for the serving container."""
    model_dir.mkdir(parents=True, exist_ok=True)
    deploy = models.Deployable(net, prefix="deploy_")
    deploy.hybridize()
    deploy(mx.nd.zeros((1, 3, 32, 32), ctx=ctx))
    deploy.export(str(model_dir / inference.MODEL_PREFIX), epoch=0)
    shapes = [{"name": "data", "shape": [1, 3, 32, 32]}]
    checkpoint.atomic_write_json(model_dir / f"{inference.MODEL_PREFIX}-shapes.json", shapes)
    checkpoint.atomic_write_text(model_dir / inference.LABELS_FILE, "".join(f"{n}\n" for n in label_names))
    (model_dir / "code").mkdir(exist_ok=True)
    shutil.copyfile(Path(inference.__file__), model_dir / "code" / "inference.py")


# -------------------------------------------------------------------------------------------------- training
class Trainer:
    """The training run: data, network, optimizer, checkpoints, and the epoch loop."""

    def __init__(self, cfg: Config, out: Path):
        self.cfg, self.out = cfg, out
        self.ckpt_root = Path(cfg.checkpoint_dir)
        self.ctx = [mx.gpu(i) for i in range(cfg.gpus)] or [mx.cpu()]
        self.dist = self._dist()
        self.rank, self.num_workers = (self.dist.rank, self.dist.num_workers) if self.dist else (0, 1)
        self.rng = np.random.default_rng([cfg.seed, self.rank])
        mx.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.data = self._load_data()
        self.augmenter = data.BatchAugmenter()
        if cfg.dtype == "bfloat16":
            from mxnet.contrib import amp

            amp.init(target_dtype="bfloat16")
        self.net = models.get_model(cfg.model, classes=len(self.data.label_names), base_width=cfg.base_width,
                                    dropout=cfg.dropout)
        self.net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=self.ctx)
        if cfg.hybridize:
            self.net.hybridize(static_alloc=True, static_shape=True)
        if self.dist:
            self.dist.attach(self.net.collect_params())
        self.trainer = gluon.Trainer(self.net.collect_params(), cfg.optimizer,
                                     {"learning_rate": cfg.lr, "momentum": cfg.momentum, "wd": cfg.wd},
                                     kvstore=None if self.dist else cfg.kvstore)
        sparse = cfg.label_smoothing == 0 and cfg.mixup_alpha == 0
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=sparse)
        self.history: list[dict] = []

    def _dist(self) -> dist.DistSync | None:
        if not self.cfg.kvstore.startswith("dist"):
            return None
        if "DMLC_ROLE" not in os.environ:
            raise SystemExit(f"--kvstore {self.cfg.kvstore} needs the DMLC_* variables of a parameter-server job: "
                             "start it with `python -m training.launch` (see training/README.md)")
        return dist.DistSync(self.cfg.kvstore, self.ctx)

    def _load_data(self) -> data.Cifar:
        cfg = self.cfg
        data_dir = Path(cfg.data_dir)
        if cfg.dataset == "synthetic":
            data.ensure_synthetic(data_dir, cfg.synthetic_size, cfg.synthetic_seed)
        elif data.find_binary_dir(data_dir) is None and data.find_recordio_pair(data_dir) is None:
            data.download(data_dir)
        loaded = data.load(data_dir, Path(cfg.test_dir) if cfg.test_dir else None)
        shard = np.arange(len(loaded.train_labels))[self.rank::self.num_workers]
        shard = shard[:len(loaded.train_labels) // self.num_workers]  # equal shards: equal steps on every worker
        if len(shard) < cfg.batch_size:
            raise SystemExit(f"--batch-size {cfg.batch_size} is larger than this worker's {len(shard)} training "
                             f"images; lower --batch-size or use more data")
        loaded.train_images, loaded.train_labels = loaded.train_images[shard], loaded.train_labels[shard]
        return loaded

    # ---------------------------------------------------------------------------------------- checkpoints
    def resume(self) -> int:
        """Load the newest good checkpoint; returns the number of finished epochs (0 for a fresh start)."""
        checkpoint.clean_partials(self.ckpt_root)
        found = checkpoint.checkpoints(self.ckpt_root)
        epoch = found[-1] if found else 0
        if self.dist:
            epoch = self._agree(epoch, found)
        if epoch == 0:
            if self.dist:
                self.dist.broadcast_params()
            return 0
        folder, state = checkpoint.load_state(self.ckpt_root, epoch)
        if state.get("identity") != identity(self.cfg):
            diff = sorted(k for k in identity(self.cfg) if state.get("identity", {}).get(k) != identity(self.cfg)[k])
            raise SystemExit(f"checkpoint {folder} belongs to a run with other settings ({', '.join(diff)}); "
                             f"rerun with the same settings, or use another --output-dir / --checkpoint-dir")
        self.net.load_parameters(str(folder / checkpoint.PARAMS_FILE), ctx=self.ctx)
        self.trainer.load_states(str(folder / checkpoint.TRAINER_FILE))
        self.history = state["history"][:epoch]
        self.rng.bit_generator.state = state["numpy_rng"]
        random.setstate(_tuplify(state["python_rng"]))
        if self.dist:
            self.dist.broadcast_params()
        print(f"resumed from {folder}: {epoch} of {self.cfg.epochs} epochs already done", flush=True)
        return epoch

    def _agree(self, epoch: int, found: list[int]) -> int:
        """Workers resume from the same epoch: the oldest newest-checkpoint among them (each keeps two)."""
        epochs = self.dist.agree_min(epoch)
        agreed = min(epochs)
        if agreed and agreed not in found:
            raise SystemExit(f"workers disagree on the resume point (epochs {epochs}) and this one "
                             f"lacks checkpoint {agreed}; clear {self.ckpt_root} on every worker to start over")
        return agreed

    def save_checkpoint(self, epoch: int) -> None:
        state = {"history": self.history, "identity": identity(self.cfg), "numpy_rng": self.rng.bit_generator.state,
                 "python_rng": random.getstate()}
        checkpoint.save(self.ckpt_root, epoch, self.net.save_parameters, self.trainer.save_states, state,
                        keep=self.cfg.keep_checkpoints)

    # ---------------------------------------------------------------------------------------------- epochs
    def _targets(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels for the loss: sparse class ids, or smoothed / mixed one-hot rows; mixup also mixes x."""
        cfg, classes = self.cfg, len(self.data.label_names)
        if cfg.label_smoothing == 0 and cfg.mixup_alpha == 0:
            return x, y
        onehot = np.eye(classes, dtype=np.float32)[y.astype(np.int64)]
        onehot = onehot * (1 - cfg.label_smoothing) + cfg.label_smoothing / classes
        if cfg.mixup_alpha > 0:
            lam = np.float32(self.rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
            perm = self.rng.permutation(len(y))
            x = lam * x + (1 - lam) * x[perm]
            onehot = lam * onehot + (1 - lam) * onehot[perm]
        return x, onehot

    def train_epoch(self, epoch: int) -> dict:
        """One pass over this worker's shard (or --limit-batches of it): the training loop alone."""
        cfg = self.cfg
        mx.random.seed(int(self.rng.integers(1 << 31)))
        images, labels = self.data.train_images, self.data.train_labels
        steps = len(labels) // cfg.batch_size
        if cfg.limit_batches:
            steps = min(steps, cfg.limit_batches)
        global_batch = cfg.batch_size * self.num_workers
        loss_sum, correct = mx.nd.zeros((1,), ctx=self.ctx[0]), mx.nd.zeros((1,), ctx=self.ctx[0])
        seen, lr, pending = 0, cfg.lr, None
        start = interval_start = time.time()
        batches = data.iterate_batches(images, labels, cfg.batch_size, self.rng, self.augmenter, drop_last=True)
        for i, (x, y) in enumerate(batches):
            if i >= steps:
                break
            lr = lr_at(cfg, epoch + i / steps)
            self.trainer.set_learning_rate(lr)
            x, target = self._targets(y, x)
            xs = gluon.utils.split_and_load(x, self.ctx, even_split=False)
            ts = gluon.utils.split_and_load(target, self.ctx, even_split=False)
            ys = gluon.utils.split_and_load(y, self.ctx, even_split=False)
            with autograd.record():
                outputs = [self.net(xi) for xi in xs]
                losses = [self.loss_fn(o, t) for o, t in zip_strict(outputs, ts)]
            autograd.backward(losses)
            if self.dist:
                self.dist.allreduce_grads()
            self.trainer.step(global_batch)
            for out, yi, loss in zip_strict(outputs, ys, losses):
                loss_sum += loss.sum().as_in_context(self.ctx[0])
                correct += (out.argmax(axis=1) == yi).sum().as_in_context(self.ctx[0])
            seen += len(y)
            if pending is not None:
                pending.wait_to_read()  # the previous batch is done: Python stays at most one batch ahead
            pending = losses[-1]
            if cfg.log_interval and (i + 1) % cfg.log_interval == 0:
                loss_now, acc_now = loss_sum.asscalar() / seen, correct.asscalar() / seen  # waits for this batch
                mx.nd.waitall()
                now = time.time()
                print(f"epoch {epoch + 1} batch {i + 1}/{steps}  loss {loss_now:.4f}  acc {acc_now:.4f}  "
                      f"lr {lr:.5f}  {cfg.log_interval * cfg.batch_size / (now - interval_start):.1f} img/s",
                      flush=True)
                interval_start = now
        train_loss, train_acc = loss_sum.asscalar() / max(seen, 1), correct.asscalar() / max(seen, 1)
        mx.nd.waitall()
        train_seconds = time.time() - start
        return {"epoch": epoch + 1, "train_loss": round(float(train_loss), 6), "train_acc": round(float(train_acc), 6),
                "images_per_sec": round(seen / train_seconds, 2), "train_seconds": round(train_seconds, 3),
                "lr": round(float(lr), 8), "images": seen}

    def inference_copy(self) -> gluon.HybridBlock:
        """A fresh network holding a copy of the trained parameters, for evaluation and export.

        MKLDNN reorders convolution weights in place, asynchronously, the first time a network runs in inference
        mode. On the training network that was seen to corrupt updates now and then (two dist_sync workers with
        identical gradients drifted apart right after evaluation), so inference never runs on it."""
        cfg = self.cfg
        twin = models.get_model(cfg.model, classes=len(self.data.label_names), base_width=cfg.base_width,
                                dropout=cfg.dropout)
        twin.initialize(mx.init.Zero(), ctx=self.ctx)
        for mine, theirs in zip_strict(twin.collect_params().values(), self.net.collect_params().values()):
            mine.set_data(theirs.data(self.ctx[0]).copy())
        return twin

    def evaluate(self) -> float:
        net = self.inference_copy()
        correct = mx.nd.zeros((1,), ctx=self.ctx[0])
        images, labels = self.data.test_images, self.data.test_labels
        for x, y in data.iterate_batches(images, labels, 256, None, self.augmenter, drop_last=False):
            xs = gluon.utils.split_and_load(x, self.ctx, even_split=False)
            ys = gluon.utils.split_and_load(y, self.ctx, even_split=False)
            for xi, yi in zip_strict(xs, ys):
                correct += (net(xi).argmax(axis=1) == yi).sum().as_in_context(self.ctx[0])
        return float(correct.asscalar()) / len(labels)

    def run(self, start_epoch: int) -> dict:
        cfg = self.cfg
        tag = "SYNTHETIC data" if self.data.synthetic else "CIFAR-10"
        title = f"{cfg.model} on {tag}" + (f" (worker {self.rank} of {self.num_workers})" if self.dist else "")
        for epoch in range(start_epoch, cfg.epochs):
            start = time.time()
            metrics = self.train_epoch(epoch)
            if self.dist:
                self.dist.average_stats()
            metrics["val_acc"] = round(self.evaluate(), 6)
            metrics["seconds"] = round(time.time() - start, 3)
            self.history.append(metrics)
            self.save_checkpoint(epoch + 1)
            write_metrics(self.out, self.history)
            plot_curves(self.out, self.history, title)
            print(f"epoch {metrics['epoch']}/{cfg.epochs}  train-loss {metrics['train_loss']:.4f}  "
                  f"train-acc {metrics['train_acc']:.4f}  val-acc {metrics['val_acc']:.4f}  "
                  f"{metrics['images_per_sec']:.1f} img/s  {metrics['seconds']:.1f} s  lr {metrics['lr']:.5f}"
                  f"  [{tag}]", flush=True)
            print(f"epoch={metrics['epoch']}; train-loss={metrics['train_loss']:.6f}; "
                  f"train-accuracy={metrics['train_acc']:.6f}; validation-accuracy={metrics['val_acc']:.6f}; "
                  f"images-per-sec={metrics['images_per_sec']:.2f}; epoch-seconds={metrics['seconds']:.3f}; "
                  f"learning-rate={metrics['lr']:.8f};", flush=True)
        return self.history[-1]


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


def run_facts(cfg: Config, synthetic: bool, source: str, rank: int, num_workers: int) -> dict:
    return {"mxnet": mx.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "cpu_count": os.cpu_count(),
            "host": socket.gethostname(), "synthetic_data": synthetic, "data_source": source, "rank": rank,
            "num_workers": num_workers, "contexts": [str(c) for c in ([mx.gpu(i) for i in range(cfg.gpus)] or
                                                                       [mx.cpu()])]}


def finished(out: Path, cfg: Config) -> bool:
    """True when out/ holds a finished run of these settings; exits with an error for other settings."""
    marker = out / COMPLETE_FILE
    if not marker.is_file():
        return False
    done = json.loads(marker.read_text())
    if done.get("identity") != identity(cfg):
        diff = sorted(k for k in identity(cfg) if done.get("identity", {}).get(k) != identity(cfg)[k])
        raise SystemExit(f"{out} already holds a finished run with other settings ({', '.join(diff)}); use another "
                         f"--output-dir or remove {marker}")
    print(f"already complete: {out} holds a finished run of {done['epochs']} epochs "
          f"(validation accuracy {done['val_acc']:.4f}); nothing to do", flush=True)
    return True


def job_kvstore(kvstore: str, env: dict[str, str]) -> str:
    """The kvstore to train with. A process started as a parameter-server worker (DMLC_ROLE=worker) trains with the
    job: SageMaker with sagemaker_parameter_server_enabled, where the MXNet toolkit has started the scheduler and the
    servers and exports DMLC_ROLE=worker to the script, whose kvstore flag still says local."""
    if env.get("DMLC_ROLE") != "worker" or kvstore.startswith("dist"):
        return kvstore
    print(f"DMLC_ROLE=worker in a parameter-server job of {env.get('DMLC_NUM_WORKER', '?')} workers: --kvstore "
          f"{kvstore} -> dist_sync", flush=True)
    return "dist_sync"


def failure_reason(err: BaseException) -> str | None:
    """What the failure file says about an exception that ends the run (None: not a failure)."""
    if isinstance(err, UsageError):
        return err.message
    if isinstance(err, SystemExit):
        if err.code in (0, None):
            return None
        return err.code if isinstance(err.code, str) else f"training exited with status {err.code}"
    if isinstance(err, KeyboardInterrupt):
        return "training interrupted (SIGINT)"
    return f"{type(err).__name__}: {err}"


def write_failure(env: dict[str, str], reason: str) -> None:
    """Under SageMaker ($SM_OUTPUT_DIR set), put the reason into the failure file that becomes the job's FailureReason.
    The toolkits write that file only when it is not there yet, so the trainer's own words win over their generic
    "ExecuteUserScriptError ... ErrorMessage \"\"" (the MXNet toolkit does not capture the script's stderr)."""
    if not env.get("SM_OUTPUT_DIR"):
        return
    path = Path(env["SM_OUTPUT_DIR"]) / FAILURE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x") as fh:  # the first failure is the cause: never overwrite it
            fh.write(reason[:4096])
    except OSError:
        pass  # the file exists already, or the folder cannot be written: the exit status still says it failed


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _run(argv, env)
    except BaseException as err:
        reason = failure_reason(err)
        if reason:
            write_failure(env, reason)
        raise
    if code:
        write_failure(env, f"the parameter-server job ended with status {code} (a scheduler, server or worker "
                           f"failed; see the log)")
    return code


def _run(argv: list[str], env: dict[str, str]) -> int:
    cfg = resolve_config(argv, env)
    hosts = json.loads(env.get("SM_HOSTS") or "[]")
    cfg.kvstore = job_kvstore(cfg.kvstore, env)
    if len(hosts) > 1 and "DMLC_ROLE" not in env:  # SageMaker, several instances: become a parameter-server job
        return launch.sagemaker_cluster(hosts, env.get("SM_CURRENT_HOST", hosts[0]),
                                        [str(Path(__file__).resolve()), *argv], env)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if finished(out, cfg):
        return 0
    # a failed dist worker exits at once instead of waiting for the others (and reports why first)
    with dist.fail_fast(on_failure=lambda err: write_failure(env, failure_reason(err) or "training failed")):
        trainer = Trainer(cfg, out)
        cfg.extra = run_facts(cfg, trainer.data.synthetic, trainer.data.source, trainer.rank, trainer.num_workers)
        checkpoint.atomic_write_json(out / "config.json", asdict(cfg))
        start_epoch = trainer.resume()
        print(f"training {cfg.model} on {'SYNTHETIC data' if trainer.data.synthetic else 'CIFAR-10'} "
              f"({len(trainer.data.train_labels)} train / {len(trainer.data.test_labels)} test images), "
              f"epochs {start_epoch + 1}..{cfg.epochs}, batch {cfg.batch_size}, {cfg.extra['contexts']}, "
              f"OMP_NUM_THREADS={cfg.extra['omp_num_threads']}"
              + (f", worker {trainer.rank} of num_workers={trainer.num_workers}" if trainer.dist else ""), flush=True)
        write_metrics(out, trainer.history)
        final = trainer.run(start_epoch) if start_epoch < cfg.epochs else trainer.history[-1]
        export_model(trainer.inference_copy(), Path(cfg.model_dir), trainer.data.label_names, trainer.ctx[0])
        checkpoint.atomic_write_json(out / COMPLETE_FILE, {
            "epochs": cfg.epochs, "val_acc": final["val_acc"], "train_acc": final["train_acc"],
            "synthetic_data": trainer.data.synthetic, "model_dir": str(Path(cfg.model_dir).resolve()),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "identity": identity(cfg)})
        print(f"done: {cfg.epochs} epochs, validation accuracy {final['val_acc']:.4f}; results in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
