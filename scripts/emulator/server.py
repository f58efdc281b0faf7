"""The embedded AWS emulator: moto's ThreadedMotoServer on loopback, seeded, logged and persisted.

Run by scripts/aws-emulator (see README.md there); not meant to be started by hand:

    python scripts/emulator/server.py --state-dir DIR [--port N] [--no-persist]

- Seeds what moto lacks (seed.py), before the first request.
- Appends one JSON line per API request to DIR/requests.jsonl:
  {"time", "service", "region", "action", "method", "path", "status"}.
- Persistence: on SIGTERM/SIGINT it stops serving, then pickles every moto backend that holds state into
  DIR/state.pickle; at start it loads that file back, so resources keep their ids and creation times.
  --no-persist does neither.
- Writes DIR/ready.json ({"pid", "port"}) once it serves; scripts/aws-emulator waits for it.
- Control endpoints (not logged as API requests): GET /_dlfleet/health, POST /_dlfleet/reset,
  POST /_dlfleet/quota {"region", "quota_code", "value"} (value null removes the account value),
  POST /_dlfleet/save.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ext_fleet  # noqa: E402  (sibling modules: importable once HERE is on the path; moto only in install())
import ext_sagemaker  # noqa: E402
import pricing  # noqa: E402  (a sibling module: importable once HERE is on the path; imports no moto)
import ssm_agents  # noqa: E402  (a sibling module, as pricing; imports moto only in install())

STATE_FILE = "state.pickle"
DEFAULT_ACCOUNT = "123456789012"


def _prepare_environment(state_dir: Path) -> None:
    """Settings moto reads at import time: our AMI list, and validation of what real EC2 validates."""
    amis = state_dir / "amis.json"
    os.environ["MOTO_AMIS_PATH"] = str(amis)
    os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "true"
    os.environ["MOTO_ENABLE_AMI_VALIDATION"] = "true"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "emulator")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "emulator")
    import seed  # imports moto: only after the settings above

    seed.write_amis_file(amis)


# ---------------------------------------------------------------------------------------------------------
# Persistence: pickle moto's backends. A few moto objects need help to pickle.


def _nested_dict() -> defaultdict[str, dict[str, Any]]:
    return defaultdict(dict)


def _rebuild_nested(items: dict[str, Any]) -> defaultdict[str, Any]:
    out: defaultdict[str, Any] = defaultdict(_nested_dict)
    out.update(items)
    return out


def _new_defaultdict_subclass(cls: type, factory: Any) -> Any:
    obj = cls.__new__(cls)
    defaultdict.__init__(obj, factory)
    return obj


def _load_private_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, defaultdict):
            if type(obj) is not defaultdict:  # moto's ParameterDict and the like: custom __init__
                return (_new_defaultdict_subclass, (type(obj), obj.default_factory), dict(obj.__dict__), None,
                        iter(dict.items(obj)))
            if getattr(obj.default_factory, "__name__", "") == "<lambda>":  # defaultdict(lambda: defaultdict(dict))
                return (_rebuild_nested, (dict(obj),))
        if hasattr(obj, "private_bytes") and hasattr(obj, "public_key"):  # cryptography keys (KMS, IAM)
            from cryptography.hazmat.primitives import serialization

            pem = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            return (_load_private_key, (pem,))
        return NotImplemented


def save_state(path: Path) -> list[str]:
    """Pickle every backend in use; a service whose state will not pickle is skipped (and named)."""
    from moto.core.base_backend import BackendDict

    state: dict[str, Any] = {}
    skipped = []
    for backend_dict in list(BackendDict._instances):
        service = {account: dict(per_account) for account, per_account in backend_dict.items()}
        buf = io.BytesIO()
        try:
            _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(service)
        except Exception as err:
            skipped.append(f"{backend_dict.service_name}: {err}")
            continue
        state[backend_dict.service_name] = buf.getvalue()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)
    return skipped


def load_state(path: Path) -> list[str]:
    from moto.backends import get_backend

    state = pickle.loads(path.read_bytes())
    loaded = []
    for service, blob in state.items():
        backend_dict = get_backend(service)
        for account, regions in pickle.loads(blob).items():
            per_account = backend_dict[account]
            for region, backend in regions.items():
                dict.__setitem__(per_account, region, backend)
        loaded.append(service)
    return loaded



# ---------------------------------------------------------------------------------------------------------
# Request log


class RequestLog:
    """One JSON line per API request: time, service, region, action, method, path, status."""

    REST_SERVICES = {"s3": "s3", "lambda": "lambda", "sagemaker": "sagemaker-runtime"}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.fh = path.open("a", buffering=1)
        self._rest_ops: dict[str, list[tuple[str, list[str], dict[str, str], set[str], str]]] = {}

    def close(self) -> None:
        with self.lock:
            self.fh.close()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"))
        with self.lock:
            if not self.fh.closed:
                self.fh.write(line + "\n")

    @staticmethod
    def credential_scope(environ: dict[str, Any]) -> tuple[str, str]:
        """(service, region) from the SigV4 Authorization header or a presigned URL's X-Amz-Credential."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scope = ""
        if "Credential=" in auth:
            scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
        else:
            from urllib.parse import parse_qs

            scope = (parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential") or [""])[0]
        parts = scope.split("/")
        if len(parts) >= 5:
            return parts[3], parts[2]
        return "", ""

    def _rest_operations(self, service: str) -> list[tuple[str, list[str], dict[str, str], set[str], str]]:
        """(method, path template, required query {key: value or ''}, required headers, name) per operation."""
        if service not in self._rest_ops:
            ops = []
            try:
                import botocore.session

                model = botocore.session.get_session().get_service_model(service)
                for name in model.operation_names:
                    op = model.operation_model(name)
                    path, _, query = op.http.get("requestUri", "/").partition("?")
                    segments = [s for s in path.split("/") if s]
                    required_query = dict(([*q.split("=", 1), ""])[:2] for q in query.split("&") if q)
                    headers = set()
                    shape = op.input_shape
                    for member in (shape.required_members if shape else []):
                        where = shape.members[member].serialization
                        if where.get("location") == "querystring":
                            required_query.setdefault(where["name"], "")
                        elif where.get("location") == "header":
                            headers.add("HTTP_" + where["name"].upper().replace("-", "_"))
                    ops.append((op.http.get("method", "GET"), segments, required_query, headers, name))
            except Exception:
                ops = []
            self._rest_ops[service] = ops
        return self._rest_ops[service]

    def rest_action(self, service: str, environ: dict[str, Any]) -> str:
        """Match a REST request against the service's botocore URI templates; the most specific wins."""
        from urllib.parse import parse_qsl

        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        segments = [s for s in path.split("/") if s]
        best, best_score = "", -1
        for op_method, template, required_query, headers, name in self._rest_operations(
                self.REST_SERVICES.get(service, service)):
            if op_method != method or not headers <= environ.keys():
                continue
            if any(k not in query or (v and query[k] != v) for k, v in required_query.items()):
                continue
            score = self._match(template, segments)
            if score is None:
                continue
            score = score * 100 + (len(required_query) + len(headers)) * 10 + len(template)
            if score > best_score:
                best, best_score = name, score
        return best or f"{method} {path}"

    @staticmethod
    def _match(template: list[str], segments: list[str]) -> int | None:
        literal = 0
        for i, part in enumerate(template):
            if part.endswith("+}"):
                return literal if len(segments) > i else None
            if i >= len(segments):
                return None
            if part.startswith("{"):
                continue
            if part != segments[i]:
                return None
            literal += 1
        return literal if len(segments) == len(template) else None

    def action(self, environ: dict[str, Any], body: bytes, service: str) -> str:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return target.rsplit(".", 1)[-1]
        from urllib.parse import parse_qs

        query = environ.get("QUERY_STRING", "")
        action = (parse_qs(query).get("Action") or [""])[0]
        if not action and body and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [""])[0]
        if action:
            return action
        return self.rest_action(service, environ)


