import json

import pytest

from workings.config.loading import load_profile
from workings.config.schema import LoraConfig
from workings.models.cost import adapter_file_bytes, count_parameters, estimate_memory, load_model_config, lora_layer_shapes, predicted_adapter_bytes, predicted_lora_parameters, total_parameters
from workings.models.qlora import bnb_config, lora_config, prepare_for_training

SEED_LORA = LoraConfig(r=32, alpha=64, save_dtype="bfloat16")


def test_bnb_config_of_a100_is_nf4_double_quant_with_bf16_compute():
    import torch

    config = bnb_config(load_profile("a100").quantization)
    assert config.load_in_4bit and not config.load_in_8bit
    assert (config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant) == ("nf4", True)
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_lora_config_of_a100_wraps_the_seven_projections():
    config = lora_config(load_profile("a100").lora)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (32, 64, 0.05, "none")
    assert sorted(config.target_modules) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_gemma2_2b_seed_adapter_has_41_5_million_parameters():
    assert predicted_lora_parameters(load_model_config("google/gemma-2-2b-it"), SEED_LORA) == 41_533_440


def test_gemma2_2b_seed_adapter_file_is_83_mb_in_bfloat16():
    size = predicted_adapter_bytes(load_model_config("google/gemma-2-2b-it"), SEED_LORA)
    assert 2 * 41_533_440 < size < 2 * 41_533_440 + 200_000  # the weights plus a JSON header
    assert round(size / 1e6) == 83


@pytest.mark.parametrize("model_id", ["google/gemma-2-2b-it", "google/gemma-3-1b-it"])
def test_total_parameters_match_the_architecture_built_on_the_meta_device(model_id):
    import torch
    from transformers import AutoModelForCausalLM

    config = load_model_config(model_id)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert total_parameters(config) == sum(p.numel() for p in model.parameters())


def test_unknown_target_module_is_named():
    with pytest.raises(ValueError, match=r"lora\.target_modules: \['qkv_proj'\] are not linear layers"):
        lora_layer_shapes(load_model_config("google/gemma-2-2b-it"), ["q_proj", "qkv_proj"])


@pytest.mark.parametrize("quantized", [True, False])
def test_prediction_equals_the_trainable_parameters_of_the_wrapped_model(tiny_profile, quantized):
    from workings.models.loading import load_base_model

    profile = tiny_profile({} if quantized else {"quantization": None})
    model = prepare_for_training(load_base_model(profile), profile)
    trainable, total = count_parameters(model)
    config = load_model_config(profile.model.id)
    assert trainable == predicted_lora_parameters(config, profile.lora)
    assert total == total_parameters(config) + trainable
    if quantized:
        assert any(p.__class__.__name__ == "Params4bit" for p in model.parameters())


@pytest.mark.parametrize(("fsdp", "norm_dtype"), [(False, "float32"), (True, "bfloat16")])
def test_under_fsdp_the_4bit_bases_other_weights_keep_the_storage_dtype(tiny_profile, monkeypatch, fsdp, norm_dtype):
    """Preparing for k-bit training casts norms and embeddings to float32; FSDP shards a layer only
    when its weights share one dtype, so under an FSDP launch they stay in the 4-bit storage's."""
    import torch

    from workings.models.loading import load_base_model

    profile = tiny_profile({"model": {"dtype": "bfloat16"},
                            "quantization": {"compute_dtype": "bfloat16", "quant_storage": "bfloat16"}})
    base = load_base_model(profile)
    if fsdp:
        monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = prepare_for_training(base, profile)
    norms = {p.dtype for n, p in model.named_parameters() if "norm" in n}
    assert norms == {getattr(torch, norm_dtype)}
    assert {p.dtype for p in model.parameters() if p.__class__.__name__ == "Params4bit"} == {torch.bfloat16}


def test_predicted_adapter_bytes_equal_the_saved_file(tiny_profile, tmp_path):
    from workings.models.loading import load_base_model

    profile = tiny_profile()
    model = prepare_for_training(load_base_model(profile), profile)
    model.save_pretrained(tmp_path / "adapter")
    config = load_model_config(profile.model.id)
    assert adapter_file_bytes(tmp_path / "adapter") == predicted_adapter_bytes(config, profile.lora)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"]) == (profile.lora.r, profile.lora.alpha)


def test_memory_estimate_puts_4bit_projections_at_about_a_quarter_of_bf16_and_the_prepared_embedding_in_float32():
    from workings.models.cost import decoder_linear_parameters

    config = load_model_config("google/gemma-2-2b-it")
    four, bf16 = estimate_memory(load_profile("a100"), config), estimate_memory(load_profile("a100-bf16"), config)
    linear = decoder_linear_parameters(config)
    other = total_parameters(config) - linear  # embedding and norms: float32 after k-bit preparation
    assert bf16.frozen_weights == 2 * total_parameters(config)
    assert 0.25 < (four.frozen_weights - 4 * other) / (2 * linear) < 0.27  # NF4 and its double-quantized scales
    assert four.lora_weights == bf16.lora_weights == 4 * 41_533_440
    assert four.optimizer_state == 2 * four.lora_weights
    assert four.total < bf16.total < 40 * 2**30


def test_memory_estimate_grows_with_batch_and_length_only_in_activations():
    config = load_model_config("google/gemma-2-2b-it")
    small = estimate_memory(load_profile("a100"), config)
    big_profile = load_profile("a100")
    big_profile.sft["per_device_train_batch_size"] = 8
    big = estimate_memory(big_profile, config)
    assert big.frozen_weights == small.frozen_weights and big.optimizer_state == small.optimizer_state
    assert big.activations > small.activations and big.logits == 2 * small.logits
