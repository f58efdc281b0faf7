# Fleet logic behind the ec2_gpu_fleet module: exactly `count` GPU instances tagged dlfleet:fleet=<name>.
#
# Shape (amazon.aws style): thin functions, one per EC2 call, then ensure_present/ensure_absent that
# return (changed, result) and never call a mutating API in check mode.
#
# Launch safety. A batch is one RunInstances call (MinCount = MaxCount = missing instances) with a
# ClientToken derived from the fleet, its generation and the attempt, and with tags on create. botocore's own
# retries are switched off for RunInstances (launch_client), so that every resend is decided here: a throttle (known
# not executed) is retried as is; an unknown outcome (5xx, timeout, dropped connection) first looks the
# generation up by tag and only re-sends the same request, same token, when nothing is found. A re-run
# starts from a tag lookup too, so neither a retried call nor a re-run launches twice.
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore.exceptions

from ansible.module_utils.dlfleet_aws import (
    DlfleetError,
    check_fleet_name,
    describe_instance_types,
    error_code,
    eventually_consistent,
    fleet_filter,
    fleet_tags,
    gpu_summary,
    is_not_found,
    paginate,
    tag_dict,
    tag_list,
)
from ansible.module_utils.dlfleet_tags import check_user_tags, compare_tags

TAG_GENERATION = "dlfleet:generation"

LIVE_STATES = ("pending", "running", "stopping", "stopped")
ALL_STATES = (*LIVE_STATES, "shutting-down", "terminated")

# RunInstances errors after which the next instance type / placement is tried; nothing was launched.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientCapacity",
    "Unsupported",
})
# Refused before execution: safe to send again unchanged.
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"})
# The request may or may not have run: look up before sending it again.
UNKNOWN_OUTCOME_CODES = frozenset({
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
})

# Calls by instance id right after a launch can meet EC2's eventual consistency.
consistent_retry = eventually_consistent("InvalidInstanceID.NotFound", "IncorrectInstanceState")

LAUNCH_ATTEMPTS = 8            # sends of one RunInstances request (same token) before giving up
# A token's answer holding only instances launched this long before the launch began is a replay of an
# earlier launch (AWS keeps a ClientToken for 24 h after its instances end; Describe forgets them sooner).
STALE_REPLAY = dt.timedelta(minutes=15)
WAITER_DELAY = 3               # seconds between waiter polls
TERMINATE_BATCH = 500          # instance ids per TerminateInstances/StartInstances/StopInstances call
STATUS_BATCH = 100             # DescribeInstanceStatus accepts at most 100 explicit instance ids
TAG_BATCH = 500                # resource ids per CreateTags call
DATA_DEVICE_LETTERS = "fghijklmnop"
SUBNET_ID = re.compile(r"subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?")
SSM_ID_BATCH = 50              # DescribeInstanceInformation takes at most 50 instance ids per filter

# EBS limits by volume type (AWS EBS volume types page): size GiB, iops, throughput MiB/s, iops per GiB.
VOLUME_LIMITS: dict[str, dict[str, Any]] = {
    "gp3": {"size": (1, 16384), "iops": (3000, 16000), "throughput": (125, 1000), "iops_per_gib": 500},
    "gp2": {"size": (1, 16384)},
    "io1": {"size": (4, 16384), "iops": (100, 64000), "iops_per_gib": 50, "iops_required": True},
    "io2": {"size": (4, 65536), "iops": (100, 256000), "iops_per_gib": 1000, "iops_required": True},
    "st1": {"size": (125, 16384)},
    "sc1": {"size": (125, 16384)},
    "standard": {"size": (1, 1024)},
}
VOLUME_TYPES = tuple(VOLUME_LIMITS)


class FleetError(DlfleetError):
    """A failure with a message that says what was asked, what AWS said and what to do."""


