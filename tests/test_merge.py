"""Parameter averaging θa = α·θ + (1 − α)·θ': exactness, safety checks, LoRA, sweeps, sharding."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import build_tiny_llama
from obliviate.cli import main
from obliviate.merge import (MergeError, StreamingSafetensorsWriter, average_state_dicts, merge_models,
                             parse_alphas, read_weight_folder, scale_adapter)


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _load_all(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture()
def pair(tokenizer, tiny_model_dir, tmp_path):
    """(base, tuned): the tiny model and a perturbed copy (every tensor changed), both saved."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    model = build_tiny_llama(tokenizer)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    tuned = tmp_path / "tuned"
    model.save_pretrained(tuned)
    tokenizer.save_pretrained(tuned)
    return base, tuned


@pytest.mark.parametrize("chunk", [16 << 20, 1 << 20])
def test_every_tensor_is_the_weighted_average_and_inputs_are_untouched(pair, tmp_path, monkeypatch, chunk):
    import obliviate.merge as merge_mod

    monkeypatch.setattr(merge_mod, "CHUNK_BYTES", chunk)  # 1 MiB: the embedding is averaged in row blocks
    base, tuned = pair
    before = (_tree_hash(base), _tree_hash(tuned))
    alpha = random.Random(7).uniform(0.05, 0.95)
    out = merge_models(base, tuned, alpha, tmp_path / "merged", progress=False)
    assert (_tree_hash(base), _tree_hash(tuned)) == before
    a, b, m = _load_all(base), _load_all(tuned), _load_all(out)
    assert set(m) == set(a)
    for k in a:
        assert m[k].dtype == a[k].dtype and m[k].shape == a[k].shape
        torch.testing.assert_close(m[k], alpha * a[k] + (1 - alpha) * b[k], rtol=1e-6, atol=1e-7)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "merge.json").read_text())
    assert info["alpha"] == alpha and info["tuned_kind"] == "full" and info["tokenizer_check"] == "identical"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "merge" and "base" in manifest["inputs"]
    # the merged folder loads with transformers and the in-memory average agrees
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out)
    ref = average_state_dicts(a, b, alpha)
    torch.testing.assert_close(loaded.model.embed_tokens.weight, ref["model.embed_tokens.weight"])
    assert not list(out.parent.glob(".merged.*"))  # no temp folders left behind


def test_alpha_endpoints_give_back_the_inputs(pair, tmp_path):
    base, tuned = pair
    outs = merge_models(base, tuned, "0,1", tmp_path / "ends", progress=False)
    assert [o.name for o in outs] == ["alpha_0", "alpha_1"]
    for o, ref in zip(outs, (tuned, base)):
        for k, v in _load_all(ref).items():
            assert torch.equal(_load_all(o)[k], v)


def test_sweep_writes_every_alpha(pair, tmp_path, capsys):
    base, tuned = pair
    assert main(["merge", "--base", str(base), "--tuned", str(tuned), "--alpha", "0.2,0.4,0.6",
                 "--out", str(tmp_path / "sweep"), "--no-progress"]) == 0
    for a in ("0.2", "0.4", "0.6"):
        d = tmp_path / "sweep" / f"alpha_{a}"
        assert (d / "model.safetensors").is_file() and json.loads((d / "merge.json").read_text())["alpha"] == float(a)
    assert "α=0.6" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "nan", "abc", ""])
