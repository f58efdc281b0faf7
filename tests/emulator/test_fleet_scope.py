"""One fleet, one region: inventory/aws lists the instances of dlfleet_fleet_name in dlfleet_region only (from the
default in roles/dlfleet_defaults or from -e), a wildcard fleet name matches nothing, and a play on gpu_fleet
whose group also holds another fleet's or region's host stops before any task runs (playbooks/tasks/fleet_scope.yml).
Two fleets in two regions on the emulator; the hosts are never reached (the check stops the plays first)."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, ansible_env, plain_inventory_value, run_playbook

DEFAULT_FLEET = "dlfleet"         # roles/dlfleet_defaults/defaults/main.yml (offline: dlfleet-local)
DEFAULT_REGION = "us-east-1"      # roles/dlfleet_defaults/defaults/main.yml
LAUNCH = {("us-east-1", "fa"): 2, ("us-east-1", "fb"): 1, ("us-east-1", DEFAULT_FLEET): 1,
          ("eu-west-1", "fa"): 1, ("eu-west-1", "fb"): 1}
SCOPE_TASKS = {"Check the fleet and region names",   # the controller's play, first in each playbook
               "Check the fleet and region names the fleet's hosts are held to",
               "Look up the fleet's instances, for hosts that carry no EC2 record",
               "Stop when the fleet's group holds a host of another fleet or region"}
# The check of the settings' types (roles/dlfleet_defaults/meta/argument_specs.yml) in the controller's play: it
# reads variables only and touches no host.
SETTINGS_CHECK = "dlfleet_defaults : Validating arguments against arg spec 'main'"


@pytest.fixture(scope="module")
def fleets(emulator) -> dict[tuple[str, str], list[dict]]:
    """Tagged instances of fleets fa, fb and the default fleet in us-east-1 and eu-west-1, and one untagged; each
    (region, fleet) with its instances as EC2 describes them."""
    emulator.reset()
    out: dict[tuple[str, str], list[dict]] = {}
    for (region, fleet), count in LAUNCH.items():
        ec2 = emulator.client("ec2", region)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        tags = [{"Key": "dlfleet:fleet", "Value": fleet}, {"Key": "dlfleet:owner", "Value": "test"},
                {"Key": "dlfleet:ttl", "Value": "1h"}]
        run = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=count, MaxCount=count,
                                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        ids = [i["InstanceId"] for i in run["Instances"]]
        out[(region, fleet)] = ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"]
    emulator.client("ec2").run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
    yield out
    emulator.reset()


def _extra(pairs: dict[str, str]) -> list[str]:
    return [arg for key, value in pairs.items() for arg in ("-e", f"{key}={value}")]


def _inventory(emulator, pairs: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", "inventory/aws", "--list", *_extra(pairs)],
                          cwd=ROOT, env=ansible_env(emulator.env), capture_output=True, text=True, timeout=300)
    return proc, (json.loads(proc.stdout) if proc.returncode == 0 else {})


def _list_hosts(emulator, playbook: str, pairs: dict[str, str]) -> list[list[str]]:
    """The hosts of each play, as --list-hosts shows them."""
    proc = subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", "inventory/aws", playbook, "--list-hosts",
                           *_extra(pairs)], cwd=ROOT, env=ansible_env({**emulator.env, "ANSIBLE_STDOUT_CALLBACK":
                                                                         "default"}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plays: list[list[str]] = []
    listing = False
    for line in proc.stdout.splitlines():
        if line.strip().startswith("hosts ("):
            listing = True
            plays.append([])
        elif listing and line.strip():
            plays[-1].append(line.strip())
        else:
            listing = False
    return [sorted(hosts) for hosts in plays]


@pytest.mark.parametrize(("pairs", "region", "fleet"), [
    ({}, DEFAULT_REGION, DEFAULT_FLEET),                                   # both defaults
    ({"dlfleet_fleet_name": "fa"}, DEFAULT_REGION, "fa"),                  # the default region
    ({"dlfleet_fleet_name": "fb"}, DEFAULT_REGION, "fb"),
    ({"dlfleet_fleet_name": "fa", "dlfleet_region": "eu-west-1"}, "eu-west-1", "fa"),
    ({"dlfleet_fleet_name": "fb", "dlfleet_region": "eu-west-1"}, "eu-west-1", "fb"),
])
def test_the_aws_inventory_and_the_plays_hold_one_fleet_in_one_region(emulator, fleets, pairs, region, fleet):
    proc, inv = _inventory(emulator, pairs)
    assert proc.returncode == 0, proc.stderr
    hostvars = plain_inventory_value(inv["_meta"]["hostvars"])
    group = inv.get("gpu_fleet", {}).get("hosts", [])
    assert sorted(hostvars[h]["instance_id"] for h in group) == sorted(i["InstanceId"] for i in fleets[(region, fleet)])
    assert sorted(hostvars) == sorted(group)   # nothing of another fleet, region or untagged is listed at all
    assert {(hostvars[h]["placement"]["region"], hostvars[h]["tags"]["dlfleet:fleet"]) for h in group} == {
        (region, fleet)}
    # The plays target the hosts the inventory lists, from the same -e or default (one play of each is enough).
    plays = {("fa", DEFAULT_REGION): ("playbooks/configure.yml", 2), ("fb", "eu-west-1"): ("playbooks/train.yml", 1)}
    if (fleet, region) in plays:
        playbook, count = plays[(fleet, region)]
        assert _list_hosts(emulator, playbook, pairs) == [["localhost"]] + [sorted(group)] * count, playbook


def test_a_wildcard_or_a_bad_region_matches_nothing_and_says_why(emulator, fleets):
    for pairs, fragment in (({"dlfleet_fleet_name": "f*"}, "fleet name 'f*' is not allowed"),
                            ({"dlfleet_fleet_name": "fa", "dlfleet_region": "eu-*"}, "not an AWS region name")):
        proc, _ = _inventory(emulator, pairs)
        assert proc.returncode != 0, proc.stdout
        assert fragment in proc.stderr and "No EC2 instance was looked up" in proc.stderr, proc.stderr
    # A playbook stops at the inventory (ansible.cfg: any_unparsed_is_failed), before any play: an empty group would
    # otherwise end green having done nothing.
    run = run_playbook("playbooks/train.yml", env=ansible_env(emulator.env), args=["-i", "inventory/aws"],
                       extra_vars={"dlfleet_fleet_name": "f?", "dlfleet_region": "eu-west-1"}, timeout=300)
    assert run.rc != 0 and run.all_results() == [], run.stdout[-3000:]
    assert "fleet name 'f?' is not allowed" in run.stdout + run.stderr, run.stderr[-3000:]


def test_an_encrypted_extra_vars_file_reaches_the_inventory_with_the_runs_vault_password(emulator, fleets,
                                                                                         tmp_path: Path):
    """-e @vault.yml with --vault-password-file: the inventory reads the fleet and region from the encrypted file
    as the plays do (it once could not, and listed no host)."""
    password = tmp_path / "vault-password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    vault = tmp_path / "vault.yml"
    vault.write_text("dlfleet_fleet_name: fb\ndlfleet_region: eu-west-1\n")
    subprocess.run([str(ROOT / ".venv/bin/ansible-vault"), "encrypt", "--vault-password-file", str(password),
                    str(vault)], cwd=ROOT, env=ansible_env(), check=True, capture_output=True, timeout=120)
    assert vault.read_text().startswith("$ANSIBLE_VAULT")
    proc = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", "inventory/aws", "--list",
                           "-e", f"@{vault}", "--vault-password-file", str(password)],
                          cwd=ROOT, env=ansible_env(emulator.env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    hostvars = plain_inventory_value(json.loads(proc.stdout)["_meta"]["hostvars"])
    assert sorted(h["instance_id"] for h in hostvars.values()) == [fleets[("eu-west-1", "fb")][0]["InstanceId"]]


@pytest.mark.parametrize("playbook", ["playbooks/configure.yml", "playbooks/train.yml"])
def test_a_mixed_group_stops_the_play_before_any_task(emulator, fleets, tmp_path: Path, playbook: str):
    """A second inventory source adds to gpu_fleet: an instance of fleet fb (its aws_ec2 facts), one of fa in
    eu-west-1 (provision's dlfleet_instance record), a hand-written address that is no fa instance, and one that is
    (kept). The fa hosts of us-east-1 that inventory/aws lists are unreachable: no task may try them."""
    fa = fleets[("us-east-1", "fa")]
    fb, fa_eu = fleets[("us-east-1", "fb")][0], fleets[("eu-west-1", "fa")][0]
    extra = {"all": {"children": {"gpu_fleet": {"hosts": {
        "stray-fb": {"instance_id": fb["InstanceId"], "placement": {"region": "us-east-1"},
                     "tags": {"dlfleet:fleet": "fb"}},
        "fa-in-eu": {"dlfleet_instance": {"instance_id": fa_eu["InstanceId"], "tags": {"dlfleet:fleet": "fa"},
                                          "availability_zone": fa_eu["Placement"]["AvailabilityZone"]}},
        "hand-written": {"ansible_host": "10.9.9.9"},
        "fa-by-address": {"ansible_host": fa[0]["PublicIpAddress"]},
    }}}}}
    source = tmp_path / "extra.yml"
    source.write_text(yaml.safe_dump(extra))
    run = run_playbook(playbook, env=ansible_env(emulator.env), extra_vars={"dlfleet_fleet_name": "fa"},
                       args=["-i", "inventory/aws", "-i", str(source)], timeout=300)
    assert run.rc != 0, run.stdout[-3000:]
    ran = [(t, h, r) for t, h, r in run.all_results() if not (t.startswith(SETTINGS_CHECK) and h == "localhost")]
    assert ran and {task for task, _, _ in ran} <= SCOPE_TASKS, ran
    stop = [res for task, _, res in ran if task.startswith("Stop when")]
    assert len(stop) == 1 and stop[0].get("failed"), ran
    msg = stop[0]["msg"]
    assert "holds 3 host(s) that are not of fleet fa in us-east-1" in msg, msg
    assert f"stray-fb (instance {fb['InstanceId']} of fleet fb in us-east-1" in msg, msg
    assert f"fa-in-eu (instance {fa_eu['InstanceId']} of fleet fa in eu-west-1" in msg, msg
    assert "hand-written (address 10.9.9.9 is no instance" in msg, msg
    assert "fa-by-address" not in msg and not any(i["PublicDnsName"] in msg for i in fa), msg
    # the controller's name check, then the first play on the fleet; the second play of configure.yml never starts
    assert len(run.data["plays"]) == 2, [p["play"]["name"] for p in run.data["plays"]]


def _connection_settings(emulator, pairs: dict[str, str]) -> dict[str, object]:
    """The connection settings of the one host of fleet fb in eu-west-1, as Ansible templates them for it in a play
    that loads the settings as every play does (debug connects to nothing)."""
    probe = "[ansible_ssh_common_args,ansible_python_interpreter,ansible_connection]"
    play = [{"name": "Connection settings", "hosts": "gpu_fleet", "gather_facts": False, "roles": ["dlfleet_defaults"],
             "tasks": [{"name": "Show the connection settings", "ansible.builtin.debug": {"var": probe}}]}]
    path = ROOT / "tests" / ".tmp-play-fleet-scope-connection.yml"
    path.write_text(yaml.safe_dump(play))
    try:
        proc = subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", "inventory/aws", str(path),
                               *_extra({"dlfleet_fleet_name": "fb", "dlfleet_region": "eu-west-1", **pairs})],
                              cwd=ROOT, env=ansible_env({**emulator.env, "ANSIBLE_STDOUT_CALLBACK": "json"}),
                              capture_output=True, text=True, timeout=300)
    finally:
        path.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = json.loads(proc.stdout[proc.stdout.find("{"):])["plays"][0]["tasks"]
    hosts = next(t for t in tasks if t["task"]["name"] == "Show the connection settings")["hosts"]
    assert len(hosts) == 1
    common_args, python, connection = next(iter(hosts.values()))[probe]
    return {"args": shlex.split(common_args), "python": python, "connection": connection}


def test_host_keys_python_and_connection_of_the_fleet_found_later(emulator, fleets, tmp_path: Path):
    """A later run on inventory/aws: host keys are accepted once, kept per region and fleet and filed under the
    instance id (an address reused by another instance is a new host, not a changed key); the hosts use
    provision_python_interpreter when it is named; a fleet that fleet.json records as private is reached through
    SSM without -e provision_private_fleet=true, and a record of another fleet changes nothing."""
    [host] = fleets[("eu-west-1", "fb")]
    known = ROOT / ".run/keys/eu-west-1/fb.known_hosts"
    keys = ["-o", "StrictHostKeyChecking=accept-new", "-o", f'UserKnownHostsFile="{known}"',
            "-o", f"HostKeyAlias={host['InstanceId']}"]
    runs = {}
    for name, fleet in (("other", "fa"), ("this", "fb")):
        artifacts = tmp_path / name
        artifacts.mkdir()
        (artifacts / "fleet.json").write_text(json.dumps({"fleet": fleet, "region": "eu-west-1",
                                                          "private_fleet": True, "ssm_bucket": "b"}))
        runs[name] = artifacts
    assert _connection_settings(emulator, {"dlfleet_artifacts_dir": str(runs["other"])}) == {
        "args": keys, "python": "/usr/bin/python3", "connection": "ssh"}
    assert _connection_settings(emulator, {"dlfleet_artifacts_dir": str(runs["this"]),
                                           "provision_python_interpreter": "/opt/conda/envs/py310/bin/python"}) == {
        "args": keys, "python": "/opt/conda/envs/py310/bin/python", "connection": "amazon.aws.aws_ssm"}
