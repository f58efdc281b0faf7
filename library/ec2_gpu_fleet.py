#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ec2_gpu_fleet
short_description: Keep exactly C(count) EC2 GPU instances of a named fleet
description:
  - Makes sure that exactly O(count) instances tagged C(dlfleet:fleet=<name>) exist, in the state asked for.
  - Missing instances are launched in one C(RunInstances) call (C(MinCount) = C(MaxCount)) with a
    C(ClientToken) derived from the fleet, its generation and the attempt, and with tags on create for the
    instances and their volumes.
  - On C(InsufficientInstanceCapacity) or C(Unsupported) the launch falls back along O(instance_types), and
    for each type along O(subnet_ids) or O(availability_zones), in the order given. A batch never mixes types.
  - After a failure whose outcome is unknown (5xx, timeout, dropped connection) the fleet is looked up by tag
    before the same request is sent again, so a retried call or a re-run never launches twice.
  - Extra instances are terminated newest first (launch generation, launch time, then instance id).
  - The fleet is read with one filtered, paginated C(DescribeInstances), never one call per instance.
  - Existing instances are not replaced when launch options change; only count, state and tags are reconciled.
  - The user's O(tags) go on the instances and their volumes, beside C(dlfleet:fleet), C(dlfleet:owner) and
    C(dlfleet:ttl).
version_added: "1.0.0"
author:
  - dlfleet maintainers (@dlfleet)
