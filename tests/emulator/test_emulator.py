"""The embedded AWS emulator (scripts/aws-emulator): lifecycle, seeded account, request log, persistence.

Every check goes over real HTTP through boto3 to the moto server the script starts.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from helpers import ROOT, Emulator, read_env

SCRIPT = str(ROOT / "scripts/aws-emulator")
DLAMI_OWNER = "898082745236"


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"aws-emulator {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _processes_for(state_dir: Path) -> list[int]:
    """Live processes whose command line names this state dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(state_dir) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@contextmanager
def own_emulator(state_dir: Path, *extra: str) -> Iterator[Emulator]:
    _cli("start", "--state-dir", str(state_dir), *extra)
    try:
        env = read_env(state_dir / "env")
        yield Emulator(state_dir, env["AWS_ENDPOINT_URL"], env)
    finally:
        _cli("stop", "--state-dir", str(state_dir), check=False)


def test_env_file_exports_endpoint_credentials_and_region(emulator: Emulator) -> None:
    env = emulator.env
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    pid = int((emulator.state_dir / "pid").read_text())
    assert pid in _processes_for(emulator.state_dir)
    assert _cli("status", "--state-dir", str(emulator.state_dir)).returncode == 0


def test_dlami_images_are_amazons_with_dates_architectures_and_real_root_sizes(emulator: Emulator) -> None:
    ec2 = emulator.client("ec2")
    current = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]}])["Images"]
    assert len(current) >= 3, "several dates, so that 'newest' means something"
    assert {i["OwnerId"] for i in current} == {DLAMI_OWNER}
    assert {i.get("ImageOwnerAlias") for i in current} == {"amazon"}
    assert len({i["CreationDate"] for i in current}) == len(current)
    legacy = ec2.describe_images(Owners=[DLAMI_OWNER], Filters=[
        {"Name": "name", "Values": ["Deep Learning AMI (Ubuntu 18.04) Version *"]}])["Images"]
    assert len(legacy) >= 2
    arm = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["Deep Learning ARM64 *"]}, {"Name": "architecture", "Values": ["arm64"]}])
    assert arm["Images"]
    pytorch = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.5* (Ubuntu 22.04) *"]}])
    assert pytorch["Images"]
    for image in current + legacy:
        root = image["BlockDeviceMappings"][0]["Ebs"]
        snapshot = ec2.describe_snapshots(SnapshotIds=[root["SnapshotId"]])["Snapshots"][0]
        assert 75 <= root["VolumeSize"] == snapshot["VolumeSize"] <= 140, image["Name"]


def test_ssm_deeplearning_parameters_point_at_the_newest_image_of_their_family(emulator: Emulator) -> None:
    ssm, ec2 = emulator.client("ssm"), emulator.client("ec2")
    params = []
    for arch in ("x86_64", "arm64"):
        pages = ssm.get_paginator("get_parameters_by_path").paginate(
            Path=f"/aws/service/deeplearning/ami/{arch}", Recursive=True)
        params += [p for page in pages for p in page["Parameters"]]
    names = {p["Name"] for p in params}
    assert "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id" in names
    assert "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id" in names
    assert any("pytorch" in n for n in names)
    for param in params:
        arch = param["Name"].split("/")[5]
        image = ec2.describe_images(ImageIds=[param["Value"]])["Images"][0]
        assert image["Architecture"] == arch and image["OwnerId"] == DLAMI_OWNER
        same_family = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": [image["Name"].rsplit(" ", 1)[0] + " *"]},
            {"Name": "architecture", "Values": [arch]}])["Images"]
        assert image["CreationDate"] == max(i["CreationDate"] for i in same_family)


