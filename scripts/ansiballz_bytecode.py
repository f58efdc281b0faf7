"""Bytecode cache for the Ansible module payloads that the controller venv's Python runs.

Ansible runs a module as an AnsiballZ payload: a zip of the module and its module_utils, written to a new
temporary directory and imported from there by zipimport. zipimport compiles every file of a zip from source,
each time, and never caches: `ansible.module_utils.basic` and what it imports took 0.31 s of a 0.33 s
`command` run here, and the amazon.aws module_utils come on top for every AWS call. On the controller that is
every localhost task: each amazon.aws call, each of dlfleet's own modules.

Installed by the Makefile into the controller venv only (`.venv`, a `.pth` file imports this module at
start-up), it keeps the compiled code of the files under `ansible/` and `ansible_collections/` of a payload,
keyed by a SHA-256 of the source with the interpreter's bytecode magic number and optimisation level, and loads
it on the next run instead of compiling. Loaded code gets the payload's own file name (what tracebacks show),
as a `.pyc` loaded next to its source does. What runs is what the source compiles to, byte for byte; payloads
on remote hosts (their own Python) are untouched.

The cache is `<venv>/var/cache/ansiballz-bytecode`, a folder of dlfleet_venv_cache's (private, entries written
whole, at most MAX_ENTRIES of them). A missing, unreadable or corrupt entry is
compiled again. DLFLEET_ANSIBALLZ_CACHE=0 turns it off. benchmarks/ansiballz_bytecode measures it.
"""
from __future__ import annotations

import marshal
import os
import sys
import zipimport

from dlfleet_venv_cache import read_entry, write_entry

try:
    import _imp
    from importlib._bootstrap_external import MAGIC_NUMBER
except ImportError:  # not CPython: leave zipimport alone
    _imp = None

MAX_ENTRIES = 4096
CACHE_DIR = os.path.join(sys.prefix, "var", "cache", "ansiballz-bytecode")
# The payload's packages (module_utils, modules, collections); the small per-run files beside them
# (sitecustomize.py with the payload's temporary path) would only add entries that never hit.
_CACHED = (os.sep + "ansible" + os.sep, os.sep + "ansible_collections" + os.sep)
_compile_source = zipimport._compile_source


def _key(source: bytes) -> str:
    import hashlib  # here, not at start-up: every process of the venv imports this module

    digest = hashlib.sha256(MAGIC_NUMBER)
    digest.update(str(sys.flags.optimize).encode())
    digest.update(b"\0")
    digest.update(source)
    return digest.hexdigest()


def _load(key: str, pathname: str):
    data = read_entry(CACHE_DIR, key)
    if data is None:
        return None
    try:
        code = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    if type(code).__name__ != "code":
        return None
    _imp._fix_co_filename(code, pathname)   # the code object tree names this payload's file, as a .pyc's does
    return code


def compile_source(pathname: str, source: bytes):
    """zipimport's `_compile_source`, with the cache in front for the payload's packages."""
    if not any(part in pathname for part in _CACHED):
        return _compile_source(pathname, source)
    key = _key(source)
    code = _load(key, pathname)
    if code is None:
        code = _compile_source(pathname, source)
        write_entry(CACHE_DIR, key, marshal.dumps(code), MAX_ENTRIES)
    return code


def install() -> bool:
    """Put the cache in front of zipimport's compiler (once); False where it is off or cannot work."""
    if _imp is None or os.environ.get("DLFLEET_ANSIBALLZ_CACHE", "1") == "0":
        return False
    if getattr(zipimport._compile_source, "__module__", None) != __name__:
        zipimport._compile_source = compile_source
    return True


install()
