"""Known-arithmetic checks of obliviate.memory_estimate (ZeRO bytes per parameter, LoRA counts, shapes)."""

from __future__ import annotations

import pytest

from obliviate.commands.memory_estimate import main
from obliviate.memory_estimate import (
    GiB, MODEL_SHAPES, ModelShape, estimate_table, estimate_training_memory, lora_trainable_params,
)

SMALL = ModelShape(1e9, 2048, 16, 5632, 16, 16, 32000)


def _est(**kw):
    base = dict(model=SMALL, method="ulmr", seq_len=1, batch=1, overhead_gib=0.0)
    base.update(kw)
    return estimate_training_memory(**base)


def test_presets_match_their_parameter_counts():
    # the shapes must reproduce the published parameter counts within 0.5 %
    for name, s in MODEL_SHAPES.items():
        emb = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
        total = s.layers * s.layer_params() + emb + s.hidden
        assert total == pytest.approx(s.n_params, rel=5e-3), name


def test_mixed_precision_adamw_is_16_bytes_per_param_unsharded():
    e = _est()
    c = e.components
    assert c["weights"] == 2e9 and c["gradients"] == 2e9 and c["optimizer states"] == 12e9


def test_zero_stages_shard_the_right_parts():
    z1 = _est(n_gpus=4, zero_stage=1).components
    z2 = _est(n_gpus=4, zero_stage=2).components
    z3 = _est(n_gpus=4, zero_stage=3).components
    assert (z1["weights"], z1["gradients"], z1["optimizer states"]) == (2e9, 2e9, 3e9)
    assert (z2["weights"], z2["gradients"], z2["optimizer states"]) == (2e9, 0.5e9, 3e9)
    assert (z3["weights"], z3["gradients"], z3["optimizer states"]) == (0.5e9, 0.5e9, 3e9)
    assert z3["ZeRO-3 gathered params"] > 0


def test_fp32_and_offload():
    c = _est(dtype="fp32").components
    assert (c["weights"], c["gradients"], c["optimizer states"]) == (4e9, 4e9, 8e9)
    e = _est(offload_optimizer=True)
    assert e.components["optimizer states"] == 0 and e.cpu_offload["optimizer states (offloaded)"] == 12e9


def test_lora_counts_llama3_8b_rank16():
    # the well-known figure: 41,943,040 trainable parameters for r=16 on all linear layers
    assert lora_trainable_params(MODEL_SHAPES["llama-3-8b"], 16) == 41_943_040
    e = estimate_training_memory(model="llama-3-8b", method="ulmr", lora_rank=16, overhead_gib=0)
    assert e.trainable_params == 41_943_040
    assert e.components["gradients"] == 41_943_040 * 2
    assert e.components["optimizer states"] == 41_943_040 * 12
    assert e.components["weights"] == MODEL_SHAPES["llama-3-8b"].n_params * 2


def test_reference_copy_only_when_not_cached_and_not_lora():
    assert _est(method="kl").components["reference model copy"] == 2e9
    assert _est(method="npo").components["reference model copy"] == 0
    assert _est(method="kl", lora_rank=8).components["reference model copy"] == 0
    assert _est(method="npo", reference_model=True).components["reference model copy"] == 2e9


def test_swd_fixed_cache_is_much_smaller_than_copy():
    copy = _est(method="snap", swd_mode="copy").components["SWD θ_init copy"]
    fixed = _est(method="snap", swd_mode="fixed", swd_projections=100).components["SWD fixed-projection cache"]
    assert copy == 2e9
    rows = 16 * (2048 * 4 + 5632 * 2 + 2048) + 2 * 32000
    dirs = (2048 + 5632) * 100 * 4
    assert fixed == rows * 100 * 4 + dirs
    assert "SWD θ_init copy" not in _est(method="snap", lora_rank=8, swd_mode="copy").components


def test_activations_checkpointing_and_eager_attention():
    kw = dict(seq_len=512, batch=2)
    full = _est(gradient_checkpointing=False, **kw).components["activations"]
    ckpt = _est(gradient_checkpointing=True, **kw).components["activations"]
    eager = _est(gradient_checkpointing=False, attention="eager", **kw).components["activations"]
    assert ckpt < full < eager
    # per token per layer: 2 bytes × (7h + 3kv + 4i)
    assert full == 16 * 512 * 2 * 2 * (7 * 2048 + 3 * 2048 + 4 * 5632)
    two_streams = _est(method="snap", gradient_checkpointing=False, **kw).components["activations"]
    assert two_streams == 2 * full
    assert _est(**kw).components["logits + loss"] == 512 * 2 * 32000 * (2 + 4 + 4)


def test_params_only_uses_nearest_preset_shape():
    e = estimate_training_memory(8e9, method="ulmr")
    assert e.total_params == 8e9 and any("nearest preset" in n for n in e.notes)


@pytest.mark.parametrize("kw,word", [
    (dict(method="nope"), "method"), (dict(dtype="int3"), "dtype"), (dict(zero_stage=4), "zero_stage"),
    (dict(swd_mode="x"), "swd_mode"), (dict(n_gpus=0), "n_gpus"), (dict(optimizer="lion"), "optimizer"),
    (dict(lora_rank=0), "lora_rank"),
])
def test_bad_inputs_name_the_option(kw, word):
    with pytest.raises(ValueError, match=word):
        _est(**kw)


def test_unknown_model_and_missing_size():
    with pytest.raises(ValueError, match="unknown model"):
        estimate_training_memory(model="gpt-17")
    with pytest.raises(ValueError, match="n_params"):
        estimate_training_memory(method="ulmr")


def test_table_and_cli(capsys):
    t = estimate_table([("a", _est()), ("b", _est(lora_rank=4))])
    assert "| weights | 1.86 | 1.86 |" in t and "**total**" in t
    assert main(["--model", "mistral-7b", "--method", "snap", "--gpus", "1,8", "--zero-stage", "3",
                 "--lora-rank", "0,16"]) == 0
    out = capsys.readouterr().out
    assert "full FT, 8 GPU" in out and "LoRA r=16, 1 GPU" in out
    assert _est().total == pytest.approx(sum(_est().components.values()))
    assert _est().total_gib == _est().total / GiB


def test_swd_autograd_buffers():
    c = _est(method="snap", swd_projections=10).components
    rows = 16 * (2048 * 4 + 5632 * 2 + 2048) + 2 * 32000
    assert c["SWD autograd buffers"] == rows * 10 * 16
    lora = _est(method="snap", swd_projections=10, lora_rank=4).components
    assert lora["SWD autograd buffers"] == 16 * (2048 * 4 + 5632 * 2 + 2048) * 10 * 16
    assert "SWD autograd buffers" not in _est(method="ulmr").components


def test_swd_default_matches_the_trainings_fresh_directions():
    """The regularizer's default (fresh directions, as SNAP) keeps a θ_init copy: the estimate's default counts it."""
    assert "SWD θ_init copy" in _est(method="snap").components
