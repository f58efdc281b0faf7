"""nvidia_gpu_facts, the module through ansible-playbook with a replaying nvidia-smi (no GPU here: that part is
mocked). The parser and the health gate on real outputs are unit tests (tests/unit/test_nvidia_gpu_facts.py)."""
from __future__ import annotations

import stat
from pathlib import Path

from ansible.module_utils.dlfleet_nvidia import QUERY_FIELDS
from helpers import ROOT, run_task

FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"


def _replaying_nvidia_smi(tmp_path: Path, fixture: str, query_rc: int = 0) -> Path:
    """An nvidia-smi that prints a fixture's captured outputs (there is no GPU on this machine)."""
    script = tmp_path / "nvidia-smi"
    query = FIXTURES / fixture / "query.csv"
    query_action = f"cat {query}" if query.exists() and not query_rc else \
        f"echo 'Field \"ecc.mode.current\" is not a valid field to query.'; exit {query_rc or 2}"
    script.write_text(f"""#!/bin/sh
case "$1" in
  "") cat {FIXTURES / fixture / 'summary.txt'} ;;
  --query-gpu={','.join(QUERY_FIELDS)}) {query_action} ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_module_with_mocked_gpu_returns_facts_in_check_mode(tmp_path):
    smi = _replaying_nvidia_smi(tmp_path, "h200-device")
    run, result = run_task("nvidia_gpu_facts", {"nvidia_smi": str(smi), "expected_count": 1,
                                                "min_driver_version": "460.27.03"}, check=True)
    assert run.rc == 0, run.stdout[-2000:]
    assert result["changed"] is False
    facts = result["ansible_facts"]["nvidia_gpu"]
    assert facts["count"] == 1 and facts["names"] == ["NVIDIA H200"] and facts["source"] == "query"
    assert result["health_problems"] == []


def test_module_with_mocked_gpu_falls_back_to_the_table_and_flags_count(tmp_path):
    smi = _replaying_nvidia_smi(tmp_path, "a100-580", query_rc=6)
    run, result = run_task("nvidia_gpu_facts", {"nvidia_smi": str(smi), "expected_count": 8})
    assert run.rc == 0
    facts = result["nvidia_gpu"]
    assert facts["source"] == "summary" and facts["count"] == 2 and "not a valid field" in facts["query_error"]
    assert result["health_problems"] == [
        "2 GPU(s) visible, the instance type promises 8: a GPU fell off the bus or the driver lost it; "
        "replace the instance"]


def test_module_on_this_cpu_only_machine(tmp_path):
    missing = str(tmp_path / "no-nvidia-smi")
    run, result = run_task("nvidia_gpu_facts", {"nvidia_smi": missing})
    assert run.rc == 0 and result["nvidia_gpu"]["present"] is False and result["nvidia_gpu"]["count"] == 0
    run, result = run_task("nvidia_gpu_facts", {"nvidia_smi": missing, "ignore_missing": False})
    assert run.rc != 0 and "not found on this host" in result["msg"] and "ignore_missing=true" in result["msg"]
    run, result = run_task("nvidia_gpu_facts", {"nvidia_smi": missing, "expected_count": -1})
    assert run.rc != 0 and "expected_count=-1 is negative" in result["msg"]