def test_p2_p3_instance_types_carry_real_gpu_data_and_az_offerings(emulator: Emulator) -> None:
    ec2 = emulator.client("ec2")
    types = {t["InstanceType"]: t for t in ec2.describe_instance_types(
        InstanceTypes=["p2.xlarge", "p3.2xlarge", "p3.8xlarge"])["InstanceTypes"]}
    expected = {"p2.xlarge": (4, 62464, "K80", 1, 12288), "p3.2xlarge": (8, 62464, "V100", 1, 16384),
                "p3.8xlarge": (32, 249856, "V100", 4, 16384)}
    for name, (vcpus, mem, gpu, count, gpu_mib) in expected.items():
        rec = types[name]
        assert rec["VCpuInfo"]["DefaultVCpus"] == vcpus and rec["MemoryInfo"]["SizeInMiB"] == mem
        (g,) = rec["GpuInfo"]["Gpus"]
        assert (g["Name"], g["Count"], g["MemoryInfo"]["SizeInMiB"], g["Manufacturer"]) == (gpu, count, gpu_mib,
                                                                                            "NVIDIA")
    offers = ec2.describe_instance_type_offerings(LocationType="availability-zone", Filters=[
        {"Name": "instance-type", "Values": ["p3.2xlarge"]}])["InstanceTypeOfferings"]
    zones = {o["Location"] for o in offers}
    assert len(zones) >= 3 and all(z.startswith("us-east-1") for z in zones)
    absent = sorted({z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]} - zones)
    image = emulator.client("ssm").get_parameter(
        Name="/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id")
    if absent:
        with pytest.raises(ClientError) as err:
            ec2.run_instances(ImageId=image["Parameter"]["Value"], MinCount=1, MaxCount=1, InstanceType="p3.2xlarge",
                              Placement={"AvailabilityZone": absent[0]})
        assert err.value.response["Error"]["Code"] == "Unsupported"
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=image["Parameter"]["Value"], MinCount=1, MaxCount=1, InstanceType="p9.xlarge")
    assert "InvalidInstanceType" in err.value.response["Error"]["Code"]


def test_service_quotas_applied_default_and_missing(emulator: Emulator) -> None:
    sq = emulator.client("service-quotas")
    g = sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-DB2E81BA")["Quota"]
    assert g["Value"] >= 8, "the default fleet (2 x g5.xlarge = 8 vCPUs of G) must fit"
    assert g["QuotaName"] == "Running On-Demand G and VT instances"
    with pytest.raises(ClientError) as err:
        sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-7212CCBC")
    assert err.value.response["Error"]["Code"] == "NoSuchResourceException"
    default = sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode="L-7212CCBC")["Quota"]
    assert default["Value"] == 0 and default["UsageMetric"]["MetricDimensions"]["Class"] == "P/Spot"
    pages = sq.get_paginator("list_service_quotas").paginate(ServiceCode="ec2", PaginationConfig={"PageSize": 2})
    applied = {q["QuotaCode"] for page in pages for q in page["Quotas"]}
    assert {"L-417A185B", "L-DB2E81BA", "L-1216C47A", "L-34B43A08", "L-3819A6DF"} <= applied
    assert "L-7212CCBC" not in applied
    defaults = sq.list_aws_default_service_quotas(ServiceCode="ec2")["Quotas"]
    assert {"L-417A185B", "L-7212CCBC", "L-1945791B", "L-2C3B7624", "L-6E869C2A"} <= {q["QuotaCode"] for q in defaults}


