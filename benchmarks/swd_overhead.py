"""What SNAP's sliced Wasserstein regularizer costs per training step, and what the fixed mode saves.

One SNAP step = NLL on a forget batch + NLL on a retain batch (+ λ·SW(θ, θ_init), K = 100
directions, every 2-D weight matrix, rows as samples), AdamW, on SmolLM2-135M-Instruct (fp32,
full fine-tuning) with TOFU forget01 / retain90 batches of 4. Measured in one run:

* CPU seconds per step (``time.process_time``: all threads of this process, so the figures hold
  when other processes share the cores; wall seconds are reported too) without the regularizer,
  with SWD ``fresh`` (new directions each step, the paper; keeps a frozen copy of θ_init) and
  with SWD ``fixed`` (same directions every step; only the sorted reference projections are
  kept) — ``reg_share`` is the regularizer's own forward + backward CPU time over the step's;
* the bytes each mode holds for θ_init: the frozen copy of the regularized weights (fresh) versus
  the directions + sorted projections (fixed), and their ratio.

    python benchmarks/swd_overhead.py [--quick]

Prints a Markdown table and writes ``benchmarks/results/swd_overhead.json``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, TOFU_DIR, is_quick, script_entry, set_threads  # noqa: E402


def _batches(tokenizer, records, n, batch_size=4):
    from obliviate.data.formatting import encode_example
    from obliviate.train import stream_loader

    enc = [encode_example(tokenizer, r.question, r.answer, max_length=96) for r in records]
    loader = list(stream_loader(enc, tokenizer.pad_token_id, batch_size))
    return [loader[i % len(loader)] for i in range(n)]


def _nll(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def _time_steps(model, reg, f_batches, r_batches, steps):
    """Per step (both NLLs + λ·SWD + backward + AdamW), after one untimed warm-up step: mean wall
    seconds, mean CPU seconds of this process (all its threads; robust to other processes sharing
    the cores), and the regularizer's own forward + backward in wall and CPU seconds."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    wall, cpu, reg_wall, reg_cpu = [], [], [], []
    for i in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = _nll(model, f_batches[i]) + _nll(model, r_batches[i])
        if reg is not None:
            t1, c1 = time.perf_counter(), time.process_time()
            r = reg.weight * reg(model)
            r.backward()
            rt, rc = time.perf_counter() - t1, time.process_time() - c1
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if reg is not None:
                reg_wall.append(rt)
                reg_cpu.append(rc)

    def mean(x):
        return sum(x) / len(x) if x else 0.0

    return mean(wall), mean(cpu), mean(reg_wall), mean(reg_cpu)


def main(quick: bool = False) -> list[dict]:
    from obliviate.data.readers import read_records
    from obliviate.models import load_model
    from obliviate.objectives.regularizers import SlicedWasserstein

    quick = is_quick(quick)
    threads = set_threads()
    steps = 1 if quick else 3
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m-instruct", dtype="fp32", device="cpu")
    f_batches = _batches(tok, read_records(TOFU_DIR / "forget01.jsonl"), steps + 1)
    r_batches = _batches(tok, read_records(TOFU_DIR / "retain90.jsonl")[:40], steps + 1)
    init_state = copy.deepcopy(model.state_dict())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def fresh_model():
        model.load_state_dict(init_state)
        return model

    base, base_cpu, _, _ = _time_steps(fresh_model(), None, f_batches, r_batches, steps)
    rows = [{"figure": "SNAP step, no regularizer (CPU s)", "value": base_cpu, "unit": "CPU s/step", "ratio": 1.0,
             "ratio_vs": "no regularizer", "wall_s": base, "reg_cpu_s": 0.0, "reg_share": 0.0,
             "theta_init_MiB": 0.0}]
    held = {}
    for mode in ("fresh", "fixed"):
        m = fresh_model()
        reg = SlicedWasserstein(0.1, n_projections=100, mode=mode, seed=0)
        t0 = time.perf_counter()
        reg.setup(m)
        setup_s = time.perf_counter() - t0
        held[mode] = reg.reference_bytes()
        step, step_cpu, reg_s, reg_cpu = _time_steps(m, reg, f_batches, r_batches, steps)
        rows.append({"figure": f"SNAP step, SWD {mode} (K=100) (CPU s)", "value": step_cpu, "unit": "CPU s/step",
                     "ratio": step_cpu / base_cpu, "ratio_vs": "no regularizer", "wall_s": step,
                     "reg_cpu_s": reg_cpu, "reg_share": reg_cpu / step_cpu, "setup_s": setup_s,
                     "theta_init_MiB": held[mode] / 2**20, "tensors": len(reg.tensor_names)})
        del reg
    rows.append({"figure": "θ_init memory: fixed vs fresh (frozen copy)", "value": held["fixed"] / 2**20,
                 "unit": "MiB", "ratio": held["fixed"] / held["fresh"], "ratio_vs": "fresh (frozen copy)",
                 "fresh_MiB": held["fresh"] / 2**20, "model_MiB": weight_bytes / 2**20})
    for r in rows:
        r["threads"] = threads
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_DIR / ".swd_overhead.json.tmp"
    tmp.write_text(json.dumps({"rows": rows, "steps": steps, "batch_size": 4, "model": "smollm2-135m-instruct"},
                              indent=1, default=float))
    os.replace(tmp, RESULTS_DIR / "swd_overhead.json")
    return rows


if __name__ == "__main__":
    script_entry(main)
