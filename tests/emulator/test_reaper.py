"""The TTL reaper and fleet sweep (dlfleet_reaper) on the emulator, with resources of mixed ages."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import run_playbook, run_task

FLEET_OLD = "reap-old"
FLEET_NEW = "reap-new"


def _tags(fleet: str, ttl: str, kind: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": [
        {"Key": "dlfleet:fleet", "Value": fleet}, {"Key": "dlfleet:owner", "Value": "test"},
        {"Key": "dlfleet:ttl", "Value": ttl}]}]


def _make_fleet(emulator, fleet: str, ttl: str) -> dict[str, str]:
    ec2 = emulator.client("ec2")
    sm = emulator.client("sagemaker")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_key_pair(KeyName=f"{fleet}-key", TagSpecifications=_tags(fleet, ttl, "key-pair"))
    group = ec2.create_security_group(GroupName=f"{fleet}-sg", Description="reaper test",
                                      TagSpecifications=_tags(fleet, ttl, "security-group"))["GroupId"]
    inst = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=2, MaxCount=2,
                             TagSpecifications=_tags(fleet, ttl, "instance"))["Instances"]
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=10, TagSpecifications=_tags(fleet, ttl, "volume"))
    tags = [t for t in _tags(fleet, ttl, "x")[0]["Tags"]]
    sm.create_model(ModelName=f"{fleet}-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
                    PrimaryContainer={"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}, Tags=tags)
    sm.create_endpoint_config(EndpointConfigName=f"{fleet}-cfg", Tags=tags, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{fleet}-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=f"{fleet}-ep", EndpointConfigName=f"{fleet}-cfg", Tags=tags)
    return {"group": group, "instances": [i["InstanceId"] for i in inst], "volume": vol["VolumeId"]}


def _live(emulator, fleet: str) -> dict[str, int]:
    ec2 = emulator.client("ec2")
    sm = emulator.client("sagemaker")
    flt = [{"Name": "tag:dlfleet:fleet", "Values": [fleet]}]
    res = ec2.describe_instances(Filters=[*flt, {"Name": "instance-state-name",
                                                 "Values": ["pending", "running", "stopping", "stopped"]}])
    return {
        "instances": sum(len(r["Instances"]) for r in res["Reservations"]),
        "volumes": len(ec2.describe_volumes(Filters=flt)["Volumes"]),
        "key_pairs": len(ec2.describe_key_pairs(Filters=flt)["KeyPairs"]),
        "security_groups": len(ec2.describe_security_groups(Filters=flt)["SecurityGroups"]),
        "endpoints": len([e for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"].startswith(fleet)]),
        "models": len([m for m in sm.list_models()["Models"] if m["ModelName"].startswith(fleet)]),
    }


@pytest.fixture
def two_fleets(emulator):
    emulator.reset()
    old = _make_fleet(emulator, FLEET_OLD, "1h")
    new = _make_fleet(emulator, FLEET_NEW, "8h")
    yield old, new
    emulator.reset()


def test_reaper_check_mode_lists_only_expired_and_changes_nothing(emulator, aws_env, two_fleets):
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    _, result = run_task("dlfleet_reaper", {"now": later}, env=aws_env, check=True)
    assert result.get("changed") is True, result
    fleets = {r["fleet"] for r in result["removed"]}
    assert fleets == {FLEET_OLD}
    kinds = sorted({r["type"] for r in result["removed"]})
    assert kinds == ["instances", "key_pairs", "sagemaker_endpoint_configs", "sagemaker_endpoints",
                     "sagemaker_models", "security_groups", "volumes"]
    assert _live(emulator, FLEET_OLD)["instances"] == 2  # check mode removed nothing


def test_reaper_removes_expired_and_keeps_the_rest(emulator, aws_env, two_fleets):
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    _, result = run_task("dlfleet_reaper", {"now": later, "wait": True, "wait_timeout": 60}, env=aws_env)
    assert result.get("changed") is True, result
    assert set(_live(emulator, FLEET_OLD).values()) == {0}
    kept = _live(emulator, FLEET_NEW)
    assert kept["instances"] == 2 and kept["key_pairs"] == 1 and kept["security_groups"] == 1
    assert kept["endpoints"] == 1 and kept["models"] == 1
    # A second pass at the same time finds nothing more to do.
    _, again = run_task("dlfleet_reaper", {"now": later}, env=aws_env)
    assert again.get("changed") is False, again


def test_fleet_sweep_removes_everything_of_one_fleet(emulator, aws_env, two_fleets):
    _, result = run_task("dlfleet_reaper", {"fleet": FLEET_NEW, "expired_only": False}, env=aws_env)
    assert result.get("changed") is True, result
    assert set(_live(emulator, FLEET_NEW).values()) == {0}
    assert result["remaining"] == []
    assert _live(emulator, FLEET_OLD)["instances"] == 2


def test_sweep_without_fleet_is_refused_and_removes_nothing(emulator, aws_env, two_fleets):
    _, result = run_task("dlfleet_reaper", {"expired_only": False}, env=aws_env)
    assert result.get("failed") is True
    assert "fleet=NAME" in result["msg"] and "all_fleets=true" in result["msg"]
    assert _live(emulator, FLEET_NEW)["instances"] == 2 and _live(emulator, FLEET_OLD)["instances"] == 2


def test_resources_whose_ttl_cannot_be_read_are_reported_not_silently_kept(emulator, aws_env, two_fleets):
    _make_fleet(emulator, "reap-bad-ttl", "8 hours")
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    _, result = run_task("dlfleet_reaper", {"now": later}, env=aws_env, check=True)
    unreadable = {(r["fleet"], r["ttl"]) for r in result["ttl_unreadable"]}
    assert unreadable == {("reap-bad-ttl", "8 hours")}, result["ttl_unreadable"]
    assert {r["fleet"] for r in result["removed"]} == {FLEET_OLD, FLEET_NEW}   # the readable ones expired
    assert any("never reaped by age" in w and "reap-bad-ttl" in w for w in result.get("warnings", [])), result


def _far_fleet(emulator, fleet: str, region: str, ttl: str) -> dict[str, str]:
    """A fleet's key pair, group and volume in another region (made as provision.yml tags them)."""
    ec2 = emulator.client("ec2", region)
    ec2.create_key_pair(KeyName=f"dlfleet-{fleet}", TagSpecifications=_tags(fleet, ttl, "key-pair"))
    group = ec2.create_security_group(GroupName=f"dlfleet-{fleet}-ssh", Description="reaper test",
                                      TagSpecifications=_tags(fleet, ttl, "security-group"))["GroupId"]
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=10,
                               TagSpecifications=_tags(fleet, ttl, "volume"))["VolumeId"]
    return {"group": group, "volume": volume}


