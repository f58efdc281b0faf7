"""ec2_gpu_fleet, pure input checks and launch bookkeeping (module_utils/dlfleet_fleet.py). The launches against
the emulator are in tests/emulator/test_ec2_gpu_fleet.py."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ansible.module_utils import dlfleet_fleet as fl

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


@pytest.mark.parametrize("key", ["aws:cloudformation:stack-name", "dlfleet:fleet", "dlfleet:generation"])
def test_a_reserved_tag_key_is_refused(key: str) -> None:
    spec = fl.FleetSpec(name="f", count=1, instance_types=["g5.xlarge"], image_id="ami-1", tags={key: "x"})
    with pytest.raises(fl.FleetError, match="not allowed in tags"):
        fl.validate_spec(spec)


def _tagged(**tags: str) -> dict[str, Any]:
    return {"InstanceId": "i-1", "Tags": fl.tag_list(tags)}


ON_INSTANCE = {"dlfleet:fleet": "f", "dlfleet:owner": "dlfleet", "dlfleet:ttl": "8h", "dlfleet:generation": "1",
               "aws:ec2launchtemplate:id": "lt-1", "project": "cifar", "team": "ml"}


def test_purge_tags_removes_the_user_tags_not_named_and_never_aws_or_dlfleet_ones() -> None:
    spec = fl.FleetSpec(name="f", tags={"project": "cifar"})
    assert spec.purge_tags is True                                  # the default, as in amazon.aws
    assert spec.tag_changes(_tagged(**ON_INSTANCE)) == ({}, ["team"])
    spec.tags = {}
    assert spec.tag_changes(_tagged(**ON_INSTANCE)) == ({}, ["project", "team"])


def test_without_purge_tags_or_without_tags_the_user_tags_stay() -> None:
    assert fl.FleetSpec(name="f", tags={"project": "vision"}, purge_tags=False).tag_changes(
        _tagged(**ON_INSTANCE)) == ({"project": "vision"}, [])
    assert fl.FleetSpec(name="f", tags=None).tag_changes(_tagged(**ON_INSTANCE)) == ({}, [])
    assert fl.FleetSpec(name="f", ttl="2d").tag_changes(_tagged(**ON_INSTANCE)) == ({"dlfleet:ttl": "2d"}, [])


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


def test_replay_of_an_earlier_launch_is_told_from_a_new_one() -> None:
    began = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    new = [{"InstanceId": "i-new", "LaunchTime": began + timedelta(seconds=5)}]
    resent = [{"InstanceId": "i-new", "LaunchTime": began - timedelta(minutes=3)}]   # lost answer, same run
    forgotten = [{"InstanceId": "i-old", "LaunchTime": began - timedelta(hours=5)}]  # gone from Describe
    assert not fl.is_replay(new, set(), began)
    assert not fl.is_replay(resent, set(), began)
    assert fl.is_replay(forgotten, set(), began)
    assert fl.is_replay(new, {"i-new"}, began)
    assert not fl.is_replay([], set(), began)


def test_data_volume_devices_skip_the_ones_named() -> None:
    volumes = [{"size": 1}, {"size": 1, "device_name": "/dev/sdg"}, {"size": 1}]
    assert fl.data_device_names(volumes) == ["/dev/sdf", "/dev/sdg", "/dev/sdh"]


def test_next_generation_counts_terminated_instances_too() -> None:
    def inst(gen: str) -> dict[str, Any]:
        return {"Tags": [{"Key": fl.TAG_GENERATION, "Value": gen}]}
    assert fl.next_generation([]) == 1
    assert fl.next_generation([inst("1"), inst("4"), inst("junk"), {"Tags": []}]) == 5


# --------------------------------------------------------------------------------------------------------
# subnets, VPC and the public address
# --------------------------------------------------------------------------------------------------------
SUBNET_A, SUBNET_B, SUBNET_C = "subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2", "subnet-0ccccccc"
DESCRIBED = [  # what DescribeSubnets answers in us-east-1
    {"SubnetId": SUBNET_A, "VpcId": "vpc-01111111111111111", "AvailabilityZone": "us-east-1a"},
    {"SubnetId": SUBNET_B, "VpcId": "vpc-01111111111111111", "AvailabilityZone": "us-east-1b"},
    {"SubnetId": SUBNET_C, "VpcId": "vpc-02222222222222222", "AvailabilityZone": "us-east-1c"},
]


def _net(**changes: Any) -> fl.FleetSpec:
    return fl.FleetSpec(**{"name": "f", "count": 1, "instance_types": ["g5.xlarge"], "image_id": "ami-1",
                           "region": "us-east-1", **changes})


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"subnet_ids": ["subnet-*"]}, "are not subnet ids"),              # a filter wildcard never reaches EC2
    ({"subnet_ids": ["sg-0123456789abcdef0"]}, "are not subnet ids"),
    ({"subnet_ids": [SUBNET_A, SUBNET_A]}, "twice"),
    ({"vpc_id": "vpc-01111111111111111"}, "vpc_id 'vpc-01111111111111111' needs subnet_ids"),
])
def test_bad_subnet_options_are_refused_before_any_call(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(fl.FleetError) as err:
        fl.validate_spec(_net(**changes))
    assert fragment in err.value.msg


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"subnet_ids": [SUBNET_A, "subnet-0dddddddddddddddd"]},
     "subnet_ids ['subnet-0dddddddddddddddd'] are not subnets of us-east-1"),
    ({"subnet_ids": [SUBNET_A, SUBNET_C]}, "are in 2 VPCs (vpc-01111111111111111: subnet-0aaaaaaaaaaaaaaa1; "
                                           "vpc-02222222222222222: subnet-0ccccccc)"),
    ({"subnet_ids": [SUBNET_C], "vpc_id": "vpc-01111111111111111"},
     "are in VPC vpc-02222222222222222, not in vpc_id vpc-01111111111111111"),
])
def test_subnets_of_another_region_or_vpc_are_refused(changes: dict[str, Any], fragment: str) -> None:
    spec = _net(**changes)
    described = [s for s in DESCRIBED if s["SubnetId"] in spec.subnet_ids]
    with pytest.raises(fl.FleetError) as err:
        fl.check_subnets(spec, described)
    assert fragment in err.value.msg


def test_subnets_of_one_vpc_give_their_zones_and_vpc() -> None:
    spec = _net(subnet_ids=[SUBNET_B, SUBNET_A], vpc_id="vpc-01111111111111111")
    zones, vpc = fl.check_subnets(spec, DESCRIBED[:2])
    assert zones == {SUBNET_B: "us-east-1b", SUBNET_A: "us-east-1a"} and vpc == "vpc-01111111111111111"
    assert fl.check_subnets(_net(), []) == ({}, None)


IMAGE = {"ImageId": "ami-1", "RootDeviceName": "/dev/sda1",
         "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}]}


def test_public_address_is_a_network_interface_setting_that_carries_subnet_and_groups() -> None:
    placement = {"subnet_id": SUBNET_A, "availability_zone": "us-east-1a"}
    for asked in (True, False):
        req = fl.launch_request(_net(assign_public_ip=asked, security_group_ids=["sg-1"]), IMAGE, "g5.xlarge",
                                placement, 2, 1)
        assert req["NetworkInterfaces"] == [{"DeviceIndex": 0, "AssociatePublicIpAddress": asked,
                                             "DeleteOnTermination": True, "SubnetId": SUBNET_A, "Groups": ["sg-1"]}]
        assert "SubnetId" not in req and "SecurityGroupIds" not in req   # EC2 refuses them beside the interface
    subnet_default = fl.launch_request(_net(security_group_ids=["sg-1"]), IMAGE, "g5.xlarge", placement, 2, 1)
    assert "NetworkInterfaces" not in subnet_default
    assert subnet_default["SubnetId"] == SUBNET_A and subnet_default["SecurityGroupIds"] == ["sg-1"]
    zone = fl.launch_request(_net(assign_public_ip=False), IMAGE, "g5.xlarge", {"availability_zone": "us-east-1b"},
                             1, 1)
    assert zone["Placement"] == {"AvailabilityZone": "us-east-1b"} and "SubnetId" not in zone["NetworkInterfaces"][0]
