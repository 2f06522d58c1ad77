"""QLoRA configuration: the bitsandbytes and PEFT configs of a profile, and preparing a base for LoRA.

What they cost before anything is loaded is predicted in :mod:`workings.models.cost`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workings.config.environment import fsdp_launch
from workings.config.schema import LoraConfig, Profile, QuantizationConfig
from workings.models.loading import renamed_checkpointing_attribute_quiet


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def bnb_config(quantization: QuantizationConfig) -> Any:
    """The ``BitsAndBytesConfig`` of a profile's quantization section."""
    from transformers import BitsAndBytesConfig

    if quantization.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quantization.compute_dtype),
        **({"bnb_4bit_quant_storage": torch_dtype(quantization.quant_storage)} if quantization.quant_storage else {}),
    )


def lora_config(lora: LoraConfig) -> Any:
    """The PEFT ``LoraConfig`` of a profile's lora section (causal LM, no bias terms)."""
    import peft

    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare_base(model: Any, quantized: bool, checkpointing: bool) -> Any:
    """Freeze the base and prepare a quantized one for k-bit training, with gradient checkpointing or not.

    ``prepare_model_for_kbit_training`` casts the layer norms and the unquantized
    weights to float32 and, with gradient checkpointing, makes the inputs require grad
    so gradients reach the adapters through checkpointed layers. Not under FSDP: it shards
    a layer's weights only when they share one dtype, the 4-bit storage's (TRL skips the
    cast for sharded QLoRA too).
    """
    import peft

    if quantized and not fsdp_launch():
        return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def prepare_for_training(model: Any, profile: Profile) -> Any:
    """:func:`prepare_base` with the ``sft`` section's checkpointing, wrapped with a new LoRA adapter."""
    import peft

    checkpointing = bool(profile.sft_args().gradient_checkpointing)
    with renamed_checkpointing_attribute_quiet():
        model = prepare_base(model, profile.quantization is not None, checkpointing)
        return peft.get_peft_model(model, lora_config(profile.lora))


def continue_adapter(model: Any, profile: Profile, adapter: str | Path, checkpointing: bool) -> Any:
    """:func:`prepare_base` and a saved adapter put on it, trainable, with its weights in float32.

    float32 because a trained adapter's weights are large next to the steps a later stage takes:
    at a learning rate of 1e-4 most steps are below half a bfloat16 unit of the weight they change
    and would round away (:func:`bfloat16_frozen_share` measures the share).
    """
    import peft

    with renamed_checkpointing_attribute_quiet():
        model = prepare_base(model, profile.quantization is not None, checkpointing)
        model = peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    adapter_weights_to_float32(model)
    return model


def adapter_weights_to_float32(model: Any) -> int:
    """Cast every trainable weight to float32 (TRL casts them to bfloat16 over a quantized base); how many."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.to(torch.float32)
    return len(trainable)


def bfloat16_frozen_share(weights: Any, learning_rate: float) -> float:
    """The share of ``weights`` that a step of ``learning_rate`` cannot change in bfloat16: the step is
    below half a unit in the last place of the weight, so rounding gives the weight back unchanged.
    (An Adam step is about the learning rate in size.)"""
    import torch

    w = weights.detach().float().abs().clamp_min(torch.finfo(torch.float32).tiny)
    unit = torch.exp2(torch.floor(torch.log2(w)) - 7)  # bfloat16 keeps 8 significant bits
    return float((learning_rate < unit / 2).float().mean())


def keep_4bit_weights_plain(model: Any) -> int:
    """Turn off bitsandbytes' packed CPU layout in every 4-bit linear layer; returns how many there are.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit``'s weights in place the
    first time it runs in eval mode without grad (the trainer's evaluation step). The packed path
    computes in bfloat16 whatever the profile's compute dtype, fails on layers narrower than one
    64-value block, and stays packed when training resumes, where its matmul carries no gradient
    to the layers below. Keeping the plain layout gives every machine the same numbers.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def packed_4bit_layers(model: Any) -> list[str]:
    """Names of the 4-bit layers whose weights are in bitsandbytes' packed CPU layout (none, normally)."""
    return [name for name, m in model.named_modules()
            if getattr(getattr(getattr(m, "weight", None), "quant_state", None), "packing_format_for_cpu", False)]
