# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follow a host's training processes until every one has ended, in one task.

Each round is one call of the mxnet_train_progress module on the host: it waits (at most `interval` seconds) for a
new line in the followed log or for a process to end. New log lines are printed as they come; a process that ended
has its exit status read from its async job (async_status); a failure stops the follow on this host and, through a
stop file on the controller, on every other host of the play at its next round.

A loop in one action, not a recursive include: a run of days is thousands of rounds, and each round keeps nothing
but the line counts and a bounded tail of the log. (The recursive include that came before failed with
RecursionError after 246 rounds, about two hours at the 30 s poll.)
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import tempfile
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

# The options, exactly as DOCUMENTATION in the role's library/mxnet_train_follow.py gives them.
ARGUMENT_SPEC = dict(
    pid_dir=dict(type="path", required=True),
    jobs=dict(type="dict", required=True),
    logs=dict(type="dict", default={}),
    shown=dict(type="dict", default={}),
    follow=dict(type="str"),
    interval=dict(type="int", default=30),
    run=dict(type="str"),
    max_seconds=dict(type="int", default=0),
)
TAIL_LINES = 50            # log lines kept for the result (all of them are printed as they come)
STOP_FILE_MAX_AGE = 86400  # stop files of plays older than this are removed at the start of a follow


def stop_file_for(task_uuid: str, run: str) -> str:
    """The controller-side file by which one host's failure stops every host's follow of the same task (one task
    object, run for every host of the play; its id is new in each play and each include)."""
    safe = re.sub(r"[^A-Za-z0-9-]", "_", f"{run}-{task_uuid}")[:120]
    return os.path.join(tempfile.gettempdir(), f"dlfleet-follow-{safe}.stop")


def prune_stop_files(now: float) -> None:
    directory = tempfile.gettempdir()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("dlfleet-follow-") and entry.name.endswith(".stop"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STOP_FILE_MAX_AGE:
                        os.unlink(entry.path)


def describe(host: str, failed: list[dict]) -> list[str]:
    return [f"{host} {f['process']} (rc={f['rc']}, {f['msg']})" for f in failed]


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("pid_dir", "jobs", "logs", "shown", "follow", "interval", "run", "max_seconds"))
    clock = staticmethod(time.monotonic)

    def _progress(self, task_vars, args, running, shown):
        return self._execute_module(module_name="mxnet_train_progress", task_vars=task_vars, module_args={
            "pid_dir": args["pid_dir"], "running": running, "logs": args.get("logs") or {}, "shown": shown,
            "follow": args.get("follow") or None, "timeout": int(args.get("interval", 30))})

    def _job_status(self, task_vars, jid, async_dir):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "_async_dir": async_dir})

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]  # types and required: AnsibleActionFail
        jobs = dict(args["jobs"])
        if not args["pid_dir"] or not jobs:
            raise AnsibleActionFail("mxnet_train_follow needs pid_dir and jobs (process name -> async job id)")
        interval = 30 if args["interval"] is None else args["interval"]
        max_seconds = args["max_seconds"] or 0
        if interval < 1 or max_seconds < 0:
            raise AnsibleActionFail(f"interval={interval} must be at least 1 (seconds) and max_seconds={max_seconds} "
                                    "0 (no limit) or more")
        host = task_vars.get("inventory_hostname", "?")
        stop_file = stop_file_for(f"{self._task.get_play()._uuid}-{self._task._uuid}", str(args.get("run") or "run"))
        prune_stop_files(time.time())
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))

        running = list(jobs)
        shown = dict(args.get("shown") or {})
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        failed: list[dict] = []
        stopped_by = None
        rounds = 0
        started = self.clock()
        try:
            while running:
                if os.path.exists(stop_file):
                    with contextlib.suppress(OSError, ValueError), open(stop_file) as fh:
                        stopped_by = json.loads(fh.read())
                    stopped_by = stopped_by or {"host": "another host"}
                    break
                if max_seconds and self.clock() - started > max_seconds:
                    raise AnsibleActionFail(f"still running after {self.clock() - started:.0f} s ({rounds} rounds), "
                                            f"past the jobs' time limit: {', '.join(running)}")
                progress = self._progress(task_vars, args, running, shown)
                rounds += 1
                if progress.get("failed"):
                    raise AnsibleActionFail(f"following the training failed: {progress.get('msg', progress)}")
                stamp = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 10) % 10}"
                for line in progress.get("lines", []):
                    # stderr: the lines show as they come whatever the stdout callback (json output stays whole)
                    display.display(f"{stamp} {host} | {line}", stderr=True)
                    tail.append(line)
                shown = progress.get("counts", shown)
                still = list(progress.get("running", []))
                for name in progress.get("ended", []):
                    status = self._job_status(task_vars, jobs[name], async_dir)
                    if not status.get("finished"):
                        still.append(name)   # ended, but its job status is not written yet: look again next round
                        continue
                    if status.get("rc") != 0:
                        failed.append({"process": name, "rc": status.get("rc"),
                                       "msg": status.get("msg") or status.get("stderr") or ""})
                running = still
                if failed:
                    with contextlib.suppress(OSError), open(stop_file, "w") as fh:
                        fh.write(json.dumps({"host": host, "failures": describe(host, failed)}))
                    break
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

        result.update(changed=False, rounds=rounds, shown=shown, tail=list(tail), running=running,
                      failed_processes=failed)
        if failed:
            result["failed"] = True
            result["msg"] = "Training processes failed: " + "; ".join(describe(host, failed))
        elif stopped_by is not None:
            result["failed"] = True
            result["msg"] = ("Training processes failed: " + "; ".join(stopped_by.get("failures") or ["?"])
                             + f". The job cannot finish on {host} either: its processes are stopped too")
        return result
