import re
import textwrap

import pytest

from workings.config.loading import load_profile, run_dir
from workings.config.schema import ProfileError

GOOD = """
name: t
model: {id: tiny}
data:
  sources:
    - {name: s, converter: synthetic, synthetic: {n: 10, seed: 1}}
"""


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_demo_and_a100_profiles_load():
    demo, a100 = load_profile("demo"), load_profile("a100")
    assert demo.model.id == "tiny" and a100.model.id == "google/gemma-2-2b-it"
    assert a100.data.max_length == 1024
    assert [s.name for s in a100.data.sources] == [
        "gsm8k", "openthoughts", "bespoke_stratos", "medical_o1_en", "medical_o1_en_mix", "metamath"]


def test_a100_sources_use_published_hub_ids_and_configs():
    specs = {s.name: (s.hub_id, s.config) for s in load_profile("a100").data.sources}
    assert specs == {
        "gsm8k": ("openai/gsm8k", "main"),
        "openthoughts": ("open-thoughts/OpenThoughts-114k", "metadata"),
        "bespoke_stratos": ("bespokelabs/Bespoke-Stratos-17k", None),
        "medical_o1_en": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en"),
        "medical_o1_en_mix": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en_mix"),
        "metamath": ("meta-math/MetaMathQA", None),
    }


def test_relative_paths_resolve_against_the_profile_file():
    demo = load_profile("demo")
    gsm8k = next(s for s in demo.data.sources if s.name == "gsm8k")
    assert gsm8k.path.endswith("workings/data/fixtures/gsm8k_train.jsonl")


def test_minimal_profile_gets_defaults(tmp_path):
    p = load_profile(write(tmp_path, GOOD))
    assert (p.data.max_length, p.data.max_per_question, p.data.decontamination.ngram) == (1024, 1, 13)


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("name: t", "name: t\nbatch: 4"), "batch: unknown key"),
        (GOOD.replace("seed: 1}", "seed: 1, n_rows: 3}"), r"data\.sources\[0\]\.synthetic\.n_rows: unknown key"),
        (GOOD.replace("model: {id: tiny}", "model: {}"), r"model\.id: missing key"),
        (GOOD.replace("n: 10", "n: 0"), r"data\.sources\[0\]\.synthetic\.n: must be positive"),
        (GOOD.replace("n: 10", "n: ten"), r"data\.sources\[0\]\.synthetic\.n: expected int, got str"),
        (GOOD.replace("seed: 1}}", "seed: 1}, weight: 0}"), r"data\.sources\[0\]\.weight: must be positive"),
        (GOOD.replace("seed: 1}}", "seed: 1}, cap: 0}"), r"data\.sources\[0\]\.cap: must be positive"),
        (GOOD.replace("converter: synthetic", "converter: gsm9k"), r"data\.sources\[0\]\.converter: unknown converter 'gsm9k'"),
        (GOOD.replace("synthetic: {n: 10, seed: 1}", "path: x.jsonl"), r"data\.sources\[0\]\.synthetic: goes with converter: synthetic"),
        (GOOD.replace("seed: 1}}", "seed: 1}, path: x.jsonl}"), r"data\.sources\[0\]: needs exactly one of hub_id, path, synthetic"),
        (GOOD + "  max_length: 0\n", r"data\.max_length: must be positive"),
        (GOOD + "  decontamination: {threshold: 1.5}\n", r"data\.decontamination\.threshold: must be in \(0, 1\]"),
    ],
)
def test_bad_profiles_fail_naming_the_key(tmp_path, text, message):
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(write(tmp_path, text))
    assert str(tmp_path / "p.yaml") in str(err.value)


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match=r"no such profile \(known: .*a100.*demo"):
        load_profile("a1000")


def test_invalid_yaml_is_reported(tmp_path):
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(write(tmp_path, "name: [unclosed"))


