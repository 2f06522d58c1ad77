"""Using a saved adapter: the seed's loading snippet, the ``ask`` command, and the vLLM engine."""

import json

import pytest

from workings.evaluation.generate import generate, SamplingConfig

QUESTIONS = ["Ava has 3 apples. She buys 4 more. How many apples does she have?", "What is 12 + 30?"]
GREEDY = SamplingConfig(max_new_tokens=12, batch_size=2)


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory, random_tiny_dir, tokenizer):
    """A LoRA adapter with non-zero weights, saved the way training saves it."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from workings.config.schema import LoraConfig
    from workings.models.qlora import lora_config
    from workings.train.runs import save_adapter

    base = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager")
    model = get_peft_model(base, lora_config(LoraConfig(r=4, alpha=8, dropout=0.0)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    return save_adapter(model, tokenizer, tmp_path_factory.mktemp("run") / "adapter", "float32")


@pytest.fixture
def bf16_free_profile(tiny_profile):
    """The demo profile on the random tiny base without quantization (the seed loads an unquantized base)."""
    return tiny_profile({"quantization": None})


def test_seed_snippet_loads_our_adapter_and_answers_like_our_loader(saved_adapter, random_tiny_dir, bf16_free_profile):
    # The seed's "How to use the model": base model, then PeftModel.from_pretrained(adapter_dir).
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved_adapter)
    base = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, saved_adapter).eval()

    from workings.models.loading import load_for_inference

    ours = load_for_inference(bf16_free_profile, saved_adapter)
    seed_way = [g.text for g in generate(model, tokenizer, QUESTIONS, GREEDY)]
    assert seed_way == [g.text for g in generate(ours, tokenizer, QUESTIONS, GREEDY)]
    plain = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager").eval()
    assert seed_way != [g.text for g in generate(plain, tokenizer, QUESTIONS, GREEDY)]  # the adapter is applied


def test_adapter_config_names_its_base_so_auto_peft_loads_it_alone(saved_adapter, random_tiny_dir):
    from peft import AutoPeftModelForCausalLM

    config = json.loads((saved_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(random_tiny_dir)
    model = AutoPeftModelForCausalLM.from_pretrained(saved_adapter)
    assert sum("lora_A" in n for n, _ in model.named_parameters()) > 0


def test_merged_model_answers_like_base_plus_adapter(saved_adapter, bf16_free_profile, tokenizer):
    from workings.models.loading import load_for_inference

    adapted = load_for_inference(bf16_free_profile, saved_adapter)
    merged = load_for_inference(bf16_free_profile, saved_adapter, merged=True)
    assert [g.text for g in generate(merged, tokenizer, QUESTIONS, GREEDY)] == [
        g.text for g in generate(adapted, tokenizer, QUESTIONS, GREEDY)]


def test_merging_into_a_4bit_base_is_refused(saved_adapter, tiny_profile):
    from workings.models.loading import load_for_inference

    with pytest.raises(ValueError, match="quantized base loses precision"):
        load_for_inference(tiny_profile(), saved_adapter, merged=True)


def test_ask_command_prints_reasoning_and_answer_separately(saved_adapter, bf16_free_profile, capsys):
    from workings.cli import main

    assert main(["ask", QUESTIONS[0], "--adapter", str(saved_adapter), "--profile", str(bf16_free_profile.path),
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reasoning:\n") and "\n\nanswer: " in out


def test_vllm_engine_answers_like_transformers_greedy(random_tiny_dir, tokenizer):
    pytest.importorskip("vllm", reason="vLLM is not installed here; the engine is only exercised where it imports")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    from transformers import AutoModelForCausalLM

    from workings.evaluation.generate import VLLMEngine

    engine = VLLMEngine(str(random_tiny_dir), tokenizer, dtype="float32", max_model_len=512)
    hf = AutoModelForCausalLM.from_pretrained(random_tiny_dir, attn_implementation="eager").eval()
    assert [g.text for g in generate(engine, tokenizer, QUESTIONS, GREEDY)] == [
        g.text for g in generate(hf, tokenizer, QUESTIONS, GREEDY)]
