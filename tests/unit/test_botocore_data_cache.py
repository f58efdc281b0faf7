"""scripts/botocore_data_cache.py: the controller venv's cache of botocore's parsed data files.

Each test loads its own copy of the module with its cache in a temporary directory and patches botocore's real
`botocore.loaders` with it; botocore's own function is put back afterwards. Files are read by botocore's real
Loader, from botocore's own data or from copies in a data path of the test's.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import stat
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import botocore
import botocore.loaders
import pytest
from dlfleet_venv_cache import PatchOnImport, _PatchingLoader
from helpers import ROOT

SOURCE = ROOT / "scripts" / "botocore_data_cache.py"


def _core(function):
    while getattr(function, "dlfleet_botocore_cache", False):
        function = function.__wrapped__
    return function


CORE_LOAD_FILE = _core(botocore.loaders.JSONFileLoader._load_file)
# What the suite's clients load: the services dlfleet and amazon.aws call, and the shared files.
SERVICES = ("ec2", "s3", "sagemaker", "sagemaker-runtime", "ssm", "sts", "iam", "service-quotas", "pricing", "logs")
SHARED = ("endpoints", "partitions", "_retry", "sdk-default-configuration")


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """botocore's own _load_file (put back afterwards); the list of the files it parses (botocore also asks it for
    names that do not exist, such as service-2.json beside service-2.json.gz)."""
    seen: list[str] = []

    def counting(self, full_path, open_method):
        if os.path.isfile(full_path):
            seen.append(full_path)
        return CORE_LOAD_FILE(self, full_path, open_method)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "_load_file", counting)
    return seen


@pytest.fixture
def cache(parsed: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delenv("DLFLEET_BOTOCORE_CACHE", raising=False)
    spec = importlib.util.spec_from_file_location("botocore_data_cache_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # install(): botocore.loaders is imported already, so it is patched now
    monkeypatch.setattr(module, "CACHE_DIR", str(tmp_path / "cache"))
    assert botocore.loaders.JSONFileLoader._load_file.dlfleet_botocore_cache
    return module


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (an OrderedDict where botocore makes one)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def load_all(loader: botocore.loaders.Loader) -> dict[str, object]:
    out: dict[str, object] = {name: loader.load_data(name) for name in SHARED}
    for service in SERVICES:
        for kind in ("service-2", "paginators-1", "waiters-2", "endpoint-rule-set-1"):
            with contextlib.suppress(botocore.exceptions.DataNotFoundError):
                out[f"{service}/{kind}"] = loader.load_service_model(service, kind)
    return out


def test_botocore_gets_the_same_data_with_and_without_the_cache(cache, parsed):
    """Every file the suite's clients load: botocore alone, then with the cache filling, then from the cache, each
    through a new Loader (as each new session makes). The last parses nothing."""
    core = botocore.loaders.JSONFileLoader._load_file
    botocore.loaders.JSONFileLoader._load_file = _core(core)
    try:
        without = load_all(botocore.loaders.create_loader())
    finally:
        botocore.loaders.JSONFileLoader._load_file = core
    parsed.clear()
    filling = load_all(botocore.loaders.create_loader())
    assert len(parsed) >= 30
    parsed.clear()
    cached = load_all(botocore.loaders.create_loader())
    assert parsed == []
    assert set(without) == set(filling) == set(cached)
    assert "ec2/service-2" in without and isinstance(without["ec2/service-2"], OrderedDict)
    for name in without:
        assert same(filling[name], without[name]), name
        assert same(cached[name], without[name]), name
    # each load is a value of its own: botocore merges extras into what it loaded, and must not change the cache
    cached["ec2/service-2"]["metadata"]["changed"] = True
    assert "changed" not in load_all(botocore.loaders.create_loader())["ec2/service-2"]["metadata"]


def data_path(tmp_path: Path, document: dict) -> Path:
    """A data path of the test's own with one service model, gzipped as botocore ships them."""
    folder = tmp_path / "data" / "dlfleettest" / "2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "service-2.json.gz", "wt") as f:
        json.dump(document, f)
    return tmp_path / "data"


