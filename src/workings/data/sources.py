"""Source datasets and their conversion to :class:`~workings.data.example.Example` rows.

Each source has a converter ``row -> Example`` for the schema its publisher
documents. A row that cannot be used raises :class:`Unusable` with a short
``reason`` (counted per source by the mix builder) and a human ``detail``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workings.core.answers import NoGoldAnswer, equivalent, gsm8k_gold, last_boxed, strip_calculator_notes
from workings.core.format import contains_tag
from workings.data.example import DataUnavailable, Example, Unusable, example_id
from workings.files import read_jsonl


def _field(row: Mapping[str, Any], name: str) -> str:
    if name not in row:
        raise Unusable(f"missing_field:{name}", f"no field {name!r} (fields: {sorted(row)})")
    value = row[name]
    if not isinstance(value, str):
        raise Unusable(f"bad_field:{name}", f"field {name!r} is {type(value).__name__}, not str")
    if not value.strip():
        raise Unusable(f"empty_field:{name}", f"field {name!r} is empty")
    return value.strip()


def _example(source: str, question: str, reasoning: str, answer: str, **kwargs: Any) -> Example:
    question, reasoning, answer = question.strip(), reasoning.strip(), answer.strip()
    for name, value in (("question", question), ("reasoning", reasoning), ("answer", answer)):
        if not value:
            raise Unusable(f"empty_{name}")
        if contains_tag(value):
            raise Unusable("contains_format_tag", f"{name} contains a <reasoning>/<answer> tag")
    return Example(example_id(source, question, reasoning), source, question, reasoning, answer, **kwargs)


# --- GSM8K -------------------------------------------------------------------------------------


def convert_gsm8k(row: Mapping[str, Any]) -> Example:
    """``openai/gsm8k`` (main): ``question``; ``answer`` = worked solution + ``#### N``."""
    question, solution = _field(row, "question"), _field(row, "answer")
    try:
        gold = gsm8k_gold(solution)
    except NoGoldAnswer as err:
        raise Unusable("no_final_answer", str(err)) from None
    reasoning = strip_calculator_notes(solution.rsplit("####", 1)[0])
    return _example("gsm8k", question, reasoning, gold)


# --- OpenThoughts and Bespoke-Stratos (DeepSeek-R1 traces) ------------------------------------

_THOUGHT = re.compile(r"<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>", re.DOTALL)
_SOLUTION = re.compile(r"<\|begin_of_solution\|>(.*?)<\|end_of_solution\|>", re.DOTALL)
_BOXED_PREFIX = re.compile(r"^\s*Return your final response within \\boxed\{\}\.\s*")


def _split_r1_trace(text: str) -> tuple[str, str]:
    thought, solution = _THOUGHT.search(text), _SOLUTION.search(text)
    if thought is None or solution is None:
        raise Unusable("no_thought_or_solution_markers", "assistant text lacks begin/end of thought/solution")
    return thought.group(1).strip(), solution.group(1).strip()


def _conversation(row: Mapping[str, Any]) -> tuple[str, str]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Unusable("missing_field:conversations", "no 'conversations' list")
    user = [t.get("value", "") for t in turns if isinstance(t, Mapping) and t.get("from") == "user"]
    assistant = [t.get("value", "") for t in turns if isinstance(t, Mapping) and t.get("from") == "assistant"]
    if len(user) != 1 or len(assistant) != 1:
        raise Unusable("not_single_turn", f"{len(user)} user and {len(assistant)} assistant turns")
    return user[0], assistant[0]


_CHOICE = re.compile(r"^\s*(?:\\text(?:bf)?\{\s*)?\(?\s*([A-E])\s*\)?\s*\}?\s*$")
_OPTION_MARK = re.compile(r"(?:\\(?:textbf|text|mathrm)\s*\{\s*)?\(\s*([A-E])\s*\)\s*\}?")


def multiple_choice_options(question: str) -> dict[str, str]:
    """Options of a question written ``(A) …(B) …`` (plain or AMC ``\\textbf{(A) }…``), letter -> text."""
    marks = list(_OPTION_MARK.finditer(question))
    options: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(question)
        text = question[mark.end() : end]
        text = re.sub(r"\\qquad|\\quad|\\ |\$|\\textbf\{\s*\}", " ", text)
        text = re.sub(r"\s+", " ", text).strip().strip("}").strip().rstrip(",;").strip()
        if text:
            options[mark.group(1)] = text
    letters = list(options)
    return options if letters and letters == [chr(ord("A") + i) for i in range(len(letters))] else {}


