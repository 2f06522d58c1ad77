import json

import pytest

from workings.core.chat import stop_token_ids
from workings.evaluation.generate import generate, SamplingConfig


@pytest.fixture(scope="module")
def model(random_tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager").eval()


QUESTIONS = ["Ava has 3 apples. She buys 4 more. How many apples does she have?", "What is 2 + 2?",
             "A farm makes 12 eggs a day. How many eggs does it make in 5 days?"]


def test_stop_tokens_are_end_of_turn_then_eos(tokenizer):
    assert tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer)) == ["<end_of_turn>", "<eos>"]


def test_greedy_generations_do_not_depend_on_batching_and_come_back_in_order(model, tokenizer):
    one = generate(model, tokenizer, QUESTIONS, SamplingConfig(max_new_tokens=8, batch_size=1))
    together = generate(model, tokenizer, QUESTIONS, SamplingConfig(max_new_tokens=8, batch_size=3))
    assert [g.text for g in one] == [g.text for g in together]
    assert [g.prompt.count(q) for g, q in zip(together, QUESTIONS)] == [1, 1, 1]


def push_logit(model, token_id, amount):
    """Add ``amount`` to one token's logit at every step (a hook on the output layer)."""
    def hook(module, inputs, output):
        output[..., token_id] += amount
        return output

    return model.lm_head.register_forward_hook(hook)


def test_generation_stops_at_end_of_turn_and_keeps_it_out_of_the_text(model, tokenizer):
    handle = push_logit(model, tokenizer.convert_tokens_to_ids("<end_of_turn>"), 1e4)
    try:
        (g,) = generate(model, tokenizer, QUESTIONS[:1], SamplingConfig(max_new_tokens=5))
    finally:
        handle.remove()
    assert (g.text, g.new_tokens, g.truncated) == ("", 1, False)


def test_generation_that_never_stops_is_marked_truncated(model, tokenizer):
    handles = [push_logit(model, i, -1e4) for i in stop_token_ids(tokenizer)]
    try:
        (g,) = generate(model, tokenizer, QUESTIONS[:1], SamplingConfig(max_new_tokens=5))
    finally:
        for h in handles:
            h.remove()
    assert (g.new_tokens, g.truncated) == (5, True)


def test_sampling_is_reproducible_from_its_seed(model, tokenizer):
    sampled = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    a = generate(model, tokenizer, QUESTIONS, sampled)
    b = generate(model, tokenizer, QUESTIONS, sampled)
    assert [g.text for g in a] == [g.text for g in b]


def test_the_shares_of_several_processes_are_together_the_replies_of_one(model, tokenizer):
    sampled = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3, batch_size=1)
    alone = [g.text for g in generate(model, tokenizer, QUESTIONS, sampled)]
    first, second = (generate(model, tokenizer, QUESTIONS, sampled, share=(k, 2)) for k in (0, 1))
    assert [a is None for a in first] == [b is not None for b in second]  # each question asked once
    assert [(a or b).text for a, b in zip(first, second)] == alone


def test_a_share_outside_the_processes_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match=r"share \(2, 2\): the first number must be one of 0 \.\. 1"):
        generate(model, tokenizer, QUESTIONS, share=(2, 2))


# --- streaming to JSONL and resuming ------------------------------------------------------

from workings.evaluation.generate import Answer, ask, Engine, HFEngine  # noqa: E402

SAMPLED = SamplingConfig(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=7, batch_size=1)


class Interrupted(Exception):
    pass


class CountingEngine(HFEngine):
    """The real HF engine, counting batches and optionally dying before batch ``die_at``."""

    def __init__(self, model, tokenizer, die_at=None):
        super().__init__(model, tokenizer)
        self.batches, self.die_at = 0, die_at

    def generate_batch(self, prompts, sampling, seed):
        if self.die_at is not None and self.batches == self.die_at:
            raise Interrupted("killed")
        self.batches += 1
        return super().generate_batch(prompts, sampling, seed)


def test_generations_stream_to_jsonl_with_their_ids_and_settings(model, tokenizer, tmp_path):
    out = tmp_path / "gen.jsonl"
    gens = generate(model, tokenizer, QUESTIONS, SAMPLED, out=out, ids=["a", "b", "c"], settings={"model": "m"})
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    by_id = {r["id"]: r for r in records}
    assert [by_id[i]["text"] for i in "abc"] == [g.text for g in gens]
    assert by_id["a"]["settings"] == {"model": "m", "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9,
                                                                  "seed": 7, "batch_size": 1, "min_new_tokens": 0}}


def test_an_interrupted_run_resumes_where_it_stopped_and_matches_an_unbroken_one(model, tokenizer, tmp_path):
    unbroken = generate(model, tokenizer, QUESTIONS, SAMPLED)
    out = tmp_path / "gen.jsonl"
    with pytest.raises(Interrupted):
        generate(CountingEngine(model, tokenizer, die_at=2), tokenizer, QUESTIONS, SAMPLED, out=out)
    assert len(out.read_text().splitlines()) == 2
    resumed_engine = CountingEngine(model, tokenizer)
    resumed = generate(resumed_engine, tokenizer, QUESTIONS, SAMPLED, out=out)
    assert resumed_engine.batches == 1
    assert [g.text for g in resumed] == [g.text for g in unbroken]
    assert len(out.read_text().splitlines()) == 3


def test_a_record_torn_by_the_interruption_is_dropped_and_asked_again(model, tokenizer, tmp_path):
    out = tmp_path / "gen.jsonl"
    complete = generate(model, tokenizer, QUESTIONS, SAMPLED, out=out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:25])
    engine = CountingEngine(model, tokenizer)
    again = generate(engine, tokenizer, QUESTIONS, SAMPLED, out=out)
    assert engine.batches == 2 and [g.text for g in again] == [g.text for g in complete]


