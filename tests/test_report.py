"""``obliviate report``: ULMR Table 3 / 4, SNAP Table 1 and lm-eval tables, CSV, JSON and PNG plots."""

from __future__ import annotations

import csv
import json

import pytest

from obliviate.cli import main
from obliviate.report import LAYOUTS, build_report, build_table, format_value, read_run

TOFU_KEYS = [k for _, _, k, _ in LAYOUTS["tofu"]["columns"]]
RWKU_KEYS = [k if isinstance(k, str) else k[0] for _, _, k, _ in LAYOUTS["rwku"]["columns"]]


def _run(path, benchmark, metrics, manifest=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps({"benchmark": benchmark, "model": "m", "metrics": metrics}))
    if manifest is not None:
        (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _tofu_metrics(scale: float):
    m = {k: round(0.5 * scale, 4) for k in TOFU_KEYS}
    m["forget_quality"] = 0.0123 * scale
    m["forget_truth_ratios"] = [0.1, 0.2]  # a list: never a cell
    return m


@pytest.fixture()
def runs(tmp_path):
    """Three TOFU runs of an α sweep (one missing forget quality), two RWKU, two SNAP, one lm-eval."""
    d = tmp_path / "runs"
    out = {}
    for i, a in enumerate([0.2, 0.5, 0.8]):
        m = _tofu_metrics(1 - a / 2)
        if a == 0.5:
            del m["forget_quality"]
        out[f"ulmr{a}"] = _run(d / f"ulmr_a{a}", "tofu", m,
                               {"command": "merge", "config": {"method": "ulmr", "merge": {"alpha": a}}})
    out["ga"] = _run(d / "ga", "tofu", {"forget_rouge": 0.3875, "retain_rouge": 0.5107, "model_utility": 0.4},
                     {"command": "eval tofu", "config": {"model": "x"}, "method": "ga"})
    rw = {k: 0.4 for k in RWKU_KEYS}
    rw.update(mia_fm=2.4877, mia_rm=2.1968, utility_flu=5.1)  # metrics.json stores the mean loss itself
    out["rwku_base"] = _run(d / "rwku_base", "rwku", rw)
    out["rwku_partial"] = _run(d / "rwku_partial", "rwku", {"forget_fb": 0.3816, "mia_fm": 2.5})
    out["snap"] = _run(d / "snap", "refusal", {"UA": 0.94, "UA_multihop": 0.9333, "RA": 0.96, "TA": 0.8022,
                                               "Avg": 0.9089})
    out["prompting"] = _run(d / "prompting", "refusal", {"UA": 0.2233, "UA_multihop": 0.42, "RA": None, "TA": None})
    out["lm"] = _run(d / "lm", "lm-eval", {"rwku_retain_mmlu": 0.25, "rwku_retain_mmlu/acc": 0.25,
                                            "arc_easy": 0.5})
    return out


def _png_ok(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
        assert im.size[0] > 100 and im.size[1] > 100


def test_read_run_names_method_and_alpha(runs):
    r = read_run(runs["ulmr0.2"])
    assert r.alpha == 0.2 and r.method == "ulmr" and r.name == "ulmr (α=0.2)"
    assert read_run(runs["ga"]).name == "ga"
    assert read_run(runs["snap"]).name == "snap"  # no manifest: the folder name
    assert read_run(runs["snap"], "SNAP (ours)").name == "SNAP (ours)"


def test_tofu_table_with_missing_values(runs):
    rs = [read_run(runs[k]) for k in ("ulmr0.2", "ulmr0.5", "ga")]
    t = build_table("tofu", rs)
    assert t["columns"][:4] == ["Method", "Forget Set R", "Forget Set P", "Forget Set TR"]
    assert t["columns"][-2:] == ["Forget Quality", "Model Utility"]
    assert len(t["columns"]) == 1 + 14
    row_a02, row_a05, row_ga = t["rows"]
    assert row_a02[1] == "45.00" and row_a02[-2] == "0.0111"  # ×100; p-value to 3 significant digits
    assert row_a05[-2] == "–"  # forget quality missing
    assert row_ga[1] == "38.75" and row_ga[2] == "–" and row_ga[-1] == "40.00"


def test_rwku_and_snap_tables(runs):
    t = build_table("rwku", [read_run(runs["rwku_base"]), read_run(runs["rwku_partial"])])
    assert t["columns"][1:5] == ["Forget Set FB", "Forget Set QA", "Forget Set AA", "Forget Set All"]
    assert t["columns"][-5:] == ["Utility Set Gen", "Utility Set Rea", "Utility Set Tru", "Utility Set Fac",
                                 "Utility Set Flu"]
    base, partial = t["rows"]
    # ULMR Table 4 prints the MIA loss ×100 (Base Model FM 222.62 for a mean token NLL of 2.2262)
    assert base[t["columns"].index("MIA Set FM")] == "248.77"
    assert base[t["columns"].index("MIA Set RM")] == "219.68"
    assert base[t["columns"].index("Utility Set Flu")] == "5.10"
    assert partial[1] == "38.16" and partial[2] == "–"
    s = build_table("snap", [read_run(runs["snap"]), read_run(runs["prompting"])])
    assert s["columns"] == ["Method", "UA", "UA♣", "RA", "TA", "Avg."]
    assert s["rows"][0][1:] == ["94.00", "93.33", "96.00", "80.22", "90.89"]
    assert s["rows"][1][1:] == ["22.33", "42.00", "–", "–", "–"]
    with pytest.raises(ValueError, match="allowed"):
        build_table("nope", [])


def test_build_report_auto_writes_everything(runs, tmp_path):
    out = tmp_path / "report"
    dirs = list(runs.values())
    rep = build_report(dirs, out)
    assert set(rep["tables"]) == {"tofu", "rwku", "snap", "lm-eval"}
    for stem in ("tofu", "rwku", "snap", "lm_eval"):
        assert (out / f"{stem}.md").is_file() and (out / f"{stem}.csv").is_file()
        _png_ok(out / f"{stem}_bars.png")
    _png_ok(out / "tofu_alpha.png")  # the three α runs
    assert not (out / "snap_alpha.png").exists()  # no α there
    md = (out / "report.md").read_text()
    assert "TOFU (ULMR Table 3)" in md and "SNAP (Table 1)" in md and "tofu_alpha.png" in md
    # lm-eval: one column per task, "task/metric" details left out
    lm = rep["tables"]["lm-eval"]
    assert lm["columns"] == ["Method", "rwku_retain_mmlu", "arc_easy"]
    # CSV keeps raw numbers and empty cells
    rows = list(csv.reader((out / "tofu.csv").open()))
    assert rows[0][:3] == ["Method", "alpha", "Forget Set R"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["ulmr (α=0.5)"][1] == "0.5"
    assert by_name["ga"][rows[0].index("Forget Set P")] == ""
    assert float(by_name["ga"][2]) == pytest.approx(0.3875)
    # report.json mirrors it
    j = json.loads((out / "report.json").read_text())
    assert len(j["runs"]) == len(dirs) and "tofu_alpha.png" in j["files"]


def test_report_cli_layout_and_names(runs, tmp_path, capsys):
    out = tmp_path / "r"
    rc = main(["report", str(runs["snap"]), str(runs["prompting"]), "--out", str(out), "--layout", "snap",
               "--names", "SNAP,Prompting"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| SNAP | 94.00 |" in text and "| Prompting | 22.33 |" in text
    assert not (out / "tofu.md").exists()
    # a pipeline folder: metrics.json files found in sub-folders and merged into one row
    pipe = tmp_path / "pipeline"
    _run(pipe / "eval" / "tofu", "tofu", {"forget_rouge": 0.1})
    _run(pipe / "eval" / "refusal", "refusal", {"UA": 1.0})
    (pipe / "manifest.json").write_text(json.dumps({"command": "run", "config": {"method": "snap"}}))
    assert main(["report", str(pipe), "--out", str(tmp_path / "p"), "--no-plots"]) == 0
    j = json.loads((tmp_path / "p" / "report.json").read_text())
    assert set(j["tables"]) == {"tofu", "snap"} and j["runs"][0]["name"] == "snap"
    assert not list((tmp_path / "p").glob("*.png"))


def test_report_errors(runs, tmp_path, capsys):
    assert main(["report", str(runs["snap"]), "--out", str(tmp_path / "o"), "--names", "a,b"]) == 2
    assert "--names has 2 names for 1 run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.json is not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(runs["snap"]), "--out", str(tmp_path / "o"), "--layout", "table9"])


def test_format_value():
    assert format_value(None, "pct") == "–" and format_value(float("nan"), "num") == "–"
    assert format_value(0.12345, "pct") == "12.35" and format_value(222.624, "num") == "222.62"
    assert format_value(1.5e-7, "p") == "1.5e-07"


SNAP_T2 = {"hellaswag": 0.5779, "lambada_openai": 0.7099, "winogrande": 0.6638, "piqa": 0.7644,
           "arc_challenge": 0.4420, "mmlu": 0.4635, "openbookqa": 0.3320, "boolq": 0.7976, "mathqa": 0.2874}
SNAP_T2_EUCLID = {"hellaswag": 0.5649, "lambada_openai": 0.6445, "winogrande": 0.6246, "piqa": 0.7419,
                  "arc_challenge": 0.4303, "mmlu": 0.4481, "openbookqa": 0.3220, "boolq": 0.7982, "mathqa": 0.2934}


def test_snap_table2_layout_average_and_drop_against_the_original(tmp_path):
    """SNAP Table 2's Llama2-7b-chat and "w/ Euclidean" rows: Avg. 55.98 / 54.09 and (-3.4%)."""
    orig = _run(tmp_path / "orig", "lm-eval", dict(SNAP_T2))
    euc = _run(tmp_path / "euc", "lm-eval", dict(SNAP_T2_EUCLID))
    part = _run(tmp_path / "part", "lm-eval", {"hellaswag": 0.5, "arc_easy": 0.7})
    other = _run(tmp_path / "other", "lm-eval", {"arc_easy": 0.7})  # none of the nine tasks: not a row
    runs = [read_run(d) for d in (orig, euc, part, other)]
    t = build_table("snap-table2", runs)
    assert t["columns"] == ["Method", "Hella.", "Lamba.", "Wino.", "PIQA", "ARC-C", "MMLU", "OBQA", "BoolQ",
                            "MathQ", "Avg.", "Δ vs original"]
    assert [r[0] for r in t["rows"]] == ["orig", "euc", "part"]
    o, e, p = t["rows"]
    assert o[-2:] == ["55.98", "–"]  # the reference row has no drop
    assert e[-2:] == ["54.09", "-3.4%"]
    assert p[-2:] == ["–", "–"]  # not all nine tasks: no average
    # another reference, by name; a stored drop (eval lm-eval --reference) wins
    t2 = build_table("snap-table2", runs[:2], reference="euc")
    assert t2["rows"][0][-1] == "+3.5%" and t2["rows"][1][-1] == "–"
    stored = _run(tmp_path / "stored", "lm-eval", {**SNAP_T2_EUCLID, "snap_table2_drop": -0.05})
    t3 = build_table("snap-table2", [runs[0], read_run(stored)])
    assert t3["rows"][1][-1] == "-5.0%"
    with pytest.raises(ValueError, match="reference run"):
        build_table("snap-table2", runs, reference="nope")
    # auto includes it only when a run has one of the nine tasks; the generic table leaves preset keys out
    rep = build_report([orig, euc], tmp_path / "rep", plots=False)
    assert set(rep["tables"]) == {"snap-table2", "lm-eval"}
    assert (tmp_path / "rep" / "snap_table2.md").is_file()
    rep2 = build_report([other, stored], tmp_path / "rep2", plots=False, layout="lm-eval")
    assert "snap_table2_drop" not in rep2["tables"]["lm-eval"]["columns"]
    assert build_report([other], tmp_path / "rep3", plots=False)["tables"].keys() == {"lm-eval"}


def test_report_cli_accepts_snap_table2_layout(tmp_path, capsys):
    orig = _run(tmp_path / "orig", "lm-eval", dict(SNAP_T2))
    assert main(["report", str(orig), "--out", str(tmp_path / "r"), "--layout", "snap-table2", "--no-plots"]) == 0
    assert "55.98" in capsys.readouterr().out


def test_frontier_marks_dominated_runs_and_is_plotted(tmp_path):
    from obliviate.report import frontier_points

    d = tmp_path / "f"
    dirs = [
        _run(d / "a0", "tofu", {"forget_rouge": 0.10, "model_utility": 0.20},
             {"command": "merge", "config": {"method": "ulmr", "merge": {"alpha": 0.0}}}),
        _run(d / "a4", "tofu", {"forget_rouge": 0.20, "model_utility": 0.40},
             {"command": "merge", "config": {"method": "ulmr", "merge": {"alpha": 0.4}}}),
        _run(d / "ga", "tofu", {"forget_rouge": 0.45, "model_utility": 0.30}, {"command": "eval tofu", "method": "ga"}),
        _run(d / "kl", "tofu", {"forget_rouge": 0.50, "model_utility": 0.50}, {"command": "eval tofu", "method": "kl"}),
    ]
    runs_ = [read_run(p) for p in dirs]
    pts = {p["name"]: p for p in frontier_points("tofu", runs_)}
    assert pts["ga"]["on_frontier"] is False  # α=0.4 forgets more and keeps more utility
    assert all(pts[n]["on_frontier"] for n in pts if n != "ga")
    assert pts["ga"]["forget"] == pytest.approx(45.0)
    # SNAP: higher UA is more forgetting
    s = [read_run(_run(d / "s1", "refusal", {"UA": 0.9, "TA": 0.8})),
         read_run(_run(d / "s2", "refusal", {"UA": 0.5, "TA": 0.7}))]
    sp = {p["name"]: p["on_frontier"] for p in frontier_points("snap", s)}
    assert sp == {"s1": True, "s2": False}
    out = tmp_path / "rep"
    rep = build_report(dirs, out, layout="tofu")
    _png_ok(out / "tofu_frontier.png")
    assert "tofu_frontier.png" in rep["files"] and len(rep["frontier"]["tofu"]) == 4
    assert "tofu_frontier.png" in (out / "report.md").read_text()
