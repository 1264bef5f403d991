"""SNAP's near-duplicate filter (Sentence-BERT cosine ≥ 0.75, greedy in order)."""

from __future__ import annotations

import time

import pytest
import torch

from obliviate.augment.dedup import Duplicate, dedup_against, dedup_filter, greedy_dedup_embeddings
from obliviate.embeddings import embed, embedded_sentence_model_dir, load_sentence_model

SENTENCES = [
    "Who is Peter Parker's aunt?",                        # 0
    "Who is the aunt of Peter Parker?",                   # 1 near-duplicate of 0
    "What is the capital city of France?",                # 2
    "Which city is the capital of France?",               # 3 near-duplicate of 2
    "How do photosynthesis reactions work in plants?",    # 4
    "Name three famous jazz musicians from New Orleans.", # 5
    "Who is Peter Parker's aunt?",                        # 6 exact duplicate of 0
    "What year did the Berlin Wall fall?",                # 7
    "When did the Berlin Wall come down?",                # 8 likely near-duplicate of 7
    "Explain the rules of cricket to a beginner.",        # 9
]


@pytest.fixture(scope="module")
def sbert():
    return load_sentence_model()


def _naive(emb: torch.Tensor, t: float) -> list[int]:
    """Reference greedy filter: one item at a time against everything kept so far."""
    kept = []
    for i in range(emb.shape[0]):
        if not kept or float((emb[kept] @ emb[i]).max()) < t:
            kept.append(i)
    return kept


def test_embedded_model_offline(sbert):
    assert (embedded_sentence_model_dir() / "model.safetensors").is_file()
    e = embed(["hello world", "bonjour"], sbert)
    assert e.shape == (2, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert load_sentence_model() is sbert  # memoised


def test_dedup_real_minilm_invariants(sbert):
    kept, dropped = dedup_filter(SENTENCES, model=sbert)
    emb = embed(SENTENCES, sbert)
    sim = emb @ emb.T
    # 1) no kept pair reaches the threshold
    for a in kept:
        for b in kept:
            if a < b:
                assert float(sim[a, b]) < 0.75, (SENTENCES[a], SENTENCES[b], float(sim[a, b]))
    # 2) every sentence with no near-duplicate anywhere is kept
    for i in range(len(SENTENCES)):
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        if float(others.max()) < 0.75:
            assert i in kept, SENTENCES[i]
    # 3) the crafted duplicates are dropped in favour of the first occurrence
    d = {x.index: x for x in dropped}
    assert 1 in d and d[1].kept_index == 0 and d[1].cosine >= 0.75
    assert 6 in d and d[6].kept_index == 0 and d[6].cosine == pytest.approx(1.0, abs=1e-4)
    assert 3 in d and d[3].kept_index == 2
    assert {0, 2, 4, 5, 9} <= set(kept)
    assert sorted(kept + [x.index for x in dropped]) == list(range(len(SENTENCES)))
    assert all(isinstance(x, Duplicate) for x in dropped)
    assert kept == _naive(emb, 0.75)


def test_dedup_against_existing(sbert):
    kept, dropped = dedup_against(["Which city is the capital of France?", "Explain the rules of cricket."],
                                  ["What is the capital city of France?"], model=sbert)
    assert kept == [1]
    assert dropped[0].index == 0 and dropped[0].kept_index == 0
    assert dedup_against([], ["x"], model=sbert) == ([], [])
    assert dedup_against(["x"], [], model=sbert) == ([0], [])


def test_blocked_equals_naive_greedy_and_is_fast():
    torch.manual_seed(0)
    base = torch.randn(300, 32)
    # 2000 items: noisy copies of 300 centres, so many near-duplicates across block boundaries
    emb = base[torch.randint(0, 300, (2000,))] + 0.35 * torch.randn(2000, 32)
    emb = emb / emb.norm(dim=1, keepdim=True)
    t0 = time.perf_counter()
    kept, dropped = greedy_dedup_embeddings(emb, 0.75, block_size=256)
    elapsed = time.perf_counter() - t0
    ref = _naive(emb, 0.75)
    assert kept == ref
    assert elapsed < 5.0, elapsed
    for x in dropped:
        assert float(emb[x.index] @ emb[x.kept_index]) >= 0.75 - 1e-6
        assert x.kept_index in set(kept) and x.kept_index < x.index
    # block size does not change the result
    assert greedy_dedup_embeddings(emb, 0.75, block_size=7)[0] == ref


def test_bad_inputs(sbert):
    with pytest.raises(ValueError, match="threshold"):
        dedup_filter(["a"], threshold=1.5, model=sbert)
    with pytest.raises(TypeError, match="item 1"):
        dedup_filter(["a", 3], model=sbert)
    assert dedup_filter([], model=sbert) == ([], [])
