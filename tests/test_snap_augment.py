"""SNAP augmentation: Table 7 prompts, list parsing, multi-turn generation, dedup, split, outputs."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from obliviate.augment.listparse import parse_list
from obliviate.augment.snap import (NEGATIVE_CATEGORIES, OBLITERATED_PROMPT, SnapAugmentConfig, augment_snap,
                                    load_prompt, negative_prompt, proportional_split, retain_marvel_prompt)
from obliviate.config import ConfigError
from obliviate.generate.base import Generator
from obliviate.io import read_jsonl

# ---------------------------------------------------------------------------------------------
# prompts (Table 7 / Appendix E, verbatim)
# ---------------------------------------------------------------------------------------------


def test_table7_prompts_verbatim():
    assert negative_prompt("General", "Peter Parker") == "Generate 30 questions to ask about Peter Parker."
    assert negative_prompt("5W1H", "Peter Parker") == (
        "Generate 30 questions to ask about Peter Parker, covering \u201cwho\u201d, \u201cwhat\u201d, "
        "\u201cwhere\u201d, \u201cwhen\u201d, \u201cwhy\u201d, and \u201chow\u201d.")
    assert negative_prompt("Relational", "X") == \
        "Generate 30 questions to ask about the relationship between X and other characters."
    assert negative_prompt("Open-Ended", "X") == "Generate 30 open-ended questions to ask about X."
    assert negative_prompt("Implicit", "X") == \
        "Generate 30 questions to ask about X. Replace the names X with some descriptive words."
    assert negative_prompt("Multi-Hop", "X") == (
        "Generate 30 multi-hop questions to ask about X. Replace the names X with some descriptive words.\n"
        "Here is an example: \u2018Did the hero who lived in New York and received iron armor from Iron Man "
        "participate in the End War?\u2019")
    assert retain_marvel_prompt("General", "X") == "Generate 30 questions to quiz about the Marvel series except X."
    assert retain_marvel_prompt("Implicit", "X") == ("Generate 30 questions to ask about Marvel storylines except X. "
                                                     "Replace the characters\u2019 names with some descriptive words.")
    assert load_prompt("snap_obliterated") == OBLITERATED_PROMPT == (
        "Generate a response saying you do not have access to information about the following instruction, "
        "so you cannot answer it.")


# ---------------------------------------------------------------------------------------------
# list parsing
# ---------------------------------------------------------------------------------------------

MESSY = """Sure! Here are 30 questions about Peter Parker:

1. Who is Peter Parker?
2) **What is his day job?**
3. "Where does he live?"
4. How did he get
   his powers?
(5) Why does he wear a mask?
**6.** When was he created?
Q7. Who is his aunt?
Question 8: Which school did he attend?
9 - Where is Queens?
10.   'What is his suit made of?'

