"""A fault-injecting HTTP proxy in front of the AWS emulator, owned by the tests.

It forwards every request to the emulator on loopback and, as configured per test, answers some of them
the way AWS does when things go wrong:

| kind                | what the client sees                                                               |
|---------------------|------------------------------------------------------------------------------------|
| throttle            | EC2: 503 RequestLimitExceeded; JSON APIs: 400 ThrottlingException; query APIs      |
|                     | (IAM, STS): 400 Throttling; S3: 503 SlowDown; REST-JSON: 429 TooManyRequests       |
| server_error        | 500 InternalError (EC2, query, S3) / InternalServerError (JSON APIs)               |
| drop                | the connection closes before the request reaches the emulator                     |
| lost_response       | a mutating call is executed by the emulator, then the connection closes unanswered |
| capacity            | RunInstances of a chosen type in a chosen AZ: 500 InsufficientInstanceCapacity     |
| not_found           | eventual consistency: DescribeInstances / DescribeInstanceStatus / CreateTags /    |
|                     | ModifyInstanceAttribute naming an instance launched less than `consistency_ms` ago |
|                     | answers 400 InvalidInstanceID.NotFound                                             |

It also emulates RunInstances ClientToken idempotency as AWS documents it (moto ignores the token): the
same token with the same parameters returns the original reservation without launching again, even when
the first response was lost; the same token with other parameters is IdempotentParameterMismatch.
Counted as `idempotent_replay` / `idempotent_mismatch`.

Random faults draw from a seeded generator; `once()` queues deterministic ones ("lose the response of
the next RunInstances"). `counters` holds injected faults by kind plus `requests` (all requests seen) and
`forwarded`.

Use it from Python (`FaultProxy(upstream).start()`, `.configure(...)`, `.once(...)`, `.counters`), from
pytest (fixture `faulty_aws`), or as a program:

    python tests/faultproxy.py --upstream http://127.0.0.1:PORT [--port N] [--throttle 0.1] ...

with control endpoints GET /_faults/counters, POST /_faults/config (JSON of FaultConfig fields),
POST /_faults/once ({"kind", "action", "count"}), POST /_faults/reset.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

KINDS = ("throttle", "server_error", "drop", "lost_response", "capacity", "not_found")
READ_PREFIXES = ("Describe", "Get", "List", "Head", "Search", "Query", "Check", "Lookup", "Preview", "Batch Get")
CONSISTENCY_ACTIONS = {
    "DescribeInstances": "InstanceId.",
    "DescribeInstanceStatus": "InstanceId.",
    "CreateTags": "ResourceId.",
    "ModifyInstanceAttribute": "InstanceId",
}


def _xml_texts(data: bytes, name: str) -> list[str]:
    """Texts of every element called `name`, whatever its XML namespace."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError:
        return []
    return [node.text for node in root.iter() if node.text and node.tag.rsplit("}", 1)[-1] == name]


@dataclass
class FaultConfig:
    """What to inject. Rates are fractions of the eligible requests (0..1), drawn independently in the
    order throttle, server_error, drop, lost_response (the last only for mutating calls)."""

    throttle: float = 0.0
    server_error: float = 0.0
    drop: float = 0.0
    lost_response: float = 0.0
    # (instance type, AZ) pairs short of capacity; "*" as AZ matches any AZ, and a launch with no AZ.
    capacity: list[tuple[str, str]] = field(default_factory=list)
    # Instances launched less than this many ms ago are not yet visible by id (0: off).
    consistency_ms: int = 0
    # Random faults only for these API actions (None: every action) and services (signing names).
    actions: set[str] | None = None
    services: set[str] | None = None
    # Emulate RunInstances ClientToken idempotency.
    idempotency: bool = True
    seed: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(names)}")
        data = dict(data)
        if "capacity" in data:
            data["capacity"] = [tuple(pair) for pair in data["capacity"]]
        for key in ("actions", "services"):
            if data.get(key) is not None:
                data[key] = set(data[key])
        return cls(**data)


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    service: str = ""
    action: str = ""
    protocol: str = ""  # ec2, query, json, rest-xml, rest-json
    params: dict[str, str] = field(default_factory=dict)

    @property
    def mutating(self) -> bool:
        if self.protocol in ("rest-xml", "rest-json"):
            return self.method in ("PUT", "POST", "DELETE", "PATCH")
        return bool(self.action) and not self.action.startswith(READ_PREFIXES)


