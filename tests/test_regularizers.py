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


def reference_swd(w_init: torch.Tensor, w: torch.Tensor, projections: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """SNAP's reference formula (brightjade/Opt-Out ``sliced_wasserstein_distance``), written out
    independently as a plain loop over the directions: for each unit direction u_k, sort the n
    projected rows of both matrices, SUM |difference|^p over the rows; then MEAN over the K
    directions. A 1-D tensor is one row (``unsqueeze(0)``), as in the reference ``trainer.py``."""
    if w.dim() == 1:
        w_init, w = w_init.unsqueeze(0), w.unsqueeze(0)
    per_direction = []
    for k in range(projections.shape[1]):
        u = projections[:, k]
        a = torch.sort(w_init @ u).values
        b = torch.sort(w @ u).values
        per_direction.append((a - b).abs().pow(p).sum())
    return torch.stack(per_direction).mean()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 4)   # weight (4, 5), bias (4,)
        self.b = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_swd_default_is_the_reference_formula_value_and_gradient():
    torch.manual_seed(7)
    for n, d, k in ((40, 7, 100), (13, 29, 17), (1, 9, 100)):
        x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
        y = torch.randn(n, d, dtype=torch.float64) * 0.8 + 0.2
        u = random_directions(d, k, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        ours = sliced_wasserstein(x, y, u)  # defaults: reduction="sum_rows", root=False, p=2
        ref = reference_swd(y, x, u)
        assert float(ours.detach() / ref.detach()) == pytest.approx(1.0, abs=1e-12)
        g_ours, = torch.autograd.grad(ours, x)
        g_ref, = torch.autograd.grad(reference_swd(y, x, u), x)
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12)
        # the named alternatives: mean over rows too (÷ n), and the old sum over directions too (× K)
        ref = ref.detach()
        assert float(sliced_wasserstein(x, y, u, reduction="mean").detach() / ref) == pytest.approx(1.0 / n, rel=1e-12)
        assert float(sliced_wasserstein(x, y, u, reduction="sum_all").detach() / ref) == pytest.approx(float(k), rel=1e-12)
    with pytest.raises(ValueError, match="'sum' was removed"):
        sliced_wasserstein(x, y, u, reduction="sum")


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
    # POT returns sqrt((1/K) Σ_k (1/n) Σ_i D_ik); SNAP's reference value is (1/K) Σ_k Σ_i D_ik = n · POT²
    ref = sliced_wasserstein(x, y, u)
    assert float(ref / (40 * pot.square())) == pytest.approx(1.0, abs=1e-10)
    assert float(reference_swd(y, x, u) / (40 * pot.square())) == pytest.approx(1.0, abs=1e-10)
    p1 = ot.sliced_wasserstein_distance(x, y, projections=u, p=1)
    assert float(sliced_wasserstein(x, y, u, p=1) / (40 * p1)) == pytest.approx(1.0, abs=1e-10)


def test_swd_regularizer_default_equals_reference_sum_over_all_tensors():
    """Default SlicedWasserstein = Σ over EVERY tensor (1-D ones as one sample) of the reference formula."""
    for mode in ("fresh", "fixed"):
        m = Tiny()
        reg = SlicedWasserstein(1.0, mode=mode, seed=4)
        reg.setup(m)
        init = {n: p.detach().clone() for n, p in m.named_parameters()}
        torch.manual_seed(2)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        val = reg(m)
        cur = dict(m.named_parameters())
        names = ["a.weight", "a.bias", "b.weight"]  # every tensor, 1-D included
        expect = sum(reference_swd(init[n], cur[n], reg.directions(i, init[n].shape[-1], call=0))
                     for i, n in enumerate(names))
        assert float(val.detach() / expect.detach()) == pytest.approx(1.0, abs=1e-5)
        assert reg.tensor_names == names
        assert (reg.n_projections, reg.reduction, reg.root, reg.vectors) == (100, "sum_rows", False, "sample")
        # the gradient is the reference formula's
        m.zero_grad()
        val.backward()
        got = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad()
        sum(reference_swd(init[n], cur[n], reg.directions(i, init[n].shape[-1], call=0))
            for i, n in enumerate(reg.tensor_names)).backward()
        for n, p in m.named_parameters():
            assert torch.allclose(got[n], p.grad, rtol=1e-4, atol=1e-7), n


