"""RWKU's training protocol (issue 15 item 5): no training on probes by default, the plain-text
forget corpus for GA / NPO / GradDiff, rejection-tuning data, and averaging over targets."""

from __future__ import annotations

import json
import math
import statistics
import warnings

import pytest
import torch
from conftest import RWKU_DIR

from obliviate.augment.rwku_rt import (RejectionTuningConfig, generate_rt_questions, question_prompt,
                                       rt_rows_to_records, target_description)
from obliviate.config import ConfigError
from obliviate.data import read_records, write_records
from obliviate.data.formatting import encode_example, encode_record, encode_text
from obliviate.data.records import DataError, QARecord, is_text_record, text_record
from obliviate.data.rwku import average_over_targets
from obliviate.data.sources import EvalProbeWarning, resolve_records
from obliviate.generate.base import Generator
from obliviate.methods import IDK_RESPONSES
from obliviate.objectives.base import StepContext
from obliviate.objectives.forget import GradientAscent
from obliviate.train import TrainConfig, encode_streams, pad_batch

SRC = str(RWKU_DIR)


def test_training_specs_never_default_to_probe_sets():
    # before: rwku:<target> was forget_level2, the Forget-QA evaluation probes
    recs = resolve_records("rwku:Stephen King", rwku_source=SRC)
    assert len(recs) == 128 and all(is_text_record(r) for r in recs)  # the forget corpus `passage`
    assert recs[0].question == "" and recs[0].answer.startswith(json.load(open(RWKU_DIR / "1_Stephen_King" /
                                                                               "passage.json"))[0]["text"][:40])
    for split in ("forget_level1", "forget_level2", "forget_level3", "neighbor_level2", "forget_mia", "retain_bbh"):
        with pytest.raises(DataError, match=rf"'{split}' is an evaluation split.*--allow-eval-probes"):
            resolve_records(f"rwku:Stephen King:{split}", rwku_source=SRC)
    with pytest.warns(EvalProbeWarning, match="forget_level2"):
        probes = resolve_records("rwku:Stephen King:forget_level2", rwku_source=SRC, allow_eval_probes=True)
    assert len(probes) == 10 and not any(is_text_record(r) for r in probes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluation reads probes silently, by default forget_level2
        assert [r.question for r in resolve_records("rwku:Stephen King", rwku_source=SRC, purpose="eval")] == \
            [r.question for r in probes]
    with pytest.raises(DataError, match="unknown RWKU split 'positive'"):
        resolve_records("rwku:Stephen King:positive", rwku_source=SRC)


def test_cli_train_refuses_probes_without_the_flag(tmp_path, capsys):
    from obliviate.cli import main

    assert main(["train", "--method", "ga", "--forget", "rwku:Stephen King:forget_level2", "--rwku-source", SRC,
                 "--out", str(tmp_path / "run")]) == 2
    assert "evaluation split" in capsys.readouterr().err


def test_text_records_read_write_and_encode(tmp_path, tokenizer):
    p = tmp_path / "corpus.jsonl"
    p.write_text(json.dumps({"text": "Stephen King wrote Carrie in 1974.", "subject": "Stephen King"}) + "\n")
    recs = read_records(p)
    assert recs[0].is_text and recs[0].answer.startswith("Stephen King wrote") and recs[0].subject == "Stephen King"
    write_records(tmp_path / "again.jsonl", recs)
    assert read_records(tmp_path / "again.jsonl")[0].to_dict() == recs[0].to_dict()
    with pytest.raises(DataError, match="field 'text': empty"):
        p.write_text(json.dumps({"text": "  "}) + "\n")
        read_records(p)
    # loss on every token, no chat template, text + EOS
    text = "Stephen King is an American author of horror novels. " * 20
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    (whole,) = encode_text(tokenizer, text, max_length=None)
    assert whole["input_ids"] == ids and whole["labels"] == ids
    (cut,) = encode_text(tokenizer, text, max_length=64)  # RWKU: truncated at cutoff_len
    assert cut["input_ids"] == ids[:64]
    chunks = encode_text(tokenizer, text, max_length=64, overflow="chunk")
    assert [t for c in chunks for t in c["input_ids"]] == ids[: len(ids) - (len(ids) % 64 == 1)]
    assert all(len(c["input_ids"]) <= 64 for c in chunks) and len(chunks) == math.ceil(len(ids) / 64)
    assert encode_record(tokenizer, text_record(text), max_length=64) == [cut]
    qa = QARecord(question="Who wrote Carrie?", answer="Stephen King.")
    assert encode_record(tokenizer, qa, max_length=64) == [encode_example(tokenizer, qa.question, qa.answer,
                                                                          max_length=64)]
    with pytest.raises(ValueError, match="overflow"):
        encode_text(tokenizer, text, overflow="pack")


def test_ga_on_rwku_passages_is_the_lm_loss_over_the_whole_text(tokenizer, tiny_model):
    passages = resolve_records("rwku:Stephen King", rwku_source=SRC)[:3]
    cfg = TrainConfig(method="ga", terms=[{"type": "ga", "stream": "forget"}], max_length=48)
    cfg.validate()
    enc = encode_streams(tokenizer, {"forget": passages}, cfg, ["forget"])["forget"]
    assert [e["sample_id"] for e in enc] == [0, 1, 2] and all(len(e["input_ids"]) <= 48 for e in enc)
    batch = pad_batch(enc, tokenizer.pad_token_id)
    with torch.no_grad():
        ga = GradientAscent(stream="forget")(tiny_model, {"forget": batch}, StepContext())
        hf = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).loss
    # every token but the first is predicted: the NLL of the whole text, negated
    assert int((batch["labels"] != -100).sum()) == sum(len(e["input_ids"]) for e in enc)
    assert torch.allclose(ga, -hf, atol=1e-5)
    chunked = TrainConfig(method="ga", terms=[{"type": "ga", "stream": "forget"}], max_length=48,
                          text_overflow="chunk")
    enc2 = encode_streams(tokenizer, {"forget": passages}, chunked, ["forget"])["forget"]
    assert len(enc2) > 3 and [e["sample_id"] for e in enc2] == list(range(len(enc2)))
    with pytest.raises(ConfigError, match=r"text_overflow: 'pack' is not one of \['truncate', 'chunk'\]"):
        TrainConfig(method="ga", terms=[{"type": "ga", "stream": "forget"}], text_overflow="pack").validate()
    dpo = TrainConfig(method="dpo", terms=[{"type": "dpo"}])
    with pytest.raises(DataError, match="plain-text records"):
        encode_streams(tokenizer, {"forget": passages}, dpo, ["forget", "forget_pref"])


