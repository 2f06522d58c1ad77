import dataclasses
import json
import math

import pytest

from workings.config.schema import ProfileError
from workings.core.chat import END_OF_TURN
from workings.train.runs import check_environment, check_mix, checkpoints, divergence_guard, TrainingDiverged
from workings.train.sft import attention_leak, build_trainer, check_packing, completion_labels, train, training_rows

SMALL_DATA = {
    "max_length": 512,
    "sources": [{"name": "synthetic", "converter": "synthetic", "synthetic": {"n": 48, "seed": 5}, "heldout": 8}],
    "eval_sets": [],
}
# Six optimizer steps of two rows, a checkpoint every three, a log line every step.
SHORT_RUN = {"max_steps": 6, "per_device_train_batch_size": 2, "save_steps": 3, "eval_steps": 3,
             "logging_steps": 1, "warmup_steps": 0.0, "learning_rate": 1.0e-3}


@pytest.fixture
def small_mix(tmp_path, tiny_profile):
    from workings.data.mix import build_mix, save_mix
    from workings.models.loading import load_tokenizer

    profile = tiny_profile({"data": SMALL_DATA})
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=False)
    return save_mix(mix, tmp_path / "mix", {"profile": profile.name, "model": profile.model.id})


def short_profile(tiny_profile, **sft):
    return tiny_profile({"data": SMALL_DATA, "training": {"eval_rows": 4}, "sft": {**SHORT_RUN, **sft}})


def losses(history):
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


# --- checks before anything is loaded ---------------------------------------------------

def test_cuda_profile_on_a_machine_without_cuda_names_training_device(tiny_profile):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProfileError, match=r"test\.yaml: training\.device: cuda, but this machine has no CUDA device"):
        check_environment(tiny_profile({"training": {"device": "cuda"}}))


def pretend_gpu(monkeypatch, name: str, capability: tuple[int, int], bfloat16: bool) -> None:
    """This machine as one with the GPU ``name``, as torch.cuda reports it to the checks."""
    import torch
    from trl import SFTConfig  # noqa: F401  imported on the real machine: its import probes CUDA

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.fixture
def gpu_without_bfloat16(monkeypatch):
    """This machine as a Kaggle T4 (compute capability 7.5: float16 tensor cores, no bfloat16)."""
    pretend_gpu(monkeypatch, "Tesla T4", (7, 5), bfloat16=False)


def test_a_bfloat16_profile_on_a_gpu_without_bfloat16_is_refused_before_loading(gpu_without_bfloat16):
    from workings.config.loading import load_profile

    with pytest.raises(ProfileError, match=r"a100\.yaml: model\.dtype: bfloat16, but Tesla T4 \(compute capability 7\.5\) "
                                           r"has no bfloat16 \(set in model\.dtype, quantization\.compute_dtype, sft\.bf16\); "
                                           r"use a float16 profile such as kaggle-p100 or kaggle-t4x2"):
        check_environment(load_profile("a100"))


def test_bf16_mixed_precision_alone_is_named_on_a_gpu_without_bfloat16(tiny_profile, gpu_without_bfloat16):
    profile = tiny_profile({"training": {"device": "cuda"}, "sft": {"bf16": True}})
    with pytest.raises(ProfileError, match=r"test\.yaml: sft\.bf16: bfloat16, but Tesla T4"):
        check_environment(profile)


def test_the_float16_kaggle_profile_passes_the_check_on_a_gpu_without_bfloat16(gpu_without_bfloat16):
    from workings.config.loading import load_profile

    check_environment(load_profile("kaggle-p100"))


def test_a_run_with_another_number_of_processes_than_the_profile_is_refused(monkeypatch, gpu_without_bfloat16):
    from workings.config.loading import load_profile

    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ProfileError, match=r"kaggle-t4x2\.yaml: training\.processes: the profile trains with 2 process\(es\), "
                                           r"this run has 1; launch it with accelerate launch --num_processes 2"):
        check_environment(load_profile("kaggle-t4x2"))


@pytest.fixture
def gpu_with_bfloat16(monkeypatch):
    """This machine as an A100 (compute capability 8.0)."""
    pretend_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0), bfloat16=True)


