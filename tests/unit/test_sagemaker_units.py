"""Unit tests of the SageMaker module logic: code packing, request building, idempotency views, input
checks, the local container contract helpers, tuning samplers and the .npy encoder. No AWS, no processes."""
from __future__ import annotations

import io
import json
import math
import os
import random
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ansible.module_utils import dlfleet_sagemaker as sm
from ansible.module_utils import dlfleet_sagemaker_backend as sm_backend
from ansible.module_utils import dlfleet_sagemaker_code as sm_code
from ansible.module_utils import dlfleet_sagemaker_requests as sm_requests
from ansible.module_utils import dlfleet_sagemaker_tuning as tuning

from library import sagemaker_endpoint_invoke as invoke
from sagemaker_local import container


def _source(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / "train.py").write_text("print('train')\n")
    (code / "pkg" / "util.py").write_text("X = 1\n")
    (code / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0junk")
    (code / "requirements.txt").write_text("mxnet==1.9.1\n")
    (code / ".hidden").write_text("secret\n")
    return code


def params(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """Module parameters as AnsibleModule hands them over, defaults filled in."""
    spec = {**sm.training_spec(), **sm.common_spec()}
    p: dict[str, Any] = {k: v.get("default") for k, v in spec.items()}
    p.update(name="job-001", role_arn="arn:aws:iam::123456789012:role/SageMakerRole", entry_point="train.py",
             source_dir=str(_source(tmp_path)), instance_type="ml.m5.xlarge", output_path="s3://bucket/out",
             channels=[{"name": "training", "uri": "s3://bucket/data", "content_type": None,
                        "distribution": "FullyReplicated", "input_mode": None, "compression": "None"}],
             hyperparameters={"epochs": 2, "lr": 0.1, "optimizer": "nag", "hybridize": False})
    p.update(changes)
    return p


# ------------------------------------------------------------------------------------------ code packing

def test_pack_source_is_deterministic_and_content_hashed(tmp_path: Path) -> None:
    code = _source(tmp_path)
    first = sm_code.pack_source(str(code), [*sm.DEFAULT_SOURCE_EXCLUDE, "requirements.txt"])
    os.utime(code / "train.py", (1, 1))  # another mtime: same archive
    second = sm_code.pack_source(str(code), [*sm.DEFAULT_SOURCE_EXCLUDE, "requirements.txt"])
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert sorted(tar.getnames()) == ["pkg/util.py", "train.py"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    (code / "train.py").write_text("print('changed')\n")
    third = sm_code.pack_source(str(code), [*sm.DEFAULT_SOURCE_EXCLUDE, "requirements.txt"])
    assert third != first


def test_source_bundle_names_the_archive_by_its_hash(tmp_path: Path) -> None:
    p = params(tmp_path)
    bundle = sm_code.source_bundle(p, sm_code.default_code_location(p["output_path"]))
    assert bundle["uri"] == f"s3://bucket/out/code/{bundle['sha256'][:20]}/sourcedir.tar.gz"
    assert bundle["program"] == "train.py"


# ------------------------------------------------------------------------------------------ requests

def test_training_request_encodes_hyperparameters_and_injects_the_framework_ones(tmp_path: Path) -> None:
    p = params(tmp_path, use_spot=True, max_wait=172800, checkpoint_s3_uri="s3://bucket/ckpt",
               distribution={"parameter_server": {"enabled": True}}, subnets=["subnet-1"],
               security_group_ids=["sg-1"], enable_network_isolation=True, fleet="f1", owner="me", ttl="2h")
    bundle = sm_code.source_bundle(p, sm_code.default_code_location(p["output_path"]))
    request = sm_requests.training_job_request(p, "job-001", "img:1", bundle, "eu-west-1")
    hps = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hps.values())
    decoded = sm_requests.decode_hyperparameters(hps)
    assert decoded["epochs"] == 2 and decoded["lr"] == 0.1 and decoded["hybridize"] is False
    assert decoded["sagemaker_program"] == "train.py"
    assert decoded["sagemaker_submit_directory"] == bundle["uri"]
    assert decoded["sagemaker_region"] == "eu-west-1"
    assert decoded["sagemaker_container_log_level"] == 20
    assert decoded["sagemaker_parameter_server_enabled"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800}
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["S3Uri"] == "s3://bucket/ckpt"
    assert request["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert request["EnableNetworkIsolation"] is True
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags == {"dlfleet:fleet": "f1", "dlfleet:owner": "me", "dlfleet:ttl": "2h"}


def test_the_same_spec_has_no_differences_and_a_changed_one_names_the_field(tmp_path: Path) -> None:
    p = params(tmp_path)
    bundle = sm_code.source_bundle(p, sm_code.default_code_location(p["output_path"]))
    request = sm_requests.training_job_request(p, "job-001", "img:1", bundle, "us-east-1")
    described = json.loads(json.dumps(request))  # what Describe echoes, plus fields AWS adds
    described.update(TrainingJobStatus="Completed", TrainingJobArn="arn:x", SecondaryStatus="Completed")
    assert sm_requests.differences(sm_requests.definition_view(described), sm_requests.definition_view(request)) == []
    changed = sm_requests.training_job_request(dict(p, hyperparameters={**p["hyperparameters"], "lr": 0.2}), "job-001",
                                      "img:1", bundle, "us-east-1")
    diffs = sm_requests.differences(sm_requests.definition_view(described), sm_requests.definition_view(changed))
    assert diffs == ["hyperparameters.lr: existing '0.1', requested '0.2'"]
    err = sm_requests.immutable_mismatch("training job", "job-001", diffs)
    assert "job-001" in str(err) and "new name" in str(err) and err.code == "ResourceInUse"


def test_a_create_whose_answer_was_lost_adopts_the_resource_only_when_it_matches() -> None:
    def lost() -> None:
        raise sm.SageMakerError("Training job names must be unique", code="ResourceInUse")

    assert sm_backend.create_once(lost, lambda: {"TrainingJobStatus": "InProgress"}, lambda found: True) is True
    assert sm_backend.create_once(lambda: None, lambda: None) is False
    with pytest.raises(sm.SageMakerError, match="must be unique"):
        sm_backend.create_once(lost, lambda: {"TrainingJobStatus": "InProgress"}, lambda found: False)
    with pytest.raises(sm.SageMakerError, match="must be unique"):
        sm_backend.create_once(lost, lambda: None)


# ------------------------------------------------------------------------------------------ bad inputs

BAD_TRAINING = [
    ({"instance_type": "p3.2xlarge"}, "is not a SageMaker instance type"),
    ({"role_arn": "SageMakerRole"}, "is not an IAM role ARN"),
    ({"entry_point": "missing.py"}, "is not in source_dir"),
    ({"entry_point": "../train.py"}, "relative to source_dir"),
    ({"hyperparameters": {"epochs": [1, 2]}}, "hyperparameters.epochs is a list"),
    ({"hyperparameters": {"sagemaker_program": "x"}}, "set by the module itself"),
    ({"output_path": "bucket/out"}, "must start with s3://"),
    ({"output_path": "file:///tmp/out"}, "use instance_type 'local'"),
    ({"instance_count": 0}, "instance_count is 0"),
    ({"use_spot": True, "max_wait": 10}, "max_wait >= max_run"),
    ({"max_wait": 10}, "spot training only"),
    ({"metric_definitions": [{"name": "acc", "regex": "acc=[0-9.]+"}]}, "has no group"),
    ({"metric_definitions": [{"name": "acc", "regex": "acc=(["}]}, "metric_definitions[acc].regex"),
    ({"subnets": ["subnet-1"]}, "go together"),
    ({"checkpoint_s3_uri": "s3://Bad_Bucket/x"}, "not a valid S3 URI"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_TRAINING, ids=[m for _c, m in BAD_TRAINING])
def test_bad_training_input_is_refused_with_the_fix(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(sm.SageMakerError) as err:
        sm.check_training_params(params(tmp_path, **changes))
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "under_score", "x" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(sm.SageMakerError, match="letters, digits and hyphens"):
        sm.check_name("training job", name)


def test_image_lookups_are_answered_from_the_cache(tmp_path: Path) -> None:
    """A cached lookup never imports the SDK (seconds): a planted answer comes back as it is."""
    p = params(tmp_path)
    cache = tmp_path / "image-uris.json"
    key = sm_requests.image_cache_key(p, "us-east-1", "training", "ml.p3.2xlarge")
    cache.write_text(json.dumps({key: "planted:1"}))
    assert sm_requests.image_uri(p, "us-east-1", "training", "ml.p3.2xlarge", str(cache)) == "planted:1"
    assert sm_requests.image_uri(dict(p, image_uri="mine:2"), "us-east-1", "training", "ml.p3.2xlarge",
                                 str(cache)) == "mine:2"


# ------------------------------------------------------------------------------------------ container contract

def test_cli_args_are_sorted_name_value_pairs() -> None:
    assert container.cli_args({"lr": 0.1, "b": True, "epochs": 2, "kv": {"b": 1, "a": 2}}) == [
        "-b", "True", "--epochs", "2", "--kv", "a=2,b=1", "--lr", "0.1"]


def test_container_env_points_sm_variables_at_the_work_dir(tmp_path: Path) -> None:
    layout = container.host_layout(str(tmp_path), "algo-1")
    request = {"TrainingJobName": "j", "ResourceConfig": {"InstanceType": "local"},
               "HyperParameters": sm_requests.encode_hyperparameters({"epochs": 1, "sagemaker_program": "train.py"})}
    env = container.container_env(request, "algo-1", ["algo-1", "algo-2"], layout, ["training", "test"], 0)
    assert env["SM_CHANNEL_TRAINING"] == str(tmp_path / "algo-1/opt/ml/input/data/training")
    assert env["SM_MODEL_DIR"] == str(tmp_path / "algo-1/opt/ml/model")
    assert json.loads(env["SM_HPS"]) == {"epochs": 1}
    assert json.loads(env["SM_HOSTS"]) == ["algo-1", "algo-2"]
    assert env["SM_USER_ENTRY_POINT"] == "train.py" and env["SM_HP_EPOCHS"] == "1"


# ------------------------------------------------------------------------------------------ tuning

def test_samples_stay_in_range_and_log_scaling_favours_small_values() -> None:
    ranges = {"ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.001", "MaxValue": "1",
                                             "ScalingType": "Logarithmic"}],
              "IntegerParameterRanges": [{"Name": "depth", "MinValue": "1", "MaxValue": "4", "ScalingType": "Linear"}],
              "CategoricalParameterRanges": [{"Name": "opt", "Values": ["\"sgd\"", "\"nag\""]}]}
    rng = random.Random(7)
    draws = [container.sample(ranges, rng) for _ in range(400)]
    lrs = [float(d["lr"]) for d in draws]
    assert all(0.001 <= v <= 1 for v in lrs)
    assert {int(d["depth"]) for d in draws} == {1, 2, 3, 4}
    assert {d["opt"] for d in draws} == {"\"sgd\"", "\"nag\""}
    below = sum(v < math.sqrt(0.001) for v in lrs) / len(lrs)  # the log-midpoint splits draws about evenly
    assert 0.4 < below < 0.6


def test_grid_enumerates_every_categorical_combination() -> None:
    combos = container.grid({"CategoricalParameterRanges": [{"Name": "a", "Values": ["1", "2"]},
                                                            {"Name": "b", "Values": ["x", "y", "z"]}]})
    assert len(combos) == 6 and len({tuple(sorted(c.items())) for c in combos}) == 6


def _tuning_params(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    p = params(tmp_path, name="tune-1", strategy="Random", max_jobs=4, max_parallel_jobs=1, early_stopping="Off",
               random_seed=None, hyperband=None, warm_start=None,
               objective={"metric_name": "validation-accuracy", "type": "Maximize", "regex": "acc=([0-9.]+)"},
               parameter_ranges=[{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.3,
                                  "scaling": "Logarithmic", "values": None},
                                 {"name": "optimizer", "type": "categorical", "min_value": None, "max_value": None,
                                  "scaling": "Auto", "values": ["sgd", "nag"]}],
               hyperparameters={"epochs": 2})
    p.update(changes)
    return p


def test_tuning_request_json_encodes_categorical_values_and_adds_the_objective_metric(tmp_path: Path) -> None:
    p = _tuning_params(tmp_path)
    tuning.check_tuning_params(p)
    bundle = sm_code.source_bundle(p, sm_code.default_code_location(p["output_path"]))
    request = tuning.tuning_request(p, "img:1", bundle, "us-east-1")
    config = request["HyperParameterTuningJobConfig"]
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "optimizer", "Values": ["\"sgd\"", "\"nag\""]}]
    assert config["ParameterRanges"]["ContinuousParameterRanges"][0]["ScalingType"] == "Logarithmic"
    definitions = request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert {"Name": "validation-accuracy", "Regex": "acc=([0-9.]+)"} in definitions
    assert "lr" not in sm_requests.decode_hyperparameters(request["TrainingJobDefinition"]["StaticHyperParameters"])


BAD_TUNING = [
    ({"name": "x" * 33}, "1-32 letters"),
    ({"strategy": "Grid"}, "categorical ranges only"),
    ({"max_jobs": None}, "max_jobs is required"),
    ({"strategy": "Hyperband", "early_stopping": "Auto"}, "stops trials itself"),
    ({"objective": {"metric_name": "loss", "type": "Minimize", "regex": None}}, "has no regex"),
    ({"parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.0, "max_value": 0.3,
                            "scaling": "Logarithmic", "values": None}]}, "needs min_value > 0"),
    ({"parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.3, "max_value": 0.1,
                            "scaling": "Auto", "values": None}]}, "min_value < max_value"),
    ({"parameter_ranges": [{"name": "epochs", "type": "integer", "min_value": 1, "max_value": 3,
                            "scaling": "Auto", "values": None}]}, "also a static hyperparameter"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_TUNING, ids=[m for _c, m in BAD_TUNING])
