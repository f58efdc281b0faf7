# Deep Learning AMI lookup for dlami_info: by the public SSM parameter, by name pattern (newest wins), or by id.
# One thin function per AWS call; every "nothing matched" becomes a DlamiError that says what to change.
from __future__ import annotations

import re
from typing import Any

from ansible.module_utils.dlfleet_aws import aws_retry, error_code

ARCHITECTURES = ("x86_64", "arm64")
DLAMI_OWNER_ID = "898082745236"  # the AWS Deep Learning AMIs' owner account (alias "amazon")
SSM_PREFIX = "/aws/service/deeplearning/ami"

# Which line a DLAMI belongs to, by name: how its Python frameworks are installed.
# - legacy-conda: "Deep Learning AMI (Ubuntu 18.04) Version 61.3", "Deep Learning AMI GPU PyTorch 1.13.1
#   (Ubuntu 20.04) 20230315", the 2017 "Deep Learning AMI Ubuntu Linux - 2.4_Oct2017": conda envs per framework.
# - venv: "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.5.1 (Ubuntu 22.04) 20250326", "Deep Learning Base
#   OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250321" and their ARM64 twins: one venv per framework (/opt/...),
#   none on the Base images.
LINE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(OSS|Proprietary) Nvidia Driver", re.IGNORECASE), "venv"),
    (re.compile(r"^Deep Learning (ARM64 )?Base (OSS |Proprietary )?.*GPU AMI", re.IGNORECASE), "venv"),
    (re.compile(r"^Deep Learning (Base )?AMI\b", re.IGNORECASE), "legacy-conda"),
)
PYTHON_ENV = {"venv": "venv", "legacy-conda": "conda", "unknown": None}


class DlamiError(Exception):
    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


def ssm_parameter_name(architecture: str, ami_type: str) -> str:
    return f"{SSM_PREFIX}/{architecture}/{ami_type}/latest/ami-id"


def classify_line(name: str) -> str:
    """'venv', 'legacy-conda', or 'unknown' (not a DLAMI name dlfleet knows)."""
    for pattern, line in LINE_RULES:
        if pattern.search(name or ""):
            return line
    return "unknown"


def validate(params: dict[str, Any]) -> None:
    """Input checks that need no AWS call."""
    ami_type = params.get("ami_type")
    if ami_type is not None and (not ami_type.strip() or "/" in ami_type):
        raise DlamiError(f"ami_type {ami_type!r} is not an ami-type name; give the part of the SSM path between the "
                         f"architecture and /latest, for example base-oss-nvidia-driver-gpu-ubuntu-22.04")
    ssm_parameter = params.get("ssm_parameter")
    if ssm_parameter is not None and not ssm_parameter.startswith("/"):
        raise DlamiError(f"ssm_parameter {ssm_parameter!r} is not a parameter path; it starts with /, for example "
                         f"{ssm_parameter_name('x86_64', 'base-oss-nvidia-driver-gpu-ubuntu-22.04')}")
    name_pattern = params.get("name_pattern")
    if name_pattern is not None and not name_pattern.strip():
        raise DlamiError(f"name_pattern {name_pattern!r} is empty; give an AMI name with * wildcards, for example "
                         f"'Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *'")
    image_id = params.get("image_id")
    if image_id is not None and not re.fullmatch(r"ami-[0-9a-f]{8,17}", image_id):
        raise DlamiError(f"image_id {image_id!r} is not an AMI id; it looks like ami-0123456789abcdef0")


# --- AWS calls ---------------------------------------------------------------------------------------------


def get_parameter_value(ssm, name: str) -> str | None:
    """The parameter's value, or None when SSM has no such parameter."""
    try:
        return ssm.get_parameter(Name=name, aws_retry=True)["Parameter"]["Value"]
    except Exception as err:
        if error_code(err) in ("ParameterNotFound", "ValidationException"):
            return None
        raise


def published_ami_types(ssm, architecture: str) -> list[str]:
    """ami-type names that have a .../latest/ami-id parameter for the architecture (used to explain a miss)."""
    names = []
    paginator = ssm.get_paginator("get_parameters_by_path")
    try:
        pages = aws_retry(lambda: list(paginator.paginate(Path=f"{SSM_PREFIX}/{architecture}", Recursive=True)))()
    except Exception as err:
        if error_code(err) in ("AccessDeniedException", "ParameterNotFound", "ValidationException"):
            return []
        raise
    for page in pages:
        for param in page.get("Parameters", []):
            parts = param["Name"].split("/")  # '', aws, service, deeplearning, ami, <arch>, <type>, latest, ami-id
            if len(parts) == 9 and parts[-2:] == ["latest", "ami-id"]:
                names.append(parts[6])
    return sorted(set(names))


