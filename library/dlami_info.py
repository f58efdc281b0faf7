#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: dlami_info
short_description: Find an AWS Deep Learning AMI
description:
  - Resolves one AWS Deep Learning AMI (DLAMI) and returns what a launch needs to know about it.
  - With O(ami_type) (the default way) it reads the public SSM parameter
    C(/aws/service/deeplearning/ami/<architecture>/<ami_type>/latest/ami-id), as AWS recommends.
  - With O(ssm_parameter) it reads that parameter instead.
  - With O(name_pattern) it takes the newest available image of O(owners) whose name matches, for the
    O(architecture).
  - With O(image_id) it describes that image.
  - Tells the legacy conda line (C(Deep Learning AMI (Ubuntu 18.04) Version NN.N) and the 2022-2023
    C(Deep Learning AMI GPU <framework> ...) images) from the current venv line (C(... OSS Nvidia Driver ...)).
  - Fails, saying what to change, when nothing matches, when the image is of another architecture, or when the
    SSM parameter names an image the region does not have. Read-only; check mode runs the same lookups.
version_added: "1.0.0"
author:
  - dlfleet contributors
options:
  ami_type:
    description:
      - The DLAMI ami-type name in the SSM path, for example V(base-oss-nvidia-driver-gpu-ubuntu-22.04) or
        V(oss-nvidia-driver-gpu-pytorch-2.5-ubuntu-22.04).
      - The default lookup when none of O(ssm_parameter), O(name_pattern) and O(image_id) is given.
    type: str
    default: base-oss-nvidia-driver-gpu-ubuntu-22.04
  ssm_parameter:
    description: Full name of an SSM parameter whose value is an AMI id.
    type: str
  name_pattern:
    description:
      - AMI name to match, with C(*) and C(?) wildcards, for example
        V(Deep Learning AMI (Ubuntu 18.04\) Version *). The newest match (creation date) wins.
    type: str
  image_id:
    description: An AMI id to describe and classify.
    type: str
  architecture:
    description: Architecture of the image; also picks the SSM path for O(ami_type).
    type: str
    choices: [x86_64, arm64]
    default: x86_64
  owners:
    description: Owners for O(name_pattern) (account ids or aliases).
    type: list
    elements: str
    default: [amazon]
notes:
  - O(ssm_parameter), O(name_pattern) and O(image_id) are mutually exclusive; each overrides O(ami_type).
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Find the newest DLAMI Base (Ubuntu 22.04) through its SSM parameter
  dlami_info:
    region: us-east-1
  register: dlami

- name: Find the PyTorch 2.5 DLAMI for Graviton GPU instances
  dlami_info:
    ami_type: oss-nvidia-driver-gpu-pytorch-2.5-ubuntu-22.04
    architecture: arm64
  register: dlami_arm

- name: Find the newest legacy conda DLAMI by name
  dlami_info:
    name_pattern: "Deep Learning AMI (Ubuntu 18.04) Version *"
  register: legacy

- name: Size the root volume from the image's snapshot
  ansible.builtin.set_fact:
    root_gib: "{{ [40, dlami.snapshot_size] | max }}"
"""

RETURN = r"""
image_id: {description: The AMI id., returned: success, type: str, sample: ami-0123456789abcdef0}
name:
  description: The AMI name.
  returned: success
  type: str
  sample: Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250321
description: {description: The AMI description., returned: success, type: str}
creation_date:
  description: Creation date (ISO 8601).
  returned: success
  type: str
  sample: "2025-03-21T09:30:00.000Z"
architecture: {description: V(x86_64) or V(arm64)., returned: success, type: str, sample: x86_64}
owner_id: {description: Owner account id., returned: success, type: str, sample: "898082745236"}
owner_alias: {description: Owner alias., returned: success, type: str, sample: amazon}
state: {description: Image state., returned: success, type: str, sample: available}
root_device_name: {description: Root device name., returned: success, type: str, sample: /dev/sda1}
root_device_type: {description: Root device type., returned: success, type: str, sample: ebs}
root_snapshot_id:
  description: Snapshot of the root volume.
  returned: success
  type: str
  sample: snap-0123456789abcdef0
snapshot_size:
  description: Size of the root snapshot in GiB; a root volume must be at least this big.
  returned: success
  type: int
  sample: 75
root_volume_type: {description: Volume type of the root mapping., returned: success, type: str, sample: gp3}
line:
  description:
    - V(legacy-conda) (frameworks in conda envs), V(venv) (the current line, a venv per framework), or
      V(unknown) for an image that is not a DLAMI name dlfleet knows.
  returned: success
  type: str
  sample: venv
legacy: {description: True for the legacy conda line., returned: success, type: bool, sample: false}
python_env:
  description: How frameworks are installed, V(conda) or V(venv); null when V(line=unknown).
  returned: success
  type: str
  sample: venv
source:
  description: How the image was found (C(method), and C(ssm_parameter) or C(name_pattern)).
  returned: success
  type: dict
  sample:
    method: ssm_parameter
    ssm_parameter: /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id
matched: {description: How many images matched (O(name_pattern)); 1 otherwise., returned: success, type: int, sample: 3}
"""

import contextlib

from ansible.module_utils.dlfleet_aws import aws_retry, fail_on_unknown_region
from ansible.module_utils.dlfleet_dlami import ARCHITECTURES, DlamiError, lookup
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore itself
    import botocore.exceptions

ARGUMENT_SPEC = dict(
    ami_type=dict(type="str", default="base-oss-nvidia-driver-gpu-ubuntu-22.04"),
    ssm_parameter=dict(type="str"),
    name_pattern=dict(type="str"),
    image_id=dict(type="str"),
    architecture=dict(type="str", choices=list(ARCHITECTURES), default="x86_64"),
    owners=dict(type="list", elements="str", default=["amazon"]),
)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("ssm_parameter", "name_pattern", "image_id")],
    )
    fail_on_unknown_region(module)
    ec2 = module.client("ec2", retry_decorator=aws_retry)
    ssm = module.client("ssm", retry_decorator=aws_retry)
    try:
        result = lookup(ec2, ssm, module.params)
    except DlamiError as err:
        module.fail_json(msg=err.msg, **err.details)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        module.fail_json_aws(err, msg="Deep Learning AMI lookup failed")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