def test_bad_tuning_input_is_refused_with_the_fix(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(sm.SageMakerError) as err:
        tuning.check_tuning_params(_tuning_params(tmp_path, **changes))
    assert message in str(err.value)


# ------------------------------------------------------------------------------------------ invocation payloads

def test_npy_payload_loads_as_the_cifar_images() -> None:
    pixels = bytes(random.Random(3).randrange(256) for _ in range(2 * 3072))
    array = np.load(io.BytesIO(invoke.npy_uint8(pixels, 2)), allow_pickle=False)
    assert array.dtype == np.uint8 and array.shape == (2, 3, 32, 32)
    assert array.tobytes() == pixels


def test_a_file_that_is_not_a_cifar_batch_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(sm.SageMakerError, match="not a CIFAR-10 binary batch"):
        invoke.read_batch(str(bad), 0)


# ------------------------------------------------------------------------------------------ the deploy-time repack
def _model_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _bundle(tmp_path: Path, code: Path) -> dict[str, Any]:
    return sm_code.source_bundle({"entry_point": "train.py", "source_dir": str(code), "code_location":
                             f"file://{tmp_path / 'code-location'}", "source_exclude": ["__pycache__", ".*"]}, "")


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_repack_replaces_the_models_code_once_under_a_name_of_both_digests(tmp_path: Path) -> None:
    model = _model_tar(tmp_path / "model.tar.gz", {"model-0000.params": b"w", "model-symbol.json": b"{}",
                                                   "code/inference.py": b"old", "code/stale.py": b"old"})
    bundle = _bundle(tmp_path, _source(tmp_path))
    storage = sm_code.Storage(lambda: None)
    planned = sm_code.repack_model(storage, f"file://{model}", bundle, check_mode=True)
    assert not Path(planned[7:]).exists()                       # check mode: the name only
    uri = sm_code.repack_model(storage, f"file://{model}", bundle, check_mode=False)
    assert uri == planned and uri.startswith(f"file://{tmp_path / 'code-location'}/")
    assert _members(Path(uri[7:])) == {"model-0000.params": b"w", "model-symbol.json": b"{}",
                                       "code/train.py": b"print('train')\n", "code/pkg/util.py": b"X = 1\n",
                                       "code/requirements.txt": b"mxnet==1.9.1\n"}
    first = Path(uri[7:]).read_bytes()
    assert sm_code.repack_model(storage, f"file://{model}", bundle, check_mode=False) == uri
    assert Path(uri[7:]).read_bytes() == first                  # the same pair: the same bytes, stored once

    (tmp_path / "code" / "train.py").write_text("print('v2')\n")  # other code: another model
    assert sm_code.repack_model(storage, f"file://{model}", _bundle(tmp_path, tmp_path / "code"), False) != uri
    _model_tar(model, {"model-0000.params": b"w2"})               # another model: another name
    assert sm_code.repack_model(storage, f"file://{model}", bundle, check_mode=True) != uri


@pytest.mark.parametrize("member", ["../escape.py", "/etc/cron.d/x", "code/../../up"])
def test_repack_refuses_a_model_archive_with_names_outside_it(tmp_path: Path, member: str) -> None:
    model = _model_tar(tmp_path / "model.tar.gz", {"model-0000.params": b"w", member: b"x"})
    with pytest.raises(sm.SageMakerError, match="plain file or folder inside the archive"):
        sm_code.repack_model(sm_code.Storage(lambda: None), f"file://{model}", _bundle(tmp_path, _source(tmp_path)),
                             False)
    assert not (tmp_path / "code-location").exists()            # nothing stored


def test_repack_of_a_file_that_is_no_archive_says_so(tmp_path: Path) -> None:
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"not a tar")
    bundle = _bundle(tmp_path, _source(tmp_path))
    with pytest.raises(sm.SageMakerError, match=r"not a readable model\.tar\.gz"):
        sm_code.repack_model(sm_code.Storage(lambda: None), f"file://{model}", bundle, False)
    with pytest.raises(sm.SageMakerError, match="cannot read"):
        sm_code.repack_model(sm_code.Storage(lambda: None), f"file://{tmp_path / 'missing.tar.gz'}", bundle, True)


