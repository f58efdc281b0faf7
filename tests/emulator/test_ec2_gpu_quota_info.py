"""ec2_gpu_quota_info against the emulator: the preflight of module_utils/dlfleet_quota.py, and runs of the module
through ansible-playbook (its pure logic is in tests/unit/test_ec2_gpu_quota_info.py).

Quota values come from the session emulator's Service Quotas API over real HTTP (changed per test with
`scripts/aws-emulator set-quota`, restored afterwards); usage from instances really launched in it.
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from ansible.module_utils import dlfleet_quota as dq
from ansible.module_utils.dlfleet_aws import aws_retry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from helpers import ROOT, run_playbook

P_ON_DEMAND, G_ON_DEMAND, P_SPOT = "L-417A185B", "L-DB2E81BA", "L-7212CCBC"


def _wrap(client):
    return RetryingBotoClientWrapper(client, aws_retry)


@pytest.fixture
def set_quota(emulator) -> Iterator[Any]:
    """set_quota(code, value or None); every quota touched is put back as it was."""
    sq = emulator.client("service-quotas")
    saved: dict[str, str] = {}

    def _set(code: str, value: float | None) -> None:
        if code not in saved:
            try:
                saved[code] = f"{sq.get_service_quota(ServiceCode='ec2', QuotaCode=code)['Quota']['Value']:g}"
            except sq.exceptions.NoSuchResourceException:
                saved[code] = "none"
        _cli(emulator, code, "none" if value is None else f"{value:g}")

    yield _set
    for code, value in saved.items():
        _cli(emulator, code, value)


def _cli(emulator, code: str, value: str) -> None:
    subprocess.run([str(ROOT / "scripts/aws-emulator"), "set-quota", code, value, "--state-dir",
                    str(emulator.state_dir)], check=True, capture_output=True, timeout=60)


@pytest.fixture
def launched(emulator) -> Iterator[Any]:
    """launch(instance_type, count, **extra) in the emulator; terminated afterwards."""
    ec2 = emulator.client("ec2")
    image = emulator.client("ssm").get_parameter(
        Name="/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    )["Parameter"]["Value"]
    ids: list[str] = []

    def _launch(instance_type: str, count: int, **extra: Any) -> list[str]:
        out = ec2.run_instances(ImageId=image, InstanceType=instance_type, MinCount=count, MaxCount=count, **extra)
        new = [i["InstanceId"] for i in out["Instances"]]
        ids.extend(new)
        return new

    yield _launch
    if ids:
        ec2.terminate_instances(InstanceIds=ids)


def _check(emulator, fleet: list[dict[str, Any]], market: str = "on-demand") -> dict[str, Any]:
    return dq.check(_wrap(emulator.client("ec2")), _wrap(emulator.client("service-quotas")), fleet, market,
                    "us-east-1")


def _quota(result: dict[str, Any], code: str) -> dict[str, Any]:
    return next(q for q in result["quotas"] if q["quota_code"] == code)


# --------------------------------------------------------------------------------------------------------
# the preflight against the emulator
# --------------------------------------------------------------------------------------------------------

def test_default_fleet_fits_the_emulated_account(emulator) -> None:
    result = _check(emulator, [{"instance_type": "g5.xlarge", "count": 2}])
    g = _quota(result, G_ON_DEMAND)
    assert result["fits"] and g["fits"] and g["needed"] == 8 and g["limit_source"] == "account"
    assert g["headroom"] == g["limit"] - g["usage"] - 8


def test_shortfall_with_the_account_value(emulator, set_quota) -> None:
    set_quota(P_ON_DEMAND, 8)
    result = _check(emulator, [{"instance_type": "p3.2xlarge", "count": 2}])
    p = _quota(result, P_ON_DEMAND)
    assert not result["fits"] and (p["limit"], p["needed"], p["limit_source"]) == (8.0, 16, "account")
    assert result["shortfalls"] == [dq.QuotaPlan(
        code=P_ON_DEMAND, market="on-demand", needed=16, usage=p["usage"], limit=8.0, name=p["quota_name"],
        instances=Counter({"p3.2xlarge": 2})).shortfall_message("us-east-1")]
    assert "request an increase to at least" in result["shortfalls"][0]


def test_falls_back_to_the_aws_default_when_the_account_has_no_value(emulator, set_quota) -> None:
    set_quota(P_SPOT, None)
    default = emulator.client("service-quotas").get_aws_default_service_quota(
        ServiceCode="ec2", QuotaCode=P_SPOT)["Quota"]["Value"]
    result = _check(emulator, [{"instance_type": "p3.2xlarge", "count": 1}], market="spot")
    p = _quota(result, P_SPOT)
    assert (p["limit"], p["limit_source"], p["market"]) == (default, "aws-default", "spot")
    set_quota(P_SPOT, 16)
    p = _quota(_check(emulator, [{"instance_type": "p3.2xlarge", "count": 1}], market="spot"), P_SPOT)
    assert (p["limit"], p["limit_source"], p["fits"]) == (16.0, "account", True)


def test_usage_sums_running_and_pending_vcpus(emulator, launched) -> None:
    fleet = [{"instance_type": "p3.2xlarge", "count": 1}]
    before = _quota(_check(emulator, fleet), P_ON_DEMAND)["usage"]
    ids = launched("p3.2xlarge", 2) + launched("p2.xlarge", 1)
    launched("g5.xlarge", 1)
    after = _quota(_check(emulator, fleet), P_ON_DEMAND)
    assert after["usage"] - before == 2 * 8 + 4
    emulator.client("ec2").stop_instances(InstanceIds=ids[:1])
    assert _quota(_check(emulator, fleet), P_ON_DEMAND)["usage"] - before == 8 + 4, "stopped ones do not count"


def test_one_describe_whatever_the_fleet(emulator) -> None:
    log = emulator.state_dir / "requests.jsonl"
    start = len(log.read_text().splitlines())
    _check(emulator, [{"instance_type": "p3.2xlarge", "count": 2}, {"instance_type": "g5.xlarge", "count": 4},
                      {"instance_type": "g4dn.xlarge", "count": 1}, {"instance_type": "p3.8xlarge", "count": 1}])
    actions = [json.loads(line)["action"] for line in log.read_text().splitlines()[start:]]
    assert actions.count("DescribeInstances") == 1 and actions.count("DescribeInstanceTypes") == 1
    assert actions.count("GetServiceQuota") == 2, "one per quota: On-Demand P and On-Demand G"


def test_unknown_type_is_refused_with_its_name(emulator) -> None:
    with pytest.raises(dq.QuotaError) as err:
        _check(emulator, [{"instance_type": "p3.xlarge", "count": 1}, {"instance_type": "g5.xlarge", "count": 1}])
    assert "unknown instance type(s) p3.xlarge in us-east-1" in err.value.msg


def test_preflight_holds_under_throttling_and_server_errors(faulty_aws) -> None:
    fleet = [{"instance_type": "p3.2xlarge", "count": 2}, {"instance_type": "g5.xlarge", "count": 2}]
    direct = dq.check(_wrap(faulty_aws.direct("ec2")), _wrap(faulty_aws.direct("service-quotas")), fleet,
                      "on-demand", "us-east-1")
    faulty_aws.configure(throttle=0.3, server_error=0.1, seed=5)
    proxied = dq.check(_wrap(faulty_aws.client("ec2")), _wrap(faulty_aws.client("service-quotas")), fleet,
                       "on-demand", "us-east-1")
    assert proxied == direct
    assert faulty_aws.counters["throttle"] + faulty_aws.counters["server_error"] > 0


# --------------------------------------------------------------------------------------------------------
# the module, through ansible-playbook
# --------------------------------------------------------------------------------------------------------

def _play(tmp_path, tasks: list[dict[str, Any]], env: dict[str, str]) -> Any:
    """One ansible-playbook run of several ec2_gpu_quota_info tasks (failures ignored, results kept)."""
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump([{"name": "Quota preflight under test", "hosts": "localhost",
                                     "gather_facts": False, "tasks": tasks}]))
    return run_playbook(path, env=env)


def test_module_fails_on_shortfall_naming_the_increase_and_creates_nothing(aws_env, emulator, set_quota,
                                                                          tmp_path) -> None:
    set_quota(P_ON_DEMAND, 8)
    ec2 = emulator.client("ec2")
    before = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
    args = {"fleet": [{"instance_type": "p3.2xlarge", "count": 2}], "fail_on_shortfall": True}
    run = _play(tmp_path, [
        {"name": "Check mode", "ec2_gpu_quota_info": args, "check_mode": True, "ignore_errors": True},
        {"name": "Apply", "ec2_gpu_quota_info": args, "ignore_errors": True},
        {"name": "Report only", "ec2_gpu_quota_info": {**args, "fail_on_shortfall": False}},
    ], aws_env)
    for name in ("Check mode", "Apply"):
        result = run.results(name)
        assert result.get("failed"), result
        assert "quota L-417A185B (Running On-Demand P instances) in us-east-1 allows 8 vCPUs" in result["msg"]
        assert "(2 × p3.2xlarge)" in result["msg"] and "or lower count" in result["msg"]  # noqa: RUF001 - the plan
        assert result["fits"] is False and result["quotas"][0]["headroom"] < 0
    report = run.results("Report only")
    assert not report.get("failed") and report["changed"] is False and report["fits"] is False
    assert run.changed == 0
    assert sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"]) == before


def test_module_reports_headroom_in_check_mode_and_refuses_bad_input(aws_env, tmp_path) -> None:
    bad = [([{"instance_type": "g5.xlarge"}], "count"),
           ([{"instance_type": "g5.xlarge", "count": "two"}], "two"),
           ([{"instance_type": "p9.xlarge", "count": 1}], "unknown instance type(s) p9.xlarge"),
           ([{"instance_type": "g5.xlarge", "count": 1, "market": "reserved"}], "reserved")]
    tasks = [{"name": "Headroom", "ec2_gpu_quota_info": {"fleet": [{"instance_type": "g5.xlarge", "count": "2"}]},
              "check_mode": True}]
    tasks += [{"name": f"Bad {i}", "ec2_gpu_quota_info": {"fleet": fleet, "fail_on_shortfall": True},
               "ignore_errors": True} for i, (fleet, _) in enumerate(bad)]
    run = _play(tmp_path, tasks, aws_env)
    result = run.results("Headroom")
    assert not result.get("failed") and result["changed"] is False and result["fits"] is True
    g = _quota(result, G_ON_DEMAND)
    assert g["needed"] == 8 and g["instances"] == {"g5.xlarge": 2} and g["vcpus_per_instance"] == {"g5.xlarge": 4}
    for i, (_, fragment) in enumerate(bad):
        result = run.results(f"Bad {i}")
        assert result.get("failed") and fragment in result["msg"], result
