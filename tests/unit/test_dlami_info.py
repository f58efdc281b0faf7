"""dlami_info, pure logic (module_utils/dlfleet_dlami.py): line classification, input checks before any call,
image facts. The lookups against the emulator are in tests/emulator/test_dlami_info.py."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from ansible.module_utils import dlfleet_dlami as dl

BASE = "base-oss-nvidia-driver-gpu-ubuntu-22.04"
BASE_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
LEGACY_NAME = "Deep Learning AMI (Ubuntu 18.04) Version *"


def _params(**changes: Any) -> dict[str, Any]:
    params = {"ami_type": BASE, "ssm_parameter": None, "name_pattern": None, "image_id": None,
              "architecture": "x86_64", "owners": ["amazon"], "include_deprecated": None, "python_interpreter": None}
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
    ({"python_interpreter": "python3"}, "not an absolute path"),
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


@pytest.mark.parametrize(("name", "description", "os_name", "python", "too_old"), [
    ("Deep Learning AMI (Ubuntu 18.04) Version 61.3", "", "Ubuntu 18.04", "3.6", True),
    ("Deep Learning AMI (Ubuntu 16.04) Version 26.0", "", "Ubuntu 16.04", "3.5", True),
    ("Deep Learning AMI Ubuntu Linux - 2.4_Oct2017", "", "Ubuntu 16.04", "3.5", True),
    ("Deep Learning AMI (Amazon Linux 2) Version 61.3", "", "Amazon Linux 2", "3.7", True),
    ("Deep Learning AMI GPU PyTorch 1.13.1 (Ubuntu 20.04) 20230315", "", "Ubuntu 20.04", "3.8", False),
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250321", "", "Ubuntu 22.04", "3.10", False),
    ("Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.9 (Amazon Linux 2023) 20260103", "", "Amazon Linux 2023",
     "3.9", False),
    ("my-golden-image-7", "Built from Ubuntu 24.04 with the NVIDIA driver", "Ubuntu 24.04", "3.12", False),
    ("my-golden-image-8", "", None, None, False),
])
def test_os_and_its_python_are_told_from_the_name_or_description(name: str, description: str, os_name: str | None,
                                                                 python: str | None, too_old: bool) -> None:
    assert dl.host_os(name, description) == (os_name, python)
    assert dl.python_too_old(python) is too_old


def _legacy_image(**changes: Any) -> dict[str, Any]:
    image = {"ImageId": "ami-0abc", "Name": "Deep Learning AMI (Ubuntu 18.04) Version 60.4", "Architecture": "x86_64",
             "RootDeviceName": "/dev/sda1", "BlockDeviceMappings": []}
    image.update(changes)
    return image


def test_an_image_with_too_old_a_python_is_refused_unless_another_is_named() -> None:
    facts = dl.image_facts(_legacy_image())
    with pytest.raises(dl.DlamiError) as err:
        dl.check_python(facts, None)
    assert "Python 3.6" in err.value.msg and "provision_python_interpreter" in err.value.msg
    assert "conda env" in err.value.msg   # a legacy image: its conda envs are the way out
    named = dl.image_facts(_legacy_image(), "/home/ubuntu/anaconda3/envs/pytorch_p38/bin/python")
    dl.check_python(named, named["python_interpreter"])   # no error
    assert named["python_interpreter"] == "/home/ubuntu/anaconda3/envs/pytorch_p38/bin/python"
    current = dl.image_facts(_legacy_image(Name="Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 2025"))
    dl.check_python(current, None)
    assert current["python_interpreter"] == "/usr/bin/python3"


def test_deprecation_counts_only_once_its_time_has_passed() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert dl.deprecated_since(_legacy_image(DeprecationTime="2025-12-31T23:59:59.000Z"), now) is not None
    assert dl.deprecated_since(_legacy_image(DeprecationTime="2026-01-01T00:00:01.000Z"), now) is None
    assert dl.deprecated_since(_legacy_image(), now) is None
    facts = dl.image_facts(_legacy_image(DeprecationTime="2023-12-09T09:30:00.000Z"))
    assert facts["deprecated"] is True
    assert "deprecated since 2023-12-09T09:30:00.000Z" in dl.deprecation_warning(facts)
    future = dl.image_facts(_legacy_image(DeprecationTime="2999-01-01T00:00:00.000Z"))
    assert future["deprecated"] is False and dl.deprecation_warning(future) is None
    assert future["deprecation_time"] == "2999-01-01T00:00:00.000Z"
