# Tags with amazon.aws semantics for every dlfleet module that tags: `tags` is the user's tags, `purge_tags`
# (default true, as in amazon.aws) removes the user tags a resource carries that `tags` no longer names. Two kinds
# of key are never removed: AWS's own (aws:*, which no API call may change) and dlfleet's (dlfleet:*, the identity
# tags by which teardown, the reaper and the modules find their resources).
from __future__ import annotations

from typing import Any

from ansible_collections.amazon.aws.plugins.module_utils.tagging import compare_aws_tags

AWS_PREFIX = "aws:"
DLFLEET_PREFIX = "dlfleet:"
RESERVED_PREFIXES = (AWS_PREFIX, DLFLEET_PREFIX)

# The two options, the same in every module that tags (DOCUMENTATION mirrors them). As in amazon.aws, tags left
# out (None) leaves the user's tags as they are, whatever purge_tags says.
TAGS_SPEC: dict[str, dict[str, Any]] = {
    "tags": {"type": "dict"},
    "purge_tags": {"type": "bool", "default": True},
}


def check_user_tags(tags: dict[str, Any] | None) -> dict[str, str] | None:
    """The user's tags as strings (None stays None: leave them as they are); ValueError for an empty key or one
    that AWS or dlfleet reserves."""
    if tags is None:
        return None
    out = {}
    for key, value in tags.items():
        key = str(key)
        if key.lower().startswith(RESERVED_PREFIXES):   # AWS reserves aws: in any case
            raise ValueError(f"tag {key!r} is not allowed in tags: keys starting with aws: are AWS's own and keys "
                             f"starting with dlfleet: are set by dlfleet (fleet, owner and ttl come from their own "
                             f"options); rename the tag")
        if not key.strip():
            raise ValueError("tags holds an empty key; give every tag a name")
        out[key] = "" if value is None else str(value)
    return out


def is_kept(key: str) -> bool:
    """Whether `key` is never removed by purge_tags (aws:* and dlfleet:*)."""
    return key.startswith(RESERVED_PREFIXES)


def compare_tags(current: dict[str, str] | None, desired: dict[str, str] | None, purge: bool = True,
                 identity: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(to_set, to_unset) that turn the tags `current` into the user's tags `desired` plus dlfleet's `identity`
    tags: amazon.aws's compare_aws_tags, with aws:* keys neither set nor removed and dlfleet:* keys never removed.
    With purge false, or desired None (tags not given), no user tag is removed; desired None changes none."""
    current = {k: v for k, v in (current or {}).items() if not k.startswith(AWS_PREFIX)}
    if desired is None:
        desired, purge = {k: v for k, v in current.items() if not is_kept(k)}, False
    wanted = {k: v for k, v in {**desired, **(identity or {})}.items() if not k.startswith(AWS_PREFIX)}
    to_set, to_unset = compare_aws_tags(current, wanted, purge_tags=purge)
    return to_set, sorted(k for k in to_unset if not is_kept(k))
