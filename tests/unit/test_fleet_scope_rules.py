"""The rules behind one fleet in one region (playbooks/filter_plugins/dlfleet_scope.py): what the AWS inventory
queries (-e over the vars file's default, names checked first) and how a play sorts its hosts by the fleet and
region their hostvars carry. The inventory and the plays themselves: tests/emulator/test_fleet_scope.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from ansible import context
from ansible.errors import AnsibleFilterError
from ansible.parsing.vault import VaultLib, VaultSecret, VaultSecretsContext
from ansible.utils.context_objects import CLIArgs

from playbooks.filter_plugins.dlfleet_scope import fleet_addresses, fleet_scope, inventory_setting


def _given(monkeypatch, *extra_vars: str) -> None:
    """The run's -e arguments, in order, as ansible-playbook's command line leaves them."""
    monkeypatch.setattr(context, "CLIARGS", CLIArgs({"extra_vars": extra_vars}))


@pytest.fixture
def defaults(tmp_path: Path) -> Path:
    path = tmp_path / "aws.yml"
    path.write_text("dlfleet_region: us-east-1\ndlfleet_fleet_name: cifar-a\n")
    return path


def test_the_inventory_takes_the_extra_var_over_the_one_default(monkeypatch, defaults: Path, tmp_path: Path) -> None:
    _given(monkeypatch)
    assert inventory_setting("dlfleet_region", str(defaults)) == "us-east-1"
    assert inventory_setting("dlfleet_fleet_name", str(defaults)) == "cifar-a"
    _given(monkeypatch, "dlfleet_region=eu-west-1")
    assert inventory_setting("dlfleet_region", str(defaults)) == "eu-west-1"
    assert inventory_setting("dlfleet_fleet_name", str(defaults)) == "cifar-a"
    # in order, the last one wins, as for the plays: key=value, YAML/JSON and @file alike
    extra = tmp_path / "extra.yml"
    extra.write_text("dlfleet_region: ap-south-1\n")
    _given(monkeypatch, "dlfleet_region=eu-west-1", f"@{extra}", '{"dlfleet_fleet_name": "cifar-b"}')
    assert inventory_setting("dlfleet_region", str(defaults)) == "ap-south-1"
    assert inventory_setting("dlfleet_fleet_name", str(defaults)) == "cifar-b"


def test_an_encrypted_extra_vars_file_is_read_with_the_runs_vault_secret_or_fails_clearly(
        monkeypatch, defaults: Path, tmp_path: Path) -> None:
    """-e @vault.yml: without the vault secret the file cannot be read; the inventory must not quietly list no host
    (the plays would end green having done nothing): it fails, naming the plain -e to give, unless a later plain -e
    sets the variable. With the run's secret (--ask-vault-pass), the file is read."""
    secret = [("default", VaultSecret(b"s3cret"))]
    vault = tmp_path / "vault.yml"
    vault.write_bytes(VaultLib(secret).encrypt("dlfleet_region: eu-central-1\ndb_password: x\n"))
    monkeypatch.setattr(VaultSecretsContext, "_current", None)
    _given(monkeypatch, f"@{vault}")
    with pytest.raises(AnsibleFilterError) as err:
        inventory_setting("dlfleet_region", str(defaults))
    assert f"@{vault} cannot be read" in str(err.value)
    assert "-e dlfleet_region=... -e dlfleet_fleet_name=..." in str(err.value)
    _given(monkeypatch, "dlfleet_region=eu-west-1", f"@{vault}")   # the file might set it again: still refused
    with pytest.raises(AnsibleFilterError, match="cannot be read"):
        inventory_setting("dlfleet_region", str(defaults))
    _given(monkeypatch, f"@{vault}", "dlfleet_region=eu-west-1", "dlfleet_fleet_name=cifar-c")
    assert inventory_setting("dlfleet_region", str(defaults)) == "eu-west-1"
    assert inventory_setting("dlfleet_fleet_name", str(defaults)) == "cifar-c"
    monkeypatch.setattr(VaultSecretsContext, "_current", VaultSecretsContext(secret))
    _given(monkeypatch, f"@{vault}")
    assert inventory_setting("dlfleet_region", str(defaults)) == "eu-central-1"