def test_a_sharding_profile_launched_without_fsdp_is_refused_with_the_launch_command(monkeypatch, gpu_with_bfloat16):
    from workings.config.loading import load_profile

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with pytest.raises(ProfileError, match=r"a100-fsdp\.yaml: training\.fsdp: the profile shards with FSDP, and this run was "
                                           r"launched without it; launch it with accelerate launch --config_file "
                                           r"src/workings/config/accelerate/fsdp-qlora\.yaml"):
        check_environment(load_profile("a100-fsdp"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # past that check, the next one: one process of two
    with pytest.raises(ProfileError, match=r"training\.processes: the profile trains with 2 process\(es\), this run has 1"):
        check_environment(load_profile("a100-fsdp"))


def test_an_fsdp_launch_of_a_profile_that_does_not_shard_is_refused(monkeypatch, tiny_profile):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ProfileError, match=r"test\.yaml: training\.fsdp: the profile does not shard, and this run was "
                                           r"launched with FSDP"):
        check_environment(tiny_profile())


def test_each_ddp_process_loads_the_base_on_its_own_gpu(monkeypatch):
    from workings.config.loading import load_profile
    from workings.models.loading import base_model_kwargs

    profile = load_profile("kaggle-t4x2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of accelerate launch or torchrun
    assert base_model_kwargs(profile)["device_map"] == {"": "cuda:1"}


def test_under_fsdp_the_base_loads_without_a_device_and_stores_4bit_weights_in_the_model_dtype(monkeypatch):
    import torch

    from workings.config.loading import load_profile
    from workings.models.loading import base_model_kwargs

    profile = load_profile("a100-fsdp")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    kwargs = base_model_kwargs(profile)
    assert "device_map" not in kwargs  # FSDP places the shards
    assert kwargs["dtype"] == kwargs["quantization_config"].bnb_4bit_quant_storage == torch.bfloat16


def test_fsdp_sharding_divides_the_weights_and_optimizer_state_but_not_the_activations():
    from workings.config.loading import load_profile
    from workings.models.cost import decoder_linear_parameters, estimate_memory, load_model_config, total_parameters
    from workings.models.loading import model_source

    a100, fsdp = load_profile("a100"), load_profile("a100-fsdp")
    config = load_model_config(model_source(a100.model))
    one, two = (estimate_memory(p, config) for p in (a100, fsdp))
    # FSDP skips k-bit preparation, so its unquantized weights stay bfloat16 (2 bytes, not 4), then halves them all.
    unquantized = total_parameters(config) - decoder_linear_parameters(config)
    assert 2 * two.frozen_weights == pytest.approx(one.frozen_weights - 2 * unquantized, abs=2)
    assert two.optimizer_state == one.optimizer_state // 2
    assert two.activations == one.activations // 2  # half the rows per micro-batch, not sharding


@pytest.mark.skipif(not __import__("torch").cuda.is_available() or __import__("torch").cuda.device_count() < 2,
                    reason="FSDP shards over GPUs (accelerate turns it on only for GPU process groups): needs two")
def test_fsdp_over_two_gpus_trains_a_4bit_base_as_ddp_does(tiny_profile, small_mix, tmp_path):
    """The tiny model, 4-bit with bfloat16 storage, 4 steps under the FSDP config and under DDP:
    the same losses (tolerance 1e-2 relative: bfloat16 sums in another order) and an adapter each."""
    import os
    import subprocess
    import sys

    import yaml

    from workings.config.loading import PROFILE_DIR

    runs = {}
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        profile = tiny_profile({"data": SMALL_DATA, "model": {"dtype": "bfloat16"},
                                "training": {"eval_rows": 4, "device": "cuda", "processes": 2, "fsdp": fsdp},
                                "quantization": {"compute_dtype": "bfloat16", "quant_storage": "bfloat16"},
                                "sft": {**SHORT_RUN, "max_steps": 4, "save_steps": 4, "eval_steps": 4,
                                        "per_device_train_batch_size": 2, "bf16": True}}, name=name)
        launch = ["--config_file", str(PROFILE_DIR.parent / "accelerate" / "fsdp-qlora.yaml")] if fsdp else ["--num_processes", "2"]
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launch, "-m", "workings", "train",
                               "--profile", str(profile.path), "--mix", str(small_mix), "--out", str(tmp_path / name), "--quiet"],
                              capture_output=True, text=True, env=os.environ.copy(), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        state = json.loads((tmp_path / name / "trainer_state.json").read_text())
        runs[name] = [h["loss"] for h in state["log_history"] if "loss" in h]
        assert (tmp_path / name / "adapter" / "adapter_model.safetensors").is_file()
    assert runs["fsdp"] == pytest.approx(runs["ddp"], rel=1e-2)


def test_demo_4bit_profile_passes_the_machine_check_on_cpu(tiny_profile):
    check_environment(tiny_profile())


def test_mix_made_for_another_model_is_refused(tiny_profile, small_mix):
    from workings.data.mix import load_mix

    train_rows, _, report = load_mix(small_mix)
    with pytest.raises(ProfileError, match=r"model\.id: the mix was built with the tokenizer of 'google/gemma-2-2b-it'"):
        check_mix(tiny_profile(), train_rows, {**report, "model": "google/gemma-2-2b-it"})


def test_mix_rows_longer_than_sft_max_length_are_named(tiny_profile, small_mix):
    from workings.data.mix import load_mix

    train_rows, _, report = load_mix(small_mix)
    profile = tiny_profile()
    profile.sft["max_length"] = 40
    longest = max(train_rows["n_tokens"])
    with pytest.raises(ProfileError, match=rf"sft\.max_length: 40 is below the longest row of the mix \({longest} tokens, id "):
        check_mix(profile, train_rows, report)


PROMPT = "<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"


def test_training_rows_end_exactly_at_end_of_turn_and_leave_bos_to_the_tokenizer(tokenizer):
    from datasets import Dataset

    rows = Dataset.from_list([{"id": "a", "prompt": "<bos>" + PROMPT,
                               "completion": "<reasoning>r</reasoning>\n<answer>1</answer><end_of_turn>\n", "n_tokens": 9}])
    assert training_rows(rows, tokenizer)[0] == {
        "prompt": PROMPT, "completion": "<reasoning>r</reasoning>\n<answer>1</answer><end_of_turn>"}


def test_training_row_without_end_of_turn_is_named(tokenizer):
    from datasets import Dataset

    rows = Dataset.from_list([{"id": "row-7", "prompt": "p", "completion": "<answer>1</answer>\n", "n_tokens": 3}])
    with pytest.raises(ValueError, match=r"row row-7: completion does not end with <end_of_turn>"):
        training_rows(rows, tokenizer)


# --- what the trainer is fed --------------------------------------------------------------

def test_loss_falls_on_completion_tokens_only_and_ends_at_end_of_turn(tiny_profile, small_mix):
    from workings.data.mix import load_mix

    trainer = build_trainer(short_profile(tiny_profile), small_mix, tiny_profile().path.parent / "run", progress=False)
    tokenizer = trainer.processing_class
    rows, _, _ = load_mix(small_mix)
    row = rows[0]
    example = trainer.train_dataset[0]
    batch = trainer.data_collator([example])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]  # rendered with one <bos>
    assert prompt_ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in prompt_ids[1:]
    completion_ids = tokenizer(row["completion"].rstrip("\n"), add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + completion_ids  # no <bos> doubled, no <eos> appended
    assert labels == [-100] * len(prompt_ids) + completion_ids
    assert (ids, labels) == completion_labels(tokenizer, row["prompt"], row["completion"])
    assert tokenizer.convert_ids_to_tokens(completion_ids[0]) == "<"
    assert tokenizer.convert_ids_to_tokens(labels[-1]) == END_OF_TURN
    assert tokenizer.convert_tokens_to_ids("<eos>") not in labels


# --- packing ------------------------------------------------------------------------------

def sharpened(model):
    """Scale the attention projections so that attention logits pass Gemma 2's softcap (50)."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(40)
            layer.self_attn.k_proj.weight.mul_(40)
    return model


def example_losses(model, examples, padding_free):
    """Each example's completion loss, from one batch made by TRL's own collator."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
    batch = collator([{"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]} for ids, mask in examples])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")},
                       use_cache=False).logits.float()
    token_losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none")
    if not padding_free:
        return [(token_losses[i].sum() / (batch["labels"][i, 1:] != -100).sum()).item() for i in range(len(examples))]
    losses, start = [], 0
    for ids, _ in examples:
        labels = batch["labels"][0, start + 1 : start + len(ids)]
        losses.append((token_losses[0, start : start + len(ids) - 1].sum() / (labels != -100).sum()).item())
        start += len(ids)
    return losses


# Three examples of different lengths: prompt tokens (mask 0) then completion tokens (mask 1).
PACKED_EXAMPLES = [([2, 10, 11, 12, 13, 14, 15, 16, 17], [0, 0, 0, 1, 1, 1, 1, 1, 1]),
                   ([2, 20, 21, 22, 23], [0, 0, 1, 1, 1]),
                   ([2, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])]


@pytest.mark.parametrize("attention", ["eager", "flex_attention"])
def test_a_packed_example_has_the_loss_it_has_when_padded_alone_with_softcapping_on(random_tiny_dir, attention):
    import torch
    from transformers import AutoModelForCausalLM

    if attention == "flex_attention" and not torch.cuda.is_available():
        pytest.skip("torch's CPU flex attention gives wrong logits for some lengths (a row of 8 tokens differs by "
                    "0.36 from eager under torch 2.13); the GPU benchmark measures flex packing on the GPU")
    model = sharpened(AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation=attention)).eval()
    assert model.config.attn_logit_softcapping == 50.0
    packed = example_losses(model, PACKED_EXAMPLES, padding_free=True)
    alone = [example_losses(model, [example], padding_free=False)[0] for example in PACKED_EXAMPLES]
    assert packed == pytest.approx(alone, abs=1e-5)
    for layer in model.model.layers:  # the softcap is in play: without it the losses move
        layer.self_attn.attn_logit_softcapping = None
    uncapped = [example_losses(model, [example], padding_free=False)[0] for example in PACKED_EXAMPLES]
    assert max(abs(a - b) for a, b in zip(alone, uncapped)) > 1e-3


