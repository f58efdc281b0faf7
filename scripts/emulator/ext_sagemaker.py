# SageMaker calls that moto 5.2.5 lacks or answers with invented data, added to its SageMaker backend so
# that the modules' AWS code paths run against the emulator over HTTP. server.py calls install() before it
# serves.
#
# What moto 5.2.5 does, and what this changes:
# - StopTrainingJob, UpdateEndpoint, StopHyperParameterTuningJob and
#   ListTrainingJobsForHyperParameterTuningJob are not implemented (HTTP 500): added, with AWS's rules
#   (stopping a finished job and updating a busy endpoint are ValidationExceptions).
# - CreateTrainingJob overwrites a job of the same name: now ResourceInUse, as in AWS. CreateModel,
#   CreateEndpointConfig and CreateEndpoint overwrite too: now "Cannot create already existing ...", as in AWS.
# - Training jobs: moto replaces the caller's MetricDefinitions with an invented "test:dcg" and reports an
#   invented "train:progress" metric. Here the caller's definitions are kept and no metric is invented
#   (nothing ran, so nothing was measured). A job is InProgress for as many seconds as the emulator's SSM
#   parameter /dlfleet/emulator/sagemaker/training-seconds (or DLFLEET_EMULATOR_TRAINING_SECONDS) says
#   (default 0: finished at once, as moto has it), then Completed with its secondary status transitions and
#   billable seconds.
# - Tuning jobs: moto reports an invented best training job ("FakeTrainingJobName", objective 1). Here no
#   trial ran, so there is no best job and the counters are zero. A tuning job created without tags makes
#   moto's ListTags fail (HTTP 500): its tags start as an empty list here. A tuning job stays InProgress for
#   as long as a training job does (the same parameter), so that it can be stopped.
from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

_installed = False


SECONDS_PARAMETER = "/dlfleet/emulator/sagemaker/training-seconds"


def _training_seconds(account_id: str, region: str) -> float:
    """How long an emulated training job stays InProgress: the SSM parameter SECONDS_PARAMETER in the
    emulator's own SSM (so that a test can set it with a real API call), else DLFLEET_EMULATOR_TRAINING_SECONDS,
    else 0."""
    try:
        from moto.ssm.models import ssm_backends

        parameter = ssm_backends[account_id][region].get_parameter(SECONDS_PARAMETER)
        if parameter is not None:
            return float(parameter.value)
    except Exception:  # no SSM state, or a value that is not a number: fall back
        pass
    return float(os.environ.get("DLFLEET_EMULATOR_TRAINING_SECONDS", "0") or 0)


