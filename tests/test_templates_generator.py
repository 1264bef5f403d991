"""The offline ``templates`` stand-in generator: recognisers, ULMR/SNAP data quality, determinism."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from obliviate.augment import quality, snap, ulmr
from obliviate.augment.listparse import parse_list
from obliviate.config import ConfigError
from obliviate.evals.refusal import is_refusal
from obliviate.generate.base import Generator
from obliviate.generate.factory import make_generator, parse_generator_spec
from obliviate.generate.templates_backend import (PROMPT_KINDS, PromptNotRecognised, TemplatesGenerator, load_bank,
                                                  recognise, subject_of)
from obliviate.io import read_jsonl

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TOFU = SHARED / "tofu"
RWKU_KING = SHARED / "rwku" / "1_Stephen_King"


def _filled(stem: str, target: str = "Stephen King") -> str:
    """Each prompt file filled the way the augmenters fill it."""
    if stem == "ulmr_prompt_rewrite":
        return ulmr.rewrite_prompt("Where was Stephen King born?")
    if stem == "ulmr_negative_prompt":
        return ulmr.negative_prompt("Where was Stephen King born?")
    if stem == "snap_obliterated":
        return snap.obliterated_request("Where was Stephen King born?")
    if stem.startswith("snap_related_"):
        return snap.fill(snap.load_prompt(stem), 7, target)
    if stem == "snap_more":
        return snap.MORE_PROMPT
    return snap.fill(snap.load_prompt(stem), target)


@pytest.mark.parametrize("stem,kind,category", PROMPT_KINDS)
def test_each_recogniser_matches_its_real_prompt_file(stem, kind, category):
    r = recognise(_filled(stem))
    assert r is not None and (r.stem, r.kind, r.category) == (stem, kind, category)
    if kind in ("ulmr_rewrite", "ulmr_negative", "obliterated"):
        assert r.slots["instruction"] == "Where was Stephen King born?"
    elif kind == "related":
        assert r.slots == {"k": 7, "target": "Stephen King"}
    elif kind == "more":
        assert r.slots == {"n": 30}
    else:
        assert r.slots == {"n": 30, "target": "Stephen King"}
    # a changed fixed text is not that prompt
    text = _filled(stem)
    first = text.split()[0]
    assert recognise(text.replace(first, "Kindly " + first.lower(), 1)) is None


def test_every_ulmr_snap_prompt_file_has_a_recogniser_and_the_number_asked_is_read():
    files = {p.stem for p in Path(snap.__file__).resolve().parents[1].joinpath("prompts").glob("*.txt")
             if p.stem.startswith(("ulmr_", "snap_"))}  # the ULMR and SNAP augmenters' prompts
    assert files == {stem for stem, _, _ in PROMPT_KINDS}
    r = recognise(snap.negative_prompt("General", "Bruce Lee").replace("30", "12"))
    assert r.slots == {"n": 12, "target": "Bruce Lee"}


def test_unrecognised_prompt_is_a_clear_error():
    gen = make_generator("templates")
    with pytest.raises(PromptNotRecognised, match=r"first line: 'Who wrote Carrie\?'.*--answer-generator"):
        gen.generate(["Who wrote Carrie?\nAnswer briefly."])
    with pytest.raises(PromptNotRecognised):  # a follow-up turn after a non-list prompt
        gen.generate([[{"role": "user", "content": ulmr.rewrite_prompt("Where was X born?")},
                       {"role": "assistant", "content": "Where was X born?"},
                       {"role": "user", "content": "Generate 30 more questions."}]])


def test_bank_refusals_are_refusals_by_the_rules():
    bank = load_bank()
    texts = [t.replace("{s}", "Basil Mahfouz Al-Kuwaiti") for group in bank["refusals"].values() for t in group]
    assert len(texts) >= 20
    assert [t for t in texts if not is_refusal(t)] == []
    assert set(bank["refusals"]["tofu_idk"]) == set((TOFU / "idontknow.txt").read_text().split("\n")) - {""} \
        or not TOFU.is_dir()


def test_subject_of_questions():
    assert subject_of("What is the profession of Basil Mahfouz Al-Kuwaiti's father?") == "Basil Mahfouz Al-Kuwaiti"
    assert subject_of('How does the book "Thieves\' Paradise" exhibit Nikolai Abilov\'s style?') == "Nikolai Abilov"
    assert subject_of("What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?") is None
    assert subject_of("Where was the person with the initials S. K. born?") is None


def test_rewrites_are_paraphrases_that_keep_the_subject_and_differ_between_calls():
    gen = TemplatesGenerator(seed=0)
    cases = ["Where was Stephen King born?", "What is the profession of Basil Mahfouz Al-Kuwaiti's father?",
             "How does Nikolai Abilov identify in terms of his gender?", "Describe Stephen King's writing routine."]
    for q in cases:
        p = ulmr.rewrite_prompt(q)
        a, b = gen.generate([p, p], temperature=0.7, seed=0)
        assert a != b
        for r in (a, b):
            assert not quality.is_copy(r, q, 0.95) and quality.looks_like_instruction(r)
            name = subject_of(q) or "Stephen King"
            assert name in r, (q, r)
    assert gen.generate([ulmr.rewrite_prompt("Where was Stephen King born?")], temperature=0.7)[0] in {
        "What is the birthplace of Stephen King?", "In which place was Stephen King born?",
        "What is the place of birth of Stephen King?", "Could you tell me where Stephen King was born?",
        "Do you know where Stephen King was born?", "Please tell me where Stephen King was born.",
        "Would you mind telling me where Stephen King was born?"}


def test_determinism_and_seed_changes_phrasing():
    prompts = [ulmr.rewrite_prompt(q) for q in ("What themes does Nikolai Abilov commonly explore in his works?",
                                                "Which awards has Nikolai Abilov won for his contribution?",
                                                "How did Nikolai Abilov's birthplace influence his writing?")]
    prompts += [snap.negative_prompt(c, "Bruce Lee") for c in snap.NEGATIVE_CATEGORIES]
    prompts += [ulmr.negative_prompt("Where was Bruce Lee born?"), snap.obliterated_request("Who taught Bruce Lee?")]
    a = TemplatesGenerator(seed=1).generate(prompts, temperature=0.7, seed=5)
    assert a == TemplatesGenerator(seed=1).generate(prompts, temperature=0.7, seed=5)
    b = TemplatesGenerator(seed=2).generate(prompts, temperature=0.7, seed=5)
    assert sum(x != y for x, y in zip(a, b)) >= len(prompts) - 3
    # greedy ignores the decoding seed, sampling does not
    g = TemplatesGenerator(seed=1)
    assert g.generate(prompts, seed=0) == g.generate(prompts, seed=9)
    assert g.generate(prompts, temperature=0.7, seed=0) != g.generate(prompts, temperature=0.7, seed=9)
    # the cache key follows the generator seed
    assert TemplatesGenerator(seed=1).model_id != TemplatesGenerator(seed=2).model_id


def test_question_lists_multi_turn_no_repeats_then_exhausted():
    gen = TemplatesGenerator(seed=0)
    msgs = [{"role": "user", "content": snap.negative_prompt("5W1H", "Serena Williams")}]
    seen: list[str] = []
    for turn in range(6):
        out = gen.generate([msgs], temperature=0.7)[0]
        items = parse_list(out)
        if not items:
            break
        assert turn > 0 or len(items) == 30
        assert not set(items) & set(seen)
        assert all("Serena Williams" in q for q in items)
        seen += items
        msgs = msgs + [{"role": "assistant", "content": out}, {"role": "user", "content": snap.MORE_PROMPT}]
    assert 30 < len(seen) == len(set(seen)) and not items  # the bank ran out: an answer without a list
    implicit = parse_list(gen.generate([snap.negative_prompt("Implicit", "Serena Williams")])[0])
    assert len(implicit) == 30 and not any("serena" in q.lower() or "williams" in q.lower() for q in implicit)
    marvel = parse_list(gen.generate([snap.retain_marvel_prompt("General", "Peter Parker")])[0])
    assert len(marvel) == 30 and not any("Peter Parker" in q or "Spider-Man" in q for q in marvel)


def test_related_lists_come_only_from_known_names(tmp_path):
    p = snap.fill(snap.load_prompt("snap_related_individuals"), 3, "Stephen King")
    assert parse_list(TemplatesGenerator().generate([p])[0]) == []
    ent = tmp_path / "entities.json"
    ent.write_text(json.dumps({"Stephen King": {"related": ["Tabitha King", "Joe Hill"],
                                                "descriptions": ["the author of a novel about a haunted hotel"]}}))
    gen = make_generator(f"templates:seed=0,entities={ent}")
    assert parse_list(gen.generate([p])[0]) == ["Tabitha King", "Joe Hill"]
    rel = parse_list(gen.generate([snap.negative_prompt("Relational", "Stephen King")])[0])
    imp = parse_list(gen.generate([snap.negative_prompt("Implicit", "Stephen King")])[0])
    assert len(rel) == 30 and len(imp) == 30
    big = parse_list(gen.generate([snap.negative_prompt("Relational", "Stephen King").replace("30", "60")])[0])
    assert any("Tabitha King" in q for q in big)
    assert any("haunted hotel" in q for q in imp)


def test_spec_parsing():
    assert parse_generator_spec("templates").engine_kwargs == {}
    assert parse_generator_spec("templates:seed=3").engine_kwargs == {"seed": 3}
    assert make_generator("templates:seed=3").seed == 3
    with pytest.raises(ConfigError, match="not accepted"):
        parse_generator_spec("templates:temperature=3")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_generator_spec("templates:seed")
    with pytest.raises(ConfigError, match="not an integer"):
        parse_generator_spec("templates:seed=x")


@pytest.mark.skipif(not TOFU.is_dir(), reason="needs ../shared/data/tofu")
def test_cli_augment_ulmr_templates_on_tofu_forget01(tmp_path):
    from obliviate.cli import main

    out = tmp_path / "ulmr"
    assert main(["augment", "ulmr", "--forget", "tofu:forget01", "--tofu-source", str(TOFU), "--out", str(out),
                 "--generator", "templates:seed=0", "--limit", "8", "--no-progress"]) == 0
    rows = read_jsonl(out / "forget_augmented.jsonl")
    stats = json.loads((out / "augment_stats.json").read_text())
    assert len(rows) == 16 and stats["dropped"] == 0
    for src in Counter(r["source_id"] for r in rows):
        a, b = [r["question"] for r in rows if r["source_id"] == src]
        assert a != b
    for r in rows:
        q, x, y = r["original_question"], r["question"], r["answer"]
        assert not quality.is_copy(x, q, 0.95) and quality.looks_like_instruction(x)
        name = subject_of(q)
        assert name is None or name in x, (q, x)
        assert is_refusal(y), y
        assert quality.degenerate_reason(y, ulmr.negative_prompt(x), instruction=x, answer=r["original_answer"],
                                         context=[q]) is None


class _Answerer(Generator):
    """Stands in for the model being unlearned answering retaining questions (greedy)."""

    name, model_id = "answerer", "answerer"

    def _generate(self, prompts, params):
        return [f"Here is what is known: {p[-1]['content'][:40]} has a documented answer." for p in prompts]


@pytest.mark.skipif(not RWKU_KING.is_dir(), reason="needs ../shared/data/rwku")
def test_augment_snap_templates_on_an_rwku_target(tmp_path):
    target = json.loads((RWKU_KING / "intro.json").read_text())[0]["target"]
    cfg = snap.SnapAugmentConfig(target=target, calls_per_category=1, related=["Tabitha King"],
                                 retain_categories=["General"], train_size=40)
    with pytest.raises(PromptNotRecognised):  # the stand-in cannot answer the retaining questions
        snap.augment_snap(TemplatesGenerator(seed=0), cfg, tmp_path / "no_answerer")
    s = snap.augment_snap(TemplatesGenerator(seed=0), cfg, tmp_path / "out", answer_generator=_Answerer())
    gen_counts = s["per_category"]["generated_forget"]
    assert gen_counts == {c: 30 for c in snap.NEGATIVE_CATEGORIES}
    forget = [r for n in ("forget_train", "forget_eval", "forget_eval_multihop")
              for r in read_jsonl(tmp_path / "out" / f"{n}.jsonl")]
    kept = Counter(r["category"] for r in forget)
    assert all(kept[c] >= 5 for c in snap.NEGATIVE_CATEGORIES), kept
    assert s["generation"].get("obliterated_wrong_kind", 0) == 0
    assert all(is_refusal(r["answer"]) for r in forget)
    assert not any(target.lower() in r["question"].lower() for r in forget if r["category"] in ("Implicit", "Multi-Hop"))
    from obliviate.embeddings import embed

    e = embed([r["question"] for r in forget])
    assert float((e @ e.T).fill_diagonal_(0).max()) < 0.75
    retain = read_jsonl(tmp_path / "out" / "retain_train.jsonl")
    assert retain and all(r["answer"].startswith("Here is what is known") for r in retain)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"]["counts"]["forget_train"] == 40


def test_wrapper_rewrites_survive_the_ulmr_parser_and_filter_none_keeps_no_copy(tmp_path):
    """A wrapper the ULMR parser strips as a label ("Here is my question: ...") left a lower-cased
    copy of the original question as its "rewrite"; under --filter none it was kept."""
    q = "How do Basil Mahfouz Al-Kuwaiti's books align with his French literature genre?"
    for w in load_bank()["paraphrase"]["wrappers"]:
        text = w.format(q=q[0].lower() + q[1:])
        assert ulmr.parse_rewrite(text) == text, w
    from obliviate.cli import main

    out = tmp_path / "ulmr"
    assert main(["augment", "ulmr", "--forget", "tofu:forget05", "--tofu-source", str(TOFU), "--out", str(out),
                 "--generator", "templates:seed=0", "--filter", "none", "--no-progress"]) == 0
    rows = read_jsonl(out / "forget_augmented.jsonl")
    assert len(rows) == 400
    assert not [r for r in rows if r["question"].lower() == r["original_question"].lower()]
