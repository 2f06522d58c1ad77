"""Benchmarks and metrics: what a model is asked, how each reply is scored, and the rates with CIs.

A benchmark is data (:class:`Benchmark`): rows of id, question, gold answer and fields to break
results down by, read from an eval set of the profile (GSM8K test, MATH-500, the synthetic
test set, any local JSONL with ``question``/``answer``) or from the held-out split of the mix,
one benchmark per source. Free-text sources (medical-o1) are asked too, but only their format
and length are measured: they are marked ``graded: false`` and have no accuracy.

Every reply is kept as a :class:`Scored` record (question, gold, raw output, parsed
reasoning and answer, verdicts, flags), streamed to disk while the benchmark runs.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from workings import file_digest, json_digest, write_jsonl
from workings.answers import equivalent, gsm8k_gold, math_gold
from workings.format import parse
from workings.generate import Generation, SamplingConfig, generate
from workings.profiles import EvalSetSpec, Profile
from workings.stats import compare_paired, PairedComparison, percentiles, wilson_interval

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
GOLD_READERS = {"plain": str, "gsm8k": gsm8k_gold, "boxed": math_gold}


@dataclass
class Benchmark:
    name: str
    rows: list[dict[str, Any]]  # id, question, gold (None when ungraded), meta
    graded: bool = True
    group_by: list[str] = field(default_factory=list)


@dataclass
class Scored:
    id: str
    question: str
    gold: str | None  # None for free-text rows that are not graded
    output: str
    reasoning: str | None
    answer: str | None
    strict: bool  # exactly <reasoning>…</reasoning><answer>…</answer>
    lenient: bool  # an answer could be recovered from a near-miss
    correct: bool | None  # the parsed answer is equivalent to the gold (None when not graded)
    last_number_correct: bool | None  # the last number anywhere equals the gold (format-blind)
    truncated: bool  # hit max_new_tokens
    new_tokens: int
    reasoning_tokens: int  # tokens inside the reasoning block (0 when there is none)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def graded(self) -> bool:
        return self.correct is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (commas kept for :func:`equivalent` to read)."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def score(question: str, gold: str | None, generation: Generation, tokenizer: Any = None, id: str = "",
          meta: Mapping[str, Any] | None = None) -> Scored:
    """Parse one reply and judge it against ``gold`` (``None``: format and length only)."""
    parsed = parse(generation.text)
    reasoning_tokens = 0
    if parsed.reasoning and tokenizer is not None:
        reasoning_tokens = len(tokenizer(parsed.reasoning, add_special_tokens=False)["input_ids"])
    graded = gold is not None
    return Scored(
        id=id, question=question, gold=gold, output=generation.text,
        reasoning=parsed.reasoning, answer=parsed.answer, strict=parsed.strict, lenient=parsed.has_answer,
        correct=(parsed.has_answer and equivalent(parsed.answer, gold)) if graded else None,
        last_number_correct=equivalent(last_number(generation.text), gold) if graded else None,
        truncated=generation.truncated, new_tokens=generation.new_tokens, reasoning_tokens=reasoning_tokens,
        meta=dict(meta or {}),
    )


def _rate(flags: Sequence[bool], name: str, out: dict[str, float]) -> None:
    n = len(flags)
    if n == 0:
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = math.nan, math.nan, math.nan
        return
    k = sum(flags)
    out[name] = k / n
    out[f"{name}_lo"], out[f"{name}_hi"] = wilson_interval(k, n)


def summarise(scored: Sequence[Scored]) -> dict[str, float]:
    """Rates (with Wilson 95% intervals as ``<rate>_lo``/``<rate>_hi``) and lengths over scored replies.

    Accuracy is over all graded rows, a reply without a recoverable answer counting as wrong;
    ``accuracy_when_strict`` only over strictly formatted replies. Rows that are not graded give
    NaN accuracies. Reasoning lengths are in tokens, over replies that have a reasoning block.
    """
    n = len(scored)
    if n == 0:
        raise ValueError("no generations to summarise")
    out: dict[str, float] = {"n": n}
    _rate([s.strict for s in scored], "strict_format", out)
    _rate([s.lenient for s in scored], "lenient_format", out)
    graded = [s for s in scored if s.graded]
    out["graded"] = len(graded)
    _rate([bool(s.correct) for s in graded], "accuracy", out)
    _rate([bool(s.correct) for s in graded if s.strict], "accuracy_when_strict", out)
    _rate([bool(s.last_number_correct) for s in graded], "last_number_accuracy", out)
    _rate([s.truncated for s in scored], "truncated", out)
    out["mean_new_tokens"] = sum(s.new_tokens for s in scored) / n
    lengths = [s.reasoning_tokens for s in scored if s.reasoning]
    out["mean_reasoning_tokens"] = sum(lengths) / len(lengths) if lengths else math.nan
    out.update({f"reasoning_tokens_{k}": v for k, v in percentiles(lengths).items()})
    return out


def breakdown(scored: Sequence[Scored], by: str) -> dict[str, dict[str, float]]:
    """:func:`summarise` per value of the row field ``by`` (MATH-500's ``subject`` or ``level``)."""
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        groups.setdefault(str(s.meta.get(by, "?")), []).append(s)
    return {key: summarise(groups[key]) for key in sorted(groups, key=lambda k: (len(k), k))}


def compare(a: Sequence[Scored], b: Sequence[Scored], metric: str = "correct",
            metric_a: str | None = None) -> PairedComparison:
    """Paired comparison of two models on the same questions (matched by id): McNemar and bootstrap.

    ``metric`` is a boolean field of :class:`Scored` (``correct``, ``last_number_correct``,
    ``strict``, ``lenient``); ``metric_a``, if given, reads ``a`` differently, e.g. a base
    that never writes tags by ``last_number_correct`` against the tuned model's ``correct``.
    """
    metric_a = metric_a or metric
    by_id = {s.id: s for s in b}
    if len(by_id) != len(b) or len(a) != len(b) or set(by_id) != {s.id for s in a}:
        raise ValueError(f"paired comparison needs the same questions: {len(a)} vs {len(b)} replies with different ids")
    pairs = [(s, by_id[s.id]) for s in a]
    if {metric, metric_a} & {"correct", "last_number_correct"}:
        pairs = [(x, y) for x, y in pairs if x.graded]
        if not pairs:
            raise ValueError("no graded questions to compare")
    return compare_paired([bool(getattr(x, metric_a)) for x, _ in pairs], [bool(getattr(y, metric)) for _, y in pairs])


_OPERAND = r"\$?-?\d+(?:\.\d+)?"
_COMPUTATION = re.compile(rf"({_OPERAND}(?:\s*[-+*/×x]\s*{_OPERAND})+)\s*=\s*({_OPERAND})")
_NEXT_OPERAND, _NEXT_OPERATOR = re.compile(rf"\s*({_OPERAND})"), re.compile(r"\s*([-+*/×x])")
_OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "×": operator.mul, "x": operator.mul,
               "/": operator.truediv}
