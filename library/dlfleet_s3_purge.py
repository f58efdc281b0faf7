#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: dlfleet_s3_purge
short_description: Remove everything under one run's S3 key prefix
version_added: "1.0.0"
description:
  - Deletes every object under O(prefix) in O(bucket) (data, model artifacts, checkpoints, tuning output of a run),
    with one paginated listing and one C(DeleteObjects) request per 1000 keys, instead of one call per object.
  - The prefix is a folder. V(run-1) removes C(run-1/...) and never C(run-10/...). An empty prefix, V(/) or a
    wildcard is refused, so the whole bucket cannot go by mistake. The bucket itself stays.
  - The prefix is taken literally, as S3 keys are. A leading or trailing space or C(/), an empty, C(.) or C(..) part
    is refused rather than tidied up (V(/lead) is not the folder C(lead/), and purging C(lead/) for it would delete
    another run's data).
  - With O(all_versions=true) (the default) a versioned bucket also loses the old versions and delete markers under
    the prefix, so the storage is really freed. With V(false) only the current objects are deleted (a versioned
    bucket keeps their old versions behind new delete markers).
  - IAM - C(s3:GetBucketVersioning), C(s3:ListBucket) and C(s3:DeleteObject) on the bucket; for a bucket that has
    or had versioning, with O(all_versions=true), also C(s3:ListBucketVersions) and C(s3:DeleteObjectVersion).
  - A bucket that does not exist, or a prefix that holds nothing, is no change. In check mode it lists what would
    go and deletes nothing.
options:
  bucket:
    description: The bucket.
    type: str
    required: true
  prefix:
    description: The run's key prefix (a folder), with or without the trailing C(/).
    type: str
    required: true
  all_versions:
    description: Also delete older versions and delete markers under the prefix (versioned buckets).
    type: bool
    default: true
  sample_size:
    description: How many of the removed keys to return in RV(sample).
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    details: Lists what would be deleted, and deletes nothing.
  diff_mode:
    support: full
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author:
  - dlfleet maintainers (@dlfleet)
"""

EXAMPLES = r"""
- name: Remove one run's data, model and checkpoints from the SageMaker bucket
  dlfleet_s3_purge:
    bucket: dlfleet-sagemaker-us-east-1-123456789012
    prefix: run-20261126T1400
    region: us-east-1

- name: List what would go, deleting nothing
  dlfleet_s3_purge:
    bucket: dlfleet-sagemaker-us-east-1-123456789012
    prefix: run-20261126T1400
  check_mode: true
"""

RETURN = r"""
bucket_exists:
  description: Whether the bucket was there.
  returned: always
  type: bool
prefix:
  description: The prefix as used, with its trailing C(/).
  returned: always
  type: str
  sample: run-20261126T1400/
removed_objects:
  description: Distinct keys removed (or that would be).
  returned: always
  type: int
removed_versions:
  description: Object versions and delete markers removed (or that would be); equals RV(removed_objects) on an
    unversioned bucket.
  returned: always
  type: int
removed_bytes:
  description: Bytes of storage freed (or that would be).
  returned: always
  type: int
sample:
  description: Up to O(sample_size) of the removed keys.
  returned: always
  type: list
  elements: str
remaining_objects:
  description: Keys still under the prefix afterwards (0 after a real run that succeeded).
  returned: always
  type: int
"""

from ansible.module_utils.dlfleet_aws import AWS_ERRORS, DlfleetError, client
from ansible.module_utils.dlfleet_s3 import (
    S3Error,
    bucket_versioning,
    delete_all,
    list_current,
    list_versions,
    normalize_prefix,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule


def listing(s3, bucket: str, prefix: str, with_versions: bool):
    """What is under the prefix, as delete items; None when the bucket does not exist."""
    if with_versions:
        return list_versions(s3, bucket, prefix)
    current = list_current(s3, bucket, prefix)
    return None if current is None else [{**obj, "version_id": None, "delete_marker": False} for obj in current]


def ensure_absent(s3, params: dict, prefix: str, check_mode: bool) -> tuple[bool, dict]:
    bucket = params["bucket"]
    versioning = bucket_versioning(s3, bucket)
    # versions are listed and deleted only where there are any: a bucket that never had versioning needs just
    # s3:ListBucket and s3:DeleteObject, not s3:ListBucketVersions and s3:DeleteObjectVersion
    with_versions = params["all_versions"] and bool(versioning)
    items = None if versioning is None else listing(s3, bucket, prefix, with_versions)
    if items is None:
        return False, {"bucket_exists": False, "removed_objects": 0, "removed_versions": 0, "removed_bytes": 0,
                       "sample": [], "remaining_objects": 0}
    keys = sorted({i["key"] for i in items})
    result = {"bucket_exists": True, "removed_objects": len(keys), "removed_versions": len(items),
              "removed_bytes": sum(i["size"] for i in items), "sample": keys[:params["sample_size"]]}
    if not items or check_mode:
        return bool(items), {**result, "remaining_objects": len(keys)}
    errors = delete_all(s3, bucket, items, with_versions=with_versions)
    if errors:
        raise S3Error(f"S3 refused to delete {len(errors)} of {len(items)} object(s) under s3://{bucket}/{prefix} "
                      f"(object lock or a bucket policy?): {'; '.join(errors[:5])}", code="DeleteObjectsErrors",
                      operation="DeleteObjects", resource=f"s3://{bucket}/{prefix}")
    left = list_current(s3, bucket, prefix) or []
    return True, {**result, "remaining_objects": len(left)}


def main():
    argument_spec = dict(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", required=True),
        all_versions=dict(type="bool", default=True),
        sample_size=dict(type="int", default=20),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        prefix = normalize_prefix(module.params["prefix"])
    except ValueError as err:
        module.fail_json(msg=str(err))
    s3 = client(module, "s3")
    try:
        changed, result = ensure_absent(s3, module.params, prefix, module.check_mode)
    except (DlfleetError, *AWS_ERRORS) as err:  # botocore errors and refused deletes alike
        module.fail_json_aws(err, msg=f"Could not remove s3://{module.params['bucket']}/{prefix}")
    if module._diff:
        result["diff"] = {"before": {"objects": result["removed_objects"]},
                          "after": {"objects": 0 if module.check_mode else result["remaining_objects"]}}
    module.exit_json(changed=changed, prefix=prefix, **result)


if __name__ == "__main__":
    main()
