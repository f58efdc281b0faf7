"""dlfleet_reaper's choice of what goes and what counts as left behind (module_utils/dlfleet_cleanup.py), and
sagemaker_quota_info's plan (module_utils/dlfleet_quota.py): pure logic. Both run against the emulator in
tests/emulator/test_reaper.py and test_bad_inputs.py."""
from __future__ import annotations

import pytest
from ansible.module_utils import dlfleet_cleanup as dc
from ansible.module_utils import dlfleet_quota as dq


def job(rtype: str, state: str) -> dc.Resource:
    return dc.Resource(rtype, f"{rtype}-{state}", "f", "2026-12-07T10:00:00+00:00", 60, "8h", False, state)


@pytest.mark.parametrize("rtype", dc.JOB_TYPES)
def test_a_running_or_stopping_job_is_chosen_and_left_behind_until_it_has_ended(rtype: str) -> None:
    jobs = [job(rtype, s) for s in ("InProgress", "Stopping", "Stopped", "Completed", "Failed")]
    assert [r.state for r in dc.select(jobs, expired_only=False)] == ["InProgress", "Stopping"]
    assert [r.state for r in dc.lingering(jobs)] == ["InProgress", "Stopping"]   # both still bill


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
