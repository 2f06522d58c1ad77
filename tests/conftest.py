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
    from workings.tiny import tiny_tokenizer

    return tiny_tokenizer()
