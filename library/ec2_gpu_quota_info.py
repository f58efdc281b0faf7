#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ec2_gpu_quota_info
short_description: Check EC2 vCPU quotas before launching a GPU fleet
description:
  - Takes a planned fleet (instance types and counts, on-demand or spot) and, for each EC2 vCPU quota the fleet
    counts against, returns the quota's value, the vCPUs in use, the vCPUs the fleet needs and the headroom left.
  - "Quotas by family: On-Demand P C(L-417A185B), On-Demand G and VT C(L-DB2E81BA), Spot P C(L-7212CCBC)
    (P5: C(L-C4BD4855)), Spot G and VT C(L-3819A6DF), Standard C(L-1216C47A) / C(L-34B43A08), and the F, Inf,
    Trn, DL, X, High Memory and HPC quotas."
  - The value is the account's applied quota (C(GetServiceQuota)), or the AWS default
    (C(GetAWSDefaultServiceQuota)) when the account has none.
  - Usage is the sum of the default vCPUs of the region's running and pending instances, read with one filtered,
    paginated C(DescribeInstances); spot instances count against the spot quotas.
  - With O(fail_on_shortfall=true) the module fails when the fleet does not fit, saying which increase to request.
  - Read-only; check mode runs the same reads.
version_added: "1.0.0"
author:
  - dlfleet maintainers (@dlfleet)
options:
  fleet:
    description: The planned instances. A type may appear more than once; its counts add up.
    type: list
    elements: dict
    required: true
    suboptions:
      instance_type:
        description: Instance type, for example V(p3.2xlarge).
        type: str
        required: true
      count:
        description: How many instances of the type the fleet adds (0 or more).
        type: int
        required: true
      market:
        description: V(on-demand) or V(spot) for this entry; defaults to O(market).
        type: str
        choices: [on-demand, spot]
  market:
    description: Purchase option of every entry of O(fleet) that does not name its own.
    type: str
    choices: [on-demand, spot]
    default: on-demand
  fail_on_shortfall:
    description:
      - Fail when any quota would be exceeded, with the increase to request in the message.
      - With O(fallback_types), fail only when no type of the list fits.
    type: bool
    default: false
  fallback_types:
    description:
      - Instance types the fleet may take instead of the type of its single O(fleet) entry, in order of preference
        (the order in which ec2_gpu_fleet falls back). Each is checked with the same count; the result names the
        first that fits (RV(fitting_type)) and the shortfall of each that does not.
      - Needs exactly one entry in O(fleet).
    type: list
    elements: str
    default: []
notes:
  - Needs C(servicequotas:GetServiceQuota), C(servicequotas:GetAWSDefaultServiceQuota),
    C(ec2:DescribeInstances) and C(ec2:DescribeInstanceTypes).
  - Spot usage is counted from running spot instances; open spot requests that have not launched are not counted.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_aws_read
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Check that two p3.2xlarge fit the On-Demand P quota, and stop here if they do not
  ec2_gpu_quota_info:
    region: us-east-1
    fleet:
      - instance_type: p3.2xlarge
        count: 2
    fail_on_shortfall: true

- name: Report the headroom of a mixed plan, spot for the G instances
  ec2_gpu_quota_info:
    fleet:
      - {instance_type: g5.xlarge, count: 4, market: spot}
      - {instance_type: p3.8xlarge, count: 1}
  register: quota

- name: Show the headroom of each quota
  ansible.builtin.debug:
    msg: "{{ quota.quotas | map(attribute='headroom') | list }}"
"""

RETURN = r"""
fits:
  description: True when the fleet fits every quota (with O(fallback_types), in at least one of the types).
  returned: always
  type: bool
  sample: true
fitting_type:
  description:
    - With O(fallback_types), the first type in order of preference whose quota holds the fleet.
    - Empty when none does.
  returned: when O(fallback_types) is given
  type: str
  sample: p3.2xlarge
fitting_types:
  description: With O(fallback_types), every type that fits, in order of preference.
  returned: when O(fallback_types) is given
  type: list
  elements: str
