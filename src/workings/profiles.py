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

    def validate(self, key: str) -> None:
        _check(self.n > 0, f"{key}.n", f"must be positive, got {self.n}")
        _check(1 <= self.min_steps <= self.max_steps, f"{key}.min_steps", "need 1 <= min_steps <= max_steps")


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


@dataclass
class Profile:
    name: str
    model: ModelConfig
    data: DataConfig
    description: str = ""
    path: Path | None = None  # the file it was read from; not a key in the file

    def validate(self, key: str = "") -> None:
        self.data.validate("data")


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


def load_profile(name_or_path: str | Path) -> Profile:
    """Read and validate a profile by name (``demo``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise ProfileError(f"{name_or_path}: no such profile (known: {', '.join(known)})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML ({err})") from None
    try:
        profile = _from_dict(Profile, raw, "")
        profile.validate()
    except ProfileError as err:
        raise ProfileError(f"{path}: {err}") from None
    profile.path = path
    for spec in [*profile.data.sources, *profile.data.eval_sets]:
        if spec.path is not None and not Path(spec.path).is_absolute():
            spec.path = str((path.parent / spec.path).resolve())
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