def describe_images(ec2, **params: Any) -> list[dict[str, Any]]:
    """DescribeImages; an unknown or malformed image id gives an empty list."""
    try:
        return ec2.describe_images(aws_retry=True, **params).get("Images", [])
    except Exception as err:
        if error_code(err) in ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable"):
            return []
        raise


# --- logic -------------------------------------------------------------------------------------------------


def image_facts(image: dict[str, Any]) -> dict[str, Any]:
    """What dlami_info returns for one DescribeImages record."""
    root_name = image.get("RootDeviceName")
    root = next((m for m in image.get("BlockDeviceMappings", []) if m.get("DeviceName") == root_name), None)
    ebs = (root or {}).get("Ebs", {})
    line = classify_line(image.get("Name", ""))
    return {
        "image_id": image["ImageId"],
        "name": image.get("Name", ""),
        "description": image.get("Description", ""),
        "creation_date": image.get("CreationDate", ""),
        "architecture": image.get("Architecture", ""),
        "owner_id": image.get("OwnerId", ""),
        "owner_alias": image.get("ImageOwnerAlias", ""),
        "state": image.get("State", ""),
        "root_device_name": root_name or "",
        "root_device_type": image.get("RootDeviceType", ""),
        "root_snapshot_id": ebs.get("SnapshotId", ""),
        "snapshot_size": ebs.get("VolumeSize", 0),
        "root_volume_type": ebs.get("VolumeType", ""),
        "line": line,
        "legacy": line == "legacy-conda",
        "python_env": PYTHON_ENV[line],
    }


def _by_id(ec2, image_id: str, architecture: str | None, source: str) -> dict[str, Any]:
    images = describe_images(ec2, ImageIds=[image_id])
    if not images:
        raise DlamiError(f"{source} names image {image_id}, which EC2 does not know in this region (deregistered, "
                         f"private, or another region's id); pick another image or region")
    image = images[0]
    if architecture and image.get("Architecture") != architecture:
        raise DlamiError(f"{source} names image {image_id} ({image.get('Name')}), which is "
                         f"{image.get('Architecture')}, not {architecture}; set architecture: "
                         f"{image.get('Architecture')} or pick an {architecture} image")
    return image


def resolve_ssm(ec2, ssm, parameter: str, architecture: str | None, ami_type: str | None = None) -> dict[str, Any]:
    image_id = get_parameter_value(ssm, parameter)
    if image_id is None:
        hint = ""
        if ami_type and architecture:
            known = published_ami_types(ssm, architecture)
            hint = (f"; ami types published for {architecture}: {', '.join(known)}" if known
                    else f"; no DLAMI parameter is published for {architecture} in this region")
        raise DlamiError(f"no SSM parameter {parameter} in this region{hint}", ssm_parameter=parameter)
    return _by_id(ec2, image_id, architecture, f"SSM parameter {parameter}")


def newest_by_name(ec2, name_pattern: str, owners: list[str], architecture: str) -> tuple[dict[str, Any], int]:
    """The newest available image whose name matches, of the owners and the architecture; and how many matched."""
    filters = [{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}]
    images = describe_images(ec2, Owners=owners, Filters=[*filters, {"Name": "architecture", "Values": [architecture]}])
    if not images:
        others = describe_images(ec2, Owners=owners, Filters=filters)
        if others:
            archs = sorted({i.get("Architecture", "?") for i in others})
            raise DlamiError(f"no {architecture} image of owners {owners} is named like {name_pattern!r}, but "
                             f"{len(others)} {'/'.join(archs)} images are; set architecture: {archs[0]} or change "
                             f"name_pattern")
        raise DlamiError(f"no image of owners {owners} is named like {name_pattern!r} in this region; check the "
                         f"pattern (wildcard *), the owners, and the region")
    images.sort(key=lambda i: (i.get("CreationDate", ""), i.get("Name", ""), i["ImageId"]))
    return images[-1], len(images)


def lookup(ec2, ssm, params: dict[str, Any]) -> dict[str, Any]:
    """Resolve the image the parameters ask for; returns dlami_info's result."""
    validate(params)
    architecture = params["architecture"]
    matched = 1
    if params.get("image_id"):
        image = _by_id(ec2, params["image_id"], architecture, f"image_id {params['image_id']}")
        source = {"method": "image_id"}
    elif params.get("name_pattern"):
        image, matched = newest_by_name(ec2, params["name_pattern"], params["owners"], architecture)
        source = {"method": "name_pattern", "name_pattern": params["name_pattern"]}
    else:
        parameter = params.get("ssm_parameter") or ssm_parameter_name(architecture, params["ami_type"])
        image = resolve_ssm(ec2, ssm, parameter, architecture, params.get("ami_type"))
        source = {"method": "ssm_parameter", "ssm_parameter": parameter}
    return {**image_facts(image), "source": source, "matched": matched}
