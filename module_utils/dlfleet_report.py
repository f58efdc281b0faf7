# Builds artifacts/<run>/report.md from what the run left in its artifacts directory: fleet.json (provision),
# <host>/host.json (configure), <host>/metrics.jsonl + curves.png (train), sagemaker/*.json (sagemaker) and
# teardown.json (teardown). Pure functions: read files, return Markdown; no AWS calls.
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.module_utils.dlfleet_sagemaker_curves import report_lines as sagemaker_curves_lines

NOTHING = "nothing"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    except (OSError, ValueError):
        return []
    return rows


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return out


def gather(artifacts: Path) -> dict[str, Any]:
    """Everything the report shows, read from the run's artifacts directory."""
    hosts = {}
    for child in sorted(p for p in artifacts.iterdir() if p.is_dir() and p.name != "sagemaker"):
        metrics = _metrics(child / "metrics.jsonl")
        info = _load(child / "host.json")
        if metrics or info:
            hosts[child.name] = {
                "metrics": metrics,
                "host": info or {},
                "config": _load(child / "config.json") or {},
                "curves": (child / "curves.png").exists(),
            }
    return {
        "fleet": _load(artifacts / "fleet.json") or {},
        "hosts": hosts,
        "training_job": _load(artifacts / "sagemaker" / "training_job.json"),
        "tuning_job": _load(artifacts / "sagemaker" / "tuning_job.json"),
        "evaluation": _load(artifacts / "sagemaker" / "evaluation.json"),
        "sagemaker_curves": sagemaker_curves_lines(artifacts / "sagemaker"),
        "teardown": _load(artifacts / "teardown.json"),
    }


