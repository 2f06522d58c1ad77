"""Profiles: one YAML file per setting (``demo``, ``a100``, …) read into typed dataclass configs.

Loading validates everything before any model or dataset is touched: an unknown
key, a missing key, a value of the wrong type or an impossible value raises
:class:`ProfileError` naming the file and the key (``data.sources[2].cap``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"
CONVERTER_NAMES = ("gsm8k", "openthoughts", "bespoke_stratos", "medical_o1", "metamath", "synthetic")
DTYPES = ("float32", "bfloat16", "float16")
GEMMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit", "adamw_bnb_8bit", "sgd")
# Attention implementations that keep packed examples apart (they read per-example boundaries).
PACKING_SAFE_ATTENTION = ("flash_attention_2", "flash_attention_3")
GOLD_FORMATS = ("plain", "gsm8k", "boxed")
ENGINES = ("hf", "vllm")


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ProfileError(f"{key}: {message}")


@dataclass
class SyntheticSpec:
    """Rows made by :func:`workings.synthetic.generate_synthetic`."""

    n: int
    seed: int
    min_steps: int = 1
    max_steps: int = 4
    numbers: str = "standard"  # or "small": one-digit changes to small collections, for tiny models

    def validate(self, key: str) -> None:
        from workings.synthetic import NUMBER_RANGES

        _check(self.n > 0, f"{key}.n", f"must be positive, got {self.n}")
        _check(1 <= self.min_steps <= self.max_steps, f"{key}.min_steps", "need 1 <= min_steps <= max_steps")
        _check(self.numbers in NUMBER_RANGES, f"{key}.numbers",
               f"must be one of {sorted(NUMBER_RANGES)}, got {self.numbers!r}")


@dataclass(kw_only=True)
class Origin:
    """Where rows come from: exactly one of a Hub dataset, a local file, or the synthetic generator."""

    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    path: str | None = None
    synthetic: SyntheticSpec | None = None

    def validate(self, key: str) -> None:
        origins = [o for o in ("hub_id", "path", "synthetic") if getattr(self, o) is not None]
        _check(len(origins) == 1, key, f"needs exactly one of hub_id, path, synthetic; got {origins or 'none'}")
        if self.synthetic is not None:
            self.synthetic.validate(f"{key}.synthetic")


@dataclass(kw_only=True)
class SourceSpec(Origin):
    """One training source: where its rows come from and how many the mix takes."""

    name: str
    converter: str
    cap: int | None = None  # most distinct training rows kept from this source
    weight: float = 1.0  # repetition factor after capping: 0.5 keeps half, 2.0 repeats every row twice
    heldout: int = 0  # questions set aside for evaluation
    keep_domains: list[str] = field(default_factory=lambda: ["math"])  # OpenThoughts metadata only

    def validate(self, key: str) -> None:
        _check(self.converter in CONVERTER_NAMES, f"{key}.converter", f"unknown converter {self.converter!r}; known: {', '.join(CONVERTER_NAMES)}")
        super().validate(key)
        _check((self.synthetic is not None) == (self.converter == "synthetic"), f"{key}.synthetic", "goes with converter: synthetic, and only with it")
        _check(self.cap is None or self.cap > 0, f"{key}.cap", f"must be positive or null, got {self.cap}")
        _check(self.weight > 0, f"{key}.weight", f"must be positive, got {self.weight}")
        _check(self.heldout >= 0, f"{key}.heldout", f"must be >= 0, got {self.heldout}")


@dataclass(kw_only=True)
class EvalSetSpec(Origin):
    """Questions training rows are decontaminated against (and, later, evaluated on)."""

    name: str
    split: str = "test"
    question_field: str = "question"
    answer_field: str = "answer"
    gold: str = "plain"  # how the answer field holds the gold: plain, gsm8k (after ####) or boxed (last \\boxed{})
    graded: bool = True  # false for free-text answers: format and length are measured, accuracy is not
    group_by: list[str] = field(default_factory=list)  # row fields results are broken down by (subject, level)

    def validate(self, key: str) -> None:
        super().validate(key)
        _check(self.gold in GOLD_FORMATS, f"{key}.gold", f"must be one of {', '.join(GOLD_FORMATS)}, got {self.gold!r}")


@dataclass
class DecontaminationConfig:
    """A training question is contaminated when ``threshold`` of its word n-grams occur in an evaluation question."""

    ngram: int = 13
    threshold: float = 0.5

    def validate(self, key: str) -> None:
        _check(self.ngram >= 1, f"{key}.ngram", f"must be >= 1, got {self.ngram}")
        _check(0 < self.threshold <= 1, f"{key}.threshold", f"must be in (0, 1], got {self.threshold}")


@dataclass
class DataConfig:
    sources: list[SourceSpec]
    eval_sets: list[EvalSetSpec] = field(default_factory=list)
    seed: int = 0
    max_length: int = 1024  # tokens of the rendered chat; longer rows are dropped, never cut
    max_per_question: int = 1  # rows kept per (near-)identical question
    near_duplicate_threshold: float = 0.8  # Jaccard similarity of word 3-gram shingles
    drop_flagged: bool = True  # drop rows whose answer disagrees with the source's ground truth
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def validate(self, key: str) -> None:
        _check(len(self.sources) > 0, f"{key}.sources", "needs at least one source")
        names = [s.name for s in self.sources] + [e.name for e in self.eval_sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(not dupes, key, f"source and eval-set names must be unique; repeated: {dupes}")
        _check(self.max_length > 0, f"{key}.max_length", f"must be positive, got {self.max_length}")
        _check(self.max_per_question >= 1, f"{key}.max_per_question", f"must be >= 1, got {self.max_per_question}")
        _check(0 < self.near_duplicate_threshold <= 1, f"{key}.near_duplicate_threshold", "must be in (0, 1]")
        for i, source in enumerate(self.sources):
            source.validate(f"{key}.sources[{i}]")
        for i, eval_set in enumerate(self.eval_sets):
            eval_set.validate(f"{key}.eval_sets[{i}]")
        self.decontamination.validate(f"{key}.decontamination")


@dataclass
class ModelConfig:
    """The model; ``id: tiny`` is the project's own tiny Gemma built by :mod:`workings.tiny`."""

    id: str
    revision: str | None = None
    dtype: str = "bfloat16"  # of the weights that are not quantized
    # Gemma2's attention needs eager (or flash-attention with softcapping) in transformers 5.
    attn_implementation: str = "eager"

    def validate(self, key: str) -> None:
        _check(self.dtype in DTYPES, f"{key}.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass
class QuantizationConfig:
    """bitsandbytes quantization of the frozen base (QLoRA); absent means the base is not quantized."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"

    def validate(self, key: str) -> None:
        _check(self.bits in (4, 8), f"{key}.bits", f"must be 4 or 8, got {self.bits}")
        _check(self.quant_type in ("nf4", "fp4"), f"{key}.quant_type", f"must be nf4 or fp4, got {self.quant_type!r}")
        _check(self.compute_dtype in DTYPES, f"{key}.compute_dtype", f"must be one of {', '.join(DTYPES)}")


@dataclass
class LoraConfig:
    """The LoRA adapter: rank, scale (alpha / r), dropout and the linear layers it wraps."""

    r: int = 32
    alpha: float = 64
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(GEMMA_LINEAR_MODULES))
    save_dtype: str = "bfloat16"  # dtype of the saved adapter file; training keeps float32 adapters

    def validate(self, key: str) -> None:
        _check(self.r > 0, f"{key}.r", f"must be positive, got {self.r}")
        _check(self.alpha > 0, f"{key}.alpha", f"must be positive, got {self.alpha}")
        _check(0 <= self.dropout < 1, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(len(self.target_modules) > 0, f"{key}.target_modules", "needs at least one module")
        _check(self.save_dtype in DTYPES, f"{key}.save_dtype", f"must be one of {', '.join(DTYPES)}")


@dataclass
class TrainingConfig:
    """Supervised fine-tuning with TRL's SFTTrainer; names follow ``transformers.TrainingArguments``."""

    device: str = "cuda"  # cuda or cpu; checked against the machine before any model is loaded
    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 8
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optimizer: str = "paged_adamw_32bit"
    max_length: int = 1024  # tokens per training sequence; must hold the longest row of the mix
    packing: bool = False
    gradient_checkpointing: bool = True
    bf16: bool = True  # mixed precision autocast
    seed: int = 42
    logging_steps: int = 10
    eval_steps: int = 500
    eval_rows: int | None = 500  # held-out rows used for the evaluation loss (all when null)
    save_steps: int = 500
    save_total_limit: int | None = 3
    divergence_factor: float = 4.0  # stop when a logged loss exceeds this multiple of the first one
    # What the book does when the run folder already holds checkpoints: restart (the demo's few
    # minutes) or resume (a GPU run of hours continues where it stopped; a finished one is kept).
    rerun: str = "resume"

    def validate(self, key: str) -> None:
        _check(self.device in ("cuda", "cpu"), f"{key}.device", f"must be cuda or cpu, got {self.device!r}")
        _check(self.epochs > 0, f"{key}.epochs", f"must be positive, got {self.epochs}")
        _check(self.max_steps is None or self.max_steps > 0, f"{key}.max_steps", f"must be positive or null, got {self.max_steps}")
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps", "eval_steps", "save_steps"):
            value = getattr(self, name)
            _check(value > 0, f"{key}.{name}", f"must be positive, got {value}")
        _check(self.learning_rate > 0, f"{key}.learning_rate", f"must be positive, got {self.learning_rate}")
        _check(self.lr_scheduler in SCHEDULERS, f"{key}.lr_scheduler", f"unknown scheduler {self.lr_scheduler!r}; known: {', '.join(SCHEDULERS)}")
        _check(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check(self.max_grad_norm > 0, f"{key}.max_grad_norm", f"must be positive, got {self.max_grad_norm}")
        _check(self.optimizer in OPTIMIZERS, f"{key}.optimizer", f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        _check(self.eval_rows is None or self.eval_rows > 0, f"{key}.eval_rows", "must be positive or null")
        _check(self.save_total_limit is None or self.save_total_limit > 0, f"{key}.save_total_limit", "must be positive or null")
        _check(self.divergence_factor > 1, f"{key}.divergence_factor", f"must be above 1, got {self.divergence_factor}")
        _check(self.rerun in ("resume", "restart"), f"{key}.rerun", f"must be resume or restart, got {self.rerun!r}")
        if self.device == "cpu":
            _check(not self.optimizer.startswith("paged_"), f"{key}.optimizer", f"{self.optimizer} pages optimizer state through CUDA; use adamw_torch on cpu")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps


@dataclass
class EvaluationConfig:
    """How models are asked: generation length and batch, and the sampled run's temperature and top-p."""

    max_new_tokens: int = 1024
    batch_size: int = 16
    temperature: float = 0.7  # of the sampled run; the main measurement is greedy
    top_p: float = 0.95
    seed: int = 0
    heldout_rows: int | None = None  # held-out rows of the mix asked per source (all when null)
    engine: str = "hf"  # hf (transformers generate) or vllm (used when installed, hf otherwise)
    adapter: str | None = None  # an adapter folder to evaluate instead of this profile's own SFT run

    def validate(self, key: str) -> None:
        _check(self.engine in ENGINES, f"{key}.engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        _check(self.max_new_tokens > 0, f"{key}.max_new_tokens", f"must be positive, got {self.max_new_tokens}")
        _check(self.batch_size > 0, f"{key}.batch_size", f"must be positive, got {self.batch_size}")
        _check(self.temperature > 0, f"{key}.temperature", f"must be positive, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"{key}.top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.heldout_rows is None or self.heldout_rows > 0, f"{key}.heldout_rows", "must be positive or null")


@dataclass
class Profile:
    name: str
    model: ModelConfig
    data: DataConfig
    description: str = ""
    quantization: QuantizationConfig | None = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    path: Path | None = None  # the file it was read from; not a key in the file

    def validate(self, key: str = "") -> None:
        self.model.validate("model")
        self.data.validate("data")
        if self.quantization is not None:
            self.quantization.validate("quantization")
        self.lora.validate("lora")
        self.training.validate("training")
        self.evaluation.validate("evaluation")
        _check(self.training.max_length >= self.data.max_length, "training.max_length",
               f"{self.training.max_length} is below data.max_length ({self.data.max_length}): rows the mix keeps would be cut")
        _check(not self.training.packing or self.model.attn_implementation in PACKING_SAFE_ATTENTION, "training.packing",
               f"packed examples attend to each other with {self.model.attn_implementation!r} attention; "
               f"packing needs one of {', '.join(PACKING_SAFE_ATTENTION)}")


def _from_dict(cls: type, value: Any, key: str) -> Any:
    hints = typing.get_type_hints(cls)
    if not isinstance(value, dict):
        raise ProfileError(f"{key or 'profile'}: expected a mapping, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path" or cls is not Profile}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ProfileError(f"{key + '.' if key else ''}{unknown[0]}: unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileError(f"{sub}: missing key")
            continue
        kwargs[name] = _coerce(hints[name], value[name], sub)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ProfileError(f"{key}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path:
        return Path(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ProfileError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping at the top, got {type(raw).__name__}")
    for section in ("sources", "eval_sets"):  # relative paths are relative to the file that names them
        for spec in (raw.get("data") or {}).get(section) or []:
            if isinstance(spec, dict) and isinstance(spec.get("path"), str) and not Path(spec["path"]).is_absolute():
                spec["path"] = str((path.parent / spec["path"]).resolve())
    evaluation = raw.get("evaluation")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("adapter"), str) and not Path(evaluation["adapter"]).is_absolute():
        evaluation["adapter"] = str((path.parent / evaluation["adapter"]).resolve())
    return raw


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in ``override`` replaces ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> tuple[Path, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"{name_or_path}: no such profile (known: {', '.join(known)})")
    if path.resolve() in seen:
        raise ProfileError(f"{path}: extends: profiles extend each other in a cycle")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return path, raw
    if not isinstance(parent, str):
        raise ProfileError(f"{path}: extends: expected a profile name or path, got {type(parent).__name__}")
    if not parent.endswith((".yaml", ".yml")) or Path(parent).is_absolute():
        target = parent
    else:
        target = str(path.parent / parent)
    _, base = _resolve(target, (*seen, path.resolve()))
    return path, _merge(base, raw)


def load_profile(name_or_path: str | Path) -> Profile:
    """Read and validate a profile by name (``demo``) or by path to a YAML file.

    A profile may start from another with ``extends: NAME``: its mappings are merged key
    by key over the other's, and lists replace the other's lists.
    """
    path, raw = _resolve(name_or_path)
    try:
        profile = _from_dict(Profile, raw, "")
        profile.validate()
    except ProfileError as err:
        raise ProfileError(f"{path}: {err}") from None
    profile.path = path
    return profile


def run_dir(profile: Profile) -> Path:
    """Where a profile's artefacts go: ``$WORKINGS_RUNS/<name>``, else ``runs/<name>`` at the project root.

    The project root is the nearest folder up from the working directory holding ``_toc.yml``,
    so chapters (executed from ``book/``) and the command line agree.
    """
    if "WORKINGS_RUNS" in os.environ:
        return Path(os.environ["WORKINGS_RUNS"]) / profile.name
    here = Path.cwd().resolve()
    root = next((d for d in (here, *here.parents) if (d / "_toc.yml").is_file()), here)
    return root / "runs" / profile.name


def active_profile() -> Profile:
    """The profile the book runs: ``$WORKINGS_PROFILE`` (a name or a path), ``demo`` by default."""
    return load_profile(os.environ.get("WORKINGS_PROFILE", "demo"))
