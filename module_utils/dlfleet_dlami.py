# Deep Learning AMI lookup for dlami_info: by the public SSM parameter, by name pattern (newest wins), or by id.
# One thin function per AWS call; every "nothing matched" becomes a DlamiError that says what to change.
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ansible.module_utils.dlfleet_aws import AWS_ERRORS, DlfleetError, error_code, is_not_found, paginate

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

# The OS an image runs, from its name or description, and the Python 3 that OS ships as /usr/bin/python3.
# ansible-core 2.19 runs its modules only on Python >= 3.8: the legacy conda line on Ubuntu 18.04 (3.6),
# Ubuntu 16.04 (3.5) and Amazon Linux 2 (3.7) cannot be managed through /usr/bin/python3. Their conda
# envs differ from version to version (mxnet_p36 in the 2019 images, *_p37/*_p38 later), so no env's Python
# is assumed: the operator names one (python_interpreter) or picks a current image.
SYSTEM_PYTHON = "/usr/bin/python3"
MIN_TARGET_PYTHON = (3, 8)
OS_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"Ubuntu 16\.04|^Deep Learning AMI Ubuntu Linux - ", re.IGNORECASE), "Ubuntu 16.04", "3.5"),
    (re.compile(r"Ubuntu 18\.04", re.IGNORECASE), "Ubuntu 18.04", "3.6"),
    (re.compile(r"Ubuntu 20\.04", re.IGNORECASE), "Ubuntu 20.04", "3.8"),
    (re.compile(r"Ubuntu 22\.04", re.IGNORECASE), "Ubuntu 22.04", "3.10"),
    (re.compile(r"Ubuntu 24\.04", re.IGNORECASE), "Ubuntu 24.04", "3.12"),
    (re.compile(r"Amazon Linux 2023", re.IGNORECASE), "Amazon Linux 2023", "3.9"),
    (re.compile(r"Amazon Linux 2\b", re.IGNORECASE), "Amazon Linux 2", "3.7"),
)


class DlamiError(DlfleetError):
    """No image, or bad input; the message says what to do."""


def ssm_parameter_name(architecture: str, ami_type: str) -> str:
    return f"{SSM_PREFIX}/{architecture}/{ami_type}/latest/ami-id"


def classify_line(name: str) -> str:
    """'venv', 'legacy-conda', or 'unknown' (not a DLAMI name dlfleet knows)."""
    for pattern, line in LINE_RULES:
        if pattern.search(name or ""):
            return line
    return "unknown"


def host_os(name: str, description: str = "") -> tuple[str | None, str | None]:
    """(OS, the Python version of its /usr/bin/python3) from the image's name, else its description."""
    for text in (name or "", description or ""):
        for pattern, os_name, python in OS_RULES:
            if pattern.search(text):
                return os_name, python
    return None, None


def python_too_old(version: str | None) -> bool:
    return version is not None and tuple(int(p) for p in version.split(".")[:2]) < MIN_TARGET_PYTHON


def deprecated_since(image: dict[str, Any], now: dt.datetime | None = None) -> str | None:
    """The image's DeprecationTime when that time has passed, else None."""
    stamp = image.get("DeprecationTime")
    if not stamp:
        return None
    when = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return str(stamp) if when <= (now or dt.datetime.now(dt.UTC)) else None


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


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
    interpreter = params.get("python_interpreter")
    if interpreter is not None and not interpreter.startswith("/"):
        raise DlamiError(f"python_interpreter {interpreter!r} is not an absolute path; give the Python >= 3.8 on the "
                         f"image, for example /home/ubuntu/anaconda3/envs/pytorch_p38/bin/python")


# --- AWS calls ---------------------------------------------------------------------------------------------


def get_parameter_value(ssm, name: str) -> str | None:
    """The parameter's value, or None when SSM has no such parameter."""
    try:
        return ssm.get_parameter(Name=name, aws_retry=True)["Parameter"]["Value"]
    except AWS_ERRORS as err:
        # ValidationException: a name SSM cannot hold (an ami_type with odd characters), so no such parameter
        if is_not_found(err, "ssm") or error_code(err) == "ValidationException":
            return None
        raise


def published_ami_types(ssm, architecture: str) -> list[str]:
    """ami-type names that have a .../latest/ami-id parameter for the architecture (used to explain a miss)."""
    names = []
    try:
        pages = paginate(ssm, "get_parameters_by_path", Path=f"{SSM_PREFIX}/{architecture}", Recursive=True)
    except AWS_ERRORS as err:
        # only an explanation of a miss: a policy without ssm:GetParametersByPath just gives none
        if is_not_found(err, "ssm") or error_code(err) in ("AccessDeniedException", "ValidationException"):
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
    except AWS_ERRORS as err:
        if is_not_found(err, "ec2"):
            return []
        raise


