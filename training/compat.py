"""What the package needs from Python newer than 3.8, written for 3.8 (the SageMaker MXNet 1.9 image's Python).

``zip_strict`` stands in for ``zip(..., strict=True)`` (Python 3.10).
"""
from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any


def zip_strict(*sequences: Sized) -> Iterator[tuple[Any, ...]]:
    """zip() over sequences of equal length; raises ValueError (before yielding anything) when the lengths differ."""
    lengths = [len(s) for s in sequences]
    if len(set(lengths)) > 1:
        raise ValueError(f"zip_strict: arguments differ in length: {', '.join(map(str, lengths))}")
    return zip(*sequences)
