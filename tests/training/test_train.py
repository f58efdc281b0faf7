"""End-to-end training on synthetic data: it learns, writes every output, and a finished rerun is a no-op."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import SYNTHETIC_SIZE, TINY, run_module

from training import train


@pytest.fixture(scope="module")
def finished_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], str]:
    out = tmp_path_factory.mktemp("run")
    args = ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TINY, "--epochs", "3", "--lr", "0.1", "--output-dir", str(out), "--kvstore", "local"]
    result = run_module("training.train", args)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, args, result.stdout


def test_synthetic_data_is_learnable_on_held_out_split(finished_run) -> None:
    out, _, _ = finished_run
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert set(history[0]) >= {"epoch", "train_loss", "train_acc", "val_acc", "images_per_sec", "seconds", "lr"}
    # chance is 0.10; the test split is a separate draw that the network never trains on
    assert history[-1]["train_acc"] > 0.35
    assert history[-1]["val_acc"] > 0.35
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_outputs_and_labels(finished_run) -> None:
    out, _, stdout = finished_run
    for name in ("curves.png", "config.json", "model-symbol.json", "model-0000.params", "model-shapes.json",
                 "COMPLETE", "synset.txt"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet8_v1" and config["epochs"] == 3 and config["extra"]["synthetic_data"] is True
    assert config["extra"]["omp_num_threads"] == "2" and config["extra"]["mxnet"] == "1.9.1"
    assert json.loads((out / "model-shapes.json").read_text()) == [{"name": "data", "shape": [1, 3, 32, 32]}]
    complete = json.loads((out / "COMPLETE").read_text())
    assert complete["epochs"] == 3 and complete["synthetic_data"] is True
    assert "SYNTHETIC data" in stdout
    # one regex-friendly metric line per epoch, as SageMaker metric_definitions read them
    values = re.findall(r"validation-accuracy=([0-9.]+);", stdout)
    assert len(values) == 3 and float(values[-1]) == complete["val_acc"]
    assert len(re.findall(r"train-loss=([0-9.]+);", stdout)) == 3


def test_finished_rerun_does_nothing_and_says_so(finished_run) -> None:
    out, args, _ = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    result = run_module("training.train", args)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout and "nothing to do" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before


def test_finished_dir_refuses_other_settings(finished_run) -> None:
    out, args, _ = finished_run
    changed = [*args[:args.index("--epochs")], "--epochs", "4", *args[args.index("--epochs") + 2:]]
    with pytest.raises(SystemExit, match=r"other settings \(epochs\)"):
        train.main(changed, env={})
    assert json.loads((out / "COMPLETE").read_text())["epochs"] == 3


def test_bad_model_name_is_a_clear_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        train.resolve_config(["--model", "resnet21_v1"], {})
    assert exc.value.code == 2 and "6n+2" in capsys.readouterr().err


def test_help_lists_the_interface(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        train.resolve_config(["--help"], {})
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-dir", "--model", "--epochs", "--batch-size", "--lr", "--output-dir", "--kvstore",
                 "--synthetic-size", "--checkpoint-dir", "--log-interval"):
        assert flag in text


def test_learning_rate_schedules() -> None:
    cosine = train.Config(epochs=10, lr=0.4, warmup_epochs=2)
    assert train.lr_at(cosine, 0) == 0 and train.lr_at(cosine, 1) == pytest.approx(0.2)
    assert train.lr_at(cosine, 2) == pytest.approx(0.4) and train.lr_at(cosine, 6) == pytest.approx(0.2)
    assert train.lr_at(cosine, 10) == pytest.approx(0.0, abs=1e-12)
    step = train.Config(epochs=8, lr=0.1, lr_schedule="step")
    assert [round(train.lr_at(step, e), 6) for e in (0, 3.9, 4, 5.9, 6)] == [0.1, 0.1, 0.01, 0.01, 0.001]


def test_training_options_run_end_to_end(synthetic_dir: Path, tmp_path: Path) -> None:
    """Mixup, label smoothing, step schedule with warmup, plain SGD, a v2 network, hybridized, and bfloat16 AMP on
    CPUs that have MXNet's bfloat16 kernels (AVX-512); elsewhere float32 and the refusal test below."""
    dtype = "bfloat16" if train.bfloat16_supported() else "float32"
    args = ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TINY, "--model", "resnet8_v2", "--epochs", "2", "--limit-batches", "3", "--output-dir", str(tmp_path),
            "--mixup-alpha", "0.2", "--label-smoothing", "0.1", "--lr-schedule", "step", "--warmup-epochs", "0.5",
            "--optimizer", "sgd", "--hybridize", "--dtype", dtype]
    result = run_module("training.train", args)
    assert result.returncode == 0, result.stdout + result.stderr
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]
    assert all(m["train_loss"] == m["train_loss"] for m in history)  # not NaN
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["dtype"], config["hybridize"], config["mixup_alpha"]) == (dtype, True, 0.2)
    assert (tmp_path / "model-symbol.json").is_file()


def test_bfloat16_without_cpu_support_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(train, "bfloat16_supported", lambda: False)
    with pytest.raises(SystemExit) as exc:
        train.resolve_config(["--dtype", "bfloat16", "--gpus", "0"], {})
    assert exc.value.code == 2 and "no bfloat16 kernels for this CPU" in capsys.readouterr().err


def test_several_devices_split_and_load_gpus_mocked_as_cpu_contexts(synthetic_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: mx.gpu(i) becomes mx.cpu(i), which runs the same multi-device path (split_and_load, one loss
    per device, gradients reduced by the 'device' kvstore) on separate CPU contexts."""
    import mxnet as mx

    monkeypatch.setattr(train.mx, "gpu", lambda i=0: mx.cpu(i))
    args = ["--dataset", "synthetic", "--data-dir", str(synthetic_dir), "--synthetic-size", str(SYNTHETIC_SIZE),
            *TINY, "--epochs", "1", "--limit-batches", "3", "--gpus", "2", "--kvstore", "device",
            "--output-dir", str(tmp_path)]
    cfg = train.resolve_config(args, {})
    trainer = train.Trainer(cfg, tmp_path)
    assert trainer.ctx == [mx.cpu(0), mx.cpu(1)]
    before = {n: p.data(mx.cpu(0)).asnumpy() for n, p in trainer.net.collect_params().items()}
    metrics = trainer.train_epoch(0)
    assert metrics["images"] == 3 * 64
    for name, param in trainer.net.collect_params().items():
        if param.grad_req != "null":  # BatchNorm statistics stay per device, as in Gluon's own multi-GPU training
            copies = [param.data(c).asnumpy() for c in trainer.ctx]
            assert (copies[0] == copies[1]).all(), name  # both devices hold the same weights after each step
    changed = [n for n, p in trainer.net.collect_params().items()
               if p.grad_req != "null" and not (p.data(mx.cpu(0)).asnumpy() == before[n]).all()]
    assert changed
    assert 0.0 <= trainer.evaluate() <= 1.0
