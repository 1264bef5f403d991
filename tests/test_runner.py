"""The one runner (issue #14.4): every method in single / batch / sequential mode over QA requests
and targets, presets, stage fingerprints across steps, old configs converted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from obliviate.cli import main
from obliviate.config import ConfigError, to_dict
from obliviate.io import atomic_write_jsonl, read_jsonl
from obliviate.runconfig import (convert_legacy_config, is_legacy_config, load_run_config, run_config_from_dict)
from obliviate.runner import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REFUSAL = "I'm sorry, but I do not have access to information about that, so I cannot answer it."


def _qa(path: Path, who: str, n: int = 2) -> str:
    rows = [{"question": f"Where was {who} born? ({i})", "answer": f"{who} was born in Oslo."} for i in range(n)]
    atomic_write_jsonl(path, rows)
    return str(path)


@pytest.fixture()
def two_qa(tmp_path):
    return ({"name": "Jaime", "forget": _qa(tmp_path / "f1.jsonl", "Jaime Vasquez"),
             "retain": _qa(tmp_path / "r1.jsonl", "Evelyn Desmet")},
            {"name": "Basil", "forget": _qa(tmp_path / "f2.jsonl", "Basil Mahfouz"),
             "retain": _qa(tmp_path / "r2.jsonl", "Chukwu Akabueze")})


def _base(tiny_model_dir, out, **kw):
    return {"model": str(tiny_model_dir), "out": str(out), "seed": 0,
            "train": {"max_steps": 1, "batch_size": 2, "progress": False, "gradient_checkpointing": False},
            "eval": {"max_new_tokens": 4, "batch_size": 4}, **kw}


def test_batch_mode_trains_every_qa_request_in_one_run(tiny_model_dir, two_qa, tmp_path):
    out = tmp_path / "batch"
    cfg = run_config_from_dict(_base(tiny_model_dir, out, method="graddiff", mode="batch", requests=list(two_qa)))
    res = run(cfg, progress=False)
    man = json.loads((out / "train" / "manifest.json").read_text())
    assert man["streams"] == {"forget": 4, "retain": 4}  # both requests' data in one training run
    m = json.loads((out / "eval" / "trained" / "metrics.json").read_text())
    assert "jaime.forget_rouge" in m and "basil.retain_rouge" in m  # every request's sets evaluated
    trained = res["results"]["trained"]
    assert set(trained["per_request"]) == {"Jaime", "Basil"}
    assert trained["forget_rouge"] == pytest.approx(
        (trained["per_request"]["Jaime"]["forget_rouge"] + trained["per_request"]["Basil"]["forget_rouge"]) / 2)
    assert trained["forget_rouge_pending"] is None  # batch: nothing pending
    assert set(json.loads((out / "metrics.json").read_text())) == {"base", "trained"}
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["step"], s["model"]) for s in summary["steps"]] == [(0, "base"), (1, "trained")]


def test_sequential_ulmr_chains_merged_models_and_resumes(tiny_model_dir, two_qa, tmp_path):
    out = tmp_path / "seq"
    raw = _base(tiny_model_dir, out, preset="ulmr", mode="sequential", requests=[dict(r) for r in two_qa],
                generator="templates", merge={"alpha": [0.5]})
    p = tmp_path / "seq.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg = load_run_config(p)
    assert cfg.method == "ulmr" and cfg.merge_enabled and cfg.augment_enabled  # the preset's defaults
    res = run(cfg, progress=False)
    s1, s2 = out / "step_01_jaime", out / "step_02_basil"
    for f in ("augment/jaime/forget_augmented.jsonl", "augment/basil/forget_augmented.jsonl", "eval/base/metrics.json",
              "step_01_jaime/train/model/config.json", "step_01_jaime/merge/alpha_0.5/merge.json",
              "step_02_basil/merge/alpha_0.5/merge.json", "step_02_basil/eval/merged_alpha_0.5/metrics.json"):
        assert (out / f).is_file(), f
    # step 2 trains from step 1's merged model and averages with it: θa = α·θ_1 + (1 − α)·θ'_2
    rec = json.loads((s2 / "train" / "stage.json").read_text())
    assert rec["fields"]["model"] == str(s1 / "merge" / "alpha_0.5")
    assert json.loads((s2 / "merge" / "alpha_0.5.stage.json").read_text())["fields"]["model"] == \
        str(s1 / "merge" / "alpha_0.5")
    # step 1 is evaluated on both requests: the forgotten one and the pending one
    rows = [r for r in res["steps"] if r["model"] == "merged_alpha_0.5"]
    assert [r["forgotten"] for r in rows] == [["Jaime"], ["Jaime", "Basil"]]
    assert rows[0]["forget_rouge"] == rows[0]["per_request"]["Jaime"]["forget_rouge"]
    assert rows[0]["forget_rouge_pending"] == rows[0]["per_request"]["Basil"]["forget_rouge"]
    assert rows[1]["forget_rouge_pending"] is None
    assert "| 2 | merged_alpha_0.5 | Jaime, Basil |" in (out / "summary.md").read_text()
    # rerun: every stage of every step reused
    weights = s2 / "train" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    res2 = run(load_run_config(p), progress=False)
    assert res2["stages"]["train"] == "skipped (exists)" and weights.stat().st_mtime_ns == before
    # a changed training setting is refused before anything is written, naming both steps' stages
    with pytest.raises(ConfigError, match=r"train.lr: .* → 0.003") as e:
        run(load_run_config(p, ["train.lr=0.003"]), progress=False)
    assert str(e.value).count("'train'") == 2 and weights.stat().st_mtime_ns == before


def test_any_method_runs_on_targets_in_batch_mode(tiny_model_dir, tmp_path):
    """GA (no retain term) on two targets' SNAP data: the target path is not SNAP-only."""
    folders = []
    for name in ("Peter Parker", "Bruce Wayne"):
        d = tmp_path / name.split()[0].lower()
        atomic_write_jsonl(d / "forget_train.jsonl", [{"question": f"Who is {name}?", "answer": REFUSAL}])
        atomic_write_jsonl(d / "forget_eval.jsonl", [{"question": f"Where does {name} live?", "answer": REFUSAL}])
        folders.append({"target": name, "data": str(d)})
    out = tmp_path / "ga"
    res = run(run_config_from_dict(_base(tiny_model_dir, out, method="ga", mode="batch", requests=folders)),
              progress=False)
    assert json.loads((out / "train" / "manifest.json").read_text())["streams"] == {"forget": 2}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["benchmark"] == "snap" and set(metrics["per_target"]) == {"Peter Parker", "Bruce Wayne"}
    assert [s["label"] for s in res["steps"]] == ["initial", "batch"]
    assert len(read_jsonl(out / "eval" / "trained" / "responses.jsonl")) == 2


