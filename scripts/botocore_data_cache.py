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

The cache is `<venv>/var/cache/botocore-data`, a folder of dlfleet_venv_cache's (private, entries written whole, at
most MAX_ENTRIES of them). A missing, unreadable or corrupt entry means the file is parsed again.
DLFLEET_BOTOCORE_CACHE=0 turns it off.
"""
from __future__ import annotations

import os
import sys

from dlfleet_venv_cache import patch_on_import, read_entry, write_entry

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

    data = read_entry(CACHE_DIR, key)
    try:
        return pickle.loads(data) if data is not None else None
    except Exception:   # a truncated or foreign entry: parse the file again
        return None


def _write(key: str, value) -> None:
    import pickle

    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except pickle.PicklingError:
        return
    write_entry(CACHE_DIR, key, data, MAX_ENTRIES)


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


def install() -> bool:
    """Patch botocore.loaders when it is imported (or now, where it already is); False where the cache is off."""
    if os.environ.get("DLFLEET_BOTOCORE_CACHE", "1") == "0":
        return False
    return patch_on_import(TARGET, patch)


install()
