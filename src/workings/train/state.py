"""Reading a finished or running trainer's state: ``trainer_state.json`` as JSON only, its log history,
throughput and a summary of the run. ``training_args.bin`` (a pickle) is never opened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workings.train.runs import checkpoints


def find_trainer_state(path: str | Path) -> Path:
    """The ``trainer_state.json`` of a run folder, a checkpoint folder (``checkpoint-17835``), or the file.

    A run folder without one of its own gives its newest checkpoint's.
    """
    path = Path(path)
    if path.is_file():
        return path
    if (path / "trainer_state.json").is_file():
        return path / "trainer_state.json"
    steps = [p for p in checkpoints(path) if (p / "trainer_state.json").is_file()]
    if steps:
        return steps[-1] / "trainer_state.json"
    raise FileNotFoundError(f"{path}: no trainer_state.json here or in a checkpoint-* folder")


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Read a trainer state as JSON only (``training_args.bin`` beside it is a pickle and is never opened)."""
    file = find_trainer_state(path)
    try:
        state = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise ValueError(f"{file}: no log_history list; is this a transformers trainer_state.json?")
    return state


def adapter_trainer_state(adapter: str | Path) -> dict[str, Any]:
    """The trainer state of the run that saved ``adapter``: in the folder itself (a checkpoint such as
    ``checkpoint-17835``) or in its parent (this project's ``<run>/adapter``)."""
    adapter = Path(adapter)
    return load_trainer_state(adapter if (adapter / "trainer_state.json").is_file() else adapter.parent)


def run_summary(state: Mapping[str, Any]) -> pd.Series:
    """Steps and first/last logged losses of a run; what the run did not log is left out."""
    history = log_history(state)
    out: dict[str, Any] = {"steps": state.get("global_step", history.index.max() if len(history) else 0)}
    for column, name in (("loss", "train loss"), ("eval_loss", "held-out loss")):
        if column in history and history[column].notna().any():
            values = history[column].dropna()
            out[f"{name}, first logged"] = round(float(values.iloc[0]), 3)
            out[f"{name}, last logged"] = round(float(values.iloc[-1]), 3)
    return pd.Series(out, dtype=object)


def log_history(state: Mapping[str, Any]) -> pd.DataFrame:
    """``trainer_state.json``'s log history as one row per logged step (train and eval entries merged).

    The closing summary entry (``train_loss`` over the whole run) is left out.
    """
    rows: dict[int, dict[str, Any]] = {}
    for entry in state["log_history"]:
        if "step" in entry and "train_loss" not in entry:
            rows.setdefault(entry["step"], {}).update(entry)
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


def tokens_per_second(history: pd.DataFrame) -> pd.Series:
    """Training throughput between consecutive logs, from tokens seen and runtime (empty when not logged)."""
    if {"num_input_tokens_seen", "train_runtime"} <= set(history.columns):
        logged = history[["num_input_tokens_seen", "train_runtime"]].dropna()
        rate = logged["num_input_tokens_seen"].diff() / logged["train_runtime"].diff()
        if len(logged):
            rate.iloc[0] = logged["num_input_tokens_seen"].iloc[0] / logged["train_runtime"].iloc[0]
        return rate.dropna()
    if "train_tokens_per_second" in history:
        return history["train_tokens_per_second"].dropna()
    return pd.Series(dtype=float)
