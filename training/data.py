"""CIFAR-10 data: the binary format, a checksum-verified download, the MXNet RecordIO pair, a synthetic
generator that writes the exact binary format, and the in-memory, vectorised batch augmenter.

    python -m training.data synthetic --out D --size N [--test-size M] [--seed S]
    python -m training.data download --out D

The data set is held in memory as uint8 NCHW. Augmentation (random crop with 4-pixel padding, horizontal flip,
normalisation) works on whole batches with numpy indexing: no Python work per image and no worker processes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from training.compat import zip_strict
except ImportError:  # flat layout (SageMaker's code folder): the package's files side by side
    from compat import zip_strict

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"  # the canonical source
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published checksum of that archive
CIFAR10_DIRNAME = "cifar-10-batches-bin"  # folder inside the archive
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
SYNTHETIC_MARKER = "SYNTHETIC.json"  # present only in generated data sets; results from them are labelled synthetic
RECORD_BYTES = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes (row-major)
RECORDIO_PAIRS = (("cifar10_train.rec", "cifar10_val.rec"), ("train.rec", "test.rec"))

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)  # CIFAR-10 per-channel mean, 0..1 scale
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)  # CIFAR-10 per-channel std, 0..1 scale


@dataclass
class Cifar:
    """A data set in memory: images uint8 (N, 3, 32, 32), labels int32 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: list[str]
    synthetic: bool
    source: str  # "cifar10-binary", "recordio" or "synthetic"


# ----------------------------------------------------------------------------------------------- binary format
def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one CIFAR-10 binary batch file atomically."""
    if images.dtype != np.uint8 or images.shape[1:] != (3, 32, 32) or len(images) != len(labels):
        raise ValueError(f"expected uint8 images (N, 3, 32, 32) and N labels, got {images.dtype} {images.shape} "
                         f"and {len(labels)} labels")
    records = np.empty((len(images), RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = images.reshape(len(images), -1)
    tmp = path.with_name(path.name + ".tmp")
    records.tofile(tmp)
    os.replace(tmp, path)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file -> (uint8 images (N, 3, 32, 32), int32 labels)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of the {RECORD_BYTES}-byte CIFAR-10 record")
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), records[:, 0].astype(np.int32)


def write_cifar_dir(out: Path, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                    test_labels: np.ndarray, label_names=LABEL_NAMES) -> None:
    """Write data_batch_1..5.bin (the training set split in five), test_batch.bin and batches.meta.txt."""
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in zip_strict(TRAIN_FILES, np.array_split(np.arange(len(train_images)), len(TRAIN_FILES))):
        write_batch(out / name, train_images[idx], train_labels[idx])
    write_batch(out / TEST_FILE, test_images, test_labels)
    (out / META_FILE).write_text("".join(f"{name}\n" for name in label_names))


def find_binary_dir(data_dir: Path) -> Path | None:
    """The folder holding data_batch_1.bin: data_dir itself or data_dir/cifar-10-batches-bin."""
    for candidate in (data_dir, data_dir / CIFAR10_DIRNAME):
        if (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    return None


def read_cifar_dir(folder: Path) -> Cifar:
    parts = [read_batch(folder / name) for name in TRAIN_FILES if (folder / name).is_file()]
    test_images, test_labels = read_batch(folder / TEST_FILE)
    names = [n.strip() for n in (folder / META_FILE).read_text().splitlines() if n.strip()] \
        if (folder / META_FILE).is_file() else list(LABEL_NAMES)
    synthetic = (folder / SYNTHETIC_MARKER).is_file()
    return Cifar(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_images,
                 test_labels, names, synthetic, "synthetic" if synthetic else "cifar10-binary")


# --------------------------------------------------------------------------------------------------- RecordIO
def read_recordio(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MXNet .rec file of encoded images (as made by im2rec / mx.test_utils.get_cifar10)."""
    import mxnet as mx

    reader = mx.recordio.MXRecordIO(str(path), "r")
    images, labels = [], []
    try:
        while (item := reader.read()) is not None:
            header, payload = mx.recordio.unpack(item)
            img = mx.image.imdecode(payload, to_rgb=1)
            if img.shape[:2] != (32, 32):
                img = mx.image.imresize(img, 32, 32)
            images.append(img.asnumpy().transpose(2, 0, 1))
            label = header.label
            labels.append(int(label if np.isscalar(label) else label[0]))
    finally:
        reader.close()
    if not images:
        raise ValueError(f"{path}: no records")
    return np.stack(images).astype(np.uint8), np.array(labels, dtype=np.int32)


