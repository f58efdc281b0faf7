"""The input checks every name and number meets before anything reaches AWS, a path or a shell: fleet names
(module_utils/dlfleet_aws.py), the modules' region check against botocore's endpoint data, and the playbooks'
strict numbers and SSH CIDRs (playbooks/filter_plugins)."""
from __future__ import annotations

import botocore.session
import pytest
from ansible.module_utils.dlfleet_aws import (
    ENDPOINT_PREFIXES,
    check_fleet_name,
    fleet_filter,
    fleet_tags,
    known_regions,
    unknown_region,
)

from playbooks.filter_plugins.dlfleet_inputs import (
    name_problems,
    region_problems,
    ssh_cidr_problems,
    whole_number_problems,
)


@pytest.mark.parametrize("name", ["a", "cifar-a", "Prod-2026-12", "a--b", "x" * 40])
def test_fleet_names_of_letters_digits_and_hyphens_pass(name: str) -> None:
    assert check_fleet_name(name) == name
    assert fleet_filter(name) == [{"Name": "tag:dlfleet:fleet", "Values": [name]}]


@pytest.mark.parametrize("name", ["", "*", "a*", "a?b", "../../../victim", "a/b", "a b", "a.b", "-a", "a-", "a_b",
                                  "a\n", "x" * 41, "ä", None, 7])
def test_fleet_names_that_could_match_or_reach_elsewhere_are_refused(name) -> None:
    with pytest.raises(ValueError, match="fleet name"):
        check_fleet_name(name)
    with pytest.raises(ValueError, match="fleet name"):
        fleet_tags(name, "ops", "8h")      # no tag, and so no resource, can carry it


@pytest.mark.parametrize(("cidr", "allow", "fragment"), [
    ("", False, "give the IPv4 CIDR"),
    ("0.0.0.0/0", False, "(the whole internet)"),
    ("0.0.0.0/1", False, "2,147,483,648 public addresses"),
    ("8.0.0.0/8", False, "provision_ssh_allow_anywhere=true"),
    ("10.9.9.9/0", True, "host bits set"),                 # the opt-in does not make a mistyped CIDR right
    ("999.1.1.1/32", False, "does not appear to be"),
    ("10.0.0.300/33", False, "does not appear to be"),
    ("1.2.3.4", False, "address/prefix"),
    ("1.2.3.4/32 ", False, "no spaces"),
    ("2600::/16", False, "public addresses"),
])
def test_ssh_cidrs_that_open_more_than_meant_are_refused(cidr: str, allow: bool, fragment: str) -> None:
    [problem] = ssh_cidr_problems(cidr, allow)
    assert fragment in problem and f"provision_ssh_cidr {cidr!r} is not allowed" in problem


@pytest.mark.parametrize(("cidr", "allow"), [("203.0.113.7/32", False), ("10.0.0.0/8", False),
                                             ("192.168.0.0/16", False), ("2600:1f18::1/128", False),
                                             ("0.0.0.0/0", True), ("0.0.0.0/0", "true")])
def test_narrow_private_or_explicitly_allowed_cidrs_pass(cidr: str, allow) -> None:
    assert ssh_cidr_problems(cidr, allow) == []


def test_counts_are_whole_numbers_never_a_silent_zero() -> None:
    values = {"ok_int": 2, "ok_str": "3", "typo": "2x", "empty": "", "float": 1.5, "bool": True, "none": None,
              "negative": "-1"}
    problems = whole_number_problems(values)
    assert [p.split("=", 1)[0] for p in problems] == ["typo", "empty", "float", "bool", "none", "negative"]
    assert whole_number_problems({"port": 0}, 1) == ["port=0 is below 1"]


def test_a_sagemaker_name_with_a_trailing_newline_is_refused() -> None:
    from ansible.module_utils.dlfleet_sagemaker import SageMakerError, check_name

    check_name("training job", "cifar10-001")
    with pytest.raises(SageMakerError, match="is not valid"):
        check_name("training job", "cifar10-001\n")    # `$` alone would match before the newline