def test_a_padded_batch_keeps_examples_apart(random_tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager")
    assert attention_leak(model, [[2, 10, 11, 12, 13, 14], [2, 20, 21, 22]], packed=False) < 1e-4


@pytest.fixture
def causal_only_attention():
    """An attention that applies a plain causal mask and ignores the one transformers built, as a
    kernel without packed-sequence support would: packed examples then see each other."""
    import torch
    from transformers import AttentionInterface
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    def causal_only(module, query, key, value, attention_mask, **kwargs):
        n = query.shape[-2]
        causal = torch.full((n, n), float("-inf")).triu(1)[None, None]
        return eager_attention_forward(module, query, key, value, causal, **kwargs)

    AttentionInterface.register("causal_only", causal_only)
    return "causal_only"


def test_check_packing_refuses_an_attention_that_lets_packed_examples_see_each_other(random_tiny_dir, causal_only_attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation=causal_only_attention)
    with pytest.raises(ProfileError, match=r"sft\.packing: packed examples attend to each other with 'causal_only' attention "
                                           r"\(logits differ by up to 0\.\d\d from unpacked\)"):
        check_packing(model, causal_only_attention, [[2, 10, 11, 12, 13, 14], [2, 20, 21, 22]])


def test_a_padding_free_run_measures_its_attention_before_the_first_step(tiny_profile, small_mix, tmp_path,
                                                                          causal_only_attention):
    profile = short_profile(tiny_profile, padding_free=True)
    with pytest.raises(ProfileError, match=r"sft\.padding_free: packed examples attend to each other with 'causal_only'"):
        build_trainer(dataclasses.replace(profile, model=dataclasses.replace(profile.model, attn_implementation=causal_only_attention)),
                      small_mix, tmp_path / "run", progress=False)


def test_check_packing_accepts_eager_attention(random_tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager")
    check_packing(model, "eager", [[2, 10, 11, 12, 13, 14], [2, 20, 21, 22]])


def test_forwards_without_a_cache_ask_for_the_main_flex_kernel_and_generation_keeps_torchs_choice(random_tiny_dir):
    import torch
    from transformers import AttentionInterface, AutoModelForCausalLM
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    from workings.models.loading import MAIN_FLEX_KERNEL, use_main_flex_kernel_without_cache

    asked = []

    def recording(module, query, key, value, attention_mask, **kwargs):  # what reaches the attention function
        asked.append(kwargs.get("kernel_options"))
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("recording", recording)
    model = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="recording").eval()
    assert use_main_flex_kernel_without_cache(model) == 2  # one per layer
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 10, 11, 12]]), use_cache=False)
    assert asked == [MAIN_FLEX_KERNEL, MAIN_FLEX_KERNEL]
    asked.clear()
    model.generate(torch.tensor([[2, 10, 11, 12]]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert asked == [None] * 6  # the prefill and two steps, each through both layers, with a cache


def test_a_flex_attention_base_on_the_cpu_is_loaded_without_kernel_options(tiny_profile):
    from workings.models.loading import load_base_model

    model = load_base_model(tiny_profile({"model": {"attn_implementation": "flex_attention"}}))
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_on_a_gpu_flex_attention_keeps_a_few_short_packed_rows_apart_with_256_wide_heads(tmp_path, tokenizer, tiny_profile):
    """A packed row under 128 tokens with Gemma 2's head width: torch 2.11 on an H100 failed to compile
    its decoding kernel for it until the main kernel was asked for."""
    import torch
    from transformers import Gemma2ForCausalLM

    from workings.models.loading import load_base_model
    from workings.models.tiny import MODEL_RECIPE, tiny_config

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU: what it guards against is in torch's CUDA flex attention kernels")
    recipe = {**MODEL_RECIPE, "architecture": {**MODEL_RECIPE["architecture"], "num_hidden_layers": 2, "head_dim": 256,
                                                "num_attention_heads": 8, "num_key_value_heads": 4}}
    torch.manual_seed(0)
    Gemma2ForCausalLM(tiny_config(recipe, tokenizer)).save_pretrained(tmp_path / "wide")
    tokenizer.save_pretrained(tmp_path / "wide")
    profile = tiny_profile({"model": {"id": str(tmp_path / "wide"), "attn_implementation": "flex_attention",
                                      "dtype": "bfloat16"},  # as the fast profiles run it
                            "quantization": None, "training": {"device": "cuda"}})
    model = load_base_model(profile).eval()
    check_packing(model, "flex_attention", [list(range(3, 3 + n)) for n in (37, 8, 61)])  # what a fast profile runs first


def test_padding_free_micro_batches_train_like_the_seeds_padded_ones(tiny_profile, small_mix, tmp_path):
    """The fast profiles' batching (rows laid end to end, 4 per pass) against the seed's (rows padded
    to the longest, 2 per pass, 2 accumulated): the same 4 rows per optimizer step, the same
    losses step by step (float32; tolerance 1e-4 relative for summation order)."""
    seed_like = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
    fast_like = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "padding_free": True}
    runs = {name: train(short_profile(tiny_profile, max_steps=4, save_steps=4, eval_steps=4, **sft), small_mix,
                        tmp_path / name, progress=False)
            for name, sft in (("padded", seed_like), ("padding_free", fast_like))}
    padded, padding_free = (losses(runs[name].log_history) for name in ("padded", "padding_free"))
    assert [step for step, _ in padding_free] == [1, 2, 3, 4]
    assert [loss for _, loss in padding_free] == pytest.approx([loss for _, loss in padded], rel=1e-4)


# --- the run: logs, checkpoints, resume, divergence -------------------------------------

def test_a_run_writes_state_checkpoints_tensorboard_and_adapter(tiny_profile, small_mix, tmp_path):
    result = train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == result.steps == 6
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-3", "checkpoint-6"]
    assert [s for s, _ in losses(state["log_history"])] == [1, 2, 3, 4, 5, 6]
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [3, 6]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 6


class Crash(Exception):
    pass


def crash_after(step):
    from transformers import TrainerCallback

    class CrashAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Crash(f"killed at step {step}")

    return CrashAfter()


def test_resume_after_a_crash_logs_exactly_what_the_unbroken_run_logs(tiny_profile, small_mix, tmp_path):
    """Bit for bit on the CPU: every logged loss, held-out loss, gradient norm, learning rate and token
    count. (Before the fix the resumed run trained its adapter in float32 where the unbroken one
    trains it in bfloat16, and its losses left the unbroken run's from the step after the checkpoint.)"""
    profile = short_profile(tiny_profile)
    unbroken = train(profile, small_mix, tmp_path / "unbroken", progress=False)
    with pytest.raises(Crash):
        train(profile, small_mix, tmp_path / "broken", progress=False, callbacks=[crash_after(4)])
    assert [p.name for p in checkpoints(tmp_path / "broken")] == ["checkpoint-3"]
    resumed = train(profile, small_mix, tmp_path / "broken", resume=True, progress=False)
    assert resumed.summary["resumed_from"] == "checkpoint-3"

    def logged(history):  # timings vary; the trainer's own train_loss covers only the last session
        return [{k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k and k != "train_loss"}
                for entry in history]

    assert logged(resumed.log_history) == logged(unbroken.log_history)
    assert resumed.summary["train_loss"] == pytest.approx(unbroken.summary["train_loss"], rel=1e-12)


def test_resume_passes_over_a_truncated_checkpoint_naming_the_file_and_takes_the_one_before(tiny_profile, small_mix,
                                                                                            tmp_path, caplog):
    profile = short_profile(tiny_profile, save_steps=2)
    unbroken = train(profile, small_mix, tmp_path / "unbroken", progress=False)
    with pytest.raises(Crash):
        train(profile, small_mix, tmp_path / "broken", progress=False, callbacks=[crash_after(5)])
    optimizer = tmp_path / "broken" / "checkpoint-4" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:1000])  # a copy cut short
    with caplog.at_level("WARNING", logger="workings"):
        resumed = train(profile, small_mix, tmp_path / "broken", resume=True, progress=False)
    assert f"not resuming from checkpoint-4: {optimizer}: truncated or damaged (" in caplog.text
    assert resumed.summary["resumed_from"] == "checkpoint-2"
    assert losses(resumed.log_history) == losses(unbroken.log_history)


