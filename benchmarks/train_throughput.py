"""Training throughput of the unlearning methods on SmolLM2-135M with real TOFU data, and what limits it.

Four parts, each a group of table rows:

1. **methods**: tokens/s of ``obliviate.train.train_unlearning`` (the real HF-Trainer path: every loss
   term, reference caches, the SWD regularizer) for ga, graddiff, kl, npo, ulmr and snap, timed per
   optimizer step after a warm-up step. Tokens are the real (non-padding) tokens of all streams in
   the step; model FLOP utilisation (MFU) = 6 · parameters · tokens/s / measured fp32 matmul rate.
1b. **window**: the same trainer (GA, batch 8) with the terms' logits computed on the response
   window only (``obliviate.objectives.forget.causal_lm_logits``, the default) vs on every
   position, in one run: the ratio is what skipping the prompt positions' vocabulary projection
   and loss buys.
2. **padding**: the share of padded token slots with the trainer's length grouping vs plain random
   batches, over the whole TOFU forget10 + retain90 sets (no model needed), and the measured real
   tokens/s of both.
3. **MFU analysis**: one plain fwd+bwd+AdamW loop (the same math as a one-stream NLL step) under
   settings that change what the CPU spends time on: forward / backward / optimizer split,
   torch.profiler operator shares (matmul, attention, lm_head + cross-entropy, optimizer), a larger
   batch, the lm_head + cross-entropy evaluated only at response positions (the prompt's logits are
   never used by a response-only loss), and sequence packing (examples concatenated into one row
   with restarting position ids: no padding at all).

The matmul rate is measured right before each group, because the machine may be shared: compare
MFU figures, not raw tokens/s, between runs. ``--quick`` keeps the whole script to a few minutes on
2 idle cores. ``OBLIVIATE_TT_PARTS=padding,methods,window,loop`` and ``OBLIVIATE_TT_METHODS=npo,snap``
select parts / methods; ``$OBLIVIATE_BENCH_DEADLINE`` (set by ``run.py``) makes the script skip, with
a row saying so, whatever no longer fits its time limit, and every row is saved as it is measured
(``checkpoint_rows``) so that a time-out still reports the rows measured before it.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (TOFU_DIR, is_quick, measure_matmul_gflops, print_table, script_entry,  # noqa: E402
                    checkpoint_rows, set_threads, time_left)

MODEL = "smollm2-135m-instruct"
METHODS = ["ga", "graddiff", "kl", "npo", "ulmr", "snap"]


# --------------------------------------------------------------------------- data
def load_records(split: str, n: int | None = None, seed: int = 0):
    """TOFU records of ``split`` from ``../shared/data/tofu`` (a seeded sample of ``n`` when given)."""
    from obliviate.data.tofu import load_tofu

    recs = load_tofu(split, TOFU_DIR)
    if n is not None and n < len(recs):
        recs = random.Random(seed).sample(recs, n)
    return recs


def encode(tokenizer, records, max_length: int = 512) -> list[dict]:
    """Encode records with the project's chat formatting (response-only labels)."""
    from obliviate.data.formatting import encode_example

    return [encode_example(tokenizer, r.question, r.answer, max_length=max_length) for r in records]


