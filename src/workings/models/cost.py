"""What a profile costs, predicted from the model's ``config.json`` alone, before anything is loaded.

Which linear layers LoRA wraps and their shapes give the trainable parameter count exactly, the
saved adapter's size follows from it, and a memory budget per profile follows from the
parameter counts, the batch and the sequence length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.schema import GEMMA_LINEAR_MODULES, LoraConfig, Profile, QuantizationConfig
from workings.config.trainer_options import optimizer_name

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HUB_CONFIG_DIR = Path(__file__).parent / "hub_configs"
NF4_BLOCK = 64  # weights per quantization block (bitsandbytes' default for 4-bit)
DOUBLE_QUANT_BLOCK = 256  # absmax constants per second-level block when double quantization is on


def load_model_config(model_id: str, revision: str | None = None) -> Any:
    """A model's config: from a local folder, the copy shipped for the profiles' Hub models, or the Hub.

    The shipped copies (``hub_configs/``) are the published ``config.json`` files of the
    models the profiles name, so predictions need no network and no licence acceptance.
    """
    from transformers import AutoConfig

    shipped = HUB_CONFIG_DIR / f"{model_id.replace('/', '--')}.json"
    if not Path(model_id).is_dir() and shipped.is_file():
        return AutoConfig.for_model(**json.loads(shipped.read_text()))
    return AutoConfig.from_pretrained(model_id, revision=revision)


def text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def lora_layer_shapes(config: Any, target_modules: list[str]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each targeted linear layer of one Gemma decoder layer."""
    c = text_config(config)
    heads_dim = c.num_attention_heads * c.head_dim
    kv_dim = c.num_key_value_heads * c.head_dim
    shapes = dict(zip(GEMMA_LINEAR_MODULES, [  # q, k, v, o, then the MLP's gate, up and down
        (c.hidden_size, heads_dim), (c.hidden_size, kv_dim), (c.hidden_size, kv_dim), (heads_dim, c.hidden_size),
        (c.hidden_size, c.intermediate_size), (c.hidden_size, c.intermediate_size), (c.intermediate_size, c.hidden_size),
    ]))
    unknown = sorted(set(target_modules) - set(shapes))
    if unknown:
        raise ValueError(f"lora.target_modules: {unknown} are not linear layers of a Gemma decoder layer ({', '.join(shapes)})")
    return {name: shapes[name] for name in target_modules}


def predicted_lora_parameters(config: Any, lora: LoraConfig) -> int:
    """Trainable parameters: r x (in + out) for A and B of every wrapped layer, in every decoder layer."""
    per_layer = sum(lora.r * (n_in + n_out) for n_in, n_out in lora_layer_shapes(config, lora.target_modules).values())
    return per_layer * text_config(config).num_hidden_layers


def _adapter_tensors(config: Any, lora: LoraConfig) -> dict[str, tuple[int, int]]:
    attention = set(GEMMA_LINEAR_MODULES[:4])  # q, k, v, o sit in self_attn; the rest in mlp
    tensors = {}
    for layer in range(text_config(config).num_hidden_layers):
        for name, (n_in, n_out) in lora_layer_shapes(config, lora.target_modules).items():
            block = "self_attn" if name in attention else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = (lora.r, n_in)
            tensors[f"{prefix}.lora_B.weight"] = (n_out, lora.r)
    return tensors