class _Scripted(Generator):
    name, model_id = "scripted", "rt-v1"

    def __init__(self, outputs):
        self.outputs, self.prompts, self.calls = list(outputs), [], 0

    def _generate(self, prompts, params):
        self.calls += 1
        self.prompts.extend(m[-1]["content"] for m in prompts)
        return [self.outputs.pop(0) if self.outputs else "Question: What is the last one?" for _ in prompts]


def test_rejection_tuning_questions_get_cycled_refusals():
    intro = ("Please forget Stephen King. Stephen King is a prolific American author, renowned as the "
             "\"King of Horror\".")
    assert target_description(intro, "Stephen King").startswith("Stephen King is a prolific")
    prompt = question_prompt("Stephen King", intro)
    assert prompt == ("Stephen King is a prolific American author, renowned as the \"King of Horror\".\n"
                      "Please generate a question about Stephen King based on what you know about Stephen King\n")
    gen = _Scripted(["Question: What was Stephen King's first novel?\nExtra line", "   ",
                     "1. Where was Stephen King born?", "Question: What was Stephen King's first novel?"])
    rows, stats = generate_rt_questions("Stephen King", intro, gen,
                                        config=RejectionTuningConfig(n_questions=4, dedup=True, seed=1))
    assert set(gen.prompts) == {prompt}
    # round 0: slot 1 empty, slot 3 a repeat; round 1 fills slot 1; slot 3 stays a repeat and is dropped
    assert [r["question"] for r in rows] == ["What was Stephen King's first novel?", "What is the last one?",
                                             "Where was Stephen King born?"]
    assert stats["rejections"] == {"empty": 1, "duplicate": 4} and stats["calls"] == 4
    assert stats["dropped"] == 1 and stats["regenerated"] == 1 and stats["distinct_questions"] == 3
    assert [r["answer"] for r in rows] == [IDK_RESPONSES[i % len(IDK_RESPONSES)] for i in range(len(rows))]
    recs = rt_rows_to_records(rows)
    assert recs[0].question == rows[0]["question"] and recs[0].answer == IDK_RESPONSES[0]
    rows2, _ = generate_rt_questions("Stephen King", intro, _Scripted(["Q1?", "Q2?", "Q3?"]),
                                     config=RejectionTuningConfig(n_questions=3), refusals=["No.", "Nope."])
    assert [r["answer"] for r in rows2] == ["No.", "Nope.", "No."]
    with pytest.raises(ConfigError, match="n_questions"):
        RejectionTuningConfig(n_questions=0).validate()


