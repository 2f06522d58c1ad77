"""The hackathon's rule, as a check: an export loads and runs in Tunix's Gemma code (JAX).

Tunix needs JAX and Flax, and the project's environment holds torch; the two live apart. This
module is both sides: :func:`main` runs in the Tunix environment (``.venv-tunix``, made by
``make``; nothing here imports torch at module level) and loads a merged export with Tunix's
Gemma 2 or Gemma 3 ``params_safetensors``, the model config read from the export's
``config.json``; :func:`tunix_parity` runs in the project's environment, calls it in a subprocess
and compares its logits and greedy tokens with the Hugging Face model's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- the Tunix side (JAX) ------------------------------------------------------------------


def tunix_config(config: dict[str, Any]) -> Any:
    """Tunix's ``ModelConfig`` of a Hugging Face Gemma 2 or Gemma 3 (text) ``config.json``."""
    if config.get("model_type") == "gemma3_text":
        return tunix_gemma3_config(config)
    from tunix.models.gemma import model as gemma

    kinds = {"sliding_attention": gemma.AttentionType.LOCAL_SLIDING, "full_attention": gemma.AttentionType.GLOBAL}
    if config.get("model_type") != "gemma2":
        raise ValueError(f"Tunix's Gemma code loads model_type gemma2 or gemma3_text, not {config.get('model_type')!r}")
    if config["query_pre_attn_scalar"] != config["head_dim"]:
        raise ValueError("Tunix's Gemma 2 scales queries by head_dim; this config scales by query_pre_attn_scalar")
    return gemma.ModelConfig(
        num_layers=config["num_hidden_layers"], num_embed=config["vocab_size"], embed_dim=config["hidden_size"],
        hidden_dim=config["intermediate_size"], num_heads=config["num_attention_heads"], head_dim=config["head_dim"],
        num_kv_heads=config["num_key_value_heads"], final_logit_softcap=config["final_logit_softcapping"],
        use_post_attn_norm=True, use_post_ffw_norm=True,
        attention_types=tuple(kinds[kind] for kind in config["layer_types"]),
        attn_logits_soft_cap=config["attn_logit_softcapping"], sliding_window_size=config["sliding_window"])


def tunix_gemma3_config(config: dict[str, Any]) -> Any:
    """Tunix's Gemma 3 ``ModelConfig`` of a Hugging Face ``gemma3_text`` config, refused where Tunix's
    code would compute something else: it fixes the layers' attention pattern (five sliding, one
    global), the RMSNorm epsilon (1e-6) and unscaled rotary embeddings, and scales queries by
    head_dim."""
    import itertools

    from tunix.models.gemma3 import model as gemma3

    kinds = {gemma3.AttentionType.LOCAL_SLIDING: "sliding_attention", gemma3.AttentionType.GLOBAL: "full_attention"}
    pattern = [kinds[kind] for _, kind in zip(range(config["num_hidden_layers"]), itertools.cycle(gemma3.GEMMA3_ATTENTION_PATTERN))]
    rope = config.get("rope_parameters") or {}
    problems = {
        "layer_types": config.get("layer_types") not in (None, pattern),
        "query_pre_attn_scalar": config["query_pre_attn_scalar"] != config["head_dim"],
        "rms_norm_eps": abs(config.get("rms_norm_eps", 1e-6) - 1e-6) > 1e-9,
        "rope_parameters": any(r.get("rope_type", "default") != "default" for r in rope.values()),
        "attn_logit_softcapping": config.get("attn_logit_softcapping") is not None,
        "final_logit_softcapping": config.get("final_logit_softcapping") is not None,
    }
    if any(problems.values()):
        raise ValueError(f"Tunix's Gemma 3 code computes this config.json differently: {', '.join(k for k, v in problems.items() if v)}")
    return gemma3.ModelConfig(
        num_layers=config["num_hidden_layers"], num_embed=config["vocab_size"], embed_dim=config["hidden_size"],
        hidden_dim=config["intermediate_size"], num_heads=config["num_attention_heads"], head_dim=config["head_dim"],
        num_kv_heads=config["num_key_value_heads"], sliding_window_size=config["sliding_window"],
        local_base_frequency=int(rope.get("sliding_attention", {}).get("rope_theta", 10_000)),
        global_base_frequency=int(rope.get("full_attention", {}).get("rope_theta", 1_000_000)))


