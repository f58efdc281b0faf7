# SageMaker's API, answered on this machine (instance_type: local): the calls the modules make, with the record
# shapes of the Describe* answers. Jobs run as detached processes under the training-container contract
# (sagemaker_local.container) and endpoints as loopback HTTP servers; their records live under the local dir as
# JSON. Records are kept here, not in an AWS emulator: an emulator would mark a job Completed the moment it is
# created, and with real AWS credentials a CreateTrainingJob would start a paid job. The SageMaker SDK's own local
# mode keeps its records on the client side too. The modules reach this through sagemaker_local.api.
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from sagemaker_local import container, logs

SERVER_START_SECONDS = 120


class ApiError(Exception):
    """A failed call, as SageMaker would answer it: a message and an error code."""

    def __init__(self, message: str, code: str = "ValidationException") -> None:
        super().__init__(message)
        self.code = code


def _not_found(kind: str, name: str, region: str, arn_kind: str) -> ApiError:
    return ApiError(f"Could not find {kind} '{container.arn(region, arn_kind, name)}'.", code="ValidationException")


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


class LocalSageMaker:
    """The SageMaker calls of the AWS backend, with state under `root`; the user's code runs with `python` (the
    training environment's interpreter), and so do the supervisors and servers this starts (sys.executable)."""

    def __init__(self, root: str, python: str, region: str) -> None:
        self.root = root
        self.python = python
        self.region = region

    # ---------------------------------------------------------------------------------------------
    # plumbing
    # ---------------------------------------------------------------------------------------------

    def _dir(self, kind: str, name: str) -> str:
        return os.path.join(self.root, kind, name)

    def _record(self, kind: str, name: str) -> dict[str, Any] | None:
        path = os.path.join(self._dir(kind, name), "record.json")
        return container.read_json(path) if os.path.exists(path) else None

    def _save(self, kind: str, name: str, record: dict[str, Any]) -> None:
        record["LastModifiedTime"] = container.now_iso()
        container.write_json(os.path.join(self._dir(kind, name), "record.json"), record)

    # ---------------------------------------------------------------------------------------------
    # training jobs
    # ---------------------------------------------------------------------------------------------

    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        record = self._record("training-jobs", name)
        if record is None:
            return None
        job_dir = self._dir("training-jobs", name)
        if record.get("TrainingJobStatus") in ("InProgress", "Stopping") and not self._supervised(job_dir):
            record = self._record("training-jobs", name) or record  # it may have finished meanwhile
            if record.get("TrainingJobStatus") in ("InProgress", "Stopping"):
                record.update(TrainingJobStatus="Failed", SecondaryStatus="Failed",
                              FailureReason="InternalServerError: the local job's supervisor process ended "
                                            "without a final status (killed?); see supervisor.log in " + job_dir)
                self._save("training-jobs", name, record)
        return record

    def _supervised(self, job_dir: str) -> bool:
        if not os.path.exists(os.path.join(job_dir, "supervisor.json")):
            return True  # being started right now
        return container.supervisor_alive(job_dir)

    def create_training_job(self, request: dict[str, Any]) -> None:
        name = request["TrainingJobName"]
        job_dir = self._dir("training-jobs", name)
        try:
            os.makedirs(job_dir)
        except FileExistsError as err:
            raise ApiError(f"Training job names must be unique within an AWS account and region, and a "
                                 f"training job with this name already exists ({name})",
                                 code="ResourceInUse") from err
        record = container.initial_training_record(request, self.region, self.python)
        container.write_json(os.path.join(job_dir, "request.json"), request)
        container.write_json(os.path.join(job_dir, "record.json"), record)
        self._create_tags("training-jobs", name, request)
        container.launch("train", job_dir)

    def stop_training_job(self, name: str) -> None:
        record = self.describe_training_job(name)
        if record is None:
            raise _not_found("training job", name, self.region, "training-job")
        if record["TrainingJobStatus"] != "InProgress":
            raise ApiError(f"The request was rejected because the training job is in status "
                                 f"{record['TrainingJobStatus']}.", code="ValidationException")
        info = container.read_json(os.path.join(self._dir("training-jobs", name), "supervisor.json"), {})
        if container.alive(info.get("pid"), info.get("start")):
            os.kill(info["pid"], signal.SIGTERM)

    def training_log_tail(self, name: str, lines: int) -> list[str]:
        job_dir = self._dir("training-jobs", name)
        out: list[str] = []
        for log in ("algo-1.log", "supervisor.log"):
            out += container.tail(os.path.join(job_dir, log), lines)
        return out[-lines:] if lines > 0 else []

    def training_log_since(self, name: str, cursor: dict[str, Any], limit: int, final: bool,
                           hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
        """The container log's lines after `cursor` (its algo-N.log files, as CloudWatch has them in AWS), labelled
        with their instance when the job runs on `hosts` > 1 instances."""
        return logs.local_read(self._dir("training-jobs", name), cursor, limit, final, hosts)

    # ---------------------------------------------------------------------------------------------
    # tuning jobs
    # ---------------------------------------------------------------------------------------------

    def describe_tuning_job(self, name: str) -> dict[str, Any] | None:
        record = self._record("tuning-jobs", name)
        if record is None:
            return None
        tuning_dir = self._dir("tuning-jobs", name)
        if record.get("HyperParameterTuningJobStatus") in ("InProgress", "Stopping") and \
                not self._supervised(tuning_dir):
            record = self._record("tuning-jobs", name) or record
            if record.get("HyperParameterTuningJobStatus") in ("InProgress", "Stopping"):
                record.update(HyperParameterTuningJobStatus="Failed",
                              FailureReason="the local tuning supervisor ended without a final status; see "
                                            "supervisor.log in " + tuning_dir)
                self._save("tuning-jobs", name, record)
        return record

    def create_tuning_job(self, request: dict[str, Any]) -> None:
        name = request["HyperParameterTuningJobName"]
        tuning_dir = self._dir("tuning-jobs", name)
        parents = []
        for parent in (request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs") or []:
            parent_record = self.describe_tuning_job(parent["HyperParameterTuningJobName"])
            if parent_record is None:
                raise _not_found("hyper parameter tuning job", parent["HyperParameterTuningJobName"], self.region,
                                 "hyper-parameter-tuning-job")
            parents += self._parent_trials(parent_record, request)
        try:
            os.makedirs(tuning_dir)
        except FileExistsError as err:
            raise ApiError(f"Resource Already Exists: Hyper Parameter Tuning Job with name {name} already "
                                 f"exists. Choose a different name.", code="ResourceInUse") from err
        stamp = container.now_iso()
        record = {key: value for key, value in request.items() if key != "Tags"}
        record.update(
            HyperParameterTuningJobArn=container.arn(self.region, "hyper-parameter-tuning-job", name),
            HyperParameterTuningJobStatus="InProgress", CreationTime=stamp, LastModifiedTime=stamp,
            TrainingJobStatusCounters={"Completed": 0, "InProgress": 0, "RetryableError": 0,
                                       "NonRetryableError": 0, "Stopped": 0},
            ObjectiveStatusCounters={"Succeeded": 0, "Pending": 0, "Failed": 0},
            _local={"python": self.python, "region": self.region,
                    "training_jobs_dir": os.path.join(self.root, "training-jobs"), "trials": [],
                    "parent_trials": parents},
        )
        container.write_json(os.path.join(tuning_dir, "request.json"), request)
        container.write_json(os.path.join(tuning_dir, "record.json"), record)
        self._create_tags("tuning-jobs", name, request)
        container.launch("tune", tuning_dir)

    def _parent_trials(self, parent: dict[str, Any], request: dict[str, Any]) -> list[dict[str, Any]]:
        metric = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
        out = []
        for trial in parent.get("_local", {}).get("trials", []):
            path = os.path.join(self._dir("training-jobs", trial), "record.json")
            values = [m["Value"] for m in (container.read_json(path, {}) or {}).get("FinalMetricDataList") or []
                      if m["MetricName"] == metric]
            out.append({"record": path, "value": values[-1] if values else None})
        return out

    def stop_tuning_job(self, name: str) -> None:
        record = self.describe_tuning_job(name)
        if record is None:
            raise _not_found("hyper parameter tuning job", name, self.region, "hyper-parameter-tuning-job")
        info = container.read_json(os.path.join(self._dir("tuning-jobs", name), "supervisor.json"), {})
        if container.alive(info.get("pid"), info.get("start")):
            os.kill(info["pid"], signal.SIGTERM)

    def list_tuning_trials(self, name: str) -> list[dict[str, Any]]:
        """ListTrainingJobsForHyperParameterTuningJob's summaries; a trial's objective is the last value of the
        objective metric in its FinalMetricDataList (None while it has none)."""
        record = self._record("tuning-jobs", name) or {}
        objective = ((record.get("HyperParameterTuningJobConfig") or {}).get("HyperParameterTuningJobObjective")
                     or {})
        out = []
        for trial in record.get("_local", {}).get("trials", []):
            job = self.describe_training_job(trial) or {}
            value = next((m["Value"] for m in job.get("FinalMetricDataList") or []
                          if m["MetricName"] == objective.get("MetricName")), None)
            metric = None if value is None else {"Type": objective.get("Type"),
                                                 "MetricName": objective["MetricName"], "Value": value}
            out.append({"TrainingJobName": trial, "TrainingJobArn": job.get("TrainingJobArn"),
                        "TrainingJobStatus": job.get("TrainingJobStatus"),
                        "TunedHyperParameters": job.get("_local", {}).get("tuned", {}),
                        "FinalHyperParameterTuningJobObjectiveMetric": metric})
        return out

    # ---------------------------------------------------------------------------------------------
    # models and endpoint configs: records only
    # ---------------------------------------------------------------------------------------------

    def _simple(self, kind: str, name: str) -> dict[str, Any] | None:
        return container.read_json(os.path.join(self.root, kind, f"{name}.json"))

    def _simple_save(self, kind: str, name: str, record: dict[str, Any]) -> None:
        os.makedirs(os.path.join(self.root, kind), exist_ok=True)
        container.write_json(os.path.join(self.root, kind, f"{name}.json"), record)

    def _simple_delete(self, kind: str, name: str) -> None:
        for path in (os.path.join(self.root, kind, f"{name}.json"), self._tags_path(kind, name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _simple_list(self, kind: str, name_contains: str) -> list[str]:
        folder = os.path.join(self.root, kind)
        if not os.path.isdir(folder):
            return []
        return sorted(f[:-5] for f in os.listdir(folder)
                      if f.endswith(".json") and not f.endswith(".tags.json") and name_contains in f[:-5])

    def describe_model(self, name: str) -> dict[str, Any] | None:
        return self._simple("models", name)

    def create_model(self, request: dict[str, Any]) -> None:
        record = {k: v for k, v in request.items() if k != "Tags"}
        record.update(ModelArn=container.arn(self.region, "model", request["ModelName"]),
                      CreationTime=container.now_iso())
        self._simple_save("models", request["ModelName"], record)
        self._create_tags("models", request["ModelName"], request)

    def delete_model(self, name: str) -> None:
        self._simple_delete("models", name)

    def list_models(self, name_contains: str) -> list[str]:
        return self._simple_list("models", name_contains)

    def describe_endpoint_config(self, name: str) -> dict[str, Any] | None:
        return self._simple("endpoint-configs", name)

    def create_endpoint_config(self, request: dict[str, Any]) -> None:
        for variant in request["ProductionVariants"]:
            if self.describe_model(variant["ModelName"]) is None:
                raise _not_found("model", variant["ModelName"], self.region, "model")
        record = {k: v for k, v in request.items() if k != "Tags"}
        record.update(EndpointConfigArn=container.arn(self.region, "endpoint-config", request["EndpointConfigName"]),
                      CreationTime=container.now_iso())
        self._simple_save("endpoint-configs", request["EndpointConfigName"], record)
        self._create_tags("endpoint-configs", request["EndpointConfigName"], request)

    def delete_endpoint_config(self, name: str) -> None:
        self._simple_delete("endpoint-configs", name)

    def list_endpoint_configs(self, name_contains: str) -> list[str]:
        return self._simple_list("endpoint-configs", name_contains)

    # ---------------------------------------------------------------------------------------------
    # endpoints: one loopback HTTP server per endpoint config; blue/green on one SO_REUSEPORT port
    # ---------------------------------------------------------------------------------------------

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        record = self._record("endpoints", name)
        if record is None:
            return None
        local = record["_local"]
        status = record["EndpointStatus"]
        if status == "Creating":
            state = self._server_state(name, record["EndpointConfigName"])
            if state == "ready":
                local["port"] = self._server_port(name, record["EndpointConfigName"])
                record["EndpointStatus"] = "InService"
            elif state == "dead":
                record.update(EndpointStatus="Failed", FailureReason=self._server_failure(name,
                                                                                         record["EndpointConfigName"]))
            self._save("endpoints", name, record)
        elif status == "Updating":
            pending = local["pending_config"]
            state = self._server_state(name, pending)
            if state == "ready":
                self._stop_server(name, record["EndpointConfigName"])
                record["EndpointConfigName"] = pending
                record["ProductionVariants"] = self._variants(pending)
                record["EndpointStatus"] = "InService"
                record.pop("FailureReason", None)
                local.pop("pending_config")
            elif state == "dead":  # SageMaker rolls a failed update back: the old config keeps serving
                record.update(EndpointStatus="InService", FailureReason=self._server_failure(name, pending))
                self._stop_server(name, pending)
                local.pop("pending_config")
            self._save("endpoints", name, record)
        elif status == "InService" and self._server_state(name, record["EndpointConfigName"]) == "dead":
            record.update(EndpointStatus="Failed",
                          FailureReason=self._server_failure(name, record["EndpointConfigName"]))
            self._save("endpoints", name, record)
        return record

    def _variants(self, config_name: str) -> list[dict[str, Any]]:
        config = self.describe_endpoint_config(config_name) or {}
        return [{"VariantName": v["VariantName"], "CurrentInstanceCount": v.get("InitialInstanceCount", 1),
                 "DesiredInstanceCount": v.get("InitialInstanceCount", 1),
                 "CurrentWeight": v.get("InitialVariantWeight", 1.0),
                 "DesiredWeight": v.get("InitialVariantWeight", 1.0)} for v in config.get("ProductionVariants", [])]

    def _server_dir(self, name: str, config_name: str) -> str:
        return os.path.join(self._dir("endpoints", name), config_name)

    def _server_state(self, name: str, config_name: str) -> str:
        """'ready' (serving), 'starting' (loading the model) or 'dead'."""
        folder = self._server_dir(name, config_name)
        info = container.read_json(os.path.join(folder, "server.json"), {}) or {}
        if not container.alive(info.get("pid"), info.get("start")):
            return "dead"
        return "ready" if os.path.exists(os.path.join(folder, "ready.json")) else "starting"

    def _server_port(self, name: str, config_name: str) -> int:
        return int(container.read_json(os.path.join(self._server_dir(name, config_name), "ready.json"))["port"])

    def _server_failure(self, name: str, config_name: str) -> str:
        lines = container.tail(os.path.join(self._server_dir(name, config_name), "server.log"), 6)
        return "The local model server exited: " + (" | ".join(lines) or "no output")

    def _stop_server(self, name: str, config_name: str) -> None:
        folder = self._server_dir(name, config_name)
        info = container.read_json(os.path.join(folder, "server.json"), {}) or {}
        if container.alive(info.get("pid"), info.get("start")):
            container.terminate_group(info["pid"])
        shutil.rmtree(folder, ignore_errors=True)

    def _start_server(self, name: str, config_name: str, port: int) -> None:
        """Fetch the model and code of the config's model, then start the inference server detached."""
        config = self.describe_endpoint_config(config_name)
        if config is None:
            raise _not_found("endpoint configuration", config_name, self.region, "endpoint-config")
        variants = config["ProductionVariants"]
        if len(variants) != 1:
            raise ApiError(f"endpoint config {config_name!r} has {len(variants)} variants; local mode serves "
                                 f"one variant per endpoint", code="ValidationException")
        model = self.describe_model(variants[0]["ModelName"])
        if model is None:
            raise _not_found("model", variants[0]["ModelName"], self.region, "model")
        folder = self._server_dir(name, config_name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        primary = model["PrimaryContainer"]
        env = primary.get("Environment") or {}
        model_dir = os.path.join(folder, "model")
        os.makedirs(model_dir)
        if primary.get("ModelDataUrl"):
            archive = os.path.join(folder, "model.tar.gz")
            container.fetch_file(primary["ModelDataUrl"], archive)
            container.unpack(archive, model_dir)
        code_dir = os.path.join(model_dir, "code")
        submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY") or ""
        if submit and not submit.startswith("/opt/ml/model"):
            # sagemaker_endpoint repacks the inference code into the model archive at deploy time, as the SDK does
            # (SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code): the serving toolkit imports from the model's code/
            # only. A model made without the repack names the code archive's URI instead; here that code is put in
            # code/ the same way (the real MXNet serving image would ignore it and serve the model's own code/).
            archive = os.path.join(folder, "sourcedir.tar.gz")
            container.fetch_file(env["SAGEMAKER_SUBMIT_DIRECTORY"], archive)
            shutil.rmtree(code_dir, ignore_errors=True)
            container.unpack(archive, code_dir)
        program = env.get("SAGEMAKER_PROGRAM") or "inference.py"
        if not os.path.isfile(os.path.join(code_dir, program)):
            raise ApiError(f"model {model['ModelName']!r}: the inference script {program!r} is in neither "
                                 f"the submitted code nor the model archive's code/ folder: set entry_point and "
                                 f"source_dir on the model", code="ValidationException")
        proc_env = {**os.environ, **{k: str(v) for k, v in env.items()}, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", container.PACKAGE, "serve", "--model-dir", model_dir, "--program", program,
                "--port", str(port), "--ready-file", os.path.join(folder, "ready.json")]
        with open(os.path.join(folder, "server.log"), "ab") as log:
            proc = subprocess.Popen(argv, cwd=code_dir, env=proc_env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        container.write_json(os.path.join(folder, "server.json"),
                             {"pid": proc.pid, "start": container.process_start_time(proc.pid)})
        with open(os.path.join(folder, "server.pid"), "w") as fh:
            fh.write(f"{proc.pid}\n")

    def create_endpoint(self, request: dict[str, Any]) -> None:
        name = request["EndpointName"]
        if self._record("endpoints", name) is not None:
            raise ApiError(f"Cannot create already existing endpoint "
                                 f"\"{container.arn(self.region, 'endpoint', name)}\".", code="ValidationException")
        os.makedirs(self._dir("endpoints", name), exist_ok=True)
        stamp = container.now_iso()
        record = {"EndpointName": name, "EndpointArn": container.arn(self.region, "endpoint", name),
                  "EndpointConfigName": request["EndpointConfigName"], "EndpointStatus": "Creating",
                  "ProductionVariants": self._variants(request["EndpointConfigName"]), "CreationTime": stamp,
                  "_local": {"python": self.python}}
        self._save("endpoints", name, record)
        self._create_tags("endpoints", name, request)
        self._start_server(name, request["EndpointConfigName"], 0)

    def update_endpoint(self, name: str, config_name: str) -> None:
        record = self.describe_endpoint(name)
        if record is None:
            raise _not_found("endpoint", name, self.region, "endpoint")
        if record["EndpointStatus"] != "InService":
            raise ApiError(f"Cannot update in-progress endpoint "
                                 f"\"{record['EndpointArn']}\".", code="ValidationException")
        port = record["_local"].get("port") or self._server_port(name, record["EndpointConfigName"])
        record["_local"]["pending_config"] = config_name
        record["EndpointStatus"] = "Updating"
        self._save("endpoints", name, record)
        self._start_server(name, config_name, port)

    def delete_endpoint(self, name: str) -> None:
        folder = self._dir("endpoints", name)
        if not os.path.isdir(folder):
            return
        for entry in os.listdir(folder):
            if os.path.isdir(os.path.join(folder, entry)):
                self._stop_server(name, entry)
        shutil.rmtree(folder, ignore_errors=True)

    def endpoint_url(self, name: str) -> str | None:
        record = self._record("endpoints", name)
        port = (record or {}).get("_local", {}).get("port")
        return f"http://127.0.0.1:{port}/invocations" if port else None

    def invoke_endpoint(self, name: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        record = self.describe_endpoint(name)
        if record is None:
            raise _not_found("endpoint", name, self.region, "endpoint")
        if record["EndpointStatus"] != "InService":
            raise ApiError(f"Endpoint {name} of account {container.ACCOUNT} not found or not InService "
                                 f"({record['EndpointStatus']}).", code="ValidationError")
        import urllib.error  # here: the other calls, one process each, need not pay for its import
        import urllib.request

        request = urllib.request.Request(self.endpoint_url(name), data=body, method="POST",
                                         headers={"Content-Type": content_type, "Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.read(), answer.headers.get("Content-Type", accept)
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            raise ApiError(f"Received server error ({err.code}) from model with message \"{detail}\".",
                                 code="ModelError") from err
        except OSError as err:
            raise ApiError(f"local endpoint {name} did not answer: {err}", code="ModelError") from err

    # ---------------------------------------------------------------------------------------------
    # tags: kept in each record
    # ---------------------------------------------------------------------------------------------

    def _locate(self, arn: str) -> tuple[str, str]:
        kind, _, name = arn.split(":", 5)[-1].partition("/")
        folders = {"training-job": "training-jobs", "hyper-parameter-tuning-job": "tuning-jobs",
                   "model": "models", "endpoint-config": "endpoint-configs", "endpoint": "endpoints"}
        return folders[kind], name

    def _tags_path(self, kind: str, name: str) -> str:
        if kind in ("models", "endpoint-configs"):
            return os.path.join(self.root, kind, f"{name}.tags.json")
        return os.path.join(self._dir(kind, name), "tags.json")

    def _create_tags(self, kind: str, name: str, request: dict[str, Any]) -> None:
        container.write_json(self._tags_path(kind, name), tag_dict(request.get("Tags")))

    def list_tags(self, arn: str) -> dict[str, str]:
        kind, name = self._locate(arn)
        return container.read_json(self._tags_path(kind, name), {}) or {}

    def update_tags(self, arn: str, to_set: dict[str, str], to_unset: list[str]) -> None:
        """DeleteTags of `to_unset`, then AddTags of `to_set`."""
        kind, name = self._locate(arn)
        tags = {k: v for k, v in self.list_tags(arn).items() if k not in to_unset}
        tags.update(to_set)
        container.write_json(self._tags_path(kind, name), tags)