# Numbers a question may give in words ("half of them", "doubles", "a dozen").
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "dozen": 12, "half": 2, "twice": 2, "double": 2, "doubles": 2, "third": 3,
    "triple": 3, "triples": 3, "quarter": 4, "fifth": 5, "hundred": 100, "percent": 100,
}
ERROR_KINDS = ("no computation", "wrong sum", "number from nowhere", "answer is not the last result", "wrong plan")


@dataclass(frozen=True)
class Computation:
    """One ``a op b op … = c`` written in a reply."""

    operands: tuple[Fraction, ...]
    operators: tuple[str, ...]
    result: Fraction

    @property
    def value(self) -> Fraction | None:
        """What the left side is worth (``*`` and ``/`` before ``+`` and ``-``); None on division by zero."""
        terms, signs = [self.operands[0]], []
        for op, operand in zip(self.operators, self.operands[1:]):
            if op in "+-":
                terms.append(operand)
                signs.append(op)
            elif op == "/" and operand == 0:
                return None
            else:
                terms[-1] = _OPERATIONS[op](terms[-1], operand)
        total = terms[0]
        for sign, term in zip(signs, terms[1:]):
            total = _OPERATIONS[sign](total, term)
        return total


def _number(text: str) -> Fraction:
    return Fraction(text.lstrip("$"))


def computations(text: str) -> list[Computation]:
    """Every ``a op b … = c`` written in ``text`` (``+ - * × x /``, ``$`` before a number allowed), in order."""
    found = []
    for left, right in _COMPUTATION.findall(text):
        pieces, at = [], 0
        while at < len(left):  # operand, operator, operand, ...: a minus after an operator is a sign
            match = (_NEXT_OPERATOR if len(pieces) % 2 else _NEXT_OPERAND).match(left, at)
            pieces.append(match.group(1))
            at = match.end()
        operands, operators = pieces[::2], pieces[1::2]
        found.append(Computation(tuple(map(_number, operands)), tuple(operators), _number(right)))
    return found


