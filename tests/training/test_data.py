"""CIFAR-10 binary format, RecordIO reader, checksum-verified download, synthetic data, batch augmentation."""
from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from training import data
from training.compat import zip_strict


def _random_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def test_binary_format_round_trip(tmp_path: Path) -> None:
    train_x, train_y = _random_set(53, 1)
    test_x, test_y = _random_set(7, 2)
    data.write_cifar_dir(tmp_path, train_x, train_y, test_x, test_y)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*data.TRAIN_FILES, data.TEST_FILE, data.META_FILE])
    # the exact layout: 1 label byte, then the red, green and blue planes of 32x32
    raw = (tmp_path / "data_batch_1.bin").read_bytes()
    assert len(raw) == 11 * data.RECORD_BYTES  # 53 images over 5 files: 11, 11, 11, 10, 10
    assert raw[0] == train_y[0] and raw[1:1025] == train_x[0, 0].tobytes() and raw[2049:3073] == train_x[0, 2].tobytes()
    loaded = data.load(tmp_path)
    np.testing.assert_array_equal(loaded.train_images, train_x)
    np.testing.assert_array_equal(loaded.train_labels, train_y)
    np.testing.assert_array_equal(loaded.test_images, test_x)
    np.testing.assert_array_equal(loaded.test_labels, test_y)
    assert loaded.label_names == list(data.LABEL_NAMES) and not loaded.synthetic


def test_truncated_batch_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1.bin").write_bytes(b"\0" * (data.RECORD_BYTES + 5))
    with pytest.raises(ValueError, match="not a multiple"):
        data.read_batch(tmp_path / "data_batch_1.bin")


def test_missing_data_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"training\.data synthetic"):
        data.load(tmp_path)


def _write_rec(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    writer = mx.recordio.MXRecordIO(str(path), "w")
    for i, (img, label) in enumerate(zip_strict(images, labels)):
        png = io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).save(png, format="PNG")
        writer.write(mx.recordio.pack(mx.recordio.IRHeader(0, float(label), i, 0), png.getvalue()))
    writer.close()


def test_recordio_pair_is_read(tmp_path: Path) -> None:
    train_x, train_y = _random_set(12, 3)
    test_x, test_y = _random_set(5, 4)
    folder = tmp_path / "cifar"
    folder.mkdir()
    _write_rec(folder / "train.rec", train_x, train_y)  # the names mx.test_utils.get_cifar10() unpacks
    _write_rec(folder / "test.rec", test_x, test_y)
    loaded = data.load(tmp_path)
    assert loaded.source == "recordio"
    np.testing.assert_array_equal(loaded.train_images, train_x)  # PNG is lossless
    np.testing.assert_array_equal(loaded.train_labels, train_y)
    np.testing.assert_array_equal(loaded.test_images, test_x)
    np.testing.assert_array_equal(loaded.test_labels, test_y)


def _archive(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src" / data.CIFAR10_DIRNAME
    train_x, train_y = _random_set(10, 5)
    data.write_cifar_dir(src, train_x, train_y, train_x[:3], train_y[:3])
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=data.CIFAR10_DIRNAME)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()  # CIFAR-10 publishes an MD5


def test_download_verifies_checksum_and_extracts(tmp_path: Path) -> None:
    archive, md5 = _archive(tmp_path)
    out = tmp_path / "out"
    folder = data.download(out, url=archive.as_uri(), md5=md5)
    assert folder == out / data.CIFAR10_DIRNAME and len(data.load(out).train_labels) == 10
    archive.unlink()  # a second call uses the cache and does not fetch
    assert data.download(out, url=archive.as_uri(), md5=md5) == folder


