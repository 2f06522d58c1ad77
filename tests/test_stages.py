"""Training stages as one abstraction: the chain a profile declares, the run folder's layout, the model
a profile produced, and the machine checks of the stage about to run."""

import json

import pytest

from workings.config.schema import ProfileError
from workings.config.stages import STAGES, RunLayout, chain, previous, produced_adapter, produced_stage, run_layout


def finish(layout: RunLayout, stage: str) -> None:
    """What a finished run leaves that the layout reads: its summary and its adapter's weights."""
    (layout.adapter(stage)).mkdir(parents=True)
    (layout.adapter(stage) / "adapter_model.safetensors").write_bytes(b"weights")
    (layout.stage(stage) / "run.json").write_text(json.dumps({"stage": stage}))


def test_a_profile_trains_sft_then_grpo_unless_it_says_otherwise(tiny_profile):
    profile = tiny_profile()
    assert [s.name for s in chain(profile)] == ["sft", "grpo"]
    assert previous(profile, "grpo") is STAGES["sft"] and previous(profile, "sft") is None
    assert [s.name for s in chain(tiny_profile({"training": {"stages": ["sft"]}}))] == ["sft"]


@pytest.mark.parametrize(("stages", "message"), [
    (["grpo"], "training.stages: grpo continues an adapter and cannot come first; start with sft"),
    (["sft", "grpo", "sft"], "training.stages: a stage is named twice (sft -> grpo -> sft)"),
    (["sft", "ppo"], f"training.stages: unknown stage 'ppo'; known: {', '.join(STAGES)}"),
    ([], "training.stages: needs at least one stage"),
])
def test_an_impossible_chain_is_refused_naming_the_key(tiny_profile, stages, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_profile({"training": {"stages": stages}})


def test_the_run_folder_layout_names_every_artefact_once(tmp_path):
    layout = RunLayout(tmp_path / "runs" / "demo")
    assert layout.mix == tmp_path / "runs" / "demo" / "mix"
    assert layout.stage("grpo") == tmp_path / "runs" / "demo" / "grpo"
    assert layout.adapter("sft") == tmp_path / "runs" / "demo" / "sft" / "adapter"
    assert layout.predictions == tmp_path / "runs" / "demo" / "eval" / "predictions"
    assert layout.exports == tmp_path / "runs" / "demo" / "export"


def test_a_stage_trained_after_other_stages_than_the_chains_is_named_by_its_whole_path(tmp_path):
    layout = RunLayout(tmp_path, chain=("sft", "grpo"))
    assert layout.stage(["sft"]) == layout.stage("sft") == tmp_path / "sft"
    assert layout.stage(["sft", "grpo"]) == tmp_path / "grpo"  # the chain's own GRPO
    assert layout.stage(["sft", "dpo"]) == tmp_path / "sft-dpo"
    assert layout.stage(["sft", "dpo", "grpo"]) == tmp_path / "sft-dpo-grpo"
    assert RunLayout(tmp_path, chain=("sft", "dpo", "grpo")).stage(["sft", "grpo"]) == tmp_path / "sft-grpo"


def test_the_model_a_profile_produced_is_its_last_finished_stage(tiny_profile, runs):
    profile = tiny_profile()
    layout = run_layout(profile)
    assert produced_stage(profile) is None and produced_adapter(profile) is None
    finish(layout, "sft")
    assert produced_adapter(profile) == layout.adapter("sft")
    layout.adapter("grpo").mkdir(parents=True)  # a GRPO run still training: no run.json, no weights
    assert produced_stage(profile).name == "sft"
    (layout.adapter("grpo") / "adapter_model.safetensors").write_bytes(b"weights")
    (layout.stage("grpo") / "run.json").write_text("{}")
    assert produced_stage(profile).name == "grpo"
    assert produced_adapter(profile, "sft") == layout.adapter("sft")


def test_a_stage_named_but_not_finished_is_refused_with_the_command_that_trains_it(tiny_profile, runs):
    profile = tiny_profile(name="half")
    finish(run_layout(profile), "sft")
    with pytest.raises(ProfileError) as err:
        produced_stage(profile, "grpo")
    assert str(err.value) == (f"--stage grpo: no finished grpo run at {runs / 'half' / 'grpo'} "
                              f"(run workings grpo --profile {profile.path})")
    sft_only = tiny_profile({"training": {"stages": ["sft"]}}, name="short")
    with pytest.raises(ProfileError, match=r"--stage: grpo is not a stage of profile short \(sft\)"):
        produced_stage(sft_only, "grpo")


def test_the_machine_checks_read_the_options_of_the_stage_about_to_run(tiny_profile):
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed here: nothing to refuse")
    from workings.train.runs import check_environment

    profile = tiny_profile({"grpo": {"use_liger_kernel": True}})
    check_environment(profile, "sft")  # SFT does not ask for it
    with pytest.raises(ProfileError, match="grpo.use_liger_kernel: needs liger-kernel"):
        check_environment(profile, "grpo")
