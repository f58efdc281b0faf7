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
  - Tells the image's OS from its name or description, and the Python its C(/usr/bin/python3) is. ansible-core
    2.19 needs Python 3.8 or later on its hosts, so an image whose C(/usr/bin/python3) is older (the legacy line
    on Ubuntu 18.04 ships 3.6) is refused before anything is launched, unless O(python_interpreter) names a
    Python 3.8 or later on it (one of its conda envs); RV(python_interpreter) is what the hosts should use.
  - Deprecated images (a past C(DeprecationTime)) are found by id, and by O(name_pattern) when it is an exact
    name or O(include_deprecated=true); a pattern with wildcards looks only at current images by default, as
    EC2 lists them. A deprecated result comes with a warning saying since when.
  - Fails, saying what to change, when nothing matches, when the image is of another architecture, or when the
    SSM parameter names an image the region does not have. Read-only; check mode runs the same lookups.
version_added: "1.0.0"
author:
  - dlfleet maintainers (@dlfleet)
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
  include_deprecated:
    description:
      - Whether O(name_pattern) may match deprecated images (DescribeImages C(IncludeDeprecated)).
      - Unset, an exact name (no C(*) or C(?)) includes them and a pattern with wildcards does not.
      - An image given by O(image_id) or by an SSM parameter is described whether deprecated or not.
    type: bool
  python_interpreter:
    description:
      - The Python, 3.8 or later, that Ansible is to use on hosts of this image, as an absolute path.
      - Unset, the hosts use C(/usr/bin/python3), and an image whose C(/usr/bin/python3) is older than 3.8 is
        refused.
    type: str
notes:
  - O(ssm_parameter), O(name_pattern) and O(image_id) are mutually exclusive; each overrides O(ami_type).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - dlfleet_aws_read
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

- name: Find the newest legacy conda DLAMI by name, to run Ansible with a conda env's Python
  dlami_info:
    name_pattern: "Deep Learning AMI (Ubuntu 18.04) Version *"
    python_interpreter: /home/ubuntu/anaconda3/envs/pytorch_p38/bin/python
  register: legacy

- name: Find one deprecated image by its exact name (warns since when it is deprecated)
  dlami_info:
    name_pattern: "Deep Learning AMI (Ubuntu 18.04) Version 56.1"
    python_interpreter: /home/ubuntu/anaconda3/envs/pytorch_p38/bin/python
  register: pinned

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
os:
  description: The image's OS, from its name or description; null when it does not say.
  returned: success
  type: str
  sample: Ubuntu 22.04
system_python:
  description: The Python version of the OS's C(/usr/bin/python3); null when the OS is unknown.
  returned: success
  type: str
  sample: "3.10"
python_interpreter:
  description: The interpreter Ansible should use on the hosts (V(ansible_python_interpreter)).
  returned: success
  type: str
  sample: /usr/bin/python3
deprecated: {description: True when the image's deprecation time has passed., returned: success, type: bool}
deprecation_time:
  description: The image's C(DeprecationTime), past or future; null when none is set.
  returned: success
  type: str
  sample: "2023-12-09T09:30:00.000Z"
"""

import contextlib

from ansible.module_utils.dlfleet_aws import client, fail_on_unknown_region
from ansible.module_utils.dlfleet_dlami import ARCHITECTURES, DlamiError, deprecation_warning, lookup
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
    include_deprecated=dict(type="bool"),
    python_interpreter=dict(type="str"),
)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("ssm_parameter", "name_pattern", "image_id")],
    )
    fail_on_unknown_region(module)
    ec2 = client(module, "ec2")
    ssm = client(module, "ssm")
    try:
        result = lookup(ec2, ssm, module.params)
    except DlamiError as err:
        module.fail_json(**err.fail_json_kwargs())
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
        module.fail_json_aws(err, msg="Deep Learning AMI lookup failed")
    warning = deprecation_warning(result)
    if warning:
        module.warn(warning)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
