"""Per-GPU memory estimate for an unlearning run: full fine-tuning vs LoRA, ZeRO / FSDP sharding.

The arithmetic (bytes per parameter) follows the ZeRO paper (Rajbhandari et al., 2020): mixed
precision AdamW keeps 2 bytes of 16-bit weights, 2 bytes of 16-bit gradients and 12 bytes of fp32
optimizer state (master weights, first and second moment) per trainable parameter; ZeRO stage 1
shards the optimizer state over the GPUs, stage 2 also the gradients, stage 3 (= FSDP full shard)
also the weights. Activations follow the per-layer counting of Korthikanti et al. (2022),
adapted to Llama blocks (RMSNorm, grouped-query attention with RoPE, SwiGLU MLP).

Everything here is an *estimate* written down from shapes, not a measurement: real runs add
allocator fragmentation, temporary buffers of fused kernels and communication buckets, which the
``overhead`` line only approximates. Use it to choose the number of GPUs, ZeRO stage, LoRA and
gradient checkpointing before renting hardware.

Command line::

    python -m obliviate.memory_estimate --model llama-3-8b --method snap --gpus 1,4,8 --zero-stage 3
    python -m obliviate.memory_estimate --params 8e9 --method ulmr --lora-rank 16
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Sequence

GiB = 2 ** 30


@dataclass(frozen=True)
class ModelShape:
    """The shapes of a Llama-style decoder that the estimate needs (all dims in elements)."""

    n_params: float
    hidden: int
    layers: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        """Per-head dimension ``hidden / n_heads``."""
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection: ``n_kv_heads × head_dim``."""
        return self.n_kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """``(out_features, in_features)`` of the 7 projections of one decoder layer."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]

    def layer_params(self) -> int:
        """Parameters of one decoder layer (7 projections + 2 RMSNorm weights)."""
        return sum(o * n for o, n in self.linear_shapes()) + 2 * self.hidden


#: Shapes of the papers' models (from their config.json files) and of the embedded default.
MODEL_SHAPES: dict[str, ModelShape] = {
    "llama-3-8b": ModelShape(8.030e9, 4096, 32, 14336, 32, 8, 128256),
    "llama-2-7b": ModelShape(6.738e9, 4096, 32, 11008, 32, 32, 32000),
    "mistral-7b": ModelShape(7.242e9, 4096, 32, 14336, 32, 8, 32000),
    "smollm2-135m": ModelShape(134.5e6, 576, 30, 1536, 9, 3, 49152, tied_embeddings=True),
}
MODEL_ALIASES = {
    "llama-3-8b-instruct": "llama-3-8b", "meta-llama/meta-llama-3-8b-instruct": "llama-3-8b",
    "llama-2-7b-chat": "llama-2-7b", "meta-llama/llama-2-7b-chat-hf": "llama-2-7b",
    "mistral-7b-instruct": "mistral-7b", "mistralai/mistral-7b-instruct-v0.2": "mistral-7b",
    "smollm2-135m-instruct": "smollm2-135m", "8b": "llama-3-8b", "7b": "llama-2-7b",
}


@dataclass(frozen=True)
class MethodProfile:
    """What a method holds in memory per step.

    ``streams``: sequences forwarded with gradients per step (per micro-batch row);
    ``reference``: ``"none"`` | ``"cached"`` (per-sample log-probs computed once, no model copy) |
    ``"model"`` (a frozen copy must run every step, e.g. token-level KL); ``init_copies``: full
    copies of θ_init the penalty needs (Euclidean 1, Fisher 2 = θ_init + diagonal Fisher);
    ``swd``: uses SNAP's sliced-Wasserstein regularizer.
    """

    streams: int
    reference: str = "none"
    init_copies: int = 0
    swd: bool = False


METHOD_PROFILES: dict[str, MethodProfile] = {
    "ga": MethodProfile(1),
    "graddiff": MethodProfile(2),
    "kl": MethodProfile(2, reference="model"),
    "npo": MethodProfile(2, reference="cached"),
    "dpo": MethodProfile(3, reference="cached"),
    "idkdpo": MethodProfile(3, reference="cached"),
    "ulmr": MethodProfile(1),
    "snap": MethodProfile(2, swd=True),
    "euclidean": MethodProfile(2, init_copies=1),
    "fisher": MethodProfile(2, init_copies=2),
    "retrain": MethodProfile(1),
}

DTYPES = ("bf16", "bf16_pure", "fp16", "fp32")
OPTIMIZERS = ("adamw", "adamw_8bit", "sgd")
SWD_MODES = ("none", "copy", "fixed")
ATTENTION = ("sdpa", "eager")


@dataclass
class MemoryEstimate:
    """Per-GPU memory breakdown in bytes (``components``) plus what was assumed (``notes``)."""

    components: dict[str, float]
    cpu_offload: dict[str, float] = field(default_factory=dict)
    trainable_params: float = 0.0
    total_params: float = 0.0
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        """Sum of all per-GPU components, in bytes."""
        return float(sum(self.components.values()))

    @property
    def total_gib(self) -> float:
        """Per-GPU total in GiB."""
        return self.total / GiB

    def gib(self) -> dict[str, float]:
        """The per-GPU components in GiB (and ``total``)."""
        out = {k: v / GiB for k, v in self.components.items()}
        out["total"] = self.total_gib
        return out

    def to_dict(self) -> dict:
        """JSON-friendly dict: components and totals in GiB, settings and notes."""
        d = asdict(self)
        d["components_gib"] = self.gib()
        d["cpu_offload_gib"] = {k: v / GiB for k, v in self.cpu_offload.items()}
        return d


def resolve_shape(model: str | ModelShape | None = None, n_params: float | None = None) -> tuple[ModelShape, str]:
    """Return ``(shape, how)`` for a preset name, a :class:`ModelShape`, or the preset nearest ``n_params``.

    With only ``n_params``, the preset of closest size is used and its hidden/layers/vocab are
    kept while ``n_params`` is replaced (``how`` says so, and the estimate carries the note).
    """
    if isinstance(model, ModelShape):
        return model, "given shape"
    if model:
        key = MODEL_ALIASES.get(model.lower(), model.lower())
        if key not in MODEL_SHAPES:
            raise ValueError(f"unknown model {model!r}; known: {sorted(MODEL_SHAPES)} "
                             f"(aliases {sorted(MODEL_ALIASES)}) or pass hidden/layers/... explicitly")
        return MODEL_SHAPES[key], key
    if n_params is None:
        raise ValueError("give a model preset name or n_params")
    key = min(MODEL_SHAPES, key=lambda k: abs(math.log(MODEL_SHAPES[k].n_params / n_params)))
    s = MODEL_SHAPES[key]
    return ModelShape(float(n_params), s.hidden, s.layers, s.intermediate, s.n_heads, s.n_kv_heads, s.vocab,
                      s.tied_embeddings), f"shape of {key} (nearest preset)"


def lora_trainable_params(shape: ModelShape, rank: int) -> int:
    """LoRA parameters with ``target_modules='all-linear'``: ``r × (in + out)`` per projection per layer."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    return shape.layers * sum(rank * (o + i) for o, i in shape.linear_shapes())


