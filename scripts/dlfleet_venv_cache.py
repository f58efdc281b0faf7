"""What the controller venv's caches share: a cache folder of whole-file entries, and patching a module on import.

Installed by the Makefile into the controller venv under this name, beside the caches that use it
(scripts/ansiballz_bytecode.py, scripts/ansiballz_deps.py, scripts/botocore_data_cache.py); every process of the
venv imports it at start-up, so it imports nothing beyond os and sys until it is used.

A cache folder is 0700; each entry is one file, 0600, written whole under a temporary name and renamed into place,
so concurrent processes never read half an entry. A folder holds at most `max_entries` entries: past that, the older
half (by modification time) is removed. Writing never fails the caller: a cache that cannot be written is a cache
that misses.
"""
from __future__ import annotations

import os
import sys


def write_entry(folder: str, key: str, data: bytes, max_entries: int) -> None:
    """Store `data` as entry `key` of `folder` (made if missing), then keep the folder within `max_entries`."""
    path = os.path.join(folder, key)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        prune(folder, max_entries)
    except OSError:
        pass


def read_entry(folder: str, key: str) -> bytes | None:
    """Entry `key` of `folder`, or None where there is none (or it cannot be read)."""
    try:
        with open(os.path.join(folder, key), "rb") as f:
            return f.read()
    except OSError:
        return None


def prune(folder: str, max_entries: int) -> None:
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file() and not entry.name.endswith(".tmp"):
                entries.append((entry.stat().st_mtime, entry.path))
    if len(entries) <= max_entries:
        return
    entries.sort()
    for _, path in entries[: len(entries) // 2]:
        try:  # noqa: SIM105 - contextlib is one more import for every process of the venv
            os.unlink(path)
        except OSError:
            pass


class _PatchingLoader:
    """A module's own loader; `patch(module)` runs once the module has."""

    def __init__(self, loader, patch) -> None:
        self._loader, self._patch = loader, patch

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._patch(module)


class PatchOnImport:
    """A meta path finder that lets module `target` load as usual from wherever it is, then patches it."""

    def __init__(self, target: str, patch) -> None:
        self.target, self.patch = target, patch

    def find_spec(self, name, path=None, target=None):
        if name != self.target:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, self.patch)
                return spec
            if spec is not None:
                return spec
        return None


def patch_on_import(target: str, patch) -> bool:
    """Patch module `target` with `patch(module)` now where it is imported already, else when it is imported."""
    if target in sys.modules:
        return patch(sys.modules[target])
    if not any(isinstance(finder, PatchOnImport) and finder.target == target for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport(target, patch))
    return True
