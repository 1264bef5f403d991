"""Evaluation throughput on SmolLM2-135M-Instruct: batched vs one sample at a time.

Measures, in one run on the same TOFU forget01 questions:

* scoring — ``sequence_logprobs`` over each question's answer, paraphrase and perturbed answers
  (TOFU's probability / truth-ratio work): batched (each distinct prompt run once with its KV
  cache shared by its 7 answers, length-grouped batches) vs one (prompt, answer) per forward;
* generation — greedy answers with ``generate_answers``: batched (left padding, KV cache) vs one
  question per ``generate`` call.

Rows follow ``benchmarks/common.py``'s contract (``figure``, ``value`` in samples/s, ``ratio`` =
speed-up of batched over one-at-a-time). Usage::

    python benchmarks/eval_throughput.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TOFU_DIR, is_quick, script_entry, set_threads  # noqa: E402


def main(quick: bool = False) -> list[dict]:
    quick = is_quick(quick)
    threads = set_threads(int(os.environ.get("OBLIVIATE_BENCH_THREADS", 0)) or min(2, os.cpu_count() or 1))
    from obliviate.data.tofu import load_tofu
    from obliviate.evals.scoring import generate_answers, sequence_logprobs
    from obliviate.models import load_model

    n_q = 6 if quick else 12
    batch_size, max_new = 16, (32 if quick else 48)
    model, tok = load_model("smollm2-135m-instruct")
    recs = load_tofu("forget01_perturbed", TOFU_DIR)[:n_q]
    pairs = [(r.question, a) for r in recs for a in [r.answer, r.paraphrased_answer, *r.perturbed_answers]]
    questions = [r.question for r in recs]
    sequence_logprobs(model, tok, pairs[:2], batch_size=2)  # warm-up
    rows = []
    note = f"{threads} threads, batch {batch_size}, load avg {os.getloadavg()[0]:.1f}"

    t = time.perf_counter()
    single = [sequence_logprobs(model, tok, [p], batch_size=1)[0] for p in pairs]
    ts = time.perf_counter() - t
    t = time.perf_counter()
    batched = sequence_logprobs(model, tok, pairs, batch_size=batch_size)
    tb = time.perf_counter() - t
    diff = max(abs(a[0] - b[0]) for a, b in zip(batched, single))
    rows.append({"figure": "TOFU scoring, one pair per forward", "value": len(pairs) / ts, "unit": "sequences/s",
                 "note": f"{len(pairs)} (question, answer) pairs of {n_q} questions; {note}"})
    rows.append({"figure": "TOFU scoring, batched + shared prompt pass", "value": len(pairs) / tb,
                 "unit": "sequences/s", "ratio": ts / tb, "ratio_vs": "one pair per forward",
                 "note": f"max |Δ log p| vs one-at-a-time = {diff:.1e}"})

    t = time.perf_counter()
    gs = [generate_answers(model, tok, [q], max_new_tokens=max_new, batch_size=1)[0] for q in questions]
    ts = time.perf_counter() - t
    t = time.perf_counter()
    gb = generate_answers(model, tok, questions, max_new_tokens=max_new, batch_size=batch_size)
    tb = time.perf_counter() - t
    same = sum(a == b for a, b in zip(gb, gs))
    rows.append({"figure": f"greedy answers ≤{max_new} tokens, one question per generate", "value": n_q / ts,
                 "unit": "answers/s", "note": note})
    rows.append({"figure": f"greedy answers ≤{max_new} tokens, batched (left pad, KV cache)", "value": n_q / tb,
                 "unit": "answers/s", "ratio": ts / tb, "ratio_vs": "one question per generate",
                 "note": f"{same}/{n_q} answers identical to one-at-a-time"})
    return rows


if __name__ == "__main__":
    script_entry(main)
