from pathlib import Path

from workings.models.tiny import MODEL_RECIPE, tiny_tokenizer, TOKENIZER_RECIPE, train_tiny_tokenizer


def test_tokenizer_training_is_deterministic():
    recipe = {**TOKENIZER_RECIPE, "corpus_rows": 300, "vocab_size": 600}
    a, b = train_tiny_tokenizer(recipe), train_tiny_tokenizer(recipe)
    assert a.get_vocab() == b.get_vocab()
    text = "Ava has 12 marbles. <reasoning>12 + 3 = 15</reasoning>"
    assert a(text)["input_ids"] == b(text)["input_ids"]


def test_tokenizer_is_cached_by_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKINGS_CACHE", str(tmp_path))
    recipe = {**TOKENIZER_RECIPE, "corpus_rows": 200, "vocab_size": 500}
    first = tiny_tokenizer(recipe)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 1 and built[0].startswith("tiny-tokenizer-")
    mtime = (tmp_path / built[0] / "tokenizer.json").stat().st_mtime_ns
    second = tiny_tokenizer(recipe)
    assert (tmp_path / built[0] / "tokenizer.json").stat().st_mtime_ns == mtime  # loaded, not rebuilt
    assert first.get_vocab() == second.get_vocab()


SMALL_MODEL = {
    **MODEL_RECIPE,
    "tokenizer": {**TOKENIZER_RECIPE, "corpus_rows": 200, "vocab_size": 500},
    "corpus_rows": 40, "steps": 4, "batch_size": 4,
}


def test_pretraining_chats_state_the_result_alone_and_never_use_our_tags(tokenizer):
    import re

    from workings.core.chat import INSTRUCTION
    from workings.models.tiny import pretraining_texts

    texts = pretraining_texts(400, 7, tokenizer, numbers="small", max_steps=3)
    chats = [t for t in texts if "<start_of_turn>" in t]
    model_turns = [t.split("<start_of_turn>model\n", 1)[1] for t in chats]
    assert all(re.fullmatch(r"(<p>)?The answer is \d+\.(</p>)?<end_of_turn>\n", turn) for turn in model_turns)
    assert any(turn.startswith("<p>") for turn in model_turns)
    instructed = sum(INSTRUCTION in t for t in chats)
    assert 0.35 < instructed / len(chats) < 0.65  # about half the user turns carry the instruction


def test_pretraining_documents_show_the_worked_steps_as_plain_text(tokenizer):
    from workings.models.tiny import pretraining_texts

    texts = pretraining_texts(400, 7, tokenizer, numbers="small", max_steps=3)
    documents = [t for t in texts if "<start_of_turn>" not in t]
    assert 150 < len(documents) < 250  # textbook_fraction 0.5
    assert all(d.startswith("<bos>") and " = " in d and d.endswith((".", ".</p>")) for d in documents)
    assert 0.35 < sum("\n<p>" in d for d in documents) / len(documents) < 0.65  # markup_fraction 0.5
    assert "<reasoning>" not in "".join(documents)


def test_tiny_model_build_is_deterministic():
    import torch

    from workings.models.tiny import pretrain_tiny_model

    first, _, losses_a = pretrain_tiny_model(SMALL_MODEL)
    second, _, losses_b = pretrain_tiny_model(SMALL_MODEL)
    assert losses_a == losses_b and losses_a[-1] < losses_a[0]
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_model_is_built_once_per_recipe(tmp_path, monkeypatch):
    import json

    from transformers import AutoModelForCausalLM

    from workings.models.tiny import tiny_model_dir

    monkeypatch.setenv("WORKINGS_CACHE", str(tmp_path))
    folder = tiny_model_dir(SMALL_MODEL, progress=False)
    log = json.loads((folder / "pretraining.json").read_text())
    assert log["recipe"] == SMALL_MODEL and len(log["losses"]) == 4
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_dir(SMALL_MODEL, progress=False) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = tiny_model_dir({**SMALL_MODEL, "seed": 1}, progress=False)
    assert other != folder
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "gemma2" and model.generation_config.eos_token_id == [5, 1]


def test_cache_key_changes_when_the_builder_code_changes(tmp_path, monkeypatch):
    import shutil

    import workings.files
    import workings.models.tiny as tiny

    before = tiny.recipe_hash(SMALL_MODEL)
    copy = tmp_path / "workings"
    shutil.copytree(workings.files.PACKAGE_DIR, copy)
    monkeypatch.setattr(workings.files, "PACKAGE_DIR", copy)
    assert tiny.recipe_hash(SMALL_MODEL) == before  # same code, same key
    synthetic = copy / "data" / "synthetic.py"
    synthetic.write_text(synthetic.read_text() + "\n# an edit\n")
    assert tiny.recipe_hash(SMALL_MODEL) != before


def test_cache_key_covers_every_project_module_the_builder_imports():
    import ast

    import workings.models.tiny as tiny

    import workings.files

    imported = set()
    for name in tiny.BUILDER_MODULES:
        source = workings.files.PACKAGE_DIR / f"{name.replace('.', '/')}.py"
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workings."):
                imported.add(node.module.removeprefix("workings."))
    assert imported - {"files"} <= set(tiny.BUILDER_MODULES)  # files holds the digests, not the recipe


def test_building_the_base_leaves_the_global_random_state_as_it_was(random_tiny_dir, monkeypatch):
    """Whether the tiny base was just built in this process or read from the cache, what is seeded
    next (the LoRA initialisation, the data order) draws the same numbers."""
    import torch

    import workings.models.tiny
    from workings.config.schema import ModelConfig
    from workings.models.loading import model_source

    def build_that_draws(*args, **kwargs):
        torch.randn(1000)  # pretraining draws from the global generator
        return random_tiny_dir

    torch.manual_seed(0)
    expected = torch.rand(3)
    monkeypatch.setattr(workings.models.tiny, "tiny_model_dir", build_that_draws)
    torch.manual_seed(0)
    assert model_source(ModelConfig(id="tiny")) == str(random_tiny_dir)
    assert torch.equal(torch.rand(3), expected)
