"""dlfleet_s3_purge and teardown's removal of the run's S3 prefix, on the emulator's S3 (real HTTP, real listing)."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import run_playbook, run_task

PREFIX = "run-1"


PARTS = 30  # data objects under the run's prefix in every test's bucket


def _put_parts(s3, bucket: str, start: int, count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{PREFIX}/data/part-{i:05d}", Body=b"x" * 10),
                      range(start, start + count)))


@pytest.fixture
def bucket(emulator) -> str:
    """A bucket holding the run's prefix (data parts and a model), a neighbour run whose name starts the same
    (run-10/), and a key outside both."""
    s3 = emulator.client("s3")
    name = f"dlfleet-purge-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    _put_parts(s3, name, 0, PARTS)
    s3.put_object(Bucket=name, Key=f"{PREFIX}/output/model.tar.gz", Body=b"m" * 1000)
    s3.put_object(Bucket=name, Key="run-10/data/keep", Body=b"k")
    s3.put_object(Bucket=name, Key="README", Body=b"r")
    return name


def _keys(emulator, bucket: str) -> list[str]:
    pages = emulator.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_check_mode_lists_and_deletes_nothing(emulator, aws_env, bucket) -> None:
    _, result = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": PREFIX}, env=aws_env, check=True,
                         diff=True)
    assert result["changed"] is True, result
    assert result["removed_objects"] == PARTS + 1 and result["removed_bytes"] == PARTS * 10 + 1000
    assert result["prefix"] == "run-1/" and len(result["sample"]) == 20
    assert result["diff"] == {"before": {"objects": PARTS + 1}, "after": {"objects": 0}}
    assert len(_keys(emulator, bucket)) == PARTS + 3  # nothing went


def test_removes_only_the_prefix_then_is_a_no_op(emulator, aws_env, bucket) -> None:
    _put_parts(emulator.client("s3"), bucket, PARTS, 2050 - PARTS)  # 2,051 keys: three DeleteObjects batches
    _, result = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": f"{PREFIX}/"}, env=aws_env)
    assert result["changed"] is True and result["removed_objects"] == 2051, result
    assert result["remaining_objects"] == 0
    assert sorted(_keys(emulator, bucket)) == ["README", "run-10/data/keep"]  # the neighbour run-10/ stays
    _, again = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": PREFIX}, env=aws_env)
    assert again["changed"] is False and again["removed_objects"] == 0, again


def test_versioned_bucket_loses_old_versions_only_when_asked(emulator, aws_env, bucket) -> None:
    s3 = emulator.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/output/model.tar.gz", Body=b"v2")  # a second version

    def versions() -> int:
        listing = s3.list_object_versions(Bucket=bucket, Prefix=f"{PREFIX}/output/")
        return len(listing.get("Versions", [])) + len(listing.get("DeleteMarkers", []))

    _, current = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": f"{PREFIX}/output", "all_versions": False},
                          env=aws_env)
    assert current["changed"] is True and current["removed_objects"] == 1, current
    assert versions() == 3  # both versions kept behind a delete marker
    _, every = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": f"{PREFIX}/output"}, env=aws_env)
    assert every["changed"] is True and every["removed_versions"] == 3, every
    assert versions() == 0


# "run-1 " and "/run-1" are other folders than run-1/ (S3 keys are literal): tidied up, they purged run-1/.
@pytest.mark.parametrize("prefix", ["", "/", "  ", "run-*", "run-1 ", "/run-1", "run-1//data", "run-1/../run-10"])
def test_a_prefix_reaching_beyond_one_run_is_refused(emulator, aws_env, bucket, prefix: str) -> None:
    _, result = run_task("dlfleet_s3_purge", {"bucket": bucket, "prefix": prefix}, env=aws_env)
    assert result.get("failed") is True
    assert any(m in result["msg"] for m in ("whole bucket", "wildcard", "not a plain folder path")), result["msg"]
    assert len(_keys(emulator, bucket)) == PARTS + 3


def test_a_missing_bucket_is_no_change(aws_env) -> None:
    _, result = run_task("dlfleet_s3_purge", {"bucket": f"dlfleet-none-{uuid.uuid4().hex[:8]}", "prefix": PREFIX},
                         env=aws_env)
    assert result["changed"] is False and result["bucket_exists"] is False, result


def test_teardown_removes_the_run_prefix_when_asked(emulator, aws_env, bucket, tmp_path) -> None:
    """playbooks/teardown.yml with teardown_s3_prefix: the fleet (none here) and the run's S3 prefix, recorded in
    teardown.json; without it the prefix is kept and the record says so."""
    fleet = f"purge-{uuid.uuid4().hex[:6]}"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    common = {"dlfleet_fleet_name": fleet, "dlfleet_run_dir": str(tmp_path / "run"),
              "dlfleet_artifacts_dir": str(artifacts), "sagemaker_bucket": bucket, "sagemaker_prefix": PREFIX}
    kept = run_playbook("playbooks/teardown.yml", extra_vars=common, env=aws_env)
    assert kept.rc == 0, kept.stdout[-3000:]
    record = (artifacts / "teardown.json").read_text()
    assert '"kept": true' in record and len(_keys(emulator, bucket)) == PARTS + 3
    purged = run_playbook("playbooks/teardown.yml", extra_vars={**common, "teardown_s3_prefix": True}, env=aws_env)
    assert purged.rc == 0, purged.stdout[-3000:]
    assert sorted(_keys(emulator, bucket)) == ["README", "run-10/data/keep"]
    record = (artifacts / "teardown.json").read_text()
    assert f'"removed_objects": {PARTS + 1}' in record and '"remaining_objects": 0' in record, record
    assert "Left behind" in (artifacts / "report.md").read_text()
