"""Unit tests of the ec2_gpu_fleet logic (module_utils/dlfleet_fleet.py).

Input checks are pure. Everything else runs through boto3 over real HTTP against the session emulator, and
API requests are counted from its request log. Two launch faults that moto cannot produce (no capacity,
a launch that ran but whose response was lost) come from a client wrapper named in the test.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import ansible.module_utils
import botocore.exceptions
import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from helpers import ROOT

# Modules import shared code as ansible.module_utils.<name>; make the project's module_utils importable so.
if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))

from ansible.module_utils import dlfleet_fleet as fl
from ansible.module_utils.dlfleet_aws import aws_retry

DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
DLAMI_ARM_NAME = "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
MUTATING = {"RunInstances", "TerminateInstances", "StartInstances", "StopInstances", "CreateTags", "DeleteTags"}


# --------------------------------------------------------------------------------------------------------
# pure input checks
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("volume", "fragment"), [
    ({"type": "gp2", "size": 40, "iops": 3000}, "only valid for io1, io2 or gp3"),
    ({"type": "st1", "size": 500, "iops": 500}, "only valid for io1, io2 or gp3"),
    ({"type": "io1", "size": 40}, "needs root_volume.iops"),
    ({"type": "io2", "size": 40, "iops": 50}, "outside what io2 allows"),
    ({"type": "io1", "size": 10, "iops": 1000}, "exceeds 50 IOPS per GiB"),
    ({"type": "gp3", "size": 40, "iops": 2000}, "outside what gp3 allows"),
    ({"type": "io2", "size": 40, "iops": 4000, "throughput": 250}, "only valid for gp3"),
    ({"type": "gp3", "size": 40, "throughput": 2000}, "outside what gp3 allows"),
    ({"type": "st1", "size": 40}, "outside what st1 allows"),
    ({"type": "gp3", "size": 0}, "outside what gp3 allows"),
    ({"type": "nvme", "size": 40}, "not an EBS volume type"),
])
def test_bad_volume_is_refused_with_the_fix(volume: dict[str, Any], fragment: str) -> None:
    with pytest.raises(fl.FleetError) as err:
        fl.validate_volume(volume, "root_volume")
    assert fragment in err.value.msg
    assert "root_volume" in err.value.msg


@pytest.mark.parametrize("volume", [
    {"type": "gp3", "size": 40},
    {"type": "gp3", "size": 40, "iops": 6000, "throughput": 500},
    {"type": "io1", "size": 100, "iops": 5000},
    {"type": "io2", "size": 100, "iops": 64000},
    {"type": "gp2", "size": 8},
    {"type": "st1", "size": 500},
    {},
])
def test_good_volume_passes(volume: dict[str, Any]) -> None:
    fl.validate_volume(volume, "root_volume")


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"count": -1}, "count -1 is negative"),
    ({"instance_types": []}, "instance_types is empty"),
    ({"instance_types": ["g5.xlarge", "g5.xlarge"]}, "lists a type twice"),
    ({"availability_zones": ["us-east-1a", ""]}, "holds an empty entry"),
    ({"kms_key_id": "alias/x", "encrypted": False}, "needs encrypted: true"),
    ({"availability_zones": ["us-east-1a"], "subnet_ids": ["subnet-1"]}, "not both"),
    ({"data_volumes": [{"type": "gp3"}]}, "data_volumes[0].size is missing"),
    ({"data_volumes": [{"size": 10, "device_name": "/dev/sdh"}, {"size": 10, "device_name": "/dev/sdh"}]},
     "used twice"),
])
def test_bad_spec_is_refused(changes: dict[str, Any], fragment: str) -> None:
    spec = fl.FleetSpec(**{"name": "f", "count": 1, "instance_types": ["g5.xlarge"], "image_id": "ami-1", **changes})
    with pytest.raises(fl.FleetError) as err:
        fl.validate_spec(spec)
    assert fragment in err.value.msg


def test_bad_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="8 hours"):
        fl.validate_spec(fl.FleetSpec(name="f", count=1, instance_types=["g5.xlarge"], ttl="8 hours"))


def test_client_token_is_stable_per_attempt_and_distinct_across_them() -> None:
    base = fl.client_token("fleet", 3, "g5.xlarge", {"availability_zone": "us-east-1a"}, 2)
    assert base == fl.client_token("fleet", 3, "g5.xlarge", {"availability_zone": "us-east-1a"}, 2)
    others = {
        fl.client_token("fleet", 4, "g5.xlarge", {"availability_zone": "us-east-1a"}, 2),
        fl.client_token("fleet", 3, "g4dn.xlarge", {"availability_zone": "us-east-1a"}, 2),
        fl.client_token("fleet", 3, "g5.xlarge", {"availability_zone": "us-east-1b"}, 2),
        fl.client_token("other", 3, "g5.xlarge", {"availability_zone": "us-east-1a"}, 2),
    }
    assert base not in others and len(others) == 4
    assert len(fl.client_token("x" * 255, 99999, "p5.48xlarge", {"subnet_id": "subnet-" + "f" * 17}, 500)) <= 64


def test_data_volume_devices_skip_the_ones_named() -> None:
    volumes = [{"size": 1}, {"size": 1, "device_name": "/dev/sdg"}, {"size": 1}]
    assert fl.data_device_names(volumes) == ["/dev/sdf", "/dev/sdg", "/dev/sdh"]


def test_next_generation_counts_terminated_instances_too() -> None:
    def inst(gen: str) -> dict[str, Any]:
        return {"Tags": [{"Key": fl.TAG_GENERATION, "Value": gen}]}
    assert fl.next_generation([]) == 1
    assert fl.next_generation([inst("1"), inst("4"), inst("junk"), {"Tags": []}]) == 5


# --------------------------------------------------------------------------------------------------------
# against the emulator
# --------------------------------------------------------------------------------------------------------

class RequestLog:
    """Counts the emulator's API requests (its requests.jsonl) from the moment it is made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = self._lines()

    def _lines(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0

    def actions(self) -> list[str]:
        lines = self.path.read_text().splitlines()[self.start:]
        return [json.loads(line)["action"] for line in lines if line.strip()]


@pytest.fixture
def ec2(emulator):
    return RetryingBotoClientWrapper(emulator.client("ec2"), aws_retry)


@pytest.fixture
def launch_ec2(emulator):
    return emulator.client("ec2")


@pytest.fixture
def log(emulator) -> RequestLog:
    return RequestLog(emulator.state_dir / "requests.jsonl")


def _newest_image(ec2, pattern: str) -> dict[str, Any]:
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [pattern]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])


