"""ec2_gpu_fleet against the emulator (module_utils/dlfleet_fleet.py; its pure input checks are in tests/unit).

Everything here runs through boto3 over real HTTP against the session emulator, and
API requests are counted from its request log. Two launch faults that moto cannot produce (no capacity,
a launch that ran but whose response was lost) come from a client wrapper named in the test.
"""
from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import fleet_network
import pytest
from ansible.module_utils import dlfleet_fleet as fl
from ansible.module_utils.dlfleet_aws import aws_retry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper

DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
DLAMI_ARM_NAME = "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
MUTATING = {"RunInstances", "TerminateInstances", "StartInstances", "StopInstances", "CreateTags", "DeleteTags"}


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
    return fl.launch_client(emulator.client("ec2"))


@pytest.fixture
def log(emulator) -> RequestLog:
    return RequestLog(emulator.state_dir / "requests.jsonl")


def _newest_image(ec2, pattern: str) -> dict[str, Any]:
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [pattern]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])


@pytest.fixture
def dlami(ec2) -> dict[str, Any]:
    return _newest_image(ec2, DLAMI_NAME)


@pytest.fixture
def fleets(emulator):
    """Registers each test's fleet and terminates it afterwards: the emulator's G vCPU quota is shared by the
    whole test session."""
    made: list[fl.FleetSpec] = []

    def register(spec: fl.FleetSpec) -> fl.FleetSpec:
        made.append(spec)
        return spec

    yield register
    ec2 = RetryingBotoClientWrapper(emulator.client("ec2"), aws_retry)
    for spec in made:
        fl.ensure_absent(ec2, fl.FleetSpec(name=spec.name, state="absent", wait=False), check_mode=False)


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


def _volumes(ec2, name: str) -> dict[str, dict[str, Any]]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:dlfleet:fleet", "Values": [name]}])["Volumes"]
    return {v["VolumeId"]: v for v in found}


def test_launch_is_one_run_instances_call_with_tags_imdsv2_and_encrypted_volumes(ec2, launch_ec2, dlami, log, fleets):
    spec = fleets(_spec(dlami, count=3, data_volumes=[{"size": 100, "type": "gp3", "throughput": 250}]))
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)

    assert changed and result["count"] == 3 and len(result["launched"]) == 3
    actions = log.actions()
    assert actions.count("RunInstances") == 1
    assert actions.count("DescribeInstances") == 1     # the fleet lookup; never one call per instance
    assert actions.count("DescribeInstanceStatus") == 1
    assert "CreateTags" not in actions                 # tags went on at create
    for inst in _live(ec2, spec.name):
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        tags = fl.tag_dict(inst["Tags"])
        assert tags["dlfleet:fleet"] == spec.name and tags["dlfleet:owner"] == "tests" and tags["dlfleet:ttl"] == "1h"
    records = {r["instance_id"]: r for r in result["instances"]}
    for rec in records.values():
        assert rec["gpu_count"] == 1 and rec["gpu_model"] == "A10G" and rec["gpu_memory_mib"] > 20000
        assert rec["private_ip"] and rec["public_dns_name"] and rec["availability_zone"] and rec["launch_time"]
        assert rec["state"] == "running" and rec["http_tokens"] == "required"
        assert sorted(v["device_name"] for v in rec["volumes"]) == ["/dev/sda1", "/dev/sdf"]
    volumes = _volumes(ec2, spec.name)
    assert len(volumes) == 6 and all(v["Encrypted"] for v in volumes.values())
    assert sorted(v["Size"] for v in volumes.values()) == [80, 80, 80, 100, 100, 100]
    assert {v["Attachments"][0]["InstanceId"] for v in volumes.values()} == set(records)


def test_rerun_changes_nothing_and_launches_nothing(ec2, launch_ec2, dlami, log, fleets):
    spec = fleets(_spec(dlami))
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


def test_scale_up_then_down_terminates_the_newest(ec2, launch_ec2, dlami, fleets):
    spec = fleets(_spec(dlami, count=1))
    _, first = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    spec.count = 3
    _, up = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert up["count"] == 3 and len(up["launched"]) == 2
    assert {r["generation"] for r in up["instances"]} == {1, 2}

    spec.count = 1
    changed, down = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and sorted(down["terminated"]) == sorted(up["launched"])
    assert [i["InstanceId"] for i in _live(ec2, spec.name)] == first["instance_ids"]


def test_state_stopped_then_running_then_absent(ec2, launch_ec2, dlami, fleets):
    spec = fleets(_spec(dlami, count=2, state="stopped"))
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


