"""inventory/aws: the amazon.aws.aws_ec2 plugin finds the fleet by its dlfleet tags (against the emulator). Other
fleets and regions: test_fleet_scope.py."""
from __future__ import annotations

import json
import subprocess

import yaml
from helpers import ROOT, ansible_env, plain_inventory_value, run_playbook

FLEET = "inv-aws"


def _launch(emulator, count: int) -> list[str]:
    ec2 = emulator.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "dlfleet:fleet", "Value": FLEET}, {"Key": "dlfleet:owner", "Value": "test"},
            {"Key": "dlfleet:ttl", "Value": "1h"}]
    out = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=count, MaxCount=count,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    # An untagged instance that the inventory must not list.
    ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
    return [i["InstanceId"] for i in out["Instances"]]


def test_aws_inventory_lists_the_tagged_fleet_with_its_groups_and_vars(emulator):
    emulator.reset()
    ids = _launch(emulator, 2)
    proc = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", "inventory/aws", "--list",
                           "-e", f"dlfleet_fleet_name={FLEET}"],
                          cwd=ROOT, env=ansible_env(emulator.env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    fleet_hosts = inv["gpu_fleet"]["hosts"]
    assert len(fleet_hosts) == 2
    assert sorted(inv[f"fleet_{FLEET.replace('-', '_')}"]["hosts"]) == sorted(fleet_hosts)
    assert sorted(inv["type_g5_xlarge"]["hosts"]) == sorted(fleet_hosts)
    hostvars = plain_inventory_value(inv["_meta"]["hostvars"])
    assert sorted(hostvars[h]["instance_id"] for h in fleet_hosts) == sorted(ids)
    one = hostvars[fleet_hosts[0]]
    assert one["ansible_user"] == "ubuntu"
    assert one["dlfleet_instance_type"] == "g5.xlarge"
    # The settings a play on the AWS fleet sees are the AWS defaults (roles/dlfleet_defaults), none of the offline
    # values of inventory/local.
    seen = _settings_seen(emulator, fleet_hosts[0], ["provision_ssh_cidr", "provision_add_hosts",
                                                     "sagemaker_instance_type", "dlfleet_fleet_hosts_on_ec2"])
    assert seen == {"provision_ssh_cidr": "", "provision_add_hosts": True, "sagemaker_instance_type": "ml.p3.2xlarge",
                    "dlfleet_fleet_hosts_on_ec2": True}
    emulator.reset()


def test_ad_hoc_commands_on_the_aws_inventory_need_no_play(emulator):
    """`ansible -i inventory/aws gpu_fleet ...` loads no play's settings: the hosts' connection is still worked out
    (ssh, Systems Manager only when -e says private), with the key file given by -e."""
    emulator.reset()
    _launch(emulator, 1)
    base = [str(ROOT / ".venv/bin/ansible"), "gpu_fleet", "-i", "inventory/aws", "-m", "ansible.builtin.debug",
            "-a", "var=ansible_connection", "-e", f"dlfleet_fleet_name={FLEET}",
            "-e", "dlfleet_key_file=/nonexistent.pem"]
    env = {**ansible_env(emulator.env), "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"}
    public = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert public.returncode == 0, public.stdout[-2000:] + public.stderr[-2000:]
    assert '"ansible_connection": "ssh"' in public.stdout
    private = subprocess.run([*base, "-e", "provision_private_fleet=true"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert private.returncode == 0, private.stdout[-2000:] + private.stderr[-2000:]
    assert '"ansible_connection": "amazon.aws.aws_ssm"' in private.stdout
    emulator.reset()


def _settings_seen(emulator, host: str, names: list[str]) -> dict[str, object]:
    """The values of `names` in a play on gpu_fleet of inventory/aws that loads the settings as every play does."""
    play = [{"name": "Settings seen on the fleet", "hosts": "gpu_fleet", "gather_facts": False,
             "roles": ["dlfleet_defaults"],
             "tasks": [{"name": "Show the settings",
                        "ansible.builtin.debug": {"msg": {n: f"{{{{ {n} }}}}" for n in names}}}]}]
    path = ROOT / "tests" / f".tmp-play-inventory-aws-{FLEET}.yml"
    path.write_text(yaml.safe_dump(play))
    try:
        run = run_playbook(path, env=emulator.env, args=["-i", "inventory/aws", "-e", f"dlfleet_fleet_name={FLEET}"])
    finally:
        path.unlink(missing_ok=True)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.results("Show the settings", host)["msg"]
