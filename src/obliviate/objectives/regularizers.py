"""Parameter-space regularizers: sliced Wasserstein (SNAP Eq. 5-6), Euclidean and Fisher (EWC).

Each is a :class:`~obliviate.objectives.base.Regularizer`: ``setup(model, retain_loader)``
snapshots what the penalty compares against (θ_init, reference projections, a Fisher diagonal)
and ``__call__(model)`` returns the unweighted scalar penalty; the trainer adds
``weight · penalty`` to the step loss (SNAP Eq. 6: L = L_f + L_r + λ·SW_p(θ, θ_init)).

Registered names (see :data:`REGULARIZERS` and :func:`make_regularizer`): ``"swd"``,
``"euclidean"``, ``"fisher"``.

Sliced Wasserstein: what SNAP's reference code computes
--------------------------------------------------------
SNAP's public code (brightjade/Opt-Out, ``model.py`` ``sliced_wasserstein_distance`` called from
``trainer.py``) adds, for **every** parameter tensor W ∈ R^{n×d} (rows are n samples in R^d; a
1-D tensor w ∈ R^d is *one* sample, ``w.unsqueeze(0)``), with K = 100 unit directions
U = [u_1 … u_K] ∈ R^{d×K} drawn afresh at every call and p = 2,

    SW(W, W_init) = (1/K) Σ_k Σ_i |sort(W U)_ik − sort(W_init U)_ik|^p

(sorted along the n rows, independently per direction): a **sum over the rows**, a **mean over
the directions**, no 1/n and no p-th root. The penalty is the sum of these values over the
tensors, and the loss is L_f + L_r + λ·penalty (SNAP Eq. 6, λ = 0.1). This is the default here
(``reduction="sum_rows", root=False, vectors="sample", mode="fresh"``), so the paper's λ keeps
the strength the authors tuned. For a 1-D tensor (n = 1) the sort is trivial and the value is
(1/K) Σ_k (u_k·(w − w_init))^p.

Other reductions are explicit opt-ins, with D_ik = |sort(W U) − sort(W_init U)|^p_ik:

* ``reduction="mean"``: (1/K) Σ_k (1/n) Σ_i D_ik = (1/K) Σ_k W_p^p(u_k#θ, u_k#θ_init), i.e.
  ``sum_rows`` / n; with ``root=True`` its p-th root, exactly POT's
  ``ot.sliced_wasserstein_distance`` (SNAP Eq. 5's Monte-Carlo SW_p). λ is then independent of
  the number of rows.
* ``reduction="sum_all"``: Σ_k Σ_i D_ik = K × ``sum_rows`` (obliviate's default before the fix,
  100× the reference at K = 100; kept only to reproduce old runs).

``root=True`` takes the p-th root (with a 1e-12 inside it: d(x^{1/p})/dx is infinite at x = 0,
i.e. at the first step where θ = θ_init).

Known differences from the reference code: obliviate computes in float32 against the exact
θ_init (the reference keeps θ_init as a bfloat16 copy and projects in bfloat16), draws
directions from a per-(seed, call, tensor) generator (reproducible) instead of torch's global
RNG, skips frozen tensors (their distance is 0 in full fine-tuning anyway) and, with LoRA,
regularizes the effective weights W_0 + ΔW by default.

Baselines (SNAP §4.3; the reference code has neither): ``euclidean`` is ‖θ − θ_init‖₂ (Chen et
al. 2020's distance to the initial weights, unsquared per SNAP footnote 3); ``fisher`` is EWC's
Σ_i F_i (θ_i − θ_init,i)² with the diagonal empirical Fisher F_i = (1/N) Σ_n (∂ℓ_n/∂θ_i)² over the
N retain examples (per-example gradients, :func:`per_example_squared_grads`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn

from ..data.formatting import IGNORE_INDEX
from .base import Regularizer

log = logging.getLogger(__name__)

_ROOT_EPS = 1e-12


def random_directions(d: int, k: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw ``k`` directions uniformly on the unit sphere S^{d-1}; returns a (d, k) matrix (POT's layout).

    Normalised standard Gaussians are uniform on the sphere (Muller 1959).
    """
    if d < 1 or k < 1:
        raise ValueError(f"random_directions: need d >= 1 and k >= 1, got d={d}, k={k}")
    u = torch.randn(d, k, generator=generator, device=device, dtype=dtype)
    return u / u.norm(dim=0, keepdim=True).clamp_min(1e-12)


