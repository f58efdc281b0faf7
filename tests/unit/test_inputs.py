"""The input checks every name and number meets before anything reaches AWS, a path or a shell: fleet names
(module_utils/dlfleet_aws.py) and the playbooks' strict numbers and SSH CIDRs (playbooks/filter_plugins)."""
from __future__ import annotations

import pytest
from ansible.module_utils.dlfleet_aws import check_fleet_name, fleet_filter, fleet_tags

from playbooks.filter_plugins.dlfleet_inputs import ssh_cidr_problems, whole_number_problems


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
