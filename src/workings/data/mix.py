"""The mix builder: many sources in, one clean, decontaminated training set out.

Stages, in order, each a function below that counts what it drops per source and why:

1. load and convert every row (:func:`convert_sources`, with :func:`workings.data.sources.convert`),
   dropping rows flagged as disagreeing with their source's ground truth;
2. drop exact duplicates (same normalised question, reasoning and answer: :func:`drop_exact_duplicates`);
3. drop rows whose rendered chat is longer than ``max_length`` tokens of the model's tokenizer
   (dropped, never cut: cutting would cut the answer; :func:`measure_lengths`);
4. group (near-)identical questions (MinHash over word 3-grams, verified by exact Jaccard) and keep
   at most ``max_per_question`` rows per group (:func:`group_questions`);
5. drop rows whose question overlaps a benchmark question (the profile's eval sets) by
   normalised word n-grams (:func:`decontaminate`);
6. set aside ``heldout`` question groups per source for evaluation, and drop training rows whose
   question overlaps a held-out question (:func:`split_heldout`);
7. cap each source, apply its weight, shuffle deterministically (:func:`cap_and_weight`), save.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import numpy as np
from tqdm import tqdm

from workings.core.chat import prompt_completion
from workings.data.dedup import NgramIndex, near_duplicate_pairs, normalise
from workings.data.example import DataUnavailable, Example, Unusable
from workings.data.sources import convert, load_rows, reasoning_gym_rows
from workings.data.synthetic import generate_synthetic
from workings.files import file_digest, json_digest, module_digests, write_folder

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the profile's types; data sits below config and reads them by attribute only
    from workings.config.schema import DataConfig, EvalSetSpec, Origin


@dataclass
class SourceCounts:
    rows_in: int = 0
    converted: int = 0
    dropped: Counter = field(default_factory=Counter)
    heldout: int = 0
    train_unique: int = 0
    train_rows: int = 0
    lengths: list[int] = field(default_factory=list)  # tokens of the rows that reached training

    def to_report(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "converted": self.converted,
            "dropped": dict(sorted(self.dropped.items())),
            "heldout": self.heldout,
            "train_unique": self.train_unique,
            "train_rows": self.train_rows,
            "tokens": _percentiles(self.lengths),
        }


@dataclass
class Mix:
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    report: dict[str, Any]


def source_rows(spec: Origin) -> list[dict[str, Any]]:
    """Raw rows of a source or eval set, from the Hub, a local file or the synthetic generator."""
    if spec.synthetic is not None:
        s = spec.synthetic
        return [e.to_dict() for e in generate_synthetic(s.n, s.seed, s.min_steps, s.max_steps, s.numbers)]
    if spec.reasoning_gym is not None:
        g = spec.reasoning_gym
        return reasoning_gym_rows(g.dataset, g.size, g.seed, g.config)
    return load_rows(hub_id=spec.hub_id, config=spec.config, split=spec.split, revision=spec.revision, path=spec.path)


def describe_origin(spec: Origin) -> str:
    """Where a source's rows came from, for the report; a Hub source without a revision says it is unpinned."""
    if spec.synthetic is not None:
        s = spec.synthetic
        return f"synthetic generator ({s.numbers} numbers, {s.min_steps}-{s.max_steps} steps), seed {s.seed}, {s.n} rows"
    if spec.reasoning_gym is not None:
        g = spec.reasoning_gym
        options = "".join(f", {k}={v}" for k, v in sorted(g.config.items()))
        return f"reasoning-gym {g.dataset} (seed {g.seed}{options}), {g.size} rows"
    if spec.path is not None:
        return f"local file {spec.path}"
    where = f"{spec.hub_id} ({spec.config or 'default'}/{spec.split})"
    return f"{where} @ {spec.revision}" if spec.revision else f"{where} @ UNPINNED (latest on the Hub)"


def eval_questions(spec: EvalSetSpec) -> list[str]:
    """The questions of an eval set, read from the field the profile names."""
    rows = source_rows(spec)
    missing = [i for i, r in enumerate(rows) if not isinstance(r.get(spec.question_field), str)]
    if missing:
        raise ValueError(f"eval set {spec.name!r}: row {missing[0]} has no text field {spec.question_field!r}")
    return [r[spec.question_field] for r in rows]


