"""docs/iam-policy.json grants every AWS action dlfleet calls, and nothing beyond them.

The calls are read from the emulator's request log (one line per API request), never listed by hand:
- the `make run` pipeline of test_site.py (provision, configure, train, SageMaker local mode, report,
  teardown), shared through the session fixture `site_run` (tests/e2e/conftest.py), so the pipeline runs once
  per test session;
- then, on the same emulator, the paths `make run` does not take: ec2_gpu_fleet stop/start/retag/scale-down
  and subnet placement, the quota fallback to AWS defaults, the SageMaker quota preflight, the SageMaker modules
  in AWS mode (ml.* types: training job create/retag/stop, tuning job create/stop, endpoint create/blue-green
  update/invoke/absent),
  teardown of data volumes, playbooks/reaper.yml (check and real) and the inventory/aws plugin, and a private
  fleet's wait for its SSM agent. Session Manager is not emulated: the aws_ssm connection's own calls
  (ssm:StartSession, ssm:TerminateSession) are not in the policy (inventory/aws/group_vars/gpu_fleet/private.yml).
Setup that only a test needs (a bucket, a slow-job switch, a subnet id) is sent between the recorded
windows, so it never counts as a call of the project.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from collections import defaultdict
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import BIN, ROOT, run_playbook
from siterun import SiteRun

POLICY = ROOT / "docs" / "iam-policy.json"
FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
ROLE = "arn:aws:iam::123456789012:role/dlfleet-sagemaker-execution"
PROFILE = "dlfleet-instance-data-reader"   # an instance profile (and its role) named as the policy's PassRole rule asks
SECONDS_PARAMETER = "/dlfleet/emulator/sagemaker/training-seconds"

# S3 REST operations (as the request log names them, from botocore's URI templates) -> the IAM action AWS
# authorizes them with (Service Authorization Reference, Amazon S3). An operation missing here fails the test,
# so that a new call gets its permission looked up rather than guessed.
S3_ACTIONS = {
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "CreateBucket": "s3:CreateBucket",
    "GetBucketAccelerateConfiguration": "s3:GetAccelerateConfiguration",
    "GetBucketAcl": "s3:GetBucketAcl",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "GetBucketRequestPayment": "s3:GetBucketRequestPayment",
    "GetBucketTagging": "s3:GetBucketTagging",
    "PutBucketTagging": "s3:PutBucketTagging",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "ListBucketInventoryConfigurations": "s3:GetInventoryConfiguration",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
}
# Signing name -> IAM prefix where they differ (the runtime API signs as "sagemaker" already).
PREFIX = {"monitoring": "cloudwatch"}
# Calls AWS answers for any signed request: they need no permission.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}
# Permissions the policy must hold that are not API calls of ours, so no request log shows them.
NOT_API_CALLS = {
    # CreateTrainingJob, CreateHyperParameterTuningJob and CreateModel hand the execution role (role_arn) to
    # SageMaker; AWS authorizes that hand-over as iam:PassRole on the caller, inside those calls.
    "iam:PassRole": "SageMaker Create* calls pass the execution role; RunInstances with an instance profile passes "
                    "its role to EC2",
}


# ---------------------------------------------------------------------------------------------------------
# request log -> IAM actions


def iam_action(entry: dict[str, Any]) -> str:
    service, action = entry["service"], entry["action"]
    if service == "s3":
        if action not in S3_ACTIONS:
            raise AssertionError(f"S3 operation {action!r} ({entry['method']} {entry['path']}) has no IAM "
                                 "action in S3_ACTIONS: look it up in the Service Authorization Reference")
        return S3_ACTIONS[action]
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", action or ""):
        raise AssertionError(f"request without an API action in the log: {entry}")
    return f"{PREFIX.get(service, service)}:{action}"


def s3_resource(entry: dict[str, Any]) -> str:
    """The S3 ARN a logged request acts on (path-style: /bucket[/key])."""
    bucket, _, key = entry["path"].lstrip("/").partition("/")
    if entry["action"] == "DeleteObjects":  # POST /bucket?delete: IAM checks s3:DeleteObject on each key in the body
        return f"arn:aws:s3:::{bucket}/*"
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


def load_policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())


def statements() -> list[dict[str, Any]]:
    return load_policy()["Statement"]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def granted() -> set[str]:
    return {action for st in statements() for action in as_list(st["Action"])}


# ---------------------------------------------------------------------------------------------------------
# the paths `make run` does not take, against the pipeline's emulator


class Recorder:
    """Runs plays against the emulator and keeps the request-log lines each run produced."""

    def __init__(self, run: SiteRun, tmp: Path) -> None:
        self.run = run
        self.tmp = tmp
        self.log = run.state_dir / "requests.jsonl"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | run.env
        self.entries: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def _mark(self) -> int:
        return len(self.log.read_text().splitlines())

    def _take(self, start: int) -> None:
        lines = self.log.read_text().splitlines()[start:]
        self.entries += [json.loads(line) for line in lines if line]

    def playbook(self, path: str | Path, what: str, **kwargs: Any) -> None:
        start = self._mark()
        result = run_playbook(path, env=self.env, **kwargs)
        self._take(start)
        if result.rc != 0:
            self.failures.append(f"{what}: rc={result.rc}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")

    def tasks(self, tasks: list[dict[str, Any]], what: str, check: bool = False) -> None:
        book = [{"name": what, "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
        path.write_text(yaml.safe_dump(book))
        try:
            self.playbook(path, what, check=check)
        finally:
            path.unlink()

    def command(self, argv: list[str], what: str) -> None:
        start = self._mark()
        proc = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600)
        self._take(start)
        if proc.returncode != 0:
            self.failures.append(f"{what}: rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def exercise_other_paths(run: SiteRun, tmp: Path) -> Recorder:
    rec = Recorder(run, tmp)
    fleet = f"iam-{uuid.uuid4().hex[:6]}"
    tags = {"fleet": fleet, "owner": "tests", "ttl": "1h"}
    # setup, not recorded: a bucket under the policy's name pattern and a default subnet's id
    bucket = f"dlfleet-sagemaker-iam-{uuid.uuid4().hex[:8]}"
    run.client("s3").create_bucket(Bucket=bucket)
    subnet = run.client("ec2").describe_subnets()["Subnets"][0]["SubnetId"]

    base = {"region": "us-east-1", "name": fleet, "instance_types": ["g5.xlarge"], "image_id": "{{ image.image_id }}",
            "owner": "tests", "ttl": "1h", "wait": True, "wait_timeout": 300}
    fleet_tasks = [
        {"name": "Look up the DLAMI", "dlami_info": {"region": "us-east-1",
                                                     "ami_type": "base-oss-nvidia-driver-gpu-ubuntu-22.04"},
         "register": "image"},
        {"name": "Read a quota that has no account value (the AWS default answers)",
         "ec2_gpu_quota_info": {"region": "us-east-1", "market": "spot", "fail_on_shortfall": False,
                                "fleet": [{"instance_type": "p3.2xlarge", "count": 1}]}},
        {"name": "Read the SageMaker instance quotas (the preflight of a SageMaker stage in AWS)",
         "sagemaker_quota_info": {"region": "us-east-1", "needs": [
             {"instance_type": "ml.p3.2xlarge", "count": 1},
             {"instance_type": "ml.m5.xlarge", "count": 1, "usage": "endpoint"}]}},
        {"name": "Read the spot prices of a spot fleet (provision.yml with provision_market spot)",
         "aws_price_info": {"region": "us-east-1", "ec2_instance_types": ["g5.xlarge"], "market": "spot"}},
        {"name": "Launch into a given zone, with a data volume kept on termination",
         "ec2_gpu_fleet": {**base, "count": 2, "availability_zones": ["us-east-1b"],
                           "data_volumes": [{"size": 10, "delete_on_termination": False}]}},
        {"name": "Stop the fleet", "ec2_gpu_fleet": {**base, "count": 2, "state": "stopped"}},
        {"name": "Start the fleet", "ec2_gpu_fleet": {**base, "count": 2, "state": "running"}},
        {"name": "Scale down and retag", "ec2_gpu_fleet": {**base, "count": 1, "ttl": "2h"}},
        {"name": "Plan a launch into a subnet", "ec2_gpu_fleet": {**base, "count": 3, "subnet_ids": [subnet]},
         "check_mode": True},
        {"name": "Launch a private fleet with an instance profile (iam:PassRole to EC2), waiting for its SSM agent",
         "ec2_gpu_fleet": {**base, "name": f"{fleet}-p", "count": 1, "iam_instance_profile": PROFILE,
                           "subnet_ids": [subnet], "assign_public_ip": False, "wait_for_ssm": True}},
        {"name": "Terminate the fleet", "ec2_gpu_fleet": {"region": "us-east-1", "name": fleet, "state": "absent"}},
        {"name": "Terminate the profile's fleet",
         "ec2_gpu_fleet": {"region": "us-east-1", "name": f"{fleet}-p", "state": "absent"}},
    ]
    # provision.yml's security group, as a re-run with another provision_ssh_cidr and without an extra tag
    # changes it: the old rule revoked, the dropped tag deleted
    fleet_tags = {"dlfleet:fleet": fleet, "dlfleet:owner": "tests", "dlfleet:ttl": "1h"}
    group = {"region": "us-east-1", "name": f"dlfleet-{fleet}-ssh", "description": "SSH for the fleet",
             "purge_rules": True, "purge_tags": True}
    group_tasks = [
        {"name": "Create the fleet's group", "amazon.aws.ec2_security_group": {
            **group, "tags": {**fleet_tags, "team": "a"},
            "rules": [{"proto": "tcp", "ports": [22], "cidr_ip": "198.51.100.7/32"}]}},
        {"name": "Change the SSH CIDR and drop a tag", "amazon.aws.ec2_security_group": {
            **group, "tags": fleet_tags, "rules": [{"proto": "tcp", "ports": [22], "cidr_ip": "198.51.100.8/32"}]}},
        {"name": "Remove the fleet's group", "amazon.aws.ec2_security_group": {
            "region": "us-east-1", "name": f"dlfleet-{fleet}-ssh", "state": "absent"}},
    ]
    training = {"region": "us-east-1", "role_arn": ROLE, "entry_point": "tiny_train.py", "source_dir": str(FIXTURES),
                "instance_type": "ml.m5.xlarge", "hyperparameters": {"epochs": 1},
                "channels": [{"name": "training", "uri": f"s3://{bucket}/data"}],
                "metric_definitions": [{"name": "validation-accuracy", "regex": "validation-accuracy=([0-9.]+)"}],
                "output_path": f"s3://{bucket}/output", "local_dir": str(tmp / "sagemaker"), **tags}
    tuning = {**training, "strategy": "Random", "max_jobs": 2, "max_parallel_jobs": 1,
              "objective": {"metric_name": "validation-accuracy", "type": "Maximize"},
              "parameter_ranges": [{"name": "lr", "type": "continuous", "min_value": 0.01, "max_value": 0.3}]}
    endpoint = {"region": "us-east-1", "name": f"{fleet}-ep", "role_arn": ROLE, "local_dir": str(tmp / "sagemaker"),
                "model_data": f"s3://{bucket}/output/{fleet}-train/output/model.tar.gz",
                "entry_point": "tiny_train.py", "source_dir": str(FIXTURES), "instance_type": "ml.m5.large", **tags}
    absent = {"region": "us-east-1", "state": "absent"}
    stop_tasks = [
        {"name": "Start a training job", "sagemaker_training_job": {**training, "name": f"{fleet}-stop",
                                                                    "wait": False}},
        {"name": "Start a tuning job", "sagemaker_tuning_job": {**tuning, "name": f"{fleet}-stop", "wait": False}},
        {"name": "Stop the training job", "sagemaker_training_job": {**absent, "name": f"{fleet}-stop"}},
        {"name": "Stop the tuning job", "sagemaker_tuning_job": {**absent, "name": f"{fleet}-stop"}},
    ]
    endpoint_tasks = [
        {"name": "Deploy an endpoint", "sagemaker_endpoint": {**endpoint, "smoke_test": {"body": "[1]"}}},
        {"name": "Update the endpoint blue/green", "sagemaker_endpoint": {**endpoint, "env": {"V": "2"}}},
        {"name": "Invoke the endpoint", "sagemaker_endpoint_invoke": {"region": "us-east-1", "name": f"{fleet}-ep",
                                                                      "body": "[1]"}},
        {"name": "Remove the endpoint", "sagemaker_endpoint": {**absent, "name": f"{fleet}-ep"}},
    ]
    job_tasks = [
        {"name": "Run a training job", "sagemaker_training_job": {**training, "name": f"{fleet}-train"}},
        {"name": "Add a tag to the job", "sagemaker_training_job": {**training, "name": f"{fleet}-train",
                                                                    "tags": {"team": "a"}}},
        {"name": "Drop the tag again", "sagemaker_training_job": {**training, "name": f"{fleet}-train",
                                                                  "tags": {}}},   # purge_tags: the user's tags go
        {"name": "Run a tuning job", "sagemaker_tuning_job": {**tuning, "name": f"{fleet}-tune"}},
    ]

    # not recorded: the model a finished training job would have written (emulated jobs write none); the endpoint
    # repacks it with the inference code, as the SDK does
    model = io.BytesIO()
    with tarfile.open(fileobj=model, mode="w:gz") as tar:
        info = tarfile.TarInfo("model-0000.params")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"weights"))
    run.client("s3").put_object(Bucket=bucket, Key=f"output/{fleet}-train/output/model.tar.gz",
                                Body=model.getvalue(), ServerSideEncryption="AES256")
    iam = run.client("iam")   # not recorded: the instance profile a user would name in provision_iam_instance_profile
    iam.create_role(RoleName=PROFILE, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    iam.create_instance_profile(InstanceProfileName=PROFILE)
    iam.add_role_to_instance_profile(InstanceProfileName=PROFILE, RoleName=PROFILE)
    iam.attach_role_policy(RoleName=PROFILE, PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    rec.tasks(group_tasks, "The fleet's security group changed by a re-provision")
    ssm = run.client("ssm")   # not recorded: emulated jobs made now stay InProgress for a minute
    ssm.put_parameter(Name=SECONDS_PARAMETER, Value="60", Type="String", Overwrite=True)
    try:
        rec.tasks(stop_tasks + fleet_tasks + endpoint_tasks, "Stopped jobs, the EC2 fleet, an endpoint")
    finally:
        ssm.delete_parameter(Name=SECONDS_PARAMETER)
    logs = run.client("logs")   # not recorded: the log stream SageMaker would write for the job
    group = "/aws/sagemaker/TrainingJobs"
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=f"{fleet}-train/algo-1-1700000000")
    logs.put_log_events(logGroupName=group, logStreamName=f"{fleet}-train/algo-1-1700000000",
                        logEvents=[{"timestamp": 1700000000000, "message": "epoch=1; validation-accuracy=0.1;"}])
    rec.tasks(job_tasks, "Finished jobs")
    rec.playbook("playbooks/teardown.yml", "teardown of the fleet's kept volumes",
                 extra_vars={"dlfleet_fleet_name": fleet, "dlfleet_run_dir": str(tmp / "run"),
                             "dlfleet_artifacts_dir": str(tmp / "artifacts")})
    rec.playbook("playbooks/reaper.yml", "reaper")
    rec.command([str(BIN / "ansible-inventory"), "-i", "inventory/aws/dlfleet.aws_ec2.yml", "--list"],
                "inventory/aws")
    return rec


_OBSERVED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def observed(site_run: SiteRun, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every request the project sent: the pipeline's, then the other paths'."""
    assert site_run.first.returncode == 0, site_run.first.stdout[-4000:]
    rec = exercise_other_paths(site_run, tmp_path_factory.mktemp("iam"))
    assert not rec.failures, "\n\n".join(rec.failures)
    return site_run.requests + rec.entries