def test_swd_one_dim_tensor_is_one_sample_in_rd():
    m = Tiny()
    reg = SlicedWasserstein(1.0, n_projections=50, name_filter=r"^a\.bias$", seed=1)
    reg.setup(m)
    assert reg.tensor_names == ["a.bias"]
    w0 = m.a.bias.detach().clone()
    with torch.no_grad():
        m.a.bias.add_(torch.tensor([0.3, -0.1, 0.2, 0.05]))
    u = reg.directions(0, 4)
    assert u.shape == (4, 50)  # directions in R^d, d = 4: ONE sample, not 4 samples in R^1
    expect = ((m.a.bias.detach() - w0) @ u).square().mean()  # (1/K) Σ_k (u_k·(w − w_init))²
    assert float(reg(m) / expect) == pytest.approx(1.0, abs=1e-6)
    fixed = SlicedWasserstein(1.0, n_projections=50, name_filter=r"^a\.bias$", mode="fixed")
    fixed.setup(Tiny())
    assert tuple(fixed._ref_sorted["a.bias"].shape) == (50, 1)
    # opt-out: 2-D tensors only (the pre-fix default)
    skip = SlicedWasserstein(1.0, vectors="skip")
    skip.setup(m)
    assert skip.tensor_names == ["a.weight", "b.weight"]
    with pytest.raises(ValueError, match="vectors must be"):
        SlicedWasserstein(1.0, vectors="values")


def test_paper_presets_and_configs_use_the_reference_swd():
    from pathlib import Path

    import yaml

    from obliviate.methods import build_terms
    from obliviate.train import resolve_train_config

    root = Path(__file__).resolve().parents[1]
    cases = [("snap", {})]
    for f in ("configs/snap.yaml", "configs/snap_rwku_small.yaml"):
        cfg = yaml.safe_load((root / f).read_text())
        cases.append((cfg["method"], dict(cfg.get("train") or {})))
    for method, train in cases:
        _, regs = build_terms(resolve_train_config(method, train))
        (r,) = regs
        assert isinstance(r, SlicedWasserstein)
        assert r.mode == "fresh" and r.reduction == "sum_rows"
        assert (r.mode, r.n_projections, r.reduction, r.root, r.vectors) == ("fresh", 100, "sum_rows", False, "sample")
        assert r.weight == pytest.approx(0.1)
    # configs/snap.yaml says "snap | euclidean | fisher": its train block must suit the baselines too
    train = dict(yaml.safe_load((root / "configs/snap.yaml").read_text()).get("train") or {})
    for method, cls in (("euclidean", EuclideanRegularizer), ("fisher", FisherRegularizer)):
        _, regs = build_terms(resolve_train_config(method, train))
        assert isinstance(regs[0], cls)
    _, (fr,) = build_terms(resolve_train_config("fisher", {}))
    assert fr.per_example == "loop" and fr.max_examples is None


def test_swd_regularizer_matches_pot_per_tensor_sum():
    m = Tiny()
    reg = SlicedWasserstein(1.0, n_projections=30, mode="fixed", reduction="mean", root=True, seed=5,
                            vectors="skip")
    reg.setup(m)
    assert reg.tensor_names == ["a.weight", "b.weight"]
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
    assert {tuple(t.shape) for t in fixed._ref_sorted.values()} == {(2, 4), (2, 1), (2, 3)}
    assert torch.equal(fixed.directions(0, 5), fixed.directions(0, 5))
    assert not torch.equal(fixed.directions(0, 5), fixed.directions(0, 5, call=1))
    weight_bytes = sum(p.numel() * 4 for n, p in m.named_parameters())
    assert fresh.reference_bytes() == weight_bytes
    assert fixed.reference_bytes() == (2 * 4 + 2 * 1 + 2 * 3) * 4  # a.weight, a.bias (one sample), b.weight
    # no tensor stored by the fixed regularizer shares storage with a model weight
    stored = list(fixed._ref_sorted.values())
    for t in stored:
        for p in m.parameters():
            assert t.data_ptr() != p.data_ptr()


def test_swd_options_and_errors():
    m = Tiny()
    reg = SlicedWasserstein(1.0, name_filter=r"^b\.", n_projections=4)
    reg.setup(m)
    assert reg.tensor_names == ["b.weight"]
    with pytest.raises(ValueError, match="no trainable tensor"):
        SlicedWasserstein(1.0, name_filter="nomatch").setup(m)
    with pytest.raises(ValueError, match="mode must be"):
        SlicedWasserstein(1.0, mode="cached")
    with pytest.raises(ValueError, match="reduction must be"):
        SlicedWasserstein(1.0, reduction="avg")
    with pytest.raises(ValueError, match="'sum' was removed"):
        SlicedWasserstein(1.0, reduction="sum")
    with pytest.raises(ValueError, match="bad option"):
        make_regularizer("swd", 0.1, include_1d=True)
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
    assert reg.tensor_names == ["a.weight", "a.bias"]


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


def _explicit_per_example_fisher(model, batches):
    """(1/N) Σ_n (∂ℓ_n/∂θ)², by an explicit loop over every example n of every batch."""
    expect = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    n_ex = 0
    for b in batches:
        for i in range(b["x"].shape[0]):
            model.zero_grad()
            _mse(model, {"x": b["x"][i:i + 1], "y": b["y"][i:i + 1]}).backward()
            for n, p in model.named_parameters():
                expect[n] += p.grad.square()
            n_ex += 1
    model.zero_grad()
    return {n: v / n_ex for n, v in expect.items()}, n_ex


