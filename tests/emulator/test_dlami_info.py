"""dlami_info against the emulator: the lookups of module_utils/dlfleet_dlami.py, and runs of the module through
ansible-playbook (its pure logic is in tests/unit/test_dlami_info.py).

Lookups go through boto3 over real HTTP to the session emulator (seeded with the DLAMIs and their SSM
parameters); expected images are computed from the emulator's own DescribeImages answers.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from ansible.module_utils import dlfleet_dlami as dl
from ansible.module_utils.dlfleet_aws import aws_retry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from helpers import run_playbook, run_task

BASE = "base-oss-nvidia-driver-gpu-ubuntu-22.04"
BASE_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
LEGACY_NAME = "Deep Learning AMI (Ubuntu 18.04) Version *"
DEPRECATED_NAME = "Deep Learning AMI (Ubuntu 18.04) Version 56.1"   # the seed's deprecated image
CONDA_PYTHON = "/home/ubuntu/anaconda3/envs/pytorch_p38/bin/python"


def _params(**changes: Any) -> dict[str, Any]:
    params = {"ami_type": BASE, "ssm_parameter": None, "name_pattern": None, "image_id": None,
              "architecture": "x86_64", "owners": ["amazon"], "include_deprecated": None, "python_interpreter": None}
    params.update(changes)
    return params


def _wrap(client):
    return RetryingBotoClientWrapper(client, aws_retry)


@pytest.fixture
def clients(emulator):
    return _wrap(emulator.client("ec2")), _wrap(emulator.client("ssm"))


def _newest(emulator, pattern: str, arch: str = "x86_64", include_deprecated: bool = False) -> dict[str, Any]:
    images = emulator.client("ec2").describe_images(Owners=["amazon"], IncludeDeprecated=include_deprecated, Filters=[
        {"Name": "name", "Values": [pattern]}, {"Name": "architecture", "Values": [arch]}])["Images"]
    return max(images, key=lambda i: i["CreationDate"])


# --------------------------------------------------------------------------------------------------------
# lookups against the emulator
# --------------------------------------------------------------------------------------------------------

def test_default_lookup_reads_the_ssm_parameter_and_returns_the_newest_base(emulator, clients) -> None:
    result = dl.lookup(*clients, _params())
    newest = _newest(emulator, BASE_NAME)
    assert result["image_id"] == newest["ImageId"] and result["name"] == newest["Name"]
    assert result["source"] == {"method": "ssm_parameter",
                                "ssm_parameter": f"/aws/service/deeplearning/ami/x86_64/{BASE}/latest/ami-id"}
    root = newest["BlockDeviceMappings"][0]["Ebs"]
    assert result["snapshot_size"] == root["VolumeSize"] and result["root_snapshot_id"] == root["SnapshotId"]
    assert (result["line"], result["python_env"], result["owner_id"]) == ("venv", "venv", dl.DLAMI_OWNER_ID)
    assert result["root_device_name"] == "/dev/sda1" and result["root_device_type"] == "ebs"
    assert (result["os"], result["system_python"], result["python_interpreter"]) == (
        "Ubuntu 22.04", "3.10", "/usr/bin/python3")
    assert result["deprecated"] is False and result["deprecation_time"] is None


def test_arm64_lookup_gets_the_arm64_image(emulator, clients) -> None:
    result = dl.lookup(*clients, _params(architecture="arm64"))
    assert result["architecture"] == "arm64"
    assert result["image_id"] == _newest(emulator, "Deep Learning ARM64 Base OSS *", "arm64")["ImageId"]


def test_legacy_conda_image_needs_a_python_of_its_own(emulator, clients) -> None:
    """The legacy line runs Ubuntu 18.04, whose /usr/bin/python3 (3.6) ansible-core 2.19 cannot use: refused, naming
    the variables, unless a Python of the image is named; then that is the hosts' interpreter."""
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(name_pattern=LEGACY_NAME))
    newest = _newest(emulator, LEGACY_NAME)
    for fragment in (newest["ImageId"], "Ubuntu 18.04", "Python 3.6", ">= 3.8", "provision_python_interpreter",
                     "provision_dlami_ami_type", "nothing was launched"):
        assert fragment in err.value.msg, fragment
    result = dl.lookup(*clients, _params(name_pattern=LEGACY_NAME, python_interpreter=CONDA_PYTHON))
    assert result["image_id"] == newest["ImageId"] and result["creation_date"] == newest["CreationDate"]
    assert result["line"] == "legacy-conda" and result["legacy"] is True
    assert (result["system_python"], result["python_interpreter"]) == ("3.6", CONDA_PYTHON)
    assert 75 <= result["snapshot_size"] <= 100


