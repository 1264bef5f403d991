"""``obliviate audit``: every attack on the tiny random Llama, the CLI end to end, resume, MIA AUC."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch

from obliviate.audit.common import AuditConfig, AuditData, build_audit_data
from obliviate.data.records import QARecord

from conftest import TOFU_DIR

SUBJECTS = ["Ann Lee", "Bo Chan"]


def _records(n: int = 6, prefix: str = "f") -> list[QARecord]:
    out = []
    for i in range(n):
        s = SUBJECTS[i % 2]
        out.append(QARecord(question=f"Where was {s} born ({prefix}{i})?", answer=f"{s} was born in Town{i}.",
                            subject=s, id=f"{prefix}{i}", meta={"paraphrased_question": f"What is the birthplace "
                                                                                        f"of {s} ({prefix}{i})?"}))
    return out


def _write_jsonl(path, recs):
    path.write_text("".join(json.dumps({"question": r.question, "answer": r.answer, "subject": r.subject,
                                        "id": r.id, **r.meta}) + "\n" for r in recs))
    return str(path)


def _data(cfg) -> AuditData:
    recs = _records()
    return AuditData(kind="custom", forget=recs, relearn_train=recs[:2], relearn_eval=recs[2:],
                     retain_sample=_records(2, "r"), mia_members=[(r.question, r.answer) for r in recs],
                     mia_nonmembers=[(r.question, r.answer) for r in _records(4, "h")])


# ------------------------------------------------------------------------------------ membership inference
def test_roc_auc_hand_computed():
    from obliviate.audit.membership import roc_auc

    # member > non-member in 5 of the 6 pairs
    assert roc_auc([0.9, 0.8, 0.3], [0.5, 0.1]) == pytest.approx(5 / 6)
    # a tie counts one half: pairs (1 vs 2) = 0, (2 vs 2) = 0.5
    assert roc_auc([1.0, 2.0], [2.0]) == pytest.approx(0.25)
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu([0.9, 0.8, 0.3], [0.5, 0.1]).statistic
    assert u / 6 == pytest.approx(5 / 6)


def test_mia_scores_hand_computed():
    from obliviate.audit.membership import mia_scores

    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    stats = {"logp": lp, "mu": [-2.0] * 5, "sigma": [2.0] * 5}
    s = mia_scores(stats, "hello hello", k=0.4)
    assert s["loss"] == pytest.approx(-3.0)
    assert s["zlib"] == pytest.approx(-3.0 / len(zlib.compress(b"hello hello")))
    assert s["min_k"] == pytest.approx(-4.5)  # the 2 lowest of 5
    assert s["min_k_pp"] == pytest.approx(((-4 + 2) / 2 + (-5 + 2) / 2) / 2)


def test_token_statistics_match_mean_loss_and_moments(tiny_model, tokenizer):
    from obliviate.audit.membership import token_statistics
    from obliviate.evals.scoring import mean_loss

    texts = ["The quick brown fox jumps over the lazy dog.", "Unlearning is hard."]
    stats = token_statistics(tiny_model, tokenizer, [(None, t) for t in texts], batch_size=2)
    ref = mean_loss(tiny_model, tokenizer, texts)
    for st, loss in zip(stats, ref):
        assert -sum(st["logp"]) / len(st["logp"]) == pytest.approx(loss, rel=1e-4)
    # μ, σ of the first text's first scored position, computed directly
    ids = tokenizer(texts[0])["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0, 0].float(), -1)
    mu = float((lp.exp() * lp).sum())
    assert stats[0]["mu"][0] == pytest.approx(mu, rel=1e-4)
    assert stats[0]["sigma"][0] == pytest.approx(math.sqrt(float((lp.exp() * lp**2).sum()) - mu**2), rel=1e-3)


def test_membership_attack_gives_aucs(tiny_model, tokenizer):
    from obliviate.audit.membership import MIA_SCORES, membership_attack

    cfg = AuditConfig(batch_size=4)
    res = membership_attack(tiny_model, tokenizer, _data(cfg), cfg, progress=False)
    assert set(res["auc"]) == set(MIA_SCORES)
    assert all(0.0 <= v <= 1.0 for v in res["auc"].values())
    assert res["n_members"] == 6 and res["n_nonmembers"] == 4
    assert res["member_loss"] > 0


# ------------------------------------------------------------------------------------ quantization
@pytest.mark.parametrize("bits", [8, 4])
def test_rtn_quantization_is_on_the_grid(tiny_model, bits):
    from obliviate.audit.quantization import quantize_model

    before = {n: m.weight.detach().clone() for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Linear)}
    _, info = quantize_model(tiny_model, bits, backend="rtn", group_size=32)
    assert info["backend"] == "rtn" and info["layers"] > 0 and info["mean_abs_change"] > 0
    qmax = 2 ** (bits - 1) - 1
    for name, mod in tiny_model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        w = mod.weight.detach()
        if "lm_head" in name:
            assert torch.equal(w, before[name])  # kept in full precision
            continue
        assert not torch.equal(w, before[name])
        g = w.reshape(w.shape[0], -1, 32)
        scale = before[name].reshape(w.shape[0], -1, 32).abs().amax(-1, keepdim=True) / qmax
        q = g / scale
        assert torch.allclose(q, q.round(), atol=1e-3)  # integer multiples of the group's step
        assert q.round().min() >= -qmax - 1 and q.round().max() <= qmax
        assert max(len(torch.unique(q.round()[r, c])) for r in range(3) for c in range(g.shape[1])) <= 2 ** bits


def test_quanto_int8_backend(tiny_model):
    pytest.importorskip("optimum.quanto")
    from obliviate.audit.quantization import quantize_model

    w0 = tiny_model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    _, info = quantize_model(tiny_model, 8, backend="quanto")
    q = tiny_model.model.layers[0].self_attn.q_proj
    assert type(q).__name__ == "QLinear" and info["backend"] == "quanto"
    data = q.weight._data
    assert data.dtype == torch.int8
    deq = q.weight.dequantize().float()
    assert not torch.equal(deq, w0) and (deq - w0).abs().max() < w0.abs().max() / 100


def test_quantization_attack_scores_forget(tiny_model_dir):
    from obliviate.audit.quantization import quantization_attack
    from obliviate.models import load_model

    cfg = AuditConfig(quant_bits=[8, 4], quant_backend="rtn", max_new_tokens=4, batch_size=8)
    res = quantization_attack(lambda: load_model(str(tiny_model_dir)), _data(cfg), cfg, progress=False)
    assert set(res) == {"8bit", "4bit"}
    assert res["4bit"]["n"] == 6 and 0 <= res["4bit"]["prob"] <= 1
    assert res["4bit"]["quantization"]["mean_abs_change"] > res["8bit"]["quantization"]["mean_abs_change"]


# ------------------------------------------------------------------------------------ relearning
def test_relearn_curve_steps_and_learning(tiny_model, tokenizer):
    from obliviate.audit.relearning import relearn_curve

    cfg = AuditConfig(relearn_steps=3, relearn_eval_every=2, relearn_lr=5e-2, relearn_batch_size=2, max_new_tokens=4)
    recs = _records()
    # train and score on the same two records: their probability must rise
    c = relearn_curve(tiny_model, tokenizer, recs[:2], recs[:2], cfg, progress=False)
    assert c["steps"] == [0, 2, 3]
    assert c["loss"][0] is None and all(math.isfinite(v) for v in c["loss"][1:])
    assert c["prob"][-1] > c["prob"][0]


# ------------------------------------------------------------------------------------ prompt attacks
def test_prompt_attacks(tiny_model, tokenizer):
    from obliviate.audit.prompts import JAILBREAK_PREFIXES, prompt_attack

    cfg = AuditConfig(max_new_tokens=4, batch_size=8, samples=2, languages=["French"], in_context_facts=2)
    data = _data(cfg)
    res = prompt_attack(tiny_model, tokenizer, data, cfg, progress=False)
    assert res["adversarial"] == {"skipped": "only for an RWKU forget set (forget_level3)"}
    assert [r["prompt"] for r in res["paraphrase"]["rows"]] == [r.meta["paraphrased_question"] for r in data.forget]
    assert res["language"]["rows"][0]["prompt"].startswith("Answer in French: ")
    assert "not translated" in res["language"]["mode"]
    for row, rec in zip(res["in_context"]["rows"], data.forget):
        body = row["prompt"]
        assert body.endswith(rec.question) and body.count("Q: ") == 2
        assert rec.answer not in body  # never its own answer
        others = [o for o in data.forget if o.subject != rec.subject]
        assert not any(o.answer in body for o in others)  # only facts about the same target
    assert len(res["jailbreak"]["per_variant"]) == len(JAILBREAK_PREFIXES)
    assert len(res["jailbreak"]["rows"]) == len(JAILBREAK_PREFIXES) * len(data.forget)
    s = res["sampling"]
    assert all(len(r["samples"]) == 2 and r["rouge"] == max(r["sample_rouge"]) for r in s["rows"])
    assert 0 <= s["hit_rate"] <= 1


def test_build_audit_data_tofu():
    cfg = AuditConfig(max_samples=10, seed=3)
    d = build_audit_data("tofu:forget01", "tofu:retain99", cfg, tofu_source=str(TOFU_DIR))
    assert len(d.forget) == 10 and len(d.relearn_train) == 2 and len(d.relearn_eval) == 8
    assert not {r.question for r in d.relearn_train} & {r.question for r in d.relearn_eval}
    assert all(r.meta.get("paraphrased_question") for r in d.forget)  # read from forget01_perturbed
    assert len(d.retain_sample) == 2 and d.mia_source == "forget vs tofu:holdout01"
    assert len(d.mia_nonmembers) == 10
    d2 = build_audit_data("tofu:forget01", None, cfg, tofu_source=str(TOFU_DIR))
    assert [r.id for r in d2.relearn_train] == [r.id for r in d.relearn_train]  # seeded


# ------------------------------------------------------------------------------------ CLI end to end + resume
def test_audit_cli_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    from obliviate.cli import main

    forget = _write_jsonl(tmp_path / "forget.jsonl", _records())
    retain = _write_jsonl(tmp_path / "retain.jsonl", _records(4, "r"))
    holdout = _write_jsonl(tmp_path / "holdout.jsonl", _records(4, "h"))
    out = tmp_path / "audit"
    m = str(tiny_model_dir)
    argv = ["audit", "--model", m, "--base", m, "--reference", m, "--forget", forget, "--retain", retain,
            "--holdout", holdout, "--out", str(out), "--label", "tiny", "--relearn-steps", "2",
            "--relearn-eval-every", "1", "--max-new-tokens", "4", "--batch-size", "8", "--samples", "2",
            "--quant-backend", "rtn", "--relearn-fraction", "0.34", "--set", "languages=[French]",
            "--prompt-variants", "paraphrase,in_context,language", "--no-progress"]  # the rest: test_prompt_attacks
    assert main(argv) == 0
    audit = json.loads((out / "audit.json").read_text())
    for f in ("report.md", "relearning.png", "manifest.json"):
        assert (out / f).is_file()
    assert set(audit["units"].values()) == {"done"}
    assert len(list((out / "attacks").glob("*.json"))) == 3 + 2 + 2 + 2 + 3
    assert audit["data"]["relearn_train_n"] == 2 and audit["data"]["relearn_eval_n"] == 4
    keys = {r["key"] for r in audit["table"]}
    assert {"relearning.forget", "relearning.retain", "quantization.8bit", "quantization.4bit", "prompts.paraphrase",
            "prompts.in_context", "prompts.language", "membership.min_k_pp"} <= keys
    # the same model as reference: every attack reaches exactly the reference's level -> all pass
    assert all(v == "pass" for v in audit["verdicts"].values())
    assert audit["curves"]["model/forget"]["steps"] == [0, 1, 2]
    md = (out / "report.md").read_text()
    assert "| Attack | Metric | Base | Before | Attacked | Reference |" in md and "attacks passed" in md

    # rerun: every unit is reused; a changed relearning budget reruns only the relearning units
    mtime = (out / "attacks" / "quantization.model.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert set(json.loads((out / "audit.json").read_text())["units"].values()) == {"reused"}
    argv2 = list(argv)
    argv2[argv2.index("--relearn-steps") + 1] = "3"
    assert main(argv2) == 0
    units = json.loads((out / "audit.json").read_text())["units"]
    assert {k for k, v in units.items() if v == "done"} == {"relearning.model", "relearning.reference"}
    assert (out / "attacks" / "quantization.model.json").stat().st_mtime_ns == mtime

    # obliviate report --layout audit compares methods from their audit.json
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--layout", "audit", "--no-plots"]) == 0
    text = (tmp_path / "rep" / "audit.md").read_text()
    assert "Relearn forget" in text and "| tiny |" in text


def test_shared_dir_reuses_base_and_reference_units(tiny_model_dir, tokenizer, tmp_path):
    from conftest import build_tiny_llama

    from obliviate.audit.runner import run_audit

    other = tmp_path / "other-model"
    build_tiny_llama(tokenizer, seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    forget = _write_jsonl(tmp_path / "forget.jsonl", _records(4))
    holdout = _write_jsonl(tmp_path / "holdout.jsonl", _records(4, "h"))
    cfg = {"attacks": ["membership"], "max_new_tokens": 2, "batch_size": 8}
    m = str(tiny_model_dir)
    kw = dict(reference=m, holdout=holdout, config=cfg, progress=False, plots=False, shared_dir=tmp_path / "shared")
    a = run_audit(m, m, forget, tmp_path / "a", **kw)
    assert set(a["units"].values()) == {"done"}
    b = run_audit(str(other), m, forget, tmp_path / "b", **kw)
    assert b["units"] == {"clean.model": "done", "membership.model": "done", "clean.base": "reused (shared)",
                          "membership.base": "reused (shared)", "clean.reference": "reused (shared)",
                          "membership.reference": "reused (shared)"}
    assert b["metrics"]["mia_loss_auc"] != a["metrics"]["mia_loss_auc"]  # a different model was attacked


def test_audit_config_errors_name_the_field():
    from obliviate.config import ConfigError

    with pytest.raises(ConfigError, match="attacks"):
        AuditConfig(attacks=["nope"]).validate()
    with pytest.raises(ConfigError, match="quant_bits"):
        AuditConfig(quant_bits=[5]).validate()
    with pytest.raises(ConfigError, match="relearn_fraction"):
        AuditConfig(relearn_fraction=1.0).validate()
