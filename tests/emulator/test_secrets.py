"""No secret in any output, even at -vvv: the AWS secret key, the session token, the fleet's private key and the
instances' user data.

The runs use credentials of their own, distinctive values that appear nowhere else, and they go through a
loopback proxy that checks every API request was really signed with them and carried the session token (so
that "not found in the output" is about secrets that were in play). Ansible masks the values of no_log module
options wherever they show up in a task's output, so the secret also travels where no masking applies: in
the environment of every run, and, for local SageMaker jobs, in the environment of the job's own processes.
The private key is no module option at all: it is made on this machine and must never be printed.

What is searched: stdout and stderr of each ansible-playbook run at -vvv, and every file the runs left in the
run's artifacts and state directories (the private key file itself excepted). Each test prints the number of
secrets found (which must be 0), whatever pytest's capture.
"""
from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultproxy import FaultProxy, Request
from helpers import ROOT, PlaybookResult, run_playbook

PROVISION = "playbooks/provision.yml"
TEARDOWN = "playbooks/teardown.yml"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
FIXTURES = ROOT / "tests" / "fixtures" / "sagemaker"
TRAINING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str

    @classmethod
    def distinctive(cls) -> Credentials:
        """Values no other text holds: a canary word and random characters of the real alphabets."""
        return cls(access_key="AKIA" + secrets.token_hex(8).upper(),
                   secret_key=f"dlfleetCanarySecret/{secrets.token_urlsafe(15)}+{secrets.token_hex(2)}",
                   session_token=f"dlfleetCanaryToken{secrets.token_urlsafe(96)}")


class Witness(FaultProxy):
    """A pass-through proxy (no faults) that counts the requests signed with `creds` and carrying its token."""

    def __init__(self, upstream: str, creds: Credentials) -> None:
        super().__init__(upstream)
        self.creds = creds
        self.seen: Counter[str] = Counter()

    def handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.seen["requests"] += 1
            self.seen["signed"] += f"Credential={self.creds.access_key}/" in req.headers.get("authorization", "")
            self.seen["token"] += req.headers.get("x-amz-security-token") == self.creds.session_token
        return super().handle(req)


