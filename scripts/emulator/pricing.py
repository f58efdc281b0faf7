"""The AWS Price List API (service `pricing`, JSON 1.1, X-Amz-Target AWSPriceListService.*) and EC2 spot price
history, which moto 5.2.5 lacks (it has no `pricing` service, and answers every spot price as 0.00001 dated 2006).

Both answer from data/pricing.json: real-shaped PriceList entries (product, attributes, OnDemand terms,
publicationDate) for the instance types, EBS volume types and SageMaker instance types the defaults use, in
us-east-1 and eu-west-1, and spot prices per region, type and availability zone.

- `answer(environ, body, start_response)` serves GetProducts (TERM_MATCH/EQUALS filters on the product's
  attributes, productFamily and sku; MaxResults/NextToken pages) and DescribeServices. server.py routes every
  request whose X-Amz-Target starts with AWSPriceListService. here, and logs it like any other.
- `install()` patches moto's DescribeSpotPriceHistory to answer the seeded prices.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "pricing.json"
TARGET_PREFIX = "AWSPriceListService."
MATCH_TYPES = ("TERM_MATCH", "EQUALS")


@cache
def data() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def _field(product: dict[str, Any], field: str) -> str | None:
    inner = product["product"]
    if field == "productFamily":
        return inner.get("productFamily")
    if field == "sku":
        return inner.get("sku")
    if field.lower() == "servicecode":
        return product.get("serviceCode")
    attributes = inner.get("attributes") or {}
    return attributes.get(field, next((v for k, v in attributes.items() if k.lower() == field.lower()), None))


def get_products(request: dict[str, Any]) -> dict[str, Any]:
    service = request.get("ServiceCode")
    if not service:
        raise ValueError("ServiceCode is required")
    filters = request.get("Filters") or []
    for f in filters:
        if f.get("Type") not in MATCH_TYPES:
            raise ValueError(f"filter type {f.get('Type')!r} is not supported; use one of {', '.join(MATCH_TYPES)}")
    found = [p for p in data()["products"] if p["serviceCode"] == service
             and all(_field(p, f.get("Field", "")) == f.get("Value") for f in filters)]
    start = int(request.get("NextToken") or 0)
    size = int(request.get("MaxResults") or 100)
    out: dict[str, Any] = {"FormatVersion": request.get("FormatVersion") or "aws_v1",
                           "PriceList": [json.dumps(p, separators=(",", ":")) for p in found[start:start + size]]}
    if start + size < len(found):
        out["NextToken"] = str(start + size)
    return out


def describe_services(request: dict[str, Any]) -> dict[str, Any]:
    products = data()["products"]
    codes = sorted({p["serviceCode"] for p in products})
    if request.get("ServiceCode"):
        codes = [c for c in codes if c == request["ServiceCode"]]
    services = [{"ServiceCode": code, "AttributeNames": sorted(
        {k for p in products if p["serviceCode"] == code for k in p["product"]["attributes"]})} for code in codes]
    return {"FormatVersion": "aws_v1", "Services": services}


ACTIONS = {"GetProducts": get_products, "DescribeServices": describe_services}


def is_pricing(environ: dict[str, Any]) -> bool:
    return environ.get("HTTP_X_AMZ_TARGET", "").startswith(TARGET_PREFIX)


def answer(environ: dict[str, Any], body: bytes, start_response: Any) -> list[bytes]:
    action = environ.get("HTTP_X_AMZ_TARGET", "")[len(TARGET_PREFIX):]
    status, out = "200 OK", {}
    try:
        handler = ACTIONS.get(action)
        if handler is None:
            status, out = "400 Bad Request", {"__type": "UnknownOperationException",
                                              "message": f"the emulator's Price List API has no {action}"}
        else:
            out = handler(json.loads(body or b"{}"))
    except (ValueError, TypeError) as err:
        status, out = "400 Bad Request", {"__type": "InvalidParameterException", "message": str(err)}
    payload = json.dumps(out).encode()
    start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload))),
                            ("x-amzn-RequestId", "dlfleet-emulator-pricing")])
    return [payload]


def spot_history(region: str, instance_types: list[str], zones: list[str] | None) -> list[dict[str, str]]:
    spot = data()["spot"]
    prices = spot["regions"].get(region, {})
    rows = []
    for name in instance_types or sorted(prices):
        for suffix, price in sorted(prices.get(name, {}).items()):
            az = region + suffix
            if zones and az not in zones:
                continue
            rows.append({"InstanceType": name, "ProductDescription": "Linux/UNIX", "SpotPrice": f"{price:.6f}",
                         "AvailabilityZone": az, "Timestamp": spot["timestamp"]})
    return rows


_installed = False


def install() -> None:
    """Patch moto's DescribeSpotPriceHistory to answer the seeded prices (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    def describe_spot_price_history(self: Any) -> ActionResult:
        types = self._get_param("InstanceTypes", [])
        filters = self._filters_from_querystring()
        types = types or filters.get("instance-type") or []
        return ActionResult({"SpotPriceHistory": spot_history(self.region, types, filters.get("availability-zone"))})

    SpotInstances.describe_spot_price_history = describe_spot_price_history  # type: ignore[method-assign]
    _installed = True