def error_kind(scored: Scored, metric: str = "correct") -> str | None:
    """Why a graded wrong reply is wrong, read from the computations it wrote; None if it is right.

    Right and wrong are read from ``metric`` (``last_number_correct`` for a base without tags).

    The first that applies, in the order of :data:`ERROR_KINDS`: no ``a op b = c`` at all; a
    computation whose result is wrong; an operand that is neither a number of the question
    (in digits or in :data:`NUMBER_WORDS`) nor the result of an earlier line; a final answer
    other than the last result; and otherwise a wrong plan (every line right and grounded,
    but the wrong lines).
    """
    if not scored.graded or getattr(scored, metric):
        return None
    lines = computations(scored.reasoning if scored.reasoning is not None else scored.output)
    if not lines:
        return "no computation"
    if any(line.value != line.result for line in lines):
        return "wrong sum"
    known = {Fraction(n.replace(",", "")) for n in _NUMBER.findall(scored.question)}
    known.update(Fraction(NUMBER_WORDS[w]) for w in re.findall(r"[a-z]+", scored.question.lower()) if w in NUMBER_WORDS)
    for line in lines:
        if not known.issuperset(line.operands):
            return "number from nowhere"
        known.add(line.result)
    answer = scored.answer if scored.answer is not None else last_number(scored.output)
    if not equivalent(answer, str(lines[-1].result)):
        return "answer is not the last result"
    return "wrong plan"


def error_counts(scored: Sequence[Scored], metric: str = "correct") -> dict[str, int]:
    """How many graded replies are right (by ``metric``) and how many wrong of each :data:`ERROR_KINDS`."""
    kinds = [error_kind(s, metric) for s in scored if s.graded]
    return {"right": kinds.count(None), **{kind: kinds.count(kind) for kind in ERROR_KINDS}}


# --- benchmarks as data ---------------------------------------------------------------------

def load_benchmark(spec: EvalSetSpec, limit: int | None = None) -> Benchmark:
    """An eval set of the profile (``data.eval_sets``) as a benchmark; the gold read as ``spec.gold`` says."""
    from workings.mix import source_rows

    read_gold = GOLD_READERS[spec.gold]
    rows = []
    for i, row in enumerate(source_rows(spec)[:limit]):
        question, gold = row.get(spec.question_field), row.get(spec.answer_field)
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"eval set {spec.name!r}: row {i} has no text in field {spec.question_field!r}")
        if spec.graded:
            if gold is None or (isinstance(gold, str) and not gold.strip()):
                raise ValueError(f"eval set {spec.name!r}: row {i} has no gold answer in field {spec.answer_field!r}")
            try:
                gold = read_gold(str(gold))
            except ValueError as err:
                raise ValueError(f"eval set {spec.name!r}: row {i}, field {spec.answer_field!r}: {err}") from None
        rows.append({
            "id": str(row.get("id", row.get("unique_id", i))), "question": question,
            "gold": str(gold) if spec.graded else None,
            "meta": {k: row[k] for k in spec.group_by if k in row},
        })
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):  # ids from the file must identify rows; fall back to positions
        for i, r in enumerate(rows):
            r["id"] = str(i)
    return Benchmark(spec.name, rows, graded=spec.graded, group_by=list(spec.group_by))


def heldout_benchmarks(heldout: Any, per_source: int | None = None) -> list[Benchmark]:
    """The mix's held-out split as one benchmark per source (``heldout:<source>``).

    Rows whose answers are free text (``graded`` false in the mix) form ungraded benchmarks.
    """
    by_source: dict[str, list[dict[str, Any]]] = {}
    graded: dict[str, bool] = {}
    for r in heldout:
        rows = by_source.setdefault(r["source"], [])
        graded[r["source"]] = graded.get(r["source"], True) and bool(r["graded"])
        if per_source is None or len(rows) < per_source:
            rows.append({"id": r["id"], "question": r["question"], "gold": r["answer"] if r["graded"] else None,
                         "meta": {"source": r["source"]}})
    return [Benchmark(f"heldout:{name}", rows, graded=graded[name]) for name, rows in by_source.items()]


def profile_benchmarks(profile: Profile, heldout: Any | None = None) -> list[Benchmark]:
    """Every eval set of the profile, then (when given the mix's held-out split) one benchmark per source."""
    benchmarks = [load_benchmark(spec) for spec in profile.data.eval_sets]
    if heldout is not None:
        benchmarks += heldout_benchmarks(heldout, profile.evaluation.heldout_rows)
    return benchmarks


# --- running a benchmark ------------------------------------------------------------------

def evaluate_model(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], sampling: SamplingConfig,
                   progress: bool = False, *, out: str | Path | None = None,
                   settings: Mapping[str, Any] | None = None) -> list[Scored]:
    """Ask every row's question and score the reply against the row's gold answer.

    With ``out`` the generations stream to that JSONL file (an interrupted run resumes there) and
    the scored records are written beside it as ``<name>.scored.jsonl``.
    """
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    generations = generate(model, tokenizer, [r["question"] for r in rows], sampling, progress=progress,
                           out=out, ids=ids, settings=dict(settings or {}))
    scored = [score(r["question"], r.get("gold"), g, tokenizer, id=i, meta=r.get("meta"))
              for i, r, g in zip(ids, rows, generations)]
    if out is not None:
        save_scored(scored_path(out), scored)
    return scored