# ---------------------------------------------------------------------------------------------------------
# tests


def test_policy_is_well_formed_and_scoped() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    sids = [st["Sid"] for st in policy["Statement"]]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and set(st) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        actions = as_list(st["Action"])
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Z][A-Za-z0-9]+", a) for a in actions), actions  # no wildcards
        assert len({a.split(":")[0] for a in actions}) == 1, f"{st['Sid']} mixes services"
        assert actions == sorted(actions), f"{st['Sid']}: keep the actions sorted"
    # what creates or changes anything is scoped to the fleet's tag
    for sid in ("EC2LaunchTaggedGpuInstances", "EC2LaunchEncryptedTaggedVolumes",
                "EC2CreateTaggedKeyPairAndGroup", "EC2LaunchWithFleetKeyAndGroup",
                "EC2ChangeFleetResources", "SageMakerCreateTagged", "SageMakerChangeFleetResources"):
        cond = json.dumps(by_sid[sid].get("Condition", {}))
        assert "dlfleet:fleet" in cond and ("aws:RequestTag" in cond or "aws:ResourceTag" in cond), sid
    passrole = {st["Sid"]: st for st in policy["Statement"] if "iam:PassRole" in as_list(st["Action"])}
    assert sorted(passrole) == ["IAMPassInstanceRoleToEC2", "IAMPassSageMakerExecutionRole"]
    for sid, service, role in (("IAMPassSageMakerExecutionRole", "sagemaker.amazonaws.com", "dlfleet-sagemaker-*"),
                               ("IAMPassInstanceRoleToEC2", "ec2.amazonaws.com", "dlfleet-instance-*")):
        assert passrole[sid]["Resource"] == f"arn:aws:iam::*:role/{role}"
        assert passrole[sid]["Condition"] == {"StringEquals": {"iam:PassedToService": service}}
    s3 = [r for st in policy["Statement"] if as_list(st["Action"])[0].startswith("s3:")
          for r in as_list(st["Resource"])]
    assert s3 and all(r.startswith("arn:aws:s3:::dlfleet-") for r in s3), s3


