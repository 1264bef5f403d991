"""``python -m obliviate.memory_estimate``: per-GPU training memory estimates as a Markdown table.

Not an ``obliviate`` subcommand: ``obliviate/memory_estimate.py`` (the arithmetic) hands its
``__main__`` to :func:`main` here, so the command line below keeps working::

    python -m obliviate.memory_estimate --model llama-3-8b --method snap --gpus 1,4,8 --zero-stage 3
    python -m obliviate.memory_estimate --params 8e9 --method ulmr --lora-rank 16
"""

from __future__ import annotations

import argparse
from typing import Iterable

from ..memory_estimate import (ATTENTION, DTYPES, METHOD_PROFILES, MODEL_SHAPES, OPTIMIZERS, SWD_MODES, estimate_grid,
                               estimate_table)
from ._args import int_list


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m obliviate.memory_estimate``."""
    p = argparse.ArgumentParser(prog="python -m obliviate.memory_estimate",
                                description="Estimate per-GPU training memory (full FT vs LoRA, ZeRO).")
    p.add_argument("--model", help=f"preset: {', '.join(sorted(MODEL_SHAPES))} (or an alias)")
    p.add_argument("--params", type=float, help="parameter count, e.g. 8e9 (nearest preset's shapes)")
    p.add_argument("--method", default="snap", choices=sorted(METHOD_PROFILES))
    p.add_argument("--lora-rank", type=int_list, default=None,
                   help="LoRA rank(s); 0 means full fine-tuning, e.g. 0,16")
    p.add_argument("--dtype", default="bf16", choices=DTYPES)
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS)
    p.add_argument("--gpus", type=int_list, default=[1], help="comma list, e.g. 1,4,8")
    p.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2, 3])
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=1, help="micro-batch per GPU per stream")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--reference-model", action="store_true", help="hold a frozen reference copy")
    p.add_argument("--swd-mode", default="copy", choices=SWD_MODES,
                   help="copy: θ_init kept (the regularizer's default, fresh directions, as the paper); "
                        "fixed: fixed-projection cache (opt-in); none (default: %(default)s)")
    p.add_argument("--attention", default="sdpa", choices=ATTENTION)
    p.add_argument("--offload-optimizer", action="store_true")
    return p


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m obliviate.memory_estimate``: print per-GPU estimates as a Markdown table."""
    p = build_parser()
    a = p.parse_args(list(argv) if argv is not None else None)
    if not a.model and a.params is None:
        p.error("give --model or --params")
    try:
        ests = estimate_grid(
            a.lora_rank or [0], a.gpus, n_params=a.params, model=a.model, method=a.method, dtype=a.dtype,
            optimizer=a.optimizer, zero_stage=a.zero_stage, seq_len=a.seq_len, batch=a.batch,
            gradient_checkpointing=not a.no_gradient_checkpointing,
            reference_model=True if a.reference_model else None, swd_mode=a.swd_mode,
            attention=a.attention, offload_optimizer=a.offload_optimizer)
    except ValueError as e:
        p.error(str(e))
    print(f"method={a.method} dtype={a.dtype} optimizer={a.optimizer} ZeRO-{a.zero_stage} "
          f"seq_len={a.seq_len} batch/GPU={a.batch} gradient_checkpointing={not a.no_gradient_checkpointing}\n")
    print(estimate_table(ests))
    notes = sorted({n for _, e in ests for n in e.notes})
    for n in notes:
        print(f"- {n}")
    return 0
