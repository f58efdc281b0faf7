"""Every module's DOCUMENTATION (doc fragments resolved by Ansible's own loader) against its argument spec.

For each module in library/ and roles/*/library/: the options documented and the options in the argument spec
given to AnsibleModule / AnsibleAWSModule (AWS connection options included) agree in both directions, suboptions
too, in type, elements, default, choices, required and aliases. EXAMPLES are named tasks that call the module (or an
ansible.builtin action) with documented options only. RETURN is YAML whose every entry (and its contains) carries
only the keys ansible-doc knows, so that no unquoted ": " or ", " leaves a stray key. Every module documents its
attributes (check mode, diff mode, platform), authors and version, and every doc fragment is used.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.plugins.loader import fragment_loader
from ansible.utils.plugin_docs import get_docstring
from helpers import ROOT, collection_loader

MODULES = sorted([*ROOT.glob("library/*.py"), *ROOT.glob("roles/*/library/*.py")])
# Keys a RETURN entry may carry (ansible-test's validate-modules schema for return values).
RETURN_KEYS = {"description", "returned", "type", "sample", "contains", "elements", "version_added"}
COMPARED = ("type", "elements", "default", "choices", "required", "aliases")


class _Captured(Exception):
    """Raised by the stand-in module class once it has the module's keyword arguments."""


@pytest.fixture(scope="module")
def docs() -> dict[Path, Any]:
    """(doc, examples, returns) of every module, or the error that loading it raised, read as ansible-doc reads them:
    through the collection loader (amazon.aws's fragments) and doc_fragments/ (ansible.cfg's doc_fragment_plugins).
    The collection loader is installed for this only: the modules other tests import from ansible_collections stay
    as they were, and so do the import hooks."""
    loaded: dict[Path, Any] = {}
    with collection_loader():
        fragment_loader.add_directory(str(ROOT / "doc_fragments"))
        for path in MODULES:
            try:
                doc, examples, returns, _metadata = get_docstring(str(path), fragment_loader, is_module=True)
                loaded[path] = (doc, examples, returns)
            except Exception as err:  # reported by the test of that module
                loaded[path] = err
    return loaded


def _load(path: Path):
    name = f"_docs_{path.parent.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _docs(docs: dict[Path, Any], path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    if isinstance(docs[path], Exception):
        raise docs[path]
    return docs[path]


def _argument_spec(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The argument spec main() gives to its module class, AnsibleAWSModule's AWS options added as it adds them.
    A module that only documents its action plugin (no main) takes the plugin's ARGUMENT_SPEC."""
    module = _load(path)
    if not hasattr(module, "main"):
        plugin = path.parent.parent / "action_plugins" / path.name
        spec = getattr(_load(plugin), "ARGUMENT_SPEC", None) if plugin.exists() else None
        if spec is None:
            pytest.fail(f"{plugin.relative_to(ROOT)} declares no ARGUMENT_SPEC (for validate_argument_spec) to "
                        f"check {path.name} against")
        return spec
    captured: dict[str, Any] = {}

    def record(aws: bool):
        def stand_in(*_args, **kwargs):
            spec = dict(kwargs.get("argument_spec") or {})
            if aws and kwargs.get("default_args", True):
                from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec

                spec = {**aws_argument_spec(), **spec}
            captured.update(spec)
            raise _Captured
        return stand_in

    for name, aws in (("AnsibleModule", False), ("AnsibleAWSModule", True)):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, record(aws))
    with pytest.raises(_Captured):
        module.main()
    return captured


def _normal(option: dict[str, Any]) -> dict[str, Any]:
    """What Ansible makes of an option's settings when they are left out."""
    kind = option.get("type", "str")
    return {
        "type": kind,
        "elements": option.get("elements"),
        "default": option.get("default"),
        "choices": list(option["choices"]) if option.get("choices") is not None else None,
        "required": bool(option.get("required", False)),
        "aliases": sorted(option.get("aliases") or []),
    }