def test_run_dir_is_under_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    monkeypatch.delenv("WORKINGS_RUNS", raising=False)
    assert run_dir(load_profile("demo")) == tmp_path / "runs" / "demo"
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "elsewhere"))
    assert run_dir(load_profile("demo")) == tmp_path / "elsewhere" / "demo"


# --- quantization, LoRA and training sections -------------------------------------------

def with_section(tmp_path, section):
    return write(tmp_path, GOOD + textwrap.dedent(section))


@pytest.mark.parametrize("section, key", [
    ("lora: {alpha: 0}", "lora.alpha"),
    ("lora: {r: 0}", "lora.r"),
    ("lora: {dropout: 1.0}", "lora.dropout"),
    ("sft: {per_device_train_batch_size: 0}", "sft.per_device_train_batch_size"),
    ("sft: {gradient_accumulation_steps: 0}", "sft.gradient_accumulation_steps"),
    ("sft: {learning_rate: -1.0e-4}", "sft.learning_rate"),
    ("sft: {lr_scheduler_type: cosinus}", "sft"),
    ("sft: {optim: adam_paged}", "sft"),
    ("training: {device: tpu}", "training.device"),
    ("quantization: {bits: 3}", "quantization.bits"),
    ("quantization: {quant_type: int4}", "quantization.quant_type"),
    ("quantization: {quant_storage: float16}", "quantization.quant_storage"),  # the model is bfloat16
    ("quantization: {bits: 8, quant_storage: float32}", "quantization.quant_storage"),
    ("training: {device: cpu, fsdp: true}", "training.fsdp"),
    ("training: {device: cuda, fsdp: true}\nquantization: {bits: 4}", "quantization.quant_storage"),
    ("model: {id: tiny, dtype: float8}", "model.dtype"),
    ("evaluation: {engine: tgi}", "evaluation.engine"),
])
def test_impossible_training_values_name_their_key(tmp_path, section, key):
    with pytest.raises(ProfileError, match=re.escape(f"p.yaml: {key}: ")):
        load_profile(with_section(tmp_path, section))


def test_unknown_training_key_is_named(tmp_path):
    with pytest.raises(ProfileError, match=r"training\.batch_size: unknown key"):
        load_profile(with_section(tmp_path, "training: {batch_size: 4}"))


def test_a_trainer_option_under_training_says_where_it_moved(tmp_path):
    with pytest.raises(ProfileError, match=r"training\.optimizer: unknown key .*moved to sft: by TRL's names \(sft\.optim\)"):
        load_profile(with_section(tmp_path, "training: {optimizer: adamw_torch}"))


def test_sft_max_length_below_the_mix_rows_is_refused(tmp_path):
    text = GOOD.replace("data:", "data:\n  max_length: 1024") + "sft: {max_length: 512}\n"
    with pytest.raises(ProfileError, match=r"sft\.max_length: 512 is below data\.max_length \(1024\)"):
        load_profile(write(tmp_path, text))


def test_paged_optimizer_on_cpu_is_refused(tmp_path):
    with pytest.raises(ProfileError, match=r"sft\.optim: paged_adamw_32bit pages optimizer state through CUDA"):
        load_profile(with_section(tmp_path, "training: {device: cpu}\nsft: {optim: paged_adamw_32bit}"))


@pytest.mark.parametrize("option", ["packing", "padding_free"])
def test_packing_with_an_attention_that_ignores_example_boundaries_is_refused(tmp_path, option):
    text = GOOD.replace("model: {id: tiny}", "model: {id: tiny, attn_implementation: sdpa}")
    with pytest.raises(ProfileError, match=rf"sft\.{option}: packed examples attend to each other with 'sdpa'"):
        load_profile(write(tmp_path, text + f"sft: {{{option}: true}}\n"))


@pytest.mark.parametrize("attention", ["eager", "flex_attention", "flash_attention_2"])
def test_packing_with_an_attention_that_keeps_examples_apart_is_accepted(tmp_path, attention):
    text = GOOD.replace("model: {id: tiny}", f"model: {{id: tiny, attn_implementation: {attention}}}")
    assert load_profile(write(tmp_path, text + "sft: {packing: true}\n")).sft_args().packing