@pytest.mark.parametrize("cut", [4, 100, -10])
def test_a_truncated_adapter_file_is_named_before_anything_loads(tiny_profile, small_mix, tmp_path, cut):
    from workings.files import Damaged
    from workings.models.loading import check_adapter

    train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    weights = tmp_path / "run" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:cut])
    with pytest.raises(Damaged, match=f"^{weights}: .*(truncated|shorter than a safetensors header)"):
        check_adapter(weights.parent)


def test_existing_checkpoints_are_never_trained_over_silently(tiny_profile, small_mix, tmp_path):
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"already holds checkpoint-3: resume it or overwrite it"):
        train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint-3").is_dir()


def test_resume_without_a_checkpoint_says_so(tiny_profile, small_mix, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\* folder to resume from"):
        train(short_profile(tiny_profile), small_mix, tmp_path / "run", resume=True, progress=False)


def guard_logs(values, tmp_path, key="loss", vocab_size=None):
    from types import SimpleNamespace

    guard = divergence_guard(4.0, vocab_size)
    for step, value in enumerate(values, 1):
        guard.on_log(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=step), None, logs={key: value})


def test_divergence_guard_stops_on_nan(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(TrainingDiverged, match=r"training loss became nan at step 3; the last good checkpoint is .*checkpoint-2"):
        guard_logs([2.0, 1.5, math.nan], tmp_path)


def test_divergence_guard_stops_when_loss_passes_four_times_the_first(tmp_path):
    guard_logs([2.0, 0.1, 0.6, 7.9], tmp_path)  # a noisy log 6x the best is not divergence; below 4x the first: fine
    with pytest.raises(TrainingDiverged, match=r"training loss exploded at step 2: 8\.100 is more than 4\.0x the first logged \(2\.000\)"):
        guard_logs([2.0, 8.1], tmp_path)


def test_divergence_guard_stops_a_held_out_loss_that_climbs_past_four_times_its_best(tmp_path):
    guard_logs([1.0, 0.2, 0.79], tmp_path, key="eval_loss")
    with pytest.raises(TrainingDiverged, match=r"held-out loss exploded at step 3: 0\.810 is more than 4\.0x the best held-out loss so far \(0\.200\)"):
        guard_logs([1.0, 0.2, 0.81], tmp_path, key="eval_loss")


def test_divergence_guard_stops_a_held_out_loss_worse_than_a_uniform_guess(tmp_path):
    """The reported run: held-out loss 12.7 with a 2,048-token vocabulary (ln 2048 = 7.62)."""
    guard_logs([7.6, 11.0], tmp_path, key="eval_loss", vocab_size=2048)  # up to 1.5x uniform: a bad start, not divergence
    (tmp_path / "checkpoint-80").mkdir()
    with pytest.raises(TrainingDiverged, match=r"held-out loss is 12\.700 at step 1, worse than a uniform guess over the "
                                               r"2,048-token vocabulary \(ln 2048 = 7\.62\); the last good checkpoint is .*checkpoint-80"):
        guard_logs([12.7], tmp_path, key="eval_loss", vocab_size=2048)


def poison_adapter_after(step):
    """Overwrite one LoRA weight with NaN after ``step``, as a numerical blow-up would."""
    import torch
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == step:
                with torch.no_grad():
                    next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))

    return Poison()


