"""Reliability under AWS faults: real ansible-playbook runs through the fault proxy (tests/faultproxy.py).

Every test here talks to an emulator of this module's own (its own account, so that "every instance in the
account" means what it says) through a fault proxy that throttles, answers 5xx, drops connections, loses
the responses of mutating calls after they ran, hides fresh instances from calls by id (eventual
consistency) and runs out of capacity for chosen types and zones. It also emulates RunInstances ClientToken
idempotency the way AWS documents it (moto ignores the token).

What each test saw (faults injected by kind, fleets and instances launched, duplicates, leaks) is printed
as one `fault figures` line per test, whatever pytest's capture, and written as JSON next to the test's
temporary files; the module's totals go to `fault-figures.json` in the module's temporary directory.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from faultproxy import KINDS, FaultProxy
from helpers import ROOT, PlaybookResult, read_env, run_playbook

PROVISION = "playbooks/provision.yml"
TEARDOWN = "playbooks/teardown.yml"
LIVE = ["pending", "running", "stopping", "stopped"]
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
TRAINING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"
INFERENCE_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-inference:1.9.0-cpu-py38"

# Random faults, drawn per request in this order: throttle, 5xx, dropped connection, and (mutating calls
# only) executed-but-response-lost. Together about 30% of all requests fail (30-40% of the mutating ones);
# on top of that, instances are invisible by id for 2 s after their launch.
FAULTS_30 = {"throttle": 0.14, "server_error": 0.09, "drop": 0.09, "lost_response": 0.12, "consistency_ms": 2000}


# ---------------------------------------------------------------------------------------------------------
# The account behind the proxy, and what the tests count in it
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Account:
    """A dedicated emulator (`direct` clients reach it past the proxy) behind a fault proxy."""

    state_dir: Path
    env: dict[str, str]
    proxy: FaultProxy
    figures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_env(self) -> dict[str, str]:
        """Environment of an ansible-playbook run whose every AWS call goes through the proxy. botocore gets
        10 attempts a call (standard mode) instead of 5, as anyone would give it against an API this flaky:
        at 30% faults, five failures in a row come up every few hundred calls, and what is tested here is
        what the modules and playbooks do with faults, not botocore's retry budget."""
        return {**os.environ, **self.env, "AWS_ENDPOINT_URL": self.proxy.endpoint,
                "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10"}

    def direct(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def instances(self) -> dict[str, dict[str, Any]]:
        """Every instance the account ever had, terminated ones included, by id."""
        pages = self.direct("ec2").get_paginator("describe_instances").paginate()
        return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

    def faults(self, seed: int, **extra: Any) -> None:
        """Fresh counters, then FAULTS_30 (plus `extra`) from now on."""
        self.proxy.reset()
        self.proxy.configure(**{**FAULTS_30, **extra}, seed=seed)


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Account]:
    state_dir = tmp_path_factory.mktemp("fault-emulator")
    script = str(ROOT / "scripts/aws-emulator")
    subprocess.run([script, "start", "--state-dir", str(state_dir), "--no-persist"], check=True, timeout=120,
                   capture_output=True)
    # A fleet of 20 x g5.xlarge needs 80 G vCPUs; the seeded account allows 64.
    subprocess.run([script, "set-quota", "L-DB2E81BA", "256", "--state-dir", str(state_dir)], check=True,
                   timeout=60, capture_output=True)
    proxy = FaultProxy(read_env(state_dir / "env")["AWS_ENDPOINT_URL"]).start()
    acct = Account(state_dir, read_env(state_dir / "env"), proxy)
    try:
        yield acct
    finally:
        proxy.stop()
        subprocess.run([script, "stop", "--state-dir", str(state_dir)], check=False, timeout=60,
                       capture_output=True)
        if acct.figures:
            totals = _totals(acct.figures)
            out = state_dir.parent / "fault-figures.json"
            out.write_text(json.dumps({"tests": acct.figures, "totals": totals}, indent=1, sort_keys=True))
            _show(request, f"fault figures, all tests: {json.dumps(totals, sort_keys=True)} ({out})")


