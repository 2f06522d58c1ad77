"""The preference stage (workings prefer): on-policy pairs, DPO and SimPO, in the chain of stages."""

import doctest
import json

import pytest

from workings.cli import main
from workings.config.schema import ProfileError


@pytest.fixture
def small_prefer(small_run):
    """A preference run of seconds after ``small_run``'s SFT: 8 synthetic prompts, 2 sampled replies each; the
    random model is never right, so the row's worked solution is chosen over a sampled reply; 2 steps of 2 pairs."""
    return {**small_run,
            "preference": {"sources": ["synthetic"], "candidates": 8, "samples": 2, "gold_chosen": True,
                           "max_new_tokens": 6},
            "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1.0e-3, "save_steps": 1,
                    "beta": 0.1, "loss_type": ["sigmoid"]},
            "simpo": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1.0e-3, "save_steps": 1}}


def test_the_docstring_examples_hold():
    from workings.train import prefer

    result = doctest.testmod(prefer, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pairs_put_a_right_strict_reply_over_a_wrong_or_malformed_one_and_say_why_a_prompt_made_none():
    from workings.train.prefer import preference_pairs

    asked = [{"id": str(i), "source": "gsm", "layout": layout, "prompt": f"P{i}"}
             for i, layout in enumerate(["project", "project", "seed", "seed"])]
    right = "<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>"
    wrong = "<reasoning>2 + 2 = 5</reasoning>\n<answer>5</answer>"
    malformed = "The answer is 4."
    reply = lambda text, ok, strict: {"text": text, "right": ok, "strict": strict}  # noqa: E731
    replies = [[reply(right, True, True), reply(wrong, False, True), reply(malformed, True, False)],
               [reply(wrong, False, True)] * 3,
               [reply(right, True, True)] * 3,
               [reply(malformed, True, False), reply(right, True, True)]]
    pairs, report = preference_pairs(asked, replies, per_prompt=2)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("0", right + "<end_of_turn>", wrong + "<end_of_turn>"), ("0", right + "<end_of_turn>", malformed + "<end_of_turn>"),
        ("3", right + "<end_of_turn>", malformed + "<end_of_turn>")]
    assert report["by_source_layout"] == {"gsm/project": {"prompts": 2, "pairs": 2, "no reply right and strict": 1},
                                          "gsm/seed": {"prompts": 2, "pairs": 1, "every reply right and strict": 1}}
    gold_pairs, gold_report = preference_pairs(asked, replies, per_prompt=1, gold=["G0", "G1", "G2", "G3"])
    assert [(p["id"], p["chosen"], p["chosen_from"]) for p in gold_pairs][1] == ("1", "G1<end_of_turn>", "gold")
    assert gold_report["by_source_layout"]["gsm/project"]["pairs with the worked solution chosen"] == 1


