"""Unlearning metrics, each a small pure function with its definition in the docstring.

Conventions follow the public reference implementations that papers compare against:
TOFU (Maini et al., 2024; the ULMR paper's Table 3) and RWKU (Jin et al., 2024; ULMR Table 4).
Probabilities are length-normalised: for an answer ``a`` of ``|a|`` tokens,
``P̄(a|q) = P(a|q)^(1/|a|) = exp(mean token log-prob)``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = [
    "rouge_l_recall",
    "normalized_prob",
    "choice_prob",
    "truth_ratio",
    "forget_truth_ratio_score",
    "retain_truth_ratio_score",
    "forget_quality",
    "ks_statistic",
    "model_utility",
    "mia_mean_loss",
    "accuracy",
    "multiple_choice_accuracy",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "n_gram_entropy",
    "mean",
]


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean ignoring ``nan``; ``nan`` for an empty input."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(sum(vals) / len(vals)) if vals else float("nan")


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference``: ``LCS(pred, ref) / |ref|`` in words.

    Computed with ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)`` (Porter
    stemming, lower-casing, non-alphanumerics dropped), as TOFU and RWKU do. 1.0 means every
    reference word appears, in order, in the prediction; an empty reference scores 0.
    """
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise TypeError("rouge_l_recall expects two strings")
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].recall)