def _far_left(emulator, fleet: str, region: str) -> dict[str, int]:
    ec2 = emulator.client("ec2", region)
    flt = [{"Name": "tag:dlfleet:fleet", "Values": [fleet]}]
    return {"key_pairs": len(ec2.describe_key_pairs(Filters=flt)["KeyPairs"]),
            "security_groups": len(ec2.describe_security_groups(Filters=flt)["SecurityGroups"]),
            "volumes": len(ec2.describe_volumes(Filters=flt)["Volumes"])}


def test_reaper_playbook_sweeps_every_region_dlfleet_provisioned_in(emulator, aws_env, two_fleets, tmp_path):
    """A fleet past its TTL in eu-west-1, while the cron job's inventory names us-east-1: provision.yml recorded
    eu-west-1 under .run/regions/, and the reaper sweeps it there too. Without the record it stays (the sweep
    covers the regions it knows), and a recorded name that is not a region stops the run before any call."""

    far = _far_fleet(emulator, "reap-far", "eu-west-1", "1h")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    run_dir = tmp_path / "run"
    (run_dir / "regions").mkdir(parents=True)
    base = {"dlfleet_run_dir": str(run_dir), "dlfleet_reaper_now": later}

    unrecorded = run_playbook("playbooks/reaper.yml", extra_vars=base, env=aws_env)
    assert unrecorded.rc == 0, unrecorded.stdout[-3000:]
    assert _far_left(emulator, "reap-far", "eu-west-1") == {"key_pairs": 1, "security_groups": 1, "volumes": 1}
    assert set(_live(emulator, FLEET_OLD).values()) == {0}          # us-east-1 (dlfleet_region) was swept

    (run_dir / "regions" / "eu-west-1").write_text("dlfleet provisioned in eu-west-1\n")
    checked = run_playbook("playbooks/reaper.yml", extra_vars=base, env=aws_env, check=True)
    assert checked.rc == 0, checked.stdout[-3000:]
    assert _far_left(emulator, "reap-far", "eu-west-1") == {"key_pairs": 1, "security_groups": 1, "volumes": 1}
    swept = run_playbook("playbooks/reaper.yml", extra_vars=base, env=aws_env)
    assert swept.rc == 0, swept.stdout[-3000:]
    per_region = {item["item"]: item for item in swept.results("Remove resources whose age exceeds their dlfleet:ttl")[
        "results"]}
    assert sorted(per_region) == ["eu-west-1", "us-east-1"]
    assert {r["id"] for r in per_region["eu-west-1"]["removed"]} >= {far["group"], far["volume"]}
    assert _far_left(emulator, "reap-far", "eu-west-1") == {"key_pairs": 0, "security_groups": 0, "volumes": 0}
    assert _live(emulator, FLEET_NEW)["instances"] == 2              # not past its TTL: kept

    (run_dir / "regions" / "*").write_text("")
    refused = run_playbook("playbooks/reaper.yml", extra_vars=base, env=aws_env)
    assert refused.rc != 0
    message = " ".join(res.get("msg", "") for _, _, res in refused.all_results() if res.get("failed"))
    assert "'*' is not an AWS region name" in message and "Nothing was removed" in message, message


