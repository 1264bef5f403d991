"""Build ``benchmarks/data/general_retain_smollm2``: general instructions answered by the original model.

    python benchmarks/make_general_retain.py [--n 100] [--seed 0]

SNAP's retaining loss L_r keeps what the model should still do; its hard-retaining data D_r asks
only about the target's related entities. This set is the general counterpart D_g for the
``retain_data: {mode: add}`` row of the reproduction (D_r ∪ D_g, not in the paper): ``--n``
instructions drawn at random (``--seed``) from the ``fluency.json`` files of the RWKU targets that
the reproduction does NOT unlearn or evaluate on (TA uses 1_Stephen_King/fluency.json), leaving out
any that names an unlearned target or its alias, each answered by the original model
(SmolLM2-135M-Instruct, greedy, at most 128 new tokens): its own answers are what L_r is meant to
keep. Writes ``general_retain.jsonl`` (question, answer, source) and ``provenance.json`` atomically;
an existing set built with the same settings is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SHARED_DATA  # noqa: E402

ROOT = HERE.parent
OUT = ROOT / "benchmarks" / "data" / "general_retain_smollm2"
#: the reproduction's targets and aliases (benchmarks/make_data.py): never in D_g
EXCLUDED_TARGETS = ("1_Stephen_King", "2_Confucius", "3_Bruce_Lee")
EXCLUDED_NAMES = ("stephen king", "richard bachman", "confucius", "kong qiu", "bruce lee", "lee jun-fan")
MODEL = "smollm2-135m-instruct"


def pool(rwku: Path) -> list[dict]:
    """Every usable instruction of the other targets' fluency.json, in a fixed order."""
    rows = []
    for d in sorted(p for p in rwku.iterdir() if p.is_dir() and p.name not in EXCLUDED_TARGETS):
        f = d / "fluency.json"
        if not f.is_file():
            continue
        for i, r in enumerate(json.loads(f.read_text())):
            q = (r.get("instruction") or "").strip()
            if q and not any(n in q.lower() for n in EXCLUDED_NAMES):
                rows.append({"question": q, "source": f"rwku/{d.name}/fluency.json#{i}"})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    a = ap.parse_args(argv)
    from obliviate.io import atomic_write_json, atomic_write_jsonl

    rwku = SHARED_DATA / "rwku"
    rows = pool(rwku)
    ta = {(r.get("instruction") or "").strip() for r in json.loads((rwku / "1_Stephen_King" / "fluency.json").read_text())}
    rows = [r for r in rows if r["question"] not in ta]
    if len(rows) < a.n:
        raise SystemExit(f"only {len(rows)} usable instructions, fewer than --n {a.n}")
    picked = random.Random(a.seed).sample(rows, a.n)
    settings = {"n": a.n, "seed": a.seed, "max_new_tokens": a.max_new_tokens, "model": MODEL,
                "excluded_targets": list(EXCLUDED_TARGETS),
                "questions_sha256": hashlib.sha256("\n".join(r["question"] for r in picked).encode()).hexdigest()}
    prov = OUT / "provenance.json"
    if prov.is_file() and json.loads(prov.read_text()).get("settings") == settings \
            and (OUT / "general_retain.jsonl").is_file():
        print(f"{OUT} is up to date")
        return 0
    from obliviate.generate import make_generator

    t0 = time.time()
    gen = make_generator(f"transformers:{MODEL}", progress=True)
    answers = gen.generate([r["question"] for r in picked], max_new_tokens=a.max_new_tokens)
    out = [{"question": r["question"], "answer": ans.strip(), "source": r["source"]} for r, ans in zip(picked, answers)]
    empty = sum(not r["answer"] for r in out)
    atomic_write_jsonl(OUT / "general_retain.jsonl", [r for r in out if r["answer"]])
    atomic_write_json(prov, {"settings": settings, "command": "python benchmarks/make_general_retain.py "
                             + " ".join(sys.argv[1:] if argv is None else argv),
                             "rows": len(out) - empty, "empty_answers_dropped": empty,
                             "wall_s": round(time.time() - t0, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"{len(out) - empty} rows -> {OUT / 'general_retain.jsonl'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