def _show(request: pytest.FixtureRequest, line: str) -> None:
    """Print on the terminal whatever pytest's output capture (-s or not)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _faults(counters: dict[str, int]) -> dict[str, Any]:
    injected = {kind: counters[kind] for kind in KINDS}
    total = sum(injected.values())
    return {"injected": injected, "injected_total": total, "requests": counters["requests"],
            "fault_fraction": round(total / counters["requests"], 3) if counters["requests"] else 0.0,
            "idempotent_replays": counters["idempotent_replay"]}


def _record(account: Account, request: pytest.FixtureRequest, tmp_path: Path, figures: dict[str, Any]) -> None:
    figures = {"test": request.node.name, **figures}
    account.figures.append(figures)
    (tmp_path / "fault-figures.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    _show(request, f"fault figures: {json.dumps(figures, sort_keys=True)}")


def _totals(figures: list[dict[str, Any]]) -> dict[str, Any]:
    injected = {kind: 0 for kind in KINDS}
    totals: dict[str, Any] = {"requests": 0, "fleets_launched": 0, "instances_launched": 0, "duplicates": 0,
                              "leaked": 0, "sagemaker_resources": 0}
    for fig in figures:
        for phase in fig.get("phases", {}).values():
            for kind, n in phase["injected"].items():
                injected[kind] += n
            totals["requests"] += phase["requests"]
        for key in ("fleets_launched", "instances_launched", "duplicates", "leaked", "sagemaker_resources"):
            totals[key] += fig.get(key, 0)
    totals["injected"] = injected
    totals["injected_total"] = sum(injected.values())
    return totals


def _play(tasks: list[dict[str, Any]], env: dict[str, str]) -> tuple[PlaybookResult, dict[str, dict[str, Any]]]:
    """Run `tasks` as one play on localhost (every task runs, failed or not); their results by name."""
    book = [{"name": "Modules under faults", "hosts": "localhost", "gather_facts": False,
             "tasks": [{**task, "ignore_errors": True} for task in tasks]}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    try:
        run = run_playbook(path, env=env, timeout=600)
    finally:
        path.unlink()
    return run, {task["name"]: run.results(task["name"]) for task in tasks}


def _ok(run: PlaybookResult, what: str) -> PlaybookResult:
    failures = "\n".join(f"{task}: {res.get('msg')}" for task, _, res in run.all_results() if res.get("failed"))
    assert run.rc == 0, f"{what}: rc={run.rc}\n{failures}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    return run


def _image(account: Account) -> str:
    return account.direct("ssm").get_parameter(Name=DLAMI_PARAMETER)["Parameter"]["Value"]


def _fleet_live(account: Account, fleet: str) -> list[dict[str, Any]]:
    return [i for i in account.instances().values() if i["State"]["Name"] in LIVE
            and {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("dlfleet:fleet") == fleet]


# ---------------------------------------------------------------------------------------------------------
# EC2 fleets
# ---------------------------------------------------------------------------------------------------------

def test_fleet_of_20_under_30_percent_faults_is_exactly_20_then_torn_down(
        account: Account, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    fleet = f"faults20-{uuid.uuid4().hex[:6]}"
    extra = {"dlfleet_fleet_name": fleet, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(tmp_path / "run"), "dlfleet_artifacts_dir": str(tmp_path / "artifacts"),
             "provision_instance_count": 20, "provision_instance_types": ["g5.xlarge", "g4dn.xlarge"],
             "provision_wait_timeout": 300}
    before = set(account.instances())
    phases: dict[str, dict[str, Any]] = {}

    # Provision: random faults everywhere, and for sure a lost response from each call that creates something
    # (the key pair, the group, its rule, the instances) and a 5xx on the launch.
    account.faults(seed=20)
    for action in ("ImportKeyPair", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RunInstances"):
        account.proxy.once("lost_response", action)
    account.proxy.once("server_error", "RunInstances")
    _ok(run_playbook(PROVISION, extra_vars=extra, env=account.run_env), "provision under faults")
    phases["provision"] = _faults(account.proxy.counters)
    everything = account.instances()
    launched = {i: everything[i] for i in set(everything) - before}
    live = {i for i, inst in launched.items() if inst["State"]["Name"] in LIVE}
    fleet_ids = {i["InstanceId"] for i in _fleet_live(account, fleet)}
    assert len(fleet_ids) == 20, f"the fleet has {len(fleet_ids)} instances, not 20"
    assert live == fleet_ids, f"live instances outside the fleet: {sorted(live - fleet_ids)}"
    duplicates = len(launched) - 20   # every instance ever launched beyond the 20 asked for, even if gone since
    assert duplicates == 0, f"{len(launched)} instances were launched for a fleet of 20"
    assert phases["provision"]["injected"]["lost_response"] >= 4
    assert all(inst["MetadataOptions"]["HttpTokens"] == "required" for inst in launched.values())
    written = json.loads((tmp_path / "artifacts" / "fleet.json").read_text())
    assert {i["instance_id"] for i in written["instances"]} == fleet_ids

    # Re-run under faults: nothing to do, nothing changed.
    account.faults(seed=21)
    rerun = _ok(run_playbook(PROVISION, extra_vars=extra, env=account.run_env), "re-run under faults")
    phases["rerun"] = _faults(account.proxy.counters)
    assert rerun.changed == 0, [(t, r.get("msg")) for t, _, r in rerun.all_results() if r.get("changed")]
    assert set(account.instances()) == set(everything), "the re-run launched instances"

    # Teardown under faults removes everything of the fleet; nothing is left anywhere in the account.
    account.faults(seed=22)
    for action in ("TerminateInstances", "DeleteKeyPair", "DeleteSecurityGroup"):
        account.proxy.once("lost_response", action)
    _ok(run_playbook(TEARDOWN, extra_vars=extra, env=account.run_env), "teardown under faults")
    phases["teardown"] = _faults(account.proxy.counters)
    assert phases["teardown"]["injected"]["lost_response"] >= 3
    account.proxy.reset()
    after = account.instances()
    leaked = sorted(i for i in set(after) - before if after[i]["State"]["Name"] in LIVE)
    ec2 = account.direct("ec2")
    by_tag = [{"Name": "tag:dlfleet:fleet", "Values": [fleet]}]
    left = {"instances": leaked,
            "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=by_tag)["Volumes"]],
            "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]],
            "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"]]}
    assert not any(left.values()), f"left after teardown: {left}"
    assert not (tmp_path / "run" / "keys" / "us-east-1" / f"{fleet}.pem").exists()

    _record(account, request, tmp_path, {"phases": phases, "fleets_launched": 1, "instances_launched": len(launched),
                                         "duplicates": duplicates, "leaked": len(leaked)})
    total = sum(p["injected_total"] for p in phases.values())
    requests = sum(p["requests"] for p in phases.values())
    assert total / requests >= 0.25, f"only {total} faults in {requests} requests"


def test_no_capacity_in_the_first_zone_or_type_lands_on_the_next(
        account: Account, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    by_zone, by_type = f"cap-az-{uuid.uuid4().hex[:6]}", f"cap-type-{uuid.uuid4().hex[:6]}"
    image = _image(account)
    zone_fleet = {"name": by_zone, "count": 4, "instance_types": ["g5.xlarge"],
                  "availability_zones": ["us-east-1a", "us-east-1b"], "image_id": image, "owner": "tests",
                  "ttl": "1h", "wait_timeout": 120}
    type_fleet = {"name": by_type, "count": 4, "instance_types": ["p3.2xlarge", "g4dn.xlarge"], "image_id": image,
                  "owner": "tests", "ttl": "1h", "wait_timeout": 120}
    before = set(account.instances())
    account.faults(seed=30, capacity=[("g5.xlarge", "us-east-1a"), ("p3.2xlarge", "*")])
    _, res = _play([
        {"name": "Launch where the first zone has no capacity", "ec2_gpu_fleet": zone_fleet},
        {"name": "Launch where the first type has no capacity", "ec2_gpu_fleet": type_fleet},
        {"name": "Re-run the zone fallback", "ec2_gpu_fleet": zone_fleet},
        {"name": "Re-run the type fallback", "ec2_gpu_fleet": type_fleet},
    ], account.run_env)
    counters = _faults(account.proxy.counters)
    zone, types = res["Launch where the first zone has no capacity"], res["Launch where the first type has no capacity"]
    assert not zone.get("failed") and not types.get("failed"), (zone.get("msg"), types.get("msg"))

    assert zone["count"] == 4
    assert {(i["instance_type"], i["availability_zone"]) for i in zone["instances"]} == {("g5.xlarge", "us-east-1b")}
    assert zone["attempts"][0]["availability_zone"] == "us-east-1a"
    assert zone["attempts"][0]["outcome"].startswith("InsufficientInstanceCapacity")
    assert zone["attempts"][-1]["outcome"] == "launched"

    assert types["count"] == 4
    assert {i["instance_type"] for i in types["instances"]} == {"g4dn.xlarge"}
    assert types["attempts"][0]["instance_type"] == "p3.2xlarge"
    assert types["attempts"][0]["outcome"].startswith("InsufficientInstanceCapacity")
    assert counters["injected"]["capacity"] >= 2

    for rerun in ("Re-run the zone fallback", "Re-run the type fallback"):
        assert res[rerun]["changed"] is False and res[rerun]["count"] == 4, res[rerun].get("msg")

    everything = account.instances()
    launched = set(everything) - before
    assert len(launched) == 8, f"{len(launched)} instances launched for two fleets of 4"
    live = {i for i in launched if everything[i]["State"]["Name"] in LIVE}
    assert live == {i["instance_id"] for i in zone["instances"]} | {i["instance_id"] for i in types["instances"]}

    # Both fleets go again under the same faults.
    account.faults(seed=31)
    _, gone = _play([{"name": f"Remove {name}", "ec2_gpu_fleet": {"name": name, "state": "absent",
                                                                   "wait_timeout": 120}}
                     for name in (by_zone, by_type)], account.run_env)
    removal = _faults(account.proxy.counters)
    account.proxy.reset()
    assert all(not r.get("failed") for r in gone.values()), [r.get("msg") for r in gone.values()]
    after = account.instances()
    leaked = sorted(i for i in set(after) - before if after[i]["State"]["Name"] in LIVE)
    assert not leaked
    _record(account, request, tmp_path, {"phases": {"launch": counters, "remove": removal}, "fleets_launched": 2,
                                         "instances_launched": len(launched), "duplicates": len(launched) - 8,
                                         "leaked": len(leaked)})


# ---------------------------------------------------------------------------------------------------------
# SageMaker (AWS mode against the emulator, not local mode)
# ---------------------------------------------------------------------------------------------------------

def _sagemaker_names(account: Account, prefix: str) -> dict[str, list[str]]:
    sm = account.direct("sagemaker")
    return {
        "training_jobs": [j["TrainingJobName"] for j in sm.list_training_jobs(NameContains=prefix)[
            "TrainingJobSummaries"]],
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints(NameContains=prefix)["Endpoints"]],
        "endpoint_configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs(NameContains=prefix)[
            "EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models(NameContains=prefix)["Models"]],
    }


def test_sagemaker_training_job_and_endpoint_under_faults_exactly_one_each(
        account: Account, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    fleet = f"smf-{uuid.uuid4().hex[:6]}"
    bucket = f"{fleet}-bucket"
    account.direct("s3").create_bucket(Bucket=bucket)
    common = {"fleet": fleet, "owner": "tests", "ttl": "1h", "local_dir": str(tmp_path / "sagemaker")}
    train = {"name": f"{fleet}-train", "role_arn": ROLE, "entry_point": "tiny_train.py", "source_dir": str(FIXTURES),
             "image_uri": TRAINING_IMAGE, "instance_type": "ml.m5.xlarge", "hyperparameters": {"epochs": 1},
             "channels": [{"name": "training", "uri": f"s3://{bucket}/data"}],
             "output_path": f"s3://{bucket}/output", **common}
    deploy = {"name": f"{fleet}-endpoint", "role_arn": ROLE, "image_uri": INFERENCE_IMAGE,
              "model_data": f"s3://{bucket}/output/{fleet}-train/output/model.tar.gz",
              "instance_type": "ml.m5.large", **common}
    phases: dict[str, dict[str, Any]] = {}

    account.faults(seed=40)
    for action in ("CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        account.proxy.once("lost_response", action)
    _, res = _play([
        {"name": "Train", "sagemaker_training_job": train},
        {"name": "Deploy", "sagemaker_endpoint": deploy},
        {"name": "Train again", "sagemaker_training_job": train},
        {"name": "Deploy again", "sagemaker_endpoint": deploy},
    ], account.run_env)
    phases["create"] = _faults(account.proxy.counters)
    for name in ("Train", "Deploy", "Train again", "Deploy again"):
        assert not res[name].get("failed"), f"{name}: {res[name].get('msg')} {account.proxy.counters}"
    assert res["Train"]["changed"] is True and res["Train"]["status"] == "Completed"
    assert res["Deploy"]["changed"] is True and res["Deploy"]["status"] == "InService"
    assert res["Train again"]["changed"] is False and res["Deploy again"]["changed"] is False
    assert phases["create"]["injected"]["lost_response"] >= 4

    found = _sagemaker_names(account, fleet)
    assert found == {"training_jobs": [train["name"]], "endpoints": [deploy["name"]],
                     "endpoint_configs": [res["Deploy"]["endpoint_config_name"]],
                     "models": [res["Deploy"]["model_name"]]}
    source_key = res["Train"]["source"]["uri"].split(f"s3://{bucket}/", 1)[1]
    assert len(account.direct("s3").list_objects_v2(Bucket=bucket, Prefix="output/code/")["Contents"]) == 1
    assert account.direct("s3").head_object(Bucket=bucket, Key=source_key)["ServerSideEncryption"] == "AES256"

    # Teardown of the fleet under faults removes the endpoint, its config and its model (a finished training
    # job cannot be deleted in SageMaker; it stays, and costs nothing).
    account.faults(seed=41)
    extra = {"dlfleet_fleet_name": fleet, "dlfleet_run_dir": str(tmp_path / "run")}
    _ok(run_playbook(TEARDOWN, extra_vars=extra, env=account.run_env), "teardown under faults")
    phases["teardown"] = _faults(account.proxy.counters)
    account.proxy.reset()
    left = _sagemaker_names(account, fleet)
    assert left == {**{kind: [] for kind in left}, "training_jobs": [train["name"]]}
    _record(account, request, tmp_path, {"phases": phases, "sagemaker_resources": sum(len(v) for v in found.values()),
                                         "duplicates": sum(len(v) - 1 for v in found.values()),
                                         "leaked": sum(len(v) for k, v in left.items() if k != "training_jobs")})
