"""Re-score a committed SNAP run folder's ``responses.jsonl`` (no model is run) with a refusal detector.

    python benchmarks/rescore_refusal_results.py benchmarks/results/snap_rwku_stephen_king [--detector learned]

Recomputes the last step's UA / UA♣ / RA per target and TA from the stored responses, with 95 %
intervals (Wilson; mean over targets and Avg by :func:`obliviate.evals.refusal.mean_of_proportions_interval`),
and the Rogan–Gladen corrected values from the detector's held-out error rates. Rewrites
``responses.jsonl`` (``refusal`` = the detector's verdict, plus ``refusal_rules``, ``probability``
and ``reason``), ``batch_metrics.json``, ``summary.json`` (every step gets intervals from its
counts), ``summary.md``, ``metrics.json`` (with ``rescored``: the command, detector, the previous
values and the wall time) and ``report/`` (``obliviate report --layout snap``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from obliviate.evals.refusal import (DEFAULT_MODE, MODES, RefusalDetector, heldout_rates, is_refusal,
                                     metric_intervals, ua_ra_ta)
from obliviate.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from obliviate.report import build_report
from obliviate.sequential import METRIC_KEYS, aggregate, render_summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--detector", default=DEFAULT_MODE, choices=[m for m in MODES if m != "judge"])
    a = p.parse_args(argv)
    t0 = time.time()
    d = Path(a.run_dir)
    rows = [json.loads(l) for l in (d / "responses.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    det = RefusalDetector(a.detector)
    expl = det.explain([r["response"] for r in rows])
    for r, e in zip(rows, expl):
        r.update(refusal=e.refusal, refusal_rules=is_refusal(r["response"]),
                 probability=e.as_dict()["probability"], reason=e.rule_reason)
    by: dict[tuple[str, str], list[bool]] = {}
    for r in rows:
        by.setdefault((r.get("target") or "", r["set"]), []).append(r["refusal"])
    targets = sorted({r["target"] for r in rows if r.get("target")})
    gen = ua_ra_ta(None, None, None, decisions={"general": by.get(("", "general"), [])})
    metrics = {"TA": gen["TA"], "n_general": len(by.get(("", "general"), [])), "per_target": {},
               "detector": a.detector, "general_counts": gen["counts"].get("general")}
    rates = heldout_rates(a.detector)
    for t in targets:
        m = ua_ra_ta(None, None, None, decisions={s: by.get((t, s), []) for s in ("forget", "forget_multihop", "retain")})
        metrics["per_target"][t] = {k: m[k] for k in ("UA", "UA_multihop", "RA")} | {"counts": m["counts"]}
    summary = json.loads((d / "summary.json").read_text())
    last = summary["steps"][-1]
    for step in summary["steps"][:-1]:  # earlier steps: intervals from their stored counts (no responses kept)
        step.update(aggregate({"TA": step["TA"], "n_general": metrics["n_general"], "per_target": step["per_target"]},
                              step["forgotten"], [n for n in summary["targets"] if n not in step["forgotten"]]))
    row = aggregate(metrics, last["forgotten"], [n for n in summary["targets"] if n not in last["forgotten"]])
    last.update(row, per_target=metrics["per_target"])
    atomic_write_json(d / "summary.json", summary)
    atomic_write_json(d / "batch_metrics.json", metrics)
    atomic_write_jsonl(d / "responses.jsonl", rows)
    atomic_write_text(d / "summary.md", render_summary(summary["steps"], summary["mode"], summary["method"], summary["model"]))
    old = json.loads((d / "metrics.json").read_text())
    new = dict(old)
    new.update({k: row.get(k) for k in (*METRIC_KEYS, "Avg")})
    new.update({f"{k}_ci_{e}": row.get(f"{k}_ci_{e}") for k in (*METRIC_KEYS, "Avg") for e in ("low", "high")})
    new["per_target"] = metrics["per_target"]
    counts = {**next(iter(metrics["per_target"].values()))["counts"], "general": metrics["general_counts"]} \
        if len(targets) == 1 else None
    if counts and rates:
        corr = metric_intervals(counts, rates=rates)["corrected"]
        new.update({f"{k}_corrected": c["value"] for k, c in corr.items() if isinstance(c, dict)})
        new["corrected"] = corr
    prev = old.get("rescored", {}).get("previous") or {k: old.get(k) for k in (*METRIC_KEYS, "Avg")}
    new["rescored"] = {"command": "python benchmarks/rescore_refusal_results.py " + " ".join(argv or sys.argv[1:]),
                       "detector": a.detector, "previous": prev, "previous_detector": "rules",
                       "rules_agreement": sum(r["refusal"] == r["refusal_rules"] for r in rows) / len(rows),
                       "wall_s": round(time.time() - t0, 1)}
    atomic_write_json(d / "metrics.json", new)
    build_report([d], d / "report", layout="snap", names=[new.get("method") or d.name])
    print(json.dumps({k: new.get(k) for k in (*METRIC_KEYS, "Avg")} | {"rescored": new["rescored"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
