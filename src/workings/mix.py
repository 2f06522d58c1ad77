"""The mix builder: many sources in, one clean, decontaminated training set out.

Stages, in order, each counting what it drops per source and why:

1. load and convert every row (:func:`workings.data.convert`);
2. drop rows flagged as disagreeing with their source's ground truth;
3. drop exact duplicates (same normalised question, reasoning and answer);
4. drop rows whose rendered chat is longer than ``max_length`` tokens of the
   model's tokenizer (dropped, never cut: cutting would cut the answer);
5. group (near-)identical questions (MinHash over word 3-grams, verified by
   exact Jaccard) and keep at most ``max_per_question`` rows per group;
6. drop rows whose question overlaps a benchmark question (the profile's
   eval sets) by normalised word n-grams;
7. set aside ``heldout`` question groups per source for evaluation, and drop
   training rows whose question overlaps a held-out question;
8. cap each source, apply its weight, shuffle deterministically, save.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from workings import json_digest, module_digests, write_folder
from workings.chat import prompt_completion
from workings.data import Example, Unusable, convert, load_rows
from workings.profiles import DataConfig, EvalSetSpec, Origin
from workings.synthetic import generate_synthetic

# --- text normalisation, n-grams and MinHash ----------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, NFKC, punctuation to spaces, whitespace collapsed: the text duplicates are judged on."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def word_ngrams(text: str, n: int) -> set[str]:
    """Word n-grams of the normalised text; a text shorter than n words is one n-gram."""
    words = normalise(text).split()
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic): a fresh random-like order."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def lsh_rows_per_band(threshold: float, num_perm: int, recall: float = 0.999) -> int:
    """The most rows per band (fewest false candidates) that still find a pair at ``threshold`` with ``recall``."""
    for rows in range(num_perm, 0, -1):
        if 1 - (1 - threshold**rows) ** (num_perm // rows) >= recall:
            return rows
    return 1


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float, *, n: int = 3, num_perm: int = 128, seed: int = 0
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose word ``n``-gram Jaccard similarity is at least ``threshold``.

    MinHash with LSH banding proposes candidates, with bands sized so a pair exactly at the
    threshold is proposed with probability >= 0.999 (higher similarity, higher still); every
    candidate is checked with the exact Jaccard similarity, so no pair below the threshold is returned.
    """
    rows = lsh_rows_per_band(threshold, num_perm)
    bands = num_perm // rows
    salts = np.random.default_rng(seed).integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64)
    shingles = [word_ngrams(t, n) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, grams in enumerate(shingles):
        if not grams:
            continue
        hashes = np.fromiter((_hash64(g) for g in grams), dtype=np.uint64, count=len(grams))
        signature = _mix64(hashes[:, None] ^ salts[None, :]).min(axis=0)
        for band in range(bands):
            buckets[(band, signature[band * rows : (band + 1) * rows].tobytes())].append(i)
    candidates = {(m[x], m[y]) for m in buckets.values() if len(m) > 1 for x in range(len(m)) for y in range(x + 1, len(m))}
    return sorted((i, j) for i, j in candidates if jaccard(shingles[i], shingles[j]) >= threshold)


class NgramIndex:
    """Word n-grams of evaluation questions, to test training questions against."""

    def __init__(self, n: int):
        self.n = n
        self.owners: dict[str, set[str]] = defaultdict(set)

    def add(self, name: str, questions: Iterable[str]) -> None:
        for question in questions:
            for gram in word_ngrams(question, self.n):
                self.owners[gram].add(name)

    def overlap(self, question: str) -> tuple[float, str | None]:
        """Fraction of the question's n-grams found in the index, and the eval set most of them come from."""
        grams = word_ngrams(question, self.n)
        if not grams:
            return 0.0, None
        hits = Counter(name for g in grams for name in self.owners.get(g, ()))
        found = sum(1 for g in grams if g in self.owners)
        return found / len(grams), (hits.most_common(1)[0][0] if hits else None)


# --- the builder ---------------------------------------------------------------------------------


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
    return load_rows(hub_id=spec.hub_id, config=spec.config, split=spec.split, revision=spec.revision, path=spec.path)


def describe_origin(spec: Origin) -> str:
    """Where a source's rows came from, for the report; a Hub source without a revision says it is unpinned."""
    if spec.synthetic is not None:
        s = spec.synthetic
        return f"synthetic generator ({s.numbers} numbers, {s.min_steps}-{s.max_steps} steps), seed {s.seed}, {s.n} rows"
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


def build_mix(config: DataConfig, tokenizer: Any, *, progress: bool = True) -> Mix:
    """Run every stage on the profile's sources; see the module docstring."""
    counts = {spec.name: SourceCounts() for spec in config.sources}
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

    # exact duplicates
    seen: set[str] = set()
    unique: list[Example] = []
    for ex in examples:
        key = hashlib.sha1("\0".join(normalise(t) for t in (ex.question, ex.reasoning, ex.answer)).encode()).hexdigest()
        if key in seen:
            counts[ex.source].dropped["exact_duplicate"] += 1
        else:
            seen.add(key)
            unique.append(ex)

    # token length of the rendered chat, with the model's tokenizer
    fitting: list[_Fitted] = []
    batch = 256
    for start in tqdm(range(0, len(unique), batch), desc="measure length", disable=not progress, leave=False):
        chunk = unique[start : start + batch]
        chats = [prompt_completion(ex, tokenizer) for ex in chunk]
        texts = [chat["prompt"] + chat["completion"] for chat in chats]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        for ex, n, chat in zip(chunk, lengths, chats):
            if n > config.max_length:
                counts[ex.source].dropped["too_long"] += 1
            else:
                fitting.append(_Fitted(ex, n, chat))

    # (near-)duplicate questions: union-find over exact normalised matches and MinHash pairs
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
    near = near_duplicate_pairs([f.example.question for f in fitting], config.near_duplicate_threshold, seed=config.seed)
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

    # decontamination against the benchmarks, before the held-out split so neither split holds them
    index = NgramIndex(config.decontamination.ngram)
    eval_sizes: dict[str, int] = {}
    for eval_spec in config.eval_sets:
        questions = eval_questions(eval_spec)
        eval_sizes[eval_spec.name] = len(questions)
        index.add(eval_spec.name, questions)
    contaminated: list[dict[str, Any]] = []
    by_eval: Counter = Counter()

    def clean(members: list[int], against: NgramIndex) -> list[int]:
        kept = []
        for j in members:
            ex = fitting[j].example
            share, owner = against.overlap(ex.question)
            if share >= config.decontamination.threshold:
                counts[ex.source].dropped[f"contaminated:{owner}"] += 1
                by_eval[owner] += 1
                contaminated.append({"id": ex.id, "source": ex.source, "eval_set": owner, "overlap": round(share, 3), "question": ex.question[:200]})
            else:
                kept.append(j)
        return kept

    kept_groups = {root: kept for root, members in kept_groups.items() if (kept := clean(members, index))}

    # held-out split: whole question groups, per source of the group's first row
    rng = random.Random(config.seed)
    roots_by_source: dict[str, list[int]] = defaultdict(list)
    for root in sorted(kept_groups):
        roots_by_source[fitting[kept_groups[root][0]].example.source].append(root)
    heldout_roots: set[int] = set()
    for spec in config.sources:
        roots = roots_by_source.get(spec.name, [])
        take = min(spec.heldout, len(roots))
        heldout_roots.update(rng.sample(roots, take))
        counts[spec.name].heldout = take
    heldout = [fitting[kept_groups[root][0]] for root in sorted(heldout_roots)]
    for root in heldout_roots:
        for j in kept_groups[root][1:]:
            counts[fitting[j].example.source].dropped["heldout_question"] += 1

    # training rows too close to a held-out question (below the near-duplicate threshold) go too
    heldout_index = NgramIndex(config.decontamination.ngram)
    heldout_index.add("heldout", [f.example.question for f in heldout])
    eval_sizes["heldout"] = len(heldout)
    candidates: dict[str, list[_Fitted]] = defaultdict(list)
    for root in sorted(kept_groups):
        if root not in heldout_roots:
            for j in clean(kept_groups[root], heldout_index):
                candidates[fitting[j].example.source].append(fitting[j])

    # caps, weights, shuffle
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
        "contamination": {"ngram": config.decontamination.ngram, "threshold": config.decontamination.threshold, "eval_sets": eval_sizes, "by_eval_set": dict(by_eval), "rows": contaminated},
    }
    return Mix(
        train=[f.row() for f in train],
        heldout=[f.row() for f in heldout],
        report=report,
    )


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
        return write_folder(out_dir, write)
    finally:
        if bars:
            datasets.enable_progress_bars()


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
MIX_MODULES = ("mix", "data", "synthetic", "answers", "format", "chat")


def mix_provenance(profile: Any) -> dict[str, Any]:
    """What a saved mix was built from: the profile, its model, and a key over the data
    settings and the curation code (see :func:`ensure_mix`)."""
    from dataclasses import asdict

    key = json_digest({"data": asdict(profile.data), "model": profile.model.id, "code": module_digests(*MIX_MODULES)}, 16)
    return {"profile": profile.name, "model": profile.model.id, "data_key": key}


def ensure_mix(profile: Any, *, progress: bool = True) -> Path:
    """The profile's mix folder (``runs/<profile>/mix``), built and saved first if it is missing
    or was built from other data settings, another model or other curation code."""
    from workings.models import load_tokenizer
    from workings.profiles import run_dir

    out_dir = run_dir(profile) / "mix"
    report_file = out_dir / "report.json"
    provenance = mix_provenance(profile)
    if report_file.is_file() and json.loads(report_file.read_text()).get("data_key") == provenance["data_key"]:
        return out_dir
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=progress)
    return save_mix(mix, out_dir, provenance)
