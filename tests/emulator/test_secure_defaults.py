"""Secure defaults, each checked on what the real playbooks and modules leave in the emulator (and on disk):

- instances answer instance metadata with IMDSv2 tokens only;
- every EBS volume, root and data, is encrypted;
- SSH is open only from the CIDR given, and 0.0.0.0/0 is refused unless explicitly allowed;
- the fleet's private key is 0600 (in a 0700 directory) and never leaves the machine: EC2 holds its public half;
- S3 uploads (the data set, the code archive, the model) are stored with server-side encryption;
- SageMaker jobs can run with network isolation.

One fleet is provisioned for the module (and torn down afterwards); the SageMaker modules run once, in one
play, against the session emulator (AWS mode) and on this machine (local mode, no docker).
"""
from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT, PlaybookResult, run_playbook

PROVISION = "playbooks/provision.yml"
TEARDOWN = "playbooks/teardown.yml"
SAGEMAKER = "playbooks/sagemaker.yml"
LIVE = ["pending", "running", "stopping", "stopped"]
SSH_CIDR = "198.51.100.23/32"   # TEST-NET-2: an address of the operator's, not the default
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
TRAINING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"


def _env(emulator) -> dict[str, str]:
    return {**os.environ, **emulator.env}


def _ok(run: PlaybookResult, what: str) -> PlaybookResult:
    failures = "\n".join(f"{task}: {res.get('msg')}" for task, _, res in run.all_results() if res.get("failed"))
    assert run.rc == 0, f"{what}: rc={run.rc}\n{failures}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    return run


# ---------------------------------------------------------------------------------------------------------
# EC2: one provisioned fleet with two data volumes
# ---------------------------------------------------------------------------------------------------------

class Fleet:
    def __init__(self, emulator, root: Path) -> None:
        self.name = f"secure-{uuid.uuid4().hex[:8]}"
        self.emulator, self.root = emulator, root
        self.vars = {"dlfleet_fleet_name": self.name, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
                     "dlfleet_run_dir": str(root / "run"), "dlfleet_artifacts_dir": str(root / "artifacts"),
                     "provision_ssh_cidr": SSH_CIDR, "provision_instance_count": 2,
                     "provision_data_volumes": [{"size": 20, "type": "gp3"},
                                                {"size": 40, "type": "io2", "iops": 3000}],
                     "provision_wait_timeout": 120}
        self.ec2 = emulator.client("ec2")
        self.by_tag = [{"Name": "tag:dlfleet:fleet", "Values": [self.name]}]

    @property
    def key_file(self) -> Path:
        return self.root / "run" / "keys" / "us-east-1" / f"{self.name}.pem"

    def instances(self) -> list[dict[str, Any]]:
        res = self.ec2.describe_instances(Filters=[*self.by_tag, {"Name": "instance-state-name", "Values": LIVE}])
        return [i for r in res["Reservations"] for i in r["Instances"]]


