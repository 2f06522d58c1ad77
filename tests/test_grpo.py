"""GRPO after SFT: the profile sections, the prompts, the command and its run folder."""

import json

import pytest

from workings.cli import main
from workings.config.schema import ProfileError


@pytest.fixture
def small_grpo(small_run):
    """A GRPO run of seconds after ``small_run``'s SFT: 16 synthetic prompts, 2 steps of 2 prompts x 4 replies."""
    return {**small_run,
            "reinforcement": {"sources": ["synthetic"], "candidates": 16, "difficulty_samples": 0, "overlong_buffer": 2},
            "grpo": {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 4,
                     "learning_rate": 1.0e-3, "save_steps": 1, "logging_steps": 1, "temperature": 1.0}}


def test_the_grpo_section_takes_the_sft_sections_precision_unless_it_sets_its_own(tiny_profile):
    assert tiny_profile({"sft": {"bf16": False}}).grpo_args().bf16 is False
    assert tiny_profile({"sft": {"bf16": False}, "grpo": {"bf16": True, "max_completion_length": 64}}).grpo_args().bf16 is True


@pytest.mark.parametrize(("grpo", "reinforcement", "message"), [
    ({"reward_weights": [1.0, 2.0]}, {}, "grpo.reward_weights: 2 weights for 5 rewards (correctness, strict_format"),
    ({"num_generation": 4}, {}, "grpo.num_generation: not an option of trl.GRPOConfig; did you mean num_generations"),
    ({"output_dir": "x"}, {}, "grpo.output_dir: set by the run, not the profile (the run folder (--out))"),
    ({"max_completion_length": 8}, {"overlong_buffer": 16}, "reinforcement.overlong_buffer: 16 is longer than grpo.max_completion_length (8)"),
    ({}, {"rewards": ["correctness", "length"]}, "reinforcement.rewards: unknown reward 'length'; known: correctness"),
    ({}, {"layouts": ["chatml"]}, "reinforcement.layouts: unknown layout 'chatml'; known: project, question_only, seed"),
    ({}, {"difficulty_samples": 1}, "reinforcement.difficulty_samples: must be 0 (no selection) or at least 2"),
])
def test_an_impossible_grpo_setting_is_refused_naming_its_key(tiny_profile, grpo, reinforcement, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_profile({"grpo": grpo, "reinforcement": reinforcement})


def test_candidate_prompts_take_the_layouts_in_turn_with_one_bos(tiny_profile, small_grpo, tokenizer):
    from datasets import Dataset

    from workings.train.prompts import candidate_prompts

    profile = tiny_profile(small_grpo)
    rows = Dataset.from_list([{"id": f"r{i}", "source": "synthetic" if i != 2 else "medical", "question": f"Q{i}?",
                               "answer": str(i), "graded": i != 2} for i in range(5)])
    prompts = candidate_prompts(profile, rows, tokenizer, profile.reinforcement, "reinforcement")
    assert sorted(p["id"] for p in prompts) == ["r0", "r1", "r3", "r4"]  # the free-text row is not a candidate
    assert [p["layout"] for p in prompts] == ["project", "question_only", "seed", "project"]
    assert all(not p["prompt"].startswith(tokenizer.bos_token) for p in prompts)
    assert tokenizer(prompts[0]["prompt"])["input_ids"].count(tokenizer.bos_token_id) == 1


def test_a_source_the_mix_does_not_have_is_refused_with_the_ones_it_has(tiny_profile, small_grpo, tokenizer):
    from datasets import Dataset

    from workings.train.prompts import candidate_prompts

    profile = tiny_profile({**small_grpo, "reinforcement": {**small_grpo["reinforcement"], "sources": ["gsm8k"]}})
    rows = Dataset.from_list([{"id": "r0", "source": "synthetic", "question": "Q?", "answer": "1", "graded": True}])
    with pytest.raises(ProfileError, match="reinforcement.sources: 'gsm8k' is not a source of the mix \\(its sources: synthetic\\)"):
        candidate_prompts(profile, rows, tokenizer, profile.reinforcement, "reinforcement")


def test_selection_reports_what_it_dropped_per_layout():
    from workings.train.grpo import select_by_difficulty

    rows = [{"id": str(i), "layout": layout} for i, layout in enumerate(["project", "project", "seed", "seed"])]
    kept, report = select_by_difficulty(rows, [2, 1, 0, 1], samples=2)
    assert [k["pass_rate"] for k in kept] == [0.5, 0.5]
    assert report["by_layout"] == {"project": {"kept": 1, "never solved": 0, "always solved": 1},
                                   "seed": {"kept": 1, "never solved": 1, "always solved": 0}}


def test_grpo_continues_the_sft_adapter_and_logs_every_reward_each_step(tiny_profile, small_grpo, runs, capsys):
    from safetensors.torch import load_file

    profile = tiny_profile(small_grpo, name="rl")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    out = runs / "rl" / "grpo"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{out / 'adapter'}: 2 GRPO steps in ") and "on 16 prompts (of 16 candidates)" in line
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 2 and summary["started_from"]["adapter"] == str(runs / "rl" / "sft" / "adapter")
    history = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in h]
    assert [h["step"] for h in history] == [1, 2]
    for name in ("correctness", "strict_format", "tag_structure", "shown_work", "overlong"):
        assert all(f"rewards/{name}/mean" in h for h in history)
    assert all({"frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio"} <= set(h) for h in history)
    assert len((out / "prompts.jsonl").read_text().splitlines()) == 16
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # A random model earns the same rewards in every reply of a group: no advantage, no step. So the
    # adapter GRPO saved is the SFT adapter it started from, weight for weight (not a fresh one).
    sft, rl = (load_file(str(d / "adapter_model.safetensors")) for d in (runs / "rl" / "sft" / "adapter", out / "adapter"))
    assert sft.keys() == rl.keys() and all((sft[k] == rl[k]).all() for k in sft)
    assert all(h["frac_reward_zero_std"] == 1.0 for h in history)


