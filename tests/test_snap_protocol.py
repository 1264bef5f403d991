"""SNAP's evaluation protocol and its ablation configs (issue #15.8): the general set sampled at random,
Table 3's ablations and Figure 4 as ready configs, the paper's two data settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from obliviate.config import ConfigError, from_dict
from obliviate.io import atomic_write_jsonl
from obliviate.sequential import SnapRunConfig, run_snap_pipeline, sample_general
from obliviate.train import resolve_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REFUSAL = "I'm sorry, but I do not have access to information about that, so I cannot answer it."


def test_sample_general_is_seeded_random_not_the_first_n():
    pool = [f"instruction {i}" for i in range(1000)]
    a = sample_general(pool, 300, seed=0)
    assert len(a) == 300 == len(set(a)) and set(a) <= set(pool)
    assert a != pool[:300]  # SNAP samples 300 dolly-15k instructions at random
    assert a == sample_general(pool, 300, seed=0)  # reproducible
    assert a != sample_general(pool, 300, seed=1)
    assert [pool.index(x) for x in a] == sorted(pool.index(x) for x in a)  # source order kept
    assert sample_general(pool[:50], 300) == pool[:50]  # all when fewer
    assert sample_general(pool, None) == pool


def _target(folder: Path, name: str, related: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(folder / "forget_train.jsonl", [{"question": f"Where was {name} born?", "answer": REFUSAL},
                                                       {"question": f"Who is {name}?", "answer": REFUSAL}])
    atomic_write_jsonl(folder / "forget_eval.jsonl", [{"question": f"What is {name} famous for?", "answer": REFUSAL}])
    atomic_write_jsonl(folder / "retain_train.jsonl", [{"question": f"Who is {related}?", "answer": "A person."}])
    atomic_write_jsonl(folder / "retain_eval.jsonl", [{"question": f"What did {related} do?", "answer": "Things."}])
    return folder


@pytest.fixture()
def fake_stages(monkeypatch):
    """Record what the runner hands to evaluation and training, without a model."""
    import obliviate.runner as R

    seen = {"eval": [], "train": []}

    def fake_eval(spec, targets, general, ecfg, out_dir, system_prompt=None):
        seen["eval"].append({"spec": spec, "general": list(general), "system": system_prompt, "dir": out_dir.name})
        return {"TA": 1.0, "n_general": len(general), "detector": "rules",
                "per_target": {t.name: {"UA": 0.5, "UA_multihop": None, "RA": 1.0, "counts": {}} for t in targets}}

    def fake_train(cfg, streams, step_dir, **kw):
        seen["train"].append({"streams": streams, "cfg": cfg.train_config()})
        return step_dir / "train" / "model"

    monkeypatch.setattr(R, "_evaluate_targets_spec", fake_eval)
    monkeypatch.setattr(R, "stage_train", fake_train)
    return seen


def test_pipeline_draws_the_general_set_at_random(tmp_path, fake_stages):
    general = tmp_path / "general.jsonl"
    atomic_write_jsonl(general, [{"instruction": f"Task number {i}."} for i in range(40)])
    a = _target(tmp_path / "a", "Peter Parker", "Harry Osborn")
    cfg = {"method": "snap", "targets": [{"name": "Peter Parker", "data": str(a)}],
           "eval": {"general": str(general), "max_general": 10, "general_seed": 3}, "mode": "single"}
    run_snap_pipeline(cfg, tmp_path / "run")
    used = fake_stages["eval"][0]["general"]
    assert len(used) == 10 and used != [f"Task number {i}." for i in range(10)]
    assert used == sample_general([f"Task number {i}." for i in range(40)], 10, 3)
    assert all(e["general"] == used for e in fake_stages["eval"])  # the same D_g at every step


def test_prompting_runs_without_training_with_the_system_prompt(tmp_path, fake_stages):
    a = _target(tmp_path / "a", "Peter Parker", "Harry Osborn")
    res = run_snap_pipeline({"method": "prompting", "mode": "single",
                             "targets": [{"name": "Peter Parker", "aliases": ["Spider-Man"], "data": str(a)}],
                             "eval": {"evaluate_initial": False}}, tmp_path / "run")
    assert fake_stages["train"] == []
    (ev,) = fake_stages["eval"]
    assert ev["system"] == ("If the question asks about Peter Parker or Spider-Man, say that you do not know so "
                            "you cannot answer; otherwise, answer as best as you can.")  # SNAP §4.3, verbatim
    assert [s["label"] for s in res["steps"]] == ["prompting"] and res["metrics"]["UA"] == 0.5


def test_general_set_as_retaining_data(tmp_path, fake_stages):
    dolly = tmp_path / "dolly.jsonl"
    atomic_write_jsonl(dolly, [{"instruction": f"Dolly task {i}.", "response": f"Answer {i}."} for i in range(30)])
    a = _target(tmp_path / "a", "Peter Parker", "Harry Osborn")
    cfg = {"method": "snap", "mode": "single", "targets": [{"name": "Peter Parker", "data": str(a)}],
           "retain_data": {"source": str(dolly), "question_key": "instruction", "answer_key": "response"},
           "eval": {"general": str(dolly), "max_general": 20, "evaluate_initial": False}}
    run_snap_pipeline(cfg, tmp_path / "run")
    (tr,) = fake_stages["train"]
    retain = tr["streams"]["retain"]
    ta = set(fake_stages["eval"][0]["general"])
    assert len(retain) == 1 and retain[0].question.startswith("Dolly task")  # D_g replaces D_r, same size
    assert retain[0].question not in ta and retain[0].answer.startswith("Answer")
    with pytest.raises(ConfigError, match="retain_data.source"):
        from_dict(SnapRunConfig, {**cfg, "retain_data": {"source": str(tmp_path / "missing.jsonl")}})


def test_general_set_added_to_the_hard_retaining_data(tmp_path, fake_stages):
    """retain_data.mode: add keeps D_r and appends `size` rows of D_g (never a TA instruction)."""
    from obliviate.runconfig import run_config_from_dict

    dolly = tmp_path / "dolly.jsonl"
    atomic_write_jsonl(dolly, [{"instruction": f"Dolly task {i}.", "response": f"Answer {i}."} for i in range(30)])
    a = _target(tmp_path / "a", "Peter Parker", "Harry Osborn")
    cfg = {"method": "snap", "mode": "single", "targets": [{"name": "Peter Parker", "data": str(a)}],
           "retain_data": {"source": str(dolly), "question_key": "instruction", "answer_key": "response",
                           "mode": "add", "size": 5},
           "eval": {"general": str(dolly), "max_general": 20, "evaluate_initial": False}}
    run_snap_pipeline(cfg, tmp_path / "run")
    (tr,) = fake_stages["train"]
    retain = [x.question for x in tr["streams"]["retain"]]
    ta = set(fake_stages["eval"][0]["general"])
    assert len(retain) == 6 and "Harry Osborn" in retain[0]  # D_r first, then 5 rows of D_g
    assert all(q.startswith("Dolly task") and q not in ta for q in retain[1:])
    for bad, msg in (({"mode": "mix"}, "retain_data.mode"), ({"size": 0}, "retain_data.size")):
        with pytest.raises(ConfigError, match=msg):
            run_config_from_dict({"method": "snap", "out": str(tmp_path / "x"),
                                  "requests": [{"target": "Peter Parker", "data": str(a)}],
                                  "retain_data": {**cfg["retain_data"], **bad}}).validate()
    # the default mode leaves the written config (and so every stage fingerprint) as before
    from obliviate.config import to_dict
    plain = run_config_from_dict({"method": "snap", "out": str(tmp_path / "x"),
                                  "requests": [{"target": "Peter Parker", "data": str(a)}],
                                  "retain_data": {"source": str(dolly)}})
    assert set(to_dict(plain)["retain_data"]) == {"source", "question_key", "answer_key", "seed"}


def _load(name: str, tmp_path: Path):
    from obliviate.runconfig import run_config_from_dict

    raw = yaml.safe_load((CONFIGS / name).read_text())
    data = _target(tmp_path / "data", "Peter Parker", "Harry Osborn")
    for t in raw["requests"]:
        if "data" in t:
            assert t["data"] == "runs/snap_table3/data/peter_parker"  # the ablations reuse SNAP's data
            t["data"] = str(data)
    if "retain_data" in raw:
        dolly = tmp_path / "dolly.jsonl"
        atomic_write_jsonl(dolly, [{"instruction": "Name a colour.", "response": "Blue."}])
        raw["retain_data"]["source"] = str(dolly)
    return raw, run_config_from_dict(raw)


def test_table3_and_figure4_configs(tmp_path):
    raw, full = _load("snap_table3.yaml", tmp_path)
    assert full.augment.snap["paper_setting"] == "marvel" and full.mode == "single" and full.preset == "snap"
    t = resolve_train_config(full.method, full.train)
    assert t.regularizer == "swd" and {x["stream"] for x in t.terms} == {"forget", "retain"}

    _, c = _load("snap_ablation_no_wasserstein.yaml", tmp_path)
    t = resolve_train_config(c.method, c.train)
    t.validate()
    assert t.regularizer is None and {x["stream"] for x in t.terms} == {"forget", "retain"}

    _, c = _load("snap_ablation_no_hard_retain.yaml", tmp_path)
    t = resolve_train_config(c.method, c.train)
    t.validate()
    assert t.regularizer == "swd" and [x["stream"] for x in t.terms] == ["forget"]

    _, c = _load("snap_ablation_no_negative.yaml", tmp_path)
    t = resolve_train_config(c.method, c.train)
    assert c.method == "prompting" and t.train is False

    _, c = _load("snap_fig4_general_retain.yaml", tmp_path)
    assert c.retain_data is not None and c.retain_data.question_key == "instruction"
    assert c.retain_data.answer_key == "response" and c.eval.max_general == 300


def test_paper_settings_are_named():
    from obliviate.augment.snap import PAPER_SETTINGS, SnapAugmentConfig

    assert SnapAugmentConfig(target="X").k_related == 10  # SNAP §4.8 / Appendix C: k = 10
    m = SnapAugmentConfig(target="Peter Parker", paper_setting="marvel")
    assert (m.retain_mode, m.calls_per_category, m.train_size, m.threshold) == ("marvel", 10, 100, 0.75)
    r = SnapAugmentConfig(target="Bill Gates", paper_setting="real-person")
    assert (r.retain_mode, r.k_related) == ("related", 10)
    assert SnapAugmentConfig(target="X", paper_setting="marvel", calls_per_category=2).calls_per_category == 2
    assert set(PAPER_SETTINGS) == {"marvel", "real-person"}
    with pytest.raises(ConfigError, match="paper_setting"):
        SnapAugmentConfig(target="X", paper_setting="bill")


def test_cli_paper_setting(tmp_path):
    import argparse

    from obliviate.commands.augment_snap import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--target", "Peter Parker", "--out", str(tmp_path), "--paper-setting", "marvel"])
    assert config_from_args(a).retain_mode == "marvel"
    a = p.parse_args(["--target", "Bill Gates", "--out", str(tmp_path)])
    assert config_from_args(a).k_related == 10