def test_the_project_default_file_is_read_relative_to_the_project(monkeypatch) -> None:
    _given(monkeypatch)
    assert inventory_setting("dlfleet_region", "roles/dlfleet_defaults/defaults/main.yml") == "us-east-1"


@pytest.mark.parametrize(("extra", "name", "fragment"), [
    ({"dlfleet_fleet_name": "*"}, "dlfleet_fleet_name", "fleet name '*' is not allowed"),
    ({"dlfleet_fleet_name": "cifar-?"}, "dlfleet_fleet_name", "(from -e)"),
    ({"dlfleet_region": "us-*"}, "dlfleet_region", "is not an AWS region name"),
    ({}, "dlfleet_run", "dlfleet_run is not set in"),
])
def test_a_name_that_could_match_other_fleets_never_reaches_the_query(monkeypatch, defaults: Path, extra, name,
                                                                       fragment) -> None:
    _given(monkeypatch, *(f"{key}={value}" for key, value in extra.items()))
    with pytest.raises(AnsibleFilterError) as err:
        inventory_setting(name, str(defaults))
    assert fragment in str(err.value)


def test_a_wildcard_default_is_refused_naming_its_file(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "fleet.yml"
    path.write_text("dlfleet_fleet_name: 'team-*'\n")
    _given(monkeypatch)
    with pytest.raises(AnsibleFilterError, match=f"from {path}"):
        inventory_setting("dlfleet_fleet_name", str(path))


def _record(fleet: str, zone: str) -> dict:
    return {"instance_id": f"i-{fleet}-{zone}", "availability_zone": zone, "tags": {"dlfleet:fleet": fleet}}


def test_hosts_are_sorted_by_the_fleet_and_region_they_carry() -> None:
    hostvars = {
        "a": {"dlfleet_instance": _record("fa", "us-east-1a")},                       # provision's add_host
        "b": {"instance_id": "i-b", "placement": {"region": "us-east-1"}, "tags": {"dlfleet:fleet": "fa"}},
        "c": {"instance_id": "i-c", "placement": {"region": "us-east-1"}, "tags": {"dlfleet:fleet": "fb"}},
        "d": {"dlfleet_instance": _record("fa", "eu-west-1b")},
        "e": {"instance_id": "i-e", "placement": {"availability_zone": "us-west-2-lax-1a"}, "tags": {}},
        # a Local Zone host as aws_ec2 describes it: placement.region is the zone less its letter, no region
        "h": {"instance_id": "i-h", "placement": {"availability_zone": "us-east-1-bos-1a", "region": "us-east-1-bos-1"},
              "tags": {"dlfleet:fleet": "fa"}},
        "f": {"ansible_host": "10.1.2.3"},                                              # no EC2 record
        "localhost": {"ansible_connection": "local"},
        "g": {"dlfleet_instance": _record("fa", "us-gov-west-1a")},
    }
    scope = fleet_scope(hostvars, list(hostvars), "fa", "us-east-1")
    assert [h["host"] for h in scope["members"]] == ["a", "b", "h"]
    foreign = {h["host"]: (h["fleet"], h["region"], h["source"]) for h in scope["foreign"]}
    assert foreign == {"c": ("fb", "us-east-1", "aws_ec2 hostvars"),
                       "d": ("fa", "eu-west-1", "dlfleet_instance record"),
                       "e": ("", "us-west-2", "aws_ec2 hostvars"),
                       "g": ("fa", "us-gov-west-1", "dlfleet_instance record")}
    assert scope["unknown"] == [{"host": "f", "address": "10.1.2.3"}, {"host": "localhost", "address": "localhost"}]


def test_an_instance_is_known_by_its_id_addresses_and_names() -> None:
    found = [{"instance_id": "i-1", "public_ip_address": "3.3.3.3", "private_ip_address": "10.0.0.1",
              "public_dns_name": "ec2-3-3-3-3.compute-1.amazonaws.com", "private_dns_name": ""}]
    assert fleet_addresses(found) == ["10.0.0.1", "3.3.3.3", "ec2-3-3-3-3.compute-1.amazonaws.com", "i-1"]