def test_a_nan_weight_stops_the_run_at_once_and_names_the_last_checkpoint(tiny_profile, small_mix, tmp_path):
    profile = short_profile(tiny_profile, logging_steps=10)  # no loss is logged after step 1: the weights tell
    # the guard checks every step, before the poison of step 4 is applied: it sees it after step 5
    with pytest.raises(TrainingDiverged, match=r"weight .*lora.* is no longer finite after step 5; the last good checkpoint is .*checkpoint-3"):
        train(profile, small_mix, tmp_path / "run", progress=False, callbacks=[poison_adapter_after(4)])
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-3"]


def test_a_run_whose_mean_loss_is_worse_than_uniform_fails_instead_of_reporting_success(
        tiny_profile, small_mix, tmp_path, monkeypatch):
    """A run too short to log (or a random model, which cannot do worse than uniform) is judged on
    its mean loss at the end; nothing that would call it a result is written."""
    import workings.train.sft

    monkeypatch.setattr(workings.train.sft, "whole_run_loss", lambda *args: 12.7)
    with pytest.raises(TrainingDiverged, match=r"mean training loss is 12\.700 at step 6, worse than a uniform guess"):
        train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "adapter").exists()


def test_train_command_trains_and_refuses_to_train_over_a_run(tiny_profile, small_mix, tmp_path, capsys):
    from workings.cli import main

    profile = short_profile(tiny_profile)
    args = ["train", "--profile", str(profile.path), "--mix", str(small_mix), "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    assert "6 steps in" in capsys.readouterr().out
    assert main(args) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"workings train: error: {tmp_path / 'run'} already holds checkpoint-6: add --resume to continue it "
        "or --overwrite to train again"]
    assert main([*args, "--resume"]) == 0


