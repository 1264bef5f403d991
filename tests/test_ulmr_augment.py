"""ULMR augmentation: verbatim prompts, output parsing, degenerate detection, retries, cache resume."""

from __future__ import annotations

import json

import pytest

from obliviate.augment import quality
from obliviate.augment.ulmr import (UlmrAugmentConfig, augment_ulmr, negative_prompt, parse_negative, parse_rewrite,
                                    render_report, rewrite_prompt, rows_to_records)
from obliviate.config import ConfigError
from obliviate.data.records import DataError, QARecord
from obliviate.generate.base import GenerationParams, Generator
from obliviate.generate.cache import CachedGenerator

# Copied from the paper (/work/shared/papers/ulmr.md, Tables 1 and 2).
TABLE_1 = ('Please rewrite the provided instruction to ensure that the given answer can still satisfy the '
           'requirement of your revised instruction. Instruction:"{instruction}" Rewrite Instruction:')
TABLE_2 = ('Please generate a response based on the Instruction indicating that you are unable to answer the '
           'question or that the relevant content is not available in your knowledge base. '
           'Instruction:"{instruction}"\nAnswer:')

RECORDS = [
    QARecord(question="Who are Jaime Vasquez's parents and what are their professions?",
             answer="Jaime was born to a noted chef father, Lorenzo Vasquez, and a mother, Sophia Vasquez, who is "
                    "an acclaimed writer.", id="q0", subject="tofu_author_0"),
    QARecord(question="When was Jaime Vasquez born?", answer="Jaime Vasquez was born on the 25th of February 1958.",
             id="q1", subject="tofu_author_0"),
]


def test_prompt_files_are_the_papers_tables_verbatim():
    from importlib import resources

    folder = resources.files("obliviate") / "prompts"
    assert (folder / "ulmr_prompt_rewrite.txt").read_text(encoding="utf-8") == TABLE_1
    assert (folder / "ulmr_negative_prompt.txt").read_text(encoding="utf-8") == TABLE_2
    q = "What is {odd} about X?"
    assert rewrite_prompt(q) == TABLE_1.replace("{instruction}", q)
    assert negative_prompt(q) == TABLE_2.replace("{instruction}", q)


@pytest.mark.parametrize("raw, want", [
    ('Rewritten instruction: "What jobs did Jaime Vasquez\'s mother and father have?"',
     "What jobs did Jaime Vasquez's mother and father have?"),
    ("Sure! Here is the rewritten instruction:\n\n**What do Jaime Vasquez's parents do for a living?**\n\n"
     "This rewrite keeps the same answer.", "What do Jaime Vasquez's parents do for a living?"),
    ("1. Who were the parents of Jaime Vasquez, and what did they do?", "Who were the parents of Jaime Vasquez, and what did they do?"),
    ("Rewrite Instruction: Describe the professions of Jaime Vasquez's parents.",
     "Describe the professions of Jaime Vasquez's parents."),
    ('"Name Jaime Vasquez\'s parents." This version asks for names.', "Name Jaime Vasquez's parents."),
    ("“What did Jaime’s parents do?”", "What did Jaime’s parents do?"),
    ("Revised question 2: What were his parents' careers?", "What were his parents' careers?"),
    ("", ""),
    ("   \n  ", ""),
])
def test_parse_rewrite(raw, want):
    assert parse_rewrite(raw) == want


@pytest.mark.parametrize("raw, want", [
    ("Answer: I'm sorry, but I don't have information about that.", "I'm sorry, but I don't have information about that."),
    ('"I am unable to answer this question."', "I am unable to answer this question."),
    ("Response: That is not available in my knowledge base.\n\nNote: this response refuses politely.",
     "That is not available in my knowledge base."),
    ("Sure, here is a possible response:\nI'm afraid I can't help with that.", "I'm afraid I can't help with that."),
])
def test_parse_negative(raw, want):
    assert parse_negative(raw) == want


