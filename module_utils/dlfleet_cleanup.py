# Finds and removes dlfleet-tagged resources: a whole fleet (teardown) or whatever outlived its
# dlfleet:ttl tag (the reaper). One paginated, tag-filtered Describe/List per resource type.
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.dlfleet_aws import (
    TAG_FLEET,
    TAG_TTL,
    aws_retry,
    check_fleet_name,
    error_code,
    tag_dict,
    ttl_seconds,
)

EC2_TYPES = ("instances", "volumes", "key_pairs", "security_groups")
SAGEMAKER_TYPES = ("sagemaker_tuning_jobs", "sagemaker_training_jobs", "sagemaker_endpoints",
                   "sagemaker_endpoint_configs", "sagemaker_models")
# Jobs bill while they run; a finished one (Completed, Failed, Stopped) is a record with no delete and no cost.
# A Stopping one still bills until SageMaker has stopped it: it is waited for, and left behind until then.
JOB_TYPES = ("sagemaker_tuning_jobs", "sagemaker_training_jobs")
JOB_DONE = ("Completed", "Failed", "Stopped")
JOB_RUNNING = ("InProgress", "Stopping")
ALL_TYPES = EC2_TYPES + SAGEMAKER_TYPES
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]
NOT_FOUND = {
    "InvalidInstanceID.NotFound",
    "InvalidVolume.NotFound",
    "InvalidKeyPair.NotFound",
    "InvalidGroup.NotFound",
    "ValidationException",
    "ResourceNotFound",
}


@dataclass
class Resource:
    type: str
    id: str
    fleet: str
    created: str
    age_seconds: int
    ttl: str
    expired: bool
    state: str = ""


def ttl_unreadable(resources: list[Resource]) -> list[Resource]:
    """Resources whose dlfleet:ttl is missing or no duration (`8 hours`, `-1h`): never reaped by age, so reported."""
    bad = []
    for res in resources:
        try:
            ttl_seconds(res.ttl)
        except ValueError:
            bad.append(res)
    return bad


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _resource(rtype: str, rid: str, tags: dict[str, str], created: datetime | None, now: datetime,
              state: str = "") -> Resource:
    ttl = tags.get(TAG_TTL, "")
    age = int((now - created).total_seconds()) if created else -1
    try:
        expired = created is not None and age > ttl_seconds(ttl)
    except ValueError:
        expired = False  # a malformed ttl is never read as "expired"; it is reported instead
    return Resource(rtype, rid, tags.get(TAG_FLEET, ""), created.isoformat() if created else "", age, ttl, expired,
                    state)


def _ec2_filters(fleet: str | None) -> list[dict[str, Any]]:
    if fleet:
        return [{"Name": f"tag:{TAG_FLEET}", "Values": [check_fleet_name(fleet)]}]
    return [{"Name": "tag-key", "Values": [TAG_FLEET]}]


def _paginate(client, operation: str, key: str, **kwargs) -> list[dict[str, Any]]:
    paginator = client.get_paginator(operation)
    items: list[dict[str, Any]] = []
    for page in aws_retry(lambda: list(paginator.paginate(**kwargs)))():
        items.extend(page.get(key, []))
    return items


def find_ec2(ec2, fleet: str | None, now: datetime, types: list[str]) -> list[Resource]:
    found: list[Resource] = []
    filters = _ec2_filters(fleet)
    if "instances" in types:
        reservations = _paginate(ec2, "describe_instances", "Reservations",
                                 Filters=[*filters, {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}])
        for res in reservations:
            for inst in res["Instances"]:
                found.append(_resource("instances", inst["InstanceId"], tag_dict(inst.get("Tags")),
                                       inst.get("LaunchTime"), now, inst["State"]["Name"]))
    if "volumes" in types:
        for vol in _paginate(ec2, "describe_volumes", "Volumes", Filters=filters):
            found.append(_resource("volumes", vol["VolumeId"], tag_dict(vol.get("Tags")), vol.get("CreateTime"), now,
                                   vol.get("State", "")))
    if "key_pairs" in types:
        for key in aws_retry(ec2.describe_key_pairs)(Filters=filters).get("KeyPairs", []):
            found.append(_resource("key_pairs", key["KeyName"], tag_dict(key.get("Tags")), key.get("CreateTime"), now))
    if "security_groups" in types:
        for group in _paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=filters):
            found.append(_resource("security_groups", group["GroupId"], tag_dict(group.get("Tags")), None, now))
    return found


