# Prices for aws_price_info: On-Demand prices from the AWS Price List API (GetProducts), spot prices from EC2's
# spot price history, and a dated table (PRICE_TABLE, the one place it lives) for when the API cannot answer.
# One thin function per AWS call; the parsing of the Price List's JSON strings is pure and unit-tested.
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.dlfleet_aws import AWS_ERRORS, DlfleetError, error_code, paginate

# An API that cannot be used: unreachable, denied, throttled past the retries, or an answer we cannot read.
# A tuple of exception classes (pylint cannot see them through the optional botocore import: the catches say so).
API_FAILURES = (*AWS_ERRORS, ValueError, KeyError, TypeError)

SOURCE_API = "AWS Price List API"
SOURCE_SPOT = "EC2 spot price history"
HOURS_PER_MONTH = 730   # how AWS prorates GB-month and IOPS-month prices per hour
GP3_FREE_IOPS = 3000    # gp3 includes 3,000 IOPS; only IOPS above are billed
PRICING_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")   # where the Price List API has endpoints
EBS_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
EBS_IOPS_TYPES = ("gp3", "io1", "io2")

# The dated table: used only when the Price List API is unreachable, denied, or has no price for an item.
# Source: https://aws.amazon.com/ec2/pricing/on-demand/ , https://aws.amazon.com/ebs/pricing/ and
# https://aws.amazon.com/sagemaker/pricing/ (Linux/UNIX, shared tenancy, USD), as published in June 2024.
# AWS lowered P4d/P4de/P5 prices by up to 45% in June 2025, so those rows overstate today's cost.
# Regions missing here are priced with the fallback region's rows, and the result says so.
PRICE_TABLE: dict[str, Any] = {
    "as_of": "2024-06",
    "currency": "USD",
    "fallback_region": "us-east-1",
    "regions": {
        "us-east-1": {
            "ec2": {   # USD per instance-hour
                "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
                "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352, "g4dn.metal": 7.824,
                "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
                "g5.12xlarge": 5.672, "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
                "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144,
                "g6.12xlarge": 4.6016, "g6.16xlarge": 3.3968, "g6.24xlarge": 6.6752, "g6.48xlarge": 13.3504,
                "p2.xlarge": 0.90, "p2.8xlarge": 7.20, "p2.16xlarge": 14.40,
                "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48, "p3dn.24xlarge": 31.212,
                "p4d.24xlarge": 32.7726, "p5.48xlarge": 98.32,
            },
            "ebs": {   # USD per GB-month of storage, per provisioned IOPS-month (gp3: above 3,000)
                "gp3": {"gb_month": 0.08, "iops_month": 0.005},
                "gp2": {"gb_month": 0.10},
                "io1": {"gb_month": 0.125, "iops_month": 0.065},
                "io2": {"gb_month": 0.125, "iops_month": 0.065},
                "st1": {"gb_month": 0.045},
                "sc1": {"gb_month": 0.015},
                "standard": {"gb_month": 0.05},
            },
            "sagemaker_training": {   # USD per instance-hour
                "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461, "ml.c5.xlarge": 0.204,
                "ml.c5.2xlarge": 0.408, "ml.g4dn.xlarge": 0.7364, "ml.g5.xlarge": 1.408,
                "ml.p2.xlarge": 1.125, "ml.p3.2xlarge": 3.825, "ml.p3.8xlarge": 14.688, "ml.p3.16xlarge": 28.152,
            },
            "sagemaker_hosting": {   # USD per instance-hour
                "ml.t2.medium": 0.056, "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.c5.large": 0.102,
                "ml.c5.xlarge": 0.204, "ml.g4dn.xlarge": 0.7364, "ml.g5.xlarge": 1.408,
                "ml.p2.xlarge": 1.125, "ml.p3.2xlarge": 3.825,
            },
        },
    },
}


class PricingError(DlfleetError):
    """Bad input: the message names the option and what to do."""


def table_source() -> str:
    return f"dated table {PRICE_TABLE['as_of']}"


# ---------------------------------------------------------------------------------------------------------
# Parsing the Price List (pure)