@pytest.fixture
def dlami(ec2) -> dict[str, Any]:
    return _newest_image(ec2, DLAMI_NAME)


def _spec(dlami: dict[str, Any], **changes: Any) -> fl.FleetSpec:
    values: dict[str, Any] = {
        "name": f"unit-{uuid.uuid4().hex[:8]}", "count": 2, "instance_types": ["g5.xlarge", "g4dn.xlarge"],
        "image_id": dlami["ImageId"], "root_volume": {"size": 80, "type": "gp3"}, "owner": "tests", "ttl": "1h",
        "wait_timeout": 60,
    }
    values.update(changes)
    return fl.FleetSpec(**values)


def _live(ec2, name: str) -> list[dict[str, Any]]:
    return fl.describe_fleet(ec2, name, fl.LIVE_STATES)


def test_launch_is_one_run_instances_call_with_tags_imdsv2_and_encrypted_volumes(ec2, launch_ec2, dlami, log):
    spec = _spec(dlami, count=3, data_volumes=[{"size": 100, "type": "gp3", "throughput": 250}])
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)

    assert changed and result["count"] == 3 and len(result["launched"]) == 3
    actions = log.actions()
    assert actions.count("RunInstances") == 1
    assert actions.count("DescribeInstances") <= 4    # fleet lookup, waiter, final read: never one per instance
    assert "CreateTags" not in actions                 # tags went on at create
    for inst in _live(ec2, spec.name):
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        tags = fl.tag_dict(inst["Tags"])
        assert tags["dlfleet:fleet"] == spec.name and tags["dlfleet:owner"] == "tests" and tags["dlfleet:ttl"] == "1h"
    records = {r["instance_id"]: r for r in result["instances"]}
    for rec in records.values():
        assert rec["gpu_count"] == 1 and rec["gpu_model"] == "A10G" and rec["gpu_memory_mib"] > 20000
        assert rec["private_ip"] and rec["public_dns_name"] and rec["availability_zone"] and rec["launch_time"]
        sizes = sorted((v["device_name"], v["size"], v["encrypted"]) for v in rec["volumes"])
        assert sizes == [("/dev/sda1", 80, True), ("/dev/sdf", 100, True)]
    volumes = fl.describe_fleet_volumes(ec2, spec.name)
    assert len(volumes) == 6 and all(v["Encrypted"] for v in volumes.values())


