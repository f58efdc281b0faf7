"""A network of a test's own on the emulator for the fleet tests (tests/emulator/test_ec2_gpu_fleet.py and
test_provision.py): a VPC with two subnets in two zones, a subnet of a second VPC, a subnet of another region,
and instance profiles with and without the SSM policy. Made over boto3, as a user would have them."""
from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

SSM_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
TRUST_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@dataclass
class Network:
    vpc: str
    subnet_a: str            # us-east-1a, no public address by default (a new subnet's MapPublicIpOnLaunch)
    subnet_b: str            # us-east-1b, same VPC
    other_vpc: str
    other_vpc_subnet: str    # us-east-1c, in other_vpc
    west_subnet: str         # a subnet of us-west-2
    ssm_profile: str         # instance profile whose role has AmazonSSMManagedInstanceCore
    made: list[tuple[str, str, str]] = field(default_factory=list)   # (region, kind, id) to remove


@contextlib.contextmanager
def network(emulator) -> Iterator[Network]:
    """Make the network, yield it, remove what can be removed (instances left in it keep their subnet)."""
    ec2, west = emulator.client("ec2"), emulator.client("ec2", region="us-west-2")
    octet = int(uuid.uuid4().hex[:2], 16)
    vpc = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]
    other = ec2.create_vpc(CidrBlock=f"172.{16 + octet % 16}.0.0/16")["Vpc"]["VpcId"]
    west_vpc = west.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]

    def subnet(client, vpc_id: str, cidr: str, zone: str) -> str:
        return client.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]

    a = subnet(ec2, vpc, f"10.{octet}.1.0/24", "us-east-1a")
    b = subnet(ec2, vpc, f"10.{octet}.2.0/24", "us-east-1b")
    c = subnet(ec2, other, f"172.{16 + octet % 16}.1.0/24", "us-east-1c")
    w = subnet(west, west_vpc, f"10.{octet}.1.0/24", "us-west-2a")
    iam = emulator.client("iam")
    profile = f"dlfleet-instance-ssm-{uuid.uuid4().hex[:8]}"
    iam.create_role(RoleName=profile, AssumeRolePolicyDocument=TRUST_EC2)
    iam.attach_role_policy(RoleName=profile, PolicyArn=SSM_POLICY_ARN)
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=profile)
    net = Network(vpc, a, b, other, c, w, profile,
                  [("us-east-1", "subnet", a), ("us-east-1", "subnet", b), ("us-east-1", "subnet", c),
                   ("us-west-2", "subnet", w), ("us-east-1", "vpc", vpc), ("us-east-1", "vpc", other),
                   ("us-west-2", "vpc", west_vpc)])
    try:
        yield net
    finally:
        for region, kind, ident in net.made:
            client = ec2 if region == "us-east-1" else west
            with contextlib.suppress(Exception):   # still in use by a terminated instance: the session ends soon
                if kind == "subnet":
                    client.delete_subnet(SubnetId=ident)
                else:
                    client.delete_vpc(VpcId=ident)
