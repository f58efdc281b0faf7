"""The `make run` pipeline as the end-to-end tests run it: scripts/run-local (emulator, site.yml, teardown)
twice, as `make run` runs it, then what the emulator still holds. The session fixture `site_run` in
tests/e2e/conftest.py runs it once per test session for test_site.py and test_iam_policy.py.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
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


def pipeline(state_dir: Path, run_dir: Path, fleet: str) -> SiteRun:
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

