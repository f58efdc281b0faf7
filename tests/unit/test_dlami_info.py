"""dlami_info, pure logic (module_utils/dlfleet_dlami.py): line classification, input checks before any call,
image facts. The lookups against the emulator are in tests/emulator/test_dlami_info.py."""
from __future__ import annotations

from typing import Any

import pytest
from ansible.module_utils import dlfleet_dlami as dl

BASE = "base-oss-nvidia-driver-gpu-ubuntu-22.04"
BASE_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
LEGACY_NAME = "Deep Learning AMI (Ubuntu 18.04) Version *"


def _params(**changes: Any) -> dict[str, Any]:
    params = {"ami_type": BASE, "ssm_parameter": None, "name_pattern": None, "image_id": None,
              "architecture": "x86_64", "owners": ["amazon"]}
    params.update(changes)
    return params


# --------------------------------------------------------------------------------------------------------
# pure logic
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "line"), [
    ("Deep Learning AMI (Ubuntu 18.04) Version 61.3", "legacy-conda"),
    ("Deep Learning AMI (Amazon Linux 2) Version 61.3", "legacy-conda"),
    ("Deep Learning AMI (Ubuntu 16.04) Version 26.0", "legacy-conda"),
    ("Deep Learning AMI Ubuntu Linux - 2.4_Oct2017", "legacy-conda"),
    ("Deep Learning AMI GPU PyTorch 1.13.1 (Ubuntu 20.04) 20230315", "legacy-conda"),
    ("Deep Learning Base AMI (Ubuntu 18.04) Version 56.0", "legacy-conda"),
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250321", "venv"),
    ("Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250324", "venv"),
    ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.5.1 (Ubuntu 22.04) 20250326", "venv"),
    ("Deep Learning Proprietary Nvidia Driver AMI (Amazon Linux 2) Version 80.0", "venv"),
    ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250305", "unknown"),
    ("", "unknown"),
])
def test_line_is_told_from_the_name(name: str, line: str) -> None:
    assert dl.classify_line(name) == line


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"ami_type": "x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04"}, "not an ami-type name"),
    ({"ami_type": " "}, "not an ami-type name"),
    ({"ssm_parameter": "aws/service/deeplearning"}, "starts with /"),
    ({"name_pattern": "  "}, "is empty"),
    ({"image_id": "ami-XYZ"}, "not an AMI id"),
    ({"image_id": "i-0123456789abcdef0"}, "not an AMI id"),
])
def test_bad_input_is_refused_before_any_call(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(None, None, _params(**changes))  # no clients: nothing may be called
    assert fragment in err.value.msg
    assert repr(next(iter(changes.values()))) in err.value.msg


def test_image_facts_take_the_root_mapping_not_the_first() -> None:
    image = {"ImageId": "ami-0abc", "Name": "Deep Learning AMI (Ubuntu 18.04) Version 60.4", "Architecture": "x86_64",
             "RootDeviceName": "/dev/sda1", "RootDeviceType": "ebs", "CreationDate": "2022-06-14T09:30:00.000Z",
             "BlockDeviceMappings": [
                 {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
                 {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 95, "VolumeType": "gp3"}}]}
    facts = dl.image_facts(image)
    assert (facts["snapshot_size"], facts["root_snapshot_id"], facts["root_volume_type"]) == (95, "snap-1", "gp3")
    assert (facts["line"], facts["legacy"], facts["python_env"]) == ("legacy-conda", True, "conda")


