"""playbooks/provision.yml and playbooks/teardown.yml through real ansible-playbook runs on the emulator.

Each test has a fleet of its own (and its own run/artifacts directories), so tests never see each other's
resources; what exists afterwards is read back from the emulator over boto3.
"""
from __future__ import annotations

import contextlib
import json
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fleet_network
import pytest
import yaml
from helpers import ROOT, PlaybookResult, run_playbook, run_task

PROVISION = "playbooks/provision.yml"
TEARDOWN = "playbooks/teardown.yml"
LIVE = ["pending", "running", "stopping", "stopped"]
G_ON_DEMAND = "L-DB2E81BA"   # vCPU quota of On-Demand G instances
P_ON_DEMAND = "L-417A185B"   # vCPU quota of On-Demand P instances


@contextlib.contextmanager
def quota(emulator, code: str, vcpus: float) -> Iterator[None]:
    """Set one of the emulated account's EC2 vCPU quotas for a while, then put the seeded value back."""
    quotas = emulator.client("service-quotas")
    before = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]

    def set_quota(value: float) -> None:
        subprocess.run([str(ROOT / "scripts/aws-emulator"), "set-quota", code, f"{value:g}",
                        "--state-dir", str(emulator.state_dir)], check=True, capture_output=True, text=True)

    set_quota(vcpus)
    try:
        yield
    finally:
        set_quota(before)


@pytest.fixture(autouse=True)
def room_for_fleets(emulator) -> Iterator[None]:
    """The session emulator is shared by every test file: give these fleets G and P quota of their own."""
    with quota(emulator, G_ON_DEMAND, 4096), quota(emulator, P_ON_DEMAND, 4096):
        yield


class Fleet:
    """One test's fleet: its variables, its playbook runs and what the emulator holds for it."""

    def __init__(self, emulator, aws_env: dict[str, str], tmp_path: Path, **overrides: Any) -> None:
        self.name = f"prov-{uuid.uuid4().hex[:8]}"
        self.emulator, self.env, self.tmp = emulator, aws_env, tmp_path
        self.vars: dict[str, Any] = {
            "dlfleet_fleet_name": self.name,
            "dlfleet_owner": "tests",
            "dlfleet_ttl": "1h",
            "dlfleet_run_dir": str(tmp_path / "run"),
            "dlfleet_artifacts_dir": str(tmp_path / "artifacts" / self.name),
            "provision_wait_timeout": 120,
            **overrides,
        }
        self.ec2 = emulator.client("ec2")

    @property
    def key_file(self) -> Path:
        return self.tmp / "run" / "keys" / "us-east-1" / f"{self.name}.pem"

    @property
    def fleet_json(self) -> Path:
        return self.tmp / "artifacts" / self.name / "fleet.json"

    def provision(self, check: bool = False, env: dict[str, str] | None = None, **extra: Any) -> PlaybookResult:
        return run_playbook(PROVISION, extra_vars={**self.vars, **extra}, env=env or self.env, check=check,
                            diff=check)

    def teardown(self) -> PlaybookResult:
        return run_playbook(TEARDOWN, extra_vars=self.vars, env=self.env)

    def _flt(self) -> list[dict[str, Any]]:
        return [{"Name": "tag:dlfleet:fleet", "Values": [self.name]}]

    def instances(self) -> list[dict[str, Any]]:
        res = self.ec2.describe_instances(Filters=[*self._flt(), {"Name": "instance-state-name", "Values": LIVE}])
        return [i for r in res["Reservations"] for i in r["Instances"]]

    def groups(self) -> list[dict[str, Any]]:
        return self.ec2.describe_security_groups(Filters=self._flt())["SecurityGroups"]

    def key_pairs(self) -> list[dict[str, Any]]:
        return self.ec2.describe_key_pairs(Filters=self._flt())["KeyPairs"]

    def volumes(self) -> list[dict[str, Any]]:
        return self.ec2.describe_volumes(Filters=self._flt())["Volumes"]

    def nothing_left(self) -> bool:
        return not (self.instances() or self.groups() or self.key_pairs() or self.volumes())


@pytest.fixture
def made(emulator) -> Iterator[list[Fleet]]:
    """Fleets a test made; whatever they left (a failed test, a test that skips teardown) is removed after it."""
    fleets: list[Fleet] = []
    yield fleets
    for fleet in fleets:
        ids = [i["InstanceId"] for i in fleet.instances()]
        if ids:
            fleet.ec2.terminate_instances(InstanceIds=ids)
        for group in fleet.groups():
            fleet.ec2.delete_security_group(GroupId=group["GroupId"])
        for key in fleet.key_pairs():
            fleet.ec2.delete_key_pair(KeyName=key["KeyName"])