def scored_path(generations_path: str | Path) -> Path:
    path = Path(generations_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".scored.jsonl")


def save_scored(path: str | Path, scored: Sequence[Scored]) -> Path:
    """Write scored records as JSONL, replacing the file only once the new one is complete."""
    return write_jsonl(path, (s.as_dict() for s in scored))


def load_scored(path: str | Path) -> list[Scored]:
    """Read records written by :func:`save_scored`; a bad line is named."""
    out = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            out.append(Scored(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}, line {number}: not a scored record ({err})") from None
    return out


def sampling_configs(evaluation: Any) -> dict[str, SamplingConfig]:
    """The greedy and the sampled generation settings of a profile's evaluation section."""
    common = {"max_new_tokens": evaluation.max_new_tokens, "batch_size": evaluation.batch_size, "seed": evaluation.seed}
    return {
        "greedy": SamplingConfig(**common),
        f"sampled (T={evaluation.temperature:g}, top-p {evaluation.top_p:g})": SamplingConfig(
            temperature=evaluation.temperature, top_p=evaluation.top_p, **common),
    }


# --- a profile's models on its benchmarks ---------------------------------------------------

def model_settings(profile: Profile, adapter: str | Path | None = None) -> dict[str, Any]:
    """What identifies the model that answers: base id and build, precision, engine and adapter weights."""
    from workings.models import TINY, engine_name, model_source

    settings: dict[str, Any] = {
        "model": profile.model.id, "revision": profile.model.revision, "dtype": profile.model.dtype,
        "quantization": asdict(profile.quantization) if profile.quantization else None, "engine": engine_name(profile),
    }
    if profile.model.id == TINY:  # rebuilt per machine: the recipe hash alone does not fix the weights
        settings["build"] = file_digest(Path(model_source(profile.model)) / "model.safetensors")
    if adapter is not None:
        weights = Path(adapter) / "adapter_model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{adapter}: no adapter_model.safetensors; is this a LoRA adapter folder?")
        settings["adapter"] = file_digest(weights)
    return settings


def _complete(path: Path, ids: list[str]) -> list[Scored] | None:
    """The scored records of a finished benchmark run, when every question was answered."""
    scored = scored_path(path)
    if not scored.is_file():
        return None
    records = load_scored(scored)
    return records if [r.id for r in records] == ids else None


def default_adapter(profile: Profile) -> Path | None:
    """The adapter to evaluate: ``evaluation.adapter`` when set, else this profile's SFT run's (if saved)."""
    from workings.profiles import run_dir

    if profile.evaluation.adapter is not None:
        return Path(profile.evaluation.adapter)
    saved = run_dir(profile) / "sft" / "adapter"
    return saved if saved.is_dir() else None


def run_benchmarks(profile: Profile, benchmarks: Sequence[Benchmark], adapter: str | Path | None = None,
                   sampling: SamplingConfig | None = None, out_dir: str | Path | None = None,
                   progress: bool = True) -> dict[str, list[Scored]]:
    """Ask the profile's base (with ``adapter`` when given) every benchmark; scored replies per benchmark.

    Generations go to ``<out_dir>/<settings key>/<benchmark>.jsonl`` (default ``runs/<profile>/eval``),
    keyed by everything that changes a reply, so a finished benchmark is read back instead of asked
    again and an interrupted one resumes. The model is only loaded if something is left to ask.
    """
    from workings.models import load_generator, load_tokenizer
    from workings.profiles import run_dir

    sampling = sampling or sampling_configs(profile.evaluation)["greedy"]
    settings = model_settings(profile, adapter)
    folder = Path(out_dir or run_dir(profile) / "eval") / json_digest({**settings, "sampling": asdict(sampling)}, 10)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({**settings, "sampling": asdict(sampling),
                                                      "adapter_path": str(adapter) if adapter else None}, indent=1))
    tokenizer, model = None, None
    results: dict[str, list[Scored]] = {}
    for bench in benchmarks:
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench.name)}.jsonl"
        done = _complete(path, [r["id"] for r in bench.rows])
        if done is not None:
            results[bench.name] = done
            continue
        if model is None:
            tokenizer = load_tokenizer(profile.model)
            model = load_generator(profile, adapter)
        if progress:
            print(f"{bench.name}: {len(bench.rows)} questions -> {path}", flush=True)
        results[bench.name] = evaluate_model(model, tokenizer, bench.rows, sampling, progress, out=path, settings=settings)
    return results
