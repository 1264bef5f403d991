"""Readers: every input format, and a clear DataError (file, line, field) for each kind of bad input."""

from __future__ import annotations

import json

import datasets
import pytest

from obliviate.data import DataError, QARecord, read_prompts, read_records, read_rows, write_records

ROWS = [
    {"question": "Who wrote Carrie?", "answer": "Stephen King", "topic": "books"},
    {"question": "Capital of France?", "answer": "Paris", "paraphrased_answer": "It is Paris.",
     "perturbed_answer": ["Berlin", "Rome"]},
]


def _check(records):
    assert [r.question for r in records] == ["Who wrote Carrie?", "Capital of France?"]
    assert [r.answer for r in records] == ["Stephen King", "Paris"]
    assert records[0].meta["topic"] == "books"
    assert records[1].paraphrased_answer == "It is Paris."
    assert records[1].perturbed_answers == ["Berlin", "Rome"]


def test_json_list_and_data_object(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(ROWS, indent=2))
    _check(read_records(p))
    q = tmp_path / "b.json"
    q.write_text(json.dumps({"version": 1, "data": ROWS}, indent=2))
    _check(read_records(str(q)))


def test_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("\n" + "\n\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    table = read_rows(p)
    assert table.lines == [2, 4]
    _check(read_records(p))


def test_csv_and_tsv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('question,answer,topic,paraphrased_answer,perturbed_answer\n'
                 '"Who wrote Carrie?",Stephen King,books,,\n'
                 '"Capital of France?",Paris,,"It is Paris.","[""Berlin"", ""Rome""]"\n')
    recs = read_records(p)
    _check(recs)
    assert recs[0].paraphrased_answer is None and recs[0].perturbed_answers == []
    t = tmp_path / "a.tsv"
    t.write_text("q\ta\nWho wrote Carrie?\tStephen King\n")
    assert read_records(t, question_key="q", answer_key="a")[0].answer == "Stephen King"


def test_hf_dataset_object_datasetdict_and_saved_folder(tmp_path):
    ds = datasets.Dataset.from_list([{**r, "topic": r.get("topic"), "paraphrased_answer": r.get("paraphrased_answer"),
                                      "perturbed_answer": r.get("perturbed_answer", [])} for r in ROWS])
    _check(read_records(ds))
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    assert len(read_records(dd, split="test")) == 1
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]; pass split="):
        read_records(dd)
    with pytest.raises(DataError, match="no split 'dev'"):
        read_records(dd, split="dev")
    ds.save_to_disk(str(tmp_path / "saved"))
    _check(read_records(tmp_path / "saved"))
    dd.save_to_disk(str(tmp_path / "saved_dict"))
    assert len(read_records(tmp_path / "saved_dict", split="train")) == 2


def test_custom_keys_and_list_source():
    recs = read_records([{"query": "q?", "target": "a"}], question_key="query", answer_key="target")
    assert recs[0].question == "q?" and recs[0].answer == "a" and recs[0].meta == {}


def test_write_records_roundtrip(tmp_path):
    recs = [QARecord("q1", "a1", paraphrased_answer="p", perturbed_answers=["x", "y"], subject="s", id="7",
                     meta={"k": [1, 2]}),
            QARecord("q2", "a2")]
    out = write_records(tmp_path / "out" / "r.jsonl", recs)
    assert out.is_file() and not list(out.parent.glob(".*tmp"))
    assert read_records(out) == recs


# ----------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        read_records(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", ["e.json", "e.jsonl", "e.csv"])
def test_empty_file(tmp_path, name):
    p = tmp_path / name
    p.write_text("  \n\n")
    with pytest.raises(DataError, match=rf"{name}: empty file"):
        read_records(p)


def test_empty_list(tmp_path):
    p = tmp_path / "e.json"
    p.write_text("[]")
    with pytest.raises(DataError, match="no records"):
        read_records(p)


def test_malformed_jsonl_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"question": "x", "answer": }\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON") as e:
        read_records(p)
    assert e.value.line == 3 and e.value.source == str(p)