def test_alpha_out_of_range_is_refused(pair, tmp_path, bad):
    base, tuned = pair
    with pytest.raises(MergeError, match="alpha"):
        merge_models(base, tuned, bad, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    assert main(["merge", "--base", str(base), "--tuned", str(tuned), "--alpha", bad or " ",
                 "--out", str(tmp_path / "o")]) == 2


def test_overwriting_an_input_is_refused(pair, tmp_path):
    base, tuned = pair
    before = _tree_hash(base)
    for out in (base, tuned, base / "sub"):
        with pytest.raises(MergeError, match="overwrite an input"):
            merge_models(base, tuned, 0.5, out, overwrite=True, progress=False)
    assert _tree_hash(base) == before
    with pytest.raises(MergeError, match="same folder"):
        merge_models(base, base, 0.5, tmp_path / "x", progress=False)
    # an existing non-empty output needs --overwrite
    out = merge_models(base, tuned, 0.5, tmp_path / "m", progress=False)
    with pytest.raises(MergeError, match="--overwrite"):
        merge_models(base, tuned, 0.3, out, progress=False)
    merge_models(base, tuned, 0.3, out, overwrite=True, progress=False)
    assert json.loads((out / "merge.json").read_text())["alpha"] == 0.3


def test_mismatched_names_shapes_dtypes_and_tokenizers_are_refused(pair, tokenizer, tmp_path):
    base, tuned = pair
    # names: drop a tensor
    bad = tmp_path / "names"
    shutil.copytree(tuned, bad)
    sd = load_file(str(bad / "model.safetensors"))
    sd.pop("model.layers.1.mlp.up_proj.weight")
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="names differ.*up_proj"):
        merge_models(base, bad, 0.5, tmp_path / "o1", progress=False)
    # shapes: a wider model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(base)
    cfg.intermediate_size = 96
    wide = tmp_path / "shape"
    LlamaForCausalLM(cfg).save_pretrained(wide)
    tokenizer.save_pretrained(wide)
    with pytest.raises(MergeError, match="shape"):
        merge_models(base, wide, 0.5, tmp_path / "o2", progress=False)
    # dtypes
    half = tmp_path / "dtype"
    shutil.copytree(tuned, half)
    sd = {k: v.half() for k, v in load_file(str(half / "model.safetensors")).items()}
    save_file(sd, str(half / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match="dtype"):
        merge_models(base, half, 0.5, tmp_path / "o3", progress=False)
    # tokenizers: same size, two vocabulary entries swapped
    tok = tmp_path / "tok"
    shutil.copytree(tuned, tok)
    tj = json.loads((tok / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = "hello", "world"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tok / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(MergeError, match="tokenizers differ"):
        merge_models(base, tok, 0.5, tmp_path / "o4", progress=False)
    for i in range(1, 5):
        assert not (tmp_path / f"o{i}").exists()


def test_tied_embeddings_when_one_side_stores_lm_head(pair, tmp_path):
    base, tuned = pair
    assert "lm_head.weight" not in _load_all(base)  # the tiny Llama ties lm_head to embed_tokens
    untied = tmp_path / "untied"
    shutil.copytree(tuned, untied)
    sd = load_file(str(untied / "model.safetensors"))
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    save_file(sd, str(untied / "model.safetensors"), metadata={"format": "pt"})
    out = merge_models(base, untied, 0.25, tmp_path / "m", progress=False)
    m = _load_all(out)
    assert "lm_head.weight" not in m
    ref = 0.25 * _load_all(base)["model.embed_tokens.weight"] + 0.75 * sd["model.embed_tokens.weight"]
    torch.testing.assert_close(m["model.embed_tokens.weight"], ref)


def test_sharding_and_index_are_kept(tokenizer, tmp_path):
    model = build_tiny_llama(tokenizer)
    base = tmp_path / "base"
    model.save_pretrained(base, max_shard_size="2MB")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.0)
    tuned = tmp_path / "tuned"
    model.save_pretrained(tuned, max_shard_size="5MB")  # a different sharding on the tuned side
    shards = sorted(p.name for p in base.glob("*.safetensors"))
    assert len(shards) > 1
    out = merge_models(base, tuned, 0.5, tmp_path / "m", progress=False)
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    assert json.loads((out / "model.safetensors.index.json").read_text()) == \
        json.loads((base / "model.safetensors.index.json").read_text())
    for k, v in _load_all(out).items():  # θ' = −θ, so the mid-point is exactly zero
        assert torch.count_nonzero(v) == 0, k


def test_streaming_writer_matches_safetensors(tmp_path):
    tensors = {"b": torch.randn(3, 5), "a": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(4).to(torch.bfloat16), "d": torch.tensor([True, False])}
    from obliviate.merge import _ST_DTYPES

    inv = {v: k for k, v in _ST_DTYPES.items()}
    layout = [(k, inv[v.dtype], tuple(v.shape)) for k, v in sorted(tensors.items())]
    w = StreamingSafetensorsWriter(tmp_path / "x.safetensors", layout, {"format": "pt"})
    for k, _, _ in layout:
        w.write(k, tensors[k])
    w.close()
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as h:
        assert h.metadata() == {"format": "pt"}
        for k, v in tensors.items():
            assert torch.equal(h.get_tensor(k), v)
    w = StreamingSafetensorsWriter(tmp_path / "y.safetensors", layout, None)
    with pytest.raises(RuntimeError, match="out of order"):
        w.write("d", tensors["d"])
    with pytest.raises(RuntimeError, match="only 0"):
        w.close()


def _lora_pair(tokenizer, base: Path, tmp_path: Path, *, embed: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    targets = ["q_proj", "v_proj", "down_proj"] + (["embed_tokens"] if embed else [])
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # perturb both factors so B·A ≠ 0 (a freshly initialised B is zero)
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    full = tmp_path / "lora_full"
    peft_model.merge_and_unload().save_pretrained(full)
    tokenizer.save_pretrained(full)
    return adapter, full


@pytest.mark.parametrize("embed", [False, True])
def test_lora_adapter_path_equals_full_weight_path(pair, tokenizer, tmp_path, embed):
    base, _ = pair
    adapter, full = _lora_pair(tokenizer, base, tmp_path, embed=embed)
    before = _tree_hash(adapter)
    alpha = 0.35
    via_adapter = merge_models(base, adapter, alpha, tmp_path / "via_adapter", progress=False)
    via_full = merge_models(base, full, alpha, tmp_path / "via_full", progress=False)
    assert _tree_hash(adapter) == before
    a, f, b = _load_all(via_adapter), _load_all(via_full), _load_all(base)
    assert set(a) == set(f)
    changed = 0
    for k in a:
        torch.testing.assert_close(a[k], f[k], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(a[k], b[k])
    assert changed >= 6  # q, v, down in both layers
    assert json.loads((via_adapter / "merge.json").read_text())["tuned_kind"] == "lora"


def test_scaled_adapter_loads_to_the_average(pair, tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, _ = pair
    adapter, _ = _lora_pair(tokenizer, base, tmp_path)
    scaled = scale_adapter(adapter, 0.4, tmp_path / "scaled")
    merged_full = merge_models(base, adapter, 0.4, tmp_path / "full", progress=False)
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), scaled).merge_and_unload()
    ref = _load_all(merged_full)
    for k, v in m.state_dict().items():
        if k in ref:
            torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(MergeError, match="not a peft adapter"):
        scale_adapter(base, 0.4, tmp_path / "x")


def test_lora_adapter_for_another_model_is_refused(pair, tokenizer, tmp_path):
    base, _ = pair
    adapter, _ = _lora_pair(tokenizer, base, tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(base)
    cfg.hidden_size, cfg.intermediate_size = 32, 64
    other = tmp_path / "other"
    LlamaForCausalLM(cfg).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(MergeError, match="trained on"):
        merge_models(other, adapter, 0.5, tmp_path / "o", progress=False)


def test_parse_alphas():
    assert parse_alphas("0.2, 0.4,0.6") == [0.2, 0.4, 0.6]
    assert parse_alphas(1) == [1.0]
    with pytest.raises(MergeError, match="duplicate"):
        parse_alphas("0.2,0.2")


def test_missing_weights_are_reported(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(MergeError, match="convert them to safetensors"):
        read_weight_folder(tmp_path)
