"""Start MXNet parameter-server jobs (kvstore dist_sync): scheduler, servers and workers with DMLC_* variables.

Across hosts (what the training role runs on each host, one process per role):

    python -m training.launch --role scheduler --scheduler-host H --scheduler-port P --num-workers W --num-servers S
    python -m training.launch --role server    --scheduler-host H --scheduler-port P --num-workers W --num-servers S
    python -m training.launch --role worker    --scheduler-host H --scheduler-port P --num-workers W --num-servers S \\
        [--node-host MY_IP] -- <training.train arguments>

All on this machine, on 127.0.0.1 (tests, trying it out):

    python -m training.launch --local --num-workers 2 --num-servers 1 [--scheduler-port P] -- <training.train args>

With --local, worker i writes to <output-dir>/worker-i (and <checkpoint-dir>/worker-i when one is given).
The worker runs train.py with --kvstore dist_sync added unless the arguments name a dist kvstore already.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TRAIN_SCRIPT = Path(__file__).resolve().with_name("train.py")
PSNODE_SCRIPT = Path(__file__).resolve().with_name("psnode.py")  # scheduler and servers
ROLES = ("scheduler", "server", "worker")
SAGEMAKER_SCHEDULER_PORT = 8000  # port of the scheduler on the first SageMaker host (the MXNet toolkit's default too)
# Local mode only (dlfleet's, SageMaker never sets them): its hosts are processes on one machine, where the names
# algo-N do not resolve and port 8000 may be taken, so it names their addresses and a free port.
HOST_ADDRESSES_ENV = "DLFLEET_HOST_ADDRESSES"  # JSON {"algo-1": "127.0.0.1", ...}
SCHEDULER_PORT_ENV = "DLFLEET_SCHEDULER_PORT"
RESOLVE_SECONDS = 900  # how long a host name may take to resolve (the MXNet toolkit waits up to 15 minutes too)


def role_env(role: str, scheduler_host: str, scheduler_port: int, num_workers: int, num_servers: int,
             node_host: str | None = None, interface: str | None = None, base: dict | None = None) -> dict[str, str]:
    """The environment of one process of a parameter-server job."""
    env = dict(os.environ if base is None else base)
    env.update({"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": scheduler_host, "DMLC_PS_ROOT_PORT": str(scheduler_port),
                "DMLC_NUM_WORKER": str(num_workers), "DMLC_NUM_SERVER": str(num_servers)})
    if node_host:
        env["DMLC_NODE_HOST"] = node_host
    if interface:
        env["DMLC_INTERFACE"] = interface
    return env


def worker_args(train_args: list[str]) -> list[str]:
    """train.py arguments for a worker: add --kvstore dist_sync unless a dist kvstore is named."""
    args = list(train_args)
    for i, arg in enumerate(args):
        if arg in ("--kvstore", "--kv-store") and i + 1 < len(args):
            if not args[i + 1].startswith("dist"):
                args[i + 1] = "dist_sync"
            return args
        if arg.startswith("--kvstore="):
            if not arg.split("=", 1)[1].startswith("dist"):
                args[i] = "--kvstore=dist_sync"
            return args
    return [*args, "--kvstore", "dist_sync"]


def command(role: str, train_args: list[str]) -> list[str]:
    """Scheduler and servers are MXNet's own, run through libmxnet's C API by psnode.py until the job ends."""
    if role == "worker":
        return [sys.executable, str(TRAIN_SCRIPT), *worker_args(train_args)]
    return [sys.executable, str(PSNODE_SCRIPT)]


def _replace_dir_arg(args: list[str], names: tuple[str, ...], suffix: str, default: str | None) -> list[str]:
    out, found = list(args), False
    for i, arg in enumerate(out):
        if arg in names and i + 1 < len(out):
            out[i + 1], found = str(Path(out[i + 1]) / suffix), True
        elif "=" in arg and arg.split("=", 1)[0] in names:
            key, value = arg.split("=", 1)
            out[i], found = f"{key}={Path(value) / suffix}", True
    if not found and default is not None:
        out += [names[0], str(Path(default) / suffix)]
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_local(num_workers: int, num_servers: int, port: int, train_args: list[str]) -> int:
    """1 scheduler, num_servers servers and num_workers workers on 127.0.0.1; returns the first failing rc or 0."""
    def start(role: str, args: list[str]) -> subprocess.Popen:
        env = role_env(role, "127.0.0.1", port, num_workers, num_servers, node_host="127.0.0.1")
        return subprocess.Popen(command(role, args), env=env)

    support = [start("scheduler", [])] + [start("server", []) for _ in range(num_servers)]
    workers = []
    for i in range(num_workers):
        args = _replace_dir_arg(train_args, ("--output-dir", "--output_dir"), f"worker-{i}", "output")
        args = _replace_dir_arg(args, ("--checkpoint-dir", "--checkpoint_dir"), f"worker-{i}", None)
        workers.append(start("worker", args))
    return _wait(workers, support)


def _wait(workers: list[subprocess.Popen], support: list[subprocess.Popen]) -> int:
    """Wait for the workers; on the first failure stop everything. Servers and scheduler end with the job."""
    try:
        while True:
            codes = [w.poll() for w in workers]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                print(f"launch: a worker exited with {failed[0]}; stopping the job", file=sys.stderr, flush=True)
                _stop(workers + support)
                return failed[0]
            if all(c == 0 for c in codes):
                break
            crashed = [p.returncode for p in support if p.poll() not in (None, 0)]
            if crashed:  # a scheduler or server died: the workers would wait for it forever
                print(f"launch: a scheduler/server process exited with {crashed[0]}; stopping the job",
                      file=sys.stderr, flush=True)
                _stop(workers + support)
                return crashed[0]
            time.sleep(0.2)
        for proc in support:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _stop([proc])
        return 0
    except KeyboardInterrupt:
        _stop(workers + support)
        return 130


def resolve_host(host: str, env: dict[str, str], seconds: float = RESOLVE_SECONDS) -> str:
    """The IPv4 address of a host name: ps-lite's scheduler binds DMLC_PS_ROOT_URI and cannot bind a name. SageMaker's
    host names (algo-1, ...) resolve once every instance of the job is up, so a failed lookup is retried."""
    mapped = json.loads(env.get(HOST_ADDRESSES_ENV) or "{}")
    if host in mapped:
        return mapped[host]
    deadline, delay = time.monotonic() + seconds, 0.1
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError as err:
            if time.monotonic() + delay > deadline:
                raise SystemExit(f"launch: the scheduler host {host!r} does not resolve to an address ({err}) after "
                                 f"{seconds:.0f} s; every host of the job must resolve the others' names") from err
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def sagemaker_cluster(hosts: list[str], current: str, train_cmd: list[str], env: dict[str, str] | None = None) -> int:
    """SageMaker with several instances and no sagemaker_parameter_server_enabled: the first host runs the scheduler,
    every host a server and a worker (as the MXNet toolkit lays out a job when the parameter server is on)."""
    env = dict(os.environ if env is None else env)
    hosts = sorted(hosts)
    address = resolve_host(hosts[0], env)
    port = int(env.get(SCHEDULER_PORT_ENV) or SAGEMAKER_SCHEDULER_PORT)
    print(f"launch: parameter-server job over {len(hosts)} hosts, scheduler {hosts[0]} ({address}:{port}), "
          f"this host {current}", flush=True)

    def role(name: str) -> dict[str, str]:
        return role_env(name, address, port, len(hosts), len(hosts), base=env)

    support = []
    if current == hosts[0]:
        support.append(subprocess.Popen(command("scheduler", []), env=role("scheduler")))
    support.append(subprocess.Popen(command("server", []), env=role("server")))
    worker = subprocess.Popen([sys.executable, *worker_args(train_cmd)], env=role("worker"))
    return _wait([worker], support)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s (--local | --role ROLE --scheduler-host H ...) "
                                           "[options] -- <training.train arguments>")
    parser.add_argument("--local", action="store_true", help="run the whole job on 127.0.0.1")
    parser.add_argument("--role", choices=ROLES, help="the role of this process (across hosts)")
    parser.add_argument("--scheduler-host", help="address of the scheduler host, reachable from every host")
    parser.add_argument("--scheduler-port", type=int, default=None,
                        help="scheduler port (required with --role; default with --local: a free port)")
    parser.add_argument("--num-workers", type=int, required=True, help="workers in the job")
    parser.add_argument("--num-servers", type=int, required=True, help="servers in the job")
    parser.add_argument("--node-host", help="this host's address as the others reach it (DMLC_NODE_HOST)")
    parser.add_argument("--interface", help="network interface to bind (DMLC_INTERFACE), e.g. eth0")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = build_parser()
    args = parser.parse_args(ours)
    if args.num_workers < 1 or args.num_servers < 1:
        parser.error(f"--num-workers {args.num_workers} / --num-servers {args.num_servers}: need at least 1 each")
    if args.local:
        return run_local(args.num_workers, args.num_servers, args.scheduler_port or free_port(), train_args)
    if not args.role or not args.scheduler_host or not args.scheduler_port:
        parser.error("give --local, or --role with --scheduler-host and --scheduler-port")
    env = role_env(args.role, args.scheduler_host, args.scheduler_port, args.num_workers, args.num_servers,
                   args.node_host, args.interface)
    # Replace this process, so that signals (and the exit status) reach the role directly.
    cmd = command(args.role, train_args)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
