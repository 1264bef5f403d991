"""Quantization attack: 8-bit and 4-bit weights can undo an unlearning that moved the weights little.

Source: Zhang et al. 2024, "Catastrophic failure of LLM unlearning via quantization": methods
that stay close to the original weights (a small learning rate, a retain or KL term — and by
design ULMR's parameter averaging and SNAP's Wasserstein regularizer) see most of the forgotten
answers return after 4-bit post-training quantization, because the unlearning update is smaller
than a quantization step and rounds away. Their RTN setting is round-to-nearest, per-channel /
per-group, weight-only, which is what both backends here do:

* ``quanto`` — ``optimum-quanto`` (the ``audit`` extra): ``quantize(model, weights=qint8|qint4)``
  then ``freeze``; int8 is per-output-channel symmetric, int4 is group-wise (128) affine. Checked
  on this machine with torch 2.13.0 (CPU wheel): installing it leaves torch unchanged, int8 works
  at once, int4 JIT-compiles a small C++ unpack kernel on its first use (about 30 s, needs a C++
  compiler; cached afterwards). SmolLM2-135M, 8×13 tokens on 2 cores: forward 0.20 s fp32,
  0.23 s int8, 0.26 s int4. torchao 0.18 was also tried: int8 weight-only works on CPU, but its
  int4 weight-only config needs the ``mslk`` kernel package, so it was not used.
* ``rtn`` — built in, no dependency: each ``nn.Linear`` weight is quantized and de-quantized in
  place (simulated quantization, the same values a real int kernel computes with):
  ``s = max|w_g| / (2^(b−1) − 1)`` per group ``g`` of ``group_size`` input columns of a row
  (the whole row when the row length is not a multiple), ``ŵ = s · clamp(round(w/s), −2^(b−1),
  2^(b−1) − 1)``.

``auto`` picks quanto when it is installed, else rtn. ``lm_head`` (tied to the embeddings in
small models) stays in full precision in both, as in the paper's AWQ/GPTQ settings.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable

import torch

from .common import AuditConfig, score_items, summarize

log = logging.getLogger(__name__)

__all__ = ["rtn_quantize_", "quantize_model", "quantization_attack", "resolve_backend"]

EXCLUDE = ("lm_head",)


def resolve_backend(backend: str) -> str:
    """``auto`` → ``quanto`` when ``optimum-quanto`` is importable, else ``rtn``; others unchanged."""
    if backend == "auto":
        return "quanto" if importlib.util.find_spec("optimum") and importlib.util.find_spec("optimum.quanto") \
            else "rtn"
    if backend == "quanto" and not (importlib.util.find_spec("optimum") and importlib.util.find_spec("optimum.quanto")):
        raise ImportError("quant_backend 'quanto' needs optimum-quanto: pip install 'obliviate[audit]' "
                          "(or use --quant-backend rtn)")
    return backend


@torch.no_grad()
def rtn_quantize_(model: torch.nn.Module, bits: int, *, group_size: int = 128,
                  exclude: tuple[str, ...] = EXCLUDE) -> dict[str, Any]:
    """Round-to-nearest symmetric weight quantization of every ``nn.Linear`` (in place, simulated).

    For each row of a weight, per group of ``group_size`` columns (whole row if the row length is
    not a multiple of it): ``s = max|w| / q_max`` with ``q_max = 2^(bits−1) − 1``, and
    ``w ← s · clamp(round(w / s), −q_max − 1, q_max)``. Modules whose name contains an ``exclude``
    entry are left alone. Returns ``{"layers", "params", "mean_abs_change"}``.
    """
    if bits < 2 or bits > 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    qmax = 2 ** (bits - 1) - 1
    layers = params = 0
    change = 0.0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or any(e in name for e in exclude):
            continue
        w = mod.weight
        rows, cols = w.shape
        g = group_size if cols % group_size == 0 else cols
        wf = w.float().reshape(rows, cols // g, g)
        scale = wf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
        q = torch.clamp(torch.round(wf / scale), -qmax - 1, qmax)
        new = (q * scale).reshape(rows, cols).to(w.dtype)
        change += float((new.float() - w.float()).abs().sum())
        w.copy_(new)
        layers += 1
        params += w.numel()
    return {"layers": layers, "params": params, "mean_abs_change": change / max(params, 1)}


def quantize_model(model: torch.nn.Module, bits: int, *, backend: str = "auto", group_size: int = 128):
    """Quantize ``model``'s Linear weights to ``bits`` with ``backend`` (see the module docstring).

    Returns ``(model, info)``; the model is changed in place (quanto replaces Linear layers by
    QLinear). quanto supports 8 and 4 bits (and 2); other widths use rtn.
    """
    be = resolve_backend(backend)
    if be == "quanto" and bits not in (8, 4, 2):
        be = "rtn"
    if be == "rtn":
        info = rtn_quantize_(model, bits, group_size=group_size)
        return model, {"backend": "rtn", "bits": bits, "group_size": group_size, **info}
    from optimum.quanto import freeze, qint2, qint4, qint8, quantize

    before = {n: m.weight.detach().float().clone() for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and not any(e in n for e in EXCLUDE)}
    quantize(model, weights={8: qint8, 4: qint4, 2: qint2}[bits], exclude=list(EXCLUDE))
    freeze(model)
    change = params = 0.0
    mods = dict(model.named_modules())
    for n, w0 in before.items():
        wq = mods[n].weight
        with torch.no_grad():
            deq = wq.dequantize() if hasattr(wq, "dequantize") else wq
            change += float((deq.float() - w0).abs().sum())
        params += w0.numel()
    return model, {"backend": "quanto", "bits": bits, "layers": len(before), "params": int(params),
                   "mean_abs_change": change / max(params, 1)}


def quantization_attack(load: Callable[[], tuple[Any, Any]], data, cfg: AuditConfig, *,
                        progress: bool = True, label: str = "model") -> dict[str, Any]:
    """Quantize a fresh copy of the model to each of ``cfg.quant_bits`` and score the forget set.

    Returns ``{"<b>bit": {"rouge", "prob", "n", "quantization": info, "rows": [...]}}``.
    """
    out: dict[str, Any] = {}
    for bits in cfg.quant_bits:
        model, tok = load()
        model, info = quantize_model(model, bits, backend=cfg.quant_backend, group_size=cfg.quant_group_size)
        rows = score_items(model, tok, [r.question for r in data.forget], [r.answer for r in data.forget],
                           batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                           progress=f"{label} {bits}-bit" if progress else False)
        out[f"{bits}bit"] = {**summarize(rows), "quantization": info, "rows": rows}
        del model
    return out
