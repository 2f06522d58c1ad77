import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never reach the Hugging Face Hub: fail fast instead of retrying the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """The demo profile's tiny Gemma-style tokenizer (built once, cached by recipe hash)."""
    from workings.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def random_tiny_dir(tmp_path_factory, tokenizer):
    """A randomly initialised two-layer Gemma2 with the tiny tokenizer, saved like a Hub model."""
    import torch
    from transformers import Gemma2ForCausalLM

    from workings.models.tiny import MODEL_RECIPE, tiny_config
    from workings.core.chat import stop_token_ids

    recipe = {**MODEL_RECIPE, "architecture": {**MODEL_RECIPE["architecture"], "hidden_size": 32,
                                                "intermediate_size": 64, "num_hidden_layers": 2}}
    torch.manual_seed(0)
    config = tiny_config(recipe, tokenizer)
    model = Gemma2ForCausalLM(config)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target = tmp_path_factory.mktemp("random-tiny")
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def profile_writer(folder, base: dict, default_name: str):
    """A loader of profiles written to ``folder``: ``base`` (``extends`` and sections), each section
    of the overrides merged over it key by key, saved as ``<name>.yaml`` and loaded."""
    import yaml

    from workings.config.loading import load_profile

    def make(overrides: dict | None = None, name: str = default_name):
        raw = {**base, "name": name}
        for key, value in (overrides or {}).items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_profile(path)

    return make


@pytest.fixture
def tiny_profile(tmp_path, random_tiny_dir):
    """Write a profile extending ``demo`` on the random tiny model; returns a loader taking YAML overrides."""
    return profile_writer(tmp_path, {"extends": "demo", "model": {"id": str(random_tiny_dir)}}, "test")


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Run folders of this test under its own temporary folder (``$WORKINGS_RUNS``)."""
    monkeypatch.setenv("WORKINGS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture
def small_run():
    """Profile sections for a run of seconds on the random tiny model: 40 synthetic rows (4 held out),
    a 6-question eval set, 4 steps of 2 rows, 4 new tokens per reply. A fresh copy each time."""
    return {
        "data": {"max_length": 512, "sources": [{"name": "synthetic", "converter": "synthetic",
                                                 "synthetic": {"n": 40, "seed": 5}, "heldout": 4}],
                 "eval_sets": [{"name": "few", "synthetic": {"n": 6, "seed": 9}}]},
        "training": {"eval_rows": 4},
        "sft": {"max_steps": 4, "per_device_train_batch_size": 2, "save_steps": 2, "eval_steps": 2, "logging_steps": 1,
                "learning_rate": 1.0e-3, "warmup_steps": 0.0},
        "evaluation": {"max_new_tokens": 4, "batch_size": 8},
    }


@pytest.fixture
def launch_two():
    """Run ``workings ARGS`` under ``torchrun`` in two CPU processes (gloo), one thread each, on a
    free port; returns the finished ``subprocess.CompletedProcess``."""
    import os
    import socket
    import subprocess
    import sys

    def launch(*arguments: str):
        with socket.socket() as s:  # a free port for the process group's rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(port), "-m", "workings", *arguments],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)

    return launch
