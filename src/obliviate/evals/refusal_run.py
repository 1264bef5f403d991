"""SNAP's refusal evaluation (§4.2) on sets of responses: read, generate, classify, aggregate, report.

The steps of ``obliviate eval refusal`` that need no command line: read the instructions of the
forgetting / multi-hop / retaining / general sets or precomputed responses
(:func:`read_instructions`, :func:`read_responses`), answer the instructions greedily
(:func:`generate_responses`), classify every response with a
:class:`~obliviate.evals.refusal.RefusalDetector` and compute UA / RA / TA
(:func:`score_responses`), and render ``metrics.json``'s flat numbers, ``report.md`` and the
``--explain`` listing (:func:`flat_metrics`, :func:`refusal_report`, :func:`explain_table`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .common import markdown_table
from .refusal import RefusalDetector, format_with_interval, ua_ra_ta

log = logging.getLogger(__name__)

#: the evaluation sets, in report order
SETS = ("forget", "forget_multihop", "retain", "general")
_RESPONSE_FIELDS = ("response", "generation", "text", "output", "answer")


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


def read_instructions(files: dict[str, str], field: str | None, max_samples: int | None) -> dict[str, list[str]]:
    """``{set: instructions}`` read from each set's file (JSON / JSONL / CSV / TXT; ``field`` names the
    prompt field of JSON rows), each cut to its first ``max_samples`` when that is given."""
    from ..data.readers import read_prompts

    out = {}
    for s, f in files.items():
        qs = read_prompts(f, field=field)
        out[s] = qs[:max_samples] if max_samples else qs
    return out


def generate_responses(model, tokenizer, instructions: dict[str, list[str]], *, max_new_tokens: int,
                       batch_size: int, system: str | None = None, progress: bool = True) -> dict[str, list[dict]]:
    """A greedy response of ``model`` to every instruction: ``{set: [{"question", "response"}, ...]}``
    for every set of :data:`SETS` (empty lists for the sets not in ``instructions``)."""
    from .scoring import generate_answers

    data: dict[str, list[dict]] = {s: [] for s in SETS}
    for s, qs in instructions.items():
        log.info("generating %d responses for the %s set", len(qs), s)
        answers = generate_answers(model, tokenizer, qs, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, system=system, progress=progress)
        data[s] = [{"question": q, "response": a} for q, a in zip(qs, answers)]
    return data


def score_responses(data: dict[str, list[dict]], detector: RefusalDetector) -> tuple[dict, list[dict], list[dict]]:
    """Classify every response of ``data`` (``{set: [{"question", "response"}, ...]}``) with ``detector``
    and compute SNAP's metrics (:func:`~obliviate.evals.refusal.ua_ra_ta`).

    A judge detector also sees the questions when every response of the set has one, and its
    count of unparsable verdicts is added as ``metrics["judge_unparsable"]``. Returns ``(metrics,
    rows, examples)``: one row per response (set, question, response, refusal, probability,
    reason) in :data:`SETS` order, and the first three rows of each set.
    """
    judge = detector.mode == "judge"
    decisions, explanations = {}, {}
    for s in SETS:
        if data.get(s):
            qs = [r["question"] for r in data[s]]
            kw = {"questions": qs} if judge and all(q for q in qs) else {}
            explanations[s] = detector.explain([r["response"] for r in data[s]], **kw)
            decisions[s] = [e.refusal for e in explanations[s]]
    metrics = ua_ra_ta(None, None, None, detector, decisions=decisions)
    if judge:
        metrics["judge_unparsable"] = detector.unparsable

    rows, examples = [], []
    for s in SETS:
        for r, e in zip(data.get(s, []), explanations.get(s, [])):
            rows.append({"set": s, "question": r["question"], "response": r["response"], "refusal": bool(e.refusal),
                         "probability": e.as_dict()["probability"], "reason": e.rule_reason})
        examples += rows[-len(data.get(s, [])):][:3] if data.get(s) else []
    return metrics, rows, examples


def flat_metrics(metrics: dict) -> dict:
    """``metrics.json``'s flat numbers from :func:`score_responses`' metrics: UA / RA / TA / Avg (and the
    rest of the scalars), each interval as ``<name>_ci_low`` / ``<name>_ci_high``, the error-corrected
    values as ``<name>_corrected``, and per set ``<set>_n`` / ``<set>_refusals``."""
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
    return flat


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
