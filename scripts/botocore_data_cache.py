"""Cache of botocore's parsed data files, for the controller venv's processes.

Every boto3 session loads botocore's JSON data again: `endpoints.json` (1.2 MB) for each client, and each
service's model for each client (EC2's is 4.3 MB of JSON, gzipped), parsed by `json.loads` with an OrderedDict
for every object. A module run on the controller is a new process with new sessions, so each AWS module run
spends about 0.1 s of its 0.5 CPU-s parsing EC2's model and the endpoints (benchmarks/botocore_data_cache).

Installed by the Makefile into the controller venv only (`.venv`, a `.pth` file imports this module at start-up;
botocore is patched when it is imported), it keeps each parsed file as a pickle, keyed by its path, size and
modification time (as Python validates a `.pyc` against its source), botocore's version and the Python version,
and loads that instead of parsing. What botocore gets is the same value (the same OrderedDicts, lists and
scalars; tests/unit/test_botocore_data_cache.py compares every file the suite's services load).

The cache is `<venv>/var/cache/botocore-data` (0700; entries 0600, written whole under a temporary name and
renamed into place). It holds at most MAX_ENTRIES entries: past that, the older half (by modification time) is
removed. A missing, unreadable or corrupt entry means the file is parsed again. DLFLEET_BOTOCORE_CACHE=0 turns it
off.
"""
from __future__ import annotations

import os
import sys

MAX_ENTRIES = 2048
CACHE_DIR = os.path.join(sys.prefix, "var", "cache", "botocore-data")
TARGET = "botocore.loaders"


def _key(full_path: str, version: str) -> str | None:
    import hashlib

    try:
        st = os.stat(full_path)
    except OSError:
        return None
    ident = f"{os.path.abspath(full_path)}\0{st.st_size}\0{st.st_mtime_ns}\0{version}\0{sys.version_info[:3]}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()


def _read(key: str):
    import pickle

    try:
        with open(os.path.join(CACHE_DIR, key), "rb") as f:
            return pickle.load(f)
    except Exception:   # a missing, truncated or foreign entry: parse the file again
        return None


def _write(key: str, value) -> None:
    import pickle

    path = os.path.join(CACHE_DIR, key)
    try:
        os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        _prune()
    except (OSError, pickle.PicklingError):
        pass


def _prune() -> None:
    entries = []
    with os.scandir(CACHE_DIR) as it:
        for entry in it:
            if entry.is_file() and not entry.name.endswith(".tmp"):
                entries.append((entry.stat().st_mtime, entry.path))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort()
    for _, path in entries[: len(entries) // 2]:
        try:  # noqa: SIM105 - contextlib is one more import for every process of the venv
            os.unlink(path)
        except OSError:
            pass


def _unwrapped(function):
    while getattr(function, "dlfleet_botocore_cache", False):
        function = function.__wrapped__
    return function


def patch(loaders) -> bool:
    """Put the cache in front of botocore's JSONFileLoader._load_file (the one place it parses a data file)."""
    import botocore

    load_file = _unwrapped(loaders.JSONFileLoader._load_file)
    version = botocore.__version__

    def cached_load_file(self, full_path, open_method):
        key = _key(full_path, version)
        if key is None:
            return load_file(self, full_path, open_method)
        value = _read(key)
        if value is None:
            value = load_file(self, full_path, open_method)
            if value is not None:
                _write(key, value)
        return value

    cached_load_file.__wrapped__, cached_load_file.dlfleet_botocore_cache = load_file, True
    loaders.JSONFileLoader._load_file = cached_load_file
    return True


class _PatchingLoader:
    """The module's own loader; the module is patched once it has run."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        patch(module)


class _PatchOnImport:
    """A meta path finder that lets botocore.loaders load as usual, then patches it (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader)
                return spec
            if spec is not None:
                return spec
        return None


def install() -> bool:
    """Patch botocore.loaders when it is imported (or now, where it already is); False where the cache is off."""
    if os.environ.get("DLFLEET_BOTOCORE_CACHE", "1") == "0":
        return False
    if TARGET in sys.modules:
        return patch(sys.modules[TARGET])
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    return True


install()
