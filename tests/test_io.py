import json

import pytest

from obliviate.io import Manifest, atomic_path, atomic_write_json, read_jsonl, atomic_write_jsonl, redact


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_jsonl_roundtrip(tmp_path):
    rows = [{"q": "é", "n": i} for i in range(3)]
    assert read_jsonl(atomic_write_jsonl(tmp_path / "x.jsonl", rows)) == rows


def test_manifest_records_inputs_and_redacts(tmp_path, monkeypatch):
    data = tmp_path / "in.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    m = Manifest(tmp_path / "run", "test", config={"api_key": "sk-secret", "gen": {"token": "t"}, "lr": 1e-4}, seed=3)
    m.add_input("forget", data)
    m.add_input("model", "org/name")
    path = m.write()
    man = json.loads(path.read_text())
    assert "sk-secret" not in path.read_text() and man["config"]["lr"] == 1e-4
    assert len(man["inputs"]["forget"]["sha256"]) == 64 and man["inputs"]["model"] == {"spec": "org/name"}
    assert man["seed"] == 3 and man["wall_time_s"] >= 0 and man["peak_rss_mb"] > 0
    assert redact({"x": [{"password": "p"}]}) == {"x": [{"password": "<redacted>"}]}
