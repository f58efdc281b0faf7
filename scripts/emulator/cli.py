"""scripts/aws-emulator: start, stop, inspect and reset the embedded AWS emulator (see README.md)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_STATE_DIR = ROOT / ".run" / "emulator"
ACCESS_KEY = "AKIAEMULATORDLFLEET0"
SECRET_KEY = "dlfleet-emulator-test-secret-not-a-real-key"  # the emulator's fixed test credential
REGION = "us-east-1"
START_TIMEOUT = 180  # seconds; moto's import and seeding take ~5 s on an idle core, far more on a busy box
STOP_TIMEOUT = 60


def _pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_server(pid: int, state_dir: Path) -> bool:
    """The pid is alive and is this state dir's server (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    args = [a.decode(errors="replace") for a in cmdline]
    return any(a.endswith("server.py") for a in args) and str(state_dir) in args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _ready(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / "ready.json").read_text())
    except (OSError, ValueError):
        return None


def _call(port: int, path: str, body: dict | None = None, timeout: float = 30) -> dict:
    data = json.dumps(body or {}).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return json.loads(err.read() or b"{}") | {"ok": False, "status": err.code}


def _running(state_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of this state dir's live, answering server; None otherwise."""
    pid = _pid(state_dir)
    ready = _ready(state_dir)
    if not pid or not ready or ready.get("pid") != pid or not _is_our_server(pid, state_dir):
        return None
    try:
        _call(ready["port"], "/_dlfleet/health", timeout=10)
    except OSError:
        return None
    return pid, ready["port"]


def _env_text(port: int) -> str:
    return "\n".join([
        "# Written by scripts/aws-emulator: the embedded AWS emulator's endpoint and test credentials.",
        f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}",
        f"export AWS_ACCESS_KEY_ID={ACCESS_KEY}",
        f"export AWS_SECRET_ACCESS_KEY={SECRET_KEY}",
        f"export AWS_DEFAULT_REGION={REGION}",
        f"export AWS_REGION={REGION}",
        "export AWS_EC2_METADATA_DISABLED=true",
        "",
    ])


def read_env(path: Path) -> dict[str, str]:
    """The variables an `env` file written by _env_text exports (for Python callers: tests, benchmarks)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ")
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value.strip("'\"")
    return env


def _clean(state_dir: Path) -> None:
    for name in ("pid", "ready.json", "env"):
        (state_dir / name).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(state_dir: Path, port: int, persist: bool) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    running = _running(state_dir)
    if running:
        (state_dir / "env").write_text(_env_text(running[1]))
        print(f"aws-emulator: already running (pid {running[0]}) at http://127.0.0.1:{running[1]}")
        return 0
    stale = _pid(state_dir)
    if stale and _alive(stale) and _is_our_server(stale, state_dir):
        _stop_pid(stale)
    _clean(state_dir)
    (state_dir / "requests.jsonl").write_text("")
    cmd = [sys.executable, str(HERE / "server.py"), "--state-dir", str(state_dir), "--port", str(port)]
    if not persist:
        cmd.append("--no-persist")
    log_path = state_dir / "server.log"
    with log_path.open("w") as log, open(os.devnull) as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, close_fds=True)
    (state_dir / "pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _clean(state_dir)
            print(f"aws-emulator: server exited with {proc.returncode} before it was ready; log "
                  f"{log_path}:\n{_tail(log_path)}", file=sys.stderr)
            return 1
        ready = _ready(state_dir)
        if ready and ready.get("pid") == proc.pid:
            try:
                _call(ready["port"], "/_dlfleet/health", timeout=10)
            except OSError:
                time.sleep(0.1)
                continue
            (state_dir / "env").write_text(_env_text(ready["port"]))
            print(f"aws-emulator: running (pid {proc.pid}) at http://127.0.0.1:{ready['port']}; "
                  f"env: {state_dir / 'env'}")
            return 0
        time.sleep(0.1)
    _stop_pid(proc.pid)
    _clean(state_dir)
    print(f"aws-emulator: not ready after {START_TIMEOUT} s; log {log_path}:\n{_tail(log_path)}", file=sys.stderr)
    return 1


def _stop_pid(pid: int) -> bool:
    """SIGTERM (the server saves its state and exits), then SIGKILL its process group if it hangs."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return False


def stop(state_dir: Path) -> int:
    pid = _pid(state_dir)
    if not pid or not _alive(pid) or not _is_our_server(pid, state_dir):
        _clean(state_dir)
        print("aws-emulator: not running")
        return 0
    clean = _stop_pid(pid)
    _clean(state_dir)
    print("aws-emulator: stopped" + ("" if clean else " (killed: it did not stop within "
                                                      f"{STOP_TIMEOUT} s; state not saved)"))
    return 0


def status(state_dir: Path) -> int:
    running = _running(state_dir)
    if running:
        print(f"aws-emulator: running (pid {running[0]}) at http://127.0.0.1:{running[1]}")
        return 0
    print("aws-emulator: stopped")
    return 3


def reset(state_dir: Path) -> int:
    running = _running(state_dir)
    if running:
        out = _call(running[1], "/_dlfleet/reset", {})
        if not out.get("ok"):
            print(f"aws-emulator: reset failed: {out}", file=sys.stderr)
            return 1
        print("aws-emulator: reset: state wiped and seeded again")
        return 0
    (state_dir / "state.pickle").unlink(missing_ok=True)
    print("aws-emulator: reset: saved state removed; the next start seeds a fresh account")
    return 0


def set_quota(state_dir: Path, code: str, value: str, region: str) -> int:
    running = _running(state_dir)
    if not running:
        print("aws-emulator: not running; start it first", file=sys.stderr)
        return 1
    parsed = None if value.lower() in ("none", "default") else float(value)
    out = _call(running[1], "/_dlfleet/quota", {"quota_code": code, "value": parsed, "region": region})
    if not out.get("ok"):
        print(f"aws-emulator: set-quota failed: {out.get('error', out)}", file=sys.stderr)
        return 1
    shown = "the AWS default" if parsed is None else f"{parsed:g}"
    print(f"aws-emulator: ec2 quota {code} in {region} is now {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aws-emulator", description="The embedded AWS emulator (moto on loopback).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status", "reset", "set-quota"):
        p = sub.add_parser(name)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                       help="pid, env, requests.jsonl, server.log, state.pickle (default .run/emulator)")
        if name == "start":
            p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
            p.add_argument("--no-persist", action="store_true", help="do not load or save state across restarts")
        if name == "set-quota":
            p.add_argument("quota_code", help="e.g. L-417A185B")
            p.add_argument("value", help="vCPUs, or 'none' to fall back to the AWS default")
            p.add_argument("--region", default=REGION)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "start":
        return start(state_dir, args.port, persist=not args.no_persist)
    if args.command == "stop":
        return stop(state_dir)
    if args.command == "status":
        return status(state_dir)
    if args.command == "reset":
        return reset(state_dir)
    return set_quota(state_dir, args.quota_code, args.value, args.region)


if __name__ == "__main__":
    sys.exit(main())
