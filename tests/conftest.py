"""Session fixtures: the embedded AWS emulator (a real moto server over HTTP on loopback)."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from faultproxy import faulty_aws  # noqa: F401 - the fault-proxy fixture, defined next to the proxy
from helpers import ROOT, read_env


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


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A seeded emulator of its own for the test session, on a free loopback port; stopped afterwards."""
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
