"""Shared test helpers: run real ansible-playbook runs and read their results as JSON."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

from scripts.emulator.cli import read_env  # noqa: F401 - the emulator's env file, read where it is written

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _is_collection_module(name: str) -> bool:
    return name == "ansible_collections" or name.startswith("ansible_collections.")


@contextlib.contextmanager
def collection_loader() -> Iterator[None]:
    """Ansible's collection loader installed in this process for a while, as ansible-doc and ansible-playbook have
    it: the modules other tests imported from ansible_collections (without the loader's metadata) are set aside and
    put back afterwards, and so are the import hooks."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_collection_module(name)}
    meta_path, path_hooks = list(sys.meta_path), list(sys.path_hooks)
    try:
        init_plugin_loader([])
        yield
    finally:
        _AnsibleCollectionFinder._remove()
        sys.meta_path[:], sys.path_hooks[:] = meta_path, path_hooks
        for name in [name for name in sys.modules if _is_collection_module(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path_importer_cache.clear()


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    data: dict[str, Any] = field(default_factory=dict)

    def stats(self, host: str = "localhost") -> dict[str, int]:
        return self.data.get("stats", {}).get(host, {})

    @property
    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.data.get("stats", {}).values())

    @property
    def failed(self) -> int:
        return sum(s.get("failures", 0) + s.get("unreachable", 0) for s in self.data.get("stats", {}).values())

    def results(self, task_name: str, host: str = "localhost") -> dict[str, Any]:
        """The result of the last task called `task_name` on `host`."""
        found = None
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == task_name and host in task["hosts"]:
                    found = task["hosts"][host]
        if found is None:
            raise KeyError(f"no task {task_name!r} on {host} in:\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
        return found

    def all_results(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                for host, res in task["hosts"].items():
                    out.append((task["task"]["name"], host, res))
        return out


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    env.update(extra or {})
    return env


def run_playbook(
    playbook: str | Path,
    *,
    extra_vars: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
    diff: bool = False,
    inventory: str | Path | None = None,
    tags: list[str] | None = None,
    args: list[str] | None = None,
    timeout: int = 900,
    json_output: bool = True,
) -> PlaybookResult:
    """Run a real ansible-playbook from the project root; stdout is parsed as the json callback's."""
    cmd = [str(BIN / "ansible-playbook"), str(playbook)]
    if inventory:
        cmd += ["-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if tags:
        cmd += ["--tags", ",".join(tags)]
    cmd += args or []
    run_env = ansible_env(env) if json_output else {**ansible_env(env), "ANSIBLE_STDOUT_CALLBACK": "default"}
    proc = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
    data: dict[str, Any] = {}
    if json_output:
        start = proc.stdout.find("{")
        if start >= 0:
            try:
                data = json.loads(proc.stdout[start:])
            except json.JSONDecodeError:
                data = {}
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr, data)


def run_task(
    module: str,
    module_args: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    check: bool = False,
    diff: bool = False,
    name: str = "Run the module under test",
    timeout: int = 900,
) -> tuple[PlaybookResult, dict[str, Any]]:
    """Run one module as one task on localhost through ansible-playbook; return (run, task result)."""
    play = [{
        "name": "Module under test",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": name, module: module_args}],
    }]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT / "tests", prefix=".tmp-play-", delete=False) as fh:
        yaml.safe_dump(play, fh)
        path = Path(fh.name)
    try:
        run = run_playbook(path, env=env, check=check, diff=diff, timeout=timeout)
    finally:
        path.unlink(missing_ok=True)
    try:
        return run, run.results(name)
    except KeyError:
        return run, {"failed": True, "msg": run.stderr or run.stdout}


@dataclass
class Emulator:
    state_dir: Path
    endpoint: str
    env: dict[str, str]

    def client(self, service: str, region: str = "us-east-1"):
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def reset(self) -> None:
        """Wipe all emulator state and seed it again (between tests that need a clean account)."""
        subprocess.run([str(ROOT / "scripts/aws-emulator"), "reset", "--state-dir", str(self.state_dir)],
                       check=True, capture_output=True, text=True)


def plain_inventory_value(value):
    """ansible-inventory marks values that came from AWS as unsafe: {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain_inventory_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_inventory_value(v) for v in value]
    return value
