"""Batch and sequential SNAP unlearning on the tiny model (2 targets, few records, 2 train steps)."""

from __future__ import annotations

import json

import pytest

from obliviate.config import ConfigError
from obliviate.io import atomic_write_jsonl, read_jsonl
from obliviate.sequential import (SnapRunConfig, aggregate, load_target_data, run_snap_pipeline, unlearn_batch,
                                  unlearn_sequential)

REFUSAL = "I'm sorry, but I do not have access to information about that, so I cannot answer it."


def _write_target(folder, name, related):
    qs = [f"Where was {name} born?", f"What is {name} famous for?", f"Who are the friends of {name}?"]
    atomic_write_jsonl(folder / "forget_train.jsonl",
                       [{"question": q, "answer": REFUSAL, "category": "General"} for q in qs[:2]])
    atomic_write_jsonl(folder / "forget_eval.jsonl", [{"question": qs[2], "answer": REFUSAL, "category": "General"}])
    atomic_write_jsonl(folder / "forget_eval_multihop.jsonl",
                       [{"question": f"Did the person called {name} visit Rome?", "answer": REFUSAL,
                         "category": "Multi-Hop"}])
    atomic_write_jsonl(folder / "retain_train.jsonl",
                       [{"question": f"Who is {related}?", "answer": f"{related} is a well-known person."}])
    atomic_write_jsonl(folder / "retain_eval.jsonl",
                       [{"question": f"What did {related} do?", "answer": "Many things."}])
    return folder


@pytest.fixture()
def two_targets(tmp_path):
    a = _write_target((tmp_path / "a"), "Peter Parker", "Harry Osborn")
    b = _write_target((tmp_path / "b"), "Bruce Wayne", "Alfred Pennyworth")
    general = tmp_path / "general.jsonl"
    atomic_write_jsonl(general, [{"instruction": "Name a colour."}, {"instruction": "What is 2 + 2?"}])
    return a, b, general


def _cfg(tiny_model_dir, a, b, general, **kw):
    return {"model": str(tiny_model_dir), "method": "snap",
            "targets": [{"name": "Peter Parker", "data": str(a)}, {"name": "Bruce Wayne", "data": str(b)}],
            "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "gradient_checkpointing": False,
                      "progress": False, "regularizer_args": {"n_projections": 8, "mode": "fixed"}},
            "eval": {"general": str(general), "max_new_tokens": 6, "batch_size": 8}, **kw}


def test_sequential_two_targets(tiny_model_dir, two_targets, tmp_path):
    a, b, general = two_targets
    out = tmp_path / "seq"
    res = unlearn_sequential([{"name": "Peter Parker", "data": str(a)}, {"name": "Bruce Wayne", "data": str(b)}],
                             out, model=str(tiny_model_dir),
                             train=_cfg(tiny_model_dir, a, b, general)["train"],
                             eval=_cfg(tiny_model_dir, a, b, general)["eval"])
    steps = res["steps"]
    assert [s["label"] for s in steps] == ["initial", "Peter Parker", "Bruce Wayne"]
    assert [s["forgotten"] for s in steps] == [[], ["Peter Parker"], ["Peter Parker", "Bruce Wayne"]]
    for d in ("eval/base", "step_01_peter_parker/eval/trained", "step_02_bruce_wayne/eval/trained"):
        m = json.loads((out / d / "metrics.json").read_text())
        # every step evaluates every target (forgotten and pending) + TA once
        assert set(m["per_target"]) == {"Peter Parker", "Bruce Wayne"}
        assert m["n_general"] == 2 and 0.0 <= m["TA"] <= 1.0
        rows = read_jsonl(out / d / "responses.jsonl")
        assert len(rows) == 2 * 3 + 2  # forget + multihop + retain per target, general
    # step 2 started from step 1's model
    log2 = json.loads((out / "step_02_bruce_wayne" / "train" / "manifest.json").read_text())
    assert str(out / "step_01_peter_parker" / "train" / "model") in json.dumps(log2["inputs"])
    t1 = read_jsonl(out / "step_01_peter_parker" / "train" / "train_log.jsonl")
    assert any("reg_swd" in r for r in t1)  # the sliced Wasserstein term was in the loss
    # pending targets are tracked separately
    assert steps[1]["UA_pending"] == steps[1]["per_target"]["Bruce Wayne"]["UA"]
    assert steps[2]["UA_pending"] is None
    final = json.loads((out / "metrics.json").read_text())
    assert set(final) >= {"UA", "UA_multihop", "RA", "TA", "Avg", "per_target"}
    md = (out / "summary.md").read_text()
    assert "| 2 | Peter Parker, Bruce Wayne |" in md and "(original model)" in md
    assert (out / "manifest.json").is_file() and (out / "config.yaml").is_file()