@dataclass
class FleetSpec:
    name: str
    count: int = 0
    state: str = "present"
    instance_types: list[str] = field(default_factory=list)
    availability_zones: list[str] = field(default_factory=list)
    subnet_ids: list[str] = field(default_factory=list)
    image_id: str | None = None
    key_name: str | None = None
    security_group_ids: list[str] = field(default_factory=list)
    root_volume: dict[str, Any] = field(default_factory=dict)
    data_volumes: list[dict[str, Any]] = field(default_factory=list)
    encrypted: bool = True
    kms_key_id: str | None = None
    market: str = "on-demand"
    http_tokens: str = "required"
    iam_instance_profile: str | None = None
    assign_public_ip: bool | None = None      # None: the subnet's own setting (MapPublicIpOnLaunch)
    vpc_id: str | None = None                 # the subnets must be in this VPC
    wait_for_ssm: bool = False
    region: str | None = None
    user_data: str | None = None
    tags: dict[str, str] | None = None       # None: the user's tags stay as they are
    purge_tags: bool = True
    owner: str = "dlfleet"
    ttl: str = "8h"
    require_gpu: bool = True
    wait: bool = True
    wait_timeout: int = 600

    @property
    def identity_tags(self) -> dict[str, str]:
        return fleet_tags(self.name, self.owner, self.ttl)

    @property
    def desired_tags(self) -> dict[str, str]:
        """The tags of a new instance and its volumes: the user's tags and dlfleet's."""
        return fleet_tags(self.name, self.owner, self.ttl, self.tags)

    def tag_changes(self, inst: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """(to_set, to_unset) for an existing instance: amazon.aws semantics (see dlfleet_tags)."""
        return compare_tags(tag_dict(inst.get("Tags")), self.tags, self.purge_tags, self.identity_tags)


# --------------------------------------------------------------------------------------------------------
# Input validation (pure: no AWS call)
# --------------------------------------------------------------------------------------------------------

def validate_volume(volume: dict[str, Any], where: str) -> None:
    """Raise FleetError when a volume's type, size, iops or throughput cannot be launched."""
    vtype = volume.get("type") or "gp3"
    if vtype not in VOLUME_LIMITS:
        raise FleetError(f"{where}.type {vtype!r} is not an EBS volume type; use one of {', '.join(VOLUME_TYPES)}")
    limits = VOLUME_LIMITS[vtype]
    size, iops, throughput = volume.get("size"), volume.get("iops"), volume.get("throughput")
    if size is not None:
        low, high = limits["size"]
        if not low <= size <= high:
            raise FleetError(f"{where}.size {size} GiB is outside what {vtype} allows ({low}-{high} GiB); "
                             f"choose a size in that range or another type")
    if iops is not None:
        if "iops" not in limits:
            raise FleetError(f"{where}.iops {iops} is only valid for io1, io2 or gp3 volumes, not {vtype}; "
                             f"set {where}.type to io1/io2 (Provisioned IOPS) or gp3, or drop iops")
        low, high = limits["iops"]
        if not low <= iops <= high:
            raise FleetError(f"{where}.iops {iops} is outside what {vtype} allows ({low}-{high}); "
                             f"choose a value in that range")
        if size is not None and iops > size * limits["iops_per_gib"]:
            raise FleetError(f"{where}.iops {iops} exceeds {limits['iops_per_gib']} IOPS per GiB for a {size} GiB "
                             f"{vtype} volume; raise {where}.size to at least "
                             f"{-(-iops // limits['iops_per_gib'])} GiB or lower iops")
    elif limits.get("iops_required"):
        raise FleetError(f"{where}.type {vtype} (Provisioned IOPS) needs {where}.iops; set it, for example iops: 3000")
    if throughput is not None:
        if "throughput" not in limits:
            raise FleetError(f"{where}.throughput {throughput} is only valid for gp3 volumes, not {vtype}; "
                             f"set {where}.type to gp3 or drop throughput")
        low, high = limits["throughput"]
        if not low <= throughput <= high:
            raise FleetError(f"{where}.throughput {throughput} MiB/s is outside what gp3 allows ({low}-{high})")


def validate_spec(spec: FleetSpec) -> None:
    """Checks that need no AWS call. Raises FleetError naming the value and the fix."""
    if spec.count < 0:
        raise FleetError(f"count {spec.count} is negative; use 0 or more (state: absent removes the fleet)")
    try:
        check_fleet_name(spec.name)
    except ValueError as err:
        raise FleetError(str(err)) from err
    if spec.state != "absent":
        if not spec.instance_types:
            raise FleetError("instance_types is empty; give at least one, for example [g5.xlarge, g4dn.xlarge]")
        if len(set(spec.instance_types)) != len(spec.instance_types):
            raise FleetError(f"instance_types {spec.instance_types} lists a type twice; list each type once")
    if spec.availability_zones and spec.subnet_ids:
        raise FleetError(f"give availability_zones {spec.availability_zones} or subnet_ids {spec.subnet_ids}, not "
                         f"both: a subnet already fixes its zone, so list the subnets of the zones you want")
    for opt in ("availability_zones", "subnet_ids", "security_group_ids"):
        values = getattr(spec, opt)
        if any(not v for v in values):
            raise FleetError(f"{opt} {values} holds an empty entry; remove it")
    twice = sorted({s for s in spec.subnet_ids if spec.subnet_ids.count(s) > 1})
    if twice:
        raise FleetError(f"subnet_ids {spec.subnet_ids} lists {', '.join(twice)} twice; list each subnet once")
    # Subnet ids become DescribeSubnets filter values, where * and ? are wildcards: their form is checked first.
    malformed = [s for s in spec.subnet_ids if not SUBNET_ID.fullmatch(s)]
    if malformed:
        raise FleetError(f"subnet_ids {malformed} are not subnet ids; give ids such as subnet-0123456789abcdef0 "
                         f"(aws ec2 describe-subnets lists them)")
    if spec.vpc_id and not spec.subnet_ids:
        raise FleetError(f"vpc_id {spec.vpc_id!r} needs subnet_ids: instances go into a VPC through its subnets; "
                         f"list the subnets of {spec.vpc_id} to use, or drop vpc_id for the default VPC")
    try:
        check_user_tags(spec.tags)
    except ValueError as err:
        raise FleetError(str(err)) from err
    fleet_tags(spec.name, spec.owner, spec.ttl, spec.tags)  # raises ValueError on a bad ttl
    if spec.kms_key_id and not spec.encrypted:
        raise FleetError(f"kms_key_id {spec.kms_key_id!r} needs encrypted: true; drop kms_key_id or encrypt")
    validate_volume(spec.root_volume, "root_volume")
    explicit = [v["device_name"] for v in spec.data_volumes if v.get("device_name")]
    twice = sorted({d for d in explicit if explicit.count(d) > 1})
    if twice:
        raise FleetError(f"data_volumes device_name {', '.join(twice)} is used twice; give each volume its own device")
    for i, vol in enumerate(spec.data_volumes):
        where = f"data_volumes[{i}]"
        if vol.get("size") is None:
            raise FleetError(f"{where}.size is missing; give the size in GiB, for example size: 100")
        validate_volume(vol, where)
    if len(spec.data_volumes) > len(DATA_DEVICE_LETTERS):
        raise FleetError(f"{len(spec.data_volumes)} data_volumes is more than {len(DATA_DEVICE_LETTERS)}; "
                         f"use fewer, larger volumes")


def data_device_names(volumes: list[dict[str, Any]]) -> list[str]:
    """Each data volume's device: its own device_name, else the next free /dev/sdf, /dev/sdg, ..."""
    taken = {v["device_name"] for v in volumes if v.get("device_name")}
    free = iter(d for d in (f"/dev/sd{c}" for c in DATA_DEVICE_LETTERS) if d not in taken)
    return [v.get("device_name") or next(free) for v in volumes]


# --------------------------------------------------------------------------------------------------------
# Thin AWS calls (reads retry through aws_retry; "not found" decided here)
# --------------------------------------------------------------------------------------------------------

def describe_fleet(ec2, name: str, states: tuple[str, ...] = ALL_STATES,
                   extra_filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every instance of the fleet in `states`: one filtered, paginated DescribeInstances."""
    filters = [*fleet_filter(name), {"Name": "instance-state-name", "Values": list(states)}, *(extra_filters or [])]
    pages = paginate(ec2, "describe_instances", Filters=filters, PaginationConfig={"PageSize": 1000})
    return [inst for page in pages for res in page.get("Reservations", []) for inst in res.get("Instances", [])]


def describe_image(ec2, image_id: str) -> dict[str, Any]:
    try:
        images = ec2.describe_images(ImageIds=[image_id], aws_retry=True).get("Images", [])
    except botocore.exceptions.ClientError as err:
        if not is_not_found(err, "ec2"):
            raise
        images = []
    if not images:
        raise FleetError(f"image_id {image_id!r} was not found in this region; look it up with dlami_info "
                         f"(or DescribeImages) in the same region")
    return images[0]


def root_snapshot_size(image: dict[str, Any]) -> int | None:
    root = image.get("RootDeviceName")
    for bdm in image.get("BlockDeviceMappings", []):
        if bdm.get("DeviceName") == root and "Ebs" in bdm:
            return bdm["Ebs"].get("VolumeSize")
    return None


def validate_zones(ec2, zones: list[str]) -> None:
    if not zones:
        return
    known = {z["ZoneName"] for z in ec2.describe_availability_zones(aws_retry=True).get("AvailabilityZones", [])}
    unknown = [z for z in zones if z not in known]
    if unknown:
        raise FleetError(f"availability_zones {unknown} are not zones of this region; use some of "
                         f"{', '.join(sorted(known))}")


def describe_subnets(ec2, subnet_ids: list[str]) -> list[dict[str, Any]]:
    """The subnets of this region among `subnet_ids`: one DescribeSubnets with a subnet-id filter (a filter
    answers with what exists instead of failing on the first unknown id, so every missing one can be named)."""
    if not subnet_ids:
        return []
    pages = paginate(ec2, "describe_subnets", Filters=[{"Name": "subnet-id", "Values": list(subnet_ids)}])
    return [subnet for page in pages for subnet in page.get("Subnets", [])]


def check_subnets(spec: FleetSpec, subnets: list[dict[str, Any]]) -> tuple[dict[str, str], str | None]:
    """Subnet id -> zone and the subnets' VPC. Raises FleetError for a subnet not in this region, subnets of
    several VPCs, or a VPC other than spec.vpc_id (pure: `subnets` is what DescribeSubnets answered)."""
    if not spec.subnet_ids:
        return {}, None
    found = {s["SubnetId"]: s for s in subnets}
    region = spec.region or "this region"
    missing = [s for s in spec.subnet_ids if s not in found]
    if missing:
        raise FleetError(f"subnet_ids {missing} are not subnets of {region} (DescribeSubnets there does not find "
                         f"them; a subnet of another region or account is not visible); list subnets that exist "
                         f"in this region")
    vpcs = sorted({found[s]["VpcId"] for s in spec.subnet_ids})
    if len(vpcs) > 1:
        by_vpc = "; ".join(f"{v}: {', '.join(s for s in spec.subnet_ids if found[s]['VpcId'] == v)}" for v in vpcs)
        raise FleetError(f"subnet_ids {spec.subnet_ids} are in {len(vpcs)} VPCs ({by_vpc}); the fleet and its "
                         f"security group live in one VPC, so list subnets of one VPC only")
    if spec.vpc_id and vpcs[0] != spec.vpc_id:
        raise FleetError(f"subnet_ids {spec.subnet_ids} are in VPC {vpcs[0]}, not in vpc_id {spec.vpc_id}; list "
                         f"subnets of {spec.vpc_id}, or set vpc_id to {vpcs[0]}")
    return {s: found[s]["AvailabilityZone"] for s in spec.subnet_ids}, vpcs[0]


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def terminate_instances(ec2, ids: list[str]) -> None:
    for batch in _batches(ids, TERMINATE_BATCH):
        consistent_retry(ec2.terminate_instances)(InstanceIds=batch)


def start_instances(ec2, ids: list[str]) -> dict[str, str]:
    """Start; returns each instance's state as the call reports it (pending)."""
    states = {}
    for batch in _batches(ids, TERMINATE_BATCH):
        for change in consistent_retry(ec2.start_instances)(InstanceIds=batch).get("StartingInstances", []):
            states[change["InstanceId"]] = change["CurrentState"]["Name"]
    return states


def stop_instances(ec2, ids: list[str]) -> dict[str, str]:
    """Stop; returns each instance's state as the call reports it (stopping)."""
    states = {}
    for batch in _batches(ids, TERMINATE_BATCH):
        for change in consistent_retry(ec2.stop_instances)(InstanceIds=batch).get("StoppingInstances", []):
            states[change["InstanceId"]] = change["CurrentState"]["Name"]
    return states


def describe_by_ids(ec2, ids: list[str]) -> list[dict[str, Any]]:
    """DescribeInstances for known ids, 1000 a call (eventual consistency retried)."""
    found = []
    for batch in _batches(ids, 1000):
        pages = consistent_retry(ec2.describe_instances)(InstanceIds=batch)
        found += [inst for res in pages.get("Reservations", []) for inst in res.get("Instances", [])]
    return found


def create_tags(ec2, ids: list[str], tags: dict[str, str]) -> None:
    for batch in _batches(ids, TAG_BATCH):
        consistent_retry(ec2.create_tags)(Resources=batch, Tags=tag_list(tags))


def delete_tags(ec2, ids: list[str], keys: list[str]) -> None:
    """Removes the tags `keys` (whatever their values) from `ids`; a key a resource lacks is no error."""
    for batch in _batches(ids, TAG_BATCH):
        consistent_retry(ec2.delete_tags)(Resources=batch, Tags=[{"Key": k} for k in keys])


def wait_for(ec2, waiter_name: str, ids: list[str], timeout: int, batch: int = 1000, deadline: float | None = None,
             **params: Any) -> None:
    """A boto3 waiter over `ids`, in batches, within `timeout` seconds overall (or until `deadline`, a
    time.monotonic() shared by several waits)."""
    deadline = time.monotonic() + timeout if deadline is None else deadline
    for chunk in _batches(sorted(ids), batch):
        remaining = max(1, int(deadline - time.monotonic()))
        waiter = ec2.get_waiter(waiter_name)
        try:
            config = {"Delay": WAITER_DELAY, "MaxAttempts": max(1, remaining // WAITER_DELAY)}
            waiter.wait(InstanceIds=chunk, **params, WaiterConfig=config)
        except botocore.exceptions.WaiterError as err:
            raise FleetError(f"timed out after {timeout}s waiting for {waiter_name.replace('_', ' ')} on "
                             f"{len(ids)} instance(s) ({err}); raise wait_timeout or check the instances' "
                             f"status in EC2") from err


def describe_ssm_ping(ssm, ids: list[str]) -> dict[str, str]:
    """Instance id -> the PingStatus of its Systems Manager agent, for the ids SSM knows (an instance whose agent
    never registered is absent)."""
    status: dict[str, str] = {}
    for chunk in _batches(sorted(ids), SSM_ID_BATCH):
        pages = paginate(ssm, "describe_instance_information", Filters=[{"Key": "InstanceIds", "Values": chunk}])
        status.update({info["InstanceId"]: info.get("PingStatus", "")
                       for page in pages for info in page.get("InstanceInformationList", [])})
    return status


def wait_for_ssm_online(ssm, ids: list[str], timeout: int, deadline: float | None = None) -> list[str]:
    """Poll DescribeInstanceInformation until every instance's SSM agent reports PingStatus Online, within `timeout`
    seconds (or until `deadline`, a time.monotonic() shared by several waits)."""
    if not ids:
        return []
    deadline = time.monotonic() + timeout if deadline is None else deadline
    while True:
        status = describe_ssm_ping(ssm, ids)
        waiting = [i for i in ids if status.get(i) != "Online"]
        if not waiting:
            return sorted(ids)
        if time.monotonic() >= deadline:
            states = ", ".join(f"{i}: {status.get(i) or 'not registered'}" for i in waiting)
            raise FleetError(f"timed out after {timeout}s waiting for the SSM agent of {len(waiting)} instance(s) to "
                             f"report Online ({states}). The instance profile's role needs the managed policy "
                             f"AmazonSSMManagedInstanceCore, and the subnets must reach Systems Manager (a NAT "
                             f"gateway, or VPC endpoints for ssm, ssmmessages and ec2messages); fix that or raise "
                             f"wait_timeout", ssm_ping=status)
        time.sleep(WAITER_DELAY)


# --------------------------------------------------------------------------------------------------------
# Launch: one RunInstances per attempt, ordered fallback, lookup before any retry of an unknown outcome
# --------------------------------------------------------------------------------------------------------

def placements(spec: FleetSpec, zones_of_subnets: dict[str, str]) -> list[dict[str, str]]:
    """The ordered placements to try: subnets, else availability zones, else wherever EC2 chooses."""
    if spec.subnet_ids:
        return [{"subnet_id": s, "availability_zone": zones_of_subnets.get(s, "")} for s in spec.subnet_ids]
    if spec.availability_zones:
        return [{"availability_zone": z} for z in spec.availability_zones]
    return [{}]


def next_generation(instances: list[dict[str, Any]]) -> int:
    """1 + the highest dlfleet:generation among the fleet's instances, terminated ones included."""
    return max([0, *(_generation(i) for i in instances)]) + 1


def client_token(name: str, generation: int, instance_type: str, placement: dict[str, str], count: int) -> str:
    """Deterministic for one launch attempt of one generation; distinct across attempts (<= 64 chars)."""
    key = "|".join([name, str(generation), instance_type, placement.get("subnet_id", ""),
                    placement.get("availability_zone", ""), str(count)])
    return f"dlfleet-g{generation}-{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def block_device_mappings(spec: FleetSpec, image: dict[str, Any]) -> list[dict[str, Any]]:
    """Root volume (grown, retyped, encrypted) plus the data volumes."""
    snapshot_size = root_snapshot_size(image)
    root = spec.root_volume
    if root.get("size") is not None and snapshot_size and root["size"] < snapshot_size:
        raise FleetError(f"root_volume.size {root['size']} GiB is smaller than the snapshot of image "
                         f"{image['ImageId']} ({snapshot_size} GiB); set root_volume.size to {snapshot_size} "
                         f"or more, or leave it out to keep the image's size")
    mappings = [{"DeviceName": image.get("RootDeviceName", "/dev/sda1"),
                 "Ebs": _ebs(root, root.get("size") or snapshot_size, spec, delete_on_termination=True)}]
    for vol, device in zip(spec.data_volumes, data_device_names(spec.data_volumes), strict=True):
        mappings.append({"DeviceName": device,
                         "Ebs": _ebs(vol, vol["size"], spec, vol.get("delete_on_termination", True))})
    return mappings


def _ebs(vol: dict[str, Any], size: int | None, spec: FleetSpec, delete_on_termination: bool) -> dict[str, Any]:
    ebs: dict[str, Any] = {"VolumeType": vol.get("type") or "gp3", "DeleteOnTermination": delete_on_termination,
                           "Encrypted": spec.encrypted}
    if size:
        ebs["VolumeSize"] = size
    if vol.get("iops") is not None:
        ebs["Iops"] = vol["iops"]
    if vol.get("throughput") is not None:
        ebs["Throughput"] = vol["throughput"]
    if spec.encrypted and spec.kms_key_id:
        ebs["KmsKeyId"] = spec.kms_key_id
    return ebs


def launch_request(spec: FleetSpec, image: dict[str, Any], instance_type: str, placement: dict[str, str],
                   count: int, generation: int) -> dict[str, Any]:
    tags = {**spec.desired_tags, TAG_GENERATION: str(generation)}
    req: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": instance_type,
        "MinCount": count,
        "MaxCount": count,
        "ClientToken": client_token(spec.name, generation, instance_type, placement, count),
        "BlockDeviceMappings": block_device_mappings(spec, image),
        "MetadataOptions": {"HttpTokens": spec.http_tokens, "HttpEndpoint": "enabled"},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(tags)},
                              {"ResourceType": "volume", "Tags": tag_list(tags)}],
    }
    if placement.get("availability_zone") and not placement.get("subnet_id"):
        req["Placement"] = {"AvailabilityZone": placement["availability_zone"]}
    if spec.assign_public_ip is not None:
        # A public address asked for (or refused) explicitly is a setting of the primary network interface, which
        # then carries the subnet and the groups too (EC2 refuses them beside NetworkInterfaces).
        nic: dict[str, Any] = {"DeviceIndex": 0, "AssociatePublicIpAddress": spec.assign_public_ip,
                               "DeleteOnTermination": True}
        if placement.get("subnet_id"):
            nic["SubnetId"] = placement["subnet_id"]
        if spec.security_group_ids:
            nic["Groups"] = list(spec.security_group_ids)
        req["NetworkInterfaces"] = [nic]
    else:
        if placement.get("subnet_id"):
            req["SubnetId"] = placement["subnet_id"]
        if spec.security_group_ids:
            req["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.key_name:
        req["KeyName"] = spec.key_name
    if spec.iam_instance_profile:
        key = "Arn" if spec.iam_instance_profile.startswith("arn:") else "Name"
        req["IamInstanceProfile"] = {key: spec.iam_instance_profile}
    if spec.user_data:
        req["UserData"] = spec.user_data
    if spec.market == "spot":
        req["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return req


def _hand_back_launch_failures(response=None, caught_exception=None, **_kwargs) -> None:
    """botocore needs-retry handler for RunInstances: every failure comes back at once, so that a resend is
    decided by run_instances_once (after a lookup by tag), not by botocore."""
    if caught_exception is not None:
        raise caught_exception
    if response is not None:
        http, parsed = response
        if http.status_code >= 300 or "Error" in parsed:
            raise botocore.exceptions.ClientError(parsed, "RunInstances")


def launch_client(ec2):
    """The same EC2 client, with botocore's automatic retries switched off for RunInstances only."""
    ec2.meta.events.register_first("needs-retry.ec2.RunInstances", _hand_back_launch_failures,
                                   unique_id="dlfleet-launch-no-botocore-retry")
    return ec2


def _outcome_unknown(err: BaseException) -> bool:
    if isinstance(err, botocore.exceptions.ClientError):
        if error_code(err) in CAPACITY_CODES:  # AWS sends these with HTTP 500, yet nothing was launched
            return False
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(err) in UNKNOWN_OUTCOME_CODES or status >= 500
    return isinstance(err, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError))


def _sleep_backoff(attempt: int) -> None:
    time.sleep(min(20.0, 0.5 * 2 ** attempt))


def lookup_generation(ec2, name: str, generation: int, token: str) -> list[dict[str, Any]]:
    """Live instances a (possibly executed) launch of this generation and token made."""
    found = describe_fleet(ec2, name, LIVE_STATES, [{"Name": f"tag:{TAG_GENERATION}", "Values": [str(generation)]}])
    return [i for i in found if i.get("ClientToken") in (None, "", token)]


def is_replay(instances: list[dict[str, Any]], known_ids: set[str], began: dt.datetime) -> bool:
    """Whether a RunInstances answer is AWS replaying an earlier launch of the same token rather than a new
    launch: every instance is one the fleet already had, or was launched well before this launch began."""
    if not instances:
        return False
    if all(i["InstanceId"] in known_ids for i in instances):
        return True
    times = [i.get("LaunchTime") for i in instances]
    return all(isinstance(t, dt.datetime) and t.tzinfo and t < began - STALE_REPLAY for t in times)


def run_instances_once(ec2, launch_ec2, name: str, generation: int, request: dict[str, Any],
                       known_ids: set[str]) -> tuple[list[dict[str, Any]], int]:
    """Send one launch request until its outcome is known. Returns (instances, sends).

    Raises the ClientError of a definite refusal (capacity, bad parameter) unchanged.
    """
    token = request["ClientToken"]
    began = dt.datetime.now(dt.UTC)
    last_err: BaseException | None = None
    for attempt in range(LAUNCH_ATTEMPTS):
        try:
            response = launch_ec2.run_instances(**request)
        except botocore.exceptions.ClientError as err:
            if error_code(err) == "IdempotentParameterMismatch":   # the token was spent on another request
                raise StaleTokenError(token) from err
            if error_code(err) in THROTTLE_CODES:
                last_err = err
                _sleep_backoff(attempt)
                continue
            if not _outcome_unknown(err):
                raise
            last_err = err
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as err:
            last_err = err
        else:
            instances = response.get("Instances", [])
            if is_replay(instances, known_ids, began):
                raise StaleTokenError(token)
            return instances, attempt + 1
        # Unknown outcome: did it launch? Look up by tag before sending it again.
        found = lookup_generation(ec2, name, generation, token)
        if len(found) >= request["MinCount"]:
            return found, attempt + 1
        _sleep_backoff(attempt)
    raise FleetError(f"RunInstances for {request['MaxCount']} x {request['InstanceType']} did not get an answer "
                     f"after {LAUNCH_ATTEMPTS} tries (last error: {last_err}); nothing of this generation is "
                     f"visible by tag. Re-run later: the same token and the tag lookup keep it from launching "
                     f"twice", last_error=str(last_err))


class StaleTokenError(DlfleetError):
    """A ClientToken's answer replays an earlier launch: the launch takes a fresh token."""


def launch(ec2, launch_ec2, spec: FleetSpec, image: dict[str, Any], count: int, generation: int,
           zones_of_subnets: dict[str, str], known_ids: set[str]) -> tuple[list[dict[str, Any]], list[dict]]:
    """Launch `count` instances along the type x placement fallback. Returns (instances, attempts)."""
    attempts: list[dict[str, Any]] = []
    for instance_type in spec.instance_types:
        for placement in placements(spec, zones_of_subnets):
            gen = generation
            for _stale in range(3):
                request = launch_request(spec, image, instance_type, placement, count, gen)
                record = {"instance_type": instance_type, **placement, "generation": gen,
                          "client_token": request["ClientToken"]}
                try:
                    instances, sends = run_instances_once(ec2, launch_ec2, spec.name, gen, request, known_ids)
                except StaleTokenError:
                    attempts.append({**record, "outcome": "token already used by an earlier launch"})
                    gen += 1
                    continue
                except botocore.exceptions.ClientError as err:
                    code = error_code(err)
                    message = err.response.get("Error", {}).get("Message", str(err))
                    attempts.append({**record, "outcome": f"{code}: {message}"})
                    if code in CAPACITY_CODES:
                        break
                    raise FleetError(f"EC2 refused to launch {count} x {instance_type}"
                                     f"{_where(placement)}: {code}: {message}. Nothing was launched; fix the "
                                     f"value it names and run again", attempts=attempts) from err
                attempts.append({**record, "outcome": "launched", "sends": sends,
                                 "instance_ids": sorted(i["InstanceId"] for i in instances)})
                return instances, attempts
    tried = "; ".join(f"{a['instance_type']}{_where(a)}: {a['outcome']}" for a in attempts)
    raise FleetError(f"no capacity for {count} x any of {spec.instance_types} in "
                     f"{_placement_names(spec) or 'any zone'} (tried {tried}). Nothing was launched; add "
                     f"instance types, availability_zones or subnet_ids to fall back on, or try again later",
                     attempts=attempts)


def _where(placement: dict[str, str]) -> str:
    if placement.get("subnet_id"):
        return f" in {placement['subnet_id']} ({placement.get('availability_zone') or '?'})"
    if placement.get("availability_zone"):
        return f" in {placement['availability_zone']}"
    return ""


def _placement_names(spec: FleetSpec) -> str:
    return ", ".join(spec.subnet_ids or spec.availability_zones)


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------

def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value or "")


def instance_record(inst: dict[str, Any], type_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gpu = gpu_summary(type_info.get(inst["InstanceType"], {}))
    vols = [{"device_name": bdm.get("DeviceName"),
             "volume_id": bdm.get("Ebs", {}).get("VolumeId"),
             "delete_on_termination": bdm.get("Ebs", {}).get("DeleteOnTermination")}
            for bdm in inst.get("BlockDeviceMappings", [])]
    tags = tag_dict(inst.get("Tags"))
    return {
        "instance_id": inst["InstanceId"],
        "instance_type": inst["InstanceType"],
        "state": inst.get("State", {}).get("Name"),
        "availability_zone": inst.get("Placement", {}).get("AvailabilityZone"),
        "subnet_id": inst.get("SubnetId"),
        "vpc_id": inst.get("VpcId"),
        "image_id": inst.get("ImageId"),
        "key_name": inst.get("KeyName"),
        "private_ip": inst.get("PrivateIpAddress"),
        "public_ip": inst.get("PublicIpAddress"),
        "private_dns_name": inst.get("PrivateDnsName"),
        "public_dns_name": inst.get("PublicDnsName"),
        "launch_time": _iso(inst.get("LaunchTime")),
        "market": "spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand",
        "http_tokens": inst.get("MetadataOptions", {}).get("HttpTokens"),
        "generation": _generation(inst),
        "vcpus": gpu["vcpus"],
        "memory_mib": gpu["memory_mib"],
        "gpu_count": gpu["gpu_count"],
        "gpu_model": gpu["gpu_model"],
        "gpu_manufacturer": gpu["gpu_manufacturer"],
        "gpu_memory_mib": gpu["gpu_memory_mib"],
        "volumes": vols,
        "tags": tags,
    }


def _generation(inst: dict[str, Any]) -> int:
    value = tag_dict(inst.get("Tags")).get(TAG_GENERATION, "0")
    return int(value) if value.isdigit() else 0


def _order(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first by generation, launch time, then id: a stable order for results and for choosing which
    extras go (launch times tie within a second, generations do not)."""
    return sorted(instances, key=lambda i: (_generation(i), _iso(i.get("LaunchTime")), i["InstanceId"]))


def _summary(instances: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(instances),
            "instances": {i["InstanceId"]: {"state": i.get("State", {}).get("Name"),
                                            "instance_type": i.get("InstanceType"),
                                            "availability_zone": i.get("Placement", {}).get("AvailabilityZone")}
                          for i in _order(instances)}}


# --------------------------------------------------------------------------------------------------------
# ensure_present / ensure_absent
# --------------------------------------------------------------------------------------------------------

def resolve_types(ec2, spec: FleetSpec, image: dict[str, Any] | None,
                  existing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """DescribeInstanceTypes once for the requested and the existing types; validate the requested ones."""
    info = describe_instance_types(ec2, [*spec.instance_types, *(i["InstanceType"] for i in existing)])
    unknown = [t for t in spec.instance_types if t not in info]
    if unknown:
        raise FleetError(f"instance_types {unknown} are not offered in this region (DescribeInstanceTypes does "
                         f"not know them); check the spelling, for example g5.xlarge")
    if spec.require_gpu:
        no_gpu = [t for t in spec.instance_types if not gpu_summary(info[t])["gpu_count"]]
        if no_gpu:
            raise FleetError(f"instance_types {no_gpu} have no GPU (no GpuInfo in DescribeInstanceTypes); use a "
                             f"GPU type such as g5.xlarge, or set require_gpu: false")
    if image is not None:
        arch = image.get("Architecture")
        wrong = [t for t in spec.instance_types
                 if arch and arch not in info[t].get("ProcessorInfo", {}).get("SupportedArchitectures", [arch])]
        if wrong:
            raise FleetError(f"image {image['ImageId']} is {arch} but instance_types {wrong} do not run {arch}; "
                             f"pick an image of their architecture (dlami_info architecture) or other types")
    return info


def ensure_present(ec2, launch_ec2, spec: FleetSpec, check_mode: bool, ssm=None) -> tuple[bool, dict[str, Any]]:
    """Reconcile the fleet. `launch_ec2` sends RunInstances without botocore's own retries (see launch_client);
    `ssm` (needed for spec.wait_for_ssm) reads the Systems Manager agents' ping status."""
    validate_spec(spec)
    everything = describe_fleet(ec2, spec.name)
    live = _order([i for i in everything if i["State"]["Name"] in LIVE_STATES])
    need = spec.count - len(live)
    image = describe_image(ec2, spec.image_id) if need > 0 else None
    if image is not None:
        block_device_mappings(spec, image)  # validates the root size against the snapshot
    type_info = resolve_types(ec2, spec, image, live)
    # The subnets are checked on every run, so that a plan names the fleet's VPC (its security group goes there).
    zones_of_subnets, vpc_id = check_subnets(spec, describe_subnets(ec2, spec.subnet_ids))
    if need > 0:
        validate_zones(ec2, spec.availability_zones)

    result: dict[str, Any] = {"launched": [], "terminated": [], "started": [], "stopped": [], "retagged": [],
                              "attempts": [], "vpc_id": vpc_id, "ssm_online": []}
    before = _summary(live)

    # Scale down: the newest go first (deterministic: launch time, then id).
    keep = live[:need] if need < 0 else live
    result["terminated"] = [i["InstanceId"] for i in live[len(keep):]]

    # Tags, on instances and their volumes: dlfleet's and the user's set where missing or different; with
    # purge_tags the user's tags no longer named in tags removed (aws:* and dlfleet:* never).
    changes = {i["InstanceId"]: spec.tag_changes(i) for i in keep}
    stale = [i for i in keep if any(changes[i["InstanceId"]])]
    result["retagged"] = [i["InstanceId"] for i in stale]
    to_set = {k: v for i in stale for k, v in changes[i["InstanceId"]][0].items()}
    to_unset = sorted({k for i in stale for k in changes[i["InstanceId"]][1]})

    # States: start or stop what is not as asked.
    by_state = {s: [i["InstanceId"] for i in keep if i["State"]["Name"] == s] for s in LIVE_STATES}
    if spec.state == "running":
        result["started"] = by_state["stopped"] + by_state["stopping"]
    if spec.state == "stopped":
        result["stopped"] = by_state["running"] + by_state["pending"]

    if check_mode:
        return _predict(spec, image, keep, need, everything, zones_of_subnets, type_info, result, before)

    if result["terminated"]:
        terminate_instances(ec2, result["terminated"])
    if to_set:
        create_tags(ec2, [*result["retagged"], *_volume_ids(stale)], to_set)
    if to_unset:
        delete_tags(ec2, [*result["retagged"], *_volume_ids(stale)], to_unset)
    launched: list[dict[str, Any]] = []
    if need > 0:
        launched, result["attempts"] = launch(ec2, launch_ec2, spec, image, need,
                                              next_generation(everything), zones_of_subnets,
                                              {i["InstanceId"] for i in everything})
        result["launched"] = sorted(i["InstanceId"] for i in launched)
    current = {i["InstanceId"]: i for i in [*keep, *launched]}
    for inst in stale:
        current[inst["InstanceId"]] = _retagged(inst, *changes[inst["InstanceId"]])

    # wait_timeout is the time for every wait of this run together: one deadline.
    deadline = time.monotonic() + spec.wait_timeout
    if result["started"]:
        if by_state["stopping"]:
            wait_for(ec2, "instance_stopped", by_state["stopping"], spec.wait_timeout, deadline=deadline)
        _set_states(current, start_instances(ec2, result["started"]))
    if spec.state == "stopped":
        result["stopped"] += result["launched"]
        if result["stopped"]:
            wait_for(ec2, "instance_running", by_state["pending"] + result["launched"], spec.wait_timeout,
                     deadline=deadline)
            _set_states(current, stop_instances(ec2, result["stopped"]))

    refresh: set[str] = set()
    if spec.wait:
        if spec.state in ("present", "running"):
            coming_up = result["launched"] + result["started"] + by_state["pending"]
            if coming_up:
                # One waiter for both conditions: with IncludeAllInstances an instance is "ok" only once running.
                wait_for(ec2, "instance_status_ok", coming_up, spec.wait_timeout, batch=STATUS_BATCH,
                         deadline=deadline, IncludeAllInstances=True)
                _set_states(current, {i: "running" for i in coming_up})
        elif result["stopped"]:
            wait_for(ec2, "instance_stopped", result["stopped"], spec.wait_timeout, deadline=deadline)
            _set_states(current, {i: "stopped" for i in result["stopped"]})
        if result["terminated"]:
            wait_for(ec2, "instance_terminated", result["terminated"], spec.wait_timeout, deadline=deadline)
        if spec.wait_for_ssm and spec.state in ("present", "running"):
            up = sorted(i for i, inst in current.items() if inst.get("State", {}).get("Name") in ("pending", "running"))
            result["ssm_online"] = wait_for_ssm_online(ssm, up, spec.wait_timeout, deadline=deadline)
        # Re-read only what this run cannot know: addresses that come after launch, and change on start/stop.
        refresh = {*result["started"], *result["stopped"],
                   *(i["InstanceId"] for i in launched if not _has_addresses(i))}
    if refresh:
        for inst in describe_by_ids(ec2, sorted(refresh)):
            current[inst["InstanceId"]] = inst

    final = _order(list(current.values()))
    records = [instance_record(i, type_info) for i in final]
    changed = bool(result["terminated"] or result["retagged"] or result["launched"] or result["started"]
                   or result["stopped"])
    result.update({"instances": records, "instance_ids": [r["instance_id"] for r in records], "count": len(records),
                   "diff": {"before": before, "after": _summary(final)}})
    return changed, result


def _predict(spec: FleetSpec, image: dict[str, Any] | None, keep: list[dict[str, Any]], need: int,
             everything: list[dict[str, Any]], zones_of_subnets: dict[str, str],
             type_info: dict[str, dict[str, Any]], result: dict[str, Any],
             before: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Check mode: what a real run would do, from reads only."""
    predicted: list[dict[str, Any]] = []
    if need > 0 and image is not None:
        first = placements(spec, zones_of_subnets)[0]
        launch_request(spec, image, spec.instance_types[0], first, need, next_generation(everything))
        predicted = [{"InstanceId": f"(new {n + 1} of {need})", "InstanceType": spec.instance_types[0],
                      "State": {"Name": "pending"}, "Placement": {"AvailabilityZone": first.get(
                          "availability_zone", "")}} for n in range(need)]
    after = [*keep, *predicted]
    if spec.state == "running":
        after = [{**i, "State": {"Name": "running"}} for i in after]
    if spec.state == "stopped":
        after = [{**i, "State": {"Name": "stopped"}} for i in after]
        if predicted:
            result["stopped"] = [*result["stopped"], *(i["InstanceId"] for i in predicted)]
    records = [instance_record(i, type_info) for i in keep]
    result.update({"instances": records, "instance_ids": [r["instance_id"] for r in records], "count": len(records),
                   "predicted_launches": len(predicted), "diff": {"before": before, "after": _summary(after)}})
    changed = bool(predicted or result["terminated"] or result["retagged"] or result["started"] or result["stopped"])
    return changed, result


def _retagged(inst: dict[str, Any], to_set: dict[str, str], to_unset: list[str]) -> dict[str, Any]:
    tags = {k: v for k, v in {**tag_dict(inst.get("Tags")), **to_set}.items() if k not in to_unset}
    return {**inst, "Tags": tag_list(tags)}


def _volume_ids(instances: list[dict[str, Any]]) -> list[str]:
    return [bdm["Ebs"]["VolumeId"] for i in instances for bdm in i.get("BlockDeviceMappings", [])
            if bdm.get("Ebs", {}).get("VolumeId")]


def _has_addresses(inst: dict[str, Any]) -> bool:
    return bool(inst.get("PrivateIpAddress") and inst.get("PublicIpAddress"))


def _set_states(current: dict[str, dict[str, Any]], states: dict[str, str]) -> None:
    for iid, state in states.items():
        if iid in current:
            current[iid] = {**current[iid], "State": {"Name": state}}


def ensure_absent(ec2, spec: FleetSpec, check_mode: bool) -> tuple[bool, dict[str, Any]]:
    validate_spec(spec)
    live = _order(describe_fleet(ec2, spec.name, LIVE_STATES))
    ids = [i["InstanceId"] for i in live]
    result: dict[str, Any] = {"launched": [], "terminated": ids, "started": [], "stopped": [], "retagged": [],
                              "attempts": [], "instances": [], "instance_ids": [], "count": 0, "vpc_id": None,
                              "ssm_online": [],
                              "diff": {"before": _summary(live), "after": _summary([])}}
    if ids and not check_mode:
        terminate_instances(ec2, ids)
        if spec.wait:
            wait_for(ec2, "instance_terminated", ids, spec.wait_timeout)
    return bool(ids), result
