"""Sliced Wasserstein, Euclidean and Fisher regularizers (SNAP Eq. 5-6 and its baselines)."""

from __future__ import annotations

import math

import ot
import pytest
import torch
from torch import nn

from obliviate.objectives.regularizers import (REGULARIZERS, EuclideanRegularizer, FisherRegularizer,
                                               SlicedWasserstein, make_regularizer, random_directions,
                                               sliced_wasserstein)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 4)   # weight (4, 5), bias (4,)
        self.b = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_swd_matches_pot_with_fixed_projections():
    torch.manual_seed(1)
    x = torch.randn(40, 7, dtype=torch.float64, requires_grad=True)
    y = torch.randn(40, 7, dtype=torch.float64) * 1.5 + 0.3
    u = random_directions(7, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = sliced_wasserstein(x, y, u, p=2, reduction="mean", root=True)
    pot = ot.sliced_wasserstein_distance(x, y, projections=u, p=2)
    assert torch.allclose(ours, pot, rtol=1e-6, atol=1e-9)
    # gradients agree too
    g_ours, = torch.autograd.grad(ours, x)
    g_pot, = torch.autograd.grad(ot.sliced_wasserstein_distance(x, y, projections=u, p=2), x)
    assert torch.allclose(g_ours, g_pot, rtol=1e-5, atol=1e-8)
    # p = 1 as well
    assert torch.allclose(sliced_wasserstein(x, y, u, p=1, reduction="mean", root=True),
                          ot.sliced_wasserstein_distance(x, y, projections=u, p=1), rtol=1e-6)
    # sum without root = n*K * mean, i.e. the reference code's un-normalised value
    s = sliced_wasserstein(x, y, u, p=2, reduction="sum", root=False)
    assert torch.allclose(s, pot.square() * 40 * 50, rtol=1e-6)


def test_swd_regularizer_matches_pot_per_tensor_sum():
    m = Tiny()
    reg = SlicedWasserstein(1.0, n_projections=30, mode="fixed", reduction="mean", root=True, seed=5)
    reg.setup(m)
    assert reg.tensor_names == ["a.weight", "b.weight"]  # 2-D only by default
    init = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    val = reg(m)
    expect = sum(ot.sliced_wasserstein_distance(dict(m.named_parameters())[n].detach(), init[n],
                                                projections=reg.directions(i, init[n].shape[1]), p=2)
                 for i, n in enumerate(("a.weight", "b.weight")))
    assert torch.allclose(val.detach(), expect, rtol=1e-5)


def test_sort_last_matches_torch_sort_values_and_grads():
    from obliviate.objectives.regularizers import sort_last

    torch.manual_seed(0)
    for dt in (torch.float32, torch.float64):
        x = torch.randn(3, 50, dtype=dt, requires_grad=True)
        w = torch.randn(3, 50, dtype=dt)
        a = sort_last(x)
        b = torch.sort(x, dim=-1).values
        assert torch.equal(a, b)
        ga, = torch.autograd.grad((a * w).sum(), x)
        gb, = torch.autograd.grad((b * w).sum(), x)
        assert torch.allclose(ga, gb)
    h = torch.randn(2, 9, dtype=torch.bfloat16)
    assert torch.equal(sort_last(h), torch.sort(h, dim=-1).values)  # other dtypes: torch.sort


def test_swd_zero_at_init_and_gradient_flows():
    m = Tiny()
    for mode in ("fresh", "fixed"):
        reg = SlicedWasserstein(0.1, n_projections=20, mode=mode)
        reg.setup(m)
        v0 = reg(m)
        assert float(v0) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        m.a.weight.add_(0.5)
    for mode, root in (("fresh", False), ("fixed", False), ("fresh", True)):
        reg = SlicedWasserstein(0.1, n_projections=20, mode=mode, root=root)
        reg.setup(Tiny())  # reference = a fresh Tiny (same seed => original weights)
        m.zero_grad()
        reg(m).backward()
        assert m.a.weight.grad is not None and torch.isfinite(m.a.weight.grad).all()
        assert m.a.weight.grad.abs().sum() > 0
    # root=True stays finite at θ = θ_init (epsilon inside the root)
    m2 = Tiny()
    reg = SlicedWasserstein(0.1, n_projections=8, root=True)
    reg.setup(m2)
    reg(m2).backward()
    assert all(torch.isfinite(p.grad).all() for p in m2.parameters() if p.grad is not None)


def test_fixed_mode_equals_fresh_mode_with_same_directions():
    m = Tiny()
    fresh = SlicedWasserstein(1.0, n_projections=16, mode="fresh", seed=11)
    fixed = SlicedWasserstein(1.0, n_projections=16, mode="fixed", seed=11)
    fresh.setup(m)
    fixed.setup(m)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.3).add_(0.05)
    assert torch.allclose(fresh(m), fixed(m), rtol=1e-6)
    # fresh mode draws new directions on the next call; fixed mode does not
    assert not torch.allclose(fresh(m), fixed(m), rtol=1e-6)