def test_changed_tags_are_reconciled_in_one_call(ec2, launch_ec2, dlami, log, fleets):
    spec = fleets(_spec(dlami, count=2))
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    spec.ttl, spec.tags = "2d", {"project": "cifar"}
    again = RequestLog(log.path)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and len(result["retagged"]) == 2
    assert again.actions().count("CreateTags") == 1    # instances and their volumes in one call
    assert all(r["tags"]["dlfleet:ttl"] == "2d" and r["tags"]["project"] == "cifar" for r in result["instances"])
    volumes = _volumes(ec2, spec.name).values()
    assert all(fl.tag_dict(v["Tags"])["dlfleet:ttl"] == "2d" for v in volumes)


def test_purge_tags_removes_user_tags_no_longer_named_and_keeps_dlfleet_ones(ec2, launch_ec2, dlami, log, fleets):
    spec = fleets(_spec(dlami, count=2, tags={"project": "cifar", "team": "ml"}))
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    ids = [i["InstanceId"] for i in _live(ec2, spec.name)]
    ec2.create_tags(Resources=ids, Tags=[{"Key": "added-by-hand", "Value": "yes"}])

    spec.tags, spec.purge_tags = {"project": "cifar"}, False      # without purge_tags the other tags stay
    again = RequestLog(log.path)
    assert fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)[0] is False
    assert not MUTATING & set(again.actions())

    spec.purge_tags = True                                        # check mode: reported, nothing changed
    again = RequestLog(log.path)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=True)
    assert changed and sorted(result["retagged"]) == sorted(ids)
    assert not MUTATING & set(again.actions())
    assert all("team" in fl.tag_dict(i["Tags"]) for i in _live(ec2, spec.name))

    again = RequestLog(log.path)
    changed, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert changed and sorted(result["retagged"]) == sorted(ids)
    assert again.actions().count("DeleteTags") == 1 and "CreateTags" not in again.actions()
    for inst in _live(ec2, spec.name):
        tags = fl.tag_dict(inst["Tags"])
        assert "team" not in tags and "added-by-hand" not in tags and tags["project"] == "cifar"
        assert {"dlfleet:fleet", "dlfleet:owner", "dlfleet:ttl", "dlfleet:generation"} <= set(tags)
    assert all("team" not in r["tags"] and r["tags"]["dlfleet:ttl"] == "1h" for r in result["instances"])
    assert all("team" not in fl.tag_dict(v["Tags"]) for v in _volumes(ec2, spec.name).values())
    assert fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)[0] is False


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


def test_provisioned_iops_root_and_gp3_throughput_reach_the_volumes(ec2, launch_ec2, dlami, fleets):
    """The seed's advice for p3.8xlarge: a Provisioned IOPS root volume; plus a gp3 data volume with its own
    throughput."""
    spec = fleets(_spec(dlami, count=1, instance_types=["p3.8xlarge"],
                        root_volume={"size": 100, "type": "io2", "iops": 6000},
                        data_volumes=[{"size": 200, "type": "gp3", "iops": 4000, "throughput": 500}]))
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    got = sorted((v["Attachments"][0]["Device"], v["VolumeType"], v["Size"], v.get("Iops"), v.get("Throughput"))
                 for v in _volumes(ec2, spec.name).values())
    assert got == [("/dev/sda1", "io2", 100, 6000, None), ("/dev/sdf", "gp3", 200, 4000, 500)]


def test_root_size_defaults_to_the_snapshot(ec2, launch_ec2, dlami, fleets):
    spec = fleets(_spec(dlami, count=1, root_volume={"type": "gp3"}))
    fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    [root] = _volumes(ec2, spec.name).values()
    assert root["Size"] == fl.root_snapshot_size(dlami)


def test_spot_market_user_data_and_imds_options_reach_the_launch(ec2, launch_ec2, dlami, fleets, emulator):
    spec = fleets(_spec(dlami, count=1, market="spot", http_tokens="optional", user_data="#!/bin/sh\necho hi\n"))
    _, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    [rec] = result["instances"]
    assert rec["market"] == "spot" and rec["http_tokens"] == "optional"
    raw = emulator.client("ec2").describe_instance_attribute(InstanceId=rec["instance_id"], Attribute="userData")
    assert base64.b64decode(raw["UserData"]["Value"]).decode() == "#!/bin/sh\necho hi\n"


def test_no_gpu_type_is_accepted_when_require_gpu_is_off(ec2, launch_ec2, dlami, fleets):
    spec = fleets(_spec(dlami, count=1, instance_types=["t3.micro"], require_gpu=False))
    _, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert result["count"] == 1 and result["instances"][0]["gpu_count"] == 0


