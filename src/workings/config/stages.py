"""The training stages, one registry entry each, and the run folder that holds what they produce.

A profile trains in a chain of stages (``training.stages``, by default ``[sft, grpo]``): the first
trains a fresh LoRA adapter on the base, each later one continues the adapter of the stage before
it. Every stage keeps its trainer's options in the profile section named after it, by TRL's names,
and writes its run into the folder named after it under the profile's run folder.

"The model this profile produced" is :func:`produced_stage`: the last stage of the chain whose run
has finished, unless a command's ``--stage`` names another. The registry is data: a stage's code is
found by the module it names, so this module, low in the package, imports none of it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.loading import profile_command, run_dir
from workings.config.schema import Profile, ProfileError


@dataclass(frozen=True)
class Stage:
    """One training stage: what the chain, the command line, the cards and the machine checks know of it."""

    name: str  # its profile section (TRL options), its run folder and its --stage value
    trainer: str  # the TRL trainer that runs it
    command: str  # the workings command that runs it (stages that are alternatives may share one)
    help: str  # that command's one line of help
    # The module that trains it, with train(profile, mix_dir, out_dir, start_from, *, resume, overwrite,
    # progress, callbacks) -> TrainResult, result_line(result) -> str (what the command prints) and
    # describe(profile, run, before) -> str (the paragraph of an export's card, from its run.json).
    module: str
    config: str  # the Profile method that builds its TRL config: profile.<config>(**fixed)
    fresh: bool = False  # trains a new adapter on the base (only a chain's first stage), else continues the one before
    entry: str = "train"  # the module's function that trains it (stages sharing a module have one each)

    def trainer_config(self, profile: Profile, **fixed: Any) -> Any:
        """This stage's TRL config for ``profile``: its section over the project's defaults, then ``fixed``."""
        return getattr(profile, self.config)(**fixed)

    def implementation(self) -> Any:
        """The module that trains it (imported when first asked: stages load only what they use)."""
        return importlib.import_module(self.module)

    def train(self, profile: Profile, mix_dir: Path, out_dir: Path, start_from: Path | None, **kwargs: Any) -> Any:
        """Train this stage (its module's ``entry``): ``kwargs`` are ``resume``, ``overwrite``, ``progress``, ``callbacks``."""
        return getattr(self.implementation(), self.entry)(profile, mix_dir, out_dir, start_from, **kwargs)


STAGES: dict[str, Stage] = {
    "sft": Stage("sft", "SFTTrainer", "train", "fine-tune the profile's model on its mix (SFT with LoRA/QLoRA)",
                 "workings.train.sft", "sft_args", fresh=True),
    "grpo": Stage("grpo", "GRPOTrainer", "grpo", "train the previous stage's adapter further with GRPO on verifiable rewards",
                  "workings.train.grpo", "grpo_args"),
    "dpo": Stage("dpo", "DPOTrainer", "prefer", "train the previous stage's adapter on pairs of its own replies, right "
                 "over wrong (DPO, or SimPO where training.stages names simpo)", "workings.train.prefer",
                 "dpo_args", entry="train_dpo"),
    "simpo": Stage("simpo", "CPOTrainer", "prefer", "", "workings.train.prefer", "simpo_args",
                   entry="train_simpo"),
}


def stage_of_command(profile: Profile, command: str) -> Stage:
    """The stage a training command runs: the profile's chain's stage of that command, else the
    first registered one (a command may run a stage outside the chain, from ``--adapter``)."""
    for s in [*chain(profile), *STAGES.values()]:
        if s.command == command:
            return s
    raise ProfileError(f"no stage is trained by workings {command}")


def stage(name: str, flag: str = "--stage") -> Stage:
    """The registered stage ``name``; an unknown name is refused naming ``flag`` and the known ones."""
    if name not in STAGES:
        raise ProfileError(f"{flag}: unknown stage {name!r}; known: {', '.join(STAGES)}")
    return STAGES[name]


def chain(profile: Profile) -> list[Stage]:
    """The profile's stages in the order they train (``training.stages``)."""
    return [stage(name, "training.stages") for name in profile.training.stages]


def check_chain(names: Sequence[str], key: str) -> None:
    """A chain starts with a stage that trains a fresh adapter, continues with stages that do not,
    and names each stage once (its run folder is named after it)."""
    names = list(names)
    for name in names:
        stage(name, key)
    if not names:
        raise ProfileError(f"{key}: needs at least one stage")
    if len(set(names)) != len(names):
        raise ProfileError(f"{key}: a stage is named twice ({' -> '.join(names)})")
    if not STAGES[names[0]].fresh:
        fresh = [s.name for s in STAGES.values() if s.fresh]
        raise ProfileError(f"{key}: {names[0]} continues an adapter and cannot come first; start with {' or '.join(fresh)}")
    later = [n for n in names[1:] if STAGES[n].fresh]
    if later:
        raise ProfileError(f"{key}: {later[0]} trains a fresh adapter and can only come first ({' -> '.join(names)})")


def previous(profile: Profile, name: str) -> Stage | None:
    """The stage ``name`` starts from: the one before it in the profile's chain (None for the first)."""
    names = [s.name for s in chain(profile)]
    if name not in names:
        raise ProfileError(f"{profile.path or profile.name}: training.stages: {name} is not in the chain "
                           f"({' -> '.join(names)}); add it there, or name the adapter it starts from with --adapter")
    i = names.index(name)
    return STAGES[names[i - 1]] if i else None


@dataclass(frozen=True)
class RunLayout:
    """Where a profile's artefacts live under its run folder (``runs/<profile>/``).

    A stage's run is ``<stage>/`` when it is trained as the profile's chain (``training.stages``)
    has it; a stage trained after other stages than the chain's (to compare pipelines) is named by
    its whole path, ``sft-dpo-grpo/``: stage names hold no dash, so no two paths share a folder.
    """

    root: Path
    chain: tuple[str, ...] = ()  # the profile's chain of stages

    @property
    def mix(self) -> Path:
        return self.root / "mix"

    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    @property
    def predictions(self) -> Path:
        return self.evaluation / "predictions"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    def stage(self, name: str | Sequence[str]) -> Path:
        """The run folder of stage ``name`` of the profile's chain, or of the last stage of a path of stages."""
        if isinstance(name, str):
            return self.root / name
        path = tuple(name)
        return self.root / (path[-1] if path == self.chain[: len(path)] else "-".join(path))

    def adapter(self, name: str | Sequence[str]) -> Path:
        return self.stage(name) / "adapter"

    def summary(self, name: str | Sequence[str]) -> dict[str, Any]:
        """The stage's ``run.json``: what its run recorded (refused, naming the file, when it has not finished)."""
        file = self.stage(name) / "run.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no finished run here")
        return json.loads(file.read_text())

    def finished(self, name: str | Sequence[str]) -> bool:
        """Whether the stage's run finished here: its summary and its adapter's weights are written
        (both appear only when a run completes: the folder is swapped in whole)."""
        return (self.stage(name) / "run.json").is_file() and (self.adapter(name) / "adapter_model.safetensors").is_file()


def run_layout(profile: Profile) -> RunLayout:
    return RunLayout(run_dir(profile), tuple(profile.training.stages))


def produced_stage(profile: Profile, name: str | None = None, flag: str = "--stage") -> Stage | None:
    """The stage whose adapter is "the model this profile produced": ``name`` when given (refused,
    naming ``flag``, when it is not in the chain or has not finished), else the last finished stage
    of the chain; None when no stage has finished."""
    layout = run_layout(profile)
    names = [s.name for s in chain(profile)]
    if name is None:
        done = [n for n in names if layout.finished(n)]
        return STAGES[done[-1]] if done else None
    chosen = stage(name, flag)
    if name not in names:
        raise ProfileError(f"{flag}: {name} is not a stage of profile {profile.name} ({' -> '.join(names)})")
    if not layout.finished(name):
        raise ProfileError(f"{flag} {name}: no finished {name} run at {layout.stage(name)} "
                           f"(run {profile_command(profile, chosen.command)})")
    return chosen


def produced_adapter(profile: Profile, name: str | None = None, flag: str = "--stage") -> Path | None:
    """The adapter of :func:`produced_stage`, or None when no stage has finished."""
    found = produced_stage(profile, name, flag)
    return run_layout(profile).adapter(found.name) if found else None
