"""scripts/ansiballz_deps.py: the controller venv's cache of what each module_utils file imports.

Each test loads its own copy of the module with its cache in a temporary directory and patches ansible-core's real
`ansible.executor.module_common` with it; ansible-core's own functions are put back afterwards. Payloads are built
by ansible-core's real `recursive_finder`, from the project's modules and amazon.aws's and ansible-core's.
"""
from __future__ import annotations

import datetime
import importlib.util
import io
import stat
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from ansible.errors import AnsibleError
from ansible.executor import module_common
from ansible.plugins.loader import module_loader, module_utils_loader
from dlfleet_venv_cache import PatchOnImport, _PatchingLoader
from helpers import ROOT, collection_loader

SOURCE = ROOT / "scripts" / "ansiballz_deps.py"
DATE = datetime.datetime(2026, 1, 1)


def _core(function):
    while getattr(function, "dlfleet_ansiballz_deps", False):
        function = function.__wrapped__
    return function


CORE_COMPILE = _core(module_common._compile_module_ast)
CORE_FINDER_INIT = _core(module_common.ModuleDepFinder.__init__)


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ansible-core's own functions in module_common (put back as they were afterwards); the list of the names
    of the sources it parses."""
    parsed: list[str] = []

    def counting_compile(module_name, source_code):
        parsed.append(module_name)
        return CORE_COMPILE(module_name, source_code)

    monkeypatch.setattr(module_common, "_compile_module_ast", counting_compile)
    monkeypatch.setattr(module_common.ModuleDepFinder, "__init__", CORE_FINDER_INIT)
    return parsed


@pytest.fixture
def deps(core: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A copy of scripts/ansiballz_deps.py with its cache under tmp_path, patched into module_common."""
    monkeypatch.delenv("DLFLEET_ANSIBALLZ_CACHE", raising=False)
    monkeypatch.delenv("DLFLEET_ANSIBALLZ_DEPS", raising=False)
    spec = importlib.util.spec_from_file_location("ansiballz_deps_under_test", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # install(): module_common is imported already, so it is patched now
    monkeypatch.setattr(module, "CACHE_DIR", str(tmp_path / "cache"))
    assert module_common._compile_module_ast.dlfleet_ansiballz_deps
    return module


@pytest.fixture
def loaders() -> Iterator[None]:
    """Ansible's plugin loaders as a playbook run in the project has them: collections, the project's module_utils."""
    with collection_loader():
        module_utils_loader.add_directory(str(ROOT / "module_utils"))
        yield


def payload(path: Path, module_fqn: str) -> dict[str, bytes]:
    """What ansible-core puts into a module's payload besides the module itself: each module_utils file, by name."""
    data = path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        module_common.recursive_finder(path.stem, module_fqn, data, zf, DATE,
                                       module_common._builder.ExtensionManager.create(task_vars={}))
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def modules() -> list[tuple[Path, str]]:
    """The project's modules, and amazon.aws's and ansible-core's that its playbooks run."""
    found = [(path, f"ansible.legacy.{path.stem}") for path in sorted((ROOT / "library").glob("*.py"))]
    found += [(path, f"ansible.legacy.{path.stem}") for path in sorted(ROOT.glob("roles/*/library/*.py"))]
    for name in ("amazon.aws.ec2_key", "amazon.aws.ec2_security_group", "amazon.aws.s3_object",
                 "amazon.aws.ec2_instance_info", "community.crypto.openssh_keypair", "ansible.builtin.command",
                 "ansible.builtin.file"):
        namespace, collection, short = name.split(".")
        fqn = (f"ansible.modules.{short}" if namespace == "ansible" else
               f"ansible_collections.{namespace}.{collection}.plugins.modules.{short}")
        found.append((Path(module_loader.find_plugin(name)), fqn))
    return found


def test_payloads_are_the_same_byte_for_byte_with_and_without_the_cache(loaders, core, tmp_path, monkeypatch):
    """Every module's payload: ansible-core alone, then with the cache filling, then from the cache. The last
    parses no module_utils file at all."""
    without = {fqn: payload(path, fqn) for path, fqn in modules()}
    spec = importlib.util.spec_from_file_location("ansiballz_deps_payloads", SOURCE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setenv("DLFLEET_ANSIBALLZ_DEPS", "0")   # loaded switched off: patched below, with the cache here
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CACHE_DIR", str(tmp_path / "cache"))
    assert module.patch(module_common)
    core.clear()
    filling = {fqn: payload(path, fqn) for path, fqn in modules()}
    assert len(core) > 100   # every module_utils file, parsed once per payload
    core.clear()
    cached = {fqn: payload(path, fqn) for path, fqn in modules()}
    assert core == []
    assert len(without) >= 22
    for fqn, files in without.items():
        assert filling[fqn] == files, fqn
        assert cached[fqn] == files, fqn
        assert any(name.startswith("ansible/module_utils/basic") for name in files), fqn
    fleet = without["ansible.legacy.ec2_gpu_fleet"]
    assert "ansible/module_utils/dlfleet_fleet.py" in fleet
    assert "ansible_collections/amazon/aws/plugins/module_utils/botocore.py" in fleet


def finder(source: str, module_fqn: str = "ansible.module_utils.pkg.mod", is_pkg_init: bool = False):
    tree = module_common._compile_module_ast(module_fqn, source.encode())
    found = module_common.ModuleDepFinder(module_fqn, tree, is_pkg_init)
    return found.submodules, found.optional_imports


def core_finder(source: str, module_fqn: str = "ansible.module_utils.pkg.mod", is_pkg_init: bool = False):
    found = module_common.ModuleDepFinder.__new__(module_common.ModuleDepFinder)
    CORE_FINDER_INIT(found, module_fqn, CORE_COMPILE(module_fqn, source.encode()), is_pkg_init)
    return found.submodules, found.optional_imports


SOURCES = {
    "absolute": "from ansible.module_utils.basic import AnsibleModule\nimport ansible.module_utils.common.text\n",
    "optional": "try:\n    from ansible.module_utils.six import PY3\nexcept ImportError:\n    pass\n"
                "from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code\n",
    "relative": "from . import sibling\nfrom .. import uncle\nfrom .cousin import thing\n",
    "none": "import os\nimport json\n",
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_finder_answers_as_ansible_core_does(deps, core, name):
    expected = core_finder(SOURCES[name])
    assert finder(SOURCES[name]) == expected   # filling
    core.clear()
    assert finder(SOURCES[name]) == expected   # from the cache
    assert core == []


def test_the_answer_depends_on_the_name_and_on_being_a_package(deps, core):
    """A relative import means another module for another name, and one level more in a package __init__."""
    source = SOURCES["relative"]
    cases = [("ansible.module_utils.a.b", False), ("ansible.module_utils.a.b", True),
             ("ansible.module_utils.c.d.e", False)]
    first = {case: finder(source, *case) for case in cases}
    assert len({frozenset(subs) for subs, _ in first.values()}) == 3
    core.clear()
    for case in cases:
        assert finder(source, *case) == first[case] == core_finder(source, *case)


def test_a_changed_source_is_parsed_again(deps, core):
    before = "from ansible.module_utils.basic import AnsibleModule\n"
    after = "from ansible.module_utils.urls import open_url\n"
    assert finder(before)[0] == {("ansible", "module_utils", "basic", "AnsibleModule")}
    core.clear()
    assert finder(after)[0] == {("ansible", "module_utils", "urls", "open_url")}
    assert core == ["ansible.module_utils.pkg.mod"]


def test_a_corrupt_or_unreadable_entry_is_parsed_again(deps, core):
    source = SOURCES["optional"]
    expected = finder(source)
    entries = list(Path(deps.CACHE_DIR).iterdir())
    assert len(entries) == 1
    for garbage in (b"", b"{not json", b"[1, 2]", b'{"ansible.module_utils.pkg.mod\\u00000": {"submodules": 5}}',
                    b'{"ansible.module_utils.pkg.mod\\u00000": {"submodules": [], "optional_imports": [["x"]]}}'):
        entries[0].write_bytes(garbage)
        core.clear()
        assert finder(source) == expected
        assert core, garbage   # parsed again
    core.clear()
    assert finder(source) == expected and core == []   # and the entry written again


def test_a_syntax_error_is_reported_as_ansible_core_reports_it(deps):
    with pytest.raises(AnsibleError, match=r"Unable to compile 'ansible\.module_utils\.broken'"):
        module_common._compile_module_ast("ansible.module_utils.broken", b"def broken(:\n")
    assert not Path(deps.CACHE_DIR).exists() or not list(Path(deps.CACHE_DIR).iterdir())


def test_entries_are_private_and_bounded(deps, monkeypatch):
    monkeypatch.setattr(deps, "MAX_ENTRIES", 4)
    for i in range(9):
        finder(f"from ansible.module_utils.m{i} import x\n")
    cache = Path(deps.CACHE_DIR)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    entries = list(cache.iterdir())
    assert 2 <= len(entries) <= 4
    assert all(stat.S_IMODE(entry.stat().st_mode) == 0o600 for entry in entries)
    assert not [entry for entry in entries if entry.name.endswith(".tmp")]


@pytest.mark.parametrize("switch", ["DLFLEET_ANSIBALLZ_DEPS", "DLFLEET_ANSIBALLZ_CACHE"])
def test_switched_off_by_the_environment(core, monkeypatch, switch):
    monkeypatch.setenv(switch, "0")
    spec = importlib.util.spec_from_file_location("ansiballz_deps_off", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.install() is False
    assert module_common.ModuleDepFinder.__init__ is CORE_FINDER_INIT
    assert not getattr(module_common._compile_module_ast, "dlfleet_ansiballz_deps", False)


def test_patched_when_module_common_is_imported_later(deps):
    """A new interpreter imports this module at start-up, before Ansible: module_common is patched as it is loaded
    (here a second copy of it, loaded through the hook, outside sys.modules)."""
    import ansible.executor

    spec = PatchOnImport(deps.TARGET, deps.patch).find_spec(deps.TARGET, ansible.executor.__path__)
    assert isinstance(spec.loader, _PatchingLoader)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh is not module_common
    assert fresh._compile_module_ast.dlfleet_ansiballz_deps
    assert fresh.ModuleDepFinder.__init__.dlfleet_ansiballz_deps
    other = "ansible.executor.task_executor"
    assert PatchOnImport(deps.TARGET, deps.patch).find_spec(other, ansible.executor.__path__) is None


def test_the_controller_venv_installs_it() -> None:
    """The interpreter that runs these tests (and every ansible-playbook of the suite) has it from its .pth file."""
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip(f"not running in the project's controller venv ({sys.prefix})")
    assert "dlfleet_ansiballz_deps" in sys.modules
    assert module_common._compile_module_ast.dlfleet_ansiballz_deps
    installed = Path(sys.modules["dlfleet_ansiballz_deps"].__file__)
    assert installed.read_bytes() == SOURCE.read_bytes(), "the venv's copy is stale: run make venv"
    shared = Path(sys.modules["dlfleet_venv_cache"].__file__)
    assert shared.read_bytes() == (ROOT / "scripts" / "dlfleet_venv_cache.py").read_bytes(), "stale: run make venv"
