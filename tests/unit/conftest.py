"""Unit tier: pure logic only. A test here that starts a process fails and says where it belongs."""
from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unit tests start no process: a test that needs one belongs in tests/emulator or e2e")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
