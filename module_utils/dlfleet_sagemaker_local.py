# The local backend (instance_type: local): a thin client of the local SageMaker runtime, the sagemaker_local
# package, which runs in the training environment (`local_python`). Each call is one `local_python -m
# sagemaker_local api <method>` with the request as JSON on stdin and SageMaker's answer (or error) as JSON on
# stdout; the jobs and endpoints it starts outlive the task. The methods, their arguments and their answers are the
# AWS backend's (dlfleet_sagemaker_backend.AwsBackend), so that every module runs one code path in both modes.
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from typing import Any

from ansible.module_utils.dlfleet_sagemaker import SageMakerError

RUNTIME = "sagemaker_local"
CALL_TIMEOUT = 900   # seconds one call may take (create_endpoint fetches the model; invoke waits up to 60 s)
STRATEGIES = ("Random", "Grid")   # what the local tuner samples by; the others fall back to Random


class LocalBackend:
    """The SageMaker calls of AwsBackend, answered by the local runtime: state under `local_dir`, the user's code,
    the job supervisors and the model servers run with `local_python`."""

    poll_seconds = 0.5   # longest pause between two Describe* calls while waiting
    look_seconds = 0.5   # pause between two looks of sagemaker_job_progress

    def __init__(self, module) -> None:
        self.module = module
        params = module.params
        self.root = os.path.abspath(os.path.expanduser(params["local_dir"]))
        python = params.get("local_python") or "python3"
        self.python = os.path.abspath(os.path.expanduser(python)) if os.sep in python else python
        self.region = module.region or "us-east-1"

    # plumbing -------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The interpreter that runs the user's code must exist; say which one and how to fix it."""
        found = shutil.which(self.python) if os.sep not in self.python else (
            self.python if os.access(self.python, os.X_OK) else None)
        if not found:
            raise SageMakerError(
                f"local_python {self.python!r} is not an executable Python: point it at the training "
                f"environment's interpreter (for example .venv-train/bin/python)", code="ValidationException")

    def strategy_warning(self, strategy: str) -> str | None:
        if strategy in STRATEGIES:
            return None
        return (f"local mode has no {strategy} model: its trials are sampled at random within the ranges (with "
                f"their scaling)")

    def child_env(self) -> dict[str, str]:
        """The runtime's environment: AWS settings the task was given travel along (in the environment only,
        never on disk), and so they reach the jobs and servers it starts."""
        env = dict(os.environ)
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = self.region
        params = self.module.params
        mapping = {"endpoint_url": "AWS_ENDPOINT_URL", "access_key": "AWS_ACCESS_KEY_ID",
                   "secret_key": "AWS_SECRET_ACCESS_KEY", "session_token": "AWS_SESSION_TOKEN",
                   "profile": "AWS_PROFILE"}
        for param, var in mapping.items():
            if params.get(param):
                env[var] = params[param]
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        return env

    def _call(self, method: str, **args: Any) -> Any:
        request = json.dumps({"root": self.root, "python": self.python, "region": self.region, "args": args})
        argv = [self.python, "-m", RUNTIME, "api", method]
        try:
            proc = subprocess.run(argv, input=request, capture_output=True, text=True, env=self.child_env(),
                                  timeout=CALL_TIMEOUT, check=False)
        except OSError as err:
            self.prepare()
            raise SageMakerError(f"local_python {self.python!r} could not be started: {err}",
                                 code="ValidationException") from err
        except subprocess.TimeoutExpired as err:
            raise SageMakerError(f"the local runtime's {method} took more than {CALL_TIMEOUT} s; see the job and "
                                 f"endpoint folders under {self.root}", code="InternalFailure") from err
        try:
            answer = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            answer = None
        if not isinstance(answer, dict):
            raise SageMakerError(self._broken(method, proc), code="InternalFailure")
        if "error" in answer:
            raise SageMakerError(answer["error"]["message"], code=answer["error"]["code"])
        return answer["result"]

    def _broken(self, method: str, proc: subprocess.CompletedProcess) -> str:
        err = (proc.stderr or "").strip()
        if f"No module named {RUNTIME}" in err:
            return (f"local_python {self.python!r} has no local SageMaker runtime ({RUNTIME}): make venv installs "
                    f"it into .venv-train; for another environment, link the project's {RUNTIME}/ folder into its "
                    f"site-packages and install {RUNTIME}/requirements.txt there")
        return f"the local runtime's {method} failed (exit {proc.returncode}): {err[-2000:] or 'no output'}"

    # training jobs ------------------------------------------------------------------------------------------

    def describe_training_job(self, name: str) -> dict[str, Any] | None:
        return self._call("describe_training_job", name=name)

    def create_training_job(self, request: dict[str, Any]) -> None:
        self._call("create_training_job", request=request)

    def stop_training_job(self, name: str) -> None:
        self._call("stop_training_job", name=name)

    def training_log_tail(self, name: str, lines: int) -> list[str]:
        return self._call("training_log_tail", name=name, lines=lines)

    def training_log_since(self, name: str, cursor: dict[str, Any], limit: int, final: bool,
                           hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
        lines, cursor, more = self._call("training_log_since", name=name, cursor=cursor, limit=limit, final=final,
                                         hosts=hosts)
        return lines, cursor, more

    # tuning jobs --------------------------------------------------------------------------------------------

    def describe_tuning_job(self, name: str) -> dict[str, Any] | None:
        return self._call("describe_tuning_job", name=name)

    def create_tuning_job(self, request: dict[str, Any]) -> None:
        self._call("create_tuning_job", request=request)

    def stop_tuning_job(self, name: str) -> None:
        self._call("stop_tuning_job", name=name)

    def list_tuning_trials(self, name: str) -> list[dict[str, Any]]:
        return self._call("list_tuning_trials", name=name)

    # models, endpoint configs, endpoints --------------------------------------------------------------------

    def describe_model(self, name: str) -> dict[str, Any] | None:
        return self._call("describe_model", name=name)

    def create_model(self, request: dict[str, Any]) -> None:
        self._call("create_model", request=request)

    def delete_model(self, name: str) -> None:
        self._call("delete_model", name=name)

    def list_models(self, name_contains: str) -> list[str]:
        return self._call("list_models", name_contains=name_contains)

    def describe_endpoint_config(self, name: str) -> dict[str, Any] | None:
        return self._call("describe_endpoint_config", name=name)

    def create_endpoint_config(self, request: dict[str, Any]) -> None:
        self._call("create_endpoint_config", request=request)

    def delete_endpoint_config(self, name: str) -> None:
        self._call("delete_endpoint_config", name=name)

    def list_endpoint_configs(self, name_contains: str) -> list[str]:
        return self._call("list_endpoint_configs", name_contains=name_contains)

    def describe_endpoint(self, name: str) -> dict[str, Any] | None:
        return self._call("describe_endpoint", name=name)

    def create_endpoint(self, request: dict[str, Any]) -> None:
        self._call("create_endpoint", request=request)

    def update_endpoint(self, name: str, config_name: str) -> None:
        self._call("update_endpoint", name=name, config_name=config_name)

    def delete_endpoint(self, name: str) -> None:
        self._call("delete_endpoint", name=name)

    def endpoint_url(self, name: str) -> str | None:
        return self._call("endpoint_url", name=name)

    def invoke_endpoint(self, name: str, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        answer = self._call("invoke_endpoint", name=name, body_b64=base64.b64encode(body).decode("ascii"),
                            content_type=content_type, accept=accept)
        return base64.b64decode(answer["body_b64"]), answer["content_type"]

    # tags ---------------------------------------------------------------------------------------------------

    def list_tags(self, arn: str) -> dict[str, str]:
        return self._call("list_tags", arn=arn)

    def update_tags(self, arn: str, to_set: dict[str, str], to_unset: list[str]) -> None:
        self._call("update_tags", arn=arn, to_set=to_set, to_unset=to_unset)
