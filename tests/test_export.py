"""workings export: the adapter or merged model as a folder with its card, and the hand-in to the hubs."""

import json

import pytest
import yaml

from workings.cli import main
from workings.export.destinations import ExportError, parse_destination

SECRET = "hf_sentinelTOKENvalue0123456789"


@pytest.fixture
def trained(tiny_profile, small_run, tmp_path, monkeypatch):
    """A tiny profile trained (4 steps at a learning rate high enough that the adapter is far from
    zero) and evaluated on 4 questions with 6 new tokens; returns (profile, adapter)."""
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    small_run["sft"].update(save_steps=4, eval_steps=4, learning_rate=5.0e-2)
    small_run["evaluation"]["max_new_tokens"] = 6
    small_run["data"]["eval_sets"][0]["synthetic"]["n"] = 4
    profile = tiny_profile(small_run, name="handin")
    assert main(["train", "--profile", str(profile.path), "--quiet"]) == 0
    assert main(["evaluate", "--profile", str(profile.path), "--quiet"]) == 0
    return profile, tmp_path / "runs" / "handin" / "sft" / "adapter"


@pytest.mark.parametrize("text, kind, name", [
    ("hub:me/workings-demo", "hub", "me/workings-demo"),
    ("kaggle:me/workings/transformers/demo", "kaggle", "me/workings/transformers/demo"),
    ("exports/demo", "folder", "exports/demo"),
])
def test_destinations_are_read_from_the_to_flag(text, kind, name):
    destination = parse_destination(text)
    assert (destination.kind, destination.name) == (kind, name)


@pytest.mark.parametrize("text, message", [
    ("hub:me", r"--to hub:me: a Hub destination is hub:<user>/<repo>"),
    ("kaggle:me/model/variation", r"--to kaggle:me/model/variation: a Kaggle destination is kaggle:<owner>/<model>/<framework>/<variation>"),
    ("kaggle:me/m/sklearnish/v", r"framework 'sklearnish' is not one of transformers"),
])
def test_a_malformed_destination_names_the_flag(text, message):
    with pytest.raises(ExportError, match=message):
        parse_destination(text)


def test_an_adapter_export_holds_the_adapter_tokenizer_template_generation_config_and_card(trained, tmp_path, capsys):
    profile, adapter = trained
    out = tmp_path / "export"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json", "README.md"} <= names
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    from workings.core.chat import stop_token_ids
    from workings.models.loading import load_tokenizer

    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == stop_token_ids(load_tokenizer(profile.model))
    printed = capsys.readouterr().out
    assert f"exported to {out}" in printed and "adapter_model.safetensors" in printed


def test_the_card_parses_and_its_metrics_are_the_saved_evaluation(trained, tmp_path):
    from huggingface_hub import ModelCard

    from workings.export.run import evaluation_of

    profile, adapter = trained
    out = tmp_path / "export"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--quiet"]) == 0
    card = ModelCard.load(out / "README.md")
    summaries = evaluation_of(profile, adapter)
    got = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(bench, metric): round(s[metric], 4) for (bench, model), s in summaries.items() if model == "tuned"
                for metric in ("accuracy", "strict_format")}
    assert got == expected and len(got) >= 4
    assert card.data.library_name == "peft" and card.data.license == "gemma" and "lora" in card.data.tags
    assert f'base = AutoModelForCausalLM.from_pretrained("{profile.model.id}")' in card.text
    assert "<start_of_turn>user" in card.text and "| synthetic |" in card.text


