import pytest

from workings.generate import SamplingConfig, generate, stop_token_ids


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