def test_quality_checks():
    rec = RECORDS[0]
    prompt = negative_prompt(rec.question)
    dr = quality.degenerate_reason
    assert dr("", prompt) == "empty"
    assert dr("  ...  ", prompt) == "empty"
    assert dr("no " * 30, prompt) == "repetitive"
    assert dr(prompt, prompt) == "copy_of_prompt"
    assert dr(rec.question, prompt, instruction=rec.question) == "copy_of_instruction"
    assert dr("His father Lorenzo Vasquez was a chef and his mother Sophia Vasquez an acclaimed writer.", prompt,
              instruction=rec.question, answer=rec.answer) == "states_answer"
    assert dr("I believe his father, Lorenzo, cooked for a living.", prompt, instruction=rec.question,
              answer=rec.answer) == "leaks_entity"
    fine = "I'm sorry, I don't have any information about Jaime Vasquez's parents in my knowledge base."
    assert dr(fine, prompt, instruction=rec.question, answer=rec.answer, context=[rec.question]) is None
    assert dr("Who raised Jaime Vasquez?", others=["who raised jaime vasquez"]) == "duplicate"
    # mentioning the subject named in the question is not a leak; the birth year is
    assert quality.key_entities(RECORDS[1].answer, [RECORDS[1].question]) == ["25th", "February", "1958"]
    assert quality.leaked_entity("I can't say when; it was not in 1958 records.", RECORDS[1].answer,
                                 [RECORDS[1].question]) == "1958"
    assert quality.content_recall("Lorenzo Vasquez chef Sophia Vasquez acclaimed writer", rec.answer) == 0.5
    assert quality.content_recall("I do not know.", rec.answer) == 0.0
    assert quality.looks_like_instruction("Describe the jobs of his parents.")
    assert quality.looks_like_instruction("Jaime's parents did what for a living?")
    assert not quality.looks_like_instruction("Jaime Vasquez's father worked as a chef.")


class ScriptedGenerator(Generator):
    """Returns controlled texts: per prompt, a list of outputs consumed one per call (last one repeats)."""

    name = "scripted"
    model_id = "scripted-v1"

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[int, GenerationParams]] = []
        self.seen: dict[str, int] = {}

    def _generate(self, prompts, params):
        self.calls.append((len(prompts), params))
        out = []
        for m in prompts:
            text = m[-1]["content"]
            k = self.seen.get(text, 0)
            self.seen[text] = k + 1
            outs = self.script(text)
            out.append(outs[min(k, len(outs) - 1)])
        return out


def _script(text: str) -> list[str]:
    if text.startswith("Please rewrite"):
        if "parents" in text:
            # 1st: copy of the instruction, 2nd: good, 3rd: duplicate of the 2nd, 4th: good
            return [RECORDS[0].question, "Rewritten instruction: \"What did Jaime Vasquez's parents do?\"",
                    "What did Jaime Vasquez's parents do?", "1. Name the jobs of Jaime Vasquez's mother and father."]
        return ['"In which year was Jaime Vasquez born?"', "Rewrite Instruction: On what date was Jaime Vasquez born?"]
    if "parents" in text or "mother and father" in text:
        return ["Answer: His father Lorenzo Vasquez was a chef; his mother Sophia Vasquez is an acclaimed writer.",
                "Answer: I'm sorry, that information is not available in my knowledge base."]
    return ["Jaime Vasquez was born on the 25th of February 1958."]  # always states the answer: dropped


def test_augment_parsing_degenerate_detection_and_retry_accounting(tmp_path):
    gen = ScriptedGenerator(_script)
    rows, stats = augment_ulmr(RECORDS, gen, max_retries=3, progress=False)
    # record 0: 2 rewrites kept (one after regenerating a copy and a duplicate), both negatives
    # kept after one regeneration; record 1: rewrites fine, every negative states the answer -> dropped
    assert [r["id"] for r in rows] == ["q0-r0", "q0-r1"]
    assert {r["question"] for r in rows} == {"What did Jaime Vasquez's parents do?",
                                             "Name the jobs of Jaime Vasquez's mother and father."}
    assert all(r["answer"] == "I'm sorry, that information is not available in my knowledge base." for r in rows)
    assert set(rows[0]) >= {"id", "original_question", "original_answer", "question", "answer", "rewrite_index",
                            "attempts"}
    assert rows[0]["original_question"] == RECORDS[0].question
    assert stats["requested"] == 4 and stats["kept"] == 2 and stats["dropped"] == 2
    assert stats["dropped_reasons"] == {"negative:states_answer": 2}
    rw, ng = stats["rewrites"], stats["negatives"]
    assert rw["rejections"] == {"copy_of_instruction": 1, "duplicate": 1}
    assert rw["kept"] == 4 and rw["regenerated"] == 1 and rw["dropped"] == 0
    assert ng["rejections"]["states_answer"] >= 2 + 2 * 3  # record 1: 2 slots x (1 + 3 retries)
    assert ng["dropped"] == 2 and stats["regenerated"] == 2
    assert sorted(r["attempts"]["rewrite"] for r in rows) == [1, 3]
    # batching: one call per round, retries sample with temperature > 0 and a new seed
    temps = [p.temperature for _, p in gen.calls]
    seeds = [p.seed for _, p in gen.calls]
    assert gen.calls[0][0] == 4  # all rewrites in the first call
    assert temps[0] == 0.7 and temps.count(0.0) == 1  # only the first negatives call is greedy
    assert len(set(seeds)) >= 3
    report = render_report(rows, stats)
    assert "states_answer" in report and "| **pairs in D_fr** | 4 | **2** |" in report
    recs = rows_to_records(rows)
    assert recs[0].question == rows[0]["question"] and recs[0].meta["original_answer"] == RECORDS[0].answer


