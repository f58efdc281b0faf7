# Copyright: dlfleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which fleet and region the fleet's hosts belong to, for the AWS inventory and for the plays that act on group
gpu_fleet (playbooks/tasks/fleet_scope.yml).

- dlfleet_inventory_setting: inventory/aws/dlfleet.aws_ec2.yml asks EC2 for the instances of one fleet in one region.
  The amazon.aws.aws_ec2 plugin templates its `regions` and `filters` with no variables at all: the inventory is
  parsed before group_vars apply, and its `use_extra_vars` reaches `compose`/`groups` only, not the query. This
  filter gives the query the value the plays see: the extra var (-e) when one is given, else the value in the vars
  file where the default is set, checked by the same rules as the plays' first task (a wildcard would match other
  fleets in an EC2 tag filter).
- dlfleet_fleet_scope: the fleet and region of each host of a play, read from what its hostvars already carry (the
  aws_ec2 plugin's tags and placement, or the dlfleet_instance record that provision.yml's add_host sets).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible import context
from ansible.errors import AnsibleError, AnsibleFilterError, AnsibleUndefinedVariable
from ansible.module_utils.common.text.converters import to_text
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.splitter import parse_kv
from ansible.parsing.vault import VaultSecretsContext
from jinja2.exceptions import UndefinedError

PROJECT = Path(__file__).resolve().parents[2]
FLEET_TAG = "dlfleet:fleet"


