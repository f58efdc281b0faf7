# EC2 vCPU quota preflight for ec2_gpu_quota_info: which Service Quotas quota each planned instance type counts
# against, its value (the account's, else the AWS default), current usage from running and pending instances,
# and what the planned fleet needs. SageMaker instance quota preflight for sagemaker_quota_info: the quota named
# "<ml type> for <usage> usage", its value, and the instances the run needs. One thin function per AWS call.
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.dlfleet_aws import (
    AWS_ERRORS,
    DlfleetError,
    describe_instance_types,
    is_not_found,
    paginate,
)

SERVICE_CODE = "ec2"
MARKETS = ("on-demand", "spot")

# Quota code -> name, for the vCPU-based EC2 quotas (Service Quotas, service code ec2).
QUOTA_NAMES = {
    "L-1216C47A": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "L-DB2E81BA": "Running On-Demand G and VT instances",
    "L-417A185B": "Running On-Demand P instances",
    "L-74FC7D96": "Running On-Demand F instances",
    "L-1945791B": "Running On-Demand Inf instances",
    "L-2C3B7624": "Running On-Demand Trn instances",
    "L-6E869C2A": "Running On-Demand DL instances",
    "L-7295265B": "Running On-Demand X instances",
    "L-43DA4232": "Running On-Demand High Memory instances",
    "L-F7808C92": "Running On-Demand HPC instances",
    "L-34B43A08": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    "L-3819A6DF": "All G and VT Spot Instance Requests",
    "L-7212CCBC": "All P4, P3 and P2 Spot Instance Requests",
    "L-C4BD4855": "All P5 Spot Instance Requests",
    "L-88CF9481": "All F Spot Instance Requests",
    "L-B5D1601B": "All Inf Spot Instance Requests",
    "L-6B0D517C": "All Trn Spot Instance Requests",
    "L-85EED4F7": "All DL Spot Instance Requests",
    "L-E3A00192": "All X Spot Instance Requests",
}

# The letters that open an instance family name -> quota class.
FAMILY_CLASSES = {
    **dict.fromkeys(("a", "c", "d", "h", "i", "im", "is", "m", "r", "t", "z"), "standard"),
    **dict.fromkeys(("g", "gr", "vt"), "g"),
    "p": "p", "f": "f", "inf": "inf", "trn": "trn", "dl": "dl", "x": "x", "u": "high-memory", "hpc": "hpc",
}

# (quota class, market) -> quota code. P5 spot has a quota of its own.
QUOTA_CODES = {
    ("standard", "on-demand"): "L-1216C47A", ("standard", "spot"): "L-34B43A08",
    ("g", "on-demand"): "L-DB2E81BA", ("g", "spot"): "L-3819A6DF",
    ("p", "on-demand"): "L-417A185B", ("p", "spot"): "L-7212CCBC", ("p5", "spot"): "L-C4BD4855",
    ("f", "on-demand"): "L-74FC7D96", ("f", "spot"): "L-88CF9481",
    ("inf", "on-demand"): "L-1945791B", ("inf", "spot"): "L-B5D1601B",
    ("trn", "on-demand"): "L-2C3B7624", ("trn", "spot"): "L-6B0D517C",
    ("dl", "on-demand"): "L-6E869C2A", ("dl", "spot"): "L-85EED4F7",
    ("x", "on-demand"): "L-7295265B", ("x", "spot"): "L-E3A00192",
    ("high-memory", "on-demand"): "L-43DA4232",
    ("hpc", "on-demand"): "L-F7808C92",
}

_FAMILY_RE = re.compile(r"^(?P<letters>[a-z]+)")


class QuotaError(DlfleetError):
    """A quota that cannot be read or planned; the message says what to do."""


