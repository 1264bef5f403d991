"""Membership inference: can the model's likelihoods still tell forget data from unseen data?

Four per-text scores (higher = "more likely a training member"), each over the scored tokens
``x_1..x_T`` of a text (a QA answer after its chat prompt, or a raw text after its first token):

* **LOSS** (Yeom et al. 2018, "Privacy risk in machine learning"): ``(1/T) Σ_t log p(x_t | x_<t)``,
  the negative mean token NLL.
* **zlib** (Carlini et al. 2021, "Extracting training data from large language models"): the
  log-perplexity over the zlib entropy, ``(1/T) Σ_t log p(x_t | x_<t) / |zlib(text)|`` with
  ``|zlib(text)|`` the byte length of the zlib-compressed UTF-8 text (negated ratio, so higher =
  member).
* **Min-K %** (Shi et al. 2024, "Detecting pretraining data from large language models"): the mean
  of the ``k`` % smallest token log-probabilities.
* **Min-K %++** (Zhang et al. 2024, "Min-K%++: improved baseline for detecting pre-training data
  from large language models"): per token ``(log p(x_t|x_<t) − μ_t) / σ_t`` with
  ``μ_t = E_{z∼p(·|x_<t)} log p(z|x_<t)`` and ``σ_t² = E_z (log p(z|x_<t))² − μ_t²`` over the
  vocabulary, then the mean of the ``k`` % smallest.

The attack's number is the ROC AUC of a score between members (the forget set) and non-members
(TOFU's holdout authors, or RWKU's retain_mia texts against its forget_mia texts): 0.5 means the
model cannot tell them apart. A model that never saw the forget set (the reference) sets the
level to reach; an unlearned model whose AUC stays near the base model's still "remembers".
AUC uses ``sklearn.metrics.roc_auc_score``; without scikit-learn, the Mann–Whitney U statistic,
``AUC = U / (n₁ n₀)`` (ties count ½).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..data.formatting import encode_example, length_grouped_batches, pad_batch

__all__ = ["MIA_SCORES", "token_statistics", "mia_scores", "roc_auc", "membership_attack"]

MIA_SCORES = ("loss", "zlib", "min_k", "min_k_pp")


@torch.no_grad()
def token_statistics(model, tokenizer, items: Sequence[tuple[str | None, str]], *, batch_size: int = 8,
                     max_length: int = 512, progress: bool | str = False) -> list[dict[str, list[float]]]:
    """Per scored token: ``logp`` = log p(x_t | x_<t), ``mu`` = μ_t and ``sigma`` = σ_t (see module).

    An item ``(prompt, text)`` with a prompt scores the text as the chat-formatted response to it
    (:func:`~obliviate.data.formatting.encode_example`, its closing end-of-turn token included);
    ``(None, text)`` scores the raw text's tokens after its first. Batches are length grouped.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs: list[tuple[list[int], int]] = []  # (ids, number of leading context tokens)
    for k, (prompt, text) in enumerate(items):
        if prompt is not None:
            enc = encode_example(tokenizer, prompt, text, max_length=max_length)
            n_ctx = sum(1 for lab in enc["labels"] if lab == -100)
            seqs.append((enc["input_ids"], n_ctx))
        else:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
            if len(ids) < 2:
                raise ValueError(f"text {k} has fewer than 2 tokens")
            seqs.append((ids, 1))
    out: list[dict[str, list[float]]] = [{} for _ in seqs]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batches = length_grouped_batches([len(s) for s, _ in seqs], batch_size, shuffle=False)
        for batch in tqdm(batches, desc=progress if isinstance(progress, str) else "mia", disable=not progress,
                          leave=False):
            padded = pad_batch([{"input_ids": seqs[i][0], "attention_mask": [1] * len(seqs[i][0])} for i in batch],
                               pad, keys=("input_ids", "attention_mask"))
            ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            logp_all = torch.log_softmax(logits, dim=-1)
            p_all = logp_all.exp()
            mu = (p_all * logp_all).sum(-1)
            sigma = ((p_all * logp_all.pow(2)).sum(-1) - mu.pow(2)).clamp(min=1e-12).sqrt()
            tgt = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for r, i in enumerate(batch):
                n, c = len(seqs[i][0]), seqs[i][1]
                sl = slice(c - 1, n - 1)  # logits at position t-1 predict token t
                out[i] = {"logp": tgt[r, sl].tolist(), "mu": mu[r, sl].tolist(), "sigma": sigma[r, sl].tolist()}
            del logits, logp_all, p_all
    finally:
        model.train(was_training)
    return out