def parse_price_list(items: list[Any]) -> list[dict[str, Any]]:
    """Every OnDemand USD price dimension of GetProducts' PriceList entries (JSON strings, or dicts)."""
    offers = []
    for item in items:
        doc = json.loads(item) if isinstance(item, (str, bytes)) else item
        product = doc.get("product") or {}
        for term in ((doc.get("terms") or {}).get("OnDemand") or {}).values():
            for dim in (term.get("priceDimensions") or {}).values():
                usd = (dim.get("pricePerUnit") or {}).get("USD")
                if usd is None:
                    continue
                offers.append({
                    "sku": product.get("sku") or term.get("sku"),
                    "product_family": product.get("productFamily"),
                    "attributes": product.get("attributes") or {},
                    "usd": float(usd),
                    "unit": dim.get("unit"),
                    "begin_range": dim.get("beginRange"),
                    "description": dim.get("description"),
                    "effective_date": term.get("effectiveDate"),
                    "publication_date": doc.get("publicationDate"),
                    "version": doc.get("version"),
                })
    return offers


def _day(stamp: Any) -> str | None:
    return str(stamp)[:10] if stamp else None


def pick_offer(offers: list[dict[str, Any]], unit: str | None = None) -> dict[str, Any] | None:
    """The first tier (beginRange 0) of the unit asked for; a price above zero before a zero one."""
    fitting = [o for o in offers if (unit is None or o["unit"] == unit) and str(o["begin_range"] or "0") == "0"]
    fitting.sort(key=lambda o: (o["usd"] <= 0, o["sku"] or ""))
    return fitting[0] if fitting else None


def api_price(offer: dict[str, Any], region: str) -> dict[str, Any]:
    """A price entry from an offer: its USD, unit, source and the price list's publication date."""
    return {"usd": offer["usd"], "unit": offer["unit"], "source": SOURCE_API,
            "as_of": _day(offer["publication_date"]) or _day(offer["effective_date"]),
            "effective_date": _day(offer["effective_date"]), "region": region, "sku": offer["sku"],
            "description": offer["description"], "note": None}


def table_price(kind: str, region: str, name: str, key: str | None, unit: str, why: str) -> dict[str, Any] | None:
    """A price entry from the dated table (the fallback region's row when the region has none), or None."""
    regions = PRICE_TABLE["regions"]
    priced_in = region if region in regions else PRICE_TABLE["fallback_region"]
    row = regions[priced_in].get(kind, {}).get(name)
    if isinstance(row, dict):
        row = row.get(key or "")
    if row is None:
        return None
    note = why if priced_in == region else f"{why}; {region} is not in the table, priced as {priced_in}"
    return {"usd": float(row), "unit": unit, "source": table_source(), "as_of": PRICE_TABLE["as_of"],
            "effective_date": None, "region": priced_in, "sku": None, "description": None, "note": note}