# ------------------------------------------------------------------------------- local mode stays in its sandbox
def _tar(path: Path, build) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(("build", "fragment"), [
    # a link to elsewhere, then a file "inside" it: extracted in order, the file would land in the link's target
    (lambda tar, out: (_add(tar, "code", kind=tarfile.SYMTYPE, link=str(out)), _add(tar, "code/x.py")),
     "is a link or a special file"),
    (lambda tar, out: _add(tar, "../escape.py"), "would land outside"),
    (lambda tar, out: _add(tar, "code/../../escape.py"), "would land outside"),
    (lambda tar, out: _add(tar, str(out / "abs.py")), "would land outside"),
    (lambda tar, out: _add(tar, "hard", kind=tarfile.LNKTYPE, link="/etc/passwd"), "is a link or a special file"),
])
def test_an_archive_that_reaches_outside_is_refused_whole(tmp_path: Path, build, fragment: str) -> None:
    out = tmp_path / "elsewhere"
    out.mkdir()
    archive = _tar(tmp_path / "a.tar.gz", lambda tar: (_add(tar, "first.py"), build(tar, out)))
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=fragment):
        container.unpack(str(archive), str(dest))
    assert list(out.iterdir()) == [] and not (tmp_path / "escape.py").exists()
    assert not (dest / "first.py").exists()            # nothing of a refused archive is written


