import re
import itertools
import json

import pytest

from workings.data.dedup import jaccard, near_duplicate_pairs, NgramIndex, normalise, word_ngrams
from workings.data.mix import build_mix, ensure_mix, load_mix, mix_provenance, save_mix
from workings.config.loading import load_profile
from workings.config.schema import DataConfig, DecontaminationConfig, EvalSetSpec, SourceSpec, SyntheticSpec


def gsm_row(question, a=2, b=3):
    return {"question": question, "answer": f"We add {a} + {b} = <<{a}+{b}={a + b}>>{a + b}.\n#### {a + b}"}


def jsonl(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(tmp_path, rows, **kwargs):
    source = {"name": "gsm8k", "converter": "gsm8k", "path": jsonl(tmp_path, "train.jsonl", rows)}
    source.update(kwargs.pop("source", {}))
    return DataConfig(sources=[SourceSpec(**source)], **kwargs)


QUESTIONS = [
    "Mia has 2 red kites and buys 3 blue kites at the fair. How many kites does she own?",
    "A bus carries 2 adults and 3 children to the lake. How many passengers ride the bus?",
    "Omar reads 2 chapters on Monday and 3 chapters on Tuesday. How many chapters is that?",
    "A vase holds 2 roses and 3 lilies from the garden. How many flowers are in the vase?",
    "Jun plants 2 oak trees and 3 pine trees behind the school. How many trees does he plant?",
    "The shop sold 2 kettles in the morning and 3 kettles after lunch. How many kettles were sold?",
]


def accounted(source_report):
    return sum(source_report["dropped"].values()) + source_report["heldout"] + source_report["train_unique"]


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("  How MANY apples,\n does   she have? ") == "how many apples does she have"


def test_word_ngrams_of_short_text_is_the_whole_text():
    assert word_ngrams("one two", 3) == {"one two"}
    assert word_ngrams("a b c d", 3) == {"a b c", "b c d"}


def test_near_duplicate_pairs_equal_brute_force():
    texts = QUESTIONS + [
        QUESTIONS[0].replace("fair", "fair today"),
        QUESTIONS[1].replace("lake", "lake."),
        QUESTIONS[2].upper(),
        "Completely different words in this one sentence about nothing at all.",
    ]
    for threshold in (0.5, 0.7, 0.9):
        brute = [(i, j) for i, j in itertools.combinations(range(len(texts)), 2)
                 if jaccard(word_ngrams(texts[i], 3), word_ngrams(texts[j], 3)) >= threshold]
        assert near_duplicate_pairs(texts, threshold) == brute
    assert (1, 7) in near_duplicate_pairs(texts, 0.9) and (2, 8) in near_duplicate_pairs(texts, 0.9)


def test_ngram_overlap_is_the_share_of_question_ngrams_found():
    index = NgramIndex(3)
    index.add("test", ["a b c d e"])
    assert index.overlap("a b c d x") == (2 / 3, "test")
    assert index.overlap("x y z") == (0.0, None)


def test_every_row_is_accounted_for(tokenizer):
    demo = load_profile("demo")
    report = build_mix(demo.data, tokenizer, progress=False).report
    for name, source in report["sources"].items():
        assert source["rows_in"] == accounted(source), name


def test_demo_fixture_rows_are_dropped_for_their_reasons(tokenizer):
    report = build_mix(load_profile("demo").data, tokenizer, progress=False).report
    dropped = {name: s["dropped"] for name, s in report["sources"].items() if name != "synthetic"}
    assert dropped == {
        "gsm8k": {"contaminated:gsm8k_test": 1, "empty_field:question": 1, "exact_duplicate": 1, "missing_field:answer": 1,
                  "near_duplicate_question": 1, "no_final_answer": 1},
        "openthoughts": {"disagrees_with_ground_truth": 1, "domain_not_kept:code": 1, "no_boxed_answer": 1},
        "openthoughts_default": {"no_thought_or_solution_markers": 1},
        "bespoke_stratos": {"choice_without_options": 1, "not_single_turn": 1},
        "medical_o1_en": {"missing_field:Response": 1, "too_long": 1},
        "medical_o1_en_mix": {},
        "metamath": {"no_final_answer": 1},
    }


def test_exact_duplicates_are_dropped(tmp_path, tokenizer):
    mix = build_mix(config(tmp_path, [gsm_row(QUESTIONS[0])] * 3 + [gsm_row(QUESTIONS[1])]), tokenizer, progress=False)
    assert mix.report["sources"]["gsm8k"]["dropped"] == {"exact_duplicate": 2}
    assert sorted(r["question"] for r in mix.train) == sorted(QUESTIONS[:2])


def test_same_question_with_other_reasoning_is_kept_up_to_max_per_question(tmp_path, tokenizer):
    rows = [gsm_row(QUESTIONS[0], 2, 3), gsm_row(QUESTIONS[0], 3, 2), gsm_row(QUESTIONS[0].lower(), 1, 4)]
    one = build_mix(config(tmp_path, rows), tokenizer, progress=False)
    assert one.report["sources"]["gsm8k"]["dropped"] == {"duplicate_question": 2}
    two = build_mix(config(tmp_path, rows, max_per_question=2), tokenizer, progress=False)
    assert two.report["sources"]["gsm8k"]["dropped"] == {"duplicate_question": 1}
    assert len(two.train) == 2


def test_near_duplicate_questions_are_grouped(tmp_path, tokenizer):
    rows = [gsm_row(QUESTIONS[0]), gsm_row(QUESTIONS[0].replace("at the fair", "at the village fair"), 3, 2)]
    mix = build_mix(config(tmp_path, rows, near_duplicate_threshold=0.6), tokenizer, progress=False)
    assert mix.report["sources"]["gsm8k"]["dropped"] == {"near_duplicate_question": 1}
    strict = build_mix(config(tmp_path, rows, near_duplicate_threshold=0.99), tokenizer, progress=False)
    assert strict.report["sources"]["gsm8k"]["dropped"] == {}


def test_rows_longer_than_max_length_are_dropped_not_cut(tmp_path, tokenizer):
    long_row = {"question": QUESTIONS[0], "answer": "Count carefully. " * 200 + "\n#### 5"}
    mix = build_mix(config(tmp_path, [long_row, gsm_row(QUESTIONS[1])], max_length=200), tokenizer, progress=False)
    assert mix.report["sources"]["gsm8k"]["dropped"] == {"too_long": 1}
    (row,) = mix.train
    assert row["completion"].endswith("<answer>5</answer><end_of_turn>\n")
    assert row["n_tokens"] == len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"])
    assert row["n_tokens"] <= 200


def test_training_rows_overlapping_eval_questions_are_dropped(tmp_path, tokenizer):
    evals = [EvalSetSpec(name="bench", path=jsonl(tmp_path, "bench.jsonl", [{"question": QUESTIONS[2] + " Show work."}]))]
    cfg = config(tmp_path, [gsm_row(q) for q in QUESTIONS[:3]], eval_sets=evals,
                 decontamination=DecontaminationConfig(ngram=5, threshold=0.5))
    mix = build_mix(cfg, tokenizer, progress=False)
    assert mix.report["sources"]["gsm8k"]["dropped"] == {"contaminated:bench": 1}
    assert QUESTIONS[2] not in [r["question"] for r in mix.train]
    (found,) = mix.report["contamination"]["rows"]
    assert (found["eval_set"], found["overlap"], found["question"]) == ("bench", 1.0, QUESTIONS[2])


def test_eval_set_without_the_question_field_names_it(tmp_path, tokenizer):
    evals = [EvalSetSpec(name="bench", question_field="problem", path=jsonl(tmp_path, "bench.jsonl", [{"question": "x"}]))]
    with pytest.raises(ValueError, match="eval set 'bench': row 0 has no text field 'problem'"):
        build_mix(config(tmp_path, [gsm_row(QUESTIONS[0])], eval_sets=evals), tokenizer, progress=False)


def test_heldout_questions_never_reach_training(tmp_path, tokenizer):
    rows = [gsm_row(q) for q in QUESTIONS] + [gsm_row(q, 3, 2) for q in QUESTIONS]
    mix = build_mix(config(tmp_path, rows, max_per_question=2, source={"heldout": 2}), tokenizer, progress=False)
    held = {normalise(r["question"]) for r in mix.heldout}
    assert len(held) == 2 and len(mix.heldout) == 2
    assert held.isdisjoint(normalise(r["question"]) for r in mix.train)
    assert mix.report["sources"]["gsm8k"]["dropped"] == {"heldout_question": 2}
    assert len(mix.train) == 8


def test_cap_then_weight(tmp_path, tokenizer):
    rows = [gsm_row(q) for q in QUESTIONS]
    capped = build_mix(config(tmp_path, rows, source={"cap": 4}), tokenizer, progress=False)
    assert capped.report["sources"]["gsm8k"]["dropped"] == {"over_cap": 2}
    doubled = build_mix(config(tmp_path, rows, source={"cap": 4, "weight": 2.0}), tokenizer, progress=False)
    assert len(doubled.train) == 8 and len({r["id"] for r in doubled.train}) == 4
    halved = build_mix(config(tmp_path, rows, source={"weight": 0.5}), tokenizer, progress=False)
    assert halved.report["sources"]["gsm8k"]["train_rows"] == 3 and len(halved.train) == 3


def test_flagged_rows_dropped_only_when_asked(tmp_path, tokenizer):
    row = {"problem": "What is 2 + 2?", "deepseek_reasoning": "2 + 2 = 4", "deepseek_solution": "$\\boxed{5}$",
           "ground_truth_solution": "$\\boxed{4}$", "domain": "math", "source": "t"}
    agrees = {**row, "problem": "What is 3 + 3?", "deepseek_reasoning": "3 + 3 = 6", "deepseek_solution": "$\\boxed{6}$",
              "ground_truth_solution": "$\\boxed{6}$"}
    spec = {"name": "openthoughts", "converter": "openthoughts", "path": jsonl(tmp_path, "ot.jsonl", [row, agrees])}
    dropped = build_mix(DataConfig(sources=[SourceSpec(**spec)]), tokenizer, progress=False)
    assert dropped.report["sources"]["openthoughts"]["dropped"] == {"disagrees_with_ground_truth": 1}
    kept = build_mix(DataConfig(sources=[SourceSpec(**spec)], drop_flagged=False), tokenizer, progress=False)
    assert [json.loads(r["meta"]).get("disagrees_with_ground_truth") for r in kept.train if "2 + 2" in r["question"]] == [True]


def test_same_seed_same_mix_other_seed_other_order(tmp_path, tokenizer):
    def ids(seed):
        cfg = DataConfig(seed=seed, sources=[SourceSpec(name="s", converter="synthetic", synthetic=SyntheticSpec(n=60, seed=4), heldout=5)])
        return [r["id"] for r in build_mix(cfg, tokenizer, progress=False).train]

    assert ids(0) == ids(0)
    assert ids(0) != ids(1) and sorted(ids(0)) != sorted(ids(1))  # the held-out draw changes too


def test_save_and_load_round_trip(tmp_path, tokenizer):
    mix = build_mix(config(tmp_path, [gsm_row(q) for q in QUESTIONS], source={"heldout": 1}), tokenizer, progress=False)
    out = save_mix(mix, tmp_path / "mix", {"profile": "t"})
    train, heldout, report = load_mix(out)
    assert train.to_list()[0] == mix.train[0] and len(heldout) == 1
    assert report["profile"] == "t" and report["totals"]["train_rows"] == 5


def test_failed_save_leaves_the_previous_mix_untouched(tmp_path, tokenizer, monkeypatch):
    import datasets

    mix = build_mix(config(tmp_path, [gsm_row(q) for q in QUESTIONS]), tokenizer, progress=False)
    out = save_mix(mix, tmp_path / "mix", {"run": "first"})

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken)
    with pytest.raises(OSError, match="disk full"):
        save_mix(mix, out, {"run": "second"})
    monkeypatch.undo()
    assert load_mix(out)[2]["run"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".mix")) == []