def tunix_logits(model: Any, tokens: Any, valid: int | None = None) -> Any:
    """Logits of every position of ``tokens`` [1, length], causal, without a cache; only the first
    ``valid`` tokens are attended to (the rest is padding that keeps one shape, so JAX compiles once)."""
    import jax.numpy as jnp

    length = tokens.shape[1]
    valid = length if valid is None else valid
    positions = jnp.arange(length)[None, :]
    keys = jnp.arange(length)
    mask = (jnp.tril(jnp.ones((length, length), dtype=bool)) & (keys < valid)[None, :])[None]
    logits, _ = model(tokens, positions, None, mask)
    return logits


def main(argv: list[str] | None = None) -> int:
    """``python -m workings.export.tunix MODEL_DIR JOB.json OUT.npz``: logits of each prompt and its greedy tokens."""
    import jax.numpy as jnp
    import numpy as np
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("job", help="JSON: {prompts: [[ids], ...], steps: n, stops: [ids]}")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    job = json.loads(Path(args.job).read_text())
    hf_config = json.loads((Path(args.model_dir) / "config.json").read_text())
    config = tunix_config(hf_config)
    if hf_config["model_type"] == "gemma3_text":
        from tunix.models.gemma3 import params_safetensors
    else:
        from tunix.models.gemma import params_safetensors
    model = params_safetensors.create_model_from_safe_tensors(args.model_dir, config, dtype=jnp.float32)
    arrays = {}
    width = max(len(p) for p in job["prompts"]) + job["steps"]  # one shape for every call
    for i, prompt in enumerate(job["prompts"]):
        buffer = np.zeros((1, width), dtype=np.int32)
        buffer[0, : len(prompt)] = prompt
        length = len(prompt)
        arrays[f"logits{i}"] = np.asarray(tunix_logits(model, jnp.asarray(buffer), length)[0, :length], dtype=np.float32)
        generated: list[int] = []
        for _ in range(job["steps"]):
            nxt = int(jnp.argmax(tunix_logits(model, jnp.asarray(buffer), length)[0, length - 1]))
            generated.append(nxt)
            if nxt in job["stops"]:
                break
            buffer[0, length] = nxt
            length += 1
        arrays[f"greedy{i}"] = np.asarray(generated, dtype=np.int64)
    np.savez(args.out, **arrays)
    return 0


# --- the project's side (torch) ------------------------------------------------------------


@dataclass(frozen=True)
class TunixParity:
    prompts: int
    max_logit_difference: float  # over every position of every prompt, float32 on both sides
    same_greedy: int  # prompts whose greedy continuation is the same token for token
    greedy_tokens: int  # tokens compared


def tunix_python() -> Path:
    from workings.config.environment import tunix_python as where

    python = where()
    if not python.is_file():
        raise FileNotFoundError(f"{python}: no Tunix environment; make install-tunix (or make test) creates it")
    return python


def tunix_parity(model_dir: str | Path, prompts: list[list[int]], *, steps: int, stops: list[int]) -> TunixParity:
    """Load the merged export ``model_dir`` in Tunix and with transformers (both float32) and compare,
    per prompt (token ids), the logits of the prompt and ``steps`` greedy tokens (ending at ``stops``)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    worst, same, compared = 0.0, 0, 0
    package_root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.npz"
        job.write_text(json.dumps({"prompts": prompts, "steps": steps, "stops": stops}))
        done = subprocess.run([str(tunix_python()), "-m", "workings.export.tunix", str(model_dir), str(job), str(out)],
                              env={"PYTHONPATH": str(package_root), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"Tunix could not run {model_dir}: {done.stderr.strip().splitlines()[-1:]}")
        result = dict(np.load(out))
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            logits = hf(input_ids=ids).logits[0].numpy()
            greedy = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                                 do_sample=False, eos_token_id=stops, pad_token_id=stops[0])[0, len(prompt):].tolist()
        worst = max(worst, float(np.abs(logits - result[f"logits{i}"]).max()))
        same += greedy == result[f"greedy{i}"].tolist()
        compared += len(greedy)
    return TunixParity(len(prompts), worst, same, compared)


if __name__ == "__main__":
    sys.exit(main())
