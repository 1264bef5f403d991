"""Loss terms against direct computations, gradient signs, reference caching, registry and presets."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from obliviate.config import ConfigError
from obliviate.data.formatting import encode_example, pad_batch
from obliviate.methods import IDK_RESPONSES, METHODS, build_terms, get_method, method_names, prompting_system_prompt
from obliviate.objectives.base import Regularizer, StepContext
from obliviate.objectives.forget import NLL, GradientAscent, sequence_logprobs
from obliviate.objectives.preference import DPO, NPO
from obliviate.objectives.reference import ensure_sequence_logprobs, lookup_sequence_logprobs
from obliviate.objectives.registry import (RegistryError, build_regularizer, build_term, get_regularizer_class,
                                           register_regularizer)
from obliviate.objectives.retain import KLRetain
from obliviate.train import stream_loader

QA = [("Who wrote the book Blue Sky?", "Blue Sky was written by Ana Torres."),
      ("Where was Ana Torres born?", "She was born in Lima, Peru, in 1970."),
      ("What is two plus two?", "Two plus two is four.")]


def _batch(tokenizer, pairs=QA, ids=None):
    enc = [encode_example(tokenizer, q, a, max_length=64) for q, a in pairs]
    for i, e in enumerate(enc):
        e["sample_id"] = i if ids is None else ids[i]
    return enc, pad_batch(enc, tokenizer.pad_token_id)


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are a fixed table (known log-probs for closed forms)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())  # [T, V]

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        b, t = input_ids.shape

        class Out:
            pass

        o = Out()
        o.logits = self.table[:t].unsqueeze(0).expand(b, t, -1)
        return o


def test_nll_equals_hf_loss_on_response_tokens(tokenizer, tiny_model):
    _, batch = _batch(tokenizer)
    ctx = StepContext()
    nll = NLL(stream="forget")(tiny_model, {"forget": batch}, ctx)
    hf = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(nll, hf, atol=1e-5)
    ga = GradientAscent(stream="forget")(tiny_model, {"forget": batch}, StepContext())
    assert torch.allclose(ga, -hf, atol=1e-5)
    # the prompt is masked: labels on the prompt are ignored
    assert (batch["labels"][0] == -100).sum() > 0


def test_sequence_logprobs_hand_made():
    # vocab 4, probabilities 1/2, 1/4, 1/8, 1/8 at every position
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])
    logits = probs.log().expand(1, 5, 4).clone()
    labels = torch.tensor([[-100, -100, 0, 1, 2]])  # response tokens predicted at positions 1..3
    lp = sequence_logprobs(logits, labels)
    assert lp.item() == pytest.approx(math.log(0.5) + math.log(0.25) + math.log(0.125), abs=1e-6)


def _hand_case(beta=0.1):
    torch.manual_seed(0)
    pol = FixedLogits(torch.randn(6, 5))
    ref = FixedLogits(torch.randn(6, 5))
    batch = {"input_ids": torch.zeros(2, 6, dtype=torch.long), "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "labels": torch.tensor([[-100, -100, 1, 2, 3, 4], [-100, -100, -100, 0, 2, -100]]),
             "sample_id": torch.tensor([0, 1])}

    def logp(model, labels):
        lsm = torch.log_softmax(model.table.detach(), -1)
        out = []
        for row in labels.tolist():
            out.append(sum(lsm[t - 1, y].item() for t, y in enumerate(row) if y != -100))
        return out

    return pol, ref, batch, logp


def test_npo_matches_closed_form():
    beta = 0.1
    pol, ref, batch, logp = _hand_case(beta)
    ctx = StepContext(reference=ref)
    term = NPO(beta=beta)
    term.prepare(pol, {"forget": [batch]}, ctx)
    val = term(pol, {"forget": batch}, ctx)
    lp_t, lp_r = logp(pol, batch["labels"]), logp(ref, batch["labels"])
    expected = sum((2 / beta) * math.log1p(math.exp(beta * (a - b))) for a, b in zip(lp_t, lp_r)) / 2
    assert val.item() == pytest.approx(expected, rel=1e-5)
    # the reference's log-probs are cached once, by sample id
    assert ctx.cache["seq_logp"]["forget"].tolist() == pytest.approx(lp_r, rel=1e-5)


def test_dpo_matches_closed_form():
    beta = 0.1
    pol, ref, batch, logp = _hand_case(beta)
    pref = dict(batch, labels=torch.tensor([[-100, -100, 0, 0, 1, 1], [-100, -100, 3, 3, -100, -100]]))
    ctx = StepContext(reference=ref)
    term = DPO(beta=beta)
    term.prepare(pol, {"forget": [batch], "forget_pref": [pref]}, ctx)
    val = term(pol, {"forget": batch, "forget_pref": pref}, ctx)
    w_t, w_r = logp(pol, pref["labels"]), logp(ref, pref["labels"])
    l_t, l_r = logp(pol, batch["labels"]), logp(ref, batch["labels"])
    exp = 0.0
    for i in range(2):
        m = beta * ((w_t[i] - w_r[i]) - (l_t[i] - l_r[i]))
        exp += -math.log(1 / (1 + math.exp(-m)))
    assert val.item() == pytest.approx(exp / 2, rel=1e-5)


def test_kl_is_zero_for_the_reference_and_topk_bounds_exact(tokenizer, tiny_model):
    enc, batch = _batch(tokenizer)
    ref = copy.deepcopy(tiny_model).eval()
    for topk in (None, 8):
        ctx = StepContext(reference=ref)
        term = KLRetain(topk=topk)
        term.prepare(tiny_model, {"retain": stream_loader(enc, tokenizer.pad_token_id, 2)}, ctx)
        assert abs(term(tiny_model, {"retain": batch}, ctx).item()) < 1e-5
    # move the model away: the coarsened (top-k) KL is a positive lower bound of the exact KL
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = StepContext(reference=ref)
    exact = KLRetain()(tiny_model, {"retain": batch}, ctx).item()
    approx_term = KLRetain(topk=8)
    approx_term.prepare(tiny_model, {"retain": stream_loader(enc, tokenizer.pad_token_id, 2)}, ctx)
    approx = approx_term(tiny_model, {"retain": batch}, ctx).item()
    assert exact > 0 and 0 < approx <= exact + 1e-6


def test_cached_reference_equals_live_forward(tokenizer, tiny_model):
    enc, batch = _batch(tokenizer)
    ref = copy.deepcopy(tiny_model).eval()
    ctx = StepContext(reference=ref)
    table = ensure_sequence_logprobs(ctx, "forget", {"forget": stream_loader(enc, tokenizer.pad_token_id, 2)})
    with torch.no_grad():
        live = sequence_logprobs(ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 batch["labels"])
    looked = lookup_sequence_logprobs(ctx, "forget", batch["sample_id"])
    assert torch.allclose(looked, live, atol=1e-4)
    assert table.shape == (3,)
    # NPO with the cache and NPO with a reference forward every step agree
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cached = NPO()(tiny_model, {"forget": batch}, ctx)
    uncached = NPO(cache=False)(tiny_model, {"forget": batch}, StepContext(reference=ref))
    assert torch.allclose(cached, uncached, atol=1e-4)


def _one_sgd_step(model, term, batch, lr=0.5):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = term(model, {"forget": batch}, StepContext())
    loss.backward()
    opt.step()


def test_gradient_signs(tokenizer, tiny_model):
    _, batch = _batch(tokenizer)
    measure = NLL()
    before = measure(tiny_model, {"forget": batch}, StepContext()).item()
    m_ga = copy.deepcopy(tiny_model)
    _one_sgd_step(m_ga, GradientAscent(), batch)
    m_nll = copy.deepcopy(tiny_model)
    _one_sgd_step(m_nll, NLL(), batch)
    with torch.no_grad():
        assert measure(m_ga, {"forget": batch}, StepContext()).item() > before
        assert measure(m_nll, {"forget": batch}, StepContext()).item() < before


class L2(Regularizer):
    """Test regularizer: ‖θ − θ_init‖² over trainable parameters."""

    name = "l2test"

    def setup(self, model, retain_loader=None):
        self.init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def __call__(self, model):
        return sum(((p - self.init[n]) ** 2).sum() for n, p in model.named_parameters() if n in self.init)


def test_registry_terms_and_regularizers():
    t = build_term({"type": "nll", "stream": "retain", "weight": 2})
    assert t.name == "retain_nll" and t.weight == 2.0 and t.needs == ("retain",)
    with pytest.raises(RegistryError, match="unknown term type 'foo'.*allowed"):
        build_term({"type": "foo"})
    with pytest.raises(RegistryError, match="unknown argument.*'betta'"):
        build_term({"type": "npo", "betta": 0.1})
    with pytest.raises(RegistryError, match="stream must be one of"):
        build_term({"type": "nll", "stream": "nowhere"})
    register_regularizer("l2test", L2)
    r = build_regularizer("l2test", 0.5)
    assert isinstance(r, L2) and r.weight == 0.5
    assert get_regularizer_class("test_objectives:L2") is L2
    with pytest.raises(RegistryError, match="unknown regularizer 'nope'"):
        get_regularizer_class("nope")


def test_methods_presets_and_build_terms():
    assert {"ulmr", "snap", "ga", "graddiff", "kl", "dpo", "idkdpo", "npo", "npo_rt", "retrain", "euclidean",
            "fisher", "prompting"} <= set(method_names())
    ulmr = get_method("ulmr")
    assert (ulmr["lr"], ulmr["epochs"], ulmr["batch_size"]) == (1e-4, 5, 16)
    snap = get_method("snap")
    assert snap["regularizer"] == "swd" and snap["regularizer_weight"] == 0.1
    with pytest.raises(ConfigError, match="unknown method 'nope'.*allowed.*ulmr"):
        get_method("nope")
    terms, regs = build_terms({"terms": [{"type": "ga"}, {"type": "nll", "stream": "retain"}],
                               "term_weights": {"retain_nll": 0.5}, "term_args": {"forget_ga": {"weight": 3}}})
    assert [(t.name, t.weight) for t in terms] == [("forget_ga", 3.0), ("retain_nll", 0.5)] and regs == []
    with pytest.raises(ConfigError, match="no term named 'x'"):
        build_terms({"terms": [{"type": "ga"}], "term_weights": {"x": 1}})
    terms, _ = build_terms(get_method("npo_rt"))
    assert [type(t).__name__ for t in terms] == ["NPO", "NLL"] and terms[0].beta == 0.1
    p = get_method("prompting")
    assert p["train"] is False and "{target}" in p["system_prompt"]
    assert "Ana Torres" in prompting_system_prompt("Ana Torres")
    assert len(IDK_RESPONSES) == 10 and len(METHODS) >= 13


def test_every_trained_preset_validates():
    from obliviate.train import resolve_train_config

    for name in method_names():
        preset = get_method(name)
        if preset.get("regularizer"):
            try:
                get_regularizer_class(preset["regularizer"])
            except RegistryError:
                continue  # SNAP's regularizers module not installed in this checkout
        cfg = resolve_train_config(name)
        assert cfg.method == name


def test_response_window_logits_match_full_logits(tokenizer, tiny_model):
    """Terms read the logits of the response window only; their values equal the full-logits ones."""
    from obliviate.objectives.forget import (causal_lm_logits, mean_token_nll, response_window,
                                             sequence_logprobs as seq_lp)

    _, batch = _batch(tokenizer)
    labels = batch["labels"]
    t = labels.shape[1]
    first = min(int(row.ne(-100).nonzero()[0]) for row in labels)
    assert response_window(labels) == t - (first - 1) < t  # the prompt positions are skipped
    win = causal_lm_logits(tiny_model, batch)
    full = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert win.shape[1] == response_window(labels) and full.shape[1] == t
    assert torch.allclose(win, full[:, t - win.shape[1]:], atol=1e-5)
    assert torch.allclose(mean_token_nll(win, labels), mean_token_nll(full, labels), atol=1e-5)
    assert torch.allclose(seq_lp(win, labels), seq_lp(full, labels), atol=1e-4)
    # a batch with no response tokens at all keeps every position
    assert response_window(torch.full_like(labels, -100)) == t


def test_kl_and_npo_with_window_equal_direct_full_logits(tokenizer, tiny_model):
    """KL (live reference) and NPO (uncached) on windowed logits equal the full-sequence formulas."""
    import torch.nn.functional as F

    _, batch = _batch(tokenizer)
    ref = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = StepContext(reference=ref)
    kl = KLRetain(stream="retain")(tiny_model, {"retain": batch}, ctx)
    inp = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        lq = torch.log_softmax(tiny_model(**inp).logits[:, :-1], -1)
        lp = torch.log_softmax(ref(**inp).logits[:, :-1], -1)
    mask = batch["labels"][:, 1:].ne(-100)
    direct = (lp.exp() * (lp - lq)).sum(-1)[mask].mean()
    assert torch.allclose(kl, direct, atol=1e-5)
    npo = NPO(beta=0.1, cache=False)(tiny_model, {"forget": batch}, StepContext(reference=ref))
    full_pol = sequence_logprobs(tiny_model(**inp).logits, batch["labels"])
    full_ref = sequence_logprobs(ref(**inp).logits, batch["labels"])
    direct_npo = -(2 / 0.1) * F.logsigmoid(-0.1 * (full_pol - full_ref)).mean()
    assert torch.allclose(npo, direct_npo, atol=1e-4)


def test_dpo_preferred_perturbed_uses_tofus_wrong_answers(tokenizer):
    """Issue 15 item 7: DPO as ULMR's baseline that "generates incorrect knowledge": the preferred
    response y_w is one of TOFU's perturbed answers of the same question."""
    from obliviate.data.records import DataError
    from obliviate.data.sources import resolve_records
    from obliviate.train import TrainConfig, encode_streams, resolve_train_config

    cfg = resolve_train_config("dpo", overrides=["preferred=perturbed"])
    assert cfg.preferred == "perturbed"
    forget = resolve_records("tofu:forget01_perturbed")[:6]
    assert all(len(r.perturbed_answers) >= 2 for r in forget)
    enc = encode_streams(tokenizer, {"forget": forget}, cfg, ["forget", "forget_pref"])
    for r, e in zip(forget, enc["forget_pref"]):
        text = tokenizer.decode([t for t in e["labels"] if t != -100], skip_special_tokens=True).strip()
        assert text in r.perturbed_answers and text != r.answer
    again = encode_streams(tokenizer, {"forget": forget}, cfg, ["forget", "forget_pref"])
    assert again["forget_pref"] == enc["forget_pref"]  # a seeded choice
    plain = resolve_records("tofu:forget01")[:3]
    with pytest.raises(DataError, match=r"preferred='perturbed' needs records with perturbed answers.*"
                                        r"3 of 3.*tofu:forget01_perturbed"):
        encode_streams(tokenizer, {"forget": plain}, cfg, ["forget", "forget_pref"])
    with pytest.raises(ConfigError, match=r"preferred: 'wrong' is not one of \['meta', 'idk', 'meta_or_idk', "
                                          r"'perturbed'\]"):
        resolve_train_config("dpo", overrides=["preferred=wrong"])
    assert TrainConfig(method="dpo", terms=[{"type": "dpo"}], preferred="idk").preferred == "idk"
