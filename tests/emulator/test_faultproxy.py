"""The tests' fault-injecting proxy (tests/faultproxy.py) in front of the session emulator, over real HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from faultproxy import FaultyAWS
from helpers import ROOT

NO_RETRY = {"retries": {"total_max_attempts": 1}}
RETRY = {"retries": {"mode": "standard", "total_max_attempts": 12}}


@pytest.fixture(scope="module")
def image_id(emulator) -> str:
    return emulator.client("ssm").get_parameter(
        Name="/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    )["Parameter"]["Value"]


@pytest.fixture
def tag() -> Iterator[str]:
    """A tag value of this test's own; its instances are terminated afterwards."""
    value = f"faultproxy-{uuid.uuid4().hex[:8]}"
    yield value


@pytest.fixture(autouse=True)
def _terminate_tagged(emulator, tag: str) -> Iterator[None]:
    yield
    ec2 = emulator.client("ec2")
    ids = [i["InstanceId"] for r in ec2.describe_instances(Filters=[{"Name": "tag:test", "Values": [tag]}])[
        "Reservations"] for i in r["Instances"]]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)


def _tags(tag: str) -> list[dict]:
    return [{"ResourceType": "instance", "Tags": [{"Key": "test", "Value": tag}]}]


def _count_tagged(faulty_aws: FaultyAWS, tag: str) -> int:
    ec2 = faulty_aws.direct("ec2")
    return sum(len(r["Instances"]) for r in ec2.describe_instances(Filters=[
        {"Name": "tag:test", "Values": [tag]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"])


def _code(err: pytest.ExceptionInfo[ClientError]) -> str:
    return err.value.response["Error"]["Code"]


def test_throttling_speaks_each_protocol(faulty_aws: FaultyAWS) -> None:
    faulty_aws.configure(throttle=1.0)
    cases = [("ec2", lambda c: c.describe_regions(), "RequestLimitExceeded", 503),
             ("ssm", lambda c: c.get_parameter(Name="/x"), "ThrottlingException", 400),
             ("service-quotas", lambda c: c.get_service_quota(ServiceCode="ec2", QuotaCode="L-417A185B"),
              "ThrottlingException", 400),
             ("iam", lambda c: c.list_roles(), "Throttling", 400),
             ("s3", lambda c: c.list_buckets(), "SlowDown", 503)]
    for service, call, code, status in cases:
        with pytest.raises(ClientError) as err:
            call(faulty_aws.client(service, **NO_RETRY))
        assert _code(err) == code, service
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status, service
    assert faulty_aws.counters["throttle"] == len(cases)
    assert faulty_aws.counters["forwarded"] == 0


def test_throttling_fraction_is_seeded_and_botocore_retries_through_it(faulty_aws: FaultyAWS) -> None:
    faulty_aws.configure(throttle=0.3, seed=7)
    ec2 = faulty_aws.client("ec2", **RETRY)
    for _ in range(40):
        ec2.describe_availability_zones()
    counters = faulty_aws.counters
    assert counters["forwarded"] == 40, "every call got through in the end"
    assert counters["requests"] == 40 + counters["throttle"]
    assert 0.15 < counters["throttle"] / counters["requests"] < 0.45


def test_server_errors_and_dropped_connections(faulty_aws: FaultyAWS) -> None:
    faulty_aws.configure(server_error=1.0)
    with pytest.raises(ClientError) as err:
        faulty_aws.client("ec2", **NO_RETRY).describe_regions()
    assert (_code(err), err.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("InternalError", 500)
    with pytest.raises(ClientError) as err:
        faulty_aws.client("ssm", **NO_RETRY).get_parameter(Name="/x")
    assert _code(err) == "InternalServerError"
    faulty_aws.configure(drop=1.0)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        faulty_aws.client("ec2", **NO_RETRY).describe_regions()
    faulty_aws.configure()
    faulty_aws.once("drop", action="DescribeRegions", count=2)
    assert faulty_aws.client("ec2", **RETRY).describe_regions()["Regions"]
    assert faulty_aws.counters["server_error"] == 2 and faulty_aws.counters["drop"] == 3


def test_lost_response_means_the_call_was_executed(faulty_aws: FaultyAWS) -> None:
    name = f"lost-{uuid.uuid4().hex[:8]}"
    faulty_aws.once("lost_response", action="CreateSecurityGroup")
    with pytest.raises(ConnectionClosedError):
        faulty_aws.client("ec2", **NO_RETRY).create_security_group(GroupName=name, Description="lost response")
    groups = faulty_aws.direct("ec2").describe_security_groups(GroupNames=[name])["SecurityGroups"]
    assert len(groups) == 1, "the emulator executed the call whose response was lost"
    with pytest.raises(ClientError) as err:  # a blind retry now collides with what the lost call made
        faulty_aws.client("ec2", **NO_RETRY).create_security_group(GroupName=name, Description="lost response")
    assert _code(err) == "InvalidGroup.Duplicate"
    faulty_aws.direct("ec2").delete_security_group(GroupId=groups[0]["GroupId"])
    faulty_aws.configure(lost_response=1.0)
    assert faulty_aws.client("ec2", **NO_RETRY).describe_regions()["Regions"], "reads are never lost"
    assert faulty_aws.counters["lost_response"] == 1


def test_insufficient_capacity_for_a_type_in_an_az(faulty_aws: FaultyAWS, image_id: str, tag: str) -> None:
    faulty_aws.configure(capacity=[("p3.2xlarge", "us-east-1a"), ("g4dn.xlarge", "*")])
    ec2 = faulty_aws.client("ec2", **NO_RETRY)
    launch = {"ImageId": image_id, "MinCount": 1, "MaxCount": 1, "TagSpecifications": _tags(tag)}
    with pytest.raises(ClientError) as err:
        ec2.run_instances(InstanceType="p3.2xlarge", Placement={"AvailabilityZone": "us-east-1a"}, **launch)
    assert _code(err) == "InsufficientInstanceCapacity" and "us-east-1a" in str(err.value)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    subnet = faulty_aws.direct("ec2").describe_subnets(Filters=[
        {"Name": "availability-zone", "Values": ["us-east-1a"]}])["Subnets"][0]["SubnetId"]
    with pytest.raises(ClientError) as err:
        ec2.run_instances(InstanceType="p3.2xlarge", SubnetId=subnet, **launch)
    assert _code(err) == "InsufficientInstanceCapacity"
    with pytest.raises(ClientError) as err:
        ec2.run_instances(InstanceType="g4dn.xlarge", **launch)
    assert _code(err) == "InsufficientInstanceCapacity"
    ok = ec2.run_instances(InstanceType="p3.2xlarge", Placement={"AvailabilityZone": "us-east-1b"}, **launch)
    assert ok["Instances"][0]["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert faulty_aws.counters["capacity"] == 3
    assert _count_tagged(faulty_aws, tag) == 1


def test_eventual_consistency_hides_fresh_instances_by_id(faulty_aws: FaultyAWS, image_id: str, tag: str) -> None:
    faulty_aws.configure(consistency_ms=1500)
    ec2 = faulty_aws.client("ec2", **NO_RETRY)
    launched = ec2.run_instances(ImageId=image_id, InstanceType="g5.xlarge", MinCount=2, MaxCount=2,
                                 TagSpecifications=_tags(tag))
    started = time.monotonic()
    ids = [i["InstanceId"] for i in launched["Instances"]]
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(InstanceIds=ids)
    assert _code(err) == "InvalidInstanceID.NotFound" and ids[0] in str(err.value)
    with pytest.raises(ClientError):
        ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "k", "Value": "v"}])
    assert len(ec2.describe_instances(Filters=[{"Name": "tag:test", "Values": [tag]}])["Reservations"]) == 1
    time.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    assert sorted(i["InstanceId"] for r in found for i in r["Instances"]) == sorted(ids)
    assert faulty_aws.counters["not_found"] == 2


def test_client_token_idempotency_as_aws_documents_it(faulty_aws: FaultyAWS, image_id: str, tag: str) -> None:
    ec2 = faulty_aws.client("ec2", **NO_RETRY)
    launch = {"ImageId": image_id, "InstanceType": "g5.xlarge", "MinCount": 2, "MaxCount": 2,
              "TagSpecifications": _tags(tag), "ClientToken": f"tok-{tag}"}
    first = ec2.run_instances(**launch)
    again = ec2.run_instances(**launch)
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    assert _count_tagged(faulty_aws, tag) == 2
    with pytest.raises(ClientError) as err:
        ec2.run_instances(**{**launch, "InstanceType": "g4dn.xlarge"})
    assert _code(err) == "IdempotentParameterMismatch"
    assert faulty_aws.counters["idempotent_replay"] == 1 and faulty_aws.counters["idempotent_mismatch"] == 1


def test_lost_run_instances_response_then_retry_with_the_token_launches_once(
        faulty_aws: FaultyAWS, image_id: str, tag: str) -> None:
    faulty_aws.once("lost_response", action="RunInstances")
    ec2 = faulty_aws.client("ec2", **RETRY)  # botocore keeps the ClientToken it generated across its retries
    out = ec2.run_instances(ImageId=image_id, InstanceType="g5.xlarge", MinCount=3, MaxCount=3,
                            TagSpecifications=_tags(tag))
    assert len(out["Instances"]) == 3
    assert _count_tagged(faulty_aws, tag) == 3
    assert faulty_aws.counters["lost_response"] == 1 and faulty_aws.counters["idempotent_replay"] == 1


def test_without_the_emulated_idempotency_moto_launches_twice(faulty_aws: FaultyAWS, image_id: str, tag: str) -> None:
    """Why the proxy emulates ClientToken: moto itself ignores it."""
    faulty_aws.configure(idempotency=False)
    ec2 = faulty_aws.client("ec2", **NO_RETRY)
    launch = {"ImageId": image_id, "InstanceType": "g5.xlarge", "MinCount": 1, "MaxCount": 1,
              "TagSpecifications": _tags(tag), "ClientToken": f"tok-{tag}"}
    ec2.run_instances(**launch)
    ec2.run_instances(**launch)
    assert _count_tagged(faulty_aws, tag) == 2


def test_faults_can_target_actions_and_services(faulty_aws: FaultyAWS) -> None:
    faulty_aws.configure(throttle=1.0, actions={"DescribeRegions"})
    assert faulty_aws.client("ec2", **NO_RETRY).describe_availability_zones()["AvailabilityZones"]
    with pytest.raises(ClientError):
        faulty_aws.client("ec2", **NO_RETRY).describe_regions()
    faulty_aws.configure(server_error=1.0, services={"ssm"})
    assert faulty_aws.client("ec2", **NO_RETRY).describe_regions()["Regions"]
    with pytest.raises(ClientError):
        faulty_aws.client("ssm", **NO_RETRY).get_parameter(Name="/x")
    assert faulty_aws.counters["throttle"] == 1 and faulty_aws.counters["server_error"] == 1


def test_control_endpoints_and_bad_settings(faulty_aws: FaultyAWS) -> None:
    def post(path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(faulty_aws.endpoint + path, data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert post("/_faults/config", {"server_error": 1.0}) == (200, {"ok": True})
    with pytest.raises(ClientError):
        faulty_aws.client("ec2", **NO_RETRY).describe_regions()
    status, out = post("/_faults/config", {"thrtle": 0.5})
    assert status == 400 and "thrtle" in out["error"] and "throttle" in out["error"]
    status, out = post("/_faults/once", {"kind": "capacity"})
    assert status == 400 and "cannot be queued" in out["error"]
    assert post("/_faults/reset", {})[0] == 200
    with urllib.request.urlopen(faulty_aws.endpoint + "/_faults/counters", timeout=10) as resp:
        assert json.loads(resp.read())["server_error"] == 0


def test_runs_as_a_program(emulator) -> None:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/faultproxy.py"), "--upstream", emulator.endpoint,
                             "--throttle", "1"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        endpoint = line.split(" on ", 1)[1].split(" ", 1)[0]
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="x",
                           aws_secret_access_key="y", config=Config(**NO_RETRY))
        with pytest.raises(ClientError) as err:
            ec2.describe_regions()
        assert _code(err) == "RequestLimitExceeded"
    finally:
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])["throttle"] == 1