def _percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {}
    values = np.percentile(lengths, [50, 90, 99])
    return {"p50": int(values[0]), "p90": int(values[1]), "p99": int(values[2]), "max": int(max(lengths))}


@dataclass(frozen=True)
class _Fitted:
    """An example that fits ``max_length``, with its rendered chat (rendered once: it is the slow part)."""

    example: Example
    n_tokens: int
    chat: dict[str, str]

    def row(self) -> dict[str, Any]:
        row = self.example.to_dict()
        row["meta"] = json.dumps(row["meta"], sort_keys=True)
        return {**row, **self.chat, "n_tokens": self.n_tokens}


Counts = dict[str, SourceCounts]


def convert_sources(config: DataConfig, counts: Counts, progress: bool) -> list[Example]:
    """Stage 1: every source's rows converted, named after their source; flagged rows dropped."""
    examples: list[Example] = []
    for spec in config.sources:
        c = counts[spec.name]
        rows = source_rows(spec)
        c.rows_in = len(rows)
        for row in tqdm(rows, desc=f"convert {spec.name}", disable=not progress, leave=False):
            try:
                example = convert(spec.converter, row, keep_domains=tuple(spec.keep_domains))
            except Unusable as err:
                c.dropped[err.reason] += 1
                continue
            c.converted += 1
            if config.drop_flagged and example.meta.get("disagrees_with_ground_truth"):
                c.dropped["disagrees_with_ground_truth"] += 1
                continue
            examples.append(replace(example, source=spec.name))
    return examples


def drop_exact_duplicates(examples: list[Example], counts: Counts) -> list[Example]:
    """Stage 2: the first of every (normalised question, reasoning, answer)."""
    seen: set[str] = set()
    unique: list[Example] = []
    for ex in examples:
        key = hashlib.sha1("\0".join(normalise(t) for t in (ex.question, ex.reasoning, ex.answer)).encode()).hexdigest()
        if key in seen:
            counts[ex.source].dropped["exact_duplicate"] += 1
        else:
            seen.add(key)
            unique.append(ex)
    return unique


# Rows per task of the length stage; the tokenizer of a worker process (set by its pool).
LENGTH_CHUNK = 512
_worker_tokenizer: Any = None


def _set_worker_tokenizer(tokenizer: Any) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _render_and_count(chunk: list[tuple[str, str, str]]) -> list[tuple[int, dict[str, str]]]:
    """Each (question, reasoning, answer) rendered as the model's chat, with its length in tokens."""
    chats = [prompt_completion(q, r, a, _worker_tokenizer) for q, r, a in chunk]
    ids = _worker_tokenizer([chat["prompt"] + chat["completion"] for chat in chats], add_special_tokens=False)["input_ids"]
    return [(len(row), chat) for row, chat in zip(ids, chats)]


@contextmanager
def worker_pool(num_proc: int, tokenizer: Any) -> Iterator[Callable[[Callable, list], Iterable]]:
    """An ordered ``map`` over ``num_proc`` worker processes that hold ``tokenizer`` (the plain
    ``map`` in this process when ``num_proc`` is 1).

    Workers are forked where the platform allows it (a spawned one spends seconds importing
    transformers again), with the tokenizer's own threads off in them: they are one process per
    core already, and tokenizers would otherwise warn that a fork stopped its threads.
    """
    if num_proc <= 1:
        _set_worker_tokenizer(tokenizer)
        try:
            yield map
        finally:
            _set_worker_tokenizer(None)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    # Set for the workers while the pool lives, then restored as it was.
    with patch.dict(os.environ, {"TOKENIZERS_PARALLELISM": "false"}), \
            ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context(method),
                                initializer=_set_worker_tokenizer, initargs=(tokenizer,)) as pool:
        yield pool.map


def measure_lengths(examples: list[Example], max_length: int, counts: Counts, progress: bool,
                    map_chunks: Callable[[Callable, list], Iterable] = map) -> list[_Fitted]:
    """Stage 3: the rows whose rendered chat fits ``max_length`` tokens of the model's tokenizer
    (the tokenizer of :func:`worker_pool`, whose ``map`` is ``map_chunks``)."""
    chunks = [[(ex.question, ex.reasoning, ex.answer) for ex in examples[i : i + LENGTH_CHUNK]]
              for i in range(0, len(examples), LENGTH_CHUNK)]
    measured = map_chunks(_render_and_count, chunks)
    fitting: list[_Fitted] = []
    bar = tqdm(total=len(examples), desc="measure length", disable=not progress, leave=False, unit="row")
    for start, results in zip(range(0, len(examples), LENGTH_CHUNK), measured):
        for ex, (n, chat) in zip(examples[start : start + LENGTH_CHUNK], results):
            if n > max_length:
                counts[ex.source].dropped["too_long"] += 1
            else:
                fitting.append(_Fitted(ex, n, chat))
        bar.update(len(results))
    bar.close()
    return fitting