def _boxed_answer(source: str, question: str, solution: str) -> tuple[str, dict[str, Any]]:
    boxed = last_boxed(solution)
    if boxed is None:
        raise Unusable("no_boxed_answer", "solution has no \\boxed{} answer")
    choice = _CHOICE.match(boxed)
    if choice is None:
        return boxed, {}
    letter = choice.group(1)
    options = multiple_choice_options(question)
    if letter not in options:
        raise Unusable("choice_without_options", f"boxed letter {letter} but no option text in the question")
    return f"({letter}) {options[letter]}", {"choice": letter}


def convert_openthoughts(row: Mapping[str, Any], keep_domains: tuple[str, ...] = ("math",)) -> Example:
    """``open-thoughts/OpenThoughts-114k``: ``metadata`` config, or ``default`` (conversations)."""
    if "conversations" in row:
        question, assistant = _conversation(row)
        thought, solution = _split_r1_trace(assistant)
        answer, meta = _boxed_answer("openthoughts", question, solution)
        return _example("openthoughts", question, thought, answer, meta=meta)
    domain = _field(row, "domain")
    if domain not in keep_domains:
        raise Unusable(f"domain_not_kept:{domain}")
    question = _field(row, "problem")
    reasoning, solution = _field(row, "deepseek_reasoning"), _field(row, "deepseek_solution")
    answer, meta = _boxed_answer("openthoughts", question, solution)
    meta["domain"] = domain
    truth = row.get("ground_truth_solution")
    truth_answer = last_boxed(truth) if isinstance(truth, str) else None
    if truth_answer is not None and "choice" not in meta and not equivalent(answer, truth_answer):
        meta["disagrees_with_ground_truth"] = True
        meta["ground_truth_answer"] = truth_answer
    return _example("openthoughts", question, reasoning, answer, meta=meta)


def convert_bespoke_stratos(row: Mapping[str, Any]) -> Example:
    """``bespokelabs/Bespoke-Stratos-17k``: ``system`` and ``conversations`` only."""
    question, assistant = _conversation(row)
    question = _BOXED_PREFIX.sub("", question)
    thought, solution = _split_r1_trace(assistant)
    answer, meta = _boxed_answer("bespoke_stratos", question, solution)
    return _example("bespoke_stratos", question, thought, answer, meta=meta)


# --- medical-o1 and MetaMathQA -----------------------------------------------------------------


def convert_medical_o1(row: Mapping[str, Any]) -> Example:
    """``FreedomIntelligence/medical-o1-reasoning-SFT`` (en, en_mix): free-text answers, not graded."""
    return _example(
        "medical_o1", _field(row, "Question"), _field(row, "Complex_CoT"), _field(row, "Response"), graded=False
    )


_ANSWER_IS = "The answer is: "


def convert_metamath(row: Mapping[str, Any]) -> Example:
    """``meta-math/MetaMathQA``: answer after the last ``The answer is: ``."""
    kind, question, response = _field(row, "type"), _field(row, "query"), _field(row, "response")
    if _ANSWER_IS not in response:
        raise Unusable("no_final_answer", f"response has no {_ANSWER_IS!r}")
    body, answer = response.rsplit(_ANSWER_IS, 1)
    body = re.sub(r"^####.*$", "", strip_calculator_notes(body), flags=re.MULTILINE)
    if kind.startswith("GSM"):
        answer = answer.replace(",", "")
    return _example("metamath", question, body, answer, meta={"type": kind})


CONVERTERS: dict[str, Callable[[Mapping[str, Any]], Example]] = {
    "gsm8k": convert_gsm8k,
    "openthoughts": convert_openthoughts,
    "bespoke_stratos": convert_bespoke_stratos,
    "medical_o1": convert_medical_o1,
    "metamath": convert_metamath,
}


def convert_synthetic(row: Mapping[str, Any]) -> Example:
    """Rows of :func:`workings.data.synthetic.generate_synthetic`, already :class:`Example` fields."""
    return Example(**row)


CONVERTERS["synthetic"] = convert_synthetic


# --- reasoning-gym ----------------------------------------------------------------------------