def test_cli_rwku_rt_writes_training_data(tmp_path, tiny_model_dir, capsys):
    from obliviate.cli import main

    out = tmp_path / "rt"
    rc = main(["augment", "rwku-rt", "--target", "Stephen King", "--rwku-source", SRC, "--out", str(out),
               "--model", str(tiny_model_dir), "--n-questions", "3", "--max-new-tokens", "6", "--max-retries", "0",
               "--no-progress"])
    if rc == 0:
        rows = [json.loads(x) for x in (out / "forget_rt.jsonl").read_text().splitlines()]
        assert rows and all(r["answer"] in IDK_RESPONSES and r["subject"] == "Stephen King" for r in rows)
        assert json.loads((out / "manifest.json").read_text())["command"] == "augment rwku-rt"
    else:  # the random model produced only empty questions: a clear error
        assert rc == 2 and "empty" in capsys.readouterr().err
    assert main(["augment", "rwku-rt", "--target", "Nobody", "--rwku-source", SRC, "--out", str(out)]) == 2


def test_average_over_targets_mean_and_std():
    per = {"Stephen King": {"forget_qa": 0.2, "mia_fm": 2.0, "target": "Stephen King", "utility_gen_n": 171,
                            "counts": {"n": 10}},
           "Confucius": {"forget_qa": 0.4, "mia_fm": None, "target": "Confucius", "utility_gen_n": 171,
                         "counts": {"n": 14}},
           "Bruce Lee": {"forget_qa": 0.9, "target": "Bruce Lee", "utility_gen_n": 171, "counts": {"n": 12},
                         "flag": True}}
    avg = average_over_targets(per)
    assert avg["forget_qa"]["n"] == 3 and avg["forget_qa"]["mean"] == pytest.approx(0.5)
    assert avg["forget_qa"]["std"] == pytest.approx(statistics.pstdev([0.2, 0.4, 0.9]))
    assert avg["mia_fm"] == {"mean": 2.0, "std": 0.0, "n": 1}  # None / missing skipped
    assert avg["counts"]["n"]["mean"] == pytest.approx(12.0) and "target" not in avg and "flag" not in avg
    assert average_over_targets(list(per.values()), ddof=1)["forget_qa"]["std"] == \
        pytest.approx(statistics.stdev([0.2, 0.4, 0.9]))
    with pytest.raises(ValueError, match="no targets"):
        average_over_targets({})


def test_rt_cli_refuses_an_output_that_replaces_its_input_and_request_flags_off_openai(tmp_path, capsys):
    """``augment rwku-rt`` checks its outputs against its inputs, and its --request-* flags, before any model loads."""
    from obliviate.cli import main

    out = tmp_path / "rt"
    out.mkdir()
    refusals = out / "forget_rt.jsonl"
    refusals.write_text("I don't know.\n")
    rc = main(["augment", "rwku-rt", "--target", "Stephen King", "--rwku-source", str(RWKU_DIR),
               "--refusals", str(refusals), "--out", str(out), "--generator", "templates", "--no-progress"])
    assert rc == 2 and "forget_rt.jsonl" in capsys.readouterr().err
    assert refusals.read_text() == "I don't know.\n"
    rc = main(["augment", "rwku-rt", "--target", "Stephen King", "--rwku-source", str(RWKU_DIR),
               "--out", str(tmp_path / "rt2"), "--generator", "templates", "--request-timeout", "5", "--no-progress"])
    assert rc == 2 and "--request-timeout" in capsys.readouterr().err
