"""What caching the frozen reference's statistics saves per training step (NPO; KL on retain).

NPO needs log π_ref(y|x) of every forget sample. Cached (the default), the reference runs once
over the forget set before training and a step is one forward + backward of the trained model;
uncached, every step adds a reference forward. KL needs the reference's next-token distribution on
every retain token: exact (a live reference forward each step, the default) or the top-k cache
(k = 64 log-probs per token + the remaining mass, computed once).

Model: SmolLM2-135M-Instruct (fp32, CPU here) on the first 16 QA pairs of TOFU forget01 / retain90,
batch 4, AdamW, 3 timed steps per variant after one warm-up step, the variants' steps interleaved
(A, B, A, B, ...) so that a shared machine's load hits them alike, medians reported; the same
batches for every variant; a plain loop over the obliviate loss terms (no Trainer
overhead) so that the difference is the reference work alone.

    OBLIVIATE_BENCH_THREADS=1 python benchmarks/reference_cache.py [--quick]   # --quick: KL only when it fits

On a shared 2-core machine set ``OBLIVIATE_BENCH_THREADS=1``: several processes each running
two OpenMP threads slow each other down by an order of magnitude.

Prints a Markdown table and writes ``benchmarks/results/reference_cache.json``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, TOFU_DIR, is_quick, script_entry, set_threads, time_left  # noqa: E402


def _batches(tokenizer, records, n_batches, batch_size=4):
    from obliviate.data.formatting import encode_example
    from obliviate.train import stream_loader

    enc = []
    for i, r in enumerate(records):
        e = encode_example(tokenizer, r.question, r.answer, max_length=256)
        e["sample_id"] = i
        enc.append(e)
    loader = stream_loader(enc, tokenizer.pad_token_id, batch_size)
    all_batches = list(loader)
    return loader, [all_batches[i % len(all_batches)] for i in range(n_batches)]


def _time_interleaved(model, variants, steps):
    """Median seconds per optimizer step (forward + loss + backward + AdamW) of each variant.

    ``variants`` is a list of ``(terms, stream_batches, ctx)``. Steps of the variants alternate
    (A, B, A, B, ...) after one untimed warm-up step each, so that the load of a shared machine
    hits every variant alike; the median of the timed steps is reported.
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    times = [[] for _ in variants]
    for i in range(steps + 1):
        for v, (terms, stream_batches, ctx) in enumerate(variants):
            batches = stream_batches[i % len(stream_batches)]
            t0 = time.perf_counter()
            loss = sum(t.weight * t(model, batches, ctx) for t in terms)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ctx.cache.pop("_step", None)
            if i:
                times[v].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main(quick: bool = False) -> list[dict]:
    from obliviate.data.readers import read_records
    from obliviate.models import load_model
    from obliviate.objectives.base import StepContext
    from obliviate.objectives.forget import GradientAscent
    from obliviate.objectives.preference import NPO
    from obliviate.objectives.reference import cache_nbytes
    from obliviate.objectives.retain import KLRetain

    quick = is_quick(quick)
    threads = set_threads()
    steps = 3
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m-instruct", dtype="fp32", device="cpu")
    forget = read_records(TOFU_DIR / "forget01.jsonl")[:16]
    retain = read_records(TOFU_DIR / "retain90.jsonl")[:16]
    f_loader, f_batches = _batches(tok, forget, steps + 1)
    r_loader, r_batches = _batches(tok, retain, steps + 1)
    ref = copy.deepcopy(model).requires_grad_(False).eval()  # the frozen θ_ref for the uncached variants
    rows = []

    # NPO, cached: one reference pass before training, then policy-only steps
    ctx = StepContext(reference=ref)
    t0 = time.perf_counter()
    npo = NPO()
    npo.prepare(model, {"forget": f_loader}, ctx)
    prep = time.perf_counter() - t0
    ctx.reference = None
    f_only = [{"forget": b} for b in f_batches]
    variants = [([npo], f_only, ctx), ([NPO(cache=False)], f_only, StepContext(reference=ref))]
    names = ["NPO step, cached π_ref", "NPO step, reference forward each step"]
    caches = [cache_nbytes(ctx) / 1024, 0.0]
    preps = [prep, 0.0]
    if not quick or time_left() > 90:  # the KL pair fits the quick budget on an idle machine
        both = [{"forget": f, "retain": r} for f, r in zip(f_batches, r_batches)]
        kctx = StepContext(reference=ref)
        t0 = time.perf_counter()
        kl_top = KLRetain(topk=64)
        kl_top.prepare(model, {"retain": r_loader}, kctx)
        preps += [time.perf_counter() - t0, 0.0]
        kctx.reference = None
        variants += [([GradientAscent(), kl_top], both, kctx),
                     ([GradientAscent(), KLRetain()], both, StepContext(reference=ref))]
        names += ["GA+KL step, top-64 cached KL", "GA+KL step, exact KL (live reference)"]
        caches += [cache_nbytes(kctx) / 1024, 0.0]
    medians = _time_interleaved(model, variants, steps)
    for k, (name, med) in enumerate(zip(names, medians)):
        base = medians[k - k % 2]
        rows.append({"figure": name, "value": med, "unit": "s/step", "ratio": med / base,
                     "ratio_vs": "cached (NPO)" if k < 2 else "top-64 cache (KL)", "one_off_s": preps[k],
                     "cache_KiB": caches[k]})
    for r in rows:
        r["threads"] = threads
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_DIR / ".reference_cache.json.tmp"
    tmp.write_text(json.dumps({"rows": rows, "steps": steps, "batch_size": 4, "model": "smollm2-135m-instruct"},
                              indent=1))
    os.replace(tmp, RESULTS_DIR / "reference_cache.json")
    return rows


if __name__ == "__main__":
    script_entry(main)
