"""Every evaluation metric against a hand computation on small cases."""

from __future__ import annotations

import math

import pytest
from scipy.stats import hmean, ks_2samp

from obliviate.evals import metrics as M


def test_rouge_l_recall_hand_computed():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 of 6 reference words
    assert M.rouge_l_recall("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert M.rouge_l_recall("Oh, it was Paris of course.", "Paris") == 1.0
    assert M.rouge_l_recall("", "Paris") == 0.0
    # stemming + case folding: "Writes"/"writing" share the stem "write"
    assert M.rouge_l_recall("She WRITES novels", "she writing novels") == 1.0
    with pytest.raises(TypeError):
        M.rouge_l_recall(None, "x")


def test_normalized_prob_is_geometric_mean_token_prob():
    assert M.normalized_prob(3 * math.log(0.5), 3) == pytest.approx(0.5)
    assert M.normalized_prob(math.log(0.2) + math.log(0.8), 2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="n_tokens"):
        M.normalized_prob(-1.0, 0)


def test_choice_prob():
    assert M.choice_prob(0.5, [0.25, 0.25]) == pytest.approx(0.5)
    assert M.choice_prob(0.3, [0.1, 0.1, 0.1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.choice_prob(0.0, [0.0])


def test_truth_ratio_geometric_and_arithmetic():
    # geometric mean of (0.2, 0.8) = 0.4 -> R = 0.4 / 0.4 = 1
    assert M.truth_ratio([0.2, 0.8], 0.4) == pytest.approx(1.0)
    # the printed formula: arithmetic mean 0.5 / 0.4
    assert M.truth_ratio([0.2, 0.8], 0.4, average="arithmetic") == pytest.approx(1.25)
    # TOFU's code: exp(mean perturbed log-prob - paraphrased log-prob)
    lp = [-1.0, -2.0, -3.0]
    assert M.truth_ratio([math.exp(v) for v in lp], math.exp(-1.5)) == pytest.approx(math.exp(-2.0 + 1.5))
    assert M.truth_ratio([0.1], 0.5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="perturbed"):
        M.truth_ratio([], 0.5)
    with pytest.raises(ValueError, match="paraphrased"):
        M.truth_ratio([0.1], 0.0)
    with pytest.raises(ValueError, match="average"):
        M.truth_ratio([0.1], 0.5, average="median")


def test_truth_ratio_aggregations():
    # forget: mean(min(R, 1/R)) = mean(0.5, 0.5, 1) ; retain: mean(max(0, 1-R)) = mean(0.75, 0)
    assert M.forget_truth_ratio_score([0.5, 2.0, 1.0]) == pytest.approx(2 / 3)
    assert M.retain_truth_ratio_score([0.25, 1.5]) == pytest.approx(0.375)
    assert M.forget_truth_ratio_score([0.0]) == 0.0


def test_forget_quality_is_ks_pvalue():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    # fully separated samples of 3 and 3: exact two-sided p = 2 / C(6, 3) = 0.1
    assert M.forget_quality(a, b) == pytest.approx(0.1)
    assert M.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert M.ks_statistic(a, b) == pytest.approx(1.0)
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    # invariant to R -> 1/R applied to both samples
    x, y = [0.3, 0.7, 1.2, 0.9], [0.5, 1.5, 2.0, 0.8, 1.1]
    assert M.forget_quality(x, y) == pytest.approx(M.forget_quality([1 / v for v in x], [1 / v for v in y]))
    with pytest.raises(ValueError):
        M.forget_quality([], b)


def test_model_utility_harmonic_mean():
    assert M.model_utility([1.0, 2.0, 4.0]) == pytest.approx(3 / 1.75)
    nine = [0.9, 0.8, 0.5, 0.7, 0.6, 0.4, 0.95, 0.85, 0.45]
    assert M.model_utility(nine) == pytest.approx(hmean(nine))
    assert M.model_utility([0.5, 0.0, 0.7]) == 0.0
    with pytest.raises(ValueError):
        M.model_utility([0.5, -0.1])
    with pytest.raises(ValueError):
        M.model_utility([])


def test_mia_and_accuracies():
    assert M.mia_mean_loss([2.0, 4.0]) == pytest.approx(3.0)
    assert M.accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)
    assert M.multiple_choice_accuracy([[-1.0, -0.5, -3.0], [-0.1, -2.0, -2.0]], [1, 2]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.accuracy([1], [1, 2])


def test_exact_match_and_f1():
    assert M.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert M.exact_match("the Eiffel tower.", ["Eiffel Tower", "Paris"]) == 1.0
    assert M.exact_match("Paris, France", "Paris") == 0.0
    # prediction "paris france" vs "paris": P = 1/2, R = 1 -> F1 = 2/3
    assert M.token_f1("Paris, France", ["Paris"]) == pytest.approx(2 / 3)
    assert M.token_f1("", [""]) == 1.0


def test_n_gram_entropy_hand_computed():
    # words a b a b: bigrams ab, ba, ab -> H2 = H(2/3, 1/3); trigrams aba, bab -> H3 = 1 bit
    h2 = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    expected = (h2 * 2 / 3 + 1.0 * 4 / 3) / 2
    assert M.n_gram_entropy("a b a b") == pytest.approx(expected)
    assert M.n_gram_entropy("") == 0.0
    assert M.n_gram_entropy("the the the the the the") < M.n_gram_entropy("one two three four five six")
