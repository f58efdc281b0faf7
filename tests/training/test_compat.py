"""Stand-ins for what Python 3.8 (the SageMaker MXNet 1.9 image's) lacks."""
from __future__ import annotations

import pytest

from training.compat import zip_strict


def test_zip_strict_checks_lengths_before_anything_is_zipped() -> None:
    assert list(zip_strict([1, 2], "ab")) == [(1, "a"), (2, "b")]
    assert list(zip_strict()) == []
    with pytest.raises(ValueError, match="differ in length: 2, 3"):
        zip_strict([1, 2], [1, 2, 3])