def _compare(doc: dict[str, Any], spec: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for name in sorted(set(doc) - set(spec)):
        problems.append(f"{where}{name}: documented, not in the argument spec")
    for name in sorted(set(spec) - set(doc)):
        problems.append(f"{where}{name}: in the argument spec, not documented")
    for name in sorted(set(doc) & set(spec)):
        documented, actual = _normal(doc[name]), _normal(spec[name])
        for key in COMPARED:
            if documented[key] != actual[key]:
                problems.append(f"{where}{name}: {key} documented {documented[key]!r}, spec {actual[key]!r}")
        sub_doc, sub_spec = doc[name].get("suboptions") or {}, spec[name].get("options") or {}
        if sub_doc or sub_spec:
            problems.extend(_compare(sub_doc, sub_spec, f"{where}{name}."))
    return problems


def _return_problems(entries: dict[str, Any], where: str = "") -> list[str]:
    problems: list[str] = []
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            problems.append(f"{where}{name}: not a mapping")
            continue
        for key in sorted(set(entry) - RETURN_KEYS):
            problems.append(f"{where}{name}: stray key {key!r} (an unquoted ': ' or ', ' in the text before it?)")
        for key in ("description", "returned", "type"):
            if key not in entry and not (where and key == "returned"):
                problems.append(f"{where}{name}: no {key}")
        if entry.get("type") == "list" and "elements" not in entry and "contains" in entry:
            problems.append(f"{where}{name}: a list with contains needs elements")
        problems.extend(_return_problems(entry.get("contains") or {}, f"{where}{name}."))
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_documented_options_match_the_argument_spec(path: Path, docs: dict[Path, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    doc, _examples, _returns = _docs(docs, path)
    assert doc["module"] == path.stem
    problems = _compare(doc.get("options") or {}, _argument_spec(path, monkeypatch), "")
    assert not problems, f"{path.stem}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_examples_and_return_are_clean_yaml(path: Path, docs: dict[Path, Any]) -> None:
    doc, examples, returns = _docs(docs, path)
    tasks = yaml.safe_load(examples)
    assert isinstance(tasks, list) and tasks, f"{path.stem}: EXAMPLES holds no task"
    options = doc.get("options") or {}
    known = set(options) | {alias for option in options.values() for alias in option.get("aliases") or []}
    for task in tasks:
        assert task.get("name"), f"{path.stem}: an example without a name: {task}"
        actions = [key for key in task if key == path.stem or key.startswith("ansible.builtin.")]
        assert len(actions) == 1, f"{path.stem}: example {task['name']!r} calls {actions or 'nothing known'}"
        if actions == [path.stem]:
            unknown = set(task[path.stem] or {}) - known
            assert not unknown, f"{path.stem}: example {task['name']!r} uses undocumented options {sorted(unknown)}"
    assert isinstance(returns, dict), f"{path.stem}: RETURN is not a mapping"
    problems = _return_problems(returns)
    assert not problems, f"{path.stem}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.stem)
def test_every_module_documents_its_header_attributes_and_authors(path: Path, docs: dict[Path, Any]) -> None:
    doc, _examples, _returns = _docs(docs, path)
    assert doc.get("short_description") and doc.get("description") and doc.get("version_added"), path.stem
    attributes = doc.get("attributes") or {}
    assert {"check_mode", "diff_mode", "platform"} <= set(attributes), f"{path.stem}: attributes {sorted(attributes)}"
    for name, attribute in attributes.items():
        assert attribute.get("support") in ("full", "partial", "none", "N/A"), f"{path.stem}: {name} {attribute}"
        assert attribute.get("description"), f"{path.stem}: attribute {name} has no description (fragment?)"
    authors = doc.get("author")
    authors = [authors] if isinstance(authors, str) else authors
    assert authors and all(author.endswith(")") and "(@" in author for author in authors), authors


def test_every_doc_fragment_is_used() -> None:
    """Each fragment of doc_fragments/ (DOCUMENTATION, or another attribute as NAME.attribute) documents a module."""
    used = set()
    for path in MODULES:
        doc = yaml.safe_load(_load(path).DOCUMENTATION)
        used |= {ref.lower() for ref in doc.get("extends_documentation_fragment") or []}
    for path in sorted(ROOT.glob("doc_fragments/*.py")):
        fragment = _load(path).ModuleDocFragment
        for name in [attr for attr in vars(fragment) if attr.isupper()]:
            ref = path.stem if name == "DOCUMENTATION" else f"{path.stem}.{name.lower()}"
            assert ref in used, f"doc_fragments/{path.name}: {name} is used by no module"
