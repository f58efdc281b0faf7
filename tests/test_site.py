"""`make run` end to end: scripts/run-local (emulator, site.yml, teardown) twice, as `make run` runs it.

The pipeline runs once per test session (fixture `site_run`, shared with test_iam_policy.py): its own
emulator state dir, fleet/run name and run dir (.run stays untouched), a short training. Only the GPU is
missing (localhost stands in for the fleet, so its GPU facts read "CPU only") and AWS is the embedded
emulator; everything else is real: RunInstances over HTTP, MXNet training, SageMaker local mode with a
served endpoint, the report, teardown. Afterwards the emulator is started again on the run's state dir to
look for anything still tagged with the fleet.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import BIN, ROOT, read_env

EMULATOR = ROOT / "scripts" / "aws-emulator"
ARTIFACTS = ROOT / "artifacts"
TAG_FLEET = "dlfleet:fleet"
# The short end of what the local inventory allows: one epoch on 320 generated images, on the hosts and in
# SageMaker local mode (the defaults train 3 and 2 epochs on 1024).
SIZE = 320
QUICK = {
    "mxnet_train_epochs": 1,
    "mxnet_train_synthetic_size": SIZE,
    "sagemaker_synthetic_size": SIZE,
    "sagemaker_hyperparameters": {"dataset": "synthetic", "synthetic-size": SIZE, "model": "resnet20_v1",
                                  "epochs": 1, "batch-size": 64, "lr": 0.05, "log-interval": 16},
}
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


@dataclass
class SiteRun:
    """What the two `make run`s left: outputs, the first run's request log, and what the emulator holds."""

    fleet: str
    state_dir: Path
    run_dir: Path                                       # the run's dlfleet_run_dir (instead of .run)
    artifacts: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    requests: list[dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)   # the emulator, started again on the run's state
    leftovers: dict[str, list[str]] = field(default_factory=dict)
    tagged: list[str] = field(default_factory=list)     # every ARN the tagging API lists for the fleet

    def client(self, service: str):
        return boto3.client(service, region_name="us-east-1", endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])


