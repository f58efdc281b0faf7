# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Strict checks of what users type on the command line, for the playbooks' first task: each filter returns the
problems it found (empty when all is well), so that an assert can name every one before anything is called."""
from __future__ import annotations

import functools
import importlib.util
import ipaddress
import re
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

_WHOLE = re.compile(r"^[0-9]+$")
# Prefixes shorter than these, outside the private ranges, cover a large share of the internet (a /15 is 131,072
# addresses): SSH from them needs the same explicit opt-in as 0.0.0.0/0.
WIDEST = {4: 16, 6: 48}
EXAMPLE = "for example -e provision_ssh_cidr=$(curl -s https://checkip.amazonaws.com)/32"


# Names that reach AWS tag filters, resource names, local paths and S3 prefixes. The fleet rule is
# module_utils/dlfleet_aws.py's (check_fleet_name; a unit test holds the two together); run names follow it, as they
# make SageMaker job names (letters, digits, hyphens) and artifacts/<run>/.
NAME_MAX = 40
_NAME = re.compile(r"[A-Za-z0-9](?:-*[A-Za-z0-9])*")
# AWS region names: us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1, cn-north-1, us-isob-east-1.
_REGION = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}")


LABELS = {"dlfleet_fleet_name": "fleet name", "dlfleet_run": "run name", "mxnet_train_run": "run name"}


def name_problems(values: dict[str, Any]) -> list[str]:
    """Fleet and run names (keyed by their variable): 1-40 letters, digits and hyphens, first and last a letter or
    digit. No wildcard (a tag filter would match other fleets), no slash or dot (a path would leave artifacts/ or
    .run/keys/), no space."""
    problems = []
    for var, value in values.items():
        if not isinstance(value, str) or len(value) > NAME_MAX or not _NAME.fullmatch(value):
            problems.append(f"{LABELS.get(var, var)} {value!r} is not allowed: use 1-{NAME_MAX} letters, digits and "
                            f"hyphens, starting and ending with a letter or digit (no wildcards, spaces, slashes or "
                            f"dots), for example -e {var}=cifar-a")
    return problems


def region_problems(regions: Any, name: str = "dlfleet_region") -> list[str]:
    """One region name or a list of them, each written as AWS writes it (us-east-1); no wildcard or path."""
    values = regions if isinstance(regions, list) else [regions]
    problems = [f"{name}={value!r} is not an AWS region name: give one like us-east-1 or eu-west-1"
                for value in values if not isinstance(value, str) or not _REGION.fullmatch(value)]
    if isinstance(regions, list) and not regions:
        problems.append(f"{name} is an empty list: give at least one region, for example [us-east-1]")
    return problems


def whole_number_problems(values: dict[str, Any], minimum: int = 0) -> list[str]:
    """Each value must be a whole number (an int, or a string of digits) of at least `minimum`; '2x', '', 1.5,
    true and None are errors, never 0."""
    problems = []
    for name, value in values.items():
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _WHOLE.match(value))):
            problems.append(f"{name}={value!r} is not a whole number; give digits only, for example {name}=2")
        elif int(value) < minimum:
            problems.append(f"{name}={value!r} is below {minimum}")
    return problems


def ssh_cidr_problems(cidr: Any, allow_anywhere: Any = False) -> list[str]:
    """provision_ssh_cidr: an IPv4 or IPv6 network written exactly (no host bits, octets in range); the whole
    internet, or any public prefix wider than a /16 (IPv6: /48), only with provision_ssh_allow_anywhere=true."""
    text = "" if cidr is None else str(cidr)
    head = f"provision_ssh_cidr {text!r} is not allowed"
    if not text.strip():
        return [f"{head}: give the IPv4 CIDR SSH may come from, {EXAMPLE}"]
    if "/" not in text or text != text.strip():
        return [f"{head}: write it as address/prefix with no spaces, {EXAMPLE}"]
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        hint = ""
        if "host bits set" in str(err):
            address = text.split("/", 1)[0]
            full = 32 if ":" not in address else 128
            hint = f" (did you mean {address}/{full}, that one address?)"
        return [f"{head}: {err}{hint}; give the IPv4 CIDR SSH may come from, {EXAMPLE}"]
    wide = network.prefixlen < WIDEST[network.version] and not network.is_private
    if wide and str(allow_anywhere).lower() not in ("true", "yes", "1", "on"):
        whole = " (the whole internet)" if network.prefixlen == 0 else ""
        return [f"{head}: it opens SSH to {network.num_addresses:,} public addresses{whole}. That needs "
                f"-e provision_ssh_allow_anywhere=true; otherwise give a narrower CIDR, {EXAMPLE}"]
    return []


@functools.cache
def _ttl_seconds():
    """module_utils/dlfleet_aws.py's ttl_seconds, the one parser of dlfleet:ttl values (the modules tag and reap with
    it); plugin files are not a package, so it is loaded from its file."""
    path = Path(__file__).resolve().parents[2] / "module_utils" / "dlfleet_aws.py"
    spec = importlib.util.spec_from_file_location("dlfleet_aws_ttl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ttl_seconds


def ttl_hours(ttl: Any) -> float:
    """'30m' / '8h' / '2d' -> hours (the cost estimate's default span), parsed as the modules parse dlfleet:ttl."""
    try:
        return _ttl_seconds()(ttl) / 3600
    except ValueError as err:
        raise AnsibleFilterError(f"dlfleet_ttl: {err}") from err


class FilterModule:
    def filters(self):
        return {"dlfleet_ttl_hours": ttl_hours,
                "dlfleet_whole_number_problems": whole_number_problems,
                "dlfleet_name_problems": name_problems,
                "dlfleet_region_problems": region_problems,
                "dlfleet_ssh_cidr_problems": ssh_cidr_problems}