def n_params(model) -> int:
    """Parameters counted once (tied embedding / lm_head shared)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# --------------------------------------------------------------------------- trainer timing
class StepClock:
    """Times HF Trainer optimizer steps (on_step_begin → on_step_end) and counts their real tokens.

    Installed by wrapping ``Trainer.training_step`` (token counting) and the callback handler's
    step hooks (wall time) for the duration of a ``with`` block: pure instrumentation around the
    unchanged training code.
    """

    def __init__(self):
        self.steps: list[tuple[float, int, int]] = []  # (seconds, real tokens, slots)
        self._tokens = self._slots = 0
        self._t0 = 0.0

    @contextlib.contextmanager
    def install(self):
        from transformers import Trainer
        from transformers.trainer_callback import CallbackHandler

        orig_ts, orig_b, orig_e = Trainer.training_step, CallbackHandler.on_step_begin, CallbackHandler.on_step_end
        clock = self

        def training_step(trainer, model, inputs, *a, **kw):
            for batch in inputs.values():
                if isinstance(batch, dict) and "attention_mask" in batch:
                    clock._tokens += int(batch["attention_mask"].sum())
                    clock._slots += int(batch["attention_mask"].numel())
            return orig_ts(trainer, model, inputs, *a, **kw)

        def on_step_begin(handler, *a, **kw):
            clock._t0 = time.perf_counter()
            return orig_b(handler, *a, **kw)

        def on_step_end(handler, *a, **kw):
            clock.steps.append((time.perf_counter() - clock._t0, clock._tokens, clock._slots))
            clock._tokens = clock._slots = 0
            return orig_e(handler, *a, **kw)

        Trainer.training_step, CallbackHandler.on_step_begin, CallbackHandler.on_step_end = \
            training_step, on_step_begin, on_step_end
        try:
            yield self
        finally:
            Trainer.training_step, CallbackHandler.on_step_begin, CallbackHandler.on_step_end = orig_ts, orig_b, orig_e


def method_throughput(method: str, streams: dict, *, batch: int, warmup: int, steps: int, workdir: Path,
                      response_window: bool = True) -> dict:
    """Run ``train_unlearning`` for ``warmup + steps`` optimizer steps; time the last ``steps``.

    ``response_window=False`` makes the terms compute logits over every position (the path before
    ``obliviate.objectives.forget.causal_lm_logits``), for the A/B row of the table.
    """
    from obliviate.models import load_model
    from obliviate.objectives import forget as forget_terms
    from obliviate.train import resolve_train_config, train_unlearning

    model, tok = load_model(MODEL, dtype="fp32", device="cpu")
    cfg = resolve_train_config(method, {"batch_size": batch, "max_steps": warmup + steps, "progress": False,
                                        "gradient_checkpointing": False, "logging_steps": 1, "bf16": False})
    clock = StepClock()
    t0 = time.perf_counter()
    forget_terms.USE_RESPONSE_WINDOW = response_window
    try:
        with clock.install():
            train_unlearning(model, tok, streams, cfg, workdir / f"{method}-{int(response_window)}")
    finally:
        forget_terms.USE_RESPONSE_WINDOW = True
    wall = time.perf_counter() - t0
    timed = clock.steps[warmup:]
    sec = sum(s for s, _, _ in timed)
    toks = sum(t for _, t, _ in timed)
    slots = sum(s for _, _, s in timed)
    return {"seconds": sec, "tokens": toks, "slots": slots, "steps": len(timed), "wall": wall,
            "params": n_params(model), "streams": "+".join(k for k in streams if k in _streams_of(cfg)),
            "regularizer": cfg.regularizer or ""}


def _streams_of(cfg) -> list[str]:
    from obliviate.methods import build_terms, streams_needed

    return streams_needed(build_terms(cfg)[0])


# --------------------------------------------------------------------------- plain loop
def lm_loss(model, batch: dict, *, label_positions: bool | str = False) -> torch.Tensor:
    """Mean next-token NLL over label tokens; with ``label_positions`` the lm_head and softmax run
    only on positions whose next token is a label (boolean-mask gather), with ``"window"`` only on
    the trailing window that holds every label (the trainer's ``causal_lm_logits``); the loss is
    mathematically the same."""
    if not label_positions:
        return model(**{k: v for k, v in batch.items() if k != "n_real"}).loss
    if label_positions == "window":  # the trainer's way: a contiguous slice, no gather / scatter
        from obliviate.objectives.forget import causal_lm_logits, mean_token_nll

        kw = {k: batch[k] for k in ("input_ids", "attention_mask", "labels") if k in batch}
        return mean_token_nll(causal_lm_logits(model, kw), batch["labels"])
    kw = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    hidden = model.model(**kw).last_hidden_state
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logits = model.lm_head(hidden[:, :-1][mask])
    return F.cross_entropy(logits.float(), labels[mask])


def pack(examples: list[dict], row_tokens: int, rows_per_batch: int = 1) -> list[dict]:
    """Sequence packing: concatenate examples into rows of at most ``row_tokens`` tokens.

    Each row restarts ``position_ids`` at every example and carries a 4-D block-diagonal causal
    ``attention_mask`` (B, 1, T, T), so examples never attend to each other (transformers' SDPA
    path does not infer the blocks from position ids alone: without the mask the packed loss is
    wrong, which :func:`packing_error` measures). Each example's first label is dropped so that no
    loss crosses an example boundary. ``rows_per_batch`` rows are stacked per batch (short rows are
    padded; padded positions attend only to themselves and carry no label). ``n_real`` counts the
    real tokens.
    """
    rows, cur = [], {"input_ids": [], "labels": [], "position_ids": []}
    for e in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(e["input_ids"])
        if cur["input_ids"] and len(cur["input_ids"]) + n > row_tokens:
            rows.append(cur)
            cur = {"input_ids": [], "labels": [], "position_ids": []}
        cur["input_ids"] += e["input_ids"]
        cur["labels"] += [-100] + list(e["labels"][1:])
        cur["position_ids"] += list(range(n))
    if cur["input_ids"]:
        rows.append(cur)
    batches = []
    for i in range(0, len(rows), rows_per_batch):
        group = rows[i:i + rows_per_batch]
        width = max(len(r["input_ids"]) for r in group)
        ids, labels, pos, masks = [], [], [], []
        for r in group:
            n, padn = len(r["input_ids"]), width - len(r["input_ids"])
            ids.append(r["input_ids"] + [0] * padn)
            labels.append(r["labels"] + [-100] * padn)
            p = torch.tensor(r["position_ids"] + [0] * padn)
            pos.append(p)
            seg = torch.cumsum((p == 0).long(), 0)  # every padded slot is its own segment
            masks.append((seg[:, None] == seg[None, :]) & torch.ones(width, width, dtype=torch.bool).tril())
        batches.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                        "position_ids": torch.stack(pos), "attention_mask": torch.stack(masks)[:, None],
                        "n_real": sum(len(r["input_ids"]) for r in group)})
    return batches


def packing_error(model, examples: list[dict]) -> float:
    """|packed loss − token-weighted mean of per-example losses| (≈ 1e-7 when packing is exact)."""
    with torch.no_grad():
        row = {k: v for k, v in pack(examples, 10 ** 9)[0].items() if k != "n_real"}
        packed = float(model(**row).loss)
        tot = cnt = 0.0
        for e in examples:
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
            k = sum(1 for x in e["labels"][1:] if x != -100)
            tot += float(out.loss) * k
            cnt += k
    return abs(packed - tot / cnt)


def make_batches(examples: list[dict], batch: int, pad_id: int, *, grouped: bool, seed: int = 0) -> list[dict]:
    """Padded batches of ``batch`` examples, length-grouped like the trainer or in random order."""
    from obliviate.data.formatting import length_grouped_batches, pad_batch

    lengths = [len(e["input_ids"]) for e in examples]
    if grouped:
        idx = length_grouped_batches(lengths, batch, shuffle=True, seed=seed)
    else:
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        idx = [order[i:i + batch] for i in range(0, len(order), batch)]
    return [pad_batch([examples[i] for i in b], pad_id) for b in idx if len(b) == batch]


def loop_throughput(model, opt, batches: list[dict], *, warmup: int, steps: int, label_positions: bool | str = False,
                    split: bool = False) -> dict:
    """fwd + bwd + AdamW step over ``warmup + steps`` batches; times (and tokens of) the last ``steps``."""
    model.train()
    fwd = bwd = stp = 0.0
    toks = slots = 0
    for i, b in enumerate(batches[: warmup + steps]):
        t0 = time.perf_counter()
        loss = lm_loss(model, b, label_positions=label_positions)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if i >= warmup:
            fwd, bwd, stp = fwd + t1 - t0, bwd + t2 - t1, stp + t3 - t2
            real = int(b["n_real"]) if "n_real" in b else int(b["attention_mask"].sum())
            toks += real
            slots += b["input_ids"].numel()
    total = fwd + bwd + stp
    return {"seconds": total, "tokens": toks, "slots": slots, "forward": fwd, "backward": bwd, "optimizer": stp}


def profile_shares(model, opt, batch: dict) -> dict[str, float]:
    """Share of CPU self-time per operator family in one fwd+bwd+AdamW step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss = lm_loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    fam = {"matmul (mm/addmm/bmm/linear)": 0.0, "attention (sdpa)": 0.0,
           "softmax / cross-entropy": 0.0, "optimizer (AdamW foreach)": 0.0, "other elementwise / copies": 0.0}
    total = 0.0
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    grand = sum(max(e.self_cpu_time_total, 0) for e in events) or 1.0
    fam["_top"] = ", ".join(f"{e.key} {e.self_cpu_time_total / grand:.0%}" for e in events[:6])
    for ev in prof.key_averages():
        t = ev.self_cpu_time_total
        if t <= 0:
            continue
        name = ev.key.lower()
        total += t
        if "foreach" in name or "adam" in name or "lerp" in name:
            fam["optimizer (AdamW foreach)"] += t
        elif "attention" in name or "sdpa" in name or "flash" in name:
            fam["attention (sdpa)"] += t
        elif "softmax" in name or "nll" in name or "cross_entropy" in name:
            fam["softmax / cross-entropy"] += t
        elif any(k in name for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")):
            fam["matmul (mm/addmm/bmm/linear)"] += t
        else:
            fam["other elementwise / copies"] += t
    top = fam.pop("_top")
    out = {k: v / total for k, v in fam.items()} if total else fam
    out["_top"] = top
    return out


def lm_head_flop_share(model, examples: list[dict]) -> float:
    """Share of the 6·N·T model FLOPs spent in the lm_head (tied 49k-vocab projection)."""
    head = model.lm_head.weight.numel()
    return head / n_params(model)


# --------------------------------------------------------------------------- main
class _Rows(list):
    """A row list that saves itself (``checkpoint_rows``) and logs each row to stderr as it is added."""

    def append(self, row: dict) -> None:
        super().append(row)
        checkpoint_rows(self)
        print(f"[train_throughput] {row.get('figure')}: {row.get('value')} {row.get('unit', '')} "
              f"{row.get('note', '')}", file=sys.stderr, flush=True)


def main(quick: bool = False) -> list[dict]:
    """Run the three parts and return the rows (figure, value, unit, ratio, ratio_vs, note)."""
    quick = is_quick(quick)
    # OBLIVIATE_TT_PARTS=methods,window,padding,loop selects parts (default: all four)
    parts = {x.strip() for x in os.environ.get("OBLIVIATE_TT_PARTS", "methods,window,padding,loop").split(",")}
    threads = set_threads()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from obliviate.models import load_model

    rows: list[dict] = _Rows()
    load1 = os.getloadavg()[0]
    rate = measure_matmul_gflops(2048, repeats=3 if quick else 5)
    rows.append({"figure": "fp32 matmul rate (n=2048)", "value": rate, "unit": "GFLOP/s", "ratio": None,
                 "ratio_vs": "", "note": f"{threads} threads, load avg {load1:.1f}"})

    model, tok = load_model(MODEL, dtype="fp32", device="cpu")
    N = n_params(model)
    forget = load_records("forget10", 32 if quick else 64, seed=0)
    retain = load_records("retain90", 32 if quick else 64, seed=1)

    # ---- 2. padding with and without length grouping
    if "padding" in parts:
        from obliviate.data.formatting import length_grouped_batches, padding_share

        enc_all = encode(tok, load_records("forget10") + load_records("retain90", 400 if quick else None))
        lengths = [len(e["input_ids"]) for e in enc_all]
        order = list(range(len(lengths)))
        random.Random(0).shuffle(order)
        for bs in (8, 32):
            grouped = padding_share(length_grouped_batches(lengths, bs, shuffle=True, seed=0), lengths)
            plain = padding_share([order[i:i + bs] for i in range(0, len(order), bs)], lengths)
            rows.append({"figure": f"padding share, batch {bs}: grouped vs random", "value": grouped, "unit": "fraction",
                         "ratio": plain / grouped if grouped else None, "ratio_vs": "random-order padding ÷ grouped",
                         "note": f"random order {plain:.1%}; {len(lengths)} TOFU examples, mean {sum(lengths) / len(lengths):.0f} tokens"})

    # ---- 1. methods through the real trainer
    if "methods" in parts:
        batch, warmup, steps = (8, 2, 2) if quick else (8, 2, 3)  # the first steps of a process run slow
        with tempfile.TemporaryDirectory(prefix="obl-bench-train-") as tmp:
            chosen = [m for m in os.environ.get("OBLIVIATE_TT_METHODS", ",".join(METHODS)).split(",") if m]
            for m in chosen:
                if time_left() < 60:
                    rows.append({"figure": f"train {m}: tokens/s", "note": "skipped: time budget used up"})
                    continue
                rate_m = measure_matmul_gflops(2048, repeats=3)  # the same probe as every other MFU row
                try:
                    r = method_throughput(m, {"forget": forget, "retain": retain}, batch=batch, warmup=warmup,
                                          steps=steps, workdir=Path(tmp))
                except Exception as e:  # a broken method is a row, not a crash
                    rows.append({"figure": f"train {m}: tokens/s", "value": None, "unit": "tokens/s",
                                 "note": f"failed: {type(e).__name__}: {str(e)[:120]}"})
                    continue
                tps = r["tokens"] / r["seconds"]
                rows.append({"figure": f"train {m}: tokens/s", "value": tps, "unit": "tokens/s",
                             "ratio": 6 * N * tps / 1e9 / rate_m, "ratio_vs": "MFU (6N·tok/s ÷ matmul rate)",
                             "note": f"streams {r['streams']}{' + ' + r['regularizer'] if r['regularizer'] else ''}, "
                                     f"batch {batch}/stream, {r['steps']} timed steps, {r['seconds'] / r['steps']:.1f} s/step, "
                                     f"padding {1 - r['tokens'] / max(r['slots'], 1):.0%}"})
                print(f"[train_throughput] {m}: {tps:.0f} tokens/s", file=sys.stderr, flush=True)

    # ---- 1b. the trainer with and without response-window logits (same method, same data, same run)
    if "window" in parts:
        batch, warmup, steps = (8, 1, 2) if quick else (8, 1, 4)
        with tempfile.TemporaryDirectory(prefix="obl-bench-window-") as tmp:
            res = {}
            for flag in (True, False):
                if time_left() < 90:
                    rows.append({"figure": f"trainer ga, response window {'on' if flag else 'off'}",
                                 "note": "skipped: time budget used up"})
                    continue
                res[flag] = method_throughput("ga", {"forget": forget}, batch=batch, warmup=warmup, steps=steps,
                                              workdir=Path(tmp), response_window=flag)
            if len(res) == 2:
                tps = {f: r["tokens"] / r["seconds"] for f, r in res.items()}
                rate_w = measure_matmul_gflops(2048, repeats=3)
                for flag in (True, False):
                    rows.append({"figure": f"trainer ga, logits on {'the response window' if flag else 'every position'}",
                                 "value": tps[flag], "unit": "tokens/s", "ratio": tps[flag] / tps[False],
                                 "ratio_vs": "÷ every-position logits",
                                 "note": f"batch {batch}, {res[flag]['steps']} timed steps, "
                                         f"MFU {6 * N * tps[flag] / 1e9 / rate_w:.2f}"})

    # ---- 3. MFU analysis on a plain loop
    if "loop" not in parts:
        return rows
    sample = encode(tok, load_records("forget10", 128 if quick else 256, seed=2))
    pad = tok.pad_token_id
    w, s = (1, 1) if quick else (1, 4)
    rate = measure_matmul_gflops(2048, repeats=3)
    rows.append({"figure": "fp32 matmul rate before loop analysis", "value": rate, "unit": "GFLOP/s",
                 "note": f"load avg {os.getloadavg()[0]:.1f}"})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def fits(label, need=20.0) -> bool:
        if time_left() < need:
            rows.append({"figure": f"loop {label}: tokens/s", "note": "skipped: time budget used up"})
            return False
        return True

    def row(label, r, note=""):
        tps = r["tokens"] / r["seconds"]
        rows.append({"figure": f"loop {label}: tokens/s", "value": tps, "unit": "tokens/s",
                     "ratio": 6 * N * tps / 1e9 / rate, "ratio_vs": "MFU", "note": note})
        return tps

    grouped8 = make_batches(sample, 8, pad, grouped=True)
    if fits("batch 8, grouped (baseline)"):
        base = loop_throughput(model, opt, grouped8, warmup=w, steps=s)
        tot = base["seconds"]
        row("batch 8, grouped (baseline)", base,
            f"fwd {base['forward'] / tot:.0%} / bwd {base['backward'] / tot:.0%} / AdamW {base['optimizer'] / tot:.0%} "
            f"of step time; padding {1 - base['tokens'] / base['slots']:.0%}")
    if fits("batch 8, random order"):
        r = loop_throughput(model, opt, make_batches(sample, 8, pad, grouped=False), warmup=w, steps=s)
        row("batch 8, random order", r, f"padding {1 - r['tokens'] / r['slots']:.0%}")
    if fits("batch 8, lm_head+CE at response positions only"):
        r = loop_throughput(model, opt, grouped8, warmup=w, steps=s, label_positions=True)
        row("batch 8, lm_head+CE at response positions only", r,
            f"lm_head = {lm_head_flop_share(model, sample):.0%} of 6N FLOPs; responses are "
            f"{sum(sum(1 for x in e['labels'] if x != -100) for e in sample) / sum(len(e['input_ids']) for e in sample):.0%} of tokens")
    if fits("batch 8, response window (slice)"):
        r = loop_throughput(model, opt, grouped8, warmup=w, steps=s, label_positions="window")
        row("batch 8, response window (slice)", r, "logits_to_keep = positions from the first response token on "
            "(what the trainer does)")
    packed = pack(sample, 256, rows_per_batch=3)
    if fits("packed 3 rows × 256 tokens"):
        err = packing_error(model, sample[:4])
        r = loop_throughput(model, opt, packed, warmup=w, steps=s)
        row("packed 3 rows × 256 tokens", r, f"padding {1 - r['tokens'] / r['slots']:.0%}; "
            f"|packed − per-example loss| = {err:.0e}")
    if fits("packed 3×256 + response-position lm_head"):
        r = loop_throughput(model, opt, packed, warmup=w, steps=s, label_positions=True)
        row("packed 3×256 + response-position lm_head", r, "both improvements together")
    big = 16 if quick else 32
    if fits(f"batch {big}, grouped", 40):
        r = loop_throughput(model, opt, make_batches(sample, big, pad, grouped=True), warmup=1, steps=1 if quick else 2)
        row(f"batch {big}, grouped", r, f"padding {1 - r['tokens'] / r['slots']:.0%}")
    if time_left() < 15:
        rows.append({"figure": "profile shares", "note": "skipped: time budget used up"})
        return rows
    shares = profile_shares(model, opt, make_batches(sample, 8, pad, grouped=True)[0])
    top = shares.pop("_top")
    rows.append({"figure": "profile: top operators by self time", "value": None, "unit": "", "note": top})
    for k, v in shares.items():
        rows.append({"figure": f"profile share: {k}", "value": v, "unit": "fraction of step CPU time",
                     "note": "torch.profiler self time, batch 8 grouped"})
    return rows


if __name__ == "__main__":
    script_entry(main)
