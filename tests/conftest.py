"""Shared fixtures and the test tiers.

Tiers (folders; each folder's tests carry the marker of its name, set here):
- tests/unit/      marker `unit`: pure logic. No emulator, no subprocess, no root; seconds.
- tests/emulator/  marker `emulator`: modules and playbooks on the controller, against the embedded AWS (a real
                   moto server over HTTP, one per pytest worker) and the fault proxy.
- tests/e2e/       marker `e2e`: the namespaced SSH test hosts (root), kills, multi-host training, the whole
                   `make run` pipeline (and, outside pytest, the molecule scenarios).
- tests/training/  the trainer's own tests, in the training venv (its own pytest.ini).

Under pytest-xdist (`-n N`) each test file runs whole on one worker (the scheduler below), so that module-scoped
fixtures (test hosts on the file's own addresses, emulator state) are made once; files that share a session
fixture (SHARED_GROUPS) run on the same worker. Each worker starts its own emulator on a free port.

Modules import their shared code as `ansible.module_utils.<name>`; the tests import it under that one name too
(the project's module_utils/ joins that package's path here, once), and library modules as `library.<name>`.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ansible.module_utils
import pytest
from faultproxy import faulty_aws  # noqa: F401 - the fault-proxy fixture, defined next to the proxy
from helpers import ROOT, Emulator, read_env

if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))

TIERS = ("e2e", "emulator", "unit", "conformance")
# Files whose tests share one session fixture: they must run on the same xdist worker.
SHARED_GROUPS = {"test_site.py": "site-run", "test_iam_policy.py": "site-run"}


def _tier(path: Path) -> str:
    if path.parent.parent.name == "tests" and path.parent.name in TIERS:
        return path.parent.name
    raise pytest.UsageError(f"{path}: every controller test lives in one of the tier folders: "
                            f"{', '.join('tests/' + tier for tier in TIERS)}")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Each test carries its tier's marker; a unit test may not use the emulator."""
    tier = _tier(Path(str(item.fspath)))
    item.add_marker(getattr(pytest.mark, tier))
    if tier == "unit" and {"emulator", "aws_env", "faulty_aws"} & set(getattr(item, "fixturenames", ())):
        raise pytest.UsageError(f"{item.nodeid} uses the emulator: it belongs in tests/emulator")


# The files that took longest in a serial run (seconds on 2 cores, from --durations: the pipeline 207, provision
# 183, faults 158, multihost 129, SageMaker local 114, secure defaults 104, bad inputs 98, S3 purge 89, SageMaker
# AWS 84, kills 81, secrets 52). xdist hands them out first, so that the longest work starts at once and the
# short files fill the gaps at the end; the rest follow in tier order.
LONGEST_FIRST = ("test_site.py", "test_iam_policy.py", "test_provision.py", "test_faults.py", "test_multihost.py",
                 "test_sagemaker_local.py", "test_secure_defaults.py", "test_bad_inputs.py", "test_s3_purge.py",
                 "test_sagemaker_aws.py", "test_sagemaker_execution_role.py", "test_reaper.py", "test_fleet_scope.py",
                 "test_kills.py", "test_secrets.py", "test_collection.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FIRST), then the others by tier: end to end, emulator, unit."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.fspath))
        if path.name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(path.name)
        return 1, TIERS.index(_tier(path))

    items.sort(key=rank)


class _FileGroups:
    """xdist scheduler: whole test files (module-scoped fixtures such as test hosts on the file's own addresses are
    made once), and the files of SHARED_GROUPS together; work units in collection order."""

    @staticmethod
    def make(config: pytest.Config, log):
        from xdist.scheduler import LoadScopeScheduling

        class FileGroupScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                return SHARED_GROUPS.get(Path(path).name, path)

        config.option.loadscopereorder = False
        return FileGroupScheduling(config, log)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Used by pytest-xdist (`-n N`); its own loadgroup needs the node-id rewrite that pytest 9 no longer takes."""
    return _FileGroups.make(config, log)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A seeded emulator of its own for the test session (under xdist: for each worker), on a free loopback port;
    stopped afterwards."""
    state_dir = tmp_path_factory.mktemp("emulator")
    script = str(ROOT / "scripts/aws-emulator")
    subprocess.run([script, "start", "--state-dir", str(state_dir), "--no-persist"], check=True, timeout=120)
    try:
        env = read_env(state_dir / "env")
        yield Emulator(state_dir, env["AWS_ENDPOINT_URL"], env)
    finally:
        subprocess.run([script, "stop", "--state-dir", str(state_dir)], check=False, timeout=60)


@pytest.fixture
def aws_env(emulator: Emulator) -> dict[str, str]:
    """Environment for an ansible-playbook run against the session emulator."""
    return {**os.environ, **emulator.env}
