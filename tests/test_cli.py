"""The command line: each command's output, its errors in one line, and checks before anything loads."""

import json
import subprocess
import sys

import pytest
import yaml

from workings.cli import main

@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


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
    profile = tiny_profile(small_run, name="scored")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(profile.path), "--quiet"]) == 0
    out = runs / "scored" / "eval"
    assert (out / "results.csv").read_text().startswith("benchmark,model,n,graded,")
    assert (out / "results.md").read_text().startswith("| benchmark | model | n | graded |")
    folders = sorted(p.name for p in (out / "predictions").iterdir())
    assert folders[0] == "base" and folders[1].startswith("sft-") and len(folders) == 2
    # a second adapter gets a folder of its own instead of overwriting the first one's
    second = profile.path.with_name("second.yaml")
    second.write_text(yaml.safe_dump({"extends": str(profile.path), "name": "scored", "sft": {"max_steps": 2}}))
    assert main(["train", "--profile", str(second), "--overwrite", "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(second), "--tuned-only", "--quiet"]) == 0
    assert len(list((out / "predictions").iterdir())) == 3


def test_version_profiles_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == "workings 0.1.0"
    assert main(["profiles"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith("in ")]
    assert {"demo", "a100", "a100-bf16", "demo-bf16", "gemma-3-1b"} <= set(names)
    done = subprocess.run([sys.executable, "-m", "workings", "--version"], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "workings 0.1.0"