def test_download_with_wrong_checksum_keeps_nothing(tmp_path: Path) -> None:
    archive, _ = _archive(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.download(out, url=archive.as_uri(), md5="0" * 32)
    assert data.find_binary_dir(out) is None and not list(out.glob("*.tar.gz*"))


def _tar_with(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.mark.parametrize("python_filter", [True, False], ids=["tarfile-data-filter", "checked-by-hand"])
def test_extraction_stays_inside_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            python_filter: bool) -> None:
    """With tarfile's "data" filter, and without it (Python 3.8.10, the SageMaker image's, predates it)."""
    if not python_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    out = tmp_path / "out"
    good = _tar_with(tmp_path / "good.tar.gz", {"cifar-10-batches-bin/a.bin": b"x", "cifar-10-batches-bin/b.txt": b"y"})
    with tarfile.open(good) as tar:
        data.safe_extract(tar, out)
    assert (out / "cifar-10-batches-bin" / "a.bin").read_bytes() == b"x"
    for name, bad in (("up", {"ok.bin": b"x", "../evil.txt": b"!"}), ("link", {})):
        archive = _tar_with(tmp_path / f"{name}.tar.gz", bad, symlink="link" if name == "link" else None)
        with tarfile.open(archive) as tar, pytest.raises((ValueError, tarfile.TarError)):
            data.safe_extract(tar, tmp_path / f"out-{name}")
    assert not (tmp_path / "evil.txt").exists()
    # an absolute name is refused, or (the data filter) made relative: either way nothing lands at that path
    absolute = _tar_with(tmp_path / "absolute.tar.gz", {str(tmp_path / "abs.txt"): b"!"})
    with tarfile.open(absolute) as tar, contextlib.suppress(ValueError):
        data.safe_extract(tar, tmp_path / "out-absolute")
    assert not (tmp_path / "abs.txt").exists()


def test_crop_windows_are_the_sliding_windows() -> None:
    images = np.random.default_rng(9).integers(0, 256, (5, 3, 40, 40), dtype=np.uint8)
    windows = data.crop_windows(images, 32)
    assert windows.shape == (5, 3, 9, 9, 32, 32) and not windows.flags.writeable
    for i in range(5):
        for y in range(9):
            for x in range(9):
                np.testing.assert_array_equal(windows[i, :, y, x], images[i, :, y:y + 32, x:x + 32])
    if hasattr(np.lib.stride_tricks, "sliding_window_view"):  # numpy 1.20+
        np.testing.assert_array_equal(windows, np.lib.stride_tricks.sliding_window_view(images, (32, 32), axis=(2, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        data.crop_windows(images, 41)


def test_synthetic_set_is_labelled_and_class_balanced(synthetic_dir: Path) -> None:
    loaded = data.load(synthetic_dir)
    assert loaded.synthetic and loaded.source == "synthetic"
    assert loaded.train_images.shape == (1500, 3, 32, 32) and loaded.test_images.shape == (300, 3, 32, 32)
    counts = np.bincount(loaded.train_labels, minlength=10)
    assert counts.min() > 100  # every class present in about equal share
    # not trivial: images of one class differ from each other (position, size, colour, background, noise)
    same = loaded.train_images[loaded.train_labels == 0].astype(np.float32)
    assert same.std(axis=0).mean() > 20


def test_synthetic_cli_is_deterministic(tmp_path: Path) -> None:
    a = data.write_synthetic(tmp_path / "a", 40, 10, seed=3)
    b = data.write_synthetic(tmp_path / "b", 40, 10, seed=3)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images[:10], a.test_images)  # the test split is a separate draw


def test_augment_crops_padded_windows_and_flips() -> None:
    images, _ = _random_set(64, 6)
    augmenter = data.BatchAugmenter()
    rng = np.random.default_rng(7)
    out = augmenter.augment(images, rng)
    assert out.shape == (64, 3, 32, 32) and out.dtype == np.float32
    # undo the normalisation and find each output as a window of its padded (maybe flipped) source
    pixels = np.rint((out - augmenter.shift) / augmenter.scale).astype(np.int64)
    flips = 0
    for img, got in zip_strict(images, pixels):
        padded = np.pad(img, ((0, 0), (4, 4), (4, 4))).astype(np.int64)
        found = [(dy, dx, f) for f in (False, True) for dy in range(9) for dx in range(9)
                 if np.array_equal((padded[:, :, ::-1] if f else padded)[:, dy:dy + 32, dx:dx + 32], got)]
        assert found, "an augmented image is not a 4-pixel-padded crop of its source"
        flips += found[0][2]
    assert 10 < flips < 54  # about half flipped


def test_batches_cover_the_set_once() -> None:
    images, labels = _random_set(100, 8)
    augmenter = data.BatchAugmenter()
    seen = np.concatenate([y for _, y in data.iterate_batches(images, labels, 32, None, augmenter, drop_last=False)])
    np.testing.assert_array_equal(seen, labels)
    shuffled = list(data.iterate_batches(images, labels, 32, np.random.default_rng(0), augmenter, drop_last=True))
    assert len(shuffled) == 3 and all(len(y) == 32 for _, y in shuffled)