class EmulatorApp:
    """WSGI middleware in front of moto's dispatcher: control endpoints, then the request log."""

    def __init__(self, app: Any, log: RequestLog, control: Any) -> None:
        self.app = app
        self.log = log
        self.control = control

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_dlfleet/"):
            return self.control(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        status_holder: list[str] = []

        def capture(status: str, headers: Any, exc_info: Any = None) -> Any:
            status_holder.append(status)
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        # the Price List API, which moto lacks, is answered from the seeded price list
        result = pricing.answer(environ, body, capture) if pricing.is_pricing(environ) else self.app(environ, capture)
        if not path.startswith("/moto-api"):
            service, region = self.log.credential_scope(environ)
            try:
                action = self.log.action(environ, body, service)
            except Exception:
                action = ""
            status = int(status_holder[0].split()[0]) if status_holder else 0
            self.log.write({"time": round(time.time(), 6), "service": service, "region": region,
                            "action": action, "method": environ.get("REQUEST_METHOD", ""), "path": path,
                            "status": status})
        return result


# ---------------------------------------------------------------------------------------------------------


EXTENSIONS = (ext_fleet, ext_sagemaker)


def install_extensions() -> list[str]:
    """The moto extensions beside this file (ext_fleet.py, ext_sagemaker.py), each with install() patching moto in
    this process for calls moto lacks. One that fails to install is reported and skipped."""
    loaded = []
    for extension in EXTENSIONS:
        name = extension.__name__
        try:
            extension.install()
            loaded.append(name)
        except Exception as err:  # a moto that moved what the extension patches: the server still serves
            print(f"emulator extension {name} not installed: {err!r}", flush=True)
    if loaded:
        print(f"extensions: {', '.join(loaded)}", flush=True)
    return loaded


class Emulator:
    def __init__(self, state_dir: Path, port: int, persist: bool) -> None:
        self.state_dir = state_dir
        self.port = port
        self.persist = persist
        self.stop_event = threading.Event()
        self.log = RequestLog(state_dir / "requests.jsonl")
        self.server: Any = None

    def warm(self, region: str = "us-east-1") -> None:
        """Create (and so seed) the default account's backends now, not on the first request."""
        from moto.ec2.models import ec2_backends
        from moto.servicequotas.models import servicequotas_backends
        from moto.ssm.models import ssm_backends

        for backends in (ec2_backends, ssm_backends, servicequotas_backends):
            backends[DEFAULT_ACCOUNT][region]

    def control(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        code, out = "200 OK", {"ok": True}
        try:
            if path == "/_dlfleet/health":
                out = {"ok": True, "pid": os.getpid(), "port": self.port, "persist": self.persist}
            elif path == "/_dlfleet/reset":
                from moto.moto_api._internal.models import moto_api_backend

                moto_api_backend.reset()
                (self.state_dir / STATE_FILE).unlink(missing_ok=True)
                self.warm()
            elif path == "/_dlfleet/quota":
                from moto.servicequotas.models import servicequotas_backends

                backend = servicequotas_backends[body.get("account", DEFAULT_ACCOUNT)][body.get("region", "us-east-1")]
                backend.set_applied(body["quota_code"], body.get("value"))
            elif path == "/_dlfleet/save":
                out = {"ok": True, "skipped": save_state(self.state_dir / STATE_FILE)}
            else:
                code, out = "404 Not Found", {"ok": False, "error": f"no control endpoint {path}"}
        except (KeyError, ValueError, TypeError) as err:
            code, out = "400 Bad Request", {"ok": False, "error": str(err)}
        data = json.dumps(out).encode()
        start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def run(self) -> int:
        import seed
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        seed.install()
        pricing.install()
        install_extensions()
        ssm_agents.install()   # after the extensions: it wraps ext_fleet's RunInstances patch
        state_path = self.state_dir / STATE_FILE
        if self.persist and state_path.exists():
            try:
                print(f"restored state of: {', '.join(load_state(state_path))}", flush=True)
            except Exception as err:  # a snapshot from another moto version: keep it aside, start clean
                state_path.replace(state_path.with_suffix(".unreadable"))
                print(f"state snapshot unreadable ({err}); starting from a fresh seed", flush=True)
        self.warm()

        emulator = self

        class Server(ThreadedMotoServer):
            error: BaseException | None = None

            def _server_entry(self) -> None:
                app = EmulatorApp(DomainDispatcherApplication(create_backend_app), emulator.log, emulator.control)
                try:
                    self._server = make_server(self._ip_address, self._port, app, True,
                                               request_handler=MotoRequestHandler)
                except BaseException as err:  # e.g. the port is taken: report it instead of hanging start()
                    self.error = err
                    self._server_ready_event.set()
                    return
                self._server_ready_event.set()
                self._server.serve_forever()

        self.server = Server(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        if self.server.error is not None:
            print(f"cannot serve on 127.0.0.1:{self.port}: {self.server.error}", flush=True)
            return 1
        self.port = self.server.get_host_and_port()[1]
        ready = self.state_dir / "ready.json"
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "port": self.port, "persist": self.persist}))
        tmp.replace(ready)
        print(f"serving on http://127.0.0.1:{self.port} (persist={self.persist})", flush=True)
        while not self.stop_event.wait(0.5):
            pass
        self.server.stop()
        if self.persist:
            skipped = save_state(state_path)
            for line in skipped:
                print(f"state not saved for {line}", flush=True)
        self.log.close()
        ready.unlink(missing_ok=True)
        print("stopped", flush=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--no-persist", action="store_true")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _prepare_environment(state_dir)
    emulator = Emulator(state_dir, args.port, persist=not args.no_persist)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: emulator.stop_event.set())
    return emulator.run()


if __name__ == "__main__":
    sys.exit(main())
