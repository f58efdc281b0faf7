#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Runs on the training host with its system python (3.6 on the oldest DLAMIs): no newer syntax here.
DOCUMENTATION = r"""
module: mxnet_train_progress
short_description: Wait for the next sign of progress of running training processes, and report it
version_added: "1.0.0"
description:
  - Waits, for at most O(timeout) seconds, until the log named by O(follow) gains a line, or until one of the
    processes in O(running) ends; then returns the new complete lines of every log in O(logs) and which
    processes still run.
  - A process is known by its pid file C(<pid_dir>/<name>.pid), holding C(<pid> <start time>) (the start time is
    field 22 of C(/proc/<pid>/stat)). It runs while that pid exists with that start time, so that a recycled pid
    never counts. A missing pid file counts as not running.
  - One call replaces a status check per process, a read per log and a wait, so a play that follows a
    training job round after round costs one remote call per host and round.
  - Reads only.
options:
  pid_dir:
    description: Directory of the processes' pid files.
    type: path
    required: true
  running:
    description: Names of the processes believed to run; the wait ends as soon as one of them is gone.
    type: list
    elements: str
    required: true
  logs:
    description: Logs to report, by name (a log that does not exist yet has no lines).
    type: dict
    default: {}
  shown:
    description: Lines of each log already reported, by name; only the lines after them are returned.
    type: dict
    default: {}
  follow:
    description: Name (in O(logs)) of the log whose next line ends the wait. Without it, only the end of a
      process or the timeout ends the wait.
    type: str
  timeout:
    description: Longest wait, in seconds.
    type: int
    default: 30
  interval:
    description: Seconds between two looks at the pid files and the followed log.
    type: float
    default: 0.5
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details: Reads only; there is never a change to show.
  platform:
    platforms: posix
author:
  - dlfleet maintainers (@dlfleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Wait for the next line of the trainer's log, at most 30 seconds
  mxnet_train_progress:
    pid_dir: /home/ubuntu/dlfleet/runs/cifar/pids
    running: [train]
    logs:
      train: /home/ubuntu/dlfleet/runs/cifar/logs/train.log
    shown:
      train: 12
    follow: train
    timeout: 30
  register: progress

- name: Show what the trainer wrote
  ansible.builtin.debug:
    msg: "{{ progress.lines }}"
"""

RETURN = r"""
running:
  description: The processes of O(running) that still run.
  returned: always
  type: list
  elements: str
  sample: [scheduler, server-0]
ended:
  description: The processes of O(running) that no longer run.
  returned: always
  type: list
  elements: str
  sample: [worker-0]
lines:
  description: The new complete lines of the logs, each prefixed with the log's name and a colon.
  returned: always
  type: list
  elements: str
  sample: ["train: epoch 3/30  train-loss 1.0412  train-acc 0.6301  val-acc 0.6012  2210.4 img/s  22.6 s"]
counts:
  description: Complete lines in each log now, by name (pass it back as O(shown) next time).
  returned: always
  type: dict
  sample: {train: 17}
waited:
  description: Seconds waited.
  returned: always
  type: float
  sample: 4.5
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule


def start_time(pid):
    """Field 22 of /proc/PID/stat (after the command name, which may hold spaces), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def is_running(pid_dir, name):
    try:
        with open(os.path.join(pid_dir, name + ".pid")) as fh:
            parts = fh.read().split()
    except OSError:
        return False
    if len(parts) < 2 or not parts[0].isdigit():
        return False
    return start_time(int(parts[0])) == parts[1]


def complete_lines(path):
    """The log's complete lines (a line still being written is left for the next look)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").split("\n")[:-1]


def count_lines(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except OSError:
        return 0


def wait(params, clock=time.monotonic, sleep=time.sleep):
    """Wait for a new line in the followed log or the end of a running process; return (running, ended, waited)."""
    started = clock()
    follow = params["follow"]
    follow_path = params["logs"].get(follow) if follow else None
    seen = int(params["shown"].get(follow, 0)) if follow else 0
    while True:
        running = [n for n in params["running"] if is_running(params["pid_dir"], n)]
        ended = [n for n in params["running"] if n not in running]
        waited = clock() - started
        if ended or waited >= params["timeout"] or (follow_path and count_lines(follow_path) > seen):
            return running, ended, round(waited, 3)
        sleep(params["interval"])


def report(params, running, ended, waited):
    lines, counts = [], {}
    for name in sorted(params["logs"]):
        all_lines = complete_lines(params["logs"][name])
        counts[name] = len(all_lines)
        start = min(int(params["shown"].get(name, 0)), len(all_lines))
        lines.extend(f"{name}: {line}" for line in all_lines[start:])
    return {"changed": False, "running": running, "ended": ended, "lines": lines, "counts": counts,
            "waited": waited}


def main():
    module = AnsibleModule(
        argument_spec={
            "pid_dir": {"type": "path", "required": True},
            "running": {"type": "list", "elements": "str", "required": True},
            "logs": {"type": "dict", "default": {}},
            "shown": {"type": "dict", "default": {}},
            "follow": {"type": "str"},
            "timeout": {"type": "int", "default": 30},
            "interval": {"type": "float", "default": 0.5},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["follow"] and params["follow"] not in params["logs"]:
        module.fail_json(msg=f"follow={params['follow']} names no log; logs has {sorted(params['logs'])}. "
                             "Name one of them, or leave follow out.")
    if params["timeout"] < 0 or params["interval"] <= 0:
        module.fail_json(msg=f"timeout={params['timeout']} must be 0 or more and interval={params['interval']} "
                             "more than 0 (seconds)")
    module.exit_json(**report(params, *wait(params)))


if __name__ == "__main__":
    main()
