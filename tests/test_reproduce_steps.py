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
    assert [s["how"] for s in steps2.log] == ["not needed", "restored"]  # the training run is listed, not run


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


def test_snap_modes_configs_and_figure5(tmp_path):
    """Batch and sequential unlearning (SNAP §4.7) of the committed targets are valid runs with one
    step over every target / one step per target, and Figure 5's table and plot come from their
    ``summary.json`` rows (sequential: mean ± std over the targets forgotten so far)."""
    import argparse

    from obliviate.runconfig import run_config_from_dict
    from obliviate.runner import plan_steps

    mod = _reproduce()
    targets = mod.snap_targets("templates")
    args = argparse.Namespace(snap_lr=1e-4, epochs=None, model="smollm2-135m-instruct", snap_seed=0,
                              general="g.json", max_general=10, snap_data="templates")
    names = [t["target"] for t in targets]
    for mode, n_steps in (("batch", 1), ("sequential", 3)):
        cfg = run_config_from_dict(mod.snap_config(args, "SNAP", "snap", {}, targets, mode, tmp_path / mode, False))
        cfg.validate()
        planned = plan_steps(cfg, tmp_path / mode, names)
        assert len(planned) == n_steps and planned[-1].forgotten == [0, 1, 2]
    row = lambda step, forgotten, ua, ua_sd, ra: {"step": step, "model": "trained", "forgotten": forgotten,
                                                  "UA": ua, "UA_std": ua_sd, "RA": ra, "RA_std": 0.0, "TA": 0.3,
                                                  "UA_pending": 0.0, "RA_pending": 1.0}
    seq = {"requests": names, "steps": [{"step": 0, "model": "base", "forgotten": []}, row(1, names[:1], 0.9, 0.0, 0.8),
                     row(2, names[:2], 0.95, 0.05, 0.7), row(3, names, 1.0, 0.0, 0.6)]}
    batch = {"steps": [row(1, names, 0.97, 0.02, 0.75)]}
    base = {"per_target": {n: {"UA": 0.0, "RA": 1.0} for n in names}, "TA": 0.94}
    mod.write_snap_figure5(tmp_path, {"sequential": seq, "batch": batch}, [base] * 3, names)
    md = (tmp_path / "snap_figure5.md").read_text()
    assert "| original | 0 | – | 0.0 | – | 100.0 | 94.0 |" in md
    assert f"| sequential | 2 | {names[0]}, {names[1]} | 95.0 ± 5.0 | – | 70.0 | 30.0 | 0.0 | 100.0 |" in md
    assert "| batch | 1 |" in md and "97.0 ± 2.0" in md
    assert (tmp_path / "snap_figure5.png").stat().st_size > 1000
    fig = json.loads((tmp_path / "snap_figure5.json").read_text())
    assert [p["step"] for p in fig["sequential"]] == [1, 2, 3] and fig["batch"]["UA"] == 0.97
    # a run of one mode keeps the other mode's committed rows (--snap-modes batch after sequential)
    (tmp_path / "runs" / "snap_sequential").mkdir(parents=True)
    (tmp_path / "runs" / "snap_sequential" / "summary.json").write_text(json.dumps(seq))
    both = mod.with_committed_modes(tmp_path, {"batch": batch}, names)
    assert both["batch"] is batch and both["sequential"] == seq
    assert mod.with_committed_modes(tmp_path, {"sequential": batch}, names)["sequential"] is batch
    assert "batch" not in mod.with_committed_modes(tmp_path, {}, names)
    assert "sequential" not in mod.with_committed_modes(tmp_path, {}, names[::-1])  # other targets: not mixed in


def test_write_record_keeps_only_the_parts_steps(tmp_path):
    rep = _reproduce()
    steps = rep.Steps(tmp_path / "out")
    steps.part = "tofu"
    assert steps.run("teach", _writer(tmp_path / "a.txt", "a"), tmp_path / "a.txt") == "ran"
    steps.part = "snap"
    assert steps.run("snap train", _writer(tmp_path / "b.txt", "b"), tmp_path / "b.txt") == "ran"
    total = sys.modules["reproduce_common"].write_record(steps, tmp_path, ("snap",), 12.34,
                                                         extra={"teach": {"lr": 1}})
    text = (tmp_path / "commands.sh").read_text()
    assert "# snap train:" in text and "# teach:" not in text and text.startswith("#!/usr/bin/env bash")
    record = json.loads((tmp_path / "timings.json").read_text())
    assert [s["step"] for s in record["steps"]] == ["snap train"]
    assert record["this_invocation_seconds"] == 12.3 and record["teach"] == {"lr": 1}
    assert record["sum_of_step_seconds"] == round(total, 1) == round(record["steps"][0]["seconds"], 1)