def _parse(method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
    parts = urlsplit(target)
    req = Request(method, parts.path, parts.query, headers, body)
    auth = headers.get("authorization", "")
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        req.service = scope[3] if len(scope) >= 5 else ""
    amz_target = headers.get("x-amz-target", "")
    if amz_target:
        req.protocol, req.action = "json", amz_target.rsplit(".", 1)[-1]
        return req
    form = {}
    if "x-www-form-urlencoded" in headers.get("content-type", "") and body:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    form.update({k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items() if k == "Action"})
    if "Action" in form:
        req.action, req.params = form["Action"], form
        req.protocol = "ec2" if req.service == "ec2" else "query"
        return req
    req.protocol = "rest-xml" if req.service == "s3" else "rest-json"
    req.action = f"{method} {parts.path}"
    return req


def _error(req: Request, status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """An error response in the request's protocol, as botocore parses it."""
    request_id = str(uuid.uuid4())
    if req.protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
        return status, {"Content-Type": "text/xml;charset=UTF-8"}, body.encode()
    if req.protocol == "query":
        kind = "Receiver" if status >= 500 else "Sender"
        body = (f'<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message>'
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body.encode()
    if req.protocol == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>")
        return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body.encode()
    body = json.dumps({"__type": code, "message": message})
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id,
                    "x-amzn-ErrorType": code}, body.encode()


def _throttle(req: Request) -> tuple[int, dict[str, str], bytes]:
    if req.protocol == "ec2":
        return _error(req, 503, "RequestLimitExceeded", "Request limit exceeded.")
    if req.protocol == "query":
        return _error(req, 400, "Throttling", "Rate exceeded")
    if req.protocol == "rest-xml":
        return _error(req, 503, "SlowDown", "Please reduce your request rate.")
    if req.protocol == "rest-json":
        return _error(req, 429, "TooManyRequestsException", "Rate exceeded")
    return _error(req, 400, "ThrottlingException", "Rate exceeded")


def _server_error(req: Request) -> tuple[int, dict[str, str], bytes]:
    code = "InternalServerError" if req.protocol in ("json", "rest-json") else "InternalError"
    return _error(req, 500, code, "We encountered an internal error. Please try again.")


class _Dropped(Exception):
    """Close the client connection without an answer."""


class FaultProxy:
    """The proxy server. Thread-safe; one per test (or per session, reconfigured per test)."""

    def __init__(self, upstream: str, config: FaultConfig | None = None, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.upstream = upstream.rstrip("/")
        self.lock = threading.RLock()
        self.config = config or FaultConfig()
        self.random = random.Random(self.config.seed)
        self._counters: Counter[str] = Counter()
        self._queued: list[dict[str, Any]] = []
        self._launched: dict[str, float] = {}  # instance id -> monotonic launch time
        self._tokens: dict[str, tuple[dict[str, str], int, dict[str, str], bytes]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._subnet_az: dict[str, str] = {}
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuration ---------------------------------------------------------------------------------

    def configure(self, **settings: Any) -> FaultProxy:
        """Replace the configuration (FaultConfig fields); counters and idempotency memory are kept."""
        with self.lock:
            self.config = FaultConfig.from_json(settings)
            self.random = random.Random(self.config.seed)
        return self

    def once(self, kind: str, action: str | None = None, count: int = 1) -> FaultProxy:
        """Inject `kind` into the next `count` requests (of `action`, if given), before any random fault."""
        if kind not in ("throttle", "server_error", "drop", "lost_response"):
            raise ValueError(f"kind {kind!r} cannot be queued; use throttle, server_error, drop or lost_response")
        with self.lock:
            self._queued.append({"kind": kind, "action": action, "count": count})
        return self

    def reset(self) -> FaultProxy:
        """No faults, zero counters, forget queued faults, launches and client tokens."""
        with self.lock:
            self.config = FaultConfig()
            self.random = random.Random(0)
            self._counters.clear()
            self._queued.clear()
            self._launched.clear()
            self._tokens.clear()
        return self

    @property
    def counters(self) -> dict[str, int]:
        with self.lock:
            out = {kind: 0 for kind in (*KINDS, "idempotent_replay", "idempotent_mismatch", "requests", "forwarded")}
            out.update(self._counters)
            return out

    @property
    def injected(self) -> int:
        """All faults injected so far (idempotency replays are not faults)."""
        counters = self.counters
        return sum(counters[k] for k in KINDS)

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- decisions ---------------------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        with self.lock:
            self._counters[kind] += 1

    def _queued_fault(self, req: Request) -> str | None:
        with self.lock:
            for entry in self._queued:
                if entry["action"] not in (None, req.action):
                    continue
                if entry["kind"] == "lost_response" and not req.mutating:
                    continue
                entry["count"] -= 1
                if entry["count"] <= 0:
                    self._queued.remove(entry)
                return entry["kind"]
        return None

    def _random_fault(self, req: Request) -> str | None:
        with self.lock:
            cfg = self.config
            if cfg.actions is not None and req.action not in cfg.actions:
                return None
            if cfg.services is not None and req.service not in cfg.services:
                return None
            for kind in ("throttle", "server_error", "drop", "lost_response"):
                rate = getattr(cfg, kind)
                if kind == "lost_response" and not req.mutating:
                    continue
                if rate > 0 and self.random.random() < rate:
                    return kind
        return None

    def _requested_az(self, req: Request) -> str | None:
        az = req.params.get("Placement.AvailabilityZone")
        subnet = req.params.get("SubnetId") or req.params.get("NetworkInterface.1.SubnetId")
        if az or not subnet:
            return az
        if subnet not in self._subnet_az:
            body = f"Action=DescribeSubnets&Version=2016-11-15&SubnetId.1={subnet}".encode()
            status, _, data = self._forward(Request(
                "POST", "/", "", {"content-type": "application/x-www-form-urlencoded; charset=utf-8",
                                  "authorization": req.headers.get("authorization", "")}, body))
            zones = _xml_texts(data, "availabilityZone") if status == 200 else []
            if zones:
                self._subnet_az[subnet] = zones[0]
        return self._subnet_az.get(subnet)

    def _capacity_fault(self, req: Request) -> tuple[int, dict[str, str], bytes] | None:
        if req.action != "RunInstances" or not self.config.capacity:
            return None
        instance_type = req.params.get("InstanceType", "m1.small")
        az = self._requested_az(req)
        for short_type, short_az in self.config.capacity:
            if short_type == instance_type and (short_az == "*" or short_az == az):
                where = f" in the Availability Zone you requested ({az})" if az else ""
                self._count("capacity")
                return _error(req, 500, "InsufficientInstanceCapacity",
                              f"We currently do not have sufficient {instance_type} capacity{where}. Our system "
                              f"will be working on provisioning additional capacity. You can currently get "
                              f"{instance_type} capacity by not specifying an Availability Zone in your request or "
                              f"choosing another Availability Zone.")
        return None

    def _consistency_fault(self, req: Request) -> tuple[int, dict[str, str], bytes] | None:
        prefix = CONSISTENCY_ACTIONS.get(req.action)
        if req.protocol != "ec2" or not prefix or self.config.consistency_ms <= 0:
            return None
        now = time.monotonic()
        ids = [v for k, v in req.params.items() if k.startswith(prefix)]
        with self.lock:
            fresh = [i for i in ids if now - self._launched.get(i, -1e9) < self.config.consistency_ms / 1000]
        if not fresh:
            return None
        self._count("not_found")
        return _error(req, 400, "InvalidInstanceID.NotFound", f"The instance ID '{fresh[0]}' does not exist")

    def _remember_launch(self, data: bytes) -> None:
        now = time.monotonic()
        with self.lock:
            for instance_id in _xml_texts(data, "instanceId"):
                self._launched.setdefault(instance_id, now)

    # --- forwarding ------------------------------------------------------------------------------------

    def _forward(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)
        try:
            target = req.path + (f"?{req.query}" if req.query else "")
            headers = {k: v for k, v in req.headers.items()
                       if k not in ("connection", "keep-alive", "transfer-encoding", "proxy-connection")}
            headers["content-length"] = str(len(req.body))
            conn.request(req.method, target, body=req.body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = {k: v for k, v in resp.getheaders()
                           if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length",
                                                "date", "server")}
            return resp.status, out_headers, data
        finally:
            conn.close()

    def handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        """Decide and answer one API request. Raises _Dropped to close the connection unanswered."""
        self._count("requests")
        kind = self._queued_fault(req) or self._random_fault(req)
        if kind == "throttle":
            self._count("throttle")
            return _throttle(req)
        if kind == "server_error":
            self._count("server_error")
            return _server_error(req)
        if kind == "drop":
            self._count("drop")
            raise _Dropped
        token = req.params.get("ClientToken") if req.action == "RunInstances" and self.config.idempotency else None
        if token:
            with self.lock:
                token_lock = self._token_locks.setdefault(token, threading.Lock())
            with token_lock:
                return self._run_instances_once(req, token, lost=kind == "lost_response")
        answer = self._capacity_fault(req) or self._consistency_fault(req)
        if answer:
            return answer
        return self._execute(req, lost=kind == "lost_response")

    def _execute(self, req: Request, lost: bool) -> tuple[int, dict[str, str], bytes]:
        status, headers, data = self._forward(req)
        self._count("forwarded")
        if req.action == "RunInstances" and status == 200:
            self._remember_launch(data)
        if lost:
            self._count("lost_response")
            raise _Dropped
        return status, headers, data

    def _run_instances_once(self, req: Request, token: str, lost: bool) -> tuple[int, dict[str, str], bytes]:
        params = {k: v for k, v in req.params.items() if k != "ClientToken"}
        with self.lock:
            seen = self._tokens.get(token)
        if seen is not None:
            if seen[0] != params:
                self._count("idempotent_mismatch")
                return _error(req, 400, "IdempotentParameterMismatch",
                              f"The client token '{token}' was already used with other parameters.")
            self._count("idempotent_replay")
            if lost:
                self._count("lost_response")
                raise _Dropped
            return seen[1], dict(seen[2]), seen[3]
        answer = self._capacity_fault(req)
        if answer:
            return answer
        status, headers, data = self._forward(req)
        self._count("forwarded")
        if status == 200:
            self._remember_launch(data)
            with self.lock:
                self._tokens[token] = (params, status, headers, data)
        if lost:
            self._count("lost_response")
            raise _Dropped
        return status, headers, data

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body or b"{}")
            if path == "/_faults/counters":
                return 200, self.counters
            if path == "/_faults/config" and method == "POST":
                self.configure(**data)
                return 200, {"ok": True}
            if path == "/_faults/once" and method == "POST":
                self.once(data["kind"], data.get("action"), int(data.get("count", 1)))
                return 200, {"ok": True}
            if path == "/_faults/reset" and method == "POST":
                self.reset()
                return 200, {"ok": True}
        except (ValueError, KeyError, TypeError) as err:
            return 400, {"ok": False, "error": str(err)}
        return 404, {"ok": False, "error": f"no control endpoint {method} {path}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        body = self._body()
        if self.path.startswith("/_faults/"):
            status, out = self.owner.control(self.command, self.path, body)
            self._send(status, {"Content-Type": "application/json"}, json.dumps(out).encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = _parse(self.command, self.path, headers, body)
        try:
            status, out_headers, data = self.owner.handle(req)
        except _Dropped:
            self._drop()
            return
        except OSError as err:  # the emulator is unreachable: say so as a gateway error
            self._send(502, {"Content-Type": "text/plain"}, f"fault proxy: upstream unreachable: {err}".encode())
            return
        self._send(status, out_headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve


# ---------------------------------------------------------------------------------------------------------
# pytest fixture (imported by tests/conftest.py)

try:
    import pytest
except ImportError:  # running as a program without pytest
    pytest = None  # type: ignore[assignment]


@dataclass
class FaultyAWS:
    """The session emulator behind a fresh fault proxy: `env` for ansible-playbook runs, `client()` for
    boto3, `proxy` to configure faults and read counters."""

    proxy: FaultProxy
    env: dict[str, str]
    emulator: Any

    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint

    @property
    def counters(self) -> dict[str, int]:
        return self.proxy.counters

    def configure(self, **settings: Any) -> FaultProxy:
        return self.proxy.configure(**settings)

    def once(self, kind: str, action: str | None = None, count: int = 1) -> FaultProxy:
        return self.proxy.once(kind, action, count)

    def client(self, service: str, region: str = "us-east-1", **config: Any) -> Any:
        """A boto3 client through the proxy (botocore's own retries apply, as for any client)."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=region, endpoint_url=self.proxy.endpoint,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(**config) if config else None)

    def direct(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client straight to the emulator, past the proxy: to check the real outcome."""
        return self.emulator.client(service, region)


if pytest is not None:

    @pytest.fixture
    def faulty_aws(emulator: Any) -> Iterator[FaultyAWS]:
        """A fault proxy of this test's own in front of the session emulator; no faults until configured."""
        import os

        proxy = FaultProxy(emulator.endpoint).start()
        try:
            env = {**os.environ, **emulator.env, "AWS_ENDPOINT_URL": proxy.endpoint}
            yield FaultyAWS(proxy, env, emulator)
        finally:
            proxy.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="the emulator, e.g. $AWS_ENDPOINT_URL")
    parser.add_argument("--port", type=int, default=0)
    for kind in ("throttle", "server_error", "drop", "lost_response"):
        parser.add_argument(f"--{kind.replace('_', '-')}", type=float, default=0.0, help=f"fraction: {kind}")
    parser.add_argument("--capacity", action="append", default=[], metavar="TYPE@AZ",
                        help="InsufficientInstanceCapacity for TYPE in AZ ('*' for any); repeatable")
    parser.add_argument("--consistency-ms", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = FaultConfig(throttle=args.throttle, server_error=args.server_error, drop=args.drop,
                         lost_response=args.lost_response, consistency_ms=args.consistency_ms, seed=args.seed,
                         capacity=[tuple(c.split("@", 1)) for c in args.capacity])  # type: ignore[misc]
    # Ctrl-C or SIGTERM stops it and prints the counters, also when started by a parent that ignores SIGINT
    # (pytest-xdist workers, nohup): a Python started with SIGINT ignored never installs its own handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    proxy = FaultProxy(args.upstream, config, port=args.port).start()
    print(f"fault proxy on {proxy.endpoint} -> {args.upstream}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(json.dumps(proxy.counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