def sort_last(p: torch.Tensor) -> torch.Tensor:
    """Sort ``p`` along its last dimension, differentiably.

    On CPU the permutation comes from NumPy's introsort ``argsort`` and the values are gathered
    with ``take_along_dim`` (same values and gradients as ``torch.sort``, about 2× faster here,
    torch's CPU sort being a stable sort); elsewhere ``torch.sort``.
    """
    if p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64):
        idx = torch.from_numpy(np.argsort(p.detach().contiguous().numpy(), axis=-1))
        return torch.take_along_dim(p, idx, dim=-1)
    return torch.sort(p, dim=-1).values


def sorted_projections(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Project the rows of ``x`` (n, d) on ``directions`` (d, K) and sort each direction's n values.

    Returns a (K, n) matrix (row k = the sorted projections on u_k; contiguous rows sort fastest).
    """
    return sort_last(directions.T @ x.T)


#: reductions of the (K, n) matrix D of |sorted-projection differences|^p (see the module docstring)
SWD_REDUCTIONS = ("sum_rows", "mean", "sum_all")


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor | None = None, directions: torch.Tensor | None = None, *,
                       y_sorted: torch.Tensor | None = None, p: float = 2.0,
                       reduction: Literal["sum_rows", "mean", "sum_all"] = "sum_rows",
                       root: bool = False) -> torch.Tensor:
    """Sliced Wasserstein discrepancy between the row clouds of ``x`` and ``y`` (n, d) along ``directions`` (d, K).

    With D_ik = |sort(x U)_ik − sort(y U)_ik|^p (sorted over the n rows per direction k):

    * ``reduction="sum_rows"`` (default): (1/K) Σ_k Σ_i D_ik — SNAP's reference code
      (``sliced_wasserstein_distance`` in brightjade/Opt-Out), used with ``root=False``;
    * ``reduction="mean"``: (1/K) Σ_k (1/n) Σ_i D_ik; with ``root=True`` it equals
      ``ot.sliced_wasserstein_distance(x, y, projections=directions, p=p)`` (SNAP Eq. 5's estimate);
    * ``reduction="sum_all"``: Σ_k Σ_i D_ik (K × ``sum_rows``).

    ``root=True`` returns (value + 1e-12)^{1/p}. ``y_sorted`` (the already sorted (K, n)
    projections of ``y``) replaces ``y``. Differentiable in ``x`` (the sort's gradient flows
    through the permutation).
    """
    if reduction not in SWD_REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(SWD_REDUCTIONS)}, got {reduction!r}"
                         + (" ('sum' was removed: it summed over the directions too, K× SNAP's reference; "
                            "'sum_rows' is the reference, 'sum_all' the old value)" if reduction == "sum" else ""))
    if directions is None:
        raise ValueError("sliced_wasserstein: directions (d, K) are required")
    if x.dim() != 2:
        raise ValueError(f"sliced_wasserstein: x must be 2-D (n, d), got shape {tuple(x.shape)}")
    if x.shape[1] != directions.shape[0]:
        raise ValueError(f"sliced_wasserstein: x has {x.shape[1]} columns but directions have {directions.shape[0]} rows")
    xs = sorted_projections(x, directions)
    if y_sorted is None:
        if y is None:
            raise ValueError("sliced_wasserstein: give y or y_sorted")
        if y.shape != x.shape:
            raise ValueError(f"sliced_wasserstein: x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
        y_sorted = sorted_projections(y, directions)
    if y_sorted.shape != xs.shape:
        raise ValueError(f"sliced_wasserstein: y_sorted has shape {tuple(y_sorted.shape)}, expected {tuple(xs.shape)}")
    diff = (xs - y_sorted).abs()
    d = diff.square() if p == 2 else diff.pow(p)   # (K, n)
    if reduction == "sum_rows":
        val = d.sum() / d.shape[0]
    elif reduction == "mean":
        val = d.mean()
    else:
        val = d.sum()
    if root:
        val = (val + _ROOT_EPS).pow(1.0 / p) if p != 2 else (val + _ROOT_EPS).sqrt()
    return val


# --------------------------------------------------------------------------------------------
# Which tensors a regularizer looks at
# --------------------------------------------------------------------------------------------

def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """peft LoRA layers (modules with ``base_layer``, ``lora_A``, ``lora_B`` and ``get_delta_weight``)."""
    out = []
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "lora_B") and hasattr(mod, "base_layer") \
                and hasattr(mod, "get_delta_weight") and len(getattr(mod, "lora_A")) > 0:
            out.append((name, mod))
    return out


class _Slot:
    """One regularized tensor: how to read its current value and its frozen initial value."""

    __slots__ = ("name", "get", "get_init", "shape")

    def __init__(self, name: str, get: Callable[[], torch.Tensor], get_init: Callable[[], torch.Tensor] | None,
                 shape: tuple[int, ...]):
        self.name, self.get, self.get_init, self.shape = name, get, get_init, shape


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded parameter (FSDP2 / DTensor), differentiably; others as they are.

    ``DTensor.full_tensor()`` all-gathers the shards with autograd: its backward hands every rank
    the slice of the gradient that belongs to its own shard. Every rank computes the same SW value
    from the same full matrices, so that slice is already the exact gradient of the penalty for the
    shard (no averaging across ranks, unlike the data loss).
    """
    return t.full_tensor() if hasattr(t, "full_tensor") and hasattr(t, "placements") else t


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """View a parameter as a row cloud: 2-D as is, 1-D w ∈ R^d as ONE sample (1, d) (SNAP's
    ``unsqueeze(0)``), N-D as (shape[0], rest)."""
    if t.dim() == 1:
        return t.unsqueeze(0)
    if t.dim() == 2:
        return t
    return t.reshape(t.shape[0], -1)


class SlicedWasserstein(Regularizer):
    """λ·Σ_W SW(W, W_init) over every trainable parameter tensor, rows as samples (SNAP Eq. 5-6).

    The default is SNAP's reference code exactly: per tensor (1/K) Σ_k Σ_i |sort(W U) −
    sort(W_init U)|²_ik with K = 100 fresh directions per call, summed over all tensors, 1-D
    tensors as one sample in R^d (see the module docstring).

    Parameters
    ----------
    n_projections: K random unit directions per tensor (SNAP's reference code uses 100).
    p: the order of the Wasserstein distance (2 by default).
    mode: ``"fresh"`` (default; the paper and the reference) draws new directions at every call
        — an unbiased Monte-Carlo estimate of the sliced distance over all directions — and keeps
        a frozen copy of the regularized tensors. ``"fixed"`` (opt-in) uses the same K directions
        at every call and stores only the sorted reference projections sort(W_init U) — a (K, n)
        matrix instead of the (n, d) weights — and no copy of θ_init. It penalises only the K
        one-dimensional marginals u_k#θ: a change of W orthogonal to all K directions (any
        direction outside their span when d > K, e.g. 576-wide rows with K = 100) costs nothing,
        so training can drift freely there. Directions are never stored: they are regenerated
        from a per-(seed, call, tensor) generator (:meth:`directions`).
    reduction: ``"sum_rows"`` (default, the reference), ``"mean"`` (÷ n rows; with
        ``root=True`` POT's value) or ``"sum_all"`` (× K; the pre-fix default); see the module
        docstring. root: take the p-th root (off, as the reference).
    vectors: how 1-D tensors (norm weights, biases) count: ``"sample"`` (default, the
        reference) as one sample w ∈ R^d, giving (1/K) Σ_k (u_k·(w − w_init))^p; ``"skip"``
        leaves them out (obliviate's pre-fix default; 2-D tensors only).
    name_filter: a regular expression; only parameters whose name matches (``re.search``) count.
    seed: seeds the direction generator (``fresh`` mode is reproducible from it too).
    lora: with a peft LoRA model, ``"effective"`` (default) regularizes each adapted layer's
        effective weight W_0 + ΔW against W_0 (the frozen base weight already in the model, so
        no copy is needed in either mode); ``"adapter"`` regularizes the trainable adapter
        matrices A, B against their initial values, like a full fine-tune of those tensors.
    Only trainable tensors are regularized (frozen ones never move: their distance is 0).
    """

    name = "swd"

    def __init__(self, weight: float = 0.1, *, n_projections: int = 100, p: float = 2.0,
                 mode: Literal["fresh", "fixed"] = "fresh",
                 reduction: Literal["sum_rows", "mean", "sum_all"] = "sum_rows",
                 root: bool = False, vectors: Literal["sample", "skip"] = "sample", name_filter: str | None = None,
                 seed: int = 0, lora: Literal["effective", "adapter"] = "effective",
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__(weight)
        if mode not in ("fresh", "fixed"):
            raise ValueError(f"swd: mode must be 'fresh' or 'fixed', got {mode!r}")
        if reduction not in SWD_REDUCTIONS:
            raise ValueError(f"swd: reduction must be one of {list(SWD_REDUCTIONS)}, got {reduction!r}"
                             + (" ('sum' was removed: it summed over the directions too, K× SNAP's reference; "
                                "'sum_rows' is the reference, 'sum_all' the old value)" if reduction == "sum" else ""))
        if vectors not in ("sample", "skip"):
            raise ValueError(f"swd: vectors must be 'sample' or 'skip', got {vectors!r}")
        if lora not in ("effective", "adapter"):
            raise ValueError(f"swd: lora must be 'effective' or 'adapter', got {lora!r}")
        if int(n_projections) < 1:
            raise ValueError(f"swd: n_projections must be >= 1, got {n_projections}")
        if not p >= 1:
            raise ValueError(f"swd: p must be >= 1, got {p}")
        self.n_projections, self.p = int(n_projections), float(p)
        self.mode, self.reduction, self.root = mode, reduction, bool(root)
        self.vectors, self.seed, self.lora = vectors, int(seed), lora
        self.name_filter = re.compile(name_filter) if name_filter else None
        if isinstance(compute_dtype, str):
            dt = getattr(torch, compute_dtype.replace("fp32", "float32").replace("bf16", "bfloat16"), None)
            if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
                raise ValueError(f"swd: compute_dtype {compute_dtype!r} is not one of ['float32', 'float64', 'bfloat16']")
            compute_dtype = dt
        self.compute_dtype = compute_dtype
        self._slots: list[_Slot] = []
        self._init: dict[str, torch.Tensor] = {}        # fresh mode: frozen copies (full fine-tune)
        self._ref_sorted: dict[str, torch.Tensor] = {}  # fixed mode
        self._calls = 0
        self._ready = False
        self._model_id: int | None = None

    # -- selection ---------------------------------------------------------------------------
    def _wanted(self, name: str, t: torch.Tensor) -> bool:
        if t.dim() == 0 or (t.dim() == 1 and self.vectors == "skip"):
            return False
        return self.name_filter is None or bool(self.name_filter.search(name))

    def _collect(self, model: nn.Module) -> list[_Slot]:
        slots: list[_Slot] = []
        lora_layers = _lora_layers(model) if self.lora == "effective" else []
        covered: set[int] = set()
        for lname, mod in lora_layers:
            base = mod.base_layer
            w0 = getattr(base, "weight", None)
            if w0 is None or not self._wanted(lname + ".weight", w0):
                continue
            adapters = [a for a in mod.active_adapters if a in mod.lora_A]

            def get(mod=mod, adapters=adapters):
                w = _full(mod.base_layer.weight)
                for a in adapters:
                    w = w + _full(mod.get_delta_weight(a)).to(w.dtype)
                return w

            slots.append(_Slot(lname + ".weight", get, lambda b=base: _full(b.weight), tuple(w0.shape)))
            covered.add(id(w0))
            for a in adapters:
                for sub in (mod.lora_A[a], mod.lora_B[a]):
                    for prm in sub.parameters():
                        covered.add(id(prm))
        seen: set[int] = set()
        for pname, prm in model.named_parameters():
            if id(prm) in seen or id(prm) in covered or not prm.requires_grad or not self._wanted(pname, prm):
                continue
            seen.add(id(prm))
            slots.append(_Slot(pname, lambda prm=prm: _full(prm), None, tuple(prm.shape)))
        return slots

    # -- lifecycle ---------------------------------------------------------------------------
    def setup(self, model: nn.Module, retain_loader=None) -> None:
        """Pick the tensors and snapshot θ_init: frozen copies (fresh) or sorted projections (fixed)."""
        self._slots = self._collect(model)
        if not self._slots:
            raise ValueError("swd: no trainable tensor matches the selection ("
                             f"{'2-D weights' if self.vectors == 'skip' else 'all tensors'}"
                             f"{', name_filter=' + self.name_filter.pattern if self.name_filter else ''})")
        self._init.clear(), self._ref_sorted.clear()
        self._calls = 0
        with torch.no_grad():
            for i, s in enumerate(self._slots):
                ref = (s.get_init() if s.get_init is not None else s.get()).detach()
                if self.mode == "fresh":
                    if s.get_init is None:  # full fine-tune: keep a frozen copy of θ_init
                        self._init[s.name] = ref.clone()
                else:
                    rows = _as_rows(ref).to(self.compute_dtype)
                    self._ref_sorted[s.name] = sorted_projections(rows, self.directions(i, rows.shape[1], rows.device))
        self._ready = True
        self._model_id = id(model)
        log.info("swd: %d tensors, mode=%s, K=%d, reference %.1f MiB", len(self._slots), self.mode,
                 self.n_projections, self.reference_bytes() / 2**20)

    def directions(self, index: int, d: int, device=None, call: int = 0) -> torch.Tensor:
        """The K directions (d, K) of tensor number ``index`` at call ``call`` (fixed mode: always call 0).

        They are regenerated from a per-(seed, call, tensor) generator instead of being stored, so
        fixed mode holds nothing but the sorted reference projections; ``fresh`` mode's first call
        uses exactly the fixed-mode directions.
        """
        device = torch.device(device) if device is not None else torch.device("cpu")
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + call * 100_003 + index) % (2**63 - 1))
        return random_directions(d, self.n_projections, generator=gen, device=device, dtype=self.compute_dtype)

    def reference_bytes(self) -> int:
        """Bytes this regularizer holds for θ_init (frozen copies in fresh mode, sorted projections in fixed mode)."""
        tensors = list(self._init.values()) + list(self._ref_sorted.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def tensor_names(self) -> list[str]:
        """Names of the regularized tensors (after :meth:`setup`)."""
        return [s.name for s in self._slots]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Σ over the selected tensors of SW(W, W_init) (per ``reduction`` / ``root``; default (1/K) Σ_k Σ_i D_ik)."""
        if not self._ready:
            self.setup(model)
        elif id(model) != self._model_id:  # another module object (e.g. a wrapped or reloaded model)
            slots = self._collect(model)
            if [s.name for s in slots] != [s.name for s in self._slots]:
                raise ValueError("swd: the model passed differs from the one given to setup() "
                                 f"({len(slots)} vs {len(self._slots)} regularized tensors)")
            self._slots, self._model_id = slots, id(model)
        total = None
        call = 0 if self.mode == "fixed" else self._calls
        for i, s in enumerate(self._slots):
            cur = _as_rows(s.get()).to(self.compute_dtype)
            u = self.directions(i, cur.shape[1], cur.device, call)
            if self.mode == "fixed":
                val = sliced_wasserstein(cur, directions=u, y_sorted=self._ref_sorted[s.name],
                                         p=self.p, reduction=self.reduction, root=self.root)
            else:
                init = self._init[s.name] if s.get_init is None else s.get_init().detach()
                val = sliced_wasserstein(cur, _as_rows(init).to(self.compute_dtype), u, p=self.p,
                                         reduction=self.reduction, root=self.root)
            total = val if total is None else total + val
        self._calls += 1
        return total


def _rebind(reg, model: nn.Module) -> None:
    """Point ``reg._params`` at ``model``'s parameters of the same names when called with another module."""
    if id(model) == getattr(reg, "_model_id", None):
        return
    params = _trainable(model, reg.name_filter, reg.name)
    if list(params) != list(reg._params):
        raise ValueError(f"{reg.name}: the model passed differs from the one given to setup() "
                         f"({len(params)} vs {len(reg._params)} trainable tensors)")
    reg._params, reg._model_id = params, id(model)


def _trainable(model: nn.Module, name_filter: re.Pattern | None, who: str) -> dict[str, nn.Parameter]:
    """Trainable parameters (shared ones once), optionally filtered by name."""
    out, seen = {}, set()
    for n, prm in model.named_parameters():
        if prm.requires_grad and id(prm) not in seen and (name_filter is None or name_filter.search(n)):
            seen.add(id(prm))
            out[n] = prm
    if not out:
        raise ValueError(f"{who}: the model has no trainable parameter matching the selection")
    return out


class EuclideanRegularizer(Regularizer):
    """‖θ − θ_init‖₂ over all trainable parameters (SNAP's "Euclidean" baseline, after Chen et al. 2020).

    One global L2 norm of the concatenated differences — the Euclidean *distance*, not its square
    (SNAP footnote 3 stresses the difference from squared L2 weight decay). ``squared=True``
    returns ‖θ − θ_init‖₂² instead (the RecAdam-style quadratic penalty). The unsquared norm is
    computed as sqrt(Σ + ε) so that its gradient stays finite at θ = θ_init. With LoRA, the
    trainable tensors are the adapter matrices, compared with their initial values.

    SNAP's public code (brightjade/Opt-Out) has no Euclidean baseline to compare with; the paper
    only says "the Euclidean distance w.r.t. the initial weights, following Chen et al. (2020)",
    and the footnote contrasting it with the *squared* L2 norm is why the unsquared norm is the
    default (Chen et al.'s own RecAdam penalty is the squared one: ``squared=True``).
    """

    name = "euclidean"

    def __init__(self, weight: float = 0.1, *, squared: bool = False, name_filter: str | None = None):
        super().__init__(weight)
        self.squared = bool(squared)
        self.name_filter = re.compile(name_filter) if name_filter else None
        self._init: dict[str, torch.Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}

    def setup(self, model: nn.Module, retain_loader=None) -> None:
        """Keep a frozen copy of every trainable parameter (θ_init)."""
        self._params = _trainable(model, self.name_filter, self.name)
        self._init = {n: prm.detach().clone() for n, prm in self._params.items()}
        self._model_id = id(model)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """‖θ − θ_init‖₂ (or its square) summed over all trainable parameters."""
        if not self._init:
            self.setup(model)
        _rebind(self, model)
        sq = None
        for n, prm in self._params.items():
            d = (prm.float() - self._init[n].float()).square().sum()
            sq = d if sq is None else sq + d
        return sq if self.squared else torch.sqrt(sq + _ROOT_EPS)


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _default_nll(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean next-token NLL of a batch with ``input_ids``/``attention_mask``/``labels`` (HF causal LM)."""
    out = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")})
    if getattr(out, "loss", None) is None:
        raise ValueError("fisher: the model returned no loss; batches need 'labels'")
    return out.loss


def _batch_size(batch: dict) -> int:
    """Number of examples in a batch: the first dimension of ``input_ids`` (else of its first tensor)."""
    t = batch.get("input_ids")
    if not torch.is_tensor(t):
        t = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() >= 1), None)
    if t is None:
        raise ValueError("fisher: a retain batch holds no tensor with a batch dimension")
    return int(t.shape[0])


def _right_padded(mask: torch.Tensor) -> bool:
    """True when every row of a (B, L) 0/1 mask is 1…1 0…0 (real tokens first, padding after)."""
    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all())


def _split_examples(batch: dict) -> list[dict]:
    """Cut a batch into batches of one (tensors whose first dimension is B are sliced ``[i:i+1]``).

    With a right-padded ``attention_mask``, each example's trailing padding columns are dropped
    from every (B, L) tensor: with a causal model they change nothing (no real token attends to
    them, and their labels are ignored), so the loss is the example's own and costs no padding.
    Examples with no supervised token (``labels`` all −100) are left out: their loss is 0/0.
    """
    b = _batch_size(batch)
    mask = batch.get("attention_mask")
    trim = torch.is_tensor(mask) and mask.dim() == 2 and _right_padded(mask)
    width = mask.shape[1] if trim else None
    out = []
    for i in range(b):
        end = int(mask[i].sum()) if trim else None
        ex = {}
        for k, v in batch.items():
            if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == b:
                v = v[i:i + 1]
                if trim and v.dim() == 2 and v.shape[1] == width:
                    v = v[:, :end]
            ex[k] = v
        lab = ex.get("labels")
        if torch.is_tensor(lab) and not bool((lab != IGNORE_INDEX).any()):
            continue
        out.append(ex)
    return out


class _LossModule(nn.Module):
    """``loss_fn(model, batch)`` as a module, so that ``torch.func.functional_call`` can swap its parameters."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, dict], torch.Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: dict) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def per_example_squared_grads(model: nn.Module, params: dict[str, nn.Parameter], batch: dict,
                              loss_fn: Callable[[nn.Module, dict], torch.Tensor], *,
                              method: Literal["loop", "vmap"] = "loop", chunk_size: int | None = None,
                              limit: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Σ_n (∂ℓ_n/∂θ)² over the examples n of one batch, for the tensors in ``params`` (float32).

    ℓ_n = ``loss_fn(model, batch of example n alone)`` (for the default NLL: the mean token NLL
    of example n's supervised tokens). Returns ``(sums, n_used)``; at most ``limit`` examples are
    used. ``method="loop"`` runs one forward + backward per example (trailing padding trimmed,
    see :func:`_split_examples`); memory as one training step at batch size 1.
    ``method="vmap"`` computes the per-example gradients of the whole batch at once with
    ``torch.func.vmap(grad(...))`` over ``chunk_size`` examples at a time (all by default): it
    needs right padding and drops ``attention_mask`` (for a causal model trailing padding changes
    nothing), and holds ``chunk_size`` gradient copies of ``params``.
    """
    if method == "loop":
        exs = _split_examples(batch)[:limit] if limit is not None else _split_examples(batch)
        sums: dict[str, torch.Tensor] = {}
        names, tensors = list(params), list(params.values())
        for ex in exs:
            grads = torch.autograd.grad(loss_fn(model, ex), tensors, allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    g = g.detach().float().square()
                    sums[n] = sums[n] + g if n in sums else g
        return sums, len(exs)
    if method != "vmap":
        raise ValueError(f"fisher: per_example must be 'loop' or 'vmap', got {method!r}")
    from torch.func import functional_call, grad, vmap

    b = _batch_size(batch)
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == b}
    mask = tensors.pop("attention_mask", None)
    if mask is not None and mask.dim() == 2 and not _right_padded(mask):
        raise ValueError("fisher: per_example='vmap' needs right-padded batches (it drops the attention mask); "
                         "use per_example='loop'")
    keep = torch.ones(b, dtype=torch.bool)
    if "labels" in tensors:
        keep = (tensors["labels"] != IGNORE_INDEX).reshape(b, -1).any(dim=1).cpu()
    idx = torch.nonzero(keep).flatten()
    if limit is not None:
        idx = idx[:limit]
    if len(idx) == 0:
        return {}, 0
    tensors = {k: v[idx.to(v.device)] for k, v in tensors.items()}
    wrapper = _LossModule(model, loss_fn)
    detached = {n: p.detach() for n, p in params.items()}

    def one(pdict, ex):
        ex = {k: v.unsqueeze(0) for k, v in ex.items()}
        return functional_call(wrapper, {"model." + n: t for n, t in pdict.items()}, (ex,))

    g = vmap(grad(one), in_dims=(None, 0), chunk_size=chunk_size)(detached, tensors)
    return {n: t.detach().float().square().sum(0) for n, t in g.items()}, len(idx)


class FisherRegularizer(Regularizer):
    """EWC penalty Σ_i F_i (θ_i − θ_init,i)² with a diagonal empirical Fisher F from the retain data.

    F_i = (1/N) Σ_n (∂ℓ_n/∂θ_i)² at θ_init: the mean over the N retain **examples** of the squared
    gradient of each example's own loss ℓ_n (by default its mean token NLL) — the diagonal
    empirical Fisher of EWC (Kirkpatrick et al. 2017) and of the "Fisher forgetting" baseline
    SNAP cites (Golatkar et al. 2020a). SNAP's public code has no Fisher baseline, so this follows
    those papers. Computed once in :meth:`setup`, with the model in eval mode (no dropout).

    Parameters
    ----------
    max_examples: use at most this many retain examples (None: all of them).
    max_batches: read at most this many batches from the loader (None: all).
    per_example: ``"loop"`` (default) one forward + backward per example, trailing padding
        trimmed — N single-example steps, i.e. about the FLOPs of one training epoch over the
        retain set, at batch size 1, with a training step's memory at batch size 1;
        ``"vmap"``: ``torch.func`` per-sample gradients of ``vmap_chunk`` examples at once
        (exact too; memory grows with ``vmap_chunk`` × the trainable weights; measured slower
        on CPU, see the README).
    normalize: divide F by its maximum, so that λ is scale-free.
    loss_fn: ``loss_fn(model, batch) -> scalar``, called on batches of one example.
    name_filter: only parameters whose name matches (``re.search``) are regularized.

    Memory: one F and one θ_init per trainable parameter (2× the trainable weights — SNAP notes
    this is costly for LLMs).
    """

    name = "fisher"

    def __init__(self, weight: float = 0.1, *, max_examples: int | None = None, max_batches: int | None = None,
                 per_example: Literal["loop", "vmap"] = "loop", vmap_chunk: int | None = 8,
                 normalize: bool = False, loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
                 name_filter: str | None = None):
        super().__init__(weight)
        if max_batches is not None and int(max_batches) < 1:
            raise ValueError(f"fisher: max_batches must be >= 1 or None, got {max_batches}")
        if max_examples is not None and int(max_examples) < 1:
            raise ValueError(f"fisher: max_examples must be >= 1 or None, got {max_examples}")
        if per_example not in ("loop", "vmap"):
            raise ValueError(f"fisher: per_example must be 'loop' or 'vmap', got {per_example!r}")
        if vmap_chunk is not None and int(vmap_chunk) < 1:
            raise ValueError(f"fisher: vmap_chunk must be >= 1 or None, got {vmap_chunk}")
        self.max_batches = None if max_batches is None else int(max_batches)
        self.max_examples = None if max_examples is None else int(max_examples)
        self.per_example = per_example
        self.vmap_chunk = None if vmap_chunk is None else int(vmap_chunk)
        self.normalize = bool(normalize)
        self.loss_fn = loss_fn or _default_nll
        self.name_filter = re.compile(name_filter) if name_filter else None
        self.fisher: dict[str, torch.Tensor] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}
        self.n_batches = 0
        self.n_examples = 0

    def setup(self, model: nn.Module, retain_loader: Iterable[dict] | None = None) -> None:
        """Estimate F_i = (1/N) Σ_n (∂ℓ_n/∂θ_i)² over the retain examples; snapshot θ_init."""
        if retain_loader is None:
            raise ValueError("fisher: setup needs the retain data (retain_loader) to estimate the Fisher diagonal")
        self._params = _trainable(model, self.name_filter, self.name)
        self._init = {n: prm.detach().clone() for n, prm in self._params.items()}
        acc = {n: torch.zeros_like(prm, dtype=torch.float32) for n, prm in self._params.items()}
        device = _model_device(model)
        was_training = model.training
        model.eval()  # no dropout while measuring sensitivity
        saved = {n: prm.grad for n, prm in self._params.items()}
        n_batches = n_ex = 0
        t0 = time.perf_counter()
        try:
            for batch in retain_loader:
                if self.max_batches is not None and n_batches >= self.max_batches:
                    break
                if self.max_examples is not None and n_ex >= self.max_examples:
                    break
                batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
                left = None if self.max_examples is None else self.max_examples - n_ex
                sums, used = per_example_squared_grads(model, self._params, batch, self.loss_fn,
                                                       method=self.per_example, chunk_size=self.vmap_chunk,
                                                       limit=left)
                for name, v in sums.items():
                    acc[name] += v
                n_ex += used
                n_batches += 1
        finally:
            model.train(was_training)
            for name, prm in self._params.items():
                prm.grad = saved[name]
        if n_batches == 0:
            raise ValueError("fisher: the retain loader yielded no batch")
        if n_ex == 0:
            raise ValueError("fisher: the retain batches hold no example with a supervised token")
        self.n_batches, self.n_examples = n_batches, n_ex
        for name in acc:
            acc[name] /= n_ex
        if self.normalize:
            mx = max(float(a.max()) for a in acc.values())
            if mx > 0:
                for name in acc:
                    acc[name] /= mx
        self.fisher = acc
        self._model_id = id(model)
        log.info("fisher: diagonal from %d retain examples (%d batches, %s) in %.1f s", n_ex, n_batches,
                 self.per_example, time.perf_counter() - t0)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Σ_i F_i (θ_i − θ_init,i)² over the trainable parameters."""
        if not self.fisher:
            raise RuntimeError("fisher: call setup(model, retain_loader) before using the regularizer")
        _rebind(self, model)
        total = None
        for n, prm in self._params.items():
            v = (self.fisher[n] * (prm.float() - self._init[n].float()).square()).sum()
            total = v if total is None else total + v
        return total


#: name -> regularizer class, looked up by ``obliviate.methods`` presets.
REGULARIZERS: dict[str, type[Regularizer]] = {
    "swd": SlicedWasserstein,
    "euclidean": EuclideanRegularizer,
    "fisher": FisherRegularizer,
}


def make_regularizer(name: str, weight: float = 0.1, **kwargs: Any) -> Regularizer:
    """Build the regularizer registered as ``name`` ("swd", "euclidean", "fisher") with weight λ."""
    try:
        cls = REGULARIZERS[name]
    except KeyError:
        raise ValueError(f"unknown regularizer {name!r}; allowed: {sorted(REGULARIZERS)}") from None
    try:
        return cls(weight, **kwargs)
    except TypeError as e:
        raise ValueError(f"regularizer {name!r}: bad option ({e})") from None