def normalized_prob(sum_logprob: float, n_tokens: int) -> float:
    """Length-normalised probability ``P(a|q)^(1/|a|) = exp(Σ_t log p(a_t|q,a_<t) / |a|)``.

    This is TOFU's "Probability" for one answer (``exp(-mean token NLL)``). ``n_tokens`` must be ≥ 1.
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    return math.exp(sum_logprob / n_tokens)


def choice_prob(p_true: float, p_perturbed: Sequence[float]) -> float:
    """Normalised probability of the true answer among the options:
    ``P̄(a_true) / (P̄(a_true) + Σ_i P̄(a_pert,i))``.

    TOFU's "Probability" on the Real Authors and World Facts sets, where the inputs are the
    length-normalised probabilities of the true answer and of the perturbed (wrong) options.
    """
    denom = p_true + float(sum(p_perturbed))
    if denom <= 0:
        raise ValueError("choice_prob: all probabilities are zero")
    return float(p_true / denom)


def truth_ratio(p_perturbed: Sequence[float], p_paraphrased: float, *, average: str = "geometric") -> float:
    """Truth ratio ``R_truth = mean_i P̄(â_i|q) / P̄(ã|q)`` (ULMR §4.1, from TOFU).

    ``p_perturbed`` are the length-normalised probabilities ``P̄ = P^(1/|a|)`` of the perturbed
    (wrong) answers ``â_i`` and ``p_paraphrased`` that of the paraphrased correct answer ``ã``.
    Values near 0 mean the model prefers the correct answer, near 1 indifference.

    ``average="geometric"`` (default) is what TOFU's reference code computes and what published
    numbers use: ``exp(mean_i log P̄(â_i) − log P̄(ã))`` (the mean of the perturbed answers' mean
    token log-probs, exponentiated). ``average="arithmetic"`` is the formula as printed in ULMR §4.1
    and the TOFU paper, ``(1/|A|) Σ_i P̄(â_i) / P̄(ã)``. By the AM–GM inequality the arithmetic
    form is never smaller.
    """
    if len(p_perturbed) == 0:
        raise ValueError("truth_ratio needs at least one perturbed answer")
    if p_paraphrased <= 0:
        raise ValueError(f"the paraphrased answer's probability must be > 0, got {p_paraphrased}")
    if average == "geometric":
        if any(p <= 0 for p in p_perturbed):
            return 0.0
        return float(math.exp(sum(math.log(p) for p in p_perturbed) / len(p_perturbed) - math.log(p_paraphrased)))
    if average == "arithmetic":
        return float(sum(p_perturbed) / len(p_perturbed) / p_paraphrased)
    raise ValueError(f"average must be 'geometric' or 'arithmetic', got {average!r}")


def forget_truth_ratio_score(truth_ratios: Sequence[float]) -> float:
    """TOFU's forget-set "Truth Ratio" column: ``mean(min(R, 1/R))`` over questions.

    1.0 when the model cannot tell correct from perturbed answers (R = 1, the goal of
    forgetting); towards 0 when it strongly prefers either.
    """
    vals = [min(r, 1.0 / r) if r > 0 else 0.0 for r in truth_ratios]
    return mean(vals)


def retain_truth_ratio_score(truth_ratios: Sequence[float]) -> float:
    """TOFU's "Truth Ratio" column on retain / real-authors / world-facts: ``mean(max(0, 1 − R))``.

    1.0 when the correct answer is far more likely than the perturbed ones (R → 0).
    """
    return mean([max(0.0, 1.0 - r) for r in truth_ratios])


def forget_quality(unlearned_truth_ratios: Sequence[float], retain_truth_ratios: Sequence[float]) -> float:
    """TOFU's Forget Quality: the p-value of the two-sample Kolmogorov–Smirnov test
    (``scipy.stats.ks_2samp``) between the unlearned model's and the retain (never-trained-on-the-
    forget-set) model's forget-set truth ratios. High (→ 1) = indistinguishable from retraining.

    The KS statistic is invariant to applying one monotone map to both samples, so it does not
    matter whether ``R`` or ``1/R`` (TOFU's code) is passed, as long as both sides agree.
    """
    from scipy.stats import ks_2samp

    a = [float(x) for x in unlearned_truth_ratios]
    b = [float(x) for x in retain_truth_ratios]
    if not a or not b:
        raise ValueError("forget_quality needs two non-empty samples of truth ratios")
    return float(ks_2samp(a, b).pvalue)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample KS statistic ``sup_x |F_a(x) − F_b(x)|`` (``scipy.stats.ks_2samp``)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(list(a), list(b)).statistic)


def model_utility(values: Sequence[float]) -> float:
    """TOFU's Model Utility: the harmonic mean ``n / Σ 1/v_i`` of the nine numbers
    (Probability, ROUGE-L recall, Truth Ratio score) × (retain, real authors, world facts).

    Any value of 0 makes the result 0; values must be in ``[0, ∞)`` and not ``nan``.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("model_utility needs at least one value")
    if any(math.isnan(v) or v < 0 for v in vals):
        raise ValueError(f"model_utility needs non-negative numbers, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    from scipy.stats import hmean

    return float(hmean(vals))


def mia_mean_loss(losses: Sequence[float]) -> float:
    """Membership-inference LOSS score of a text set: the mean over texts of each text's mean token
    NLL (RWKU's FM / RM columns). Higher on the forget texts than before unlearning = forgotten."""
    return mean(losses)


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    """Fraction of positions where ``predictions[i] == labels[i]``."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        return float("nan")
    return float(sum(p == y for p, y in zip(predictions, labels)) / len(labels))


def multiple_choice_accuracy(option_scores: Sequence[Sequence[float]], answers: Sequence[int]) -> float:
    """MMLU-style accuracy: the prediction is ``argmax_j option_scores[i][j]`` (e.g. the
    log-probability of choice letter j), compared with the gold index ``answers[i]``."""
    preds = [int(np.argmax(s)) for s in option_scores]
    return accuracy(preds, list(answers))


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD / RWKU answer normalisation: lower-case, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference (:func:`normalize_answer`)."""
    refs = [references] if isinstance(references, str) else list(references)
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in refs))


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """Max over references of the bag-of-words F1 between normalised prediction and reference."""
    refs = [references] if isinstance(references, str) else list(references)
    best = 0.0
    pt = normalize_answer(prediction).split()
    for r in refs:
        rt = normalize_answer(r).split()
        if not pt or not rt:
            best = max(best, float(pt == rt))
            continue
        common = sum((Counter(pt) & Counter(rt)).values())
        if common:
            prec, rec = common / len(pt), common / len(rt)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def _word_tokens(text: str) -> list[str]:
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer().tokenize(text)


def n_gram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """RWKU's fluency score of one generation: ``mean_n w_n · H_n`` with
    ``H_n = −Σ_g f_g log2 f_g`` the entropy of the relative frequencies of the word n-grams.

    Defaults ``n ∈ {2, 3}``, weights ``(2/3, 4/3)`` as in RWKU (and ROME). Words come from NLTK's
    Treebank tokenizer (RWKU uses ``nltk.word_tokenize``, which adds sentence splitting that
    needs a downloaded model). Low values mean repetitive text; a text with no n-grams scores 0.
    """
    from nltk import ngrams

    toks = _word_tokens(text)
    ent = []
    for n, w in zip(ns, weights):
        counts = Counter(ngrams(toks, n))
        total = sum(counts.values())
        if total == 0:
            ent.append(0.0)
            continue
        f = np.array(list(counts.values()), dtype=float) / total
        ent.append(float(-(f * np.log2(f)).sum()) * w)
    return float(np.mean(ent))
