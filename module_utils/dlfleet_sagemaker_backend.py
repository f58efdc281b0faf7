# The backend interface of the SageMaker modules. AwsBackend: one thin, retried wrapper per SageMaker call,
# "not found" decided once. The local backend (instance_type: local) is dlfleet_sagemaker_local, a client of
# the local runtime with the same methods; what differs between the two modes is a method or attribute of
# the backend (poll_seconds, look_seconds, prepare, strategy_warning, training_log_since, ...), so that no
# module asks which one it has. run_module is main() of every SageMaker module.
from __future__ import annotations

import hashlib
import json
from typing import Any

from ansible.module_utils import dlfleet_sagemaker_logs as logs
from ansible.module_utils.dlfleet_aws import (
    AWS_ERRORS,
    aws_retry,
    error_code,
    is_not_found,
    paginate,
    tag_dict,
    tag_list,
)
from ansible.module_utils.dlfleet_sagemaker import SageMakerError
from ansible.module_utils.dlfleet_sagemaker_code import Storage

# --------------------------------------------------------------------------------------------------
# The AWS backend: one thin, retried wrapper per SageMaker call; "not found" decided here, once
# --------------------------------------------------------------------------------------------------


def _call(fn, what: str, missing_ok: bool = False, **kwargs):
    try:
        answer = fn(aws_retry=True, **kwargs)
        if isinstance(answer, dict):
            answer.pop("ResponseMetadata", None)
        return answer
    except AWS_ERRORS as err:
        if missing_ok and is_not_found(err, "sagemaker"):
            return None
        operation, _space, resource = what.partition(" ")
        raise SageMakerError(f"{what} failed: {err}", code=error_code(err) or "AWSError", operation=operation,
                             resource=resource) from err


def _logs_call(fn, **kwargs):
    """A retried CloudWatch Logs call; None when the group or stream does not exist (yet)."""
    try:
        return aws_retry(fn)(**kwargs)
    except AWS_ERRORS as err:
        if is_not_found(err, "logs"):
            return None
        raise


