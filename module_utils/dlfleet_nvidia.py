# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NVIDIA GPU facts from nvidia-smi: parsing, gathering and the health gate. Standard library only,
Python 3.8+ (it runs on the hosts).

Used by the module `nvidia_gpu_facts`, and runnable alone on a GPU machine:

    python3 module_utils/dlfleet_nvidia.py                    # run nvidia-smi, print the facts (JSON)
    python3 module_utils/dlfleet_nvidia.py --from-dir DIR     # parse captured outputs (query.csv, summary.txt)
    python3 module_utils/dlfleet_nvidia.py --expected-count 8 --min-driver 470.57.02   # and the health gate

Two outputs are read. The CSV query (QUERY_COMMAND) gives one line per GPU with every field; the plain
`nvidia-smi` summary table gives the CUDA version (no query field carries it on every driver) and, when the
query is unavailable, the same facts from its table.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "memory.total",                              # MiB
    "memory.used",                               # MiB
    "driver_version",
    "persistence_mode",                          # Enabled / Disabled
    "ecc.mode.current",                          # Enabled / Disabled / [N/A]
    "ecc.errors.uncorrected.volatile.total",     # since the driver loaded
    "ecc.errors.uncorrected.aggregate.total",    # over the board's life
    "temperature.gpu",                           # degrees C
    "utilization.gpu",                           # %
    "utilization.memory",                        # %
    "power.draw",                                # W
)
QUERY_COMMAND = ["nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]
SUMMARY_COMMAND = ["nvidia-smi"]
MISSING = {"", "N/A", "[N/A]", "[Not Supported]", "Not Supported", "[Unknown Error]", "[Insufficient Permissions]"}


class NvidiaSmiError(ValueError):
    """nvidia-smi's output could not be understood; the message quotes it."""


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in MISSING else text


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.match(r"^-?\d+(\.\d+)?", text.strip())
    return float(match.group(0)) if match else None


def _int(text: str | None) -> int | None:
    number = _number(text)
    return None if number is None else int(number)


def _enabled(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.strip().lower() in ("enabled", "on")


def parse_query_csv(text: str, fields: tuple[str, ...] = QUERY_FIELDS) -> list[dict[str, Any]]:
    """One dict per GPU from `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(fields):
            raise NvidiaSmiError(f"expected {len(fields)} comma-separated fields, got {len(cells)}: {line!r}")
        raw = dict(zip(fields, cells))  # noqa: B905 - lengths checked above; hosts may run Python < 3.10
        gpus.append({
            "index": _int(raw.get("index")),
            "name": _value(raw.get("name", "")),
            "uuid": _value(raw.get("uuid", "")),
            "bus_id": _value(raw.get("pci.bus_id", "")),
            "memory_total_mib": _int(_value(raw.get("memory.total", ""))),
            "memory_used_mib": _int(_value(raw.get("memory.used", ""))),
            "driver_version": _value(raw.get("driver_version", "")),
            "persistence_mode": _enabled(_value(raw.get("persistence_mode", ""))),
            "ecc_mode": _enabled(_value(raw.get("ecc.mode.current", ""))),
            "ecc_uncorrected_volatile": _int(_value(raw.get("ecc.errors.uncorrected.volatile.total", ""))),
            "ecc_uncorrected_aggregate": _int(_value(raw.get("ecc.errors.uncorrected.aggregate.total", ""))),
            "temperature_c": _int(_value(raw.get("temperature.gpu", ""))),
            "utilization_gpu_pct": _int(_value(raw.get("utilization.gpu", ""))),
            "utilization_memory_pct": _int(_value(raw.get("utilization.memory", ""))),
            "power_draw_w": _number(_value(raw.get("power.draw", ""))),
        })
    return gpus


_HEADER = re.compile(r"Driver Version:\s*(?P<driver>[\d.]+)(?:.*?CUDA Version:\s*(?P<cuda>[\d.]+))?")
# "|   0  Tesla K80           Off  | 00000000:00:04.0 Off |                    0 |"
_ROW1 = re.compile(r"^\|\s*(?P<index>\d+)\s+(?P<name>.+?)\s+(?P<pm>On|Off)\s*\|\s*(?P<bus>\S+)\s+(?P<disp>\S+)\s*\|"
                   r"\s*(?P<ecc>\S+)\s*\|")
# "| N/A   62C    P0    84W / 149W |      0MiB / 11441MiB |    100%      Default |"
_ROW2 = re.compile(r"^\|\s*(?P<fan>\S+)\s+(?P<temp>\S+?)C?\s+(?P<perf>P\d+|\S+)\s+(?P<pwr>\S+?)W?\s*/\s*(?P<cap>\S+?)W?"
                   r"\s*\|\s*(?P<used>\d+)MiB\s*/\s*(?P<total>\d+)MiB\s*\|\s*(?P<util>\S+?)%?\s+(?P<compute>.+?)\s*\|")


def parse_summary(text: str) -> dict[str, Any]:
    """Driver, CUDA version and per-GPU rows from the plain `nvidia-smi` table (names may be cut short)."""
    header = _HEADER.search(text)
    if header is None:
        raise NvidiaSmiError(f"no 'Driver Version:' in nvidia-smi's output: {text[:300]!r}")
    gpus: list[dict[str, Any]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        first = _ROW1.match(line.strip())
        if not first or i + 1 >= len(lines):
            continue
        second = _ROW2.match(lines[i + 1].strip())
        if not second:
            continue
        gpus.append({
            "index": int(first["index"]),
            "name": first["name"].strip(),
            "bus_id": first["bus"],
            "persistence_mode": first["pm"] == "On",
            "ecc_uncorrected_volatile": _int(_value(first["ecc"])),
            "temperature_c": _int(_value(second["temp"])),
            "power_draw_w": _number(_value(second["pwr"])),
            "memory_used_mib": int(second["used"]),
            "memory_total_mib": int(second["total"]),
            "utilization_gpu_pct": _int(_value(second["util"])),
            "compute_mode": second["compute"].strip(),
        })
    return {"driver_version": header["driver"], "cuda_version": header["cuda"], "gpus": gpus}


def build_facts(query: list[dict[str, Any]] | None, summary: dict[str, Any] | None,
                error: str | None = None) -> dict[str, Any]:
    """The facts the module returns, from the query rows (preferred) and/or the summary table."""
    gpus = query if query else (summary or {}).get("gpus", [])
    driver = (summary or {}).get("driver_version") or next((g.get("driver_version") for g in gpus if g.get(
        "driver_version")), None)
    return {
        "present": bool(gpus),
        "count": len(gpus),
        "names": [g.get("name") for g in gpus],
        "memory_total_mib": [g.get("memory_total_mib") for g in gpus],
        "driver_version": driver,
        "cuda_version": (summary or {}).get("cuda_version"),
        "persistence_mode": [g.get("persistence_mode") for g in gpus],
        "ecc_uncorrected_volatile": [g.get("ecc_uncorrected_volatile") for g in gpus],
        "ecc_uncorrected_aggregate": [g.get("ecc_uncorrected_aggregate") for g in gpus],
        "temperature_c": [g.get("temperature_c") for g in gpus],
        "utilization_gpu_pct": [g.get("utilization_gpu_pct") for g in gpus],
        "source": "query" if query else ("summary" if summary else None),
        "error": error,
        "query_error": None,
        "gpus": gpus,
    }


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def health_problems(facts: dict[str, Any], expected_count: int | None = None,
                    min_driver_version: str | None = None) -> list[str]:
    """What makes a GPU host unfit: fewer/more GPUs than paid for, an old driver, uncorrected ECC errors."""
    problems = []
    if facts.get("error"):
        problems.append(f"nvidia-smi failed: {facts['error']}")
    if expected_count is not None and facts["count"] != expected_count:
        problems.append(f"{facts['count']} GPU(s) visible, the instance type promises {expected_count}: "
                        "a GPU fell off the bus or the driver lost it; replace the instance")
    driver = facts.get("driver_version")
    if min_driver_version and facts["count"] and (
            driver is None or version_tuple(driver) < version_tuple(min_driver_version)):
        problems.append(f"NVIDIA driver {driver} is older than the minimum {min_driver_version}: "
                        "use a newer DLAMI or upgrade the driver")
    for gpu in facts.get("gpus", []):
        errors = gpu.get("ecc_uncorrected_volatile")
        if errors:
            problems.append(f"GPU {gpu.get('index')} ({gpu.get('name')}, {gpu.get('bus_id')}) has {errors} "
                            "uncorrected ECC error(s) since the driver loaded: replace the instance")
    return problems


def _subprocess_runner(cmd: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)  # gather reads the code
    return proc.returncode, proc.stdout, proc.stderr


def gather(run: Callable[[list[str]], tuple[int, str, str]] = _subprocess_runner,
           nvidia_smi: str = "nvidia-smi") -> dict[str, Any]:
    """Run nvidia-smi (query, then the summary) and build the facts. No nvidia-smi: a CPU-only host."""
    path = nvidia_smi if os.sep in nvidia_smi else shutil.which(nvidia_smi)
    if not path or not os.access(path, os.X_OK):
        return build_facts(None, None)
    rc, out, err = run([path, *SUMMARY_COMMAND[1:]])
    if rc != 0:
        return build_facts(None, None, error=(err or out).strip() or f"exit code {rc}")
    summary = parse_summary(out)
    rc, out, err = run([path, *QUERY_COMMAND[1:]])
    if rc != 0:  # an older driver may not know a field: the summary table still has the facts
        facts = build_facts(None, summary)
        facts["query_error"] = (err or out).strip() or f"exit code {rc}"
        return facts
    return build_facts(parse_query_csv(out), summary)


def facts_from_dir(directory: str) -> dict[str, Any]:
    """Facts from captured outputs: DIR/summary.txt and DIR/query.csv (what capture.sh writes)."""
    with open(os.path.join(directory, "summary.txt")) as fh:
        summary = parse_summary(fh.read())
    query = None
    query_path = os.path.join(directory, "query.csv")
    if os.path.exists(query_path):
        with open(query_path) as fh:
            query = parse_query_csv(fh.read())
    return build_facts(query, summary)


# A command too, run by hand on a GPU host and by tests/fixtures/nvidia-smi/capture.sh: it prints and exits as a
# command does (the pylint disables below).
def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="NVIDIA GPU facts and health gate (JSON on stdout)")
    parser.add_argument("--from-dir", help="parse captured summary.txt/query.csv instead of running nvidia-smi")
    parser.add_argument("--nvidia-smi", default="nvidia-smi")
    parser.add_argument("--expected-count", type=int)
    parser.add_argument("--min-driver")
    args = parser.parse_args(argv)
    facts = facts_from_dir(args.from_dir) if args.from_dir else gather(nvidia_smi=args.nvidia_smi)
    problems = health_problems(facts, args.expected_count, args.min_driver)
    print(json.dumps({"nvidia_gpu": facts, "health_problems": problems}, indent=2))  # pylint: disable=ansible-bad-function
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))  # pylint: disable=ansible-bad-function
