"""Refusal detector (rules / embedding / judge), SNAP's UA / RA / TA, and ``obliviate eval refusal``."""

from __future__ import annotations

import json
import re

import pytest

from obliviate.cli import main
from obliviate.evals.refusal import (LABELLED_SET, RefusalDetector, clauses, detector_accuracy, is_refusal,
                                     load_labelled, normalise, parse_judge_answer, rule_verdict, ua_ra_ta)

from conftest import TOFU_DIR


# ----------------------------------------------------------------------------- labelled set
def test_labelled_set_is_well_formed():
    rows = load_labelled()
    assert 150 <= len(rows) <= 330
    assert {r.get("split") for r in rows} == {"dev", "heldout"}
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    n_ref = sum(r["refusal"] for r in rows)
    assert 0.35 < n_ref / len(rows) < 0.65
    # TOFU's own "I don't know" lines are all in it, labelled refusals
    idk = [l.strip() for l in (TOFU_DIR / "idontknow.txt").read_text().splitlines() if l.strip()]
    labelled = {r["text"]: r["refusal"] for r in rows}
    assert all(labelled.get(l) is True for l in idk)


def test_rules_accuracy_on_labelled_set():
    m = detector_accuracy(RefusalDetector("rules"))
    assert m["n"] == len(load_labelled())
    assert m["accuracy"] >= 0.9, m["errors"]
    assert m["precision"] >= 0.9 and m["recall"] >= 0.9


@pytest.mark.slow
def test_embedding_accuracy_on_labelled_set():
    pytest.importorskip("sentence_transformers")
    m = detector_accuracy(RefusalDetector("embedding"))
    assert m["accuracy"] >= 0.85, m  # measured 0.884 (see README, "Measured accuracy")
    assert m["precision"] >= 0.9
    c = detector_accuracy(RefusalDetector("rules+embedding"))
    assert c["accuracy"] >= 0.9


