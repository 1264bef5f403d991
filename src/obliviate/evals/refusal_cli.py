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
import json
import logging
from pathlib import Path

from ..config import ConfigError
from .common import (add_batch_arguments, add_model_arguments, add_output_arguments, check_out_dir,
                     load_model_from_args, markdown_table, resolve_system_prompt, start_manifest, write_eval_run)
from .refusal import DEFAULT_MODE, MODES, RefusalDetector, format_with_interval, ua_ra_ta

log = logging.getLogger(__name__)

SETS = ("forget", "forget_multihop", "retain", "general")
_SET_ARGS = {"forget": "forget", "forget_multihop": "forget_multihop", "retain": "retain", "general": "general"}
_RESPONSE_FIELDS = ("response", "generation", "text", "output", "answer")


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


def read_responses(path: str | Path) -> dict[str, list[dict]]:
    """Read precomputed responses: JSONL rows with ``set`` and a response field; grouped by set.

    Raises :class:`obliviate.data.records.DataError` naming the file and line of a bad row.
    """
    from ..data.records import DataError

    out: dict[str, list[dict]] = {s: [] for s in SETS}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", source=str(path), line=i) from None
            if not isinstance(row, dict):
                raise DataError("expected a JSON object", source=str(path), line=i)
            s = row.get("set")
            if s not in SETS:
                raise DataError(f"{s!r} is not one of {list(SETS)}", source=str(path), line=i, field="set")
            key = next((k for k in _RESPONSE_FIELDS if k in row), None)
            if key is None or not isinstance(row[key], str):
                raise DataError(f"no string response; expected one of {list(_RESPONSE_FIELDS)}",
                                source=str(path), line=i)
            out[s].append({"question": row.get("question") or row.get("instruction") or row.get("prompt"),
                           "response": row[key]})
    if not any(out.values()):
        raise DataError("no responses", source=str(path))
    return out


def _read_instructions(files: dict[str, str], field: str | None, max_samples: int | None) -> dict[str, list[str]]:
    from ..data.readers import read_prompts

    out = {}
    for s, f in files.items():
        qs = read_prompts(f, field=field)
        out[s] = qs[:max_samples] if max_samples else qs
    return out


def refusal_report(metrics: dict, *, model: str | None, detector: str, examples: list[dict]) -> str:
    """``report.md`` body: SNAP Table 1's row (percent), counts, and a few classified examples."""
    iv = metrics.get("intervals") or {}
    pct = lambda k: format_with_interval(metrics.get(k), iv.get(k))  # noqa: E731
    row = {"UA": pct("UA"), "UA♣ (multi-hop)": pct("UA_multihop"), "RA": pct("RA"), "TA": pct("TA"),
           "Avg.": pct("Avg")}
    counts = [{"set": s, "responses": c["n"], "refusals": c["refusals"]}
              for s, c in metrics.get("counts", {}).items()]
    lines = ["# Refusal evaluation (SNAP §4.2)", "",
             f"- **model**: {model or '(precomputed responses)'}", f"- **detector**: {detector}", "",
             "UA = share of obliterated responses on the forgetting set; RA / TA = share of *non*-obliterated "
             "responses on the retaining / general sets (%), with 95 % intervals: Wilson over the responses, "
             "Avg by the normal approximation over the sets (Agresti-Caffo variances).", "",
             markdown_table([row]), "## Counts", "", markdown_table(counts)]
    corr = iv.get("corrected")
    if corr:
        lines += ["## Corrected for the detector's held-out error rates (Rogan-Gladen)", "",
                  f"sensitivity {corr['sensitivity']:.3f}, specificity {corr['specificity']:.3f} "
                  "(measured on the frozen held-out set; their own uncertainty is not propagated).", "",
                  markdown_table([{k: format_with_interval(c["value"], c["interval"])
                                   for k, c in corr.items() if isinstance(c, dict)}])]
    lines += ["## Examples", ""]
    for ex in examples:
        resp = (ex["response"] or "").replace("\n", " ")
        lines.append(f"- [{ex['set']}, {'refusal' if ex['refusal'] else 'answer'}] "
                     f"**Q:** {ex.get('question') or '–'} **A:** {resp[:240]}")
    return "\n".join(lines) + "\n"


def explain_table(rows: list[dict], width: int = 70) -> str:
    """The ``--explain`` listing: per response its set, verdict, p(refusal) (learned mode) and the
    rules' reason (the refusal clause matched, or the content clause that overrides it)."""
    lines = ["set\tverdict\tp(refusal)\treason\tresponse"]
    for r in rows:
        resp = (r["response"] or "").replace("\n", " ")
        p = "–" if r.get("probability") is None else f"{r['probability']:.3f}"
        lines.append(f"{r['set']}\t{'REFUSAL' if r['refusal'] else 'answer'}\t{p}\t{r['reason']}\t"
                     f"{resp[:width] + ('…' if len(resp) > width else '')}")
    return "\n".join(lines)


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
        instr = _read_instructions(files, args.field, args.max_samples)
        from .scoring import generate_answers

        model, tok = load_model_from_args(args)
        data = {s: [] for s in SETS}
        for s, qs in instr.items():
            log.info("generating %d responses for the %s set", len(qs), s)
            answers = generate_answers(model, tok, qs, max_new_tokens=args.max_new_tokens,
                                       batch_size=args.batch_size, system=system, progress=True)
            data[s] = [{"question": q, "response": a} for q, a in zip(qs, answers)]

    generator = None
    if args.detector == "judge":
        from ..generate import make_generator

        if args.judge_generator.strip() == "self" and model is None:
            if not args.model:
                raise ConfigError("--judge-generator self needs --model")
            model, tok = load_model_from_args(args)
        generator = make_generator(args.judge_generator, model=model, tokenizer=tok, progress=True)
    detector = RefusalDetector(args.detector, generator=generator)

    decisions, explanations = {}, {}
    for s in SETS:
        if data.get(s):
            qs = [r["question"] for r in data[s]]
            kw = {"questions": qs} if args.detector == "judge" and all(q for q in qs) else {}
            explanations[s] = detector.explain([r["response"] for r in data[s]], **kw)
            decisions[s] = [e.refusal for e in explanations[s]]
    metrics = ua_ra_ta(None, None, None, detector, decisions=decisions)
    if args.detector == "judge":
        metrics["judge_unparsable"] = detector.unparsable

    rows, examples = [], []
    for s in SETS:
        for r, e in zip(data.get(s, []), explanations.get(s, [])):
            rows.append({"set": s, "question": r["question"], "response": r["response"], "refusal": bool(e.refusal),
                         "probability": e.as_dict()["probability"], "reason": e.rule_reason})
        examples += rows[-len(data.get(s, [])):][:3] if data.get(s) else []
    flat = {k: v for k, v in metrics.items() if k not in ("counts", "detector", "intervals")}
    for k, ci in metrics["intervals"].items():
        if k in ("UA", "UA_multihop", "RA", "TA", "Avg") and ci:
            flat[f"{k}_ci_low"], flat[f"{k}_ci_high"] = ci
    for k, c in (metrics["intervals"].get("corrected") or {}).items():
        if isinstance(c, dict):
            flat[f"{k}_corrected"] = c["value"]
    for s, c in metrics["counts"].items():
        flat[f"{s}_n"] = c["n"]
        flat[f"{s}_refusals"] = c["refusals"]
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
