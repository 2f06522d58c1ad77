"""Running the Kaggle inference notebook (``kaggle/inference.ipynb``) here, as Kaggle would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().parents[3] / "kaggle" / "inference.ipynb"


def run_inference_notebook(model_dir: str | Path, questions: list[dict[str, Any]], out_dir: str | Path, *,
                           batch_size: int = 8, max_new_tokens: int = 256, notebook: str | Path = NOTEBOOK) -> list[dict]:
    """Execute the notebook on ``model_dir`` for ``questions`` (``id`` and ``question`` each) and return
    the predictions it wrote. Its settings travel as the environment variables it reads."""
    import nbformat
    from nbclient import NotebookClient

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "questions.jsonl").write_text("".join(json.dumps({"id": q["id"], "question": q["question"]}) + "\n"
                                                     for q in questions))
    settings = {"MODEL_DIR": str(model_dir), "QUESTIONS": str(out_dir / "questions.jsonl"),
                "OUT": str(out_dir / "predictions.jsonl"), "BATCH_SIZE": str(batch_size),
                "MAX_NEW_TOKENS": str(max_new_tokens)}
    client = NotebookClient(nbformat.read(notebook, as_version=4), timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(out_dir)}})
    # The notebook's settings travel in its kernel's environment (this process's stays as it is); the
    # kernel's own start-up chatter goes nowhere, while cell errors still arrive as messages.
    client.execute(env={**os.environ, **settings}, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
