"""The SageMaker script-mode contract: train.py run from a flat code folder with SM_* variables and CLI
hyperparameters, writing the model to SM_MODEL_DIR, results to SM_OUTPUT_DATA_DIR, checkpoints to CheckpointConfig's
local path, and its own reason into the failure file. (tests/conformance runs it under the real toolkits.)"""
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
    ckpt_dir.mkdir()  # CheckpointConfig's local path: /opt/ml/checkpoints next to /opt/ml/model
    hps = {"epochs": 2, "batch_size": 64, "model": "resnet8_v1", "base_width": 8, "limit_batches": 4,
           "log_interval": 2}
    env = train_env(SM_CHANNEL_TRAINING=str(synthetic_dir), SM_CHANNEL_TEST=str(test_channel),
                    SM_MODEL_DIR=str(model_dir), SM_OUTPUT_DATA_DIR=str(output_dir), SM_NUM_GPUS="0",
                    SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1", SM_HPS=json.dumps(hps))
    cli = [arg for key, value in hps.items() for arg in (f"--{key}", str(value))]
    cli += ["--_tuning_objective_metric", "validation-accuracy"]  # what a tuning job adds
    result = subprocess.run([sys.executable, "train.py", *cli], cwd=code, env=env, text=True, capture_output=True,
                            timeout=900, check=False)
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


def test_checkpoint_root_precedence(tmp_path: Path) -> None:
    managed = tmp_path / "checkpoints"  # /opt/ml/checkpoints, next to SM_MODEL_DIR (/opt/ml/model)
    sm = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "out")}
    assert train.resolve_config([], sm).checkpoint_dir == str(tmp_path / "out" / "checkpoints")  # no CheckpointConfig
    managed.mkdir()
    assert train.resolve_config([], sm).checkpoint_dir == str(managed)  # CheckpointConfig: SageMaker made the folder
    cli = train.resolve_config(["--checkpoint-dir", "/cli"], sm)
    assert cli.checkpoint_dir == "/cli"
    assert train.resolve_config([], {}).checkpoint_dir == str(Path("output") / "checkpoints")  # not under SageMaker


def test_several_sm_hosts_start_a_parameter_server_job_launch_mocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two SageMaker instances cannot run here; check what the entry point hands to the launcher."""
    calls = []
    monkeypatch.setattr(train.launch, "sagemaker_cluster", lambda *a: calls.append(a) or 0)
    env = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0"}
    assert train.main(["--epochs", "3"], env=env) == 0
    (hosts, current, cmd, _env), = calls
    assert hosts == ["algo-2", "algo-1"] and current == "algo-2"
    assert cmd[0].endswith("train.py") and cmd[1:] == ["--epochs", "3"]
    role_cmd = train.launch.worker_args(cmd)
    assert role_cmd[-2:] == ["--kvstore", "dist_sync"]


def test_bfloat16_is_refused_on_gpus() -> None:
    with pytest.raises(SystemExit):
        train.resolve_config(["--dtype", "bfloat16", "--gpus", "1"], {})



def test_a_parameter_server_worker_trains_with_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    """sagemaker_parameter_server_enabled: the MXNet toolkit exports DMLC_ROLE=worker; the script must not train
    alone with its default local kvstore."""
    worker = {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "2"}
    assert train.job_kvstore("local", worker) == "dist_sync"
    assert "-> dist_sync" in capsys.readouterr().out
    assert train.job_kvstore("dist_device_sync", worker) == "dist_device_sync"
    assert train.job_kvstore("local", {}) == "local"
    assert train.job_kvstore("local", {"DMLC_ROLE": "server"}) == "local"


def test_scheduler_host_is_resolved_before_ps_lite_gets_it() -> None:
    assert train.launch.resolve_host("localhost", {}) == "127.0.0.1"
    mapped = {train.launch.HOST_ADDRESSES_ENV: json.dumps({"algo-1": "127.0.0.7"})}
    assert train.launch.resolve_host("algo-1", mapped) == "127.0.0.7"
    with pytest.raises(SystemExit, match=r"'no-such-host\.invalid' does not resolve"):
        train.launch.resolve_host("no-such-host.invalid", {}, seconds=0)


@pytest.mark.parametrize(("argv", "reason"), [
    (["--epochs", "0"], "python -m training.train: error: --epochs 0: must be at least 1"),
    (["--model", "resnet7_v1"], "python -m training.train: error: "),
    (["--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'"),
])
def test_the_trainer_writes_its_own_failure_reason(argv: list[str], reason: str, tmp_path: Path) -> None:
    env = {"SM_OUTPUT_DIR": str(tmp_path / "output"), "SM_NUM_GPUS": "0"}
    with pytest.raises(SystemExit) as exited:
        train.main(argv, env=env)
    assert exited.value.code == 2
    assert reason in (tmp_path / "output" / train.FAILURE_FILE).read_text()


def test_failure_file_keeps_the_first_reason_and_needs_sagemaker(tmp_path: Path) -> None:
    env = {"SM_OUTPUT_DIR": str(tmp_path)}
    train.write_failure(env, "first")
    train.write_failure(env, "second")
    assert (tmp_path / train.FAILURE_FILE).read_text() == "first"
    train.write_failure({}, "nowhere to go")  # not under SageMaker: nothing written, nothing raised
    assert train.failure_reason(SystemExit(0)) is None
    assert train.failure_reason(SystemExit("no data")) == "no data"
    assert train.failure_reason(ValueError("bad")) == "ValueError: bad"