def test_a_changed_file_is_parsed_again(cache, parsed, tmp_path):
    path = data_path(tmp_path, {"metadata": {"v": 1}})
    loader = botocore.loaders.Loader(extra_search_paths=[str(path)], include_default_search_paths=False)
    assert loader.load_service_model("dlfleettest", "service-2") == {"metadata": {"v": 1}}
    model = path / "dlfleettest" / "2026-01-01" / "service-2.json.gz"
    before = model.stat()
    data_path(tmp_path, {"metadata": {"v": 22}})
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    parsed.clear()
    loader = botocore.loaders.Loader(extra_search_paths=[str(path)], include_default_search_paths=False)
    assert loader.load_service_model("dlfleettest", "service-2") == {"metadata": {"v": 22}}
    assert parsed == [str(model)]


def test_a_corrupt_entry_is_parsed_again(cache, parsed, tmp_path):
    path = data_path(tmp_path, {"metadata": {"v": 3}})
    botocore.loaders.Loader(extra_search_paths=[str(path)]).load_service_model("dlfleettest", "service-2")
    entries = list(Path(cache.CACHE_DIR).iterdir())
    assert len(entries) == 1
    for garbage in (b"", b"not a pickle", b"\x80\x05N."):
        entries[0].write_bytes(garbage)
        parsed.clear()
        loader = botocore.loaders.Loader(extra_search_paths=[str(path)])
        assert loader.load_service_model("dlfleettest", "service-2") == {"metadata": {"v": 3}}
        assert parsed, garbage


def test_entries_are_private_and_bounded(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 4)
    for i in range(9):
        path = data_path(tmp_path / f"d{i}", {"metadata": {"v": i}})
        botocore.loaders.Loader(extra_search_paths=[str(path)]).load_service_model("dlfleettest", "service-2")
    folder = Path(cache.CACHE_DIR)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    entries = list(folder.iterdir())
    assert 2 <= len(entries) <= 4
    assert all(stat.S_IMODE(entry.stat().st_mode) == 0o600 for entry in entries)


def test_switched_off_by_the_environment(parsed, monkeypatch):
    monkeypatch.setenv("DLFLEET_BOTOCORE_CACHE", "0")
    spec = importlib.util.spec_from_file_location("botocore_data_cache_off", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.install() is False
    assert not getattr(botocore.loaders.JSONFileLoader._load_file, "dlfleet_botocore_cache", False)


def test_patched_when_botocore_is_imported_later(cache):
    """A new interpreter imports this module at start-up, before botocore: botocore.loaders is patched as it is
    loaded (here a second copy of it, loaded through the hook, outside sys.modules)."""
    spec = PatchOnImport(cache.TARGET, cache.patch).find_spec(cache.TARGET, botocore.__path__)
    assert isinstance(spec.loader, _PatchingLoader)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh is not botocore.loaders
    assert fresh.JSONFileLoader._load_file.dlfleet_botocore_cache
    assert PatchOnImport(cache.TARGET, cache.patch).find_spec("botocore.session", botocore.__path__) is None


def test_the_controller_venv_installs_it() -> None:
    """The interpreter that runs these tests (and every localhost module run of the suite) has it from its .pth."""
    import sys

    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"not running in the project's controller venv ({sys.prefix})")
    assert "dlfleet_botocore_data_cache" in sys.modules
    assert botocore.loaders.JSONFileLoader._load_file.dlfleet_botocore_cache
    installed = Path(sys.modules["dlfleet_botocore_data_cache"].__file__)
    assert installed.read_bytes() == SOURCE.read_bytes(), "the venv's copy is stale: run make venv"
    shared = Path(sys.modules["dlfleet_venv_cache"].__file__)
    assert shared.read_bytes() == (ROOT / "scripts" / "dlfleet_venv_cache.py").read_bytes(), "stale: run make venv"