def test_a_finished_grpo_run_is_kept_unless_asked(tiny_profile, small_grpo, runs, capsys):
    profile = tiny_profile(small_grpo, name="again")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 1
    assert "already holds checkpoint-2: add --resume to continue it or --overwrite" in capsys.readouterr().err
    assert main(["grpo", "--profile", str(profile.path), "--resume", "--quiet"]) == 0
    assert "already finished (2 of 2 steps); left unchanged" in capsys.readouterr().out


def test_grpo_without_an_sft_adapter_says_to_train_first(tiny_profile, small_grpo, runs, capsys):
    profile = tiny_profile(small_grpo, name="untrained")
    assert main(["grpo", "--profile", str(profile.path)]) == 2
    assert f"no SFT adapter at {runs / 'untrained' / 'sft' / 'adapter'}: train first" in capsys.readouterr().err


def test_prompts_the_model_never_solves_are_dropped_and_too_few_left_is_an_error(tiny_profile, small_grpo, runs, capsys):
    settings = {**small_grpo, "reinforcement": {**small_grpo["reinforcement"], "difficulty_samples": 2}}
    profile = tiny_profile(settings, name="hard")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 1
    assert "reinforcement: 0 prompts kept, fewer than one generation batch (2 prompts)" in capsys.readouterr().err


def test_grpo_trains_the_adapter_in_float32_over_a_4bit_base(tiny_profile, small_grpo, runs):
    import torch

    from workings.train.grpo import build_grpo_trainer
    from workings.train.runs import ensure_profile_mix

    profile = tiny_profile(small_grpo, name="dtype")
    assert profile.quantization is not None
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    trainer, _ = build_grpo_trainer(profile, ensure_profile_mix(profile, progress=False), runs / "dtype" / "grpo",
                                    runs / "dtype" / "sft" / "adapter", progress=False)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}