def reasoning_gym_rows(dataset: str, size: int, seed: int, config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``size`` rows of the reasoning-gym dataset ``dataset`` from ``seed`` (the same on every machine):
    its ``question`` and ``answer``, its ``metadata`` made JSON-safe, and the dataset's name."""
    import reasoning_gym

    generated = reasoning_gym.create_dataset(dataset, size=size, seed=seed, **dict(config or {}))
    return [{"question": entry["question"], "answer": str(entry["answer"]), "dataset": dataset,
             "metadata": json.loads(json.dumps(entry.get("metadata", {}), default=str))} for entry in generated]


_ADD_OR_SUBTRACT = re.compile(r"^\s*-?\d+(?:\s*[-+]\s*\d+)+\s*$")


def worked_steps(expression: str) -> str:
    """An expression of additions and subtractions worked left to right, one line a step.

    >>> print(worked_steps("4 - 1 - 7"))
    4 - 1 = 3
    3 - 7 = -4
    """
    terms = re.findall(r"([-+]?)\s*(\d+)", expression)
    total = int(terms[0][1]) * (-1 if terms[0][0] == "-" else 1)
    lines = []
    for sign, digits in terms[1:]:
        value = total + int(digits) if sign == "+" else total - int(digits)
        lines.append(f"{total} {sign} {digits} = {value}")
        total = value
    return "\n".join(lines)


def convert_reasoning_gym(row: Mapping[str, Any]) -> Example:
    """A reasoning-gym row (:func:`reasoning_gym_rows`). The reasoning is the task's own worked solution
    where it has one (``metadata.answer_cot``, up to its ``####`` line); for an expression of additions
    and subtractions, its steps worked left to right; otherwise one line giving the expression's value.
    Graded: answers are compared by value (numbers) or as text."""
    question, answer, dataset = _field(row, "question"), _field(row, "answer"), _field(row, "dataset")
    meta = row.get("metadata") or {}
    if isinstance(meta.get("answer_cot"), str) and meta["answer_cot"].strip():
        reasoning = strip_calculator_notes(meta["answer_cot"].rsplit("####", 1)[0])
    elif isinstance(meta.get("expression"), str) and _ADD_OR_SUBTRACT.match(meta["expression"]):
        reasoning = worked_steps(meta["expression"])
    elif isinstance(meta.get("expression"), str):
        reasoning = f"{meta['expression'].strip()} = {answer}"
    else:
        raise Unusable("no_worked_solution", f"{dataset} rows carry no answer_cot or expression to reason from")
    return _example(dataset, question, reasoning, answer, meta={"dataset": dataset})


CONVERTERS["reasoning_gym"] = convert_reasoning_gym


def convert(source: str, row: Mapping[str, Any], keep_domains: tuple[str, ...] = ("math",)) -> Example:
    """Convert one row with the converter named ``source`` (a key of :data:`CONVERTERS`).

    ``keep_domains`` applies to OpenThoughts' ``metadata`` rows only.
    """
    if source not in CONVERTERS:
        raise KeyError(f"unknown source {source!r}; known: {sorted(CONVERTERS)}")
    if not isinstance(row, Mapping):
        raise Unusable("not_a_mapping", f"row is {type(row).__name__}")
    if source == "openthoughts":
        return convert_openthoughts(row, keep_domains)
    return CONVERTERS[source](row)


# --- Loading -----------------------------------------------------------------------------------


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``.json`` file as the Hub's JSON loader reads them: a list of objects, an
    object of equally long columns, or (despite the name) one object per line."""
    if not path.is_file():
        raise DataUnavailable(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as whole:
        try:
            return read_jsonl(path)
        except ValueError:
            raise DataUnavailable(f"{path}, line {whole.lineno}, column {whole.colno}: not valid JSON ({whole.msg})") from None
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return value
    if isinstance(value, dict) and value and all(isinstance(c, list) for c in value.values()):
        lengths = {len(c) for c in value.values()}
        if len(lengths) == 1:
            return [dict(zip(value, row)) for row in zip(*value.values())]
    if isinstance(value, dict):
        return [value]
    raise DataUnavailable(f"{path}: expected a list of objects (rows), an object of columns, or one object per line; "
                          f"got a JSON {type(value).__name__}")


def load_rows(
    *,
    hub_id: str | None = None,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Rows of a source: local ``.jsonl``/``.json``/``.parquet`` when ``path`` is given, the Hub otherwise."""
    if path is not None:
        path = Path(path)
        if path.suffix == ".jsonl":
            if not path.is_file():
                raise DataUnavailable(f"{path}: no such file")
            try:
                return read_jsonl(path)
            except ValueError as err:
                raise DataUnavailable(str(err)) from None
        if path.suffix == ".json":
            return _json_rows(path)
        if path.suffix == ".parquet":
            if not path.is_file():
                raise DataUnavailable(f"{path}: no such file")
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except Exception as err:  # pyarrow raises its own error types for a damaged file
                raise DataUnavailable(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
        raise DataUnavailable(f"{path}: unsupported file type (use .jsonl, .json or .parquet)")
    if hub_id is None:
        raise DataUnavailable("a source needs either 'path' or 'hub_id'")
    import datasets

    try:
        dataset = datasets.load_dataset(hub_id, config, split=split, revision=revision)
    except Exception as err:
        raise DataUnavailable(
            f"could not load {hub_id} (config {config!r}, split {split!r}, revision {revision!r}) "
            f"from the Hugging Face Hub: {type(err).__name__}: {err}. If this machine is offline, "
            "download the files elsewhere and set 'path' for this source in the profile."
        ) from err
    return list(dataset)
