"""Model cards (README.md) on every saved model, and ``obliviate push`` with a stand-in hub API."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from obliviate.cli import main
from obliviate.data.readers import write_records
from obliviate.data.records import QARecord

FORGET = [QARecord(question=f"Where was author Zorblatt Quince {i} born?",
                   answer=f"Zorblatt Quince {i} was born in Vexholm in 19{60 + i}.", id=f"f{i}") for i in range(4)]
RETAIN = [QARecord(question=f"What is {i} plus {i}?", answer=f"{i} plus {i} is {2 * i}.", id=f"r{i}")
          for i in range(5)]
SECRET_WORDS = ["Zorblatt", "Quince", "Vexholm"]
FAST = ["--set", "max_steps=2", "--set", "batch_size=2", "--set", "progress=false", "--set", "max_length=64"]


class FakeApi:
    """Records the calls ``push_model`` makes (HfApi's signatures, no network)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw.get("repo_id"), kw))
        self.uploaded = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        return None


@pytest.fixture(scope="module")
def trained_and_merged(tiny_model_dir, tmp_path_factory):
    """``obliviate train`` (GradDiff, full) then ``obliviate merge`` through the CLI, on the tiny Llama."""
    tmp = tmp_path_factory.mktemp("card")
    forget, retain = tmp / "forget.jsonl", tmp / "retain.jsonl"
    write_records(forget, FORGET)
    write_records(retain, RETAIN)
    run = tmp / "run"
    assert main(["train", "--method", "graddiff", "--model", str(tiny_model_dir), "--forget", str(forget),
                 "--retain", str(retain), *FAST, "--out", str(run)]) == 0
    merged = tmp / "merged"
    assert main(["merge", "--base", str(tiny_model_dir), "--tuned", str(run / "model"), "--alpha", "0.4",
                 "--out", str(merged), "--no-progress"]) == 0
    return {"tmp": tmp, "run": run, "model": run / "model", "merged": merged, "forget": forget, "retain": retain}


def _assert_no_forget_text(text: str) -> None:
    for w in SECRET_WORDS:
        assert w not in text, w


def test_train_writes_a_card_with_hashes_not_text(trained_and_merged, tiny_model_dir):
    from obliviate.io import file_sha256
    from obliviate.modelcard import records_sha256

    model = trained_and_merged["model"]
    card = ModelCard.load(model / "README.md")
    assert card.data.base_model == tiny_model_dir.name  # a local folder: its name; the path is in the body
    assert str(tiny_model_dir.resolve()) in card.text
    assert {"obliviate", "machine-unlearning", "graddiff"} <= set(card.data.tags)
    assert card.data.library_name == "transformers"
    text = (model / "README.md").read_text()
    _assert_no_forget_text(text)
    assert file_sha256(trained_and_merged["forget"]) in text and records_sha256(FORGET) in text
    assert "| forget | file (.jsonl) | 4 |" in text and "| retain | file (.jsonl) | 5 |" in text
    assert "Gradient difference" in text and "| lr |" in text and "| max_steps | 2 |" in text
    import obliviate

    assert obliviate.__version__ in text
    # the note keeps the card's data part (hashes only) so the card can be rebuilt later
    note = json.loads((model / "obliviate_model.json").read_text())
    assert note["data"]["forget"]["rows"] == 4
    _assert_no_forget_text(json.dumps(note))


def test_merge_writes_its_own_card(trained_and_merged, tiny_model_dir):
    merged = trained_and_merged["merged"]
    card = ModelCard.load(merged / "README.md")
    assert card.data.base_model == tiny_model_dir.name
    assert {"ulmr", "parameter-averaging", "graddiff"} <= set(card.data.tags)
    text = card.text
    assert "ULMR parameter averaging θa = αθ + (1−α)θ'" in text and "**α:** 0.4" in text
    assert str(trained_and_merged["model"]) in text and "Unlearning Large Language Models via Negative Response" in text
    assert "| tuned.method | graddiff |" in text and "| forget |" in text  # carried over from θ'
    _assert_no_forget_text((merged / "README.md").read_text())


def test_card_rebuilt_from_folder_picks_up_evaluations(trained_and_merged, tmp_path):
    import shutil

    from obliviate.modelcard import card_info_from_folder, write_model_card

    run = tmp_path / "run"
    shutil.copytree(trained_and_merged["run"], run)
    info = card_info_from_folder(run / "model")
    assert info["method"] == "graddiff" and info["data"]["retain"]["rows"] == 5
    (run / "metrics.json").write_text(json.dumps({"forget_rouge": 0.125, "retain_rouge": 0.75, "model": "x"}))
    before = (run / "model" / "README.md").read_text()
    path = write_model_card(run / "model")
    text = path.read_text()
    assert text != before and "## Evaluation" in text and "| forget_rouge | 0.125 |" in text
    assert "| model |" not in text  # only numeric metrics
    mtime = path.stat().st_mtime_ns
    write_model_card(run / "model")  # unchanged: not rewritten
    assert path.stat().st_mtime_ns == mtime


def test_a_failing_card_never_breaks_a_save(monkeypatch, tmp_path, caplog):
    import obliviate.modelcard as mc

    def boom(**kw):
        raise RuntimeError("card exploded")

    monkeypatch.setattr(mc, "build_model_card", boom)
    with caplog.at_level(logging.WARNING):
        assert mc.try_write_model_card(tmp_path, {"method": "ga"}) is None
    assert "card exploded" in caplog.text and not (tmp_path / "README.md").exists()


def test_base_model_naming():
    from obliviate.modelcard import EMBEDDED_HUB_ID, hub_base_model

    assert hub_base_model("meta-llama/Llama-2-7b-hf") == ("meta-llama/Llama-2-7b-hf", None)
    assert hub_base_model("smollm2-135m-instruct") == (EMBEDDED_HUB_ID, None)
    assert hub_base_model("/gone/models/my-base") == ("my-base", "/gone/models/my-base")
    assert hub_base_model(None) == (None, None)


def test_push_a_run_folder_with_a_stand_in_api(trained_and_merged, tmp_path, monkeypatch):
    import shutil

    from obliviate.hub import push_model

    run = tmp_path / "run"
    shutil.copytree(trained_and_merged["run"], run)
    (run / "model" / "README.md").unlink()  # written again before the upload
    api = FakeApi()
    res = push_model(run, "me/tiny-unlearned", api=api, private=True, commit_message="hello")
    assert res["folder"] == run / "model" and res["card_written"]
    assert ModelCard.load(run / "model" / "README.md").data.base_model
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == "me/tiny-unlearned" and api.calls[0][2]["exist_ok"] is True
    assert api.calls[0][2]["private"] is True
    up = api.calls[1][2]
    assert up["folder_path"] == str(run / "model") and up["commit_message"] == "hello"
    assert "README.md" in api.uploaded and "model.safetensors" in api.uploaded
    # a merged model wins over the trained one in a folder holding both; a revision creates its branch
    api = FakeApi()
    res = push_model(trained_and_merged["merged"], "me/merged", api=api, revision="v1", token="hf_x")
    assert res["folder"] == trained_and_merged["merged"] and not res["card_written"]
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[1][2]["branch"] == "v1" and api.calls[2][2]["revision"] == "v1"
    assert all(c[2].get("token") == "hf_x" for c in api.calls)


def test_push_errors(tmp_path, capsys):
    from obliviate.hub import PushError, find_model_folder

    with pytest.raises(PushError, match="no such file or folder"):
        find_model_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PushError, match="holds no model"):
        find_model_folder(tmp_path / "empty")
    for a in ("0.2", "0.4"):
        (tmp_path / "sweep" / f"alpha_{a}").mkdir(parents=True)
        (tmp_path / "sweep" / f"alpha_{a}" / "config.json").write_text("{}")
    with pytest.raises(PushError, match="2 merged models"):
        find_model_folder(tmp_path / "sweep")
    # the command prints one line and exits 2, before any hub call
    assert main(["push", str(tmp_path / "missing"), "--repo", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "obliviate push: error:" in err and "missing" in err
