"""ULMR Table 3 on TOFU forget01 with the embedded SmolLM2-135M-Instruct: Base, Retraining, GA, KL,
DPO, NPO and ULMR, every step through the ``obliviate`` command line.

    python benchmarks/tofu_comparison.py [--work runs/tofu_comparison] [--out benchmarks/results/tofu_comparison]
                                         [--retain-authors 3] [--lr 1e-4] [--alpha 0,0.2,0.4] [--eval-max-samples 60]

What it runs (each step is skipped when its output exists, so an interrupted run resumes):

1. **teach** (TOFU fine-tunes its models on the fictitious authors first): full fine-tuning of the
   embedded model on the QA of the first ``--retain-authors`` TOFU authors plus the two forget01
   authors (``obliviate train --method retrain`` with a teaching learning rate) → the *Base* model;
2. **Retraining**: the same fine-tuning on the retain authors only (the model that never saw the
   forget set); its forget-set truth ratios are the reference of every forget-quality KS test;
3. **GA, KL, DPO, NPO**: ``obliviate train --method NAME`` on the Base model, forget = tofu:forget01,
   retain = the taught retain authors (KL's retain stream);
4. **ULMR**: ``obliviate augment ulmr`` (the Base model itself rewrites and writes the negative
   responses), ``obliviate train --method ulmr``, ``obliviate merge --alpha`` for every α given;
5. ``obliviate eval tofu`` for every model (forget01 + the taught retain authors' ``retain_perturbed``
   questions + ``real_authors`` + ``world_facts``, each capped at ``--eval-max-samples``), and
   ``obliviate report --layout tofu`` for the table.

The presets' hyperparameters are kept except where the CPU budget or the 135M model needs otherwise,
and every such change is listed in ``commands.sh`` and the README: one learning rate for every
unlearning method (``--lr``, ULMR's 1e-4; the TOFU baselines' 1e-5 barely moves a model taught at
3e-4 within 10 steps), micro-batch 8 with gradient accumulation to the preset's effective batch.
Writes ``--out``: ``tofu.md`` / ``tofu.csv`` / plots (``obliviate report``), ``timings.json`` and
``commands.sh`` (every command, in order, with its wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import TOFU_DIR  # noqa: E402

TEACH = {"lr": 3e-4, "epochs": 4, "batch_size": 4, "max_length": 192}
#: preset effective batch sizes (batch_size × grad_accum) — kept, with a CPU-sized micro-batch
EFFECTIVE_BATCH = {"ga": 32, "kl": 32, "dpo": 32, "npo": 32, "ulmr": 16}
MICRO_BATCH = 8


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "obliviate.cli", *args]


class Runner:
    """Runs CLI steps in order, skipping those whose output exists; records commands and wall times."""

    def __init__(self, work: Path, previous: dict | None = None):
        self.work = work
        self.log: list[dict] = []
        #: steps timed by an earlier (interrupted or partial) run, by command: kept for the record
        self.previous = {s["command"]: s for s in (previous or {}).get("steps", []) if s.get("seconds") is not None}

    def step(self, name: str, cmd: list[str], done: Path) -> None:
        shown = " ".join(shlex.quote(c) for c in ["obliviate", *cmd[3:]])
        if done.exists():
            print(f"[skip] {name}: {done} exists", flush=True)
            prev = self.previous.get(shown)
            self.log.append({"step": name, "command": shown, "seconds": prev["seconds"] if prev else None,
                             "skipped": True, "timed_in_earlier_run": prev is not None})
            return
        print(f"[run ] {name}: {shown}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        dt = time.time() - t0
        print(f"[done] {name}: {dt:.0f} s", flush=True)
        self.log.append({"step": name, "command": shown, "seconds": round(dt, 1), "skipped": False})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/tofu_comparison", help="folder for models and eval runs")
    ap.add_argument("--out", default=str(HERE / "results" / "tofu_comparison"), help="folder for the table")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tofu-source", default=os.path.relpath(TOFU_DIR))
    ap.add_argument("--retain-authors", type=int, default=3, help="TOFU authors 0..N-1 taught and retained")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate of every unlearning method")
    ap.add_argument("--alpha", default="0.4", help="ULMR merge weight(s) of the original (Base) model, comma-separated "
                                                 "(each merged model is one row; 0 = the fine-tuned θ' itself)")
    ap.add_argument("--eval-max-samples", type=int, default=60, help="cap on every TOFU eval set")
    ap.add_argument("--methods", default="ga,kl,dpo,npo", help="baselines to train on the Base model")
    args = ap.parse_args(argv)

    work = Path(args.work)
    out = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    src = ["--tofu-source", args.tofu_source]
    prev_t = out / "timings.json"
    r = Runner(work, json.loads(prev_t.read_text()) if prev_t.is_file() else None)
    t_all = time.time()

    # data: the taught retain authors, and retain + forget for teaching
    from obliviate.data.sources import resolve_records
    from obliviate.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

    retain = resolve_records(f"tofu:full[0:{args.retain_authors}]", tofu_source=args.tofu_source)
    forget = resolve_records("tofu:forget01", tofu_source=args.tofu_source)
    data = work / "data"
    data.mkdir(exist_ok=True)
    atomic_write_jsonl(data / "retain.jsonl", [x.to_dict() for x in retain])
    atomic_write_jsonl(data / "teach.jsonl", [x.to_dict() for x in retain + forget])
    teach_set = [a for k, v in TEACH.items() for a in ("--set", f"{k}={v}")]

    # 1-2. Base (taught) and Retraining
    base, retrain = work / "base", work / "retrain"
    r.step("teach (Base)", _cli("train", "--method", "retrain", "--model", args.model,
                                "--retain", str(data / "teach.jsonl"), *teach_set, "--out", str(base)),
           base / "model" / "config.json")
    r.step("Retraining", _cli("train", "--method", "retrain", "--model", args.model,
                              "--retain", str(data / "retain.jsonl"), *teach_set, "--out", str(retrain)),
           retrain / "model" / "config.json")
    base_model = str(base / "model")

    # 3. baselines on the Base model
    models: dict[str, str] = {"Base": base_model, "Retraining": str(retrain / "model")}
    names = {"ga": "GA", "kl": "KL", "dpo": "DPO", "npo": "NPO", "graddiff": "GradDiff", "npo_rt": "NPO+RT"}
    for m in [x.strip() for x in args.methods.split(",") if x.strip()]:
        d = work / m
        eff = EFFECTIVE_BATCH.get(m, 32)
        r.step(names.get(m, m), _cli("train", "--method", m, "--model", base_model, "--forget", "tofu:forget01",
                                     "--retain", str(data / "retain.jsonl"), *src,
                                     "--set", f"lr={args.lr}", "--set", f"batch_size={MICRO_BATCH}",
                                     "--set", f"grad_accum={max(1, eff // MICRO_BATCH)}", "--out", str(d)),
               d / "model" / "config.json")
        models[names.get(m, m)] = str(d / "model")

    # 4. ULMR: augment with the Base model, SFT, merge
    u = work / "ulmr"
    r.step("ULMR augment", _cli("augment", "ulmr", "--forget", "tofu:forget01", *src, "--model", base_model,
                                "--allow-statement-rewrites", "--max-retries", "2", "--out", str(u / "augment")),
           u / "augment" / "forget_augmented.jsonl")
    eff = EFFECTIVE_BATCH["ulmr"]
    r.step("ULMR train", _cli("train", "--method", "ulmr", "--model", base_model,
                              "--forget", str(u / "augment" / "forget_augmented.jsonl"),
                              "--set", f"lr={args.lr}", "--set", f"batch_size={MICRO_BATCH}",
                              "--set", f"grad_accum={max(1, eff // MICRO_BATCH)}", "--out", str(u / "train")),
           u / "train" / "model" / "config.json")
    for a in [float(x) for x in str(args.alpha).split(",") if x.strip()]:
        if not 0 <= a <= 1:
            raise SystemExit(f"--alpha: {a} is outside [0, 1]")
        merged = u / f"merged_alpha_{a:g}"
        r.step(f"ULMR merge α={a:g}", _cli("merge", "--base", base_model, "--tuned", str(u / "train" / "model"),
                                           "--alpha", f"{a:g}", "--out", str(merged)),
               merged / "merge.json")
        models[f"ULMR (α={a:g})"] = str(merged)

    # 5. evaluation: Retraining first (its truth ratios are every other run's KS reference)
    ev = work / "eval"
    ev_args = ["--data-source", args.tofu_source, "--forget-split", "forget01",
               "--max-samples", str(args.eval_max_samples), "--no-progress"]
    def key(name: str) -> str:  # eval folder of a row: "ULMR (α=0.4)" -> ulmr_a0.4, "NPO+RT" -> npo_rt
        head, _, alpha = name.partition(" (α=")
        return head.lower().replace("+", "_") + (f"_a{alpha.rstrip(')')}" if alpha else "")

    r.step("eval Retraining", _cli("eval", "tofu", "--model", models["Retraining"], *ev_args,
                                   "--out", str(ev / "retraining")), ev / "retraining" / "metrics.json")
    for name, path in models.items():
        if name == "Retraining":
            continue
        d = ev / key(name)
        r.step(f"eval {name}", _cli("eval", "tofu", "--model", path, *ev_args, "--retain-result",
                                    str(ev / "retraining"), "--out", str(d)), d / "metrics.json")
    order = list(models)
    r.step("report", _cli("report", *[str(ev / key(n)) for n in order], "--layout", "tofu",
                          "--names", ",".join(order), "--out", str(out)), out / "__never__")

    total = time.time() - t_all
    atomic_write_json(out / "timings.json", {"this_run_seconds": round(total, 1), "steps": r.log,
                                             "settings": vars(args), "teach": TEACH, "micro_batch": MICRO_BATCH})
    lines = ["#!/usr/bin/env bash", "# Commands run by benchmarks/tofu_comparison.py, in order, with their wall seconds",
             "# (steps whose output existed were skipped; their time is the earlier run's).",
             "# made by: python benchmarks/tofu_comparison.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
             "set -euo pipefail"]
    for s in r.log:
        when = "this run" if not s["skipped"] else ("an earlier run" if s.get("timed_in_earlier_run") else "earlier")
        lines.append(f"# {s['step']}: {s['seconds']} s ({when})" if s["seconds"] is not None
                     else f"# {s['step']}: output already present")
        lines.append(s["command"])
    atomic_write_text(out / "commands.sh", "\n".join(lines) + "\n")
    print(f"total {total:.0f} s; table in {out / 'tofu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
