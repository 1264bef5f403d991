"""SNAP's refusal metrics UA / RA / TA: generate answers and count obliterated responses.

``obliviate eval refusal --model M --forget F --retain R --general G --out DIR`` generates a
greedy response to every instruction of the forgetting (F), retaining (R) and general (G) sets
(plus ``--forget-multihop H``), classifies each with a :class:`~obliviate.evals.refusal.RefusalDetector`
and writes ``metrics.json`` (UA, UA_multihop, RA, TA, Avg, counts), ``samples.jsonl``,
``report.md`` and ``manifest.json``. ``--responses FILE`` scores precomputed responses instead
(JSONL rows ``{"set": "forget"|"forget_multihop"|"retain"|"general", "response": ...}``, e.g. the
``samples.jsonl`` of an earlier run) and needs no model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError
from ..evals.common import check_out_dir, resolve_system_prompt, start_manifest, write_eval_run
from ..evals.refusal import DEFAULT_MODE, MODES, RefusalDetector, format_with_interval
from ..evals.refusal_run import (SETS, explain_table, flat_metrics, generate_responses, read_instructions,
                                 read_responses, refusal_report, score_responses)
from ._args import add_batch_arguments, add_model_arguments, add_output_arguments, load_model_from_args

_SET_ARGS = {"forget": "forget", "forget_multihop": "forget_multihop", "retain": "retain", "general": "general"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``obliviate eval refusal``."""
    add_model_arguments(p, required=False,
                        help="model that answers the instructions (not needed with --responses)")
    p.add_argument("--forget", metavar="FILE", help="forgetting-set instructions (JSON / JSONL / CSV / TXT)")
    p.add_argument("--forget-multihop", metavar="FILE", help="multi-hop forgetting instructions (UA♣)")
    p.add_argument("--retain", metavar="FILE", help="retaining-set instructions (RA)")
    p.add_argument("--general", metavar="FILE", help="general instructions, e.g. dolly-15k samples (TA)")
    p.add_argument("--field", default=None, help="prompt field of JSON rows (default: question / instruction / prompt)")
    p.add_argument("--responses", metavar="FILE",
                   help="score precomputed responses (JSONL with 'set' and 'response') instead of generating")
    p.add_argument("--detector", default=DEFAULT_MODE, choices=MODES,
                   help=f"refusal detector (default: {DEFAULT_MODE}, the classifier shipped with obliviate)")
    p.add_argument("--explain", action="store_true",
                   help="print every response's verdict and why (rule clause, classifier probability); "
                        "samples.jsonl always carries them")
    p.add_argument("--judge-generator", metavar="SPEC", default=None,
                   help="LLM judge for --detector judge: self | transformers:<model> | openai:<url>#<model> | "
                        "vllm:<model>")
    add_output_arguments(p)
    add_batch_arguments(p, batch_size=16, max_new_tokens=96)


def _validate(args: argparse.Namespace) -> dict[str, str]:
    files = {s: getattr(args, _SET_ARGS[s]) for s in SETS if getattr(args, _SET_ARGS[s], None)}
    if args.responses:
        if files:
            raise ConfigError("--responses replaces --forget/--retain/--general/--forget-multihop; give one or the other")
        if not Path(args.responses).is_file():
            raise FileNotFoundError(f"--responses: file not found: {args.responses}")
    else:
        if not files:
            raise ConfigError("give at least one of --forget, --retain, --general (or --responses FILE)")
        if not args.model:
            raise ConfigError("--model is required to generate responses (or pass --responses FILE)")
        for s, f in files.items():
            if not Path(f).exists():
                raise FileNotFoundError(f"--{s.replace('_', '-')}: file not found: {f}")
    if args.detector == "judge" and not args.judge_generator:
        raise ConfigError("--detector judge needs --judge-generator (e.g. self or transformers:<model>)")
    return files


def run(args: argparse.Namespace) -> int:
    """Run ``obliviate eval refusal``; returns the exit code."""
    files = _validate(args)
    out = check_out_dir(args.out)
    inputs = dict(files)
    if args.responses:
        inputs["responses"] = args.responses
    manifest = start_manifest(out, "eval refusal", args, inputs=inputs)
    system = resolve_system_prompt(getattr(args, "system_prompt", None))

    model = tok = None
    if args.responses:
        data = read_responses(args.responses)
        if args.max_samples:
            data = {s: rows[: args.max_samples] for s, rows in data.items()}
    else:
        instr = read_instructions(files, args.field, args.max_samples)
        model, tok = load_model_from_args(args)
        data = generate_responses(model, tok, instr, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size, system=system, progress=True)

    generator = None
    if args.detector == "judge":
        from ..generate import make_generator

        if args.judge_generator.strip() == "self" and model is None:
            if not args.model:
                raise ConfigError("--judge-generator self needs --model")
            model, tok = load_model_from_args(args)
        generator = make_generator(args.judge_generator, model=model, tokenizer=tok, progress=True)
    detector = RefusalDetector(args.detector, generator=generator)

    metrics, rows, examples = score_responses(data, detector)
    flat = flat_metrics(metrics)
    report = refusal_report(metrics, model=args.model, detector=args.detector, examples=examples)
    write_eval_run(out, benchmark="refusal", metrics=flat, rows=rows, report=report, manifest=manifest,
                   extra={"counts": metrics["counts"], "intervals": metrics["intervals"]}, model=args.model,
                   detector=args.detector,
                   system_prompt=system)
    if args.explain:
        print(explain_table(rows))
    pct = lambda k: format_with_interval(metrics[k], metrics["intervals"].get(k), 2)  # noqa: E731
    print(f"UA {pct('UA')}  UA♣ {pct('UA_multihop')}  RA {pct('RA')}  "
          f"TA {pct('TA')}  Avg {pct('Avg')}  ({args.detector} detector; 95 % intervals) -> {out}")
    return 0