def _lowest_mean(values: Sequence[float], k: float) -> float:
    n = max(1, math.ceil(k * len(values)))
    return float(sum(sorted(values)[:n]) / n)


def mia_scores(stats: dict[str, list[float]], text: str, *, k: float = 0.2) -> dict[str, float]:
    """The four membership scores of one text from its :func:`token_statistics` (module docstring)."""
    lp = stats["logp"]
    if not lp:
        raise ValueError("no scored tokens")
    mean_lp = sum(lp) / len(lp)
    z = [(a - m) / s for a, m, s in zip(lp, stats["mu"], stats["sigma"])]
    return {"loss": mean_lp, "zlib": mean_lp / len(zlib.compress(text.encode("utf-8"))),
            "min_k": _lowest_mean(lp, k), "min_k_pp": _lowest_mean(z, k)}


def roc_auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """ROC AUC of ``score`` separating members (label 1) from non-members (label 0):
    ``P(s_member > s_nonmember) + ½ P(tie)``. scikit-learn's ``roc_auc_score`` when installed,
    else ``U / (n₁ n₀)`` from the Mann–Whitney U statistic (scipy)."""
    if not members or not nonmembers:
        raise ValueError("AUC needs at least one member and one non-member score")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # pragma: no cover - sklearn is installed in the project's venv
        from scipy.stats import mannwhitneyu

        return float(mannwhitneyu(list(members), list(nonmembers), alternative="two-sided").statistic
                     / (len(members) * len(nonmembers)))
    labels = [1] * len(members) + [0] * len(nonmembers)
    return float(roc_auc_score(labels, list(members) + list(nonmembers)))


def membership_attack(model, tokenizer, data, cfg, *, progress: bool = True, label: str = "model") -> dict[str, Any]:
    """All four scores on ``data.mia_members`` vs ``data.mia_nonmembers``; their AUCs and means.

    Returns ``{"auc": {score: AUC}, "member_mean": {...}, "nonmember_mean": {...},
    "member_loss": mean NLL, "nonmember_loss": mean NLL, "n_members", "n_nonmembers", "source"}``.
    """
    if not data.mia_members or not data.mia_nonmembers:
        return {"skipped": "no member / non-member sets"}
    res = {}
    for name, items in (("member", data.mia_members), ("nonmember", data.mia_nonmembers)):
        stats = token_statistics(model, tokenizer, items, batch_size=cfg.batch_size,
                                 progress=f"{label} mia {name}s" if progress else False)
        res[name] = [mia_scores(s, text, k=cfg.mia_k) for s, (_, text) in zip(stats, items)]
    mean = lambda xs: float(sum(xs) / len(xs))  # noqa: E731
    return {
        "auc": {s: roc_auc([r[s] for r in res["member"]], [r[s] for r in res["nonmember"]]) for s in MIA_SCORES},
        "member_mean": {s: mean([r[s] for r in res["member"]]) for s in MIA_SCORES},
        "nonmember_mean": {s: mean([r[s] for r in res["nonmember"]]) for s in MIA_SCORES},
        "member_loss": -mean([r["loss"] for r in res["member"]]),
        "nonmember_loss": -mean([r["loss"] for r in res["nonmember"]]),
        "n_members": len(res["member"]), "n_nonmembers": len(res["nonmember"]), "source": data.mia_source,
        "k": cfg.mia_k,
    }