def _stand_in(fleet: Fleet) -> dict[str, Any]:
    """What a play on group gpu_fleet sees of the stand-in (loading the settings as every play does)."""
    play = [{"name": "The stand-in", "hosts": "gpu_fleet", "gather_facts": False, "roles": ["dlfleet_defaults"],
             "tasks": [{"name": "Show the stand-in", "ansible.builtin.debug": {"msg": {
                 "groups": "{{ groups['gpu_fleet'] }}", "instances": "{{ dlfleet_fleet_instances }}",
                 "instance": "{{ dlfleet_instance }}"}}}]}]
    path = fleet.tmp / "stand-in.yml"
    path.write_text(yaml.safe_dump(play))
    run = run_playbook(path, extra_vars=fleet.vars, env=fleet.env)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.results("Show the stand-in")["msg"]


def _ok(run: PlaybookResult) -> PlaybookResult:
    assert run.rc == 0, f"rc={run.rc}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    return run


def _failure_messages(run: PlaybookResult) -> str:
    return "\n".join(str(res.get("msg", "")) for _, _, res in run.all_results() if res.get("failed"))


def test_check_apply_reapply_scale_and_teardown(emulator, aws_env, tmp_path, made):
    fleet = Fleet(emulator, aws_env, tmp_path)
    made.append(fleet)

    # Check mode: predicts the launch, creates nothing.
    run = _ok(fleet.provision(check=True))
    plan = run.results("Launch the fleet")
    assert plan["changed"] and plan["predicted_launches"] == 2
    assert fleet.nothing_left() and not fleet.key_file.exists()

    # Apply: the default fleet, 2 x g5.xlarge, reachable only from 127.0.0.1/32.
    run = _ok(fleet.provision())
    instances = fleet.instances()
    assert len(instances) == 2 and {i["InstanceType"] for i in instances} == {"g5.xlarge"}
    assert all(i["MetadataOptions"]["HttpTokens"] == "required" for i in instances)
    assert all(i["KeyName"] == f"dlfleet-{fleet.name}" for i in instances)
    volumes = fleet.volumes()
    assert len(volumes) == 2 and all(v["Encrypted"] and v["VolumeType"] == "gp3" for v in volumes)
    assert all(v["Size"] >= 40 for v in volumes)   # at least 40 GiB, and never below the DLAMI's snapshot

    [group] = fleet.groups()
    from_cidrs = [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
                  for p in group["IpPermissions"] if p["IpRanges"] or p.get("Ipv6Ranges")]
    assert from_cidrs == [(22, 22, ["127.0.0.1/32"])]      # SSH only, from the controller only
    for perm in group["IpPermissions"]:                     # anything else: the fleet's own hosts only
        if not perm["IpRanges"]:
            assert {g["GroupId"] for g in perm["UserIdGroupPairs"]} == {group["GroupId"]}
    assert {i["SecurityGroups"][0]["GroupId"] for i in instances} == {group["GroupId"]}

    assert len(fleet.key_pairs()) == 1
    assert stat.S_IMODE(fleet.key_file.stat().st_mode) == 0o600
    secret = fleet.key_file.read_text().strip().splitlines()[1]
    assert secret not in run.stdout and secret not in run.stderr

    doc = json.loads(fleet.fleet_json.read_text())
    assert doc["fleet"] == fleet.name and doc["count"] == 2 and doc["hosts"] == ["localhost"]
    assert {i["instance_id"] for i in doc["instances"]} == {i["InstanceId"] for i in instances}
    assert all(i["gpu_model"] == "A10G" and i["gpu_count"] == 1 for i in doc["instances"])
    cost = doc["cost_estimate"]   # priced by the emulator's seeded Price List API (scripts/emulator/data/pricing.json)
    assert cost["instances"] == {"g5.xlarge": 2}
    assert cost["ec2"]["hourly_usd"] == pytest.approx(2 * 1.006)
    assert cost["ec2"]["prices"]["g5.xlarge"]["source"] == "AWS Price List API" and cost["fallback_reason"] is None
    ebs_hourly = 2 * doc["root_volume"]["size"] * 0.08 / 730   # each instance's gp3 root volume, GB-month prorated
    assert cost["ebs"]["hourly_usd"] == pytest.approx(ebs_hourly, rel=1e-3)
    assert cost["hourly_usd"] == pytest.approx(2 * 1.006 + ebs_hourly, abs=1e-4)
    assert cost["total_usd"] == pytest.approx((2 * 1.006 + ebs_hourly) * 1, abs=0.01)   # ttl 1h

    # The stand-in is inventory/local's localhost (provision_add_hosts: false): no host is added, and it carries the
    # fleet's records from the run's fleet.json.
    assert run.results("Add every instance to group gpu_fleet").get("skipped")
    seen = _stand_in(fleet)
    assert seen["groups"] == ["localhost"]
    assert len(seen["instances"]) == 2 and seen["instance"] == doc["instances"][0]

    # Re-apply: nothing to do.
    run = _ok(fleet.provision())
    assert run.changed == 0, [(t, r.get("changed")) for t, _, r in run.all_results() if r.get("changed")]

    # Another key type on a re-run: refused, naming the key; the only private key the hosts accept stays as it was.
    key_before = fleet.key_file.read_bytes()
    run = fleet.provision(provision_key_type="rsa")
    assert run.rc != 0
    message = _failure_messages(run)
    assert str(fleet.key_file) in message and "is never replaced" in message, message or run.stdout[-3000:]
    assert fleet.key_file.read_bytes() == key_before and len(fleet.instances()) == 2

    # Scale up, then down, through the module alone (the playbook passes count through): the newest go first.
    first = {i["InstanceId"] for i in instances}
    args = {"name": fleet.name, "instance_types": ["g5.xlarge"], "image_id": instances[0]["ImageId"],
            "owner": "tests", "ttl": "1h"}
    up, result = run_task("ec2_gpu_fleet", {**args, "count": 3}, env=fleet.env)
    assert up.rc == 0 and len(result["launched"]) == 1 and len(fleet.instances()) == 3
    down, result = run_task("ec2_gpu_fleet", {**args, "count": 2}, env=fleet.env)
    assert down.rc == 0 and result["changed"] and len(result["terminated"]) == 1
    assert {i["InstanceId"] for i in fleet.instances()} == first

    # Teardown: nothing tagged with the fleet is left, nor the saved key; a second teardown changes nothing.
    run = _ok(fleet.teardown())
    assert fleet.nothing_left() and not fleet.key_file.exists()
    run = _ok(fleet.teardown())
    assert run.changed == 0


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"provision_ssh_cidr": "0.0.0.0/0"}, "provision_ssh_allow_anywhere=true"),
    ({"provision_ssh_cidr": ""}, "give the IPv4 CIDR SSH may come from"),
    ({"provision_ssh_cidr": "10.0.0.300/33"}, "is not allowed"),
    ({"provision_instance_types": ["t3.micro"]}, "have no GPU"),
    ({"provision_root_volume": {"size": 40, "type": "gp2", "iops": 3000}}, "only valid for io1, io2 or gp3"),
])
def test_bad_input_fails_clearly_and_creates_nothing(emulator, aws_env, tmp_path, made, extra, fragment):
    fleet = Fleet(emulator, aws_env, tmp_path)
    made.append(fleet)
    run = fleet.provision(**extra)
    assert run.rc != 0
    assert fragment in _failure_messages(run), _failure_messages(run) or run.stdout[-3000:]
    assert fleet.nothing_left() and not fleet.key_file.exists()