def test_the_secure_defaults_are_conditions_of_the_policy() -> None:
    """A launch that drops IMDSv2, an unencrypted volume, a type outside the GPU families, or a bucket of another
    account is denied by the policy itself, whatever the playbooks ask for."""
    by_sid = {st["Sid"]: st for st in statements()}
    runs = [st for st in statements() if "ec2:RunInstances" in as_list(st["Action"])]
    instance = [st for st in runs if any(r.endswith(":instance/*") for r in as_list(st["Resource"]))]
    volume = [st for st in runs if any(r.endswith(":volume/*") for r in as_list(st["Resource"]))]
    assert [st["Sid"] for st in instance] == ["EC2LaunchTaggedGpuInstances"]
    assert [st["Sid"] for st in volume] == ["EC2LaunchEncryptedTaggedVolumes"]
    gpu = by_sid["EC2LaunchTaggedGpuInstances"]["Condition"]
    assert gpu["StringEquals"] == {"ec2:MetadataHttpTokens": "required"}
    families = as_list(gpu["StringLike"]["ec2:InstanceType"])
    for itype in ("g5.xlarge", "g4dn.xlarge", "p3.2xlarge", "p3.16xlarge", "p4d.24xlarge", "g6e.48xlarge"):
        assert any(fnmatchcase(itype, f) for f in families), itype
    for itype in ("m5.xlarge", "c7i.metal-48xl", "t3.micro", "r6i.large", "x2iedn.32xlarge", "inf2.xlarge"):
        assert not any(fnmatchcase(itype, f) for f in families), itype
    assert by_sid["EC2LaunchEncryptedTaggedVolumes"]["Condition"]["Bool"] == {"ec2:Encrypted": "true"}
    for st in statements():
        if as_list(st["Action"])[0].startswith("s3:"):
            assert st.get("Condition") == {"StringEquals": {"s3:ResourceAccount": "${aws:PrincipalAccount}"}}, \
                st["Sid"]


