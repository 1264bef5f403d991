"""Rebuild the committed training data under ``benchmarks/data/`` (issue #16, step 1).

Each folder is one ``obliviate augment`` run with the ``templates`` stand-in generator (the
offline stand-in for the papers' GPT-4 / Llama-3-8B data generators):

* ULMR pairs (§3.1) for TOFU forget01 / forget05, ``--filter none`` (the paper filters nothing),
  with and without ``--include-original``;
* SNAP forgetting / hard-retaining sets (§3.1, §4.8 real-person setting) for three RWKU targets,
  the hard-retaining answers written greedily by the model being unlearned (the embedded
  SmolLM2-135M-Instruct).
* ULMR pairs for the same three RWKU targets (ULMR Table 4), rewritten from the *training*
  forgetting questions of those SNAP sets (``forget_train.jsonl`` only: never ``forget_eval*.jsonl``
  nor RWKU's probes), ``--filter none``; built after the SNAP sets they read.

Next to the command's own outputs (``forget_augmented.jsonl`` / ``forget_train.jsonl`` …,
``augment_report.md``, ``augment_stats.json`` / ``dedup_report.json``, ``manifest.json``) every
folder gets ``provenance.json`` (exact command, generator specs, seeds, prompt and template-bank
hashes, git commit, wall time, counts, the sha256 of every file), ``quality.json`` (the sampled
checks below) and ``PROVENANCE.md`` (both, readable).

Resumable: a folder whose ``provenance.json`` records the same command and whose files still
have the recorded sha256 is skipped (``--force`` rebuilds it). Generation caches go to
``runs/data_cache/<name>`` (not committed), so an interrupted SNAP run resumes its answers.

    python benchmarks/make_data.py                 # build what is missing, print the table
    python benchmarks/make_data.py --only snap_rwku_1_stephen_king_templates
    python benchmarks/make_data.py --check-only    # recompute quality.json / PROVENANCE.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("benchmarks/data")
CACHE = Path("runs/data_cache")
PROMPTS = Path("src/obliviate/prompts")
BANK = Path("src/obliviate/generate/template_bank.json")
ANSWER_MODEL = "transformers:smollm2-135m-instruct"
#: retaining categories used for the SNAP sets: the paper's five minus Implicit (the stand-in's
#: implicit questions about a related entity only know its initials) -- and fewer answers for the
#: 135M answer model to write on 2 CPU cores.
RETAIN_CATEGORIES = ["General", "5W1H", "Relational", "Open-Ended"]
ANSWER_MAX_NEW_TOKENS = 64
#: related individuals asked for (the paper: 10 individuals + 10 organisations). The 135M answer
#: model writes about 16 answers in 3-4 minutes on 2 shared cores, so the retaining pool is cut
#: to the first 3 individuals of entities.json (about 70 questions after dedup).
K_RELATED = 3
RETAIN_TRAIN_SIZE = 50

RWKU_TARGETS = [  # (folder suffix, RWKU folder, target, alias stated in the passage, forget train size)
    ("1_stephen_king", "1_Stephen_King", "Stephen King", "Richard Bachman", 100),
    ("2_confucius", "2_Confucius", "Confucius", "Kong Qiu", 100),
    # 104 forgetting questions survive the dedup for Bruce Lee: 100 for training left none to
    # measure UA on, so 80 train and 18 are held out (like the other targets' 19)
    ("3_bruce_lee", "3_Bruce_Lee", "Bruce Lee", "Lee Jun-fan", 80),
]


def specs() -> list[dict]:
    """The data sets: name, kind, the ``obliviate`` argv (relative to the repository root), notes."""
    out = []
    for split in ("forget01", "forget05"):
        for orig in (False, True):
            name = f"ulmr_tofu_{split}_templates_none" + ("_orig" if orig else "")
            argv = ["augment", "ulmr", "--forget", f"tofu:{split}", "--generator", "templates:seed=0",
                    "--filter", "none", "--n-rewrites", "2", "--seed", "0", "--out", str(DATA / name),
                    "--cache-dir", str(CACHE / name), "--no-progress"]
            if orig:
                argv.insert(argv.index("--seed"), "--include-original")
            out.append({"name": name, "kind": "ulmr", "argv": argv,
                        "prompts": ["ulmr_prompt_rewrite.txt", "ulmr_negative_prompt.txt"],
                        "generator": "templates:seed=0", "answer_generator": None,
                        "notes": (f"TOFU {split} (../shared/data/tofu), 2 rewrites per question (Table 1 prompt) and one "
                                  "negative response per rewrite (Table 2 prompt), both by the templates stand-in; "
                                  "--filter none = the paper's setting (only empty outputs rejected)"
                                  + ("; --include-original also trains on each original question x_i with its own "
                                     "negative response (x_r = {x_1, x_2, x_i})" if orig else ""))})
    for suffix, folder, target, alias, train_size in RWKU_TARGETS:
        name = f"snap_rwku_{suffix}_templates"
        ent = DATA / name / "entities.json"
        gen = f"templates:seed=0,entities={ent}"
        argv = ["augment", "snap", "--target", target, "--alias", alias, "--out", str(DATA / name),
                "--generator", gen, "--answer-generator", ANSWER_MODEL, "--paper-setting", "real-person",
                "--retain-categories", *RETAIN_CATEGORIES, "--answer-max-new-tokens", str(ANSWER_MAX_NEW_TOKENS),
                "--k-related", str(K_RELATED), *(["--train-size", str(train_size)] if train_size != 100 else []),
                "--retain-train-size", str(RETAIN_TRAIN_SIZE),
                "--seed", "0", "--cache-dir", str(CACHE / name)]
        out.append({"name": name, "kind": "snap", "argv": argv, "inputs": [str(ent)],
                    "prompts": [p.name for p in sorted((ROOT / PROMPTS).glob("snap_*.txt"))
                                if "marvel" not in p.name],
                    "generator": gen, "answer_generator": ANSWER_MODEL,
                    "notes": (f"RWKU target {target} (../shared/data/rwku/{folder}); SNAP §4.8 real-person setting "
                              "(top-k related individuals + organisations, 10 calls per category, 100 forgetting "
                              f"training examples, dedup 0.75) except k = {K_RELATED} (the paper: 10), "
                              + (f"{train_size} forgetting training examples (104 survive the dedup: the rest "
                                 "are held out for UA), " if train_size != 100 else "") + f"and "
                              f"{RETAIN_TRAIN_SIZE} retaining training examples (the rest for evaluation), to fit "
                              "the 135M answer model on 2 CPU cores. The stand-in names only the entities of "
                              "entities.json (hand-written from the target's intro.json and the first paragraphs "
                              "of its passage.json, the forget corpus; no organisations: the stand-in's question "
                              "templates are about people). Retaining categories "
                              f"{', '.join(RETAIN_CATEGORIES)} (Implicit left out), answers by {ANSWER_MODEL} "
                              f"greedy, at most {ANSWER_MAX_NEW_TOKENS} new tokens (sized for 2 CPU cores)")})
    for suffix, folder, target, _alias, _size in RWKU_TARGETS:
        name = ulmr_rwku_name(suffix)
        src = DATA / f"snap_rwku_{suffix}_templates" / "forget_train.jsonl"
        argv = ["augment", "ulmr", "--forget", str(src), "--generator", "templates:seed=0", "--filter", "none",
                "--n-rewrites", "2", "--seed", "0", "--out", str(DATA / name), "--cache-dir", str(CACHE / name),
                "--no-progress"]
        out.append({"name": name, "kind": "ulmr", "argv": argv, "inputs": [str(src)],
                    "prompts": ["ulmr_prompt_rewrite.txt", "ulmr_negative_prompt.txt"],
                    "generator": "templates:seed=0", "answer_generator": None,
                    "notes": (f"RWKU target {target} (../shared/data/rwku/{folder}), ULMR Table 4: the forget "
                              f"instructions are the training forgetting questions of the committed "
                              f"snap_rwku_{suffix}_templates/forget_train.jsonl (never its forget_eval*.jsonl, "
                              "never RWKU's forget / neighbor probes: RWKU ships no question set for training), "
                              "2 rewrites per question (Table 1 prompt) and one negative response per rewrite "
                              "(Table 2 prompt), both by the templates stand-in; --filter none = the paper's "
                              "setting (only empty outputs rejected). The `original_answer` each row carries is "
                              "SNAP's obliterated response (those questions have no reference answers); ULMR "
                              "does not train on it")})
    return out


def ulmr_rwku_name(suffix: str, kind: str = "templates_none") -> str:
    """The committed ULMR data folder of an RWKU target (``suffix`` = ``1_stephen_king``)."""
    return f"ulmr_rwku_{suffix}_{kind}"


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_state() -> dict:
    """HEAD commit and the files under src/ that differ from it (the code that wrote the data)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True)
    dirty = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD"), "src_uncommitted": dirty}


