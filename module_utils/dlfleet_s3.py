# S3 calls for dlfleet modules: list everything under a key prefix (every version) and delete it in batches.
# Thin wrappers, one per AWS call; "no such bucket" is decided here once.
from __future__ import annotations

from typing import Any

from ansible.module_utils.dlfleet_aws import AWS_ERRORS, DlfleetError, aws_retry, is_not_found, paginate

DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


class S3Error(DlfleetError):
    """S3 answered, yet did not do what was asked (keys it refused to delete); the message says why."""


def normalize_prefix(prefix: str | None) -> str:
    """'run-1' or 'run-1/' -> 'run-1/'. A prefix is a folder: 'run-1' must not also take 'run-10/'. Nothing else is
    changed: S3 keys are literal, so 'prod ' (a space) and '/lead' are other folders than 'prod/' and 'lead/', and
    tidying them up would purge someone else's data. Raises ValueError for what is not exactly one folder path:
    empty, '/', a leading '/', a part that starts or ends with a space, '//', '.' or '..' parts, wildcards, control
    characters. The purge and every writer (SageMaker channels, output, checkpoints: check_uri) use this one rule."""
    text = "" if prefix is None else str(prefix)
    cleaned = text[:-1] if text.endswith("/") else text
    if not cleaned.strip():
        raise ValueError(f"prefix {prefix!r} would select the whole bucket; give the run's folder, for example "
                         "run-20261126T1400")
    if any(c in cleaned for c in "*?["):
        raise ValueError(f"prefix {prefix!r} holds a wildcard; S3 prefixes are literal, give the folder name itself")
    parts = cleaned.split("/")
    if any(p != p.strip() for p in parts) or "" in parts or any(p in (".", "..") for p in parts) or \
            any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise ValueError(f"prefix {prefix!r} is not a plain folder path: S3 keys are literal, so a leading or "
                         f"trailing space or '/', an empty, '.' or '..' part or a control character names another "
                         f"folder than the one meant; give it exactly as the run wrote it, for example "
                         f"run-20261126T1400")
    return cleaned + "/"


def bucket_versioning(s3, bucket: str) -> str | None:
    """'Enabled', 'Suspended', or '' for a bucket that never had versioning; None when the bucket does not exist."""
    try:
        return aws_retry(s3.get_bucket_versioning)(Bucket=bucket).get("Status", "")
    except AWS_ERRORS as err:
        if is_not_found(err, "s3"):
            return None
        raise


def _pages(s3, operation: str, bucket: str, prefix: str) -> list[dict[str, Any]] | None:
    """Every page of a paginated listing under `prefix`; None when the bucket does not exist."""
    try:
        return paginate(s3, operation, Bucket=bucket, Prefix=prefix)
    except AWS_ERRORS as err:
        if is_not_found(err, "s3"):
            return None
        raise


def list_versions(s3, bucket: str, prefix: str) -> list[dict[str, Any]] | None:
    """Every object version and delete marker under `prefix`, as {key, version_id, size, delete_marker}; None when
    the bucket does not exist."""
    pages = _pages(s3, "list_object_versions", bucket, prefix)
    if pages is None:
        return None
    found: list[dict[str, Any]] = []
    for page in pages:
        for version in page.get("Versions", []):
            found.append({"key": version["Key"], "version_id": version.get("VersionId") or "null",
                          "size": int(version.get("Size", 0)), "delete_marker": False})
        for marker in page.get("DeleteMarkers", []):
            found.append({"key": marker["Key"], "version_id": marker.get("VersionId") or "null", "size": 0,
                          "delete_marker": True})
    return found


def list_current(s3, bucket: str, prefix: str) -> list[dict[str, Any]] | None:
    """The current objects under `prefix` (what a versioned bucket shows), as {key, size}; None without bucket."""
    pages = _pages(s3, "list_objects_v2", bucket, prefix)
    if pages is None:
        return None
    return [{"key": obj["Key"], "size": int(obj.get("Size", 0))} for page in pages for obj in page.get("Contents", [])]


def delete_batch(s3, bucket: str, items: list[dict[str, Any]], with_versions: bool) -> list[str]:
    """Delete `items` (at most DELETE_BATCH) in one DeleteObjects request; returns the per-key errors S3 gave."""
    objects = [{"Key": i["key"], "VersionId": i["version_id"]} if with_versions else {"Key": i["key"]}
               for i in items]
    response = aws_retry(s3.delete_objects)(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    return [f"{e.get('Key')}: {e.get('Code')} {e.get('Message', '')}".strip() for e in response.get("Errors", [])]


def delete_all(s3, bucket: str, items: list[dict[str, Any]], with_versions: bool) -> list[str]:
    errors: list[str] = []
    for start in range(0, len(items), DELETE_BATCH):
        errors += delete_batch(s3, bucket, items[start:start + DELETE_BATCH], with_versions)
    return errors
