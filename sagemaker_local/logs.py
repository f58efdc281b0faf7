# A local training job's log, read a little at a time: the container log files algo-N.log of the job's work dir,
# from byte offsets (CloudWatch Logs holds these in AWS). One call reads at most `limit` lines: a caller that follows a
# job for days keeps only the cursor. Every line of a job on several instances (its InstanceCount) is prefixed with
# [algo-N], whichever files exist yet; the files are read in algo-N order.
from __future__ import annotations

import os
import re
from typing import Any

LOCAL_LOG_RE = re.compile(r"^(algo-\d+)\.log$")
MAX_READ_BYTES = 1 << 20   # the most one local read takes from one file


def algo_order(name: str) -> tuple[int, str]:
    """Sort key of a file name by its instance number: algo-2 before algo-10; other names last."""
    match = re.search(r"(?:^|/)algo-(\d+)(?:[-.]|$)", name)
    return (int(match.group(1)) if match else 1 << 30, name)


def _labelled(host: str, hosts: int, text: str) -> str:
    """One line as shown and saved: every line of a job on several instances (`hosts`, the job's InstanceCount)
    is prefixed with its instance, even while only one instance's log exists yet."""
    return f"[{host}] {text}" if hosts > 1 else text



def local_log_files(job_dir: str) -> list[str]:
    try:
        names = [n for n in os.listdir(job_dir) if LOCAL_LOG_RE.match(n)]
    except OSError:
        return []
    return sorted(names, key=algo_order)


def local_read(job_dir: str, cursor: dict[str, Any], limit: int, final: bool,
               hosts: int = 1) -> tuple[list[str], dict[str, Any], bool]:
    """New complete lines of the job's algo-N.log files after `cursor` (file -> byte offset), at most `limit`, each
    labelled when the job runs on `hosts` > 1 instances. A last line without its newline is left for the next read
    unless the job has ended (`final`)."""
    offsets = dict(cursor.get("offsets") or {})
    files = local_log_files(job_dir)
    lines: list[str] = []
    more = False
    for name in files:
        host = name[:-len(".log")]
        start = int(offsets.get(name, 0))
        try:
            with open(os.path.join(job_dir, name), "rb") as fh:
                fh.seek(start)
                data = fh.read(MAX_READ_BYTES)
                more = more or bool(fh.read(1))
        except OSError:
            continue
        end = data.rfind(b"\n") + 1
        if (final and not more) or (end == 0 and len(data) == MAX_READ_BYTES):
            end = len(data)   # the job's last words, or a line longer than one read: shown as it is
        taken = 0
        for raw in data[:end].splitlines(keepends=True):
            if len(lines) >= limit:
                more = True
                break
            lines.append(_labelled(host, hosts, raw.decode("utf-8", "replace").rstrip("\r\n")))
            taken += len(raw)
        offsets[name] = start + taken
    return lines, {"offsets": offsets}, more
