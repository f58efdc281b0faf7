# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a SageMaker training job and, with `follow: true`, print its progress while it runs, as the SageMaker SDK's
`fit(logs=True)` does: each secondary-status transition ("Starting - Preparing the instances for training"), each
status change, and each new line of the job's log (CloudWatch Logs in AWS, the container log in local mode), on
stderr with the time it was shown. With `log_file`, the whole log is saved on the controller.

The module is called twice: once with wait=false (create the job, or find it), and once more when the job has
ended (the usual result, at once). In between, a loop in this one task calls sagemaker_job_progress, which waits
up to `follow_interval` seconds for something new and returns it with a cursor (CloudWatch forward tokens, or
byte offsets of the local log), so that no line is shown twice. Each round keeps only the cursor and a bounded
tail; the log goes to the file line by line. The loop fails past wait_timeout. Once the job has ended, the log is
read again one poll later (at most FINAL_READS times) until a read brings no new line: CloudWatch Logs shows a line
some seconds after it was written, so the last lines (the final metrics) often come after the job's end. The job's
last status lines are shown after them.

Without follow and log_file, in check mode, with wait=false or with state=absent, the module runs as it is.
"""
from __future__ import annotations

import collections
import contextlib
import filecmp
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

TAIL_LINES = 20          # log lines kept for the result (all of them are shown and saved as they come)
ROUND_LINES = 1000       # most log lines one round brings back
LOCAL_TYPES = ("local", "local_gpu")
FOLLOW_ARGS = ("follow", "follow_interval", "log_file")
AWS_ARGS = ("region", "aws_region", "endpoint_url", "aws_endpoint_url", "access_key", "aws_access_key_id",
            "aws_access_key", "secret_key", "aws_secret_access_key", "aws_secret_key", "session_token",
            "aws_session_token", "profile", "aws_profile", "validate_certs", "aws_ca_bundle", "aws_config")
TERMINAL = ("Completed", "Failed", "Stopped")
FINAL_READS = 6          # most reads of the log after the job has ended, each one poll after the last
FINAL_POLL = 10          # seconds between them in AWS (as the SageMaker SDK's poll); a local log is whole at once
DEFAULT_WAIT_TIMEOUT = 86400


def whole_seconds(option: str, value, default: int) -> int:
    """An option in whole seconds, 0 or more; only a missing value takes the default (0 stays 0)."""
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        number = int(value) if isinstance(value, (int, float)) else int(str(value).strip())
    except (TypeError, ValueError):
        raise AnsibleActionFail(f"{option}={value!r} is not a whole number of seconds: give an integer, 0 or "
                                f"more") from None
    if number < 0:
        raise AnsibleActionFail(f"{option}={number} is negative: give 0 or more seconds")
    return number


def stamp() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 10) % 10}"


class LogFile:
    """The job's log, written line by line next to `path` and put in place at the end only when it differs from
    what is there (a second run of a finished job changes nothing)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lines = 0
        self._fh = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.tmp = f"{path}.tmp-{os.getpid()}"
            self._fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in commit/discard

    def write(self, line: str) -> None:
        self.lines += 1
        if self._fh:
            self._fh.write(line + "\n")

    def commit(self) -> bool:
        if not self._fh:
            return False
        self._fh.close()
        self._fh = None
        if os.path.exists(self.path) and filecmp.cmp(self.tmp, self.path, shallow=False):
            os.unlink(self.tmp)
            return False
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return True

    def discard(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    KIND = "training"
    MODULE = "sagemaker_training_job"
    clock = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def _module(self, task_vars: dict, args: dict) -> dict:
        return self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars)

    def _progress(self, task_vars: dict, args: dict) -> dict:
        return self._execute_module(module_name="sagemaker_job_progress", module_args=args, task_vars=task_vars)

    def _show(self, name: str, text: str) -> None:
        # stderr: the lines show as they come whatever the stdout callback (json output stays whole)
        display.display(f"{stamp()} {name} | {text}", stderr=True)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        follow = boolean(args.pop("follow", False), strict=False)
        interval = args.pop("follow_interval", None)
        log_file = args.pop("log_file", None)
        log_file = os.path.expanduser(str(log_file)) if log_file else None
        following = ((follow or log_file) and args.get("state", "present") == "present"
                     and boolean(args.get("wait", True), strict=False) and not self._task.check_mode)
        try:
            max_seconds = whole_seconds("wait_timeout", args.get("wait_timeout"), DEFAULT_WAIT_TIMEOUT)
            if "wait_timeout" in args:
                args["wait_timeout"] = max_seconds
            if not following:
                result.update(self._module(task_vars, args))
                return result
            local = args.get("instance_type") in LOCAL_TYPES
            interval = whole_seconds("follow_interval", interval, 10 if local else 30)
            started = self._module(task_vars, {**args, "wait": False})
            if started.get("failed"):
                result.update(started)
                return result
            followed = self.follow(task_vars, args, started.get("status"), interval, max_seconds, log_file, follow)
            final = self._module(task_vars, args)
            final["changed"] = bool(started.get("changed") or final.get("changed") or followed["log_written"])
            for key in ("diff", "source"):
                if key in started:
                    final[key] = started[key]
            final["followed"] = followed
            result.update(final)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def follow(self, task_vars: dict, args: dict, status: str | None, interval: int, max_seconds: int,
               log_file: str | None, show: bool) -> dict:
        """Rounds of sagemaker_job_progress until the job has ended and its log is read to the end; returns what was
        shown and saved."""
        name = args["name"]
        common = {k: args[k] for k in AWS_ARGS if k in args}
        common.update({k: args[k] for k in ("instance_type", "local_dir", "local_python") if k in args})
        # a job that had ended before this task is not replayed on the screen; its log is still saved
        live = show and status not in TERMINAL
        log = LogFile(log_file if self.KIND == "training" else None)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        cursor: dict = {}
        seen: dict = {}
        rounds = 0
        warned = False
        begun = self.clock()
        progress: dict = {}
        ending: list[str] = []   # the job's last status lines, shown after its last log lines
        after_end = 0            # reads since the job was seen ended with nothing left over
        try:
            while True:
                left = max_seconds - (self.clock() - begun)
                progress = self._progress(task_vars, {**common, "kind": self.KIND, "name": name, "cursor": cursor,
                                                      "seen": seen, "timeout": max(0, min(interval, int(left))),
                                                      "limit": ROUND_LINES})
                rounds += 1
                if progress.get("failed"):
                    raise AnsibleActionFail(f"following {self.KIND} job {name} failed: {progress.get('msg')}")
                if progress.get("log_error") and not warned:
                    display.warning(f"{self.KIND} job {name}: {progress['log_error']}")
                    warned = True
                messages = progress.get("messages", [])
                if progress.get("terminal"):
                    ending += messages
                elif live:
                    for message in messages:   # a transition comes before the lines written after it
                        self._show(name, message)
                lines = progress.get("lines", [])
                for line in lines:
                    if live:
                        self._show(name, line)
                    log.write(line)
                    tail.append(line)
                cursor, seen = progress.get("cursor", cursor), progress.get("seen", seen)
                if not progress.get("terminal"):
                    if self.clock() - begun > max_seconds:
                        raise AnsibleActionFail(
                            f"{self.KIND} job {name} still {progress.get('status', status)} after wait_timeout="
                            f"{max_seconds}s ({rounds} rounds): raise wait_timeout, or set wait: false and check on "
                            f"it later")
                    continue
                if progress.get("more"):
                    continue
                if self.KIND != "training" or (after_end and not lines) or after_end >= FINAL_READS:
                    break
                after_end += 1
                self.sleep(self.final_poll(common, interval))
            if live:
                for message in ending:   # the end comes after the last lines
                    self._show(name, message)
            best = progress.get("best_training_job")
            if self.KIND == "tuning" and log_file and best:
                log = self.save_log_of(task_vars, common, best, log_file)
            written = log.commit()
        except BaseException:
            log.discard()
            raise
        if log_file and show and (log.lines or written):
            self._show(name, f"{log.lines} log lines saved in {log_file}")
        return {"rounds": rounds, "lines": log.lines, "tail": list(tail), "log_file": log_file,
                "log_written": written, "status": progress.get("status")}

    def final_poll(self, common: dict, interval: int) -> int:
        """Seconds between two reads of an ended job's log: one poll in AWS, none for a local log (whole at once)."""
        return 0 if common.get("instance_type") in LOCAL_TYPES else min(interval, FINAL_POLL)

    def save_log_of(self, task_vars: dict, common: dict, job: str, log_file: str) -> LogFile:
        """The whole log of an ended training job (a tuning job's best), page by page, into a LogFile; read again
        one poll later until nothing new comes, as in follow()."""
        log = LogFile(log_file)
        cursor: dict = {}
        after_end = 0
        try:
            while True:
                page = self._progress(task_vars, {**common, "kind": "training", "name": job, "cursor": cursor,
                                                  "timeout": 0, "limit": ROUND_LINES})
                if page.get("failed"):
                    raise AnsibleActionFail(f"reading the log of training job {job} failed: {page.get('msg')}")
                lines = page.get("lines", [])
                for line in lines:
                    log.write(line)
                cursor = page.get("cursor", cursor)
                if page.get("more"):
                    continue
                if not page.get("terminal"):
                    if not lines:
                        return log
                    continue
                if (after_end and not lines) or after_end >= FINAL_READS:
                    return log
                after_end += 1
                self.sleep(self.final_poll(common, FINAL_POLL))
        except BaseException:
            log.discard()
            raise
