"""Every user setting lives once, in roles/dlfleet_defaults (documented there and in its argument spec); playbooks
carry no default() of their own for one; each inventory holds only what differs for its target."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "dlfleet_defaults"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def _vars(folder: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(folder.glob("*.yml")):
        out.update(yaml.safe_load(path.read_text()) or {})
    return out


def test_every_setting_has_a_spec_entry_with_its_default_and_every_entry_a_setting() -> None:
    assert set(SPEC) == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        if "{{" not in yaml.safe_dump(value):   # a derived default is described, not repeated
            assert SPEC[name].get("default") == value, name
        assert SPEC[name].get("description"), name
        if "choices" in SPEC[name]:
            assert value in SPEC[name]["choices"], name


def test_no_playbook_gives_a_setting_a_default_of_its_own() -> None:
    files = [*ROOT.joinpath("playbooks").rglob("*.yml"), ROOT / "site.yml"]
    found = []
    for path in files:
        text = path.read_text()
        for name in DEFAULTS:
            if re.search(rf"(?<![\w.]){re.escape(name)}\s*\|\s*default\(", text):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []


def test_inventories_hold_only_what_differs_and_link_to_nothing() -> None:
    assert [p for p in ROOT.joinpath("inventory").rglob("*") if p.is_symlink()] == []
    local = _vars(ROOT / "inventory" / "local" / "group_vars" / "all")
    assert set(local) <= set(DEFAULTS), set(local) - set(DEFAULTS)
    assert all(local[name] != DEFAULTS[name] for name in local), [n for n in local if local[n] == DEFAULTS[n]]
    # AWS: the defaults hold; its inventory says only that its fleet hosts are EC2 instances.
    assert set(_vars(ROOT / "inventory" / "aws" / "group_vars" / "all")) == {"dlfleet_fleet_hosts_on_ec2"}
    assert DEFAULTS["dlfleet_fleet_name"] != local["dlfleet_fleet_name"] == "dlfleet-local"


def test_the_aws_inventory_reads_fleet_and_region_from_the_one_defaults_file() -> None:
    source = (ROOT / "inventory" / "aws" / "dlfleet.aws_ec2.yml").read_text()
    assert source.count("dlfleet_inventory_setting('roles/dlfleet_defaults/defaults/main.yml')") == 2