@dataclass
class QuotaPlan:
    """One quota: what it allows, what is in use, what the planned fleet adds."""

    code: str
    market: str
    needed: int = 0
    usage: int = 0
    limit: float | None = None
    limit_source: str = ""
    name: str = ""
    instances: Counter[str] = field(default_factory=Counter)  # planned instance type -> count
    vcpus: dict[str, int] = field(default_factory=dict)  # planned instance type -> vCPUs each

    @property
    def available(self) -> float:
        return (self.limit or 0) - self.usage

    @property
    def headroom(self) -> float:
        """What remains once the fleet runs; negative is the shortfall."""
        return self.available - self.needed

    @property
    def fits(self) -> bool:
        return self.headroom >= 0

    @property
    def required_limit(self) -> int:
        return self.usage + self.needed

    def plan_text(self) -> str:
        return " + ".join(f"{n} × {t}" for t, n in sorted(self.instances.items()))  # noqa: RUF001 - the plan reads 2 x p3.2xlarge

    def shortfall_message(self, region: str) -> str:
        in_use = f", {self.usage} are in use," if self.usage else ""
        more = " more" if self.usage else ""
        return (f"quota {self.code} ({self.name}) in {region} allows {self.limit:g} vCPUs{in_use} and the fleet needs "
                f"{self.needed}{more} ({self.plan_text()}); request an increase to at least {self.required_limit} "
                f"(aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {self.code} "
                f"--desired-value {self.required_limit} --region {region}) or lower count")

    def as_dict(self) -> dict[str, Any]:
        return {
            "quota_code": self.code,
            "quota_name": self.name,
            "market": self.market,
            "limit": self.limit,
            "limit_source": self.limit_source,
            "usage": self.usage,
            "needed": self.needed,
            "available": self.available,
            "headroom": self.headroom,
            "fits": self.fits,
            "required_limit": self.required_limit,
            "instances": dict(sorted(self.instances.items())),
            "vcpus_per_instance": dict(sorted(self.vcpus.items())),
        }


# --- pure logic --------------------------------------------------------------------------------------------


def quota_class(instance_type: str) -> str:
    """'p3.2xlarge' -> 'p'; raises QuotaError for a type of no known vCPU quota."""
    family = instance_type.split(".", 1)[0]
    match = _FAMILY_RE.match(family)
    letters = match.group("letters") if match else ""
    if "." not in instance_type or letters not in FAMILY_CLASSES:
        raise QuotaError(f"instance type {instance_type!r} belongs to no EC2 vCPU quota this module knows; give a "
                         f"type such as g5.xlarge or p3.2xlarge")
    return FAMILY_CLASSES[letters]


def quota_code(instance_type: str, market: str) -> str:
    """The Service Quotas code a running instance of this type and market counts against."""
    cls = quota_class(instance_type)
    if cls == "p" and market == "spot" and instance_type.split(".", 1)[0].startswith("p5"):
        cls = "p5"
    code = QUOTA_CODES.get((cls, market))
    if code is None:
        raise QuotaError(f"instance type {instance_type!r} cannot run as {market} (no {market} vCPU quota for its "
                         f"family); use market: on-demand")
    return code


def normalise_fleet(fleet: list[dict[str, Any]], default_market: str) -> list[tuple[str, int, str]]:
    """[(instance_type, count, market)], checked; duplicates are kept (and summed later)."""
    out = []
    for index, item in enumerate(fleet):
        instance_type = (item.get("instance_type") or "").strip()
        count = item.get("count")
        market = item.get("market") or default_market
        if not instance_type:
            raise QuotaError(f"fleet[{index}].instance_type is missing; give one such as g5.xlarge")
        if count is None or count < 0:
            raise QuotaError(f"fleet[{index}].count is {count!r} for {instance_type}; give 0 or more instances")
        if market not in MARKETS:
            raise QuotaError(f"fleet[{index}].market is {market!r}; use on-demand or spot")
        quota_code(instance_type, market)
        out.append((instance_type, int(count), market))
    return out


def plan_needs(fleet: list[tuple[str, int, str]], vcpus: dict[str, int]) -> dict[str, QuotaPlan]:
    plans: dict[str, QuotaPlan] = {}
    for instance_type, count, market in fleet:
        code = quota_code(instance_type, market)
        plan = plans.setdefault(code, QuotaPlan(code=code, market=market, name=QUOTA_NAMES[code]))
        plan.instances[instance_type] += count
        plan.vcpus[instance_type] = vcpus[instance_type]
        plan.needed += count * vcpus[instance_type]
    return plans


def usage_by_quota(instances: list[dict[str, Any]], vcpus: dict[str, int]) -> dict[str, int]:
    """vCPUs in use per quota code, from running and pending instances."""
    usage: dict[str, int] = defaultdict(int)
    for inst in instances:
        market = "spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand"
        try:
            code = quota_code(inst["InstanceType"], market)
        except QuotaError:
            continue  # a family with no vCPU quota (e.g. mac) does not count against any
        usage[code] += vcpus.get(inst["InstanceType"], 0)
    return dict(usage)


# --- AWS calls ---------------------------------------------------------------------------------------------