def test_a_merged_export_keeps_the_bases_dtype_and_answers_as_base_plus_adapter(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from workings.evaluation.generate import SamplingConfig, generate
    from workings.export.folder import logit_difference, merge_profile
    from workings.models.loading import load_for_inference, load_tokenizer

    profile, adapter = trained
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    assert list(out.glob("model*.safetensors")) and not (out / "adapter_config.json").exists()
    assert json.loads((out / "config.json").read_text())["dtype"] == profile.model.dtype == "float32"
    questions = ["Ava has 7 stickers. She finds 3 more. How many stickers does Ava have now?", "What is 2 + 3?"]
    # float32 on both sides: the merge adds B @ A into the weight once, where the unmerged model adds two products
    assert logit_difference(profile, adapter, out, questions) < 1e-4
    tokenizer = load_tokenizer(profile.model)
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto", attn_implementation="eager").eval()
    assert merged.dtype == torch.float32
    unmerged = load_for_inference(merge_profile(profile), adapter)
    sampling = SamplingConfig(max_new_tokens=12, batch_size=1)
    assert [g.text for g in generate(merged, tokenizer, questions, sampling)] == [
        g.text for g in generate(unmerged, tokenizer, questions, sampling)]


def test_a_merged_export_in_another_dtype_is_written_only_when_asked_and_says_what_it_costs(trained, tmp_path, capsys):
    profile, _ = trained
    out = tmp_path / "merged-bf16"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cost of --dtype bfloat16: "))
    assert "merged in bfloat16 instead of the base's float32: logits differ from base + adapter by up to " in line
    assert line.endswith("of 3 prompts keep their first 16 greedy tokens")
    assert "(bfloat16)" in (out / "README.md").read_text()


def test_an_adapter_export_names_its_base_by_id_not_by_a_path_of_the_training_machine(trained, tmp_path):
    profile, adapter = trained
    config = json.loads((adapter / "adapter_config.json").read_text())
    # what PEFT writes when the base was loaded from a cache folder, as the tiny model is
    config["base_model_name_or_path"] = "/root/.cache/workings/tiny-gemma2-0123456789abcdef"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    out = tmp_path / "export"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--quiet"]) == 0
    exported = json.loads((out / "adapter_config.json").read_text())
    assert exported == {**config, "base_model_name_or_path": profile.model.id}


def test_export_refuses_a_folder_of_the_users_or_a_file_and_changes_neither(trained, tmp_path, capsys):
    profile, _ = trained
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (tmp_path / "model.bin").write_text("mine too")
    assert main(["export", "--profile", str(profile.path), "--to", str(mine)]) == 1
    assert f"--to {mine}: the folder holds files workings did not write" in capsys.readouterr().err
    assert main(["export", "--profile", str(profile.path), "--to", str(tmp_path / "model.bin")]) == 1
    assert f"--to {tmp_path / 'model.bin'}: is a file, not a folder" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (tmp_path / "model.bin").read_text() == "mine too"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden leftovers beside them


def test_an_export_of_the_current_folder_is_refused_in_one_line(trained, tmp_path, capsys, monkeypatch):
    profile, _ = trained
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--profile", str(profile.path), "--to", "."]) == 1
    assert capsys.readouterr().err.strip().startswith("workings export: error: --to .: the folder holds files workings")


def test_an_export_is_readable_by_the_other_users_of_a_shared_machine(trained, tmp_path):
    import os

    profile, _ = trained
    old = os.umask(0o022)
    try:
        assert main(["export", "--profile", str(profile.path), "--to", str(tmp_path / "export"), "--quiet"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "export", *(tmp_path / "export").iterdir()]}
    assert modes["export"] == 0o755 and all(mode == 0o644 for name, mode in modes.items() if name != "export"), modes


def test_the_tiny_models_card_loads_its_base_from_workings_and_is_not_under_gemmas_terms():
    from workings.config.loading import load_profile
    from workings.export.card import licence
    from workings.models.loading import loading_code

    demo = load_profile("demo")
    code = loading_code(demo.model, "demo-adapter")
    assert "from workings.models.tiny import tiny_model_dir" in code and "from_pretrained(tiny_model_dir())" in code
    assert '"tiny"' not in code and licence(demo) == "apache-2.0" and licence(load_profile("a100")) == "gemma"


def test_a_hub_dry_run_lists_the_files_and_sends_nothing_and_never_shows_the_token(trained, tmp_path, capsys, monkeypatch):
    profile, _ = trained
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["export", "--profile", str(profile.path), "--to", "hub:me/workings-demo"]) == 0
    out, err = capsys.readouterr()
    assert "credentials: $HF_TOKEN" in out and "nothing was sent to hub:me/workings-demo (dry run; add --send)" in out
    folder = tmp_path / "runs" / "handin" / "export" / "hub-me--workings-demo"
    assert SECRET not in out + err
    assert not any(SECRET.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_sending_without_credentials_is_one_line_naming_where_they_were_looked_for(trained, tmp_path, capsys, monkeypatch):
    import workings.export.folder

    profile, _ = trained
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(workings.export.folder, "export_adapter", lambda *a, **k: pytest.fail("exported before checking"))
    assert main(["export", "--profile", str(profile.path), "--to", "kaggle:me/w/transformers/demo", "--send"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"workings export: error: no credentials for kaggle:me/w/transformers/demo: looked in "
                    f"$KAGGLE_USERNAME with $KAGGLE_KEY, or {tmp_path / 'kaggle' / 'kaggle.json'}")


def test_sending_reaches_the_hub_client_and_fails_offline_without_pretending(trained, capsys, monkeypatch):
    """Here there is no network (HF_HUB_OFFLINE=1): the upload gets as far as the Hub client's call,
    which refuses; the command fails and says so."""
    profile, _ = trained
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert main(["export", "--profile", str(profile.path), "--to", "hub:me/workings-demo", "--send"]) == 1
    out, err = capsys.readouterr()
    assert "sent to" not in out and SECRET not in out + err
    staged = profile.path.parent / "runs" / "handin" / "export" / "hub-me--workings-demo"
    (line,) = err.strip().splitlines()
    assert line.startswith("workings export: error: could not send to hub:me/workings-demo (huggingface.co: ")
    assert line.endswith(f"); the export is kept in {staged}: run the same command again to send it")


def test_the_kaggle_notebook_answers_like_workings_from_the_export(trained, tmp_path):
    import nbformat
    import torch
    from transformers import AutoModelForCausalLM

    from workings.core.chat import INSTRUCTION
    from workings.core.format import parse
    from workings.evaluation.generate import SamplingConfig, generate
    from workings.export.notebook import NOTEBOOK, run_inference_notebook
    from workings.models.loading import load_tokenizer

    profile, adapter = trained
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    parameters = next(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if "INSTRUCTION = " in c.source)
    namespace: dict = {}
    exec(parameters, namespace)
    assert namespace["INSTRUCTION"] == INSTRUCTION  # the notebook carries the instruction the model was trained with
    questions = ["Ava has 7 stickers. She finds 3 more. How many stickers does Ava have now?", "What is 2 + 3?"]
    predictions = run_inference_notebook(out, [{"id": i, "question": q} for i, q in enumerate(questions)],
                                         tmp_path / "notebook", batch_size=1, max_new_tokens=12)
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager").eval()
    ours = generate(merged, load_tokenizer(profile.model), questions, SamplingConfig(max_new_tokens=12, batch_size=1))
    assert [p["id"] for p in predictions] == ["0", "1"] and [p["question"] for p in predictions] == questions
    assert [p["response"] for p in predictions] == [g.text.strip() for g in ours]
    assert [p["answer"] for p in predictions] == [parse(g.text).answer if parse(g.text).strict else p["answer"]
                                                 for g, p in zip(ours, predictions)]


def test_a_merged_export_runs_in_tunix_with_the_logits_and_greedy_tokens_of_transformers(trained, tmp_path):
    """The hackathon's rule that the checkpoint loads and runs with Tunix's Gemma code (JAX, in its
    own environment), on the tiny Gemma 2's shapes: 2 layers, 4 heads of 16, a local and a global layer."""
    from workings.config.environment import tunix_python
    from workings.core.chat import render_prompt, stop_token_ids
    from workings.export.tunix import tunix_parity
    from workings.models.loading import load_tokenizer

    if not tunix_python().is_file():
        pytest.skip(f"no Tunix environment at {tunix_python()} (make test creates it)")
    profile, _ = trained
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    tokenizer = load_tokenizer(profile.model)
    prompts = [tokenizer(render_prompt(q, tokenizer), add_special_tokens=False)["input_ids"]
               for q in ("What is 2 + 3?", "Ava has 7 stickers. She finds 3 more. How many stickers does Ava have now?")]
    parity = tunix_parity(out, prompts, steps=8, stops=stop_token_ids(tokenizer))
    assert parity.max_logit_difference < 1e-4  # float32 on both sides, from the same bfloat16 weights
    assert (parity.same_greedy, parity.prompts) == (2, 2) and parity.greedy_tokens > 2


def test_check_tunix_runs_a_merged_export_from_the_command_line_and_refuses_an_adapter(trained, tmp_path, capsys):
    from workings.config.environment import tunix_python

    if not tunix_python().is_file():
        pytest.skip(f"no Tunix environment at {tunix_python()} (make test creates it)")
    profile, adapter = trained
    out = tmp_path / "merged"
    assert main(["export", "--profile", str(profile.path), "--to", str(out), "--merge", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["check-tunix", str(out), "--profile", str(profile.path), "--questions", "1", "--steps", "4"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: Tunix against transformers (float32) on 1 question of few: largest logit difference ")
    assert "; greedy continuations identical on 1 of 1 (" in line
    assert main(["check-tunix", str(adapter), "--profile", str(profile.path)]) == 2
    assert "not a merged export (no config.json and safetensors); export with --merge first" in capsys.readouterr().err
