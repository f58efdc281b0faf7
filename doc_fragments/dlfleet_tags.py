# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dlfleet identity tags every tagging SageMaker module adds: fleet, owner and ttl (dlfleet_sagemaker.common_spec).
The reaper and the teardown find what a fleet left behind by these tags."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  fleet:
    description: When set, the tags C(dlfleet:fleet), C(dlfleet:owner) and C(dlfleet:ttl) are added.
    type: str
  owner:
    description: Value of the C(dlfleet:owner) tag (with O(fleet)).
    type: str
    default: dlfleet
  ttl:
    description: Value of the C(dlfleet:ttl) tag (with O(fleet)), for example V(8h).
    type: str
    default: 8h
"""
