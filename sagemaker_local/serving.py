# SageMaker's inference container, as a local process: `python -m sagemaker_local serve` answers /ping and
# /invocations on 127.0.0.1 through the user's handlers (model_fn, input_fn, predict_fn, output_fn or transform_fn),
# imported from the model's code/ folder only, as the MXNet serving image's handler service does.
from __future__ import annotations

import argparse
import http.server
import importlib.util
import json
import os
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from sagemaker_local.container import now_iso, write_json

UTF8_TYPES = ("application/json", "text/csv")  # request bodies the toolkit hands over as text, not bytes
ANY = "*/*"


class Handlers:
    """The user's inference module, as the MXNet serving toolkit (sagemaker-inference's Transformer under
    sagemaker-mxnet-inference's handler service) loads and calls it: SAGEMAKER_PROGRAM imported as a proper module
    from <model_dir>/code (the model archive's code/ folder, nothing else), model_fn(model_dir), then transform_fn or
    input_fn/predict_fn/output_fn per request. A module that does not load leaves `error` set: the model server then
    has no worker, and every request gets 503."""

    def __init__(self, model_dir: str, program: str) -> None:
        self.model_dir, self.code_dir = model_dir, os.path.join(model_dir, "code")
        self.name = program[:-3] if program.endswith(".py") else program
        self.module: Any = None
        self.model: Any = None
        self.error: str | None = None
        self.lock = threading.Lock()
        try:
            self.load()
        except Exception as err:
            traceback.print_exc()
            self.error = f"{type(err).__name__}: {err}"

    def load(self) -> None:
        if self.code_dir not in sys.path:
            sys.path.insert(0, self.code_dir)  # the toolkit puts code/ on PYTHONPATH
        self.module = importlib.import_module(self.name)  # in sys.modules, as a proper module
        mod = self.module
        if hasattr(mod, "transform_fn") and any(hasattr(mod, f) for f in ("input_fn", "predict_fn", "output_fn")):
            raise ValueError("Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, "
                             "and/or output_fn implementation")
        if not hasattr(mod, "model_fn"):
            raise RuntimeError(f"{self.name} has no model_fn(model_dir)")
        self.model = mod.model_fn(self.model_dir)

    def invoke(self, body: bytes, content_type: str | None, accept: str) -> tuple[bytes, str]:
        mod = self.module
        data: bytes | str = body.decode("utf-8") if content_type in UTF8_TYPES else body
        with self.lock:
            if hasattr(mod, "transform_fn"):
                result = mod.transform_fn(self.model, data, content_type, accept)
            else:
                prediction = mod.predict_fn(mod.input_fn(data, content_type), self.model)
                result = mod.output_fn(prediction, accept)
        out_type = accept
        if isinstance(result, tuple):
            result, out_type = result
        if isinstance(result, str):
            result = result.encode()
        return bytes(result), out_type


# Limits of the local endpoint (the real one sits behind SageMaker's front end, which enforces its own): a body
# of at most 6 MiB (InvokeEndpoint's payload limit), a socket that is idle or sends nothing for READ_TIMEOUT
# seconds is closed, and at most MAX_CONNECTIONS connections are served at once (a thread each); one more is
# answered 503 and closed. A malformed request gets a 4xx that says what is wrong, and its connection is closed.
MAX_BODY = 6 * 1024 * 1024
READ_TIMEOUT = 30.0
MAX_CONNECTIONS = 64


def _error_body(code: int, kind: str, message: str) -> bytes:
    return json.dumps({"code": code, "type": kind, "message": message}).encode()


def make_handler(handlers: Handlers, max_body: int = MAX_BODY, read_timeout: float = READ_TIMEOUT):
    default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or "application/json"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = read_timeout   # StreamRequestHandler: the socket's timeout for every read and write

        def refuse(self, code: int, kind: str, message: str) -> None:
            """A 4xx/5xx for a request this server will not read on: the connection is closed after it."""
            self.close_connection = True
            self.reply(code, _error_body(code, kind, message), "application/json")

        def read_body(self) -> bytes | None:
            """The request body within the limits, or None after a refusal."""
            if self.headers.get("Transfer-Encoding"):
                self.refuse(411, "LengthRequired", "send the body with a Content-Length (chunked bodies are not "
                                                   "accepted here)")
                return None
            raw = self.headers.get("Content-Length")
            if raw is None:
                return b""
            if not (raw.strip().isascii() and raw.strip().isdigit()):
                self.refuse(400, "BadRequest", f"Content-Length {raw!r} is not a whole number of bytes")
                return None
            length = int(raw)
            if length > max_body:
                self.refuse(413, "PayloadTooLarge", f"the body is {length} bytes; the endpoint takes at most "
                                                    f"{max_body} bytes per request")
                return None
            chunks, got = [], 0
            while got < length:
                try:
                    chunk = self.rfile.read1(min(65536, length - got))
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if got < length:
                self.refuse(408, "RequestTimeout", f"the body stopped after {got} of {length} bytes (nothing more "
                                                   f"came for {read_timeout:g} s, or the client closed)")
                return None
            return b"".join(chunks)

        def log_message(self, fmt: str, *args: Any) -> None:
            sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))  # noqa: UP031

        def reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/ping":
                self.reply(200, b"", "text/plain")
            else:
                self.reply(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self.reply(404, b"not found", "text/plain")
                return
            body = self.read_body()
            if body is None:
                return
            if handlers.error is not None:
                message = f"No worker is available to serve request: model (the model did not load: {handlers.error})"
                self.reply(503, _error_body(503, "ServiceUnavailableException", message), "application/json")
                return
            content_type = self.headers.get("Content-Type")  # None when missing: the handlers get None too
            accept = self.headers.get("Accept")
            if not accept or accept == ANY:
                accept = default_accept
            try:
                out, out_type = handlers.invoke(body, content_type, accept)
            except Exception as err:
                trace = traceback.format_exc()
                sys.stderr.write(trace)
                # the toolkit's answer to an error in the user's code: 500, the message, then the traceback
                self.reply(500, f"{err}\n{trace}".encode(), "text/plain")
                return
            self.reply(200, out, out_type)

    return Handler


class ReusePortServer(http.server.ThreadingHTTPServer):
    """Binds with SO_REUSEPORT: a new model version takes the same port before the old one stops. Serves at most
    `max_connections` connections at once, a thread each; one more gets 503 and is closed at once."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            body = _error_body(503, "ServiceUnavailableException", "too many connections: retry later")
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(args: argparse.Namespace) -> int:
    handlers = Handlers(args.model_dir, args.program)
    server = ReusePortServer(("127.0.0.1", args.port), make_handler(handlers))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    port = server.server_address[1]
    write_json(args.ready_file, {"port": port, "pid": os.getpid(), "since": now_iso()})
    print(f"serving {args.program} on 127.0.0.1:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0
