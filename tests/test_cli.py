"""The command line: each command's output, its errors in one line, and checks before anything loads."""

import json
import subprocess
import sys

import pytest
import yaml

from workings.cli import main


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"workings {command}: error: "), err
    return err[0].removeprefix(f"workings {command}: error: ")


def test_build_mix_writes_the_mix_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "mix"
    assert main(["build-mix", "--profile", "demo", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["profile"], report["model"]) == ("demo", "tiny")
    assert (out / "train" / "state.json").is_file() and (out / "heldout" / "state.json").is_file()
    printed = capsys.readouterr().out
    assert f"{report['totals']['train_rows']} training rows, {report['totals']['heldout']} held out" in printed


def test_every_command_runs_the_profile_named_by_the_environment(tiny_profile, small_run, runs, monkeypatch, capsys):
    profile = tiny_profile(small_run, name="from-env")
    monkeypatch.setenv("WORKINGS_PROFILE", str(profile.path))
    assert main(["build-mix", "--quiet"]) == 0
    assert json.loads((runs / "from-env" / "mix" / "report.json").read_text())["profile"] == "from-env"


def test_an_unknown_profile_is_one_line_and_exit_1(capsys):
    assert main(["build-mix", "--profile", "nope"]) == 1
    assert one_line_error(capsys, "build-mix").startswith("nope: no such profile (known: a100, a100-bf16, a100-fast, a100-fsdp, demo")


def test_debug_shows_the_traceback_instead(capsys):
    from workings.config.schema import ProfileError

    with pytest.raises(ProfileError, match="nope: no such profile"):
        main(["build-mix", "--profile", "nope", "--debug"])


def test_an_empty_question_is_a_usage_error_before_anything_loads(capsys, monkeypatch):
    import workings.models.loading

    monkeypatch.setattr(workings.models.loading, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["ask", "  "]) == 2
    assert one_line_error(capsys, "ask") == "the question is empty"


def test_ask_checks_the_adapter_folder_before_loading_the_base(tmp_path, capsys, monkeypatch):
    import workings.models.loading

    monkeypatch.setattr(workings.models.loading, "load_base_model", lambda *a, **k: pytest.fail("loaded the base"))
    assert main(["ask", "What is 2 + 3?", "--adapter", str(tmp_path / "missing")]) == 1
    assert one_line_error(capsys, "ask") == f"{tmp_path / 'missing'}: no such adapter folder"


def test_evaluate_checks_the_adapter_before_the_base_answers_anything(tiny_profile, small_run, runs, tmp_path, capsys, monkeypatch):
    import workings.evaluation.runs

    monkeypatch.setattr(workings.evaluation.runs, "run_benchmarks", lambda *a, **k: pytest.fail("asked a benchmark"))
    (tmp_path / "empty").mkdir()
    profile = tiny_profile(small_run)
    assert main(["evaluate", "--profile", str(profile.path), "--adapter", str(tmp_path / "empty")]) == 1
    assert "no adapter_config.json or adapter_model.safetensors; is this a LoRA adapter folder?" in one_line_error(capsys, "evaluate")


def test_a_cuda_profile_on_a_cpu_machine_fails_before_any_download(capsys, monkeypatch):
    import torch

    import workings.models.loading

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(workings.models.loading, "load_tokenizer", lambda *a, **k: pytest.fail("fetched a tokenizer"))
    assert main(["train", "--profile", "a100"]) == 1
    assert "a100.yaml: training.device: cuda, but this machine has no CUDA device" in one_line_error(capsys, "train")


def test_an_interrupted_run_says_what_was_kept_and_how_to_continue(tiny_profile, small_run, runs, capsys, monkeypatch):
    import workings.train.sft

    profile = tiny_profile(small_run, name="stopped")

    def interrupted(*args, **kwargs):
        (runs / "stopped" / "sft" / "checkpoint-2").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(workings.train.sft, "train", interrupted)
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == (
        f"workings train: interrupted; checkpoints are kept in {runs / 'stopped' / 'sft'} (newest checkpoint-2); "
        f"continue with: workings train --profile {profile.path} --resume")


def test_train_prints_one_line_with_rounded_losses_and_quiet_means_quiet(tiny_profile, small_run, runs, capfd):
    profile = tiny_profile(small_run, name="quiet")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    out, err = capfd.readouterr()
    (line,) = out.strip().splitlines()
    assert line.startswith(f"{runs / 'quiet' / 'sft' / 'adapter'}: 4 steps in ")
    held_out = line.split("held-out loss ")[1].split(",")[0]
    assert len(held_out.split(".")[1]) == 3
    assert err == ""


def test_evaluate_saves_its_table_and_names_predictions_by_the_model(tiny_profile, small_run, runs, capsys):
    import pandas as pd

    from workings.evaluation.runs import model_label

    profile = tiny_profile(small_run, name="scored")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(profile.path), "--quiet"]) == 0
    out = runs / "scored" / "eval"
    first = model_label(runs / "scored" / "sft" / "adapter")
    folders = sorted(p.name for p in (out / "predictions").iterdir())
    assert folders == ["base", first] and first.startswith("sft-")
    # the table names the adapter it measured, and its CSV holds numbers in columns of their own
    table = pd.read_csv(out / f"results-{first}.csv")
    assert list(table.columns[:7]) == ["benchmark", "model", "n", "graded", "strict_format_pct",
                                       "strict_format_ci_low_pct", "strict_format_ci_high_pct"]
    assert set(table["model"]) == {"base", first} and table["strict_format_pct"].dtype == float
    text = (out / f"results-{first}.md").read_text()
    assert f"- `{first}`: the adapter {runs / 'scored' / 'sft' / 'adapter'} (weights sha256 " in text
    # a second adapter gets files of its own instead of overwriting the first one's
    second = profile.path.with_name("second.yaml")
    second.write_text(yaml.safe_dump({"extends": str(profile.path), "name": "scored", "sft": {"max_steps": 2}}))
    assert main(["train", "--profile", str(second), "--overwrite", "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(second), "--tuned-only", "--quiet"]) == 0
    assert len(list((out / "predictions").iterdir())) == 3
    assert len(list(out.glob("results-*.csv"))) == 2 and (out / f"results-{first}.csv").is_file()


def test_evaluate_in_another_layout_asks_it_and_keeps_the_project_layouts_files(tiny_profile, small_run, runs, capsys):
    import json

    profile = tiny_profile(small_run, name="layouts")
    assert main(["evaluate", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(profile.path), "--layout", "few_shot", "--quiet"]) == 0
    out = runs / "layouts" / "eval"
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["base", "base-few_shot"]
    assert sorted(p.name for p in out.glob("results-*.md")) == ["results-base-few_shot.md", "results-base.md"]
    assert "in the `few_shot` layout" in (out / "results-base-few_shot.md").read_text()
    asked = [json.loads(p.read_text())["layout"] for p in out.rglob("settings.json")]
    assert sorted(asked) == ["few_shot", "project"]


def test_version_profiles_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == "workings 0.1.0"
    assert main(["profiles"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith("in ")]
    assert {"demo", "a100", "a100-bf16", "demo-bf16", "gemma-3-1b"} <= set(names)
    done = subprocess.run([sys.executable, "-m", "workings", "--version"], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "workings 0.1.0"


# --- nothing a user owns is lost ------------------------------------------------------------

def users_folder(path, name="thesis.tex", text="\\documentclass{article}"):
    """A folder of the user's own, holding one file."""
    path.mkdir(parents=True)
    (path / name).write_text(text)
    return path


def test_build_mix_refuses_a_folder_of_the_users_before_building_and_leaves_it_as_it_was(tmp_path, capsys, monkeypatch):
    import workings.data.mix

    monkeypatch.setattr(workings.data.mix, "build_mix", lambda *a, **k: pytest.fail("built a mix"))
    mine = users_folder(tmp_path / "mine")
    assert main(["build-mix", "--profile", "demo", "--out", str(mine), "--quiet"]) == 1
    assert one_line_error(capsys, "build-mix").startswith(f"--out {mine}: the folder holds files workings did not write")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_build_mix_replaces_its_own_earlier_mix(tmp_path, capsys):
    out = tmp_path / "mix"
    assert main(["build-mix", "--profile", "demo", "--out", str(out), "--quiet"]) == 0
    assert main(["build-mix", "--profile", "demo", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".workings", "heldout", "report.json", "train"]


def test_train_refuses_an_out_folder_of_the_users_and_so_does_overwrite(tiny_profile, small_run, runs, tmp_path, capsys):
    profile = tiny_profile(small_run, name="mine")
    mine = users_folder(tmp_path / "my run", "notes.txt", "mine")
    for again in ([], ["--overwrite"]):
        assert main(["train", "--profile", str(profile.path), "--out", str(mine), "--quiet", *again]) == 1
        assert one_line_error(capsys, "train").startswith(f"--out {mine}: the folder holds files workings did not write")
        assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not (runs / "mine" / "mix").exists()  # refused before the mix was built


def test_a_second_run_in_a_folder_being_trained_in_is_refused_naming_the_holder(tiny_profile, small_run, runs, capsys):
    import os

    from workings.train.runs import run_lock

    profile = tiny_profile(small_run, name="busy")
    out = runs / "busy" / "sft"
    with run_lock(out):  # this process holds it, as a first `workings train` would
        assert main(["train", "--profile", str(profile.path), "--quiet"]) == 1
    assert one_line_error(capsys, "train") == (f"{out}: a run is already training here (pid {os.getpid()}); "
                                                "wait for it to finish, or give another --out")
    assert not list(out.glob("checkpoint-*"))


def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tiny_profile, small_run, runs, tmp_path):
    out = runs / "killed" / "sft"
    holder = ("import os, signal, sys; from pathlib import Path; from workings.train.runs import run_lock\n"
              "with run_lock(Path(sys.argv[1])):\n    os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", holder, str(out)], capture_output=True, timeout=120)
    assert done.returncode == -9 and (out / ".workings.lock").read_text().startswith("pid ")
    profile = tiny_profile(small_run, name="killed")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_the_hint_after_an_interrupt_runs_as_printed_with_its_out_folder(tiny_profile, small_run, tmp_path, capsys, monkeypatch):
    """A real run stopped by Ctrl-C after its first checkpoint, in a folder and from a profile whose
    paths have spaces; following the hint resumes that run, not the profile's default folder."""
    import shlex

    from transformers import TrainerCallback

    import workings.train.sft

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    real_train = workings.train.sft.train
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(workings.train.sft, "train", lambda *a, **k: real_train(*a, **k, callbacks=[CtrlC()]))
    profile = tiny_profile(small_run, name="with space")
    out = tmp_path / "my runs" / "first try"
    assert main(["train", "--profile", str(profile.path), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1  # said once
    hint = err[0].split("continue with: ")[1]
    assert hint == shlex.join(["workings", "train", "--profile", str(profile.path), "--out", str(out), "--resume"])
    monkeypatch.setattr(workings.train.sft, "train", real_train)
    assert main([*shlex.split(hint)[1:], "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["resumed_from"] == "checkpoint-2"
    assert not (tmp_path / "runs" / "with space" / "sft").exists()


def test_a_hint_names_a_profile_given_by_path_by_its_path(tiny_profile, small_run, runs, capsys):
    profile = tiny_profile(small_run, name="untrained")
    assert main(["grpo", "--profile", str(profile.path)]) == 2
    assert f"train first (workings train --profile {profile.path}), or pass --adapter" in capsys.readouterr().err


# --- messages that name the thing to fix ----------------------------------------------------

def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("extends: demo\nsft:\n  max_steps: [3\n")
    assert main(["build-mix", "--profile", str(broken)]) == 1
    message = one_line_error(capsys, "build-mix")
    assert message.startswith(f"{broken}, line 4, column 1: not valid YAML (while parsing a flow sequence")
    assert "unicode string" not in message


def test_a_profile_named_by_the_environment_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("WORKINGS_PROFILE", "nonsense")
    assert main(["build-mix"]) == 1
    assert one_line_error(capsys, "build-mix").startswith("WORKINGS_PROFILE=nonsense: no such profile (known: ")


def test_an_out_of_range_count_is_refused_naming_its_key(tiny_profile, small_run, capsys):
    small_run["sft"]["max_steps"] = -5
    with pytest.raises(Exception) as refused:
        tiny_profile(small_run)
    assert str(refused.value).endswith("sft.max_steps: must be -1 (train num_train_epochs instead) or positive, got -5")


def test_a_question_longer_than_the_context_is_refused_with_its_length_before_loading(tiny_profile, small_run, capsys,
                                                                                    monkeypatch):
    import workings.models.loading

    monkeypatch.setattr(workings.models.loading, "load_for_inference", lambda *a, **k: pytest.fail("loaded a model"))
    profile = tiny_profile(small_run)
    question = "Ava has 7 stickers. " * 1000  # 20,000 characters
    assert main(["ask", question, "--profile", str(profile.path)]) == 2
    message = one_line_error(capsys, "ask")
    assert message.startswith("the question is 20,000 characters, ") and message.endswith(
        "tokens as a prompt: longer than the model's context of 1,024 tokens; shorten it")
    assert main(["ask", "Ava has 7 stickers. " * 40, "--profile", str(profile.path), "--max-new-tokens", "900"]) == 2
    assert "--max-new-tokens 900 more would pass the model's context of 1,024 tokens" in one_line_error(capsys, "ask")


def test_a_model_the_hub_would_serve_fails_in_seconds_when_the_hub_cannot_be_reached(tiny_profile, small_run, capsys,
                                                                                     monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")  # a name that never resolves
    small_run["model"] = {"id": "google/gemma-2-2b-it"}
    profile = tiny_profile(small_run, name="offline")
    start = time.perf_counter()
    assert main(["build-mix", "--profile", str(profile.path), "--quiet"]) == 1
    assert time.perf_counter() - start < 15
    assert one_line_error(capsys, "build-mix").startswith(
        "model.id: google/gemma-2-2b-it is not in this machine's Hugging Face cache, and hub.invalid cannot be reached (")


def test_an_unwritable_out_is_named_before_any_work(tiny_profile, small_run, capsys, monkeypatch):
    import workings.evaluation.runs

    monkeypatch.setattr(workings.evaluation.runs, "run_benchmarks", lambda *a, **k: pytest.fail("asked a benchmark"))
    profile = tiny_profile(small_run)
    assert main(["evaluate", "--profile", str(profile.path), "--out", "/proc/workings-eval"]) == 1
    assert one_line_error(capsys, "evaluate").startswith("--out /proc/workings-eval: cannot write in /proc (")


def test_a_garbage_json_source_is_one_line_naming_the_file_and_where(tiny_profile, small_run, tmp_path, capfd):
    garbage = tmp_path / "rows.json"
    garbage.write_text('[{"question": "a", "answer": "1"},\n garbage]\n')
    small_run["data"]["sources"].append({"name": "mine", "converter": "gsm8k", "path": str(garbage)})
    profile = tiny_profile(small_run)
    assert main(["build-mix", "--profile", str(profile.path), "--quiet"]) == 1
    out, err = capfd.readouterr()
    assert err.strip() == f"workings build-mix: error: {garbage}, line 2, column 2: not valid JSON (Expecting value)"


def test_the_command_line_trains_with_the_profiles_thread_count_whatever_torch_was_set_to(tiny_profile, small_run, runs):
    import torch

    small_run["training"]["threads"] = 1
    profile = tiny_profile(small_run, name="threads")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    assert json.loads((runs / "threads" / "sft" / "run.json").read_text())["threads"] == 1


def test_ctrl_c_in_a_real_run_says_once_what_was_kept_and_how_to_continue(tiny_profile, small_run, runs, tmp_path):
    """SIGINT, as a terminal's Ctrl-C sends it, to a `workings train` process after its first checkpoint."""
    import os
    import signal
    import time

    small_run["sft"].update(max_steps=2000, save_steps=2, eval_steps=1000, save_total_limit=None)
    profile = tiny_profile(small_run, name="ctrl-c")
    out = tmp_path / "my run"
    # A child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt; a shell's
    # background job (`make test &`) ignores it, so the child starts with a terminal's default instead.
    run = subprocess.Popen([sys.executable, "-m", "workings", "train", "--profile", str(profile.path), "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "WORKINGS_RUNS": str(runs)},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(out.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    said = [line for line in err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith(f"workings train: interrupted; checkpoints are kept in {out} (newest ")
    assert said[0].endswith(f"continue with: workings train --profile {profile.path} --out '{out}' --resume")
