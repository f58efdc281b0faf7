"""What a real AWS account has and moto 5.2.5 lacks, seeded into moto's own backends in-process.

- DLAMI images under Amazon's owner id and alias, several dates per family, x86_64 and arm64, with root
  snapshots of their real size (moto registers images under the caller and gives every AMI 15 GiB);
  moto loads them from MOTO_AMIS_PATH, which `write_amis_file` produces. The oldest legacy image carries a past
  DeprecationTime, and DescribeImages leaves deprecated images out as EC2 does (moto 5.2.5 knows no
  deprecation): unless asked by id, with IncludeDeprecated=true, or by their owner.
- p2/p3 instance types and their AZ offerings (moto's data has only p3dn among them); RunInstances into an
  AZ that does not offer the type fails with Unsupported, as on EC2.
- The public SSM parameters /aws/service/deeplearning/ami/<arch>/<ami-type>/latest/ami-id (moto refuses
  put_parameter for /aws/... names).
- EC2 vCPU quotas and SageMaker instance quotas ("ml.p3.2xlarge for training job usage") for the Service
  Quotas API (moto 5.2.5 knows only a few VPC defaults and has no ListServiceQuotas or
  GetAWSDefaultServiceQuota).

Everything is data under data/; `install()` must run after MOTO_AMIS_PATH is set and before the
server takes requests. Backends are seeded as moto creates them (per account and region), so a reset
reseeds them by itself.
"""
from __future__ import annotations

import copy
import datetime as dt
import gzip
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
AMI_KWARGS = (
    "ami_id", "name", "description", "owner_id", "public", "virtualization_type", "architecture", "state",
    "creation_date", "image_type", "image_location", "hypervisor", "root_device_type", "root_device_name",
    "sriov", "boot_mode",
)


@cache
def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _ami_id(name: str, architecture: str) -> str:
    return "ami-0" + hashlib.sha256(f"{name}|{architecture}".encode()).hexdigest()[:16]


def dlami_images() -> list[dict[str, Any]]:
    """Every seeded DLAMI: moto's Ami arguments plus root_gib, ami_type and line."""
    spec = load("dlami.json")
    images = []
    for fam in spec["families"]:
        if "dates" in fam:
            entries = [(d, fam["name"].format(date=d.replace("-", "")), fam["root_gib"], None) for d in fam["dates"]]
        else:
            entries = [(d, fam["name"].format(version=v), fam["root_gib_by_version"][v],
                        fam.get("deprecated_by_version", {}).get(v)) for v, d in fam["versions"].items()]
        for day, name, root_gib, deprecation_time in entries:
            images.append({
                "ami_id": _ami_id(name, fam["architecture"]),
                "name": name,
                "description": fam["description"],
                "owner_id": spec["owner_id"],
                "public": True,
                "virtualization_type": "hvm",
                "architecture": fam["architecture"],
                "state": "available",
                "creation_date": f"{day}T09:30:00.000Z",
                "image_type": "machine",
                "image_location": f"{spec['owner_id']}/{name}",
                "hypervisor": "xen",
                "root_device_type": "ebs",
                "root_device_name": "/dev/sda1",
                "sriov": "simple",
                "boot_mode": "uefi-preferred",
                "root_gib": root_gib,
                "deprecation_time": deprecation_time,
                "ami_type": fam["ami_type"],
                "line": fam["line"],
            })
    return images


def ssm_parameters() -> dict[str, str]:
    """/aws/service/deeplearning/ami/<arch>/<ami-type>/latest/ami-id -> id of the newest image of the family."""
    newest: dict[str, dict[str, Any]] = {}
    for image in dlami_images():
        if not image["ami_type"]:
            continue
        key = f"/aws/service/deeplearning/ami/{image['architecture']}/{image['ami_type']}/latest/ami-id"
        if key not in newest or image["creation_date"] > newest[key]["creation_date"]:
            newest[key] = image
    return {key: image["ami_id"] for key, image in sorted(newest.items())}


def write_amis_file(path: Path) -> None:
    """The MOTO_AMIS_PATH file: moto's own default AMIs plus the DLAMIs."""
    import moto

    default = Path(moto.__file__).parent / "ec2/resources/amis.json.gz"
    images = json.loads(gzip.decompress(default.read_bytes())) if default.exists() else []
    for image in images:  # moto's defaults are 2017 images without a date; undated they would count as newest
        image.setdefault("creation_date", "2017-10-01T00:00:00.000Z")
    images += [{k: v for k, v in image.items() if k in AMI_KWARGS} for image in dlami_images()]
    path.write_text(json.dumps(images))