def actual_cost(fleet: dict[str, Any], teardown: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """Instance-hours from each instance's launch to the teardown (or `now`), priced per type."""
    prices = (fleet.get("cost_estimate") or {}).get("prices_usd_per_hour") or {}
    end = _time((teardown or {}).get("finished")) or now
    hours = 0.0
    usd = 0.0
    for inst in fleet.get("instances", []):
        start = _time(inst.get("launch_time"))
        if not start:
            continue
        h = max(0.0, (end - start).total_seconds() / 3600)
        hours += h
        usd += h * float(prices.get(inst.get("instance_type"), 0))
    return {"instance_hours": round(hours, 3), "usd": round(usd, 4), "until": end.isoformat(timespec="seconds"),
            "torn_down": teardown is not None}


def _fleet_section(data: dict[str, Any]) -> list[str]:
    fleet = data["fleet"]
    if not fleet:
        return ["## Fleet", "", "No fleet.json: the provision play has not run for this run."]
    rows = [[i.get("instance_id"), i.get("instance_type"), i.get("availability_zone"),
             f"{i.get('gpu_count', 0)} x {i.get('gpu_model') or '-'}", i.get("gpu_memory_mib"),
             i.get("private_ip"), i.get("launch_time")] for i in fleet.get("instances", [])]
    image = fleet.get("image") or {}
    out = ["## Fleet", "",
           f"Fleet `{fleet.get('fleet')}` in {fleet.get('region')}, owner `{fleet.get('owner')}`, "
           f"ttl {fleet.get('ttl')}: {len(rows)} instance(s) from `{image.get('name', '?')}` "
           f"({image.get('image_id', '?')}), root volume {json.dumps(fleet.get('root_volume', {}))}.", ""]
    out += _table(["instance", "type", "AZ", "GPUs", "GPU memory (MiB)", "private IP", "launched"], rows)
    host_rows = []
    for name, host in data["hosts"].items():
        gpu = (host["host"].get("nvidia_gpu") or {})
        host_rows.append([name, gpu.get("count", 0), ", ".join(gpu.get("names") or []) or "CPU only",
                          gpu.get("driver_version") or "-", gpu.get("cuda_version") or "-",
                          host["host"].get("python") or "-"])
    if host_rows:
        out += ["", "GPU facts from the hosts (nvidia-smi):", ""]
        out += _table(["host", "GPUs", "model", "driver", "CUDA", "python env"], host_rows)
    quotas = fleet.get("quotas") or []
    if quotas:
        out += ["", "### Quota headroom", ""]
        out += _table(["quota", "name", "limit (vCPU)", "in use", "headroom"],
                      [[q.get("quota_code"), q.get("quota_name"), q.get("limit"), q.get("usage"), q.get("headroom")]
                       for q in quotas])
    return out


def _cost_section(data: dict[str, Any], now: datetime) -> list[str]:
    est = data["fleet"].get("cost_estimate") or {}
    if not est:
        return ["## Cost", "", "No estimate (no fleet.json)."]
    act = actual_cost(data["fleet"], data["teardown"], now)
    until = "teardown" if act["torn_down"] else "this report (the fleet is still up)"
    return ["## Cost", "",
            f"- Estimate: ${est.get('hourly_usd')}/h x {est.get('hours')} h = **${est.get('total_usd')}** "
            f"({est.get('market')}, prices of {est.get('region_priced')} as of {est.get('prices_as_of')}; "
            f"source: {est.get('price_source')}).",
            f"- Actual: {act['instance_hours']} instance-hours from launch to {until} = **${act['usd']}**."]


def _training_section(data: dict[str, Any]) -> list[str]:
    out = ["## Training", ""]
    if not data["hosts"]:
        return [*out, "No training metrics in this run."]
    rows = []
    for name, host in data["hosts"].items():
        m = host["metrics"]
        if not m:
            continue
        last = m[-1]
        ips = [r.get("images_per_sec", 0) for r in m]
        rows.append([name, host["config"].get("model", "-"), host["config"].get("dataset", "-"), len(m),
                     f"{last.get('train_loss', 0):.4f}", f"{last.get('val_acc', 0):.4f}",
                     f"{sum(ips) / len(ips):.1f}", f"{sum(r.get('seconds', 0) for r in m):.1f}"])
    out += _table(["host", "model", "data set", "epochs", "final train loss", "final val acc", "images/s",
                   "seconds"], rows)
    if any(r[2] == "synthetic" for r in rows):
        out += ["", "Data set **synthetic**: generated CIFAR-10-format data, not the real CIFAR-10; accuracies "
                    "show the pipeline works, not what the model reaches on CIFAR-10."]
    for name, host in data["hosts"].items():
        if host["curves"]:
            out += ["", f"![training curves of {name}]({name}/curves.png)"]
    return out


def _sagemaker_section(data: dict[str, Any]) -> list[str]:
    job, tune, ev = data["training_job"], data["tuning_job"], data["evaluation"]
    out = ["## SageMaker", ""]
    if not (job or tune or ev):
        return [*out, "The SageMaker play has not run for this run."]
    if job:
        out.append(f"- Training job `{job.get('name')}` ({job.get('mode')} mode, {job.get('instance_type')} x "
                   f"{job.get('instance_count')}): {job.get('status')}, **{job.get('billable_seconds')} billable "
                   f"seconds**, final metrics {json.dumps(job.get('final_metrics'))}, model "
                   f"`{job.get('model_artifact')}`.")
    if tune:
        out.append(f"- Tuning job `{tune.get('name')}`: best job `{tune.get('best_training_job')}`, objective "
                   f"{tune.get('objective_value')}, hyperparameters {json.dumps(tune.get('best_hyperparameters'))}.")
    if ev:
        kept = "kept (sagemaker_keep_endpoint)" if ev.get("endpoint_kept") else "deleted after scoring"
        synthetic = " (synthetic data)" if ev.get("synthetic_data") else ""
        out.append(f"- Endpoint `{ev.get('endpoint')}`: accuracy **{ev.get('accuracy')}** on {ev.get('count')} "
                   f"held-out test images{synthetic} ({ev.get('correct')} correct, {ev.get('images_per_second')} "
                   f"images/s); endpoint {kept}.")
        samples = ev.get("sample_predictions") or []
        if samples:
            out += ["", "Sample predictions:", ""]
            out += _table(["#", "label", "predicted", ""],
                          [[n, s.get("label"), s.get("predicted"), "ok" if s.get("correct") else "wrong"]
                           for n, s in enumerate(samples[:10], 1)])
    out += data.get("sagemaker_curves") or []
    return out


def _teardown_section(data: dict[str, Any]) -> list[str]:
    td = data["teardown"]
    out = ["## Teardown", ""]
    if not td:
        return [*out, "Not torn down yet: the fleet is still up. Run `ansible-playbook playbooks/teardown.yml` "
                      "(or let playbooks/reaper.yml remove it once its ttl is over)."]
    removed = td.get("removed") or []
    remaining = td.get("remaining") or []
    kinds: dict[str, int] = {}
    for r in removed:
        kinds[r.get("type", "?")] = kinds.get(r.get("type", "?"), 0) + 1
    out.append(f"Finished {td.get('finished')}: removed {len(removed)} resource(s) "
               f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}).")
    left = ", ".join(f"{r.get('type')} {r.get('id')}" for r in remaining) or NOTHING
    out.append(f"Left behind, tagged with the fleet: **{left}**.")
    s3 = td.get("s3") or {}
    if s3.get("kept"):
        out.append(f"S3: the run's data and model under `{s3.get('prefix')}` were kept (set `teardown_s3_prefix: "
                   "true` to remove them with the fleet).")
    elif s3:
        out.append(f"S3: removed {s3.get('removed_objects')} object(s) ({_mib(s3.get('removed_bytes'))}) under "
                   f"`s3://{s3.get('bucket')}/{s3.get('prefix')}`; left there: **{s3.get('remaining_objects')}**.")
    return out


def _mib(size: Any) -> str:
    return f"{int(size or 0) / 2**20:.1f} MiB"


def render(artifacts: Path, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    now = now or datetime.now(UTC)
    data = gather(artifacts)
    fleet = data["fleet"]
    lines = [f"# dlfleet run `{fleet.get('run') or artifacts.name}`", ""]
    for section in (_fleet_section(data), _cost_section(data, now), _training_section(data),
                    _sagemaker_section(data), _teardown_section(data)):
        lines += [*section, ""]
    summary = {
        "hosts": sorted(data["hosts"]),
        "instances": len(fleet.get("instances", [])),
        "torn_down": data["teardown"] is not None,
        "left_behind": len((data["teardown"] or {}).get("remaining") or []),
        "endpoint_accuracy": (data["evaluation"] or {}).get("accuracy"),
    }
    return "\n".join(lines).rstrip() + "\n", summary
