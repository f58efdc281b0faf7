"""ec2_gpu_quota_info, pure logic (module_utils/dlfleet_quota.py): quota codes per family, fleet checks, needs,
usage and the shortfall message. The preflight against the emulator is in tests/emulator/."""
from __future__ import annotations

from typing import Any

import pytest
from ansible.module_utils import dlfleet_quota as dq

P_ON_DEMAND, G_ON_DEMAND, P_SPOT = "L-417A185B", "L-DB2E81BA", "L-7212CCBC"


# --------------------------------------------------------------------------------------------------------
# pure logic
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("instance_type", "on_demand", "spot"), [
    ("p2.xlarge", P_ON_DEMAND, P_SPOT),
    ("p3.2xlarge", P_ON_DEMAND, P_SPOT),
    ("p3dn.24xlarge", P_ON_DEMAND, P_SPOT),
    ("p4d.24xlarge", P_ON_DEMAND, P_SPOT),
    ("p5.48xlarge", P_ON_DEMAND, "L-C4BD4855"),
    ("g4dn.xlarge", G_ON_DEMAND, "L-3819A6DF"),
    ("g5.xlarge", G_ON_DEMAND, "L-3819A6DF"),
    ("g6e.2xlarge", G_ON_DEMAND, "L-3819A6DF"),
    ("gr6.4xlarge", G_ON_DEMAND, "L-3819A6DF"),
    ("vt1.3xlarge", G_ON_DEMAND, "L-3819A6DF"),
    ("inf2.xlarge", "L-1945791B", "L-B5D1601B"),
    ("trn1n.32xlarge", "L-2C3B7624", "L-6B0D517C"),
    ("dl1.24xlarge", "L-6E869C2A", "L-85EED4F7"),
    ("f1.2xlarge", "L-74FC7D96", "L-88CF9481"),
    ("x2iedn.xlarge", "L-7295265B", "L-E3A00192"),
    ("m5.large", "L-1216C47A", "L-34B43A08"),
    ("c7gn.medium", "L-1216C47A", "L-34B43A08"),
    ("im4gn.large", "L-1216C47A", "L-34B43A08"),
    ("m7i-flex.large", "L-1216C47A", "L-34B43A08"),
    ("t4g.micro", "L-1216C47A", "L-34B43A08"),
])
def test_each_family_counts_against_its_quota(instance_type: str, on_demand: str, spot: str) -> None:
    assert dq.quota_code(instance_type, "on-demand") == on_demand
    assert dq.quota_code(instance_type, "spot") == spot
    assert on_demand in dq.QUOTA_NAMES and spot in dq.QUOTA_NAMES


@pytest.mark.parametrize(("instance_type", "market", "fragment"), [
    ("q9.xlarge", "on-demand", "belongs to no EC2 vCPU quota"),
    ("p3", "on-demand", "belongs to no EC2 vCPU quota"),
    ("mac2.metal", "on-demand", "belongs to no EC2 vCPU quota"),
    ("u-6tb1.56xlarge", "spot", "cannot run as spot"),
    ("hpc7g.4xlarge", "spot", "cannot run as spot"),
])
def test_types_without_a_quota_are_refused(instance_type: str, market: str, fragment: str) -> None:
    with pytest.raises(dq.QuotaError) as err:
        dq.quota_code(instance_type, market)
    assert fragment in err.value.msg and repr(instance_type) in err.value.msg


@pytest.mark.parametrize(("fleet", "fragment"), [
    ([{"instance_type": "p3.2xlarge", "count": -1}], "fleet[0].count is -1"),
    ([{"instance_type": "p3.2xlarge", "count": None}], "fleet[0].count is None"),
    ([{"instance_type": "g5.xlarge", "count": 1}, {"instance_type": "", "count": 1}], "fleet[1].instance_type"),
    ([{"instance_type": "p3.2xlarge", "count": 1, "market": "reserved"}], "fleet[0].market is 'reserved'"),
])
def test_bad_fleet_is_refused(fleet: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(dq.QuotaError) as err:
        dq.normalise_fleet(fleet, "on-demand")
    assert fragment in err.value.msg


def test_needs_add_up_per_quota_and_market() -> None:
    fleet = dq.normalise_fleet([{"instance_type": "p3.2xlarge", "count": 2},
                                {"instance_type": "p3.8xlarge", "count": 1},
                                {"instance_type": "p3.2xlarge", "count": 1},
                                {"instance_type": "g5.xlarge", "count": 3, "market": "spot"}], "on-demand")
    plans = dq.plan_needs(fleet, {"p3.2xlarge": 8, "p3.8xlarge": 32, "g5.xlarge": 4})
    assert sorted(plans) == ["L-3819A6DF", P_ON_DEMAND]
    assert plans[P_ON_DEMAND].needed == 3 * 8 + 32 and dict(plans[P_ON_DEMAND].instances) == {
        "p3.2xlarge": 3, "p3.8xlarge": 1}
    assert plans["L-3819A6DF"].needed == 12 and plans["L-3819A6DF"].market == "spot"


def test_usage_counts_spot_instances_against_spot_quotas() -> None:
    instances = [{"InstanceType": "p3.2xlarge"}, {"InstanceType": "p3.2xlarge", "InstanceLifecycle": "spot"},
                 {"InstanceType": "g5.xlarge"}, {"InstanceType": "mac2.metal"}]
    usage = dq.usage_by_quota(instances, {"p3.2xlarge": 8, "g5.xlarge": 4, "mac2.metal": 12})
    assert usage == {P_ON_DEMAND: 8, P_SPOT: 8, G_ON_DEMAND: 4}


def test_shortfall_message_says_what_increase_to_request() -> None:
    plan = dq.QuotaPlan(code=P_ON_DEMAND, market="on-demand", needed=16, usage=0, limit=8.0,
                        name=dq.QUOTA_NAMES[P_ON_DEMAND])
    plan.instances["p3.2xlarge"] = 2
    msg = plan.shortfall_message("us-east-1")
    assert msg.startswith("quota L-417A185B (Running On-Demand P instances) in us-east-1 allows 8 vCPUs and the fleet "
                          "needs 16 (2 × p3.2xlarge); request an increase to at least 16")  # noqa: RUF001 - as AWS users read it
    assert "--quota-code L-417A185B --desired-value 16 --region us-east-1" in msg and msg.endswith("or lower count")
    plan.usage = 24
    plan.limit = 32.0
    msg = plan.shortfall_message("us-east-1")
    assert "allows 32 vCPUs, 24 are in use, and the fleet needs 16 more" in msg
    assert "at least 40" in msg and plan.headroom == -8 and not plan.fits
