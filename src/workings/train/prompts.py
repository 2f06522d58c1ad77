"""The prompts a stage after SFT asks its starting model: graded training rows of the mix, each in a
prompt layout, rendered exactly as TRL will tokenize them. GRPO and the preference stage share them."""

from __future__ import annotations

import random
from typing import Any

from workings.config.schema import Profile, ProfileError
from workings.core.chat import render_prompt, tokenizer_adds_bos


def candidate_prompts(profile: Profile, train_rows: Any, tokenizer: Any, settings: Any, key: str) -> list[dict[str, Any]]:
    """The rows a stage may train on: graded training rows of ``settings.sources`` (every graded
    source when null), shuffled by ``data.seed``, the first ``settings.candidates``, each asked in
    one of ``settings.layouts`` in turn. ``key`` is the profile section ``settings`` come from (for errors).

    ``prompt`` is the rendered prompt without its ``<bos>`` when the tokenizer adds one itself (as
    TRL tokenizes prompts), so the model sees one ``<bos>``, exactly as at inference.
    """
    known = sorted(set(train_rows["source"]))
    unknown = [s for s in settings.sources or [] if s not in known]
    if unknown:
        raise ProfileError(f"{profile.path or profile.name}: {key}.sources: {unknown[0]!r} is not a source of "
                           f"the mix (its sources: {', '.join(known)})")
    rows = [r for r in train_rows if r["graded"] and (settings.sources is None or r["source"] in settings.sources)]
    if not rows:
        raise ProfileError(f"{profile.path or profile.name}: {key}.sources: no graded training rows to ask")
    random.Random(profile.data.seed).shuffle(rows)
    rows = rows[: settings.candidates]
    bos = tokenizer.bos_token
    adds_bos = tokenizer_adds_bos(tokenizer)
    out = []
    for i, row in enumerate(rows):
        layout = settings.layouts[i % len(settings.layouts)]
        prompt = render_prompt(row["question"], tokenizer, layout)
        if adds_bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]
        out.append({"id": row["id"], "source": row["source"], "layout": layout, "question": row["question"],
                    "gold": row["answer"], "prompt": prompt})
    return out