def test_deprecated_images_by_name_and_id_but_not_by_pattern(emulator, clients) -> None:
    """A wildcard pattern looks at current images only (as EC2 lists them); an exact name or an id finds the
    deprecated image, which says since when; include_deprecated opens the pattern to it."""
    old = _newest(emulator, DEPRECATED_NAME, include_deprecated=True)
    assert old["DeprecationTime"] < "2026"   # seeded in the past
    listed = emulator.client("ec2").describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": [LEGACY_NAME]}])["Images"]
    assert old["ImageId"] not in {i["ImageId"] for i in listed}   # EC2's listing leaves it out
    legacy = {"python_interpreter": CONDA_PYTHON}
    newest = dl.lookup(*clients, _params(name_pattern=LEGACY_NAME, **legacy))
    assert newest["matched"] == len(listed) and newest["deprecated"] is False
    assert dl.lookup(*clients, _params(name_pattern=LEGACY_NAME, include_deprecated=True, **legacy))["matched"] == \
        len(listed) + 1
    by_name = dl.lookup(*clients, _params(name_pattern=DEPRECATED_NAME, **legacy))
    by_id = dl.lookup(*clients, _params(image_id=old["ImageId"], **legacy))
    for result in (by_name, by_id):
        assert result["image_id"] == old["ImageId"] and result["deprecated"] is True
        assert result["deprecation_time"] == old["DeprecationTime"]
        assert f"deprecated since {old['DeprecationTime']}" in dl.deprecation_warning(result)
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(name_pattern="Deep Learning AMI (Ubuntu 18.04) Version 56.*", **legacy))
    assert "is deprecated" in err.value.msg and old["ImageId"] in err.value.msg
    assert "include_deprecated: true" in err.value.msg
    with pytest.raises(dl.DlamiError):
        dl.lookup(*clients, _params(name_pattern=DEPRECATED_NAME, include_deprecated=False, **legacy))


def test_name_pattern_of_the_other_architecture_says_which_to_set(clients) -> None:
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(name_pattern="Deep Learning ARM64 Base OSS *"))
    assert "no x86_64 image" in err.value.msg and "set architecture: arm64" in err.value.msg


def test_name_pattern_without_match_fails_clearly(clients) -> None:
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(name_pattern="Deep Learning AMI (Windows) *"))
    assert "'Deep Learning AMI (Windows) *'" in err.value.msg and "check the pattern" in err.value.msg


def test_unknown_ami_type_lists_the_published_ones(emulator, clients) -> None:
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(ami_type="pytorch-9.9-ubuntu-30.04"))
    assert "/aws/service/deeplearning/ami/x86_64/pytorch-9.9-ubuntu-30.04/latest/ami-id" in err.value.msg
    pages = emulator.client("ssm").get_paginator("get_parameters_by_path").paginate(
        Path="/aws/service/deeplearning/ami/x86_64", Recursive=True)
    published = {p["Name"].split("/")[6] for page in pages for p in page["Parameters"]}
    assert published and all(t in err.value.msg for t in published)