# --- bitsandbytes' packed CPU layout (AVX512-BF16) -------------------------------------------
# bitsandbytes repacks a 4-bit layer's weights for its AVX512-BF16 CPU kernel the first time the
# layer runs in eval mode without grad. Forcing its capability check runs that path on any CPU,
# so both paths are tested on every machine, whatever its processor.

@pytest.fixture(params=[False, True], ids=["plain cpu", "cpu that packs"])
def cpu_packs(request, monkeypatch):
    """bitsandbytes' AVX512-BF16 check forced to say no, then yes, for the 4-bit layers built next."""
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: request.param)
    return request.param


def test_forcing_the_capability_makes_bitsandbytes_pack_a_layer_in_eval(monkeypatch):
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules
    import torch

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4").to("cpu")
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 64))
    assert layer.weight.quant_state.packing_format_for_cpu  # what the guard below must prevent


def test_the_loader_keeps_4bit_weights_plain_whatever_the_cpu(tiny_profile, cpu_packs):
    import torch

    from workings.models.loading import load_base_model
    from workings.models.qlora import packed_4bit_layers

    model = load_base_model(tiny_profile())
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 10, 11, 12]]))
    assert packed_4bit_layers(model) == []


def test_train_evaluate_train_save_is_the_same_run_whatever_the_cpu(tiny_profile, small_mix, tmp_path, monkeypatch):
    """Six steps with an evaluation after step 3 and a crash after step 4, resumed and saved: the
    losses, the checkpoint and the adapter are the same bytes on a CPU that packs and one that does not."""
    import bitsandbytes.nn.modules

    runs = {}
    for packs in (False, True):
        monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda packs=packs: packs)
        out = tmp_path / f"packs-{packs}"
        profile = short_profile(tiny_profile)
        with pytest.raises(Crash):
            train(profile, small_mix, out, progress=False, callbacks=[crash_after(4)])
        runs[packs] = train(profile, small_mix, out, resume=True, progress=False)
    plain, packing = runs[False], runs[True]
    assert losses(packing.log_history) == losses(plain.log_history)
    assert [h["eval_loss"] for h in packing.log_history if "eval_loss" in h] == [
        h["eval_loss"] for h in plain.log_history if "eval_loss" in h]
    for name in ("adapter/adapter_model.safetensors", "checkpoint-3/adapter_model.safetensors"):
        assert (packing.out_dir / name).read_bytes() == (plain.out_dir / name).read_bytes(), name


