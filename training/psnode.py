"""One scheduler or server process of an MXNet parameter-server job (kvstore dist_sync), run by training.launch.

    DMLC_ROLE=server|scheduler DMLC_PS_ROOT_URI=... DMLC_PS_ROOT_PORT=... DMLC_NUM_WORKER=... DMLC_NUM_SERVER=... \\
        python psnode.py

`python -c "import mxnet"` with DMLC_ROLE set runs the role as well (mxnet/kvstore/kvstore_server.py), but importing
the package costs about 2.5 CPU-seconds (it generates a Python function for every operator), none of which a
scheduler or server uses. This script loads the same libmxnet, found the way the package finds it
(mxnet/libinfo.py), and makes the same C API calls as the package's server module: MXKVStoreCreate("dist"), then
MXKVStoreRunServer until the workers end the job, then MXKVStoreFree and MXNotifyShutdown. It imports nothing from
the training package, so it runs from the package folder and from a flat code folder alike.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

ROLES = ("scheduler", "server")
CONTROLLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def find_library() -> str:
    """Path of libmxnet: mxnet/libinfo.py's answer (MXNET_LIBRARY_PATH, the package folder, ...), run on its own."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("psnode: no mxnet package in this Python environment")
    libinfo_spec = importlib.util.spec_from_file_location(
        "_mxnet_libinfo", os.path.join(next(iter(spec.submodule_search_locations)), "libinfo.py"))
    libinfo = importlib.util.module_from_spec(libinfo_spec)
    libinfo_spec.loader.exec_module(libinfo)
    return libinfo.find_lib_path()[0]


def _unexpected_command(head: int, body: bytes, _handle: int) -> None:
    """Commands that the C++ server does not handle itself go here. The mxnet package would unpickle an optimizer
    (command 0) and run it on the server; the trainer never sends one (training/dist.py updates on the workers),
    so anything arriving here is a job this server cannot serve: fail loudly rather than ignore it."""
    print(f"psnode: unexpected command {head} from a worker ({len(body or b'')} bytes); this server runs no "
          f"optimizer, stopping", file=sys.stderr, flush=True)
    os._exit(1)


def main() -> int:
    role = os.environ.get("DMLC_ROLE")
    if role not in ROLES:
        raise SystemExit(f"psnode: DMLC_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
    lib = ctypes.CDLL(find_library(), ctypes.RTLD_LOCAL)
    lib.MXGetLastError.restype = ctypes.c_char_p

    def check(status: int) -> None:
        if status != 0:
            raise SystemExit(f"psnode ({role}): {lib.MXGetLastError().decode(errors='replace')}")

    handle = ctypes.c_void_p()
    check(lib.MXKVStoreCreate(b"dist", ctypes.byref(handle)))
    controller = CONTROLLER(_unexpected_command)  # kept referenced until the server returns
    check(lib.MXKVStoreRunServer(handle, controller, None))
    check(lib.MXKVStoreFree(handle))
    check(lib.MXNotifyShutdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