def test_grpo_rollouts_are_drawn_by_the_nucleus_sampler_and_differ_within_a_group(tiny_profile, small_grpo, runs):
    """generate decodes greedily and takes the sampler's draws: were the sampler lost, the group's
    replies would be one greedy reply eight times."""
    import torch

    from workings.core.chat import render_prompt
    from workings.train.grpo import build_grpo_trainer
    from workings.train.runs import ensure_profile_mix

    profile = tiny_profile(small_grpo, name="rollouts")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    trainer, _ = build_grpo_trainer(profile, ensure_profile_mix(profile, progress=False), runs / "rollouts" / "grpo",
                                    runs / "rollouts" / "sft" / "adapter", progress=False)
    assert trainer.generation_config.do_sample is False
    tokenizer = trainer.processing_class
    prompt = tokenizer(render_prompt("What is 12 + 30?", tokenizer), add_special_tokens=False, return_tensors="pt")
    replies = []
    for _ in range(2):
        torch.manual_seed(0)
        out = trainer.model.generate(input_ids=prompt["input_ids"].repeat(8, 1), attention_mask=prompt["attention_mask"].repeat(8, 1),
                                     generation_config=trainer.generation_config)
        replies.append([tuple(row) for row in out[:, prompt["input_ids"].shape[1]:].tolist()])
    assert len(set(replies[0])) > 1
    assert replies[0] == replies[1]  # the draws come from torch's generator: a seed repeats them


def test_the_share_of_bfloat16_weights_a_step_cannot_move():
    import torch

    from workings.models.qlora import bfloat16_frozen_share

    weights = torch.tensor([1.0, 0.01, 0.0001, -1.0])  # half a bfloat16 unit: 2**-9, 2**-16, 2**-23, 2**-9
    assert bfloat16_frozen_share(weights, 1e-3) == 0.5  # 1e-3 < 2**-9 (0.00195): the two weights of size 1 stay
    assert bfloat16_frozen_share(weights, 1e-2) == 0.0


def test_sft_and_grpo_are_compared_greedy_on_every_benchmark_and_on_the_largest_sampled_and_in_every_layout(
        tiny_profile, small_grpo, runs):
    from workings.config.loading import run_dir
    from workings.evaluation.benchmarks import Benchmark
    from workings.evaluation.compare import GRPO, SFT, compare_with_sft

    profile = tiny_profile(small_grpo, name="cmp")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    rows = [{"id": str(i), "question": f"Ava has {i} pens. She finds 2 more. How many pens?", "gold": str(i + 2)}
            for i in range(3)]
    benchmarks = [Benchmark("small", rows[:1]), Benchmark("large", rows), Benchmark("notes", rows, graded=False)]
    sft, grpo = run_dir(profile) / "sft" / "adapter", run_dir(profile) / "grpo" / "adapter"
    comparison = compare_with_sft(profile, benchmarks, sft, grpo, layouts=["project", "seed"])
    assert comparison.largest == "large"
    assert set(comparison.greedy) == {SFT, GRPO} and set(comparison.greedy[GRPO]) == {"small", "large", "notes"}
    assert [len(comparison.sampled[m]) for m in (SFT, GRPO)] == [3, 3]
    assert set(comparison.layouts) == {"project", "seed"}
    # The project layout greedy is the same question set as the greedy run: read back, not asked again.
    assert comparison.layouts["project"][GRPO] == comparison.greedy[GRPO]["large"]
    assert [t.name for t in comparison.targets()] == [
        "accuracy, greedy, GRPO vs SFT", "strict format (GRPO, greedy)", "accuracy, sampled, GRPO vs SFT",
        "strict format in every layout (GRPO, greedy)"]


def test_a_comparison_without_a_graded_benchmark_is_refused_before_loading(tiny_profile, small_grpo):
    from workings.evaluation.benchmarks import Benchmark
    from workings.evaluation.compare import compare_with_sft

    profile = tiny_profile(small_grpo, name="ungraded")
    with pytest.raises(ValueError, match="ungraded: no graded benchmark to compare SFT and GRPO on"):
        compare_with_sft(profile, [Benchmark("notes", [{"id": "1", "question": "q", "gold": None}], graded=False)],
                         "missing-sft", "missing-grpo")