def test_fisher_is_mean_of_per_example_squared_grads_and_penalty():
    m = Tiny()
    batches = _batches()
    expect, n_ex = _explicit_per_example_fisher(m, batches)
    # what the pre-fix code estimated: the square of each batch's MEAN gradient, averaged over batches
    sq_of_mean = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for b in batches:
        m.zero_grad()
        _mse(m, b).backward()
        for n, p in m.named_parameters():
            sq_of_mean[n] += p.grad.square() / len(batches)
    m.zero_grad()
    for kw in ({}, {"per_example": "loop"}, {"per_example": "vmap", "vmap_chunk": 4}):
        reg = FisherRegularizer(1.0, loss_fn=_mse, **kw)
        reg.setup(m, batches)
        method = kw.get("per_example", "default")
        for n in expect:
            assert torch.allclose(reg.fisher[n], expect[n], rtol=1e-5, atol=1e-10), (method, n)
        # per-example squares are larger (Jensen): the square of the mean is biased low
        assert all(float(sq_of_mean[n].sum()) < 0.9 * float(reg.fisher[n].sum()) for n in expect)
        assert (reg.n_batches, reg.n_examples) == (3, n_ex) == (3, 18)
    assert float(reg(m)) == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        m.a.weight.add_(0.1)
    assert float(reg(m)) == pytest.approx(float((expect["a.weight"] * 0.01).sum()), rel=1e-4)
    # max_examples / max_batches limit the estimate (to the first examples read)
    few = FisherRegularizer(1.0, loss_fn=_mse, max_examples=8)
    few.setup(Tiny(), batches)
    assert (few.n_examples, few.n_batches) == (8, 2)
    e8, _ = _explicit_per_example_fisher(Tiny(), [batches[0], {"x": batches[1]["x"][:2], "y": batches[1]["y"][:2]}])
    assert torch.allclose(few.fisher["b.weight"], e8["b.weight"], rtol=1e-5)
    one = FisherRegularizer(1.0, loss_fn=_mse, max_batches=1)
    one.setup(Tiny(), batches)
    e1, _ = _explicit_per_example_fisher(Tiny(), batches[:1])
    assert one.n_examples == 6 and torch.allclose(one.fisher["a.bias"], e1["a.bias"], rtol=1e-5)


def test_fisher_per_example_on_padded_causal_lm_batches(tiny_model, tokenizer):
    from obliviate.data.formatting import DataCollator, encode_example

    qa = [("Who is Ada?", "A mathematician who wrote the first program."), ("What is 2+2?", "Four."),
          ("Name a colour.", "Blue, like the sky on a clear summer day."), ("Capital of France?", "Paris.")]
    ex = [encode_example(tokenizer, q, a) for q, a in qa]
    collate = DataCollator(tokenizer.pad_token_id)
    batches = [collate(ex[:3]), collate(ex[3:])]          # padded to the longest row
    assert int(batches[0]["attention_mask"].sum()) < batches[0]["attention_mask"].numel()
    params = [p for p in tiny_model.parameters()]
    expect = [torch.zeros_like(p) for p in params]
    tiny_model.eval()
    for e in ex:  # each example alone, unpadded
        b = collate([e])
        loss = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        for acc, g in zip(expect, torch.autograd.grad(loss, params)):
            acc += g.square() / len(ex)
    names = [n for n, _ in tiny_model.named_parameters()]
    for kw in ({}, {"per_example": "vmap"}):
        reg = FisherRegularizer(0.1, **kw)
        reg.setup(tiny_model, batches)
        for n, e in zip(names, expect):
            assert torch.allclose(reg.fisher[n], e, rtol=1e-4, atol=1e-10), (kw, n)
        assert reg.n_examples == 4
    # an example without a supervised token (0/0 loss) is left out, not counted
    empty = dict(batches[1])
    empty = {k: torch.cat([v, v]) for k, v in empty.items()}
    empty["labels"][1] = -100
    reg = FisherRegularizer(0.1)
    reg.setup(tiny_model, [empty])
    assert reg.n_examples == 1
    # vmap drops the attention mask, so it refuses left padding
    left = DataCollator(tokenizer.pad_token_id, padding_side="left")(ex[:2])
    with pytest.raises(ValueError, match="right-padded"):
        FisherRegularizer(0.1, per_example="vmap").setup(tiny_model, [left])


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
    with pytest.raises(ValueError, match="per_example must be"):
        FisherRegularizer(0.1, per_example="batch")
    with pytest.raises(ValueError, match="max_examples"):
        FisherRegularizer(0.1, max_examples=0)


def test_swd_on_tiny_llama_sums_tied_embedding_once(tiny_model):
    reg = SlicedWasserstein(0.1, n_projections=4, mode="fixed")
    reg.setup(tiny_model)
    names = reg.tensor_names
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # tied: counted once
    assert {tiny_model.get_parameter(n).dim() for n in names} == {1, 2}  # norm weights too
    assert len(names) == len(list(tiny_model.parameters()))  # every parameter tensor, as the reference