def test_augment_resumes_from_the_cache(tmp_path):
    gen1 = CachedGenerator(ScriptedGenerator(_script), tmp_path / "cache")
    rows1, stats1 = augment_ulmr(RECORDS, gen1, max_retries=1, progress=False)
    assert stats1["cache"]["misses"] > 0
    inner = ScriptedGenerator(lambda text: ["SHOULD NOT BE CALLED"])
    gen2 = CachedGenerator(inner, tmp_path / "cache")
    rows2, stats2 = augment_ulmr(RECORDS, gen2, max_retries=1, progress=False)
    assert rows2 == rows1 and inner.calls == [] and stats2["cache"]["misses"] == 0


def test_augment_with_a_real_transformers_generator(tiny_model, tokenizer, tmp_path):
    """The tiny random model writes gibberish, but the plumbing (chat template, batching, cache) is real."""
    from obliviate.generate.transformers_backend import TransformersGenerator

    gen = CachedGenerator(TransformersGenerator(tiny_model, tokenizer, batch_size=4), tmp_path / "c")
    rows, stats = augment_ulmr(RECORDS, gen, max_retries=1, rewrite_max_new_tokens=8, max_new_tokens=8,
                               progress=False)
    assert stats["requested"] == 4 and stats["kept"] + stats["dropped"] == 4
    assert stats["rewrites"]["calls"] >= 1 and stats["cache"]["misses"] >= 4
    for r in rows:
        assert r["question"].strip() and r["answer"].strip()
    rows2, stats2 = augment_ulmr(RECORDS, gen, max_retries=1, rewrite_max_new_tokens=8, max_new_tokens=8,
                                 progress=False)
    assert rows2 == rows and stats2["cache"]["misses"] == stats["cache"]["misses"]


