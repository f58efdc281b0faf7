# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tags. DOCUMENTATION: the dlfleet identity tags every tagging SageMaker module adds, fleet, owner and ttl
(dlfleet_sagemaker.common_spec); the reaper and the teardown find what a fleet left behind by these tags.
TAGS: the user's tags and purge_tags, with amazon.aws's semantics (dlfleet_tags.TAGS_SPEC, in every module that tags;
not amazon.aws.tags, whose tags option has an alias that ours has not)."""
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

    TAGS = r"""
options:
  tags:
    description:
      - The user's tags for what the module creates, as a dictionary.
      - Left out, the tags of an existing resource are not changed (whatever O(purge_tags) says).
      - Keys starting with C(aws:) (AWS's own) or C(dlfleet:) (set by dlfleet itself) are refused.
    type: dict
  purge_tags:
    description:
      - With O(tags) given, remove the user tags a resource carries that O(tags) does not name, so that its
        tags are exactly O(tags) plus dlfleet's.
      - Keys starting with C(aws:) are never changed (AWS reserves them) and keys starting with C(dlfleet:), the
        identity tags by which the teardown and the reaper find a fleet, are never removed.
    type: bool
    default: true
"""
