"""Trainer sections by TRL's own option names, validated by building TRL's config.

A profile's ``sft:`` section is handed to ``trl.SFTConfig`` as it is, over a few defaults of the
project's own (:data:`SFT_DEFAULTS`), so every option TRL has (``use_liger_kernel``,
``padding_free``, ``loss_type``, …) is reachable from a profile without code changes. Options the
run sets itself (:data:`SFT_SET_BY_RUN`) are refused with the reason. Validation checks names and
value types against the config's fields, then builds the config so TRL's and transformers' own
checks run; every error names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
import warnings
from typing import Any

from workings.config.schema import ProfileError

# The project's defaults under a profile's sft section (TRL's defaults apply to everything else).
SFT_DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing_kwargs": {"use_reentrant": False},  # reentrant checkpointing breaks LoRA's grads
    "eval_strategy": "steps",
    "save_strategy": "steps",
    "dataloader_num_workers": 0,
    "logging_first_step": True,  # the divergence guard sees the loss from the first step on
}
# What a run decides itself, and why a profile cannot set it.
SFT_SET_BY_RUN: dict[str, str] = {
    "output_dir": "the run folder (--out)",
    "use_cpu": "training.device",
    "disable_tqdm": "--quiet",
    "completion_only_loss": "the loss is on completion tokens only",
    "eos_token": "completions end at <end_of_turn>",
    "report_to": "TensorBoard is attached to the run folder's tensorboard/",
    "logging_nan_inf_filter": "a NaN loss must reach the divergence guard",
    "include_num_input_tokens_seen": "runs count non-padding tokens",
}
# Fixed values of the options above that are not per run.
SFT_FIXED: dict[str, Any] = {
    "completion_only_loss": True,
    "report_to": "none",
    "logging_nan_inf_filter": False,
    "include_num_input_tokens_seen": "non_padding",
}
PLACEHOLDER_OUTPUT = "<run folder>"
# Counts, rates and lengths that TRL and transformers take as they come (``max_steps: -5`` trained
# three epochs) but that have a range: each is checked, naming the key. (Their own checks cover the rest.)
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "learning_rate", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "max_length",
            "save_total_limit", "max_completion_length", "max_prompt_length", "num_generations", "generation_batch_size",
            "steps_per_generation", "num_iterations", "temperature", "eval_accumulation_steps", "repetition_penalty")
NON_NEGATIVE = ("warmup_steps", "weight_decay", "max_grad_norm", "beta", "epsilon", "epsilon_high", "adam_epsilon",
                "label_smoothing_factor", "dataloader_num_workers", "seed", "data_seed", "top_k", "min_p")
BELOW_ONE = ("adam_beta1", "adam_beta2")  # in [0, 1)
UP_TO_ONE = ("top_p",)  # in (0, 1]


def range_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the option ``name``, or None.

    >>> range_problem("max_steps", -5)
    'must be -1 (train num_train_epochs instead) or positive, got -5'
    >>> range_problem("warmup_steps", 0.05), range_problem("top_p", 0)
    (None, 'must be in (0, 1], got 0')
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if name == "max_steps":
        return None if value == -1 or value > 0 else f"must be -1 (train num_train_epochs instead) or positive, got {value}"
    if name in POSITIVE and value <= 0:
        return f"must be positive, got {value}"
    if name in NON_NEGATIVE and value < 0:
        return f"must be 0 or more, got {value}"
    if name in BELOW_ONE and not 0 <= value < 1:
        return f"must be in [0, 1), got {value}"
    if name in UP_TO_ONE and not 0 < value <= 1:
        return f"must be in (0, 1], got {value}"
    return None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def value_matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a config field's annotation (enums take their string names;
    types this cannot judge are left to the config's own checks)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (str, hint))
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def check_options(section: str, config_class: type, options: dict[str, Any], set_by_run: dict[str, str]) -> None:
    """Names and value types of a trainer section against ``config_class``'s fields."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    for name, value in options.items():
        key = f"{section}.{name}"
        if name in set_by_run:
            raise ProfileError(f"{key}: set by the run, not the profile ({set_by_run[name]})")
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ProfileError(f"{key}: not an option of trl.{config_class.__name__}{hint}")
        hint = fields[name].type
        if not value_matches(value, hint):
            note = " (YAML reads 2e-4 as text: write 2.0e-4)" if isinstance(value, str) and "e" in value.lower() else ""
            raise ProfileError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}{note}")
        problem = range_problem(name, value)
        if problem is not None:
            raise ProfileError(f"{key}: {problem}")


