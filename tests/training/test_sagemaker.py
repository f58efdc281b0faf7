"""The SageMaker script-mode contract: train.py run from a flat code folder with SM_* variables and CLI
hyperparameters, writing the model to SM_MODEL_DIR, results to SM_OUTPUT_DATA_DIR and checkpoints where asked."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, train_env

from training import data, train


def test_script_mode_entry_point(synthetic_dir: Path, tmp_path: Path) -> None:
    code = tmp_path / "code"  # like /opt/ml/code: the package's files, flat, without the package folder
    code.mkdir()
    for src in (ROOT / "training").glob("*.py"):
        shutil.copy(src, code / src.name)
    test_channel = tmp_path / "input" / "data" / "test"
    test_channel.mkdir(parents=True)
    held_out = data.synthesize(50, seed=99)
    data.write_batch(test_channel / data.TEST_FILE, *held_out)
    model_dir, output_dir, ckpt_dir = tmp_path / "model", tmp_path / "output" / "data", tmp_path / "checkpoints"
    hps = {"epochs": 2, "batch_size": 64, "model": "resnet8_v1", "base_width": 8, "limit_batches": 4,
           "log_interval": 2}
    env = train_env(SM_CHANNEL_TRAINING=str(synthetic_dir), SM_CHANNEL_TEST=str(test_channel),
                    SM_MODEL_DIR=str(model_dir), SM_OUTPUT_DATA_DIR=str(output_dir), SM_NUM_GPUS="0",
                    SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1", SM_HPS=json.dumps(hps),
                    SM_CHECKPOINT_DIR=str(ckpt_dir))
    cli = [arg for key, value in hps.items() for arg in (f"--{key}", str(value))]
    cli += ["--_tuning_objective_metric", "validation-accuracy"]  # what a tuning job adds
    result = subprocess.run([sys.executable, "train.py", *cli], cwd=code, env=env, text=True, capture_output=True,
                            timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/ 50 test images" in result.stdout  # the test channel, not the training channel's own test batch
    assert re.search(r"^epoch=2; .*validation-accuracy=[0-9.]+;", result.stdout, re.MULTILINE)
    for name in ("model-symbol.json", "model-0000.params", "model-shapes.json", "synset.txt", "code/inference.py"):
        assert (model_dir / name).is_file(), name
    for name in ("metrics.jsonl", "curves.png", "config.json", "COMPLETE"):
        assert (output_dir / name).is_file(), name
    assert not (output_dir / "model-0000.params").exists()
    assert train.checkpoint.checkpoints(ckpt_dir) == [1, 2]
    config = json.loads((output_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["gpus"] == 0 and config["data_dir"] == str(synthetic_dir)


def test_cli_beats_sm_hps_beats_defaults() -> None:
    env = {"SM_HPS": json.dumps({"epochs": "7", "lr": "0.3", "hybridize": "True", "sagemaker_program": "train.py"})}
    cfg = train.resolve_config(["--epochs", "2", "--batch_size", "32"], env)
    assert (cfg.epochs, cfg.lr, cfg.hybridize, cfg.batch_size, cfg.wd) == (2, 0.3, True, 32, train.Config.wd)


def test_paths_from_sm_variables(tmp_path: Path) -> None:
    env = {"SM_CHANNEL_TRAINING": "/data/train", "SM_CHANNEL_TEST": "/data/test", "SM_MODEL_DIR": "/model",
           "SM_OUTPUT_DATA_DIR": "/out", "SM_NUM_GPUS": "0"}
    cfg = train.resolve_config([], env)
    assert (cfg.data_dir, cfg.test_dir, cfg.model_dir, cfg.output_dir, cfg.gpus) == \
        ("/data/train", "/data/test", "/model", "/out", 0)
    plain = train.resolve_config(["--output-dir", str(tmp_path)], {})
    assert plain.model_dir == str(tmp_path) and plain.checkpoint_dir == str(tmp_path / "checkpoints")


def test_checkpoint_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    managed = tmp_path / "opt-ml-checkpoints"
    monkeypatch.setattr(train, "SAGEMAKER_CHECKPOINT_DIR", str(managed))
    sm = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "out")}
    assert train.resolve_config([], sm).checkpoint_dir == str(tmp_path / "out" / "checkpoints")  # not set up
    managed.mkdir()
    assert train.resolve_config([], sm).checkpoint_dir == str(managed)  # managed spot: the folder exists
    assert train.resolve_config([], {**sm, "SM_CHECKPOINT_DIR": "/elsewhere"}).checkpoint_dir == "/elsewhere"
    cli = train.resolve_config(["--checkpoint-dir", "/cli"], {**sm, "SM_CHECKPOINT_DIR": "/x"})
    assert cli.checkpoint_dir == "/cli"
    assert train.resolve_config([], {}).checkpoint_dir == str(Path("output") / "checkpoints")  # not under SageMaker


def test_several_sm_hosts_start_a_parameter_server_job_launch_mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two SageMaker instances cannot run here; check what the entry point hands to the launcher."""
    calls = []
    monkeypatch.setattr(train.launch, "sagemaker_cluster", lambda *a: calls.append(a) or 0)
    env = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0"}
    assert train.main(["--epochs", "3"], env=env) == 0
    (hosts, current, cmd), = calls
    assert hosts == ["algo-2", "algo-1"] and current == "algo-2"
    assert cmd[0].endswith("train.py") and cmd[1:] == ["--epochs", "3"]
    role_cmd = train.launch.worker_args(cmd)
    assert role_cmd[-2:] == ["--kvstore", "dist_sync"]


def test_bfloat16_is_refused_on_gpus() -> None:
    with pytest.raises(SystemExit):
        train.resolve_config(["--dtype", "bfloat16", "--gpus", "1"], {})