by_type:
  description: With O(fallback_types), the whole result (fits, shortfalls, quotas) for each type, by type.
  returned: when O(fallback_types) is given
  type: dict
shortfalls:
  description: One message per quota the fleet would exceed, naming the increase to request.
  returned: always
  type: list
  elements: str
needed_vcpus:
  description: vCPUs the planned fleet adds, all quotas together.
  returned: always
  type: int
  sample: 16
usage_by_quota:
  description: vCPUs in use per quota code, for every quota with running or pending instances.
  returned: always
  type: dict
  sample: {L-DB2E81BA: 8}
quotas:
  description: One entry per quota the planned fleet counts against, ordered by quota code.
  returned: always
  type: list
  elements: dict
  contains:
    quota_code: {description: Service Quotas code., type: str, sample: L-417A185B}
    quota_name: {description: Quota name., type: str, sample: Running On-Demand P instances}
    market: {description: V(on-demand) or V(spot)., type: str, sample: on-demand}
    limit: {description: The quota value in vCPUs., type: float, sample: 32.0}
    limit_source:
      description: V(account) (the applied value) or V(aws-default) (the account has none).
      type: str
      sample: account
    usage: {description: vCPUs of running and pending instances counted against the quota., type: int, sample: 8}
    needed: {description: vCPUs the planned fleet adds., type: int, sample: 16}
    available: {description: limit - usage., type: float, sample: 24.0}
    headroom: {description: limit - usage - needed; negative is the shortfall., type: float, sample: 8.0}
    fits: {description: True when headroom is 0 or more., type: bool, sample: true}
    required_limit: {description: "usage + needed, the least value the quota must have.", type: int, sample: 24}
    instances: {description: Planned instance type -> count., type: dict, sample: {p3.2xlarge: 2}}
    vcpus_per_instance: {description: Planned instance type -> default vCPUs., type: dict, sample: {p3.2xlarge: 8}}
"""

import contextlib

from ansible.module_utils.dlfleet_aws import client, fail_on_unknown_region
from ansible.module_utils.dlfleet_quota import MARKETS, QuotaError, check, check_alternatives
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore.exceptions

ARGUMENT_SPEC = dict(
    fleet=dict(type="list", elements="dict", required=True, options=dict(
        instance_type=dict(type="str", required=True),
        count=dict(type="int", required=True),
        market=dict(type="str", choices=list(MARKETS)),
    )),
    market=dict(type="str", choices=list(MARKETS), default="on-demand"),
    fail_on_shortfall=dict(type="bool", default=False),
    fallback_types=dict(type="list", elements="str", default=[]),
)


def main() -> None:
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    fail_on_unknown_region(module)
    ec2 = client(module, "ec2")
    sq = client(module, "service-quotas")
    region = module.region or "us-east-1"
    if module.params["fallback_types"] and len(module.params["fleet"]) != 1:
        module.fail_json(msg=f"fallback_types needs exactly one fleet entry (the first choice and its count); "
                             f"fleet has {len(module.params['fleet'])}")
    try:
        if module.params["fallback_types"]:
            result = check_alternatives(ec2, sq, module.params["fleet"][0], module.params["fallback_types"],
                                        module.params["market"], region)
        else:
            result = check(ec2, sq, module.params["fleet"], module.params["market"], region)
    except QuotaError as err:
        module.fail_json(**err.fail_json_kwargs())
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        module.fail_json_aws(err, msg="reading EC2 vCPU quotas or usage failed (needs servicequotas:GetServiceQuota, "
                                      "servicequotas:GetAWSDefaultServiceQuota, ec2:DescribeInstances, "
                                      "ec2:DescribeInstanceTypes)")
    if module.params["fail_on_shortfall"] and not result["fits"]:
        head = "no instance type of the list fits the vCPU quotas: " if module.params["fallback_types"] else ""
        module.fail_json(msg=head + "; ".join(result["shortfalls"]), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
