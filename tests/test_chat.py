import pytest

from workings.core.chat import GEMMA_CHAT_TEMPLATE, INSTRUCTION, prompt_completion, render_prompt
EXAMPLE = ("What is 2 + 3?", "2 + 3 = 5.", "5")  # question, reasoning, answer


def test_prompt_is_gemma_user_turn_with_instruction_then_model_turn(tokenizer):
    assert render_prompt("What is 2 + 3?", tokenizer) == (
        "<bos><start_of_turn>user\n"
        "Solve the problem. Think step by step inside <reasoning></reasoning>, "
        "then give only the final answer inside <answer></answer>.\n\n"
        "What is 2 + 3?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_completion_is_formatted_answer_then_end_of_turn(tokenizer):
    pc = prompt_completion(*EXAMPLE, tokenizer)
    assert pc["completion"] == "<reasoning>2 + 3 = 5.</reasoning>\n<answer>5</answer><end_of_turn>\n"


def test_prompt_plus_completion_is_the_whole_rendered_chat(tokenizer):
    pc = prompt_completion(*EXAMPLE, tokenizer)
    messages = [
        {"role": "user", "content": f"{INSTRUCTION}\n\nWhat is 2 + 3?"},
        {"role": "assistant", "content": "<reasoning>2 + 3 = 5.</reasoning>\n<answer>5</answer>"},
    ]
    assert pc["prompt"] + pc["completion"] == tokenizer.apply_chat_template(messages, tokenize=False)


def test_template_has_no_system_role(tokenizer):
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], tokenize=False)


def test_tiny_tokenizer_carries_the_gemma_template(tokenizer):
    assert tokenizer.chat_template == GEMMA_CHAT_TEMPLATE


def test_special_tokens_are_single_tokens_in_gemma_order(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ["<pad>", "<eos>", "<bos>", "<unk>"]]
    assert ids == [0, 1, 2, 3]
    text = "<start_of_turn>model\nhi<end_of_turn>"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens[0] == "<start_of_turn>" and tokens[-1] == "<end_of_turn>"


def test_tokenizing_adds_bos_like_gemma(tokenizer):
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id


def test_each_prompt_layout_is_the_turn_its_users_send(tokenizer):
    from workings.core.chat import PROMPT_LAYOUTS, render_prompt

    q = "Ava has 4 pens. How many?"
    assert render_prompt(q, tokenizer, "question_only") == f"<bos><start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n"
    assert render_prompt(q, tokenizer, "seed") == f"<bos><start_of_turn>user\n{q}\n<end_of_turn>\n<start_of_turn>model\n"
    assert render_prompt(q, tokenizer, "seed_instruction").startswith("<bos><start_of_turn>user\nSolve the problem.")
    assert render_prompt(q, tokenizer) == render_prompt(q, tokenizer, "project")
    assert list(PROMPT_LAYOUTS) == ["project", "question_only", "seed", "seed_instruction"]


def test_the_few_shot_layout_shows_three_worked_exchanges_in_chat_turns_before_the_project_prompt(tokenizer):
    q = "Ava has 4 pens. How many?"
    prompt = render_prompt(q, tokenizer, "few_shot")
    assert prompt.count("<start_of_turn>model\n<reasoning>") == 3
    assert prompt.count("<bos>") == 1
    assert prompt.endswith(render_prompt(q, tokenizer).removeprefix("<bos>"))
    assert "<start_of_turn>model\n<reasoning>12 * 4 = 48</reasoning>\n<answer>48</answer><end_of_turn>\n" in prompt


def test_an_unknown_layout_is_refused_with_the_known_ones(tokenizer):
    with pytest.raises(ValueError, match="unknown prompt layout 'chatml'; known: project, question_only, seed"):
        render_prompt("Q?", tokenizer, "chatml")
