"""dlfleet_reaper's choice of what goes and what counts as left behind (module_utils/dlfleet_cleanup.py), and
sagemaker_quota_info's plan (module_utils/dlfleet_quota.py): pure logic. Both run against the emulator in
tests/emulator/test_reaper.py and test_bad_inputs.py."""
from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from ansible.module_utils import dlfleet_cleanup as dc
from ansible.module_utils import dlfleet_quota as dq
from botocore.stub import Stubber


def job(rtype: str, state: str) -> dc.Resource:
    return dc.Resource(rtype, f"{rtype}-{state}", "f", "2026-12-07T10:00:00+00:00", 60, "8h", False, state)


@pytest.mark.parametrize("rtype", dc.JOB_TYPES)
def test_a_running_job_is_stopped_a_stopping_one_only_waited_for_and_both_left_behind_until_ended(rtype: str) -> None:
    jobs = [job(rtype, s) for s in ("InProgress", "Stopping", "Stopped", "Completed", "Failed")]
    # only the InProgress one is a change (and what check mode lists as removed); the Stopping one is waited for
    assert [r.state for r in dc.select(jobs, expired_only=False)] == ["InProgress"]
    assert [r.state for r in dc.stopping(jobs, expired_only=False)] == ["Stopping"]
    assert dc.stopping(jobs, expired_only=True) == []        # not past its ttl: the reaper leaves it be
    assert [r.state for r in dc.lingering(jobs)] == ["InProgress", "Stopping"]   # both still bill


def res(rtype: str, rid: str, state: str = "") -> dc.Resource:
    return dc.Resource(rtype, rid, "f", "2026-12-07T10:00:00+00:00", 60, "8h", False, state)


ARN = "arn:aws:sagemaker:us-east-1:123456789012:"
WHEN = datetime(2026, 12, 7, 10, tzinfo=UTC)


class FakeClock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stubbed(service: str, calls: list[str]):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(dc, "_clock", lambda: fake.now)
    monkeypatch.setattr(dc, "_sleep", fake.sleep)
    return fake


