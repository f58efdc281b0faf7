# The SageMaker modules' results: Describe* answers as JSON-safe return values, and waiting for a terminal
# status with progress.
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from ansible.module_utils.dlfleet_sagemaker import SageMakerError
from ansible.module_utils.dlfleet_sagemaker_requests import decode_hyperparameters

# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """Describe* answers with datetimes (AWS) or ISO strings (local) as JSON-safe data."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not str(k).startswith("_") and k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def snake(record: dict[str, Any], keep: tuple[str, ...] = ("HyperParameters", "StaticHyperParameters",
                                                           "Environment", "Tags", "TunedHyperParameters")
          ) -> dict[str, Any]:
    from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
    return camel_dict_to_snake_dict(plain(record), ignore_list=list(keep))


def final_metrics(describe: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in describe.get("FinalMetricDataList") or []}


def training_result(describe: dict[str, Any] | None, tags: dict[str, str] | None = None,
                    log_tail: list[str] | None = None, transitions: list[str] | None = None) -> dict[str, Any]:
    if not describe:
        return {"training_job": {}, "model_artifact": None, "final_metrics": {}, "billable_seconds": None,
                "status": None, "secondary_status_transitions": [], "log_tail": log_tail or []}
    job = snake(describe)
    job["tags"] = tags or {}
    job["hyperparameters"] = decode_hyperparameters(describe.get("HyperParameters"))
    job.pop("hyper_parameters", None)
    return {
        "training_job": job,
        "model_artifact": (describe.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        "final_metrics": final_metrics(describe),
        "billable_seconds": describe.get("BillableTimeInSeconds"),
        "status": describe.get("TrainingJobStatus"),
        "secondary_status_transitions": [
            f"{t.get('Status')}: {t.get('StatusMessage', '')}".rstrip(": ")
            for t in describe.get("SecondaryStatusTransitions") or []],
        "status_changes": transitions or [],
        "log_tail": log_tail or [],
    }


# --------------------------------------------------------------------------------------------------
# Waiting with progress
# --------------------------------------------------------------------------------------------------

def wait_for(describe, status_of, terminal: tuple[str, ...], timeout: int, poll: float,
             what: str, log=None) -> tuple[dict[str, Any], list[str]]:
    """Poll `describe()` until `status_of(record)` is terminal. Returns the last record and every status
    change seen, each as 'status[/secondary]: message'. Times out with a message naming the state."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    record: dict[str, Any] = {}
    pause = min(poll, 1.0)
    while True:
        record = describe() or {}
        status = status_of(record)
        if not seen or seen[-1] != status:
            seen.append(status)
            if log:
                log(f"{what}: {status}")
        if status.split("/")[0] in terminal:
            return record, seen
        if time.monotonic() > deadline:
            raise SageMakerError(
                f"{what} still {status} after wait_timeout={timeout}s: raise wait_timeout, or set wait: false "
                f"and check on it later", code="Timeout")
        time.sleep(pause)
        pause = min(poll, pause * 2)  # quick first looks, then no more than one call per `poll` seconds


def training_status(record: dict[str, Any]) -> str:
    status = record.get("TrainingJobStatus", "Unknown")
    secondary = record.get("SecondaryStatus")
    return f"{status}/{secondary}" if secondary and secondary != status else status