def group_questions(fitting: list[_Fitted], config: DataConfig, counts: Counts,
                    map_chunks: Callable[[Callable, list], Iterable] = map) -> dict[int, list[int]]:
    """Stage 4: (near-)identical questions grouped (union-find over exact normalised matches and
    MinHash pairs); at most ``max_per_question`` rows kept per group, keyed by the group's first row."""
    parent = list(range(len(fitting)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_text: dict[str, int] = {}
    exact_pairs = []
    for i, fitted in enumerate(fitting):
        key = normalise(fitted.example.question)
        if key in by_text:
            exact_pairs.append((by_text[key], i))
        else:
            by_text[key] = i
    near = near_duplicate_pairs([f.example.question for f in fitting], config.near_duplicate_threshold, seed=config.seed,
                                map_chunks=map_chunks)
    for i, j in exact_pairs + near:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(fitting)):
        groups[find(i)].append(i)
    exact_members = {j for _, j in exact_pairs}
    kept_groups: dict[int, list[int]] = {}
    for root, members in groups.items():
        kept_groups[root] = members[: config.max_per_question]
        for j in members[config.max_per_question :]:
            reason = "duplicate_question" if j in exact_members else "near_duplicate_question"
            counts[fitting[j].example.source].dropped[reason] += 1
    return kept_groups


@dataclass
class _Decontaminator:
    """Drops rows whose question shares ``threshold`` of its n-grams with an index, and records them."""

    fitting: list[_Fitted]
    threshold: float
    counts: Counts
    rows: list[dict[str, Any]] = field(default_factory=list)
    by_eval: Counter = field(default_factory=Counter)

    def clean(self, members: list[int], against: NgramIndex) -> list[int]:
        kept = []
        for j in members:
            ex = self.fitting[j].example
            share, owner = against.overlap(ex.question)
            if share >= self.threshold:
                self.counts[ex.source].dropped[f"contaminated:{owner}"] += 1
                self.by_eval[owner] += 1
                self.rows.append({"id": ex.id, "source": ex.source, "eval_set": owner, "overlap": round(share, 3),
                                  "question": ex.question[:200]})
            else:
                kept.append(j)
        return kept


def decontaminate(groups: dict[int, list[int]], config: DataConfig, cleaner: _Decontaminator,
                  eval_sizes: dict[str, int]) -> dict[int, list[int]]:
    """Stage 5: rows overlapping a benchmark question go, before the held-out split so neither split holds them."""
    index = NgramIndex(config.decontamination.ngram)
    for eval_spec in config.eval_sets:
        questions = eval_questions(eval_spec)
        eval_sizes[eval_spec.name] = len(questions)
        index.add(eval_spec.name, questions)
    return {root: kept for root, members in groups.items() if (kept := cleaner.clean(members, index))}


def split_heldout(groups: dict[int, list[int]], config: DataConfig, cleaner: _Decontaminator, rng: random.Random,
                  eval_sizes: dict[str, int]) -> tuple[list[_Fitted], dict[str, list[_Fitted]]]:
    """Stage 6: ``heldout`` whole question groups per source (by the group's first row) set aside;
    training rows too close to a held-out question (below the near-duplicate threshold) go too.

    Returns the held-out rows and the training candidates per source.
    """
    fitting, counts = cleaner.fitting, cleaner.counts
    roots_by_source: dict[str, list[int]] = defaultdict(list)
    for root in sorted(groups):
        roots_by_source[fitting[groups[root][0]].example.source].append(root)
    heldout_roots: set[int] = set()
    for spec in config.sources:
        roots = roots_by_source.get(spec.name, [])
        take = min(spec.heldout, len(roots))
        heldout_roots.update(rng.sample(roots, take))
        counts[spec.name].heldout = take
    heldout = [fitting[groups[root][0]] for root in sorted(heldout_roots)]
    for root in heldout_roots:
        for j in groups[root][1:]:
            counts[fitting[j].example.source].dropped["heldout_question"] += 1

    heldout_index = NgramIndex(config.decontamination.ngram)
    heldout_index.add("heldout", [f.example.question for f in heldout])
    eval_sizes["heldout"] = len(heldout)
    candidates: dict[str, list[_Fitted]] = defaultdict(list)
    for root in sorted(groups):
        if root not in heldout_roots:
            for j in cleaner.clean(groups[root], heldout_index):
                candidates[fitting[j].example.source].append(fitting[j])
    return heldout, candidates


def cap_and_weight(candidates: dict[str, list[_Fitted]], config: DataConfig, counts: Counts,
                   rng: random.Random) -> list[_Fitted]:
    """Stage 7: each source shuffled, capped at ``cap`` and repeated ``weight`` times; the whole shuffled."""
    train: list[_Fitted] = []
    for spec in config.sources:
        pool = candidates.get(spec.name, [])
        rng.shuffle(pool)
        if spec.cap is not None and len(pool) > spec.cap:
            counts[spec.name].dropped["over_cap"] += len(pool) - spec.cap
            pool = pool[: spec.cap]
        c = counts[spec.name]
        c.train_unique = len(pool)
        whole, fraction = divmod(spec.weight, 1)
        weighted = pool * int(whole) + pool[: round(fraction * len(pool))]
        c.train_rows = len(weighted)
        c.lengths = [f.n_tokens for f in pool]
        train.extend(weighted)
    rng.shuffle(train)
    return train


def check_every_source_contributes(config: DataConfig, counts: Counts) -> None:
    """A source that gives the mix no row at all is a mistake (a wrong path, an empty file, another
    dataset's schema): fail, naming the source, where its rows came from and why each was dropped."""
    for spec in config.sources:
        c = counts[spec.name]
        if c.train_rows + c.heldout == 0:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(c.dropped.items(), key=lambda kv: -kv[1]))
            raise DataUnavailable(
                f"source {spec.name!r} ({describe_origin(spec)}) gives the mix no rows: "
                f"{c.rows_in} read" + (f"; dropped: {reasons}" if reasons else ""))


