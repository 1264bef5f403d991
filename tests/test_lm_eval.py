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


def test_snap_table2_preset_expands_to_nine_zero_shot_tasks():
    from obliviate.evals.lm_eval_bridge import PRESET_FEWSHOT, TASK_PRESETS, expand_tasks, preset_summary

    tasks, presets = expand_tasks(["snap-table2", "arc_easy", "mmlu"])
    assert presets == ["snap-table2"]
    assert tasks == ["hellaswag", "lambada_openai", "winogrande", "piqa", "arc_challenge", "mmlu", "openbookqa",
                     "boolq", "mathqa", "arc_easy"]  # mmlu once
    assert PRESET_FEWSHOT["snap-table2"] == 0 and len(TASK_PRESETS["snap-table2"]) == 9
    # SNAP Table 2, Mistral-7b-instruct vs "w/ SNAP": Avg. 62.46 -> 59.83 (-4.2%)
    orig = dict(zip(TASK_PRESETS["snap-table2"], [.6609, .7116, .7395, .8025, .5427, .5900, .3540, .8532, .3665]))
    snap = dict(zip(TASK_PRESETS["snap-table2"], [.6221, .6753, .6972, .8034, .5230, .5594, .3473, .7901, .3671]))
    s = preset_summary(snap, "snap-table2", orig)
    # (the paper averaged unrounded scores: its 62.46 / 59.83 are within 0.02 of the rounded cells' mean)
    assert 100 * preset_summary(orig, "snap-table2")["snap_table2_avg"] == pytest.approx(62.46, abs=0.02)
    assert 100 * s["snap_table2_avg"] == pytest.approx(59.83, abs=0.02) and round(100 * s["snap_table2_drop"], 1) == -4.2
    assert preset_summary({"hellaswag": 0.5}, "snap-table2", orig) == {"snap_table2_avg": None,
                                                                        "snap_table2_drop": None}


def test_cli_snap_table2_preset_runs_zero_shot_and_reports_the_drop(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import obliviate.evals.lm_eval_bridge as B

    seen = {}

    def fake_run(model, tok, tasks, *, num_fewshot=None, **kw):
        seen.update(tasks=list(tasks), num_fewshot=num_fewshot)
        return {"metrics": {t: 0.5 for t in tasks}, "tasks": {t: {"acc,none": 0.5} for t in tasks}, "skipped": {},
                "n_samples": {}, "offline": True, "lm_eval_version": "x"}

    monkeypatch.setattr(B, "require_lm_eval", lambda: None)
    monkeypatch.setattr(B, "run_lm_eval", fake_run)
    ref = tmp_path / "orig"
    ref.mkdir()
    (ref / "metrics.json").write_text(json.dumps({"benchmark": "lm-eval", "metrics": {"snap_table2_avg": 0.625}}))
    out = tmp_path / "run"
    assert main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--tasks", "snap-table2", "--reference", str(ref),
                 "--out", str(out)]) == 0
    assert seen["num_fewshot"] == 0 and len(seen["tasks"]) == 9
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["snap_table2_avg"] == pytest.approx(0.5) and m["snap_table2_drop"] == pytest.approx(-0.2)
    assert "-20.0% vs the reference" in capsys.readouterr().out
    # --num-fewshot overrides the preset's 0
    assert main(["eval", "lm-eval", "--model", str(tiny_model_dir), "--tasks", "snap-table2", "--num-fewshot", "5",
                 "--out", str(tmp_path / "run5")]) == 0
    assert seen["num_fewshot"] == 5
