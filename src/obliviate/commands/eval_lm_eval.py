"""lm-evaluation-harness benchmarks (MMLU, ARC, ...) on any model obliviate can load.

``obliviate eval lm-eval --model M --tasks mmlu,arc_easy --out DIR [--num-fewshot K] [--limit N]``
runs lm-eval through :func:`obliviate.evals.lm_eval_bridge.run_lm_eval`; a task whose data cannot
be reached is skipped with a message and the command still exits 0 with what did run.
``--tasks snap-table2`` runs SNAP Table 2's nine zero-shot tasks and adds their average
(``snap_table2_avg``) and, with ``--reference RUN`` (the original model's lm-eval run), its relative
change ``snap_table2_drop``. ``--rwku-dir FOLDER`` adds the offline tasks ``rwku_retain_mmlu`` / ``rwku_truthful`` built from a
local RWKU target folder; ``--include-path DIR`` adds your own task YAMLs.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..evals.common import check_out_dir, start_manifest, write_eval_run
from ._args import add_model_arguments, add_output_arguments, load_model_from_args, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``obliviate eval lm-eval``."""
    add_model_arguments(p)
    p.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="comma-separated lm-eval task names, e.g. mmlu,arc_easy,hellaswag, or a preset: "
                        "snap-table2 (SNAP Table 2's nine zero-shot tasks) (default: the --rwku-dir tasks when given)")
    p.add_argument("--num-fewshot", type=int, default=None,
                   help="few-shot examples per prompt (default: the preset's, 0 for snap-table2, else the task's)")
    p.add_argument("--reference", default=None, metavar="RUN",
                   help="the original model's `obliviate eval lm-eval` run: a preset's average is also reported as "
                        "a relative change against it (SNAP Table 2's '(-3.4%%)')"),
    p.add_argument("--limit", type=float, default=None,
                   help="evaluate at most this many documents per task (a value < 1 is a fraction)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="lm-eval batch size (default 8)")
    p.add_argument("--max-length", type=positive_int, default=None, help="truncate contexts to this many tokens")
    p.add_argument("--rwku-dir", default=None, metavar="FOLDER",
                   help="an RWKU target folder (e.g. ../shared/data/rwku/1_Stephen_King): adds the offline tasks "
                        "rwku_retain_mmlu and rwku_truthful")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="folder of extra lm-eval task YAMLs (repeatable)")
    add_output_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run ``obliviate eval lm-eval``; returns the exit code (0 also when some tasks were skipped)."""
    from ..evals.lm_eval_bridge import (PRESET_FEWSHOT, LmEvalUnavailable, add_preset_summaries, expand_tasks,
                                        lm_eval_report, read_lm_eval_metrics, require_lm_eval, result_rows,
                                        run_lm_eval, write_rwku_tasks)

    tasks, presets = expand_tasks([t.strip() for t in (args.tasks or "").split(",") if t.strip()])
    num_fewshot = args.num_fewshot
    if num_fewshot is None and presets:
        num_fewshot = PRESET_FEWSHOT.get(presets[0])
    reference = None
    if args.reference:
        try:
            reference = read_lm_eval_metrics(args.reference)
        except (OSError, ValueError) as e:
            raise ConfigError(str(e)) from None
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit must be > 0, got {args.limit}")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    try:
        require_lm_eval()
    except LmEvalUnavailable as e:
        print(f"obliviate eval lm-eval: {e}", file=sys.stderr)
        return 3
    out = check_out_dir(args.out)
    includes = list(args.include_path)
    if args.rwku_dir:
        inc, names = write_rwku_tasks(args.rwku_dir, out / "lm_eval_tasks")
        includes.append(str(inc))
        if not tasks:
            tasks = names
    if not tasks:
        raise ConfigError("--tasks is empty; name lm-eval tasks (e.g. --tasks mmlu,arc_easy) or give --rwku-dir")
    manifest = start_manifest(out, "eval lm-eval", args, inputs={"rwku_dir": args.rwku_dir} if args.rwku_dir else None)
    model, tok = load_model_from_args(args)
    try:
        res = run_lm_eval(model, tok, tasks, num_fewshot=num_fewshot, limit=limit, batch_size=args.batch_size,
                          include_path=includes or None, max_length=args.max_length)
    except ValueError as e:  # unknown task names
        raise ConfigError(str(e)) from e
    for t, reason in res["skipped"].items():
        print(f"obliviate eval lm-eval: skipped task {t}: its data could not be loaded ({reason})", file=sys.stderr)
    summaries = add_preset_summaries(res, presets, reference)
    rows, table = result_rows(res)
    report = lm_eval_report(res, table, summaries, model=args.model, limit=limit, num_fewshot=num_fewshot,
                            reference=args.reference)
    write_eval_run(out, benchmark="lm-eval", metrics=res["metrics"], rows=rows, report=report,
                   manifest=manifest, model=args.model,
                   extra={"skipped": res["skipped"], "n_samples": res["n_samples"], "tasks": res["tasks"],
                          "offline": res["offline"], "lm_eval_version": res["lm_eval_version"],
                          "presets": presets, "num_fewshot": num_fewshot, "reference": args.reference})
    for r in table:
        s = "–" if r["score"] is None else f"{r['score']:.4f}"
        print(f"{r['task']}: {s} (n={r['n']})")
    for pr, sm in summaries.items():
        avg, drop = sm.values()
        print(f"{pr} average: {'–' if avg is None else f'{avg:.4f}'}"
              + ("" if drop is None else f" ({100 * drop:+.1f}% vs the reference)"))
    print(f"{len(res['tasks'])} task(s) run, {len(res['skipped'])} skipped -> {out}")
    return 0