def build_mix(config: DataConfig, tokenizer: Any, *, progress: bool = True, num_proc: int = 1) -> Mix:
    """Run every stage on the profile's sources; see the module docstring.

    ``num_proc`` worker processes render, tokenize and sign (MinHash) the rows in ordered chunks;
    every other stage reads them in the same order, so the mix is the same for any ``num_proc``.
    """
    counts = {spec.name: SourceCounts() for spec in config.sources}
    examples = drop_exact_duplicates(convert_sources(config, counts, progress), counts)
    with worker_pool(num_proc, tokenizer) as map_chunks:
        started = time.perf_counter()
        fitting = measure_lengths(examples, config.max_length, counts, progress, map_chunks)
        log.info("rendered and measured %d rows in %.1f s (%d process(es))", len(examples),
                 time.perf_counter() - started, num_proc)
        groups = group_questions(fitting, config, counts, map_chunks)
    cleaner = _Decontaminator(fitting, config.decontamination.threshold, counts)
    eval_sizes: dict[str, int] = {}
    groups = decontaminate(groups, config, cleaner, eval_sizes)
    rng = random.Random(config.seed)  # one stream: the held-out draw, then the shuffles
    heldout, candidates = split_heldout(groups, config, cleaner, rng, eval_sizes)
    train = cap_and_weight(candidates, config, counts, rng)
    check_every_source_contributes(config, counts)
    report = {
        "seed": config.seed,
        "max_length": config.max_length,
        "sources": {
            spec.name: {"origin": describe_origin(spec), **counts[spec.name].to_report()} for spec in config.sources
        },
        "totals": {
            "rows_in": sum(c.rows_in for c in counts.values()),
            "train_rows": len(train),
            "heldout": len(heldout),
            "dropped": dict(sorted(sum((c.dropped for c in counts.values()), Counter()).items())),
        },
        "contamination": {"ngram": config.decontamination.ngram, "threshold": config.decontamination.threshold,
                          "eval_sets": eval_sizes, "by_eval_set": dict(cleaner.by_eval), "rows": cleaner.rows},
    }
    return Mix(train=[f.row() for f in train], heldout=[f.row() for f in heldout], report=report)