def test_malformed_json_names_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n  {"question": "a", "answer": "b"},\n  {"question": "c" "answer": "d"}\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        read_records(p)


def test_missing_field_names_file_line_field(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('[\n  {"question": "a", "answer": "b"},\n  {\n    "question": "c"\n  }\n]\n')
    with pytest.raises(DataError, match=r"m\.json:3: field 'answer': missing") as e:
        read_records(p)
    assert (e.value.line, e.value.field) == (3, "answer")
    q = tmp_path / "m.jsonl"
    q.write_text('{"question": "a", "answer": "b"}\n{"answer": "b"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: field 'question': missing"):
        read_records(q)


def test_data_object_rows_keep_line_numbers(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"name": "x",\n "data": [\n  {"question": "a", "answer": "b"},\n  {"question": "", "answer": "d"}\n]}')
    with pytest.raises(DataError, match=r"d\.json:4: field 'question': empty"):
        read_records(p)


def test_wrong_type_and_empty_field(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"question": "a", "answer": 3}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'answer': expected a string, got int"):
        read_records(p)
    p.write_text('{"question": "  ", "answer": "x"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'question': empty"):
        read_records(p)
    p.write_text('["not an object"]\n')
    with pytest.raises(DataError, match=r"t\.jsonl:1: expected an object, got list"):
        read_records(p)


def test_csv_errors(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("question,answer\nq1,a1\nq2,\n")
    with pytest.raises(DataError, match=r"c\.csv:3: field 'answer': empty"):
        read_records(p)
    p.write_text("question,text\nq1,a1\n")
    with pytest.raises(DataError, match=r"c\.csv:2: field 'answer': missing"):
        read_records(p)
    p.write_text("question,answer\nq1,a1,extra\n")
    with pytest.raises(DataError, match=r"c\.csv:2: 3 cells for 2 columns"):
        read_records(p)


def test_dataset_row_errors_name_the_row():
    ds = datasets.Dataset.from_list([{"question": "a", "answer": "b"}, {"question": "c", "answer": None}])
    with pytest.raises(DataError, match=r"<Dataset> row 1: field 'answer': expected a string, got NoneType"):
        read_records(ds)


def test_unknown_extension_and_plain_folder(tmp_path):
    p = tmp_path / "a.parquet"
    p.write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported file type '\.parquet'; expected one of \.json"):
        read_records(p)
    with pytest.raises(DataError, match="not a dataset saved with datasets' save_to_disk"):
        read_records(tmp_path)
    with pytest.raises(DataError, match="cannot read records from a int"):
        read_records(3)


def test_split_on_a_file_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(DataError, match="only applies to a datasets DatasetDict"):
        read_records(p, split="train")


# ----------------------------------------------------------------------------- prompts
def test_read_prompts_formats(tmp_path):
    t = tmp_path / "p.txt"
    t.write_text("Write a poem.\n\n  \nExplain gravity.\n")
    assert read_prompts(t) == ["Write a poem.", "Explain gravity."]
    j = tmp_path / "p.jsonl"
    j.write_text('{"instruction": "A"}\n{"prompt": "B"}\n{"question": "C", "instruction": "ignored"}\n"D"\n')
    assert read_prompts(j) == ["A", "B", "C", "D"]
    k = tmp_path / "p.json"
    k.write_text(json.dumps([{"text": "x"}, {"text": "y"}]))
    assert read_prompts(k, field="text") == ["x", "y"]
    assert read_prompts(datasets.Dataset.from_list([{"instruction": "z"}])) == ["z"]


def test_read_prompts_errors(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text('{"instruction": "A"}\n{"text": "B"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: no prompt field; expected one of \['question', 'instruction'"):
        read_prompts(j)
    j.write_text('{"instruction": ""}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'instruction': empty"):
        read_prompts(j)
    t = tmp_path / "e.txt"
    t.write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        read_prompts(t)
    md = tmp_path / "x.md"
    md.write_text("hi")
    with pytest.raises(DataError, match=r"unsupported file type '\.md'"):
        read_prompts(md)
