"""A profile's models on its benchmarks: which engine answers, where replies are cached, and the run itself.

Generations go to ``runs/<profile>/eval/<settings key>/<benchmark>.jsonl``, keyed by everything that
changes a reply (base and its build, precision, engine, adapter weights, sampling), so chapters and
commands share them: a finished benchmark is read back instead of asked again, and an interrupted
one resumes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from workings.config.stages import produced_adapter, run_layout
from workings.config.schema import Profile
from workings.evaluation.benchmarks import Benchmark
from workings.evaluation.generate import SamplingConfig, vllm_available
from workings.evaluation.scoring import Scored, evaluate_model, load_scored, scored_path
from workings.files import file_digest, json_digest

log = logging.getLogger(__name__)


def engine_name(profile: Profile) -> str:
    """The engine generation will use: ``vllm`` when the profile asks for it and it imports, else ``hf``."""
    return "vllm" if profile.evaluation.engine == "vllm" and vllm_available() else "hf"


def load_generator(profile: Profile, adapter: str | Path | None = None) -> Any:
    """What :func:`workings.evaluation.generate.generate` takes: a vLLM engine when :func:`engine_name` says so,
    else the Hugging Face model of :func:`load_for_inference`."""
    from workings.models.loading import load_for_inference, load_tokenizer, model_source

    if engine_name(profile) == "hf":
        if profile.evaluation.engine == "vllm":
            log.warning("vLLM is not installed: generating with transformers instead")
        return load_for_inference(profile, adapter)
    from workings.evaluation.generate import VLLMEngine

    return VLLMEngine(
        model_source(profile.model), load_tokenizer(profile.model), adapter=adapter, revision=profile.model.revision,
        dtype=profile.model.dtype, quantized=profile.quantization is not None, max_lora_rank=max(8, profile.lora.r),
        max_model_len=profile.data.max_length + profile.evaluation.max_new_tokens, seed=profile.evaluation.seed,
    )


def sampling_configs(evaluation: Any) -> dict[str, SamplingConfig]:
    """The greedy and the sampled generation settings of a profile's evaluation section."""
    common = {"max_new_tokens": evaluation.max_new_tokens, "batch_size": evaluation.batch_size, "seed": evaluation.seed}
    return {
        "greedy": SamplingConfig(**common),
        f"sampled (T={evaluation.temperature:g}, top-p {evaluation.top_p:g})": SamplingConfig(
            temperature=evaluation.temperature, top_p=evaluation.top_p, **common),
    }


# --- a profile's models on its benchmarks ---------------------------------------------------

def model_settings(profile: Profile, adapter: str | Path | None = None) -> dict[str, Any]:
    """What identifies the model that answers: base id and build, precision, engine and adapter weights."""
    from workings.models.loading import model_build

    settings: dict[str, Any] = {
        "model": profile.model.id, "revision": profile.model.revision, "dtype": profile.model.dtype,
        "quantization": asdict(profile.quantization) if profile.quantization else None, "engine": engine_name(profile),
    }
    build = model_build(profile.model)
    if build is not None:  # the tiny model is rebuilt per machine: its id alone does not fix the weights
        settings["build"] = build
    if adapter is not None:
        weights = Path(adapter) / "adapter_model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{adapter}: no adapter_model.safetensors; is this a LoRA adapter folder?")
        settings["adapter"] = file_digest(weights)
    return settings


def model_label(adapter: str | Path | None) -> str:
    """A name for the model that answered, for folders of its outputs: ``base``, or the adapter's
    folder (its run's name when the folder is called ``adapter``) and the digest of its weights."""
    if adapter is None:
        return "base"
    folder = Path(adapter)
    name = folder.parent.name if folder.name == "adapter" else folder.name
    return f"{name}-{file_digest(folder / 'adapter_model.safetensors')[:8]}"


def _complete(path: Path, ids: list[str]) -> list[Scored] | None:
    """The scored records of a finished benchmark run, when every question was answered."""
    scored = scored_path(path)
    if not scored.is_file():
        return None
    records = load_scored(scored)
    return records if [r.id for r in records] == ids else None


def replies_folder(profile: Profile, settings: dict[str, Any], sampling: SamplingConfig,
                   out_dir: str | Path | None = None, layout: str = "project") -> Path:
    """``<out_dir>/<key>``: the folder of one model's replies with one sampling and prompt layout, keyed by
    all three (the project's own layout leaves the key as it was before layouts were measured)."""
    key = {**settings, "sampling": asdict(sampling), **({"layout": layout} if layout != "project" else {})}
    return Path(out_dir or run_layout(profile).evaluation) / json_digest(key, 10)


def replies_file(folder: Path, bench: Benchmark) -> Path:
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench.name)}.jsonl"


def saved_results(profile: Profile, benchmarks: Sequence[Benchmark], adapter: str | Path | None = None,
                  sampling: SamplingConfig | None = None, out_dir: str | Path | None = None,
                  layout: str = "project") -> dict[str, list[Scored]] | None:
    """What :func:`run_benchmarks` would return, read from disk only: None unless every benchmark
    was answered in full with these settings (nothing is loaded or generated)."""
    sampling = sampling or sampling_configs(profile.evaluation)["greedy"]
    folder = replies_folder(profile, model_settings(profile, adapter), sampling, out_dir, layout)
    results = {}
    for bench in benchmarks:
        done = _complete(replies_file(folder, bench), [r["id"] for r in bench.rows])
        if done is None:
            return None
        results[bench.name] = done
    return results


def default_adapter(profile: Profile, stage: str | None = None) -> Path | None:
    """The adapter a command answers with: that of ``stage`` when named (refused when it has not
    finished), else ``evaluation.adapter`` when set, else the last finished stage's of the profile's
    chain (:func:`workings.config.stages.produced_adapter`); None when no stage has finished."""
    if stage is None and profile.evaluation.adapter is not None:
        return Path(profile.evaluation.adapter)
    return produced_adapter(profile, stage)


def run_benchmarks(profile: Profile, benchmarks: Sequence[Benchmark], adapter: str | Path | None = None,
                   sampling: SamplingConfig | None = None, out_dir: str | Path | None = None,
                   progress: bool = True, layout: str = "project") -> dict[str, list[Scored]]:
    """Ask the profile's base (with ``adapter`` when given) every benchmark, in the prompt ``layout``;
    scored replies per benchmark.

    Generations go to ``<out_dir>/<settings key>/<benchmark>.jsonl`` (default ``runs/<profile>/eval``),
    keyed by everything that changes a reply, so a finished benchmark is read back instead of asked
    again and an interrupted one resumes. The model is only loaded if something is left to ask.
    """
    from workings.models.loading import load_tokenizer

    sampling = sampling or sampling_configs(profile.evaluation)["greedy"]
    settings = model_settings(profile, adapter)
    folder = replies_folder(profile, settings, sampling, out_dir, layout)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({**settings, "sampling": asdict(sampling), "layout": layout,
                                                      "adapter_path": str(adapter) if adapter else None}, indent=1))
    tokenizer, model = None, None
    results: dict[str, list[Scored]] = {}
    for bench in benchmarks:
        path = replies_file(folder, bench)
        done = _complete(path, [r["id"] for r in bench.rows])
        if done is not None:
            results[bench.name] = done
            continue
        if model is None:
            tokenizer = load_tokenizer(profile.model)
            model = load_generator(profile, adapter)
        log.info("%s: %d questions -> %s", bench.name, len(bench.rows), path)
        results[bench.name] = evaluate_model(model, tokenizer, bench.rows, sampling, progress, out=path, settings=settings,
                                             layout=layout)
    return results