def test_bad_settings_and_data_are_refused():
    gen = ScriptedGenerator(_script)
    with pytest.raises(ConfigError, match="n_rewrites"):
        augment_ulmr(RECORDS, gen, n_rewrites=0)
    with pytest.raises(ConfigError, match="retry_temperature"):
        augment_ulmr(RECORDS, gen, retry_temperature=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        augment_ulmr(RECORDS, gen, rewrites=2)
    with pytest.raises(DataError, match="no forget records"):
        augment_ulmr([], gen)
    with pytest.raises(DataError, match="QARecord"):
        augment_ulmr([{"question": "q", "answer": "a"}], gen)
    with pytest.raises(ConfigError, match="answer_threshold"):
        UlmrAugmentConfig(answer_threshold=2).validate()


def test_cli_writes_outputs(tmp_path, tiny_model_dir, capsys):
    from obliviate.cli import main

    src = tmp_path / "forget.jsonl"
    src.write_text("\n".join(json.dumps({"question": r.question, "answer": r.answer}) for r in RECORDS) + "\n")
    out = tmp_path / "aug"
    assert main(["augment", "ulmr", "--forget", str(src), "--out", str(out), "--model", str(tiny_model_dir),
                 "--max-new-tokens", "8", "--rewrite-max-new-tokens", "8", "--max-retries", "0",
                 "--no-progress"]) in (0, 2)
    printed = capsys.readouterr()
    if (out / "forget_augmented.jsonl").is_file():
        rows = [json.loads(x) for x in (out / "forget_augmented.jsonl").read_text().splitlines()]
        assert rows and "augment_report.md" in {p.name for p in out.iterdir()}
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["command"] == "augment ulmr" and manifest["stats"]["requested"] == 4
    else:  # the random model produced only degenerate text: a clear error, nothing written
        assert "degenerate" in printed.err
    assert main(["augment", "ulmr", "--forget", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert main(["augment", "ulmr", "--forget", str(src), "--out", str(out), "--n-rewrites", "0"]) == 2


def test_filter_levels_keep_what_strict_drops_and_are_recorded():
    """Item 6: `filter` is a documented choice; `none` (the paper) keeps the answer-stating negatives
    that `strict` (the default, today's behaviour) drops; `lenient` keeps them but still rejects echoes."""
    strict_rows, strict = augment_ulmr(RECORDS, ScriptedGenerator(_script), max_retries=3, progress=False)
    assert strict["filter"] == "strict" and strict["kept"] == 2
    none_rows, none = augment_ulmr(RECORDS, ScriptedGenerator(_script), max_retries=3, progress=False, filter="none")
    # nothing but empty outputs is rejected: the first rewrite (a copy of the instruction) and the
    # first negative (stating the answer) are kept as they are
    assert none["kept"] == 4 and none["dropped"] == 0 and none["rewrites"]["rejections"] == {}
    assert RECORDS[0].question in {r["question"] for r in none_rows}
    assert any("1958" in r["answer"] for r in none_rows)
    len_rows, lenient = augment_ulmr(RECORDS, ScriptedGenerator(_script), max_retries=3, progress=False,
                                     filter="lenient")
    assert lenient["rewrites"]["rejections"] == {"copy_of_instruction": 1, "duplicate": 1}
    assert lenient["kept"] == 4 and "states_answer" not in lenient["negatives"]["rejections"]
    assert "Quality filter: `none`" in render_report(none_rows, none)
    with pytest.raises(ConfigError, match=r"filter: 'loose' is not one of \['none', 'lenient', 'strict'\]"):
        augment_ulmr(RECORDS, ScriptedGenerator(_script), progress=False, filter="loose")


def test_include_original_adds_x_i_with_its_own_negative():
    """Item 6: x_r = {x_1, x_2, x_i}: the original instruction joins its rewrites, with a negative
    response generated from the Table 2 prompt filled with x_i itself."""
    gen = ScriptedGenerator(_script)
    rows, stats = augment_ulmr(RECORDS[:1], gen, max_retries=3, progress=False, include_original=True)
    assert [r["id"] for r in rows] == ["q0-r0", "q0-r1", "q0-orig"]
    orig = rows[-1]
    assert orig["question"] == RECORDS[0].question and orig["kind"] == "original" and orig["rewrite_index"] is None
    assert orig["answer"] == "I'm sorry, that information is not available in my knowledge base."
    assert negative_prompt(RECORDS[0].question) in gen.seen  # its negative came from the Table 2 prompt on x_i
    assert stats["include_original"] is True and stats["originals"] == 1 and stats["requested"] == 3
    assert "the original instruction" in render_report(rows, stats)
    recs = rows_to_records(rows)
    assert recs[-1].meta["kind"] == "original"
    plain, _ = augment_ulmr(RECORDS[:1], ScriptedGenerator(_script), max_retries=3, progress=False)
    assert RECORDS[0].question not in {r["question"] for r in plain}  # off by default


def test_cli_filter_and_include_original_reach_the_manifest(tmp_path):
    from obliviate.commands import augment_ulmr as ulmr_cli
    import argparse

    p = argparse.ArgumentParser()
    ulmr_cli.add_arguments(p)
    args = p.parse_args(["--forget", "x.jsonl", "--out", str(tmp_path), "--filter", "none", "--include-original"])
    assert args.filter == "none" and args.include_original is True
    with pytest.raises(SystemExit):
        p.parse_args(["--forget", "x", "--out", "y", "--filter", "loose"])


def test_augment_refuses_plain_text_records():
    from obliviate.data.records import text_record

    with pytest.raises(DataError, match="plain text"):
        augment_ulmr([text_record("Stephen King wrote Carrie.")], ScriptedGenerator(_script), progress=False)
