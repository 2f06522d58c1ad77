"""Batched generation: the chat template applied once, left padding, stop at ``<end_of_turn>``.

Prompts are sorted by length so each batch pads little, generated in batches, and
returned in the caller's order. With ``out=`` every finished batch is appended to a JSONL
file, and a later call with the same file skips what is already there, so an interrupted
evaluation resumes where it stopped. Each batch draws from its own seed
(``sampling.seed + batch index``), so a resumed sampled run equals an unbroken one.

Two engines produce the same records: Hugging Face ``generate`` (any model ``from_pretrained``
gives, with or without a PEFT adapter) and vLLM (:class:`VLLMEngine`, when installed).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workings.core.chat import render_prompt, stop_token_ids
from workings.files import jsonl_records


@dataclass
class SamplingConfig:
    """Greedy when ``temperature`` is 0; otherwise sampled with ``top_p`` from ``seed``."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16
    min_new_tokens: int = 0  # stop tokens are ignored before this many (for fixed-length speed benchmarks)


@dataclass
class Generation:
    prompt: str
    text: str  # the model's turn, special tokens removed
    new_tokens: int  # generated tokens, the stop token included
    truncated: bool  # stopped at max_new_tokens instead of at a stop token


class Engine(ABC):
    """Something that generates for :func:`generate`: the HF and vLLM engines below."""

    @abstractmethod
    def generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int) -> list[tuple[list[int], bool]]:
        """Generate for one batch of tokenized prompts; (kept token ids, stopped at a stop token) per prompt."""


def _cut_at_stop(new: Sequence[int], stops: Sequence[int]) -> tuple[list[int], bool]:
    ended = next((k for k, t in enumerate(new) if t in stops), None)
    return (list(new[:ended]), True) if ended is not None else (list(new), False)


def nucleus(scores: Any, top_p: float, first_k: int = 256) -> tuple[Any, Any]:
    """The tokens transformers' ``TopPLogitsWarper`` keeps (the most probable ones until their mass
    reaches ``top_p``; at least one), found without sorting the vocabulary: ``(index, probs)``, the
    candidates of each row and their probabilities under the whole row's softmax, 0 where not kept.

    ``TopPLogitsWarper`` sorts every row's whole vocabulary at every step: 262,144 entries for
    Gemma 3, where a nucleus holds a few dozen. This takes the ``first_k`` most probable tokens
    (growing k fourfold for a row whose mass there falls short of ``top_p``) and applies the same
    rule inside them: a token stays while the mass of the more probable ones is below ``top_p``.
    The warper adds the whole vocabulary's probabilities in ascending order to find the edge, this
    the few largest in descending order, so where thousands of tokens share the mass the two float
    sums may put the edge a few of the least likely tokens apart; among tied scores either may keep
    other members of the tie. Elsewhere the kept set is the warper's.
    """
    import torch

    scores = scores.float()
    normaliser = scores.logsumexp(dim=-1, keepdim=True)
    k = min(first_k, scores.shape[-1])
    top, index = scores.topk(k, dim=-1)
    probs = (top - normaliser).exp()
    short = (probs.sum(dim=-1) < top_p).nonzero()[:, 0]
    wider = torch.nn.functional.pad
    while len(short) and k < scores.shape[-1]:  # only the rows whose mass falls short look further
        k = min(4 * k, scores.shape[-1])
        top, more = scores[short].topk(k, dim=-1)
        index, probs = wider(index, (0, k - index.shape[1])), wider(probs, (0, k - probs.shape[1]))
        index[short], probs[short] = more, (top - normaliser[short]).exp()
        short = short[probs[short].sum(dim=-1) < top_p]
    keep = (probs.cumsum(dim=-1) - probs) < top_p  # the mass of the more probable tokens
    keep[:, 0] = True
    return index, probs * keep


def draw_from_whole_rows(weights: Any, block: int = 512) -> Any:
    """One index per row of ``weights`` (non-negative, not necessarily normalised), drawn with
    probability proportional to its weight: a block of ``block`` entries by the blocks' sums, then
    an entry inside it, which is the same distribution as ``torch.multinomial(weights, 1)`` over the
    whole row in a tenth of its time on a 262,144-entry vocabulary (the two draws are over a few
    hundred entries each; the sums are one pass over the row)."""
    import torch

    rows, size = weights.shape
    padded = torch.nn.functional.pad(weights, (0, -size % block)).view(rows, -1, block)
    which = torch.multinomial(padded.sum(dim=-1), 1)
    inside = padded[torch.arange(rows), which[:, 0]]
    return which * block + torch.multinomial(inside, 1)


