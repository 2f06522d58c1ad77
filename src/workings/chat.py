"""Chat rendering for Gemma: the instruction goes in the user turn (Gemma has no system role)."""

from __future__ import annotations

from typing import Any

from workings.data import Example
from workings.format import render

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


def training_messages(example: Example) -> list[dict[str, str]]:
    return prompt_messages(example.question) + [
        {"role": "assistant", "content": render(example.reasoning, example.answer)}
    ]


def render_prompt(question: str, tokenizer: Any) -> str:
    """The prompt text up to and including ``<start_of_turn>model\\n``."""
    return tokenizer.apply_chat_template(prompt_messages(question), tokenize=False, add_generation_prompt=True)


def prompt_completion(example: Example, tokenizer: Any) -> dict[str, str]:
    """Prompt and completion texts for training; prompt + completion is the full rendered chat."""
    prompt = render_prompt(example.question, tokenizer)
    full = tokenizer.apply_chat_template(training_messages(example), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    return {"prompt": prompt, "completion": full[len(prompt) :]}
