"""Rows per second of the mix builder, by number of worker processes, on a local JSON Lines file.

Builds the ``demo`` profile's data settings over one source file (GSM8K's train split by
default, converted with the ``gsm8k`` converter; the file is not part of the repository) with
the demo's own tokenizer, once per ``--num-proc``, checks that every build gives the same mix,
and prints one table: seconds and rows per second per stage group and in all, and a projection
to ``--project-rows`` rows on ``--project-cores`` cores (the serial stages scale with rows, the
parallel ones with rows over cores).

    python benchmarks/mix_speed.py --path ../shared/data/gsm8k_train.jsonl --num-proc 1 2

Not a test: it reads a file outside the repository and takes minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time


def timed_build(data, tokenizer, num_proc: int) -> tuple[dict[str, float], object]:
    """Build the mix, timing the parallel stages (render and tokenize; sign) apart from the rest."""
    import workings.data.mix as mix

    seconds = {"parallel": 0.0}
    original = mix.worker_pool

    class Timed:
        def __init__(self, map_chunks):
            self.map_chunks = map_chunks

        def __call__(self, fn, chunks):
            start = time.perf_counter()
            out = list(self.map_chunks(fn, chunks))
            seconds["parallel"] += time.perf_counter() - start
            return out

    from contextlib import contextmanager

    @contextmanager
    def timed_pool(n, tok):
        with original(n, tok) as map_chunks:
            start = time.perf_counter()
            yield Timed(map_chunks)
            seconds["pool"] = time.perf_counter() - start

    mix.worker_pool = timed_pool
    try:
        start = time.perf_counter()
        built = mix.build_mix(data, tokenizer, progress=False, num_proc=num_proc)
        seconds["total"] = time.perf_counter() - start
    finally:
        mix.worker_pool = original
    seconds["serial"] = seconds["total"] - seconds["parallel"]
    return seconds, built


def main() -> None:
    from workings.config.loading import load_profile
    from workings.models.loading import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="a JSON Lines file of the converter's schema")
    parser.add_argument("--converter", default="gsm8k")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--project-rows", type=int, default=577_000)
    parser.add_argument("--project-cores", type=int, default=16)
    args = parser.parse_args()

    profile = load_profile("demo")
    source = dataclasses.replace(profile.data.sources[1], name="source", converter=args.converter,
                                 path=os.path.abspath(args.path), heldout=50)
    data = dataclasses.replace(profile.data, sources=[source])
    tokenizer = load_tokenizer(profile.model)
    rows = sum(1 for line in open(args.path) if line.strip())
    results, first = [], None
    for n in args.num_proc:
        seconds, built = timed_build(data, tokenizer, n)
        if first is None:
            first = built
        assert (built.train, built.heldout, built.report) == (first.train, first.heldout, first.report), n
        results.append((n, seconds))
    cpu = os.cpu_count()
    print(f"\n{rows} rows of {args.path}, demo tokenizer, {cpu} cores; every build gave the same mix")
    print(f"{'processes':>9}  {'parallel s':>10}  {'serial s':>8}  {'total s':>7}  {'rows/s':>7}")
    for n, s in results:
        print(f"{n:>9}  {s['parallel']:>10.2f}  {s['serial']:>8.2f}  {s['total']:>7.2f}  {rows / s['total']:>7.0f}")
    n, s = results[0]
    parallel_per_row = s["parallel"] * n / rows  # one core's seconds per row for the parallel stages
    serial_per_row = s["serial"] / rows
    for cores in sorted({1, args.project_cores}):
        total = args.project_rows * (serial_per_row + parallel_per_row / cores)
        print(f"projection: {args.project_rows:,} rows on {cores} cores: {total / 60:.1f} min "
              f"({args.project_rows / total:.0f} rows/s), if the serial stages stay linear in rows")


if __name__ == "__main__":
    main()