class AwsBackend:
    """SageMaker through boto3 (whatever endpoint boto3 is given): clients with dlfleet's retry policy."""

    poll_seconds = 15.0   # longest pause between two Describe* calls while waiting
    look_seconds = 5.0    # pause between two looks of sagemaker_job_progress

    def __init__(self, module) -> None:
        self.module = module
        self.sm = module.client("sagemaker", retry_decorator=aws_retry)
        self._runtime = None
        self._logs = None

    def prepare(self) -> None:
        """What must hold before a job or endpoint is created (AWS checks the rest itself)."""

    def strategy_warning(self, strategy: str) -> str | None:
        """A warning when the tuning strategy runs otherwise than asked (never in AWS)."""
        return None

    def logs_client(self):
        if self._logs is None:
            self._logs = self.module.client("logs", retry_decorator=aws_retry)
        return self._logs

    # training jobs
    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_training_job, f"DescribeTrainingJob {name}", True, TrainingJobName=name)

    def create_training_job(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_training_job, f"CreateTrainingJob {request['TrainingJobName']}", **request)

    def stop_training_job(self, name: str) -> None:
        _call(self.sm.stop_training_job, f"StopTrainingJob {name}", TrainingJobName=name)

    def training_log_tail(self, name: str, lines: int) -> list[str]:
        """The newest lines of the job's CloudWatch log streams, when there are any."""
        if lines <= 0:
            return []
        logs_client = self.logs_client()
        group = "/aws/sagemaker/TrainingJobs"
        try:
            streams = aws_retry(logs_client.describe_log_streams)(
                logGroupName=group, logStreamNamePrefix=f"{name}/").get("logStreams", [])
            out: list[str] = []
            for stream in streams[:4]:
                events = aws_retry(logs_client.get_log_events)(
                    logGroupName=group, logStreamName=stream["logStreamName"], limit=lines,
                    startFromHead=False).get("events", [])
                out += [e["message"].rstrip("\n") for e in events]
            return out[-lines:]
        except AWS_ERRORS:
            return []  # no log group yet (or no logs permission): progress goes on without the tail

    def training_log_since(self, name: str, cursor: dict[str, Any], limit: int, final: bool,
                           hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
        """The job's CloudWatch log lines after `cursor`, labelled with their instance when `hosts` > 1 (botocore
        errors other than a missing group or stream are raised)."""
        return logs.aws_read(self.logs_client(), name, cursor, limit, _logs_call, hosts)

    # tuning jobs
    def describe_tuning_job(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_hyper_parameter_tuning_job, f"DescribeHyperParameterTuningJob {name}", True,
                     HyperParameterTuningJobName=name)

    def create_tuning_job(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_hyper_parameter_tuning_job,
              f"CreateHyperParameterTuningJob {request['HyperParameterTuningJobName']}", **request)

    def stop_tuning_job(self, name: str) -> None:
        _call(self.sm.stop_hyper_parameter_tuning_job, f"StopHyperParameterTuningJob {name}",
              HyperParameterTuningJobName=name)

    def list_tuning_trials(self, name: str) -> list[dict[str, Any]]:
        try:
            pages = paginate(self.sm, "list_training_jobs_for_hyper_parameter_tuning_job",
                             HyperParameterTuningJobName=name)
        except AWS_ERRORS as err:
            raise SageMakerError(f"ListTrainingJobsForHyperParameterTuningJob {name} failed: {err}",
                                 code=error_code(err) or "AWSError") from err
        return [s for page in pages for s in page.get("TrainingJobSummaries", [])]

    # models, endpoint configs, endpoints
    def describe_model(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_model, f"DescribeModel {name}", True, ModelName=name)

    def create_model(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_model, f"CreateModel {request['ModelName']}", **request)

    def delete_model(self, name: str) -> None:
        _call(self.sm.delete_model, f"DeleteModel {name}", True, ModelName=name)

    def list_models(self, name_contains: str) -> list[str]:
        pages = paginate(self.sm, "list_models", NameContains=name_contains)
        return [m["ModelName"] for page in pages for m in page.get("Models", [])]

    def describe_endpoint_config(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_endpoint_config, f"DescribeEndpointConfig {name}", True,
                     EndpointConfigName=name)

    def create_endpoint_config(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_endpoint_config, f"CreateEndpointConfig {request['EndpointConfigName']}", **request)

    def delete_endpoint_config(self, name: str) -> None:
        _call(self.sm.delete_endpoint_config, f"DeleteEndpointConfig {name}", True, EndpointConfigName=name)

    def list_endpoint_configs(self, name_contains: str) -> list[str]:
        pages = paginate(self.sm, "list_endpoint_configs", NameContains=name_contains)
        return [c["EndpointConfigName"] for page in pages for c in page.get("EndpointConfigs", [])]

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        return _call(self.sm.describe_endpoint, f"DescribeEndpoint {name}", True, EndpointName=name)

    def create_endpoint(self, request: dict[str, Any]) -> None:
        _call(self.sm.create_endpoint, f"CreateEndpoint {request['EndpointName']}", **request)

    def update_endpoint(self, name: str, config_name: str) -> None:
        _call(self.sm.update_endpoint, f"UpdateEndpoint {name}", EndpointName=name, EndpointConfigName=config_name)

    def delete_endpoint(self, name: str) -> None:
        _call(self.sm.delete_endpoint, f"DeleteEndpoint {name}", True, EndpointName=name)

    def invoke_endpoint(self, name: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        if self._runtime is None:
            self._runtime = self.module.client("sagemaker-runtime", retry_decorator=aws_retry)
        answer = _call(self._runtime.invoke_endpoint, f"InvokeEndpoint {name}", EndpointName=name, Body=body,
                       ContentType=content_type, Accept=accept)
        return answer["Body"].read(), answer.get("ContentType", accept)

    def endpoint_url(self, name: str) -> str:
        return f"https://runtime.sagemaker.{self.module.region}.amazonaws.com/endpoints/{name}/invocations"

    # tags
    def list_tags(self, arn: str) -> dict[str, str]:
        pages = paginate(self.sm, "list_tags", ResourceArn=arn)
        return tag_dict([t for page in pages for t in page.get("Tags", [])])

    def update_tags(self, arn: str, to_set: dict[str, str], to_unset: list[str]) -> None:
        if to_unset:
            _call(self.sm.delete_tags, f"DeleteTags {arn}", ResourceArn=arn, TagKeys=to_unset)
        if to_set:
            _call(self.sm.add_tags, f"AddTags {arn}", ResourceArn=arn, Tags=tag_list(to_set))


def create_once(create, describe, matches=None) -> bool:
    """Create, and when the call fails but the resource exists (a retried create whose first answer was lost:
    AWS then says it already exists), adopt it if it is what was asked for. Returns True when adopted."""
    try:
        create()
        return False
    except SageMakerError as err:
        found = describe()
        if found is None or (matches is not None and not matches(found)):
            raise
        err.details.clear()
        return True


def region_of(module, local: bool) -> str:
    region = module.region
    if not region:
        if local:
            return "us-east-1"
        raise SageMakerError("no AWS region: set `region` or AWS_REGION / AWS_DEFAULT_REGION", code="NoRegion")
    return region


def backend_for(module, local: bool):
    """The AWS backend, or the local one (instance_type: local); both answer the same calls."""
    if not local:
        return AwsBackend(module)
    from ansible.module_utils.dlfleet_sagemaker_local import LocalBackend
    return LocalBackend(module)


def s3_client_factory(module):
    return lambda: module.client("s3", retry_decorator=aws_retry)


def run_module(module, local_of, ensure_present, ensure_absent, log) -> None:
    """main() of every SageMaker module: pick the backend (AWS or local), call ensure_present/ensure_absent,
    and answer through exit_json or fail_json. `local_of(params)` says whether the spec runs locally."""
    params = module.params
    try:
        local = local_of(params)
        region = region_of(module, local)
        backend = backend_for(module, local)
        if params["state"] == "present":
            storage = Storage(s3_client_factory(module), params["kms_key_id"])
            result = ensure_present(backend, storage, params, module.check_mode, region, log)
        else:
            result = ensure_absent(backend, params, module.check_mode, log)
    except SageMakerError as err:
        module.fail_json(**err.fail_json_kwargs())
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def sha8(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]