def save_mix(mix: Mix, out_dir: str | Path, extra_report: dict[str, Any] | None = None) -> Path:
    """Write ``train/`` and ``heldout/`` (``datasets`` format) and ``report.json``; atomic per directory.

    Everything is first written next to ``out_dir`` and then swapped in, so a failure
    part-way leaves the previous mix untouched.
    """
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # saving takes well under a second; its bars only add noise

    def write(tmp: Path) -> None:
        features = _features()
        for name, rows in (("train", mix.train), ("heldout", mix.heldout)):
            # from_dict keeps the schema when a split is empty (from_list([]) would lose it)
            columns = {key: [row[key] for row in rows] for key in features}
            datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp / name))
        report = {**(extra_report or {}), **mix.report}
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    try:
        return write_folder(out_dir, write, what="mix", recognise=is_saved_mix)
    finally:
        if bars:
            datasets.enable_progress_bars()


def is_saved_mix(folder: Path) -> bool:
    """Whether ``folder`` is a mix :func:`save_mix` wrote (before mixes were marked as workings' own):
    ``report.json``, ``train/`` and ``heldout/``, and nothing else."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return names == {"report.json", "train", "heldout"}


def _features() -> Any:
    import datasets

    text = datasets.Value("string")
    return datasets.Features(
        {
            "id": text, "source": text, "question": text, "reasoning": text, "answer": text,
            "graded": datasets.Value("bool"), "meta": text, "prompt": text, "completion": text,
            "n_tokens": datasets.Value("int32"),
        }
    )


def load_mix(out_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """The saved ``train`` and ``heldout`` datasets and the report."""
    out_dir = Path(out_dir)
    report = json.loads((out_dir / "report.json").read_text())
    return _load_split(out_dir / "train"), _load_split(out_dir / "heldout"), report


def _load_split(path: Path) -> Any:
    """``datasets.load_from_disk``, which cannot read back an empty split: that becomes an empty Dataset."""
    import datasets
    import pyarrow as pa

    if json.loads((path / "state.json").read_text()).get("_data_files"):
        return datasets.load_from_disk(str(path))
    return datasets.Dataset(pa.Table.from_pylist([], schema=_features().arrow_schema))


# The modules whose code decides what a mix holds.
MIX_MODULES = ("data.mix", "data.dedup", "data.sources", "data.example", "data.synthetic", "core.answers",
               "core.format", "core.chat")


def mix_provenance(name: str, data: DataConfig, model_id: str) -> dict[str, Any]:
    """What a saved mix was built from: the profile, its model, and a key over the data settings
    (Hub revisions included), the content of local source files and the curation code (see
    :func:`ensure_mix`)."""
    files = {spec.path: file_digest(spec.path) for spec in [*data.sources, *data.eval_sets]
             if spec.path is not None and Path(spec.path).is_file()}  # an edit in place rebuilds the mix
    key = json_digest({"data": asdict(data), "model": model_id, "code": module_digests(*MIX_MODULES), "files": files}, 16)
    return {"profile": name, "model": model_id, "data_key": key}


def mix_is_current(out_dir: str | Path, provenance: dict[str, Any]) -> bool:
    """Whether ``out_dir`` holds a mix built from ``provenance``'s data settings, model and code."""
    report_file = Path(out_dir) / "report.json"
    return report_file.is_file() and json.loads(report_file.read_text()).get("data_key") == provenance["data_key"]


def ensure_mix(out_dir: str | Path, provenance: dict[str, Any], data: DataConfig, tokenizer: Callable[[], Any],
               *, progress: bool = True, num_proc: int = 1) -> Path:
    """The mix folder ``out_dir``, built and saved first if it is missing or was built from other
    data settings, another model or other curation code (another ``provenance["data_key"]``).

    ``tokenizer`` is called only when the mix has to be built.
    """
    out_dir = Path(out_dir)
    if mix_is_current(out_dir, provenance):
        return out_dir
    mix = build_mix(data, tokenizer(), progress=progress, num_proc=num_proc)
    return save_mix(mix, out_dir, provenance)


def lengths_by_source(dataset: Any) -> dict[str, list[int]]:
    """Token lengths of a saved mix split, grouped by source."""
    out: dict[str, list[int]] = {}
    for source, n in zip(dataset["source"], dataset["n_tokens"]):
        out.setdefault(source, []).append(n)
    return out