def find_recordio_pair(data_dir: Path, test_dir: Path | None = None) -> tuple[Path, Path] | None:
    for train_name, test_name in RECORDIO_PAIRS:
        for folder in (data_dir, data_dir / "cifar"):
            train, test = folder / train_name, (test_dir or folder) / test_name
            if train.is_file() and test.is_file():
                return train, test
    return None


def load(data_dir: Path, test_dir: Path | None = None) -> Cifar:
    """Load whichever CIFAR-10 form data_dir holds (binary batches or the RecordIO pair).

    test_dir, when given (for example SageMaker's test channel), holds the test batch or the validation .rec.
    """
    folder = find_binary_dir(data_dir)
    if folder is not None:
        data = read_cifar_dir(folder)
        if test_dir is not None and test_dir != data_dir:
            test_folder = find_binary_dir(test_dir) or test_dir
            if (test_folder / TEST_FILE).is_file():
                data.test_images, data.test_labels = read_batch(test_folder / TEST_FILE)
        return data
    pair = find_recordio_pair(data_dir, test_dir)
    if pair is not None:
        train_x, train_y = read_recordio(pair[0])
        test_x, test_y = read_recordio(pair[1])
        return Cifar(train_x, train_y, test_x, test_y, list(LABEL_NAMES), False, "recordio")
    raise FileNotFoundError(
        f"no CIFAR-10 data in {data_dir}: expected {TRAIN_FILES[0]} ... {TEST_FILE} (binary version, in that "
        f"folder or in {CIFAR10_DIRNAME}/) or a RecordIO pair {RECORDIO_PAIRS}. Create it with "
        f"`python -m training.data download --out {data_dir}` or `python -m training.data synthetic --out {data_dir}`")


# --------------------------------------------------------------------------------------------------- download
def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(out: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download the binary CIFAR-10 archive, verify its MD5, extract it into out/ and cache it there."""
    out.mkdir(parents=True, exist_ok=True)
    folder = out / CIFAR10_DIRNAME
    if find_binary_dir(out) is not None and (folder / ".verified").is_file():
        print(f"cifar10: cached in {folder}")
        return folder
    archive = out / Path(url).name
    if not archive.is_file() or md5sum(archive) != md5:
        partial = archive.with_name(archive.name + ".part")
        print(f"cifar10: downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as fh:
            shutil.copyfileobj(response, fh)
        got = md5sum(partial)
        if got != md5:
            partial.unlink()
            raise ValueError(f"cifar10: checksum mismatch for {url}: md5 {got}, expected {md5}; try again later")
        os.replace(partial, archive)
    with tarfile.open(archive) as tar:
        safe_extract(tar, out)
    (folder / ".verified").write_text(md5 + "\n")
    print(f"cifar10: verified (md5 {md5}) and extracted into {folder}")
    return folder


def safe_extract(tar: tarfile.TarFile, out: Path) -> None:
    """Extract an archive of plain files and folders into out/, refusing anything that would land elsewhere.

    tarfile's "data" filter does this where Python has it (3.12, and the 3.8.17 / 3.9.17 / 3.10.12 / 3.11.4 security
    releases); the SageMaker MXNet 1.9 image runs Python 3.8.10, so without it the members are checked here: only
    regular files and folders (no links or devices), with relative names that stay inside out/."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(out, filter="data")
        return
    root = out.resolve()
    members = tar.getmembers()
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"{tar.name}: {member.name!r} is not a regular file or folder; nothing extracted")
        target = (root / member.name).resolve()
        if os.path.isabs(member.name) or (target != root and root not in target.parents):
            raise ValueError(f"{tar.name}: {member.name!r} would land outside {out}; nothing extracted")
    tar.extractall(out, members=members)


