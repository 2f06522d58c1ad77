"""The answer format: ``<reasoning>…</reasoning>`` then ``<answer>…</answer>``.

This module is the one definition of the format. Data curation renders with
:func:`render`; rewards and evaluation read model output with :func:`parse`.

Strict output is exactly one reasoning block followed by exactly one answer
block, with nothing but whitespace around them, both tags spelled exactly and
both contents non-empty. The lenient reading recovers an answer from the
near-misses small models commonly produce and lists what was wrong in
``Parsed.issues``:

* a missing ``</answer>`` at the end of the text (generation stopped early or
  the model forgot it): the answer is the rest of the text;
* text before the reasoning block or after the answer block;
* whitespace, newlines or upper case inside a tag (``< answer >``);
* repeated blocks: the **last** answer block wins, because a model that writes
  a second answer has revised its first (the same convention as "last
  ``\\boxed{}``" in maths grading); the reasoning is the last reasoning block
  that starts before that answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# Any spelling of one of the four tags: case-insensitive, whitespace allowed inside.
_TAG = re.compile(r"<\s*(/?)\s*(reasoning|answer)\s*>", re.IGNORECASE)
_STRICT = re.compile(
    r"\s*<reasoning>(?P<reasoning>.*?)</reasoning>\s*<answer>(?P<answer>.*?)</answer>\s*",
    re.DOTALL,
)


@dataclass(frozen=True)
class Parsed:
    """What :func:`parse` read from one model output."""

    reasoning: str | None
    answer: str | None
    strict: bool
    issues: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_answer(self) -> bool:
        """True when the lenient reading recovered a non-empty answer."""
        return bool(self.answer)


def contains_tag(text: str) -> bool:
    """True if ``text`` contains anything that reads as one of the format's tags."""
    return _TAG.search(text) is not None


def render(reasoning: str, answer: str) -> str:
    """Render reasoning and answer in the format; surrounding whitespace is not content."""
    for name, value in (("reasoning", reasoning), ("answer", answer)):
        if contains_tag(value):
            raise ValueError(f"{name} text contains a format tag and would not parse back: {value[:80]!r}")
    return f"{REASONING_OPEN}{reasoning.strip()}{REASONING_CLOSE}\n{ANSWER_OPEN}{answer.strip()}{ANSWER_CLOSE}"


def parse(text: str) -> Parsed:
    """Read a model output: strictly if it is well formed, leniently otherwise."""
    strict = _STRICT.fullmatch(text)
    if strict and not contains_tag(strict["reasoning"]) and not contains_tag(strict["answer"]):
        reasoning, answer = strict["reasoning"].strip(), strict["answer"].strip()
        issues = tuple(
            f"empty {name}" for name, value in (("reasoning", reasoning), ("answer", answer)) if not value
        )
        return Parsed(reasoning or None, answer or None, strict=not issues, issues=issues)
    return _parse_lenient(text)


def _parse_lenient(text: str) -> Parsed:
    issues: list[str] = []
    tags = list(_TAG.finditer(text))
    if any(t.group(0) not in (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE) for t in tags):
        issues.append("malformed tag")

    # Pair each opening tag with the next tag if that tag closes the same block.
    blocks: dict[str, list[tuple[int, int, str]]] = {"reasoning": [], "answer": []}
    unclosed: dict[str, re.Match[str]] = {}
    for i, tag in enumerate(tags):
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if closing:
            continue
        nxt = tags[i + 1] if i + 1 < len(tags) else None
        if nxt is not None and nxt.group(1) == "/" and nxt.group(2).lower() == name:
            blocks[name].append((tag.start(), nxt.end(), text[tag.end() : nxt.start()]))
        elif nxt is None:
            unclosed[name] = tag
        else:
            issues.append(f"unclosed {name} block")

    answer: str | None = None
    answer_start = len(text)
    answer_end = len(text)
    if blocks["answer"]:
        if len(blocks["answer"]) > 1:
            issues.append(f"{len(blocks['answer'])} answer blocks; the last is used")
        answer_start, answer_end, content = blocks["answer"][-1]
        answer = content.strip()
    if "answer" in unclosed and (not blocks["answer"] or unclosed["answer"].start() > answer_start):
        tag = unclosed["answer"]
        issues.append("missing </answer> at end of text")
        answer_start, answer_end, answer = tag.start(), len(text), text[tag.end() :].strip()
    if answer is None:
        issues.append("no answer block")
    elif not answer:
        issues.append("empty answer")

    reasoning: str | None = None
    before = [b for b in blocks["reasoning"] if b[0] < answer_start]
    if len(blocks["reasoning"]) > 1:
        issues.append(f"{len(blocks['reasoning'])} reasoning blocks; the last before the answer is used")
    if before:
        r_start, _, content = before[-1]
        reasoning = content.strip()
        if not reasoning:
            issues.append("empty reasoning")
        if text[:r_start].strip():
            issues.append("text before the reasoning block")
        if answer is not None and text[before[-1][1] : answer_start].strip():
            issues.append("text between the reasoning and answer blocks")
    else:
        issues.append("no reasoning block")
    if answer is not None and text[answer_end:].strip():
        issues.append("text after the answer block")
    return Parsed(reasoning, answer or None, strict=False, issues=tuple(dict.fromkeys(issues)))