@pytest.mark.parametrize(("sections", "message"), [
    ({"dpo": {"los_type": "ipo"}}, "dpo.los_type: not an option of trl.DPOConfig; did you mean loss_type"),
    ({"dpo": {"output_dir": "x"}}, "dpo.output_dir: set by the run, not the profile (the run folder (--out))"),
    ({"simpo": {"loss_type": "sigmoid"}}, "simpo.loss_type: set by the run, not the profile (the simpo stage is CPO's"),
    ({"preference": {"samples": 1}}, "preference.samples: must be at least 2 (one reply cannot be both chosen and rejected)"),
    ({"preference": {"layouts": ["chatml"]}}, "preference.layouts: unknown layout 'chatml'"),
    ({"training": {"stages": ["dpo", "sft"]}}, "training.stages: dpo continues an adapter and cannot come first"),
])
def test_an_impossible_preference_setting_is_refused_naming_its_key(tiny_profile, sections, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_profile(sections)


def test_simpo_is_cpos_simpo_loss_without_the_behaviour_cloning_term_and_dpo_keeps_trls_loss_names(tiny_profile):
    profile = tiny_profile({"dpo": {"loss_type": ["sigmoid", "sft"]}})
    simpo = profile.simpo_args()
    assert (simpo.loss_type, simpo.cpo_alpha, simpo.beta, simpo.simpo_gamma) == ("simpo", 0.0, 2.0, 1.0)
    assert profile.dpo_args().loss_type == ["sigmoid", "sft"]
    assert profile.dpo_args().max_length == profile.sft_args().max_length  # taken from sft unless set


def test_prefer_trains_dpo_on_pairs_from_the_sft_adapters_replies_and_grpo_continues_it(tiny_profile, small_prefer, runs,
                                                                                         capsys, tmp_path):
    from safetensors.torch import load_file

    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "dpo", "grpo"]},
                "reinforcement": {"sources": ["synthetic"], "candidates": 8, "difficulty_samples": 0, "overlong_buffer": 2},
                "grpo": {"max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 4}}
    profile = tiny_profile(settings, name="pref")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["prefer", "--profile", str(profile.path), "--quiet"]) == 0
    out = runs / "pref" / "dpo"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{out / 'adapter'}: 2 DPO steps in ") and "on 8 pairs (of 8 prompts); loss 0.693 ->" in line
    summary = json.loads((out / "run.json").read_text())
    assert summary["stage"] == "dpo" and summary["path"] == ["sft", "dpo"]
    assert summary["started_from"]["adapter"] == str(runs / "pref" / "sft" / "adapter")
    assert summary["pairs"]["by_source_layout"] == {
        "synthetic/project": {"prompts": 3, "pairs": 3, "pairs with the worked solution chosen": 3},
        "synthetic/question_only": {"prompts": 3, "pairs": 3, "pairs with the worked solution chosen": 3},
        "synthetic/seed": {"prompts": 2, "pairs": 2, "pairs with the worked solution chosen": 2}}
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 and all(p["chosen"].startswith("<reasoning>") for p in pairs)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (out / "tensorboard").is_dir() and (out / "README.md").read_text().startswith("# DPO run of profile `pref`")
    sft, dpo = (load_file(str(d / "adapter_model.safetensors")) for d in (runs / "pref" / "sft" / "adapter", out / "adapter"))
    assert sft.keys() == dpo.keys() and any((sft[k] != dpo[k]).any() for k in sft)
    # GRPO, after DPO in this chain, continues DPO's adapter; the export takes the last stage and tells all three
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    grpo = json.loads((runs / "pref" / "grpo" / "run.json").read_text())
    assert grpo["path"] == ["sft", "dpo", "grpo"] and grpo["started_from"]["adapter"] == str(out / "adapter")
    assert main(["export", "--profile", str(profile.path), "--to", str(tmp_path / "handin"), "--quiet"]) == 0
    card = (tmp_path / "handin" / "README.md").read_text()
    assert "after its stages sft -> dpo -> grpo." in card
    assert "### 2. dpo\n\nDPO with TRL's `DPOTrainer` (loss sigmoid), continuing the adapter of the sft stage" in card
    assert "continuing the adapter of the dpo stage" in card


def test_the_simpo_stage_runs_when_the_chain_names_it(tiny_profile, small_prefer, runs, capsys):
    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "simpo"]}}
    profile = tiny_profile(settings, name="simpo")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["prefer", "--profile", str(profile.path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{runs / 'simpo' / 'simpo' / 'adapter'}: 2 SIMPO steps")
    summary = json.loads((runs / "simpo" / "simpo" / "run.json").read_text())
    assert summary["stage"] == "simpo" and set(summary["last_logged"]) == {"loss", "reward_margin", "reward_accuracy"}


def pair_margin(profile, adapter, tokenizer, pairs):
    """Mean over pairs of log p(chosen) - log p(rejected) under the base with ``adapter``."""
    import torch

    from workings.models.loading import load_for_inference

    model = load_for_inference(profile, adapter)

    def logp(prompt, reply):
        prompt_ids = tokenizer(prompt)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + reply_ids])).logits[0, len(prompt_ids) - 1:-1].float()
        return logits.log_softmax(-1).gather(1, torch.tensor(reply_ids)[:, None]).sum().item()

    return sum(logp(p["prompt"], p["chosen"]) - logp(p["prompt"], p["rejected"]) for p in pairs) / len(pairs)