options:
  name:
    description: Fleet name; the value of the C(dlfleet:fleet) tag on every instance and volume.
    type: str
    required: true
  count:
    description:
      - How many instances the fleet must have. Required unless O(state=absent).
      - C(0) terminates every instance of the fleet.
    type: int
  state:
    description:
      - V(present) keeps O(count) instances and leaves the state of existing ones alone.
      - V(running) also starts stopped ones; V(stopped) also stops running ones.
      - V(absent) terminates every instance of the fleet.
    type: str
    choices: [present, running, stopped, absent]
    default: present
  instance_types:
    description:
      - Instance types to launch, tried in order; the next one is used when EC2 reports no capacity for the
        previous one (C(InsufficientInstanceCapacity), C(Unsupported)). Required unless O(state=absent).
    type: list
    elements: str
  availability_zones:
    description:
      - Availability zones to try, in order, for each instance type (in the default VPC).
      - Give either this or O(subnet_ids), not both; a subnet already fixes its zone.
    type: list
    elements: str
    default: []
  subnet_ids:
    description:
      - Subnets to try, in order, for each instance type; the whole fleet goes into the first one with capacity.
      - They must exist in the fleet's region and lie in one VPC (and in O(vpc_id) when given). This is checked
        before anything is launched, in check mode too.
    type: list
    elements: str
    default: []
  vpc_id:
    description:
      - The VPC that every subnet of O(subnet_ids) must be in. Needs O(subnet_ids).
      - Omitted, the subnets may be of any one VPC; RV(vpc_id) returns it.
    type: str
  assign_public_ip:
    description:
      - Whether new instances get a public IPv4 address (C(AssociatePublicIpAddress) of the primary network
        interface, as amazon.aws.ec2_instance sets it).
      - Omitted, the subnet decides (its C(MapPublicIpOnLaunch); default subnets give one).
      - V(false) for a private fleet reached through Systems Manager, a VPN or a bastion.
    type: bool
  image_id:
    description: AMI to launch, for example the id returned by C(dlami_info). Required unless O(state=absent).
    type: str
  key_name:
    description: EC2 key pair name for SSH.
    type: str
  security_group_ids:
    description: Security group ids for the instances.
    type: list
    elements: str
    default: []
  root_volume:
    description:
      - The root volume. Its size must be at least the image's root snapshot size (read from C(DescribeImages)).
    type: dict
    default: {}
    suboptions:
      size:
        description: Size in GiB; omitted, the image's snapshot size.
        type: int
      type:
        description: EBS volume type; V(io1) or V(io2) are Provisioned IOPS.
        type: str
        choices: [gp3, gp2, io1, io2, st1, sc1, standard]
        default: gp3
      iops:
        description: Provisioned IOPS; only for V(io1), V(io2) (required there) and V(gp3).
        type: int
      throughput:
        description: Throughput in MiB/s; only for V(gp3).
        type: int
  data_volumes:
    description: Extra EBS volumes for every instance.
    type: list
    elements: dict
    default: []
    suboptions:
      device_name:
        description: Device name; by default V(/dev/sdf), V(/dev/sdg), ... in list order.
        type: str
      size:
        description: Size in GiB.
        type: int
        required: true
      type:
        description: EBS volume type.
        type: str
        choices: [gp3, gp2, io1, io2, st1, sc1, standard]
        default: gp3
      iops:
        description: Provisioned IOPS; only for V(io1), V(io2) (required there) and V(gp3).
        type: int
      throughput:
        description: Throughput in MiB/s; only for V(gp3).
        type: int
      delete_on_termination:
        description: Delete the volume with its instance.
        type: bool
        default: true
  encrypted:
    description: Encrypt every EBS volume.
    type: bool
    default: true
  kms_key_id:
    description: KMS key for the volumes; omitted, the account's default EBS key. Needs O(encrypted=true).
    type: str
  market:
    description: Purchase option. V(spot) launches one-time spot instances that terminate on interruption.
    type: str
    choices: [on-demand, spot]
    default: on-demand
  http_tokens:
    description: Instance metadata service tokens; V(required) means IMDSv2 only.
    type: str
    choices: [required, optional]
    default: required
  iam_instance_profile:
    description:
      - Instance profile name or ARN. With O(wait_for_ssm=true) its role needs AmazonSSMManagedInstanceCore.
    type: str
  user_data:
    description: User data (cloud-init) for new instances. Never logged (it often holds tokens).
    type: str
  owner:
    description: Value of the C(dlfleet:owner) tag.
    type: str
    default: dlfleet
  ttl:
    description:
      - Value of the C(dlfleet:ttl) tag, a duration such as V(30m), V(8h) or V(2d).
      - The reaper removes the fleet once it is older than this.
    type: str
    default: 8h
  require_gpu:
    description: Refuse an instance type whose C(DescribeInstanceTypes) record has no C(GpuInfo).
    type: bool
    default: true
  wait:
    description:
      - Wait until new or started instances are running with status checks OK.
      - Stopped or terminated instances are waited for until they reach that state.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait in all.
    type: int
    default: 600
  wait_for_ssm:
    description:
      - With O(wait=true), also wait until the Systems Manager agent of every running instance reports
        C(PingStatus=Online) (C(DescribeInstanceInformation)), so that the C(amazon.aws.aws_ssm) connection can
        reach it. For fleets without inbound SSH.
    type: bool
    default: false
notes:
  - Check mode predicts launches, terminations, starts, stops and tag changes without a mutating call.
  - The module does not replace instances whose type, image or volumes differ from the options.
attributes:
  check_mode:
    support: full
    details: Plans the launches, terminations and tag changes, and calls no mutating API.
  diff_mode:
    support: full
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_tags.tags
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Launch two GPU instances, falling back from g5 to g4dn and across zones
  ec2_gpu_fleet:
    name: cifar
    count: 2
    instance_types: [g5.xlarge, g4dn.xlarge, p3.2xlarge]
    availability_zones: [us-east-1a, us-east-1b]
    image_id: "{{ dlami.image_id }}"
    key_name: dlfleet-cifar
    security_group_ids: ["{{ sg.group_id }}"]
    root_volume: {size: 40, type: gp3}
    owner: ops
    ttl: 8h
  register: fleet

