"""Bad input, table-driven: every module, role, playbook and the trainer, given a wrong value, fails with a
message that names the value and the fix, and creates and changes nothing.

Each case holds the input, the message fragments expected (the value, and the fix), and its check that nothing
changed:
- AWS: the emulator's request log has no mutating call (only Describe/Get/List/Head) inside the case's own time
  window, and the account (instances, volumes, groups, key pairs, buckets and objects, SageMaker jobs, models,
  configs, endpoints, parameters) is the same before and after;
- files: the case's own paths (SageMaker local_dir, the trainer's output, mxnet_train's home, the volume's
  image) are untouched or absent, and a mocked nvidia-smi records no command that changes the GPU.

The cases run in a few batches: one play on localhost holds every module and role case, each in a block of its
own whose rescue records the failure; the playbook, test-host and trainer cases run one by one. The AWS account
is an emulator of this module's own (a seeded moto server over HTTP), so no other test's calls can fall into a
case's window. There is no GPU here: the GPU cases replay real nvidia-smi captures through a mock ("mock" in
their ids).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.dlfleet_nvidia import QUERY_FIELDS
from helpers import ROOT, Emulator, PlaybookResult, read_env, run_playbook
from testhosts.testhosts import HostSpec, LocalHosts, VolumeSpec

ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerRole"
SM_FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
SMI_FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"
TRAIN_PYTHON = ROOT / ".venv-train" / "bin" / "python"
READ_ACTIONS = ("Describe", "Get", "List", "Head")
VOLUME_ID = "vol-0badf5e0000000001"
LANES = 3   # the play cases run on this many stand-ins for localhost at once


@dataclass(frozen=True)
class Case:
    id: str
    runner: str                        # play | playbook | testhost | trainer
    spec: Any                          # play/testhost: the task; playbook: (path, extra vars); trainer: CLI args
    expect: tuple[str, ...]            # message fragments: the value, and the fix
    absent: tuple[str, ...] = ()       # paths (under @tmp@) that must not exist afterwards
    not_in: tuple[str, ...] = ()       # fragments the message must not hold (a right value blamed)
    extra: dict[str, Any] = field(default_factory=dict)


def fleet(**changes: Any) -> dict[str, Any]:
    args = {"name": "bad-inputs", "count": 1, "instance_types": ["g5.xlarge"], "image_id": "@image@",
            "wait": False, "owner": "tests", "ttl": "1h"}
    return {"ec2_gpu_fleet": {**args, **changes}}


def quota(**changes: Any) -> dict[str, Any]:
    return {"ec2_gpu_quota_info": {"fleet": [{"instance_type": "g5.xlarge", "count": 1}], "fail_on_shortfall": True,
                                   **changes}}


def training(module: str = "sagemaker_training_job", **changes: Any) -> dict[str, Any]:
    args = {"name": "bad-inputs-job", "role_arn": ROLE_ARN, "entry_point": "tiny_train.py",
            "source_dir": str(SM_FIXTURES), "instance_type": "ml.m5.xlarge", "hyperparameters": {"epochs": 2},
            "channels": [{"name": "training", "uri": "s3://@bucket@/data"}], "output_path": "s3://@bucket@/output",
            "local_dir": "@tmp@/sm-cache", "wait": False, "owner": "tests", "ttl": "1h"}
    args.update(changes)
    return {module: {k: v for k, v in args.items() if v is not None}}


def tuning(**changes: Any) -> dict[str, Any]:
    args = {"name": "bad-inputs-tune", "strategy": "Random", "max_jobs": 2,
            "objective": {"metric_name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+)"},
            "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.2}],
            "hyperparameters": {"epochs": 2}}
    return training("sagemaker_tuning_job", **{**args, **changes})


def endpoint(**changes: Any) -> dict[str, Any]:
    args = {"name": "bad-inputs-endpoint", "role_arn": ROLE_ARN, "model_data": "s3://@bucket@/m/model.tar.gz",
            "instance_type": "ml.m5.large", "local_dir": "@tmp@/sm-cache", "wait": False}
    args.update(changes)
    return {"sagemaker_endpoint": {k: v for k, v in args.items() if v is not None}}


def local_training(case: str, **changes: Any) -> dict[str, Any]:
    """Local mode: the job would run on this machine, its state under a local_dir of the case's own."""
    return training(instance_type="local", local_dir=f"@tmp@/{case}", output_path="file://@tmp@/out",
                    channels=[], local_python=str(TRAIN_PYTHON), **changes)


def gpu_gate(fixture: str, **role_vars: Any) -> dict[str, Any]:
    """Role dlami's NVIDIA tasks with nvidia-smi replaying a real capture (mock: there is no GPU here).
    Persistence mode is asked for, so that a host let through would have `-pm 1` recorded by the mock."""
    return {"ansible.builtin.include_role": {"name": "dlami", "tasks_from": "nvidia.yml"},
            "vars": {"dlami_become": False, "dlami_nvidia_smi": f"@tmp@/smi-{fixture}/nvidia-smi",
                     "dlami_gpu_persistence_mode": True, **role_vars}}


def mxnet_train(**role_vars: Any) -> dict[str, Any]:
    return {"ansible.builtin.include_role": {"name": "mxnet_train"},
            "vars": {"mxnet_train_home": "@tmp@/train-home", "mxnet_train_artifacts_dir": "@tmp@/train-artifacts",
                     "mxnet_train_source_dir": str(ROOT / "training"), "mxnet_train_dataset": "synthetic",
                     "mxnet_train_epochs": 1, **role_vars}}


def dlami_env(**role_vars: Any) -> dict[str, Any]:
    """Role dlami's env tasks: the names become paths and a line of the login file."""
    return {"ansible.builtin.include_role": {"name": "dlami", "tasks_from": "env.yml"},
            "vars": {"dlami_become": False, "dlami_manage_bashrc": True, **role_vars}}


