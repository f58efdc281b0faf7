"""The dlfleet.aws collection (`make collection`, scripts/build_collection.py): built from the project's own sources,
installed with ansible-galaxy into a collections path of its own, and used from a playbook outside the repository
(examples/collection/fleet.yml) against the emulator, by full names and through the collection's action group.
ansible-test sanity on the same build is `make collection-sanity` (scripts/collection-sanity)."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, ansible_env

BIN = Path(sys.executable).parent
SITE_COLLECTIONS = Path(__import__("sysconfig").get_paths()["purelib"])
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))
ROLE_MODULES = sorted(p.stem for p in ROOT.glob("roles/*/library/*.py"))


def outside_env(collections: Path, emulator_env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment with none of the repository's Ansible settings: no ansible.cfg (the run's folder is outside the
    repository), no library/module_utils/roles paths; the installed collection first, then the site's."""
    env = {k: v for k, v in ansible_env().items() if not k.startswith("ANSIBLE_") or k in (
        "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_LOAD_CALLBACK_PLUGINS", "ANSIBLE_NOCOLOR",
        "ANSIBLE_FORCE_COLOR")}
    env.update(emulator_env or {})
    # The region comes from module_defaults alone, as it would for a team whose environment names none.
    env.pop("AWS_REGION", None)
    env.pop("AWS_DEFAULT_REGION", None)
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{collections}{os.pathsep}{SITE_COLLECTIONS}"
    env["ANSIBLE_LOCAL_TEMP"] = str(collections.parent / "tmp")
    return env


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("collection")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    built = subprocess.run([sys.executable, str(ROOT / "scripts/build_collection.py"), "--out", str(out / "build")],
                           env=env, capture_output=True, text=True, check=True, timeout=300)
    archive = Path(built.stdout.strip().splitlines()[-1])
    installed = out / "collections"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(archive), "-p", str(installed)],
                   cwd=out, env=outside_env(installed), capture_output=True, text=True, check=True, timeout=300)
    return archive, installed / "ansible_collections" / "dlfleet" / "aws"


def test_archive_holds_every_module_role_and_the_action_group(collection):
    archive, installed = collection
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for module in MODULES + ROLE_MODULES:
        assert f"plugins/modules/{module}.py" in names, module
    for role in ("dlami", "mxnet_train"):
        assert f"roles/{role}/tasks/main.yml" in names, role
        assert not any(n.startswith(f"roles/{role}/molecule") for n in names), "molecule scenarios are not shipped"
    assert "LICENSE" in names and "meta/runtime.yml" in names and "README.md" in names

    runtime = yaml.safe_load((installed / "meta/runtime.yml").read_text())
    group = runtime["action_groups"]["aws"]
    assert {"metadata": {"extend_group": ["amazon.aws.aws"]}} in group
    for module in ("dlami_info", "ec2_gpu_fleet", "ec2_gpu_quota_info", "sagemaker_training_job"):
        assert module in group
    assert "nvidia_gpu_facts" not in group, "a module that takes no region is not in the AWS group"

    # Every module_utils import and doc fragment reference is the collection's own; nothing reaches the legacy path.
    for path in installed.rglob("*.py"):
        text = path.read_text()
        assert "ansible.module_utils.dlfleet" not in text, path
        assert "from ansible.module_utils import dlfleet" not in text, path
        ast.parse(text, filename=str(path))


def test_ansible_doc_documents_modules_and_roles_by_full_name(collection, tmp_path):
    _, installed = collection
    env = outside_env(installed.parents[2])
    doc = subprocess.run([str(BIN / "ansible-doc"), "--json", "dlfleet.aws.ec2_gpu_fleet", "dlfleet.aws.dlami_info"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert doc.returncode == 0, doc.stderr
    docs = json.loads(doc.stdout)
    assert set(docs) == {"dlfleet.aws.ec2_gpu_fleet", "dlfleet.aws.dlami_info"}
    assert "region" in docs["dlfleet.aws.ec2_gpu_fleet"]["doc"]["options"]
    roles = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "-l", "dlfleet.aws"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert roles.returncode == 0, roles.stderr
    assert "dlfleet.aws.dlami" in roles.stdout and "dlfleet.aws.mxnet_train" in roles.stdout


def test_example_playbook_outside_the_repo_provisions_and_tears_down(collection, emulator, tmp_path):
    _, installed = collection
    playbook = tmp_path / "fleet.yml"
    shutil.copy(ROOT / "examples/collection/fleet.yml", playbook)
    fleet = f"coll-{uuid.uuid4().hex[:8]}"
    env = outside_env(installed.parents[2], emulator.env)
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-e", f"example_fleet={fleet}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout[proc.stdout.find("{"):])
    tasks = {t["task"]["name"]: t["hosts"]["localhost"] for play in data["plays"] for t in play["tasks"]}
    launched = tasks["Launch one GPU instance from the AMI, falling back across the instance types"]
    assert launched["changed"] and len(launched["instances"]) == 1
    assert tasks["Terminate the fleet"]["changed"]

    # What the emulator holds afterwards, read apart from the playbook: the instance is gone, the key pair too.
    ec2 = emulator.client("ec2")
    reservations = ec2.describe_instances(Filters=[{"Name": "tag:dlfleet:fleet", "Values": [fleet]}])["Reservations"]
    states = [i["State"]["Name"] for r in reservations for i in r["Instances"]]
    assert states and set(states) <= {"shutting-down", "terminated"}
    assert not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [fleet]}])["KeyPairs"]


def test_without_module_defaults_the_region_is_missing(collection, emulator, tmp_path):
    """The region in the example comes from the group's module_defaults alone: without them, dlami_info stops."""
    _, installed = collection
    playbook = tmp_path / "bare.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "No module_defaults", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Find the AMI", "dlfleet.aws.dlami_info": {}}]}]))
    env = outside_env(installed.parents[2], emulator.env)
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "region" in (proc.stdout + proc.stderr).lower()