I hope these questions help!"""


def test_parse_list_messy_numbered():
    assert parse_list(MESSY) == [
        "Who is Peter Parker?", "What is his day job?", "Where does he live?", "How did he get his powers?",
        "Why does he wear a mask?", "When was he created?", "Who is his aunt?", "Which school did he attend?",
        "Where is Queens?", "What is his suit made of?"]


def test_parse_list_bullets_headings_and_bare_lines():
    text = "### Factual\n- one thing?\n* **Two:** other thing?\n• third?\n\n**Relational**\n- fourth?\r\n"
    assert parse_list(text) == ["one thing?", "other thing?", "third?", "fourth?"]
    # no markers: lines ending with '?' are the items; chatter is ignored
    assert parse_list("Here are some:\nWho is A?\nWhat is B?\nThanks") == ["Who is A?", "What is B?"]
    # an unindented continuation line belongs to the item; prose after a blank line does not
    assert parse_list("1. First spans\ntwo lines\n2. Second?\n\nThat is all.") == ["First spans two lines", "Second?"]
    assert parse_list("") == [] and parse_list("no list here") == []
    assert parse_list("1.\n2. ok?") == ["ok?"]
    with pytest.raises(TypeError):
        parse_list(None)


def test_proportional_split():
    cats = ["A"] * 60 + ["B"] * 30 + ["C"] * 10
    tr, ev = proportional_split(cats, 10, seed=1)
    assert Counter(cats[i] for i in tr) == {"A": 6, "B": 3, "C": 1}
    assert sorted(tr + ev) == list(range(100)) and not set(tr) & set(ev)
    assert proportional_split(cats, 10, seed=1) == (tr, ev)  # deterministic
    cats2 = ["A"] * 5 + ["B"] * 2 + ["C"] * 2
    tr2, _ = proportional_split(cats2, 4, seed=0)  # largest remainder keeps the total exact
    assert len(tr2) == 4
    tr3, _ = proportional_split(cats, 0, per_category=4, seed=0)
    assert Counter(cats[i] for i in tr3) == {"A": 4, "B": 4, "C": 4}
    assert proportional_split(cats, 500)[1] == []


def test_config_errors():
    with pytest.raises(ConfigError, match="target"):
        SnapAugmentConfig(target=" ").validate()
    with pytest.raises(ConfigError, match="categories"):
        SnapAugmentConfig(target="X", categories=["Factoid"]).validate()
    with pytest.raises(ConfigError, match="retain_mode"):
        SnapAugmentConfig(target="X", retain_mode="wiki").validate()
    with pytest.raises(ConfigError, match="calls_per_category"):
        SnapAugmentConfig(target="X", calls_per_category=0).validate()


# ---------------------------------------------------------------------------------------------
# end to end with a deterministic generator
# ---------------------------------------------------------------------------------------------

QUESTIONS = [
    "Where did {e} grow up?", "Which newspaper published photographs taken by {e}?",
    "What scientific field fascinated {e} as a teenager?", "How much money does {e} earn per month?",
    "Name a villain who fought {e} on a bridge.", "Is {e} good at chess?", "Why would {e} avoid crowds?",
    "What breakfast cereal does {e} prefer?", "Who taught {e} to drive a car?", "Does {e} own a motorcycle?",
    "In which decade was {e} first drawn in comics?", "What illness did the uncle of {e} suffer from?",
    "List three hobbies of {e}.", "Describe the apartment of {e} in Manhattan.",
    "Would {e} vote in a mayoral election?", "Compare the fighting style of {e} with a boxer's.",
    "Which university library did {e} use for research?", "What is the blood type of {e}?",
    "Explain how {e} pays rent.", "Has {e} ever travelled to Europe?", "Summarise the wedding of {e}.",
    "What pet did {e} have as a child?", "How tall is {e}?", "Translate the nickname of {e} into French.",
    "Which song would {e} sing at karaoke?", "Tell me a joke about {e}.",
]
class ScriptedGenerator(Generator):
    """A deterministic stand-in for GPT-4/GPT-3.5 that follows SNAP's prompts (real Generator subclass)."""

    name = "scripted"
    model_id = "scripted-v1"

    def __init__(self):
        self.calls = []

    def _generate(self, prompts, params):
        self.calls.append(prompts)
        return [self._one(m) for m in prompts]

    def _one(self, msgs):
        first, last = msgs[0]["content"], msgs[-1]["content"]
        if last.startswith("List the top"):
            if "individuals" in last:
                return "1. **Mary Jane Watson** - love interest\n2. Peter Parker\n3. Harry Osborn (friend)"
            return "1. Daily Bugle\n2. Oscorp Industries: a company"
        if last.startswith(OBLITERATED_PROMPT):
            q = last.split("\n\n", 1)[1]
            return "I'm sorry, but I do not have access to information about that, so I cannot answer it."
        if first.startswith("Generate 30"):
            turn = (len(msgs) - 1) // 2
            entity = "Peter Parker"
            for e in ("Mary Jane Watson", "Harry Osborn", "Daily Bugle", "Oscorp Industries"):
                if e in first:
                    entity = e
            cat = next((i for i, c in enumerate(NEGATIVE_CATEGORIES) if first == negative_prompt(c, entity)),
                       sum(ord(ch) for ch in first) % 6)
            if turn >= 2:
                return "I have no more questions."  # unparsable: the chat stops early
            items = [QUESTIONS[(cat * 4 + turn * 2 + k) % len(QUESTIONS)].format(e=entity) for k in range(2)]
            items.append(items[0])  # an exact duplicate for the filter
            if entity != "Peter Parker" and turn == 0:
                items.append(f"How did {entity} first meet Spider-Man?")  # names the target: must be dropped
            if "multi-hop" in first:
                hop = ["Did the photographer who worked for {e}'s newspaper ever win a prize?",
                       "Has the masked vigilante from Queens ever been to the Arctic?"]
                items = [hop[turn].format(e=entity)]
            return "Sure! Here you go:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(items))
        return f"Here is a factual answer about it: {last[:40]}"