def test_stubbed_aws_since_the_emulator_never_leaves_a_job_stopping_instances_go_first_and_a_stuck_job_is_left(
        clock: FakeClock) -> None:
    """A training job to stop, a tuning job stuck Stopping, an instance that takes one round to terminate: every
    stop and terminate call goes out before any wait, all are waited for together within one wait_timeout (not
    one each), the volume, key pair and group go once the instance has, and the stuck job comes back in its
    state instead of an error."""
    calls: list[str] = []
    ec2, ec2_stub = stubbed("ec2", calls)
    sm, sm_stub = stubbed("sagemaker", calls)

    def instance(state: str) -> dict:
        return {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": state}}]}]}

    def training(status: str) -> dict:   # the fields DescribeTrainingJob always answers
        return {"TrainingJobName": "train-1", "TrainingJobArn": ARN + "training-job/train-1", "CreationTime": WHEN,
                "ModelArtifacts": {"S3ModelArtifacts": ""}, "TrainingJobStatus": status, "SecondaryStatus": status,
                "StoppingCondition": {}}

    def tuning(status: str) -> dict:     # and DescribeHyperParameterTuningJob
        return {"HyperParameterTuningJobName": "tune-1", "HyperParameterTuningJobArn": ARN + "tuning-job/tune-1",
                "HyperParameterTuningJobConfig": {"Strategy": "Random",
                                                  "ResourceLimits": {"MaxParallelTrainingJobs": 1}},
                "HyperParameterTuningJobStatus": status, "CreationTime": WHEN, "TrainingJobStatusCounters": {},
                "ObjectiveStatusCounters": {}}

    sm_stub.add_response("stop_training_job", {})
    ec2_stub.add_response("terminate_instances", {"TerminatingInstances": []})
    ec2_stub.add_response("describe_instances", instance("shutting-down"))           # round 1, t=0
    sm_stub.add_response("describe_training_job", training("Stopping"))
    sm_stub.add_response("describe_hyper_parameter_tuning_job", tuning("Stopping"))
    ec2_stub.add_response("describe_instances", instance("terminated"))              # round 2, t=5
    sm_stub.add_response("describe_training_job", training("Stopped"))
    sm_stub.add_response("describe_hyper_parameter_tuning_job", tuning("Stopping"))
    sm_stub.add_response("describe_hyper_parameter_tuning_job", tuning("Stopping"))
    ec2_stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-1", "State": "available"}]})
    ec2_stub.add_response("delete_volume", {})
    ec2_stub.add_response("delete_key_pair", {})
    ec2_stub.add_response("delete_security_group", {})
    chosen = [res("sagemaker_training_jobs", "train-1", "InProgress"), res("instances", "i-1", "running"),
              res("volumes", "vol-1"), res("key_pairs", "key-1"), res("security_groups", "sg-1")]

    unfinished = dc.remove(ec2, sm, chosen, wait=True, wait_timeout=10,
                           already_stopping=[res("sagemaker_tuning_jobs", "tune-1", "Stopping")])

    assert [(r.type, r.id, r.state) for r in unfinished] == [("sagemaker_tuning_jobs", "tune-1", "Stopping")]
    assert calls.index("TerminateInstances") < calls.index("DescribeTrainingJob")
    assert sum(clock.slept) == 10                 # one deadline for all three, not wait_timeout for each
    ec2_stub.assert_no_pending_responses()         # the volume, key pair and group were deleted
    sm_stub.assert_no_pending_responses()


def test_stubbed_aws_since_the_emulator_terminates_at_once_an_instance_still_shutting_down_keeps_its_group(
        clock: FakeClock) -> None:
    """When the wait runs out on an instance, its attached volume and its group are not deleted (AWS would refuse),
    and remaining names the instance in its state beside them."""
    calls: list[str] = []
    ec2, ec2_stub = stubbed("ec2", calls)
    shutting = {"Reservations": [{"Instances": [{"InstanceId": "i-1", "State": {"Name": "shutting-down"}}]}]}
    ec2_stub.add_response("terminate_instances", {"TerminatingInstances": []})
    ec2_stub.add_response("describe_instances", shutting)
    ec2_stub.add_response("describe_instances", shutting)
    ec2_stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-1", "State": "in-use"}]})
    ec2_stub.add_response("delete_key_pair", {})
    volume, group = res("volumes", "vol-1", "in-use"), res("security_groups", "sg-1")

    unfinished = dc.remove(ec2, None, [res("instances", "i-1", "running"), volume, res("key_pairs", "key-1"), group],
                           wait=True, wait_timeout=5)

    assert [(r.id, r.state) for r in unfinished] == [("i-1", "shutting-down")]
    assert "DeleteSecurityGroup" not in calls and "DeleteVolume" not in calls
    ec2_stub.assert_no_pending_responses()
    remaining = dc.with_unfinished([volume, group], unfinished)
    assert [(r.type, r.state) for r in remaining] == [("volumes", "in-use"), ("security_groups", ""),
                                                      ("instances", "shutting-down")]


def test_sagemaker_needs_add_up_per_quota_and_local_mode_needs_none() -> None:
    plans, skipped = dq.plan_sagemaker([
        {"instance_type": "ml.m5.xlarge", "count": 2, "usage": "training_job", "source": "a"},
        {"instance_type": "ml.m5.xlarge", "count": 3, "usage": "training_job", "source": "b"},
        {"instance_type": "ml.m5.xlarge", "count": 1, "usage": "endpoint", "source": "c"},
        {"instance_type": "local", "count": 1, "usage": "endpoint", "source": "d"},
    ])
    assert {n: (p.needed, p.sources) for n, p in plans.items()} == {
        "ml.m5.xlarge for training job usage": (5, ["a", "b"]), "ml.m5.xlarge for endpoint usage": (1, ["c"])}
    assert skipped == [{"instance_type": "local", "source": "d"}]


def test_sagemaker_shortfall_names_who_asks_the_quota_and_the_increase() -> None:
    need = dq.SageMakerNeed(name="ml.p3.2xlarge for training job usage", code="L-X", limit=1.0, needed=3,
                            sources=["sagemaker_instance_type=ml.p3.2xlarge x sagemaker_instance_count=3"])
    assert not need.fits
    msg = need.shortfall_message("eu-west-1")
    for part in ("sagemaker_instance_count=3", "needs 3 instance(s)", "quota L-X", "allows 1",
                 "--desired-value 3 --region eu-west-1"):
        assert part in msg, msg
