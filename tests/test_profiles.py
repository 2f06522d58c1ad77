import textwrap

import pytest

from workings.profiles import ProfileError, load_profile, run_dir

GOOD = """
name: t
model: {id: tiny}
data:
  sources:
    - {name: s, converter: synthetic, synthetic: {n: 10, seed: 1}}
"""


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_demo_and_a100_profiles_load():
    demo, a100 = load_profile("demo"), load_profile("a100")
    assert demo.model.id == "tiny" and a100.model.id == "google/gemma-2-2b-it"
    assert a100.data.max_length == 1024
    assert [s.name for s in a100.data.sources] == [
        "gsm8k", "openthoughts", "bespoke_stratos", "medical_o1_en", "medical_o1_en_mix", "metamath"]


def test_a100_sources_use_published_hub_ids_and_configs():
    specs = {s.name: (s.hub_id, s.config) for s in load_profile("a100").data.sources}
    assert specs == {
        "gsm8k": ("openai/gsm8k", "main"),
        "openthoughts": ("open-thoughts/OpenThoughts-114k", "metadata"),
        "bespoke_stratos": ("bespokelabs/Bespoke-Stratos-17k", None),
        "medical_o1_en": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en"),
        "medical_o1_en_mix": ("FreedomIntelligence/medical-o1-reasoning-SFT", "en_mix"),
        "metamath": ("meta-math/MetaMathQA", None),
    }


def test_relative_paths_resolve_against_the_profile_file():
    demo = load_profile("demo")
    gsm8k = next(s for s in demo.data.sources if s.name == "gsm8k")
    assert gsm8k.path.endswith("workings/fixtures/gsm8k_train.jsonl")


def test_minimal_profile_gets_defaults(tmp_path):
    p = load_profile(write(tmp_path, GOOD))
    assert (p.data.max_length, p.data.max_per_question, p.data.decontamination.ngram) == (1024, 1, 13)


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("name: t", "name: t\nbatch: 4"), "batch: unknown key"),
        (GOOD.replace("seed: 1}", "seed: 1, n_rows: 3}"), r"data\.sources\[0\]\.synthetic\.n_rows: unknown key"),
        (GOOD.replace("model: {id: tiny}", "model: {}"), r"model\.id: missing key"),
        (GOOD.replace("n: 10", "n: 0"), r"data\.sources\[0\]\.synthetic\.n: must be positive"),
        (GOOD.replace("n: 10", "n: ten"), r"data\.sources\[0\]\.synthetic\.n: expected int, got str"),
        (GOOD.replace("seed: 1}}", "seed: 1}, weight: 0}"), r"data\.sources\[0\]\.weight: must be positive"),
        (GOOD.replace("seed: 1}}", "seed: 1}, cap: 0}"), r"data\.sources\[0\]\.cap: must be positive"),
        (GOOD.replace("converter: synthetic", "converter: gsm9k"), r"data\.sources\[0\]\.converter: unknown converter 'gsm9k'"),
        (GOOD.replace("synthetic: {n: 10, seed: 1}", "path: x.jsonl"), r"data\.sources\[0\]\.synthetic: goes with converter: synthetic"),
        (GOOD.replace("seed: 1}}", "seed: 1}, path: x.jsonl}"), r"data\.sources\[0\]: needs exactly one of hub_id, path, synthetic"),
        (GOOD + "  max_length: 0\n", r"data\.max_length: must be positive"),
        (GOOD + "  decontamination: {threshold: 1.5}\n", r"data\.decontamination\.threshold: must be in \(0, 1\]"),
    ],
)
def test_bad_profiles_fail_naming_the_key(tmp_path, text, message):
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(write(tmp_path, text))
    assert str(tmp_path / "p.yaml") in str(err.value)


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ProfileError, match=r"no such profile \(known: .*a100.*demo"):
        load_profile("a1000")


def test_invalid_yaml_is_reported(tmp_path):
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(write(tmp_path, "name: [unclosed"))


def test_run_dir_is_under_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    monkeypatch.delenv("WORKINGS_RUNS", raising=False)
    assert run_dir(load_profile("demo")) == tmp_path / "runs" / "demo"
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "elsewhere"))
    assert run_dir(load_profile("demo")) == tmp_path / "elsewhere" / "demo"