def test_request_log_has_one_line_per_api_call_with_service_action_status(emulator: Emulator) -> None:
    log = emulator.state_dir / "requests.jsonl"
    before = len(log.read_text().splitlines())
    emulator.client("ec2").describe_regions()
    emulator.client("ssm").get_parameters_by_path(Path="/aws/service/deeplearning/ami/x86_64")
    with pytest.raises(ClientError):
        emulator.client("service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode="L-7212CCBC")
    s3 = emulator.client("s3")
    s3.create_bucket(Bucket="emulator-log-test")
    s3.put_object(Bucket="emulator-log-test", Key="a/b.txt", Body=b"x", ServerSideEncryption="AES256")
    s3.list_objects_v2(Bucket="emulator-log-test")
    new = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert [(e["service"], e["action"]) for e in new] == [
        ("ec2", "DescribeRegions"), ("ssm", "GetParametersByPath"), ("servicequotas", "GetServiceQuota"),
        ("s3", "CreateBucket"), ("s3", "PutObject"), ("s3", "ListObjectsV2")]
    assert [e["status"] for e in new][:3] == [200, 200, 400]
    assert all(e["method"] and e["path"] and e["time"] > 0 and e["region"] == "us-east-1" for e in new)


def test_start_stop_status_leave_no_stray_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "emu"
    with own_emulator(state_dir, "--no-persist") as emu:
        pid = int((state_dir / "pid").read_text())
        assert _processes_for(state_dir) == [pid]
        again = _cli("start", "--state-dir", str(state_dir), "--no-persist")
        assert "already running" in again.stdout and int((state_dir / "pid").read_text()) == pid
        assert emu.client("sts").get_caller_identity()["Account"]
    assert _processes_for(state_dir) == []
    assert not (state_dir / "pid").exists() and not (state_dir / "env").exists()
    assert _cli("status", "--state-dir", str(state_dir), check=False).returncode == 3
    assert "not running" in _cli("stop", "--state-dir", str(state_dir)).stdout


def test_start_on_a_busy_port_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _cli("start", "--state-dir", str(tmp_path), "--port", str(port), "--no-persist", check=False)
    assert proc.returncode != 0
    assert "before it was ready" in proc.stderr and "Address already in use" in proc.stderr
    assert _processes_for(tmp_path) == [] and not (tmp_path / "pid").exists()


def test_state_persists_across_stop_start_and_reset_wipes_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "emu"
    with own_emulator(state_dir) as emu:
        ec2 = emu.client("ec2")
        image = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "name", "Values": ["Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"]}])["Images"][0]
        group = ec2.create_security_group(GroupName="persist", Description="persistence test")["GroupId"]
        launched = ec2.run_instances(ImageId=image["ImageId"], MinCount=2, MaxCount=2, InstanceType="g5.xlarge",
                                     SecurityGroupIds=[group])["Instances"]
        emu.client("ssm").put_parameter(Name="/dlfleet/test", Value="kept", Type="String")
        launch_times = {i["InstanceId"]: i["LaunchTime"] for i in launched}
    assert (state_dir / "state.pickle").exists()
    with own_emulator(state_dir) as emu:
        ec2 = emu.client("ec2")
        found = {i["InstanceId"]: i["LaunchTime"] for r in ec2.describe_instances(
            Filters=[{"Name": "instance.group-id", "Values": [group]}])["Reservations"] for i in r["Instances"]}
        assert found == launch_times
        assert emu.client("ssm").get_parameter(Name="/dlfleet/test")["Parameter"]["Value"] == "kept"
        _cli("reset", "--state-dir", str(state_dir))
        assert ec2.describe_instances()["Reservations"] == []
        assert ec2.describe_images(ImageIds=[image["ImageId"]])["Images"], "reset seeds the account again"
    with own_emulator(state_dir) as emu:
        assert emu.client("ec2").describe_instances()["Reservations"] == []


def test_no_persist_starts_clean_even_over_a_saved_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "emu"
    with own_emulator(state_dir) as emu:
        emu.client("ec2").create_key_pair(KeyName="persisted")
    with own_emulator(state_dir, "--no-persist") as emu:
        assert emu.client("ec2").describe_key_pairs()["KeyPairs"] == []


def test_set_quota_changes_the_account_value_and_none_restores_the_default(emulator: Emulator) -> None:
    sq = emulator.client("service-quotas")
    state = ["--state-dir", str(emulator.state_dir)]
    original = sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-417A185B")["Quota"]["Value"]
    try:
        _cli("set-quota", "L-417A185B", "8", *state)
        assert sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-417A185B")["Quota"]["Value"] == 8
        _cli("set-quota", "L-417A185B", "none", *state)
        with pytest.raises(ClientError):
            sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-417A185B")
        bad = _cli("set-quota", "L-NOPE", "8", *state, check=False)
        assert bad.returncode == 1 and "unknown quota code L-NOPE" in bad.stderr
    finally:
        _cli("set-quota", "L-417A185B", f"{original:g}", *state)


def test_script_falls_back_to_python3_without_the_venv(tmp_path: Path) -> None:
    """A copy of the script with no .venv beside it runs the python3 found on PATH."""
    import shutil

    copy = tmp_path / "project"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, copy / "scripts/aws-emulator")
    shutil.copytree(ROOT / "scripts/emulator", copy / "scripts/emulator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "python3-ran"
    real = shutil.which("python3")
    (bindir / "python3").write_text(f"#!/bin/sh\necho ran > {marker}\nexec {real} \"$@\"\n")
    (bindir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(copy / "scripts/aws-emulator"), "status", "--state-dir", str(tmp_path / "emu")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (3, "aws-emulator: stopped"), proc.stderr
    assert marker.exists()


def test_emulator_clients_reach_it_through_the_standard_endpoint_variable(emulator: Emulator,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    assert boto3.client("ec2").describe_availability_zones()["AvailabilityZones"]