def test_batch_two_targets(tiny_model_dir, two_targets, tmp_path):
    a, b, general = two_targets
    out = tmp_path / "batch"
    cfg = _cfg(tiny_model_dir, a, b, general, mode="batch")
    cfg["eval"]["evaluate_initial"] = False
    cfg["method"] = "euclidean"
    cfg["train"].pop("regularizer_args")
    res = run_snap_pipeline(cfg, out)
    assert [s["label"] for s in res["steps"]] == ["batch"]
    man = json.loads((out / "train" / "manifest.json").read_text())
    assert man["streams"] == {"forget": 4, "retain": 2}  # both targets' data in one run
    t = read_jsonl(out / "train" / "train_log.jsonl")
    assert any("reg_euclidean" in r for r in t)
    assert res["metrics"]["mode"] == "batch" and (out / "train" / "model").is_dir()


def test_aggregate_means_and_pending():
    m = {"TA": 0.5, "per_target": {"A": {"UA": 1.0, "UA_multihop": 0.5, "RA": 0.5},
                                   "B": {"UA": 0.5, "UA_multihop": None, "RA": 1.0},
                                   "C": {"UA": 0.0, "UA_multihop": 0.0, "RA": 1.0}}}
    row = aggregate(m, ["A", "B"], ["C"])
    assert row["UA"] == pytest.approx(0.75) and row["UA_std"] == pytest.approx(0.25)
    assert row["UA_multihop"] == pytest.approx(0.5)
    assert row["UA_pending"] == 0.0 and row["RA"] == pytest.approx(0.75)
    assert row["Avg"] == pytest.approx((0.75 + 0.5 + 0.75 + 0.5) / 4)


def test_config_errors(tiny_model_dir, two_targets, tmp_path):
    a, b, general = two_targets
    with pytest.raises(ConfigError, match="mode"):
        run_snap_pipeline(_cfg(tiny_model_dir, a, b, general, mode="parallel"), tmp_path / "x")
    with pytest.raises(ConfigError, match="single"):
        run_snap_pipeline(_cfg(tiny_model_dir, a, b, general, mode="single"), tmp_path / "x")
    with pytest.raises(ConfigError, match="targets"):
        run_snap_pipeline({"targets": []}, tmp_path / "x")
    with pytest.raises(ConfigError, match="not a folder"):
        run_snap_pipeline({"targets": [{"name": "X", "data": str(tmp_path / "nope")}]}, tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown field"):
        run_snap_pipeline({"targets": ["X"], "epochs": 3}, tmp_path / "x")
    with pytest.raises(ConfigError, match="method"):
        run_snap_pipeline({"targets": ["X"], "method": "forget-it"}, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="forget_train"):
        (tmp_path / "empty").mkdir()
        load_target_data("X", tmp_path / "empty")


def test_sequential_lora_merges_each_step_for_the_next(tiny_model_dir, two_targets, tmp_path):
    a, b, general = two_targets
    cfg = _cfg(tiny_model_dir, a, b, general, mode="sequential")
    cfg["train"]["lora"] = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}
    cfg["train"]["regularizer_args"] = {"n_projections": 4, "mode": "fresh"}
    cfg["eval"].update(evaluate_initial=False, general=None)
    res = run_snap_pipeline(cfg, tmp_path / "lora")
    s1, s2 = tmp_path / "lora" / "step_01_peter_parker", tmp_path / "lora" / "step_02_bruce_wayne"
    assert (s1 / "train" / "model" / "adapter_config.json").is_file()
    assert (s1 / "train" / "merged_model" / "config.json").is_file()  # the adapter merged: step 2's start
    man = json.loads((s2 / "train" / "manifest.json").read_text())
    assert str(s1 / "train" / "merged_model") in json.dumps(man["inputs"])
    assert res["metrics"]["final_model"] == str(s2 / "train" / "merged_model")
    assert res["metrics"]["TA"] is None  # no general set given