def test_a_file_written_with_other_settings_is_refused_not_mixed(model, tokenizer, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate(model, tokenizer, QUESTIONS[:1], SAMPLED, out=out, settings={"adapter": "one"})
    with pytest.raises(ValueError, match=r"gen\.jsonl, line 1: written with other generation settings"):
        generate(model, tokenizer, QUESTIONS[:1], SAMPLED, out=out, settings={"adapter": "two"})


def test_question_ids_must_be_unique(model, tokenizer):
    with pytest.raises(ValueError, match=r"ids must be unique; repeated: \['x'\]"):
        generate(model, tokenizer, QUESTIONS[:2], SAMPLED, ids=["x", "x"])


# --- one question ---------------------------------------------------------------------------

class Scripted(Engine):
    """Replies with fixed text (tokenized by the real tokenizer), for checking how a reply is split."""

    def __init__(self, tokenizer, text):
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<end_of_turn>")]
        self.stops = stop_token_ids(tokenizer)

    def generate_batch(self, prompts, sampling, seed):
        return [(self.ids[:-1], True) for _ in prompts]


def test_ask_splits_a_well_formed_reply_into_reasoning_and_answer(tokenizer):
    answer = ask("What is 3 + 4?", Scripted(tokenizer, "<reasoning>3 + 4 = 7</reasoning>\n<answer>7</answer>"), tokenizer)
    assert (answer.reasoning, answer.answer, answer.strict) == ("3 + 4 = 7", "7", True)
    assert answer.as_text() == "reasoning:\n3 + 4 = 7\n\nanswer: 7"


def test_ask_shows_the_raw_reply_when_it_is_not_well_formed():
    text = Answer("q", None, None, False, "It is 7.").as_text()
    assert text.startswith("reasoning:\n(none)\n\nanswer: (none)") and text.endswith("raw output below)\nIt is 7.")


def test_min_new_tokens_holds_generation_past_a_stop_token(model, tokenizer):
    handle = push_logit(model, tokenizer.convert_tokens_to_ids("<end_of_turn>"), 1e4)
    try:
        (g,) = generate(model, tokenizer, QUESTIONS[:1], SamplingConfig(max_new_tokens=5, min_new_tokens=3))
    finally:
        handle.remove()
    assert (g.new_tokens, g.truncated) == (4, False)  # three forced tokens, then the stop token


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])
def test_the_nucleus_without_a_sort_is_the_one_top_p_keeps_up_to_float_rounding_at_its_edge(scale):
    """On a vocabulary of Gemma 3's size: flat rows whose nucleus is thousands of tokens (k grows)
    and peaked rows whose nucleus is a handful. transformers adds up the whole vocabulary in
    ascending order to find the edge, this the few largest in descending order: where thousands of
    tokens share the mass, the two float sums may put the edge a few of the least likely tokens
    apart (at most a thousandth of the mass). Every kept probability is the row's own."""
    import torch
    from transformers import TopPLogitsWarper

    from workings.evaluation.generate import nucleus

    scores = torch.randn(6, 262_144, generator=torch.Generator().manual_seed(0)) * scale
    scores[0] *= 4  # one row far more peaked than the others: only the others look further
    probs = scores.softmax(dim=-1)
    for top_p in (0.5, 0.95):
        expected = torch.isfinite(TopPLogitsWarper(top_p)(None, scores.clone()))
        index, kept_probs = nucleus(scores, top_p)
        got = torch.zeros_like(scores).scatter_add(1, index, kept_probs)
        kept = got > 0
        assert torch.allclose(got[kept], probs[kept], rtol=1e-4, atol=0)
        apart = kept != expected
        assert ((probs * apart).sum(dim=-1) < 1e-3).all()
        assert (apart.sum(dim=-1) <= 0.001 * expected.sum(dim=-1) + 1).all()
        if scale >= 12.0:  # a peaked row's edge is far from any rounding
            assert torch.equal(kept, expected)


def within_five_sigma(draws, probs):
    """Whether the counts of each value among ``draws`` are those ``probs`` predicts, each within
    five standard deviations (a wrong distribution is off by hundreds of them at these sizes)."""
    import torch

    counts = torch.bincount(draws, minlength=len(probs)).double()
    n, p = len(draws), probs.double()
    return bool(((counts - n * p).abs() <= 5 * (n * p * (1 - p)).sqrt() + 1).all())


def test_a_draw_over_whole_rows_follows_the_weights_and_never_takes_a_zero():
    import torch

    from workings.evaluation.generate import draw_from_whole_rows

    torch.manual_seed(0)
    weights = torch.rand(1_300, generator=torch.Generator().manual_seed(1)) ** 4  # 1,300: the last block is partial
    weights[::7] = 0
    draws = draw_from_whole_rows(weights.expand(40_000, -1).contiguous())[:, 0]
    assert weights[draws].gt(0).all()
    assert within_five_sigma(draws, weights / weights.sum())


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_the_nucleus_sampler_draws_as_temperature_top_p_and_sampling_would(temperature, top_p):
    """What generate(do_sample=True, temperature, top_p) draws from: the warpers' distribution."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from workings.evaluation.generate import nucleus_sampler

    torch.manual_seed(0)
    scores = torch.randn(1, 300, generator=torch.Generator().manual_seed(2)) * 2
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    marked = nucleus_sampler(temperature, top_p)(None, scores.expand(40_000, -1).clone())
    draws = marked.argmax(dim=-1)
    assert torch.isinf(marked).sum(dim=-1).eq(1).all()  # one token marked per row, the rest untouched
    assert within_five_sigma(draws, warped.softmax(dim=-1)[0])
