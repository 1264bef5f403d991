"""TOFU benchmark: ROUGE-L recall, probability, truth ratio, forget quality, model utility.

``obliviate eval tofu --model M --out DIR [--forget-split forget01] [--data-source PATH_OR_HUB]
[--retain-model M2 | --retain-result FILE] [--batch-size N] [--max-samples N] [--system-prompt TEXT]``
"""

from __future__ import annotations

import argparse
import gc
import time

from ..evals.common import check_data_source, check_out_dir, resolve_system_prompt, start_manifest, write_eval_run
from ._args import add_batch_arguments, add_model_arguments, add_output_arguments, load_model_from_args

FORGET_SPLITS = ("forget01", "forget05", "forget10")
DEFAULT_SOURCE = "locuslab/TOFU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``obliviate eval tofu``."""
    from ..evals.tofu import DEFAULT_MAX_NEW_TOKENS, TOFU_SETS

    add_model_arguments(p)
    add_output_arguments(p)
    p.add_argument("--forget-split", default="forget01", choices=FORGET_SPLITS,
                   help="TOFU forget split that was unlearned (default forget01)")
    p.add_argument("--data-source", default=None, metavar="PATH_OR_HUB",
                   help=f"TOFU hub dataset id or local folder of <split>.jsonl files (default: $OBLIVIATE_TOFU, else ../shared/data/... when present, else {DEFAULT_SOURCE})")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-model", metavar="MODEL",
                     help="retain model (fine-tuned without the forget set): its forget-set truth ratios are "
                          "computed on the fly for forget quality")
    ref.add_argument("--retain-result", metavar="FILE",
                     help="saved retain-model truth ratios: an `obliviate eval tofu` run dir, its metrics.json or "
                          "samples.jsonl, a JSON list, or TOFU's eval_log_forget.json")
    p.add_argument("--sets", default=",".join(TOFU_SETS),
                   help=f"comma-separated evaluation sets (default {','.join(TOFU_SETS)})")
    add_batch_arguments(p, batch_size=32, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _validate(args) -> list[str]:
    if args.data_source is None:  # same default as the tofu:/rwku: data specs
        from ..data.sources import default_tofu_source

        args.data_source = default_tofu_source()
    from ..config import ConfigError
    from ..models import resolve_model_path
    from ..evals.tofu import TOFU_SETS

    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in TOFU_SETS]
    if bad or not sets:
        raise ConfigError(f"--sets: unknown set(s) {bad or args.sets!r}; allowed: {', '.join(TOFU_SETS)}")
    check_data_source(args.data_source, "TOFU")
    if args.retain_result:
        from ..evals.tofu import load_retain_truth_ratios

        load_retain_truth_ratios(args.retain_result)  # fail now, not after scoring
    if args.model:
        resolve_model_path(args.model)
    if args.retain_model:
        resolve_model_path(args.retain_model)
    return sets


def run(args) -> int:
    """Run ``obliviate eval tofu``: validate, evaluate, write the run directory."""
    from ..evals.tofu import evaluate_tofu, forget_truth_ratios, tofu_report

    sets = _validate(args)
    system = resolve_system_prompt(args.system_prompt)
    out = check_out_dir(args.out)
    manifest = start_manifest(out, "eval tofu", args, inputs={"data_source": args.data_source,
                                                              "retain_model": args.retain_model,
                                                              "retain_result": args.retain_result})
    progress = not args.no_progress
    t0 = time.time()
    retain = args.retain_result
    if args.retain_model:
        print(f"scoring the retain model {args.retain_model} on {args.forget_split} (for forget quality)")
        rmodel, rtok = load_model_from_args(args, attr="retain_model")
        retain = forget_truth_ratios(rmodel, rtok, forget_split=args.forget_split, source=args.data_source,
                                     max_samples=args.max_samples, batch_size=args.batch_size, system_prompt=None,
                                     progress=progress)
        del rmodel, rtok
        gc.collect()
    model, tok = load_model_from_args(args)
    metrics, rows = evaluate_tofu(model, tok, forget_split=args.forget_split, source=args.data_source,
                                  retain_result=retain, max_samples=args.max_samples, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, system_prompt=system, sets=sets,
                                  progress=progress)
    elapsed = time.time() - t0
    extra = {"forget_truth_ratios": metrics.pop("forget_truth_ratios", None),
             "retain_truth_ratios": list(retain) if isinstance(retain, list) else None,
             "eval_seconds": round(elapsed, 1)}
    context = {"model": args.model, "forget_split": metrics.pop("forget_split"), "data_source": args.data_source,
               "system_prompt": system}
    report = tofu_report({**metrics, "forget_split": context["forget_split"]}, model=args.model) \
        + f"\nEvaluation took {elapsed:.0f} s.\n"
    paths = write_eval_run(out, benchmark="tofu", metrics=metrics, rows=rows, report=report, manifest=manifest,
                           extra={k: v for k, v in extra.items() if v is not None}, **context)
    fq = metrics.get("forget_quality")
    mu = metrics.get("model_utility")
    print(f"TOFU {context['forget_split']}: " + ", ".join(
        f"{k}={metrics[k]:.4f}" for k in ("forget_rouge", "forget_prob", "forget_truth_ratio") if k in metrics)
        + (f", forget_quality={fq:.4g}" if fq is not None else "")
        + (f", model_utility={mu:.4f}" if mu is not None else "") + f" ({elapsed:.0f} s)")
    print(f"wrote {paths['metrics'].parent}/ (metrics.json, samples.jsonl, report.md, manifest.json)")
    return 0
