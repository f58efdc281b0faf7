# Finds and removes dlfleet-tagged resources: a whole fleet (teardown) or whatever outlived its
# dlfleet:ttl tag (the reaper). One paginated, tag-filtered Describe/List per resource type.
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.dlfleet_aws import (
    AWS_ERRORS,
    TAG_FLEET,
    TAG_TTL,
    aws_retry,
    check_fleet_name,
    error_code,
    is_not_found,
    paginate,
    tag_dict,
    ttl_seconds,
)

EC2_TYPES = ("instances", "volumes", "key_pairs", "security_groups")
SAGEMAKER_TYPES = ("sagemaker_tuning_jobs", "sagemaker_training_jobs", "sagemaker_endpoints",
                   "sagemaker_endpoint_configs", "sagemaker_models")
# Jobs bill while they run; a finished one (Completed, Failed, Stopped) is a record with no delete and no cost.
# An InProgress one is stopped. A Stopping one still bills until SageMaker has stopped it: it is waited for (no
# change of ours), and left behind until then.
JOB_TYPES = ("sagemaker_tuning_jobs", "sagemaker_training_jobs")
JOB_DONE = ("Completed", "Failed", "Stopped")
ALL_TYPES = EC2_TYPES + SAGEMAKER_TYPES
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped"]


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
    return [item for page in paginate(client, operation, **kwargs) for item in page.get(key, [])]


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
    """What goes, each a change. A security group carries no creation time: it goes with its fleet, once no live
    instance of that fleet stays and no unexpired key pair of that fleet stays."""
    chosen = [r for r in resources if r.type != "security_groups" and (r.expired or not expired_only)]
    # only a running job is stopped, by age or with its fleet: a finished one has nothing to stop, and a Stopping
    # one is on its way already (waited for, see stopping(), but no change of ours)
    chosen = [r for r in chosen if r.type not in JOB_TYPES or r.state == "InProgress"]
    going = {(r.type, r.id) for r in chosen}
    staying_fleets = {
        r.fleet for r in resources
        if r.type in ("instances", "key_pairs") and (r.type, r.id) not in going
    }
    chosen += [r for r in resources if r.type == "security_groups" and r.fleet not in staying_fleets]
    return chosen


def stopping(resources: list[Resource], expired_only: bool) -> list[Resource]:
    """Jobs already Stopping that select() would otherwise have stopped: there is nothing to call, but they bill
    until SageMaker has stopped them, so they are waited for (and left behind while they stop)."""
    return [r for r in resources
            if r.type in JOB_TYPES and r.state == "Stopping" and (r.expired or not expired_only)]


def lingering(resources: list[Resource]) -> list[Resource]:
    """Of `resources`, those still to be removed: a finished training or tuning job (Completed, Failed, Stopped)
    is a record SageMaker keeps, with no delete and no cost, so it never counts as left behind; an InProgress or
    Stopping one bills, and does."""
    return [r for r in resources if not (r.type in JOB_TYPES and r.state in JOB_DONE)]


def with_unfinished(remaining: list[Resource], unfinished: list[Resource]) -> list[Resource]:
    """`remaining` (found again after removal) with what the wait left unfinished, in its last state: an
    instance still shutting down is no longer listed as live, but its volumes and group stay until it is gone."""
    last = {(r.type, r.id): r for r in unfinished}
    merged = [last.pop((r.type, r.id), r) for r in remaining]
    return merged + list(last.values())


def _ignore_missing(service: str, call, also: tuple[str, ...] = (), **kwargs) -> bool:
    """Calls `call` of `service`; False when AWS says the resource is gone already or answers one of the codes
    `also`."""
    try:
        aws_retry(call)(**kwargs)
    except AWS_ERRORS as err:
        if error_code(err) in also or is_not_found(err, service):
            return False
        raise
    return True


def _detached(ec2, volume_ids: list[str]) -> list[str]:
    """Of `volume_ids`, those that still exist and are detached (the rest went with their instance)."""
    if not volume_ids:
        return []
    try:
        volumes = aws_retry(ec2.describe_volumes)(VolumeIds=volume_ids)["Volumes"]
    except AWS_ERRORS as err:
        if not is_not_found(err, "ec2"):
            raise
        volumes = _paginate(ec2, "describe_volumes", "Volumes",
                            Filters=[{"Name": "volume-id", "Values": volume_ids}])
    return [v["VolumeId"] for v in volumes if v["State"] == "available"]


# One deadline for everything waited on. botocore's waiters wait for one resource at a time, each with attempts of
# its own: one stuck job would hold the rest, instances included, for its whole timeout, and then raise. Instead
# each round asks once for the state of whatever is still pending, until all is done or the deadline has passed.
POLL_DELAY = 5
_clock = time.monotonic
_sleep = time.sleep

_JOB_DESCRIBE = {
    "sagemaker_tuning_jobs": ("describe_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
                              "HyperParameterTuningJobStatus"),
    "sagemaker_training_jobs": ("describe_training_job", "TrainingJobName", "TrainingJobStatus"),
}


