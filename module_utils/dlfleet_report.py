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
        "sagemaker_prices": _load(artifacts / "sagemaker" / "prices.json"),
        "endpoint_record": _load(artifacts / "sagemaker" / "endpoint.json"),
    }


def actual_cost(fleet: dict[str, Any], teardown: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """Instance-hours from each instance's launch to the teardown (or `now`), priced per type; the EBS volumes
    each instance carries for the same hours."""
    est = fleet.get("cost_estimate") or {}
    prices = est.get("prices_usd_per_hour") or {}
    ebs_hourly = sum(float(v.get("usd_per_hour") or 0) for v in (est.get("ebs") or {}).get("volumes_per_instance", []))
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
            "torn_down": teardown is not None, "ebs_usd": round(hours * ebs_hourly, 6)}


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


def _usd(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}".rstrip("0").rstrip(".") if float(value) else "0"


def _source_cells(prices: list[dict[str, Any] | None]) -> list[str]:
    """The source and date columns for the prices behind one line (several when they differ)."""
    found = [p for p in prices if p]
    if not found:
        return ["no price", "-"]
    sources = sorted({str(p.get("source")) for p in found})
    dates = sorted({str(p.get("as_of")) for p in found})
    notes = sorted({str(p.get("note")) for p in found if p.get("note")})
    return ["; ".join(sources) + (f" ({'; '.join(notes)})" if notes else ""), ", ".join(dates)]


def _ebs_label(volumes: list[dict[str, Any]]) -> str:
    return " + ".join(f"{v.get('type')} {v.get('size')} GiB" + (f" {v['iops']} IOPS" if v.get("iops") else "")
                      for v in volumes) or "no volumes"


def _fleet_cost_rows(fleet: dict[str, Any], act: dict[str, Any], totals: list[tuple[Any, Any]]) -> list[list[Any]]:
    est = fleet.get("cost_estimate") or {}
    hours = est.get("hours")
    ec2 = est.get("ec2") or {}
    ec2_prices = ec2.get("prices") or {}
    counts = ", ".join(f"{n} x {t}" for t, n in (est.get("instances") or {}).items()) or "no instances"
    price = ", ".join(f"{t} {_usd(p)}/h" for t, p in (est.get("prices_usd_per_hour") or {}).items()) or "-"
    totals.append((ec2.get("total_usd", est.get("total_usd")), act["usd"]))
    rows = [[f"EC2 {counts} ({est.get('market')})", f"{_usd(ec2.get('total_usd', est.get('total_usd')))} for {hours} h",
             f"{_usd(act['usd'])} for {act['instance_hours']} instance-hours", price,
             *_source_cells(list(ec2_prices.values()) or [{"source": est.get("price_source"),
                                                           "as_of": est.get("prices_as_of")}])]]
    ebs = est.get("ebs")
    if ebs:
        volumes = ebs.get("volumes_per_instance") or []
        ebs_prices = [p for entry in (ebs.get("prices") or {}).values() for p in entry.values()]
        unit = ", ".join(f"{t} {_usd(p['usd'])}/{p['unit']}" for t, entry in (ebs.get("prices") or {}).items()
                         for p in entry.values() if p) or "-"
        totals.append((ebs.get("total_usd"), act["ebs_usd"]))
        rows.append([f"EBS {ebs.get('instances')} x ({_ebs_label(volumes)})",
                     f"{_usd(ebs.get('total_usd'))} for {hours} h",
                     f"{_usd(act['ebs_usd'])} for {act['instance_hours']} instance-hours", unit,
                     *_source_cells(ebs_prices)])
    return rows


def _hours_between(start: Any, end: Any, now: datetime) -> float | None:
    begin = _time(start)
    if not begin:
        return None
    return max(0.0, ((_time(end) or now) - begin).total_seconds() / 3600)


