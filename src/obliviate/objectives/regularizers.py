"""Parameter-space regularizers: sliced Wasserstein (SNAP Eq. 5-6), Euclidean and Fisher (EWC).

Each is a :class:`~obliviate.objectives.base.Regularizer`: ``setup(model, retain_loader)``
snapshots what the penalty compares against (θ_init, reference projections, a Fisher diagonal)
and ``__call__(model)`` returns the unweighted scalar penalty; the trainer adds
``weight · penalty`` to the step loss (SNAP Eq. 6: L = L_f + L_r + λ·SW_p(θ, θ_init)).

Registered names (see :data:`REGULARIZERS` and :func:`make_regularizer`): ``"swd"``,
``"euclidean"``, ``"fisher"``.

Sliced Wasserstein reduction
----------------------------
For one weight matrix W ∈ R^{n×d} (rows are n samples in R^d), K unit directions
U = [u_1 … u_K] ∈ R^{d×K} and p ≥ 1, let ``D = |sort(W U) − sort(W_init U)|^p`` (sorted along
the n rows, independently per direction). Then

* ``reduction="mean"`` gives ``(1/K) Σ_k (1/n) Σ_i D_ik = (1/K) Σ_k W_p^p(u_k#θ, u_k#θ_init)``,
  and with ``root=True`` its p-th root: exactly POT's ``ot.sliced_wasserstein_distance``
  (and SNAP Eq. 5's Monte-Carlo estimate of SW_p);
* ``reduction="sum"`` gives ``Σ_k Σ_i D_ik`` (no 1/n, no 1/K) — what SNAP's public reference
  code computes, with ``root=False``.

The penalty is the **sum over the selected tensors** of these per-tensor values.

Default: ``reduction="sum", root=False``. It reproduces the reference implementation, so the
paper's λ = 0.1 (Appendix A) keeps the strength the authors tuned; the root is off by default
also because d(x^{1/p})/dx is infinite at x = 0, i.e. at the very first step where θ = θ_init
(the rooted variant adds a tiny epsilon inside the root to stay finite). Choose
``reduction="mean"`` to make λ independent of matrix sizes and K.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn

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


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor | None = None, directions: torch.Tensor | None = None, *,
                       y_sorted: torch.Tensor | None = None, p: float = 2.0,
                       reduction: Literal["mean", "sum"] = "mean", root: bool = True) -> torch.Tensor:
    """Sliced Wasserstein distance between the row clouds of ``x`` and ``y`` (SNAP Eq. 5).

    With ``reduction="mean", root=True`` this is ``((1/K) Σ_k W_p^p(u_k#x, u_k#y))^{1/p}``, equal to
    ``ot.sliced_wasserstein_distance(x, y, projections=directions, p=p)`` for equal-size clouds
    with uniform weights. ``y_sorted`` (the already sorted projections of ``y``) replaces ``y``.
    Differentiable in ``x`` (torch.sort propagates gradients through the permutation).
    """
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
    d = diff.square() if p == 2 else diff.pow(p)
    if reduction == "mean":
        val = d.mean()
    elif reduction == "sum":
        val = d.sum()
    else:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
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
    """View a parameter as a row cloud: 2-D as is, 1-D as n samples in R^1, N-D as (shape[0], rest)."""
    if t.dim() == 1:
        return t.unsqueeze(1)
    if t.dim() == 2:
        return t
    return t.reshape(t.shape[0], -1)


class SlicedWasserstein(Regularizer):
    """λ·Σ_W SW_p(W, W_init) over weight matrices, rows as samples (SNAP Eq. 5-6).

    Parameters
    ----------
    n_projections: K random unit directions per tensor (SNAP's reference code uses 100).
    p: the order of the Wasserstein distance (2 by default).
    mode: ``"fresh"`` draws new directions at every call (the paper's Monte-Carlo estimate;
        keeps a frozen copy of the regularized tensors), ``"fixed"`` uses the same directions at
        every call, stores only the sorted reference projections sort(W_init U) — a (K, n)
        matrix instead of the (n, d) weights — and keeps no copy of θ_init. Directions are never
        stored: they are regenerated from a per-(seed, call, tensor) generator (:meth:`directions`).
    reduction, root: see the module docstring (default ``"sum"``, no root, as the reference code).
    include_1d: also regularize 1-D tensors (biases, norms) as n samples in R^1.
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
                 mode: Literal["fresh", "fixed"] = "fresh", reduction: Literal["mean", "sum"] = "sum",
                 root: bool = False, include_1d: bool = False, name_filter: str | None = None,
                 seed: int = 0, lora: Literal["effective", "adapter"] = "effective",
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__(weight)
        if mode not in ("fresh", "fixed"):
            raise ValueError(f"swd: mode must be 'fresh' or 'fixed', got {mode!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"swd: reduction must be 'mean' or 'sum', got {reduction!r}")
        if lora not in ("effective", "adapter"):
            raise ValueError(f"swd: lora must be 'effective' or 'adapter', got {lora!r}")
        if int(n_projections) < 1:
            raise ValueError(f"swd: n_projections must be >= 1, got {n_projections}")
        if not p >= 1:
            raise ValueError(f"swd: p must be >= 1, got {p}")
        self.n_projections, self.p = int(n_projections), float(p)
        self.mode, self.reduction, self.root = mode, reduction, bool(root)
        self.include_1d, self.seed, self.lora = bool(include_1d), int(seed), lora
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
        if t.dim() == 0 or (t.dim() == 1 and not self.include_1d):
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
            raise ValueError("swd: no trainable tensor matches the selection (2-D weights"
                             f"{', 1-D' if self.include_1d else ''}"
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
        """Σ over the selected tensors of SW (per the configured reduction/root) between θ and θ_init."""
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


class FisherRegularizer(Regularizer):
    """EWC penalty Σ_i F_i (θ_i − θ_init,i)² with a diagonal Fisher F from the retain data.

    F_i = (1/B) Σ_b (∂ L_b / ∂θ_i)², the mean over ``max_batches`` retain batches of the squared
    gradient of the batch's mean NLL (the empirical Fisher at θ_init; with batch size 1 it is the
    per-example estimate). Computed once in :meth:`setup` (Golatkar et al. 2020a style "Fisher
    forgetting" as used by SNAP's baseline). ``normalize=True`` divides F by its maximum so λ
    is scale-free. Memory: one F and one θ_init per trainable parameter (2× the trainable
    weights — SNAP notes this is costly for LLMs).
    """

    name = "fisher"

    def __init__(self, weight: float = 0.1, *, max_batches: int | None = 32, normalize: bool = False,
                 loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None, name_filter: str | None = None):
        super().__init__(weight)
        if max_batches is not None and int(max_batches) < 1:
            raise ValueError(f"fisher: max_batches must be >= 1 or None, got {max_batches}")
        self.max_batches = None if max_batches is None else int(max_batches)
        self.normalize = bool(normalize)
        self.loss_fn = loss_fn or _default_nll
        self.name_filter = re.compile(name_filter) if name_filter else None
        self.fisher: dict[str, torch.Tensor] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}
        self.n_batches = 0

    def setup(self, model: nn.Module, retain_loader: Iterable[dict] | None = None) -> None:
        """Estimate the diagonal Fisher from squared retain-set NLL gradients; snapshot θ_init."""
        if retain_loader is None:
            raise ValueError("fisher: setup needs the retain data (retain_loader) to estimate the Fisher diagonal")
        self._params = _trainable(model, self.name_filter, self.name)
        self._init = {n: prm.detach().clone() for n, prm in self._params.items()}
        acc = {n: torch.zeros_like(prm, dtype=torch.float32) for n, prm in self._params.items()}
        device = _model_device(model)
        was_training = model.training
        model.eval()  # no dropout while measuring sensitivity
        saved = {n: prm.grad for n, prm in self._params.items()}
        n = 0
        try:
            for batch in retain_loader:
                if self.max_batches is not None and n >= self.max_batches:
                    break
                batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
                grads = torch.autograd.grad(self.loss_fn(model, batch), list(self._params.values()),
                                            allow_unused=True)
                for (name, _), g in zip(self._params.items(), grads):
                    if g is not None:
                        acc[name] += g.detach().float().square()
                n += 1
        finally:
            model.train(was_training)
            for name, prm in self._params.items():
                prm.grad = saved[name]
        if n == 0:
            raise ValueError("fisher: the retain loader yielded no batch")
        self.n_batches = n
        for name in acc:
            acc[name] /= n
        if self.normalize:
            mx = max(float(a.max()) for a in acc.values())
            if mx > 0:
                for name in acc:
                    acc[name] /= mx
        self.fisher = acc
        self._model_id = id(model)

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
