"""Gold answers and answer equivalence for GSM8K-style numbers and MATH-style LaTeX.

Policy, decided once here and used by rewards and evaluation alike:

* Numbers compare by exact value: ``1,080`` = ``1080`` = ``1080.00`` = ``$1,080``;
  signs are kept (``-5`` ≠ ``5``); fractions ``3/4`` compare as values.
* A trailing percent sign is dropped (``25%`` = ``25``): GSM8K golds are bare
  numbers and questions asking "what percent" expect the number. ``0.25`` is
  *not* ``25%``: we never rescale.
* Trailing unit words are dropped when exactly one number remains
  (``18 dollars`` = ``18``, ``5 hours`` = ``5``); an answer holding two numbers
  (``3 apples and 4 pears``) is not a number.
* Anything else goes to ``math-verify`` (gold first, signal-based timeouts off so
  it is safe in threads and data-loader workers), with a numeric fallback when
  it cannot parse either side.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction

logging.getLogger("math_verify").setLevel(logging.ERROR)

_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
# A number as written in answers and replies: sign, thousands commas, decimals (``-1,080.5``, ``.5``).
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER = re.compile(NUMBER)
_VALUE = re.compile(rf"(?:{NUMBER})(?:/\d+)?")  # a number or a fraction such as ``3/4``
_UNIT_WORDS = re.compile(r"^[A-Za-z][A-Za-z .'/-]*$")


class NoGoldAnswer(ValueError):
    """A solution text has no extractable gold answer."""


def strip_calculator_notes(text: str) -> str:
    """Remove GSM8K calculator annotations such as ``<<48/2=24>>``."""
    return _CALCULATOR_NOTE.sub("", text)


def gsm8k_gold(solution: str) -> str:
    """The gold answer of a GSM8K solution: the text after the last ``####``, commas removed."""
    if "####" not in solution:
        raise NoGoldAnswer("GSM8K solution has no '#### <answer>' line")
    gold = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise NoGoldAnswer("GSM8K solution has an empty '####' line")
    return gold


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{…}`` (or ``\fbox{…}``) in ``text``, nested braces kept; None if absent."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    bare = list(re.finditer(r"\\boxed (\S+)", text))  # ``\boxed 5`` without braces
    return bare[-1].group(1).rstrip("$.") if bare else None


def math_gold(solution: str) -> str:
    r"""The gold answer of a MATH solution: the last ``\boxed{}``."""
    boxed = last_boxed(solution)
    if boxed is None:
        raise NoGoldAnswer("MATH solution has no \\boxed{} answer")
    return boxed


def numbers_in(text: str) -> list[str]:
    """Every number written in ``text``, in order, as written (commas kept for :func:`equivalent`)."""
    return _NUMBER.findall(text)


def last_number(text: str) -> str | None:
    """The last number written in ``text``: the format-blind reading of a reply."""
    found = numbers_in(text)
    return found[-1] if found else None


def parse_number(text: str) -> Fraction | None:
    """The value of an answer that is one number (currency, commas, %, units allowed), else None."""
    s = text.strip().replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    s = re.sub(r"^(?:the answer is|answer)\s*:?\s*", "", s, flags=re.IGNORECASE)
    s = re.sub(r"^[A-Za-z]\s*=\s*", "", s)  # "x = 5"
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"^\$\s*(?=[\d.+-])", "", s)  # leading currency
    s = re.sub(r"^([-+])\s*\$\s*", r"\1", s)  # "-$5"
    s = re.sub(r"\\text\{([^{}]*)\}", r" \1", s).strip()
    match = _VALUE.match(s)
    if match is None:
        return None
    rest = s[match.end() :].strip()
    if rest.startswith("%"):
        rest = rest[1:].strip()
    if rest and not _UNIT_WORDS.match(rest):
        return None
    number = match.group(0).replace(",", "")
    try:
        return Fraction(number)
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify(predicted: str, gold: str) -> bool | None:
    """math-verify's verdict, or None when it cannot parse one side."""
    from math_verify import parse, verify

    def wrap(s: str) -> str:
        return s if ("$" in s or "\\boxed" in s or "\\(" in s or "\\[" in s) else f"${s}$"

    try:
        gold_parsed = parse(wrap(gold), parsing_timeout=None)
        pred_parsed = parse(wrap(predicted), parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return None
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # math-verify raises on malformed LaTeX; treat as "cannot tell"
        return None


def _float_or_none(text: str) -> float | None:
    numbers = _VALUE.findall(text.replace(",", ""))
    if len(numbers) != 1:
        return None
    try:
        return float(Fraction(numbers[0]))
    except (ValueError, ZeroDivisionError):
        return None


def _normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().rstrip(".")).lower()


def equivalent(predicted: str | None, gold: str | None) -> bool:
    """True if ``predicted`` means the same answer as ``gold`` (see the module docstring)."""
    if predicted is None or gold is None or not predicted.strip() or not gold.strip():
        return False
    if _normalise_text(predicted) == _normalise_text(gold):
        return True
    p_num, g_num = parse_number(predicted), parse_number(gold)
    if p_num is not None and g_num is not None:
        return p_num == g_num
    verdict = _math_verify(predicted, gold)
    if verdict is not None:
        return verdict
    p_float, g_float = _float_or_none(predicted), _float_or_none(gold)
    if p_float is not None and g_float is not None:
        return abs(p_float - g_float) <= 1e-6 * max(1.0, abs(g_float))
    return False