def _sagemaker_cost_rows(data: dict[str, Any], now: datetime, totals: list[tuple[Any, Any]]) -> list[list[Any]]:
    """Training, tuning and endpoint: estimate (max_run, max_jobs, the ttl as bounds) and actual (billable seconds,
    endpoint hours from creation to deletion), priced with sagemaker/prices.json."""
    prices = data.get("sagemaker_prices") or {}
    if not prices:
        return []
    rows = []
    train = prices.get("training") or {}
    price = train.get("price")
    rate = float(price["usd"]) if price else None
    label = f"{train.get('instance_type')} x {train.get('instance_count')}"
    if train.get("priced_as") != train.get("instance_type"):
        label += f", priced as {train.get('priced_as')}"
    job = data.get("training_job")
    count = int(train.get("instance_count") or 1)
    max_hours = int(train.get("max_run_seconds") or 0) / 3600
    if job:
        billable = job.get("billable_seconds")
        totals.append((rate * count * max_hours if rate is not None else None,
                       rate * count * billable / 3600 if rate is not None and billable is not None else None))
        actual = (f"{_usd(rate * count * billable / 3600)} for {billable} billable s x {count}"
                  if rate is not None and billable is not None else "not recorded")
        rows.append([f"SageMaker training job ({label})",
                     f"{_usd(rate * count * max_hours) if rate is not None else '-'} for max_run "
                     f"{train.get('max_run_seconds')} s", actual, f"{_usd(rate)}/h" if price else "-",
                     *_source_cells([price])])
    tune = prices.get("tuning") or {}
    tuning = data.get("tuning_job")
    if tune.get("enabled") and tuning:
        trials = tuning.get("trials") or []
        seconds = [t.get("billable_seconds") for t in trials]
        jobs = int(tune.get("max_jobs") or 0)
        totals.append((rate * jobs * max_hours if rate is not None else None,
                       rate * sum(seconds) / 3600 if rate is not None and trials and None not in seconds else None))
        actual = (f"{_usd(rate * sum(seconds) / 3600)} for {sum(seconds)} billable s of {len(trials)} trials"
                  if rate is not None and trials and None not in seconds
                  else "not recorded (the trials' billable seconds)")
        rows.append([f"SageMaker tuning job ({jobs} trials, {label})",
                     f"{_usd(rate * jobs * max_hours) if rate is not None else '-'} for {jobs} x max_run", actual,
                     f"{_usd(rate)}/h" if price else "-", *_source_cells([price])])
    endpoint = prices.get("endpoint") or {}
    record = data.get("endpoint_record")
    if record:
        host = endpoint.get("price")
        host_rate = float(host["usd"]) if host else None
        n = int(endpoint.get("instance_count") or 1)
        hours = _hours_between(record.get("created"), record.get("deleted"), now)
        until = "deletion" if record.get("deleted") else "this report (still up)"
        bound = float(endpoint.get("bound_hours") or 0)
        totals.append((host_rate * n * bound if host_rate is not None else None,
                       host_rate * n * hours if host_rate is not None and hours is not None else None))
        elabel = (f"{endpoint.get('instance_type')} x {n}"
                  + (f", priced as {endpoint.get('priced_as')}"
                     if endpoint.get("priced_as") != endpoint.get("instance_type") else ""))
        rows.append([f"SageMaker endpoint ({elabel})",
                     f"{_usd(host_rate * n * bound) if host_rate is not None else '-'} for {bound:g} h (the ttl)",
                     f"{_usd(host_rate * n * hours)} for {hours:.4f} h, creation to {until}"
                     if host_rate is not None and hours is not None else "not recorded",
                     f"{_usd(host_rate)}/h" if host else "-", *_source_cells([host])])
    return rows


def _total(values: list[Any]) -> str:
    """The sum of the priced items, saying when some had no price."""
    known = [float(v) for v in values if v is not None]
    missing = len(values) - len(known)
    return f"**{_usd(sum(known))}**" + (f" ({missing} item(s) without a price)" if missing else "")


def _cost_section(data: dict[str, Any], now: datetime) -> list[str]:
    est = data["fleet"].get("cost_estimate") or {}
    out = ["## Cost", ""]
    rows: list[list[Any]] = []
    totals: list[tuple[Any, Any]] = []
    if est:
        act = actual_cost(data["fleet"], data["teardown"], now)
        until = "teardown" if act["torn_down"] else "this report (the fleet is still up)"
        out += [f"- Estimate: ${est.get('hourly_usd')}/h x {est.get('hours')} h = **${est.get('total_usd')}** "
                f"({est.get('market')}, EC2 and EBS, prices of {est.get('region_priced')} as of "
                f"{est.get('prices_as_of')}; source: {est.get('price_source')}).",
                f"- Actual: {act['instance_hours']} instance-hours from launch to {until} = **${act['usd']}**."]
        rows += _fleet_cost_rows(data["fleet"], act, totals)
    else:
        out.append("No estimate for the fleet (no fleet.json).")
    rows += _sagemaker_cost_rows(data, now, totals)
    if rows:
        rows.append(["**Total**", *(_total([t[i] for t in totals]) for i in (0, 1)), "", "", ""])
        out += ["", *_table(["item", "estimate (USD)", "actual (USD)", "price (USD)", "price source", "price date"],
                            rows)]
    reasons = sorted({r for r in (est.get("fallback_reason"),
                                  (data.get("sagemaker_prices") or {}).get("fallback_reason")) if r})
    if reasons:
        out += ["", f"Prices from the dated table: {'; '.join(reasons)}."]
    return out


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