# --- subnets of a VPC, the public address, a private fleet and its SSM agents ------------------------

@pytest.fixture
def net(emulator):
    with fleet_network.network(emulator) as made:
        yield made


def test_fleet_in_two_subnets_of_a_vpc_gets_the_public_address_asked_for(ec2, launch_ec2, dlami, log, net, fleets,
                                                                           emulator):
    """The plan names the subnets' VPC without a mutating call; the batch goes into the first subnet (it has
    capacity), with a public address although the subnet gives none by default, and the group of that VPC; a fleet
    that leaves the address to the subnet gets none there. The subnet fallback on no capacity is the zone test's."""
    group = emulator.client("ec2").create_security_group(GroupName=f"g-{uuid.uuid4().hex[:6]}", Description="t",
                                                         VpcId=net.vpc)["GroupId"]
    spec = fleets(_spec(dlami, count=2, subnet_ids=[net.subnet_a, net.subnet_b], vpc_id=net.vpc,
                        assign_public_ip=True, security_group_ids=[group], region="us-east-1"))
    changed, plan = fl.ensure_present(ec2, launch_ec2, spec, check_mode=True)
    assert changed and plan["predicted_launches"] == 2 and plan["vpc_id"] == net.vpc
    assert not MUTATING & set(log.actions())

    _, result = fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)
    assert result["vpc_id"] == net.vpc and len(result["launched"]) == 2
    for inst in _live(ec2, spec.name):
        assert inst["SubnetId"] == net.subnet_a and inst["VpcId"] == net.vpc
        assert inst.get("PublicIpAddress")
        assert [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]] == [group]
    assert fl.ensure_present(ec2, launch_ec2, spec, check_mode=False)[0] is False

    subnet_decides = fleets(_spec(dlami, count=1, subnet_ids=[net.subnet_b]))
    _, result = fl.ensure_present(ec2, launch_ec2, subnet_decides, check_mode=False)
    [inst] = _live(ec2, subnet_decides.name)
    assert inst["SubnetId"] == net.subnet_b and not inst.get("PublicIpAddress")
    assert not result["instances"][0]["public_ip"]


def test_private_fleet_waits_until_every_ssm_agent_is_online(ec2, launch_ec2, dlami, log, net, fleets, emulator):
    """No public address, the instance profile attached, and the wait ends on DescribeInstanceInformation
    PingStatus Online (the emulator answers it for a running instance whose profile's role has
    AmazonSSMManagedInstanceCore). Session Manager itself, which the aws_ssm connection uses, is not emulated."""
    ssm = RetryingBotoClientWrapper(emulator.client("ssm"), aws_retry)
    spec = fleets(_spec(dlami, count=2, subnet_ids=[net.subnet_b, net.subnet_a], assign_public_ip=False,
                        iam_instance_profile=net.ssm_profile, wait_for_ssm=True))
    _, result = fl.ensure_present(ec2, launch_ec2, spec, False, ssm)
    assert result["ssm_online"] == sorted(result["launched"]) and len(result["launched"]) == 2
    assert "DescribeInstanceInformation" in log.actions()
    for inst in _live(ec2, spec.name):
        assert inst["SubnetId"] == net.subnet_b and not inst.get("PublicIpAddress")
        assert inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{net.ssm_profile}")
    # An instance whose profile does not allow SSM never registers: nothing to wait for would come Online.
    plain = fleets(_spec(dlami, count=1, subnet_ids=[net.subnet_b], assign_public_ip=False))
    _, other = fl.ensure_present(ec2, launch_ec2, plain, check_mode=False)
    assert fl.describe_ssm_ping(ssm, other["launched"] + result["launched"]) == dict.fromkeys(result["launched"],
                                                                                              "Online")


@pytest.mark.parametrize(("subnets", "vpc", "fragment"), [
    (["subnet_a", "other_vpc_subnet"], None, "are in 2 VPCs"),
    (["other_vpc_subnet"], "vpc", "not in vpc_id"),
    (["subnet_a", "west_subnet"], None, "are not subnets of us-east-1"),
])
def test_subnet_of_another_vpc_or_region_is_refused_before_anything_is_created(ec2, launch_ec2, dlami, log, net,
                                                                               subnets, vpc, fragment):
    spec = _spec(dlami, subnet_ids=[getattr(net, s) for s in subnets], vpc_id=getattr(net, vpc) if vpc else None,
                 region="us-east-1")
    for check_mode in (True, False):
        with pytest.raises(fl.FleetError) as err:
            fl.ensure_present(ec2, launch_ec2, spec, check_mode=check_mode)
        assert fragment in err.value.msg and "subnet_ids" in err.value.msg
    assert not MUTATING & set(log.actions())
    assert _live(ec2, spec.name) == []


