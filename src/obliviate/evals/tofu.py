"""The TOFU benchmark (Maini et al., 2024) as reported in ULMR's Table 3.

Four evaluation sets, each scored with ROUGE-L recall (R), Probability (P) and Truth Ratio (TR):

=============  ==========================  ================================================
set            TOFU split                  P                          TR column
=============  ==========================  ================================================
forget         ``forgetXX_perturbed``      mean ``P(a|q)^(1/|a|)``     ``mean(min(R, 1/R))``
retain         ``retain_perturbed``        mean ``P(a|q)^(1/|a|)``     ``mean(max(0, 1 − R))``
real_authors   ``real_authors_perturbed``  mean choice prob.           ``mean(max(0, 1 − R))``
world_facts    ``world_facts_perturbed``   mean choice prob.           ``mean(max(0, 1 − R))``
=============  ==========================  ================================================

* **R**: ROUGE-L recall of the model's greedy answer against the reference answer.
* **P**: forget / retain: the length-normalised probability of the reference answer; real
  authors / world facts: ``P̄(a)/(P̄(a) + Σ P̄(wrong options))`` (:func:`~.metrics.choice_prob`).
* **R** (truth ratio per question): geometric mean of the perturbed answers' normalised
  probabilities over the base answer's (TOFU's code; see :func:`~.metrics.truth_ratio`). The
  base (:func:`truth_ratio_base`) is the paraphrased answer on forget / retain and the answer
  itself on real authors / world facts, even when a row carries a paraphrase — as TOFU and
  locuslab/open-unlearning do (``ra_Truth_Ratio``: ``ra_Q_A_Prob`` over ``answer``).
* **forget_quality**: KS-test p-value between this model's forget-set truth ratios and a retain
  model's (:func:`~.metrics.forget_quality`); needs ``retain_result``.
* **model_utility**: harmonic mean of the nine retain / real-authors / world-facts numbers.

Metric keys are ``<set>_rouge``, ``<set>_prob``, ``<set>_truth_ratio`` (the Table 3 columns),
plus ``<set>_truth_ratio_mean`` (raw mean R), ``<set>_n``, ``forget_quality``, ``forget_ks_stat``,
``model_utility``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ..data.records import DataError, QARecord
from . import metrics as M
from .scoring import generate_answers, sequence_logprobs

TOFU_SETS = ("forget", "retain", "real_authors", "world_facts")
#: set -> key of :func:`obliviate.data.tofu.tofu_eval_splits`
_SPLIT_KEY = {"forget": "forget_perturbed", "retain": "retain_perturbed", "real_authors": "real_authors",
              "world_facts": "world_facts"}
#: ULMR Table 3 layout: (column group, [(column, metric key)])
TABLE3_COLUMNS = [
    ("Forget Set", [("R", "forget_rouge"), ("P", "forget_prob"), ("TR", "forget_truth_ratio")]),
    ("Retain Set", [("R", "retain_rouge"), ("P", "retain_prob"), ("TR", "retain_truth_ratio")]),
    ("Real Authors", [("R", "real_authors_rouge"), ("P", "real_authors_prob"), ("TR", "real_authors_truth_ratio")]),
    ("World Facts", [("R", "world_facts_rouge"), ("P", "world_facts_prob"), ("TR", "world_facts_truth_ratio")]),
]
UTILITY_KEYS = [k for group, cols in TABLE3_COLUMNS[1:] for _, k in cols]
#: greedy answer budget: 200 new tokens, as locuslab/open-unlearning's ``configs/generation/default.yaml``
#: (TOFU's longest answers are about 85 tokens, so a shorter budget cuts some and lowers ROUGE-L recall)
DEFAULT_MAX_NEW_TOKENS = 200
#: sets whose truth-ratio base is the paraphrased answer (the others use the answer itself)
PARAPHRASE_BASE_SETS = ("forget", "retain")

__all__ = ["evaluate_tofu", "forget_truth_ratios", "load_retain_truth_ratios", "tofu_report", "truth_ratio_base",
           "TOFU_SETS", "TABLE3_COLUMNS", "UTILITY_KEYS", "DEFAULT_MAX_NEW_TOKENS"]


def _load_sets(forget_split: str, source, sets: Sequence[str], max_samples: int | None) -> dict[str, list[QARecord]]:
    from ..data.tofu import load_tofu, tofu_eval_splits

    unknown = [s for s in sets if s not in TOFU_SETS]
    if unknown:
        raise ValueError(f"unknown TOFU evaluation set(s) {unknown}; allowed: {', '.join(TOFU_SETS)}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    splits = tofu_eval_splits(forget_split)
    out = {}
    for s in sets:
        split = splits[_SPLIT_KEY[s]]
        recs = load_tofu(split, source)
        if not recs:
            raise DataError(f"TOFU split {split!r} is empty", source=str(source))
        for i, r in enumerate(recs):
            if not r.perturbed_answers:
                raise DataError("no perturbed answers (needed for the truth ratio)", source=f"{source}/{split}",
                                line=i + 1, field="perturbed_answer")
        out[s] = recs[:max_samples] if max_samples else recs
    return out


def _score_records(model, tokenizer, sets: dict[str, list[QARecord]], *, batch_size: int, system_prompt: str | None,
                   progress: bool) -> dict[tuple[str, str], tuple[float, int]]:
    """Score every (question, candidate answer) of every set in one batched pass (duplicates once)."""
    pairs: dict[tuple[str, str], None] = {}
    for recs in sets.values():
        for r in recs:
            pairs[(r.question, r.answer)] = None
            if r.paraphrased_answer:
                pairs[(r.question, r.paraphrased_answer)] = None
            for p in r.perturbed_answers:
                pairs[(r.question, p)] = None
    keys = list(pairs)
    scores = sequence_logprobs(model, tokenizer, keys, batch_size=batch_size, system=system_prompt,
                               progress="tofu: score answers" if progress else False)
    return dict(zip(keys, scores))


def _norm_prob(scores, question: str, answer: str) -> float:
    s, n = scores[(question, answer)]
    return M.normalized_prob(s, n)


def forget_truth_ratios(model, tokenizer, *, forget_split: str = "forget01", source="locuslab/TOFU",
                        max_samples: int | None = None, batch_size: int = 16, system_prompt: str | None = None,
                        progress: bool = True) -> list[float]:
    """Per-question truth ratios of ``model`` on the forget set (what forget quality compares).

    Use it on a retain model (trained without the forget set) to get the reference sample for
    :func:`obliviate.evals.metrics.forget_quality`. No generation is needed.
    """
    sets = _load_sets(forget_split, source, ["forget"], max_samples)
    scores = _score_records(model, tokenizer, sets, batch_size=batch_size, system_prompt=system_prompt,
                            progress=progress)
    return [_truth_ratio(scores, r) for r in sets["forget"]]


def truth_ratio_base(record: QARecord, set_name: str) -> str:
    """The answer whose probability is the truth ratio's denominator for one TOFU item.

    Forget / retain: the paraphrased answer ``ã`` (TOFU; open-unlearning's ``*_Q_A_PARA_Prob``),
    falling back to the answer when a row has none. Real authors / world facts: always the answer
    itself (open-unlearning's ``ra_Q_A_Prob`` / ``wf_Q_A_Prob`` read ``answer``), even if the row
    carries a ``paraphrased_answer``.
    """
    if set_name in PARAPHRASE_BASE_SETS:
        return record.paraphrased_answer or record.answer
    return record.answer


def _truth_ratio(scores, r: QARecord, set_name: str = "forget") -> float:
    base = truth_ratio_base(r, set_name)
    return M.truth_ratio([_norm_prob(scores, r.question, p) for p in r.perturbed_answers],
                         _norm_prob(scores, r.question, base))


def load_retain_truth_ratios(result: str | os.PathLike | Sequence[float]) -> list[float]:
    """Read a retain model's forget-set truth ratios for forget quality.

    Accepts a list of numbers, or a path to: an ``obliviate eval tofu`` run directory or its
    ``metrics.json`` (key ``forget_truth_ratios``) or ``samples.jsonl`` (rows with
    ``set == "forget"``); a JSON list of numbers; or TOFU's own ``eval_log_forget.json``
    (``avg_paraphrased_loss`` / ``average_perturb_loss``, converted with R = exp(para − mean pert)).
    """
    if isinstance(result, (list, tuple)):
        vals = [float(v) for v in result]
        if not vals:
            raise ValueError("retain truth ratios: the list is empty")
        return vals
    p = Path(result).expanduser()
    if p.is_dir():
        for name in ("metrics.json", "samples.jsonl", "eval_log_forget.json"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"--retain-result {p}: no metrics.json, samples.jsonl or eval_log_forget.json")
    if not p.is_file():
        raise FileNotFoundError(f"--retain-result: file not found: {p}")
    if p.suffix == ".jsonl":
        vals = []
        for ln, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e}", source=str(p), line=ln) from None
            if row.get("set") == "forget":
                if row.get("truth_ratio") is None:
                    raise DataError("missing", source=str(p), line=ln, field="truth_ratio")
                vals.append(float(row["truth_ratio"]))
    else:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e}", source=str(p)) from None
        if isinstance(data, list):
            vals = [float(v) for v in data]
        elif isinstance(data, dict) and "forget_truth_ratios" in data:
            vals = [float(v) for v in data["forget_truth_ratios"]]
        elif isinstance(data, dict) and "forget_truth_ratios" in (data.get("metrics") or {}):
            vals = [float(v) for v in data["metrics"]["forget_truth_ratios"]]
        elif isinstance(data, dict) and "avg_paraphrased_loss" in data and "average_perturb_loss" in data:
            para, pert = data["avg_paraphrased_loss"], data["average_perturb_loss"]
            vals = [math.exp(float(para[k]) - sum(map(float, pert[k])) / len(pert[k])) for k in para]
        else:
            raise DataError("expected 'forget_truth_ratios' (an obliviate metrics.json), a list of numbers, or "
                            "TOFU's eval_log_forget.json", source=str(p))
    if not vals:
        raise DataError("no forget-set truth ratios found", source=str(p))
    return vals


def evaluate_tofu(model, tokenizer, *, forget_split: str = "forget01", source: str | os.PathLike = "locuslab/TOFU",
                  retain_result: str | os.PathLike | Sequence[float] | None = None, max_samples: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  system_prompt: str | None = None, sets: Sequence[str] = TOFU_SETS,
                  progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate ``model`` on TOFU; return ``(metrics, per-sample rows)``.

    ``forget_split`` is forget01 / forget05 / forget10 (its ``_perturbed`` version is scored);
    ``source`` the hub id or a local TOFU folder; ``retain_result`` the retain model's forget-set
    truth ratios (list, or a path accepted by :func:`load_retain_truth_ratios`) for forget
    quality — without it ``forget_quality`` is ``None``. ``max_samples`` caps every set (first N).
    All answers / paraphrases / perturbed answers of all sets are scored in one batched pass and
    all questions answered in one batched greedy pass (``max_new_tokens``). ``system_prompt``
    (the Prompting baseline) is used for both. The metrics also carry ``forget_truth_ratios``
    (the list a later run can use as ``retain_result``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    retain_trs = load_retain_truth_ratios(retain_result) if retain_result is not None else None
    data = _load_sets(forget_split, source, list(sets), max_samples)
    scores = _score_records(model, tokenizer, data, batch_size=batch_size, system_prompt=system_prompt,
                            progress=progress)
    questions = list(dict.fromkeys(r.question for recs in data.values() for r in recs))
    answers = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               system=system_prompt, progress=progress)
    gen = dict(zip(questions, answers))

    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    for s, recs in tqdm(data.items(), desc="tofu: metrics", disable=not progress, leave=False):
        rouge, prob, trs = [], [], []
        for r in recs:
            p_ans = _norm_prob(scores, r.question, r.answer)
            p_pert = [_norm_prob(scores, r.question, a) for a in r.perturbed_answers]
            base = truth_ratio_base(r, s)
            p_base = _norm_prob(scores, r.question, base)
            tr = M.truth_ratio(p_pert, p_base)
            rl = M.rouge_l_recall(gen[r.question], r.answer)
            pr = p_ans if s in ("forget", "retain") else M.choice_prob(p_ans, p_pert)
            rouge.append(rl)
            prob.append(pr)
            trs.append(tr)
            sum_lp, n_tok = scores[(r.question, r.answer)]
            rows.append({
                "set": s, "id": r.id, "question": r.question, "reference": r.answer,
                "generation": gen[r.question], "rouge_l_recall": rl, "prob": pr, "answer_norm_prob": p_ans,
                "answer_logprob": sum_lp, "answer_tokens": n_tok, "base_norm_prob": p_base,
                "perturbed_norm_probs": p_pert, "truth_ratio": tr,
            })
        out[f"{s}_rouge"] = M.mean(rouge)
        out[f"{s}_prob"] = M.mean(prob)
        out[f"{s}_truth_ratio"] = (M.forget_truth_ratio_score(trs) if s == "forget"
                                   else M.retain_truth_ratio_score(trs))
        out[f"{s}_truth_ratio_mean"] = M.mean(trs)
        out[f"{s}_n"] = len(recs)
        if s == "forget":
            out["forget_truth_ratios"] = trs

    if "forget" in data and retain_trs is not None:
        out["forget_quality"] = M.forget_quality(out["forget_truth_ratios"], retain_trs)
        out["forget_ks_stat"] = M.ks_statistic(out["forget_truth_ratios"], retain_trs)
        out["retain_reference_n"] = len(retain_trs)
    elif "forget" in data:
        out["forget_quality"] = None
    if all(k in out for k in UTILITY_KEYS):
        vals = [out[k] for k in UTILITY_KEYS]
        out["model_utility"] = (M.model_utility(vals) if all(v is not None and not math.isnan(v) for v in vals)
                                else None)
    out["forget_split"] = forget_split
    out["max_new_tokens"] = max_new_tokens
    return out, rows


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def tofu_report(metrics: dict[str, Any], *, model: str = "", title: str = "TOFU evaluation") -> str:
    """Markdown report: ULMR Table 3's layout (values ×100), forget quality and model utility."""
    from .common import markdown_table

    groups = [(g, cols) for g, cols in TABLE3_COLUMNS if cols[0][1] in metrics]
    head = "| Model | " + " | ".join(f"{g} {c}" for g, cols in groups for c, _ in cols) + " |"
    sep = "| --- |" + " --- |" * sum(len(cols) for _, cols in groups)
    row = f"| {model or 'model'} | " + " | ".join(_pct(metrics.get(k)) for _, cols in groups for _, k in cols) + " |"
    fq = metrics.get("forget_quality")
    lines = [f"# {title}", "", f"- model: `{model}`", f"- forget split: {metrics.get('forget_split')}",
             "- items: " + ", ".join(f"{s} {metrics[f'{s}_n']}" for s in TOFU_SETS if f"{s}_n" in metrics),
             f"- greedy answers of at most {metrics.get('max_new_tokens')} new tokens", "",
             "## ULMR Table 3 columns (×100)", "",
             "R = ROUGE-L recall, P = probability (normalised over options for real authors / world facts), "
             "TR = truth-ratio score (forget: mean min(R, 1/R); others: mean max(0, 1 − R)).", "",
             head, sep, row, "",
             "## TOFU summary", "",
             markdown_table([{"forget_quality": fq if fq is not None else "n/a (no retain reference)",
                              "forget_ks_stat": metrics.get("forget_ks_stat"),
                              "model_utility": metrics.get("model_utility")}]),
             "## All metrics", "",
             markdown_table([{"metric": k, "value": v} for k, v in metrics.items()
                             if isinstance(v, (int, float)) or v is None])]
    return "\n".join(lines)