@pytest.fixture(scope="module")
def fleet(emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(emulator, tmp_path_factory.mktemp("secure-fleet"))
    _ok(run_playbook(PROVISION, extra_vars=fleet.vars, env=_env(emulator)), "provision")
    try:
        yield fleet
    finally:
        _ok(run_playbook(TEARDOWN, extra_vars=fleet.vars, env=_env(emulator)), "teardown")


def test_instances_take_imdsv2_tokens_only(fleet: Fleet) -> None:
    instances = fleet.instances()
    assert len(instances) == 2
    for inst in instances:
        assert inst["MetadataOptions"]["HttpTokens"] == "required", inst["MetadataOptions"]
        assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
    recorded = json.loads((fleet.root / "artifacts" / "fleet.json").read_text())["instances"]
    assert {i["http_tokens"] for i in recorded} == {"required"}


def test_every_ebs_volume_root_and_data_is_encrypted(fleet: Fleet) -> None:
    ids = [i["InstanceId"] for i in fleet.instances()]
    volumes = fleet.ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": ids}])["Volumes"]
    devices = sorted(a["Device"] for v in volumes for a in v["Attachments"])
    assert len(volumes) == 2 * 3, devices   # a root and two data volumes per instance
    assert [v["VolumeId"] for v in volumes if not v["Encrypted"]] == []
    assert sorted({v["VolumeType"] for v in volumes}) == ["gp3", "io2"]
    assert {v["VolumeId"] for v in fleet.ec2.describe_volumes(Filters=fleet.by_tag)["Volumes"]} == {
        v["VolumeId"] for v in volumes}, "every volume carries the fleet's tags, so teardown finds it"


def test_ssh_is_open_only_from_the_given_cidr(fleet: Fleet) -> None:
    [group] = fleet.ec2.describe_security_groups(Filters=fleet.by_tag)["SecurityGroups"]
    rules = [{"proto": p["IpProtocol"], "ports": (p.get("FromPort"), p.get("ToPort")),
              "ipv4": [r["CidrIp"] for r in p.get("IpRanges", [])], "ipv6": p.get("Ipv6Ranges", []),
              "groups": p.get("UserIdGroupPairs", []), "prefix_lists": p.get("PrefixListIds", [])}
             for p in group["IpPermissions"]]
    from_outside = [r for r in rules if r["ipv4"] or r["ipv6"] or r["prefix_lists"]]
    assert from_outside == [{"proto": "tcp", "ports": (22, 22), "ipv4": [SSH_CIDR], "ipv6": [], "groups": [],
                             "prefix_lists": []}], "from outside the fleet, only SSH and only from the CIDR"
    for rule in rules:
        if rule not in from_outside:   # the training ports: open between the fleet's own hosts, to no one else
            assert [pair["GroupId"] for pair in rule["groups"]] == [group["GroupId"]], rule
            assert not rule["ports"][0] <= 22 <= rule["ports"][1], rule
    for inst in fleet.instances():
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [group["GroupId"]]


def test_private_key_is_0600_in_a_0700_directory_and_ec2_holds_only_its_public_half(fleet: Fleet) -> None:
    assert stat.S_IMODE(fleet.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(fleet.key_file.parent.stat().st_mode) == 0o700
    assert fleet.key_file.parent.name == "us-east-1"   # keys/<region>/<fleet>.pem: one key per fleet and region
    assert stat.S_IMODE(fleet.key_file.parent.parent.stat().st_mode) == 0o700
    assert fleet.key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = (fleet.key_file.parent / f"{fleet.name}.pem.pub").read_text().split()
    [pair] = fleet.ec2.describe_key_pairs(Filters=fleet.by_tag, IncludePublicKey=True)["KeyPairs"]
    assert pair["KeyName"] == f"dlfleet-{fleet.name}"
    assert pair["PublicKey"].split()[:2] == public[:2], "the key pair is the public half of the saved key"
    for inst in fleet.instances():
        assert inst["KeyName"] == pair["KeyName"]


def test_ssh_from_anywhere_is_refused_unless_explicitly_allowed(emulator, tmp_path: Path) -> None:
    name = f"open-{uuid.uuid4().hex[:8]}"
    extra = {"dlfleet_fleet_name": name, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(tmp_path / "run"), "dlfleet_artifacts_dir": str(tmp_path / "artifacts"),
             "provision_ssh_cidr": "0.0.0.0/0"}
    refused = run_playbook(PROVISION, extra_vars=extra, env=_env(emulator))
    assert refused.rc != 0
    check = refused.results("Check the inputs")
    assert check.get("failed") and "0.0.0.0/0" in check["msg"] and "provision_ssh_allow_anywhere=true" in check["msg"]
    ec2 = emulator.client("ec2")
    by_tag = [{"Name": "tag:dlfleet:fleet", "Values": [name]}]
    assert ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"] == []
    assert not (tmp_path / "run" / "keys").exists()

    # Asked for in so many words, it passes the check (shown in check mode: nothing is created).
    allowed = run_playbook(PROVISION, extra_vars={**extra, "provision_ssh_allow_anywhere": True},
                           env=_env(emulator), check=True)
    assert not allowed.results("Check the inputs").get("failed")
    _ok(allowed, "check mode with provision_ssh_allow_anywhere=true")
    assert ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"] == []


# ---------------------------------------------------------------------------------------------------------
# S3 and SageMaker
# ---------------------------------------------------------------------------------------------------------

def _play(tasks: list[dict[str, Any]], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    book = [{"name": "SageMaker defaults", "hosts": "localhost", "gather_facts": False,
             "tasks": [{**task, "ignore_errors": True} for task in tasks]}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    try:
        run = run_playbook(path, env=env, timeout=600)
    finally:
        path.unlink()
    return {task["name"]: run.results(task["name"]) for task in tasks}


@pytest.fixture(scope="module")
def sagemaker(emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The data-set upload of playbooks/sagemaker.yml, then training and tuning jobs in local and AWS mode."""
    root = tmp_path_factory.mktemp("secure-sagemaker")
    bucket = f"secure-{uuid.uuid4().hex[:10]}"
    fleet = f"secure-sm-{uuid.uuid4().hex[:6]}"
    env = _env(emulator)
    upload = _ok(run_playbook(SAGEMAKER, tags=["sagemaker_upload"], env=env, extra_vars={
        "dlfleet_fleet_name": fleet, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
        "dlfleet_artifacts_dir": str(root / "artifacts"), "sagemaker_bucket": bucket, "sagemaker_prefix": fleet,
        # a path with spaces and parentheses: the generator runs from an argv, no shell (it once broke here)
        "sagemaker_data_dir": str(root / "data set (local copy)"), "sagemaker_synthetic_size": 50}),
        "data set upload")
    assert upload.changed > 0
    assert (root / "data set (local copy)" / "SYNTHETIC.json").is_file()
    kms_key = emulator.client("kms").create_key(Description="dlfleet test key")["KeyMetadata"]["Arn"]
    common = {"role_arn": ROLE, "entry_point": "tiny_train.py", "source_dir": str(FIXTURES),
              "hyperparameters": {"epochs": 1}, "channels": [{"name": "training", "uri": f"s3://{bucket}/{fleet}/data"}],
              "output_path": f"s3://{bucket}/{fleet}/output", "fleet": fleet, "owner": "tests", "ttl": "1h",
              "local_dir": str(root / "sagemaker"), "local_python": str(ROOT / ".venv-train/bin/python")}
    aws = {**common, "image_uri": TRAINING_IMAGE, "instance_type": "ml.m5.xlarge"}
    names = {k: f"{fleet}-{k}" for k in ("local", "kms", "isolated", "default", "tuning")}
    results = _play([
        {"name": "Train here (local mode)", "sagemaker_training_job": {
            **common, "name": names["local"], "instance_type": "local", "wait_timeout": 300}},
        {"name": "Train with a KMS key", "sagemaker_training_job": {
            **aws, "name": names["kms"], "kms_key_id": kms_key,
            "code_location": f"s3://{bucket}/{fleet}/kms-code"}},
        {"name": "Train with network isolation", "sagemaker_training_job": {
            **aws, "name": names["isolated"], "enable_network_isolation": True}},
        {"name": "Train with the defaults", "sagemaker_training_job": {**aws, "name": names["default"]}},
        {"name": "Tune with network isolation", "sagemaker_tuning_job": {
            **aws, "name": names["tuning"], "enable_network_isolation": True, "max_jobs": 2, "max_parallel_jobs": 1,
            "objective": {"metric_name": "validation-accuracy", "type": "Maximize"},
            "metric_definitions": [{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+)"}],
            "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.2}]}},
    ], env)
    for name, res in results.items():
        assert not res.get("failed"), f"{name}: {res.get('msg')}"
    return {"bucket": bucket, "prefix": fleet, "kms_key": kms_key, "names": names, "results": results}


def _head(emulator, uri: str) -> dict[str, Any]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return emulator.client("s3").head_object(Bucket=bucket, Key=key)


def test_data_set_upload_lands_encrypted_in_a_bucket_that_encrypts_by_default(emulator, sagemaker) -> None:
    s3 = emulator.client("s3")
    bucket, prefix = sagemaker["bucket"], sagemaker["prefix"]
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/data/")["Contents"]]
    assert any(k.endswith("data_batch_1.bin") for k in keys) and any(k.endswith("test_batch.bin") for k in keys)
    unencrypted = [k for k in keys if s3.head_object(Bucket=bucket, Key=k).get("ServerSideEncryption") != "AES256"]
    assert unencrypted == []


def test_code_and_model_archives_are_uploaded_with_sse(emulator, sagemaker) -> None:
    results = sagemaker["results"]
    local = results["Train here (local mode)"]
    assert local["status"] == "Completed", local.get("log_tail")
    for uri in (local["source"]["uri"], local["model_artifact"]):
        assert _head(emulator, uri).get("ServerSideEncryption") == "AES256", uri
    aws = results["Train with the defaults"]
    assert aws["source"]["uploaded"] is False, "the same code is uploaded once (content-addressed)"
    assert _head(emulator, aws["source"]["uri"]).get("ServerSideEncryption") == "AES256"

    kms = results["Train with a KMS key"]
    head = _head(emulator, kms["source"]["uri"])
    assert head.get("ServerSideEncryption") == "aws:kms" and head.get("SSEKMSKeyId") == sagemaker["kms_key"]
    described = emulator.client("sagemaker").describe_training_job(TrainingJobName=sagemaker["names"]["kms"])
    assert described["OutputDataConfig"]["KmsKeyId"] == sagemaker["kms_key"]


def test_sagemaker_jobs_run_network_isolated_when_asked(emulator, sagemaker) -> None:
    sm = emulator.client("sagemaker")
    names = sagemaker["names"]
    assert sm.describe_training_job(TrainingJobName=names["isolated"])["EnableNetworkIsolation"] is True
    assert sm.describe_training_job(TrainingJobName=names["default"])["EnableNetworkIsolation"] is False
    tuning = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=names["tuning"])
    assert tuning["TrainingJobDefinition"]["EnableNetworkIsolation"] is True
    assert sagemaker["results"]["Train with network isolation"]["training_job"]["enable_network_isolation"] is True