def build_config(section: str, config_class: type, options: dict[str, Any]) -> Any:
    """``config_class(**options)`` with its own checks' errors as :class:`ProfileError` naming the section."""
    with warnings.catch_warnings():  # transformers 5 renames a few options; the old names still work
        warnings.filterwarnings("ignore", message=".*is deprecated and will be removed in v6.*", category=FutureWarning)
        try:
            return config_class(**options)
        except (ValueError, TypeError) as err:
            raise ProfileError(f"{section}: {err}") from None


def optimizer_name(args: Any) -> str:
    """The ``optim`` of a built config as its name (TRL turns the name into an enum)."""
    return getattr(args.optim, "value", args.optim)


def _sft_class() -> type:
    from trl import SFTConfig

    return SFTConfig


def check_sft_options(options: dict[str, Any]) -> None:
    """Validate a profile's ``sft`` section: names, types, then ``trl.SFTConfig``'s own checks.

    It is built with ``use_cpu`` so that a GPU profile validates on any machine; whether this
    machine can run it is checked before training (:func:`workings.train.runs.check_environment`).
    """
    check_options("sft", _sft_class(), options, SFT_SET_BY_RUN)
    sft_config(options)


def sft_config(options: dict[str, Any], **fixed: Any) -> Any:
    """The ``trl.SFTConfig`` of an ``sft`` section: project defaults, the section, then ``fixed``.

    The evaluation batch defaults to the training batch and ``data_seed`` to ``seed``.
    """
    merged = {**SFT_DEFAULTS, **options}
    merged.setdefault("per_device_eval_batch_size", merged.get("per_device_train_batch_size", 8))
    return _run_config("sft", _sft_class(), merged, SFT_FIXED, fixed)


def _run_config(section: str, config_class: type, merged: dict[str, Any], fixed_values: dict[str, Any],
                fixed: dict[str, Any]) -> Any:
    """Build a trainer config from a section merged over its defaults: ``data_seed`` follows ``seed``,
    then the stage's fixed values, a placeholder run folder on the CPU (so a GPU profile validates
    anywhere), and what the run sets itself."""
    if "seed" in merged:
        merged.setdefault("data_seed", merged["seed"])
    return build_config(section, config_class, {**merged, **fixed_values, "output_dir": PLACEHOLDER_OUTPUT,
                                                "use_cpu": True, **fixed})


# --- the grpo section ------------------------------------------------------------------------

GRPO_DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "save_strategy": "steps",
    "dataloader_num_workers": 0,
    "logging_steps": 1,  # every step's rewards, zero-variance share, lengths and KL reach the log
    "logging_first_step": True,
}
# What GRPO takes from the sft section when its own section does not say: it trains the same
# adapter on the same machine, so the same precision, checkpointing, optimizer and seed.
GRPO_FROM_SFT = ("bf16", "fp16", "gradient_checkpointing", "optim", "seed")
GRPO_SET_BY_RUN: dict[str, str] = {
    "output_dir": "the run folder (--out)",
    "use_cpu": "training.device",
    "disable_tqdm": "--quiet",
    "report_to": "TensorBoard is attached to the run folder's tensorboard/",
    "logging_nan_inf_filter": "a NaN loss must reach the divergence guard",
    "remove_unused_columns": "the rewards read the question and gold columns",
}
GRPO_FIXED: dict[str, Any] = {"report_to": "none", "logging_nan_inf_filter": False, "remove_unused_columns": False}


def _grpo_class() -> type:
    from trl import GRPOConfig

    return GRPOConfig


def check_grpo_options(options: dict[str, Any]) -> None:
    """Validate a profile's ``grpo`` section: names, types, then ``trl.GRPOConfig``'s own checks."""
    check_options("grpo", _grpo_class(), options, GRPO_SET_BY_RUN)