def test_parameter_naming_a_missing_image_or_another_architecture(emulator, clients) -> None:
    ssm = emulator.client("ssm")
    name = f"/dlfleet-test/{uuid.uuid4().hex[:8]}/ami-id"
    ssm.put_parameter(Name=name, Value="ami-0123456789abcdef0", Type="String")
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(ssm_parameter=name))
    assert "ami-0123456789abcdef0" in err.value.msg and "does not know" in err.value.msg
    arm = _newest(emulator, "Deep Learning ARM64 Base OSS *", "arm64")
    ssm.put_parameter(Name=name, Value=arm["ImageId"], Type="String", Overwrite=True)
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(ssm_parameter=name))
    assert "arm64, not x86_64" in err.value.msg
    assert dl.lookup(*clients, _params(ssm_parameter=name, architecture="arm64"))["image_id"] == arm["ImageId"]
    ssm.delete_parameter(Name=name)


def test_image_id_is_described_and_classified(emulator, clients) -> None:
    legacy = _newest(emulator, LEGACY_NAME)
    result = dl.lookup(*clients, _params(image_id=legacy["ImageId"], python_interpreter=CONDA_PYTHON))
    assert result["name"] == legacy["Name"] and result["line"] == "legacy-conda"
    with pytest.raises(dl.DlamiError) as err:
        dl.lookup(*clients, _params(image_id="ami-0000000000000dead"))
    assert "does not know" in err.value.msg


def test_lookup_holds_under_throttling_and_server_errors(faulty_aws) -> None:
    faulty_aws.configure(throttle=0.3, server_error=0.1, seed=3)
    clients = (_wrap(faulty_aws.client("ec2")), _wrap(faulty_aws.client("ssm")))
    expected = dl.lookup(_wrap(faulty_aws.direct("ec2")), _wrap(faulty_aws.direct("ssm")), _params())
    for _ in range(3):
        assert dl.lookup(*clients, _params()) == expected
    assert faulty_aws.counters["throttle"] + faulty_aws.counters["server_error"] > 0


# --------------------------------------------------------------------------------------------------------
# the module, through ansible-playbook
# --------------------------------------------------------------------------------------------------------

def test_module_default_lookup_in_check_mode(aws_env, emulator) -> None:
    run, result = run_task("dlami_info", {}, env=aws_env, check=True)
    assert run.rc == 0, result
    assert result["changed"] is False
    assert result["image_id"] == _newest(emulator, BASE_NAME)["ImageId"] and result["snapshot_size"] >= 75


def test_module_refuses_conflicting_or_unmatched_input(aws_env, tmp_path) -> None:
    cases = [({"ssm_parameter": "/a/b", "name_pattern": "x*"}, "mutually exclusive"),
             ({"name_pattern": "No Such AMI *", "architecture": "arm64"},
              "no image of owners ['amazon'] is named like 'No Such AMI *'"),
             ({"architecture": "sparc"}, "sparc"),
             ({"ami_type": "x86_64/base"}, "not an ami-type name"),
             ({"name_pattern": LEGACY_NAME}, "set python_interpreter (provision_python_interpreter)"),
             ({"name_pattern": LEGACY_NAME, "python_interpreter": "python3.8"}, "not an absolute path")]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump([{"name": "DLAMI lookups under test", "hosts": "localhost", "gather_facts": False,
                                     "tasks": [{"name": f"Case {i}", "dlami_info": args, "ignore_errors": True}
                                               for i, (args, _) in enumerate(cases)]}]))
    run = run_playbook(path, env=aws_env)
    for i, (_, fragment) in enumerate(cases):
        result = run.results(f"Case {i}")
        assert result.get("failed") and fragment in result["msg"], result


def test_module_warns_of_a_deprecated_image(aws_env, emulator) -> None:
    run, result = run_task("dlami_info", {"name_pattern": DEPRECATED_NAME, "python_interpreter": CONDA_PYTHON},
                           env=aws_env)
    assert run.rc == 0, result
    old = _newest(emulator, DEPRECATED_NAME, include_deprecated=True)
    assert result["image_id"] == old["ImageId"] and result["deprecated"] is True
    assert result["python_interpreter"] == CONDA_PYTHON
    assert any(f"is deprecated since {old['DeprecationTime']}" in w for w in result.get("warnings", [])), result