def test_rerun_changes_nothing_and_launches_nothing(ec2, launch_ec2, dlami, log):
    spec = _spec(dlami)
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    again = RequestLog(log.path)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert not changed and result["count"] == 2 and result["launched"] == []
    assert not MUTATING & set(again.actions())


def test_check_mode_predicts_without_mutating_calls(ec2, launch_ec2, dlami, log):
    spec = _spec(dlami, count=4)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=True)
    assert changed and result["predicted_launches"] == 4 and result["count"] == 0
    assert result["diff"]["before"]["count"] == 0 and result["diff"]["after"]["count"] == 4
    assert not MUTATING & set(log.actions())
    assert _live(ec2, spec.name) == []


def test_scale_up_then_down_terminates_the_newest(ec2, launch_ec2, dlami):
    spec = _spec(dlami, count=1)
    _, first = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    spec.count = 3
    _, up = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert up["count"] == 3 and len(up["launched"]) == 2
    assert {r["generation"] for r in up["instances"]} == {1, 2}

    spec.count = 1
    changed, down = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and sorted(down["terminated"]) == sorted(up["launched"])
    assert [i["InstanceId"] for i in _live(ec2, spec.name)] == first["instance_ids"]


def test_state_stopped_then_running_then_absent(ec2, launch_ec2, dlami):
    spec = _spec(dlami, count=2, state="stopped")
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and {r["state"] for r in result["instances"]} == {"stopped"}
    assert fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)[0] is False

    spec.state = "running"
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and len(result["started"]) == 2 and {r["state"] for r in result["instances"]} == {"running"}

    spec.state = "absent"
    changed, result = fl.ensure_absent(ec2, spec, check_mode=False)
    assert changed and len(result["terminated"]) == 2
    assert _live(ec2, spec.name) == []
    assert fl.ensure_absent(ec2, spec, check_mode=False)[0] is False


def test_changed_tags_are_reconciled_in_one_call(ec2, launch_ec2, dlami, log):
    spec = _spec(dlami, count=2)
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    spec.ttl, spec.tags = "2d", {"project": "cifar"}
    again = RequestLog(log.path)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and len(result["retagged"]) == 2
    assert again.actions().count("CreateTags") == 2    # the instances in one call, their volumes in another
    assert all(r["tags"]["dlfleet:ttl"] == "2d" and r["tags"]["project"] == "cifar" for r in result["instances"])
    volumes = fl.describe_fleet_volumes(ec2, spec.name).values()
    assert all(fl.tag_dict(v["Tags"])["dlfleet:ttl"] == "2d" for v in volumes)


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"root_volume": {"size": 40, "type": "gp3"}}, "smaller than the snapshot"),
    ({"instance_types": ["t3.micro"]}, "have no GPU"),
    ({"instance_types": ["g5.xlarge", "g9.huge"]}, "not offered in this region"),
    ({"image_id": "ami-0000000000000dead"}, "was not found"),
    ({"availability_zones": ["us-east-1z"]}, "are not zones of this region"),
    ({"subnet_ids": ["subnet-00000000000000000"]}, "subnet_ids"),
])
def test_bad_input_fails_clearly_and_creates_nothing(ec2, launch_ec2, dlami, log, changes, fragment):
    spec = _spec(dlami, **changes)
    with pytest.raises(fl.FleetError) as err:
        fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert fragment in err.value.msg
    assert not MUTATING & set(log.actions())
    assert _live(ec2, spec.name) == []