# ---------------------------------------------------------------------------------------------------------
# In-process patches of moto (called once, in the server process)


def _instance_type_record(name: str, spec: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    rec = copy.deepcopy(template)
    rec.update({
        "InstanceType": name,
        "CurrentGeneration": False,
        "Hypervisor": "xen",
        "InstanceStorageSupported": False,
        "MemoryInfo": {"SizeInMiB": spec["memory_mib"]},
        "VCpuInfo": {"DefaultVCpus": spec["vcpus"], "DefaultCores": spec["cores"], "DefaultThreadsPerCore": 2,
                     "ValidCores": list(range(2, spec["cores"] + 1, 2)), "ValidThreadsPerCore": [1, 2]},
        "ProcessorInfo": {"Manufacturer": "Intel", "SupportedArchitectures": ["x86_64"],
                          "SustainedClockSpeedInGhz": 2.3},
        "GpuInfo": {"Gpus": [{"Name": spec["gpu"], "Manufacturer": "NVIDIA", "Count": spec["gpu_count"],
                              "MemoryInfo": {"SizeInMiB": spec["gpu_mib"]}}],
                    "TotalGpuMemoryInMiB": spec["gpu_count"] * spec["gpu_mib"]},
        "SupportedBootModes": ["legacy-bios"],
        "NitroEnclavesSupport": "unsupported",
    })
    rec.pop("InstanceStorageInfo", None)
    rec.pop("NitroTpmInfo", None)
    rec["NitroTpmSupport"] = "unsupported"
    rec["EbsInfo"] = {**rec["EbsInfo"], "NvmeSupport": "unsupported"}
    net = rec["NetworkInfo"]
    net.update({"NetworkPerformance": spec["network"], "EnaSupport": "supported", "EfaSupported": False,
                "MaximumNetworkInterfaces": 8})
    net.pop("EfaInfo", None)
    for card in net.get("NetworkCards", []):
        card["NetworkPerformance"] = spec["network"]
    return rec


def _install_instance_types() -> None:
    from moto.ec2.models import instance_types as it

    spec = load("instance_types.json")["types"]
    template = it.INSTANCE_TYPES["p3dn.24xlarge"]
    zones = it.INSTANCE_TYPE_OFFERINGS["availability-zone"]
    zone_ids = it.INSTANCE_TYPE_OFFERINGS["availability-zone-id"]
    regions = it.INSTANCE_TYPE_OFFERINGS["region"]
    from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend

    az_to_id = {z.name: z.zone_id for zs in RegionsAndZonesBackend.zones.values() for z in zs}
    for name, type_spec in spec.items():
        if name in it.INSTANCE_TYPES:
            continue
        it.INSTANCE_TYPES[name] = _instance_type_record(name, type_spec, template)
        it.InstanceTypeBackend.instance_types.append(it.InstanceType(name))
        family = name.split(".")[0]
        if family not in it.INSTANCE_FAMILIES:
            it.INSTANCE_FAMILIES.append(family)
        for region, offers in zones.items():
            if region == "us-east-1":
                azs = [f"us-east-1{suffix}" for suffix in type_spec["zones"]]
            else:
                azs = sorted({o["Location"] for o in offers if o["InstanceType"] == "g4dn.xlarge"})
            if not azs:
                continue
            offers.extend({"InstanceType": name, "Location": az, "LocationType": "availability-zone"} for az in azs)
            zone_ids.setdefault(region, []).extend(
                {"InstanceType": name, "Location": az_to_id[az], "LocationType": "availability-zone-id"}
                for az in azs if az in az_to_id)
            regions.setdefault(region, []).append({"InstanceType": name, "Location": region, "LocationType": "region"})


def _install_amis() -> None:
    """Root snapshots of the real size, and gp3 root volumes, for the seeded DLAMIs."""
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.amis import Ami

    sizes = {image["ami_id"]: image["root_gib"] for image in dlami_images()}
    deprecations = {image["ami_id"]: image["deprecation_time"] for image in dlami_images() if image["deprecation_time"]}

    def block_device_mappings(self: Ami) -> list[dict[str, Any]]:
        ebs = {"SnapshotId": self.ebs_snapshot.id, "VolumeSize": self.ebs_snapshot.volume.size,
               "DeleteOnTermination": True, "VolumeType": getattr(self, "root_volume_type", "standard")}
        if ebs["VolumeType"] == "gp3":
            ebs.update(Iops=3000, Throughput=125, Encrypted=False)
        return [{"DeviceName": self.root_device_name, "Ebs": ebs}]

    Ami.block_device_mappings = property(block_device_mappings)  # type: ignore[method-assign,assignment]
    original_init = EC2Backend.__init__

    def init(self: EC2Backend, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        for ami_id, size in sizes.items():
            ami = self.amis.get(ami_id)
            if ami is not None:
                ami.ebs_snapshot.volume.size = size
                ami.root_volume_type = "gp3"
                ami.deprecation_time = deprecations.get(ami_id)  # serialized as DeprecationTime

    EC2Backend.__init__ = init  # type: ignore[method-assign]
    _install_ami_deprecation()


def _install_ami_deprecation() -> None:
    """DescribeImages without ImageIds leaves out other owners' images deprecated before now, unless
    IncludeDeprecated=true (EC2's rule; moto 5.2.5 lists every image)."""
    from moto.ec2.responses.amis import AmisResponse

    original = AmisResponse.describe_images

    def describe_images(self: AmisResponse) -> Any:
        result = original(self)
        if self._get_param("ImageIds") or str(self._get_param("IncludeDeprecated", "false")).lower() == "true":
            return result
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        account = self.current_account
        result.result["Images"] = [
            image for image in result.result["Images"]
            if not (getattr(image, "deprecation_time", None) or "9999") <= now or image.owner_id == account]
        return result

    AmisResponse.describe_images = describe_images  # type: ignore[method-assign]


def _install_az_offering_check() -> None:
    """RunInstances into an AZ that does not offer the type fails with Unsupported, as EC2 does
    (moto only checks that the region offers it)."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import instance_types as it
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any, security_group_names: list[str],
                      **kwargs: Any) -> Any:
        zone = kwargs.get("placement")
        if not zone and kwargs.get("subnet_id"):
            subnet = self.get_subnet(kwargs["subnet_id"])
            zone = getattr(subnet, "availability_zone", None)
        instance_type = kwargs.get("instance_type")
        offers = it.INSTANCE_TYPE_OFFERINGS["availability-zone"].get(self.region_name, [])
        if zone and instance_type and not kwargs.get("is_instance_type_default") and not any(
                o["InstanceType"] == instance_type and o["Location"] == zone for o in offers):
            offered = sorted(o["Location"] for o in offers if o["InstanceType"] == instance_type)
            raise EC2ClientError(
                "Unsupported",
                f"Your requested instance type ({instance_type}) is not supported in your requested Availability "
                f"Zone ({zone}). Please retry your request by not specifying an Availability Zone or choosing "
                f"{', '.join(offered)}.")
        return original(self, image_id, count, user_data, security_group_names, **kwargs)

    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]


def _install_ssm() -> None:
    from moto.ssm.models import Parameter, SimpleSystemManagerBackend

    params = ssm_parameters()
    stamp = dt.datetime(2025, 3, 28, 12, 0, tzinfo=dt.UTC)
    original_init = SimpleSystemManagerBackend.__init__

    def init(self: SimpleSystemManagerBackend, region_name: str, account_id: str) -> None:
        original_init(self, region_name, account_id)
        for name, value in params.items():
            versions = dict.__getitem__(self._parameters, name) if name in dict.keys(self._parameters) else None
            if versions:
                continue
            dict.__setitem__(self._parameters, name, [Parameter(
                account_id=account_id, name=name, value=value, parameter_type="String", description=None,
                allowed_pattern=None, keyid=None, last_modified_date=stamp.timestamp(), version=1,
                data_type="text", tier="Standard")])

    SimpleSystemManagerBackend.__init__ = init  # type: ignore[method-assign]


def _install_service_quotas() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.servicequotas import models, responses

    specs = {spec["service_code"]: spec for spec in (load("quotas.json"), load("sagemaker_quotas.json"))}
    by_code = {q["code"]: q for spec in specs.values() for q in spec["quotas"]}
    service_of = {q["code"]: code for code, spec in specs.items() for q in spec["quotas"]}
    backend_cls = models.ServiceQuotasBackend
    original_init = backend_cls.__init__
    vpc_list = backend_cls.list_aws_default_service_quotas
    vpc_get = backend_cls.get_service_quota

    class NoSuchQuota(JsonRESTError):
        def __init__(self, service_code: str, quota_code: str) -> None:
            super().__init__("NoSuchResourceException",
                             f"The request failed because the specified quota {quota_code} of service "
                             f"{service_code} has no applied value in this account; see GetAWSDefaultServiceQuota.")

    def init(self: Any, region_name: str, account_id: str) -> None:
        original_init(self, region_name, account_id)
        self.applied = {q["code"]: float(q["applied"]) for spec in specs.values() for q in spec["quotas"]
                        if q["applied"] is not None}

    def record(self: Any, code: str, value: float, default: bool) -> dict[str, Any]:
        q = by_code[code]
        spec = specs[service_of[code]]
        account = "" if default else self.account_id
        out = {
            "ServiceCode": spec["service_code"], "ServiceName": spec["service_name"],
            "QuotaArn": f"arn:aws:servicequotas:{self.region_name}:{account}:{spec['service_code']}/{code}",
            "QuotaCode": code, "QuotaName": q["name"], "Value": value, "Unit": "None",
            "Adjustable": True, "GlobalQuota": False, "QuotaAppliedAtLevel": "ACCOUNT",
        }
        if "class" in q:   # EC2's vCPU quotas carry their usage metric
            cls, market = q["class"].split("/")
            out["UsageMetric"] = {"MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount",
                                  "MetricDimensions": {"Class": f"{cls}/{market}", "Resource": "vCPU",
                                                       "Service": "EC2", "Type": "Resource"},
                                  "MetricStatisticRecommendation": "Maximum"}
        return out

    def list_aws_default_service_quotas(self: Any, service_code: str) -> list[dict[str, Any]]:
        if service_code in specs:
            return [record(self, q["code"], float(q["default"]), True) for q in specs[service_code]["quotas"]]
        return vpc_list(self, service_code)

    def get_aws_default_service_quota(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        if service_code in specs and service_of.get(quota_code) == service_code:
            return record(self, quota_code, float(by_code[quota_code]["default"]), True)
        if service_code == "vpc":
            return vpc_get(self, service_code, quota_code)
        raise NoSuchQuota(service_code, quota_code)

    def list_service_quotas(self: Any, service_code: str) -> list[dict[str, Any]]:
        if service_code in specs:
            return [record(self, code, value, False) for code, value in sorted(self.applied.items())
                    if service_of[code] == service_code]
        return vpc_list(self, service_code)

    def get_service_quota(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        if service_code in specs:
            if quota_code in self.applied and service_of[quota_code] == service_code:
                return record(self, quota_code, self.applied[quota_code], False)
            raise NoSuchQuota(service_code, quota_code)
        return vpc_get(self, service_code, quota_code)

    def set_applied(self: Any, quota_code: str, value: float | None) -> None:
        if quota_code not in by_code:
            raise KeyError(f"unknown quota code {quota_code}; known: {', '.join(sorted(by_code))}")
        if value is None:
            self.applied.pop(quota_code, None)
        else:
            self.applied[quota_code] = float(value)

    backend_cls.__init__ = init
    backend_cls.list_aws_default_service_quotas = list_aws_default_service_quotas
    backend_cls.get_aws_default_service_quota = get_aws_default_service_quota
    backend_cls.list_service_quotas = list_service_quotas
    backend_cls.get_service_quota = get_service_quota
    backend_cls.set_applied = set_applied

    def _page(self: Any, items: list[dict[str, Any]]) -> str:
        params = json.loads(self.body or "{}")
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 100)
        out: dict[str, Any] = {"Quotas": items[start:start + size]}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return json.dumps(out)

    def r_list_defaults(self: Any) -> str:
        params = json.loads(self.body or "{}")
        return _page(self, self.backend.list_aws_default_service_quotas(str(params.get("ServiceCode"))))

    def r_list(self: Any) -> str:
        params = json.loads(self.body or "{}")
        return _page(self, self.backend.list_service_quotas(str(params.get("ServiceCode"))))

    def r_get_default(self: Any) -> str:
        params = json.loads(self.body or "{}")
        return json.dumps({"Quota": self.backend.get_aws_default_service_quota(
            str(params.get("ServiceCode")), str(params.get("QuotaCode")))})

    resp_cls = responses.ServiceQuotasResponse
    resp_cls.list_aws_default_service_quotas = r_list_defaults
    resp_cls.list_service_quotas = r_list
    resp_cls.get_aws_default_service_quota = r_get_default


_installed = False


def install() -> None:
    """Patch moto in this process (idempotent). MOTO_AMIS_PATH must already point at write_amis_file's output."""
    global _installed
    if _installed:
        return
    _install_instance_types()
    _install_amis()
    _install_az_offering_check()
    _install_ssm()
    _install_service_quotas()
    _installed = True
