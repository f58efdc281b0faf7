"""The SageMaker execution role recipe against the emulator: docs/sagemaker-execution-role/ made into a role by
playbooks/sagemaker_execution_role.yml (moto's IAM), then the SageMaker stage (playbooks/sagemaker.yml) run in
AWS mode with that role's ARN, and every access SageMaker makes with the role for what the stage started held
against the role's policies.

moto 5.2.5 has no SimulatePrincipalPolicy and runs no container, so two parts stand in for AWS here:
- the accesses are read off what the stage created (the training job, the tuning job's definition, the endpoint's
  model), as SageMaker performs them with the execution role: it lists and reads each input channel and the code
  archive, writes the model under the output path, pulls the image from ECR, writes the job's CloudWatch log
  stream and publishes its metrics;
- a small evaluator of Allow statements (action and resource wildcards, String/Arn/Bool conditions, the
  ${aws:PrincipalAccount} variable) decides each access. It is held to cases it must refuse, so that a policy
  that allows everything, or an evaluator that does, fails this test.
"""
from __future__ import annotations

import io
import json
import tarfile
import urllib.request
import uuid
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, run_playbook

DOCS = ROOT / "docs" / "sagemaker-execution-role"
PLAYBOOK = "playbooks/sagemaker_execution_role.yml"
OPERATOR_POLICY = ROOT / "docs" / "iam-policy.json"
ROLE_NAME = "dlfleet-sagemaker-execution"   # the default sagemaker_role_name
REGION = "us-east-1"


# ---------------------------------------------------------------------------------------------------------
# a small IAM evaluator: Allow statements only (the policies here have no Deny)


def as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def substitute(value: str, context: dict[str, str]) -> str:
    if "${aws:PrincipalAccount}" in value and "aws:PrincipalAccount" not in context:
        return "\0"   # a variable the request does not carry matches nothing
    return value.replace("${aws:PrincipalAccount}", context.get("aws:PrincipalAccount", ""))


def condition_holds(operator: str, key: str, wanted: Any, context: dict[str, str]) -> bool:
    if key not in context:
        return False
    values = [substitute(str(v), context) for v in as_list(wanted)]
    actual = context[key]
    if operator == "StringEquals":
        return actual in values
    if operator in ("StringLike", "ArnLike"):
        return any(fnmatchcase(actual, v) for v in values)
    if operator == "Bool":
        return actual.lower() in [v.lower() for v in values]
    raise AssertionError(f"condition operator {operator} is not known to this evaluator")