def test_reaper_playbook_takes_a_list_of_regions_or_refuses_one_that_is_not(emulator, aws_env, two_fleets, tmp_path):

    _far_fleet(emulator, "reap-far2", "ap-southeast-2", "1h")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    base = {"dlfleet_run_dir": str(tmp_path / "run"), "dlfleet_reaper_now": later}
    for bad in (["us-east-1", "eu-*"], ["../us-east-1"], "us-east-1,eu west 1"):
        run = run_playbook("playbooks/reaper.yml", extra_vars={**base, "dlfleet_reaper_regions": bad}, env=aws_env)
        assert run.rc != 0, bad
        assert _live(emulator, FLEET_OLD)["instances"] == 2, f"{bad} removed something"
    run = run_playbook("playbooks/reaper.yml", env=aws_env,
                       extra_vars={**base, "dlfleet_reaper_regions": "ap-southeast-2"})
    assert run.rc == 0, run.stdout[-3000:]
    assert set(_far_left(emulator, "reap-far2", "ap-southeast-2").values()) == {0}
    assert _live(emulator, FLEET_OLD)["instances"] == 2              # us-east-1 not in the list: untouched


def _running_jobs(emulator, region: str, fleet: str, tuning: str, training: str | None = None) -> None:
    """A tuning job (and a training job) of `fleet`, InProgress in `region`, as sagemaker.yml leaves them when a
    run is cut short."""
    ssm = emulator.client("ssm", region)   # the emulator keeps jobs made now InProgress for this many seconds
    ssm.put_parameter(Name="/dlfleet/emulator/sagemaker/training-seconds", Value="600", Type="String",
                      Overwrite=True)
    sm = emulator.client("sagemaker", region)
    tags = _tags(fleet, "1h", "x")[0]["Tags"]
    definition = {
        "AlgorithmSpecification": {"TrainingImage": f"763104351884.dkr.ecr.{region}.amazonaws.com/mxnet:1.9",
                                   "TrainingInputMode": "File", "MetricDefinitions": [
                                       {"Name": "validation-accuracy", "Regex": "acc=([0-9.]+)"}]},
        "RoleArn": "arn:aws:iam::123456789012:role/dlfleet-sagemaker-execution",
        "OutputDataConfig": {"S3OutputPath": "s3://dlfleet-sagemaker-x/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}
    try:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning, Tags=tags,
            HyperParameterTuningJobConfig={
                "Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation-accuracy"},
                "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.01",
                                                                   "MaxValue": "0.2"}]}},
            TrainingJobDefinition=definition)
        if training:
            sm.create_training_job(TrainingJobName=training, Tags=tags, HyperParameters={"epochs": "2"}, **definition)
    finally:
        ssm.delete_parameter(Name="/dlfleet/emulator/sagemaker/training-seconds")