def dlami_volume(**volume: Any) -> dict[str, Any]:
    return {"ansible.builtin.include_role": {"name": "dlami", "tasks_from": "volume.yml"},
            "vars": {"dlami_volume": {"volume_id": VOLUME_ID, "mount_point": "/data", **volume}}}


CASES: list[Case] = [
    # ec2_gpu_fleet
    Case("fleet-non-gpu-type-with-require-gpu", "play", fleet(instance_types=["m5.large"]),
         ("['m5.large'] have no GPU", "use a GPU type such as g5.xlarge, or set require_gpu: false")),
    Case("fleet-unknown-instance-type", "play", fleet(instance_types=["g5.mega"]),
         ("['g5.mega'] are not offered", "check the spelling")),
    Case("fleet-unknown-region", "play", fleet(region="us-nowhere-1"),
         ("region 'us-nowhere-1' is not an AWS region", "give one such as us-east-1")),
    Case("fleet-root-volume-smaller-than-the-ami-snapshot", "play", fleet(root_volume={"size": 8}),
         ("root_volume.size 8 GiB is smaller than the snapshot", "75")),
    Case("fleet-iops-without-io1-io2-gp3", "play", fleet(root_volume={"size": 100, "type": "gp2", "iops": 3000}),
         ("root_volume.iops 3000 is only valid for io1, io2 or gp3 volumes, not gp2", "set root_volume.type")),
    Case("fleet-io2-without-iops", "play", fleet(root_volume={"size": 100, "type": "io2"}),
         ("root_volume.type io2", "needs root_volume.iops; set it")),
    Case("fleet-iops-above-what-the-size-allows", "play", fleet(data_volumes=[{"size": 10, "type": "io1",
                                                                                "iops": 5000}]),
         ("data_volumes[0].iops 5000 exceeds 50 IOPS per GiB", "raise data_volumes[0].size to at least 100 GiB")),
    Case("fleet-negative-count", "play", fleet(count=-1),
         ("count -1 is negative", "use 0 or more")),
    Case("fleet-bad-ttl", "play", fleet(ttl="8 hours"),
         ("ttl '8 hours' is not a duration", "for example 8h")),
    Case("fleet-unknown-market", "play", fleet(market="reserved"),
         ("market", "reserved", "on-demand, spot")),
    Case("fleet-subnets-and-zones-together", "play", fleet(availability_zones=["us-east-1b"],
                                                           subnet_ids=["@subnet_a@"]),
         ("availability_zones ['us-east-1b'] or subnet_ids ['@subnet_a@'], not both",
          "list the subnets of the zones you want")),
    Case("fleet-unknown-availability-zone", "play", fleet(availability_zones=["us-east-1z"]),
         ("['us-east-1z'] are not zones of this region", "use some of us-east-1a")),
    Case("fleet-unknown-subnet", "play", fleet(subnet_ids=["subnet-0000000000000dead"]),
         ("subnet-0000000000000dead", "list subnets that exist in this region")),
    Case("fleet-kms-key-without-encryption", "play", fleet(kms_key_id="alias/dlfleet", encrypted=False),
         ("kms_key_id 'alias/dlfleet' needs encrypted: true", "drop kms_key_id or encrypt")),
    Case("fleet-unknown-image", "play", fleet(image_id="ami-0123456789abcdef0"),
         ("image_id 'ami-0123456789abcdef0' was not found", "look it up with dlami_info")),
    Case("fleet-image-of-another-architecture", "play", fleet(image_id="@arm_image@"),
         ("is arm64 but instance_types ['g5.xlarge'] do not run arm64", "pick an image of their architecture")),
    # ec2_gpu_quota_info
    Case("quota-shortfall", "play", quota(fleet=[{"instance_type": "p3.16xlarge", "count": 10}]),
         ("L-417A185B", "640", "32", "request an increase")),
    Case("quota-negative-count", "play", quota(fleet=[{"instance_type": "g5.xlarge", "count": -2}]),
         ("fleet[0].count is -2 for g5.xlarge", "give 0 or more")),
    Case("quota-unknown-instance-type", "play", quota(fleet=[{"instance_type": "p9.xlarge", "count": 1}]),
         ("p9.xlarge", "check the spelling")),
    Case("quota-unknown-market", "play", quota(market="dedicated"),
         ("market", "dedicated", "on-demand, spot")),
    # dlami_info
    Case("dlami-info-no-match", "play", {"dlami_info": {"name_pattern": "Deep Learning AMI Nonexistent *"}},
         ("'Deep Learning AMI Nonexistent *'", "check the pattern")),
    Case("dlami-info-unknown-ami-type", "play", {"dlami_info": {"ami_type": "pytorch-9.9-ubuntu-99.04"}},
         ("pytorch-9.9-ubuntu-99.04", "ami types published for x86_64: base-oss-nvidia-driver-gpu-ubuntu-22.04")),
    Case("dlami-info-misspelt-region", "play", {"dlami_info": {"region": "eu-centrall-1"}},
         ("region 'eu-centrall-1' is not an AWS region", "did you mean eu-central-1")),
    Case("dlami-info-malformed-image-id", "play", {"dlami_info": {"image_id": "dlami-latest"}},
         ("image_id 'dlami-latest' is not an AMI id", "ami-0123456789abcdef0")),
    # sagemaker_training_job (AWS mode, on the emulator)
    Case("sm-train-missing-role-arn", "play", training(role_arn=None),
         ("role_arn None is not an IAM role ARN", "arn:aws:iam::123456789012:role/SageMakerRole")),
    Case("sm-train-hyperparameter-of-the-wrong-type", "play", training(hyperparameters={"epochs": [1, 2]}),
         ("hyperparameters.epochs is a list ([1, 2])", "use a number, a string or a boolean")),
    Case("sm-train-source-dir-without-the-entry-point", "play", training(entry_point="train.py"),
         ("entry_point 'train.py' is not in source_dir", "fix source_dir")),
    Case("sm-train-job-name-reused-with-another-spec", "play",
         training(name="bad-inputs-reused", hyperparameters={"epochs": 3}),
         ("bad-inputs-reused", "hyperparameters.epochs: existing '2', requested '3'", "new name"),
         extra={"reused_job": "bad-inputs-reused"}),
    Case("sm-train-unknown-region", "play", training(region="us-nowhere-1"),
         ("in us-nowhere-1: Unsupported region", "Supported region(s): af-south-1")),
    Case("sm-train-invalid-job-name", "play", training(name="cifar_job"),
         ("training job name 'cifar_job' is not valid", "letters, digits and hyphens")),
    Case("sm-train-max-wait-without-spot", "play", training(max_wait=7200),
         ("max_wait", "set use_spot: true, or drop max_wait")),
    Case("sm-train-local-path-for-aws", "play", training(output_path="file:///srv/out"),
         ("output_path 'file:///srv/out'", "upload it to S3")),
    Case("sm-train-zero-instances", "play", training(instance_count=0),
         ("instance_count is 0", "at least 1")),
    Case("sm-train-ec2-type-for-sagemaker", "play", training(instance_type="p3.2xlarge"),
         ("instance_type 'p3.2xlarge' is not a SageMaker instance type", "'ml.p3.2xlarge'")),
    Case("sm-train-local-hyperparameter-of-the-wrong-type", "play",
         local_training("sm-local-hp", hyperparameters={"epochs": {"n": 2}}),
         ("hyperparameters.epochs is a dict", "use a number, a string or a boolean"), absent=("sm-local-hp",)),
    Case("sm-train-local-source-dir-without-the-entry-point", "play",
         local_training("sm-local-entry", entry_point="train.py"),
         ("entry_point 'train.py' is not in source_dir", "fix source_dir"), absent=("sm-local-entry",)),
    # sagemaker_tuning_job
    Case("sm-tune-range-min-above-max", "play",
         tuning(parameter_ranges=[{"name": "lr", "type": "continuous", "min_value": 0.2, "max_value": 0.02}]),
         ("parameter_ranges[lr]: needs min_value < max_value (got 0.2 and 0.02)",)),
    Case("sm-tune-unknown-strategy", "play", tuning(strategy="Genetic"),
         ("strategy", "Genetic", "Bayesian, Random, Hyperband, Grid")),
    Case("sm-tune-grid-over-a-continuous-range", "play", tuning(strategy="Grid"),
         ("strategy Grid searches categorical ranges only", "pick another strategy")),
    Case("sm-tune-log-scaling-from-zero", "play",
         tuning(parameter_ranges=[{"name": "lr", "type": "continuous", "min_value": 0.0, "max_value": 0.2,
                                   "scaling": "Logarithmic"}]),
         ("Logarithmic scaling needs min_value > 0 (got 0.0)",)),
    # sagemaker_endpoint
    Case("sm-endpoint-zero-instances", "play", endpoint(instance_count=0),
         ("instance_count is 0", "at least 1")),
    Case("sm-endpoint-missing-role-arn", "play", endpoint(role_arn=None),
         ("role_arn None is not an IAM role ARN", "pass the model's execution role")),
    Case("sm-endpoint-local-and-aws-variants", "play",
         endpoint(instance_type=None, variants=[{"name": "a", "instance_type": "local"},
                                                {"name": "b", "instance_type": "ml.m5.large"}]),
         ("['local', 'ml.m5.large'] mix local and AWS", "use 'local' for all variants or ml.* types for all")),
    # sagemaker_quota_info: a quota is found by its exact name, the instance type is no pattern
    Case("sm-quota-instance-type-that-is-a-pattern", "play",
         {"sagemaker_quota_info": {"needs": [{"instance_type": "ml.m5.*", "count": 1}], "fail_on_shortfall": True}},
         ("no SageMaker quota is named 'ml.m5.* for training job usage'", "such as ml.m5.xlarge")),
    # dlfleet_reaper
    Case("reaper-everything-without-a-fleet", "play", {"dlfleet_reaper": {"expired_only": False}},
         ("expired_only=false would remove every dlfleet resource", "fleet=NAME")),
    Case("reaper-unknown-region", "play", {"dlfleet_reaper": {"fleet": "bad-inputs", "region": "mars-north-1"}},
         ("region 'mars-north-1' is not an AWS region", "give one such as us-east-1")),
    Case("reaper-bad-now", "play", {"dlfleet_reaper": {"now": "yesterday"}},
         ("now='yesterday' is not an ISO 8601 time", "2026-11-26T18:00:00Z")),
    # nvidia_gpu_facts and role dlami's GPU health gate (mock nvidia-smi: no GPU here)
    Case("mock-gpu-wrong-gpu-count-for-the-instance-type", "play",
         gpu_gate("k80-410", dlami_instance_type="p2.8xlarge", dlami_min_driver_version=""),
         ("1 GPU(s) visible, the instance type promises 8", "replace the instance"), absent=("smi-k80-410/pm.log",)),
    Case("mock-gpu-driver-below-the-minimum", "play", gpu_gate("v100-525", dlami_min_driver_version="999.1"),
         ("is older than the minimum 999.1", "use a newer DLAMI or upgrade the driver"),
         absent=("smi-v100-525/pm.log",)),
    Case("mock-gpu-negative-expected-count", "play",
         {"nvidia_gpu_facts": {"nvidia_smi": "@tmp@/smi-h200-device/nvidia-smi", "expected_count": -1}},
         ("expected_count=-1 is negative", "give the GPUs per instance")),
    # role dlami: env names reach paths and ~/.bashrc
    Case("dlami-env-name-that-runs-a-command-at-login", "play", dlami_env(dlami_env_name="mx$(touch @tmp@/pwned)"),
         ('dlami_env_name="mx$(touch ', "not an env name", "no slashes, '..', spaces, quotes or $"),
         absent=("pwned",)),
    Case("dlami-venv-name-that-climbs-out-of-opt", "play", dlami_env(dlami_venv_name="../etc"),
         ('dlami_venv_name="../etc"', "not an env name"), not_in=("dlami_env_name",)),
    Case("dlami-env-name-with-a-quote", "play", dlami_env(dlami_env_name="mx'p36"),
         ('dlami_env_name="mx\'p36"', "not an env name")),
    # role mxnet_train
    Case("mxnet-train-bad-kvstore", "play", mxnet_train(mxnet_train_kvstore="dist_async"),
         ("mxnet_train_kvstore must be one of: local, device, dist_sync, dist_device_sync", "got: dist_async"),
         absent=("train-home", "train-artifacts"), not_in=("mxnet_train_dataset", "mxnet_train_epochs")),
    Case("mxnet-train-run-name-that-climbs-out", "play", mxnet_train(mxnet_train_run="../../etc"),
         ('mxnet_train_run="../../etc" is not a run name', "no slashes, dots"),
         absent=("train-home", "train-artifacts")),
    Case("mxnet-train-zero-epochs", "play", mxnet_train(mxnet_train_epochs=0),
         ("mxnet_train_epochs=0", "at least 1"), absent=("train-home", "train-artifacts"),
         not_in=("mxnet_train_dataset", "mxnet_train_kvstore")),
    # playbooks/provision.yml
    Case("provision-ssh-from-anywhere-without-the-allow-flag", "playbook",
         ("playbooks/provision.yml", {"provision_ssh_cidr": "0.0.0.0/0"}),
         ("'0.0.0.0/0'", "provision_ssh_allow_anywhere=true"), absent=("run", "artifacts")),
    Case("provision-ssh-cidr-with-host-bits-past-the-prefix", "playbook",
         ("playbooks/provision.yml", {"provision_ssh_cidr": "10.9.9.9/0"}),
         ("10.9.9.9/0 has host bits set", "did you mean 10.9.9.9/32"), absent=("run", "artifacts")),
    Case("provision-ssh-cidr-half-the-internet", "playbook",
         ("playbooks/provision.yml", {"provision_ssh_cidr": "0.0.0.0/1"}),
         ("2,147,483,648 public addresses", "provision_ssh_allow_anywhere=true"), absent=("run", "artifacts")),
    Case("provision-ssh-cidr-octet-out-of-range", "playbook",
         ("playbooks/provision.yml", {"provision_ssh_cidr": "999.1.1.1/32"}),
         ("'999.1.1.1/32' does not appear to be an IPv4 or IPv6 network", "give the IPv4 CIDR"),
         absent=("run", "artifacts")),
    Case("provision-count-that-is-not-a-number", "playbook",
         ("playbooks/provision.yml", {"provision_instance_count": "2x"}),
         ("provision_instance_count='2x' is not a whole number", "digits only"), absent=("run", "artifacts")),
    # no subnets: the default VPC, no public address and no route to Systems Manager; the SSM wait would spin
    Case("provision-private-fleet-without-subnets", "playbook",
         ("playbooks/provision.yml", {"provision_private_fleet": True, "provision_subnet_ids": [],
                                      "provision_iam_instance_profile": "dlfleet-instance-ssm"}),
         ("provision_private_fleet=true needs provision_subnet_ids", "list subnets that reach Systems Manager"),
         absent=("run", "artifacts"), not_in=("provision_iam_instance_profile", "provision_ssh_cidr")),
    Case("provision-fleet-name-with-a-wildcard", "playbook",
         ("playbooks/provision.yml", {"dlfleet_fleet_name": "bystande?"}),
         ("fleet name 'bystande?' is not allowed", "letters, digits and hyphens"), absent=("run", "artifacts")),
    Case("provision-security-group-name-taken-by-another-team", "playbook",
         ("playbooks/provision.yml", {"dlfleet_fleet_name": "foreign-sg"}),
         ("security group dlfleet-foreign-sg-ssh", "without the tag dlfleet:fleet=foreign-sg",
          "Choose another dlfleet_fleet_name"), absent=("run", "artifacts")),
    Case("provision-key-pair-name-taken-by-another-team", "playbook",
         ("playbooks/provision.yml", {"dlfleet_fleet_name": "foreign-key"}),
         ("key pair dlfleet-foreign-key", "without the tag dlfleet:fleet=foreign-key"), absent=("run", "artifacts")),
    # another fleet's group (the bystander's) must stay whatever pattern or path the name holds
    Case("teardown-fleet-name-with-a-wildcard", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_fleet_name": "bystande?"}), ("fleet name 'bystande?' is not allowed", "no wildcards")),
    Case("teardown-fleet-name-that-is-a-star", "playbook", ("playbooks/teardown.yml", {"dlfleet_fleet_name": "*"}),
         ("fleet name '*' is not allowed", "for example -e dlfleet_fleet_name=cifar-a")),
    Case("teardown-fleet-name-that-climbs-out", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_fleet_name": "../../../victim"}), ("fleet name '../../../victim' is not allowed", "slashes")),
    Case("provision-quota-shortfall", "playbook",
         ("playbooks/provision.yml", {"provision_instance_types": ["p3.16xlarge"], "provision_instance_count": 10}),
         ("L-417A185B", "request an increase"), absent=("run", "artifacts")),
    Case("teardown-without-a-fleet-name", "playbook", ("playbooks/teardown.yml", {"dlfleet_fleet_name": ""}),
         ("fleet name '' is not allowed", "for example -e dlfleet_fleet_name=cifar-a")),
    Case("teardown-fleet-name-with-a-trailing-newline", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_fleet_name": "bystander\n"}), ("fleet name 'bystander\\n' is not allowed",)),
    Case("teardown-fleet-name-too-long-for-a-tag-name", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_fleet_name": "a" * 41}), ("use 1-40 letters, digits and hyphens",)),
    # regions and run names: they pick the account's region and name local paths and S3 prefixes
    Case("teardown-in-another-region-than-the-fleet-record", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_fleet_name": "recorded", "dlfleet_region": "eu-west-1", "dlfleet_run_dir": "@tmp@/recorded/run",
         "dlfleet_artifacts_dir": "@tmp@/recorded/artifacts"}),
         ("was provisioned in us-east-1", "not in eu-west-1", "-e dlfleet_region=us-east-1"),
         extra={"kept": ("recorded/run/keys/us-east-1/recorded.pem", "recorded/artifacts/fleet.json")}),
    Case("provision-in-another-region-than-the-fleet-record", "playbook", ("playbooks/provision.yml", {
         "dlfleet_fleet_name": "recorded", "dlfleet_region": "eu-west-1", "dlfleet_run_dir": "@tmp@/recorded/run",
         "dlfleet_artifacts_dir": "@tmp@/recorded/artifacts"}),
         ("was provisioned in us-east-1", "a run name of its own (-e dlfleet_run=<name>)"),
         absent=("recorded/run/keys/eu-west-1", "recorded/run/regions"),
         extra={"kept": ("recorded/run/keys/us-east-1/recorded.pem", "recorded/artifacts/fleet.json")}),
    Case("provision-region-with-a-wildcard", "playbook", ("playbooks/provision.yml", {"dlfleet_region": "us-*"}),
         ("dlfleet_region='us-*' is not an AWS region name", "like us-east-1"), absent=("run", "artifacts")),
    Case("teardown-region-that-is-a-path", "playbook", ("playbooks/teardown.yml", {
         "dlfleet_region": "us-east-1/../../x"}), ("dlfleet_region='us-east-1/../../x' is not an AWS region name",)),
    Case("sagemaker-playbook-region-left-empty", "playbook", ("playbooks/sagemaker.yml", {"dlfleet_region": ""}),
         ("dlfleet_region='' is not an AWS region name",), absent=("run", "artifacts")),
    Case("provision-run-name-that-climbs-out", "playbook", ("playbooks/provision.yml", {
         "dlfleet_run": "../../elsewhere"}), ("run name '../../elsewhere' is not allowed", "-e dlfleet_run="),
         absent=("run", "artifacts")),
    Case("teardown-run-name-with-a-space", "playbook", ("playbooks/teardown.yml", {"dlfleet_run": "my run"}),
         ("run name 'my run' is not allowed",)),
    # the S3 prefix a run writes under is held to the purge's rule: 'prod ' once purged prod/ and kept 'prod /'
    Case("sagemaker-playbook-prefix-with-a-trailing-space", "playbook", ("playbooks/sagemaker.yml", {
         "sagemaker_prefix": "prod "}),
         ("'prod /output' is not a plain folder path", "exactly as the run wrote"),
         absent=("run", "artifacts")),
    Case("sagemaker-playbook-prefix-with-a-leading-slash", "playbook", ("playbooks/sagemaker.yml", {
         "sagemaker_prefix": "/lead"}), ("'/lead/output' is not a plain folder path",),
         absent=("run", "artifacts")),
    Case("sagemaker-playbook-run-name-with-a-wildcard", "playbook", ("playbooks/sagemaker.yml", {
         "dlfleet_run": "run*"}), ("run name 'run*' is not allowed",), absent=("run", "artifacts")),
    # playbooks/sagemaker.yml: the job's inputs are checked before any data is generated or uploaded
    Case("sagemaker-playbook-missing-role-arn", "playbook",
         ("playbooks/sagemaker.yml", {"sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_role_arn": ""}),
         ('sagemaker_role_arn="" is not an IAM role ARN', "-e sagemaker_role_arn=arn:aws:iam::"),
         absent=("run", "artifacts")),
    # the whole pipeline: a SageMaker stage in AWS without its role stops before the EC2 fleet is provisioned
    Case("site-sagemaker-in-aws-without-a-role-stops-before-the-fleet", "playbook",
         ("site.yml", {"sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_role_arn": ""}),
         ('sagemaker_role_arn="" is not an IAM role ARN', "Nothing was created or started"),
         absent=("run", "artifacts")),
    # SageMaker instance quotas (a new account's GPU quota is 0): checked before the fleet, the data or any job
    Case("site-sagemaker-training-quota-of-zero-stops-before-the-fleet", "playbook",
         ("site.yml", {"sagemaker_instance_type": "ml.p3.2xlarge", "sagemaker_role_arn": ROLE_ARN}),
         ("sagemaker_instance_type=ml.p3.2xlarge x sagemaker_instance_count=1",
          "'ml.p3.2xlarge for training job usage'", "which allows 0",
          "request-service-quota-increase --service-code sagemaker", "--desired-value 1"),
         absent=("run", "artifacts")),
    Case("sagemaker-playbook-tuning-trials-beyond-the-training-quota", "playbook",
         ("playbooks/sagemaker.yml", {"sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_role_arn": ROLE_ARN,
                                      "sagemaker_tune": True, "sagemaker_tuning_max_parallel_jobs": 5}),
         ("sagemaker_tuning_max_parallel_jobs=5", "needs 5 instance(s)", "L-CCE2AFA6",
          "'ml.m5.xlarge for training job usage'", "which allows 4"), absent=("run", "artifacts")),
    # a spot training job and the on-demand tuning trials count against two quotas: both are checked (the larger
    # need alone was, so a short spot quota passed when tuning asked for more instances)
    Case("sagemaker-playbook-spot-training-beyond-its-quota-beside-a-larger-tuning-job", "playbook",
         ("playbooks/sagemaker.yml", {"sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_role_arn": ROLE_ARN,
                                      "sagemaker_use_spot": True, "sagemaker_instance_count": 5,
                                      "sagemaker_tune": True, "sagemaker_tuning_max_parallel_jobs": 6}),
         ("'ml.m5.xlarge for spot training job usage'", "sagemaker_instance_count=5",
          "'ml.m5.xlarge for training job usage'", "sagemaker_tuning_max_parallel_jobs=6"),
         absent=("run", "artifacts")),
    Case("sagemaker-playbook-endpoint-beyond-its-quota", "playbook",
         ("playbooks/sagemaker.yml", {"sagemaker_endpoint_instance_type": "ml.m5.xlarge",
                                      "sagemaker_endpoint_instance_count": 3, "sagemaker_role_arn": ROLE_ARN}),
         ("sagemaker_endpoint_instance_count=3", "'ml.m5.xlarge for endpoint usage'", "which allows 2"),
         absent=("run", "artifacts"), not_in=("training job usage",)),
    Case("sagemaker-playbook-role-that-is-no-arn", "playbook", ("playbooks/sagemaker.yml", {
         "sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_role_arn": "SageMakerRole"}),
         ('sagemaker_role_arn="SageMakerRole" is not an IAM role ARN',), absent=("run", "artifacts")),
    Case("sagemaker-playbook-tuning-range-min-above-max", "playbook",
         ("playbooks/sagemaker.yml", {"sagemaker_tune": True, "sagemaker_tuning_ranges": [
             {"name": "lr", "type": "continuous", "min_value": 0.2, "max_value": 0.02}]}),
         ("parameter_ranges[lr]: needs min_value < max_value (got 0.2 and 0.02)",),
         # the training job's inputs are right: only its image lookup is cached (run/sagemaker/image-uris.json)
         absent=("artifacts", "run/sagemaker/data", "run/sagemaker/training-jobs", "run/sagemaker/tuning-jobs")),
    # role dlami on a local test host: the data volume
    Case("dlami-volume-holds-a-filesystem-of-another-type", "testhost", dlami_volume(fstype="xfs"),
         (VOLUME_ID, "ext4 filesystem", "not the xfs asked for", "Set fstype to match")),
    Case("dlami-volume-not-attached", "testhost", dlami_volume(volume_id="vol-0000000000000dead"),
         ("vol-0000000000000dead is not attached", "Check dlami_volumes against the fleet's volumes")),
    # the trainer
    Case("trainer-bad-kvstore", "trainer", ["--kvstore", "dist_async"],
         ("'dist_async'", "choose from 'local', 'device', 'dist_sync', 'dist_device_sync'"), absent=("trainer-out",)),
    Case("trainer-hyperparameter-of-the-wrong-type", "trainer", ["--epochs", "two"],
         ("--epochs", "invalid int value: 'two'"), absent=("trainer-out",)),
]
CASE_COUNT = len(CASES)
assert CASE_COUNT >= 30, CASE_COUNT


# ---------------------------------------------------------------------------------------------- plumbing
def fill(value: Any, ctx: dict[str, str]) -> Any:
    """Replace @name@ placeholders with this run's values (image ids, subnets, bucket, temp dir)."""
    if isinstance(value, str):
        for key, real in ctx.items():
            value = value.replace(f"@{key}@", real)
        return value
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    if isinstance(value, tuple):
        return tuple(fill(v, ctx) for v in value)
    if isinstance(value, dict):
        return {k: fill(v, ctx) for k, v in value.items()}
    return value


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Outcome:
    msg: str
    failed: bool
    window: tuple[float, float]


def case_blocks(cases: list[Case], ctx: dict[str, str]) -> list[dict[str, Any]]:
    """Each case as a block whose first task is the call under test; its rescue records the failure."""
    return [{"name": f"Case {case.id}", "block": [
        {"name": case.id, **fill(case.spec, ctx)},
        {"name": f"Passed {case.id}", "ansible.builtin.debug": {"msg": "no failure"}},
    ], "rescue": [
        {"name": f"Failed {case.id}", "ansible.builtin.debug": {
            "msg": "{{ ansible_failed_task.name }}: {{ ansible_failed_result.msg | default('') }}"}},
    ]} for case in cases]


def block_play(cases: list[Case], ctx: dict[str, str], hosts: str) -> list[dict[str, Any]]:
    return [{"name": "Bad inputs", "hosts": hosts, "gather_facts": False, "tasks": case_blocks(cases, ctx)}]


def outcomes(run: PlaybookResult, cases: list[Case]) -> dict[str, Outcome]:
    """Each case's message and time window (from its first task's start to its recording task's end)."""
    flat = [(t["task"]["name"], t["task"]["duration"], next(iter(t["hosts"].values()), {}))
            for p in run.data.get("plays", []) for t in p.get("tasks", [])]
    names = [n for n, _, _ in flat]
    found = {}
    for case in cases:
        if case.id not in names:
            continue
        first = names.index(case.id)
        last = next(i for i in range(first, len(flat)) if flat[i][0] in (f"Failed {case.id}", f"Passed {case.id}"))
        found[case.id] = Outcome(flat[last][2].get("msg", ""), flat[last][0].startswith("Failed"),
                                 (_when(flat[first][1]["start"]), _when(flat[last][1]["end"])))
    return found


def mutating_calls(emulator: Emulator, window: tuple[float, float]) -> list[str]:
    entries = [json.loads(line) for line in (emulator.state_dir / "requests.jsonl").read_text().splitlines()]
    return [f"{e['service']}:{e['action']}" for e in entries
            if window[0] - 0.5 <= e["time"] <= window[1] + 0.5 and not str(e["action"]).startswith(READ_ACTIONS)]


def account(emulator: Emulator) -> dict[str, Any]:
    """What the emulated account holds (the parts a dlfleet module could create or change)."""
    ec2, s3, sm, ssm = (emulator.client(s) for s in ("ec2", "s3", "sagemaker", "ssm"))
    instances = [i["InstanceId"] + ":" + i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
                 for i in r["Instances"]]
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    objects = {b: sorted((o["Key"], o["ETag"]) for o in s3.list_objects_v2(Bucket=b).get("Contents", []))
               for b in buckets}
    jobs = {j["TrainingJobName"]: sm.describe_training_job(TrainingJobName=j["TrainingJobName"])
            for j in sm.list_training_jobs()["TrainingJobSummaries"]}
    return {
        "instances": sorted(instances),
        "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
        "security_groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "tags": sorted(str(t) for t in ec2.describe_tags()["Tags"]),
        "objects": objects,
        "training_jobs": {n: (d["TrainingJobStatus"], d["HyperParameters"]) for n, d in jobs.items()},
        "tuning_jobs": sorted(j["HyperParameterTuningJobName"] for j in
                              sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]),
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "endpoint_configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
        "parameters": sorted(p["Name"] for p in ssm.describe_parameters()["Parameters"]),
    }


def mock_nvidia_smi(folder: Path, fixture: str) -> None:
    """An nvidia-smi replaying a real capture (no GPU here); a persistence-mode change is logged."""
    folder.mkdir(parents=True)
    query = SMI_FIXTURES / fixture / "query.csv"
    script = folder / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
case "$1" in
  "") cat {SMI_FIXTURES / fixture / 'summary.txt'} ;;
  --query-gpu={','.join(QUERY_FIELDS)}) {'cat ' + str(query) if query.exists() else 'exit 6'} ;;
  -pm) echo "$*" >> {folder / 'pm.log'}; echo "Enabled persistence mode" ;;
  *) exit 2 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _tree(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def own_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    state_dir = tmp_path_factory.mktemp("bad-inputs-emulator")
    script = str(ROOT / "scripts/aws-emulator")
    subprocess.run([script, "start", "--state-dir", str(state_dir), "--no-persist"], check=True, timeout=120,
                   capture_output=True)
    try:
        env = read_env(state_dir / "env")
        yield Emulator(state_dir, env["AWS_ENDPOINT_URL"], env)
    finally:
        subprocess.run([script, "stop", "--state-dir", str(state_dir)], check=False, timeout=60, capture_output=True)


@pytest.fixture(scope="module")
def world(own_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The account and files the cases meet: a bucket with a finished job in it (whose name a case reuses),
    another fleet's expired security group, mocked nvidia-smi captures, and the values the placeholders
    stand for."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    emu = own_emulator
    ec2 = emu.client("ec2")
    image = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"][0]
    arm = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["Deep Learning ARM64 Base OSS *"]}])["Images"][0]
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    bucket = f"bad-inputs-{uuid.uuid4().hex[:8]}"
    emu.client("s3").create_bucket(Bucket=bucket)
    # a resource of another fleet, which a teardown without a fleet name must leave alone
    ec2.create_security_group(GroupName="bad-inputs-bystander", Description="another fleet's group",
                              TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                                  {"Key": "dlfleet:fleet", "Value": "bystander"},
                                  {"Key": "dlfleet:owner", "Value": "tests"}, {"Key": "dlfleet:ttl", "Value": "1m"}]}])
    # another team's untagged group and key pair that happen to carry the names dlfleet would give fleets
    # "foreign-sg" and "foreign-key": provision must refuse them, not adopt them
    foreign = ec2.create_security_group(GroupName="dlfleet-foreign-sg-ssh", Description="another team's web group")
    ec2.authorize_security_group_ingress(GroupId=foreign["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.create_key_pair(KeyName="dlfleet-foreign-key")
    ctx = {"image": image["ImageId"], "arm_image": arm["ImageId"], "subnet_a": subnets[0]["SubnetId"],
           "bucket": bucket, "tmp": str(tmp)}
    for fixture in ("k80-410", "v100-525", "h200-device"):
        mock_nvidia_smi(tmp / f"smi-{fixture}", fixture)
    # a run whose fleet provision.yml recorded in us-east-1: its record and its private key, as provision leaves them
    recorded = tmp / "recorded"
    (recorded / "artifacts").mkdir(parents=True)
    (recorded / "artifacts" / "fleet.json").write_text(json.dumps(
        {"fleet": "recorded", "run": "recorded", "region": "us-east-1", "key_name": "dlfleet-recorded",
         "key_file": str(recorded / "run/keys/us-east-1/recorded.pem"), "instances": []}, indent=2))
    key = recorded / "run" / "keys" / "us-east-1" / "recorded.pem"
    key.parent.mkdir(parents=True, mode=0o700)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n(the fleet's only key)\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    kept = {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (key, recorded / "artifacts" / "fleet.json")}
    env = {**os.environ, **emu.env}
    setup = [{"name": "Create the job whose name a case reuses",
              **fill(training(name="bad-inputs-reused", hyperparameters={"epochs": 2}, wait=True), ctx)}]
    run = run_playbook(_write(tmp / "setup.yml", [{"name": "Setup", "hosts": "localhost", "gather_facts": False,
                                                    "tasks": setup}]), env=env)
    assert run.rc == 0, run.stdout[-3000:]
    return {"ctx": ctx, "tmp": tmp, "env": env, "emulator": emu, "kept": kept}


def _write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def play_batch(world: dict[str, Any]) -> dict[str, Any]:
    """The play cases, dealt over LANES stand-ins for localhost that work through their cases side by side
    (strategy free). Windows of cases on different lanes overlap: a mutating call in one fails its neighbours
    too, which only makes the check stricter."""
    cases = [c for c in CASES if c.runner == "play"]
    tmp: Path = world["tmp"]
    hosts = {}
    for lane in range(LANES):
        tasks = _write(tmp / f"lane-{lane}.yml", case_blocks(cases[lane::LANES], world["ctx"]))
        hosts[f"lane-{lane}"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                 "lane_tasks": str(tasks)}
    inventory = _write(tmp / "lanes.yml", {"all": {"hosts": hosts}})
    book = _write(tmp / "bad-inputs.yml", [{"name": "Bad inputs", "hosts": "all", "gather_facts": False,
                                            "strategy": "free", "tasks": [
                                                {"name": "Run this lane's cases",
                                                 "ansible.builtin.include_tasks": "{{ lane_tasks }}"}]}])
    before = account(world["emulator"])
    run = run_playbook(book, env=world["env"], inventory=inventory)
    return {"run": run, "outcomes": outcomes(run, cases), "before": before, "after": account(world["emulator"])}


@pytest.fixture(scope="module")
def test_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalHosts, Path]]:
    """A DLAMI-like host whose EBS volume already holds an ext4 filesystem with data (restored from a snapshot)."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root (namespaces, mounts, loops)")
    hosts = LocalHosts(ROOT / ".run" / "testhosts" / "pytest-bad-inputs", "127.0.15")
    hosts.destroy()
    hosts.create([HostSpec("bad-in", "dlami-venv", volumes=[
        VolumeSpec(size="64M", id=VOLUME_ID, fstype="ext4", files={"data/keep.txt": "results of last week"})])])
    inventory = tmp_path_factory.mktemp("bad-inputs-host") / "inventory.yml"
    _write(inventory, hosts.inventory("gpu_fleet"))
    yield hosts, inventory
    hosts.destroy()


@pytest.fixture(scope="module")
def testhost_batch(test_host: tuple[LocalHosts, Path], world: dict[str, Any]) -> dict[str, Any]:
    """The test-host cases in one play; the volume's bytes, fstab, mounts and / are read before and after."""
    hosts, inventory = test_host
    cases = [c for c in CASES if c.runner == "testhost"]
    volume = Path(hosts.describe("bad-in")["volumes"][0]["image"])

    def state() -> tuple[str, str]:
        return (hashlib.sha256(volume.read_bytes()).hexdigest(),
                hosts.ssh("bad-in", "cat /etc/fstab; findmnt --noheadings --output TARGET,SOURCE; ls -a /").stdout)

    before = state()
    run = run_playbook(_write(world["tmp"] / "testhost.yml", block_play(cases, world["ctx"], "gpu_fleet")),
                       inventory=inventory)
    return {"run": run, "outcomes": outcomes(run, cases), "before": before, "after": state()}


# ---------------------------------------------------------------------------------------------- the table
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(case: Case, request: pytest.FixtureRequest) -> None:
    world = request.getfixturevalue("world")
    ctx = world["ctx"]
    check = {"play": _check_play, "playbook": _check_playbook, "testhost": _check_testhost,
             "trainer": _check_trainer}[case.runner]
    message = check(case, world, request)
    for fragment in fill(case.expect, ctx):
        assert fragment in message, f"{case.id}: {fragment!r} not in the message:\n{message}"
    for fragment in case.not_in:
        assert fragment not in message, f"{case.id}: the message blames {fragment!r}, which is right:\n{message}"
    for path in case.absent:
        assert not (world["tmp"] / path).exists(), f"{case.id} created {path}"
    for path, digest in world["kept"].items():
        if path in case.extra.get("kept", ()):
            assert (world["tmp"] / path).is_file(), f"{case.id} removed {path}"
            assert hashlib.sha256((world["tmp"] / path).read_bytes()).hexdigest() == digest, f"{case.id} changed {path}"


def _check_play(case: Case, world: dict[str, Any], request: pytest.FixtureRequest) -> str:
    batch = request.getfixturevalue("play_batch")
    outcome = batch["outcomes"].get(case.id)
    assert outcome is not None, batch["run"].stdout[-3000:] + batch["run"].stderr[-3000:]
    assert outcome.failed, f"{case.id} did not fail"
    assert mutating_calls(world["emulator"], outcome.window) == []
    assert batch["after"] == batch["before"]
    if case.extra.get("reused_job"):   # the existing job keeps its definition
        assert batch["after"]["training_jobs"][case.extra["reused_job"]][1]["epochs"] == "2"
    return outcome.msg


def _check_playbook(case: Case, world: dict[str, Any], request: pytest.FixtureRequest) -> str:
    """A whole playbook on the local inventory, its run and artifacts directories under the case's temp dir."""
    tmp: Path = world["tmp"]
    playbook, extra_vars = case.spec
    before = account(world["emulator"])
    start = time.time()
    run = run_playbook(playbook, env=world["env"], extra_vars={
        "dlfleet_fleet_name": f"bad-{case.id[:20].rstrip('-')}", "dlfleet_run_dir": str(tmp / "run"),
        "dlfleet_artifacts_dir": str(tmp / "artifacts"), **fill(extra_vars, world["ctx"])})
    ran = [(task, "failed" if res.get("failed") else "changed" if res.get("changed") else "ok")
           for task, _, res in run.all_results() if not res.get("skipped")]
    assert run.rc != 0, ran
    assert mutating_calls(world["emulator"], (start, time.time())) == [], ran
    assert account(world["emulator"]) == before, ran
    return " ".join(res.get("msg", "") for _, _, res in run.all_results() if res.get("failed"))


def _check_testhost(case: Case, world: dict[str, Any], request: pytest.FixtureRequest) -> str:
    batch = request.getfixturevalue("testhost_batch")
    outcome = batch["outcomes"].get(case.id)
    assert outcome is not None and outcome.failed, batch["run"].stdout[-3000:]
    assert batch["after"] == batch["before"]     # the volume not formatted nor written; no fstab line, no mount
    return outcome.msg


def _check_trainer(case: Case, world: dict[str, Any], request: pytest.FixtureRequest) -> str:
    tmp: Path = world["tmp"]
    proc = subprocess.run([str(TRAIN_PYTHON), "-m", "training.train", "--dataset", "synthetic", "--data-dir",
                           str(tmp / "trainer-out" / "data"), "--output-dir", str(tmp / "trainer-out"), *case.spec],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr


def test_the_table_covers_every_module_and_role() -> None:
    assert CASE_COUNT >= 30
    calls = json.dumps([c.spec for c in CASES])
    for name in ("ec2_gpu_fleet", "ec2_gpu_quota_info", "sagemaker_quota_info", "dlami_info", "sagemaker_training_job",
                 "sagemaker_tuning_job", "sagemaker_endpoint", "dlfleet_reaper", "nvidia_gpu_facts",
                 '"dlami"', '"mxnet_train"', "provision.yml", "sagemaker.yml", "--kvstore"):
        assert name in calls, name
    assert {c.runner for c in CASES} == {"play", "playbook", "testhost", "trainer"}
