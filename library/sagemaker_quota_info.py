#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: sagemaker_quota_info
short_description: Check SageMaker instance quotas before a training job, tuning job or endpoint is created
description:
  - Takes the instances a SageMaker run needs (type, count and use) and, for each Service Quotas quota they count
    against, returns the quota's value, the instances needed and whether they fit.
  - SageMaker has one quota per instance type and use, named for example C(ml.p3.2xlarge for training job usage),
    C(ml.p3.2xlarge for spot training job usage) or C(ml.m5.xlarge for endpoint usage). The module finds it by
    that exact name (one paginated C(ListAWSDefaultServiceQuotas)); the instance type is never read as a pattern.
  - The value is the account's applied quota (C(GetServiceQuota)), or the AWS default when the account has none.
  - Entries with instance type V(local) or V(local_gpu) (SageMaker local mode) need no quota and are skipped.
  - With O(fail_on_shortfall=true) the module fails when a quota is too small, naming who asks for the instances,
    the quota, what it allows, what the run needs and the increase to request.
  - Read-only; check mode runs the same reads.
version_added: "1.0.0"
author:
  - dlfleet maintainers (@dlfleet)
options:
  needs:
    description: The instances the run needs. Entries of the same quota add up (they run at the same time).
    type: list
    elements: dict
    required: true
    suboptions:
      instance_type:
        description: An ml.* instance type such as V(ml.p3.2xlarge), or V(local) / V(local_gpu) (skipped).
        type: str
        required: true
      count:
        description: How many instances of the type this entry needs at once (0 or more).
        type: int
        required: true
      usage:
        description: What the instances are for; it names the quota.
        type: str
        choices: [training_job, spot_training_job, endpoint, processing_job, transform_job]
        default: training_job
      source:
        description:
          - Who asks for the instances, for the messages, for example the variables that set them.
          - Defaults to the entry's index, type and count.
        type: str
  fail_on_shortfall:
    description: Fail when any quota is smaller than what the run needs, with the increase to request.
    type: bool
    default: false
notes:
  - Needs C(servicequotas:ListAWSDefaultServiceQuotas), C(servicequotas:GetServiceQuota) and
    C(servicequotas:GetAWSDefaultServiceQuota).
  - Instances of jobs and endpoints already running count against the same quotas; they are not subtracted here.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_aws_read
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Stop here unless one ml.p3.2xlarge training instance and one ml.m5.xlarge endpoint instance fit
  sagemaker_quota_info:
    region: us-east-1
    needs:
      - {instance_type: ml.p3.2xlarge, count: 1, usage: training_job, source: sagemaker_instance_type}
      - {instance_type: ml.m5.xlarge, count: 1, usage: endpoint, source: sagemaker_endpoint_instance_type}
    fail_on_shortfall: true

- name: Report the quota of a tuning job that runs 4 trials of 2 instances at once
  sagemaker_quota_info:
    needs:
      - {instance_type: ml.g5.xlarge, count: 8}
  register: quota
"""

RETURN = r"""
fits:
  description: True when every quota holds what the run needs.
  returned: always
  type: bool
  sample: false
shortfalls:
  description: One message per quota that is too small, naming the increase to request.
  returned: always
  type: list
  elements: str
skipped:
  description: The entries of local mode (instance type V(local) or V(local_gpu)), which need no quota.
  returned: always
  type: list
  elements: dict
quotas:
  description: One entry per quota the run counts against, ordered by quota name.
  returned: always
  type: list
  elements: dict
  contains:
    quota_name: {description: Quota name., type: str, sample: ml.m5.xlarge for training job usage}
    quota_code: {description: Service Quotas code., type: str, sample: L-CCE2AFA6}
    limit: {description: The quota value in instances., type: float, sample: 0.0}
    limit_source:
      description: V(account) (the applied value) or V(aws-default) (the account has none).
      type: str
      sample: aws-default
    needed: {description: Instances the run needs at once., type: int, sample: 1}
    headroom: {description: limit - needed; negative is the shortfall., type: float, sample: -1.0}
    fits: {description: True when headroom is 0 or more., type: bool, sample: false}
    sources: {description: Who asks for the instances., type: list, elements: str}
"""

import contextlib

from ansible.module_utils.dlfleet_aws import client, fail_on_unknown_region
from ansible.module_utils.dlfleet_quota import SAGEMAKER_USAGES, QuotaError, check_sagemaker
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore.exceptions

ARGUMENT_SPEC = dict(
    needs=dict(type="list", elements="dict", required=True, options=dict(
        instance_type=dict(type="str", required=True),
        count=dict(type="int", required=True),
        usage=dict(type="str", choices=list(SAGEMAKER_USAGES), default="training_job"),
        source=dict(type="str"),
    )),
    fail_on_shortfall=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleAWSModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    fail_on_unknown_region(module)
    sq = client(module, "service-quotas")
    region = module.region or "us-east-1"
    try:
        result = check_sagemaker(sq, module.params["needs"], region)
    except QuotaError as err:
        module.fail_json(**err.fail_json_kwargs())
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        module.fail_json_aws(err, msg="reading SageMaker quotas failed (needs "
                                      "servicequotas:ListAWSDefaultServiceQuotas, "
                                      "servicequotas:GetServiceQuota, servicequotas:GetAWSDefaultServiceQuota)")
    if module.params["fail_on_shortfall"] and not result["fits"]:
        module.fail_json(msg="; ".join(result["shortfalls"]) + ". Nothing was created or started.", **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