def install() -> None:
    """Patch moto's SageMaker backend and responses in this process (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.core.responses import ActionResult, EmptyResult
    from moto.core.utils import utcnow
    from moto.sagemaker import models, responses
    from moto.sagemaker.exceptions import ResourceInUseException, ValidationError

    job_init = models.FakeTrainingJob.__init__

    def init(self, *args: Any, **kwargs: Any) -> None:
        definitions = list((kwargs.get("algorithm_specification") or {}).get("MetricDefinitions") or [])
        job_init(self, *args, **kwargs)
        if definitions:
            self.algorithm_specification["MetricDefinitions"] = definitions
        else:
            self.algorithm_specification.pop("MetricDefinitions", None)
        self.final_metric_data_list = []
        self.duration = _training_seconds(kwargs.get("account_id", ""), kwargs.get("region_name", ""))
        self.training_job_status = "InProgress"
        self.secondary_status = "Training"
        self._finish_if_due()  # at once when the duration is 0

    def finish_if_due(self) -> None:
        if self.training_job_status != "InProgress":
            return
        if (utcnow() - self.creation_time).total_seconds() < self.duration:
            return
        self._end("Completed", "Completed", "Training job completed")

    def end(self, status: str, secondary: str, message: str) -> None:
        now = utcnow()
        seconds = max(1, math.ceil((now - self.creation_time).total_seconds()))
        self.training_job_status = status
        self.secondary_status = secondary
        self.training_end_time = self.last_modified_time = now
        self.training_time_in_seconds = self.billable_time_in_seconds = seconds
        start = self.creation_time
        self.secondary_status_transitions = [
            {"Status": "Starting", "StartTime": start, "EndTime": start,
             "StatusMessage": "Preparing the instances for training"},
            {"Status": "Training", "StartTime": start, "EndTime": now,
             "StatusMessage": "Training image download completed. Training in progress."},
            {"Status": secondary, "StartTime": now, "StatusMessage": message},
        ]

    models.FakeTrainingJob.__init__ = init
    models.FakeTrainingJob._finish_if_due = finish_if_due
    models.FakeTrainingJob._end = end
    original_response = models.FakeTrainingJob.response_object

    def response_object(self) -> dict[str, Any]:
        self._finish_if_due()
        return original_response.fget(self)

    models.FakeTrainingJob.response_object = property(response_object)

    backend_create = models.SageMakerModelBackend.create_training_job

    def create_training_job(self, training_job_name: str, *args: Any, **kwargs: Any):
        if training_job_name in self.training_jobs:
            arn = self.training_jobs[training_job_name].arn
            raise ResourceInUseException(
                f"Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({arn})")
        return backend_create(self, training_job_name, *args, **kwargs)

    models.SageMakerModelBackend.create_training_job = create_training_job

    def refuse_existing(method: str, kind: str, taken) -> None:
        """moto overwrites a model, endpoint config or endpoint created again under its name; AWS refuses."""
        backend_create = getattr(models.SageMakerModelBackend, method)

        def create(self, **kwargs: Any):
            arn = taken(self, kwargs)
            if arn:
                raise ValidationError(f'Cannot create already existing {kind} "{arn}".')
            return backend_create(self, **kwargs)

        setattr(models.SageMakerModelBackend, method, create)

    refuse_existing("create_model", "model",
                    lambda b, kw: b._models[kw["model_name"]].arn if kw["model_name"] in b._models else None)
    refuse_existing("create_endpoint_config", "endpoint configuration",
                    lambda b, kw: b.endpoint_configs[kw["endpoint_config_name"]].endpoint_config_arn
                    if kw["endpoint_config_name"] in b.endpoint_configs else None)
    refuse_existing("create_endpoint", "endpoint",
                    lambda b, kw: b.endpoints[kw["endpoint_name"]].arn
                    if kw["endpoint_name"] in b.endpoints else None)

    tuning_init = models.HyperParameterTuningJob.__init__

    def init_tuning(self, *args: Any, **kwargs: Any) -> None:
        tuning_init(self, *args, **kwargs)
        self.tags = self.tags or []  # moto keeps None, and ListTags then fails
        self.best_training_job = None
        self.OverallBestTrainingJob = None
        self.training_job_status_counters = {k: 0 for k in self.training_job_status_counters}
        self.objective_status_counters = {k: 0 for k in self.objective_status_counters}
        self.tuning_job_completion_details = None
        self.consumed_resources = {"RuntimeInSeconds": 0}
        self.duration = _training_seconds(self.account_id, self.region_name)
        if self.duration > 0:
            self.hyper_parameter_tuning_job_status = "InProgress"
            self.hyper_parameter_tuning_end_time = None

    models.HyperParameterTuningJob.__init__ = init_tuning
    tuning_describe = models.HyperParameterTuningJob.describe

    def describe_tuning(self) -> dict[str, Any]:
        if (self.hyper_parameter_tuning_job_status == "InProgress"
                and (utcnow() - self.creation_time).total_seconds() >= self.duration):
            self.hyper_parameter_tuning_job_status = "Completed"
            self.hyper_parameter_tuning_end_time = utcnow()
        return {k: v for k, v in tuning_describe(self).items() if v is not None and v != ""}

    models.HyperParameterTuningJob.describe = describe_tuning

    def stop_training_job(self) -> ActionResult:
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None:
            raise ValidationError(f"Requested resource not found: training job {name}")
        job._finish_if_due()
        if job.training_job_status != "InProgress":
            raise ValidationError(
                f"The request was rejected because the training job is in status {job.training_job_status}.")
        job._end("Stopped", "Stopped", "The job was stopped")
        return EmptyResult()

    def update_endpoint(self) -> ActionResult:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        config_name = self._get_param("EndpointConfigName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(f"Could not find endpoint \"{name}\".")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
        if endpoint.endpoint_config_name == config_name:
            raise ValidationError("Cannot update endpoint with the same endpoint configuration: create a new one")
        config = backend.describe_endpoint_config(config_name)
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.last_modified_time = utcnow() + timedelta(microseconds=1)
        return ActionResult({"EndpointArn": endpoint.arn})

    def stop_hyper_parameter_tuning_job(self) -> ActionResult:
        name = self._get_param("HyperParameterTuningJobName")
        job = self.sagemaker_backend.hyper_parameter_tuning_jobs.get(name)
        if job is None:
            raise ValidationError(f"Amazon SageMaker can't find a tuning job with name {name}")
        if job.hyper_parameter_tuning_job_status != "InProgress":
            raise ValidationError(
                f"The request was rejected because the tuning job is in status "
                f"{job.hyper_parameter_tuning_job_status}.")
        job.hyper_parameter_tuning_job_status = "Stopped"
        return EmptyResult()

    def list_training_jobs_for_hyper_parameter_tuning_job(self) -> ActionResult:
        name = self._get_param("HyperParameterTuningJobName")
        if name not in self.sagemaker_backend.hyper_parameter_tuning_jobs:
            raise ValidationError(f"Amazon SageMaker can't find a tuning job with name {name}")
        return ActionResult({"TrainingJobSummaries": []})  # no trial ever runs in the emulator

    for func in (stop_training_job, update_endpoint, stop_hyper_parameter_tuning_job,
                 list_training_jobs_for_hyper_parameter_tuning_job):
        setattr(responses.SageMakerResponse, func.__name__, func)
    _install_binary_invoke()
    _installed = True


def _install_binary_invoke() -> None:
    """InvokeEndpoint takes any bytes (application/x-npy images, say); moto 5.2.5 decodes every request body as
    UTF-8 and answers such a body with HTTP 500. Here a body that is not UTF-8 reaches moto's invoke_endpoint
    base64-encoded: it only serves there as the key of moto's answer cache."""
    import base64

    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    setup = SageMakerRuntimeResponse.setup_class

    def setup_class(self, request: Any, full_url: Any = None, headers: Any = None, use_raw_body: bool = False) -> None:
        setup(self, request, full_url, headers, use_raw_body=True)
        if isinstance(self.body, bytes):
            try:
                self.body = self.body.decode("utf-8")
            except UnicodeDecodeError:
                self.body = base64.b64encode(self.body).decode("ascii")

    SageMakerRuntimeResponse.setup_class = setup_class