def grpo_config(options: dict[str, Any], sft_options: dict[str, Any], **fixed: Any) -> Any:
    """The ``trl.GRPOConfig`` of a ``grpo`` section: project defaults, what it takes from the ``sft``
    section (:data:`GRPO_FROM_SFT`, when set there), the section itself, then ``fixed``."""
    sft = {**SFT_DEFAULTS, **sft_options}
    merged = {**GRPO_DEFAULTS, **{k: sft[k] for k in GRPO_FROM_SFT if k in sft}, **options}
    return _run_config("grpo", _grpo_class(), merged, GRPO_FIXED, fixed)


# --- the dpo and simpo sections (workings prefer) -----------------------------------------------

PREFERENCE_DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing_kwargs": {"use_reentrant": False},
    "save_strategy": "steps",
    "dataloader_num_workers": 0,
    "logging_steps": 1,  # every step's loss, reward margin and accuracy reach the log
    "logging_first_step": True,
}
# What a preference stage takes from the sft section when its own does not say: it trains the same
# adapter on the same machine and on replies as long as SFT's rows.
PREFERENCE_FROM_SFT = ("bf16", "fp16", "gradient_checkpointing", "optim", "seed", "max_length")
PREFERENCE_SET_BY_RUN: dict[str, str] = {
    "output_dir": "the run folder (--out)",
    "use_cpu": "training.device",
    "disable_tqdm": "--quiet",
    "report_to": "TensorBoard is attached to the run folder's tensorboard/",
    "logging_nan_inf_filter": "a NaN loss must reach the divergence guard",
}
PREFERENCE_FIXED: dict[str, Any] = {"report_to": "none", "logging_nan_inf_filter": False}
# SimPO (Meng et al., 2024) is CPO's loss_type "simpo" without CPO's behaviour-cloning term; its
# paper's beta of 2 to 2.5 with a margin gamma of about half of beta.
SIMPO_DEFAULTS: dict[str, Any] = {"beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 0.0}
SIMPO_SET_BY_RUN: dict[str, str] = {**PREFERENCE_SET_BY_RUN, "loss_type": "the simpo stage is CPO's loss_type simpo; "
                                    "the dpo stage takes DPO's loss types"}
SIMPO_FIXED: dict[str, Any] = {**PREFERENCE_FIXED, "loss_type": "simpo"}


def _dpo_class() -> type:
    from trl import DPOConfig

    return DPOConfig


def _simpo_class() -> type:
    with warnings.catch_warnings():  # TRL keeps CPO among its experimental trainers and says so on import
        warnings.simplefilter("ignore")
        from trl.experimental.cpo import CPOConfig
    return CPOConfig


def _preference_merged(defaults: dict[str, Any], options: dict[str, Any], sft_options: dict[str, Any]) -> dict[str, Any]:
    sft = {**SFT_DEFAULTS, **sft_options}
    return {**PREFERENCE_DEFAULTS, **defaults, **{k: sft[k] for k in PREFERENCE_FROM_SFT if k in sft}, **options}


def check_dpo_options(options: dict[str, Any]) -> None:
    """Validate a profile's ``dpo`` section: names, types, then ``trl.DPOConfig``'s own checks."""
    check_options("dpo", _dpo_class(), options, PREFERENCE_SET_BY_RUN)


def dpo_config(options: dict[str, Any], sft_options: dict[str, Any], **fixed: Any) -> Any:
    """The ``trl.DPOConfig`` of a ``dpo`` section: project defaults, what it takes from the ``sft``
    section (:data:`PREFERENCE_FROM_SFT`, when set there), the section itself, then ``fixed``."""
    return _run_config("dpo", _dpo_class(), _preference_merged({}, options, sft_options), PREFERENCE_FIXED, fixed)


def check_simpo_options(options: dict[str, Any]) -> None:
    """Validate a profile's ``simpo`` section: names, types, then CPO's config's own checks."""
    check_options("simpo", _simpo_class(), options, SIMPO_SET_BY_RUN)


def simpo_config(options: dict[str, Any], sft_options: dict[str, Any], **fixed: Any) -> Any:
    """The CPO config of a ``simpo`` section (``loss_type: simpo``): project defaults (:data:`SIMPO_DEFAULTS`),
    what it takes from the ``sft`` section, the section itself, then ``fixed``."""
    return _run_config("simpo", _simpo_class(), _preference_merged(SIMPO_DEFAULTS, options, sft_options), SIMPO_FIXED, fixed)