def _describe(service: str, call, **kwargs) -> dict[str, Any] | None:
    """The answer of a Describe call of `service`, or None when AWS no longer knows the resource."""
    try:
        return aws_retry(call)(**kwargs)
    except AWS_ERRORS as err:
        if not is_not_found(err, service):
            raise
    return None


def _sagemaker_state(sm, res: Resource) -> str | None:
    """The status of a stopped job until it has ended, of a deleted endpoint until it is gone; then None."""
    if res.type == "sagemaker_endpoints":
        endpoint = _describe("sagemaker", sm.describe_endpoint, EndpointName=res.id)
        return endpoint["EndpointStatus"] if endpoint else None
    operation, name_key, status_key = _JOB_DESCRIBE[res.type]
    job = _describe("sagemaker", getattr(sm, operation), **{name_key: res.id})
    return job[status_key] if job and job[status_key] not in JOB_DONE else None


def _instance_states(ec2, instance_ids: list[str]) -> dict[str, str]:
    """The state of each of `instance_ids` not yet terminated (one AWS no longer lists is gone)."""
    if not instance_ids:
        return {}
    reservations = _paginate(ec2, "describe_instances", "Reservations",
                             Filters=[{"Name": "instance-id", "Values": instance_ids}])
    return {inst["InstanceId"]: inst["State"]["Name"] for res in reservations for inst in res["Instances"]
            if inst["State"]["Name"] != "terminated"}


def _still_pending(ec2, sm, pending: list[Resource]) -> list[Resource]:
    states = _instance_states(ec2, [r.id for r in pending if r.type == "instances"])
    left = []
    for res in pending:
        state = states.get(res.id) if res.type == "instances" else _sagemaker_state(sm, res)
        if state is not None:
            left.append(replace(res, state=state))
    return left


def wait_all(ec2, sm, pending: list[Resource], wait_timeout: int) -> list[Resource]:
    """Waits, within one `wait_timeout` for all of them together, until stopped jobs have ended, deleted endpoints
    are gone and terminated instances are terminated. Returns those that were not when it ran out, in their
    last state; it never raises for a resource that takes too long."""
    deadline = _clock() + wait_timeout
    while True:
        pending = _still_pending(ec2, sm, pending)
        now = _clock()
        if not pending or now >= deadline:
            return pending
        _sleep(min(POLL_DELAY, deadline - now))


def remove(ec2, sm, chosen: list[Resource], wait: bool, wait_timeout: int,
           already_stopping: list[Resource] | None = None) -> list[Resource]:
    """Every stop, delete and terminate call first (a tuning job before the training jobs it starts, endpoints
    before their configs and models), so that nothing bills longer than it must; then, with `wait`, one wait
    (wait_all) for the jobs, `already_stopping` included, the endpoints and the instances together; then the
    detached volumes, the key pairs, and the security groups of fleets whose instances are gone. Returns what the
    wait left unfinished, in its last state (empty without `wait`)."""
    by_type: dict[str, list[Resource]] = {t: [] for t in ALL_TYPES}
    for res in chosen:
        by_type[res.type].append(res)
    # A job that ended between the listing and the stop answers ValidationException ("... in status Completed"):
    # nothing left to stop.
    for res in by_type["sagemaker_tuning_jobs"]:
        _ignore_missing("sagemaker", sm.stop_hyper_parameter_tuning_job, also=("ValidationException",),
                        HyperParameterTuningJobName=res.id)
    for res in by_type["sagemaker_training_jobs"]:
        _ignore_missing("sagemaker", sm.stop_training_job, also=("ValidationException",), TrainingJobName=res.id)
    for res in by_type["sagemaker_endpoints"]:
        _ignore_missing("sagemaker", sm.delete_endpoint, EndpointName=res.id)
    for res in by_type["sagemaker_endpoint_configs"]:
        _ignore_missing("sagemaker", sm.delete_endpoint_config, EndpointConfigName=res.id)
    for res in by_type["sagemaker_models"]:
        _ignore_missing("sagemaker", sm.delete_model, ModelName=res.id)
    instance_ids = [r.id for r in by_type["instances"]]
    if instance_ids:
        aws_retry(ec2.terminate_instances)(InstanceIds=instance_ids)
    unfinished: list[Resource] = []
    if wait:
        watched = [*by_type["sagemaker_tuning_jobs"], *by_type["sagemaker_training_jobs"], *(already_stopping or []),
                   *by_type["sagemaker_endpoints"], *by_type["instances"]]
        unfinished = wait_all(ec2, sm, watched, wait_timeout)
    for volume_id in _detached(ec2, [r.id for r in by_type["volumes"]]):
        _ignore_missing("ec2", ec2.delete_volume, VolumeId=volume_id)
    for res in by_type["key_pairs"]:
        _ignore_missing("ec2", ec2.delete_key_pair, KeyName=res.id)
    held = {r.fleet for r in unfinished if r.type == "instances"}
    for res in by_type["security_groups"]:
        if res.fleet not in held:   # else its instances still use it: it stays, and is listed as remaining
            _ignore_missing("ec2", ec2.delete_security_group, also=("DependencyViolation",),
                            GroupId=res.id)
    return unfinished


def as_dicts(resources: list[Resource], region: str | None = None) -> list[dict[str, Any]]:
    return [{**asdict(r), "region": region or ""} for r in resources]
