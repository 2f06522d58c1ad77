"""Reading profiles: YAML files (by name from ``profiles/`` or by path) into validated :class:`Profile` objects.

Loading validates everything before any model or dataset is touched: an unknown key, a missing
key, a value of the wrong type or an impossible value raises :class:`ProfileError` naming the
file and the key (``data.sources[2].cap``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from workings.config.environment import runs_root
from workings.config.schema import MOVED_TO_SFT, Profile, ProfileError, TrainingConfig

PROFILE_DIR = Path(__file__).parent / "profiles"


def _from_dict(cls: type, value: Any, key: str) -> Any:
    hints = typing.get_type_hints(cls)
    if not isinstance(value, dict):
        raise ProfileError(f"{key or 'profile'}: expected a mapping, got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path" or cls is not Profile}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        moved = f"; trainer options moved to sft: by TRL's names (sft.{MOVED_TO_SFT[unknown[0]]})" if (
            cls is TrainingConfig and unknown[0] in MOVED_TO_SFT) else ""
        raise ProfileError(f"{key + '.' if key else ''}{unknown[0]}: unknown key (allowed: {', '.join(sorted(fields))}){moved}")
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
    if origin is dict:
        if not isinstance(value, dict):
            raise ProfileError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
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
    except yaml.MarkedYAMLError as err:  # one line: the file, where, and what the parser found
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ProfileError(f"{path}{where}: not valid YAML ({what})") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
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


def _resolve(name_or_path: str | Path, seen: tuple[Path, ...] = (), named_by: str | None = None) -> tuple[Path, dict[str, Any]]:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        named_by = f"{seen[-1]}: extends: " if seen else f"{named_by}=" if named_by else ""
        raise ProfileError(f"{named_by}{name_or_path}: no such profile (known: {', '.join(profile_names())})")
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


def load_profile(name_or_path: str | Path, named_by: str | None = None) -> Profile:
    """Read and validate a profile by name (``demo``) or by path to a YAML file; ``named_by`` is the
    environment variable that named it, if one did, for the error when there is no such profile.

    A profile may start from another with ``extends: NAME``: its mappings are merged key
    by key over the other's, and lists replace the other's lists.
    """
    path, raw = _resolve(name_or_path, named_by=named_by)
    try:
        profile = _from_dict(Profile, raw, "")
        profile.validate()
    except ProfileError as err:
        raise ProfileError(f"{path}: {err}") from None
    profile.path = path
    return profile


def profile_names() -> list[str]:
    """The profiles shipped with the package, by name."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def run_dir(profile: Profile) -> Path:
    """Where a profile's artefacts go: ``<runs root>/<name>`` (see :func:`workings.config.environment.runs_root`)."""
    return runs_root() / profile.name


def active_profile() -> Profile:
    """The profile the book and every command run by default (:func:`workings.config.environment.profile_name`)."""
    from workings.config.environment import PROFILE_VARIABLE, profile_from_environment, profile_name

    return load_profile(profile_name(), named_by=PROFILE_VARIABLE if profile_from_environment() else None)


def profile_option(profile: Profile) -> str:
    """``--profile`` as a command line must give it to run ``profile`` again: the name of a shipped
    profile, else the path of its file, quoted for a POSIX shell."""
    import shlex

    shipped = profile.path is not None and profile.path.resolve() == (PROFILE_DIR / f"{profile.name}.yaml").resolve()
    return f"--profile {shlex.quote(profile.name if shipped or profile.path is None else str(profile.path))}"


def profile_command(profile: Profile, command: str) -> str:
    """``workings COMMAND --profile ...``: a hint that runs as printed (see :func:`profile_option`)."""
    return f"workings {command} {profile_option(profile)}"


FSDP_CONFIG = "src/workings/config/accelerate/fsdp-qlora.yaml"  # accelerate's config for FSDP with QLoRA


def launch_command(profile: Profile, command: str) -> str:
    """The command line that runs ``workings COMMAND`` for ``profile`` as it must be launched: alone,
    under ``accelerate launch`` with the profile's number of processes, or with accelerate's FSDP config."""
    if profile.training.fsdp:
        return (f"accelerate launch --config_file {FSDP_CONFIG} --num_processes {profile.training.processes} "
                f"-m workings {command} {profile_option(profile)}")
    if profile.training.processes > 1:
        return f"accelerate launch --num_processes {profile.training.processes} -m workings {command} {profile_option(profile)}"
    return profile_command(profile, command)
