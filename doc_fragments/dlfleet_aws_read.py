# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes of dlfleet's read-only AWS modules (aws_price_info, ec2_gpu_quota_info, sagemaker_job_progress,
sagemaker_quota_info): check mode runs the same reads, there is never a diff, and they act from the controller."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    details: Runs the same reads.
  diff_mode:
    support: none
    details: Reads only; there is never a change to show.
  platform:
    platforms: aws
    details: Runs on the controller and acts through the AWS APIs (or the endpoint O(endpoint_url) names).
"""
