#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
DOCUMENTATION = r"""
---
module: aws_price_info
short_description: Read On-Demand and spot prices of EC2 instances, EBS volumes and SageMaker instances
description:
  - Reads On-Demand prices from the AWS Price List API (C(GetProducts) with C(TERM_MATCH) filters) for EC2 instance
    types (Linux, shared tenancy, no pre-installed software, capacity status Used), EBS volume types (GB-month, and
    IOPS-month where the volume has billed IOPS) and SageMaker training and hosting instance types (C(ml.*)).
  - With O(market=spot), also the current spot price of each EC2 type from C(DescribeSpotPriceHistory)
    (the highest across the region's availability zones).
  - Every price names its source (V(AWS Price List API), V(EC2 spot price history) or V(dated table <date>)) and
    its date (the price list's publication date, the spot record's date, or the table's date).
  - When the Price List API is unreachable or denied, or has no price for an item, the price comes from the dated
    table kept in the module's code, and RV(fallback_reason) and each price's C(note) say so.
  - Read-only; check mode runs the same reads.
version_added: "1.0.0"
author:
  - dlfleet maintainers (@dlfleet)
options:
  ec2_instance_types:
    description: EC2 instance types to price, for example V(g5.xlarge).
    type: list
    elements: str
    default: []
  market:
    description: V(spot) also reads the spot price history of O(ec2_instance_types).
    type: str
    choices: [on-demand, spot]
    default: on-demand
  ebs_volumes:
    description: EBS volumes to price, as the fleet's instances carry them (each one volume of one instance).
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: Volume type.
        type: str
        required: true
        choices: [gp3, gp2, io1, io2, st1, sc1, standard]
      size:
        description: Size in GiB.
        type: int
        default: 0
      iops:
        description: Provisioned IOPS (gp3 bills those above 3000; io1 and io2 bill all).
        type: int
        default: 0
  sagemaker_training_instance_types:
    description: SageMaker training instance types, for example V(ml.p3.2xlarge).
    type: list
    elements: str
    default: []
  sagemaker_hosting_instance_types:
    description: SageMaker hosting (endpoint) instance types, for example V(ml.m5.xlarge).
    type: list
    elements: str
    default: []
  pricing_region:
    description:
      - Region of the Price List API endpoint (it has endpoints in us-east-1, eu-central-1 and ap-south-1; each
        answers for every region). The prices are those of O(region).
    type: str
    choices: [us-east-1, eu-central-1, ap-south-1]
    default: us-east-1
  pricing_endpoint_url:
    description: Endpoint of the Price List API; defaults to O(endpoint_url).
    type: str
  use_api:
    description: V(false) skips the Price List API and prices everything from the dated table.
    type: bool
    default: true
notes:
  - Needs C(pricing:GetProducts), and C(ec2:DescribeSpotPriceHistory) with O(market=spot).
  - EBS gp3 throughput above 125 MiB/s and io2 IOPS above 32000 (cheaper tiers) are priced at the first tier.
  - A month is 730 hours, as AWS prorates GB-month and IOPS-month prices.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_aws_read
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Price a fleet of g5.xlarge with a 40 GiB gp3 root volume each
  aws_price_info:
    region: eu-west-1
    ec2_instance_types: [g5.xlarge]
    ebs_volumes:
      - {type: gp3, size: 40}
  register: prices

- name: Show the hourly price and where it came from
  ansible.builtin.debug:
    msg: "{{ price.usd }} USD/h ({{ price.source }}, {{ price.as_of }})"
  vars:
    price: "{{ prices.ec2['g5.xlarge'] }}"

- name: Price a SageMaker training job and its endpoint
  aws_price_info:
    region: us-east-1
    sagemaker_training_instance_types: [ml.p3.2xlarge]
    sagemaker_hosting_instance_types: [ml.m5.xlarge]
"""