_SM_LISTS = {
    "sagemaker_tuning_jobs": ("list_hyper_parameter_tuning_jobs", "HyperParameterTuningJobSummaries",
                              "HyperParameterTuningJobName", "HyperParameterTuningJobArn",
                              "HyperParameterTuningJobStatus"),
    "sagemaker_training_jobs": ("list_training_jobs", "TrainingJobSummaries", "TrainingJobName", "TrainingJobArn",
                                "TrainingJobStatus"),
    "sagemaker_endpoints": ("list_endpoints", "Endpoints", "EndpointName", "EndpointArn", "EndpointStatus"),
    "sagemaker_endpoint_configs": ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName",
                                   "EndpointConfigArn", None),
    "sagemaker_models": ("list_models", "Models", "ModelName", "ModelArn", None),
}


def find_sagemaker(sm, fleet: str | None, now: datetime, types: list[str]) -> list[Resource]:
    found: list[Resource] = []
    for rtype in types:
        if rtype not in _SM_LISTS:
            continue
        operation, key, name_key, arn_key, status_key = _SM_LISTS[rtype]
        for item in _paginate(sm, operation, key):
            tags = tag_dict(aws_retry(sm.list_tags)(ResourceArn=item[arn_key]).get("Tags"))
            if TAG_FLEET not in tags or (fleet and tags[TAG_FLEET] != fleet):
                continue
            found.append(_resource(rtype, item[name_key], tags, item.get("CreationTime"), now,
                                   item.get(status_key, "") if status_key else ""))
    return found


def select(resources: list[Resource], expired_only: bool) -> list[Resource]:
    """What goes. A security group carries no creation time: it goes with its fleet, once no live
    instance of that fleet stays and no unexpired key pair of that fleet stays."""
    chosen = [r for r in resources if r.type != "security_groups" and (r.expired or not expired_only)]
    # only a running job is stopped (a finished one has nothing to stop), by age or with its fleet; a Stopping
    # one is chosen too, to be waited for
    chosen = [r for r in chosen if r.type not in JOB_TYPES or r.state in JOB_RUNNING]
    going = {(r.type, r.id) for r in chosen}
    staying_fleets = {
        r.fleet for r in resources
        if r.type in ("instances", "key_pairs") and (r.type, r.id) not in going
    }
    chosen += [r for r in resources if r.type == "security_groups" and r.fleet not in staying_fleets]
    return chosen


def lingering(resources: list[Resource]) -> list[Resource]:
    """Of `resources`, those still to be removed: a finished training or tuning job (Completed, Failed, Stopped)
    is a record SageMaker keeps, with no delete and no cost, so it never counts as left behind; an InProgress or
    Stopping one bills, and does."""
    return [r for r in resources if not (r.type in JOB_TYPES and r.state in JOB_DONE)]


def _ignore_missing(call, **kwargs) -> None:
    try:
        aws_retry(call)(**kwargs)
    except Exception as err:
        if error_code(err) not in NOT_FOUND:
            raise


def _detached(ec2, volume_ids: list[str]) -> list[str]:
    """Of `volume_ids`, those that still exist and are detached (the rest went with their instance)."""
    if not volume_ids:
        return []
    try:
        volumes = aws_retry(ec2.describe_volumes)(VolumeIds=volume_ids)["Volumes"]
    except Exception as err:
        if error_code(err) != "InvalidVolume.NotFound":
            raise
        volumes = _paginate(ec2, "describe_volumes", "Volumes",
                            Filters=[{"Name": "volume-id", "Values": volume_ids}])
    return [v["VolumeId"] for v in volumes if v["State"] == "available"]


