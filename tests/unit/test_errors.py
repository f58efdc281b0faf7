"""The one error base and the per-service "not found" table of module_utils/dlfleet_aws.py: pure logic."""
from __future__ import annotations

import pytest
from ansible.module_utils import dlfleet_aws as da
from ansible.module_utils.dlfleet_dlami import DlamiError
from ansible.module_utils.dlfleet_fleet import FleetError, StaleTokenError
from ansible.module_utils.dlfleet_pricing import PricingError
from ansible.module_utils.dlfleet_quota import QuotaError
from botocore.exceptions import ClientError


def client_error(code: str, message: str = "", operation: str = "Describe") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(("service", "code"), [
    ("ec2", "InvalidInstanceID.NotFound"), ("ec2", "InvalidGroup.NotFound"), ("ec2", "InvalidVolume.NotFound"),
    ("ec2", "InvalidKeyPair.NotFound"), ("ec2", "InvalidAMIID.NotFound"), ("s3", "NoSuchKey"),
    ("s3", "NoSuchBucket"), ("s3", "404"), ("iam", "NoSuchEntity"), ("sagemaker", "ResourceNotFound"),
    ("service-quotas", "NoSuchResourceException"), ("ssm", "ParameterNotFound"),
])
def test_each_service_says_not_found_with_its_own_codes(service: str, code: str) -> None:
    assert da.is_not_found(client_error(code), service)
    others = [s for s in da.NOT_FOUND_CODES if code not in da.NOT_FOUND_CODES[s]]
    assert not any(da.is_not_found(client_error(code), s) for s in others)   # decided per service


def test_sagemaker_validation_exception_is_not_found_only_when_its_message_says_so() -> None:
    assert da.is_not_found(client_error("ValidationException", "Could not find endpoint \"x\"."), "sagemaker")
    assert da.is_not_found(client_error("ValidationException", "Training job x does not exist"), "sagemaker")
    assert not da.is_not_found(client_error("ValidationException", "InstanceCount must be >= 1"), "sagemaker")
    assert not da.is_not_found(client_error("ValidationException", "Could not find endpoint"), "ec2")


def test_other_errors_and_unknown_services() -> None:
    assert not da.is_not_found(client_error("AccessDenied"), "s3")
    assert not da.is_not_found(ValueError("InvalidInstanceID.NotFound"), "ec2")   # not an AWS answer
    with pytest.raises(ValueError, match="NOT_FOUND_CODES"):
        da.is_not_found(client_error("NoSuchKey"), "glacier")


@pytest.mark.parametrize("cls", [FleetError, StaleTokenError, QuotaError, DlamiError, PricingError])
def test_every_error_class_is_the_one_base_with_its_fields(cls: type[da.DlfleetError]) -> None:
    err = cls("no capacity: try another zone", code="InsufficientInstanceCapacity", operation="RunInstances",
              resource="fleet cifar-a", attempts=3)
    assert isinstance(err, da.DlfleetError)
    assert (str(err), err.msg, err.message) == ("no capacity: try another zone",) * 3
    assert err.fail_json_kwargs() == {"msg": "no capacity: try another zone",
                                      "error_code": "InsufficientInstanceCapacity", "operation": "RunInstances",
                                      "resource": "fleet cifar-a", "attempts": 3}
    assert cls("plain", count=1).fail_json_kwargs() == {"msg": "plain", "count": 1}   # unknown fields left out


def test_from_aws_keeps_the_code_operation_and_resource() -> None:
    err = FleetError.from_aws(client_error("UnauthorizedOperation", "not allowed"), "TerminateInstances",
                              "i-0123456789abcdef0")
    assert isinstance(err, FleetError)
    assert (err.code, err.operation, err.resource) == ("UnauthorizedOperation", "TerminateInstances",
                                                       "i-0123456789abcdef0")
    assert err.msg.startswith("TerminateInstances of i-0123456789abcdef0 failed: ")
