"""The roles' declared inputs (meta/argument_specs.yml) against what the roles hold and read.

For each role: every default in defaults/main.yml has a spec entry with the same default, and every spec entry
has a default or is required. Ansible renders a spec's whole text before it validates (a spec default that is
a template would be rendered before the facts it needs are there), so a default that is a template has no
`default` in the spec: the spec's description says it instead. Every variable of the role's namespace that
its tasks, vars, handlers or templates use is declared in the spec, or set by the role itself (its outputs).
And a role is self-contained: its templates read only its own variables, its internal `__` ones, what it
registers, and Ansible's magic variables and facts.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest
import yaml
from helpers import ROOT

ROLES = ["dlami", "mxnet_train"]
TEMPLATE = re.compile(r"{{|{%")
# Task keywords whose value is a bare Jinja expression (no braces).
EXPRESSION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}
# Ansible's magic variables, connection variables, facts and Jinja/Ansible globals that a role may read.
MAGIC = {"inventory_hostname", "hostvars", "groups", "group_names", "item", "omit", "ansible_facts",
         "ansible_play_hosts", "ansible_play_hosts_all", "ansible_check_mode", "ansible_failed_task",
         "ansible_failed_result", "ansible_user", "ansible_host", "ansible_local",
         "range", "dict", "namespace", "lookup", "query", "q", "now", "none", "true", "false",
         "None", "True", "False"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _spec(role: str) -> dict[str, dict[str, Any]]:
    return _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]


def _is_template(value: Any) -> bool:
    if isinstance(value, str):
        return bool(TEMPLATE.search(value))
    if isinstance(value, list):
        return any(_is_template(v) for v in value)
    if isinstance(value, dict):
        return any(_is_template(v) for v in value.values())
    return False


def _role_files(role: str) -> list[Path]:
    base = ROOT / "roles" / role
    return sorted([*base.glob("tasks/*.yml"), *base.glob("handlers/*.yml"), *base.glob("vars/*.yml"),
                   *base.glob("templates/**/*"), *base.glob("defaults/*.yml")])


def _walk(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, scalar) pair of a YAML document, with the key the scalar sits under."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node


def _set_by_role(role: str) -> set[str]:
    """Names the role defines itself: set_fact keys, registered results, loop variables, vars/ and task vars."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("ansible.builtin.set_fact", "set_fact", "vars") and isinstance(v, dict):
                    names.update(v)
                elif k in ("register", "loop_var") and isinstance(v, str):
                    names.add(v)
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    base = ROOT / "roles" / role
    for path in [*base.glob("tasks/*.yml"), *base.glob("handlers/*.yml")]:
        visit(_load(path))
    names.update(_load(base / "vars" / "main.yml") or {})
    return names


class _AnyName(dict):
    """Filters and tests by any name (Ansible's are not loaded here; only the names read matter)."""

    def __contains__(self, name: object) -> bool:
        return True

    def get(self, name: str, default: Any = None) -> Any:
        return lambda *args, **kwargs: None


def _read_variables(role: str) -> dict[str, set[str]]:
    """The variables each file of the role reads in its templates and conditions, by file."""
    env = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
    env.filters = _AnyName()
    env.tests = _AnyName()
    found: dict[str, set[str]] = {}
    for path in _role_files(role):
        if path.suffix not in (".yml", ".yaml", ".j2"):
            continue
        if path.suffix == ".j2":
            sources = [path.read_text()]
        else:
            sources = []
            for key, value in _walk(_load(path)):
                if not isinstance(value, str):
                    continue
                if key in EXPRESSION_KEYS and not TEMPLATE.search(value):
                    sources.append("{{ " + value + " }}")
                elif TEMPLATE.search(value):
                    sources.append(value)
        names: set[str] = set()
        for source in sources:
            # (Jinja's own tracking reports a name set at the top and read inside a loop as undeclared)
            assigned = set(re.findall(r"{%-?\s*set\s+(\w+)", source))
            names |= jinja2.meta.find_undeclared_variables(env.parse(source)) - assigned
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize("role", ROLES)
def test_spec_and_defaults_agree(role: str) -> None:
    defaults = _load(ROOT / "roles" / role / "defaults" / "main.yml") or {}
    options = _spec(role)["main"]["options"]
    problems = []
    for name, value in defaults.items():
        option = options.get(name)
        if option is None:
            problems.append(f"{name}: in defaults/main.yml, not in meta/argument_specs.yml")
        elif _is_template(value):
            if "default" in option:
                problems.append(f"{name}: a template default ({value!r}) must not be a spec default (Ansible "
                                "renders the spec before the role runs); say it in the description")
            elif "default" not in " ".join(option.get("description") or []
                                           if isinstance(option.get("description"), list)
                                           else [option.get("description") or ""]).lower():
                problems.append(f"{name}: its description must say what the default is")
        elif option.get("default") != value:
            problems.append(f"{name}: spec default {option.get('default')!r} != defaults/main.yml {value!r}")
    for name, option in options.items():
        if name not in defaults and not option.get("required"):
            problems.append(f"{name}: in the spec with neither a default in defaults/main.yml nor required: true")
        if option.get("required") and name in defaults:
            problems.append(f"{name}: required in the spec but has a default in defaults/main.yml")
        if "type" not in option or not option.get("description"):
            problems.append(f"{name}: needs a type and a description")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_variable_used_is_declared(role: str) -> None:
    declared = {name for entry in _spec(role).values() for name in (entry.get("options") or {})}
    own = _set_by_role(role)
    # the role's own modules and action plugins share its prefix; they are task keys, not variables
    plugins = {p.stem for p in (ROOT / "roles" / role).glob("*/*.py")}
    pattern = re.compile(rf"(?<![\w.]){role}_\w+")
    problems = []
    for path in _role_files(role):
        if path.suffix not in (".yml", ".yaml", ".j2") or path.parent.name == "defaults":
            continue
        if path.suffix == ".j2":
            text = path.read_text()
        else:  # the values only: not the task names and tags, which name variables without reading them
            text = "\n".join(str(v) for k, v in _walk(_load(path)) if k not in ("name", "tags"))
        used = set(pattern.findall(text)) - plugins
        for name in sorted(used - declared - own):
            problems.append(f"{path.relative_to(ROOT)}: {name} is neither in meta/argument_specs.yml nor set by "
                            "the role")
    assert not problems, "\n".join(problems)


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
@pytest.mark.parametrize("role", ROLES)
def test_role_reads_only_its_own_variables(role: str) -> None:
    allowed = _set_by_role(role) | MAGIC
    problems = []
    for path, names in _read_variables(role).items():
        for name in sorted(names):
            if name.startswith((f"{role}_", "__", "ansible_")) or name in allowed:
                continue
            problems.append(f"{path}: reads {name}, which the role does not define (make it a role variable)")
    assert not problems, "\n".join(problems)


def test_the_roles_have_the_projects_licence() -> None:
    for role in ROLES:
        meta = _load(ROOT / "roles" / role / "meta" / "main.yml")
        assert meta["galaxy_info"]["license"] == "GPL-3.0-or-later", role