def recaps(output: str) -> list[dict[str, int | str]]:
    """Every PLAY RECAP line of the default callback: host, ok, changed, unreachable, failed."""
    return [{"host": m[0], "ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
            for m in RECAP.findall(output)]


def make_run(state_dir: Path, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess:
    """`make run ARGS=...`: scripts/run-local with the controller venv first on PATH, the default callback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", DLFLEET_EMULATOR_DIR=str(state_dir),
               ANSIBLE_NOCOLOR="1")
    return subprocess.run([str(ROOT / "scripts" / "run-local"), "-e", json.dumps(extra_vars)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)


def find_leftovers(run: SiteRun) -> dict[str, list[str]]:
    """Everything of the fleet that could still run or cost: live instances, volumes, key pairs, security
    groups, and SageMaker endpoints, endpoint configs, models and running training jobs."""
    ec2, sm = run.client("ec2"), run.client("sagemaker")
    by_tag = [{"Name": f"tag:{TAG_FLEET}", "Values": [run.fleet]}]
    live = ["pending", "running", "stopping", "stopped", "shutting-down"]
    found = {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=[
            *by_tag, {"Name": "instance-state-name", "Values": live}])["Reservations"] for i in r["Instances"]],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=by_tag)["Volumes"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"]],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]],
    }
    for kind, key, name in (("endpoints", "Endpoints", "EndpointName"),
                            ("endpoint_configs", "EndpointConfigs", "EndpointConfigName"),
                            ("models", "Models", "ModelName")):
        items = getattr(sm, f"list_{kind}")(NameContains=run.fleet)[key]
        found[kind] = [i[name] for i in items]
    jobs = sm.list_training_jobs(NameContains=run.fleet, StatusEquals="InProgress")["TrainingJobSummaries"]
    found["training_jobs_in_progress"] = [j["TrainingJobName"] for j in jobs]
    return found


def _pipeline(state_dir: Path, run_dir: Path, fleet: str) -> SiteRun:
    extra = {"dlfleet_fleet_name": fleet, "dlfleet_run_dir": str(run_dir), **QUICK}
    first = make_run(state_dir, extra)
    requests = [json.loads(line) for line in (state_dir / "requests.jsonl").read_text().splitlines() if line]
    second = make_run(state_dir, extra)
    run = SiteRun(fleet, state_dir, run_dir, ARTIFACTS / fleet, first, second, requests)
    if first.returncode == 0:
        subprocess.run([str(EMULATOR), "start", "--state-dir", str(state_dir)], check=True, capture_output=True,
                       timeout=300)
        run.env = read_env(state_dir / "env")
        run.leftovers = find_leftovers(run)
        tagging = run.client("resourcegroupstaggingapi")
        run.tagged = [r["ResourceARN"] for page in tagging.get_paginator("get_resources").paginate(
            TagFilters=[{"Key": TAG_FLEET, "Values": [fleet]}]) for r in page["ResourceTagMappingList"]]
    return run


_SESSION: dict[str, Any] = {}


@pytest.fixture(scope="session")
def site_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteRun]:
    """The pipeline, once per test session (test_iam_policy.py imports this fixture too)."""
    if "run" not in _SESSION:
        latest = ARTIFACTS / "latest"
        _SESSION["latest"] = os.readlink(latest) if latest.is_symlink() else None
        root = tmp_path_factory.mktemp("site")
        _SESSION["run"] = _pipeline(root / "emulator", root / "run", f"site-{uuid.uuid4().hex[:6]}")
    yield _SESSION["run"]
    if _SESSION.pop("cleaned", None) is None and "run" in _SESSION:
        _SESSION["cleaned"] = True
        run = _SESSION["run"]
        subprocess.run([str(EMULATOR), "stop", "--state-dir", str(run.state_dir)], check=False,
                       capture_output=True, timeout=120)
        shutil.rmtree(run.artifacts, ignore_errors=True)
        latest = ARTIFACTS / "latest"
        if latest.is_symlink() and os.readlink(latest) == run.fleet:
            latest.unlink()
            if _SESSION["latest"] and (ARTIFACTS / _SESSION["latest"]).exists():
                latest.symlink_to(_SESSION["latest"])


def _ok(run: SiteRun) -> None:
    assert run.first.returncode == 0, run.first.stdout[-6000:] + run.first.stderr[-3000:]


def section(report: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r} in report.md:\n{report}"
    return match.group(1)


def test_first_run_builds_everything_and_changes(site_run: SiteRun) -> None:
    _ok(site_run)
    found = recaps(site_run.first.stdout)
    assert len(found) == 3, found   # playbooks/completed.yml, site.yml, teardown.yml
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in found), found
    assert found[1]["changed"] > 0 and found[2]["changed"] > 0, found
    assert "aws-emulator: stopped" in site_run.first.stdout + site_run.first.stderr


def test_second_run_changes_nothing(site_run: SiteRun) -> None:
    _ok(site_run)
    assert site_run.second.returncode == 0, site_run.second.stdout[-4000:] + site_run.second.stderr[-2000:]
    found = recaps(site_run.second.stdout)
    assert found, site_run.second.stdout[-3000:]
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in found), found
    assert f"Run {site_run.fleet} is complete" in site_run.second.stdout


def test_fleet_json_and_latest_link(site_run: SiteRun) -> None:
    _ok(site_run)
    fleet = json.loads((site_run.artifacts / "fleet.json").read_text())
    assert fleet["fleet"] == site_run.fleet and fleet["run"] == site_run.fleet
    launched = [i["InstanceId"] for r in site_run.client("ec2").describe_instances(
        Filters=[{"Name": f"tag:{TAG_FLEET}", "Values": [site_run.fleet]}])["Reservations"] for i in r["Instances"]]
    assert sorted(i["instance_id"] for i in fleet["instances"]) == sorted(launched)
    assert len(launched) == fleet["count"] == 2
    latest = ARTIFACTS / "latest"
    assert latest.is_symlink() and latest.resolve() == site_run.artifacts.resolve()


def test_report_holds_every_section_with_this_runs_figures(site_run: SiteRun) -> None:
    _ok(site_run)
    art = site_run.artifacts
    report = (art / "report.md").read_text()
    fleet = json.loads((art / "fleet.json").read_text())

    part = section(report, "Fleet")
    assert f"Fleet `{site_run.fleet}`" in part
    for inst in fleet["instances"]:   # ids the emulator launched (checked against it in test_fleet_json...)
        row = f"| {inst['instance_id']} | {inst['instance_type']} | {inst['availability_zone']} |"
        assert row in part and f"{inst['gpu_count']} x {inst['gpu_model']}" in part
    host = json.loads((art / "localhost" / "host.json").read_text())
    assert f"| localhost | {host['nvidia_gpu'].get('count', 0)} | CPU only |" in part   # no GPU on this box
    assert "### Quota headroom" in part
    for quota in fleet["quotas"]:
        assert f"| {quota['quota_code']} | {quota['quota_name']} | {quota['limit']} | {quota['usage']} | " \
               f"{quota['headroom']} |" in part
    assert any(q["usage"] > 0 for q in fleet["quotas"])   # the fleet's own vCPUs were counted

    part = section(report, "Cost")
    cost = fleet["cost_estimate"]
    assert f"${cost['hourly_usd']}/h x {cost['hours']} h = **${cost['total_usd']}**" in part
    actual = re.search(r"Actual: ([0-9.]+) instance-hours from launch to teardown = \*\*\$([0-9.]+)\*\*", part)
    assert actual, part
    hours = float(actual[1])
    assert 0 < hours < 2   # two instances for minutes, not for the 8 h ttl
    assert float(actual[2]) == pytest.approx(hours * float(cost["prices_usd_per_hour"]["g5.xlarge"]), abs=0.002)

    part = section(report, "Training")
    metrics = [json.loads(line) for line in (art / "localhost" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(metrics) == QUICK["mxnet_train_epochs"]
    last = metrics[-1]
    assert f"| localhost | resnet20_v1 | synthetic | 1 | {last['train_loss']:.4f} | {last['val_acc']:.4f} |" in part
    assert "![training curves of localhost](localhost/curves.png)" in part
    assert (art / "localhost" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    part = section(report, "SageMaker")
    job = json.loads((art / "sagemaker" / "training_job.json").read_text())
    evaluation = json.loads((art / "sagemaker" / "evaluation.json").read_text())
    assert job["status"] == "Completed" and job["billable_seconds"] > 0
    assert f"**{job['billable_seconds']} billable seconds**" in part
    assert evaluation["count"] == SIZE // 5 and 0 <= evaluation["correct"] <= evaluation["count"]
    assert evaluation["accuracy"] == pytest.approx(evaluation["correct"] / evaluation["count"], abs=1e-4)
    assert f"accuracy **{evaluation['accuracy']}** on {evaluation['count']} held-out test images" in part
    assert "endpoint deleted after scoring" in part
    assert "Sample predictions:" in part

    part = section(report, "Teardown")
    teardown = json.loads((art / "teardown.json").read_text())
    kinds = {r["type"] for r in teardown["removed"]}
    assert {"instances", "key_pairs", "security_groups"} <= kinds, teardown["removed"]
    assert teardown["remaining"] == []
    assert "Left behind, tagged with the fleet: **nothing**." in part
    s3 = teardown["s3"]   # make run also removes the run's S3 prefix: data, model, checkpoints
    assert s3["kept"] is False and s3["removed_objects"] >= 7 and s3["remaining_objects"] == 0, s3
    assert f"S3: removed {s3['removed_objects']} object(s)" in part and "left there: **0**" in part
    assert (art / "COMPLETE").is_file()


def test_endpoint_is_gone(site_run: SiteRun) -> None:
    _ok(site_run)
    evaluation = json.loads((site_run.artifacts / "sagemaker" / "evaluation.json").read_text())
    url = evaluation["endpoint_url"]
    assert url.startswith("http://127.0.0.1:")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url.replace("/invocations", "/ping"), timeout=5)
    local = site_run.run_dir / "sagemaker"   # SageMaker local mode's state: the job is there, the endpoint gone
    assert (local / "training-jobs" / f"{site_run.fleet}-resnet20" / "record.json").is_file()
    assert not (local / "endpoints" / evaluation["endpoint"]).exists()
    assert site_run.leftovers["endpoints"] == [] and site_run.leftovers["endpoint_configs"] == []


def test_nothing_tagged_with_the_fleet_is_left(site_run: SiteRun) -> None:
    _ok(site_run)
    assert site_run.leftovers == {k: [] for k in site_run.leftovers}, site_run.leftovers
    # The tagging API's view of the account: only records that cost nothing stay, i.e. the terminated
    # instances, and the bucket that every run of the account shares, empty of this run's prefix.
    bucket = json.loads((site_run.artifacts / "sagemaker" / "training_job.json").read_text())["model_artifact"]
    bucket = bucket.removeprefix("s3://").split("/", 1)[0]
    left = site_run.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{site_run.fleet}/")
    assert left.get("KeyCount", 0) == 0, [o["Key"] for o in left.get("Contents", [])]
    terminated = {f"arn:aws:ec2:us-east-1:123456789012:instance/{i['InstanceId']}"
                  for r in site_run.client("ec2").describe_instances(Filters=[
                      {"Name": f"tag:{TAG_FLEET}", "Values": [site_run.fleet]},
                      {"Name": "instance-state-name", "Values": ["terminated"]}])["Reservations"]
                  for i in r["Instances"]}
    assert set(site_run.tagged) <= terminated | {f"arn:aws:s3:::{bucket}"}, site_run.tagged
