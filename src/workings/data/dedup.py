"""Duplicates and contamination: normalised text, word n-grams, MinHash near-duplicates, an n-gram index."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np


SIGNATURE_CHUNK = 2000  # texts per task when signatures are computed in parallel


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


def minhash_signatures(texts: Sequence[str], n: int, salts: np.ndarray) -> list[np.ndarray | None]:
    """Each text's MinHash signature over its word ``n``-grams (``None`` for a text without words)."""
    out: list[np.ndarray | None] = []
    for text in texts:
        grams = word_ngrams(text, n)
        if not grams:
            out.append(None)
            continue
        hashes = np.fromiter((_hash64(g) for g in grams), dtype=np.uint64, count=len(grams))
        out.append(_mix64(hashes[:, None] ^ salts[None, :]).min(axis=0))
    return out


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float, *, n: int = 3, num_perm: int = 128, seed: int = 0,
    map_chunks: Callable[[Callable, list], Iterable] = map,
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose word ``n``-gram Jaccard similarity is at least ``threshold``.

    MinHash with LSH banding proposes candidates, with bands sized so a pair exactly at the
    threshold is proposed with probability >= 0.999 (higher similarity, higher still); every
    candidate is checked with the exact Jaccard similarity, so no pair below the threshold is returned.
    ``map_chunks`` computes the signatures of consecutive chunks of texts, in order (a process
    pool's ``map`` spreads them over cores; the pairs are the same).
    """
    rows = lsh_rows_per_band(threshold, num_perm)
    bands = num_perm // rows
    salts = np.random.default_rng(seed).integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64)
    chunks = [list(texts[i : i + SIGNATURE_CHUNK]) for i in range(0, len(texts), SIGNATURE_CHUNK)]
    signatures = [sig for chunk in map_chunks(partial(minhash_signatures, n=n, salts=salts), chunks) for sig in chunk]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, signature in enumerate(signatures):
        if signature is None:
            continue
        for band in range(bands):
            buckets[(band, signature[band * rows : (band + 1) * rows].tobytes())].append(i)
    candidates = {(m[x], m[y]) for m in buckets.values() if len(m) > 1 for x in range(len(m)) for y in range(x + 1, len(m))}
    shingles: dict[int, set[str]] = {}

    def grams(i: int) -> set[str]:
        if i not in shingles:
            shingles[i] = word_ngrams(texts[i], n)
        return shingles[i]

    return sorted((i, j) for i, j in candidates if jaccard(grams(i), grams(j)) >= threshold)


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
