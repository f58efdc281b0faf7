"""scripts/ansiballz_bytecode.py: the controller venv's bytecode cache for Ansible module payloads.

Each test loads its own copy of the module with the cache in a temporary directory, and puts zipimport's compiler
back afterwards; zip payloads are real zips imported by the real zipimport.
"""
from __future__ import annotations

import importlib.util
import os
import stat
import sys
import traceback
import zipfile
import zipimport
from pathlib import Path
from types import ModuleType

import pytest
from helpers import ROOT

SOURCE = ROOT / "scripts" / "ansiballz_bytecode.py"
MODULE = b"""\
def twice(x):
    return 2 * x

class Box:
    def fail(self):
        raise RuntimeError("from the payload")

VALUE = twice(21)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ansiballz_bytecode_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(zipimport, "_compile_source", zipimport._compile_source)   # put back afterwards
    monkeypatch.delenv("DLFLEET_ANSIBALLZ_CACHE", raising=False)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CACHE_DIR", str(tmp_path / "cache"))
    module.compiled = []
    real = module._compile_source

    def counting(pathname, source):
        module.compiled.append(pathname)
        return real(pathname, source)

    monkeypatch.setattr(module, "_compile_source", counting)
    return module


def payload(directory: Path, files: dict[str, bytes]) -> Path:
    """An AnsiballZ-like zip in a directory of its own (a payload's path is new at every module run)."""
    directory.mkdir(parents=True)
    path = directory / "ansible_command_payload.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def load(zip_path: Path, name: str) -> ModuleType:
    """Import `name` from the zip through the real zipimport, without touching sys.modules for good."""
    package = name.rpartition(".")[0].replace(".", "/")
    importer = zipimport.zipimporter(str(zip_path / package) + "/" if package else str(zip_path))
    code = importer.get_code(name)
    module = ModuleType(name)
    module.__file__ = code.co_filename
    exec(code, module.__dict__)
    return module


def entries(cache: ModuleType) -> list[Path]:
    directory = Path(cache.CACHE_DIR)
    return sorted(directory.iterdir()) if directory.exists() else []


def test_second_payload_loads_the_first_ones_code_under_its_own_file_name(cache, tmp_path: Path) -> None:
    files = {"ansible/__init__.py": b"", "ansible/module_utils/__init__.py": b"",
             "ansible/module_utils/thing.py": MODULE}
    first = payload(tmp_path / "run1", files)
    second = payload(tmp_path / "run2", files)

    one = load(first, "ansible.module_utils.thing")
    assert cache.compiled == [str(first / "ansible/module_utils/thing.py")]
    assert len(entries(cache)) == 1
    two = load(second, "ansible.module_utils.thing")
    assert cache.compiled == [str(first / "ansible/module_utils/thing.py")], "the second run compiled again"
    assert two.VALUE == one.VALUE == 42

    # Every code object of the tree names the second payload's file, as a .pyc loaded beside its source does.
    expected = str(second / "ansible/module_utils/thing.py")
    assert two.twice.__code__.co_filename == expected
    assert two.Box.fail.__code__.co_filename == expected
    with pytest.raises(RuntimeError) as raised:
        two.Box().fail()
    assert traceback.extract_tb(raised.value.__traceback__)[-1].filename == expected


def test_only_the_payloads_packages_are_kept(cache, tmp_path: Path) -> None:
    zip_path = payload(tmp_path / "run", {"sitecustomize.py": b"import sys\n", "ansible_collections/__init__.py": b"",
                                          "ansible_collections/amazon_thing.py": MODULE})
    load(zip_path, "sitecustomize")
    load(zip_path, "ansible_collections.amazon_thing")
    assert len(entries(cache)) == 1, "sitecustomize.py (a path that is new at every run) was cached"
    load(zip_path, "sitecustomize")
    assert cache.compiled.count(str(zip_path / "sitecustomize.py")) == 2


def test_changed_source_is_compiled_not_served_stale(cache, tmp_path: Path) -> None:
    load(payload(tmp_path / "a", {"ansible/__init__.py": b"", "ansible/m.py": b"VALUE = 1\n"}), "ansible.m")
    module = load(payload(tmp_path / "b", {"ansible/__init__.py": b"", "ansible/m.py": b"VALUE = 2\n"}), "ansible.m")
    assert module.VALUE == 2
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("damage", [b"", b"\x00garbage", b"\xe3"])
def test_a_corrupt_or_truncated_entry_is_compiled_again_and_replaced(cache, tmp_path: Path, damage: bytes) -> None:
    files = {"ansible/__init__.py": b"", "ansible/m.py": MODULE}
    load(payload(tmp_path / "a", files), "ansible.m")
    (entry,) = entries(cache)
    entry.write_bytes(damage)
    module = load(payload(tmp_path / "b", files), "ansible.m")
    assert module.VALUE == 42
    assert len(cache.compiled) == 2
    assert entry.read_bytes() != damage
    assert load(payload(tmp_path / "c", files), "ansible.m").VALUE == 42
    assert len(cache.compiled) == 2


def test_an_entry_that_is_not_code_is_never_run(cache, tmp_path: Path) -> None:
    import marshal

    files = {"ansible/__init__.py": b"", "ansible/m.py": MODULE}
    load(payload(tmp_path / "a", files), "ansible.m")
    (entry,) = entries(cache)
    entry.write_bytes(marshal.dumps({"not": "code"}))
    assert load(payload(tmp_path / "b", files), "ansible.m").VALUE == 42
    assert len(cache.compiled) == 2


def test_cache_is_private_and_entries_are_written_whole(cache, tmp_path: Path) -> None:
    load(payload(tmp_path / "a", {"ansible/__init__.py": b"", "ansible/m.py": MODULE}), "ansible.m")
    assert stat.S_IMODE(os.stat(cache.CACHE_DIR).st_mode) == 0o700
    (entry,) = entries(cache)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert not [p for p in entries(cache) if p.name.endswith(".tmp")]


def test_an_unwritable_cache_only_costs_the_compile(cache, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cache.CACHE_DIR = str(blocker / "cache")
    assert load(payload(tmp_path / "a", {"ansible/__init__.py": b"", "ansible/m.py": MODULE}), "ansible.m").VALUE == 42


def test_the_cache_keeps_at_most_its_bound(cache, tmp_path: Path) -> None:
    cache.MAX_ENTRIES = 4
    for i in range(9):
        path = payload(tmp_path / f"r{i}", {"ansible/__init__.py": b"", f"ansible/m{i}.py": f"V = {i}\n".encode()})
        load(path, f"ansible.m{i}")
        os.utime(entries(cache)[0].parent, None)
    assert 2 <= len(entries(cache)) <= 4


def test_switched_off_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipimport, "_compile_source", zipimport._compile_source)
    original = zipimport._compile_source
    monkeypatch.setenv("DLFLEET_ANSIBALLZ_CACHE", "0")
    spec = importlib.util.spec_from_file_location("ansiballz_bytecode_off", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.install() is False
    assert zipimport._compile_source is original


def test_the_controller_venv_installs_it() -> None:
    """The interpreter that runs these tests (and every localhost module) has the hook from its .pth file."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"not running in the project's controller venv ({sys.prefix})")
    assert "dlfleet_ansiballz_bytecode" in sys.modules
    assert zipimport._compile_source.__module__ == "dlfleet_ansiballz_bytecode"
    installed = Path(sys.modules["dlfleet_ansiballz_bytecode"].__file__)
    assert installed.read_bytes() == SOURCE.read_bytes(), "the venv's copy is stale: run make venv"
    shared = Path(sys.modules["dlfleet_venv_cache"].__file__)
    assert shared.read_bytes() == (ROOT / "scripts" / "dlfleet_venv_cache.py").read_bytes(), "stale: run make venv"
