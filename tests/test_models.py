import pytest
import torch

from obliviate.data.formatting import IGNORE_INDEX, encode_example, length_grouped_batches, pad_batch, padding_share
from obliviate.models import (FALLBACK_CHAT_TEMPLATE, ModelLoadError, auto_dtype, ensure_chat_template, load_model,
                              resolve_model_path)


def test_load_local_folder(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    assert model.config.hidden_size == 64
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert tok.pad_token is not None and tok.chat_template


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model_path(str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_model_path(str(tmp_path / "x.gguf"))


def test_not_a_causal_lm(tmp_path):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=8, patch_size=4)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not a causal"):
        load_model(str(tmp_path))


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        auto_dtype("int3", torch.device("cpu"))


def test_fallback_chat_template(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.warns(UserWarning, match="no chat template"):
        assert ensure_chat_template(tok)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_lora_wrap(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir), lora={"r": 4, "alpha": 8})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_encode_masks_prompt(tokenizer):
    ex = encode_example(tokenizer, "Who wrote it?", "Nobody did.")
    n_resp = sum(1 for l in ex["labels"] if l != IGNORE_INDEX)
    resp_ids = tokenizer("Nobody did.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert n_resp == len(resp_ids)
    assert ex["input_ids"][-n_resp:] == resp_ids == ex["labels"][-n_resp:]
    assert "Who wrote it?" in tokenizer.decode(ex["input_ids"][:-n_resp])


def test_pad_and_group(tokenizer):
    a = encode_example(tokenizer, "q", "short")
    b = encode_example(tokenizer, "a longer question here", "a much longer answer than the first one")
    batch = pad_batch([a, b], tokenizer.pad_token_id, padding_side="left")
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][0, 0] == 0 and batch["labels"][0, 0] == IGNORE_INDEX
    lengths = [5, 50, 6, 49, 7, 48, 5, 51]
    grouped = length_grouped_batches(lengths, 2, shuffle=True, seed=1)
    assert sorted(i for b in grouped for i in b) == list(range(8))
    naive = [list(range(i, i + 2)) for i in range(0, 8, 2)]
    assert padding_share(grouped, lengths) < padding_share(naive, lengths)


@pytest.mark.slow
def test_embedded_default_loads_and_answers():
    from obliviate.generate.transformers_backend import TransformersGenerator

    model, tok = load_model("smollm2-135m-instruct")
    gen = TransformersGenerator(model, tok)
    out = gen.generate([[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=12)
    assert "Paris" in out[0]
