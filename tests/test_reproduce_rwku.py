"""benchmarks/reproduce_rwku.py (ULMR Table 4 on RWKU targets): every step is a valid ``obliviate``
command on the committed data, archived metrics stand for their steps, and the table averages the
``eval rwku`` metrics over the targets (no model is run here)."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rwku():
    path = ROOT / "benchmarks" / "reproduce_rwku.py"
    spec = importlib.util.spec_from_file_location("reproduce_rwku_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(mod, argv=()):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    mod.add_arguments(ap)
    return ap.parse_args(list(argv))


def _recording_steps(mod, out: Path):
    """A :class:`Steps` that records every step (prerequisites first) instead of running it."""

    class Recording(mod.Steps):
        def __init__(self, record):
            super().__init__(record)
            self.calls = []

        def run(self, name, cmd, done, archive=None, needs=(), keep=None):
            for need in needs:
                need()
            self.calls.append({"name": name, "cmd": cmd, "done": done, "archive": archive or {}, "keep": keep or {}})
            self._note(name, " ".join(cmd[3:]), None, "ran")
            return "ran"

    return Recording(out)


def _metrics(**values):
    """An ``eval rwku`` metrics dict with the key names ``obliviate.evals.rwku.evaluate_rwku`` writes."""
    base = {"forget_fb": 0.8, "forget_fb_n": 8, "forget_qa": 0.7, "forget_qa_n": 10, "forget_aa": 0.75,
            "forget_aa_n": 29, "forget_all": 0.75, "neighbor_fb": 0.9, "neighbor_fb_n": 30, "neighbor_qa": 0.8,
            "neighbor_qa_n": 30, "neighbor_all": 0.85, "mia_fm": 2.2, "mia_fm_n": 55, "mia_rm": 2.1, "mia_rm_n": 37,
            "utility_gen": 0.4, "utility_gen_n": 100}
    base.update(values)
    return {k: v for k, v in base.items() if v is not None}


def test_every_step_is_a_valid_obliviate_command_on_the_committed_data(tmp_path, monkeypatch):
    from obliviate.cli import build_parser
    from obliviate.commands import eval_rwku
    from obliviate.data.records import is_text_record
    from obliviate.data.sources import resolve_records
    from obliviate.merge import parse_alphas
    from obliviate.methods import build_terms, streams_needed
    from obliviate.train import resolve_train_config

    mod = _rwku()
    monkeypatch.chdir(ROOT)  # every command runs from the repository root
    monkeypatch.setattr("obliviate.models.resolve_model_path", lambda spec: (str(spec), None))
    args = _args(mod)
    work, out = tmp_path / "work", tmp_path / "out"
    steps = _recording_steps(mod, out)
    mod.rwku_part(args, steps, work, out)
    calls = steps.calls
    # per target: Before, GA and KL (train + eval), ULMR train, 3 merges, 4 evaluations
    assert len(calls) == 3 * 13 and len({c["name"] for c in calls}) == len(calls)
    parser = build_parser()
    seen = {"train": [], "eval": [], "merge": []}
    forget_eval = {json.loads(x)["question"] for d in (ROOT / "benchmarks" / "data").glob("snap_rwku_*_templates")
                   for f in d.glob("forget_eval*.jsonl") for x in f.read_text().splitlines() if x.strip()}
    for c in calls:
        assert c["cmd"][:3] == [sys.executable, "-m", "obliviate.cli"]
        a = parser.parse_args(c["cmd"][3:])
        seen[a.command].append(a)
        if a.command == "train":
            cfg = resolve_train_config(a.method, a.config, a.overrides)
            cfg.validate()
            assert cfg.batch_size * cfg.grad_accum == (16 if a.method == "ulmr" else 32)
            assert cfg.lr == 1e-4 and cfg.seed == 0
            needed = streams_needed(build_terms(cfg)[0])
            streams = {s: resolve_records(getattr(a, s), rwku_source=a.rwku_source) for s in needed}
            if a.method == "ulmr":
                assert a.forget.startswith("benchmarks/data/ulmr_rwku_")
                assert a.forget.endswith("_templates_none/forget_augmented.jsonl")
                assert streams["forget"] and not (set(r.question for r in streams["forget"]) & forget_eval)
            else:  # RWKU's forget corpus, never an evaluation split
                assert a.forget.startswith("rwku:") and a.forget.endswith(":passage")
                assert all(is_text_record(r) for r in streams["forget"])
            if "retain" in needed:
                assert a.method == "kl" and a.retain.endswith("_templates/retain_train.jsonl")
            assert c["done"] == Path(a.out) / "model" / "config.json" and Path(a.out).is_relative_to(work)
        elif a.command == "eval":
            assert eval_rwku._validate(a) == ["mmlu"]
            assert a.utility_max_samples == 100 and a.max_samples is None
            assert list(c["archive"]) == [Path(a.out) / "metrics.json"]
            assert next(iter(c["archive"].values())).is_relative_to(out / "rwku" / "runs")
        else:
            assert a.base == "smollm2-135m-instruct" and parse_alphas(a.alpha) in ([0.2], [0.4], [0.6])
    assert len(seen["train"]) == 9 and len(seen["eval"]) == 21 and len(seen["merge"]) == 9
    assert {a.target for a in seen["eval"]} == {"Stephen King", "Confucius", "Bruce Lee"}
    # the evaluated models are the trained / merged ones
    outs = {str(Path(a.out) / "model") for a in seen["train"]} | {a.out for a in seen["merge"]}
    assert {a.model for a in seen["eval"]} - outs == {"smollm2-135m-instruct"}
    # nothing measured yet: the table is there, every cell "–", and the commands are listed
    md = (out / "rwku" / "rwku_table4.md").read_text()
    assert "| DPO (not run, see below) | 0 |" in md and "No Retraining row" in md
    assert "| Base Model | Before | 85.73 |" in md
    assert (out / "rwku" / "commands.sh").read_text().count("\ntrain --method") == 9
    assert json.loads((out / "rwku" / "config.json").read_text())["targets"] == ["1_Stephen_King", "2_Confucius",
                                                                              "3_Bruce_Lee"]


def test_archived_metrics_restore_every_step_and_make_the_mean_std_table(tmp_path, monkeypatch):
    """A fresh checkout with the committed metrics: nothing is trained, every evaluation is restored,
    and each cell is the mean ± sample std (×100) over the targets that have the metric ("–" if none)."""
    from obliviate.evals.rwku import MIA_SCALE, TABLE4_COLUMNS

    mod = _rwku()
    table4_keys = {k for _, cols in TABLE4_COLUMNS for _, k in cols}
    assert {k for _, k in mod.COLUMNS} <= table4_keys and mod.SCALE == MIA_SCALE
    monkeypatch.chdir(ROOT)
    args = _args(mod, ["--rwku-targets", "1_Stephen_King,Confucius", "--rwku-methods", "ga", "--rwku-alpha", "0,0.4"])
    work, out = tmp_path / "work", tmp_path / "out"
    runs = out / "rwku" / "runs"
    fake = {
        ("stephen_king", "before"): _metrics(utility_gen=0.5),
        ("confucius", "before"): _metrics(utility_gen=0.3),
        ("stephen_king", "ga_s0"): _metrics(forget_fb=0.2, mia_fm=2.5),
        ("confucius", "ga_s0"): _metrics(forget_fb=0.4, mia_fm=None),  # a metric missing for one target
        ("stephen_king", "ulmr_templates_none_a0_s0"): _metrics(forget_all=0.1, utility_gen=None),
        ("confucius", "ulmr_templates_none_a0_s0"): _metrics(forget_all=0.3, utility_gen=None),  # missing everywhere
        ("stephen_king", "ulmr_templates_none_a0.4_s0"): _metrics(forget_all=0.5),
        ("confucius", "ulmr_templates_none_a0.4_s0"): _metrics(forget_all=0.5),
        ("stephen_king", "ga_s1"): _metrics(forget_fb=0.99),  # another seed: not in this table
    }
    for (slug, folder), m in fake.items():
        p = runs / slug / folder / "metrics.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"benchmark": "rwku", "model": "m", "target": slug, "metrics": m}))
    log = runs / "stephen_king" / "ga_s0" / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": i, "loss": -i * 0.5}) + "\n" for i in (1, 2, 3)))
    steps = mod.Steps(out)
    mod.rwku_part(args, steps, work, out)
    hows = [s["how"] for s in steps.log]  # the 8 evaluations restored; GA, ULMR and the merge only listed
    assert hows.count("restored") == 8 and set(hows) == {"restored", "not needed"}
    assert {s["step"].replace("Stephen King", "T").replace("Confucius", "T")[len("RWKU T "):]
            for s in steps.log if s["how"] == "not needed"} == {
        "GA train seed 0", "ULMR train seed 0", "ULMR merge α=0.4 seed 0"}
    assert not any(work.rglob("config.json"))
    assert (work / "rwku" / "confucius" / "eval" / "ga_s0" / "metrics.json").is_file()
    md = (out / "rwku" / "rwku_table4.md").read_text()
    mean = md.split("## Mean ± std over the targets")[1].split("## Every target")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in mean.splitlines()
            if line.startswith("| ") and not line.startswith(("| Method", "| ---"))}
    assert list(rows) == ["Before", "GA", "ULMR (α=0)", "ULMR (α=0.4)", "DPO (not run, see below)"]
    col = {c: i + 1 for i, (c, _) in enumerate(mod.COLUMNS)}  # index 0 is the target count
    assert rows["Before"][0] == "2" and rows["Before"][col["Gen (MMLU)"]].rstrip(" |") == "40.00 ± 14.14"
    assert rows["GA"][col["Forget FB"]] == "30.00 ± 14.14"
    assert rows["GA"][col["MIA FM"]] == "250.00"  # one target has it: its value, no ± std
    assert rows["GA"][col["MIA RM"]] == "210.00 ± 0.00"
    assert rows["ULMR (α=0)"][col["Forget All"]] == "20.00 ± 14.14"
    assert rows["ULMR (α=0)"][col["Gen (MMLU)"]].rstrip(" |") == "–"
    assert rows["ULMR (α=0.4)"][col["Forget All"]] == "50.00 ± 0.00"
    every = md.split("## Every target")[1].split("## The paper")[0]
    assert "| GA | Confucius | 40.00 |" in every and every.count("| GA | ") == 2
    assert "| stephen_king | ga_s0 | 0.0001 | 3 | -1.5 |" in md
    data = json.loads((out / "rwku" / "rwku_table4.json").read_text())
    assert data["targets"] == ["Stephen King", "Confucius"]
    assert data["mean"]["GA"]["forget_fb"] == pytest.approx({"mean": 0.3, "std": 0.1414213562, "n": 2})
    assert "utility_gen" not in data["mean"]["ULMR (α=0)"] and data["paper"]["ULMR"]["forget_all"] == 27.35
    assert data["rows"]["GA"]["Confucius"]["forget_fb"] == 0.4


def test_quick_options_and_rejected_methods(tmp_path):
    mod = _rwku()
    args = _args(mod)
    mod.quick(args)
    s = mod.settings(args)
    assert [t["target"] for t in s["targets"]] == ["Stephen King"] and s["methods"] == ["ga"]
    assert s["alphas"] == [0.0, 0.4] and s["epochs"] == 1 and s["eval_max_samples"] == 4
    s = mod.settings(_args(mod, ["--rwku-methods", "ga,dpo,npo"]))
    assert s["methods"] == ["ga", "npo"] and s["not_run"] == ["dpo"]
    with pytest.raises(SystemExit, match="unknown"):
        mod.settings(_args(mod, ["--rwku-methods", "ga,simnpo"]))
    with pytest.raises(SystemExit, match=r"\[0, 1\]"):
        mod.settings(_args(mod, ["--rwku-alpha", "0,1.5"]))
    with pytest.raises(SystemExit, match="no committed data"):
        mod.settings(_args(mod, ["--rwku-targets", "Taylor Swift"]))
    assert mod.row_of("npo_rt_s0", 0) == ((1, "04", 0.0), "NPO+RT") and mod.row_of("misc", 0) is None


def test_committed_ulmr_rwku_data_rewrites_only_the_snap_training_questions():
    """The ULMR pairs come from ``forget_train.jsonl`` of the SNAP set (provenance), not from its held-out
    questions nor from RWKU's probes."""
    mod = _rwku()
    rwku = ROOT.parent / "shared" / "data" / "rwku"
    for t in mod.rwku_targets():
        folder = ROOT / t["ulmr_data"]
        prov = json.loads((folder / "provenance.json").read_text())
        src = prov["argv"][prov["argv"].index("--forget") + 1]
        assert src == f"benchmarks/data/snap_rwku_{t['suffix']}_templates/forget_train.jsonl"
        train_q = {json.loads(x)["question"] for x in (ROOT / src).read_text().splitlines() if x.strip()}
        rows = [json.loads(x) for x in (folder / "forget_augmented.jsonl").read_text().splitlines() if x.strip()]
        assert rows and {r["original_question"] for r in rows} <= train_q
        probes = {p["query"] for s in ("forget_level1", "forget_level2", "forget_level3")
                  for p in json.loads((rwku / t["folder"] / f"{s}.json").read_text())}
        assert not ({r["question"] for r in rows} | train_q) & probes