def test_dpo_steps_raise_the_chosen_replies_over_the_rejected_ones(tiny_profile, small_prefer, runs, tokenizer):
    """Measured outside TRL, on the pairs the run made: the policy's log-probability margin of chosen
    over rejected grows from the adapter it started from. A sign error (rejected over chosen) or a
    step that moved nothing fails it."""
    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "dpo"]}}
    profile = tiny_profile(settings, name="margin")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["prefer", "--profile", str(profile.path), "--quiet"]) == 0
    pairs = [json.loads(line) for line in (runs / "margin" / "dpo" / "pairs.jsonl").read_text().splitlines()]
    before = pair_margin(profile, runs / "margin" / "sft" / "adapter", tokenizer, pairs)
    after = pair_margin(profile, runs / "margin" / "dpo" / "adapter", tokenizer, pairs)
    assert after > before, f"the margin of chosen over rejected fell: {before:.3f} -> {after:.3f}"


def test_prefer_without_the_previous_adapter_says_to_train_it_first(tiny_profile, small_prefer, runs, capsys):
    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "dpo"]}}
    profile = tiny_profile(settings, name="cold")
    assert main(["prefer", "--profile", str(profile.path)]) == 2
    assert f"no SFT adapter at {runs / 'cold' / 'sft' / 'adapter'}: train first" in capsys.readouterr().err


def test_no_pairs_is_an_error_naming_what_to_change_and_leaves_no_run(tiny_profile, small_prefer, runs, capsys):
    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "dpo"]},
                "preference": {**small_prefer["preference"], "gold_chosen": False}}
    profile = tiny_profile(settings, name="nopairs")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["prefer", "--profile", str(profile.path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "preference: no pairs: of 16 sampled replies 0 were right and strict" in err and "preference.gold_chosen: true" in err
    assert not (runs / "nopairs" / "dpo" / "adapter").exists()


def test_prefer_for_a_profile_whose_chain_has_no_preference_stage_says_how_to_add_it(tiny_profile, small_prefer, runs,
                                                                                     capsys):
    profile = tiny_profile(small_prefer, name="nochain")  # the demo's chain: sft -> grpo
    assert main(["prefer", "--profile", str(profile.path)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "training.stages: dpo is not in the chain (sft -> grpo); add it there, or name the adapter it starts from with --adapter")


def test_a_resumed_preference_run_trains_on_the_pairs_it_made_and_its_export_card_tells_the_dpo_stage(
        tiny_profile, small_prefer, runs, tmp_path):
    from transformers import TrainerCallback

    from workings.train.prefer import train_dpo

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # before step 2's checkpoint is saved
                raise RuntimeError("killed in step 2")

    settings = {**small_prefer, "training": {**small_prefer["training"], "stages": ["sft", "dpo"]}}
    profile = tiny_profile(settings, name="again")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    mix, out = runs / "again" / "mix", runs / "again" / "dpo"
    with pytest.raises(RuntimeError, match="killed in step 2"):
        train_dpo(profile, mix, out, progress=False, callbacks=[Stop()])
    made = (out / "pairs.jsonl").read_text()
    resumed = train_dpo(profile, mix, out, resume=True, progress=False).summary
    assert resumed["resumed_from"] == "checkpoint-1" and resumed["steps"] == 2
    assert (out / "pairs.jsonl").read_text() == made and resumed["pairs"]["pairs"] == 8
    assert main(["export", "--profile", str(profile.path), "--to", str(tmp_path / "dpo-export"), "--quiet"]) == 0
    card = (tmp_path / "dpo-export" / "README.md").read_text()
    assert "after its stages sft -> dpo." in card and "2 steps on 8 pairs of its own sampled" in card
    assert "| synthetic/seed | 2 | 2 | 2 | 0 | 0 |" in card  # the pairs per layout, from run.json