# -------------------------------------------------------------------------------------------------- synthetic
def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, inputs in 0..1 of equal shape, output (..., 3)."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def _shape_masks(cls: int, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of class cls's shape; u, v: rotated coordinates (n, 32, 32) around the centre; r: (n, 1, 1)."""
    d = np.sqrt(u * u + v * v)
    au, av = np.abs(u), np.abs(v)
    if cls == 0:  # disk
        return d < r
    if cls == 1:  # square
        return np.maximum(au, av) < 0.8 * r
    if cls == 2:  # triangle
        return (v > -0.6 * r) & (au < 0.6 * (0.9 * r - v))
    if cls == 3:  # ring
        return (d < r) & (d > 0.55 * r)
    if cls == 4:  # cross
        return ((au < 0.3 * r) & (av < r)) | ((av < 0.3 * r) & (au < r))
    if cls == 5:  # striped disk
        return (d < r) & (np.sin(v * np.pi / 2.5) > 0)
    if cls == 6:  # diamond
        return au + av < r
    if cls == 7:  # two blobs
        return ((u - r / 2) ** 2 + v * v < (r / 2.2) ** 2) | ((u + r / 2) ** 2 + v * v < (r / 2.2) ** 2)
    if cls == 8:  # half disk
        return (d < r) & (v > 0)
    return (np.maximum(au, av) < 0.85 * r) & ((np.floor(u / 3) + np.floor(v / 3)) % 2 == 0)  # checkerboard