def latest_spot_prices(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest SpotPriceHistory record per availability zone."""
    newest: dict[str, dict[str, Any]] = {}
    for rec in history:
        az = rec.get("AvailabilityZone", "")
        stamp = rec.get("Timestamp")
        if az not in newest or str(stamp) > str(newest[az].get("Timestamp")):
            newest[az] = rec
    return newest


def volume_price(volume: dict[str, Any], gb: dict[str, Any] | None,
                 iops: dict[str, Any] | None) -> dict[str, Any]:
    """One volume's USD per month and per hour from its type's GB-month and IOPS-month prices."""
    size = int(volume.get("size") or 0)
    vtype = volume["type"]
    asked_iops = int(volume.get("iops") or 0)
    billed_iops = max(0, asked_iops - GP3_FREE_IOPS) if vtype == "gp3" else asked_iops
    if vtype not in EBS_IOPS_TYPES:
        billed_iops = 0
    monthly = size * (gb["usd"] if gb else 0.0) + billed_iops * (iops["usd"] if iops and billed_iops else 0.0)
    used = [p for p in (gb, iops if billed_iops else None) if p]
    return {"type": vtype, "size": size, "iops": asked_iops or None, "billed_iops": billed_iops,
            "usd_per_month": round(monthly, 4), "usd_per_hour": round(monthly / HOURS_PER_MONTH, 6),
            "priced": gb is not None and (not billed_iops or iops is not None),
            "sources": sorted({f"{p['source']} ({p['as_of']})" for p in used})}


def check_params(params: dict[str, Any]) -> None:
    """Bad input fails before any call, naming the option."""
    for name in params.get("ec2_instance_types") or []:
        if not name or name.startswith("ml.") or "." not in name:
            raise PricingError(f"ec2_instance_types holds {name!r}, which is no EC2 instance type: give names such "
                               f"as g5.xlarge (SageMaker's ml.* types go in sagemaker_training_instance_types or "
                               f"sagemaker_hosting_instance_types)")
    for option in ("sagemaker_training_instance_types", "sagemaker_hosting_instance_types"):
        for name in params.get(option) or []:
            if not str(name).startswith("ml."):
                raise PricingError(f"{option} holds {name!r}: SageMaker instance types start with ml., for "
                                   f"example ml.m5.xlarge (price local mode's jobs as such a type)")
    for n, volume in enumerate(params.get("ebs_volumes") or []):
        if volume.get("type") not in EBS_TYPES:
            raise PricingError(f"ebs_volumes[{n}].type is {volume.get('type')!r}: use one of {', '.join(EBS_TYPES)}")
        if int(volume.get("size") or 0) < 0 or int(volume.get("iops") or 0) < 0:
            raise PricingError(f"ebs_volumes[{n}] has a negative size or iops: give GiB and IOPS of 0 or more")


# ---------------------------------------------------------------------------------------------------------
# AWS calls (one thin function each)


def get_products(pricing, service_code: str, filters: dict[str, str]) -> list[str]:
    """GetProducts with TERM_MATCH filters, every page."""
    terms = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()]
    pages = paginate(pricing, "get_products", ServiceCode=service_code, Filters=terms, FormatVersion="aws_v1")
    return [item for page in pages for item in page.get("PriceList", [])]


def spot_price_history(ec2, instance_type: str) -> list[dict[str, Any]]:
    """DescribeSpotPriceHistory for Linux/UNIX, from now: the price in force in each AZ."""
    pages = paginate(ec2, "describe_spot_price_history", InstanceTypes=[instance_type],
                     ProductDescriptions=["Linux/UNIX"], StartTime=datetime.now(UTC))
    return [rec for page in pages for rec in page.get("SpotPriceHistory", [])]


# ---------------------------------------------------------------------------------------------------------
# The lookup


def ec2_filters(region: str, instance_type: str) -> dict[str, str]:
    return {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
            "preInstalledSw": "NA", "capacitystatus": "Used"}


def ebs_filters(region: str, vtype: str, what: str) -> dict[str, str]:
    if what == "gb_month":
        return {"productFamily": "Storage", "volumeApiName": vtype, "regionCode": region}
    return {"productFamily": "System Operation", "group": "EBS IOPS", "volumeApiName": vtype, "regionCode": region}


def sagemaker_filters(region: str, instance_type: str, component: str) -> dict[str, str]:
    return {"productFamily": "ML Instance", "instanceName": instance_type, "regionCode": region,
            "platoinstancetype": component}


class Lookup:
    """Asks the Price List API item by item; once it fails (unreachable, denied) the rest come from the table."""

    def __init__(self, pricing, region: str, use_api: bool = True) -> None:
        self.pricing = pricing
        self.region = region
        self.api_error: str | None = None if use_api else "the Price List API was not asked (use_api: false)"
        self.unpriced: list[str] = []

    def _from_api(self, service_code: str, filters: dict[str, str], unit: str | None) -> dict[str, Any] | None:
        if self.api_error:
            return None
        try:
            offer = pick_offer(parse_price_list(get_products(self.pricing, service_code, filters)), unit)
        except API_FAILURES as err:  # pylint: disable=catching-non-exception
            code = error_code(err)
            self.api_error = f"the Price List API did not answer ({code + ': ' if code else ''}{err})"
            return None
        return api_price(offer, self.region) if offer else None

    def price(self, label: str, service_code: str, filters: dict[str, str], unit: str | None,
              table: tuple[str, str, str | None], table_unit: str) -> dict[str, Any] | None:
        found = self._from_api(service_code, filters, unit)
        if found:
            return found
        why = self.api_error or f"the Price List API has no price for {label} in {self.region}"
        found = table_price(table[0], self.region, table[1], table[2], table_unit, why)
        if not found:
            self.unpriced.append(label)
        return found


def lookup(pricing, ec2, params: dict[str, Any]) -> dict[str, Any]:
    """Every price the parameters ask for, each with its source and date."""
    check_params(params)
    region = params["region"]
    look = Lookup(pricing, region, params.get("use_api", True))
    out: dict[str, Any] = {"region": region, "ec2": {}, "ec2_spot": {}, "ebs": {}, "ebs_volumes": [],
                           "sagemaker_training": {}, "sagemaker_hosting": {}}
    for name in dict.fromkeys(params.get("ec2_instance_types") or []):
        price = look.price(f"EC2 {name}", "AmazonEC2", ec2_filters(region, name), "Hrs", ("ec2", name, None), "Hrs")
        if price:
            out["ec2"][name] = price
        if params.get("market") == "spot":
            out["ec2_spot"][name] = spot_price(ec2, name, price)
    volumes = params.get("ebs_volumes") or []
    for vtype in dict.fromkeys(v["type"] for v in volumes):
        entry: dict[str, Any] = {"gb_month": look.price(
            f"EBS {vtype} storage", "AmazonEC2", ebs_filters(region, vtype, "gb_month"), "GB-Mo",
            ("ebs", vtype, "gb_month"), "GB-Mo")}
        if vtype in EBS_IOPS_TYPES and any(volume_price(v, None, None)["billed_iops"] for v in volumes
                                           if v["type"] == vtype):
            entry["iops_month"] = look.price(
                f"EBS {vtype} IOPS", "AmazonEC2", ebs_filters(region, vtype, "iops_month"), "IOPS-Mo",
                ("ebs", vtype, "iops_month"), "IOPS-Mo")
        out["ebs"][vtype] = entry
    out["ebs_volumes"] = [volume_price(v, out["ebs"][v["type"]]["gb_month"], out["ebs"][v["type"]].get("iops_month"))
                          for v in volumes]
    sagemaker_options = (("sagemaker_training_instance_types", "sagemaker_training", "Training"),
                         ("sagemaker_hosting_instance_types", "sagemaker_hosting", "Hosting"))
    for option, kind, component in sagemaker_options:
        for name in dict.fromkeys(params.get(option) or []):
            price = look.price(f"SageMaker {component.lower()} {name}", "AmazonSageMaker",
                               sagemaker_filters(region, name, component), "Hrs", (kind, name, None), "Hrs")
            if price:
                out[kind][name] = price
    out["api_available"] = look.api_error is None
    out["fallback_reason"] = look.api_error
    out["unpriced"] = look.unpriced
    out["sources"] = sorted({f"{p['source']} ({p['as_of']})" for p in _all_prices(out)})
    return out


def spot_price(ec2, instance_type: str, on_demand: dict[str, Any] | None) -> dict[str, Any] | None:
    """The highest current spot price across the region's AZs (an upper bound for the fleet); when the history
    cannot be read or is empty, the On-Demand price (spot never costs more), saying so."""
    why = None
    try:
        latest = latest_spot_prices(spot_price_history(ec2, instance_type))
    except API_FAILURES as err:  # pylint: disable=catching-non-exception
        latest, why = {}, f"spot price history not read ({error_code(err) or err})"
    if latest:
        top = max(latest.values(), key=lambda r: float(r["SpotPrice"]))
        return {"usd": float(top["SpotPrice"]), "unit": "Hrs", "source": SOURCE_SPOT,
                "as_of": _day(top["Timestamp"].isoformat() if hasattr(top["Timestamp"], "isoformat")
                              else top["Timestamp"]),
                "effective_date": None, "region": None, "sku": None, "description": None,
                "note": "the highest current price across the region's availability zones",
                "availability_zones": {az: float(r["SpotPrice"]) for az, r in sorted(latest.items())}}
    if not on_demand:
        return None
    return {**on_demand, "note": f"{why or 'no spot price history'}: priced at On-Demand (an upper bound)"}


def _all_prices(out: dict[str, Any]) -> list[dict[str, Any]]:
    prices = [*out["ec2"].values(), *(p for p in out["ec2_spot"].values() if p),
              *out["sagemaker_training"].values(), *out["sagemaker_hosting"].values()]
    for entry in out["ebs"].values():
        prices += [p for p in entry.values() if p]
    return prices
