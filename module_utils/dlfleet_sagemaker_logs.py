# A SageMaker job's progress, read a little at a time: the status and secondary-status transitions of a training
# job, the counters and best objective of a tuning job, and the new lines of a training job's log since a cursor.
# The log is CloudWatch Logs in AWS (group /aws/sagemaker/TrainingJobs, one stream <job>/algo-N-<epoch> per
# instance, read with GetLogEvents and each stream's forward token, so that no line comes twice); a local job's log
# is read by the local runtime (sagemaker_local.logs) the same way. One call reads at most `limit` lines: a caller
# that follows a job for days keeps only the cursor. Every line of a job on several instances (its ResourceConfig's
# InstanceCount) is prefixed with [algo-N], whichever streams exist yet; the streams are read in algo-N order.
from __future__ import annotations

import re
from typing import Any

LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# The options of sagemaker_training_job and sagemaker_tuning_job that their action plugins act on.
FOLLOW_SPEC: dict[str, dict[str, Any]] = dict(
    follow=dict(type="bool", default=False),
    follow_interval=dict(type="int"),
    log_file=dict(type="path"),
)


def refuse_follow_without_plugin(module) -> None:
    """follow and log_file reach the module only when its action plugin is not loaded."""
    if module.params["follow"] or module.params["log_file"] or module.params["follow_interval"] is not None:
        module.fail_json(msg="follow, follow_interval and log_file are done by this module's action plugin, which is "
                             "not loaded: add playbooks/action_plugins to action_plugins in ansible.cfg (or "
                             "ANSIBLE_ACTION_PLUGINS), or drop these options")


def host_of_stream(stream: str) -> str:
    """'job/algo-2-1700000000' -> 'algo-2' (SageMaker's stream names); anything else is kept whole."""
    tail = stream.rsplit("/", 1)[-1]
    match = re.match(r"^(algo-\d+)(-\d+)?$", tail)
    return match.group(1) if match else tail


def algo_order(name: str) -> tuple[int, str]:
    """Sort key of a stream or file name by its instance number: algo-2 before algo-10; other names last."""
    match = re.search(r"(?:^|/)algo-(\d+)(?:[-.]|$)", name)
    return (int(match.group(1)) if match else 1 << 30, name)


def _labelled(host: str, hosts: int, text: str) -> str:
    """One line as shown and saved: every line of a job on several instances (`hosts`, the job's InstanceCount)
    is prefixed with its instance, even while only one instance's log exists yet."""
    return f"[{host}] {text}" if hosts > 1 else text


# ------------------------------------------------------------------------------------------------------------
# AWS: CloudWatch Logs
# ------------------------------------------------------------------------------------------------------------

def aws_log_streams(logs, job: str, call) -> list[str]:
    """The job's log streams (none before its instances start, or when the group does not exist yet)."""
    names: list[str] = []
    token = None
    while True:
        args = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job}/"}
        if token:
            args["nextToken"] = token
        page = call(logs.describe_log_streams, **args)
        if page is None:
            return []
        names += [s["logStreamName"] for s in page.get("logStreams", [])]
        token = page.get("nextToken")
        if not token:
            return sorted(names, key=algo_order)


def aws_read(logs, job: str, cursor: dict[str, Any], limit: int, call,
             hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
    """New lines of every stream of `job` after `cursor` (stream -> forward token), at most `limit` in all, each
    labelled when the job runs on `hosts` > 1 instances. Returns (lines, cursor, more): `more` says a stream had
    lines left over. `call(fn, **kwargs)` makes the retried call and answers None when the group or stream does
    not exist."""
    streams = aws_log_streams(logs, job, call)
    tokens = dict(cursor.get("tokens") or {})
    lines: list[str] = []
    more = False
    for stream in streams:
        host = host_of_stream(stream)
        while len(lines) < limit:
            args = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True,
                    "limit": min(10000, limit - len(lines))}
            if tokens.get(stream):
                args["nextToken"] = tokens[stream]
            page = call(logs.get_log_events, **args)
            if page is None:
                break
            events = page.get("events") or []
            lines += [_labelled(host, hosts, e.get("message", "").rstrip("\n")) for e in events]
            token = page.get("nextForwardToken")
            unchanged = token == tokens.get(stream)
            if token:
                tokens[stream] = token
            if not events or unchanged:
                break
        else:
            more = True
    return lines, {"tokens": tokens}, more


# ------------------------------------------------------------------------------------------------------------
# Status: what changed since the last look
# ------------------------------------------------------------------------------------------------------------

def training_news(record: dict[str, Any], seen: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Status lines the SageMaker SDK would print ('Starting - Preparing the instances for training'): each new
    secondary-status transition, and the job's status when it changes. Returns (messages, seen)."""
    messages: list[str] = []
    transitions = record.get("SecondaryStatusTransitions") or []
    shown = int(seen.get("transitions", 0))
    for item in transitions[shown:]:
        message = item.get("StatusMessage") or ""
        messages.append(f"{item.get('Status')} - {message}" if message else str(item.get("Status")))
    status = record.get("TrainingJobStatus", "Unknown")
    if status != seen.get("status"):
        extra = f": {record['FailureReason']}" if status == "Failed" and record.get("FailureReason") else ""
        messages.append(f"status {status}{extra}")
    return messages, {"transitions": len(transitions), "status": status}


def tuning_summary(record: dict[str, Any]) -> dict[str, Any]:
    counters = record.get("TrainingJobStatusCounters") or {}
    best = record.get("BestTrainingJob") or {}
    objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return {
        "status": record.get("HyperParameterTuningJobStatus", "Unknown"),
        "completed": int(counters.get("Completed", 0)),
        "in_progress": int(counters.get("InProgress", 0)),
        "stopped": int(counters.get("Stopped", 0)),
        "failed": int(counters.get("NonRetryableError", 0)) + int(counters.get("RetryableError", 0)),
        "best_training_job": best.get("TrainingJobName"),
        "best_metric": objective.get("MetricName"),
        "best_value": objective.get("Value"),
    }


def tuning_news(record: dict[str, Any], seen: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """One line each time the tuning job's counters, best objective or status change."""
    now = tuning_summary(record)
    if now == seen.get("summary"):
        return [], seen
    best = (f"; best {now['best_metric']} {now['best_value']} ({now['best_training_job']})"
            if now["best_training_job"] else "; no objective value yet")
    line = (f"{now['status']}: {now['completed']} completed, {now['in_progress']} in progress, "
            f"{now['stopped']} stopped, {now['failed']} failed{best}")
    return [line], {"summary": now}
