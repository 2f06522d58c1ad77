"""The project's own tiny Gemma-architecture tokenizer (and, later, model) for the ``demo`` profile.

Everything here is built from the synthetic corpus, reproducibly, and cached by
content hash under :func:`cache_dir`, so the book and the tests build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from workings.chat import GEMMA_CHAT_TEMPLATE, INSTRUCTION
from workings.format import render
from workings.synthetic import generate_synthetic

# Gemma's special tokens, in Gemma's order for the first four ids.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
TOKENIZER_RECIPE = {"version": 1, "vocab_size": 2048, "corpus_rows": 4000, "corpus_seed": 1234}


def cache_dir() -> Path:
    """Where built artefacts live: ``$WORKINGS_CACHE`` or ``~/.cache/workings``."""
    return Path(os.environ.get("WORKINGS_CACHE", Path.home() / ".cache" / "workings"))


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def tokenizer_corpus(rows: int, seed: int) -> list[str]:
    """Texts the tokenizer is trained on: synthetic problems in prompt and answer form."""
    texts = [INSTRUCTION, "<reasoning></reasoning>\n<answer></answer>"]
    for example in generate_synthetic(rows, seed):
        texts.append(example.question)
        texts.append(render(example.reasoning, example.answer))
    return texts


def train_tiny_tokenizer(recipe: dict = TOKENIZER_RECIPE):
    """Train a byte-level BPE tokenizer with Gemma's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(recipe["corpus_rows"], recipe["corpus_seed"]), trainer)
    bos = tokenizer.token_to_id("<bos>")
    # Like Gemma: <bos> is prepended when text is tokenized with special tokens.
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="left",
    )
    wrapped.chat_template = GEMMA_CHAT_TEMPLATE
    return wrapped


def tiny_tokenizer(recipe: dict = TOKENIZER_RECIPE):
    """The tiny tokenizer, trained once per recipe and then loaded from the cache."""
    from transformers import AutoTokenizer

    target = cache_dir() / f"tiny-tokenizer-{recipe_hash(recipe)}"
    if not (target / "tokenizer.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        train_tiny_tokenizer(recipe).save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(target)
