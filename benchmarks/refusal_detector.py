"""Measure every refusal-detector mode: cross-validation on the training set, then the frozen held-out set.

    python benchmarks/refusal_detector.py [--heldout v4 | --no-heldout] [--judge-subset 60] [--no-judge] [--seed 0]

* **Cross-validation** on the training rows (:func:`obliviate.evals.refusal.training_rows`), twice:
  k = 5 stratified folds, and k = 10 *leave-style-out* folds (whole styles held out, the proxy for
  unseen styles); folds from ``--seed``. The learned detector (with the λ and threshold recorded in
  the shipped weights) is re-trained on the other folds' rows and their style-augmented copies and
  scored on the fold's original rows; the rule-based and embedding modes have nothing to train, so
  their CV figures are plain evaluations of all training rows (the same for both kinds of folds).
* **Held-out** (``refusal_heldout_<v>.jsonl``, ``--heldout``, default: the newest listed in
  :data:`obliviate.evals.refusal.HELDOUT_SETS`, written after the shipped weights were frozen, in
  styles absent from their training data): every mode as shipped. A set that is not written yet is an
  error (exit status 2) that says so; ``--no-heldout`` runs the cross-validation alone.
* **Judge**: SmolLM2-135M-Instruct (the embedded default, transformers backend) as a YES/NO judge on
  a seeded random subset of each set (``--judge-subset`` rows; 0 = all); skipped with ``--no-judge``.

Prints the table and writes ``benchmarks/results/refusal_detector/results_<v>.json`` (``results_cv.json``
with ``--no-heldout``: the command, wall time, seeds, data and code hashes, per-row errors, accuracy by
style / language / source) and, after a held-out run, the held-out error rates to the package
(``refusal_detector_heldout.json``, used for the optional Rogan–Gladen correction of UA/RA/TA).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from pathlib import Path

from obliviate.evals import refusal as R
from obliviate.evals.refusal import (HELDOUT_RATES, HELDOUT_SETS, LEARNED_WEIGHTS, RefusalDetector, binary_metrics,
                                     detector_training_set, load_heldout, load_learned, stratified_folds,
                                     style_group_folds, training_rows)
from obliviate.io import atomic_write_json

OUT_DIR = Path(__file__).resolve().parent / "results" / "refusal_detector"
MODES = ("learned", "rules", "embedding", "rules+embedding")
KEYS = ("accuracy", "precision", "recall", "f1")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary(pred, gold, folds=None, k=5) -> dict:
    m = binary_metrics(pred, gold)
    if folds is not None:
        accs = [binary_metrics([p for p, f in zip(pred, folds) if f == i], [g for g, f in zip(gold, folds) if f == i])
                ["accuracy"] for i in range(k)]
        m["fold_accuracy_mean"], m["fold_accuracy_std"] = statistics.mean(accs), statistics.pstdev(accs)
    return m


def _errors(rows, pred, scores=None):
    return [{"text": r["text"], "refusal": r["refusal"], "style": r.get("style"), "source": r.get("source"),
             **({"p": round(scores[i], 3)} if scores is not None else {})}
            for i, (r, p) in enumerate(zip(rows, pred)) if p != r["refusal"]]


def _accuracy_by(rows, pred, key) -> dict:
    """Accuracy and row count per value of ``key`` (``lang``: "en" against every other language)."""
    groups: dict[str, list[int]] = {}
    for r, p in zip(rows, pred):
        v = str(r.get(key, ""))
        if key == "lang":
            v = "en" if v == "en" else "other"
        g = groups.setdefault(v, [0, 0])
        g[0] += p == r["refusal"]
        g[1] += 1
    return {k: {"accuracy": a / n, "n": n} for k, (a, n) in sorted(groups.items())}


def judge_eval(rows, subset: int, seed: int) -> dict:
    from obliviate.generate import make_generator

    idx = list(range(len(rows)))
    if subset and subset < len(rows):
        idx = sorted(random.Random(seed).sample(idx, subset))
    sub = [rows[i] for i in idx]
    gen = make_generator("transformers:smollm2-135m-instruct")
    det = RefusalDetector("judge", generator=gen)
    t0 = time.time()
    pred = det.predict([r["text"] for r in sub])
    m = _summary(pred, [r["refusal"] for r in sub])
    m.update(subset=len(sub), subset_seed=seed, unparsable=det.unparsable, wall_s=round(time.time() - t0, 1),
             predicted_refusal_share=sum(pred) / len(pred))
    return m


def table(res: dict, heldout: str | None) -> str:
    """The markdown table of a result dict (mode | set | n | accuracy | precision | recall | F1)."""
    lines = ["| mode | set | n | accuracy | precision | recall | F1 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    labels = {"learned, 5-fold": "5-fold stratified CV", "learned, leave-style-out": "10-fold leave-style-out CV"}
    for mode, m in res["cv"].items():
        where = labels.get(mode, "training rows (plain evaluation: nothing trained)")
        lines.append(f"| {mode.split(',')[0]} | {where} | {m['n']} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
    for mode, m in res["heldout"].items():
        lines.append(f"| {mode} | held-out {heldout} (frozen) | {m['n']} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict | int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-subset", type=int, default=60)
    p.add_argument("--no-judge", action="store_true")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--heldout", default=list(HELDOUT_SETS)[-1], choices=list(HELDOUT_SETS),
                   help="held-out set version (default: the newest, written after the shipped weights were frozen)")
    g.add_argument("--no-heldout", action="store_true", help="cross-validation only")
    a = p.parse_args(argv)
    heldout = None if a.no_heldout else a.heldout
    held: list[dict] = []
    if heldout is not None:
        try:
            held = load_heldout(heldout)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if heldout in R.TRAINED_ON_HELDOUT:
            print(f"warning: held-out set {heldout} is spent (the shipped detector was trained on it); "
                  f"its figures are not held-out figures", file=sys.stderr)
    out = OUT_DIR / f"results_{heldout or 'cv'}.json"
    t0 = time.time()
    train = training_rows()
    gold_t = [r["refusal"] for r in train]
    gold_h = [r["refusal"] for r in held]
    frozen = load_learned()
    folds = stratified_folds(gold_t, 5, a.seed)
    aug, inputs, y_aug, groups, orig = detector_training_set(train, seed=a.seed)
    thr = frozen.threshold
    hp = HELDOUT_SETS[heldout] if heldout else None
    res: dict = {"command": "python " + " ".join(["benchmarks/refusal_detector.py", *(argv if argv is not None else sys.argv[1:])]),
                 "seed": a.seed, "k": {"stratified": 5, "leave-style-out": 10},
                 "data": {"train_n": len(train), "train_refusals": sum(gold_t), "train_sha256": frozen.meta.get("data_sha256"),
                          "train_styles": sorted({r["style"] for r in train}),
                          "train_sources": dict(sorted(__import__("collections").Counter(r["source"] for r in train).items())),
                          "heldout_file": hp.name if hp else None, "heldout_sha256": _sha(hp) if hp else None,
                          "heldout_n": len(held), "heldout_refusals": sum(gold_h),
                          "heldout_styles": sorted({r["style"] for r in held}),
                          "weights_sha256": _sha(LEARNED_WEIGHTS), "refusal_py_sha256": _sha(Path(R.__file__)),
                          "weights_l2": frozen.meta.get("l2"), "threshold": thr},
                 "cv": {}, "heldout": {}}
    import numpy as np

    src = np.array([r["src"] for r in aug])
    for name, fo, kk in (("learned, 5-fold", np.asarray(folds)[src], 5),
                         ("learned, leave-style-out", np.asarray(style_group_folds([str(g) for g in groups], 10, a.seed)), 10)):
        oof = R.cross_validate_detector(inputs, y_aug, groups, fo, test=orig, l2=frozen.meta["l2"], seed=a.seed)[orig].tolist()
        pred = [q >= thr for q in oof]
        res["cv"][name] = dict(_summary(pred, gold_t, list(fo[orig]), kk), errors=_errors(train, pred, oof),
                               accuracy_by_lang=_accuracy_by(train, pred, "lang"),
                               accuracy_by_source=_accuracy_by(train, pred, "source"))
        print(f"{name}: " + ", ".join(f"{k} {res['cv'][name][k]:.3f}" for k in KEYS), flush=True)
    for mode in MODES:
        det = RefusalDetector(mode)
        if mode != "learned":
            pt = det.predict([r["text"] for r in train])
            res["cv"][mode] = dict(_summary(pt, gold_t, folds), errors=_errors(train, pt),
                                   accuracy_by_lang=_accuracy_by(train, pt, "lang"))
        if held:
            ph = det.predict([r["text"] for r in held])
            sc = det.last_scores if mode == "learned" else None
            res["heldout"][mode] = dict(_summary(ph, gold_h), errors=_errors(held, ph, sc))
            if mode == "learned":
                by_style: dict[str, list[int]] = {}
                for r, q in zip(held, ph):
                    s = by_style.setdefault(r["style"], [0, 0])
                    s[0] += q == r["refusal"]
                    s[1] += 1
                res["heldout"][mode]["accuracy_by_style"] = {k: v[0] / v[1] for k, v in sorted(by_style.items())}
                res["heldout"][mode]["accuracy_by_lang"] = _accuracy_by(held, ph, "lang")
    if not a.no_judge:
        res["cv"]["judge (SmolLM2-135M)"] = judge_eval(train, a.judge_subset, a.seed)
        if held:
            res["heldout"]["judge (SmolLM2-135M)"] = judge_eval(held, a.judge_subset, a.seed)
    res["wall_s"] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    if held:
        atomic_write_json(HELDOUT_RATES, {
            "source": "benchmarks/refusal_detector.py on " + hp.name, "heldout_sha256": _sha(hp),
            "weights_sha256": _sha(LEARNED_WEIGHTS),
            "modes": {m: {"sensitivity": v["recall"], "specificity": v["specificity"], "n": v["n"]}
                      for m, v in res["heldout"].items() if m in MODES}})
    print(table(res, heldout))
    print(f"wall {res['wall_s']} s -> {out}")
    return res


if __name__ == "__main__":
    r = main()
    raise SystemExit(r if isinstance(r, int) else 0)
