"""The local endpoint's limits (sagemaker_local/serving.py): body size, read timeouts, a bounded
number of connections, and a clear 4xx for every malformed request. The real server class and handler, in this
process, on a loopback port; the inference module is a tiny one of the test's own."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagemaker_local import serving

INFERENCE = """\
def model_fn(model_dir):
    return "model"

def transform_fn(model, data, content_type, accept):
    return ("got %d bytes" % len(data)).encode(), "text/plain"
"""


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[dict]:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "limits_infer.py").write_text(INFERENCE)
    handlers = serving.Handlers(str(tmp_path / "model"), "limits_infer.py")
    assert handlers.error is None, handlers.error
    handler = serving.make_handler(handlers, max_body=1024, read_timeout=1.0)
    server = serving.ReusePortServer(("127.0.0.1", 0), handler, max_connections=4)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {"port": server.server_address[1], "server": server}
    finally:
        server.shutdown()
        server.server_close()


def raw(port: int, request: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are; read until the server closes (or `wait` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/octet-stream"})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data


def test_a_request_within_the_limits_is_served(endpoint) -> None:
    assert post(endpoint["port"], b"x" * 1024) == (200, b"got 1024 bytes")


@pytest.mark.parametrize(("length", "fragment"), [("abc", "'abc' is not a whole number"),
                                                   ("-5", "'-5' is not a whole number"),
                                                   ("1e3", "'1e3' is not a whole number")])
def test_a_content_length_that_is_no_number_gets_400_at_once(endpoint, length: str, fragment: str) -> None:
    start = time.monotonic()
    reply = raw(endpoint["port"], b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: " + length.encode() +
                b"\r\n\r\n")
    assert time.monotonic() - start < 4, "the server waited for a body it cannot read"
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert b"Connection: close" in head
    assert fragment in json.loads(body)["message"]


def test_a_body_over_the_limit_gets_413_without_being_read(endpoint) -> None:
    reply = raw(endpoint["port"], b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"at most 1024 bytes" in reply


def test_a_chunked_body_gets_411(endpoint) -> None:
    reply = raw(endpoint["port"], b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"3\r\nabc\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411"), reply


def test_a_body_that_stops_coming_gets_408_after_the_read_timeout(endpoint) -> None:
    reply = raw(endpoint["port"], b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"after 10 of 100 bytes" in reply


def test_an_idle_connection_is_closed_after_the_read_timeout(endpoint) -> None:
    with socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=5) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""           # closed by the server, nothing sent
        assert time.monotonic() - start < 4


def test_connections_beyond_the_bound_get_503_and_no_thread(endpoint) -> None:
    port = endpoint["port"]
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + 4
        extra = [raw(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(20)]
        assert all(r.startswith(b"HTTP/1.1 503") for r in extra), extra[:2]
        assert threading.active_count() <= before + 4
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if post(port, b"ok") == (200, b"got 2 bytes"):
                break
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    else:
        pytest.fail("the endpoint did not serve again after the idle connections closed")
