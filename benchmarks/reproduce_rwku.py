"""The ``rwku`` part of ``benchmarks/reproduce.py``: ULMR Table 4 on RWKU targets, resumable step by step.

For every ``--rwku-targets`` target (default: Stephen King, Confucius, Bruce Lee, the folders
``../shared/data/rwku/1_Stephen_King`` ...), with one seed (``--rwku-seed``):

* **Before** -- ``obliviate eval rwku`` of the model itself (``--model``, no training: RWKU's
  targets are knowledge the model learned in pre-training, which is also why there is no
  Retraining row -- nothing can be re-trained without the target);
* the baselines of ``--rwku-methods`` (GA, KL of Table 4; NPO, GradDiff, NPO+RT too) --
  ``obliviate train --method NAME --forget rwku:<target>:passage``: RWKU's forget corpus, plain
  text with the loss on every token, as RWKU trains GA / NPO; the methods with a retain term read
  the committed SNAP hard-retaining questions of the target
  (``benchmarks/data/snap_rwku_<n>_<slug>_templates/retain_train.jsonl``, answered by the original
  model; RWKU's neighbor probes are never trained on);
* **ULMR** -- ``obliviate train --method ulmr`` (SFT) on the committed pairs of
  ``benchmarks/data/ulmr_rwku_<n>_<slug>_<--rwku-data>`` (rewritten from the SNAP set's *training*
  forgetting questions by ``benchmarks/make_data.py``; never regenerated here), then
  ``obliviate merge`` with the original model at every ``--rwku-alpha`` (α = 0 is the SFT model).

Every model is scored by ``obliviate eval rwku --utility mmlu`` (forget FB / QA / AA, neighbor FB /
QA, MIA FM / RM, MMLU as Table 4's Gen). DPO is listed but not run: RWKU's DPO trains on
Llama-3-8B-written pairs of real and made-up biographies (``<target>_Pair``) that are neither in
``../shared/data/rwku`` nor made by any ``obliviate augment`` generator, and obliviate's DPO needs
question / answer pairs whose dispreferred answer states the knowledge.

Outputs under ``<out>/rwku/``: ``config.json`` (the resolved settings), ``runs/<target>/<run>/``
(each evaluation's ``metrics.json`` -- standing for its step, see
:class:`reproduce_common.Steps` -- its ``samples.jsonl`` and each training run's
``train_log.jsonl``), ``rwku_table4.md`` / ``.json`` (mean ± std over the targets, every target's
row, the paper's Table 4), ``commands.sh`` and ``timings.json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from make_data import RWKU_TARGETS, ulmr_rwku_name  # noqa: E402
from reproduce_common import (DATA, EFFECTIVE_BATCH, MICRO_BATCH, ROOT, Steps, _cell, _cli, _floats,  # noqa: E402
                              _lr_map, _slug, mean_std, read_train_log, write_record)

DEFAULT_MODEL = "smollm2-135m-instruct"
RWKU_SOURCE = os.path.relpath(ROOT.parent / "shared" / "data" / "rwku", ROOT)
DEFAULT_TARGETS = ",".join(folder for _, folder, *_ in RWKU_TARGETS)
DEFAULT_KIND = "templates_none"
#: baselines that train on RWKU's forget corpus (plain text), in table order
BASELINES = ("ga", "kl", "npo", "graddiff", "npo_rt")
#: the baselines whose loss has a retain term (they read the SNAP hard-retaining questions)
NEEDS_RETAIN = ("kl", "graddiff", "npo_rt")
NAMES = {"ga": "GA", "kl": "KL", "npo": "NPO", "graddiff": "GradDiff", "npo_rt": "NPO+RT", "dpo": "DPO"}
#: Table 4 rows that cannot be run here, and why (shown in the table)
NOT_RUN = {
    "dpo": ("RWKU's DPO trains on Llama-3-8B-written pairs of a real and a made-up biography of the target "
            "(`<target>_Pair`, RWKU generation/pair_generation.py): not in ../shared/data/rwku and not made by any "
            "`obliviate augment` generator; obliviate's DPO needs question / answer pairs whose dispreferred "
            "answer states the knowledge (the forget corpus is plain text, the SNAP / ULMR questions carry "
            "refusals)"),
}
RETRAIN_NOTE = ("No Retraining row: RWKU's targets are pre-training knowledge of the model, so no model without "
                "them can be trained here (ULMR Table 4 has none either).")
#: the ``eval rwku`` metric keys of Table 4's columns (every value ×100: ROUGE-L recall and MMLU
#: accuracy as %, the MIA mean token NLL ×100 as ULMR prints it, ``obliviate.evals.rwku.MIA_SCALE``)
COLUMNS = [("Forget FB", "forget_fb"), ("Forget QA", "forget_qa"), ("Forget AA", "forget_aa"),
           ("Forget All", "forget_all"), ("Neighbor FB", "neighbor_fb"), ("Neighbor QA", "neighbor_qa"),
           ("Neighbor All", "neighbor_all"), ("MIA FM", "mia_fm"), ("MIA RM", "mia_rm"), ("Gen (MMLU)", "utility_gen")]
SCALE = 100.0
#: ULMR Table 4 (Llama-3-8B-Instruct; the paper does not say which RWKU targets it averaged)
PAPER = {
    "Base Model": (85.73, 73.57, 75.99, 78.43, 91.39, 81.97, 86.25, 222.62, 219.34, 65.70),
    "Gradient Ascent": (38.16, 31.25, 45.72, 38.79, 82.91, 70.14, 76.68, 248.77, 219.68, 63.17),
    "KL Minimization": (40.78, 33.61, 42.78, 39.28, 68.95, 62.01, 65.82, 247.84, 228.35, 63.16),
    "DPO": (44.22, 38.15, 39.85, 40.89, 57.96, 49.56, 53.37, 238.73, 240.56, 63.14),
    "ULMR": (30.70, 24.75, 28.35, 27.35, 73.11, 66.54, 69.58, 268.02, 258.99, 64.55),
}
#: the paper's row -> ours
PAPER_ROWS = {"Base Model": "Before", "Gradient Ascent": "GA", "KL Minimization": "KL", "DPO": "DPO",
              "ULMR": "ULMR (every α)"}


def add_arguments(ap) -> None:
    """Add the ``--rwku-*`` options of the part to ``ap`` (an ``argparse.ArgumentParser``)."""
    ap.add_argument("--rwku-targets", default=DEFAULT_TARGETS,
                    help="comma-separated RWKU targets ('1_Stephen_King', 'Stephen King' or 'stephen_king'; default: "
                         "the three with committed SNAP / ULMR data)")
    ap.add_argument("--rwku-methods", default="ga,kl",
                    help=f"baselines on the forget corpus: {', '.join(BASELINES)} (dpo: listed, not run)")
    ap.add_argument("--rwku-lr", default="1e-4",
                    help="one value, or method=value pairs (default 1e-4 for every method, as the TOFU part: "
                         "the baselines' preset 1e-5 barely moves the 135M model in its ~20 optimizer steps)")
    ap.add_argument("--rwku-alpha", default="0,0.2,0.4,0.6", help="ULMR merge α sweep (weight of the original model)")
    ap.add_argument("--rwku-epochs", type=int, default=None,
                    help="override every method's epochs (default: the presets', 5)")
    ap.add_argument("--rwku-eval-max-samples", type=int, default=None,
                    help="cap on every forget / neighbor / MIA split (default: all, 3-55 items per split)")
    ap.add_argument("--rwku-utility-max-samples", type=int, default=100,
                    help="MMLU items per evaluation (RWKU: 171 per target; default: %(default)s)")
    ap.add_argument("--rwku-seed", type=int, default=0)
    ap.add_argument("--rwku-data", default=DEFAULT_KIND,
                    help="committed ULMR data kind (benchmarks/data/ulmr_rwku_<n>_<slug>_<kind>)")
    ap.add_argument("--rwku-source", default=RWKU_SOURCE, help="RWKU folder (default: %(default)s)")


def quick(args) -> None:
    """Shrink the part to a smoke run: the first target, GA and ULMR (α = 0, 0.4), one epoch, tiny evaluations."""
    args.rwku_targets = _split(args.rwku_targets)[0]
    args.rwku_methods = "ga"
    args.rwku_alpha = "0,0.4"
    args.rwku_epochs = 1
    args.rwku_eval_max_samples = 4
    args.rwku_utility_max_samples = 8


def _split(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def known_targets(kind: str = DEFAULT_KIND) -> list[dict]:
    """Every RWKU target of ``benchmarks/make_data.py`` (committed or not): name, folder, slug, data paths."""
    out = []
    for suffix, folder, target, _alias, _size in RWKU_TARGETS:
        ulmr = DATA / ulmr_rwku_name(suffix, kind)
        out.append({"target": target, "folder": folder, "slug": _slug(target), "suffix": suffix,
                    "retain": str(DATA / f"snap_rwku_{suffix}_templates" / "retain_train.jsonl"),
                    "ulmr_data": str(ulmr), "pairs": str(ulmr / "forget_augmented.jsonl")})
    return out


def rwku_targets(names: list[str] | None = None, kind: str = DEFAULT_KIND) -> list[dict]:
    """The targets with committed data: RWKU folder, name, slug, and the SNAP / ULMR data they train on.

    ``names`` picks targets by RWKU folder ('1_Stephen_King'), name ('Stephen King') or slug
    ('stephen_king'), in the order given; the ULMR data of ``kind`` must be committed."""
    known = known_targets(kind)
    if not names:
        chosen = known
    else:
        chosen = []
        for n in names:
            hit = [t for t in known if n in (t["folder"], t["target"], t["slug"], t["suffix"])]
            if not hit:
                raise SystemExit(f"--rwku-targets: no committed data for {n!r} (known: "
                                 f"{', '.join(t['folder'] for t in known)})")
            chosen += [t for t in hit if t not in chosen]
    for t in chosen:
        for key, how in (("retain", f"--only snap_rwku_{t['suffix']}_templates"),
                         ("pairs", f"--only {Path(t['ulmr_data']).name}")):
            if not (ROOT / t[key]).is_file():
                raise SystemExit(f"{t[key]}: committed data missing "
                                 f"(build it with python benchmarks/make_data.py {how})")
    return chosen


def settings(args) -> dict:
    """The part's resolved settings from the ``--rwku-*`` options (validated; written to ``config.json``)."""
    methods = _split(args.rwku_methods)
    bad = [m for m in methods if m not in BASELINES and m not in NOT_RUN]
    if bad:
        raise SystemExit(f"--rwku-methods: unknown {bad} (known: {', '.join(BASELINES)}; dpo is listed, not run)")
    alphas = _floats(args.rwku_alpha)
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        raise SystemExit(f"--rwku-alpha: every α must be in [0, 1], got {alphas}")
    for name in ("rwku_eval_max_samples", "rwku_utility_max_samples", "rwku_epochs"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: must be >= 1, got {v}")
    kind = getattr(args, "rwku_data", DEFAULT_KIND) or DEFAULT_KIND
    return {"model": getattr(args, "model", None) or DEFAULT_MODEL,
            "targets": rwku_targets(_split(args.rwku_targets), kind),
            "methods": [m for m in methods if m in BASELINES], "not_run": [m for m in methods if m in NOT_RUN],
            "lr": _lr_map(args.rwku_lr, list(BASELINES) + ["ulmr"]), "alphas": alphas,
            "epochs": args.rwku_epochs, "eval_max_samples": args.rwku_eval_max_samples,
            "utility_max_samples": args.rwku_utility_max_samples, "seed": args.rwku_seed, "data": kind,
            "source": getattr(args, "rwku_source", None) or RWKU_SOURCE}


def ulmr_label(kind: str, alpha: float) -> str:
    """The table row of ULMR at ``alpha`` on data ``kind``."""
    return f"ULMR (α={alpha:g})" if kind == DEFAULT_KIND else f"ULMR [{kind}] (α={alpha:g})"


def rwku_part(args, steps: Steps, work: Path, out: Path) -> None:
    """Train, merge and evaluate every Table 4 row on every target; write the tables under ``<out>/rwku``.

    Every step is one ``obliviate`` command run by ``steps`` (see :class:`reproduce_common.Steps`):
    an evaluation whose ``metrics.json`` is archived in ``<out>/rwku/runs/<target>/<run>/`` is
    restored instead of run, so its model is trained only when an evaluation is still missing.
    The tables hold every archived run of the seed (of this invocation or an earlier one)."""
    from obliviate.io import atomic_write_json

    s = settings(args)
    steps.part = "rwku"
    o = out / "rwku"
    o.mkdir(parents=True, exist_ok=True)
    atomic_write_json(o / "config.json", {**{k: v for k, v in s.items() if k != "targets"},
                                          "targets": [t["folder"] for t in s["targets"]],
                                          "micro_batch": MICRO_BATCH,
                                          "effective_batch": {m: EFFECTIVE_BATCH.get(m, 32)
                                                              for m in [*s["methods"], "ulmr"]}})
    model, seed = s["model"], s["seed"]
    extra = ["--set", f"epochs={s['epochs']}"] if s["epochs"] else []
    ev_args = ["--data-source", s["source"], "--utility", "mmlu",
               *(["--max-samples", str(s["eval_max_samples"])] if s["eval_max_samples"] else []),
               "--utility-max-samples", str(s["utility_max_samples"]), "--no-progress"]

    def batch(method: str) -> list[str]:
        """``--set`` options: the CPU micro-batch, accumulated to the preset's effective batch."""
        eff = EFFECTIVE_BATCH.get(method, 32)
        return ["--set", f"batch_size={MICRO_BATCH}", "--set", f"grad_accum={max(1, eff // MICRO_BATCH)}"]

    for t in s["targets"]:
        name = t["target"]
        w = work / "rwku" / t["slug"]
        ev = w / "eval"
        arch = o / "runs" / t["slug"]

        def evaluate(label: str, path, folder: str, needs: tuple = ()) -> None:
            """``obliviate eval rwku`` of ``path``, archived as ``runs/<target>/<folder>/metrics.json``."""
            d = ev / folder
            steps.run(f"RWKU {name} eval {label}",
                      _cli("eval", "rwku", "--model", str(path), "--target", name, *ev_args, "--out", str(d)),
                      d / "metrics.json", archive={d / "metrics.json": arch / folder / "metrics.json"},
                      needs=needs, keep={d / "samples.jsonl": arch / folder / "samples.jsonl"})

        evaluate("Before", model, "before")
        for m in s["methods"]:
            run = f"{m}_s{seed}"
            d = w / run
            retain = ["--retain", t["retain"]] if m in NEEDS_RETAIN else []
            need = steps.step(f"RWKU {name} {NAMES[m]} train seed {seed}",
                              _cli("train", "--method", m, "--model", model, "--forget", f"rwku:{name}:passage",
                                   "--rwku-source", s["source"], *retain, "--set", f"lr={s['lr'][m]:g}", *batch(m),
                                   "--set", f"seed={seed}", *extra, "--out", str(d)),
                              d / "model" / "config.json", keep={d / "train_log.jsonl": arch / run / "train_log.jsonl"})
            evaluate(f"{NAMES[m]} seed {seed}", d / "model", run, (need,))
        run = f"ulmr_{s['data']}_s{seed}"
        u = w / run
        need_train = steps.step(f"RWKU {name} ULMR train seed {seed}",
                                _cli("train", "--method", "ulmr", "--model", model, "--forget", t["pairs"],
                                     "--set", f"lr={s['lr']['ulmr']:g}", *batch("ulmr"), "--set", f"seed={seed}",
                                     *extra, "--out", str(u / "train")),
                                u / "train" / "model" / "config.json",
                                keep={u / "train" / "train_log.jsonl": arch / run / "train_log.jsonl"})
        for a in s["alphas"]:
            if a == 0:  # α = 0 is θ' itself: the SFT model, no merge
                path, need = u / "train" / "model", need_train
            else:
                path = u / f"merged_alpha_{a:g}"
                need = steps.step(f"RWKU {name} ULMR merge α={a:g} seed {seed}",
                                  _cli("merge", "--base", model, "--tuned", str(u / "train" / "model"),
                                       "--alpha", f"{a:g}", "--out", str(path)),
                                  path / "merge.json", needs=(need_train,))
            evaluate(f"{ulmr_label(s['data'], a)} seed {seed}", path, f"ulmr_{s['data']}_a{a:g}_s{seed}", (need,))
    every = known_targets(s["data"])
    slugs = [t["slug"] for t in every]
    names = {t["slug"]: t["target"] for t in every}
    by_name = lambda rows: {label: {names[k]: v for k, v in per.items()} for label, per in rows.items()}
    results = by_name(collect_results(o / "runs", slugs, seed))
    training = training_runs(o / "runs", slugs, seed, s["lr"])
    shown = [t["target"] for t in every if any(t["target"] in per for per in results.values())]
    write_rwku_tables(o, results, shown, s, training, by_name(refusal_shares(o / "runs", slugs, seed)))
    write_record(steps, o, ("rwku",))


def row_of(folder: str, seed: int) -> tuple[tuple, str] | None:
    """(sort key, table row) of an archived run folder of ``seed``.

    Folders: ``before``, ``<method>_s<seed>`` (``ga_s0``), ``ulmr_<kind>_a<α>_s<seed>``
    (``ulmr_templates_none_a0.4_s0``); ``None`` for another seed or an unknown folder."""
    if folder == "before":
        return (0, "", 0.0), "Before"
    m = re.fullmatch(r"ulmr_(.+)_a([0-9.]+)_s(\d+)", folder)
    if m:
        if int(m.group(3)) != seed:
            return None
        a = float(m.group(2))
        return (2, "" if m.group(1) == DEFAULT_KIND else m.group(1), a), ulmr_label(m.group(1), a)
    m = re.fullmatch(r"(.+)_s(\d+)", folder)
    if m and m.group(1) in BASELINES and int(m.group(2)) == seed:
        return (1, f"{BASELINES.index(m.group(1)):02d}", 0.0), NAMES[m.group(1)]
    return None


def _archived(runs: Path, slugs: list[str], seed: int, filename: str):
    """``(sort key, row label, slug, file)`` of every archived ``runs/<slug>/<run>/<filename>`` of ``seed``."""
    for slug in slugs:
        for f in sorted((runs / slug).glob(f"*/{filename}")) if (runs / slug).is_dir() else []:
            row = row_of(f.parent.name, seed)
            if row is not None:
                yield (*row, slug, f)


def _table_order(found: dict[str, tuple[tuple, dict]]) -> dict[str, dict]:
    """``{label: per}`` of ``{label: (sort key, per)}``, rows in table order (Before, baselines, ULMR by α)."""
    return {label: per for label, (_, per) in sorted(found.items(), key=lambda kv: kv[1][0])}


def collect_results(runs: Path, slugs: list[str], seed: int) -> dict[str, dict[str, dict]]:
    """``{row: {slug: metrics}}`` from every archived ``runs/<slug>/<run>/metrics.json`` of ``seed``, rows in
    table order (Before, the baselines, ULMR by α)."""
    found: dict[str, tuple[tuple, dict]] = {}
    for key, label, slug, f in _archived(runs, slugs, seed, "metrics.json"):
        payload = json.loads(f.read_text())
        found.setdefault(label, (key, {}))[1][slug] = payload.get("metrics", payload)
    return _table_order(found)


def refusal_shares(runs: Path, slugs: list[str], seed: int, detector=None) -> dict[str, dict[str, dict]]:
    """``{row: {slug: {"forget", "forget_n", "neighbor", "neighbor_n"}}}``: the share of the forget and
    of the neighbor probe answers in every archived ``samples.jsonl`` of ``seed`` that the refusal
    detector (default: the shipped learned one, as SNAP's UA / RA) calls a refusal. Tells apart a
    model that forgot (wrong or empty answers) from one that refuses, and shows whether a refusal
    learned for the target spreads to its neighbors. Loads the detector only if there are samples."""
    found: dict[str, tuple[tuple, dict]] = {}
    texts: list[str] = []
    where: list[tuple[str, str, str]] = []
    for key, label, slug, f in _archived(runs, slugs, seed, "samples.jsonl"):
        found.setdefault(label, (key, {}))[1][slug] = {}
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else {}
            split = str(rec.get("set", "")).split("_")[0]
            if split in ("forget", "neighbor") and isinstance(rec.get("generation"), str):
                texts.append(rec["generation"])
                where.append((label, slug, split))
    if not texts:
        return {}
    if detector is None:
        from obliviate.evals.refusal import RefusalDetector

        detector = RefusalDetector()
    flags = detector.predict(texts)
    counts: dict[tuple[str, str, str], list[int]] = {}
    for (label, slug, split), flag in zip(where, flags):
        c = counts.setdefault((label, slug, split), [0, 0])
        c[0] += bool(flag)
        c[1] += 1
    for (label, slug, split), (k, n) in counts.items():
        found[label][1][slug].update({split: k / n, f"{split}_n": n})
    return _table_order(found)


def training_runs(runs: Path, slugs: list[str], seed: int, lrs: dict) -> list[dict]:
    """Optimizer steps and final loss of every archived training log of ``seed``."""
    out = []
    for slug in slugs:
        for f in sorted((runs / slug).glob(f"*_s{seed}/train_log.jsonl")):
            run = f.parent.name
            method = "ulmr" if run.startswith("ulmr_") else run[: -len(f"_s{seed}")]
            log = read_train_log(f)
            out.append({"target": slug, "run": run, "lr": lrs.get(method),
                        "steps": log[-1]["step"] if log else None, "final_loss": log[-1]["loss"] if log else None})
    return out


def cell(values: list[float]) -> str:
    """Mean ± sample std (×100) of the values, the bare value for one, "–" for none."""
    return _cell(values, SCALE)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None


def write_rwku_tables(o: Path, results: dict[str, dict[str, dict]], targets: list[str], s: dict,
                      training: list[dict] | None = None, refusals: dict[str, dict[str, dict]] | None = None) -> None:
    """``rwku_table4.md`` / ``.json`` in ``o``: mean ± std over ``targets`` (``results``: row -> target ->
    ``eval rwku`` metrics), every target's own row, the paper's Table 4, the training runs, and
    (``refusals``: :func:`refusal_shares` by target name) how often each model refuses the probes."""
    from obliviate.io import atomic_write_json, atomic_write_text

    head = " | ".join(c for c, _ in COLUMNS)
    sep = " | ".join("---:" for _ in COLUMNS)
    lines = [f"| Method | targets | {head} |", f"| --- | ---: | {sep} |"]
    mean: dict[str, dict] = {}
    for row, per in results.items():
        cells, mean[row] = [], {}
        for _, k in COLUMNS:
            vals = [v for v in (_num(per[tg].get(k)) for tg in targets if tg in per) if v is not None]
            cells.append(cell(vals))
            if vals:
                mu, sd = mean_std(vals)
                mean[row][k] = {"mean": mu, "std": sd, "n": len(vals)}
        lines.append(f"| {row} | {sum(tg in per for tg in targets)} | " + " | ".join(cells) + " |")
    for m in NOT_RUN:
        lines.append(f"| {NAMES[m]} (not run, see below) | 0 | " + " | ".join("–" for _ in COLUMNS) + " |")
    per_lines = [f"| Method | target | {head} |", f"| --- | --- | {sep} |"]
    for row, per in results.items():
        for tg in targets:
            if tg in per:
                vals = [_num(per[tg].get(k)) for _, k in COLUMNS]
                per_lines.append(f"| {row} | {tg} | " + " | ".join(cell([] if v is None else [v]) for v in vals) + " |")
    paper = [f"| Method (paper) | our row | {head} |", f"| --- | --- | {sep} |"]
    for row, vals in PAPER.items():
        paper.append(f"| {row} | {PAPER_ROWS[row]} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    train_lines = ["| target | run | lr | optimizer steps | final loss |", "| --- | --- | ---: | ---: | ---: |"]
    for r in training or []:
        fl = "–" if r["final_loss"] is None else f"{r['final_loss']:.4g}"
        lr = "–" if r["lr"] is None else f"{r['lr']:g}"
        train_lines.append(f"| {r['target']} | {r['run']} | {lr} | {r['steps'] if r['steps'] is not None else '–'} "
                           f"| {fl} |")
    ref_lines = ["| Method | forget refused | neighbor refused | " + " | ".join(f"{tg} forget / neighbor" for tg in targets)
                 + " |", "| --- | ---: | ---: | " + " | ".join("---:" for _ in targets) + " |"]
    for row, per in (refusals or {}).items():
        share = lambda split: [per[tg][split] for tg in targets if split in per.get(tg, {})]
        each = [f"{100 * per[tg]['forget']:.0f} / {100 * per[tg]['neighbor']:.0f}"
                if "forget" in per.get(tg, {}) and "neighbor" in per.get(tg, {}) else "–" for tg in targets]
        ref_lines.append(f"| {row} | {_cell(share('forget'), 100)} | {_cell(share('neighbor'), 100)} | "
                         + " | ".join(each) + " |")
    lrs = ", ".join(f"{NAMES.get(m, m)} {s['lr'][m]:g}" for m in s["methods"]) + \
        (", " if s["methods"] else "") + f"ULMR {s['lr']['ulmr']:g}"
    cap = s["eval_max_samples"]
    notes = [
        f"Model `{s['model']}`; seed {s['seed']}; targets {', '.join(targets) or '(none evaluated yet)'}. Baselines "
        "train on RWKU's forget corpus (`rwku:<target>:passage`, plain text, loss on every token)"
        + (f"; {', '.join(NAMES[m] for m in s['methods'] if m in NEEDS_RETAIN)} read the committed SNAP "
           "hard-retaining questions of the target as retain data (`snap_rwku_*_templates/retain_train.jsonl`, "
           "answered by the original model; RWKU's neighbor probes are never trained on)"
           if any(m in NEEDS_RETAIN for m in s["methods"]) else "")
        + f". ULMR: SFT on `benchmarks/data/ulmr_rwku_*_{s['data']}` (rewrites of the SNAP sets' training "
        "forgetting questions with negative responses), then `obliviate merge` with the original model at each α "
        "(weight of the original; α = 0 is the SFT model).",
        f"lr: {lrs}; epochs {s['epochs'] or 'of the presets (5)'}; micro-batch {MICRO_BATCH} with accumulation to "
        f"the presets' effective batch (GA / KL / NPO 32, ULMR 16).",
        f"Evaluation: `obliviate eval rwku --utility mmlu`, {f'at most {cap} items' if cap else 'every item'} per "
        f"forget / neighbor / MIA split, {s['utility_max_samples']} MMLU items (5-shot). Forget / neighbor: ROUGE-L "
        "recall ×100 (forget lower = forgotten, neighbor higher = kept); All = mean of the levels; MIA: mean "
        "per-text token NLL ×100 (FM above RM after forgetting); Gen: MMLU accuracy ×100. Mean ± sample std over "
        "the targets.",
        RETRAIN_NOTE,
    ] + [f"{NAMES[m]} not run: {why}." for m, why in NOT_RUN.items()]
    md = [f"# ULMR Table 4 on RWKU targets ({s['data']} ULMR data), seed {s['seed']}", "",
          *[n + "\n" for n in notes],
          "## Mean ± std over the targets", "", *lines, "",
          "## Every target", "", *per_lines, "",
          "## The paper (Llama-3-8B-Instruct, ULMR Table 4)", "",
          "The paper does not say which RWKU targets it averaged, nor the α of its ULMR row.", "", *paper, "",
          *(["## Refusals", "",
             "The share (%) of forget and neighbor probe answers that the shipped learned refusal detector "
             "(`obliviate.evals.refusal.RefusalDetector`, the one that scores SNAP's UA / RA) calls a refusal; "
             "mean ± std over the targets, then each target's forget / neighbor share. ROUGE-L cannot tell a "
             "refusal from a wrong answer: this can.", "", *ref_lines, ""] if refusals else []),
          "## Training runs", "", *train_lines, ""]
    atomic_write_text(o / "rwku_table4.md", "\n".join(md))
    atomic_write_json(o / "rwku_table4.json", {
        "targets": targets, "columns": [{"label": c, "key": k, "scale": SCALE} for c, k in COLUMNS],
        "mean": mean, "rows": results, "not_run": {NAMES[m]: why for m, why in NOT_RUN.items()},
        "paper": {row: dict(zip([k for _, k in COLUMNS], vals)) for row, vals in PAPER.items()},
        "training": training or [], "refusals": refusals or {}, "settings": {k: v for k, v in s.items() if k != "targets"}})
    print(f"table: {o / 'rwku_table4.md'}", flush=True)