NAMES = ["a", "cifar-a", "Prod-2026-12", "a--b", "x" * 40, "", "*", "a*", "a?b", "../../../victim", "a/b", "a b",
         "a.b", "-a", "a-", "a_b", "a\n", "x" * 41, "ä", "[a]", "a,b", None, 7]


@pytest.mark.parametrize("name", NAMES)
def test_playbook_name_check_and_the_modules_agree_on_every_fleet_name(name) -> None:
    """The playbooks' first task (dlfleet_name_problems) and the modules (check_fleet_name) draw one line."""
    try:
        check_fleet_name(name)
        module_ok = True
    except ValueError:
        module_ok = False
    assert (name_problems({"dlfleet_fleet_name": name}) == []) is module_ok


@pytest.mark.parametrize(("var", "value"), [("dlfleet_run", "../../elsewhere"), ("dlfleet_run", "my run"),
                                            ("dlfleet_run", "run*"), ("dlfleet_fleet_name", "a?b")])
def test_name_problems_name_the_variable_and_the_fix(var: str, value: str) -> None:
    (problem,) = name_problems({var: value})
    label = "fleet name" if var == "dlfleet_fleet_name" else "run name"
    assert problem.startswith(f"{label} {value!r} is not allowed")
    assert f"-e {var}=cifar-a" in problem


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "eu-central-2", "ap-southeast-4", "us-gov-west-1",
                                    "cn-north-1", "us-isob-east-1", "il-central-1", "ca-west-1"])
def test_region_names_as_aws_writes_them_pass(region: str) -> None:
    assert region_problems(region) == []
    assert region_problems([region, "us-east-1"], "dlfleet_reaper_regions") == []


@pytest.mark.parametrize("region", ["", "*", "us-*", "us-east-?", "US-EAST-1", "us-east-1 ", " us-east-1", "us-east",
                                    "us-east-1/../../x", "us-east-1\n", "useast1", "us_east_1", None, 1, ["us-*"]])
def test_region_names_that_are_patterns_paths_or_typos_are_refused(region) -> None:
    problems = region_problems(region)
    assert problems and "is not an AWS region name" in problems[0] and "like us-east-1" in problems[0]


def test_an_empty_region_list_is_refused_and_every_bad_member_named() -> None:
    assert region_problems([], "dlfleet_reaper_regions") == [
        "dlfleet_reaper_regions is an empty list: give at least one region, for example [us-east-1]"]
    problems = region_problems(["us-east-1", "eu-*", "../x"], "dlfleet_reaper_regions")
    assert [p.split(" is ")[0] for p in problems] == ["dlfleet_reaper_regions='eu-*'", "dlfleet_reaper_regions='../x'"]


@pytest.mark.parametrize("service", sorted(ENDPOINT_PREFIXES))
def test_the_region_check_knows_the_regions_botocore_knows(service: str) -> None:
    """known_regions reads the endpoint data under the service's prefix instead of loading its model: the prefix
    is the model's, and the regions are those botocore's own get_available_regions gives, in every partition."""
    session = botocore.session.get_session()
    assert session.get_service_model(service).endpoint_prefix == ENDPOINT_PREFIXES[service]
    expected = sorted({region for partition in session.get_available_partitions()
                       for region in session.get_available_regions(service, partition)})
    assert known_regions(service) == expected
    assert "us-east-1" in expected
    if service == "ec2":
        assert "cn-north-1" in expected and "us-gov-west-1" in expected   # every partition


def test_the_region_check_names_the_fix_for_a_region_botocore_does_not_know() -> None:
    assert unknown_region("us-east-2") is None and unknown_region("cn-north-1") is None and unknown_region(None) is None
    message = unknown_region("us-est-1")
    assert "region 'us-est-1' is not an AWS region that offers ec2" in message and "did you mean" in message
    assert "us-east-1" in message and "give one such as us-east-1" in message
    # a service without a known prefix takes botocore's own way (the model), with the same answer
    assert known_regions("sts") == sorted({r for p in botocore.session.get_session().get_available_partitions()
                                           for r in botocore.session.get_session().get_available_regions("sts", p)})
