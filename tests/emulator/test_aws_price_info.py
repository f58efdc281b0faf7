"""aws_price_info through ansible-playbook against the session emulator, whose Price List API (GetProducts) and spot
price history answer from scripts/emulator/data/pricing.json. One playbook run proves: the seeded On-Demand
prices of two regions (EC2, EBS, SageMaker training and hosting) with their source and publication date, spot
prices, check mode, and the fall-back to the dated table when the Price List API's endpoint is a closed port.
The parsing itself is unit-tested in tests/unit/test_pricing.py.
"""
from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.dlfleet_pricing import PRICE_TABLE, SOURCE_API, SOURCE_SPOT, table_source
from helpers import ROOT, run_playbook

SEED = json.loads((ROOT / "scripts" / "emulator" / "data" / "pricing.json").read_text())


def seeded(service: str, region: str, **attributes: str) -> tuple[float, str]:
    """(USD, publication date) of the one seeded product with these attributes, read from the data file."""
    found = [p for p in SEED["products"] if p["serviceCode"] == service
             and p["product"]["attributes"]["regionCode"] == region
             and all(p["product"]["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (service, region, attributes, len(found))
    dim = next(iter(next(iter(found[0]["terms"]["OnDemand"].values()))["priceDimensions"].values()))
    return float(dim["pricePerUnit"]["USD"]), found[0]["publicationDate"][:10]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_tasks(tasks: list[dict[str, Any]], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    book = [{"name": "aws_price_info under test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path = ROOT / "tests" / f".tmp-play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(book))
    try:
        run = run_playbook(path, env=env, timeout=300)
    finally:
        path.unlink()
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return {task["name"]: run.results(task["name"]) for task in tasks}


@pytest.fixture(scope="module")
def results(emulator) -> dict[str, dict[str, Any]]:
    volumes = [{"type": "gp3", "size": 40}, {"type": "io2", "size": 100, "iops": 6000}]
    common = {"ec2_instance_types": ["g5.xlarge", "p3.2xlarge"], "ebs_volumes": volumes,
              "sagemaker_training_instance_types": ["ml.p3.2xlarge"],
              "sagemaker_hosting_instance_types": ["ml.m5.xlarge"]}
    tasks = [
        {"name": "Price in us-east-1", "aws_price_info": {**common, "region": "us-east-1"}},
        {"name": "Price in eu-west-1 with spot", "aws_price_info": {**common, "region": "eu-west-1", "market": "spot"}},
        {"name": "Price in check mode", "check_mode": True,
         "aws_price_info": {"region": "eu-west-1", "ec2_instance_types": ["g4dn.xlarge"]}},
        {"name": "Price with the Price List API unreachable", "aws_price_info": {
            **common, "region": "eu-west-1",
            "pricing_endpoint_url": f"http://127.0.0.1:{closed_port()}"}},
        {"name": "Price a type the price list lacks", "aws_price_info": {
            "region": "us-east-1", "ec2_instance_types": ["g6.2xlarge", "x9.nosuch"]}},
        {"name": "Price a SageMaker type given as an EC2 type", "ignore_errors": True,
         "aws_price_info": {"region": "us-east-1", "ec2_instance_types": ["ml.m5.xlarge"]}},
    ]
    return run_tasks(tasks, {**emulator.env})


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_seeded_prices_of_two_regions_with_source_and_date(results, region: str) -> None:
    res = results["Price in us-east-1" if region == "us-east-1" else "Price in eu-west-1 with spot"]
    assert res["api_available"] is True and res["fallback_reason"] is None and res["unpriced"] == []
    for name in ("g5.xlarge", "p3.2xlarge"):
        usd, date = seeded("AmazonEC2", region, instanceType=name, operatingSystem="Linux", preInstalledSw="NA",
                           capacitystatus="Used")
        assert res["ec2"][name]["usd"] == pytest.approx(usd)   # not the Windows, SQL or reservation products
        assert (res["ec2"][name]["source"], res["ec2"][name]["as_of"], res["ec2"][name]["unit"]) == (
            SOURCE_API, date, "Hrs")
    gp3, _ = seeded("AmazonEC2", region, volumeApiName="gp3", volumeType="General Purpose")
    io2_gb, _ = seeded("AmazonEC2", region, volumeApiName="io2", volumeType="Provisioned IOPS")
    io2_iops, _ = seeded("AmazonEC2", region, volumeApiName="io2", group="EBS IOPS")   # tier 1, not tier 2
    assert res["ebs"]["gp3"]["gb_month"]["usd"] == pytest.approx(gp3)
    assert "iops_month" not in res["ebs"]["gp3"]   # 0 IOPS asked: none above the 3,000 gp3 includes
    assert res["ebs"]["io2"]["iops_month"]["usd"] == pytest.approx(io2_iops)
    gp3_vol, io2_vol = res["ebs_volumes"]
    assert gp3_vol["usd_per_month"] == pytest.approx(40 * gp3)
    assert io2_vol["usd_per_month"] == pytest.approx(100 * io2_gb + 6000 * io2_iops)
    assert io2_vol["usd_per_hour"] == pytest.approx(io2_vol["usd_per_month"] / 730, rel=1e-4)
    train, _ = seeded("AmazonSageMaker", region, instanceName="ml.p3.2xlarge", platoinstancetype="Training")
    host, _ = seeded("AmazonSageMaker", region, instanceName="ml.m5.xlarge", platoinstancetype="Hosting")
    assert res["sagemaker_training"]["ml.p3.2xlarge"]["usd"] == pytest.approx(train)
    assert res["sagemaker_hosting"]["ml.m5.xlarge"]["usd"] == pytest.approx(host)
    assert res["sources"] == [f"{SOURCE_API} ({res['ec2']['g5.xlarge']['as_of']})"] + (
        [f"{SOURCE_SPOT} (2025-11-20)"] if region == "eu-west-1" else [])


def test_regions_differ_and_eu_west_1_is_not_the_tables(results) -> None:
    east, west = results["Price in us-east-1"], results["Price in eu-west-1 with spot"]
    assert west["ec2"]["g5.xlarge"]["usd"] != east["ec2"]["g5.xlarge"]["usd"]
    assert "eu-west-1" not in PRICE_TABLE["regions"]   # so these prices can only have come from the API


def test_spot_prices_are_the_highest_current_per_az(results) -> None:
    spot = results["Price in eu-west-1 with spot"]["ec2_spot"]["g5.xlarge"]
    azs = {f"eu-west-1{k}": v for k, v in SEED["spot"]["regions"]["eu-west-1"]["g5.xlarge"].items()}
    assert spot["availability_zones"] == pytest.approx(azs)
    assert spot["usd"] == pytest.approx(max(azs.values())) and spot["source"] == SOURCE_SPOT
    assert results["Price in us-east-1"]["ec2_spot"] == {}   # on-demand: no spot history read


def test_check_mode_reads_the_same_prices(results) -> None:
    res = results["Price in check mode"]
    usd, _ = seeded("AmazonEC2", "eu-west-1", instanceType="g4dn.xlarge", operatingSystem="Linux")
    assert res["changed"] is False and res["ec2"]["g4dn.xlarge"]["usd"] == pytest.approx(usd)


def test_unreachable_price_list_falls_back_to_the_dated_table(results) -> None:
    res = results["Price with the Price List API unreachable"]
    table = PRICE_TABLE["regions"]["us-east-1"]
    assert res["api_available"] is False and "did not answer" in res["fallback_reason"]
    assert any("dated table" in w for w in res.get("warnings", [])), res.get("warnings")
    price = res["ec2"]["g5.xlarge"]
    assert price["source"] == table_source() == f"dated table {PRICE_TABLE['as_of']}"
    assert price["as_of"] == PRICE_TABLE["as_of"] and price["usd"] == table["ec2"]["g5.xlarge"]
    assert price["region"] == "us-east-1" and "eu-west-1 is not in the table" in price["note"]
    assert res["ebs"]["gp3"]["gb_month"]["usd"] == table["ebs"]["gp3"]["gb_month"]
    assert res["sagemaker_training"]["ml.p3.2xlarge"]["usd"] == table["sagemaker_training"]["ml.p3.2xlarge"]
    assert res["sources"] == [f"{table_source()} ({PRICE_TABLE['as_of']})"]


def test_a_type_the_price_list_lacks_comes_from_the_table_or_is_unpriced(results) -> None:
    res = results["Price a type the price list lacks"]
    assert res["api_available"] is True   # the API answered, with no product for these
    assert res["ec2"]["g6.2xlarge"]["source"] == table_source()
    assert "has no price for EC2 g6.2xlarge" in res["ec2"]["g6.2xlarge"]["note"]
    assert res["unpriced"] == ["EC2 x9.nosuch"] and "x9.nosuch" not in res["ec2"]


def test_bad_input_names_the_option(results) -> None:
    res = results["Price a SageMaker type given as an EC2 type"]
    assert res["failed"] and "ec2_instance_types holds 'ml.m5.xlarge'" in res["msg"]
    assert "sagemaker_training_instance_types" in res["msg"]


def test_the_request_log_names_the_price_list_calls(emulator, results) -> None:
    log = [json.loads(line) for line in Path(emulator.state_dir / "requests.jsonl").read_text().splitlines()]
    actions = {(r["service"], r["action"], r["status"]) for r in log}
    assert ("pricing", "GetProducts", 200) in actions
    assert ("ec2", "DescribeSpotPriceHistory", 200) in actions