def test_without_the_guard_a_cpu_that_packs_breaks_the_run(tiny_profile, small_mix, tmp_path, monkeypatch):
    """The failure users with AVX512-BF16 saw: the test model's 32-wide layers are narrower than one
    64-value block, and the evaluation step's repacking fails. This is what the guard is for."""
    import bitsandbytes.nn.modules

    import workings.models.qlora

    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    monkeypatch.setattr(workings.models.qlora, "keep_4bit_weights_plain", lambda model: 0)
    with pytest.raises(RuntimeError, match=r"shape '\[64, 0\]' is invalid"):
        train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)


# A fresh interpreter whose bitsandbytes believes the CPU has AVX512-BF16 from its first import on:
# the capability check is replaced as bitsandbytes.functional loads, before the CPU backend reads it.
FORCE_AVX512_BF16 = """
import importlib.abc, importlib.machinery, sys

class ForceAvx512Bf16(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            module.has_avx512bf16 = lambda: True
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, ForceAvx512Bf16())
"""


def stderr_of(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORCE_AVX512_BF16 + code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_bitsandbytes_warns_at_import_on_a_cpu_with_avx512_bf16():
    assert "Failed to load CPU gemm_4bit_forward" in stderr_of("import peft")  # PEFT imports bitsandbytes


def test_a_chapter_on_a_cpu_with_avx512_bf16_writes_nothing_to_stderr():
    """The book fails on any standard error output; on such a CPU every chapter that imported PEFT
    had that warning until the package root quieted it."""
    assert stderr_of("from workings.report.book import setup_chapter\nsetup_chapter()") == ""


# --- runs never lie or lose work ----------------------------------------------------------

def test_resuming_a_finished_run_leaves_it_unchanged(tiny_profile, small_mix, tmp_path):
    profile = short_profile(tiny_profile)
    first = train(profile, small_mix, tmp_path / "run", progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    again = train(profile, small_mix, tmp_path / "run", resume=True, progress=False)
    assert again.already_finished and again.steps == 6 and again.summary == first.summary
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-3", "checkpoint-6"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_an_overwrite_that_fails_leaves_the_earlier_run_in_place(tiny_profile, small_mix, tmp_path):
    profile = short_profile(tiny_profile)
    first = train(profile, small_mix, tmp_path / "run", progress=False)
    adapter = (tmp_path / "run" / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(Crash):
        train(profile, small_mix, tmp_path / "run", overwrite=True, progress=False, callbacks=[crash_after(2)])
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == first.summary
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-3", "checkpoint-6"]


def test_an_overwrite_that_finishes_replaces_the_earlier_run(tiny_profile, small_mix, tmp_path):
    train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    second = train(short_profile(tiny_profile, max_steps=3), small_mix, tmp_path / "run", overwrite=True, progress=False)
    assert second.out_dir == tmp_path / "run" and json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 3
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-3"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


def test_a_resumed_run_summarises_the_whole_run(tiny_profile, small_mix, tmp_path):
    profile = short_profile(tiny_profile)
    unbroken = train(profile, small_mix, tmp_path / "unbroken", progress=False)
    with pytest.raises(Crash):
        train(profile, small_mix, tmp_path / "broken", progress=False, callbacks=[crash_after(4)])
    resumed = train(profile, small_mix, tmp_path / "broken", resume=True, progress=False)
    assert (resumed.summary["steps"], resumed.summary["steps_this_session"]) == (6, 3)
    assert resumed.summary["train_loss"] == pytest.approx(unbroken.summary["train_loss"], rel=1e-4)
    assert resumed.summary["tokens_seen"] == unbroken.summary["tokens_seen"]


def test_checkpoint_adapters_are_saved_in_the_profile_save_dtype(tiny_profile, small_mix, tmp_path):
    from safetensors import safe_open

    for dtype in ("float32", "bfloat16"):
        profile = tiny_profile({"data": SMALL_DATA, "training": {"eval_rows": 4}, "sft": SHORT_RUN, "lora": {"save_dtype": dtype}})
        train(profile, small_mix, tmp_path / dtype, progress=False)
        for folder in ("checkpoint-3", "checkpoint-6", "adapter"):
            with safe_open(str(tmp_path / dtype / folder / "adapter_model.safetensors"), "pt") as f:
                assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {f"torch.{dtype}"}, (dtype, folder)


def test_the_run_folder_card_describes_this_run_and_no_generated_card_is_left(tiny_profile, small_mix, tmp_path):
    result = train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    card = (tmp_path / "run" / "README.md").read_text()
    assert card.startswith("# SFT run of profile `test`") and "[None]" not in card
    assert "Steps: 6 of 6" in card and f"{result.summary['train_loss']:.4f}" in card and "| synthetic | " in card
    assert not list((tmp_path / "run").glob("checkpoint-*/README.md"))


# --- several processes ------------------------------------------------------------------------

def test_two_processes_train_as_one_with_the_same_global_batch(tiny_profile, small_mix, tmp_path, launch_two):
    """``torchrun`` starts two CPU processes (gloo); each takes 2 rows per step where the single
    process takes 4. The logged losses agree step by step (tolerance 1e-4 relative: the
    gradients are summed across processes in another order), and one adapter is written."""
    import yaml

    one = train(short_profile(tiny_profile, max_steps=4, save_steps=4, eval_steps=4, per_device_train_batch_size=4),
                small_mix, tmp_path / "one", progress=False)
    two_profile = short_profile(tiny_profile, max_steps=4, save_steps=4, eval_steps=4, per_device_train_batch_size=2)
    raw = yaml.safe_load(two_profile.path.read_text())
    raw["training"]["processes"] = 2
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = launch_two("train", "--profile", str(path), "--mix", str(small_mix), "--out", str(tmp_path / "two"), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    two = [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]
    assert [step for step, _ in two] == [step for step, _ in losses(one.log_history)] == [1, 2, 3, 4]
    assert [loss for _, loss in two] == pytest.approx([loss for _, loss in losses(one.log_history)], rel=1e-4)
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_run_folder_is_marked_as_workings_and_keeps_no_lock_when_done(tiny_profile, small_mix, tmp_path):
    from workings.files import owned

    train(short_profile(tiny_profile), small_mix, tmp_path / "run", progress=False)
    assert owned(tmp_path / "run") and not (tmp_path / "run" / ".workings.lock").read_text()


def test_a_refused_resume_leaves_no_folder_behind(tiny_profile, small_mix, tmp_path):
    with pytest.raises(FileNotFoundError):
        train(short_profile(tiny_profile), small_mix, tmp_path / "run", resume=True, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_times_the_whole_run_and_this_session_apart(tiny_profile, small_mix, tmp_path):
    profile = short_profile(tiny_profile)
    with pytest.raises(Crash):
        train(profile, small_mix, tmp_path / "run", progress=False, callbacks=[crash_after(4)])
    first = json.loads((tmp_path / "run" / "checkpoint-3" / "workings_time.json").read_text())["seconds"]
    resumed = train(profile, small_mix, tmp_path / "run", resume=True, progress=False)
    s = resumed.summary
    assert first > 0 and s["seconds"] == pytest.approx(first + s["seconds_this_session"], abs=0.11)