def test_refusal_shares_count_the_detectors_refusals_per_split_and_go_into_the_table(tmp_path):
    """The Refusals section: per row and target, the share of forget / neighbor probe answers the
    detector flags (MIA rows and another seed's runs are left out); the table shows mean ± std."""
    mod = _rwku()
    runs = tmp_path / "runs"

    def samples(slug, run, forget, neighbor):
        d = runs / slug / run
        d.mkdir(parents=True)
        rows = [{"set": "forget_level1", "generation": g} for g in forget] + \
               [{"set": "neighbor_level2", "generation": g} for g in neighbor] + [{"set": "mia_forget", "nll": 3.0}]
        (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    samples("stephen_king", "before", ["Carrie", "Maine"], ["a", "b"])
    samples("stephen_king", "ulmr_templates_none_a0_s0", ["NO", "NO", "x", "NO"], ["NO", "y"])
    samples("confucius", "ulmr_templates_none_a0_s0", ["NO", "NO"], ["z", "z", "z", "z"])
    samples("confucius", "ulmr_templates_none_a0_s1", ["NO"], ["NO"])  # another seed: not counted

    class Detector:
        def predict(self, texts):
            return [t == "NO" for t in texts]

    shares = mod.refusal_shares(runs, ["stephen_king", "confucius"], 0, Detector())
    assert list(shares) == ["Before", "ULMR (α=0)"]
    assert shares["Before"]["stephen_king"] == {"forget": 0.0, "forget_n": 2, "neighbor": 0.0, "neighbor_n": 2}
    assert shares["ULMR (α=0)"]["stephen_king"] == {"forget": 0.75, "forget_n": 4, "neighbor": 0.5, "neighbor_n": 2}
    assert shares["ULMR (α=0)"]["confucius"]["forget"] == 1.0 and shares["ULMR (α=0)"]["confucius"]["neighbor"] == 0
    assert mod.refusal_shares(tmp_path / "none", ["stephen_king"], 0) == {}  # nothing to score: no detector loaded
    named = {row: {{"stephen_king": "Stephen King", "confucius": "Confucius"}[k]: v for k, v in per.items()}
             for row, per in shares.items()}
    s = {"data": "templates_none", "seed": 0, "model": "m", "methods": [], "lr": {"ulmr": 1e-4}, "epochs": None,
         "eval_max_samples": None, "utility_max_samples": 100}
    mod.write_rwku_tables(tmp_path, {}, ["Stephen King", "Confucius"], s, [], named)
    md = (tmp_path / "rwku_table4.md").read_text()
    assert "## Refusals" in md and "| ULMR (α=0) | 87.50 ± 17.68 | 25.00 ± 35.36 | 75 / 50 | 100 / 0 |" in md
    assert "| Before | 0.00 | 0.00 | 0 / 0 | – |" in md
    assert json.loads((tmp_path / "rwku_table4.json").read_text())["refusals"]["ULMR (α=0)"]["Confucius"]["forget"] == 1
