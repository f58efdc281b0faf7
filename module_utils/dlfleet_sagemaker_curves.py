# The curves of a SageMaker training job, from the metrics SageMaker records: each metric definition's regex run
# over each line of the job's log, its first group taken as the value, in log order (what SageMaker does with the
# CloudWatch log in AWS, and what local mode does with the container log). The series are saved as JSON and
# plotted as a PNG, with matplotlib in the training environment (the controller never imports it, as the hosts'
# curves.png are drawn there too): this file is also the plot script, run as `python -c <this file> DATA PNG`.
# report_lines() is what report.md shows of them.
from __future__ import annotations

import json
import os
import re
import sys

CURVES_PNG = "training-curves.png"
METRICS_JSON = "training-curves.json"
MAX_POINTS = 100_000   # points kept per metric (a longer log keeps its first ones and says so)


def metric_series(lines, definitions: list[dict]) -> tuple[dict[str, list[float]], bool]:
    """{metric name: values in log order} of `definitions` ({name, regex}) over `lines`, and whether a series was
    cut at MAX_POINTS. Lines are read one at a time, so a long log is never held whole."""
    compiled = [(d["name"], re.compile(d["regex"])) for d in definitions]
    series: dict[str, list[float]] = {name: [] for name, _regex in compiled}
    cut = False
    for line in lines:
        for name, regex in compiled:
            for match in regex.finditer(line):
                try:
                    value = float(match.group(1))
                except (ValueError, IndexError, TypeError):
                    continue
                if len(series[name]) < MAX_POINTS:
                    series[name].append(value)
                else:
                    cut = True
    return {name: values for name, values in series.items() if values}, cut


LABEL_RE = re.compile(r"^\[algo-\d+\] ")


def first_instance(lines, instances: int | None = None):
    """The lines of the first instance. Every line of a job on several instances is prefixed with [algo-N] in the
    saved log, and its metrics are the first instance's (as local mode's FinalMetricDataList): only [algo-1] lines
    count, never an unlabelled one. `instances` is the job's InstanceCount; None tells it from the log's first
    line (labelled: several instances)."""
    several = None if instances is None else instances > 1
    for line in lines:
        if several is None:
            several = bool(LABEL_RE.match(line))
        if not several or line.startswith("[algo-1] "):
            yield line


def log_series(path: str, definitions: list[dict],
               instances: int | None = None) -> tuple[dict[str, list[float]], bool]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return metric_series(first_instance(fh, instances), definitions)


# ------------------------------------------------------------------------------------------------------------
# The report's part
# ------------------------------------------------------------------------------------------------------------

def _fmt(value: float) -> str:
    return f"{value:.4g}"


def report_lines(sagemaker_dir) -> list[str]:
    """Markdown for report.md: the curves' PNG and a line per metric (points, first, last, min, max); nothing when
    the SageMaker play left no curves."""
    try:
        with open(os.path.join(str(sagemaker_dir), METRICS_JSON)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    metrics = data.get("metrics") or {}
    if not metrics:
        return []
    out = ["", f"SageMaker curves of training job `{data.get('job')}` ({data.get('mode', '?')} mode): its metric "
               f"definitions over its log, as SageMaker records them.", ""]
    rows = [f"| {name} | {len(values)} | {_fmt(values[0])} | {_fmt(values[-1])} | {_fmt(min(values))} | "
            f"{_fmt(max(values))} |" for name, values in sorted(metrics.items()) if values]
    out += ["| metric | points | first | last | min | max |", "|---|---|---|---|---|---|", *rows]
    if os.path.exists(os.path.join(str(sagemaker_dir), CURVES_PNG)):
        out += ["", f"![SageMaker training curves](sagemaker/{CURVES_PNG})"]
    return out


# ------------------------------------------------------------------------------------------------------------
# The plot script (run by the training environment's Python; standard library and matplotlib only)
# ------------------------------------------------------------------------------------------------------------

def plot(data: dict, dest: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted((data.get("metrics") or {}).items())
    columns = min(3, len(metrics))
    rows = (len(metrics) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    panels = [a for row in axes for a in row]
    for index, (name, values) in enumerate(metrics):
        ax = panels[index]
        ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) <= 50 else None, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("log report")
        ax.grid(alpha=0.3)
    for ax in panels[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"SageMaker training job {data.get('job')} ({data.get('mode', '?')} mode)")
    fig.tight_layout()
    tmp = f"{dest}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=80, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, dest)


# This file is also the plotting command that sagemaker_job_curves runs in the training venv (python -c <source>):
# there it prints and exits as a command does (the pylint disables below).
def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python dlfleet_sagemaker_curves.py DATA.json OUT.png", file=sys.stderr)  # pylint: disable=ansible-bad-function
        return 2
    with open(argv[0]) as fh:
        plot(json.load(fh), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))  # pylint: disable=ansible-bad-function