def output_files(folder: Path) -> list[Path]:
    """Files a build leaves in ``folder`` (everything but the provenance files themselves)."""
    skip = {"provenance.json", "quality.json", "PROVENANCE.md"}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in skip)


def up_to_date(spec: dict) -> bool:
    """True when provenance.json records this command, the same prompt files, template bank and
    inputs (sha256), and every recorded output file still has its sha256."""
    prov = ROOT / DATA / spec["name"] / "provenance.json"
    if not prov.exists():
        return False
    rec = json.loads(prov.read_text())
    if rec.get("argv") != spec["argv"] or rec.get("template_bank_sha256") != sha256(ROOT / BANK):
        return False
    if rec.get("prompts") != {n: sha256(ROOT / PROMPTS / n) for n in spec["prompts"]}:
        return False
    for name in spec.get("inputs", []):
        if rec.get("inputs_sha256", {}).get(name) != sha256(ROOT / name):
            return False
    for name, digest in rec.get("sha256", {}).items():
        p = ROOT / DATA / spec["name"] / name
        if not p.exists() or sha256(p) != digest:
            return False
    return True


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file ([] when absent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def counts(spec: dict) -> dict:
    """Kept / dropped counts from the files the augment command wrote."""
    folder = ROOT / DATA / spec["name"]
    if spec["kind"] == "ulmr":
        st = json.loads((folder / "augment_stats.json").read_text())
        return {"sources": st["sources"], "requested": st["requested"], "kept": st["kept"],
                "regenerated": st["regenerated"], "dropped": st["dropped"], "originals": st.get("originals", 0),
                "dropped_reasons": st.get("dropped_reasons", {}),
                "rewrite_rejections": st["rewrites"].get("rejections", {}),
                "negative_rejections": st["negatives"].get("rejections", {})}
    summ = json.loads((folder / "manifest.json").read_text()).get("summary", {})
    return {"counts": summ.get("counts"), "related": summ.get("related"), "dedup": summ.get("dedup"),
            "generated_forget": summ.get("per_category", {}).get("generated_forget"),
            "generated_retain": summ.get("per_category", {}).get("generated_retain"),
            "generation": summ.get("generation")}


_NAMED = re.compile(r"\b(?:[A-Z][\w'.-]*|\d[\d/.,:-]*)")


def named_tokens(question: str) -> set[str]:
    """Capitalised words after the first word, and numbers/dates: what a rewrite must keep."""
    toks = _NAMED.findall(question)
    first = question.split()[0] if question.split() else ""
    return {t.rstrip(".,?!:;'") for t in toks if t != first and t.rstrip(".,?!:;'") not in {"I", ""}}


def norm(s: str) -> str:
    """Lower-cased words only (for equality / duplicate checks)."""
    return " ".join(re.findall(r"\w+", s.lower()))


def quality(spec: dict) -> dict:
    """Checks over all rows: refusals by obliviate.evals.refusal (default learned mode, and the
    rules), rewrites differ from the original and keep its names/numbers, SNAP questions distinct
    (exact and max MiniLM cosine after dedup), retaining answers non-empty and not refusals."""
    from obliviate.evals.refusal import RefusalDetector, is_refusal

    det = RefusalDetector()  # default mode
    folder = ROOT / DATA / spec["name"]
    q: dict = {"refusal_detector": f"{det!r} (default) and mode='rules'"}
    if spec["kind"] == "ulmr":
        rows = read_jsonl(folder / "forget_augmented.jsonl")
        negs = [r["answer"] for r in rows]
        learned = det.predict(negs)
        q["negatives"] = {"n": len(negs), "refusal_learned": sum(learned), "refusal_rules": sum(map(is_refusal, negs)),
                          "not_refusal_examples": [n for n, f in zip(negs, learned) if not f][:5]}
        rw = [r for r in rows if r.get("kind", "rewrite") == "rewrite"]
        same = [r for r in rw if norm(r["question"]) == norm(r["original_question"])]
        lost = [r for r in rw if not named_tokens(r["original_question"]) <= set(
            t.rstrip(".,?!:;'") for t in _NAMED.findall(r["question"]))]
        by_src: dict = {}
        for r in rw:
            by_src.setdefault(r["source_id"], []).append(norm(r["question"]))
        dup = sum(len(v) - len(set(v)) for v in by_src.values())
        q["rewrites"] = {"n": len(rw), "differ_from_original": len(rw) - len(same),
                         "keep_all_names_and_numbers": len(rw) - len(lost), "duplicate_within_question": dup,
                         "lost_name_examples": [{"original": r["original_question"], "rewrite": r["question"]}
                                                for r in lost[:5]]}
        q["originals"] = sum(1 for r in rows if r.get("kind") == "original")
        return q
    from obliviate.embeddings import embed, load_sentence_model

    forget = {n: read_jsonl(folder / f"{n}.jsonl") for n in ("forget_train", "forget_eval", "forget_eval_multihop")}
    retain = {n: read_jsonl(folder / f"{n}.jsonl") for n in ("retain_train", "retain_eval")}
    frows = [r for v in forget.values() for r in v]
    rrows = [r for v in retain.values() for r in v]
    obl = [r["answer"] for r in frows]
    learned = det.predict(obl)
    q["obliterated"] = {"n": len(obl), "refusal_learned": sum(learned), "refusal_rules": sum(map(is_refusal, obl))}
    target = json.loads((folder / "manifest.json").read_text()).get("summary", {}).get("target", "")
    fq, rq = [r["question"] for r in frows], [r["question"] for r in rrows]
    model = load_sentence_model(None)
    import numpy as np

    def max_cos(a, b=None):
        if not a or (b is not None and not b):
            return None
        ea = np.asarray(embed(a, model), dtype=np.float64)
        eb = ea if b is None else np.asarray(embed(b, model), dtype=np.float64)
        ea /= np.linalg.norm(ea, axis=1, keepdims=True)
        eb /= np.linalg.norm(eb, axis=1, keepdims=True)
        s = ea @ eb.T
        if b is None:
            np.fill_diagonal(s, -1.0)
        return round(float(s.max()), 4)

    q["forget_questions"] = {"n": len(fq), "distinct_exact": len({norm(x) for x in fq}),
                             "max_cosine_between_kept": max_cos(fq),
                             "name_the_target": sum(1 for x in fq if target.lower() in x.lower()),
                             "per_file": {k: len(v) for k, v in forget.items()}}
    ans = [r["answer"] for r in rrows]
    ra = det.predict(ans) if ans else []
    q["retain"] = {"n": len(rq), "distinct_exact": len({norm(x) for x in rq}),
                   "max_cosine_between_kept": max_cos(rq), "max_cosine_to_forget": max_cos(rq, fq),
                   "answers_nonempty": sum(1 for a in ans if a.strip()),
                   "answers_refusal_learned": sum(ra),
                   "answer_words_mean": round(sum(len(a.split()) for a in ans) / len(ans), 1) if ans else None,
                   "per_entity": dict(sorted({e: sum(1 for r in rrows if r.get("subject") == e)
                                              for e in {r.get("subject") for r in rrows}}.items())),
                   "examples": [{"q": r["question"], "a": r["answer"]} for r in rrows[:3]]}
    return q


def write_markdown(spec: dict, prov: dict, qual: dict) -> None:
    """PROVENANCE.md: what the folder holds, how it was made, counts and the quality checks."""
    folder = ROOT / DATA / spec["name"]
    lines = [f"# `{spec['name']}`", "", spec["notes"] + ".", "",
             "Made by `python benchmarks/make_data.py` (rebuilds it; resumable). Exact command, from the "
             "repository root:", "", "```", prov["command"], "```", "",
             f"- generator: `{prov['generator']}` (the offline stand-in for the papers' generators, "
             "README \"The `templates` stand-in generator\")",
             f"- answer generator: `{prov['answer_generator']}`" if prov["answer_generator"] else
             "- answer generator: none (ULMR needs no answers)",
             f"- seeds: {prov['seeds']}",
             f"- git commit of the code: `{prov['git']['commit']}`"
             + (f" (uncommitted changes under src/ at build time: {', '.join(prov['git']['src_uncommitted'])})"
                if prov["git"]["src_uncommitted"] else ""),
             f"- wall time: {prov['wall_s']} s on {prov['machine']}",
             f"- built: {prov['built']}", "",
             "Prompts (verbatim files in `src/obliviate/prompts`, sha256):", ""]
    lines += [f"- `{n}` `{h[:16]}`" for n, h in prov["prompts"].items()]
    lines += [f"- template bank `{BANK}` `{prov['template_bank_sha256'][:16]}`", "", "## Counts", "",
              "```json", json.dumps(prov["counts"], indent=1, ensure_ascii=False), "```", "",
              "## Quality checks (all rows; `quality.json`)", "",
              "```json", json.dumps(qual, indent=1, ensure_ascii=False), "```", "",
              "## Files (sha256 in `provenance.json`)", ""]
    lines += [f"- `{n}` `{h[:16]}`" for n, h in prov["sha256"].items()]
    (folder / "PROVENANCE.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def finish(spec: dict, wall: float | None, built: str | None) -> dict:
    """Write provenance.json, quality.json and PROVENANCE.md for a built folder."""
    folder = ROOT / DATA / spec["name"]
    old = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").exists() else {}
    import platform

    prov = {
        "name": spec["name"], "kind": spec["kind"], "argv": spec["argv"],
        "command": "obliviate " + shlex.join(spec["argv"]),
        "generator": spec["generator"], "answer_generator": spec["answer_generator"],
        "seeds": {"--seed": 0, "templates seed": 0},
        "inputs": spec.get("inputs", []),
        "inputs_sha256": {n: sha256(ROOT / n) for n in spec.get("inputs", [])},
        "prompts": {n: sha256(ROOT / PROMPTS / n) for n in spec["prompts"]},
        "template_bank_sha256": sha256(ROOT / BANK),
        "git": old.get("git") if wall is None and old.get("git") else git_state(),
        "wall_s": round(wall, 1) if wall is not None else old.get("wall_s"),
        "machine": old.get("machine") if wall is None and old.get("machine") else
        f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared)",
        "built": built or old.get("built"),
        "counts": counts(spec),
    }
    prov["sha256"] = {p.name: sha256(p) for p in output_files(folder)}
    qual = quality(spec)
    (folder / "quality.json").write_text(json.dumps(qual, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "provenance.json").write_text(json.dumps(prov, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(spec, prov, qual)
    return prov


def build(spec: dict) -> float:
    """Run the augment command (from the repository root); return its wall time in seconds."""
    (ROOT / DATA / spec["name"]).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "obliviate", *spec["argv"]], cwd=ROOT, check=True)
    return time.time() - t0


def row(spec: dict, status: str) -> list[str]:
    """One line of the summary table."""
    prov = json.loads((ROOT / DATA / spec["name"] / "provenance.json").read_text())
    c = prov["counts"]
    if spec["kind"] == "ulmr":
        kept = f"{c['kept']}/{c['requested']} pairs (dropped {c['dropped']}, regen {c['regenerated']})"
    else:
        n = c["counts"]
        kept = (f"forget {n['forget_train']}+{n['forget_eval']}+{n['forget_eval_multihop']}mh, "
                f"retain {n['retain_train']}+{n['retain_eval']}")
    return [spec["name"], status, kept, f"{prov['wall_s']}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", help="folder names to build")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--check-only", action="store_true", help="recompute quality.json / PROVENANCE.md only")
    ap.add_argument("--list", action="store_true", help="print the commands and exit")
    a = ap.parse_args(argv)
    todo = [s for s in specs() if not a.only or s["name"] in a.only]
    if a.list:
        for s in todo:
            print("obliviate " + shlex.join(s["argv"]))
        return 0
    table = []
    for s in todo:
        if a.check_only:
            finish(s, None, None)
            status = "checked"
        elif not a.force and up_to_date(s):
            status = "skipped (up to date)"
        else:
            wall = build(s)
            finish(s, wall, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            status = "built"
        table.append(row(s, status))
        print(" | ".join(table[-1]), flush=True)
    print("\n| data set | status | counts | wall s |\n| --- | --- | --- | ---: |")
    for r in table:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