def test_a_running_tuning_job_past_its_ttl_in_a_second_region_is_stopped(emulator, aws_env, two_fleets, tmp_path):
    """A tuning job bills while it runs: the reaper finds it by its fleet tag in a region provision recorded and
    stops it; a finished one is a record with nothing to stop and is never counted as left behind."""

    region = "eu-west-1"
    _running_jobs(emulator, region, "reap-tune", "reap-tune-1")
    sm = emulator.client("sagemaker", region)
    status = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="reap-tune-1")
    assert status["HyperParameterTuningJobStatus"] == "InProgress"

    run_dir = tmp_path / "run"
    (run_dir / "regions").mkdir(parents=True)
    (run_dir / "regions" / region).write_text("")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    checked = run_playbook("playbooks/reaper.yml", env=aws_env, check=True,
                           extra_vars={"dlfleet_run_dir": str(run_dir), "dlfleet_reaper_now": later})
    assert checked.rc == 0, checked.stdout[-3000:]
    per_region = {item["item"]: item for item in checked.results(
        "Remove resources whose age exceeds their dlfleet:ttl")["results"]}
    assert ("sagemaker_tuning_jobs", "reap-tune-1") in {(r["type"], r["id"]) for r in per_region[region]["removed"]}
    assert sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="reap-tune-1")["HyperParameterTuningJobStatus"] == "InProgress"   # check mode

    reaped = run_playbook("playbooks/reaper.yml", env=aws_env,
                          extra_vars={"dlfleet_run_dir": str(run_dir), "dlfleet_reaper_now": later})
    assert reaped.rc == 0, reaped.stdout[-3000:]
    assert sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="reap-tune-1")["HyperParameterTuningJobStatus"] in ("Stopping", "Stopped")
    # the fleet's teardown there now finds nothing of it left: a stopped job is a record, not a cost
    _, swept = run_task("dlfleet_reaper", {"region": region, "fleet": "reap-tune", "expired_only": False},
                        env=aws_env)
    assert swept["remaining"] == [] and swept.get("changed") is False, swept


