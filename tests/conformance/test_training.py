"""Training through the SageMaker MXNet training image's own entry point (sagemaker-training 5.1.4 `train` with
SAGEMAKER_TRAINING_MODULE=sagemaker_mxnet_container.training:main, sagemaker-mxnet-training 4.3.0, Python 3.8,
numpy 1.19.5), /opt/ml relocated with SAGEMAKER_BASE_DIR, on our code archive, hyperparameters and data; and the
same failing job through our local mode."""
from __future__ import annotations

import json
import re
from pathlib import Path

from conformance import sm
from conformance.sm import Job, toolkit_job

MODEL_FILES = {"model-symbol.json", "model-0000.params", "model-shapes.json", "synset.txt", "code"}


def test_the_toolkit_trains_our_code(trained: Job) -> None:
    assert trained.rc == 0, trained.log[-3000:]
    output = trained.base / "output"
    assert (output / "success").is_file() and not (output / "failure").exists()
    model = trained.base / "model"
    assert {p.name for p in model.iterdir()} == MODEL_FILES  # what the serving image expects, and nothing else
    assert (model / "code" / "inference.py").is_file()
    config = json.loads((output / "data" / "config.json").read_text())
    assert config["extra"]["python"].startswith("3.8.") and config["extra"]["numpy"] == "1.19.5"
    assert config["kvstore"] == "local" and config["extra"]["num_workers"] == 1
    # CheckpointConfig's local path (/opt/ml/checkpoints), not a folder of the trainer's own choosing
    assert config["checkpoint_dir"] == str(trained.base / "checkpoints")
    assert [p.name for p in (trained.base / "checkpoints").iterdir()] == ["epoch-0001"]
    assert "Reporting training SUCCESS" in trained.log


def test_every_declared_metric_matches_the_real_log(trained: Job) -> None:
    metrics = json.loads((trained.base / "output" / "data" / "metrics.jsonl").read_text().splitlines()[-1])
    expected = {"validation-accuracy": metrics["val_acc"], "train-loss": metrics["train_loss"],
                "images-per-sec": metrics["images_per_sec"]}
    declared = sm.declared_metrics()
    assert {m["name"] for m in declared} == set(expected)
    for metric in declared:
        values = [float(v) for v in re.findall(metric["regex"], trained.log)]
        assert values, f"{metric['name']}: {metric['regex']!r} matches nothing in the toolkit's log"
        assert abs(values[-1] - expected[metric["name"]]) < 1e-6, (metric, values)


def test_a_bad_hyperparameter_fails_with_the_trainers_own_reason(work: Path, code: Path, data: Path) -> None:
    reason = "python -m training.train: error: --epochs 0: must be at least 1"
    job = toolkit_job(work, "bad-hp", {**sm.TINY_HPS, "epochs": 0}, code, data)
    assert job.rc != 0
    failure = (job.base / "output" / "failure").read_text()
    assert failure == reason  # the toolkit keeps the trainer's file (its own says ErrorMessage "")
    assert not (job.base / "output" / "success").exists()
    assert "Reporting training FAILURE" in job.log

    # our local mode: the same files, and FailureReason from the failure file, as SageMaker reports it
    request = sm.local_training_request("bad-hp", {**sm.TINY_HPS, "epochs": 0}, code, data, work / "local-out")
    job_dir, record = sm.run_local_job(work / "local-jobs", request)
    output = job_dir / "algo-1" / "opt" / "ml" / "output"
    assert record["TrainingJobStatus"] == "Failed"
    assert (output / "failure").read_text() == failure and not (output / "success").exists()
    assert record["FailureReason"] == f"AlgorithmError: {failure}"