def active_instances(ec2) -> list[dict[str, Any]]:
    """Running and pending instances of the account in the region: one filtered, paginated DescribeInstances."""
    pages = paginate(ec2, "describe_instances",
                     Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page.get("Reservations", []) for i in r.get("Instances", [])]


def read_quota(sq, code: str, service_code: str = SERVICE_CODE) -> tuple[float, str, str]:
    """(value, 'account' or 'aws-default', name): the account's applied value, else AWS's default."""
    try:
        quota = sq.get_service_quota(ServiceCode=service_code, QuotaCode=code, aws_retry=True)["Quota"]
        return float(quota["Value"]), "account", quota.get("QuotaName", "")
    except AWS_ERRORS as err:
        if not is_not_found(err, "service-quotas"):
            raise
    try:
        quota = sq.get_aws_default_service_quota(ServiceCode=service_code, QuotaCode=code, aws_retry=True)["Quota"]
    except AWS_ERRORS as err:
        if is_not_found(err, "service-quotas"):
            raise QuotaError(f"Service Quotas has neither an account value nor an AWS default for {service_code} "
                             f"quota {code} in this region; check the region") from err
        raise
    return float(quota["Value"]), "aws-default", quota.get("QuotaName", "")


def _read_account(ec2, planned_types: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The account's live instances and the instance-type records of those and of the planned types."""
    instances = active_instances(ec2)
    wanted_types = set(planned_types) | {i["InstanceType"] for i in instances}
    return instances, describe_instance_types(ec2, sorted(wanted_types))


def _evaluate(planned: list[tuple[str, int, str]], instances: list[dict[str, Any]], records: dict[str, Any],
              read, region: str) -> dict[str, Any]:
    """ec2_gpu_quota_info's result for one plan; `read(code)` gives a quota's (value, source, name)."""
    unknown = sorted({entry[0] for entry in planned} - set(records))
    if unknown:
        raise QuotaError(f"unknown instance type(s) {', '.join(unknown)} in {region}; check the spelling "
                         f"(for example p3.2xlarge) or pick a region that offers them", unknown=unknown)
    vcpus = {name: rec.get("VCpuInfo", {}).get("DefaultVCpus", 0) for name, rec in records.items()}
    plans = plan_needs(planned, vcpus)
    usage = usage_by_quota(instances, vcpus)
    for code, plan in plans.items():
        plan.usage = usage.get(code, 0)
        plan.limit, plan.limit_source, name = read(code)
        plan.name = name or plan.name
    ordered = [plans[c] for c in sorted(plans)]
    shortfalls = [p.shortfall_message(region) for p in ordered if not p.fits]
    return {
        "quotas": [p.as_dict() for p in ordered],
        "fits": not shortfalls,
        "shortfalls": shortfalls,
        "needed_vcpus": sum(p.needed for p in ordered),
        "usage_by_quota": dict(sorted(usage.items())),
    }


def check(ec2, sq, fleet: list[dict[str, Any]], market: str, region: str) -> dict[str, Any]:
    """The whole preflight; returns ec2_gpu_quota_info's result (without failing on a shortfall)."""
    planned = normalise_fleet(fleet, market)
    instances, records = _read_account(ec2, [entry[0] for entry in planned])
    return _evaluate(planned, instances, records, lambda code: read_quota(sq, code), region)


def check_alternatives(ec2, sq, entry: dict[str, Any], fallback_types: list[str], market: str,
                       region: str) -> dict[str, Any]:
    """One fleet entry checked in its own type and in each fallback type (the same count): it fits when one type
    fits. The account (instances, type records) is read once, and each quota once, whatever the list's length."""
    types = list(dict.fromkeys([entry["instance_type"], *fallback_types]))
    plans = {t: normalise_fleet([{**entry, "instance_type": t}], market) for t in types}
    instances, records = _read_account(ec2, types)
    quotas: dict[str, tuple[float, str, str]] = {}

    def read(code: str) -> tuple[float, str, str]:
        if code not in quotas:
            quotas[code] = read_quota(sq, code)
        return quotas[code]

    by_type = {t: _evaluate(plans[t], instances, records, read, region) for t in types}
    fitting = [t for t in types if by_type[t]["fits"]]
    first = by_type[fitting[0] if fitting else types[0]]
    shortfalls = [] if fitting else [f"{t}: {'; '.join(by_type[t]['shortfalls'])}" for t in types]
    return {**first, "fits": bool(fitting), "shortfalls": shortfalls, "fitting_type": fitting[0] if fitting else "",
            "fitting_types": fitting, "by_type": by_type}


# --- SageMaker instance quotas -----------------------------------------------------------------------------

SAGEMAKER_SERVICE_CODE = "sagemaker"
# usage option -> the words of the quota name: "ml.p3.2xlarge for training job usage"
SAGEMAKER_USAGES = {
    "training_job": "training job",
    "spot_training_job": "spot training job",
    "endpoint": "endpoint",
    "processing_job": "processing job",
    "transform_job": "transform job",
}
SAGEMAKER_LOCAL_TYPES = ("local", "local_gpu")


def sagemaker_quota_name(instance_type: str, usage: str) -> str:
    return f"{instance_type} for {SAGEMAKER_USAGES[usage]} usage"


@dataclass
class SageMakerNeed:
    """One SageMaker quota: what it allows and the instances the run needs of it, and who asks for them."""

    name: str
    code: str = ""
    limit: float | None = None
    limit_source: str = ""
    needed: int = 0
    sources: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return (self.limit or 0) >= self.needed

    def shortfall_message(self, region: str) -> str:
        return (f"{' and '.join(self.sources)}: the run needs {self.needed} instance(s) under SageMaker quota "
                f"{self.code} ({self.name!r}) in {region}, which allows {self.limit:g}; request an increase to at "
                f"least {self.needed} (aws service-quotas request-service-quota-increase --service-code sagemaker "
                f"--quota-code {self.code} --desired-value {self.needed} --region {region}), or pick an instance "
                f"type whose quota holds the run")

    def as_dict(self) -> dict[str, Any]:
        return {"quota_name": self.name, "quota_code": self.code, "limit": self.limit,
                "limit_source": self.limit_source, "needed": self.needed, "fits": self.fits,
                "headroom": (self.limit or 0) - self.needed, "sources": list(self.sources)}


def plan_sagemaker(needs: list[dict[str, Any]]) -> tuple[dict[str, SageMakerNeed], list[dict[str, Any]]]:
    """Needs by quota name (counts of one quota add up), and the entries skipped (local mode needs no quota)."""
    plans: dict[str, SageMakerNeed] = {}
    skipped = []
    for index, item in enumerate(needs):
        instance_type = item.get("instance_type") or ""
        count = item.get("count")
        source = item.get("source") or f"needs[{index}] ({instance_type} x {count})"
        if instance_type in SAGEMAKER_LOCAL_TYPES:
            skipped.append({"instance_type": instance_type, "source": source})
            continue
        if count is None or count < 0:
            raise QuotaError(f"{source}: count is {count!r}; give 0 or more instances")
        name = sagemaker_quota_name(instance_type, item.get("usage") or "training_job")
        plan = plans.setdefault(name, SageMakerNeed(name=name))
        plan.needed += int(count)
        plan.sources.append(source)
    return plans, skipped


def list_default_quotas(sq, service_code: str) -> dict[str, dict[str, Any]]:
    """The service's quotas with their AWS defaults, by exact name: one paginated ListAWSDefaultServiceQuotas."""
    pages = paginate(sq, "list_aws_default_service_quotas", ServiceCode=service_code)
    return {q["QuotaName"]: q for page in pages for q in page.get("Quotas", [])}


def check_sagemaker(sq, needs: list[dict[str, Any]], region: str) -> dict[str, Any]:
    """sagemaker_quota_info's result (without failing on a shortfall). A quota is found by its exact name: the
    instance type is text, never a pattern ("ml.m5.*" or "ml.m5" matches no quota)."""
    plans, skipped = plan_sagemaker(needs)
    known = list_default_quotas(sq, SAGEMAKER_SERVICE_CODE) if plans else {}
    unknown = [p for p in plans.values() if p.name not in known]
    if unknown:
        raise QuotaError("no SageMaker quota is named " + "; ".join(
            f"{p.name!r} in {region} (asked by {' and '.join(p.sources)})" for p in unknown)
            + "; give an ml.* instance type SageMaker offers for that use, such as ml.m5.xlarge, or a region that "
              "offers it", unknown=[p.name for p in unknown])
    for plan in plans.values():
        plan.code = known[plan.name]["QuotaCode"]
        plan.limit, plan.limit_source, _name = read_quota(sq, plan.code, SAGEMAKER_SERVICE_CODE)
    ordered = [plans[n] for n in sorted(plans)]
    shortfalls = [p.shortfall_message(region) for p in ordered if not p.fits]
    return {"quotas": [p.as_dict() for p in ordered], "fits": not shortfalls, "shortfalls": shortfalls,
            "skipped": skipped}
