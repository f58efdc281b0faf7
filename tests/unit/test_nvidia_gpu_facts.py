"""nvidia_gpu_facts, pure logic: the parser on real nvidia-smi outputs (fixtures name their source) and the health
gate. The module through ansible-playbook with a replaying nvidia-smi is in tests/emulator/."""
from __future__ import annotations

import json
import re

import pytest
from ansible.module_utils.dlfleet_nvidia import (
    QUERY_FIELDS,
    NvidiaSmiError,
    build_facts,
    facts_from_dir,
    gather,
    health_problems,
    parse_query_csv,
    parse_summary,
)
from helpers import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"

# What each real output shows, read off the fixture by eye:
# (dir, count, names, driver, cuda, persistence, memory MiB, temperature C, utilisation %, volatile ECC)
REAL = [
    ("k80-410", 1, ["Tesla K80"], "410.104", "10.0", [False], [11441], [62], [100], [0]),
    ("v100-525", 1, ["Tesla V100-SXM2..."], "525.105.17", "12.0", [True], [32768], [38], [0], [0]),
    ("a10g-470", 1, ["NVIDIA A10G"], "470.256.02", "11.4", [True], [22731], [25], [0], [0]),
    ("a10g-535", 1, ["NVIDIA A10G"], "535.247.01", "12.2", [False], [23028], [26], [0], [0]),
    ("a100-580", 2, ["NVIDIA A100-SXM4-40GB"] * 2, "580.126.09", "13.0", [True, True], [40960, 40960], [41, 37],
     [11, 7], [0, 0]),
    ("h100-535", 1, ["NVIDIA H100 80GB HBM3"], "535.161.08", "12.2", [True], [81559], [28], [0], [0]),
    ("h200-device", 1, ["NVIDIA H200"], "580.159.04", "13.0", [True], [143771], [34], [0], [0]),
]


@pytest.mark.parametrize(("directory", "count", "names", "driver", "cuda", "persistence", "memory", "temp", "util",
                          "ecc"), REAL, ids=[r[0] for r in REAL])
def test_summary_table_of_real_gpus(directory, count, names, driver, cuda, persistence, memory, temp, util, ecc):
    assert (FIXTURES / directory / "SOURCE").read_text().strip()
    summary = parse_summary((FIXTURES / directory / "summary.txt").read_text())
    facts = build_facts(None, summary)
    assert facts["count"] == count and facts["present"] is True
    assert facts["names"] == names
    assert (facts["driver_version"], facts["cuda_version"]) == (driver, cuda)
    assert facts["persistence_mode"] == persistence
    assert facts["memory_total_mib"] == memory
    assert facts["temperature_c"] == temp
    assert facts["utilization_gpu_pct"] == util
    assert facts["ecc_uncorrected_volatile"] == ecc


def test_query_csv_captured_on_a_real_gpu_agrees_with_its_table():
    directory = FIXTURES / "h200-device"
    fields = tuple((directory / "query-fields.txt").read_text().strip().split(","))
    assert fields == QUERY_FIELDS
    facts = facts_from_dir(str(directory))
    assert facts["source"] == "query"
    gpu = facts["gpus"][0]
    csv_line = (directory / "query.csv").read_text().strip().split(", ")
    assert gpu["uuid"] == csv_line[2] and gpu["uuid"].startswith("GPU-")
    assert gpu["bus_id"] == csv_line[3]
    assert gpu["power_draw_w"] == float(csv_line[-1])
    assert gpu["ecc_mode"] is True and gpu["ecc_uncorrected_aggregate"] == 0
    table = parse_summary((directory / "summary.txt").read_text())["gpus"][0]
    for key in ("name", "bus_id", "memory_total_mib", "persistence_mode", "ecc_uncorrected_volatile"):
        assert gpu[key] == table[key], key
    # the module's own run on that GPU, kept as it printed
    recorded = json.loads((directory / "gate.json").read_text())
    assert recorded["health_problems"] == []
    for key in ("count", "names", "driver_version", "cuda_version", "memory_total_mib"):
        assert recorded["nvidia_gpu"][key] == facts[key], key
    assert "promises 8" in json.loads((directory / "gate-expect-8.json").read_text())["health_problems"][0]


def test_capture_script_queries_the_fields_the_parser_reads():
    script = (FIXTURES / "capture.sh").read_text()
    fields = re.search(r"^QUERY_FIELDS=(\S+)$", script, re.M).group(1)
    assert tuple(fields.split(",")) == QUERY_FIELDS
    assert '--format=csv,noheader,nounits' in script


def test_missing_values_are_none_and_bad_lines_are_refused():
    line = (FIXTURES / "h200-device" / "query.csv").read_text().strip()
    cells = line.split(", ")
    cells[8], cells[9], cells[14] = "[N/A]", "[N/A]", "[Not Supported]"   # as on a GPU without ECC or power read
    gpu = parse_query_csv(", ".join(cells))[0]
    assert gpu["ecc_mode"] is None and gpu["ecc_uncorrected_volatile"] is None and gpu["power_draw_w"] is None
    with pytest.raises(NvidiaSmiError, match="expected 15"):
        parse_query_csv("NVIDIA H200, 143771\n")
    with pytest.raises(NvidiaSmiError, match="Driver Version"):
        parse_summary((FIXTURES / "driver-not-loaded" / "summary.txt").read_text())


def test_health_gate_on_real_outputs():
    k80 = facts_from_dir(str(FIXTURES / "k80-410"))
    assert health_problems(k80, expected_count=1, min_driver_version="410.104") == []
    old = health_problems(k80, expected_count=1, min_driver_version="460.27.03")
    assert len(old) == 1 and "410.104 is older than the minimum 460.27.03" in old[0]
    a100 = facts_from_dir(str(FIXTURES / "a100-580"))
    short = health_problems(a100, expected_count=8)
    assert len(short) == 1 and short[0].startswith("2 GPU(s) visible, the instance type promises 8")
    assert health_problems(a100) == []


def test_health_gate_catches_uncorrected_ecc_errors():
    cells = (FIXTURES / "h200-device" / "query.csv").read_text().strip().split(", ")
    cells[9] = "3"   # a real line with its volatile uncorrected ECC counter raised
    summary = parse_summary((FIXTURES / "h200-device" / "summary.txt").read_text())
    facts = build_facts(parse_query_csv(", ".join(cells)), summary)
    problems = health_problems(facts, expected_count=1, min_driver_version="460.27.03")
    assert len(problems) == 1 and "GPU 0 (NVIDIA H200, 00000000:00:06.0) has 3 uncorrected ECC" in problems[0]


def test_gather_without_a_driver_reports_the_error():
    message = (FIXTURES / "driver-not-loaded" / "summary.txt").read_text()
    facts = gather(lambda cmd: (9, message, ""), nvidia_smi="/bin/sh")
    assert facts["count"] == 0 and "couldn't communicate with the NVIDIA driver" in facts["error"]
    assert health_problems(facts)[0].startswith("nvidia-smi failed")
    assert gather(nvidia_smi="/nonexistent/nvidia-smi")["present"] is False