def test_a_deferred_step_that_is_not_needed_keeps_its_earlier_time_in_the_record(tmp_path):
    """A training step whose evaluation is restored from the archive never runs, yet commands.sh /
    timings.json still list it (at its place, before the evaluation) with its wall time from an
    earlier run; a deferred step that does run is listed once, as run."""
    rep = _reproduce()
    steps = rep.Steps(tmp_path / "out")
    steps.part = "rwku"
    train = steps.step("train A", _writer(tmp_path / "w" / "m.txt", "m"), tmp_path / "w" / "m.txt")
    assert steps.run("eval A", _writer(tmp_path / "w" / "e.txt", "e"), tmp_path / "w" / "e.txt",
                     archive={tmp_path / "w" / "e.txt": tmp_path / "arch" / "e.txt"}, needs=(train,)) == "ran"
    first = steps.times[rep._shown(_writer(tmp_path / "w" / "m.txt", "m"))]
    # a new checkout: the work folder is gone, the archive stands for the evaluation
    import shutil
    shutil.rmtree(tmp_path / "w")
    again = rep.Steps(tmp_path / "out")
    again.part = "rwku"
    train = again.step("train A", _writer(tmp_path / "w" / "m.txt", "m"), tmp_path / "w" / "m.txt")
    assert again.run("eval A", _writer(tmp_path / "w" / "e.txt", "e"), tmp_path / "w" / "e.txt",
                     archive={tmp_path / "w" / "e.txt": tmp_path / "arch" / "e.txt"}, needs=(train,)) == "restored"
    assert not (tmp_path / "w" / "m.txt").exists()
    sys.modules["reproduce_common"].write_record(again, tmp_path, ("rwku",))
    record = json.loads((tmp_path / "timings.json").read_text())
    assert [(s["step"], s["how"]) for s in record["steps"]] == [("train A", "not needed"), ("eval A", "restored")]
    assert record["steps"][0]["seconds"] == first and "this_invocation_seconds" not in record
    assert "# train A:" in (tmp_path / "commands.sh").read_text()
    assert [s["how"] for s in steps.log] == ["ran", "ran"] and len(steps.log) == 2


def test_a_partial_invocation_keeps_the_earlier_steps_in_the_record(tmp_path):
    """`--snap-rows Prompting` after a run of every row: commands.sh / timings.json still list the
    other rows (marked as from an earlier invocation), the new steps sit after the step they follow."""
    common = sys.modules.get("reproduce_common") or (_reproduce() and sys.modules["reproduce_common"])
    e = lambda name, sec: {"step": name, "command": f"obliviate run {name}.yaml", "seconds": sec, "skipped": False,
                           "how": "ran", "part": "snap"}
    earlier = [e("SNAP A", 10.0), e("Prompting A", 2.0), e("Euclidean A", 5.0), e("batch", 30.0)]
    now = [e("Prompting A", 2.5), e("Prompting B", 1.0), e("Euclidean A", 5.0), e("Euclidean B", 4.0)]
    merged = common.merge_step_logs(earlier, now)
    assert [s["step"] for s in merged] == ["SNAP A", "Prompting A", "Prompting B", "Euclidean A", "Euclidean B", "batch"]
    assert merged[0]["how"] == "earlier invocation" and merged[-1]["how"] == "earlier invocation"
    assert merged[1]["seconds"] == 2.5 and common.merge_step_logs([], now) == now
    assert [s["step"] for s in common.merge_step_logs(earlier[1:], [e("SNAP A", 1.0), e("Prompting A", 1.0)])][:2] \
        == ["SNAP A", "Prompting A"]
    # through write_record: the record already in the folder is the earlier one
    rep = _reproduce()
    (tmp_path / "timings.json").write_text(json.dumps({"steps": earlier + [{**e("tofu step", 3.0), "part": "tofu"}]}))
    steps = rep.Steps(tmp_path / "out")
    steps.part = "snap"
    assert steps.run("Prompting B", _writer(tmp_path / "b.txt", "b"), tmp_path / "b.txt") == "ran"
    total = sys.modules["reproduce_common"].write_record(steps, tmp_path, ("snap",))
    record = json.loads((tmp_path / "timings.json").read_text())
    assert [s["step"] for s in record["steps"]] == ["Prompting B", "SNAP A", "Prompting A", "Euclidean A", "batch"]
    assert round(total, 1) == record["sum_of_step_seconds"] == round(47.0 + record["steps"][0]["seconds"], 1)
    assert "# batch: 30.0 s" in (tmp_path / "commands.sh").read_text()
