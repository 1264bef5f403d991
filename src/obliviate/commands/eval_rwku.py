"""RWKU benchmark: forget / neighbor probes, MIA loss, utility (MMLU, BBH, TruthfulQA, TriviaQA, fluency).

``obliviate eval rwku --model M --target NAME --out DIR [--data-source PATH_OR_HUB] [--utility mmlu,...]
[--batch-size N] [--max-samples N] [--utility-max-samples N] [--system-prompt TEXT]``
"""

from __future__ import annotations

import argparse
import time

from ..evals.common import check_data_source, check_out_dir, resolve_system_prompt, start_manifest, write_eval_run
from ._args import add_batch_arguments, add_model_arguments, add_output_arguments, load_model_from_args, positive_int

DEFAULT_SOURCE = "jinzhuoran/RWKU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``obliviate eval rwku``."""
    from ..evals.rwku import BBH_MAX_NEW_TOKENS, DEFAULT_MAX_NEW_TOKENS, FLUENCY_MAX_NEW_TOKENS, RWKU_UTILITY

    add_model_arguments(p)
    p.add_argument("--target", required=True, metavar="NAME",
                   help="unlearning target: a name ('Stephen King') or RWKU folder name ('1_Stephen_King')")
    add_output_arguments(p)
    p.add_argument("--data-source", default=None, metavar="PATH_OR_HUB",
                   help=f"RWKU hub dataset id or local folder of <n>_<Target>/ folders (default: $OBLIVIATE_RWKU, else ../shared/data/... when present, else {DEFAULT_SOURCE})")
    p.add_argument("--utility", default=",".join(RWKU_UTILITY),
                   help=f"comma-separated utility sets, or 'none' (default {','.join(RWKU_UTILITY)})")
    add_batch_arguments(p, batch_size=32, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--utility-max-samples", type=positive_int, default=None,
                   help="cap on every utility split (default: --max-samples)")
    p.add_argument("--bbh-max-new-tokens", type=positive_int, default=BBH_MAX_NEW_TOKENS,
                   help=f"generation length for BBH chain of thought (default {BBH_MAX_NEW_TOKENS}, as RWKU's code)")
    p.add_argument("--fluency-max-new-tokens", type=positive_int, default=FLUENCY_MAX_NEW_TOKENS,
                   help=f"generation length for the fluency answers (default {FLUENCY_MAX_NEW_TOKENS}, as RWKU's code)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _validate(args) -> list[str]:
    if args.data_source is None:  # same default as the tofu:/rwku: data specs
        from ..data.sources import default_rwku_source

        args.data_source = default_rwku_source()
    from ..config import ConfigError
    from ..data.rwku import resolve_rwku_target
    from ..models import resolve_model_path
    from ..evals.rwku import RWKU_UTILITY

    raw = [u.strip() for u in args.utility.split(",") if u.strip()]
    util = [] if raw == ["none"] else raw
    bad = [u for u in util if u not in RWKU_UTILITY]
    if bad:
        raise ConfigError(f"--utility: unknown set(s) {bad}; allowed: {', '.join(RWKU_UTILITY)} or 'none'")
    src = check_data_source(args.data_source, "RWKU")
    if src is not None:
        resolve_rwku_target(args.target, src)  # unknown target -> DataError listing the known ones
    resolve_model_path(args.model)
    return util


def run(args) -> int:
    """Run ``obliviate eval rwku``: validate, evaluate, write the run directory."""
    from ..evals.rwku import evaluate_rwku, rwku_report

    util = _validate(args)
    system = resolve_system_prompt(args.system_prompt)
    out = check_out_dir(args.out)
    manifest = start_manifest(out, "eval rwku", args, inputs={"data_source": args.data_source})
    t0 = time.time()
    model, tok = load_model_from_args(args)
    metrics, rows = evaluate_rwku(model, tok, args.target, source=args.data_source, max_samples=args.max_samples,
                                  utility_max_samples=args.utility_max_samples, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, system_prompt=system, utility=util,
                                  bbh_max_new_tokens=args.bbh_max_new_tokens,
                                  fluency_max_new_tokens=args.fluency_max_new_tokens,
                                  progress=not args.no_progress)
    elapsed = time.time() - t0
    target = metrics.pop("target")
    report = rwku_report({**metrics, "target": target}, model=args.model) + f"\nEvaluation took {elapsed:.0f} s.\n"
    paths = write_eval_run(out, benchmark="rwku", metrics=metrics, rows=rows, report=report, manifest=manifest,
                           extra={"eval_seconds": round(elapsed, 1)}, model=args.model, target=target,
                           data_source=args.data_source, system_prompt=system)
    keys = ("forget_fb", "forget_qa", "forget_aa", "neighbor_fb", "neighbor_qa", "mia_fm", "mia_rm", "utility_gen")
    print(f"RWKU {target}: " + ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if metrics.get(k) is not None)
          + f" ({elapsed:.0f} s)")
    print(f"wrote {paths['metrics'].parent}/ (metrics.json, samples.jsonl, report.md, manifest.json)")
    return 0
