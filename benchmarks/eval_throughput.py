"""Evaluation throughput on SmolLM2-135M-Instruct: batched vs one sample at a time.

Measures, in one run on the same TOFU forget01 questions:

* scoring — ``sequence_logprobs`` over each question's answer, paraphrase and perturbed answers
  (TOFU's probability / truth-ratio work): batched (each distinct prompt run once with its KV
  cache shared by its 7 answers, length-grouped batches) vs one (prompt, answer) per forward;
* generation — greedy answers with ``generate_answers``: batched (left padding, KV cache) vs one
  question per ``generate`` call;
* RWKU's few-shot utility sets (MMLU 5-shot scoring, BBH 3-shot chain-of-thought generation):
  the shots prefilled once per task and shared through the KV cache vs every prompt in full.

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

from common import TOFU_DIR, is_quick, script_entry, set_threads, time_left  # noqa: E402


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
    if time_left() > 60:
        rows += few_shot_rows(model, tok, quick=quick, note=note)
    else:
        rows.append({"figure": "RWKU few-shot prompts, shared prefix", "note": "skipped: time budget used up"})
    return rows


def few_shot_rows(model, tok, *, quick: bool, note: str) -> list[dict]:
    """RWKU's few-shot utility sets: each task's shots form a prefix shared by its questions.

    MMLU (5-shot, next-token letter log-probs) and BBH (3-shot chain of thought, greedy generation),
    each with the shared-prefix path (the prefix prefilled once per task, only the questions' own
    tails on top of its KV cache) vs every prompt in full, on the same prompts in one run.
    """
    from obliviate.data.formatting import prompt_text
    from obliviate.data.rwku import load_rwku
    from obliviate.evals.rwku import mmlu_prompt
    from obliviate.evals.scoring import generate_from_text, next_token_logprobs

    rwku = TOFU_DIR.parent / "rwku"
    n_tasks = 2 if quick else 4
    rows = []
    mmlu = load_rwku("Stephen King", "retain_mmlu", rwku)
    tasks = list(dict.fromkeys(m.task for m in mmlu))[:n_tasks]
    items = [m for m in mmlu if m.task in tasks]
    prompts = [mmlu_prompt(tok, it) for it in items]
    cand = [tok.encode(f" {c}", add_special_tokens=False)[-1] for c in "ABCD"]
    t = time.perf_counter()
    flat = next_token_logprobs(model, tok, prompts, cand, batch_size=8, share_prefix=False)
    tf = time.perf_counter() - t
    t = time.perf_counter()
    shared = next_token_logprobs(model, tok, prompts, cand, batch_size=8, share_prefix=True)
    tsh = time.perf_counter() - t
    diff = max(abs(a - b) for x, y in zip(flat, shared) for a, b in zip(x, y))
    ntok = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    rows.append({"figure": "RWKU MMLU 5-shot, every prompt in full", "value": len(prompts) / tf, "unit": "questions/s",
                 "note": f"{len(prompts)} questions of {n_tasks} tasks, {ntok / len(prompts):.0f} tokens each; {note}"})
    rows.append({"figure": "RWKU MMLU 5-shot, shared 5-shot prefix", "value": len(prompts) / tsh,
                 "unit": "questions/s", "ratio": tf / tsh, "ratio_vs": "every prompt in full",
                 "note": f"max |Δ log p| = {diff:.1e}"})
    if time_left() < 60:
        rows.append({"figure": "RWKU BBH 3-shot CoT, shared prefix", "note": "skipped: time budget used up"})
        return rows
    bbh = load_rwku("Stephen King", "retain_bbh", rwku)
    btasks = list(dict.fromkeys(b.meta["task"] for b in bbh))[:n_tasks]
    bitems = [b for b in bbh if b.meta["task"] in btasks]
    bprompts = []
    for r in bitems:
        p = prompt_text(tok, r.meta["cot"].strip() + "\n\nFollowing previous examples, answer the following "
                        "questions and end with 'so the answer is'\nQ: " + r.question)
        bprompts.append(p + ("A:" if p[-1] in "\n " else " A:"))
    new = 16 if quick else 32
    t = time.perf_counter()
    gf = generate_from_text(model, tok, bprompts, max_new_tokens=new, batch_size=8, share_prefix=False)
    tf = time.perf_counter() - t
    t = time.perf_counter()
    gsh = generate_from_text(model, tok, bprompts, max_new_tokens=new, batch_size=8, share_prefix=True)
    tsh = time.perf_counter() - t
    same = sum(a == b for a, b in zip(gf, gsh))
    rows.append({"figure": f"RWKU BBH 3-shot CoT ≤{new} tokens, every prompt in full", "value": len(bprompts) / tf,
                 "unit": "answers/s", "note": f"{len(bprompts)} questions of {len(btasks)} tasks"})
    rows.append({"figure": f"RWKU BBH 3-shot CoT ≤{new} tokens, shared prefix", "value": len(bprompts) / tsh,
                 "unit": "answers/s", "ratio": tf / tsh, "ratio_vs": "every prompt in full",
                 "note": f"{same}/{len(bprompts)} generations identical"})
    return rows


if __name__ == "__main__":
    script_entry(main)
