"""Loading tokenizers (and, in training, models) named by a profile."""

from __future__ import annotations

from typing import Any

from workings.profiles import ModelConfig

TINY = "tiny"


def load_tokenizer(model: ModelConfig) -> Any:
    """The profile's tokenizer: the project's tiny one for ``id: tiny``, else from the Hub or a local path."""
    if model.id == TINY:
        from workings.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.id, revision=model.revision)
    except OSError as err:
        raise OSError(
            f"could not load the tokenizer of {model.id!r} (revision {model.revision!r}): {err}. "
            "Gemma models are gated: accept the licence on the Hub and log in, or point model.id at a local copy."
        ) from err
