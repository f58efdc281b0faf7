#!/usr/bin/env python3
"""Build the dlfleet Ansible collection from the project's own sources (`make collection`).

The project is laid out as a playbook project (library/, module_utils/, roles/ at the top): that is how it is used
and tested. The collection is derived from those sources and collection/galaxy.yml; nothing is kept twice:

    library/*.py                  -> plugins/modules/
    module_utils/*.py             -> plugins/module_utils/   (imports rewritten to the collection's namespace)
    doc_fragments/*.py            -> plugins/doc_fragments/  (modules reference them by their full name)
    playbooks/action_plugins/*.py -> plugins/action/         (the modules they run named in full)
    playbooks/filter_plugins/*.py -> plugins/filter/
    roles/<role>/library/*.py     -> plugins/modules/        (a collection's modules live in plugins/, where
    roles/<role>/action_plugins/  -> plugins/action/          ansible-test checks them; the role finds them there)
    roles/<role>/                 -> roles/<role>/           (without molecule/; modules and filters named in full)
    LICENSE, collection/README.md -> LICENSE, README.md      (the README's module table from each module's docs)
    tests/unit/test_*.py          -> tests/unit/plugins/module_utils/ (those that need nothing but module_utils and
                                  installed packages, for `ansible-test units`; the rest need the repository)
    meta/runtime.yml              generated: requires_ansible, and the action group `aws`, which extends amazon.aws's
                                  own `aws` group, so that one `module_defaults: group/<ns>.<name>.aws` entry
                                  reaches dlfleet's AWS modules and amazon.aws's.

Usage: build_collection.py [--out DIR] [--no-archive]
Prints the path of the archive (or of the collection tree with --no-archive).
"""

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("dlami", "mxnet_train")


