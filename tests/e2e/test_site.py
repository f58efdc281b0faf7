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
import re
import urllib.error
import urllib.request

import pytest
from helpers import ROOT
from siterun import ARTIFACTS, QUICK, SIZE, TAG_FLEET, SiteRun, recaps


def _ok(run: SiteRun) -> None:
    assert run.first.returncode == 0, run.first.stdout[-6000:] + run.first.stderr[-3000:]


def section(report: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r} in report.md:\n{report}"
    return match.group(1)


def test_first_run_builds_everything_and_changes(site_run: SiteRun) -> None:
    _ok(site_run)
    found = recaps(site_run.first.stdout)
    assert len(found) == 3, found   # scripts/run-local-status.yml, site.yml, teardown.yml
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
    # Estimate and actual of EC2, EBS and SageMaker, each with its price's source and the price list's date: the
    # emulator's seeded Price List API (local mode's jobs and endpoint priced as sagemaker_local_priced_as)
    published = json.loads((ROOT / "scripts/emulator/data/pricing.json").read_text())["products"][0]["publicationDate"]
    source = f"| AWS Price List API | {published[:10]} |"
    ec2 = next(line for line in part.splitlines() if line.startswith("| EC2 2 x g5.xlarge (on-demand) |"))
    assert f"| {actual[2].rstrip('0').rstrip('.')} for {actual[1]} instance-hours |" in ec2 and ec2.endswith(source)
    ebs = next(line for line in part.splitlines() if line.startswith("| EBS 2 x (gp3 "))
    assert ebs.endswith(source) and f"for {cost['hours']} h |" in ebs, ebs
    sm_prices = json.loads((art / "sagemaker" / "prices.json").read_text())
    rate = sm_prices["training"]["price"]["usd"]
    job = json.loads((art / "sagemaker" / "training_job.json").read_text())
    train = next(line for line in part.splitlines() if line.startswith("| SageMaker training job (local x 1, "
                                                                        "priced as ml.m5.xlarge) |"))
    assert f"for {job['billable_seconds']} billable s x 1 |" in train and train.endswith(source), train
    assert f"{rate * job['billable_seconds'] / 3600:.4f}".rstrip("0").rstrip(".") in train
    endpoint = next(line for line in part.splitlines() if line.startswith("| SageMaker endpoint (local x 1, "))
    assert "h, creation to deletion |" in endpoint and endpoint.endswith(source), endpoint
    assert "dated table" not in part   # the API answered every price

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