def activation_bytes_per_token_layer(shape: ModelShape, act_bytes: int = 2) -> float:
    """Bytes saved for backward per token per decoder layer (no attention-score term).

    Counted elements: attention block ``4h + 3·kv`` (projection input, Q, K, V, RoPE'd Q and K,
    attention output), two RMSNorm inputs ``2h``, SwiGLU MLP ``h + 4i`` (input, gate, up,
    SiLU(gate), product) — the Llama analogue of Korthikanti et al.'s ``34·s·b·h`` bytes.
    """
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    return act_bytes * (7 * h + 3 * kv + 4 * i)


def estimate_training_memory(
    n_params: float | None = None,
    *,
    method: str = "snap",
    lora_rank: int | None = None,
    dtype: str = "bf16",
    optimizer: str = "adamw",
    n_gpus: int = 1,
    zero_stage: int = 0,
    seq_len: int = 512,
    batch: int = 1,
    hidden: int | None = None,
    layers: int | None = None,
    intermediate: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    vocab: int | None = None,
    model: str | ModelShape | None = None,
    gradient_checkpointing: bool = True,
    reference_model: bool | None = None,
    swd_mode: str = "copy",
    swd_projections: int = 100,
    attention: str = "sdpa",
    offload_optimizer: bool = False,
    overhead_gib: float = 1.0,
) -> MemoryEstimate:
    """Estimate per-GPU training memory for one unlearning run (bytes, see :class:`MemoryEstimate`).

    Components:

    * ``weights``: ``n_params × w`` with w = 2 bytes (bf16/fp16) or 4 (fp32); sharded ÷ n_gpus at
      ZeRO-3. With LoRA the frozen base is not sharded by ZeRO-1/2 and the adapter adds its own.
    * ``gradients``: trainable × 2 (16-bit) or 4 bytes; ÷ n_gpus at ZeRO ≥ 2.
    * ``optimizer``: trainable × (12 bytes for mixed-precision AdamW: fp32 master + m + v;
      8 for fp32 / bf16_pure AdamW; 2+4 for 8-bit AdamW; 0 for SGD); ÷ n_gpus at ZeRO ≥ 1, moved
      to CPU with ``offload_optimizer``.
    * ``reference``: a frozen copy (``n_params × w``) only when the method needs the reference
      model every step and its outputs are not cached (``reference_model=True`` forces it); with
      LoRA the reference is the base with the adapter disabled, so no copy.
    * ``swd``: SNAP's θ_init — ``"copy"`` keeps a full frozen copy (n_params × w); ``"fixed"``
      keeps, for fixed K directions, the sorted projections of every weight matrix's rows
      (Σ rows × K × 4 bytes) plus the directions, and drops the copy (not sharded: each rank
      regularizes whole, gathered tensors). With LoRA, θ_init is the
      frozen base, so neither is needed. Either way the step's autograd graph keeps, per
      regularized matrix, the sort indices (int64), projections and differences (fp32): rows × K
      × 16 bytes (``SWD autograd buffers``).
    * ``activations``: Σ over ``streams`` × batch × seq_len tokens of the per-layer saved tensors
      (all layers, or with gradient checkpointing one layer input per layer plus one recomputed
      layer), eager attention adds 2 × heads × s² × b per layer, plus the logits
      (V × (w + 4 + 4) bytes per token: 16-bit logits, fp32 upcast, fp32 log-softmax).
    * ``zero3_gather``: the parameters ZeRO-3 gathers at once (the larger of two layers or the
      embedding); ``overhead``: CUDA context and allocator slack (``overhead_gib``).
    """
    if method not in METHOD_PROFILES:
        raise ValueError(f"method must be one of {sorted(METHOD_PROFILES)}, got {method!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if swd_mode not in SWD_MODES:
        raise ValueError(f"swd_mode must be one of {SWD_MODES}, got {swd_mode!r}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    for name, v in (("n_gpus", n_gpus), ("seq_len", seq_len), ("batch", batch)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n_params is not None and not n_params > 0:
        raise ValueError(f"n_params must be > 0, got {n_params!r}")

    notes: list[str] = []
    if hidden is not None or layers is not None:
        if hidden is None or layers is None or n_params is None:
            raise ValueError("explicit shapes need n_params, hidden and layers (intermediate, n_heads, "
                             "n_kv_heads, vocab default to Llama ratios)")
        heads = n_heads or max(1, hidden // 128)
        shape = ModelShape(float(n_params), hidden, layers, intermediate or int(round(hidden * 3.5)),
                           heads, n_kv_heads or heads, vocab or 32000)
    else:
        shape, how = resolve_shape(model, n_params)
        if n_params is not None and model is not None:
            shape = ModelShape(float(n_params), shape.hidden, shape.layers, shape.intermediate, shape.n_heads,
                               shape.n_kv_heads, shape.vocab, shape.tied_embeddings)
        if how != "given shape":
            notes.append(f"shapes: {how}")
    P = shape.n_params
    prof = METHOD_PROFILES[method]
    w = 4 if dtype == "fp32" else 2
    mixed = dtype in ("bf16", "fp16")
    lora = lora_rank is not None
    trainable = float(lora_trainable_params(shape, lora_rank)) if lora else P
    g = n_gpus
    shard_w = zero_stage >= 3
    shard_g = zero_stage >= 2
    shard_o = zero_stage >= 1
    if zero_stage and g == 1:
        notes.append("ZeRO with one GPU shards nothing (only offload helps)")

    comp: dict[str, float] = {}
    cpu: dict[str, float] = {}
    # weights
    comp["weights"] = P * w / (g if shard_w else 1)
    if lora:
        comp["LoRA adapter weights"] = trainable * w / (g if shard_w else 1)
    # gradients
    comp["gradients"] = trainable * (2 if mixed or dtype == "bf16_pure" else 4) / (g if shard_g else 1)
    # optimizer states
    if optimizer == "sgd":
        opt_b = 4.0 if mixed else 0.0  # fp32 master copy only
    elif optimizer == "adamw_8bit":
        opt_b = (4.0 if mixed else 0.0) + 2.0
    else:
        opt_b = 12.0 if mixed else (4.0 if dtype == "bf16_pure" else 8.0)
    opt = trainable * opt_b / (g if shard_o else 1)
    if offload_optimizer:
        cpu["optimizer states (offloaded)"] = opt
        comp["optimizer states"] = 0.0
        notes.append("optimizer states offloaded to CPU RAM (DeepSpeed offload_optimizer)")
    else:
        comp["optimizer states"] = opt
    # reference model
    need_ref = prof.reference == "model" if reference_model is None else bool(reference_model)
    if need_ref and not lora:
        comp["reference model copy"] = P * w / (g if shard_w else 1)
    else:
        comp["reference model copy"] = 0.0
        if prof.reference == "cached":
            notes.append(f"{method}: reference log-probs cached once per sample (no model copy)")
        if need_ref and lora:
            notes.append("LoRA: reference = base model with the adapter disabled (no copy)")
    # init copies (euclidean / fisher)
    if prof.init_copies and not lora:
        comp["θ_init / Fisher copies"] = prof.init_copies * P * 4 / (g if shard_w else 1)
    # SWD
    if prof.swd and swd_mode != "none":
        rows = shape.layers * sum(o for o, _ in shape.linear_shapes()) + shape.vocab * (1 if shape.tied_embeddings else 2)
        if lora:  # only the adapted projections, regularized through their effective weight W0 + BA
            rows = shape.layers * sum(o for o, _ in shape.linear_shapes())
        # kept for backward until the step's backward: sort indices (int64), projections and
        # differences (fp32), one (rows × K) each
        comp["SWD autograd buffers"] = rows * swd_projections * (8 + 4 + 4)
        if lora:
            notes.append("LoRA: SWD's θ_init is the frozen base (no copy, no cache)")
        elif swd_mode == "copy":
            comp["SWD θ_init copy"] = P * w / (g if shard_w else 1)
            if shard_w and g > 1:
                notes.append("SWD copy under ZeRO-3: θ_init held as a partitioned frozen copy, gathered per module")
        else:
            dirs = {i for _, i in shape.linear_shapes()} | {shape.hidden}
            cache = rows * swd_projections * 4 + sum(dirs) * swd_projections * 4
            comp["SWD fixed-projection cache"] = cache  # every rank regularizes whole gathered tensors
            notes.append(f"SWD fixed projections: K={swd_projections}, θ_init copy dropped "
                         f"(a copy would be {P * w / GiB:.1f} GiB)")
    # activations
    tokens = prof.streams * batch * seq_len
    per_layer = activation_bytes_per_token_layer(shape, w)
    eager = 2 * shape.n_heads * seq_len * seq_len * batch * prof.streams * w if attention == "eager" else 0.0
    if gradient_checkpointing:
        act = shape.layers * tokens * shape.hidden * w + tokens * per_layer + eager
    else:
        act = shape.layers * (tokens * per_layer + eager)
    logits = tokens * shape.vocab * (w + 4 + 4)
    comp["activations"] = act
    comp["logits + loss"] = logits
    if shard_w and g > 1:
        gather = max(2 * shape.layer_params(), shape.vocab * shape.hidden) * w
        comp["ZeRO-3 gathered params"] = gather
    comp["overhead (CUDA context, allocator)"] = overhead_gib * GiB

    settings = dict(method=method, n_params=P, lora_rank=lora_rank, dtype=dtype, optimizer=optimizer,
                    n_gpus=n_gpus, zero_stage=zero_stage, seq_len=seq_len, batch=batch,
                    gradient_checkpointing=gradient_checkpointing, reference_model=need_ref,
                    swd_mode=swd_mode if prof.swd else "n/a", attention=attention,
                    offload_optimizer=offload_optimizer, streams=prof.streams)
    return MemoryEstimate(comp, cpu, trainable, P, settings, notes)


COMPONENT_ORDER = ["weights", "LoRA adapter weights", "gradients", "optimizer states", "reference model copy",
                   "θ_init / Fisher copies", "SWD θ_init copy", "SWD fixed-projection cache", "SWD autograd buffers", "activations",
                   "logits + loss", "ZeRO-3 gathered params", "overhead (CUDA context, allocator)"]


def estimate_table(estimates: Sequence[tuple[str, MemoryEstimate]]) -> str:
    """Markdown table, one column per labelled estimate, one row per component (GiB)."""
    keys: list[str] = []
    for _, e in estimates:
        keys.extend(k for k in e.components if k not in keys)
    keys.sort(key=lambda k: COMPONENT_ORDER.index(k) if k in COMPONENT_ORDER else len(COMPONENT_ORDER))
    head = "| component (GiB per GPU) | " + " | ".join(lbl for lbl, _ in estimates) + " |"
    lines = [head, "| --- |" + " --- |" * len(estimates)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{e.components.get(k, 0.0) / GiB:.2f}" for _, e in estimates) + " |")
    if any(e.cpu_offload for _, e in estimates):
        lines.append("| CPU RAM (offloaded) | " + " | ".join(
            f"{sum(e.cpu_offload.values()) / GiB:.2f}" for _, e in estimates) + " |")
    lines.append("| **total** | " + " | ".join(f"**{e.total_gib:.1f}**" for _, e in estimates) + " |")
    lines.append("| trainable params | " + " | ".join(f"{e.trainable_params / 1e6:,.1f}M" for _, e in estimates) + " |")
    return "\n".join(lines) + "\n"


def estimate_grid(ranks: Sequence[int], gpus: Sequence[int], **kwargs) -> list[tuple[str, MemoryEstimate]]:
    """One labelled :func:`estimate_training_memory` per (LoRA rank, GPU count), ranks outermost.

    A rank of 0 means full fine-tuning (label ``"full FT, N GPU"``), any other rank LoRA
    (``"LoRA r=R, N GPU"``); ``kwargs`` go to every estimate (``n_params``, ``model``, ``method``, ...).
    Raises ``ValueError`` as :func:`estimate_training_memory` does.
    """
    out = []
    for r in ranks:
        for g in gpus:
            e = estimate_training_memory(lora_rank=r or None, n_gpus=g, **kwargs)
            out.append((f"{'LoRA r=' + str(r) if r else 'full FT'}, {g} GPU", e))
    return out


if __name__ == "__main__":  # ``python -m obliviate.memory_estimate``; the options live in obliviate.commands
    from .commands.memory_estimate import main

    sys.exit(main())
