from workings.tiny import TOKENIZER_RECIPE, tiny_tokenizer, train_tiny_tokenizer


def test_tokenizer_training_is_deterministic():
    recipe = {**TOKENIZER_RECIPE, "corpus_rows": 300, "vocab_size": 600}
    a, b = train_tiny_tokenizer(recipe), train_tiny_tokenizer(recipe)
    assert a.get_vocab() == b.get_vocab()
    text = "Ava has 12 marbles. <reasoning>12 + 3 = 15</reasoning>"
    assert a(text)["input_ids"] == b(text)["input_ids"]


def test_tokenizer_is_cached_by_recipe_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKINGS_CACHE", str(tmp_path))
    recipe = {**TOKENIZER_RECIPE, "corpus_rows": 200, "vocab_size": 500}
    first = tiny_tokenizer(recipe)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 1 and built[0].startswith("tiny-tokenizer-")
    mtime = (tmp_path / built[0] / "tokenizer.json").stat().st_mtime_ns
    second = tiny_tokenizer(recipe)
    assert (tmp_path / built[0] / "tokenizer.json").stat().st_mtime_ns == mtime  # loaded, not rebuilt
    assert first.get_vocab() == second.get_vocab()