def test_a_plain_archive_unpacks(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", lambda tar: (_add(tar, "code/inference.py", b"ok"), _add(tar, "m.params")))
    container.unpack(str(archive), str(tmp_path / "dest"))
    assert (tmp_path / "dest" / "code" / "inference.py").read_bytes() == b"ok"


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/x", "..", "a/..\\..\\x"])
def test_object_names_that_climb_out_of_the_channel_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(ValueError, match="would land outside"):
        container.inside(str(tmp_path), rel, "object name")
    assert container.inside(str(tmp_path), "train/part-0.bin", "object name").endswith("/train/part-0.bin")


# ------------------------------------------------------------------------------------- S3 prefixes: one rule
PREFIXES_REFUSED = ["prod ", " prod", "/lead", "prod //data", "run-1/../run-10", "run-1/./x", "run*", "a/b /c",
                    "run-1\n", "run-1/\tx"]
REFUSED = r"is not a plain folder path|holds a wildcard|is not a valid S3 URI"


@pytest.mark.parametrize("prefix", PREFIXES_REFUSED)
def test_writer_and_purger_refuse_the_same_prefixes(tmp_path: Path, prefix: str) -> None:
    """What a job would write under (channels, output, checkpoints) passes exactly where the purge would take the
    same prefix: 'prod ' once purged prod/ (another run's) and kept 'prod /' (the writer's)."""
    from ansible.module_utils.dlfleet_s3 import normalize_prefix

    with pytest.raises(ValueError):
        normalize_prefix(prefix)
    for field in ("output_path", "checkpoint_s3_uri"):
        with pytest.raises(sm.SageMakerError, match=REFUSED):
            sm.check_training_params(params(tmp_path / field, **{field: f"s3://bucket/{prefix}/data"}))
    channel = {"name": "training", "uri": f"s3://bucket/{prefix}/data/synthetic", "content_type": None,
               "distribution": "FullyReplicated", "input_mode": None, "compression": "None"}
    with pytest.raises(sm.SageMakerError, match=REFUSED):
        sm.check_training_params(params(tmp_path / "channel", channels=[channel]))


@pytest.mark.parametrize("prefix", ["run-1", "run-1/data/synthetic", "cifar10-a/output", "a.b/c_d", "x"])
def test_writer_and_purger_take_the_same_plain_prefixes(tmp_path: Path, prefix: str) -> None:
    from ansible.module_utils.dlfleet_s3 import normalize_prefix

    assert normalize_prefix(prefix) == prefix + "/"
    sm.check_training_params(params(tmp_path, output_path=f"s3://bucket/{prefix}"))


# ------------------------------------------------------------------------------------------ tags and purge_tags
class TaggedBackend:
    """list_tags / update_tags of one resource, as both backends answer them."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = dict(tags)
        self.calls: list[tuple[dict[str, str], list[str]]] = []

    def list_tags(self, arn: str) -> dict[str, str]:
        return dict(self.tags)

    def update_tags(self, arn: str, to_set: dict[str, str], to_unset: list[str]) -> None:
        self.calls.append((to_set, to_unset))
        self.tags = {k: v for k, v in self.tags.items() if k not in to_unset} | to_set


def _tag_params(**changes: Any) -> dict[str, Any]:
    return {"tags": None, "purge_tags": True, "fleet": "f1", "owner": "me", "ttl": "8h", **changes}


def test_tags_follow_amazon_aws_semantics_and_never_touch_aws_or_remove_dlfleet_keys() -> None:
    have = {"team": "a", "aws:cloudformation:stack-name": "s", "dlfleet:fleet": "f1", "dlfleet:owner": "me",
            "dlfleet:ttl": "8h", "dlfleet:endpoint": "ep"}
    backend = TaggedBackend(have)
    assert sm_requests.sync_tags(backend, "arn", _tag_params(), False) == (False, have, have)  # tags left out
    changed, before, after = sm_requests.sync_tags(backend, "arn", _tag_params(tags={"env": "dev"}), True)
    assert changed and before == have and after == {k: v for k, v in have.items() if k != "team"} | {"env": "dev"}
    assert backend.calls == []                                                     # check mode: a prediction only
    changed, _, after = sm_requests.sync_tags(backend, "arn", _tag_params(tags={"env": "dev"}, purge_tags=False),
                                              False)
    assert changed and backend.calls == [({"env": "dev"}, [])] and after["team"] == "a"
    changed, _, after = sm_requests.sync_tags(backend, "arn", _tag_params(tags={}), False)
    assert changed and backend.calls[-1] == ({}, ["env", "team"])
    assert after == {k: v for k, v in have.items() if k != "team"}                  # aws: and dlfleet: kept
    changed, _, _ = sm_requests.sync_tags(backend, "arn", _tag_params(tags={}, ttl="1d"), False)
    assert changed and backend.calls[-1] == ({"dlfleet:ttl": "1d"}, [])


def test_reserved_tag_keys_are_refused_before_any_call() -> None:
    for key in ("aws:x", "dlfleet:fleet"):
        with pytest.raises(sm.SageMakerError, match="not allowed in tags"):
            sm_requests.resource_tags(_tag_params(tags={key: "v"}))
    assert sm_requests.resource_tags(_tag_params(tags={"n": 1})) == {
        "n": "1", "dlfleet:fleet": "f1", "dlfleet:owner": "me", "dlfleet:ttl": "8h"}
