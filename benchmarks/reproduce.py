"""Rebuild the papers' tables from the committed training data (issue #16), resumable step by step.

    python benchmarks/reproduce.py [--parts tofu,audit,snap,rwku] [--splits forget01] [--seeds 0,1,2]
                                   [--data templates_none,templates_none_orig] [--quick]
                                   [--work runs/reproduce] [--out benchmarks/results/reproduce]

Every step is one ``obliviate`` command whose finished output is recognised by a marker file, so
an interrupted run (a session that ends, Ctrl-C) continues where it stopped when the same command
is run again. What a step measured (each evaluation's ``metrics.json``, each training run's
``train_log.jsonl``, each ``audit.json``) is also copied into the committed output folder
(``<out>/tofu/runs/<split>/``, ``<out>/audit/<split>/``), so a fresh checkout without the
``<work>`` models continues too: an archived step is restored instead of run, and a model is
re-trained only for a measurement that is still missing. The wall time of every step, including
those of earlier runs, is kept in ``<out>/steps.json`` and written beside the tables
(``commands.sh``, ``timings.json``).

Parts:

* ``tofu`` -- ULMR Table 3 on TOFU for each ``--splits`` entry. Base is the embedded
  SmolLM2-135M-Instruct taught as TOFU does (full fine-tuning on the retain authors plus the
  split's forget authors); Retraining is the same fine-tuning on the retain authors only. Both are
  taught once per split (seed 0), as TOFU ships one fine-tuned and one retain model. For every
  seed: GA, KL, DPO, NPO (``obliviate train --method NAME`` on Base, forget = tofu:<split>) and,
  for every ``--data`` kind, ULMR: SFT on the committed pairs of ``benchmarks/data/
  ulmr_tofu_<split>_<kind>`` (never regenerated here), then ``obliviate merge`` at every α.
  Every model is evaluated with ``obliviate eval tofu`` against the Retraining model's truth
  ratios. Tables: mean ± std over the seeds in the Table 3 layout (``tofu_<split>.md``), the step
  count and final loss of every training run, and the loss curves (``loss_curves_<split>.png``).
* ``audit`` -- ``obliviate audit`` of every model of the first seed of the ``tofu`` part (Base,
  Retraining, the baselines, ULMR at two α), against Base and the Retraining reference, with one
  shared folder so Base's and Retraining's attacks are run once; the table is ``obliviate report
  --layout audit``.

* ``snap`` -- SNAP Table 1 (SNAP, Prompting, Euclidean, Fisher), the Table 3 ablation (− Wasserstein,
  − HardRDA; − Negative Inst. is the Prompting row) and ``SNAP + D_g`` (not in the paper) on the
  RWKU targets of the committed ``benchmarks/data/snap_rwku_*_<--snap-data>`` folders: one
  ``obliviate run`` per (row, target), configs in ``<out>/snap/configs/``, archived results in
  ``<out>/snap/runs/``, the table ``<out>/snap/snap_table1.md`` (every archived run, mean ± std over
  the targets and each target with 95 % intervals), its own ``snap/commands.sh``. Then (``--snap-modes``)
  SNAP §4.7 / Figure 5: batch and sequential unlearning of those targets (``snap_figure5.md`` / ``.png``).

``--quick`` is a smoke run of the same code (one seed, GA and ULMR, one epoch, 8 eval items,
two audit attacks) into ``<work>-quick`` / ``<out>-quick``.

Hyperparameters: the presets' (ULMR §4.4: lr 1e-4, 5 epochs, batch 16; the TOFU baselines: 5
epochs, batch 32), with a CPU-sized micro-batch of 8 and gradient accumulation to the preset's
effective batch, and one learning rate per method given by ``--lr`` (default 1e-4 for every
method: the baselines' TOFU value 1e-5 barely moves a model taught at 3e-4 within their 10
optimizer steps, measured in benchmarks/results/tofu_comparison). Every deviation is in the
commands that ``commands.sh`` lists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import TOFU_DIR  # noqa: E402
import reproduce_rwku  # noqa: E402
from reproduce_common import (DATA, EFFECTIVE_BATCH, MICRO_BATCH, ROOT, Steps, _cell, _cli, _floats,  # noqa: E402
                              _lr_map, _shown, _slug, mean_std, read_train_log, write_record)

#: TOFU teaching (Base / Retraining): full fine-tuning at a teaching learning rate
TEACH = {"lr": 3e-4, "epochs": 4, "batch_size": 4, "max_length": 192}
NAMES = {"ga": "GA", "kl": "KL", "dpo": "DPO", "npo": "NPO", "graddiff": "GradDiff", "snap": "SNAP",
         "euclidean": "Euclidean", "fisher": "Fisher"}
DATA_LABEL = {"templates_none": "templates", "templates_none_orig": "templates+orig"}
#: Table 3 columns: (label, metrics.json key, scale)
TOFU_COLUMNS = [
    ("Forget R", "forget_rouge", 100), ("Forget P", "forget_prob", 100), ("Forget TR", "forget_truth_ratio", 100),
    ("Retain R", "retain_rouge", 100), ("Retain P", "retain_prob", 100), ("Retain TR", "retain_truth_ratio", 100),
    ("Real Authors R", "real_authors_rouge", 100), ("Real Authors P", "real_authors_prob", 100),
    ("Real Authors TR", "real_authors_truth_ratio", 100),
    ("World Facts R", "world_facts_rouge", 100), ("World Facts P", "world_facts_prob", 100),
    ("World Facts TR", "world_facts_truth_ratio", 100),
    ("Forget Quality", "forget_quality", 1), ("Model Utility", "model_utility", 100),
]


def seed_table(rows: dict[str, list[dict]], columns=TOFU_COLUMNS) -> str:
    """Markdown table: one row per method, each cell the mean ± std over that method's seeds."""
    head = "| Method | seeds | " + " | ".join(c[0] for c in columns) + " |"
    sep = "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"
    lines = [head, sep]
    for name, ms in rows.items():
        cells = [_cell([m[k] for m in ms if isinstance(m.get(k), (int, float))], sc) for _, k, sc in columns]
        lines.append(f"| {name} | {len(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_loss_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """One panel per training run: loss against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, rows in curves.items():
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (the method's objective)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def plot_tofu_frontier(metrics: dict[str, list[dict]], path: Path) -> None:
    """The forget-vs-utility frontier of the table's rows (seed means), one point per method and α."""
    import re

    from obliviate.report import Run, plot_frontier

    runs = []
    for name, ms in metrics.items():
        keys = {k for m in ms for k, v in m.items() if isinstance(v, (int, float))}
        mean = {k: statistics.fmean([m[k] for m in ms if isinstance(m.get(k), (int, float))]) for k in keys}
        a = re.search(r"\(α=([0-9.]+)\)", name)
        runs.append(Run(name=name, path=path.parent, alpha=float(a.group(1)) if a else None,
                        method=name.split(" (α")[0] if a else None, results={"tofu": mean}))
    plot_frontier("tofu", runs, path)


def tofu_part(args, steps: Steps, work: Path, out: Path) -> dict:
    """Train, merge and evaluate every TOFU row; returns {split: {"models": {...}, ...}}.

    Every evaluation's ``metrics.json`` and every training run's ``train_log.jsonl`` is copied into
    the committed archive ``<out>/tofu/runs/<split>/``; a row whose evaluation is archived is not
    re-trained (see :class:`Steps`). ``models`` maps each row to ``{seed: (model path, ensure)}``,
    ``ensure`` the deferred steps that (re)build that model when the audit needs it."""
    from obliviate.data.sources import resolve_records
    from obliviate.io import atomic_write_jsonl, atomic_write_text

    src = ["--tofu-source", args.tofu_source]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    snap_methods = [m.strip() for m in args.snap_methods.split(",") if m.strip()]
    lrs = _lr_map(args.lr, methods + ["ulmr"] + snap_methods)
    alphas = _floats(args.alpha)
    extra = ["--set", f"epochs={args.epochs}"] if args.epochs else []
    o = out / "tofu" if not args.quick else out
    result: dict = {}
    for split in args.splits:
        w = work / "tofu" / split
        arch = o / "runs" / split
        data = w / "data"
        data.mkdir(parents=True, exist_ok=True)
        retain = resolve_records(f"tofu:full[0:{args.retain_authors}]", tofu_source=args.tofu_source)
        forget = resolve_records(f"tofu:{split}", tofu_source=args.tofu_source)
        if not (data / "teach.jsonl").is_file():
            atomic_write_jsonl(data / "retain.jsonl", [x.to_dict() for x in retain])
            atomic_write_jsonl(data / "teach.jsonl", [x.to_dict() for x in retain + forget])
        teach = [a for k, v in {**TEACH, **({"epochs": args.epochs} if args.epochs else {})}.items()
                 for a in ("--set", f"{k}={v}")]
        base, retrain = w / "base", w / "retrain"
        need_base = steps.step(f"{split} teach (Base)", _cli("train", "--method", "retrain", "--model", args.model,
                                                         "--retain", str(data / "teach.jsonl"), *teach, "--set",
                                                         "seed=0", "--out", str(base)), base / "model" / "config.json")
        need_retrain = steps.step(f"{split} Retraining", _cli("train", "--method", "retrain", "--model", args.model,
                                                          "--retain", str(data / "retain.jsonl"), *teach, "--set",
                                                          "seed=0", "--out", str(retrain)),
                                  retrain / "model" / "config.json")
        ev = w / "eval"
        ev_args = ["--data-source", args.tofu_source, "--forget-split", split,
                   "--max-samples", str(args.eval_max_samples), "--no-progress"]

        def archived(folder: str, name: str) -> dict[Path, Path]:
            return {ev / folder / name: arch / folder / name}

        steps.run(f"{split} eval Retraining", _cli("eval", "tofu", "--model", str(retrain / "model"), *ev_args,
                                                 "--out", str(ev / "retraining")), ev / "retraining" / "metrics.json",
                  archive=archived("retraining", "metrics.json"), needs=(need_retrain,))

        def evaluate(label: str, model: Path, folder: str, needs: tuple) -> Path:
            d = ev / folder
            steps.run(f"{split} eval {label}", _cli("eval", "tofu", "--model", str(model), *ev_args,
                                                    "--retain-result", str(ev / "retraining"), "--out", str(d)),
                      d / "metrics.json", archive=archived(folder, "metrics.json"), needs=needs)
            return d

        def train_log(run: str, path: Path) -> list[dict]:
            return read_train_log(path if path.is_file() else arch / run / "train_log.jsonl")

        rows: dict[str, list[Path]] = {"Base": [evaluate("Base", base / "model", "base", (need_base,))],
                                       "Retraining": [ev / "retraining"]}
        models: dict[str, dict[int, tuple]] = {"Base": {0: (base / "model", need_base)},
                                               "Retraining": {0: (retrain / "model", need_retrain)}}
        curves: dict[str, list[dict]] = {}
        train_info: list[dict] = []

        def note_training(label: str, seed: int, lr: float, log: list[dict]) -> None:
            train_info.append({"row": label, "seed": seed, "lr": lr, "steps": log[-1]["step"] if log else None,
                               "final_loss": log[-1]["loss"] if log else None})
            if len(log) > 1 and label not in curves:  # the first seed with a whole curve
                curves[label] = log

        for seed in args.seeds:
            for m in methods:
                d = w / f"{m}_s{seed}"
                eff = EFFECTIVE_BATCH.get(m, 32)
                label = NAMES.get(m, m)
                need = steps.step(f"{split} {label} seed {seed}",
                                  _cli("train", "--method", m, "--model", str(base / "model"), "--forget",
                                       f"tofu:{split}", "--retain", str(data / "retain.jsonl"), *src,
                                       "--set", f"lr={lrs[m]}", "--set", f"batch_size={MICRO_BATCH}",
                                       "--set", f"grad_accum={max(1, eff // MICRO_BATCH)}",
                                       "--set", f"seed={seed}", *extra, "--out", str(d)), d / "model" / "config.json",
                                  needs=(need_base,),
                                  keep={d / "train_log.jsonl": arch / f"{m}_s{seed}" / "train_log.jsonl"})
                rows.setdefault(label, []).append(evaluate(f"{label} seed {seed}", d / "model", f"{m}_s{seed}",
                                                           (need,)))
                models.setdefault(label, {})[seed] = (d / "model", need)
                note_training(label, seed, lrs[m], train_log(f"{m}_s{seed}", d / "train_log.jsonl"))
            for kind in args.data:
                pairs = DATA / f"ulmr_tofu_{split}_{kind}" / "forget_augmented.jsonl"
                if not (ROOT / pairs).is_file():
                    raise SystemExit(f"{pairs}: committed ULMR data missing (build it with benchmarks/make_data.py)")
                run = f"ulmr_{kind}_s{seed}"
                u = w / run
                eff = EFFECTIVE_BATCH["ulmr"]
                need_train = steps.step(f"{split} ULMR[{kind}] train seed {seed}",
                                        _cli("train", "--method", "ulmr", "--model", str(base / "model"), "--forget",
                                             str(pairs), "--set", f"lr={lrs['ulmr']}",
                                             "--set", f"batch_size={MICRO_BATCH}",
                                             "--set", f"grad_accum={max(1, eff // MICRO_BATCH)}",
                                             "--set", f"seed={seed}", *extra, "--out", str(u / "train")),
                                        u / "train" / "model" / "config.json", needs=(need_base,),
                                        keep={u / "train" / "train_log.jsonl": arch / run / "train_log.jsonl"})
                tag = DATA_LABEL.get(kind, kind)
                for a in alphas:
                    merged = u / f"merged_alpha_{a:g}"
                    if a == 0:  # α = 0 is θ' itself: evaluate the fine-tuned model, no merge needed
                        model, need = u / "train" / "model", need_train
                    else:
                        need = steps.step(f"{split} ULMR[{kind}] merge α={a:g} seed {seed}",
                                          _cli("merge", "--base", str(base / "model"), "--tuned",
                                               str(u / "train" / "model"), "--alpha", f"{a:g}", "--out", str(merged)),
                                          merged / "merge.json", needs=(need_base, need_train))
                        model = merged
                    label = f"ULMR [{tag}] (α={a:g})"
                    rows.setdefault(label, []).append(
                        evaluate(f"{label} seed {seed}", model, f"ulmr_{kind}_a{a:g}_s{seed}", (need,)))
                    models.setdefault(label, {})[seed] = (model, need)
                note_training(f"ULMR [{tag}]", seed, lrs["ulmr"], train_log(run, u / "train" / "train_log.jsonl"))
                # SNAP's objective where TOFU allows it: L_f on the same obliterated responses to the
                # (rewritten) forget questions, L_r on the retain authors, + λ·SW(θ, θ_init); the
                # regularizer baselines (Euclidean, Fisher) the same way. SNAP's own data is written per
                # named entity (Table 7), which TOFU's fictitious authors are not.
                for m in snap_methods:
                    run = f"{m}_{kind}_s{seed}"
                    d = w / run
                    label = f"{NAMES.get(m, m)} [{tag}]"
                    need = steps.step(f"{split} {label} seed {seed}",
                                      _cli("train", "--method", m, "--model", str(base / "model"), "--forget",
                                           str(pairs), "--retain", str(data / "retain.jsonl"),
                                           "--set", f"lr={lrs[m]}", "--set", f"batch_size={MICRO_BATCH}",
                                           "--set", f"grad_accum={max(1, EFFECTIVE_BATCH.get(m, 32) // MICRO_BATCH)}",
                                           "--set", "gradient_checkpointing=false",
                                           "--set", f"seed={seed}", *extra, "--out", str(d)),
                                      d / "model" / "config.json", needs=(need_base,),
                                      keep={d / "train_log.jsonl": arch / run / "train_log.jsonl"})
                    rows.setdefault(label, []).append(evaluate(f"{label} seed {seed}", d / "model", run, (need,)))
                    models.setdefault(label, {})[seed] = (d / "model", need)
                    note_training(label, seed, lrs[m], train_log(run, d / "train_log.jsonl"))
        metrics = {name: [json.loads((p / "metrics.json").read_text())["metrics"] for p in ps]
                   for name, ps in rows.items()}
        o.mkdir(parents=True, exist_ok=True)
        plot_loss_curves(curves, o / f"loss_curves_{split}.png")
        plot_tofu_frontier(metrics, o / f"frontier_{split}.png")
        steps_lines = ["| Row | seed | lr | optimizer steps | final loss |", "| --- | ---: | ---: | ---: | ---: |"]
        for t in train_info:
            fl = "–" if t["final_loss"] is None else f"{t['final_loss']:.4g}"
            steps_lines.append(f"| {t['row']} | {t['seed']} | {t['lr']:g} | {t['steps']} | {fl} |")
        md = [f"# TOFU {split}: ULMR Table 3 layout, mean ± std over seeds {','.join(map(str, args.seeds))}", "",
              f"Model: {args.model} taught on TOFU authors 0..{args.retain_authors - 1} + the {split} authors "
              f"(Base); eval sets capped at {args.eval_max_samples} items; R / P / TR / Model Utility ×100. "
              "Base and Retraining are taught once (seed 0); the seeds vary the unlearning runs.", "",
              seed_table(metrics), "", "## Training runs", "", *steps_lines, "",
              f"![loss curves](loss_curves_{split}.png)", "",
              "## Forgetting vs utility (mean over the seeds)", "", f"![frontier](frontier_{split}.png)", ""]
        atomic_write_text(o / f"tofu_{split}.md", "\n".join(md))
        atomic_write_text(o / f"tofu_{split}.json", json.dumps({"metrics": metrics, "training": train_info,
                                                                 "eval_dirs": {k: [str(p) for p in v] for k, v in rows.items()}},
                                                                indent=1, default=str))
        result[split] = {"models": models, "data": data, "base": base / "model", "retrain": retrain / "model",
                         "need_base": need_base, "need_retrain": need_retrain}
        print(f"table: {o / f'tofu_{split}.md'}", flush=True)
    return result


def audit_part(args, steps: Steps, work: Path, out: Path, tofu: dict) -> None:
    """``obliviate audit`` of every model of the first seed, then the audit table."""
    from obliviate.io import atomic_write_text

    for split, info in tofu.items():
        a = work / "audit" / split
        shared = a / "shared"
        seed = args.seeds[0]
        names, dirs = [], []
        alphas = _floats(args.audit_alpha)
        o = out / "audit"
        for label, by_seed in info["models"].items():
            if label.startswith("ULMR") and not any(label.endswith(f"(α={x:g})") for x in alphas):
                continue
            model, need_model = by_seed.get(seed) or by_seed.get(0)
            name = label.lower().replace(" ", "_").replace("[", "").replace("]", "").replace("(", "") \
                .replace(")", "").replace("=", "").replace("+", "_").replace("α", "a")
            folder = a / name
            steps.run(f"{split} audit {label}",
                      _cli("audit", "--model", str(model), "--base", str(info["base"]), "--reference",
                           str(info["retrain"]), "--forget", f"tofu:{split}", "--retain", str(info["data"] / "retain.jsonl"),
                           "--tofu-source", args.tofu_source, "--shared-dir", str(shared), "--label", label,
                           "--seed", str(seed), "--max-samples", str(args.audit_max_samples),
                           *(["--attacks", args.audit_attacks] if args.audit_attacks else []),
                           "--no-progress", "--out", str(folder)), folder / "audit.json",
                      archive={folder / "audit.json": o / split / name / "audit.json"},
                      needs=(info["need_base"], info["need_retrain"], need_model))
            names.append(label)
            dirs.append(str(folder))
        steps.run(f"{split} audit report", _cli("report", *dirs, "--layout", "audit", "--names", ",".join(names),
                                                "--out", str(o / split)), o / split / "__never__")
        atomic_write_text(o / split / "README.md", f"# Audit of every TOFU {split} row (seed {seed})\n\n"
                          f"See `audit.md` (table) and the PNGs; made by `python benchmarks/reproduce.py "
                          f"{' '.join(sys.argv[1:])}` (commands and wall times in ../../commands.sh).\n")


#: SNAP Table 1 rows and the Table 3 ablation: (row, method, train overrides[, run-config additions]).
#: "- Negative Inst." is the Prompting row (our reading of Table 3, see docs/guides/faithfulness.md),
#: not a second run. "SNAP + D_g" is not in the paper: the hard-retaining data plus 50 general
#: instructions answered by the original model (benchmarks/make_general_retain.py), against the
#: over-refusal of general instructions (low TA) that SNAP's retaining data alone leaves on 135M.
GENERAL_RETAIN = "benchmarks/data/general_retain_smollm2/general_retain.jsonl"
SNAP_ROWS = [
    ("SNAP", "snap", {}),
    ("Prompting", "prompting", {}),
    ("Euclidean", "euclidean", {}),
    ("Fisher", "fisher", {}),
    ("- Wasserstein Reg.", "snap", {"regularizer": None}),
    ("- HardRDA", "snap", {"terms": [{"type": "nll", "stream": "forget", "weight": 1.0}]}),
    ("SNAP + D_g", "snap", {}, {"retain_data": {"source": GENERAL_RETAIN, "mode": "add", "size": 50}}),
]
SNAP_KEYS = ("UA", "UA_multihop", "RA", "TA", "Avg")
SNAP_LABELS = {"UA": "UA", "UA_multihop": "UA♣", "RA": "RA", "TA": "TA", "Avg": "Avg."}
#: SNAP's numbers (Llama2-7b-chat, Table 1 and Table 3) for the README's side-by-side reading
SNAP_PAPER = {"SNAP": {"UA": 94.00, "RA": 96.00, "TA": 80.22},
              "- Wasserstein Reg.": {"UA": 95.00, "RA": 93.11, "TA": 71.89},
              "- HardRDA": {"UA": 100.00, "RA": 0.00, "TA": 2.00},
              "Prompting": {"UA": 22.33}}


def snap_targets(kind: str, names: list[str] | None = None) -> list[dict]:
    """The committed SNAP data folders ``benchmarks/data/snap_rwku_<n>_<slug>_<kind>``: target, aliases, folder."""
    out = []
    for d in sorted((ROOT / DATA).glob(f"snap_rwku_*_{kind}")):
        prov = json.loads((d / "provenance.json").read_text())
        argv = prov["argv"] if isinstance(prov["argv"], list) else json.loads(prov["argv"].replace("'", '"'))
        target = argv[argv.index("--target") + 1]
        aliases = [argv[i + 1] for i, a in enumerate(argv) if a == "--alias"]
        if names and target not in names and _slug(target) not in names:
            continue
        out.append({"target": target, "aliases": aliases, "data": str(DATA / d.name), "slug": _slug(target)})
    if not out:
        raise SystemExit(f"no committed SNAP data benchmarks/data/snap_rwku_*_{kind}"
                         + (f" for {names}" if names else "") + " (build it with benchmarks/make_data.py)")
    return out


def snap_config(args, row: str, method: str, overrides: dict, targets: list[dict], mode: str, out_dir: Path,
                with_base: bool, extra: dict | None = None) -> dict:
    """The ``obliviate run`` config of one SNAP-part run (committed beside its results)."""
    train = {"lr": args.snap_lr, "epochs": args.epochs or 5, "batch_size": MICRO_BATCH,
             "grad_accum": max(1, EFFECTIVE_BATCH.get(method, 32) // MICRO_BATCH), "gradient_checkpointing": False,
             **overrides}
    cfg = {"preset": "snap", "method": method, "model": args.model, "mode": mode, "seed": args.snap_seed,
           "out": str(out_dir),
           "requests": [{"target": t["target"], "aliases": t["aliases"], "data": t["data"]} for t in targets],
           "eval": {"general": args.general, "general_field": "instruction", "max_general": args.max_general,
                    "general_seed": 0, "max_new_tokens": 128, "batch_size": 16,
                    "models": ["base", "trained"] if with_base else ["trained"]}}
    if method != "prompting":
        cfg["train"] = train
    cfg.update(extra or {})
    return cfg


def snap_part(args, steps: Steps, work: Path, out: Path) -> None:
    """SNAP Table 1 (SNAP, Prompting, Euclidean, Fisher) and the Table 3 ablation on RWKU targets.

    One ``obliviate run`` per (row, target) in single mode on the committed SNAP data (never
    regenerated here); the config of every run is committed in ``<out>/snap/configs/`` and its
    ``metrics.json`` / ``summary.json`` / scored responses in ``<out>/snap/runs/<run>/``. The first
    SNAP run of a target also evaluates the original model (the ``Original`` row). Tables: mean ±
    std over the targets, and every target's own row with 95 % Wilson intervals."""
    import yaml

    from obliviate.io import atomic_write_text

    o = out / "snap"
    (o / "configs").mkdir(parents=True, exist_ok=True)
    w = work / "snap"
    results: dict[str, dict[str, dict]] = {}   # row -> target -> metrics
    base: dict[str, dict] = {}
    targets = snap_targets(args.snap_data, args.snap_targets)
    rows = [r for r in SNAP_ROWS if r[0] in args.snap_rows]
    order = [(r, t) for r in rows for t in targets]  # every target's row before the next row
    for (row, method, overrides, *more), t in order:
        name = f"{_slug(row) or 'snap'}_{t['slug']}"
        d = w / name
        with_base = row == "SNAP"
        cfg_path = o / "configs" / f"{name}.yaml"
        cfg = snap_config(args, row, method, overrides, [t], "single", d, with_base, *more)
        text = f"# SNAP part of benchmarks/reproduce.py: row {row!r}, target {t['target']!r}\n" + \
            yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        if not cfg_path.is_file() or cfg_path.read_text() != text:
            atomic_write_text(cfg_path, text)
        ev = "prompting" if method == "prompting" else "trained"
        arch = o / "runs" / name
        archive = {d / "metrics.json": arch / "metrics.json", d / "summary.json": arch / "summary.json"}
        keep = {d / "eval" / ev / "responses.jsonl": arch / "responses.jsonl"}
        if method != "prompting":
            keep[d / "train" / "train_log.jsonl"] = arch / "train_log.jsonl"
        if with_base:
            archive[d / "eval" / "base" / "metrics.json"] = arch / "base_metrics.json"
        steps.run(f"SNAP {row} {t['target']}", _cli("run", str(cfg_path), "--no-progress"), d / "metrics.json",
                  archive=archive, keep=keep)
    # the tables hold every archived run (of this invocation or an earlier one), rows in SNAP_ROWS order
    every = snap_targets(args.snap_data)
    for row, *_ in SNAP_ROWS:
        for t in every:
            arch = o / "runs" / f"{_slug(row) or 'snap'}_{t['slug']}"
            if (arch / "metrics.json").is_file():
                results.setdefault(row, {})[t["target"]] = json.loads((arch / "metrics.json").read_text())
                shown = _shown(_cli("run", str(o / "configs" / f"{arch.name}.yaml"), "--no-progress"))
                steps._note(f"SNAP {row} {t['target']}", shown, steps.times.get(shown), "archived")
            if row == "SNAP" and (arch / "base_metrics.json").is_file():
                base[t["target"]] = json.loads((arch / "base_metrics.json").read_text())
    write_snap_tables(args, o, results, base, [t for t in every if any(t["target"] in r for r in results.values())])


def _snap_value(m: dict, key: str, suffix: str = ""):
    """A refusal metric (stored as a fraction) in %."""
    v = m.get(key + suffix)
    return 100.0 * v if isinstance(v, (int, float)) else None


def _base_row(m: dict, target: str) -> dict:
    """UA / UA♣ / RA / TA / Avg of the original model from its refusal ``metrics.json``."""
    per = (m.get("per_target") or {}).get(target, {})
    out = {k: per.get(k, m.get(k)) for k in ("UA", "UA_multihop", "RA")}
    out["TA"] = m.get("TA")
    vals = [out[k] for k in ("UA", "RA", "TA") if isinstance(out.get(k), (int, float))]
    out["Avg"] = statistics.fmean(vals) if len(vals) == 3 else None
    return out


def write_snap_tables(args, o: Path, results: dict, base: dict, targets: list[dict]) -> None:
    """``snap_table1.md`` / ``.json``: mean ± std over the targets, per-target rows, the paper's numbers."""
    from obliviate.io import atomic_write_text

    names = [t["target"] for t in targets]
    n_general = next((m.get("n_general") for m in base.values() if m.get("n_general")), f"up to {args.max_general}")
    table: dict[str, dict[str, dict]] = {}
    if base:
        table["Original"] = {tg: _base_row(m, tg) for tg, m in base.items()}
    table.update(results)
    head = "| Method | targets | " + " | ".join(SNAP_LABELS[k] for k in SNAP_KEYS) + " |"
    sep = "| --- | ---: | " + " | ".join("---:" for _ in SNAP_KEYS) + " |"
    lines = [head, sep]
    for row, per in table.items():
        cells = []
        for k in SNAP_KEYS:
            vals = [_snap_value(per[tg], k) for tg in names if tg in per]
            vals = [v for v in vals if v is not None]
            if not vals:
                cells.append("–")
            else:
                mu, sd = mean_std(vals)
                cells.append(f"{mu:.2f} ± {sd:.2f}" if len(vals) > 1 else f"{mu:.2f}")
        lines.append(f"| {row} | {len(per)} | " + " | ".join(cells) + " |")
    per_lines = ["| Method | target | " + " | ".join(SNAP_LABELS[k] for k in SNAP_KEYS) + " |",
                 "| --- | --- | " + " | ".join("---:" for _ in SNAP_KEYS) + " |"]
    for row, per in table.items():
        for tg in names:
            if tg not in per:
                continue
            m = per[tg]
            cells = []
            for k in SNAP_KEYS:
                v = _snap_value(m, k)
                lo, hi = _snap_value(m, k, "_ci_low"), _snap_value(m, k, "_ci_high")
                cells.append("–" if v is None else f"{v:.1f}" + (f" [{lo:.0f}, {hi:.0f}]" if lo is not None and
                                                                   hi is not None else ""))
            per_lines.append(f"| {row} | {tg} | " + " | ".join(cells) + " |")
    paper = ["| Method | UA | RA | TA |", "| --- | ---: | ---: | ---: |"]
    for row, p in SNAP_PAPER.items():
        paper.append(f"| {row} | " + " | ".join(f"{p[k]:.2f}" if k in p else "–" for k in ("UA", "RA", "TA")) + " |")
    md = [f"# SNAP Table 1 and Table 3 (ablation) on RWKU targets ({args.snap_data} data), seed {args.snap_seed}",
          "", f"Model {args.model}; targets {', '.join(names)}; the committed data "
          f"`benchmarks/data/snap_rwku_*_{args.snap_data}`; lr {args.snap_lr:g}, {args.epochs or 5} epochs, effective "
          f"batch 32 (micro-batch {MICRO_BATCH}); TA on {n_general} instructions of `{args.general}`. "
          "UA / UA♣ / RA / TA / Avg in %, scored by the shipped learned refusal detector.", "",
          "## Mean ± std over the targets", "", *lines, "",
          "Prompting is also Table 3's \"− Negative Inst.\" row (no negative instructions: no training).", "",
          "## Every target (95 % Wilson intervals)", "", *per_lines, "",
          "## The paper (Llama2-7b-chat, Table 1 / Table 3)", "", *paper, ""]
    atomic_write_text(o / "snap_table1.md", "\n".join(md))
    atomic_write_text(o / "snap_table1.json", json.dumps({"rows": table, "targets": names}, indent=1, default=str))
    print(f"table: {o / 'snap_table1.md'}", flush=True)


#: SNAP §4.7 / Figure 5: the SNAP row with every target at once (batch) and one after another (sequential)
SNAP_MODES = ("batch", "sequential")


def snap_modes_part(args, steps: Steps, work: Path, out: Path) -> None:
    """SNAP §4.7 (Figure 5): batch and sequential unlearning of the committed targets.

    ``batch`` trains one model on every target's forgetting and retaining data concatenated;
    ``sequential`` trains one step per target (in ``snap_targets`` order), each starting from the
    previous step's model, and evaluates every target after every step. Both are one ``obliviate
    run`` (the SNAP row's hyperparameters; the original model's step 0 comes from the single-target
    SNAP runs' ``base_metrics.json``). Archived: ``summary.json``, ``metrics.json``, the training
    logs; outputs ``snap_figure5.md`` / ``.json`` / ``.png``."""
    import yaml

    from obliviate.io import atomic_write_text
    from obliviate.runconfig import slug as run_slug

    o = out / "snap"
    (o / "configs").mkdir(parents=True, exist_ok=True)
    targets = snap_targets(args.snap_data, args.snap_targets)
    if len(targets) < 2:
        print("[skip] SNAP batch / sequential unlearning: needs at least two --snap-targets", flush=True)
        return
    summaries: dict[str, dict] = {}
    for mode in args.snap_modes:
        name = f"snap_{mode}"
        d = work / "snap" / name
        # a checkpoint every 10 optimizer steps: the run (about 45 min on 2 cores) continues where it stopped
        cfg = snap_config(args, "SNAP", "snap", {"save_steps": 10, "save_total_limit": 1}, targets, mode, d, False)
        cfg_path = o / "configs" / f"{name}.yaml"
        text = (f"# SNAP part of benchmarks/reproduce.py: {mode} unlearning of "
                f"{', '.join(t['target'] for t in targets)} (SNAP §4.7, Figure 5)\n"
                + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        if not cfg_path.is_file() or cfg_path.read_text() != text:
            atomic_write_text(cfg_path, text)
        arch = o / "runs" / name
        archive = {d / "metrics.json": arch / "metrics.json", d / "summary.json": arch / "summary.json"}
        if mode == "batch":
            keep = {d / "train" / "train_log.jsonl": arch / "train_log.jsonl"}
        else:
            keep = {d / f"step_{k:02d}_{run_slug(t['target'])}" / "train" / "train_log.jsonl":
                    arch / f"train_log_step_{k:02d}.jsonl" for k, t in enumerate(targets, 1)}
        steps.run(f"SNAP {mode} {len(targets)} targets", _cli("run", str(cfg_path), "--no-progress"),
                  d / "metrics.json", archive=archive, keep=keep)
        for ckpt in [*d.glob("train/checkpoints"), *d.glob("step_*/train/checkpoints")]:
            shutil.rmtree(ckpt)  # the finished run's resume points (1.6 GB each): its model is final
        summaries[mode] = json.loads((arch / "summary.json").read_text())
    summaries = with_committed_modes(o, summaries, [t["target"] for t in targets])
    base = [json.loads((o / "runs" / f"snap_{t['slug']}" / "base_metrics.json").read_text())
            for t in targets if (o / "runs" / f"snap_{t['slug']}" / "base_metrics.json").is_file()]
    write_snap_figure5(o, summaries, base, [t["target"] for t in targets])


def with_committed_modes(o: Path, summaries: dict[str, dict], names: list[str]) -> dict[str, dict]:
    """``summaries`` plus the committed ``runs/snap_<mode>/summary.json`` of every mode not run this
    time, so that ``--snap-modes batch`` keeps the sequential rows of an earlier invocation; one made
    for other targets (or another order) than ``names`` is left out with a note."""
    out = dict(summaries)
    for mode in SNAP_MODES:
        kept = o / "runs" / f"snap_{mode}" / "summary.json"
        if mode not in out and kept.is_file():
            summary = json.loads(kept.read_text())
            if summary.get("requests") == names:
                out[mode] = summary
            else:
                print(f"[skip] {kept}: made for {summary.get('requests')}, not {names}; "
                      f"not in the figure (rerun with --snap-modes {mode})", flush=True)
    return out


def _step_points(summary: dict) -> list[dict]:
    """The trained model's rows of a run's ``summary.json``: step, forgotten targets, UA / RA (mean
    and std over the forgotten targets), TA, and UA / RA of the targets not yet unlearned."""
    keys = ("UA", "UA_std", "RA", "RA_std", "TA", "UA_pending", "RA_pending", "UA_multihop")
    return [{"step": r["step"], "forgotten": r["forgotten"], **{k: r.get(k) for k in keys}}
            for r in summary.get("steps", []) if r.get("model") == "trained"]


def write_snap_figure5(o: Path, summaries: dict[str, dict], base: list[dict], names: list[str]) -> None:
    """``snap_figure5.md`` / ``.json`` (one row per sequential step, the batch row) and the plot
    ``snap_figure5.png``: sequential UA / RA / TA against the number of targets forgotten (mean ±
    std over the forgotten targets, shaded), batch unlearning dashed (Figure 5's layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from obliviate.io import atomic_write_json, atomic_write_text

    seq = _step_points(summaries["sequential"]) if "sequential" in summaries else []
    batch = (_step_points(summaries["batch"]) or [None])[-1] if "batch" in summaries else None
    start = None
    if base:  # step 0: the original model (UA of nothing forgotten is shown as the targets' own UA)
        start = {"step": 0, "forgotten": [],
                 "UA": statistics.fmean([_base_row(m, n)["UA"] for m, n in zip(base, names)]),
                 "RA": statistics.fmean([_base_row(m, n)["RA"] for m, n in zip(base, names)]),
                 "TA": statistics.fmean([m["TA"] for m in base]), "UA_std": 0.0, "RA_std": 0.0}

    def pct(v, sd=None):
        if not isinstance(v, (int, float)):
            return "–"
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if isinstance(sd, (int, float)) and sd else "")

    lines = ["| run | step | forgotten | UA | UA♣ | RA | TA | UA pending | RA pending |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in ([("original", start)] if start else []) + [("sequential", r) for r in seq] + \
            ([("batch", batch)] if batch else []):
        lines.append(f"| {label} | {r['step']} | {', '.join(r['forgotten']) or '–'} | {pct(r['UA'], r.get('UA_std'))} "
                     f"| {pct(r.get('UA_multihop'))} | {pct(r['RA'], r.get('RA_std'))} | {pct(r['TA'])} "
                     f"| {pct(r.get('UA_pending'))} | {pct(r.get('RA_pending'))} |")
    md = ["# SNAP batch and sequential unlearning (SNAP §4.7, Figure 5)", "",
          f"Targets in order: {', '.join(names)}. UA / UA♣ / RA: mean ± std over the targets forgotten so far; "
          "pending: the targets not yet unlearned; TA: general instructions. In %; the plot is "
          "`snap_figure5.png`.", "", *lines, ""]
    atomic_write_text(o / "snap_figure5.md", "\n".join(md))
    atomic_write_json(o / "snap_figure5.json", {"targets": names, "original": start, "sequential": seq,
                                                "batch": batch})
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = ([start] if start else []) + seq
    for key, color in (("UA", "tab:red"), ("RA", "tab:blue"), ("TA", "tab:green")):
        xs = [p["step"] for p in pts if isinstance(p.get(key), (int, float))]
        ys = [100 * p[key] for p in pts if isinstance(p.get(key), (int, float))]
        if xs:
            ax.plot(xs, ys, marker="o", color=color, label=f"{key} (sequential)")
            sds = [100 * (p.get(f"{key}_std") or 0.0) for p in pts if isinstance(p.get(key), (int, float))]
            ax.fill_between(xs, [y - s for y, s in zip(ys, sds)], [y + s for y, s in zip(ys, sds)],
                            color=color, alpha=0.15)
        if batch and isinstance(batch.get(key), (int, float)):
            ax.axhline(100 * batch[key], color=color, linestyle="--", linewidth=1, label=f"{key} (batch)")
    ax.set_xlabel("targets unlearned")
    ax.set_ylabel("%")
    ax.set_xticks(range(0, len(names) + 1))
    ax.set_ylim(-5, 105)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = o / "snap_figure5.tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, o / "snap_figure5.png")
    print(f"figure: {o / 'snap_figure5.png'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="tofu,audit,snap,rwku", help="comma-separated: tofu, audit, snap, rwku")
    ap.add_argument("--work", default="runs/reproduce")
    ap.add_argument("--out", default="benchmarks/results/reproduce")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tofu-source", default=os.path.relpath(TOFU_DIR, ROOT))
    ap.add_argument("--splits", default="forget01", help="TOFU forget splits (forget01,forget05)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default="templates_none,templates_none_orig",
                    help="committed ULMR data kinds (benchmarks/data/ulmr_tofu_<split>_<kind>)")
    ap.add_argument("--methods", default="ga,kl,dpo,npo")
    ap.add_argument("--snap-methods", default="snap",
                    help="SNAP-objective rows on the ULMR data + retain set (snap, euclidean, fisher; '' for none)")
    ap.add_argument("--lr", default="1e-4", help="one value, or method=value pairs")
    ap.add_argument("--alpha", default="0,0.2,0.4,0.6", help="ULMR α sweep (weight of the Base model)")
    ap.add_argument("--epochs", type=int, default=None, help="override every method's epochs (default: presets)")
    ap.add_argument("--retain-authors", type=int, default=3)
    ap.add_argument("--eval-max-samples", type=int, default=60)
    ap.add_argument("--audit-alpha", default="0,0.4", help="the two ULMR α audited")
    ap.add_argument("--audit-max-samples", type=int, default=20)
    ap.add_argument("--audit-attacks", default=None, help="subset of attacks (default: all)")
    ap.add_argument("--snap-data", default="templates", help="committed SNAP data kind (snap_rwku_*_<kind>)")
    ap.add_argument("--snap-targets", default=None, help="comma-separated targets (default: every committed one)")
    ap.add_argument("--snap-rows", default=",".join(r[0] for r in SNAP_ROWS),
                    help="SNAP part rows: " + ", ".join(r[0] for r in SNAP_ROWS))
    ap.add_argument("--snap-modes", default=",".join(SNAP_MODES),
                    help="SNAP §4.7 runs of every --snap-targets target: batch, sequential ('' for none)")
    ap.add_argument("--snap-lr", type=float, default=1e-4)
    ap.add_argument("--snap-seed", type=int, default=0)
    ap.add_argument("--general", default="../shared/data/rwku/1_Stephen_King/fluency.json",
                    help="general instructions for TA (SNAP: dolly-15k)")
    ap.add_argument("--max-general", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="smoke-run sizes into <work>-quick / <out>-quick")
    reproduce_rwku.add_arguments(ap)
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # every path (--work, --out, the committed data) is relative to the repository root
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.data = [s.strip() for s in args.data.split(",") if s.strip()]
    if args.quick:
        args.work, args.out = args.work.rstrip("/") + "-quick", args.out.rstrip("/") + "-quick"
        args.seeds, args.methods, args.data, args.epochs = args.seeds[:1], "ga", args.data[:1], 1
        args.snap_methods = ""
        args.eval_max_samples, args.alpha, args.audit_alpha = 8, "0,0.4", "0.4"
        args.audit_max_samples, args.audit_attacks = 5, "quantization,membership"
        args.snap_rows, args.max_general = "SNAP,Prompting", 8
        args.snap_targets = args.snap_targets or "Stephen King"
        args.snap_modes = ""
        reproduce_rwku.quick(args)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"tofu", "audit", "snap", "rwku"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)} (known: tofu, audit, snap, rwku)")
    args.snap_rows = [r.strip() for r in str(args.snap_rows).split(",") if r.strip()]
    bad = set(args.snap_rows) - {r[0] for r in SNAP_ROWS}
    if bad:
        raise SystemExit(f"--snap-rows: unknown {sorted(bad)} (known: {', '.join(r[0] for r in SNAP_ROWS)})")
    args.snap_targets = [x.strip() for x in args.snap_targets.split(",")] if args.snap_targets else None
    args.snap_modes = [m.strip() for m in str(args.snap_modes).split(",") if m.strip()]
    if set(args.snap_modes) - set(SNAP_MODES):
        raise SystemExit(f"--snap-modes: unknown {sorted(set(args.snap_modes) - set(SNAP_MODES))} "
                         f"(known: {', '.join(SNAP_MODES)})")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    t0 = time.time()
    if "tofu" in parts or "audit" in parts:
        tofu = tofu_part(args, steps, work, out)  # the audit needs its models (finished steps are skipped)
        if "audit" in parts:
            steps.part = "audit"
            audit_part(args, steps, work, out, tofu)
            steps.part = "tofu"
        write_part_record(steps, out, time.time() - t0, ("tofu", "audit"))
    if "snap" in parts:
        t1 = time.time()
        steps.part = "snap"
        snap_part(args, steps, work, out)
        if args.snap_modes:
            snap_modes_part(args, steps, work, out)
        write_part_record(steps, out / "snap", time.time() - t1, ("snap",))
    if "rwku" in parts:
        reproduce_rwku.rwku_part(args, steps, work, out)  # writes <out>/rwku/commands.sh and timings.json itself
    return 0


def write_part_record(steps: Steps, out: Path, seconds: float, parts: tuple = ("tofu", "audit")) -> None:
    """``commands.sh`` and ``timings.json`` of ``parts`` (the TOFU + audit record in ``<out>``, the SNAP
    part's in ``<out>/snap``), with the teaching preset beside the steps."""
    total = write_record(steps, out, parts, seconds, extra={"teach": TEACH})
    print(f"total of steps {total:.0f} s (this invocation {seconds:.0f} s); record in {out / 'commands.sh'}")


if __name__ == "__main__":
    raise SystemExit(main())
