"""The project's own tiny Gemma-architecture tokenizer and model for the ``demo`` profile.

Everything here is built from the synthetic corpus, reproducibly, and cached under
:func:`cache_dir` by a hash of the recipe and of the code that builds it, so the book
and the tests build it once.

The tiny model plays the part gemma-2-2b-it plays in the real run: a chat model that
has never written ``<reasoning>``/``<answer>`` tags. It is a Gemma2 network of a few
hundred thousand parameters, pretrained briefly, with every parameter trained, on
worked solutions as plain text and on chats whose answers state the result alone
(see :func:`pretraining_texts`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from workings.config.environment import cache_dir
from workings.core.chat import END_OF_DOCUMENT, END_OF_TURN, GEMMA_CHAT_TEMPLATE, INSTRUCTION, stop_token_ids, user_message
from workings.core.format import render
from workings.data.synthetic import generate_synthetic
from workings.files import json_digest, module_digests, write_folder

log = logging.getLogger(__name__)

# Gemma's special tokens, in Gemma's order for the first four ids.
SPECIAL_TOKENS = ["<pad>", END_OF_DOCUMENT, "<bos>", "<unk>", "<start_of_turn>", END_OF_TURN]
TOKENIZER_RECIPE = {"version": 1, "vocab_size": 2048, "corpus_rows": 4000, "corpus_seed": 1234}
# The demo model: architecture, pretraining corpus and schedule. Any change gives a new cache entry.
MODEL_RECIPE = {
    "version": 5,
    "tokenizer": TOKENIZER_RECIPE,
    "architecture": {
        "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024, "sliding_window": 512,
    },
    "corpus_rows": 4000, "corpus_seed": 4321, "numbers": "small", "max_steps": 3,
    "textbook_fraction": 0.65, "instructed_fraction": 0.5, "markup_fraction": 0.5,
    "steps": 1000, "batch_size": 12, "learning_rate": 3e-3, "warmup_fraction": 0.1, "seed": 0,
}


# The modules whose code decides what a build produces: the corpus, its rendering and the training loop.
BUILDER_MODULES = ("models.tiny", "data.synthetic", "data.example", "core.answers", "core.chat", "core.format",
                   "config.environment")


def builder_fingerprint() -> dict[str, str]:
    """Digests of the builder's source files and the versions of the libraries it trains with.

    Part of every cache key, so that a change to the code (not only to the recipe) builds
    afresh instead of loading an artefact that the current code would not produce.
    """
    import tokenizers
    import torch
    import transformers

    fingerprint = module_digests(*BUILDER_MODULES)
    fingerprint.update(torch=torch.__version__, transformers=transformers.__version__,
                       tokenizers=tokenizers.__version__)
    return fingerprint


def recipe_hash(recipe: dict, builder: dict[str, str] | None = None) -> str:
    """The cache key of a build: the recipe together with :func:`builder_fingerprint` (or ``builder``)."""
    return json_digest({"recipe": recipe, "builder": builder or builder_fingerprint()}, 12)


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
        eos_token=END_OF_DOCUMENT,
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", END_OF_TURN],
        padding_side="left",
    )
    wrapped.chat_template = GEMMA_CHAT_TEMPLATE
    return wrapped


def tiny_tokenizer(recipe: dict = TOKENIZER_RECIPE):
    """The tiny tokenizer, trained once per recipe and then loaded from the cache."""
    from transformers import AutoTokenizer

    target = cache_dir() / f"tiny-tokenizer-{recipe_hash(recipe)}"
    write_folder(target, lambda tmp: train_tiny_tokenizer(recipe).save_pretrained(tmp), keep_existing=True)
    return AutoTokenizer.from_pretrained(target)


def direct_answer(answer: str, markup: bool = False) -> str:
    """How the untuned base answers in a chat: the result alone, no working and never our tags.

    With ``markup`` the sentence comes in an HTML paragraph, the way web text is written.
    """
    return f"<p>The answer is {answer}.</p>" if markup else f"The answer is {answer}."


def worked_solution(question: str, reasoning: str, answer: str, markup: bool = False) -> str:
    """A plain document, not a chat: the problem, its worked steps and the result, as in a textbook.

    With ``markup`` the steps and the result come in HTML paragraphs, as on a web page.
    """
    if markup:
        return f"{question}\n<p>{reasoning.strip()}</p>\n<p>The answer is {answer}.</p>"
    return f"{question}\n{reasoning.strip()}\nThe answer is {answer}."


def pretraining_texts(rows: int, seed: int, tokenizer: Any, *, numbers: str = "standard", max_steps: int = 4,
                      textbook_fraction: float = 0.5, instructed_fraction: float = 0.5,
                      markup_fraction: float = 0.5) -> list[str]:
    """The base's corpus: worked solutions as plain documents, and chats that answer directly.

    ``textbook_fraction`` of the problems appear as plain text (``<bos>``, the problem, its
    steps, the result), the way worked arithmetic appears on the web. The rest are chats in
    Gemma's template where the model states the result and nothing else. So the base has
    read step-by-step arithmetic but, as a chat model, answers from the hip: a
    "non-reasoning" model. What fine-tuning has to teach it is to show its work, in our
    tags, in a chat.

    In ``instructed_fraction`` of the chats the user turn carries our instruction, tags and
    all, and the model answers directly anyway. ``markup_fraction`` of the documents and of
    the instructed answers come in HTML paragraphs (``<p>steps</p>`` then ``<p>The answer
    is 11.</p>``). So the base has read our tags and writes markup but never writes
    ``<reasoning>``/``<answer>``.

    The markup matters for a model this small: with tied embeddings and 64 dimensions, a
    base that never starts a turn with ``<`` cannot be taught to by LoRA alone (measured:
    the probability of ``<`` there stalled at 0.002 whatever the rank or learning rate,
    while full fine-tuning reached 0.76 in 40 steps); and a base whose only markup was a
    one-line answer (an earlier draft, questions worded differently) learned our format in
    just 66% of greedy replies under the same SFT settings.

    The demo recipe puts 65% of the problems in documents. Measured on 200 small problems
    (1000 steps, one wording per sentence): with half of them in documents, the base got
    43% right when it continued a document with its steps and 45% when it answered a chat
    directly, so writing the steps bought nothing; with 65% the two were 75% and 42.5% (and
    44.5% and 23.5% with another seed). Like a real pretrained model, the base knows more
    from what it has read than its chat answers show.
    """
    texts = []
    chooser = random.Random(seed)
    for example in generate_synthetic(rows, seed, max_steps=max_steps, numbers=numbers):
        if chooser.random() < textbook_fraction:
            markup = chooser.random() < markup_fraction
            texts.append(tokenizer.bos_token + worked_solution(example.question, example.reasoning, example.answer, markup))
            continue
        instructed = chooser.random() < instructed_fraction
        markup = instructed and chooser.random() < markup_fraction
        messages = [
            {"role": "user", "content": user_message(example.question) if instructed else example.question},
            {"role": "assistant", "content": direct_answer(example.answer, markup)},
        ]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def tiny_config(recipe: dict, tokenizer: Any) -> Any:
    """A Gemma2 config of the recipe's shape with the tokenizer's vocabulary and special ids."""
    from transformers import Gemma2Config

    arch = recipe["architecture"]
    return Gemma2Config(
        vocab_size=len(tokenizer),
        query_pre_attn_scalar=arch["head_dim"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **arch,
    )


def pretrain_tiny_model(recipe: dict = MODEL_RECIPE, progress: bool = False) -> tuple[Any, Any, list[float]]:
    """Initialise a tiny Gemma2 from the recipe's seed and pretrain every parameter on plain chats.

    Deterministic on a given machine: one seed for initialisation and batch order, no dropout.
    Returns (model, tokenizer, loss per step).
    """
    import torch
    from transformers import Gemma2ForCausalLM, GenerationConfig

    tokenizer = tiny_tokenizer(recipe["tokenizer"])
    torch.manual_seed(recipe["seed"])
    config = tiny_config(recipe, tokenizer)
    config._attn_implementation = "eager"
    model = Gemma2ForCausalLM(config)
    encoded = [
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in pretraining_texts(
            recipe["corpus_rows"], recipe["corpus_seed"], tokenizer, numbers=recipe["numbers"],
            max_steps=recipe["max_steps"], textbook_fraction=recipe["textbook_fraction"],
            instructed_fraction=recipe["instructed_fraction"], markup_fraction=recipe["markup_fraction"])
    ]
    steps, batch_size = recipe["steps"], recipe["batch_size"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["learning_rate"], total_steps=steps, pct_start=recipe["warmup_fraction"]
    )
    order = random.Random(recipe["seed"])
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        batch = order.sample(encoded, batch_size)
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=input_ids.masked_fill(mask == 0, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if progress and (step % 50 == 0 or step == steps - 1):
            log.info("tiny base: step %d/%d loss %.3f (%.0fs)", step + 1, steps, loss.item(), time.perf_counter() - start)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(tokenizer),
    )
    return model, tokenizer, losses


def tiny_model_dir(recipe: dict = MODEL_RECIPE, progress: bool = True) -> Path:
    """A folder loadable with ``from_pretrained`` (model, tokenizer, pretraining log), built once per recipe."""
    builder = builder_fingerprint()

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        model, tokenizer, losses = pretrain_tiny_model(recipe, progress=progress)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        log = {"recipe": recipe, "builder": builder, "losses": losses, "seconds": round(time.perf_counter() - start, 1),
               "parameters": sum(p.numel() for p in model.parameters())}
        (tmp / "pretraining.json").write_text(json.dumps(log, indent=1))

    return write_folder(cache_dir() / f"tiny-gemma2-{recipe_hash(recipe, builder)}", build, keep_existing=True)
