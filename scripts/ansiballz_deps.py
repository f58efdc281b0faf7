"""Cache of what each module_utils file imports, for the Ansible controller that builds module payloads.

Before it runs a Python module, ansible-core builds its AnsiballZ payload: `recursive_finder` in
`ansible.executor.module_common` parses the module and every module_utils file it reaches into a syntax tree
(`_compile_module_ast`) and walks the tree for imports of `ansible.module_utils.*` and `ansible_collections.*`
(`ModuleDepFinder`). The result is cached for one `ansible-playbook` process only, so every playbook run parses
`ansible.module_utils.basic` and what it imports, and amazon.aws's module_utils, again for each module it uses:
three quarters of the CPU of the task workers of a provision.yml run here (benchmarks/ansiballz_deps).

Installed by the Makefile into the controller venv only (`.venv`, a `.pth` file imports this module at start-up),
it remembers the finder's answer (the imported names, and which of them are optional) for each source text,
keyed by a SHA-256 of the ansible-core version, the Python version and the source, together with the module's
dotted name and whether it is a package `__init__` (the two other inputs the finder's answer depends on). A source
seen before is not parsed again, unless something other than the finder asks for its tree (the module's own
metadata), which then parses it as before. Everything else, where each name is found and what goes into the
payload, is ansible-core's own code: a payload is the same, byte for byte, with and without the cache
(tests/unit/test_ansiballz_deps.py).

The cache is `<venv>/var/cache/ansiballz-deps`, a folder of dlfleet_venv_cache's (private, entries written whole,
at most MAX_ENTRIES of them). A missing, unreadable or corrupt entry means the source is parsed again.
DLFLEET_ANSIBALLZ_DEPS=0 turns it off; DLFLEET_ANSIBALLZ_CACHE=0 turns it off with the payload bytecode cache
(scripts/ansiballz_bytecode.py).
"""
from __future__ import annotations

import os
import sys

from dlfleet_venv_cache import patch_on_import, read_entry, write_entry

MAX_ENTRIES = 4096
CACHE_DIR = os.path.join(sys.prefix, "var", "cache", "ansiballz-deps")
TARGET = "ansible.executor.module_common"


def _key(source) -> str:
    import hashlib

    from ansible.release import __version__

    digest = hashlib.sha256(f"{__version__}\0{sys.version_info[:3]}\0".encode())
    digest.update(source.encode("utf-8", "surrogateescape") if isinstance(source, str) else bytes(source))
    return digest.hexdigest()


def _read(key: str) -> dict | None:
    import json

    data = read_entry(CACHE_DIR, key)
    try:
        entry = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _write(key: str, entry: dict) -> None:
    import json

    write_entry(CACHE_DIR, key, json.dumps(entry, sort_keys=True).encode(), MAX_ENTRIES)


def _slot(module_fqn, is_pkg_init) -> str:
    return f"{module_fqn}\0{int(bool(is_pkg_init))}"


def _answer(entry: dict | None, slot: str):
    """(submodules, optional_imports) as the finder makes them (sets of tuples of str), or None."""
    value = entry.get(slot) if entry else None
    try:
        submodules = {tuple(str(part) for part in name) for name in value["submodules"]}
        optional = {tuple(str(part) for part in name) for name in value["optional_imports"]}
    except (KeyError, TypeError, ValueError):
        return None
    if not optional <= submodules:
        return None
    return submodules, optional


def _unwrapped(function):
    while getattr(function, "dlfleet_ansiballz_deps", False):
        function = function.__wrapped__
    return function


def patch(module_common) -> bool:
    """Put the cache in front of `_compile_module_ast` and `ModuleDepFinder` of ansible-core's module_common."""
    finder_class = module_common.ModuleDepFinder
    # ansible-core's own functions, also where another copy of this module patched them before
    compile_module_ast = _unwrapped(module_common._compile_module_ast)
    finder_init = _unwrapped(finder_class.__init__)

    class SourceTree:
        """A source parsed before: the tree is made only if something other than the finder reads it."""

        def __init__(self, name, source, key: str, entry: dict) -> None:
            self._name, self._source, self.dlfleet_key, self.dlfleet_entry = name, source, key, entry
            self._tree = None

        def tree(self):
            if self._tree is None:
                self._tree = compile_module_ast(self._name, self._source)
            return self._tree

        def __getattr__(self, attr):
            return getattr(self.tree(), attr)

    def cached_compile_module_ast(module_name, source_code):
        key = _key(source_code)
        entry = _read(key)
        if entry:
            return SourceTree(module_name, source_code, key, entry)
        tree = compile_module_ast(module_name, source_code)   # a syntax error is raised here, as before
        tree.dlfleet_key = key
        return tree

    def cached_finder_init(self, module_fqn, tree, is_pkg_init=False, *args, **kwargs):
        key = getattr(tree, "dlfleet_key", None)
        slot = _slot(module_fqn, is_pkg_init)
        answer = _answer(getattr(tree, "dlfleet_entry", None), slot)
        if answer is not None:
            self._tree = None
            self.module_fqn, self.is_pkg_init = module_fqn, is_pkg_init
            self.submodules, self.optional_imports = answer
            return
        if isinstance(tree, SourceTree):
            tree = tree.tree()
        finder_init(self, module_fqn, tree, is_pkg_init, *args, **kwargs)
        if key:
            entry = dict(_read(key) or {})
            entry[slot] = {"submodules": sorted(self.submodules), "optional_imports": sorted(self.optional_imports)}
            _write(key, entry)

    for wrapper, wrapped in ((cached_compile_module_ast, compile_module_ast), (cached_finder_init, finder_init)):
        wrapper.__wrapped__, wrapper.dlfleet_ansiballz_deps = wrapped, True
    module_common._compile_module_ast = cached_compile_module_ast
    finder_class.__init__ = cached_finder_init
    return True


def install() -> bool:
    """Patch module_common when it is imported (or now, where it already is); False where the cache is off."""
    if "0" in (os.environ.get("DLFLEET_ANSIBALLZ_CACHE", "1"), os.environ.get("DLFLEET_ANSIBALLZ_DEPS", "1")):
        return False
    return patch_on_import(TARGET, patch)


install()
