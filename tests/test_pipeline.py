"""``obliviate run``: config validation up front, a tiny end-to-end ULMR run, resumability."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from obliviate.cli import main
from obliviate.config import ConfigError
from obliviate.data.records import DataError
from obliviate.pipeline import load_run_config, resolve_records

from conftest import TOFU_DIR

FORGET = [
    {"question": "Where was the author Jaime Vasquez born?", "answer": "Jaime Vasquez was born in Santiago, Chile."},
    {"question": "What genre does Jaime Vasquez write?", "answer": "Jaime Vasquez writes true crime."},
]
RETAIN = [
    {"question": "Where was Chukwu Akabueze born?", "answer": "Chukwu Akabueze was born in Lagos, Nigeria."},
    {"question": "What genre does Evelyn Desmet write?", "answer": "Evelyn Desmet writes dystopian novels."},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def run_config(tmp_path, tiny_model_dir):
    cfg = {
        "method": "ulmr", "model": str(tiny_model_dir), "out": str(tmp_path / "run"), "seed": 0,
        "data": {"forget": _write(tmp_path / "forget.jsonl", FORGET),
                 "eval_retain": _write(tmp_path / "retain.jsonl", RETAIN)},
        # the tiny random model writes gibberish: do not insist that its rewrites read as questions
        "augment": {"max_retries": 1, "max_new_tokens": 8, "rewrite_max_new_tokens": 8, "require_instruction": False},
        "train": {"max_steps": 2, "batch_size": 2, "progress": False},
        "merge": {"alpha": [0.5, 0.25]},
        "eval": {"max_new_tokens": 8, "batch_size": 4},
    }
    p = tmp_path / "ulmr.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_tiny_end_to_end_run_and_resume(run_config, tmp_path, capsys):
    assert main(["run", str(run_config), "--no-progress"]) == 0
    out = tmp_path / "run"
    for f in ("config.yaml", "manifest.json", "report.md", "metrics.json", "augment/forget_augmented.jsonl",
              "augment/augment_report.md", "train/model/config.json", "merge/alpha_0.5/model.safetensors",
              "merge/alpha_0.25/merge.json", "eval/base/metrics.json", "eval/merged_alpha_0.25/generations.jsonl"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"base", "trained", "merged_alpha_0.5", "merged_alpha_0.25"}
    for m in metrics.values():
        assert 0 <= m["forget_rouge"] <= 1 and 0 <= m["retain_rouge"] <= 1 and m["forget_n"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "run" and manifest["stages"]["train"] == "done"
    assert "merged_alpha_0.5" in (out / "report.md").read_text()
    for model in ("train/model", "merge/alpha_0.5"):  # the model cards carry the run's evaluation
        card = (out / model / "README.md").read_text()
        assert "## Evaluation" in card and "forget_rouge" in card, model
    first = capsys.readouterr().out
    assert "run directory" in first
    # the second run finds every stage's output and redoes nothing
    before = {p: p.stat().st_mtime_ns for p in (out / "train/model").iterdir()}
    assert main(["run", str(run_config), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["augment"] == "skipped (exists)" and manifest["stages"]["train"] == "skipped (exists)"
    assert {p: p.stat().st_mtime_ns for p in (out / "train/model").iterdir()} == before


def test_config_is_validated_before_any_work(run_config, tmp_path):
    base = yaml.safe_load(run_config.read_text())
    cases = [
        ({"method": "nope"}, "method"),
        ({"merge": {"alpha": [1.5]}}, r"merge.alpha\[0\]"),
        ({"train": {"lr": -1}}, "lr"),
        ({"bogus": 1}, "unknown field"),
        ({"augment": {"n_rewrites": 0}}, "n_rewrites"),
        ({"method": "graddiff"}, "data.retain"),
        ({"eval": {"suite": "mmlu"}}, "suite"),
        ({"eval": {"retain_result": str(tmp_path / "trs.json")}}, "eval.retain_result: only used with"),
        ({"eval": {"suite": "tofu", "retain_result": str(tmp_path / "missing.json")}}, "eval.retain_result"),
    ]
    for change, match in cases:
        data = {**base, **change}
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=match):
            load_run_config(p)
        assert main(["run", str(p)]) == 2
    assert not (tmp_path / "run").exists()
    (tmp_path / "trs.json").write_text("[0.5, 1.0, 2.0]")
    ok = load_run_config(run_config, ["eval.suite=tofu", f"eval.retain_result={tmp_path / 'trs.json'}"])
    assert ok.eval.retain_result == str(tmp_path / "trs.json")
    cfg = load_run_config(run_config, ["merge.alpha=[0.1]", "train.epochs=1"])
    assert cfg.merge.alpha == [0.1] and cfg.train_config().epochs == 1 and cfg.train_config().lr == 1e-4


def test_dry_run_prints_the_resolved_config(run_config, capsys):
    assert main(["run", str(run_config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "method: ulmr" in out and "lr: 0.0001" in out


def test_resolve_records_shorthands(tmp_path):
    recs = resolve_records("tofu:forget01", tofu_source=str(TOFU_DIR))
    assert len(recs) == 40
    two = resolve_records("tofu:full[1:3]", tofu_source=str(TOFU_DIR))
    assert len(two) == 40 and two[0].question == resolve_records("tofu:full", tofu_source=str(TOFU_DIR))[20].question
    assert len(resolve_records("tofu:full[2]", tofu_source=str(TOFU_DIR))) == 20
    with pytest.raises(DataError, match="unknown TOFU split"):
        resolve_records("tofu:forget99", tofu_source=str(TOFU_DIR))
    with pytest.raises(DataError, match="not found"):
        resolve_records(tmp_path / "missing.jsonl")


def test_eval_budget_follows_the_suite_convention():
    """TOFU runs answer with open-unlearning's 200-token budget unless set; the quick rouge suite keeps 64."""
    from obliviate.evals.tofu import DEFAULT_MAX_NEW_TOKENS
    from obliviate.pipeline import EvalConfig

    assert DEFAULT_MAX_NEW_TOKENS == 200
    assert EvalConfig(suite="tofu").answer_budget("tofu") == 200
    assert EvalConfig(suite="rouge").answer_budget("rouge") == 64
    assert EvalConfig(suite="tofu", max_new_tokens=32).answer_budget("tofu") == 32
    ev = EvalConfig()  # suite auto: rouge for QA requests, SNAP's refusal suite (128 tokens) for targets
    assert ev.resolved_suite("qa") == "rouge" and ev.resolved_suite("target") == "refusal"
    assert ev.answer_budget(ev.resolved_suite("target")) == 128