def _inputs():
    """The name and region rules of dlfleet_inputs.py, beside this file (plugin files are not a package)."""
    spec = importlib.util.spec_from_file_location("dlfleet_inputs_rules", Path(__file__).with_name("dlfleet_inputs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _problems(name: str, value: Any) -> list[str]:
    rules = _inputs()
    if name == "dlfleet_region":
        return rules.region_problems(value)
    return rules.name_problems({name: value})


def _loader() -> DataLoader:
    """A loader with this run's vault secrets (--ask-vault-pass, --vault-password-file), when it has any."""
    loader = DataLoader()
    secrets = VaultSecretsContext.current(optional=True)
    if secrets is not None:
        loader.set_vault_secrets(secrets.secrets)
    return loader


def _extra_vars() -> list[tuple[str, Any]]:
    """The -e arguments of this run in order, each parsed as Ansible parses it for the plays: (argument, its
    variables), or (argument, the error) for an @file that cannot be read here (encrypted with no vault secret
    given, missing). Ansible's own load_extra_vars stops at such a file and would make the whole source fail."""
    if not context.CLIARGS:
        return []
    loader = _loader()
    out: list[tuple[str, Any]] = []
    for arg in context.CLIARGS.get("extra_vars", ()) or ():
        arg = to_text(arg, errors="surrogate_or_strict")
        if not arg:
            continue
        if arg.startswith("@"):
            try:
                data = loader.load_from_file(arg[1:])
            except AnsibleError as err:
                out.append((arg, err))
                continue
        elif arg[0] in "[{":
            data = loader.load(arg)
        else:
            data = parse_kv(arg)
        out.append((arg, data if isinstance(data, Mapping) else {}))
    return out


def _from_extra_vars(name: str) -> tuple[bool, Any]:
    """(True, value) when an -e argument sets `name` (the last one wins, as for the plays), else (False, None). An
    @file that cannot be read fails, unless a later plain -e sets `name`: it might set `name` itself."""
    found, value, unread = False, None, None
    for arg, data in _extra_vars():
        if isinstance(data, Exception):
            unread = (arg, data)
        elif name in data:
            found, value, unread = True, data[name], None
    if unread is not None:
        arg, err = unread
        raise AnsibleFilterError(
            f"{name}: the extra vars file {arg} cannot be read while the inventory is parsed ({err}), and it may set "
            f"{name}. Give -e dlfleet_region=... -e dlfleet_fleet_name=... as plain values after it (or the vault "
            f"password with --ask-vault-pass / --vault-password-file). No EC2 instance was looked up.")
    return found, value


def inventory_setting(name: str, vars_file: str) -> str:
    """`name` as the plays will see it: -e when given, else its value in `vars_file` (relative to the project root),
    checked as a fleet/run name or a region. An error names the variable and what to do; the inventory source then
    fails (and with ansible.cfg's any_unparsed_is_failed, so does the run)."""
    given, given_value = _from_extra_vars(name)
    if given:
        value, origin = given_value, "-e"
    else:
        path = Path(vars_file) if Path(vars_file).is_absolute() else PROJECT / vars_file
        try:
            defaults = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise AnsibleFilterError(f"{name}: cannot read its default from {vars_file} ({err}); "
                                     f"give -e {name}=...") from err
        if not isinstance(defaults, Mapping) or name not in defaults:
            raise AnsibleFilterError(f"{name} is not set in {vars_file}: set it there, or give -e {name}=...")
        value, origin = defaults[name], vars_file
    problems = _problems(name, value)
    if problems:
        raise AnsibleFilterError(f"{'; '.join(problems)} (from {origin}). No EC2 instance was looked up: the "
                                 f"inventory lists no host until the name is fixed.")
    return str(value)


def _region_of_zone(zone: str) -> str:
    """us-east-1a -> us-east-1; local and wavelength zones (us-west-2-lax-1a) -> us-west-2."""
    if not zone:
        return ""
    parts = zone.split("-")
    # the region is the first three parts (four for -gov/-iso regions), its last part's digits without the zone letter
    size = 4 if len(parts) > 3 and parts[1] in ("gov", "iso", "isob", "isoe", "isof") else 3
    head = parts[:size]
    head[-1] = head[-1].rstrip("abcdefghijklmnopqrstuvwxyz")
    return "-".join(head)


def _record(hostvars: Mapping[str, Any]) -> Any:
    """The host's dlfleet_instance. A record that inventory/local's stand-in derives from the run's fleet.json needs
    settings that only a play holds (roles/dlfleet_defaults is not part of hostvars): no EC2 record, as for any host
    that is not an instance."""
    try:
        return hostvars.get("dlfleet_instance")
    except (AnsibleUndefinedVariable, UndefinedError):
        return None


def _placement(hostvars: Mapping[str, Any]) -> dict[str, Any] | None:
    """{'fleet', 'region', 'instance_id', 'source'} from the facts a host carries, or None when it carries none."""
    record = _record(hostvars) or {}
    if isinstance(record, Mapping) and record.get("instance_id"):
        tags = record.get("tags") or {}
        return {"fleet": tags.get(FLEET_TAG, ""), "region": _region_of_zone(record.get("availability_zone") or ""),
                "instance_id": record["instance_id"], "source": "dlfleet_instance record"}
    if hostvars.get("instance_id") and isinstance(hostvars.get("placement"), Mapping):
        placement = hostvars["placement"]
        tags = hostvars.get("tags") or {}
        # the zone, as for the record above: aws_ec2's placement.region is the zone less its letter, which for a
        # Local Zone (us-west-2-lax-1a) is us-west-2-lax-1, no region
        region = _region_of_zone(placement.get("availability_zone") or "") or placement.get("region") or ""
        return {"fleet": tags.get(FLEET_TAG, ""), "region": region, "instance_id": hostvars["instance_id"],
                "source": "aws_ec2 hostvars"}
    return None


def fleet_scope(hostvars: Mapping[str, Any], hosts: list[str], fleet: str, region: str) -> dict[str, Any]:
    """The hosts of a play sorted by what their hostvars say: `foreign` (another fleet or region, each with what it
    carries), `unknown` (no EC2 facts at all: stand-ins, test hosts, hand-written entries; each with its address)
    and `members`."""
    out: dict[str, Any] = {"foreign": [], "unknown": [], "members": []}
    for host in hosts:
        facts = hostvars[host]
        where = _placement(facts)
        if where is None:
            out["unknown"].append({"host": host, "address": str(facts.get("ansible_host") or host)})
        elif where["fleet"] == fleet and where["region"] == region:
            out["members"].append({"host": host, **where})
        else:
            out["foreign"].append({"host": host, **where})
    return out


def fleet_addresses(instances: list[Mapping[str, Any]]) -> list[str]:
    """Every name an instance of amazon.aws.ec2_instance_info can be reached by: id, IPs and DNS names."""
    keys = ("instance_id", "public_ip_address", "private_ip_address", "public_dns_name", "private_dns_name")
    return sorted({str(i[k]) for i in instances for k in keys if i.get(k)})


class FilterModule:
    def filters(self):
        return {"dlfleet_inventory_setting": inventory_setting,
                "dlfleet_fleet_scope": fleet_scope,
                "dlfleet_fleet_addresses": fleet_addresses}