def test_quota_shortfall_stops_before_anything_is_created(emulator, aws_env, tmp_path, made):
    """No type of the fallback list fits: room for one g5.xlarge or g4dn.xlarge (4 vCPUs of G) where the fleet asks
    for two, and no P quota for p3.2xlarge. The message names each type's shortfall."""
    fleet = Fleet(emulator, aws_env, tmp_path)
    made.append(fleet)
    with quota(emulator, G_ON_DEMAND, 4), quota(emulator, P_ON_DEMAND, 0):
        run = fleet.provision()
    assert run.rc != 0
    message = _failure_messages(run)
    assert "no instance type of the list fits the vCPU quotas" in message, message
    assert G_ON_DEMAND in message and P_ON_DEMAND in message
    assert "g5.xlarge:" in message and "g4dn.xlarge:" in message and "p3.2xlarge:" in message
    assert fleet.nothing_left() and not fleet.key_file.exists()


def test_a_fallback_list_where_only_the_last_type_fits_launches_that_type(emulator, aws_env, tmp_path, made):
    """G quota 0 and P quota 8: the default list (g5.xlarge, g4dn.xlarge, p3.2xlarge) launches p3.2xlarge
    instead of failing on the first type's quota."""
    fleet = Fleet(emulator, aws_env, tmp_path, provision_instance_count=1)
    made.append(fleet)
    with quota(emulator, G_ON_DEMAND, 0), quota(emulator, P_ON_DEMAND, 8):
        run = _ok(fleet.provision())
    checked = run.results("Check the vCPU quota for the instances to launch, in each type of the fallback list")
    assert checked["fitting_types"] == ["p3.2xlarge"] and checked["fitting_type"] == "p3.2xlarge"
    assert not checked["by_type"]["g5.xlarge"]["fits"] and not checked["by_type"]["g4dn.xlarge"]["fits"]
    assert [i["InstanceType"] for i in fleet.instances()] == ["p3.2xlarge"]