def test_fixed_mode_drops_frozen_copy():
    m = Tiny()
    fixed = SlicedWasserstein(1.0, n_projections=2, mode="fixed")
    fresh = SlicedWasserstein(1.0, n_projections=2, mode="fresh")
    fixed.setup(m)
    fresh.setup(m)
    assert fixed._init == {}  # no copy of θ_init is held
    # it holds only the sorted reference projections (K, n); directions are regenerated from the seed
    assert {tuple(t.shape) for t in fixed._ref_sorted.values()} == {(2, 4), (2, 3)}
    assert torch.equal(fixed.directions(0, 5), fixed.directions(0, 5))
    assert not torch.equal(fixed.directions(0, 5), fixed.directions(0, 5, call=1))
    weight_bytes = sum(p.numel() * 4 for n, p in m.named_parameters() if p.dim() == 2)
    assert fresh.reference_bytes() == weight_bytes
    assert fixed.reference_bytes() == (2 * 4 + 2 * 3) * 4
    # no tensor stored by the fixed regularizer shares storage with a model weight
    stored = list(fixed._ref_sorted.values())
    for t in stored:
        for p in m.parameters():
            assert t.data_ptr() != p.data_ptr()


def test_swd_options_and_errors():
    m = Tiny()
    reg = SlicedWasserstein(1.0, include_1d=True, n_projections=4)
    reg.setup(m)
    assert "a.bias" in reg.tensor_names
    reg = SlicedWasserstein(1.0, name_filter=r"^b\.", n_projections=4)
    reg.setup(m)
    assert reg.tensor_names == ["b.weight"]
    with pytest.raises(ValueError, match="no trainable tensor"):
        SlicedWasserstein(1.0, name_filter="nomatch").setup(m)
    with pytest.raises(ValueError, match="mode must be"):
        SlicedWasserstein(1.0, mode="cached")
    with pytest.raises(ValueError, match="reduction must be"):
        SlicedWasserstein(1.0, reduction="avg")
    with pytest.raises(ValueError, match="unknown regularizer"):
        make_regularizer("l2")
    with pytest.raises(ValueError, match="bad option"):
        make_regularizer("swd", 0.1, n_proj=3)
    assert set(REGULARIZERS) == {"swd", "euclidean", "fisher"}
    r = make_regularizer("swd", 0.5, n_projections=7, mode="fixed")
    assert isinstance(r, SlicedWasserstein) and r.weight == 0.5 and r.n_projections == 7
    # frozen tensors are skipped
    m.b.weight.requires_grad_(False)
    reg = SlicedWasserstein(1.0, n_projections=4)
    reg.setup(m)
    assert reg.tensor_names == ["a.weight"]


def test_swd_on_lora_effective_weights(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0))
    reg = SlicedWasserstein(0.1, n_projections=8, mode="fixed")
    reg.setup(model)
    names = reg.tensor_names
    assert len(names) == 4 and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in names)
    assert reg._init == {}
    assert float(reg(model)) == pytest.approx(0.0, abs=1e-8)  # B = 0 at init
    fresh = SlicedWasserstein(0.1, n_projections=8, mode="fresh")
    fresh.setup(model)
    assert fresh.reference_bytes() == 0  # the base weights already in the model serve as θ_init
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    v = reg(model)
    assert float(v) > 0
    v.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # the base weights are untouched and get no gradient
    assert all(p.grad is None for n, p in model.named_parameters() if "base_layer" in n)
    # adapter mode regularizes the adapter matrices themselves
    ad = SlicedWasserstein(0.1, n_projections=8, lora="adapter")
    ad.setup(model)
    assert all("lora_" in n for n in ad.tensor_names) and len(ad.tensor_names) == 8


