"""``obliviate eval lm-eval``: lm-evaluation-harness on obliviate's models, offline RWKU tasks, skipped tasks."""

from __future__ import annotations

import json
import sys

import pytest

from obliviate.cli import main
from obliviate.evals.lm_eval_bridge import INSTALL_HINT, LmEvalUnavailable, require_lm_eval, write_rwku_tasks

from conftest import RWKU_DIR

TARGET = RWKU_DIR / "1_Stephen_King"

# A task whose data lives on the Hugging Face hub (unreachable in these tests).
HUB_TASK = """task: hub_only_probe
dataset_path: allenai/ai2_arc
dataset_name: ARC-Easy
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices.text}}"
doc_to_target: "{{choices.label.index(answerKey)}}"
metric_list:
  - metric: acc
"""


def test_missing_lm_eval_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(LmEvalUnavailable, match="pip install lm-eval"):
        require_lm_eval()
    assert "lm-eval" in INSTALL_HINT


def test_write_rwku_tasks(tmp_path):
    inc, names = write_rwku_tasks(TARGET, tmp_path / "tasks")
    assert names == ["rwku_retain_mmlu", "rwku_truthful"]
    text = (inc / "rwku_retain_mmlu.yaml").read_text()
    # the task file may name the data by its resolved path (../shared can be a symbolic link)
    assert any(str(p) in text for p in (TARGET / "retain_mmlu.json", (TARGET / "retain_mmlu.json").resolve()))
    assert "{path}" not in text
    with pytest.raises(FileNotFoundError, match="none of"):
        write_rwku_tasks(tmp_path, tmp_path / "t2")
    with pytest.raises(FileNotFoundError, match="not found"):
        write_rwku_tasks(tmp_path / "nope", tmp_path / "t3")


def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config as dc
    import huggingface_hub.constants as hc

    monkeypatch.setattr(dc, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(dc, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)


def test_cli_runs_local_rwku_task_and_skips_unreachable_one(tiny_model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    _offline(monkeypatch)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "hub_only_probe.yaml").write_text(HUB_TASK)
    out = tmp_path / "run"
    rc = main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--rwku-dir", str(TARGET),
               "--include-path", str(probe), "--tasks", "rwku_retain_mmlu,hub_only_probe", "--limit", "3",
               "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "skipped task hub_only_probe" in cap.err
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["benchmark"] == "lm-eval"
    m = payload["metrics"]
    assert 0.0 <= m["rwku_retain_mmlu"] <= 1.0 and m["rwku_retain_mmlu/acc"] == m["rwku_retain_mmlu"]
    assert "hub_only_probe" not in m and "hub_only_probe" in payload["skipped"]
    assert payload["n_samples"]["rwku_retain_mmlu"]["effective"] == 3
    assert "hub_only_probe" in (out / "report.md").read_text()
    assert (out / "manifest.json").is_file()


def test_cli_unknown_task_is_an_error(tiny_model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    _offline(monkeypatch)
    rc = main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--rwku-dir", str(TARGET),
               "--tasks", "rwku_retain_mmlx", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown lm-eval task(s): rwku_retain_mmlx (did you mean rwku_retain_mmlu" in capsys.readouterr().err