def statement_allows(st: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    return (st["Effect"] == "Allow"
            and any(fnmatchcase(action.lower(), a.lower()) for a in as_list(st["Action"]))
            and any(fnmatchcase(resource, substitute(r, context)) for r in as_list(st.get("Resource", "*")))
            and all(condition_holds(op, key, wanted, context)
                    for op, pairs in st.get("Condition", {}).items() for key, wanted in pairs.items()))


def allowed(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    return any(statement_allows(st, action, resource, context) for st in policy["Statement"])


def may_assume(trust: dict[str, Any], service: str, context: dict[str, str]) -> bool:
    return any(st["Effect"] == "Allow" and service in as_list(st.get("Principal", {}).get("Service", []))
               and statement_allows({**st, "Resource": "*"}, "sts:AssumeRole", "*", context)
               for st in trust["Statement"])


# ---------------------------------------------------------------------------------------------------------
# what SageMaker does with the execution role, for what the stage created


def s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def ecr_accesses(image: str) -> list[tuple[str, str]]:
    registry, _, path = image.partition("/")
    account, _, _, region = registry.split(".")[:4]
    repository = path.split(":")[0].split("@")[0]
    arn = f"arn:aws:ecr:{region}:{account}:repository/{repository}"
    return [("ecr:GetAuthorizationToken", "*")] + [(a, arn) for a in (
        "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage")]


def log_accesses(account: str, group: str, stream: str) -> list[tuple[str, str]]:
    arn = f"arn:aws:logs:{REGION}:{account}:log-group:{group}"
    return [("logs:CreateLogGroup", arn), ("logs:DescribeLogStreams", f"{arn}:*"),
            ("logs:CreateLogStream", f"{arn}:log-stream:{stream}"), ("logs:PutLogEvents", f"{arn}:log-stream:{stream}")]


def training_accesses(s3, account: str, definition: dict[str, Any], job: str) -> list[tuple[str, str, dict]]:
    """A training job's (or a tuning trial's) accesses: (action, resource, extra condition context)."""
    out: list[tuple[str, str, dict]] = []
    for channel in definition["InputDataConfig"]:
        bucket, prefix = s3_parts(channel["DataSource"]["S3DataSource"]["S3Uri"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", [])]
        assert keys, f"channel {channel['ChannelName']} holds no data at {prefix}"
        out.append(("s3:ListBucket", f"arn:aws:s3:::{bucket}", {}))
        out += [("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}", {}) for key in keys]
    hyperparameters = definition.get("HyperParameters") or definition["StaticHyperParameters"]   # job or tuning
    code = json.loads(hyperparameters["sagemaker_submit_directory"])
    bucket, key = s3_parts(code)
    s3.head_object(Bucket=bucket, Key=key)   # the code archive the job reads is there
    out.append(("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}", {}))
    bucket, key = s3_parts(definition["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{job}/output")
    out += [("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}/{name}", {}) for name in ("model.tar.gz", "output.tar.gz")]
    if definition.get("CheckpointConfig", {}).get("S3Uri"):
        bucket, key = s3_parts(definition["CheckpointConfig"]["S3Uri"])
        out += [("s3:ListBucket", f"arn:aws:s3:::{bucket}", {}),
                ("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}/checkpoint.params", {}),
                ("s3:PutObject", f"arn:aws:s3:::{bucket}/{key}/checkpoint.params", {})]
    image = definition["AlgorithmSpecification"]["TrainingImage"]
    out += [(a, r, {}) for a, r in ecr_accesses(image)]
    out += [(a, r, {}) for a, r in log_accesses(account, "/aws/sagemaker/TrainingJobs", f"{job}/algo-1-1700000000")]
    out.append(("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}))
    return out


def endpoint_accesses(s3, account: str, model: dict[str, Any], endpoint: str) -> list[tuple[str, str, dict]]:
    container = model["PrimaryContainer"]
    bucket, key = s3_parts(container["ModelDataUrl"])
    s3.head_object(Bucket=bucket, Key=key)
    out: list[tuple[str, str, dict]] = [("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}", {})]
    out += [(a, r, {}) for a, r in ecr_accesses(container["Image"])]
    out += [(a, r, {}) for a, r in log_accesses(account, f"/aws/sagemaker/Endpoints/{endpoint}",
                                                "AllTraffic/i-0123456789abcdef0")]
    out.append(("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"}))
    return out


# ---------------------------------------------------------------------------------------------------------
# helpers


def role_exists(iam, name: str) -> bool:
    return any(r["RoleName"] == name for page in iam.get_paginator("list_roles").paginate() for r in page["Roles"])


def queue_endpoint_answers(emulator, answers: list[dict[str, Any]]) -> None:
    """The answers the emulated endpoint gives, in order (moto's static results API: no model runs in moto)."""
    body = json.dumps({"region": REGION, "results": [
        {"Body": json.dumps(a), "ContentType": "application/json"} for a in answers]}).encode()
    request = urllib.request.Request(f"{emulator.endpoint}/moto-api/static/sagemaker/endpoint-results", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201, response.status


def model_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("model-symbol.json", b"{}"), ("model-0000.params", b"weights")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ok(run, what: str):
    failures = "\n".join(f"{task}: {res.get('msg')}" for task, _, res in run.all_results() if res.get("failed"))
    assert run.rc == 0, f"{what}: rc={run.rc}\n{failures}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    return run


# ---------------------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def role(emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The role, made by the playbook from the files: a refused name and a check run first (nothing made), then
    the real run and a second one (nothing changed)."""
    env = {**emulator.env}
    iam = emulator.client("iam")
    bad = run_playbook(PLAYBOOK, env=env, extra_vars={"sagemaker_role_name": "SageMakerExecution"})
    check = ok(run_playbook(PLAYBOOK, env=env, check=True, diff=True), "check mode")
    exists_after_check = role_exists(iam, ROLE_NAME)
    first = ok(run_playbook(PLAYBOOK, env=env), "first run")
    second = ok(run_playbook(PLAYBOOK, env=env), "second run")
    # a run's own KMS key (sagemaker_kms_key_id): the role may use that key, and no other
    kms = emulator.client("kms")
    key_arn = kms.create_key(Description="dlfleet run key")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/dlfleet-run-key", TargetKeyId=key_arn)
    other_key = kms.create_key(Description="another team's key")["KeyMetadata"]["Arn"]
    no_key = run_playbook(PLAYBOOK, env=env, extra_vars={"sagemaker_kms_key_id": "alias/no-such-key"})
    with_key = ok(run_playbook(PLAYBOOK, env=env, extra_vars={"sagemaker_kms_key_id": "alias/dlfleet-run-key"}),
                  "run with a KMS key")
    with_key_again = ok(run_playbook(PLAYBOOK, env=env, extra_vars={"sagemaker_kms_key_id": key_arn}),
                        "second run with the KMS key (by ARN)")
    return {"bad": bad, "check": check, "exists_after_check": exists_after_check, "first": first,
            "second": second, "arn": iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"], "key_arn": key_arn,
            "other_key": other_key, "no_key": no_key, "with_key": with_key, "with_key_again": with_key_again}


def test_playbook_makes_the_role_from_the_files_once(emulator, role) -> None:
    bad = role["bad"].results("Check the role name against the operator policy's iam:PassRole rule")
    assert role["bad"].rc != 0 and bad.get("failed")
    assert "SageMakerExecution" in bad["msg"] and "dlfleet-sagemaker-*" in bad["msg"]
    assert "sagemaker_role_name" in bad["msg"] and "Nothing was created" in bad["msg"]
    assert role["check"].changed > 0 and role["exists_after_check"] is False
    assert role["first"].changed > 0 and role["second"].changed == 0
    account = emulator.client("sts").get_caller_identity()["Account"]
    assert role["arn"] == f"arn:aws:iam::{account}:role/{ROLE_NAME}"
    assert role["second"].results("Show the role to pass to the SageMaker stage")["msg"] == \
        f"-e sagemaker_role_arn={role['arn']}"

    iam = emulator.client("iam")
    stored = iam.get_role(RoleName=ROLE_NAME)["Role"]
    trust = stored["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    expected = json.loads((DOCS / "trust-policy.json").read_text().replace("ACCOUNT_ID", account))
    assert trust == expected and "ACCOUNT_ID" not in json.dumps(trust)
    assert {t["Key"]: t["Value"] for t in stored.get("Tags", [])}["dlfleet:purpose"] == "sagemaker-execution"
    assert sorted(iam.list_role_policies(RoleName=ROLE_NAME)["PolicyNames"]) == ["dlfleet-sagemaker-execution",
                                                                                 "dlfleet-sagemaker-kms"]
    inline = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName="dlfleet-sagemaker-execution")["PolicyDocument"]
    inline = json.loads(inline) if isinstance(inline, str) else inline
    assert inline == json.loads((DOCS / "permissions-policy.json").read_text())
    assert iam.list_instance_profiles_for_role(RoleName=ROLE_NAME)["InstanceProfiles"] == []
    # moto's IAM takes the permissions policy as a managed policy too (syntax, operators, ARNs, as AWS checks)
    arn = iam.create_policy(PolicyName=f"dlfleet-check-{uuid.uuid4().hex[:6]}",
                            PolicyDocument=(DOCS / "permissions-policy.json").read_text())["Policy"]["Arn"]
    iam.delete_policy(PolicyArn=arn)

    # the run's KMS key: found by alias or ARN, usable by the role, the neighbouring key not; a wrong alias is
    # refused with the variable named, and a second run changes nothing
    missing = role["no_key"].results("Check that the KMS key was found")
    assert role["no_key"].rc != 0 and missing.get("failed"), role["no_key"].stdout[-2000:]
    assert "sagemaker_kms_key_id=\"alias/no-such-key\" names no KMS key" in missing["msg"], missing["msg"]
    assert role["with_key"].changed > 0 and role["with_key_again"].changed == 0
    kms_policy = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName="dlfleet-sagemaker-kms")["PolicyDocument"]
    kms_policy = json.loads(kms_policy) if isinstance(kms_policy, str) else kms_policy
    assert kms_policy == json.loads((DOCS / "kms-policy.json").read_text().replace("KEY_ARN", role["key_arn"]))
    kms_ctx = {"aws:PrincipalAccount": account, "kms:GrantIsForAWSResource": "true"}
    for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant"):
        assert allowed(kms_policy, action, role["key_arn"], kms_ctx), action
        assert not allowed(kms_policy, action, role["other_key"], kms_ctx), action
    assert not allowed(kms_policy, "kms:CreateGrant", role["key_arn"], {"aws:PrincipalAccount": account})
    assert not allowed(kms_policy, "kms:ScheduleKeyDeletion", role["key_arn"], kms_ctx)

    # who may assume it: SageMaker of this account, nobody else
    assert may_assume(trust, "sagemaker.amazonaws.com", {"aws:SourceAccount": account})
    assert not may_assume(trust, "sagemaker.amazonaws.com", {"aws:SourceAccount": "999999999999"})
    assert not may_assume(trust, "sagemaker.amazonaws.com", {})
    assert not may_assume(trust, "ec2.amazonaws.com", {"aws:SourceAccount": account})
    # and the operator policy may pass it to SageMaker (its iam:PassRole rule), not to another service
    operator = json.loads(OPERATOR_POLICY.read_text())
    ctx = {"aws:PrincipalAccount": account, "iam:PassedToService": "sagemaker.amazonaws.com"}
    assert allowed(operator, "iam:PassRole", role["arn"], ctx)
    assert not allowed(operator, "iam:PassRole", role["arn"], {**ctx, "iam:PassedToService": "ec2.amazonaws.com"})
    assert not allowed(operator, "iam:PassRole", f"arn:aws:iam::{account}:role/SageMakerExecution", ctx)


def test_the_stage_in_aws_mode_stays_within_the_roles_permissions(emulator, role, tmp_path: Path) -> None:
    """sagemaker.yml with ml.* types, tuning and an endpoint, run with the role: every access SageMaker would make
    with it is allowed, and what lies beside those is not."""
    account = emulator.client("sts").get_caller_identity()["Account"]
    run_name = f"role-{uuid.uuid4().hex[:8]}"
    bucket = f"dlfleet-sagemaker-{REGION}-{account}"   # the stage's default bucket
    job, tuning, endpoint = f"{run_name}-resnet20", f"{run_name}-tune"[:32], f"{run_name}-cifar10"
    s3 = emulator.client("s3")
    # not the stage's: the model the training job writes (emulated jobs run nothing), and the endpoint's answers
    # to its smoke test (one image) and to the evaluation (ten images)
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=f"{run_name}/output/{job}/output/model.tar.gz", Body=model_archive(),
                  ServerSideEncryption="AES256")
    queue_endpoint_answers(emulator, [{"predictions": [{"class": 3, "label": "cat"}]},
                                      {"predictions": [{"class": i % 10, "label": str(i % 10)} for i in range(10)]}])
    ok(run_playbook("playbooks/sagemaker.yml", env=emulator.env, extra_vars={
        "dlfleet_fleet_name": run_name, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
        "dlfleet_artifacts_dir": str(tmp_path / "artifacts"), "sagemaker_local_dir": str(tmp_path / "sagemaker"),
        "sagemaker_data_dir": str(tmp_path / "data"), "sagemaker_synthetic_size": 50,
        "sagemaker_instance_type": "ml.m5.xlarge", "sagemaker_endpoint_instance_type": "ml.m5.large",
        "sagemaker_role_arn": role["arn"], "sagemaker_tune": True, "sagemaker_keep_endpoint": True,
        "sagemaker_eval_limit": 10, "sagemaker_eval_batch_size": 10}), "SageMaker stage in AWS mode")
    evaluation = json.loads((tmp_path / "artifacts" / "sagemaker" / "evaluation.json").read_text())
    assert evaluation["count"] == 10

    sm = emulator.client("sagemaker")
    trained = sm.describe_training_job(TrainingJobName=job)
    tuned = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)["TrainingJobDefinition"]
    config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    model_name = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]["ModelName"]
    model = sm.describe_model(ModelName=model_name)
    for passed in (trained["RoleArn"], tuned["RoleArn"], model["ExecutionRoleArn"]):
        assert passed == role["arn"]
    assert "mxnet-training" in trained["AlgorithmSpecification"]["TrainingImage"]
    assert "mxnet-inference" in model["PrimaryContainer"]["Image"]

    accesses = (training_accesses(s3, account, trained, job)
                + training_accesses(s3, account, tuned, f"{tuning}-001-1a2b3c4d")
                + endpoint_accesses(s3, account, model, endpoint))
    policy = json.loads((DOCS / "permissions-policy.json").read_text())
    base = {"aws:PrincipalAccount": account, "s3:ResourceAccount": account}
    refused = [f"{a} on {r} {c}" for a, r, c in accesses if not allowed(policy, a, r, {**base, **c})]
    assert not refused, refused
    assert {a for a, _, _ in accesses} >= {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "ecr:BatchGetImage",
                                           "logs:PutLogEvents", "cloudwatch:PutMetricData"}
    # the SDK's MXNet registries of every region (both images) are in the ECR statement
    from sagemaker.core import image_uris
    for scope in ("training", "inference"):
        for region in ("us-east-1", "eu-west-1", "ap-east-1", "me-south-1", "af-south-1"):
            uri = image_uris.retrieve("mxnet", region=region, version="1.9.0", py_version="py38",
                                      instance_type="ml.p3.2xlarge", image_scope=scope)
            assert all(allowed(policy, a, r, base) for a, r in ecr_accesses(uri)), uri

    # beside those, nothing: another bucket, another account's bucket, deleting, other images, logs and metrics
    data_key = next(r for a, r, _ in accesses if a == "s3:GetObject")
    denied = [
        ("s3:GetObject", "arn:aws:s3:::other-team-data/cifar/data_batch_1.bin", {}),
        ("s3:GetObject", data_key, {"s3:ResourceAccount": "999999999999"}),
        ("s3:DeleteObject", data_key, {}),
        ("s3:PutBucketPolicy", f"arn:aws:s3:::{bucket}", {}),
        ("ecr:BatchGetImage", "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training", {}),
        ("ecr:PutImage", "arn:aws:ecr:us-east-1:763104351884:repository/mxnet-training", {}),
        ("logs:PutLogEvents", f"arn:aws:logs:{REGION}:{account}:log-group:/aws/lambda/x:log-stream:y", {}),
        ("logs:DeleteLogGroup", f"arn:aws:logs:{REGION}:{account}:log-group:/aws/sagemaker/TrainingJobs", {}),
        ("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Custom/Spend"}),
        ("iam:PassRole", role["arn"], {}),
        ("sagemaker:CreateTrainingJob", f"arn:aws:sagemaker:{REGION}:{account}:training-job/x", {}),
    ]
    wrongly = [f"{a} on {r} {c}" for a, r, c in denied if allowed(policy, a, r, {**base, **c})]
    assert not wrongly, wrongly

    sm.delete_endpoint(EndpointName=endpoint)
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_model(ModelName=model_name)