def test_every_instance_the_project_launched_meets_the_policy_conditions(site_run: SiteRun,
                                                                          observed: list[dict[str, Any]]) -> None:
    """The conditions never stop the project's own launches: every instance the pipeline and the other paths
    launched (terminated ones included) has a type of the allowed families and requires IMDSv2 tokens."""
    gpu = {st["Sid"]: st for st in statements()}["EC2LaunchTaggedGpuInstances"]["Condition"]
    families = as_list(gpu["StringLike"]["ec2:InstanceType"])
    launches = sum(1 for e in observed if iam_action(e) == "ec2:RunInstances")
    instances = [i for r in site_run.client("ec2").describe_instances()["Reservations"] for i in r["Instances"]
                 if any(t["Key"] == "dlfleet:fleet" for t in i.get("Tags", []))]
    assert launches > 0 and len(instances) >= launches
    for inst in instances:
        assert any(fnmatchcase(inst["InstanceType"], f) for f in families), inst["InstanceType"]
        assert inst["MetadataOptions"]["HttpTokens"] == "required", inst["InstanceId"]


def test_the_emulator_accepts_the_policy_document(site_run: SiteRun) -> None:
    """moto's IAM validates the document as AWS would on CreatePolicy: syntax, condition operators, ARNs."""
    assert site_run.env, "the emulator did not start again after the pipeline"
    iam = site_run.client("iam")
    name = f"dlfleet-{uuid.uuid4().hex[:6]}"
    arn = iam.create_policy(PolicyName=name, PolicyDocument=POLICY.read_text())["Policy"]["Arn"]
    iam.delete_policy(PolicyArn=arn)
    compact = json.dumps(load_policy(), separators=(",", ":"))
    assert len(re.sub(r"\s", "", compact)) <= 6144   # the managed-policy size limit, whitespace excluded


