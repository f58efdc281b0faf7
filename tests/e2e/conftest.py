"""End-to-end tier: the namespaced SSH test hosts (root), kills, multi-host training and the whole `make run`."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from siterun import ARTIFACTS, EMULATOR, SiteRun, pipeline


@pytest.fixture(scope="session")
def site_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteRun]:
    """The `make run` pipeline, once per test session, for test_site.py and test_iam_policy.py (one xdist group,
    so both run on the worker that ran it); its emulator is stopped and its artifacts removed afterwards."""
    latest = ARTIFACTS / "latest"
    before = os.readlink(latest) if latest.is_symlink() else None
    root = tmp_path_factory.mktemp("site")
    run = pipeline(root / "emulator", root / "run", f"site-{uuid.uuid4().hex[:6]}")
    yield run
    subprocess.run([str(EMULATOR), "stop", "--state-dir", str(run.state_dir)], check=False,
                   capture_output=True, timeout=120)
    shutil.rmtree(run.artifacts, ignore_errors=True)
    if latest.is_symlink() and os.readlink(latest) == run.fleet:
        latest.unlink()
        if before and (ARTIFACTS / before).exists():
            latest.symlink_to(before)
