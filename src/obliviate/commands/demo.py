"""``obliviate demo``: teach SmolLM2-135M a few fictitious TOFU authors, then make it forget one with ULMR.

Runs on a CPU in a few minutes, deterministically (fixed seeds):

1. **teach**: full fine-tuning of the embedded SmolLM2-135M-Instruct on the 20 QA pairs of each of
   ``--authors`` TOFU authors (as TOFU fine-tunes its models first), so it knows them;
2. **augment** (ULMR §3.1): the taught model itself (p_θ) rewrites each question of the forget
   author twice (Table 1) and writes a negative response for every rewrite (Table 2);
3. **unlearn** (ULMR §3.2): SFT of the taught model on the (rewrite, negative response) pairs;
4. **merge** (ULMR §3.3): θa = α·θ + (1 − α)·θ', θ = the taught model, θ' = the unlearned one;
5. **evaluate**: ROUGE-L recall of greedy answers on the forget author and on the other authors
   (retain), before and after, with a few example answers.
"""

from __future__ import annotations

import os
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="teach SmolLM2-135M a few TOFU authors, then ULMR-unlearn one (CPU, minutes)",
                       description=__doc__.strip().splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="run directory (default: %(default)s); stages already there "
                                                      "are reused")
    p.add_argument("--author-index", type=int, default=0, help="which of the taught authors to forget (0-based)")
    p.add_argument("--authors", type=int, default=3, help="number of TOFU authors taught (20 QA each)")
    p.add_argument("--first-author", type=int, default=0, help="index in TOFU 'full' of the first author taught")
    p.add_argument("--data-source", default=None,
                   help="TOFU hub id or local folder (default: ../shared/data/tofu when present, else locuslab/TOFU)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model to teach and unlearn (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=None, help="merge weight of the original (taught) model")
    p.add_argument("--teach-epochs", type=float, default=None)
    p.add_argument("--teach-lr", type=float, default=None)
    p.add_argument("--unlearn-epochs", type=float, default=None)
    p.add_argument("--unlearn-lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true",
                   help="delete --out first and start over; only a folder made by obliviate demo (it holds a "
                        ".obliviate-run.json marker) or an empty one is deleted, after every check passed")
    p.set_defaults(func=run)


def freeze_lower_layers(model, trainable_layers: int | None) -> int:
    """Freeze the input embedding and all but the top ``trainable_layers`` decoder layers; return how many
    layers were frozen (0 when ``trainable_layers`` is None or covers the whole model).

    Backpropagation then stops at the first trainable layer, which makes the demo's teaching step
    about a third cheaper on a CPU. The output projection tied to the embedding stays frozen too.
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if trainable_layers is None or layers is None or trainable_layers >= len(layers):
        return 0
    model.get_input_embeddings().requires_grad_(False)
    n_frozen = len(layers) - trainable_layers
    for layer in layers[:n_frozen]:
        layer.requires_grad_(False)
    return n_frozen


#: Settings tuned so that forget recall falls clearly and retain recall stays within 0.1 (README, "obliviate demo").
DEFAULTS = {
    "teach_epochs": 4.0, "teach_lr": 3e-4, "teach_batch": 4, "teach_trainable_layers": 15,
    "unlearn_epochs": 3.0, "unlearn_lr": 1e-4, "unlearn_batch": 8,
    "alpha": 0.4, "max_length": 160, "eval_max_new_tokens": 56,
    "n_rewrites": 2, "max_retries": 2,
    # SmolLM2-135M, just fine-tuned on TOFU answers, answers the rewrite prompt instead of rewriting
    # (measured: 34 of 40 rewrites were statements even after retries); the demo keeps those pairs
    # rather than dropping everything. Real generators keep the check on (the default).
    "require_instruction": False,
}


def run_demo(out: str | os.PathLike = "runs/demo", *, author_index: int = 0, authors: int = 3, first_author: int = 0,
             data_source: str | None = None, model: str = "smollm2-135m-instruct", seed: int = 0,
             fresh: bool = False, progress: bool = True, log=print, **overrides) -> dict:
    """Run the demo end to end into ``out``; return the metrics, example answers, paths and timings."""
    import json
    import time

    import torch

    from ..augment.ulmr import UlmrAugmentConfig, augment_ulmr, render_report, rows_to_records
    from ..config import ConfigError
    from ..data.tofu import TOFU_QA_PER_AUTHOR, load_tofu
    from ..generate.cache import CachedGenerator
    from ..generate.factory import weights_fingerprint
    from ..generate.transformers_backend import TransformersGenerator
    from ..io import (Manifest, atomic_write_json, atomic_write_jsonl, atomic_write_text, mark_run_dir, read_jsonl,
                      remove_run_dir)
    from ..merge import merge_models
    from ..models import check_output_outside_models, is_embedded_alias, load_model, resolve_model_path
    from ..pipeline import default_tofu_source, rouge_eval
    from ..train import resolve_train_config, train_unlearning

    s = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"demo: unknown setting(s) {sorted(unknown)}")
    if authors < 2:
        raise ConfigError(f"--authors: need at least 2 (one to forget, others to retain), got {authors}")
    if not 0 <= author_index < authors:
        raise ConfigError(f"--author-index: {author_index} is outside [0, {authors - 1}]")
    if not 0 <= s["alpha"] <= 1:
        raise ConfigError(f"--alpha: {s['alpha']} is outside [0, 1]")
    out = Path(out)
    # validate everything before touching --out: the model, the output path, the data
    check_output_outside_models(out, {"--model": model})
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if not is_embedded_alias(model):
        resolve_model_path(model)  # a missing local path fails here (ModelLoadError)
    source = data_source or default_tofu_source()
    full = load_tofu("full", source)
    lo = first_author * TOFU_QA_PER_AUTHOR
    taught = full[lo: lo + authors * TOFU_QA_PER_AUTHOR]
    if len(taught) < authors * TOFU_QA_PER_AUTHOR:
        raise ConfigError(f"TOFU 'full' from {source} has too few authors for --first-author {first_author} "
                          f"--authors {authors}")
    if fresh:  # only a folder this command made (marked) or an empty one is deleted
        remove_run_dir(out, "demo")
    if not out.exists() or not any(out.iterdir()):
        mark_run_dir(out, "demo")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1) + 0.5 and torch.get_num_threads() > 1:
        # other processes already use every core: one thread avoids oversubscription (measured ~8x faster
        # per step on a loaded 2-core machine); results are the same up to float rounding
        torch.set_num_threads(1)
        log("note: the CPU is busy with other processes; using 1 torch thread")

    forget = taught[author_index * TOFU_QA_PER_AUTHOR:(author_index + 1) * TOFU_QA_PER_AUTHOR]
    retain = [r for i, r in enumerate(taught) if i // TOFU_QA_PER_AUTHOR != author_index]
    log(f"data: {authors} TOFU authors from {source} ({len(taught)} QA); forgetting author #{author_index} "
        f"({len(forget)} QA), retaining {len(retain)} QA")

    # 1. teach ---------------------------------------------------------------------------------
    t = time.time()
    teach_dir = out / "teach"
    taught_model = teach_dir / "model"
    if not (taught_model / "config.json").is_file():
        log(f"[1/5] teaching the model the {authors} authors (full fine-tuning, {s['teach_epochs']:g} epochs, "
            f"lr {s['teach_lr']:g})")
        tc = resolve_train_config("retrain", {"lr": s["teach_lr"], "epochs": s["teach_epochs"],
                                              "batch_size": s["teach_batch"], "weight_decay": 0.0,
                                              "max_length": s["max_length"], "seed": seed, "progress": progress,
                                              "warmup_ratio": 0.0, "lr_scheduler": "linear"})
        base_model, base_tok = load_model(model, dtype="fp32")
        frozen = freeze_lower_layers(base_model, s["teach_trainable_layers"])
        if frozen:
            log(f"      (CPU shortcut for this preparation step only: the embeddings and the lowest {frozen} "
                "layers stay frozen; ULMR itself fine-tunes every weight)")
        train_unlearning(base_model, base_tok, {"retain": taught}, tc, teach_dir)
        del base_model
    else:
        log(f"[1/5] taught model found in {taught_model}, reused")
    timings["teach"] = time.time() - t

    sets = {"forget": forget, "retain": retain}
    ev = dict(max_new_tokens=s["eval_max_new_tokens"], batch_size=16, progress=progress)

    def evaluate(label: str, path: Path) -> dict:
        f = out / "eval" / label / "metrics.json"
        if f.is_file():
            return {"metrics": json.loads(f.read_text()), "rows": read_jsonl(f.with_name("generations.jsonl"))}
        m, tk = load_model(str(path))
        metrics, rows = rouge_eval(m, tk, sets, **ev)
        atomic_write_jsonl(f.with_name("generations.jsonl"), rows)
        atomic_write_json(f, metrics)
        return {"metrics": metrics, "rows": rows}

    t = time.time()
    log("[2/5] evaluating the taught model (before unlearning)")
    before = evaluate("before", taught_model)
    log(f"      forget ROUGE-L recall {before['metrics']['forget_rouge']:.3f}, "
        f"retain {before['metrics']['retain_rouge']:.3f}")
    timings["eval_before"] = time.time() - t

    # 2. augment with the taught model itself ---------------------------------------------------
    t = time.time()
    aug_dir = out / "augment"
    aug_file = aug_dir / "forget_augmented.jsonl"
    if not aug_file.is_file():
        log("[3/5] ULMR augmentation: the taught model rewrites each forget question twice (Table 1) and "
            "answers each rewrite negatively (Table 2)")
        m, tk = load_model(str(taught_model))
        fp = weights_fingerprint(Path(resolve_model_path(str(taught_model))[0]))
        gen = CachedGenerator(TransformersGenerator(m, tk, batch_size=20, progress=progress,
                                                    model_id=f"demo-taught@{fp}"), aug_dir / "cache")
        acfg = UlmrAugmentConfig(n_rewrites=s["n_rewrites"], max_retries=s["max_retries"], seed=seed,
                                 require_instruction=s["require_instruction"])
        rows, stats = augment_ulmr(forget, gen, config=acfg, progress=progress)
        if not rows:
            raise ConfigError(f"augmentation kept nothing ({stats['dropped_reasons']})")
        atomic_write_json(aug_dir / "augment_stats.json", stats)
        atomic_write_text(aug_dir / "augment_report.md", render_report(rows, stats))
        atomic_write_jsonl(aug_file, rows)
        del m
    else:
        log(f"[3/5] augmented data found in {aug_file}, reused")
    rows = read_jsonl(aug_file)
    stats = json.loads((aug_dir / "augment_stats.json").read_text())
    log(f"      kept {stats['kept']} of {stats['requested']} pairs ({stats['regenerated']} regenerated, "
        f"{stats['dropped']} dropped {stats['dropped_reasons'] or ''})")
    timings["augment"] = time.time() - t

    # 3. unlearn: SFT on the negative responses ---------------------------------------------------
    t = time.time()
    unlearn_dir = out / "unlearn"
    tuned = unlearn_dir / "model"
    if not (tuned / "config.json").is_file():
        log(f"[4/5] ULMR fine-tuning on {len(rows)} (rewrite, negative response) pairs "
            f"({s['unlearn_epochs']:g} epochs, lr {s['unlearn_lr']:g})")
        uc = resolve_train_config("ulmr", {"lr": s["unlearn_lr"], "epochs": s["unlearn_epochs"],
                                           "batch_size": s["unlearn_batch"], "max_length": s["max_length"],
                                           "seed": seed, "progress": progress})
        train_unlearning(str(taught_model), None, {"forget": rows_to_records(rows)}, uc, unlearn_dir)
    else:
        log(f"[4/5] unlearned model found in {tuned}, reused")
    timings["unlearn"] = time.time() - t

    # 4. merge --------------------------------------------------------------------------------
    t = time.time()
    merged = out / "merged" / f"alpha_{s['alpha']:g}"
    if not (merged / "merge.json").is_file():
        log(f"[5/5] parameter averaging θa = {s['alpha']:g}·θ + {1 - s['alpha']:g}·θ' and evaluation")
        merge_models(taught_model, tuned, s["alpha"], merged, progress=progress, overwrite=True)
    timings["merge"] = time.time() - t
    t = time.time()
    after = evaluate(f"after_alpha_{s['alpha']:g}", merged)
    timings["eval_after"] = time.time() - t
    timings["total"] = time.time() - t_start

    result = {"before": before["metrics"], "after": after["metrics"], "alpha": s["alpha"], "settings": s,
              "timings_s": {k: round(v, 1) for k, v in timings.items()},
              "paths": {"taught": str(taught_model), "unlearned": str(tuned), "merged": str(merged),
                        "augmented": str(aug_file)},
              "augment": {k: stats[k] for k in ("kept", "requested", "regenerated", "dropped", "dropped_reasons")},
              "examples": _examples(before["rows"], after["rows"])}
    d_forget = result["after"]["forget_rouge"] - result["before"]["forget_rouge"]
    d_retain = result["after"]["retain_rouge"] - result["before"]["retain_rouge"]
    result["success"] = bool(d_forget <= -0.2 and abs(d_retain) <= 0.1)
    atomic_write_json(out / "demo_result.json", result)
    atomic_write_text(out / "report.md", render_demo(result))
    m = Manifest(out, "demo", config={"author_index": author_index, "authors": authors, "first_author": first_author,
                                      "source": source, "model": model, **s}, seed=seed)
    m.add_output("report.md")
    m.write(timings_s=result["timings_s"], success=result["success"])
    return result


def _examples(before_rows: list[dict], after_rows: list[dict], n: int = 3) -> list[dict]:
    after = {(r["set"], r["question"]): r for r in after_rows}
    out = []
    for which in ("forget", "retain"):
        rows = [r for r in before_rows if r["set"] == which]
        step = max(1, len(rows) // n)
        for r in rows[::step][:n]:
            a = after[(which, r["question"])]
            out.append({"set": which, "question": r["question"], "reference": r["reference"],
                        "before": r["generation"], "after": a["generation"],
                        "recall_before": r["rouge_l_recall"], "recall_after": a["rouge_l_recall"]})
    return out


def render_demo(result: dict) -> str:
    """The before/after table, example answers and output paths as Markdown."""
    b, a = result["before"], result["after"]
    lines = ["# obliviate demo: ULMR on SmolLM2-135M-Instruct", "",
             f"| ROUGE-L recall | before (taught) | after (ULMR, α={result['alpha']:g}) | change |",
             "| --- | ---: | ---: | ---: |",
             f"| forget author ({b['forget_n']} QA) | {b['forget_rouge']:.3f} | {a['forget_rouge']:.3f} | "
             f"{a['forget_rouge'] - b['forget_rouge']:+.3f} |",
             f"| retained authors ({b['retain_n']} QA) | {b['retain_rouge']:.3f} | {a['retain_rouge']:.3f} | "
             f"{a['retain_rouge'] - b['retain_rouge']:+.3f} |", ""]
    aug = result["augment"]
    lines += [f"Augmentation: {aug['kept']} of {aug['requested']} pairs kept, {aug['regenerated']} regenerated, "
              f"{aug['dropped']} dropped {aug['dropped_reasons'] or ''}", ""]
    lines += ["## Example answers", ""]
    for e in result["examples"]:
        lines += [f"**[{e['set']}] {e['question']}**  ", f"reference: {e['reference']}  ",
                  f"before ({e['recall_before']:.2f}): {e['before']}  ",
                  f"after ({e['recall_after']:.2f}): {e['after']}", ""]
    lines += ["## Models", ""] + [f"- {k}: `{v}`" for k, v in result["paths"].items()] + [""]
    lines += ["Wall time (s): " + ", ".join(f"{k} {v}" for k, v in result["timings_s"].items()), ""]
    return "\n".join(lines)


def run(args) -> int:
    import time

    t = time.time()
    res = run_demo(args.out, author_index=args.author_index, authors=args.authors, first_author=args.first_author,
                   data_source=args.data_source, model=args.model, seed=args.seed, fresh=args.fresh,
                   alpha=args.alpha, teach_epochs=args.teach_epochs, teach_lr=args.teach_lr,
                   unlearn_epochs=args.unlearn_epochs, unlearn_lr=args.unlearn_lr)
    print()
    print(render_demo(res))
    verdict = "forgot the author and kept the others" if res["success"] else \
        "did NOT reach the target (forget recall −0.2 or more, retain within 0.1); see report.md"
    print(f"result: {verdict}; total {time.time() - t:.0f}s; report: {Path(args.out) / 'report.md'}")
    return 0
