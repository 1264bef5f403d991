"""Near-duplicate filtering with Sentence-BERT embeddings (SNAP §3.1, threshold 0.75).

SNAP keeps only instructions that have no cosine similarity of 0.75 or higher with the rest.
We read this greedily in order: an instruction is dropped when its cosine to an instruction
*already kept* is ≥ the threshold, so of every near-duplicate group the first one survives
and no kept pair reaches the threshold.

The work is blocked: each block of ``block_size`` items is compared with the whole kept set by
one matrix product, and only the survivors of that test are resolved among themselves with one
more product and a short loop over the block (a vector op per item) — no Python loop over pairs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

DEFAULT_THRESHOLD = 0.75


class Duplicate(NamedTuple):
    """A dropped item: its index, the index of the kept (or existing) item it duplicates, the cosine."""

    index: int
    kept_index: int
    cosine: float


def _check(threshold: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"dedup threshold must be a cosine in [-1, 1], got {threshold}")


def _embeddings(texts: Sequence[str], model, batch_size: int, progress: bool) -> torch.Tensor:
    from ..embeddings import embed

    if any(not isinstance(t, str) for t in texts):
        bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise TypeError(f"dedup: item {bad} is a {type(texts[bad]).__name__}, expected a string")
    return embed(list(texts), model, batch_size=batch_size, progress=progress)


def greedy_dedup_embeddings(emb: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, *, block_size: int = 512,
                            progress: bool = False) -> tuple[list[int], list[Duplicate]]:
    """Greedy in-order near-duplicate removal on L2-normalised embeddings ``emb`` (n, dim).

    Item i is kept iff max_{j kept, j < i} cos(e_i, e_j) < ``threshold``. Returns the kept
    indices (ascending) and, for each dropped item, the kept item it is closest to.
    """
    _check(threshold)
    n = emb.shape[0]
    kept: list[int] = []
    dropped: list[Duplicate] = []
    kept_emb = emb.new_zeros((0, emb.shape[1]))
    for start in tqdm(range(0, n, block_size), desc="dedup", disable=not progress):
        blk = emb[start:start + block_size]
        m = blk.shape[0]
        alive = torch.ones(m, dtype=torch.bool)
        best_sim = torch.full((m,), -2.0)
        best_idx = torch.full((m,), -1, dtype=torch.long)
        if kept_emb.shape[0]:
            sims = blk @ kept_emb.T                               # (m, |kept|) one product
            best_sim, arg = sims.max(dim=1)
            best_idx = torch.tensor(kept, dtype=torch.long)[arg]
            alive = best_sim < threshold
        intra = blk @ blk.T                                      # (m, m) for the within-block order
        # an alive item with no earlier alive in-block neighbour >= threshold is kept outright;
        # only the others are resolved in order, each with one vector op against the kept mask
        close = torch.tril(intra >= threshold, diagonal=-1) & alive[None, :]
        undecided = alive & close.any(dim=1)
        kept_local = alive & ~undecided
        for j in torch.nonzero(undecided).flatten().tolist():
            hit = close[j] & kept_local
            if hit.any():
                s, a = intra[j].masked_fill(~hit, -2.0).max(dim=0)
                best_sim[j], best_idx[j] = s, start + int(a)
            else:
                kept_local[j] = True
        for j, (k, bi, bs) in enumerate(zip(kept_local.tolist(), best_idx.tolist(), best_sim.tolist())):
            if k:
                kept.append(start + j)
            else:
                dropped.append(Duplicate(start + j, int(bi), round(float(bs), 6)))
        if kept_local.any():
            kept_emb = torch.cat([kept_emb, blk[kept_local]], dim=0)
    return kept, dropped


def dedup_filter(texts: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD, model=None, batch_size: int = 64,
                 block_size: int = 512, progress: bool = False) -> tuple[list[int], list[Duplicate]]:
    """SNAP's near-duplicate filter: drop every text whose Sentence-BERT cosine to an already kept
    text is ≥ ``threshold`` (0.75 in the paper), scanning in order.

    ``model`` is a loaded SentenceTransformer, a model name/path, or None for the embedded
    all-MiniLM-L6-v2. Returns ``(kept_indices, dropped)`` where each dropped entry is
    ``(index, kept_index_it_duplicates, cosine)``.
    """
    _check(threshold)
    if not texts:
        return [], []
    emb = _embeddings(texts, model, batch_size, progress)
    return greedy_dedup_embeddings(emb, threshold, block_size=block_size, progress=progress)


def dedup_against(texts: Sequence[str], existing: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD, model=None,
                  batch_size: int = 64, block_size: int = 2048) -> tuple[list[int], list[Duplicate]]:
    """Drop every text whose cosine to any item of ``existing`` is ≥ ``threshold`` (e.g. keep
    evaluation questions out of the training set). ``kept_index`` in the dropped entries indexes
    ``existing``. Texts are not compared with each other (combine with :func:`dedup_filter`)."""
    _check(threshold)
    if not texts:
        return [], []
    if not existing:
        return list(range(len(texts))), []
    a = _embeddings(texts, model, batch_size, False)
    b = _embeddings(existing, model, batch_size, False)
    return against_embeddings(a, b, threshold, block_size=block_size)


def against_embeddings(a: torch.Tensor, b: torch.Tensor, threshold: float = DEFAULT_THRESHOLD, *,
                       block_size: int = 2048) -> tuple[list[int], list[Duplicate]]:
    """:func:`dedup_against` on normalised embeddings: keep rows of ``a`` whose max cosine to ``b`` is below
    ``threshold``; dropped entries name the closest row of ``b``."""
    _check(threshold)
    if a.shape[0] == 0:
        return [], []
    if b.shape[0] == 0:
        return list(range(a.shape[0])), []
    kept, dropped = [], []
    for start in range(0, a.shape[0], block_size):
        s, arg = (a[start:start + block_size] @ b.T).max(dim=1)
        for j, (sj, aj) in enumerate(zip(s.tolist(), arg.tolist())):
            if sj >= threshold:
                dropped.append(Duplicate(start + j, int(aj), round(float(sj), 6)))
            else:
                kept.append(start + j)
    return kept, dropped