def test_empty_heldout_split_round_trips(tmp_path, tokenizer):
    mix = build_mix(config(tmp_path, [gsm_row(QUESTIONS[0])]), tokenizer, progress=False)
    train, heldout, _ = load_mix(save_mix(mix, tmp_path / "mix"))
    assert (len(train), len(heldout)) == (1, 0)
    assert heldout.column_names == train.column_names


def test_report_says_where_each_source_came_from():
    from workings.data.mix import describe_origin

    a100 = {s.name: s for s in load_profile("a100").data.sources}
    assert describe_origin(a100["gsm8k"]) == "openai/gsm8k (main/train) @ e53f048856ff4f594e959d75785d2c2d37b678ee"
    assert describe_origin(a100["openthoughts"]) == "open-thoughts/OpenThoughts-114k (metadata/train) @ UNPINNED (latest on the Hub)"
    synthetic = load_profile("demo").data.sources[0]
    assert describe_origin(synthetic) == "synthetic generator (small numbers, 1-3 steps), seed 1, 2400 rows"


def _ensure(profile):
    from workings.train.runs import ensure_profile_mix

    return ensure_profile_mix(profile, progress=False)


def _small_mix_profile(tiny_profile, n: int):
    return tiny_profile({"data": {"sources": [{"name": "synthetic", "converter": "synthetic",
                                               "synthetic": {"n": n, "seed": 3}, "heldout": 2}],
                                  "eval_sets": []}})