def module_docs(path):
    """DOCUMENTATION of a module file, parsed, without importing it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(node.value.value) or {}
    raise SystemExit(f"{path}: no DOCUMENTATION")


def fragment_options(fragments, refs):
    options = {}
    for ref in refs or []:
        name, _, var = ref.partition(".")
        text = fragments.get(name, {}).get((var or "DOCUMENTATION").upper())
        if text:
            options.update((yaml.safe_load(text) or {}).get("options") or {})
    return options


def read_fragments():
    """doc_fragments/<name>.py -> {name: {"DOCUMENTATION": text, "<VAR>": text}} (class ModuleDocFragment)."""
    found = {}
    for path in sorted((ROOT / "doc_fragments").glob("*.py")) if (ROOT / "doc_fragments").is_dir() else []:
        tree = ast.parse(path.read_text(), filename=str(path))
        texts = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "ModuleDocFragment":
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                        for target in item.targets:
                            texts[target.id] = item.value.value
        found[path.stem] = texts
    return found


def rewrite_python(text, fqcn, module_names, fragment_names):
    """module_utils imports, doc fragments, M() references and EXAMPLES' task keys in the collection's names."""
    prefix = f"ansible_collections.{fqcn}.plugins.module_utils"
    text = re.sub(r"\bansible\.module_utils\.(dlfleet_\w+)", rf"{prefix}.\1", text)
    text = re.sub(r"\bfrom ansible\.module_utils import (dlfleet_\w+)", rf"from {prefix} import \1", text)
    if fragment_names:
        names = "|".join(map(re.escape, sorted(fragment_names)))
        text = re.sub(rf"^(\s*-\s*)({names})((?:\.\w+)?\s*)$", rf"\1{fqcn}.\2\3", text, flags=re.M)
    modules = "|".join(map(re.escape, sorted(module_names)))
    text = re.sub(rf"\bM\(({modules})\)", rf"M({fqcn}.\1)", text)
    start = text.find("EXAMPLES = r")
    if start >= 0:
        end = text.find('"""', text.find('"""', start) + 3)
        examples = re.sub(rf"^(\s+)({modules}):", rf"\1{fqcn}.\2:", text[start:end], flags=re.M)
        text = text[:start] + examples + text[end:]
    return text


def rewrite_action(text, fqcn, module_names):
    names = "|".join(map(re.escape, sorted(module_names)))
    return re.sub(rf"""(["'])({names})\1""", rf"\1{fqcn}.\2\1", text)


def rewrite_role_text(text, fqcn, filter_names, module_names):
    """Filters (which a role resolves only by full name) and task modules in the collection's names."""
    if filter_names:
        names = "|".join(map(re.escape, sorted(filter_names)))
        text = re.sub(rf"(\|\s*)({names})\b", rf"\1{fqcn}.\2", text)
    modules = "|".join(map(re.escape, sorted(module_names)))
    return re.sub(rf"^(\s+(?:-\s+)?)({modules}):", rf"\1{fqcn}.\2:", text, flags=re.M)


# Project-only imports: a unit test that uses one of these needs the repository, not just the collection.
PROJECT_IMPORTS = {"helpers", "playbooks", "library", "sagemaker_local", "scripts", "fleet_network", "siterun",
                   "testhosts", "faultproxy"}


def portable_unit_tests():
    """tests/unit files whose imports are module_utils, the standard library and installed packages only."""
    found = []
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        tops = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                tops.add(node.module.split(".")[0])
        uses_module_utils = "ansible.module_utils.dlfleet" in path.read_text() or \
            "from ansible.module_utils import dlfleet" in path.read_text()
        if uses_module_utils and not tops & PROJECT_IMPORTS and "ROOT" not in path.read_text():
            found.append(path)
    return found


def filter_names():
    names = set()
    for path in (ROOT / "playbooks" / "filter_plugins").glob("*.py"):
        names.update(re.findall(r"""["'](dlfleet_\w+)["']\s*:""", path.read_text()))
    return names


def build(out, archive=True):
    meta = yaml.safe_load((ROOT / "collection" / "galaxy.yml").read_text())
    fqcn = f"{meta['namespace']}.{meta['name']}"
    tree = out / "ansible_collections" / meta["namespace"] / meta["name"]
    if tree.exists():
        shutil.rmtree(tree)
    plugins = tree / "plugins"
    modules = sorted((ROOT / "library").glob("*.py"))
    modules += sorted(p for role in ROLES for p in (ROOT / "roles" / role / "library").glob("*.py"))
    actions = sorted((ROOT / "playbooks" / "action_plugins").glob("*.py"))
    actions += sorted(p for role in ROLES for p in (ROOT / "roles" / role / "action_plugins").glob("*.py"))
    module_names = {p.stem for p in modules}
    fragments = read_fragments()
    filters = filter_names()

    def copy_py(src, dest_dir, action=False):
        dest_dir.mkdir(parents=True, exist_ok=True)
        text = rewrite_python(src.read_text(), fqcn, module_names, fragments)
        if action:
            text = rewrite_action(text, fqcn, module_names)
        (dest_dir / src.name).write_text(text)

    for src in modules:
        copy_py(src, plugins / "modules")
    for src in sorted((ROOT / "module_utils").glob("*.py")):
        copy_py(src, plugins / "module_utils")
    for src in sorted((ROOT / "doc_fragments").glob("*.py")) if fragments else []:
        copy_py(src, plugins / "doc_fragments")
    for src in actions:
        copy_py(src, plugins / "action", action=True)
    for src in sorted((ROOT / "playbooks" / "filter_plugins").glob("*.py")):
        copy_py(src, plugins / "filter")

    for role in ROLES:
        dest = tree / "roles" / role
        shutil.copytree(ROOT / "roles" / role, dest,
                        ignore=shutil.ignore_patterns("library", "action_plugins", "molecule", "__pycache__", "*.pyc"))
        for path in dest.rglob("*"):
            if path.suffix in (".yml", ".yaml", ".j2"):
                path.write_text(rewrite_role_text(path.read_text(), fqcn, filters, module_names))

    unit_dir = tree / "tests" / "unit" / "plugins" / "module_utils"
    unit_dir.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "unit" / "conftest.py", unit_dir / "conftest.py")
    # What those tests import beyond ansible-core and pytest, at the controller's pinned versions.
    lock = (ROOT / "requirements" / "controller.txt").read_text().splitlines()
    (tree / "tests" / "unit" / "requirements.txt").write_text(
        "".join(f"{line}\n" for line in lock if line.split("==")[0].lower() in ("boto3", "botocore")))
    for src in portable_unit_tests():
        (unit_dir / src.name).write_text(rewrite_python(src.read_text(), fqcn, module_names, {}))

    aws_modules, rows = [], []
    for src in modules:
        doc = module_docs(src)
        options = dict(fragment_options(fragments, doc.get("extends_documentation_fragment")))
        options.update(doc.get("options") or {})
        refs = doc.get("extends_documentation_fragment") or []
        if "region" in options or any(ref.startswith("amazon.aws.") for ref in refs):
            aws_modules.append(src.stem)
        rows.append(f"| `{fqcn}.{src.stem}` | {doc.get('short_description', '')} |")
    (tree / "meta").mkdir(parents=True)
    runtime = {
        "requires_ansible": ">=2.19.0",
        "action_groups": {"aws": [{"metadata": {"extend_group": ["amazon.aws.aws"]}}, *aws_modules]},
    }
    (tree / "meta" / "runtime.yml").write_text(yaml.safe_dump(runtime, sort_keys=False))

    shutil.copy(ROOT / "LICENSE", tree / "LICENSE")
    readme = (ROOT / "collection" / "README.md").read_text()
    table = "| module | what it does |\n|---|---|\n" + "\n".join(rows)
    (tree / "README.md").write_text(readme.replace("MODULE_TABLE", table))
    shutil.copy(ROOT / "collection" / "galaxy.yml", tree / "galaxy.yml")

    if not archive:
        return tree
    dist = out / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ansible-galaxy", "collection", "build", str(tree), "--output-path", str(dist), "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    return dist / f"{meta['namespace']}-{meta['name']}-{meta['version']}.tar.gz"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".run" / "collection"),
                        help="build folder (default .run/collection)")
    parser.add_argument("--no-archive", action="store_true", help="lay out the collection tree only")
    args = parser.parse_args()
    print(build(Path(args.out).resolve(), archive=not args.no_archive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
