"""Two hosts (algo-1, algo-2: a network namespace each, names that resolve), through the real training toolkit and
through our local mode: with sagemaker_parameter_server_enabled (the MXNet toolkit starts the scheduler and a server
per host and makes each script a worker) and without it (our own launcher lays out the same job). Either way both
hosts train one model: a worker each, its own shard, identical weights at the end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conformance import sm


def assert_one_job(bases: list[Path], train_images: int) -> None:
    """Every host a worker of one job of len(bases) workers, each on its shard, all ending with the same weights."""
    configs = [json.loads((base / "output" / "data" / "config.json").read_text()) for base in bases]
    assert [c["extra"]["num_workers"] for c in configs] == [len(bases)] * len(bases)
    assert sorted(c["extra"]["rank"] for c in configs) == list(range(len(bases)))
    assert all(c["kvstore"] == "dist_sync" for c in configs)
    shards = [json.loads((base / "output" / "data" / "metrics.jsonl").read_text().splitlines()[-1])["images"]
              for base in bases]
    assert shards == [train_images // len(bases)] * len(bases)
    params = [(base / "model" / "model-0000.params").read_bytes() for base in bases]
    assert all(p == params[0] for p in params[1:])


@pytest.mark.parametrize("parameter_server", [True, False], ids=["parameter-server", "own-launcher"])
def test_two_hosts_train_one_model(parameter_server: bool, work: Path, code: Path, data: Path) -> None:
    folder = work / f"two-hosts-{parameter_server}"
    folder.mkdir()
    hosts = ["algo-1", "algo-2"]
    hps = sm.hyperparameters(sm.TINY_HPS, str(code), parameter_server=parameter_server)
    bases = {h: sm.lay_out_host(folder / h, h, hosts, hps, {"training": data}) for h in hosts}
    codes = sm.run_hosts(folder, bases)
    logs = {h: (folder / f"{h}.out").read_text() for h in hosts}
    assert codes == {"algo-1": 0, "algo-2": 0}, logs["algo-1"][-3000:] + logs["algo-2"][-3000:]
    assert_one_job([bases[h] for h in hosts], sm.SYNTHETIC_SIZE)
    if parameter_server:
        assert all("DMLC_ROLE=worker in a parameter-server job of 2 workers" in log for log in logs.values())
    else:  # our launcher resolved algo-1 before ps-lite got it
        assert "scheduler algo-1 (10.213.0.1:8000)" in logs["algo-1"]
    assert all("of num_workers=2" in log for log in logs.values())

    # our local mode, the same job: the same layout, and a log that shows both workers
    name = f"two-hosts-{'ps' if parameter_server else 'launcher'}"
    request = sm.local_training_request(name, sm.TINY_HPS, code, data, work / "local-out", instance_count=2,
                                        parameter_server=parameter_server)
    job_dir, record = sm.run_local_job(work / "local-jobs", request)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    local_bases = [job_dir / h / "opt" / "ml" for h in hosts]
    assert_one_job(local_bases, sm.SYNTHETIC_SIZE)
    for host, base in zip(hosts, local_bases, strict=True):
        assert (base / "output" / "success").is_file()
        assert "of num_workers=2" in (job_dir / f"{host}.log").read_text(), host
        config = json.loads((base / "output" / "data" / "config.json").read_text())
        assert config["extra"]["num_workers"] == 2, host