def test_ensure_mix_reuses_a_mix_built_from_the_same_settings(tiny_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    first = _ensure(_small_mix_profile(tiny_profile, 12))
    stamp = (first / "report.json").stat().st_mtime_ns
    assert _ensure(_small_mix_profile(tiny_profile, 12)) == first
    assert (first / "report.json").stat().st_mtime_ns == stamp


def test_ensure_mix_rebuilds_when_the_data_settings_change(tiny_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    _ensure(_small_mix_profile(tiny_profile, 12))
    out = _ensure(_small_mix_profile(tiny_profile, 20))
    train, heldout, report = load_mix(out)
    assert len(train) + len(heldout) == 20
    profile = _small_mix_profile(tiny_profile, 20)
    assert report["data_key"] == mix_provenance(profile.name, profile.data, profile.model.id)["data_key"]


def test_an_empty_source_file_fails_the_build_naming_source_and_file(tmp_path, tokenizer):
    from workings.data.example import DataUnavailable

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    sources = [SourceSpec(name="s", converter="synthetic", synthetic=SyntheticSpec(n=4, seed=1)),
               SourceSpec(name="gsm8k", converter="gsm8k", path=str(empty))]
    with pytest.raises(DataUnavailable, match=rf"source 'gsm8k' \(local file {re.escape(str(empty))}\) gives the mix no rows: 0 read$"):
        build_mix(DataConfig(sources=sources), tokenizer, progress=False)


def test_a_source_of_another_schema_fails_the_build_naming_the_missing_field(tmp_path, tokenizer):
    from workings.data.example import DataUnavailable

    rows = jsonl(tmp_path, "wrong.jsonl", [{"problem": f"What is {i} + 1?", "solution": str(i + 1)} for i in range(3)])
    sources = [SourceSpec(name="s", converter="synthetic", synthetic=SyntheticSpec(n=4, seed=1)),
               SourceSpec(name="gsm8k", converter="gsm8k", path=rows)]
    with pytest.raises(DataUnavailable, match=r"source 'gsm8k' \(local file .*wrong\.jsonl\) gives the mix no rows: 3 read; dropped: missing_field:question 3"):
        build_mix(DataConfig(sources=sources), tokenizer, progress=False)


def test_editing_a_local_source_in_place_changes_the_mix_key(tmp_path):
    rows = tmp_path / "train.jsonl"
    rows.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    data = DataConfig(sources=[SourceSpec(name="gsm8k", converter="gsm8k", path=str(rows))])
    before = mix_provenance("p", data, "tiny")["data_key"]
    assert mix_provenance("p", data, "tiny")["data_key"] == before
    rows.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}) + "\n")
    assert mix_provenance("p", data, "tiny")["data_key"] != before


def test_a_mix_built_by_several_processes_is_the_one_built_by_one(monkeypatch, tokenizer):
    """Rows are rendered, tokenized and signed in chunks by worker processes; chunks of 50 rows make
    many tasks of both parallel stages, and the rows, their order and the report come out the same."""
    import dataclasses

    import workings.data.dedup as dedup
    import workings.data.mix as mix
    from workings.config.loading import load_profile

    monkeypatch.setattr(mix, "LENGTH_CHUNK", 50)
    monkeypatch.setattr(dedup, "SIGNATURE_CHUNK", 50)
    data = load_profile("demo").data
    synthetic = data.sources[0]
    data = dataclasses.replace(data, sources=[dataclasses.replace(synthetic, synthetic=dataclasses.replace(synthetic.synthetic, n=600)),
                                              *data.sources[1:]])
    one = mix.build_mix(data, tokenizer, progress=False, num_proc=1)
    two = mix.build_mix(data, tokenizer, progress=False, num_proc=2)
    assert len(one.train) > 500
    assert (two.train, two.heldout, two.report) == (one.train, one.heldout, one.report)