def test_any_sft_config_option_is_reachable_by_its_trl_name(tmp_path):
    profile = load_profile(with_section(tmp_path, "sft: {use_liger_kernel: true, loss_type: dft, neftune_noise_alpha: 5.0}"))
    args = profile.sft_args()
    assert (args.use_liger_kernel, args.loss_type, args.neftune_noise_alpha) == (True, "dft", 5.0)


def test_an_unknown_sft_option_is_named_with_the_closest_trl_names(tmp_path):
    with pytest.raises(ProfileError, match=r"p\.yaml: sft\.learning_rat: not an option of trl\.SFTConfig; did you mean learning_rate"):
        load_profile(with_section(tmp_path, "sft: {learning_rat: 1.0e-4}"))


def test_an_sft_value_of_the_wrong_type_is_named(tmp_path):
    with pytest.raises(ProfileError, match=r"sft\.learning_rate: expected float, got str '2e-4' \(YAML reads 2e-4 as text"):
        load_profile(with_section(tmp_path, "sft: {learning_rate: 2e-4}"))


def test_trl_own_checks_run_at_load_and_name_the_section(tmp_path):
    with pytest.raises(ProfileError, match=r"p\.yaml: sft: .*not a valid SchedulerType"):
        load_profile(with_section(tmp_path, "sft: {lr_scheduler_type: sometimes}"))


def test_options_the_run_sets_itself_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ProfileError, match=r"sft\.output_dir: set by the run, not the profile \(the run folder \(--out\)\)"):
        load_profile(with_section(tmp_path, "sft: {output_dir: /tmp/elsewhere}"))


def test_a_gpu_profile_validates_on_a_machine_without_one():
    assert load_profile("a100").sft_args().bf16 is True


def test_a100_is_the_seed_run_exactly():
    p = load_profile("a100")
    assert (p.model.id, p.model.dtype, p.model.attn_implementation) == ("google/gemma-2-2b-it", "bfloat16", "eager")
    q = p.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "bfloat16")
    assert (p.lora.r, p.lora.alpha) == (32, 64)
    assert p.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert p.training.device == "cuda"
    t = p.sft_args()
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (4, 8)
    assert (t.learning_rate, t.lr_scheduler_type.value, t.num_train_epochs, t.max_steps) == (2e-4, "cosine", 1.0, -1)
    assert (t.max_length, t.optim.value, t.packing, t.gradient_checkpointing, t.bf16) == (
        1024, "paged_adamw_32bit", False, True, True)
    assert t.save_steps > 0


def test_a100_bf16_differs_from_a100_only_in_quantization():
    a100, bf16 = load_profile("a100"), load_profile("a100-bf16")
    assert bf16.quantization is None
    assert (bf16.model, bf16.lora, bf16.training, bf16.sft, bf16.data) == (a100.model, a100.lora, a100.training, a100.sft, a100.data)


def test_gemma3_profile_reuses_the_a100_run_with_its_own_model():
    p, a100 = load_profile("gemma-3-1b"), load_profile("a100")
    assert p.model.id == "google/gemma-3-1b-it"
    assert (p.lora, p.training, p.sft, p.quantization) == (a100.lora, a100.training, a100.sft, a100.quantization)


def test_the_kaggle_profiles_step_with_the_seed_runs_rows_and_the_a100_grpo_replies():
    def per_step(profile, args):
        return args.per_device_train_batch_size * args.gradient_accumulation_steps * profile.training.processes

    a100 = load_profile("a100")
    for name in ("kaggle-p100", "kaggle-t4x2"):
        p = load_profile(name)
        assert per_step(p, p.sft_args()) == per_step(a100, a100.sft_args()) == 32, name
        assert per_step(p, p.grpo_args()) == per_step(a100, a100.grpo_args()) == 32, name