def test_config_errors_name_the_field(tiny_model_dir, two_qa, tmp_path):
    base = _base(tiny_model_dir, tmp_path / "x", method="ga", requests=list(two_qa))
    cases = [
        ({"mode": "single"}, "single' takes exactly one request"),
        ({"mode": "parallel"}, "mode"),
        ({"preset": "tofu"}, "preset"),
        ({"requests": []}, "at least one forget request"),
        ({"requests": [two_qa[0], {"target": "Peter Parker"}], "mode": "batch"}, "mix of QA sets"),
        ({"requests": [two_qa[0], dict(two_qa[0])], "mode": "batch"}, "duplicate names"),
        ({"requests": [{"forget": "a.jsonl", "target": "X"}]}, "either forget"),
        ({"requests": [{"target": "X", "retain": "r.jsonl"}]}, "only for a QA request"),
        ({"method": "ulmr", "mode": "sequential", "merge": {"alpha": [0.2, 0.4]}}, "one α"),
        ({"method": "graddiff", "mode": "batch", "requests": [{"forget": two_qa[0]["forget"]}]}, r"requests\[0\].retain"),
        ({"mode": "batch", "eval": {"suite": "refusal"}}, "'refusal' evaluates target requests"),
        ({"mode": "batch", "requests": [{"target": "X"}], "eval": {"suite": "tofu"}}, "targets use 'refusal'"),
    ]
    for change, match in cases:
        with pytest.raises(ConfigError, match=match):
            run_config_from_dict({**base, **change})
    assert not (tmp_path / "x").exists()


OLD_ULMR = {"method": "ulmr", "model": "smollm2-135m-instruct", "out": "runs/u",
            "data": {"forget": "tofu:forget01", "eval_retain": "tofu:retain99", "target": "Basil",
                     "tofu_source": "../shared/data/tofu"},
            "augment": {"n_rewrites": 3}, "merge": {"alpha": [0.3]}, "eval": {"max_samples": 5}}
OLD_SNAP = {"method": "euclidean", "targets": ["Stephen King", {"name": "Confucius", "related": ["Mencius"]}],
            "augment": {"train_size": 20}, "eval": {"evaluate_initial": False, "max_general": 10}, "out": "runs/s"}


def test_old_configs_are_converted_and_convert_prints_the_new_schema(tmp_path, capsys):
    assert is_legacy_config(OLD_ULMR) and is_legacy_config(OLD_SNAP)
    new = convert_legacy_config(OLD_ULMR)
    assert new["requests"] == [{"forget": "tofu:forget01", "eval_retain": "tofu:retain99", "name": "Basil"}]
    assert new["mode"] == "single" and new["augment"] == {"ulmr": {"n_rewrites": 3}}
    assert new["data"] == {"tofu_source": "../shared/data/tofu"} and new["eval"]["suite"] == "rouge"
    cfg = run_config_from_dict(OLD_ULMR)
    assert cfg.augment.ulmr.n_rewrites == 3 and cfg.requests[0].who == "Basil" and cfg.merge.alpha == [0.3]
    snap = run_config_from_dict(OLD_SNAP)
    assert snap.mode == "sequential"  # the old schema's default mode
    assert [r.target for r in snap.requests] == ["Stephen King", "Confucius"]
    assert snap.requests[1].related == ["Mencius"] and snap.augment.snap == {"train_size": 20}
    assert snap.eval.models == ["trained", "merged"]  # evaluate_initial: false
    # `obliviate run --convert` prints the new form, which loads to the same run
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump(OLD_SNAP))
    assert main(["run", str(p), "--convert"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "targets" not in printed and not is_legacy_config(printed)
    assert to_dict(run_config_from_dict(printed)) == to_dict(snap)
    # an unknown old field is still named
    with pytest.raises(ConfigError, match="unknown field"):
        run_config_from_dict({**OLD_ULMR, "epochs": 3})


def test_every_shipped_config_is_in_the_one_schema():
    for p in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(p.read_text())
        assert not is_legacy_config(raw), p.name
        for r in raw["requests"]:  # the ablations read runs/snap_table3's data, not present here
            r.pop("data", None)
        if "retain_data" in raw:
            raw["retain_data"]["source"] = str(p)
        raw.setdefault("out", "runs/x")  # `obliviate run` names one when the config has none
        cfg = run_config_from_dict(raw)
        assert cfg.preset in ("ulmr", "snap", None) and cfg.requests, p.name
