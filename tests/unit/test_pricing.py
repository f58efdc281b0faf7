"""Unit tests of module_utils/dlfleet_pricing.py (the Price List's JSON strings, spot history, volume prices, the
dated table, input checks) and of the cost lines of module_utils/dlfleet_report.py. No AWS, no processes."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import dlfleet_pricing as pr
from ansible.module_utils.dlfleet_report import render


def _entry(usd: str, unit: str = "Hrs", begin: str = "0", sku: str = "SKU1", **attributes: str) -> str:
    """A GetProducts PriceList string as AWS shapes it (one OnDemand term, one dimension, plus a Reserved term)."""
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {f"{sku}.JRTCKXETXF": {
                "priceDimensions": {f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                    "unit": unit, "endRange": "Inf", "description": f"${usd} per hour", "appliesTo": [],
                    "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7", "beginRange": begin, "pricePerUnit": {"USD": usd}}},
                "sku": sku, "effectiveDate": "2025-11-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
                "termAttributes": {}}},
            "Reserved": {f"{sku}.4NA7Y494T4": {"priceDimensions": {"x": {
                "unit": "Quantity", "beginRange": "0", "pricePerUnit": {"USD": "9999"}}}}},
        },
        "version": "20251120190341", "publicationDate": "2025-11-20T19:03:41Z",
    })


def test_parse_reads_only_on_demand_usd_dimensions() -> None:
    offers = pr.parse_price_list([_entry("1.0060000000", instanceType="g5.xlarge")])
    assert len(offers) == 1   # the Reserved term is not an On-Demand price
    offer = offers[0]
    assert offer["usd"] == pytest.approx(1.006) and offer["unit"] == "Hrs" and offer["sku"] == "SKU1"
    assert offer["attributes"] == {"instanceType": "g5.xlarge"}
    price = pr.api_price(offer, "us-east-1")
    assert (price["source"], price["as_of"], price["effective_date"]) == (pr.SOURCE_API, "2025-11-20", "2025-11-01")


def test_parse_takes_dicts_and_skips_dimensions_without_usd() -> None:
    doc = json.loads(_entry("0.5"))
    dim = next(iter(next(iter(doc["terms"]["OnDemand"].values()))["priceDimensions"].values()))
    dim["pricePerUnit"] = {"CNY": "3.6"}
    assert pr.parse_price_list([doc]) == []


def test_pick_offer_prefers_the_first_tier_of_the_unit_and_a_price_above_zero() -> None:
    offers = pr.parse_price_list([
        _entry("0.0000000000", sku="A"), _entry("0.0455", unit="IOPS-Mo", begin="32000", sku="B"),
        _entry("0.065", unit="IOPS-Mo", sku="C"), _entry("0.08", unit="GB-Mo", sku="D"), _entry("1.2", sku="E")])
    assert pr.pick_offer(offers, "IOPS-Mo")["sku"] == "C"
    assert pr.pick_offer(offers, "Hrs")["sku"] == "E"
    assert pr.pick_offer(offers, "Quantity") is None


def test_latest_spot_price_per_az() -> None:
    history = [
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.40", "Timestamp": "2025-11-20T10:00:00Z"},
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.45", "Timestamp": "2025-11-20T12:00:00Z"},
        {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.38", "Timestamp": "2025-11-19T12:00:00Z"},
    ]
    latest = pr.latest_spot_prices(history)
    assert {az: r["SpotPrice"] for az, r in latest.items()} == {"us-east-1a": "0.45", "us-east-1b": "0.38"}


def test_volume_prices_bill_gp3_iops_above_3000_and_all_io2_iops() -> None:
    gb = {"usd": 0.08, "source": pr.SOURCE_API, "as_of": "2025-11-20"}
    iops = {"usd": 0.005, "source": pr.SOURCE_API, "as_of": "2025-11-20"}
    gp3 = pr.volume_price({"type": "gp3", "size": 40, "iops": 4000}, gb, iops)
    assert gp3["billed_iops"] == 1000 and gp3["usd_per_month"] == pytest.approx(40 * 0.08 + 1000 * 0.005)
    assert gp3["usd_per_hour"] == pytest.approx(gp3["usd_per_month"] / 730, rel=1e-4) and gp3["priced"]
    io2 = pr.volume_price({"type": "io2", "size": 100, "iops": 6000}, {**gb, "usd": 0.125}, {**iops, "usd": 0.065})
    assert io2["usd_per_month"] == pytest.approx(100 * 0.125 + 6000 * 0.065)
    unpriced = pr.volume_price({"type": "io2", "size": 100, "iops": 6000}, gb, None)
    assert unpriced["priced"] is False   # IOPS billed but no IOPS price: the volume's price is incomplete


def test_table_price_names_its_date_and_the_region_it_stands_in_for() -> None:
    price = pr.table_price("ec2", "eu-west-1", "g5.xlarge", None, "Hrs", "the API did not answer")
    assert price["usd"] == pr.PRICE_TABLE["regions"]["us-east-1"]["ec2"]["g5.xlarge"]
    assert price["source"] == f"dated table {pr.PRICE_TABLE['as_of']}" and price["as_of"] == pr.PRICE_TABLE["as_of"]
    assert price["note"] == "the API did not answer; eu-west-1 is not in the table, priced as us-east-1"
    gb = pr.table_price("ebs", "us-east-1", "gp3", "gb_month", "GB-Mo", "why")
    assert gb["usd"] == pr.PRICE_TABLE["regions"]["us-east-1"]["ebs"]["gp3"]["gb_month"] and gb["note"] == "why"
    assert pr.table_price("ec2", "us-east-1", "x9.nosuch", None, "Hrs", "why") is None


@pytest.mark.parametrize(("params", "names"), [
    ({"ec2_instance_types": ["ml.m5.xlarge"]}, "ec2_instance_types holds 'ml.m5.xlarge'"),
    ({"sagemaker_training_instance_types": ["local"]}, "sagemaker_training_instance_types holds 'local'"),
    ({"sagemaker_hosting_instance_types": ["m5.xlarge"]}, "sagemaker_hosting_instance_types holds 'm5.xlarge'"),
    ({"ebs_volumes": [{"type": "gp9", "size": 1}]}, "ebs_volumes[0].type is 'gp9'"),
])
def test_bad_input_names_the_option(params: dict[str, Any], names: str) -> None:
    with pytest.raises(pr.PricingError, match=__import__("re").escape(names)):
        pr.check_params(params)


# ---------------------------------------------------------------------------------------------------------
# The report's cost lines


def _price(usd: float, unit: str = "Hrs", source: str = pr.SOURCE_API, as_of: str = "2025-11-20") -> dict:
    return {"usd": usd, "unit": unit, "source": source, "as_of": as_of, "note": None, "region": "us-east-1"}


def _artifacts(tmp_path: Path, fallback: str | None = None) -> Path:
    art = tmp_path / "run"
    (art / "sagemaker").mkdir(parents=True)
    volume = {"type": "gp3", "size": 40, "usd_per_hour": 0.08 * 40 / 730, "usd_per_month": 3.2}
    fleet = {
        "run": "run", "instances": [
            {"instance_id": f"i-{n}", "instance_type": "g5.xlarge", "launch_time": "2026-01-01T10:00:00+00:00"}
            for n in range(2)],
        "cost_estimate": {
            "hourly_usd": 2.0208, "hours": 8.0, "total_usd": 16.17, "instances": {"g5.xlarge": 2},
            "market": "on-demand", "region_priced": "us-east-1", "prices_usd_per_hour": {"g5.xlarge": 1.006},
            "price_source": f"{pr.SOURCE_API} (2025-11-20)", "prices_as_of": "2025-11-20",
            "fallback_reason": fallback,
            "ec2": {"hourly_usd": 2.012, "total_usd": 16.096, "prices": {"g5.xlarge": _price(1.006)}},
            "ebs": {"hourly_usd": 0.008767, "total_usd": 0.0701, "instances": 2, "volumes_per_instance": [volume],
                    "prices": {"gp3": {"gb_month": _price(0.08, "GB-Mo")}}},
        },
    }
    (art / "fleet.json").write_text(json.dumps(fleet))
    (art / "teardown.json").write_text(json.dumps({"finished": "2026-01-01T12:00:00+00:00", "removed": []}))
    (art / "sagemaker" / "training_job.json").write_text(json.dumps(
        {"name": "job", "instance_type": "local", "instance_count": 1, "billable_seconds": 360}))
    (art / "sagemaker" / "tuning_job.json").write_text(json.dumps(
        {"name": "tune", "trials": [{"name": "t1", "billable_seconds": 100}, {"name": "t2", "billable_seconds": 80}]}))
    (art / "sagemaker" / "endpoint.json").write_text(json.dumps(
        {"endpoint": "ep", "created": "2026-01-01T11:00:00Z", "deleted": "2026-01-01T11:30:00Z"}))
    (art / "sagemaker" / "prices.json").write_text(json.dumps({
        "training": {"instance_type": "local", "priced_as": "ml.m5.xlarge", "instance_count": 1,
                     "max_run_seconds": 3600, "price": _price(0.23)},
        "tuning": {"enabled": True, "max_jobs": 2, "max_run_seconds": 3600},
        "endpoint": {"instance_type": "local", "priced_as": "ml.m5.xlarge", "instance_count": 1, "bound_hours": 8,
                     "price": _price(0.23, source=pr.table_source(), as_of="2024-06")},
        "fallback_reason": None}))
    return art


def _row(report: str, start: str) -> list[str]:
    line = next((x for x in report.splitlines() if x.startswith(f"| {start}")), None)
    assert line, report
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_shows_estimate_and_actual_for_ec2_ebs_and_sagemaker_with_source_and_date(tmp_path: Path) -> None:
    report = render(_artifacts(tmp_path), now=datetime(2026, 1, 2, tzinfo=UTC))[0]
    ec2 = _row(report, "EC2 2 x g5.xlarge")
    assert ec2[1:] == ["16.096 for 8.0 h", f"{2 * 2 * 1.006:.3f} for 4.0 instance-hours", "g5.xlarge 1.006/h",
                       pr.SOURCE_API, "2025-11-20"]   # two instances for the 2 h from launch to teardown
    ebs = _row(report, "EBS 2 x (gp3 40 GiB)")
    assert ebs[2] == f"{round(4 * 0.08 * 40 / 730, 4):g} for 4.0 instance-hours" and ebs[4:] == [pr.SOURCE_API,
                                                                                                 "2025-11-20"]
    train = _row(report, "SageMaker training job (local x 1, priced as ml.m5.xlarge)")
    assert train[1:] == ["0.23 for max_run 3600 s", f"{0.23 * 360 / 3600:g} for 360 billable s x 1", "0.23/h",
                         pr.SOURCE_API, "2025-11-20"]
    tune = _row(report, "SageMaker tuning job (2 trials")
    assert tune[2] == f"{round(0.23 * 180 / 3600, 4):g} for 180 billable s of 2 trials"
    endpoint = _row(report, "SageMaker endpoint (local x 1, priced as ml.m5.xlarge)")
    assert endpoint[1:] == ["1.84 for 8 h (the ttl)", "0.115 for 0.5000 h, creation to deletion", "0.23/h",
                            pr.table_source(), "2024-06"]
    estimate = 16.096 + 0.0701 + 0.23 + 2 * 0.23 + 8 * 0.23
    actual = 4 * 1.006 + round(4 * 0.08 * 40 / 730, 6) + 0.23 * 360 / 3600 + 0.23 * 180 / 3600 + 0.23 / 2
    total = _row(report, "**Total**")
    assert total[1:3] == [f"**{round(estimate, 4):g}**", f"**{round(actual, 4):g}**"]


def test_report_total_says_when_an_item_has_no_price(tmp_path: Path) -> None:
    art = _artifacts(tmp_path)
    prices = json.loads((art / "sagemaker" / "prices.json").read_text())
    prices["endpoint"]["price"] = None
    (art / "sagemaker" / "prices.json").write_text(json.dumps(prices))
    report = render(art)[0]
    assert _row(report, "SageMaker endpoint")[4:] == ["no price", "-"]
    assert "(1 item(s) without a price)" in _row(report, "**Total**")[1]


def test_report_says_when_prices_came_from_the_dated_table(tmp_path: Path) -> None:
    report = render(_artifacts(tmp_path, fallback="the Price List API did not answer (AccessDenied)"))[0]
    assert "Prices from the dated table: the Price List API did not answer (AccessDenied)." in report
