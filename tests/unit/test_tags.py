"""tags + purge_tags with amazon.aws semantics (module_utils/dlfleet_tags.py): pure logic."""
from __future__ import annotations

import pytest
from ansible.module_utils.dlfleet_tags import check_user_tags, compare_tags

IDENTITY = {"dlfleet:fleet": "cifar-a", "dlfleet:owner": "ana", "dlfleet:ttl": "8h"}
CURRENT = {**IDENTITY, "dlfleet:generation": "2", "aws:cloudformation:stack-name": "s", "team": "ml", "old": "x"}


def test_purge_removes_the_user_tags_no_longer_named_and_sets_changed_ones() -> None:
    assert compare_tags(CURRENT, {"team": "vision"}, purge=True, identity=IDENTITY) == ({"team": "vision"}, ["old"])


def test_without_purge_extra_user_tags_stay() -> None:
    assert compare_tags(CURRENT, {"team": "vision"}, purge=False, identity=IDENTITY) == ({"team": "vision"}, [])


def test_aws_and_dlfleet_keys_are_never_removed_even_with_no_user_tags_left() -> None:
    to_set, to_unset = compare_tags(CURRENT, {}, purge=True, identity=IDENTITY)
    assert (to_set, to_unset) == ({}, ["old", "team"])
    assert compare_tags({"aws:x": "1", "dlfleet:endpoint": "e"}, {}, purge=True) == ({}, [])


def test_tags_not_given_leave_user_tags_alone_but_identity_is_still_set() -> None:
    drifted = {**CURRENT, "dlfleet:ttl": "2h"}
    assert compare_tags(drifted, None, purge=True, identity=IDENTITY) == ({"dlfleet:ttl": "8h"}, [])
    assert compare_tags(CURRENT, None, purge=True) == ({}, [])


def test_identity_wins_over_a_user_value_and_aws_keys_are_never_set() -> None:
    assert compare_tags({}, {"team": "ml"}, identity=IDENTITY) == ({**IDENTITY, "team": "ml"}, [])
    assert compare_tags({}, {"aws:x": "1"}) == ({}, [])


def test_user_tags_are_checked_and_stringified() -> None:
    assert check_user_tags(None) is None
    assert check_user_tags({"n": 3, "e": None}) == {"n": "3", "e": ""}
    # AWS reserves aws: in any case; dlfleet's own prefix likewise.
    for bad in ({"aws:created-by": "me"}, {"AWS:Created-By": "me"}, {"dlfleet:fleet": "other"}, {"DLFleet:ttl": "1h"},
                {" ": "x"}):
        with pytest.raises(ValueError, match=r"tag|key"):
            check_user_tags(bad)