def test_big_gpu_types_get_a_provisioned_iops_root(emulator, aws_env, tmp_path, made):
    """The seed: with a very powerful type such as p3.8xlarge, choose Provisioned IOPS for the volume."""
    fleet = Fleet(emulator, aws_env, tmp_path, provision_instance_types=["p3.8xlarge"], provision_instance_count=1)
    made.append(fleet)
    _ok(fleet.provision())
    [root] = fleet.volumes()
    assert (root["VolumeType"], root["Size"], root["Iops"], root["Encrypted"]) == ("io2", 100, 6000, True)
    doc = json.loads(fleet.fleet_json.read_text())
    assert doc["root_volume"] == {"size": 100, "type": "io2", "iops": 6000}
    assert doc["instances"][0]["gpu_count"] == 4 and doc["instances"][0]["gpu_model"] == "V100"


def test_no_capacity_falls_back_across_zones_then_types(emulator, faulty_aws, tmp_path, made):
    """Through the fault proxy: no g5.xlarge capacity in either zone, so the fleet tries g5.xlarge in
    us-east-1a, then us-east-1b, then lands on the next type, g4dn.xlarge, in us-east-1a."""
    faulty_aws.configure(capacity=[("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b")])
    fleet = Fleet(emulator, faulty_aws.env, tmp_path, provision_availability_zones=["us-east-1a", "us-east-1b"],
                  provision_dlami_name_pattern="Deep Learning AMI (Ubuntu 18.04) Version *",   # the seed's line
                  # its /usr/bin/python3 is 3.6, too old for ansible-core: one of its conda envs' Python instead
                  provision_python_interpreter="/home/ubuntu/anaconda3/envs/pytorch_p38/bin/python")
    made.append(fleet)
    run = _ok(fleet.provision())
    assert {(i["InstanceType"], i["Placement"]["AvailabilityZone"]) for i in fleet.instances()} == {
        ("g4dn.xlarge", "us-east-1a")}
    assert len(fleet.instances()) == 2 and faulty_aws.counters["capacity"] == 2
    tried = [(a["instance_type"], a["availability_zone"]) for a in run.results("Launch the fleet")["attempts"]]
    assert tried == [("g5.xlarge", "us-east-1a"), ("g5.xlarge", "us-east-1b"), ("g4dn.xlarge", "us-east-1a")]
    doc = json.loads(fleet.fleet_json.read_text())
    assert doc["image"]["line"] == "legacy-conda" and doc["image"]["name"].startswith("Deep Learning AMI (Ubuntu")
    # 40 GiB asked for, but the legacy DLAMI's root snapshot is bigger: the root volume follows the snapshot.
    assert doc["root_volume"]["size"] == doc["image"]["snapshot_size"] > 40
    assert {v["Size"] for v in fleet.volumes()} == {doc["image"]["snapshot_size"]}
    assert doc["cost_estimate"]["instances"] == {"g4dn.xlarge": 2}
    assert doc["cost_estimate"]["ec2"]["hourly_usd"] == pytest.approx(2 * 0.526)
    assert doc["cost_estimate"]["ebs"]["hourly_usd"] == pytest.approx(2 * doc["root_volume"]["size"] * 0.08 / 730,
                                                                      rel=1e-3)