RETURN = r"""
region:
  description: The region whose prices were read.
  returned: always
  type: str
  sample: us-east-1
pricing_region:
  description: The region of the Price List API endpoint asked.
  returned: always
  type: str
  sample: us-east-1
ec2:
  description:
    - EC2 instance type -> On-Demand price. Each price has C(usd), C(unit) (V(Hrs)), C(source), C(as_of) (date),
      C(effective_date), C(region) (the region priced), C(sku), C(description) and C(note) (why a fallback).
  returned: always
  type: dict
  sample: {g5.xlarge: {usd: 1.006, unit: Hrs, source: AWS Price List API, as_of: "2025-11-20"}}
ec2_spot:
  description:
    - With O(market=spot), EC2 instance type -> spot price (as in RV(ec2), plus C(availability_zones), AZ -> USD).
    - Without a spot price history the On-Demand price, with a C(note).
  returned: always
  type: dict
ebs:
  description: EBS volume type -> C(gb_month) and (with billed IOPS) C(iops_month) prices, shaped as in RV(ec2).
  returned: always
  type: dict
  sample: {gp3: {gb_month: {usd: 0.08, unit: GB-Mo, source: AWS Price List API, as_of: "2025-11-20"}}}
ebs_volumes:
  description: Each of O(ebs_volumes) with C(usd_per_month), C(usd_per_hour), C(billed_iops), C(priced) and C(sources).
  returned: always
  type: list
  elements: dict
sagemaker_training:
  description: SageMaker training instance type -> price, shaped as in RV(ec2).
  returned: always
  type: dict
sagemaker_hosting:
  description: SageMaker hosting instance type -> price, shaped as in RV(ec2).
  returned: always
  type: dict
api_available:
  description: Whether the Price List API answered every question asked of it.
  returned: always
  type: bool
fallback_reason:
  description: Why prices came from the dated table (null when the API answered).
  returned: always
  type: str
unpriced:
  description: Items neither the API nor the dated table has a price for.
  returned: always
  type: list
  elements: str
sources:
  description: Every source used, with its date.
  returned: always
  type: list
  elements: str
  sample: ["AWS Price List API (2025-11-20)"]
"""

from ansible.module_utils.dlfleet_aws import client, fail_on_unknown_region
from ansible.module_utils.dlfleet_pricing import PricingError, lookup
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

ARGUMENT_SPEC = dict(
    ec2_instance_types=dict(type="list", elements="str", default=[]),
    market=dict(type="str", choices=["on-demand", "spot"], default="on-demand"),
    ebs_volumes=dict(type="list", elements="dict", default=[], options=dict(
        type=dict(type="str", required=True, choices=["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"]),
        size=dict(type="int", default=0),
        iops=dict(type="int", default=0),
    )),
    sagemaker_training_instance_types=dict(type="list", elements="str", default=[]),
    sagemaker_hosting_instance_types=dict(type="list", elements="str", default=[]),
    pricing_region=dict(type="str", choices=["us-east-1", "eu-central-1", "ap-south-1"], default="us-east-1"),
    pricing_endpoint_url=dict(type="str"),
    use_api=dict(type="bool", default=True),
)


def main() -> None:
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    fail_on_unknown_region(module)
    region = module.region or "us-east-1"
    extra = {"endpoint": module.params["pricing_endpoint_url"]} if module.params["pricing_endpoint_url"] else {}
    pricing = client(module, "pricing", region=module.params["pricing_region"], **extra)
    ec2 = client(module, "ec2") if module.params["market"] == "spot" else None
    try:
        result = lookup(pricing, ec2, {**module.params, "region": region})
    except PricingError as err:
        module.fail_json(msg=str(err))
    if result["fallback_reason"]:
        module.warn(f"prices from the dated table: {result['fallback_reason']}")
    module.exit_json(changed=False, pricing_region=module.params["pricing_region"], **result)


if __name__ == "__main__":
    main()
