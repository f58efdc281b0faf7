# Shared AWS plumbing for dlfleet modules: clients with retries, fleet tags, instance-type data.
# Thin wrappers, one per AWS call; "not found" is decided here once, not in each module.
from __future__ import annotations

import difflib
import re
from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.tagging import (
    ansible_dict_to_boto3_tag_list,
    boto3_tag_list_to_ansible_dict,
)

TAG_FLEET = "dlfleet:fleet"
TAG_OWNER = "dlfleet:owner"
TAG_TTL = "dlfleet:ttl"
DLFLEET_TAG_KEYS = (TAG_FLEET, TAG_OWNER, TAG_TTL)

# Codes AWS documents as transient for EC2/SSM/Service Quotas/SageMaker, beyond AWSRetry's defaults.
TRANSIENT_CODES = [
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
]

# One retry policy for every dlfleet call: jittered exponential backoff on transient codes.
aws_retry = AWSRetry.jittered_backoff(retries=10, delay=1, max_delay=20, catch_extra_error_codes=TRANSIENT_CODES)

_TTL_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[mhd])$")
_TTL_SECONDS = {"m": 60, "h": 3600, "d": 86400}


try:
    from botocore.exceptions import BotoCoreError, ClientError

    # What an AWS call raises: the service answered with an error, or botocore could not get an answer.
    AWS_ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError)
except ImportError:  # AnsibleAWSModule reports a missing botocore itself
    AWS_ERRORS = ()


class DlfleetError(Exception):
    """The one error every dlfleet module reports: a message that says what was asked, what happened and what to
    do, the AWS error code, the operation and the resource it concerns ('' where one does not apply), and further
    return values (details) for fail_json. Every dlfleet error class derives from it; see fail_json_kwargs."""

    default_code = ""

    def __init__(self, msg: str, code: str | None = None, operation: str = "", resource: str = "",
                 **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = self.default_code if code is None else code
        self.operation = operation
        self.resource = resource
        self.details = details

    @property
    def message(self) -> str:
        return self.msg

    @classmethod
    def from_aws(cls, err: BaseException, operation: str, resource: str = "", msg: str | None = None,
                 **details: Any) -> DlfleetError:
        """A DlfleetError for a botocore error `err` raised by `operation` on `resource`."""
        text = msg or f"{operation}{' of ' + resource if resource else ''} failed: {err}"
        return cls(text, code=error_code(err) or type(err).__name__, operation=operation, resource=resource,
                   **details)

    def fail_json_kwargs(self) -> dict[str, Any]:
        """msg, error_code, operation and resource (each only when known) and the details, for fail_json."""
        out: dict[str, Any] = {"msg": self.msg}
        for key, value in (("error_code", self.code), ("operation", self.operation), ("resource", self.resource)):
            if value:
                out[key] = value
        out.update(self.details)
        return out


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or '' for anything else."""
    response = getattr(err, "response", None) or {}
    return response.get("Error", {}).get("Code", "")


def error_message(err: BaseException) -> str:
    """The AWS error message of a botocore ClientError, or '' for anything else."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Message", ""))


# "Not found", decided once per service: the codes with which each service says that the thing named does not
# exist (or, for ids that cannot exist, such as a malformed AMI id, cannot be found).
NOT_FOUND_CODES: dict[str, frozenset[str]] = {
    "ec2": frozenset({
        "InvalidInstanceID.NotFound", "InvalidVolume.NotFound", "InvalidKeyPair.NotFound", "InvalidGroup.NotFound",
        "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable", "InvalidSubnetID.NotFound",
    }),
    "s3": frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}),
    "iam": frozenset({"NoSuchEntity"}),
    "sagemaker": frozenset({"ResourceNotFound", "ResourceNotFoundException"}),
    "service-quotas": frozenset({"NoSuchResourceException"}),
    "ssm": frozenset({"ParameterNotFound"}),
    "logs": frozenset({"ResourceNotFoundException"}),
    "pricing": frozenset({"NotFoundException"}),
}
# SageMaker also answers a Describe/Delete of an unknown name with a ValidationException whose message says so.
_SAGEMAKER_MISSING_WORDS = ("could not find", "not found", "does not exist")