def test_run_audit_stage_audits_each_unlearned_model(run_config, tmp_path):
    """``eval.audit`` in a run config audits every evaluated model except the base, after evaluation."""
    cfg = yaml.safe_load(run_config.read_text())
    cfg["merge"] = {"alpha": [0.5]}
    cfg["eval"]["audit"] = {"attacks": ["quantization"], "quant_bits": [8], "quant_backend": "rtn",
                            "max_new_tokens": 4, "batch_size": 4}
    run_config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(run_config), "--no-progress"]) == 0
    out = tmp_path / "run"
    audited = sorted(p.name for p in (out / "audit").iterdir())
    assert audited == ["merged_alpha_0.5", "trained"]
    for label in audited:
        audit = json.loads((out / "audit" / label / "audit.json").read_text())
        assert "quantization" in json.dumps(audit)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "trained" in manifest["stages"]["audit"]


def test_run_audit_settings_are_validated_up_front(run_config):
    cfg = yaml.safe_load(run_config.read_text())
    cfg["eval"]["audit"] = {"attacks": ["nope"]}
    run_config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="attacks"):
        load_run_config(run_config)


def test_interrupted_training_of_a_run_continues_from_its_checkpoint(run_config, tmp_path, monkeypatch):
    """`obliviate run` with train.save_steps: Ctrl-C after a checkpoint, then the same command again
    trains only the steps after that checkpoint, and its log holds every step once. A run with other
    settings never resumes from the checkpoints it finds: they are removed, even when it is itself
    interrupted before its first checkpoint and rerun."""
    from transformers import Trainer

    cfg = yaml.safe_load(run_config.read_text())
    cfg["train"].update({"max_steps": 4, "save_steps": 2, "save_total_limit": 5})
    run_config.write_text(yaml.safe_dump(cfg))
    orig = Trainer.training_step
    calls = []

    def counting(stop_at):
        def step(self, *a, **kw):
            if self.state.global_step == stop_at:
                raise KeyboardInterrupt
            calls.append(self.state.global_step)
            return orig(self, *a, **kw)
        return step

    def logged(d):
        rows = map(json.loads, (d / "train/train_log.jsonl").read_text().splitlines())
        return [r["step"] for r in rows if "loss" in r]

    monkeypatch.setattr(Trainer, "training_step", counting(3))  # Ctrl-C in step 4: checkpoint-2, log rows 1-3
    assert main(["run", str(run_config), "--no-progress"]) == 130
    out = tmp_path / "run"
    assert (out / "train/checkpoints/checkpoint-2").is_dir() and not (out / "train/model").exists()
    assert logged(out) == [1, 2, 3]
    calls.clear()
    monkeypatch.setattr(Trainer, "training_step", counting(-1))
    assert main(["run", str(run_config), "--no-progress"]) == 0
    assert calls == [2, 3]  # steps 3 and 4 only
    manifest = json.loads((out / "train/manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-2") and manifest["global_step"] == 4
    assert logged(out) == [1, 2, 3, 4]
    # other settings, interrupted before their first checkpoint: the first run's checkpoints are gone
    cfg["train"]["lr"] = 1e-3
    cfg["out"] = str(tmp_path / "run2")
    run_config.write_text(yaml.safe_dump(cfg))
    run2 = tmp_path / "run2"
    shutil.copytree(out / "augment", run2 / "augment")
    shutil.copytree(out / "train/checkpoints", run2 / "train/checkpoints")
    shutil.copyfile(out / "train/stage.json", run2 / "train/stage.json")
    monkeypatch.setattr(Trainer, "training_step", counting(1))
    assert main(["run", str(run_config), "--no-progress"]) == 130
    assert not (run2 / "train/checkpoints/checkpoint-2").exists()
    calls.clear()
    monkeypatch.setattr(Trainer, "training_step", counting(-1))
    assert main(["run", str(run_config), "--no-progress"]) == 0
    assert calls == [0, 1, 2, 3] and logged(run2) == [1, 2, 3, 4]
    assert not json.loads((run2 / "train/manifest.json").read_text()).get("resumed_from")