def synthesize(n: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """n images with labels: a class-dependent shape in a class-dependent (jittered, overlapping) hue, at a random
    place, size and angle, over a random gradient background, with a faint distractor shape and pixel noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    for start in range(0, n, 4096):
        lab = labels[start:start + 4096]
        m = len(lab)
        ramp = (xx * rng.uniform(-1, 1, (m, 1, 1)) + yy * rng.uniform(-1, 1, (m, 1, 1))) / 32.0
        bg_hsv = [rng.uniform(0, 1, (m, 1, 1)), rng.uniform(0, 0.5, (m, 1, 1)), rng.uniform(0.2, 0.8, (m, 1, 1))]
        value = np.clip(bg_hsv[2] + 0.25 * ramp, 0, 1)
        canvas = _hsv_to_rgb(np.broadcast_to(bg_hsv[0], value.shape), np.broadcast_to(bg_hsv[1], value.shape), value)
        # distractor: a faint shape of a random class in a random hue
        _paint(canvas, rng, rng.integers(0, classes, m), rng.uniform(0, 1, m), xx, yy, alpha=0.35, scale=0.6)
        # the object: class shape, class hue +- 0.08 (neighbouring classes overlap)
        hue = (lab / classes + rng.uniform(-0.08, 0.08, m)) % 1.0
        _paint(canvas, rng, lab, hue, xx, yy, alpha=1.0, scale=1.0)
        noisy = canvas * 255.0 + rng.normal(0, 18, canvas.shape)
        images[start:start + m] = np.clip(noisy, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return images, labels


def _paint(canvas: np.ndarray, rng: np.random.Generator, shapes: np.ndarray, hues: np.ndarray, xx: np.ndarray,
           yy: np.ndarray, alpha: float, scale: float) -> None:
    m = len(shapes)
    cx, cy = rng.uniform(9, 23, (m, 1, 1)), rng.uniform(9, 23, (m, 1, 1))
    radius = rng.uniform(6, 11, (m, 1, 1)) * scale
    theta = rng.uniform(0, 2 * np.pi, (m, 1, 1))
    dx, dy = xx - cx, yy - cy
    u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
    colour = _hsv_to_rgb(hues, rng.uniform(0.55, 1.0, m), rng.uniform(0.55, 1.0, m))  # (m, 3)
    for cls in np.unique(shapes):
        sel = np.nonzero(shapes == cls)[0]
        mask = _shape_masks(int(cls), u[sel], v[sel], radius[sel])[..., None] * alpha
        canvas[sel] = canvas[sel] * (1 - mask) + colour[sel][:, None, None, :] * mask


def write_synthetic(out: Path, size: int, test_size: int | None = None, seed: int = 0) -> Cifar:
    """Generate a synthetic CIFAR-10 lookalike in the exact binary format; the test split is a separate draw."""
    test_size = test_size if test_size is not None else max(size // 5, 10)
    if size < 10 or test_size < 1:
        raise ValueError(f"synthetic size {size} / test size {test_size}: need at least 10 training images")
    train_x, train_y = synthesize(size, seed)
    test_x, test_y = synthesize(test_size, seed + 1_000_003)
    write_cifar_dir(out, train_x, train_y, test_x, test_y)
    (out / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "training.data.synthesize", "size": size,
                                                    "test_size": test_size, "seed": seed}) + "\n")
    return Cifar(train_x, train_y, test_x, test_y, list(LABEL_NAMES), True, "synthetic")


def ensure_synthetic(out: Path, size: int, seed: int = 0) -> Path:
    """Reuse out/ when it holds a synthetic set of that size and seed, otherwise (re)generate it."""
    marker = out / SYNTHETIC_MARKER
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta.get("size") == size and meta.get("seed") == seed and find_binary_dir(out) is not None:
            return out
    out.mkdir(parents=True, exist_ok=True)
    # generate next to the target and swap it in, so that concurrent readers never see half a data set
    with tempfile.TemporaryDirectory(dir=out, prefix=".gen-") as tmp:
        write_synthetic(Path(tmp), size, seed=seed)
        for name in (*TRAIN_FILES, TEST_FILE, META_FILE, SYNTHETIC_MARKER):
            os.replace(Path(tmp) / name, out / name)
    return out


# --------------------------------------------------------------------------------------------------- batching
def crop_windows(images: np.ndarray, size: int) -> np.ndarray:
    """Every size x size window of NCHW images, as a read-only view of shape (N, C, H - size + 1, W - size + 1, size,
    size): what numpy's sliding_window_view(images, (size, size), axis=(2, 3)) returns (numpy 1.20+), built with
    as_strided (numpy 1.19 too) and with less overhead (training/README.md, "Data")."""
    n, c, h, w = images.shape
    if not (0 < size <= h and size <= w):
        raise ValueError(f"window size {size} does not fit images of {h} x {w}")
    s = images.strides
    return np.lib.stride_tricks.as_strided(images, shape=(n, c, h - size + 1, w - size + 1, size, size),
                                           strides=(s[0], s[1], s[2], s[3], s[2], s[3]), writeable=False)


class BatchAugmenter:
    """Vectorised batch transforms on uint8 NCHW: pad-and-crop, horizontal flip, normalisation to float32."""

    def __init__(self, pad: int = 4, mean: np.ndarray = MEAN, std: np.ndarray = STD):
        self.pad = pad
        self.scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1).astype(np.float32)
        self.shift = (-mean / std).reshape(1, 3, 1, 1).astype(np.float32)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        return images.astype(np.float32) * self.scale + self.shift

    def augment(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, p = len(images), self.pad
        padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
        windows = crop_windows(padded, 32)  # (n, 3, 2p+1, 2p+1, 32, 32)
        oy, ox = rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)
        crops = windows[np.arange(n), :, oy, ox]  # (n, 3, 32, 32)
        flip = rng.random(n) < 0.5
        crops[flip] = crops[flip, :, :, ::-1]
        return self.normalize(crops)


def iterate_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                    augmenter: BatchAugmenter, drop_last: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (float32 NCHW, float32 labels). With rng: shuffled and augmented (training); without: in order."""
    order = rng.permutation(len(images)) if rng is not None else np.arange(len(images))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        batch = images[idx]
        x = augmenter.augment(batch, rng) if rng is not None else augmenter.normalize(batch)
        yield x, labels[idx].astype(np.float32)


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthetic", help="generate a synthetic CIFAR-10 lookalike in the binary format")
    syn.add_argument("--out", type=Path, required=True, help="output folder")
    syn.add_argument("--size", type=int, default=50000, help="training images (CIFAR-10 has 50000)")
    syn.add_argument("--test-size", type=int, default=None, help="test images (default: size / 5)")
    syn.add_argument("--seed", type=int, default=0, help="generator seed")
    dl = sub.add_parser("download", help="download the real CIFAR-10 (binary version), verify and extract it")
    dl.add_argument("--out", type=Path, required=True, help="output folder (the archive is cached there)")
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        data = write_synthetic(args.out, args.size, args.test_size, args.seed)
        print(f"synthetic CIFAR-10 (SYNTHETIC data): {len(data.train_labels)} train / {len(data.test_labels)} "
              f"test images in {args.out}")
    else:
        download(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