def test_teardown_acts_in_the_runs_region_only_and_leaves_the_same_fleet_name_elsewhere(emulator, aws_env,
                                                                                        two_fleets, tmp_path):
    """A run cut short leaves, in its own region (us-east-1, dlfleet_region), a tuning job and a training job
    InProgress beside its instances, volume, key pair, group, endpoint, config and model. teardown.yml stops the
    jobs, terminates the instances, waits until all has ended, removes the rest, and its nothing-left check passes;
    the emulator's listings agree. Another run's fleet of the same name in eu-west-1 (recorded under .run/regions/
    for the reaper) keeps its running tuning job, instance, key pair, group and volume: teardown never looks there.
    Other fleets are untouched, and a second teardown changes nothing."""
    fleet, far = "tear-sm", "eu-west-1"
    _running_jobs(emulator, "us-east-1", fleet, "tear-sm-tune", "tear-sm-train")
    _make_fleet(emulator, fleet, "8h")   # instances, volume, key pair, group, and the endpoint parts
    _running_jobs(emulator, far, fleet, "tear-sm-tune")   # the same names, another run's, in another region
    far_ec2 = emulator.client("ec2", far)
    image = far_ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    far_instance = far_ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                                         TagSpecifications=_tags(fleet, "8h", "instance"))["Instances"][0]["InstanceId"]
    far_fleet = _far_fleet(emulator, fleet, far, "8h")
    sm, far_sm = emulator.client("sagemaker"), emulator.client("sagemaker", far)
    assert sm.describe_training_job(TrainingJobName="tear-sm-train")["TrainingJobStatus"] == "InProgress"
    run_dir = tmp_path / "run"
    (run_dir / "regions").mkdir(parents=True)
    (run_dir / "regions" / far).write_text("")
    extra = {"dlfleet_fleet_name": fleet, "dlfleet_run": fleet, "dlfleet_run_dir": str(run_dir),
             "dlfleet_region": "us-east-1", "dlfleet_artifacts_dir": str(tmp_path / "artifacts"),
             "provision_wait_timeout": 120}

    def far_state() -> dict[str, object]:
        running = far_ec2.describe_instances(InstanceIds=[far_instance])["Reservations"][0]["Instances"][0]
        return {**_far_left(emulator, fleet, far), "instance": running["State"]["Name"],
                "tuning": far_sm.describe_hyper_parameter_tuning_job(
                    HyperParameterTuningJobName="tear-sm-tune")["HyperParameterTuningJobStatus"]}

    untouched = {"key_pairs": 1, "security_groups": 1, "volumes": 1, "instance": "running", "tuning": "InProgress"}
    assert far_state() == untouched

    torn = run_playbook("playbooks/teardown.yml", extra_vars=extra, env=aws_env)
    assert torn.rc == 0, torn.stdout[-3000:]
    result = torn.results("Remove every resource tagged with the fleet in the run's region")
    assert {r["region"] for r in result["removed"]} == {"us-east-1"} and result["remaining"] == []
    assert {(r["type"], r["id"]) for r in result["removed"]} >= {
        ("sagemaker_tuning_jobs", "tear-sm-tune"), ("sagemaker_training_jobs", "tear-sm-train"),
        ("sagemaker_endpoints", "tear-sm-ep"), ("sagemaker_endpoint_configs", "tear-sm-cfg"),
        ("sagemaker_models", "tear-sm-model")}
    assert {r["type"] for r in result["removed"]} >= {"instances", "volumes", "key_pairs", "security_groups"}
    # the emulator's own listings: the jobs are Stopped records, the endpoint parts and the fleet are gone
    assert sm.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tear-sm-tune")["HyperParameterTuningJobStatus"] == "Stopped"
    assert sm.describe_training_job(TrainingJobName="tear-sm-train")["TrainingJobStatus"] == "Stopped"
    assert set(_live(emulator, fleet).values()) == {0}
    # the same fleet name in eu-west-1 is another run's: nothing of it was stopped or removed
    assert far_state() == untouched and far_fleet["group"] not in {r["id"] for r in result["removed"]}
    assert _live(emulator, FLEET_OLD)["instances"] == 2 and _live(emulator, FLEET_NEW)["endpoints"] == 1

    again = run_playbook("playbooks/teardown.yml", extra_vars=extra, env=aws_env)
    assert again.rc == 0, again.stdout[-3000:]
    repeat = again.results("Remove every resource tagged with the fleet in the run's region")
    assert repeat.get("changed") is False and repeat["removed"] == [] and repeat["remaining"] == [], repeat
    assert far_state() == untouched