- name: Give a p3.8xlarge fleet a Provisioned IOPS root and a data volume
  ec2_gpu_fleet:
    name: big
    count: 1
    instance_types: [p3.8xlarge]
    image_id: ami-0123456789abcdef0
    root_volume: {size: 100, type: io2, iops: 5000}
    data_volumes:
      - {size: 500, type: gp3, iops: 6000, throughput: 500}

- name: Stop the fleet overnight
  ec2_gpu_fleet:
    name: cifar
    count: 2
    state: stopped
    instance_types: [g5.xlarge]
    image_id: "{{ dlami.image_id }}"

- name: Launch a private fleet in two subnets, reached through Systems Manager
  ec2_gpu_fleet:
    name: private
    count: 2
    instance_types: [g5.xlarge]
    subnet_ids: [subnet-0123456789abcdef0, subnet-0fedcba9876543210]
    vpc_id: vpc-0123456789abcdef0
    assign_public_ip: false
    iam_instance_profile: dlfleet-instance-ssm
    wait_for_ssm: true
    image_id: "{{ dlami.image_id }}"

- name: Terminate the whole fleet
  ec2_gpu_fleet:
    name: cifar
    state: absent
"""

RETURN = r"""
instances:
  description: The fleet's instances after the change (in check mode, the existing ones), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id: {description: Instance id., type: str, sample: i-0123456789abcdef0}
    instance_type: {description: Instance type., type: str, sample: g5.xlarge}
    state: {description: Instance state., type: str, sample: running}
    availability_zone: {description: Availability zone., type: str, sample: us-east-1a}
    subnet_id: {description: Subnet id., type: str}
    vpc_id: {description: VPC id., type: str}
    image_id: {description: AMI id., type: str}
    key_name: {description: Key pair name., type: str}
    private_ip: {description: Private IPv4 address., type: str}
    public_ip: {description: "Public IPv4 address, if any.", type: str}
    private_dns_name: {description: Private DNS name., type: str}
    public_dns_name: {description: "Public DNS name, if any.", type: str}
    launch_time: {description: Launch time (ISO 8601)., type: str}
    market: {description: V(on-demand) or V(spot)., type: str}
    http_tokens: {description: IMDS token setting; V(required) is IMDSv2 only., type: str}
    generation: {description: Launch generation (the C(dlfleet:generation) tag)., type: int}
    vcpus: {description: Default vCPUs of the type., type: int}
    memory_mib: {description: Memory of the type in MiB., type: int}
    gpu_count: {description: GPUs of the type., type: int, sample: 1}
    gpu_model: {description: GPU model., type: str, sample: A10G}
    gpu_manufacturer: {description: GPU manufacturer., type: str, sample: NVIDIA}
    gpu_memory_mib: {description: "GPU memory in MiB, all GPUs together.", type: int, sample: 22888}
    volumes:
      description: Attached EBS volumes, each with C(device_name), C(volume_id) and C(delete_on_termination).
      type: list
      elements: dict
    tags: {description: Instance tags., type: dict}
instance_ids:
  description: Ids of the instances in RV(instances).
  returned: always
  type: list
  elements: str
count:
  description: Number of instances in RV(instances).
  returned: always
  type: int
launched:
  description: Ids of instances launched by this run.
  returned: always
  type: list
  elements: str
terminated:
  description: Ids of instances terminated (in check mode, that would be) by this run.
  returned: always
  type: list
  elements: str
started:
  description: Ids of instances started (or that would be).
  returned: always
  type: list
  elements: str
stopped:
  description: Ids of instances stopped (or that would be).
  returned: always
  type: list
  elements: str
retagged:
  description: Ids of instances whose dlfleet or extra tags were updated (or would be).
  returned: always
  type: list
  elements: str
attempts:
  description: Launch attempts in order, each with type, placement, client token and outcome.
  returned: always
  type: list
  elements: dict
vpc_id:
  description: The VPC of O(subnet_ids); null when no subnet is given (the default VPC).
  returned: always
  type: str
  sample: vpc-0123456789abcdef0