# --- faults, through the fault proxy in front of the emulator (tests/faultproxy.py) ------------------

@pytest.fixture
def faulty(faulty_aws, fleets):
    """(ec2, launch client) through the fault proxy, as the module builds them."""
    return (RetryingBotoClientWrapper(faulty_aws.client("ec2"), aws_retry),
            fl.launch_client(faulty_aws.client("ec2")))


def test_capacity_shortage_falls_back_across_zones_then_types(faulty_aws, faulty, dlami, fleets, monkeypatch):
    monkeypatch.setattr(fl, "_sleep_backoff", lambda attempt: None)
    faulty_aws.configure(capacity=[("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b")])
    spec = fleets(_spec(dlami, availability_zones=["us-east-1a", "us-east-1b"]))
    _, result = fl.ensure_present(*faulty, spec, check_mode=False)
    tried = [(a["instance_type"], a["availability_zone"], a["outcome"].split(":")[0]) for a in result["attempts"]]
    assert tried == [("g5.xlarge", "us-east-1a", "InsufficientInstanceCapacity"),
                     ("g5.xlarge", "us-east-1b", "InsufficientInstanceCapacity"),
                     ("g4dn.xlarge", "us-east-1a", "launched")]
    assert len({a["client_token"] for a in result["attempts"]}) == 3
    assert faulty_aws.counters["capacity"] == 2
    live = _live(faulty_aws.direct("ec2"), spec.name)
    assert {(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in live} == {("g4dn.xlarge", "us-east-1a")}
    assert len(live) == 2


def test_capacity_shortage_everywhere_creates_nothing(faulty_aws, faulty, dlami, fleets):
    faulty_aws.configure(capacity=[("g5.xlarge", "*"), ("g4dn.xlarge", "*")])
    spec = fleets(_spec(dlami, availability_zones=["us-east-1c"]))
    with pytest.raises(fl.FleetError, match="no capacity for 2 x any of") as err:
        fl.ensure_present(*faulty, spec, check_mode=False)
    assert len(err.value.details["attempts"]) == 2
    assert _live(faulty_aws.direct("ec2"), spec.name) == []


@pytest.mark.parametrize("kind", ["lost_response", "server_error", "drop"])
def test_launch_with_unknown_outcome_is_looked_up_and_never_doubled(faulty_aws, faulty, dlami, fleets, monkeypatch,
                                                                   kind):
    """The first RunInstances fails in a way that hides whether it ran; botocore must not resend it by itself,
    and the module looks the generation up by tag before it sends the same request again."""
    monkeypatch.setattr(fl, "_sleep_backoff", lambda attempt: None)
    faulty_aws.configure(idempotency=False)   # as moto: a blind resend would launch a second batch
    faulty_aws.once(kind, "RunInstances")
    spec = fleets(_spec(dlami, count=3))
    log = RequestLog(faulty_aws.emulator.state_dir / "requests.jsonl")
    changed, result = fl.ensure_present(*faulty, spec, check_mode=False)
    assert changed and faulty_aws.counters[kind] == 1
    assert len(_live(faulty_aws.direct("ec2"), spec.name)) == 3 and result["count"] == 3
    assert log.actions().count("RunInstances") == 1     # exactly one launch ever reached the emulator
    # lost_response: the lookup found what the first send launched. server_error/drop: nothing ran, so the
    # lookup found nothing and the same request (same token) went again.
    assert result["attempts"][-1]["sends"] == (1 if kind == "lost_response" else 2)


def test_fleet_of_20_under_30_percent_faults_is_exactly_20(faulty_aws, faulty, dlami, fleets, monkeypatch):
    monkeypatch.setattr(fl, "_sleep_backoff", lambda attempt: None)
    faulty_aws.configure(throttle=0.1, server_error=0.1, drop=0.05, lost_response=0.05, seed=7,
                         consistency_ms=500)
    spec = fleets(_spec(dlami, count=20, instance_types=["g4dn.xlarge", "g5.xlarge"]))
    _, result = fl.ensure_present(*faulty, spec, check_mode=False)
    again_changed, _ = fl.ensure_present(*faulty, spec, check_mode=False)
    faults = {k: v for k, v in faulty_aws.counters.items() if k in ("throttle", "server_error", "drop",
                                                                    "lost_response", "not_found") and v}
    assert sum(faults.values()) > 0, faulty_aws.counters
    live = _live(faulty_aws.direct("ec2"), spec.name)
    assert len(live) == 20 and result["count"] == 20 and not again_changed
