# Systems Manager's view of a private fleet, which moto 5.2.5 lacks, added to the emulator so that
# ec2_gpu_fleet's wait_for_ssm runs against it as against AWS. Not used by the modules themselves: the emulator
# process (server.py) calls install() before it serves (see scripts/emulator/README.md, "Extensions").
#
# What this adds:
# - The AWS managed policy AmazonSSMManagedInstanceCore, which every account has (moto loads AWS's managed
#   policies only with MOTO_IAM_LOAD_MANAGED_POLICIES, and then all ~1,300 of them): a role can attach it.
# - DescribeInstanceInformation. On AWS an instance shows up there once its SSM agent has registered, which
#   needs an instance profile whose role allows it (AmazonSSMManagedInstanceCore) and a route to Systems
#   Manager. Here a running instance whose profile's role has that policy attached answers PingStatus Online,
#   and an instance without such a profile is not listed at all, as on AWS. Routes are not modelled.
# - RunInstances with an instance profile: moto 5.2.5 associates it with the first instance of the reservation
#   only; AWS gives it to every instance launched. Here every instance gets it.
# What it does not: Session Manager itself (StartSession and its websocket), so the aws_ssm connection plugin
# cannot run commands on an emulated instance.
from __future__ import annotations

import json
import time
from typing import Any

SSM_POLICY = "AmazonSSMManagedInstanceCore"
AGENT_VERSION = "3.3.1142.0"   # what the record reports as the agent's version

_installed = False


def _profile_allows_ssm(profile: Any) -> bool:
    return any(policy.name == SSM_POLICY and policy.arn.endswith(f":iam::aws:policy/{SSM_POLICY}")
               for role in getattr(profile, "roles", []) for policy in role.managed_policies.values())


def _matches(info: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    keys = {"InstanceIds": "InstanceId", "PingStatus": "PingStatus", "PlatformTypes": "PlatformType",
            "ResourceType": "ResourceType"}
    for flt in filters:
        field = keys.get(flt.get("Key") or flt.get("key") or "")
        values = flt.get("Values") or flt.get("valueSet") or []
        if field and values and info.get(field) not in values:
            return False
    return True


def instance_information(account_id: str, region: str) -> list[dict[str, Any]]:
    """The SSM records of the region's running instances whose instance profile allows SSM."""
    from moto.ec2.models import ec2_backends

    ec2 = ec2_backends[account_id][region]
    records = []
    for instance in ec2.all_instances():
        association = ec2.iam_instance_profile_associations.get(instance.id)
        if instance.state != "running" or association is None:
            continue
        if not _profile_allows_ssm(association.iam_instance_profile):
            continue
        records.append({
            "InstanceId": instance.id,
            "PingStatus": "Online",
            "LastPingDateTime": time.time(),
            "AgentVersion": AGENT_VERSION,
            "IsLatestVersion": True,
            "PlatformType": "Linux",
            "PlatformName": "Ubuntu",
            "PlatformVersion": "22.04",
            "ResourceType": "EC2Instance",
            "IPAddress": instance.private_ip,
            "ComputerName": instance.private_dns_name,
            "AssociationStatus": "Success",
        })
    return sorted(records, key=lambda r: r["InstanceId"])


def install() -> None:
    """Patch moto's IAM backend and SSM responses in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.ec2.models.instances import InstanceBackend
    from moto.iam.aws_managed_policies import aws_managed_policies_data
    from moto.iam.models import AWSManagedPolicy, IAMBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

    ssm_policy_data = json.loads(aws_managed_policies_data)[SSM_POLICY]
    init_aws_policies = IAMBackend._init_aws_policies

    def init_with_ssm_policy(self: Any) -> list[Any]:
        policies = init_aws_policies(self)
        if not any(p.name == SSM_POLICY for p in policies):
            policies.append(AWSManagedPolicy.from_data(SSM_POLICY, self.account_id, self.region_name, ssm_policy_data))
        return policies

    def describe_instance_information(self: Any) -> str:
        filters = [*(self._get_param("Filters") or []), *(self._get_param("InstanceInformationFilterList") or [])]
        records = [r for r in instance_information(self.current_account, self.region) if _matches(r, filters)]
        size = int(self._get_param("MaxResults") or 50)
        start = int(self._get_param("NextToken") or 0)
        page = {"InstanceInformationList": records[start:start + size]}
        if start + size < len(records):
            page["NextToken"] = str(start + size)
        return json.dumps(page)

    run_instances = InstanceBackend.run_instances

    def run_instances_with_profile_on_each(self: Any, *args: Any, **kwargs: Any) -> Any:
        reservation = run_instances(self, *args, **kwargs)
        name, arn = kwargs.get("iam_instance_profile_name"), kwargs.get("iam_instance_profile_arn")
        if name or arn:
            for instance in reservation.instances[1:]:   # the response associates the first one itself
                self.associate_iam_instance_profile(instance_id=instance.id, iam_instance_profile_name=name,
                                                    iam_instance_profile_arn=arn)
        return reservation

    InstanceBackend.run_instances = run_instances_with_profile_on_each
    IAMBackend._init_aws_policies = init_with_ssm_policy
    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
    _installed = True