ssm_online:
  description: Ids of the instances whose SSM agent reported Online (O(wait_for_ssm=true)); empty otherwise.
  returned: always
  type: list
  elements: str
predicted_launches:
  description: How many instances a real run would launch.
  returned: in check mode
  type: int
"""

import contextlib

from ansible.module_utils.dlfleet_aws import client, fail_on_unknown_region
from ansible.module_utils.dlfleet_fleet import (
    VOLUME_TYPES,
    FleetError,
    FleetSpec,
    ensure_absent,
    ensure_present,
    launch_client,
)
from ansible.module_utils.dlfleet_tags import TAGS_SPEC
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore.exceptions

VOLUME_OPTIONS = dict(
    size=dict(type="int"),
    type=dict(type="str", choices=list(VOLUME_TYPES), default="gp3"),
    iops=dict(type="int"),
    throughput=dict(type="int"),
)

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    count=dict(type="int"),
    state=dict(type="str", choices=["present", "running", "stopped", "absent"], default="present"),
    instance_types=dict(type="list", elements="str"),
    availability_zones=dict(type="list", elements="str", default=[]),
    subnet_ids=dict(type="list", elements="str", default=[]),
    image_id=dict(type="str"),
    key_name=dict(type="str", no_log=False),
    security_group_ids=dict(type="list", elements="str", default=[]),
    root_volume=dict(type="dict", default={}, options=VOLUME_OPTIONS),
    data_volumes=dict(type="list", elements="dict", default=[], options=dict(
        device_name=dict(type="str"),
        size=dict(type="int", required=True),
        type=dict(type="str", choices=list(VOLUME_TYPES), default="gp3"),
        iops=dict(type="int"),
        throughput=dict(type="int"),
        delete_on_termination=dict(type="bool", default=True),
    )),
    encrypted=dict(type="bool", default=True),
    kms_key_id=dict(type="str", no_log=False),
    market=dict(type="str", choices=["on-demand", "spot"], default="on-demand"),
    http_tokens=dict(type="str", choices=["required", "optional"], default="required"),
    iam_instance_profile=dict(type="str"),
    vpc_id=dict(type="str"),
    assign_public_ip=dict(type="bool"),
    wait_for_ssm=dict(type="bool", default=False),
    user_data=dict(type="str", no_log=True),   # often holds tokens
    **{name: dict(option) for name, option in TAGS_SPEC.items()},   # tags, purge_tags
    owner=dict(type="str", default="dlfleet"),
    ttl=dict(type="str", default="8h"),
    require_gpu=dict(type="bool", default=True),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=600),
)


def build_spec(params: dict) -> FleetSpec:
    fields = {k: params[k] for k in FleetSpec.__dataclass_fields__ if k in params and params[k] is not None}
    tags = params.get("tags")
    fields["tags"] = None if tags is None else {str(k): "" if v is None else str(v) for k, v in tags.items()}
    return FleetSpec(**fields)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[
            ("state", "present", ["count", "instance_types", "image_id"]),
            ("state", "running", ["count", "instance_types", "image_id"]),
            ("state", "stopped", ["count", "instance_types", "image_id"]),
        ],
    )
    spec = build_spec({**module.params, "region": module.region})
    fail_on_unknown_region(module)
    ec2 = client(module, "ec2")
    try:
        if spec.state == "absent":
            changed, result = ensure_absent(ec2, spec, module.check_mode)
        else:
            ssm = client(module, "ssm") if spec.wait_for_ssm else None
            changed, result = ensure_present(ec2, launch_client(ec2), spec, module.check_mode, ssm)
    except FleetError as err:
        module.fail_json(**err.fail_json_kwargs())
    except ValueError as err:  # a bad ttl, from the shared tag helpers
        module.fail_json(msg=str(err))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        module.fail_json_aws(err, msg=f"EC2 call for fleet {spec.name!r} failed")
    diff = result.pop("diff")
    if module._diff:
        module.exit_json(changed=changed, diff=diff, **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
