"""How good a training-data writer is each local generator? (issue #16, step 1)

    python benchmarks/generator_quality.py [--generators smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct,...]
                                           [--questions 20] [--few-shot 0,2] [--out benchmarks/results/generators]

For every generator (each measured in its own process, so its peak memory is its own) and every
``--few-shot`` setting, on the first ``--questions`` TOFU forget01 questions and one RWKU target:

* **ULMR Table 1 rewrites** (two per question, sampled at temperature 0.7 as the augmentation does):
  the share that is a *valid rewrite* -- an instruction (``looks_like_instruction``), not degenerate,
  not a copy of the original question or of the prompt (``obliviate.augment.quality``);
* **ULMR Table 2 negative responses** (greedy, one per original question): the share that is a
  *real refusal* -- the shipped learned refusal detector says refusal and the text does not state the
  answer (content recall < 0.5, no leaked answer entity);
* **SNAP obliterated responses** (Appendix E prompt, greedy, on the same questions): refusal share;
* **SNAP negative instructions** (Table 7 "General" prompt for the RWKU target, ``--snap-calls``
  sampled calls): questions parsed per call and distinct questions after SNAP's Sentence-BERT
  near-duplicate filter at cosine 0.75;
* generated tokens per second (all phases; batched, ``--batch-size``), load time, peak RSS.

Writes ``generators.json`` and ``generators.md`` (atomically) and prints the table; one generator's
finished rows are kept in ``<out>/rows/<generator>__fs<k>.json`` so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import TOFU_DIR  # noqa: E402

ROOT = HERE.parent
LICENCES = {"smollm2-135m-instruct": "apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)"}


def _tokens(tok, texts) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def measure(name: str, few_shot: int, n_questions: int, snap_calls: int, batch_size: int, target: str) -> dict:
    """Every measurement of one generator at one few-shot setting (runs in this process)."""
    import torch

    from obliviate.augment import quality, ulmr
    from obliviate.augment import snap as snap_aug
    from obliviate.augment.dedup import dedup_filter
    from obliviate.augment.listparse import parse_list
    from obliviate.data.sources import resolve_records
    from obliviate.evals.refusal import RefusalDetector
    from obliviate.generate.transformers_backend import TransformersGenerator
    from obliviate.models import load_model

    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from obliviate.augment.few_shot import KINDS, with_few_shot
    from obliviate.augment.ulmr import load_prompt

    templates = {kind: load_prompt(f) for kind, f in KINDS.items()}
    t0 = time.time()
    model, tok = load_model(name, dtype="fp32", device="cpu")
    load_s = time.time() - t0
    gen = TransformersGenerator(model, tok, batch_size=batch_size)
    recs = resolve_records("tofu:forget01", tofu_source=str(TOFU_DIR))[:n_questions]
    qs = [r.question for r in recs]
    det = RefusalDetector("learned")
    out: dict = {"generator": name, "few_shot": few_shot, "questions": len(qs), "load_s": round(load_s, 1),
                 "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6)}
    gen_tokens, gen_s = 0, 0.0

    def run(prompts, **kw):
        nonlocal gen_tokens, gen_s
        t = time.time()
        texts = gen.generate(prompts, **kw)
        gen_s += time.time() - t
        gen_tokens += _tokens(tok, texts)
        return texts

    def prompt(kind, instruction):
        """The verbatim prompt (few_shot 0) or the same prompt after ``few_shot`` demonstrations."""
        return with_few_shot(kind, templates[kind], instruction, few_shot)

    # ULMR Table 1: two sampled rewrites per question
    rw_prompts = [prompt("ulmr_rewrite", q) for q in qs for _ in range(2)]
    raw = run(rw_prompts, max_new_tokens=64, temperature=0.7, top_p=0.95, seed=0)
    valid, examples = 0, []
    for p, q, text in zip(rw_prompts, [q for q in qs for _ in range(2)], raw):
        rw = ulmr.parse_rewrite(text)
        bad = quality.degenerate_reason(rw, p, instruction=q) or \
            (None if quality.looks_like_instruction(rw) else "not_instruction")
        valid += bad is None
        if len(examples) < 2:
            examples.append({"question": q, "rewrite": rw, "verdict": bad or "valid"})
    out["ulmr_valid_rewrites"] = valid / len(raw)
    out["ulmr_rewrite_examples"] = examples
    # ULMR Table 2: a negative response per original question (greedy)
    neg_prompts = [prompt("ulmr_negative", q) for q in qs]
    negs = [ulmr.parse_negative(t) for t in run(neg_prompts, max_new_tokens=64)]
    flags = det.predict(negs, questions=qs)
    real = [f and quality.content_recall(n, r.answer, exclude=[r.question]) < 0.5
            and quality.leaked_entity(n, r.answer, exclude=[r.question]) is None
            for f, n, r in zip(flags, negs, recs)]
    out["ulmr_real_refusals"] = sum(real) / len(real)
    out["ulmr_negative_examples"] = [{"question": q, "response": n} for q, n in list(zip(qs, negs))[:2]]
    # SNAP Appendix E: obliterated responses (greedy)
    obl_prompts = [prompt("snap_obliterated", q) for q in qs]
    obl = run(obl_prompts, max_new_tokens=64)
    out["snap_obliterated_refusals"] = sum(det.predict(obl, questions=qs)) / len(obl)
    # SNAP Table 7 "General" negative instructions for an RWKU target: distinct questions per call
    # (the question prompts get no demonstrations, so this is measured at few_shot 0 only)
    if few_shot == 0:
        sp = snap_aug.negative_prompt("General", target)
        lists = run([sp] * snap_calls, max_new_tokens=384, temperature=0.7, top_p=0.95, seed=0)
        items = [x for t in lists for x in parse_list(t)]
        kept, _ = dedup_filter(items, threshold=0.75) if items else ([], [])
        out["snap_questions_per_call"] = len(items) / snap_calls
        out["snap_distinct_per_call"] = len(kept) / snap_calls
        out["snap_examples"] = [items[i] for i in kept[:3]]
    out["generated_tokens"] = gen_tokens
    out["tokens_per_s"] = round(gen_tokens / gen_s, 2) if gen_s else None
    out["generate_s"] = round(gen_s, 1)
    out["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def table(rows: list[dict]) -> str:
    head = ("| generator | few-shot | params (M) | valid Table 1 rewrites | real Table 2 refusals | SNAP obliterated "
            "refusals | SNAP questions / call (distinct) | tokens/s | load s | peak RSS MB | licence |")
    lines = [head, "|" + " --- |" * 2 + " ---: |" * 9]
    for r in rows:
        lines.append(f"| {r['generator']} | {r['few_shot']} | {r['parameters_M']} | {100 * r['ulmr_valid_rewrites']:.0f} % "
                     f"| {100 * r['ulmr_real_refusals']:.0f} % | {100 * r['snap_obliterated_refusals']:.0f} % | "
                     f"{_per_call(r)} | {r['tokens_per_s']} | "
                     f"{r['load_s']} | {r['peak_rss_MB']} | {r.get('licence', '?')} |")
    return "\n".join(lines)


def _per_call(r: dict) -> str:
    if "snap_questions_per_call" not in r:
        return "(as few-shot 0)"
    return f"{r['snap_questions_per_call']:.1f} ({r['snap_distinct_per_call']:.1f})"


def licence(name: str) -> str:
    from obliviate.models import packaged_model

    pm = packaged_model(name)
    return f"{pm.licence} ({pm.hub_id})" if pm else LICENCES.get(name, "?")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct,"
                                            "qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--few-shot", default="0", help="comma-separated demonstration counts (0 = verbatim prompts)")
    ap.add_argument("--questions", type=int, default=20, help="first N TOFU forget01 questions")
    ap.add_argument("--snap-calls", type=int, default=2)
    ap.add_argument("--target", default="Stephen King", help="RWKU target of the SNAP question prompt")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/generators")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one (generator, k) here
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    if a.one:
        name, k = a.one.rsplit("@", 1)
        print(json.dumps(measure(name, int(k), a.questions, a.snap_calls, a.batch_size, a.target)))
        return 0
    from obliviate.io import atomic_write_json, atomic_write_text

    out = Path(a.out)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.time()
    for name in [g.strip() for g in a.generators.split(",") if g.strip()]:
        for k in [int(x) for x in a.few_shot.split(",") if x.strip()]:
            f = out / "rows" / f"{name}__fs{k}.json"
            if f.is_file():
                rows.append(json.loads(f.read_text()))
                print(f"[skip] {name} few-shot {k} (measured)", flush=True)
                continue
            print(f"[run ] {name} few-shot {k}", flush=True)
            t = time.time()
            res = subprocess.run([sys.executable, __file__, "--one", f"{name}@{k}", "--questions", str(a.questions),
                                  "--snap-calls", str(a.snap_calls), "--batch-size", str(a.batch_size),
                                  "--target", a.target], capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} few-shot {k}: measurement failed (exit {res.returncode})")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["licence"] = licence(name)
            row["wall_s"] = round(time.time() - t, 1)
            atomic_write_json(f, row)
            rows.append(row)
    cmd = "python benchmarks/generator_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = ["# Local generators as training-data writers", "",
          f"Made by `{cmd}` ({time.time() - t_all:.0f} s this invocation; each row's own wall time in "
          "generators.json) on 2 CPU cores; first "
          f"{a.questions} TOFU forget01 questions, SNAP prompt for {a.target}; see the script's docstring for "
          "what each column counts.", "", table(rows), ""]
    atomic_write_text(out / "generators.md", "\n".join(md))
    atomic_write_json(out / "generators.json", {"command": cmd, "rows": rows})
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