def test_euclidean_hand_checked():
    m = Tiny()
    reg = EuclideanRegularizer(0.1)
    reg.setup(m)
    assert float(reg(m)) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        m.a.weight.add_(0.1)   # 20 entries
        m.b.weight.sub_(0.2)   # 12 entries
    expect_sq = 20 * 0.01 + 12 * 0.04
    assert float(reg(m)) == pytest.approx(math.sqrt(expect_sq), rel=1e-4)
    sq = EuclideanRegularizer(0.1, squared=True)
    sq.setup(Tiny())
    assert float(sq(m)) == pytest.approx(expect_sq, rel=1e-4)
    reg(m).backward()
    assert torch.isfinite(m.a.weight.grad).all()
    # at θ_init the unsquared norm's gradient is finite (sqrt(Σ + ε))
    m2 = Tiny()
    r2 = EuclideanRegularizer(1.0)
    r2.setup(m2)
    r2(m2).backward()
    assert torch.isfinite(m2.a.weight.grad).all()


def _batches():
    torch.manual_seed(3)
    return [{"x": torch.randn(6, 5), "y": torch.randn(6, 3)} for _ in range(3)]


def _mse(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def test_fisher_diag_equals_squared_grads_and_penalty():
    m = Tiny()
    batches = _batches()
    reg = FisherRegularizer(1.0, loss_fn=_mse, max_batches=None)
    reg.setup(m, batches)
    assert reg.n_batches == 3
    expect = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for b in batches:
        m.zero_grad()
        _mse(m, b).backward()
        for n, p in m.named_parameters():
            expect[n] += p.grad.square() / 3
    for n in expect:
        assert torch.allclose(reg.fisher[n], expect[n], rtol=1e-5, atol=1e-10)
    assert float(reg(m)) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        m.a.weight.add_(0.1)
    assert float(reg(m)) == pytest.approx(float((expect["a.weight"] * 0.01).sum()), rel=1e-4)
    # one batch => exactly the squared gradient; max_batches limits the estimate
    one = FisherRegularizer(1.0, loss_fn=_mse, max_batches=1)
    one.setup(Tiny(), batches)
    m3 = Tiny()
    m3.zero_grad()
    _mse(m3, batches[0]).backward()
    assert torch.allclose(one.fisher["b.weight"], m3.b.weight.grad.square(), rtol=1e-5)


def test_fisher_on_causal_lm_and_errors(tiny_model, tokenizer):
    from obliviate.data.formatting import DataCollator, encode_example

    ex = [encode_example(tokenizer, "Who is Ada?", "A mathematician."),
          encode_example(tokenizer, "What is 2+2?", "Four.")]
    batch = DataCollator(tokenizer.pad_token_id)(ex)
    reg = FisherRegularizer(0.1, normalize=True)
    reg.setup(tiny_model, [batch])
    assert max(float(f.max()) for f in reg.fisher.values()) == pytest.approx(1.0)
    assert all(p.grad is None for p in tiny_model.parameters())  # setup leaves no gradients behind
    with pytest.raises(ValueError, match="retain"):
        FisherRegularizer(0.1).setup(tiny_model, None)
    with pytest.raises(ValueError, match="no batch"):
        FisherRegularizer(0.1).setup(tiny_model, [])
    with pytest.raises(RuntimeError, match="setup"):
        FisherRegularizer(0.1)(tiny_model)


def test_swd_on_tiny_llama_sums_tied_embedding_once(tiny_model):
    reg = SlicedWasserstein(0.1, n_projections=4, mode="fixed")
    reg.setup(tiny_model)
    names = reg.tensor_names
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # tied: counted once
    assert all(tiny_model.get_parameter(n).dim() == 2 for n in names)
