"""The predictions file: one JSON object per line, ready to hand in.

Format (JSON Lines, UTF-8, one record per question, in the benchmark's order)::

    {"id": "...", "question": "...", "response": "...", "answer": "..."}

- ``id``: the question's id in its benchmark (a string).
- ``question``: the question as asked (without the instruction the chat template adds).
- ``response``: the model's whole reply, ``<reasoning>…</reasoning><answer>…</answer>`` when well formed.
- ``answer``: the parsed final answer, or ``null`` when none could be recovered from the reply.

:func:`write_predictions` is the one writer; :func:`read_predictions` reads it back and checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workings.files import jsonl_records, write_jsonl

FIELDS = ("id", "question", "response", "answer")


def prediction(scored: Any) -> dict[str, Any]:
    """The record of one :class:`workings.evaluation.scoring.Scored` reply."""
    return {"id": str(scored.id), "question": scored.question, "response": scored.output, "answer": scored.answer}


def write_predictions(path: str | Path, scored: Iterable[Any]) -> Path:
    """Write the predictions of scored replies to ``path`` (JSONL), replacing it only when complete."""
    path = Path(path)
    records = [prediction(s) for s in scored]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: prediction ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return write_jsonl(path, records)


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a predictions file; a line that is not a record of exactly :data:`FIELDS` is named."""
    out = []
    for number, record in jsonl_records(path):
        if set(record) != set(FIELDS):
            raise ValueError(f"{path}, line {number}: expected fields {list(FIELDS)}, got {sorted(record)}")
        for key in ("id", "question", "response"):
            if not isinstance(record[key], str):
                raise ValueError(f"{path}, line {number}: field {key!r} must be a string")
        if record["answer"] is not None and not isinstance(record["answer"], str):
            raise ValueError(f"{path}, line {number}: field 'answer' must be a string or null")
        out.append({k: record[k] for k in FIELDS})
    return out