@pytest.fixture
def witness(emulator) -> Iterator[Witness]:
    proxy = Witness(emulator.endpoint, Credentials.distinctive())
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _env(emulator, witness: Witness) -> dict[str, str]:
    creds = witness.creds
    return {**os.environ, **emulator.env, "AWS_ENDPOINT_URL": witness.endpoint, "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key, "AWS_SESSION_TOKEN": creds.session_token}


def _verbose(playbook: str | Path, extra_vars: dict[str, Any], env: dict[str, str]) -> PlaybookResult:
    """ansible-playbook -vvv with the default (human) output, as someone debugging a run would see it."""
    return run_playbook(playbook, extra_vars=extra_vars, env=env, args=["-vvv"], json_output=False, timeout=900)


def _needles(secret: str) -> list[str]:
    """The secret, and a 16-character piece of its middle (a secret cut short is still a leak)."""
    middle = len(secret) // 2
    return [secret, secret[middle - 8:middle + 8]]


def _private_key_lines(key_text: str) -> list[str]:
    """The base64 lines of an OpenSSH private key (the body; no header, no footer)."""
    return [line for line in key_text.splitlines() if line and not line.startswith("-----")]


def _scan(texts: dict[str, str], secret_values: dict[str, list[str]]) -> dict[str, list[str]]:
    """Where each secret shows up: {secret name: [places]}."""
    found: dict[str, list[str]] = {name: [] for name in secret_values}
    for place, text in texts.items():
        for name, needles in secret_values.items():
            if any(needle in text for needle in needles):
                found[name].append(place)
    return found


def _files(roots: list[Path], skip: set[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() and not path.is_symlink() and path not in skip:
                out[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return out


def _report(request: pytest.FixtureRequest, what: str, found: dict[str, list[str]], searched: int) -> None:
    count = sum(len(places) for places in found.values())
    line = f"secrets found in output: {count} ({what}; {searched} outputs and files searched; by secret: " \
           f"{ {name: len(places) for name, places in found.items()} })"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _ok(run: PlaybookResult, what: str) -> None:
    assert run.rc == 0, f"{what}: rc={run.rc}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"


def test_provision_and_teardown_at_vvv_print_no_secret(emulator, witness: Witness, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    fleet = f"secret-{uuid.uuid4().hex[:8]}"
    # user_data often carries tokens (a registry login, a W&B key): it is no_log in ec2_gpu_fleet
    user_token = f"dlfleetCanaryUserData{secrets.token_urlsafe(24)}"
    extra = {"dlfleet_fleet_name": fleet, "dlfleet_owner": "tests", "dlfleet_ttl": "1h",
             "dlfleet_run_dir": str(tmp_path / "run"), "dlfleet_artifacts_dir": str(tmp_path / "artifacts"),
             "provision_instance_count": 1, "provision_wait_timeout": 120,
             "provision_user_data": f"#!/bin/sh\necho 'registry-token={user_token}' > /root/.registry\n"}
    env = _env(emulator, witness)
    provision = _verbose(PROVISION, extra, env)
    _ok(provision, "provision -vvv")
    key_file = tmp_path / "run" / "keys" / "us-east-1" / f"{fleet}.pem"
    key_text = key_file.read_text()
    body = _private_key_lines(key_text)
    outputs = {"provision stdout": provision.stdout, "provision stderr": provision.stderr}
    ec2 = emulator.client("ec2")
    (instance,) = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:dlfleet:fleet", "Values": [fleet]}])[
        "Reservations"] for i in r["Instances"]]
    launched_user_data = base64.b64decode(ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData")["UserData"]["Value"]).decode()
    files = _files([tmp_path / "artifacts", tmp_path / "run"], skip={key_file})
    teardown = _verbose(TEARDOWN, extra, env)
    _ok(teardown, "teardown -vvv")
    outputs.update({"teardown stdout": teardown.stdout, "teardown stderr": teardown.stderr})
    files.update(_files([tmp_path / "artifacts", tmp_path / "run"], skip={key_file}))

    creds = witness.creds
    wanted = {"secret_key": _needles(creds.secret_key), "session_token": _needles(creds.session_token),
              "private_key": ["".join(body), *body], "user_data": _needles(user_token)}
    found = _scan({**outputs, **files}, wanted)
    _report(request, "provision + teardown at -vvv", found, len(outputs) + len(files))

    # The secrets were in play: every request was signed with these credentials and carried the token, and
    # the key file held a private key whose lines the scan would have found.
    assert witness.seen["requests"] > 10
    assert witness.seen["signed"] == witness.seen["token"] == witness.seen["requests"]
    assert key_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and len(body) >= 3
    assert _scan({"key file": key_text}, {"private_key": body})["private_key"] == ["key file"]
    assert not key_file.exists(), "teardown removes the private key"
    assert user_token in launched_user_data, "the user data reached the instance"
    assert "<localhost> EXEC" in provision.stdout or "ESTABLISH LOCAL CONNECTION" in provision.stdout, "not -vvv"
    assert found == {name: [] for name in wanted}, found


def test_sagemaker_jobs_at_vvv_print_no_secret(emulator, witness: Witness, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    bucket = f"secret-{uuid.uuid4().hex[:10]}"
    emulator.client("s3").create_bucket(Bucket=bucket)
    creds = witness.creds
    local_dir = tmp_path / "sagemaker"
    common = {"role_arn": ROLE, "entry_point": "tiny_train.py", "source_dir": str(FIXTURES),
              "hyperparameters": {"epochs": 1}, "channels": [{"name": "training", "uri": f"s3://{bucket}/data"}],
              "output_path": f"s3://{bucket}/output", "local_dir": str(local_dir),
              "local_python": str(ROOT / ".venv-train/bin/python")}
    tasks = [
        # Credentials as no_log module options, which Ansible also masks in the output.
        {"name": "Train in AWS mode with credentials as options", "sagemaker_training_job": {
            **common, "name": f"{bucket}-aws", "image_uri": TRAINING_IMAGE, "instance_type": "ml.m5.xlarge",
            "access_key": creds.access_key, "secret_key": creds.secret_key, "session_token": creds.session_token}},
        # Credentials from the environment only, passed on to the job's own processes: nothing masks them.
        {"name": "Train here with credentials from the environment", "sagemaker_training_job": {
            **common, "name": f"{bucket}-local", "instance_type": "local", "wait_timeout": 300}},
    ]
    book = [{"name": "SageMaker at -vvv", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    try:
        run = _verbose(path, {}, _env(emulator, witness))
    finally:
        path.unlink()
    _ok(run, "SageMaker jobs -vvv")
    assert "Completed" in run.stdout

    outputs = {"stdout": run.stdout, "stderr": run.stderr}
    files = _files([local_dir], skip=set())
    wanted = {"secret_key": _needles(creds.secret_key), "session_token": _needles(creds.session_token)}
    found = _scan({**outputs, **files}, wanted)
    _report(request, "SageMaker training jobs (AWS and local mode) at -vvv", found, len(outputs) + len(files))

    assert witness.seen["requests"] > 5
    assert witness.seen["signed"] == witness.seen["token"] == witness.seen["requests"]
    assert any("train.log" in name or name.endswith(".log") for name in files), sorted(files)[:20]
    assert found == {name: [] for name in wanted}, found