# SageMaker has no waiter for a stopped tuning job, and its training-job waiter fails on Failed: one of our own
# for each, done when the job is Completed, Failed or Stopped.
_JOB_WAITERS = {
    "sagemaker_tuning_jobs": ("DescribeHyperParameterTuningJob", "HyperParameterTuningJobName",
                              "HyperParameterTuningJobStatus"),
    "sagemaker_training_jobs": ("DescribeTrainingJob", "TrainingJobName", "TrainingJobStatus"),
}


def _job_waiter(sm, rtype: str, delay: int, attempts: int):
    from botocore.waiter import WaiterModel, create_waiter_with_client

    operation, _, status_key = _JOB_WAITERS[rtype]
    model = WaiterModel({"version": 2, "waiters": {"JobEnded": {
        "operation": operation, "delay": delay, "maxAttempts": attempts,
        "acceptors": [{"matcher": "path", "argument": status_key, "expected": status, "state": "success"}
                      for status in JOB_DONE]}}})
    return create_waiter_with_client("JobEnded", model, sm)


def _wait_sagemaker(sm, by_type: dict[str, list[Resource]], wait_timeout: int) -> None:
    """Until every stopped job has ended and every deleted endpoint is gone: until then they bill."""
    delay = 5
    attempts = max(1, wait_timeout // delay)
    for rtype, (_, name_key, _) in _JOB_WAITERS.items():
        for res in by_type[rtype]:
            _job_waiter(sm, rtype, delay, attempts).wait(**{name_key: res.id})
    for res in by_type["sagemaker_endpoints"]:
        sm.get_waiter("endpoint_deleted").wait(EndpointName=res.id,
                                               WaiterConfig={"Delay": delay, "MaxAttempts": attempts})


def remove(ec2, sm, chosen: list[Resource], wait: bool, wait_timeout: int) -> None:
    """Delete in dependency order: jobs and endpoints first, instances before their volumes and groups. With
    `wait`, wait until stopped jobs have ended, deleted endpoints are gone and instances are terminated."""
    by_type: dict[str, list[Resource]] = {t: [] for t in ALL_TYPES}
    for res in chosen:
        by_type[res.type].append(res)
    for res in by_type["sagemaker_tuning_jobs"]:   # first: a tuning job starts training jobs while it runs
        if res.state == "InProgress":
            _ignore_missing(sm.stop_hyper_parameter_tuning_job, HyperParameterTuningJobName=res.id)
    for res in by_type["sagemaker_training_jobs"]:
        if res.state == "InProgress":
            _ignore_missing(sm.stop_training_job, TrainingJobName=res.id)
    for res in by_type["sagemaker_endpoints"]:
        _ignore_missing(sm.delete_endpoint, EndpointName=res.id)
    for res in by_type["sagemaker_endpoint_configs"]:
        _ignore_missing(sm.delete_endpoint_config, EndpointConfigName=res.id)
    for res in by_type["sagemaker_models"]:
        _ignore_missing(sm.delete_model, ModelName=res.id)
    if wait and sm is not None:
        _wait_sagemaker(sm, by_type, wait_timeout)
    instance_ids = [r.id for r in by_type["instances"]]
    if instance_ids:
        aws_retry(ec2.terminate_instances)(InstanceIds=instance_ids)
        if wait:
            delay = 5
            ec2.get_waiter("instance_terminated").wait(
                InstanceIds=instance_ids, WaiterConfig={"Delay": delay, "MaxAttempts": max(1, wait_timeout // delay)})
    for volume_id in _detached(ec2, [r.id for r in by_type["volumes"]]):
        _ignore_missing(ec2.delete_volume, VolumeId=volume_id)
    for res in by_type["key_pairs"]:
        _ignore_missing(ec2.delete_key_pair, KeyName=res.id)
    for res in by_type["security_groups"]:
        _ignore_missing(ec2.delete_security_group, GroupId=res.id)


def as_dicts(resources: list[Resource], region: str | None = None) -> list[dict[str, Any]]:
    return [{**asdict(r), "region": region or ""} for r in resources]