def test_augment_snap_end_to_end(tmp_path):
    gen = ScriptedGenerator()
    cfg = SnapAugmentConfig(target="Peter Parker", aliases=["Spider-Man"], calls_per_category=3, k_related=3,
                            train_size=8, retain_train_size=6, retain_categories=["General", "Relational"])
    summary = augment_snap(gen, cfg, tmp_path)
    files = {n: read_jsonl(tmp_path / n) for n in ("forget_train.jsonl", "forget_eval.jsonl",
                                                   "forget_eval_multihop.jsonl", "retain_train.jsonl",
                                                   "retain_eval.jsonl")}
    for n in ("dedup_report.json", "augment_report.md", "manifest.json"):
        assert (tmp_path / n).is_file()
    # related entities: the target itself is excluded, names cleaned
    assert summary["related"] == ["Mary Jane Watson", "Harry Osborn", "Daily Bugle", "Oscorp Industries"]
    # multi-turn: the second call continues the chat (answer + "more" turn)
    second = [m for call in gen.calls for m in call if len(m) == 3]
    assert second and second[0][1]["role"] == "assistant" and second[0][2]["content"] == "Generate 30 more questions."
    # every Table 7 category was asked with its verbatim prompt
    firsts = {m[0]["content"] for call in gen.calls for m in call}
    for c in NEGATIVE_CATEGORIES:
        assert negative_prompt(c, "Peter Parker") in firsts
    # the third call gives no list: counted as degenerate/unparsable and the chat stops
    assert summary["generation"]["degenerate_question_calls"] >= 6
    ft, fe, mh = files["forget_train.jsonl"], files["forget_eval.jsonl"], files["forget_eval_multihop.jsonl"]
    assert len(ft) == 8
    assert mh and all(r["category"] == "Multi-Hop" for r in mh)
    assert all(r["category"] != "Multi-Hop" for r in ft + fe)
    for r in ft + fe + mh:
        assert set(r) >= {"id", "question", "answer", "category", "type", "subject"}
        assert r["answer"].startswith("I'm sorry, but I do not have access")
        assert r["subject"] == "Peter Parker"
    # proportional split: each category's train share is within one of its proportional quota
    pool = Counter(r["category"] for r in ft + fe)
    got = Counter(r["category"] for r in ft)
    for c, n in pool.items():
        assert abs(got.get(c, 0) - 8 * n / sum(pool.values())) < 1.0 + 1e-9
    # no duplicates survive and the crafted duplicates are reported
    qs = [r["question"] for r in ft + fe + mh]
    assert len(qs) == len(set(qs))
    report = json.loads((tmp_path / "dedup_report.json").read_text())
    assert report["forget"]["dropped"] and all(d["cosine"] >= 0.75 for d in report["forget"]["dropped"])
    assert len(report["retain"]["dropped_mentions_target"]) == 2 * len(summary["related"])
    from obliviate.embeddings import embed

    e = embed(qs)
    sim = e @ e.T - 2 * torch.eye(len(qs))
    assert float(sim.max()) < 0.75
    # retaining data: about related entities, answered normally, never naming the target
    rt, re_ = files["retain_train.jsonl"], files["retain_eval.jsonl"]
    assert len(rt) == 6 and re_
    for r in rt + re_:
        assert r["answer"].startswith("Here is a factual answer")
        assert "peter parker" not in r["question"].lower() and r["related_to"] == "Peter Parker"
        assert r["subject"] in summary["related"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["summary"]["counts"]["forget_train"] == 8
    md = (tmp_path / "augment_report.md").read_text()
    assert "| Multi-Hop |" in md and "Hard-retaining entities" in md


def test_augment_snap_resumes_from_cache(tmp_path):
    from obliviate.generate.cache import CachedGenerator

    cfg = SnapAugmentConfig(target="Peter Parker", categories=["General", "Multi-Hop"], calls_per_category=2,
                            related=["Harry Osborn"], retain_categories=["General"], train_size=3)
    g1 = CachedGenerator(ScriptedGenerator(), tmp_path / "cache")
    augment_snap(g1, cfg, tmp_path / "a")
    inner = ScriptedGenerator()
    g2 = CachedGenerator(inner, tmp_path / "cache")
    s2 = augment_snap(g2, cfg, tmp_path / "b")
    assert inner.calls == [] and s2["cache"]["misses"] == 0 and s2["cache"]["hits"] > 0
    assert read_jsonl(tmp_path / "a" / "forget_train.jsonl") == read_jsonl(tmp_path / "b" / "forget_train.jsonl")


def test_marvel_retain_mode_uses_table7_retaining_prompts(tmp_path):
    gen = ScriptedGenerator()
    cfg = SnapAugmentConfig(target="Peter Parker", categories=["General"], calls_per_category=1,
                            retain_mode="marvel", retain_categories=["General", "Implicit"], train_size=2)
    augment_snap(gen, cfg, tmp_path)
    firsts = {m[0]["content"] for call in gen.calls for m in call}
    assert retain_marvel_prompt("General", "Peter Parker") in firsts
    assert retain_marvel_prompt("Implicit", "Peter Parker") in firsts
    assert not any(c.startswith("List the top") for c in firsts)


def test_augment_with_real_transformers_generator(tiny_model, tokenizer, tmp_path):
    """The real TransformersGenerator + cache plumbing on the tiny random model (gibberish outputs
    must be counted as degenerate/unparsable, never crash)."""
    from obliviate.generate.cache import CachedGenerator
    from obliviate.generate.transformers_backend import TransformersGenerator

    gen = CachedGenerator(TransformersGenerator(tiny_model, tokenizer, batch_size=8), tmp_path / "cache")
    cfg = SnapAugmentConfig(target="Peter Parker", categories=["General", "Multi-Hop"], calls_per_category=2,
                            related=["Harry Osborn"], retain_categories=["General"], question_max_new_tokens=12,
                            answer_max_new_tokens=8, train_size=2)
    s = augment_snap(gen, cfg, tmp_path / "out")
    assert s["generation"]["question_calls"] >= 3
    assert s["generation"].get("degenerate_question_calls", 0) >= 1  # gibberish is counted, not fatal
    for n in ("forget_train.jsonl", "forget_eval.jsonl", "forget_eval_multihop.jsonl", "retain_train.jsonl",
              "retain_eval.jsonl", "manifest.json"):
        assert (tmp_path / "out" / n).is_file()
    assert s["cache"]["misses"] >= 3


def test_cli_augment_snap(tmp_path, tiny_model_dir, monkeypatch):
    from obliviate.cli import main

    out = tmp_path / "cli"
    rc = main(["augment", "snap", "--target", "Peter Parker", "--out", str(out), "--model", str(tiny_model_dir),
               "--categories", "General", "--calls-per-category", "1", "--related", "Harry Osborn",
               "--retain-categories", "General", "--question-max-new-tokens", "8", "--answer-max-new-tokens", "8",
               "--train-size", "2"])
    assert rc == 2  # the random tiny generator yields only empty files: an error, not a silent exit 0
    assert (out / "manifest.json").is_file() and (out / "cache").is_dir()
    rc = main(["augment", "snap", "--target", "X", "--out", str(out), "--calls-per-category", "0"])
    assert rc == 2


class AnsweringGenerator(ScriptedGenerator):
    """Ignores the Appendix E instruction and answers (what SmolLM2-135M does)."""

    def _one(self, msgs):
        if msgs[-1]["content"].startswith(OBLITERATED_PROMPT):
            return "Stephen King wrote Carrie in 1974 and lives in Maine."
        return super()._one(msgs)


def test_non_refusals_dropped_or_replaced_by_fallback(tmp_path):
    cfg = SnapAugmentConfig(target="Peter Parker", categories=["General"], calls_per_category=1,
                            related=["Harry Osborn"], retain_categories=["General"], train_size=1)
    s = augment_snap(AnsweringGenerator(), cfg, tmp_path / "drop")
    assert s["counts"]["forget_train"] == 0 and s["generation"]["obliterated_wrong_kind"] >= 1
    cfg.fallback_response = REFUSAL_TEXT
    s = augment_snap(AnsweringGenerator(), cfg, tmp_path / "fb")
    rows = read_jsonl(tmp_path / "fb" / "forget_train.jsonl") + read_jsonl(tmp_path / "fb" / "forget_eval.jsonl")
    assert rows and all(r["answer"] == REFUSAL_TEXT for r in rows)
    assert s["generation"]["obliterated_fallback"] == len(rows)


REFUSAL_TEXT = "I'm sorry, but I do not have access to information about that, so I cannot answer it."
