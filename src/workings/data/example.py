"""The row every stage passes on: an :class:`Example`, whatever its source's schema, and why a row is unusable."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One training or evaluation problem, independent of its source's schema."""

    id: str
    source: str
    question: str
    reasoning: str
    answer: str
    graded: bool = True  # False for free-text answers that cannot be checked automatically
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Unusable(ValueError):
    """A source row that cannot become an :class:`Example`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DataUnavailable(RuntimeError):
    """A dataset could not be loaded (no network, wrong path, bad file)."""


def example_id(source: str, question: str, reasoning: str = "") -> str:
    """A stable id from the source and the text, so ids survive reshuffles and reruns."""
    digest = hashlib.sha1(f"{source}\0{question}\0{reasoning}".encode()).hexdigest()[:16]
    return f"{source}-{digest}"