def predicted_adapter_bytes(config: Any, lora: LoraConfig) -> int:
    """Size of ``adapter_model.safetensors``: the weights in ``lora.save_dtype`` plus the JSON header.

    The header lists every tensor's name, dtype, shape and byte offsets (8 bytes of length first),
    so its size is predicted by writing it out the way safetensors does.
    """
    width = DTYPE_BYTES[lora.save_dtype]
    dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[lora.save_dtype]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (rows, cols) in sorted(_adapter_tensors(config, lora).items()):
        size = rows * cols * width
        header[name] = {"dtype": dtype, "shape": [rows, cols], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    return 8 + len(text) + offset


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of a loaded model; 4-bit weights count once per original weight."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit weights per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def adapter_file_bytes(adapter_dir: str | Path) -> int:
    return (Path(adapter_dir) / "adapter_model.safetensors").stat().st_size


@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by component, for one device.

    Assumptions: linear layers of the decoder quantized at ``bits`` (4-bit NF4 adds one
    float32 absmax per 64 weights, or 8 bits per 64 plus float32 per 256 blocks with
    double quantization); embeddings and norms in ``model.dtype``; LoRA weights,
    their gradients and the two Adam moments in float32 (16 bytes per trainable
    parameter; 10 with an 8-bit optimizer); activations as stored by the decoder in
    ``compute dtype`` with gradient checkpointing keeping one hidden state per layer and
    recomputing one layer at a time; eager attention materialising the float32 score
    matrix of one layer (flex and flash attention do not); the logits as the loss's backward
    holds them (see :func:`estimate_memory`; none with Liger's fused linear cross-entropy).
    Under QLoRA without FSDP the embeddings and norms are float32, as k-bit preparation casts
    them. On an H100 with random gemma-2-2b weights the ``a100`` and ``a100-bf16`` estimates came
    within 5% of the measured peaks (18.7 and 20.4 GiB against 19.5 and 19.6). CUDA context,
    allocator fragmentation and kernels' workspaces are not counted. Per process: DDP gives each GPU the whole model and its own micro-batch; FSDP
    (``training.fsdp``) gives it a 1/processes share of the weights, gradients and optimizer
    state (the one layer it gathers at a time is not counted).
    """

    profile: str
    frozen_weights: int
    lora_weights: int
    gradients: int
    optimizer_state: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return (self.frozen_weights + self.lora_weights + self.gradients + self.optimizer_state
                + self.activations + self.logits)

    def as_gib(self) -> dict[str, float]:
        parts = {k: v for k, v in self.__dict__.items() if k != "profile"}
        return {**{k: v / 2**30 for k, v in parts.items()}, "total": self.total / 2**30}


def decoder_linear_parameters(config: Any) -> int:
    """Parameters of every attention and MLP projection of the decoder (what bitsandbytes quantizes)."""
    c = text_config(config)
    shapes = lora_layer_shapes(config, GEMMA_LINEAR_MODULES)
    return sum(n_in * n_out for n_in, n_out in shapes.values()) * c.num_hidden_layers


def total_parameters(config: Any) -> int:
    """Every parameter of a Gemma causal LM with tied embeddings (embedding, projections, norms)."""
    c = text_config(config)
    norms_per_layer = 4 * c.hidden_size + (2 * c.head_dim if getattr(c, "model_type", "") == "gemma3_text" else 0)
    return c.vocab_size * c.hidden_size + decoder_linear_parameters(config) + c.num_hidden_layers * norms_per_layer + c.hidden_size


def quantized_bytes_per_weight(quantization: QuantizationConfig | None, dtype: str) -> float:
    if quantization is None:
        return DTYPE_BYTES[dtype]
    if quantization.bits == 8:
        return 1 + 4 / 4096  # int8 weights with row-wise float32 scales (approx.)
    constants = (1 / NF4_BLOCK) * (1 + 4 / DOUBLE_QUANT_BLOCK) if quantization.double_quant else 4 / NF4_BLOCK
    return 0.5 + constants


def estimate_memory(profile: Profile, config: Any) -> MemoryEstimate:
    """Peak training memory of a profile on the model ``config`` (see :class:`MemoryEstimate`)."""
    c = text_config(config)
    t = profile.sft_args()
    linear = decoder_linear_parameters(config)
    other = total_parameters(config) - linear
    # QLoRA's k-bit preparation (not under FSDP: workings.models.qlora.prepare_base) casts every
    # unquantized weight, the 256k-row embedding among them, to float32.
    kbit_prepared = profile.quantization is not None and not profile.training.fsdp
    other_bytes = 4 if kbit_prepared else DTYPE_BYTES[profile.model.dtype]
    frozen = linear * quantized_bytes_per_weight(profile.quantization, profile.model.dtype) + other * other_bytes
    lora = predicted_lora_parameters(config, profile.lora)
    tokens = t.per_device_train_batch_size * t.max_length
    compute = DTYPE_BYTES[profile.quantization.compute_dtype if profile.quantization else profile.model.dtype]
    if t.bf16 or t.fp16:
        compute = 2
    # One decoder layer's saved tensors for backward: inputs of norms and projections, attention
    # output, the MLP's gate, up, activation and product (4 x intermediate), plus the float32 scores.
    per_layer = tokens * (10 * c.hidden_size + 4 * c.intermediate_size
                          + 2 * c.num_attention_heads * c.head_dim) * compute
    # Eager attention materialises float32 scores and probabilities; flex and flash attention work in tiles.
    eager = profile.model.attn_implementation == "eager"
    scores = t.per_device_train_batch_size * c.num_attention_heads * t.max_length**2 * 4 * 2 if eager else 0
    layers = c.num_hidden_layers
    if t.gradient_checkpointing:
        activations = layers * tokens * c.hidden_size * compute + per_layer + scores
    else:
        activations = layers * (per_layer + scores)
    # While the loss's backward runs: the logits the model returns (compute dtype), the float32
    # log-softmax the cross-entropy keeps and its float32 gradient, that gradient cast back, and with
    # final softcapping (Gemma 2) the tanh output kept for its backward. Liger's fused linear
    # cross-entropy computes the loss in chunks and never holds the logits.
    softcapped = getattr(c, "final_logit_softcapping", None) is not None
    logits = 0 if t.use_liger_kernel else tokens * c.vocab_size * (4 + 4 + (3 if softcapped else 2) * compute)
    optimizer_bytes = 2 if "8bit" in optimizer_name(t) else 8  # two Adam moments per LoRA weight
    # FSDP's full sharding leaves each GPU its share of the weights, gradients and optimizer state.
    shards = profile.training.processes if profile.training.fsdp else 1
    return MemoryEstimate(
        profile=profile.name,
        frozen_weights=int(frozen / shards),
        lora_weights=4 * lora // shards,
        gradients=4 * lora // shards,
        optimizer_state=optimizer_bytes * lora // shards,
        activations=int(activations),
        logits=logits,
    )


def qlora_prediction(profile: Profile, config: Any) -> dict[str, Any]:
    """What a profile's QLoRA setup is and is predicted to cost on the model ``config``: the base's
    precision, the LoRA shape, parameter counts and the saved adapter's size in bytes."""
    q = profile.quantization
    return {
        "profile": profile.name, "model": profile.model.id,
        "base": f"{q.bits}-bit {q.quant_type}{' +dq' if q.double_quant else ''}" if q else profile.model.dtype,
        "r": profile.lora.r, "alpha": profile.lora.alpha, "modules": len(profile.lora.target_modules),
        "base_parameters": total_parameters(config), "lora_parameters": predicted_lora_parameters(config, profile.lora),
        "adapter_bytes": predicted_adapter_bytes(config, profile.lora), "save_dtype": profile.lora.save_dtype,
    }
