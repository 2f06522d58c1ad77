"""Chat rendering for Gemma: the instruction goes in the user turn (Gemma has no system role).

Stop token. Gemma's template closes every turn with ``<end_of_turn>\\n``. Generation stops at
``<end_of_turn>`` (or ``<eos>``, which ends a document), so training completions end exactly
there: :data:`END_OF_TURN` is the one definition the trainer, the generators and the tiny
model's generation config all read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workings.core.format import render

END_OF_TURN = "<end_of_turn>"
END_OF_DOCUMENT = "<eos>"

# google/gemma-2-2b-it's chat template, as published in its tokenizer_config.json.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

INSTRUCTION = (
    "Solve the problem. Think step by step inside <reasoning></reasoning>, "
    "then give only the final answer inside <answer></answer>."
)


def user_message(question: str) -> str:
    """The user turn: the instruction, a blank line, the question."""
    return f"{INSTRUCTION}\n\n{question.strip()}"


def prompt_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_message(question)}]


def training_messages(question: str, reasoning: str, answer: str) -> list[dict[str, str]]:
    return prompt_messages(question) + [{"role": "assistant", "content": render(reasoning, answer)}]


def render_prompt(question: str, tokenizer: Any, layout: str = "project") -> str:
    """The prompt text up to and including ``<start_of_turn>model\n``, in one of :data:`LAYOUTS`."""
    try:
        return LAYOUTS[layout](question, tokenizer)
    except KeyError:
        raise ValueError(f"unknown prompt layout {layout!r}; known: {', '.join(LAYOUTS)}") from None


def _project_prompt(question: str, tokenizer: Any) -> str:
    return tokenizer.apply_chat_template(prompt_messages(question), tokenize=False, add_generation_prompt=True)


def _question_only_prompt(question: str, tokenizer: Any) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question.strip()}], tokenize=False,
                                         add_generation_prompt=True)


def _seed_prompt(question: str, tokenizer: Any, instruction: bool = False) -> str:
    # The seed's inference code writes the turn by hand (a newline before <end_of_turn>, no
    # instruction); its tokenizer call adds <bos>, written out here as the chat template does.
    user = user_message(question) if instruction else question.strip()
    return f"{tokenizer.bos_token or ''}<start_of_turn>user\n{user}\n{END_OF_TURN}\n<start_of_turn>model\n"


# How users send a question. ``project``: the chat template with the instruction (what SFT trains
# on); ``question_only``: Gemma's own chat template with the question alone; ``seed``: the seed
# notebook's hand-written turn; ``seed_instruction``: that turn with the instruction in it.
PROMPT_LAYOUTS: dict[str, Callable[[str, Any], str]] = {
    "project": _project_prompt,
    "question_only": _question_only_prompt,
    "seed": _seed_prompt,
    "seed_instruction": lambda question, tokenizer: _seed_prompt(question, tokenizer, instruction=True),
}

# Worked exchanges shown before the question in the few-shot layout: arithmetic in the strict format,
# none of them from a benchmark.
FEW_SHOT_EXAMPLES = (
    ("Ava has 7 stickers. She finds 3 more. She gives away 2. How many stickers does Ava have now?",
     "7 + 3 = 10\n10 - 2 = 8", "8"),
    ("A box holds 12 pencils. How many pencils are in 4 boxes?", "12 * 4 = 48", "48"),
    ("What is 25 + 17 - 9?", "25 + 17 = 42\n42 - 9 = 33", "33"),
)


def _few_shot_prompt(question: str, tokenizer: Any) -> str:
    exchanges = [m for q, reasoning, answer in FEW_SHOT_EXAMPLES for m in training_messages(q, reasoning, answer)]
    return tokenizer.apply_chat_template(exchanges + prompt_messages(question), tokenize=False, add_generation_prompt=True)


# A base model's fairest baseline is the prompt that shows it the format before asking: the project's
# prompt after :data:`FEW_SHOT_EXAMPLES` as earlier turns. Not a layout users send (training and
# GRPO take PROMPT_LAYOUTS), but evaluated in like one (``workings evaluate --layout few_shot``).
LAYOUTS: dict[str, Callable[[str, Any], str]] = {**PROMPT_LAYOUTS, "few_shot": _few_shot_prompt}


def prompt_completion(question: str, reasoning: str, answer: str, tokenizer: Any) -> dict[str, str]:
    """Prompt and completion texts for training; prompt + completion is the full rendered chat."""
    prompt = render_prompt(question, tokenizer)
    full = tokenizer.apply_chat_template(training_messages(question, reasoning, answer), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    return {"prompt": prompt, "completion": full[len(prompt) :]}


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts ``<bos>`` in front of plain text itself (Gemma's does), as trainers
    tokenize prompts; a prompt rendered with its own ``<bos>`` then drops it, so the model sees one."""
    return tokenizer.bos_token is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids generation stops at: :data:`END_OF_TURN` ends a chat turn, :data:`END_OF_DOCUMENT` a document."""
    ids = [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.convert_tokens_to_ids(END_OF_DOCUMENT)]
    return [i for i in dict.fromkeys(ids) if i is not None and i != tokenizer.unk_token_id]