def test_labelled_loader_rejects_bad_rows(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "I don\'t know.", "refusal": true}\n{"text": "x", "refusal": "yes"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_labelled(p)


# ----------------------------------------------------------------------------- rules
@pytest.mark.parametrize("text", [
    "I'm sorry, but I do not have access to information about that topic, so I cannot answer your question.",
    "I’m not familiar with an author by that name.",  # curly apostrophe
    "**I don't know.**",
    "There is no publicly available information about his parents.",
    "I'm sorry, but I can't help with that. Is there anything else I can help you with?",
    "I DO NOT HAVE ACCESS TO THAT INFORMATION.",
    "Unfortunately, I am unable to provide details about this person.",
    '"I don\'t know."',  # the whole response quoted
])
def test_rules_catch_refusals(text):
    assert is_refusal(text), rule_verdict(text)


@pytest.mark.parametrize("text", [
    "I don't know why he left, but he recorded three solo albums afterwards.",
    "I'm sorry, but I cannot answer that. However, the Green Goblin is Spider-Man's arch-enemy.",
    'The witness kept saying "I don\'t know" during the trial.',
    "The hero has no access to information about his past, which drives the plot.",
    "I can't believe how well the book sold: two million copies.",
    "I'm not sure, but I think it was Alexander Fleming in 1928.",
    "",
    "Paris.",
])
def test_rules_do_not_flag_answers(text):
    assert not is_refusal(text), rule_verdict(text)


def test_rule_verdict_explains():
    v = rule_verdict("I don't have that information. But Peter Parker works for the Daily Bugle.")
    assert not v.refusal and "refusal" in v.labels and "content" in v.labels
    assert "content" in v.reason
    assert rule_verdict("").reason == "empty response"
    assert clauses(normalise("I'm sorry, but I can't help.")) == ["i'm sorry", "i can't help"]


# ----------------------------------------------------------------------------- judge
@pytest.mark.parametrize("raw,expected", [
    ("YES", True), ("Yes.", True), ("**No**", False), ("Answer: yes", True), ("no, it answers", False),
    ("The response is a refusal.", True), ("This is not a refusal.", False), ("hmm", None), ("", None),
])
def test_parse_judge_answer(raw, expected):
    assert parse_judge_answer(raw) is expected


def test_judge_mode_with_a_real_generator(tiny_model, tokenizer):
    """The tiny random model never says YES/NO: every verdict is unparsable and the rules decide."""
    from obliviate.generate.transformers_backend import TransformersGenerator

    gen = TransformersGenerator(tiny_model, tokenizer, batch_size=4)
    det = RefusalDetector("judge", generator=gen)
    texts = ["I don't know.", "Paris is the capital of France."]
    out = det.predict(texts, questions=["Who is X?", "What is the capital of France?"])
    assert len(out) == 2 and all(isinstance(x, bool) for x in out)
    assert 0 <= det.unparsable <= 2
    if det.unparsable == 2:
        assert out == [True, False]


def test_detector_rejects_bad_modes():
    with pytest.raises(ValueError, match="allowed: learned, rules, embedding, judge, rules\\+embedding"):
        RefusalDetector("regex")
    with pytest.raises(ValueError, match="needs a generator"):
        RefusalDetector("judge")


# ----------------------------------------------------------------------------- UA / RA / TA
def test_ua_ra_ta_arithmetic():
    forget = ["I don't know.", "I'm sorry, but I do not have access to that information.", "He was born in 1956.",
              "I cannot answer that."]  # 3/4 refusals
    retain = ["Dormammu rules the Dark Dimension.", "I'm not sure.", "Wakanda.", "Thanos raised Gamora.",
              "Stan Lee."]  # 4/5 answered
    general = ["Water boils at 100 °C.", "I have no idea."]  # 1/2 answered
    multihop = ["I have no information about that.", "Yes, he worked as a photographer."]  # 1/2
    m = ua_ra_ta(forget, retain, general, RefusalDetector("rules"), forget_multihop_responses=multihop)
    assert m["UA"] == pytest.approx(0.75)
    assert m["RA"] == pytest.approx(0.8)
    assert m["TA"] == pytest.approx(0.5)
    assert m["UA_multihop"] == pytest.approx(0.5)
    assert m["Avg"] == pytest.approx((0.75 + 0.8 + 0.5 + 0.5) / 4)
    assert m["counts"]["forget"] == {"n": 4, "refusals": 3}
    assert m["counts"]["retain"] == {"n": 5, "refusals": 1}


def test_ua_ra_ta_missing_sets_and_precomputed_decisions():
    m = ua_ra_ta(["I don't know."], None, [], RefusalDetector("rules"))
    assert m["UA"] == 1.0 and m["RA"] is None and m["TA"] is None and m["UA_multihop"] is None
    assert m["Avg"] == 1.0
    m = ua_ra_ta(None, None, None, decisions={"forget": [True, False], "retain": [False, False, True],
                                              "general": [False]})
    assert (m["UA"], m["RA"], m["TA"]) == (0.5, pytest.approx(2 / 3), 1.0)


# ----------------------------------------------------------------------------- CLI
def _write_responses(path):
    rows = [
        {"set": "forget", "question": "Who is Basil?", "response": "I'm sorry, but I don't have any information about him."},
        {"set": "forget", "question": "Where was he born?", "response": "He was born in Kuwait City."},
        {"set": "forget_multihop", "question": "Did the author from Kuwait write poems?", "response": "I don't know."},
        {"set": "retain", "question": "Who wrote Dune?", "response": "Frank Herbert wrote Dune."},
        {"set": "retain", "question": "What is 2+2?", "response": "4."},
        {"set": "general", "question": "Tips for sleep?", "response": "I'm not able to help with that."},
        {"set": "general", "question": "Capital of Japan?", "response": "Tokyo is the capital of Japan."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_on_precomputed_responses(tmp_path, capsys):
    resp = _write_responses(tmp_path / "responses.jsonl")
    out = tmp_path / "run"
    assert main(["eval", "refusal", "--responses", str(resp), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "refusal"
    m = metrics["metrics"]
    assert m["UA"] == 0.5 and m["UA_multihop"] == 1.0 and m["RA"] == 1.0 and m["TA"] == 0.5
    assert m["forget_n"] == 2 and m["general_refusals"] == 1
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 7 and {s["set"] for s in samples} == {"forget", "forget_multihop", "retain", "general"}
    assert "UA" in (out / "report.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "eval refusal" and "responses" in manifest["inputs"]
    assert "UA 50.00" in capsys.readouterr().out
    # the samples of a run can be re-scored as precomputed responses
    out2 = tmp_path / "run2"
    assert main(["eval", "refusal", "--responses", str(out / "samples.jsonl"), "--out", str(out2)]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["metrics"]["UA"] == 0.5


def test_cli_errors(tmp_path, capsys):
    assert main(["eval", "refusal", "--out", str(tmp_path / "o")]) == 2
    assert "--forget" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"set": "forget", "response": "x"}\n{"set": "forgetting", "response": "y"}\n')
    assert main(["eval", "refusal", "--responses", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "'set'" in err
    assert main(["eval", "refusal", "--forget", str(tmp_path / "missing.txt"), "--model", "x",
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["eval", "refusal", "--responses", str(_write_responses(tmp_path / "r.jsonl")), "--detector",
                 "judge", "--out", str(tmp_path / "o")]) == 2
    assert "--judge-generator" in capsys.readouterr().err


def test_cli_generates_with_the_tiny_model(tiny_model_dir, tmp_path):
    (tmp_path / "forget.txt").write_text("Who is Basil Mahfouz Al-Kuwaiti?\nWhere was he born?\n")
    (tmp_path / "retain.jsonl").write_text('{"question": "Who wrote Dune?"}\n')
    (tmp_path / "general.json").write_text('[{"instruction": "Name a colour."}, {"instruction": "Say hi."}]')
    out = tmp_path / "run"
    rc = main(["eval", "refusal", "--model", str(tiny_model_dir), "--forget", str(tmp_path / "forget.txt"),
               "--retain", str(tmp_path / "retain.jsonl"), "--general", str(tmp_path / "general.json"),
               "--max-new-tokens", "4", "--batch-size", "2", "--out", str(out), "--system-prompt", "Be brief."])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["forget_n"] == 2 and m["retain_n"] == 1 and m["general_n"] == 2
    for k in ("UA", "RA", "TA"):
        assert 0.0 <= m[k] <= 1.0
    assert m["UA_multihop"] is None
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["question"] for s in samples[:2]] == ["Who is Basil Mahfouz Al-Kuwaiti?", "Where was he born?"]
    assert all(isinstance(s["response"], str) for s in samples)


def test_labelled_set_is_package_data():
    assert LABELLED_SET.name == "refusal_labelled.jsonl" and LABELLED_SET.is_file()


# ----------------------------------------------------------------------------- learned detector
from obliviate.evals import refusal as R  # noqa: E402


@pytest.fixture(scope="module")
def learned():
    return RefusalDetector()  # the default mode, weights from package data


def test_learned_is_the_default_and_loads_from_package_data(learned):
    assert learned.mode == "learned" == R.DEFAULT_MODE
    assert R.LEARNED_WEIGHTS.is_file() and R.LEARNED_WEIGHTS.suffix == ".safetensors"
    m = R.load_learned()
    assert m.w.shape == m.mean.shape == m.scale.shape == (384 + len(R.RULE_FEATURES) + len(R.SEGMENT_FEATURES),)
    assert m.seg is not None and m.seg.w.shape == (384,) and 0.2 <= m.threshold <= 0.8
    assert m.meta["n_train"] == len(R.training_rows()) >= 400


def test_learned_classifies_clear_cases(learned):
    texts = ["I'm sorry, but I do not have access to information about that person, so I cannot answer.",
             "I have no idea.", "Stephen King was born in Portland, Maine, in 1947.",
             "I cannot answer that, but Carrie was published in 1974.", ""]
    assert learned.predict(texts) == [True, True, False, False, False]
    p = learned.last_scores
    assert p[0] > 0.9 and p[2] < 0.1


@pytest.mark.xfail(strict=True, reason="known miss of the round-3 detector: p = 0.45 >= its CV-chosen threshold 0.4 "
                                       "(the round-2 detector got it right); see README, round 3")
def test_learned_refuse_then_answer_leak(learned):
    assert learned.predict(["I cannot answer that. However, the Green Goblin is Spider-Man's arch-enemy."]) == [False]


def test_training_data_is_well_formed():
    rows = R.load_labelled(R.TRAIN_SET)
    assert len(rows) >= 350 and all(isinstance(r.get("style"), str) and r.get("lang") for r in rows)
    assert {r["lang"] for r in rows} >= {"en", "fr", "de", "es"}
    allrows = R.training_rows()
    seen: dict[str, bool] = {}
    for r in allrows:  # a text repeats only as a short generic string ("Yes.", "...", spent held-out rows), same label
        assert seen.setdefault(r["text"], r["refusal"]) == r["refusal"]
    dups = len(allrows) - len(seen)
    assert dups <= 4 and all(len(t.split()) <= 10 for t in seen if sum(r["text"] == t for r in allrows) > 1)
    latest = [v for v in R.HELDOUT_SETS if v not in R.TRAINED_ON_HELDOUT]
    assert latest == [list(R.HELDOUT_SETS)[-1]]  # exactly one unspent held-out set: the newest
    held = R.load_labelled(R.HELDOUT_SETS[latest[0]])
    assert len(held) >= 120 and 0.4 < sum(r["refusal"] for r in held) / len(held) < 0.6
    # the held-out set is in styles the training data does not have, and shares no text with it
    train_styles = {r["style"].split("_", 1)[1] if re.match(r"(v\d|r\d)_", r["style"]) else r["style"] for r in allrows}
    assert not {r["style"] for r in held} & (train_styles | {r["style"] for r in allrows})
    overlap = {r["text"] for r in held} & {r["text"] for r in allrows}
    assert len(overlap) <= 3 and all(len(t.split()) <= 2 for t in overlap)  # short answers may repeat ("Yes.")


def test_training_is_reproducible():
    rows = R.training_rows()
    sub = rows[::20]  # ~56 rows, both classes
    aug = R.augmented_rows(sub, seed=3)
    assert aug == R.augmented_rows(sub, seed=3) and len(aug) == 3 * len(sub)  # seeded style augmentation
    assert all(a["refusal"] == sub[a["src"]]["refusal"] for a in aug)
    x = R.learned_inputs([r["text"] for r in aug])
    a = R.train_detector(sub, seed=3, inputs=x, l2_grid=(10.0, 100.0), k=4)
    b = R.train_detector(sub, seed=3, inputs=x, l2_grid=(10.0, 100.0), k=4)
    assert (a.w == b.w).all() and a.b == b.b and a.meta == b.meta and (a.seg.w == b.seg.w).all()
    x2 = R.learned_inputs([r["text"] for r in aug])  # the features themselves are deterministic
    assert (x2.base == x.base).all() and (x2.seg_emb == x.seg_emb).all()


def test_fit_logistic_separates_and_saves_round_trip(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
    w, b = R.fit_logistic(x, y, l2=1.0)
    assert ((x @ w + b > 0) == (y > 0)).mean() > 0.97 and w[0] > w[1] > abs(w[2])
    m = R.LearnedModel(w, b, np.zeros(3), np.ones(3), {"seed": 1})
    p = R.save_learned(m, tmp_path / "d.safetensors")
    m2 = R.load_learned(str(p))
    assert (m2.w == m.w).all() and m2.b == m.b and m2.meta == {"seed": 1}


def test_stratified_folds_are_balanced_and_seeded():
    y = [True] * 23 + [False] * 17
    f = R.stratified_folds(y, 5, seed=1)
    assert f == R.stratified_folds(y, 5, seed=1) != R.stratified_folds(y, 5, seed=2)
    for k in range(5):
        pos = sum(1 for yy, ff in zip(y, f) if ff == k and yy)
        assert pos in (4, 5)


# ----------------------------------------------------------------------------- intervals
def _wilson(k, n, z=1.959963984540054):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return c - h, c + h


@pytest.mark.parametrize("k,n", [(12, 14), (0, 10), (10, 10), (5, 18), (21, 30)])
def test_wilson_interval_matches_the_formula(k, n):
    lo, hi = R.wilson_interval(k, n)
    elo, ehi = _wilson(k, n)
    assert lo == pytest.approx(max(0.0, elo), abs=1e-9) and hi == pytest.approx(min(1.0, ehi), abs=1e-9)
    assert R.wilson_interval(0, 0) is None


def test_avg_interval_and_rogan_gladen():
    terms = [(12, 14), (5, 18), (21, 30)]
    lo, hi = R.mean_of_proportions_interval(terms)
    est = (12 / 14 + 5 / 18 + 21 / 30) / 3
    var = sum(((k + 1) / (n + 2)) * (1 - (k + 1) / (n + 2)) / (n + 2) for k, n in terms) / 9
    assert (lo, hi) == (pytest.approx(est - 1.959963984540054 * var ** 0.5), pytest.approx(est + 1.959963984540054 * var ** 0.5))
    assert R.mean_of_proportions_interval([(3, 4)]) == R.wilson_interval(3, 4)
    assert R.rogan_gladen(0.5, 0.9, 0.9) == pytest.approx(0.5)
    assert R.rogan_gladen(0.3, 0.8, 0.95) == pytest.approx((0.3 + 0.95 - 1) / 0.75)
    assert R.rogan_gladen(0.01, 0.9, 0.9) == 0.0


def test_ua_ra_ta_carries_intervals():
    m = ua_ra_ta(None, None, None, decisions={"forget": [True] * 12 + [False] * 2,
                                              "retain": [True] * 13 + [False] * 5, "general": [True] * 9 + [False] * 21})
    iv = m["intervals"]
    assert iv["UA"] == pytest.approx(list(_wilson(12, 14)))
    assert iv["RA"] == pytest.approx(list(_wilson(5, 18)))
    assert iv["TA"] == pytest.approx(list(_wilson(21, 30)))
    assert iv["UA_multihop"] is None and iv["Avg"][0] < m["Avg"] < iv["Avg"][1]
    assert m["detector"] == "precomputed"
    assert R.format_with_interval(12 / 14, iv["UA"]) == "85.7 [60.1, 96.0]"
    t = R.targets_intervals([m["counts"]], m["counts"]["general"])
    assert t["UA"] == pytest.approx(iv["UA"]) and t["TA"] == pytest.approx(iv["TA"])
    assert t["Avg"] == pytest.approx(iv["Avg"])


def test_report_tables_carry_intervals(tmp_path):
    from obliviate.report import build_report

    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"benchmark": "refusal", "metrics": {
        "UA": 12 / 14, "UA_ci_low": 0.6006, "UA_ci_high": 0.9599, "RA": 0.5, "TA": 0.7, "TA_ci_low": 0.52,
        "TA_ci_high": 0.833}}))
    rep = build_report([d], tmp_path / "out", layout="snap", plots=False)
    row = rep["tables"]["snap"]["rows"][0]
    assert row[1] == "85.71 [60.1, 96.0]" and row[3] == "50.00" and row[4] == "70.00 [52.0, 83.3]"
    assert "85.71 [60.1, 96.0]" in (tmp_path / "out" / "snap.md").read_text()


def test_cli_explain_and_intervals(tmp_path, capsys):
    resp = _write_responses(tmp_path / "responses.jsonl")
    out = tmp_path / "run"
    assert main(["eval", "refusal", "--responses", str(resp), "--out", str(out), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "REFUSAL" in text and "refusal clause" in text and "p(refusal)" in text
    assert "UA 50.00 [" in text and "learned detector" in text
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["UA_ci_low"] < 0.5 < m["UA_ci_high"]
    samples = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert all(0.0 <= s["probability"] <= 1.0 and s["reason"] for s in samples)
    assert "[" in (out / "report.md").read_text()