def two_process_profile(profile, path, **grpo):
    """``profile``'s file for two processes, each taking half of its replies per step."""
    import yaml

    raw = yaml.safe_load(profile.path.read_text())
    raw["name"], raw["training"] = path.stem, {**raw.get("training", {}), "processes": 2}
    raw["grpo"] = {**raw["grpo"], "per_device_train_batch_size": raw["grpo"]["per_device_train_batch_size"] // 2, **grpo}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_processes_run_grpo_on_the_prompts_one_process_chooses_and_write_one_run_folder(
        tiny_profile, small_grpo, runs, tmp_path, launch_two):
    """Two processes, each taking half of the single process's 8 replies per step, over the single
    process's finished run (``--overwrite``): the same prompts, and only the main process replaces
    the folder. (Replies are sampled from per-process seeds, so losses are not compared step by step
    as for SFT.)"""
    one = tiny_profile(small_grpo, name="one")
    assert main(["train", "--profile", str(one.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(one.path), "--quiet"]) == 0
    out = runs / "one" / "grpo"
    prompts = (out / "prompts.jsonl").read_text()
    path = two_process_profile(one, tmp_path / "two.yaml")
    done = launch_two("grpo", "--profile", str(path), "--adapter", str(runs / "one" / "sft" / "adapter"),
                      "--mix", str(runs / "one" / "mix"), "--out", str(out), "--overwrite", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["profile"] == "two"
    assert (out / "prompts.jsonl").read_text() == prompts
    history = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in h]
    assert [h["step"] for h in history] == [1, 2]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["grpo", "mix", "sft"]  # no half-written folder left


def test_two_processes_estimate_difficulty_in_shares_and_refuse_as_one_process_does(tiny_profile, small_grpo, runs,
                                                                                    tmp_path, capsys, launch_two):
    settings = {**small_grpo, "reinforcement": {**small_grpo["reinforcement"], "difficulty_samples": 2}}
    one = tiny_profile(settings, name="hard")
    assert main(["train", "--profile", str(one.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(one.path), "--quiet"]) == 1
    alone = capsys.readouterr().err.strip().splitlines()[-1]
    path = two_process_profile(one, tmp_path / "hard2.yaml")
    done = launch_two("grpo", "--profile", str(path), "--adapter", str(runs / "hard" / "sft" / "adapter"),
                      "--mix", str(runs / "hard" / "mix"), "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 1
    assert alone.split(": reinforcement: ")[1] in done.stderr  # "0 prompts kept, fewer than one generation batch ..."


def test_a_resumed_grpo_run_reports_its_prompts_and_whole_time_as_an_unbroken_one_and_has_a_card(tiny_profile, small_grpo,
                                                                                               runs):
    from transformers import TrainerCallback

    from workings.train.grpo import train_grpo

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # before step 2's checkpoint is saved
                raise RuntimeError("killed in step 2")

    profile = tiny_profile(small_grpo, name="resumed")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    mix, out = runs / "resumed" / "mix", runs / "resumed" / "grpo"
    with pytest.raises(RuntimeError, match="killed in step 2"):
        train_grpo(profile, mix, out, progress=False, callbacks=[Stop()])
    resumed = train_grpo(profile, mix, out, resume=True, progress=False).summary
    assert resumed["resumed_from"] == "checkpoint-1"
    assert resumed["prompts"] == {"candidates": 16, "samples": 0, "kept": 16}
    assert resumed["seconds"] > resumed["seconds_this_session"] > 0
    card = (out / "README.md").read_text()
    assert card.startswith("# GRPO run of profile `resumed`") and "16 prompts, all candidates" in card
    assert f"from the\nSFT adapter `{runs / 'resumed' / 'sft' / 'adapter'}`" in card


def reply_log_probs(profile, adapter, tokenizer, replies):
    """The summed log-probability of each (prompt, completion ids) reply under the base with ``adapter``."""
    import torch

    from workings.models.loading import load_for_inference

    model = load_for_inference(profile, adapter)
    totals = []
    with torch.no_grad():
        for prompt, completion in replies:
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = torch.tensor([prompt_ids + completion])
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
            totals.append(logits.log_softmax(-1).gather(1, torch.tensor(completion)[:, None]).sum().item())
    return totals


def test_one_grpo_step_moves_the_policy_toward_the_replies_rewarded_above_their_group(tiny_profile, small_grpo, runs,
                                                                                       tokenizer, monkeypatch):
    """Every group has reward spread (a reply's reward is the share of its tokens with an even id, which
    a random model's replies differ in); after one step the replies rewarded above their group's mean
    are more likely, relative to those below it, than under the adapter GRPO started from. A sign
    error in the advantage or the loss, or a step that moved nothing, fails it."""
    import workings.train.grpo as grpo

    seen = []

    def correctness(prompts, completions, completion_ids, **kwargs):  # named as the profile's reward
        rewards = [sum(t % 2 == 0 for t in ids) / len(ids) for ids in completion_ids]
        seen.extend(zip(prompts, completion_ids, rewards))
        return rewards

    monkeypatch.setattr(grpo, "reward_functions", lambda names, **kwargs: [correctness])
    settings = {**small_grpo, "reinforcement": {**small_grpo["reinforcement"], "rewards": ["correctness"]},
                "grpo": {**small_grpo["grpo"], "max_steps": 1, "reward_weights": [1.0], "beta": 0.0,
                         "learning_rate": 1.0e-2, "max_completion_length": 6}}
    profile = tiny_profile(settings, name="learns")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    groups = [seen[i:i + 4] for i in range(0, len(seen), 4)]  # num_generations replies to one prompt, in turn
    assert len(groups) == 2 and all(len({p for p, _, _ in g}) == 1 for g in groups)
    assert all(len({r for _, _, r in g}) > 1 for g in groups), "every group needs reward spread for the test to say anything"
    advantages = [r - sum(x for _, _, x in g) / len(g) for g in groups for _, _, r in g]
    replies = [(p, list(ids)) for p, ids, _ in seen]
    before = reply_log_probs(profile, runs / "learns" / "sft" / "adapter", tokenizer, replies)
    after = reply_log_probs(profile, runs / "learns" / "grpo" / "adapter", tokenizer, replies)
    moved = sum(a * (y - x) for a, x, y in zip(advantages, before, after))
    assert moved > 0, f"the step moved the policy away from the better replies ({moved:.4g})"


def test_a_grpo_run_is_the_model_evaluate_ask_and_export_take_and_its_card_describes_the_chain(
        tiny_profile, small_grpo, runs, capsys, tmp_path):
    profile = tiny_profile(small_grpo, name="chain")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["grpo", "--profile", str(profile.path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", "--profile", str(profile.path), "--to", str(tmp_path / "last"), "--quiet"]) == 0
    assert f"adapter of {runs / 'chain' / 'grpo' / 'adapter'} exported to" in capsys.readouterr().out
    card = (tmp_path / "last" / "README.md").read_text()
    assert "of the `chain` profile, after its stages sft -> grpo." in card
    assert "### 1. sft\n\nQLoRA SFT with TRL's `SFTTrainer`" in card and "### 2. grpo\n\nGRPO with TRL's `GRPOTrainer`" in card
    sft_digest = json.loads((runs / "chain" / "grpo" / "run.json").read_text())["started_from"]["digest"]
    assert f"continuing the adapter of the sft stage (weights digest\n{sft_digest})" in card
    assert "2 steps of 2 on 16 prompts" in card and "- grpo\n" in card.split("---")[1]  # a tag in the metadata
    assert main(["export", "--profile", str(profile.path), "--stage", "sft", "--to", str(tmp_path / "first"), "--quiet"]) == 0
    assert f"adapter of {runs / 'chain' / 'sft' / 'adapter'} exported to" in capsys.readouterr().out
    assert "after its stages" not in (tmp_path / "first" / "README.md").read_text()
    assert main(["evaluate", "--profile", str(profile.path), "--tuned-only", "--quiet"]) == 0
    assert f"{runs / 'chain' / 'grpo' / 'adapter'} -> predictions in" in capsys.readouterr().out
    from workings.cli import build_parser, chosen_adapter

    asked = build_parser().parse_args(["ask", "What is 2 + 3?", "--profile", str(profile.path)])
    assert chosen_adapter(asked, profile) == runs / "chain" / "grpo" / "adapter"
    asked = build_parser().parse_args(["ask", "What is 2 + 3?", "--stage", "base"])
    assert chosen_adapter(asked, profile) is None
    assert main(["ask", "What is 2 + 3?", "--profile", str(profile.path), "--stage", "sft", "--adapter", "x"]) == 2
    assert "--adapter and --stage sft both name the model: give one" in capsys.readouterr().err