def test_private_fleet_in_two_subnets_has_no_way_in_from_outside_and_is_reached_through_ssm(emulator, aws_env,
                                                                                              tmp_path, made):
    """provision_private_fleet with two subnets of a VPC: the security group is made in that VPC with no inbound
    rule from outside the fleet (no port 22, no CIDR at all, so no SSH CIDR is needed), the hosts get no public
    address and the SSM instance profile, provisioning waits on DescribeInstanceInformation (Online) instead of
    SSH, the run's transfer bucket is made encrypted, and each host joins gpu_fleet with the aws_ssm connection
    settings of inventory/aws/group_vars/gpu_fleet/private.yml. Not exercised: a Session Manager session (the
    emulator has none), so no task runs on a host through aws_ssm here."""
    with fleet_network.network(emulator) as net:
        fleet = Fleet(emulator, aws_env, tmp_path, provision_private_fleet=True, provision_ssh_cidr="",
                      provision_subnet_ids=[net.subnet_a, net.subnet_b], provision_instance_count=2,
                      provision_iam_instance_profile=net.ssm_profile, provision_add_hosts=True)
        fleet.vars["sagemaker_bucket"] = f"dlfleet-sagemaker-{fleet.name}"
        made.append(fleet)
        plan = _ok(fleet.provision(check=True))   # check mode plans it: the subnets' VPC, two launches, nothing made
        assert plan.results("Plan the fleet (check every input; nothing is created before this passes)")[
            "vpc_id"] == net.vpc
        assert fleet.nothing_left()
        start = len((emulator.state_dir / "requests.jsonl").read_text().splitlines())
        run = _ok(fleet.provision())
        actions = [json.loads(line)["action"]
                   for line in (emulator.state_dir / "requests.jsonl").read_text().splitlines()[start:] if line]

        [group] = fleet.groups()
        assert group["VpcId"] == net.vpc
        inbound = group["IpPermissions"]
        assert inbound and all(not p.get("IpRanges") and not p.get("Ipv6Ranges") for p in inbound), inbound
        assert all(not p["FromPort"] <= 22 <= p["ToPort"] for p in inbound), inbound
        assert [pair["GroupId"] for p in inbound for pair in p["UserIdGroupPairs"]] == [group["GroupId"]]
        instances = fleet.instances()
        assert len(instances) == 2
        for inst in instances:
            assert inst["SubnetId"] == net.subnet_a and not inst.get("PublicIpAddress")
            assert inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{net.ssm_profile}")
        assert "DescribeInstanceInformation" in actions
        assert sorted(run.results("Launch the fleet")["ssm_online"]) == sorted(i["InstanceId"] for i in instances)

        bucket = fleet.vars["sagemaker_bucket"]
        rules = emulator.client("s3").get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        add_hosts = run.results("Add every instance to group gpu_fleet, reached through Systems Manager")
        added = {r["add_host"]["host_name"]: r["add_host"]["host_vars"] for r in add_hosts["results"]}
        assert sorted(added) == sorted(i["InstanceId"] for i in instances)
        settings = yaml.safe_load((ROOT / "inventory/aws/group_vars/gpu_fleet/private.yml").read_text())
        for host, hostvars in added.items():
            assert hostvars["ansible_connection"] == "amazon.aws.aws_ssm"
            assert hostvars["ansible_aws_ssm_instance_id"] == host and hostvars["ansible_aws_ssm_region"] == "us-east-1"
            assert hostvars["ansible_aws_ssm_bucket_name"] == bucket
            assert hostvars["ansible_aws_ssm_bucket_sse_mode"] == "AES256"
            assert hostvars["ansible_python_interpreter"] == "/usr/bin/python3"   # as the SSH hosts get it
            assert set(settings) <= set(hostvars), set(settings) - set(hostvars)   # the same settings as the inventory
        doc = json.loads(fleet.fleet_json.read_text())
        assert doc["private_fleet"] is True and doc["ssm_bucket"] == bucket and doc["ssh_cidr"] == ""
        assert doc["vpc_id"] == net.vpc and doc["hosts"] == [i["instance_id"] for i in doc["instances"]]
        rerun = _ok(fleet.provision())   # the bucket, the rule-less group and the fleet as they are: nothing to do
        assert rerun.changed == 0, [(t, r.get("changed")) for t, _, r in rerun.all_results() if r.get("changed")]

        # A subnet of another region is refused before anything is created, naming the variable.
        other = Fleet(emulator, aws_env, tmp_path / "west", provision_subnet_ids=[net.subnet_a, net.west_subnet])
        made.append(other)
        run = other.provision()
        assert run.rc != 0
        message = _failure_messages(run)
        assert f"provision_subnet_ids {net.west_subnet} are not subnets of us-east-1" in message, message
        assert other.nothing_left() and not other.key_file.exists()
