"""benchmarks/reproduce.py's step runner: archived results stand for a step across checkouts, and a
prerequisite (a training run) runs only when a step that needs it must run."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_under_test", ROOT / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _writer(path: Path, text: str) -> list[str]:
    """A command that appends ``text`` to ``path`` (so a test can count how often it ran)."""
    code = f"import pathlib; p = pathlib.Path({str(path)!r}); p.parent.mkdir(parents=True, exist_ok=True); " \
           f"p.write_text((p.read_text() if p.exists() else '') + {text!r})"
    return [sys.executable, "-c", code, str(path)]  # the runner shows argv[3:] as the step's command


def test_archived_step_is_restored_and_its_needs_do_not_run(tmp_path):
    rep = _reproduce()
    work, out = tmp_path / "work", tmp_path / "out"
    steps = rep.Steps(out)
    train_marker = work / "model" / "config.json"
    need_train = steps.step("train", _writer(train_marker, "m"), train_marker,
                            keep={train_marker: out / "runs" / "model_config.json"})
    metrics = work / "eval" / "metrics.json"
    assert steps.run("eval", _writer(metrics, "{}"), metrics, archive={metrics: out / "runs" / "eval.json"},
                     needs=(need_train,)) == "ran"
    assert train_marker.read_text() == "m" and (out / "runs" / "eval.json").read_text() == "{}"
    assert (out / "runs" / "model_config.json").is_file()  # `keep` copies the training log out
    recorded = json.loads((out / "steps.json").read_text())["seconds"]
    assert len(recorded) == 2

    # a new checkout: the work folder is gone, the committed archive is there
    import shutil

    shutil.rmtree(work)
    steps2 = rep.Steps(out)
    assert steps2.times == recorded  # timings of earlier sessions survive
    need_train2 = steps2.step("train", _writer(train_marker, "m"), train_marker)
    assert steps2.run("eval", _writer(metrics, "{}"), metrics, archive={metrics: out / "runs" / "eval.json"},
                      needs=(need_train2,)) == "restored"
    assert metrics.read_text() == "{}" and not train_marker.exists()  # no re-training for an archived result
    assert [s["how"] for s in steps2.log] == ["restored"]


def test_missing_archive_runs_needs_once(tmp_path):
    rep = _reproduce()
    work, out = tmp_path / "work", tmp_path / "out"
    steps = rep.Steps(out)
    marker = work / "model.txt"
    need = steps.step("train", _writer(marker, "x"), marker)
    for i in range(3):
        done = work / f"eval{i}.json"
        steps.run(f"eval {i}", _writer(done, "{}"), done, archive={done: out / f"e{i}.json"}, needs=(need,))
    assert marker.read_text() == "x"  # trained once for three evaluations
    assert [s["how"] for s in steps.log] == ["ran", "ran", "ran", "ran"]


def test_snap_part_configs_are_valid_runs_on_the_committed_data(tmp_path):
    """Every SNAP-part row becomes a valid ``obliviate run`` config on each committed target's data
    (the ablations change only what they ablate), and the tables average over the targets."""
    import argparse

    from obliviate.runconfig import run_config_from_dict

    mod = _reproduce()
    targets = mod.snap_targets("templates")
    assert [t["target"] for t in targets] == ["Stephen King", "Confucius", "Bruce Lee"]
    assert targets[0]["aliases"] == ["Richard Bachman"]
    for t in targets:  # every target has held-out forgetting questions to measure UA on
        assert (ROOT / t["data"] / "forget_eval.jsonl").read_text().strip()
    args = argparse.Namespace(snap_lr=1e-4, epochs=None, model="smollm2-135m-instruct", snap_seed=0,
                              general="g.json", max_general=10, snap_data="templates")
    runs = {row: run_config_from_dict(mod.snap_config(args, row, m, o, targets[:1], "single", tmp_path / "r", False,
                                                      *more))
            for row, m, o, *more in mod.SNAP_ROWS}
    for c in runs.values():
        c.validate()
    tcs = {row: c.train_config() for row, c in runs.items()}
    assert tcs["SNAP"].regularizer == "swd" and tcs["- Wasserstein Reg."].regularizer is None
    assert [t["stream"] for t in tcs["- HardRDA"].terms] == ["forget"]
    assert tcs["SNAP"].lr == 1e-4 and tcs["SNAP"].batch_size * tcs["SNAP"].grad_accum == 32
    assert tcs["Euclidean"].regularizer == "euclidean" and tcs["Prompting"].train is False
    dg = runs["SNAP + D_g"].retain_data
    assert dg.mode == "add" and dg.size == 50 and (ROOT / dg.source).is_file() and tcs["SNAP + D_g"] == tcs["SNAP"]
    m = lambda ua, ra: {"UA": ua, "UA_multihop": None, "RA": ra, "TA": 0.5, "Avg": (ua + ra + 0.5) / 3}
    mod.write_snap_tables(args, tmp_path, {"SNAP": {"Stephen King": m(0.9, 0.8), "Confucius": m(1.0, 0.6)}},
                          {}, targets[:2])
    md = (tmp_path / "snap_table1.md").read_text()
    assert "| SNAP | 2 | 95.00 ± 7.07 | – | 70.00 ± 14.14 | 50.00 ± 0.00 |" in md