def test_policy_grants_every_call_and_nothing_more(observed: list[dict[str, Any]]) -> None:
    calls: dict[str, set[str]] = defaultdict(set)
    for entry in observed:
        calls[iam_action(entry)].add(f"{entry['method']} {entry['path']}")
    needed = set(calls) - NEEDS_NO_PERMISSION
    have = granted()
    missing = sorted(needed - have)
    assert not missing, f"docs/iam-policy.json lacks actions the project calls: {missing}"
    unused = sorted(have - needed - set(NOT_API_CALLS))
    assert not unused, f"docs/iam-policy.json grants actions no module or playbook called: {unused}"
    # the pipeline, the AWS-mode modules and the reaper all took part
    for action in ("ec2:RunInstances", "ec2:StopInstances", "ec2:StartInstances", "ec2:DeleteVolume",
                   "sagemaker:CreateTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:UpdateEndpoint",
                   "sagemaker:StopHyperParameterTuningJob", "sagemaker:InvokeEndpoint", "sagemaker:AddTags",
                   "logs:GetLogEvents", "s3:PutObject", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteTags",
                   "ssm:DescribeInstanceInformation"):
        assert action in calls, action


def test_every_s3_request_falls_in_a_granted_resource(observed: list[dict[str, Any]]) -> None:
    grants = [(set(as_list(st["Action"])), as_list(st["Resource"])) for st in statements()]
    outside = []
    for entry in observed:
        if entry["service"] != "s3":
            continue
        action, arn = iam_action(entry), s3_resource(entry)
        if not any(action in actions and any(fnmatchcase(arn, r) for r in resources) for actions, resources in grants):
            outside.append(f"{action} on {arn}")
    assert not outside, sorted(set(outside))