def nucleus_sampler(temperature: float, top_p: float) -> Any:
    """A logits processor that draws each row's next token from the nucleus of its scores at
    ``temperature`` and returns the scores with that token raised to +inf, for ``generate`` with
    ``do_sample=False``: its argmax then takes the draw.

    ``generate``'s own sampling draws with ``torch.multinomial`` over the whole vocabulary: 310 ms
    for 64 rows of 262,144 on 2 cores, against 12 ms for the top 256 and 25 ms for the row's
    normaliser. The draw has the distribution of transformers' temperature and top-p warpers
    followed by that sampling (see :func:`nucleus` for its edge); it comes from torch's generator,
    so a seed repeats it, but it is not the same draw as ``generate``'s for that seed.
    """
    import torch
    from transformers import LogitsProcessor

    class NucleusSampler(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scaled = scores / temperature if temperature != 1.0 else scores
            if top_p < 1.0:
                index, probs = nucleus(scaled, top_p)
                token = index.gather(1, torch.multinomial(probs, 1))  # multinomial normalises the kept mass
            else:
                token = draw_from_whole_rows((scaled - scaled.amax(dim=-1, keepdim=True)).exp())
            return scores.scatter_(1, token, float("inf"))

    return NucleusSampler()


class HFEngine(Engine):
    """Hugging Face ``generate`` on a loaded model (plain, PEFT-wrapped or merged)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self.stops = stop_token_ids(tokenizer)

    def generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int) -> list[tuple[list[int], bool]]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        kwargs: dict[str, Any] = {"do_sample": False}
        if sampling.temperature > 0:  # drawn inside the nucleus, taken by generate's argmax (nucleus_sampler)
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([nucleus_sampler(sampling.temperature, sampling.top_p)])
        torch.manual_seed(seed)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=sampling.max_new_tokens, min_new_tokens=sampling.min_new_tokens or None,
                eos_token_id=self.stops, pad_token_id=pad, top_k=None, **kwargs,
            )
        return [_cut_at_stop(out[row, width:].tolist(), self.stops) for row in range(len(prompts))]


class VLLMEngine(Engine):
    """vLLM with the same prompt token ids and stop tokens; a LoRA adapter is served as vLLM does
    (``enable_lora`` and a ``LoRARequest`` per call), over the base in its own precision or 4-bit."""

    def __init__(self, model: str, tokenizer: Any, *, adapter: str | Path | None = None, revision: str | None = None,
                 dtype: str = "bfloat16", quantized: bool = False, max_lora_rank: int = 64, max_model_len: int = 4096,
                 seed: int = 0):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as err:
            raise ImportError(f"vLLM is not installed ({err}); use engine: hf or `pip install vllm`") from err
        kwargs: dict[str, Any] = {"quantization": "bitsandbytes"} if quantized else {}
        self.llm = LLM(model=model, revision=revision, dtype=dtype, seed=seed, max_model_len=max_model_len,
                       enable_lora=adapter is not None, max_lora_rank=max_lora_rank, **kwargs)
        self.lora = LoRARequest("adapter", 1, str(adapter)) if adapter is not None else None
        self.stops = stop_token_ids(tokenizer)

    def generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig, seed: int) -> list[tuple[list[int], bool]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens, min_tokens=sampling.min_new_tokens, seed=seed, stop_token_ids=self.stops, skip_special_tokens=True,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                    lora_request=self.lora, use_tqdm=False)
        return [_cut_at_stop(o.outputs[0].token_ids, self.stops) for o in outputs]


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


# --- the JSONL stream ---------------------------------------------------------------------

def _read_done(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records already in ``path``; a torn last line (an interrupted write) is dropped from the file."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):  # the process died mid-line: keep only whole records
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    done: dict[str, dict[str, Any]] = {}
    try:
        records = list(jsonl_records(path))
    except ValueError as err:
        raise ValueError(f"{err}; move the file aside to start again") from None
    for number, record in records:
        if record.get("settings") != settings:
            raise ValueError(
                f"{path}, line {number}: written with other generation settings ({record.get('settings')}) "
                f"than this run ({settings}); use another file or move this one aside")
        done[record["id"]] = record
    return done


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def generate(model: Any, tokenizer: Any, questions: Sequence[str], sampling: SamplingConfig | None = None,
             progress: bool = False, *, out: str | Path | None = None, ids: Sequence[str] | None = None,
             settings: dict[str, Any] | None = None, layout: str = "project",
             share: tuple[int, int] = (0, 1)) -> list[Generation | None]:
    """Answer every question (rendered in the prompt ``layout``, :data:`workings.core.chat.PROMPT_LAYOUTS`)
    and return the generations in order.

    ``share`` ``(k, n)`` answers only every n-th batch from the k-th, the share of process k of n;
    the other questions come back as None. Batches and their seeds are those of the whole run, so
    the n shares together are the replies one process alone would give.

    ``model`` is a loaded Hugging Face model or an :class:`Engine`. With ``out`` each batch is
    appended to that JSONL file as it finishes (``id``, ``question``, ``text``, ``new_tokens``,
    ``truncated``, ``settings``), and questions whose ``id`` is already there are not asked again.
    ``settings`` (the model and adapter that answer, say) is stored with every record together
    with ``sampling``; a file written with other settings is refused rather than mixed in.
    """
    sampling = sampling or SamplingConfig()
    engine = model if isinstance(model, Engine) else HFEngine(model, tokenizer)
    ids = [str(i) for i in (ids if ids is not None else range(len(questions)))]
    if len(ids) != len(questions):
        raise ValueError(f"{len(ids)} ids for {len(questions)} questions")
    if len(set(ids)) != len(ids):
        raise ValueError(f"question ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    prompts = [render_prompt(q, tokenizer, layout) for q in questions]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    batches = [order[i: i + sampling.batch_size] for i in range(0, len(order), sampling.batch_size)]

    stamp = {**(settings or {}), "sampling": asdict(sampling)}
    if layout != "project":  # replies to the project's own prompt keep the keys they always had
        stamp["layout"] = layout
    path = Path(out) if out is not None else None
    done: dict[str, dict[str, Any]] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        done = _read_done(path, stamp)
    position, processes = share
    if not 0 <= position < processes:
        raise ValueError(f"share {share}: the first number must be one of 0 .. {processes - 1}")
    mine = [(index, batch) for index, batch in enumerate(batches) if index % processes == position]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(b) for _, b in mine), initial=sum(ids[i] in done for _, b in mine for i in b),
                   desc="generating", unit="question")
    for index, batch in mine:
        todo = [i for i in batch if ids[i] not in done]
        if not todo:
            continue
        # The whole batch is generated again so each row sees the same padding and random stream.
        results = engine.generate_batch([encoded[i] for i in batch], sampling, sampling.seed + index)
        records = []
        for i, (kept, ended) in zip(batch, results):
            if i not in todo:
                continue
            records.append({
                "id": ids[i], "question": questions[i], "text": tokenizer.decode(kept, skip_special_tokens=True),
                "new_tokens": len(kept) + ended, "truncated": not ended, "settings": stamp,
            })
        if path is not None:
            _append(path, records)
        done.update((r["id"], r) for r in records)
        if bar is not None:
            bar.update(len(records))
    if bar is not None:
        bar.close()
    return [Generation(prompt=prompts[i], text=done[ids[i]]["text"], new_tokens=done[ids[i]]["new_tokens"],
                       truncated=done[ids[i]]["truncated"]) if ids[i] in done else None for i in range(len(questions))]


# --- one question -------------------------------------------------------------------------

@dataclass
class Answer:
    question: str
    reasoning: str | None
    answer: str | None
    strict: bool  # the output was exactly one reasoning block and one answer block
    output: str  # the raw model turn

    def as_text(self) -> str:
        lines = [f"reasoning:\n{(self.reasoning or '(none)').strip()}", f"answer: {self.answer if self.answer is not None else '(none)'}"]
        if not self.strict:
            lines.append("(the output was not in the strict format; raw output below)\n" + self.output)
        return "\n\n".join(lines)


class PromptTooLong(ValueError):
    """A question whose prompt, with the reply it may grow, does not fit the model's context."""


def check_prompt_fits(question: str, tokenizer: Any, context: int, max_new_tokens: int,
                      new_tokens_key: str = "max_new_tokens") -> int:
    """The prompt's length in tokens; :class:`PromptTooLong` when it and ``max_new_tokens`` more pass
    ``context`` (past it, positions the model never saw make its reply garbage). ``new_tokens_key``
    names where ``max_new_tokens`` was set."""
    tokens = len(tokenizer(render_prompt(question, tokenizer), add_special_tokens=False)["input_ids"])
    if tokens + max_new_tokens <= context:
        return tokens
    if tokens >= context:
        raise PromptTooLong(f"the question is {len(question):,} characters, {tokens:,} tokens as a prompt: longer than "
                            f"the model's context of {context:,} tokens; shorten it")
    raise PromptTooLong(f"the question is {tokens:,} tokens as a prompt, and {new_tokens_key} {max_new_tokens:,} more would "
                        f"pass the model's context of {context:,} tokens; lower {new_tokens_key} to at most "
                        f"{context - tokens:,} or shorten the question")


def ask(question: str, model: Any, tokenizer: Any, sampling: SamplingConfig | None = None) -> Answer:
    """Ask one question and split the reply into reasoning and answer (greedy by default)."""
    from workings.core.format import parse

    generation = generate(model, tokenizer, [question], sampling or SamplingConfig(batch_size=1))[0]
    parsed = parse(generation.text)
    return Answer(question=question, reasoning=parsed.reasoning, answer=parsed.answer, strict=parsed.strict,
                  output=generation.text)