def test_arm64_image_on_x86_type_is_refused(ec2, launch_ec2, log):
    arm = _newest_image(ec2, DLAMI_ARM_NAME)
    spec = _spec(arm, root_volume={})
    with pytest.raises(fl.FleetError, match="arm64 but instance_types"):
        fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert "RunInstances" not in log.actions()


def test_root_size_defaults_to_the_snapshot(ec2, launch_ec2, dlami):
    spec = _spec(dlami, count=1, root_volume={"type": "gp3"})
    _, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    root = [v for v in result["instances"][0]["volumes"] if v["device_name"] == dlami["RootDeviceName"]]
    assert root[0]["size"] == fl.root_snapshot_size(dlami)


def test_no_gpu_type_is_accepted_when_require_gpu_is_off(ec2, launch_ec2, dlami):
    spec = _spec(dlami, count=1, instance_types=["t3.micro"], require_gpu=False)
    _, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert result["count"] == 1 and result["instances"][0]["gpu_count"] == 0


# --- launch faults moto cannot produce, from a client wrapper ------------------------------------------

class CapacityRefusingClient:
    """Simulated EC2 capacity: answers InsufficientInstanceCapacity for the listed (type, zone) pairs and
    passes every other launch to the emulator."""

    def __init__(self, real, refused: set[tuple[str, str]]) -> None:
        self.real, self.refused, self.calls = real, refused, []

    def run_instances(self, **request):
        where = request.get("Placement", {}).get("AvailabilityZone", "")
        self.calls.append((request["InstanceType"], where, request["ClientToken"]))
        if (request["InstanceType"], where) in self.refused:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "InsufficientInstanceCapacity",
                           "Message": f"We currently do not have sufficient {request['InstanceType']} capacity"},
                 "ResponseMetadata": {"HTTPStatusCode": 500}}, "RunInstances")
        return self.real.run_instances(**request)


class LostResponseClient:
    """Simulated lost response: the first launch reaches the emulator and runs, then the caller sees a read
    timeout, as when a connection drops after AWS executed the call."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, 0

    def run_instances(self, **request):
        self.calls += 1
        response = self.real.run_instances(**request)
        if self.calls == 1:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://emulator")
        return response


def test_simulated_capacity_shortage_falls_back_across_zones_then_types(ec2, launch_ec2, dlami, monkeypatch):
    monkeypatch.setattr(fl, "_sleep_backoff", lambda attempt: None)
    client = CapacityRefusingClient(launch_ec2, {("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b")})
    spec = _spec(dlami, availability_zones=["us-east-1a", "us-east-1b"])
    _, result = fl.ensure_present(ec2, client, spec, check_mode=False)
    assert [(t, z) for t, z, _ in client.calls] == [
        ("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b"), ("g4dn.xlarge", "us-east-1a")]
    assert len({token for _, _, token in client.calls}) == 3
    assert {(r["instance_type"], r["availability_zone"]) for r in result["instances"]} == {
        ("g4dn.xlarge", "us-east-1a")}
    assert [a["outcome"].split(":")[0] for a in result["attempts"]] == [
        "InsufficientInstanceCapacity", "InsufficientInstanceCapacity", "launched"]


def test_simulated_capacity_shortage_everywhere_creates_nothing(ec2, launch_ec2, dlami):
    client = CapacityRefusingClient(launch_ec2, {("g5.xlarge", "us-east-1c"), ("g4dn.xlarge", "us-east-1c")})
    spec = _spec(dlami, availability_zones=["us-east-1c"])
    with pytest.raises(fl.FleetError, match="no capacity for 2 x any of") as err:
        fl.ensure_present(ec2, client, spec, check_mode=False)
    assert len(err.value.details["attempts"]) == 2
    assert _live(ec2, spec.name) == []


def test_simulated_lost_response_is_found_by_tag_not_launched_twice(ec2, launch_ec2, dlami, monkeypatch):
    monkeypatch.setattr(fl, "_sleep_backoff", lambda attempt: None)
    client = LostResponseClient(launch_ec2)
    spec = _spec(dlami, count=3)
    changed, result = fl.ensure_present(ec2, client, spec, check_mode=False)
    assert changed and client.calls == 1
    assert result["count"] == 3 and len(_live(ec2, spec.name)) == 3
    assert result["attempts"][-1]["sends"] == 1