def is_not_found(err: BaseException, service: str) -> bool:
    """Whether `err` is `service`'s answer that the resource asked for does not exist."""
    if service not in NOT_FOUND_CODES:
        raise ValueError(f"no not-found codes known for service {service!r}; add them to NOT_FOUND_CODES")
    code = error_code(err)
    if code in NOT_FOUND_CODES[service]:
        return True
    if service == "sagemaker" and code == "ValidationException":
        message = error_message(err).lower()
        return any(words in message for words in _SAGEMAKER_MISSING_WORDS)
    return False


def client(module, service: str, **kwargs: Any):
    """A boto3 client for `service` whose calls retry when called with aws_retry=True. The one client factory:
    every dlfleet call goes through aws_retry, one call with aws_retry=True, a listing through paginate()."""
    return module.client(service, retry_decorator=aws_retry, **kwargs)


def paginate(aws_client, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a paginated `operation`, the whole listing retried on transient errors."""
    paginator = aws_client.get_paginator(operation)
    return aws_retry(lambda: list(paginator.paginate(**kwargs)))()


def eventually_consistent(*codes: str):
    """The one helper for eventual consistency: aws_retry's backoff that also retries on `codes`, for calls by id
    right after the id was created (EC2 may not know a new instance yet: InvalidInstanceID.NotFound)."""
    return AWSRetry.jittered_backoff(retries=10, delay=1, max_delay=20,
                                     catch_extra_error_codes=[*TRANSIENT_CODES, *codes])


# The prefix under which botocore's endpoint data lists a service's regions (its model's metadata.endpointPrefix), for
# the services whose regions are checked: reading it from the model loads the whole model (EC2's takes 0.1 s) once
# more in every module run, before the client loads it again. tests/unit/test_inputs.py compares it with the models.
ENDPOINT_PREFIXES = {"ec2": "ec2", "sagemaker": "api.sagemaker", "service-quotas": "servicequotas", "ssm": "ssm",
                     "s3": "s3", "pricing": "api.pricing"}


def known_regions(service: str = "ec2") -> list[str]:
    """Every region botocore's endpoint data lists for `service`, in every partition, sorted."""
    import botocore.regions
    import botocore.session

    session = botocore.session.get_session()
    prefix = ENDPOINT_PREFIXES.get(service)
    if prefix is None:
        return sorted({r for partition in session.get_available_partitions()
                       for r in session.get_available_regions(service, partition)})
    resolver = botocore.regions.EndpointResolver(session.get_data("endpoints"))
    return sorted({r for partition in resolver.get_available_partitions()
                   for r in resolver.get_available_endpoints(prefix, partition)})


def unknown_region(region: str | None, service: str = "ec2") -> str | None:
    """A message naming the fix when `region` is no region botocore knows for `service` (in any partition); else
    None. Checked before the first call: a misspelt region otherwise shows only as a connection error (AWS has
    no such endpoint) or an unparsable answer from an endpoint_url."""
    if not region:
        return None
    import botocore

    known = known_regions(service)
    if not known or region in known:
        return None
    close = difflib.get_close_matches(region, known, n=3)
    return (f"region {region!r} is not an AWS region that offers {service} (botocore {botocore.__version__}); "
            f"{'did you mean ' + ', '.join(close) + '? ' if close else ''}give one such as us-east-1, or upgrade "
            f"botocore if the region is newer than it")


def fail_on_unknown_region(module, service: str = "ec2") -> None:
    message = unknown_region(module.region, service)
    if message:
        module.fail_json(msg=message)


def ttl_seconds(ttl: str) -> int:
    """'30m' / '8h' / '2d' -> seconds. Raises ValueError with the accepted forms."""
    match = _TTL_RE.match(str(ttl).strip())
    if not match:
        raise ValueError(f"ttl {ttl!r} is not a duration; use a whole number with m, h or d, for example 8h")
    return int(match.group("n")) * _TTL_SECONDS[match.group("unit")]


# A fleet name becomes tag values, EC2 filter values (where * and ? are wildcards), key-pair, group and SageMaker
# names (63 characters at most, with suffixes such as -train) and file names: letters, digits and hyphens only,
# starting and ending with a letter or digit, 40 characters at most. Nothing else can select another fleet.
FLEET_NAME_MAX = 40
_FLEET_NAME_RE = re.compile(r"^[A-Za-z0-9](?:-*[A-Za-z0-9])*$")


def check_fleet_name(fleet: Any) -> str:
    """The fleet name, or ValueError saying what a fleet name may hold."""
    if not isinstance(fleet, str) or not fleet:
        raise ValueError(f"fleet name {fleet!r} is empty or not a string: name the fleet, for example "
                         f"dlfleet_fleet_name=cifar-a")
    if len(fleet) > FLEET_NAME_MAX or not _FLEET_NAME_RE.fullmatch(fleet):
        raise ValueError(f"fleet name {fleet!r} is not allowed: use 1-{FLEET_NAME_MAX} letters, digits and hyphens, "
                         f"starting and ending with a letter or digit (no wildcards, spaces, slashes or dots), "
                         f"for example cifar-a")
    return fleet


def fleet_tags(fleet: str, owner: str, ttl: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tags every dlfleet resource carries, merged over the user's own tags."""
    check_fleet_name(fleet)
    ttl_seconds(ttl)
    tags = dict(extra or {})
    tags.update({TAG_FLEET: fleet, TAG_OWNER: owner, TAG_TTL: ttl})
    return tags


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return ansible_dict_to_boto3_tag_list(tags)


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return boto3_tag_list_to_ansible_dict(tags or [])


def fleet_filter(fleet: str) -> list[dict[str, Any]]:
    """EC2 Describe* filter selecting a fleet's resources by its tag (a checked name: no wildcard in it)."""
    check_fleet_name(fleet)
    return [{"Name": f"tag:{TAG_FLEET}", "Values": [fleet]}]


def describe_instance_types(ec2, names: list[str]) -> dict[str, dict[str, Any]]:
    """DescribeInstanceTypes for `names` in one paginated call; unknown names are simply absent."""
    names = sorted(set(names))
    if not names:
        return {}
    found: dict[str, dict[str, Any]] = {}
    try:
        pages = paginate(ec2, "describe_instance_types", InstanceTypes=names)
    except AWS_ERRORS as err:  # an unknown name fails the whole call: ask one by one to find the good ones
        if error_code(err) != "InvalidInstanceType":
            raise
        pages = []
        for name in names:
            try:
                pages.append(aws_retry(ec2.describe_instance_types)(InstanceTypes=[name]))
            except AWS_ERRORS as one_err:
                if error_code(one_err) != "InvalidInstanceType":
                    raise
    for page in pages:
        for record in page.get("InstanceTypes", []):
            found[record["InstanceType"]] = record
    return found


def gpu_summary(record: dict[str, Any]) -> dict[str, Any]:
    """GPU count, model, manufacturer and memory (MiB) of one DescribeInstanceTypes record."""
    gpus = (record.get("GpuInfo") or {}).get("Gpus") or []
    return {
        "vcpus": record.get("VCpuInfo", {}).get("DefaultVCpus", 0),
        "memory_mib": record.get("MemoryInfo", {}).get("SizeInMiB", 0),
        "gpu_count": sum(g.get("Count", 0) for g in gpus),
        "gpu_model": ", ".join(g.get("Name", "") for g in gpus),
        "gpu_manufacturer": ", ".join(g.get("Manufacturer", "") for g in gpus),
        "gpu_memory_mib": sum(g.get("Count", 0) * g.get("MemoryInfo", {}).get("SizeInMiB", 0) for g in gpus),
    }