def test_a100_fsdp_is_the_a100_run_sharded_over_two_gpus_with_the_same_rows_per_step():
    from accelerate.commands.config.config_args import ClusterConfig

    from workings.config.loading import PROFILE_DIR

    a100, fsdp = load_profile("a100"), load_profile("a100-fsdp")
    assert (fsdp.training.fsdp, fsdp.training.processes, fsdp.quantization.quant_storage) == (True, 2, fsdp.model.dtype)
    assert (fsdp.model, fsdp.lora, fsdp.data) == (a100.model, a100.lora, a100.data)
    one, two = a100.sft_args(), fsdp.sft_args()
    assert (two.per_device_train_batch_size * two.gradient_accumulation_steps * 2
            == one.per_device_train_batch_size * one.gradient_accumulation_steps == 32)
    launch = ClusterConfig.from_yaml_file(str(PROFILE_DIR.parent / "accelerate" / "fsdp-qlora.yaml"))
    assert (launch.distributed_type.value, launch.num_processes) == ("FSDP", fsdp.training.processes)
    assert launch.fsdp_config["fsdp_use_orig_params"] is False  # PEFT's guide: the memory saving needs it
    assert launch.fsdp_config["fsdp_cpu_ram_efficient_loading"] is True


def test_demo_uses_the_same_4bit_path_on_cpu_and_demo_bf16_does_not():
    demo, twin = load_profile("demo"), load_profile("demo-bf16")
    assert demo.quantization.bits == 4 and demo.quantization.quant_type == "nf4" and demo.training.device == "cpu"
    assert twin.quantization is None and twin.model.dtype == "bfloat16"
    assert twin.training == demo.training and twin.sft == demo.sft and twin.lora == demo.lora


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    base = write(tmp_path, GOOD + "sft: {optim: adamw_torch, learning_rate: 1.0e-3}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: p.yaml\nname: child\nsft: {learning_rate: 5.0e-4}\nlora: {target_modules: [q_proj]}\n")
    p = load_profile(child)
    assert (p.name, p.sft) == ("child", {"optim": "adamw_torch", "learning_rate": 5e-4})
    assert p.lora.target_modules == ["q_proj"] and base.is_file()


def test_extends_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ProfileError, match="extends: profiles extend each other in a cycle"):
        load_profile(tmp_path / "a.yaml")


def test_eval_set_gold_format_is_checked(tmp_path):
    text = GOOD + "  eval_sets:\n    - {name: e, path: e.jsonl, gold: hashes}\n"
    with pytest.raises(ProfileError, match=re.escape("data.eval_sets[0].gold: must be one of plain, gsm8k, boxed")):
        load_profile(write(tmp_path, text))


def test_evaluation_adapter_resolves_against_the_profile_file(tmp_path):
    profile = load_profile(with_section(tmp_path, "evaluation: {adapter: runs/checkpoint-17835}"))
    assert profile.evaluation.adapter == str(tmp_path / "runs" / "checkpoint-17835")


def test_extending_an_unknown_profile_names_the_file_that_asks_for_it(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: demo-cpu\nname: child\n")
    with pytest.raises(ProfileError, match=rf"{re.escape(str(child))}: extends: demo-cpu: no such profile \(known: a100"):
        load_profile(child)


@pytest.mark.parametrize("profile, variant", [("a100-fast", "a100-fast (+ Liger, fused AdamW)"),
                                              ("h100-fast", "h100-fast (no checkpointing)")])
def test_the_fast_profiles_are_the_variants_the_speed_benchmark_measures(profile, variant):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    change = module.VARIANTS[variant]
    fast, seed = load_profile(profile), load_profile("a100")
    assert fast.quantization is None and change["quantization"] is None
    assert fast.model.attn_implementation == change["model"]["attn_implementation"]
    assert fast.sft == {**seed.sft, **change["sft"]}