# --- logic -------------------------------------------------------------------------------------------------


def image_facts(image: dict[str, Any], python_interpreter: str | None = None) -> dict[str, Any]:
    """What dlami_info returns for one DescribeImages record."""
    root_name = image.get("RootDeviceName")
    root = next((m for m in image.get("BlockDeviceMappings", []) if m.get("DeviceName") == root_name), None)
    ebs = (root or {}).get("Ebs", {})
    line = classify_line(image.get("Name", ""))
    os_name, system_python = host_os(image.get("Name", ""), image.get("Description", ""))
    since = deprecated_since(image)
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
        "os": os_name,
        "system_python": system_python,
        "python_interpreter": python_interpreter or SYSTEM_PYTHON,
        "deprecated": since is not None,
        "deprecation_time": image.get("DeprecationTime") or None,
    }


def check_python(facts: dict[str, Any], given: str | None) -> None:
    """Refuse an image whose /usr/bin/python3 is too old for ansible-core, unless another interpreter is named."""
    if given or not python_too_old(facts["system_python"]):
        return
    need = ".".join(str(p) for p in MIN_TARGET_PYTHON)
    env_hint = ("one of its conda envs' Python (its envs differ by version: `conda env list` on an instance, for "
                "example /home/ubuntu/anaconda3/envs/pytorch_p38/bin/python)" if facts["legacy"]
                else "a Python installed on it")
    raise DlamiError(
        f"image {facts['image_id']} ({facts['name']}) runs {facts['os']}, whose {SYSTEM_PYTHON} is Python "
        f"{facts['system_python']}, and ansible-core 2.19 needs Python >= {need} on its hosts: pick a current "
        f"DLAMI (provision_dlami_ami_type, without provision_dlami_name_pattern or provision_image_id), or set "
        f"python_interpreter (provision_python_interpreter) to {env_hint}; nothing was launched",
        image_id=facts["image_id"], system_python=facts["system_python"])


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


def newest_by_name(ec2, name_pattern: str, owners: list[str], architecture: str,
                   include_deprecated: bool = False) -> tuple[dict[str, Any], int]:
    """The newest available image whose name matches, of the owners and the architecture; and how many matched.
    Deprecated images only with include_deprecated (DescribeImages IncludeDeprecated)."""
    filters = [{"Name": "name", "Values": [name_pattern]}, {"Name": "state", "Values": ["available"]}]
    arch = {"Name": "architecture", "Values": [architecture]}
    images = describe_images(ec2, Owners=owners, Filters=[*filters, arch], IncludeDeprecated=include_deprecated)
    if not images and not include_deprecated:
        deprecated = describe_images(ec2, Owners=owners, Filters=[*filters, arch], IncludeDeprecated=True)
        if deprecated:
            newest = max(deprecated, key=lambda i: (i.get("CreationDate", ""), i.get("Name", "")))
            raise DlamiError(f"every image of owners {owners} named like {name_pattern!r} is deprecated "
                             f"({len(deprecated)}; the newest, {newest['ImageId']} {newest.get('Name')}, since "
                             f"{newest.get('DeprecationTime')}); set include_deprecated: true to use it anyway, or "
                             f"pick a current image")
    if not images:
        others = describe_images(ec2, Owners=owners, Filters=filters, IncludeDeprecated=include_deprecated)
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
    if params.get("image_id"):  # EC2 describes a deprecated image when its id is given
        image = _by_id(ec2, params["image_id"], architecture, f"image_id {params['image_id']}")
        source = {"method": "image_id"}
    elif params.get("name_pattern"):
        pattern = params["name_pattern"]
        include = params.get("include_deprecated")
        if include is None:  # a name asks for that image; a pattern for the newest current one
            include = not has_wildcard(pattern)
        image, matched = newest_by_name(ec2, pattern, params["owners"], architecture, include)
        source = {"method": "name_pattern", "name_pattern": pattern}
    else:
        parameter = params.get("ssm_parameter") or ssm_parameter_name(architecture, params["ami_type"])
        image = resolve_ssm(ec2, ssm, parameter, architecture, params.get("ami_type"))
        source = {"method": "ssm_parameter", "ssm_parameter": parameter}
    facts = {**image_facts(image, params.get("python_interpreter")), "source": source, "matched": matched}
    check_python(facts, params.get("python_interpreter"))
    return facts


def deprecation_warning(facts: dict[str, Any]) -> str | None:
    if not facts["deprecated"]:
        return None
    return (f"image {facts['image_id']} ({facts['name']}) is deprecated since {facts['deprecation_time']}: AWS no "
            f"longer updates it and leaves it out of image listings; it still launches by id")
