# The local backend's wire: one call per process, `python -m sagemaker_local api <method>` with a JSON request on
# stdin ({"root", "python", "region", "args"}) and one JSON answer on stdout: {"result": ...} or
# {"error": {"message", "code"}}, the way SageMaker answers. Bytes (an endpoint's request and response body) travel
# base64-encoded. The AWS settings of the calling task come in the environment only, never on disk.
from __future__ import annotations

import base64
import json
import sys
import traceback
from typing import Any

from sagemaker_local.backend import ApiError, LocalSageMaker

# The calls the modules make: the methods of LocalSageMaker that answer them.
METHODS = (
    "describe_training_job", "create_training_job", "stop_training_job", "training_log_tail", "training_log_since",
    "describe_tuning_job", "create_tuning_job", "stop_tuning_job", "list_tuning_trials",
    "describe_model", "create_model", "delete_model", "list_models",
    "describe_endpoint_config", "create_endpoint_config", "delete_endpoint_config", "list_endpoint_configs",
    "describe_endpoint", "create_endpoint", "update_endpoint", "delete_endpoint", "endpoint_url", "invoke_endpoint",
    "list_tags", "update_tags",
)


def call(method: str, request: dict[str, Any]) -> Any:
    """Answer one call; raises ApiError as SageMaker would answer it."""
    if method not in METHODS:
        raise ApiError(f"unknown local call {method!r}: one of {', '.join(METHODS)}", code="InvalidAction")
    backend = LocalSageMaker(request["root"], request["python"], request["region"])
    args = dict(request.get("args") or {})
    if method == "invoke_endpoint":
        args["body"] = base64.b64decode(args.pop("body_b64"))
        body, content_type = backend.invoke_endpoint(**args)
        return {"body_b64": base64.b64encode(body).decode("ascii"), "content_type": content_type}
    return getattr(backend, method)(**args)


def main(method: str, stdin=None, stdout=None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        answer: dict[str, Any] = {"result": call(method, json.load(stdin))}
        code = 0
    except ApiError as err:
        answer, code = {"error": {"message": str(err), "code": err.code}}, 0
    except Exception as err:  # a fault of the runtime itself: its traceback goes to stderr, its summary to the caller
        traceback.print_exc()
        answer, code = {"error": {"message": f"the local runtime failed: {type(err).__name__}: {err}",
                                  "code": "InternalFailure"}}, 1
    stdout.write(json.dumps(answer, default=str) + "\n")
    stdout.flush()
    return code
