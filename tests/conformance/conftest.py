"""Fixtures of the conformance tier: one generated data set, our code archives, and one real training job (the image's
`train` entry point, one host) whose model the serving tests use."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from conformance import sm
from conformance.sm import Job, toolkit_job
from helpers import ROOT


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sm.require_py38()
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="session")
def data(work: Path) -> Path:
    """The training channel: our generator's synthetic CIFAR-10 (256 training / 51 test images)."""
    return sm.generate_data(work / "data")


@pytest.fixture(scope="session")
def code(work: Path) -> Path:
    """sourcedir.tar.gz of training/, from our packer with the playbook's excludes."""
    return sm.pack_code(ROOT / "training", work / "sourcedir.tar.gz")


@pytest.fixture(scope="session")
def trained(work: Path, code: Path, data: Path) -> Job:
    """A job with a CheckpointConfig (its local path made, as SageMaker makes it), through the real toolkit."""
    return toolkit_job(work, "trained", sm.TINY_HPS, code, data, checkpoints=True)


@pytest.fixture(scope="session")
def model_archive(trained: Job, work: Path) -> Path:
    """model.tar.gz as SageMaker packs /opt/ml/model at the end of the job."""
    assert trained.rc == 0, trained.log[-3000:]
    archive = work / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((trained.base / "model").iterdir()):
            tar.add(path, arcname=path.name)
    return archive
