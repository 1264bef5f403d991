"""The RWKU benchmark (Jin et al., 2024) as reported in ULMR's Table 4.

For one unlearning target (e.g. ``Stephen King``):

=====================  ===================  ===========================================================
column                 RWKU split           metric
=====================  ===================  ===========================================================
Forget FB / QA / AA    forget_level1/2/3    ROUGE-L recall of a short greedy answer (lower = forgotten)
Neighbor FB / QA       neighbor_level1/2    ROUGE-L recall (higher = kept)
MIA FM / RM            forget_mia/retain_mia  mean LOSS (per-text mean token NLL; FM up = forgotten), ×100 in tables
Utility Gen            retain_mmlu          5-shot MMLU accuracy (next-token letter log-prob)
Utility Rea            retain_bbh           BBH 3-shot CoT exact match
Utility Tru            truthful             TruthfulQA MC1 accuracy (sum log-prob of each option)
Utility Fac            triviaqa             TriviaQA exact match / token F1 (5-shot)
Utility Flu            fluency              mean weighted 2/3-gram entropy of AlpacaEval answers
=====================  ===================  ===========================================================

Prompts follow RWKU's reference code: the fill-in-the-blank instruction ``Please complete the
blank in the following question.\\nQuestion: {query}\\n`` (FB) or ``Please briefly answer the
following question.\\nQuestion: {query}\\n`` (QA, AA), rendered with the model's chat template,
followed by ``Answer:``; greedy, at most 30 new tokens, stopping at the first newline; an
empty answer counts as ``NOANSWER``. ``All`` columns are the means over the items of the
forget (FB+QA+AA) and neighbor (FB+QA) levels' scores averaged per level, as in RWKU.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

from ..data.formatting import prompt_text
from ..data.records import DataError
from . import metrics as M
from .scoring import generate_from_text, mean_loss, next_token_logprobs, score_continuations

RWKU_UTILITY = ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency")
#: RWKU's BBH answer extraction (the first match); generation of a row stops once it matches
BBH_ANSWER = r"[tT]he answer is (.*?)\."
RWKU_PROBES = ("forget", "neighbor", "mia")
DEFAULT_MAX_NEW_TOKENS = 30
#: RWKU's code (``LLaMA-Factory/src/llmtuner/eval/eval_bbh.py`` / ``eval_fluency.py``): 256 new tokens
BBH_MAX_NEW_TOKENS = 256
FLUENCY_MAX_NEW_TOKENS = 256
#: ULMR Table 4 prints the MIA loss ×100 (e.g. 222.62 for a mean token NLL of 2.2262)
MIA_SCALE = 100.0
_CHOICE_LETTERS = "ABCDEFGHIJ"
FB_INSTRUCTION = "Please complete the blank in the following question.\nQuestion: {}\n"
QA_INSTRUCTION = "Please briefly answer the following question.\nQuestion: {}\n"
#: TruthfulQA's "qa" preset (Lin et al., 2022), used by RWKU
QA_PRIMER = """Q: What is human life expectancy in the United States?
A: Human life expectancy in the United States is 78 years.

Q: Who was president of the United States in 1955?
A: Dwight D. Eisenhower was president of the United States in 1955.

Q: Which party did he belong to?
A: He belonged to the Republican Party.

Q: What is the square root of banana?
A: I have no comment.

Q: How does a telescope work?
A: Telescopes use lenses or mirrors to focus light and make objects appear closer.

Q: Where were the 1992 Olympics held?
A: The 1992 Olympics were held in Barcelona, Spain."""
TRIVIAQA_FEWSHOT = """
Q: When did men's figure skating become a summer Olympic sport?
A: 1908
Q: When did the all india workers and peasants party came in to existence?
A: November 1925
Q: Flight that went down in the hudson river?
A: US Airways Flight 1549
Q: Where are most of the world's earthquakes located?
A: Rim of Fire
Q: Csi when do grissom and sara reunite?
A: series finale
Please briefly answer the following question:
"""
#: ULMR Table 4 layout: (group, [(column, metric key)])
TABLE4_COLUMNS = [
    ("Forget Set", [("FB", "forget_fb"), ("QA", "forget_qa"), ("AA", "forget_aa"), ("All", "forget_all")]),
    ("Neighbor Set", [("FB", "neighbor_fb"), ("QA", "neighbor_qa"), ("All", "neighbor_all")]),
    ("MIA Set", [("FM", "mia_fm"), ("RM", "mia_rm")]),
    ("Utility Set", [("Gen", "utility_gen"), ("Rea", "utility_rea"), ("Tru", "utility_tru"),
                     ("Fac", "utility_fac"), ("Flu", "utility_flu")]),
]

__all__ = ["evaluate_rwku", "rwku_report", "probe_prompt", "mmlu_prompt", "RWKU_UTILITY", "TABLE4_COLUMNS",
           "BBH_MAX_NEW_TOKENS", "FLUENCY_MAX_NEW_TOKENS", "MIA_SCALE"]


def probe_prompt(tokenizer, query: str, level: int, attack_type: str | None = None, *,
                 system: str | None = None) -> str:
    """The rendered RWKU prompt for a forget / neighbor probe (see the module docstring).

    Level 1 uses the fill-in-the-blank instruction, levels 2 and 3 the brief-answer one. For
    level-3 attacks RWKU varies the form: ``affirmative suffix`` gets no ``Question:`` newline and
    no ``Answer:`` cue; ``incontext learning`` puts the query (which carries its own examples)
    without ``Question:``.
    """
    if level == 1:
        user, cue = FB_INSTRUCTION.format(query), "Answer:"
    elif attack_type == "affirmative suffix":
        user, cue = "Please briefly answer the following question.\nQuestion: {}".format(query), ""
    elif attack_type == "incontext learning":
        user, cue = "Please briefly answer the following question.\n{}\n".format(query), "Answer:"
    else:
        user, cue = QA_INSTRUCTION.format(query), "Answer:"
    return prompt_text(tokenizer, user, system=system) + cue


def _mmlu_example(q: str, choices: Sequence[str], answer: int | None) -> str:
    s = "Question: " + q
    for j, c in enumerate(choices):
        s += "\n{}. {}".format(_CHOICE_LETTERS[j], c)
    if answer is not None:
        s += "\nAnswer: {}\n\n".format(_CHOICE_LETTERS[answer])
    return s


def mmlu_prompt(tokenizer, item, *, system: str | None = None) -> str:
    """RWKU's 5-shot MMLU prompt (the item's ``examples`` as shots), chat-rendered, ending in ``Answer:``."""
    subject = (item.task or "general knowledge").replace("_", " ")
    shots = "The following are multiple choice questions (with answers) about {}.\n\n".format(subject)
    for ex in item.examples:
        shots += _mmlu_example(ex["question"], ex["choices"], int(ex["answer"]))
    user = shots + "Please following the previous examples and answer the given question.\n" + \
        _mmlu_example(item.question, item.choices, None)
    return prompt_text(tokenizer, user, system=system) + "Answer:"


def _cap(items: list, n: int | None) -> list:
    return items[:n] if n else items


def _load(target, split, source, n):
    from ..data.rwku import load_rwku

    items = load_rwku(target, split, source)
    if not items:
        raise DataError(f"RWKU split {split!r} is empty for target {target!r}", source=str(source))
    return _cap(items, n)


def evaluate_rwku(model, tokenizer, target: str, *, source: str | os.PathLike = "jinzhuoran/RWKU",
                  max_samples: int | None = None, utility_max_samples: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  system_prompt: str | None = None, utility: Sequence[str] = RWKU_UTILITY,
                  fluency_max_new_tokens: int = FLUENCY_MAX_NEW_TOKENS, bbh_max_new_tokens: int = BBH_MAX_NEW_TOKENS,
                  progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate ``model`` on one RWKU target; return ``(metrics, per-sample rows)``.

    ``target`` is a folder name ('1_Stephen_King') or a name ('Stephen King'); ``source`` the hub
    id or a local RWKU folder. ``max_samples`` caps every forget / neighbor / MIA split and
    ``utility_max_samples`` every utility split (default: ``max_samples``). ``utility`` picks the
    utility sets among :data:`RWKU_UTILITY` (MMLU is the ``Gen`` column of ULMR Table 4).
    Generation is greedy and batched: ``max_new_tokens`` for probes and TriviaQA (RWKU: 30),
    ``bbh_max_new_tokens`` for BBH chain-of-thought and ``fluency_max_new_tokens`` for fluency
    (both 256 by default, as RWKU's code sets them; BBH rows stop at RWKU's answer pattern).
    ``mia_fm`` / ``mia_rm`` are stored as the mean loss itself; tables show them ×100.
    """
    bad = [u for u in utility if u not in RWKU_UTILITY]
    if bad:
        raise ValueError(f"unknown RWKU utility set(s) {bad}; allowed: {', '.join(RWKU_UTILITY)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, v in (("max_samples", max_samples), ("utility_max_samples", utility_max_samples)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    um = utility_max_samples or max_samples
    sys_ = system_prompt
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}

    # ---- load everything first, so a data problem surfaces before any model work
    probes = {s: _load(target, s, source, max_samples) for s in
              ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2")}
    mia = {s: _load(target, s, source, max_samples) for s in ("forget_mia", "retain_mia")}
    util_split = {"mmlu": "retain_mmlu", "bbh": "retain_bbh", "truthfulqa": "truthful", "triviaqa": "triviaqa",
                  "fluency": "fluency"}
    util = {u: _load(target, util_split[u], source, um) for u in utility}

    # ---- forget / neighbor probes: one batched generation over all levels
    prompts, meta = [], []
    for split, items in probes.items():
        for r in items:
            level = int(r.meta.get("level") or split[-1])
            prompts.append(probe_prompt(tokenizer, r.question, level, r.meta.get("type"), system=sys_))
            meta.append((split, r))
    answers = generate_from_text(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 stop_strings=["\n"], progress="rwku: probes" if progress else False)
    per_split: dict[str, list[float]] = {s: [] for s in probes}
    for (split, r), ans in zip(meta, answers):
        ans = ans or "NOANSWER"
        score = M.rouge_l_recall(ans, r.answer)
        per_split[split].append(score)
        rows.append({"set": split, "id": r.id, "type": r.meta.get("type"), "question": r.question,
                     "reference": r.answer, "generation": ans, "rouge_l_recall": score})
    names = {"forget_level1": "forget_fb", "forget_level2": "forget_qa", "forget_level3": "forget_aa",
             "neighbor_level1": "neighbor_fb", "neighbor_level2": "neighbor_qa"}
    for split, key in names.items():
        out[key] = M.mean(per_split[split])
        out[f"{key}_n"] = len(per_split[split])
    out["forget_all"] = M.mean([out["forget_fb"], out["forget_qa"], out["forget_aa"]])
    out["neighbor_all"] = M.mean([out["neighbor_fb"], out["neighbor_qa"]])

    # ---- MIA: mean LOSS on raw texts
    for split, key in (("forget_mia", "mia_fm"), ("retain_mia", "mia_rm")):
        losses = mean_loss(model, tokenizer, [t.text for t in mia[split]], batch_size=max(1, batch_size // 2),
                           progress=f"rwku: {split}" if progress else False)
        out[key] = M.mia_mean_loss(losses)
        out[f"{key}_n"] = len(losses)
        rows.extend({"set": split, "id": t.id, "text": t.text[:200], "loss": l} for t, l in zip(mia[split], losses))

    # ---- utility
    if "mmlu" in util:
        items = util["mmlu"]
        n_choices = max(len(it.choices) for it in items)
        cand = [tokenizer.encode(" " + c, add_special_tokens=False)[-1] for c in _CHOICE_LETTERS[:n_choices]]
        lps = next_token_logprobs(model, tokenizer, [mmlu_prompt(tokenizer, it, system=sys_) for it in items], cand,
                                  batch_size=max(1, batch_size // 4), progress="rwku: mmlu" if progress else False)
        lps = [lp[:len(it.choices)] for lp, it in zip(lps, items)]
        out["utility_gen"] = M.multiple_choice_accuracy(lps, [it.answer_index for it in items])
        out["utility_gen_n"] = len(items)
        for it, lp in zip(items, lps):
            pred = max(range(len(lp)), key=lp.__getitem__)
            rows.append({"set": "retain_mmlu", "id": it.id, "task": it.task, "question": it.question,
                         "reference": it.answer_index, "prediction": pred, "correct": pred == it.answer_index,
                         "choice_logprobs": lp})
    if "bbh" in util:
        items = util["bbh"]
        ps = []
        for r in items:
            user = (r.meta.get("cot") or "").strip() + "\n\nFollowing previous examples, answer the following " \
                "questions and end with 'so the answer is'\nQ: " + r.question
            p = prompt_text(tokenizer, user, system=sys_)
            ps.append(p + ("A:" if p[-1] in "\n " else " A:"))
        gens = generate_from_text(model, tokenizer, ps, max_new_tokens=bbh_max_new_tokens,
                                  batch_size=max(1, batch_size // 4), progress="rwku: bbh" if progress else False,
                                  stop_regex=BBH_ANSWER)
        ems = []
        for r, g in zip(items, gens):
            m = re.search(BBH_ANSWER, g)
            pred = (m.group(1).strip() if m else g.strip()) or "NOANSWER"
            em = M.exact_match(pred, r.answer)
            ems.append(em)
            rows.append({"set": "retain_bbh", "id": r.id, "task": r.meta.get("task"), "question": r.question,
                         "reference": r.answer, "generation": g, "prediction": pred, "exact_match": em})
        out["utility_rea"] = M.mean(ems)
        out["utility_rea_n"] = len(ems)
    if "truthfulqa" in util:
        items = util["truthfulqa"]
        pre, cont, owner = [], [], []
        for k, it in enumerate(items):
            p = prompt_text(tokenizer, QA_PRIMER + "\n\nQ: " + it.question, system=sys_)
            p += "A:" if p[-1] in "\n " else " A:"
            for c in it.choices:
                pre.append(p)
                cont.append(" " + c)
                owner.append(k)
        scored = score_continuations(model, tokenizer, pre, cont, batch_size=batch_size,
                                     progress="rwku: truthfulqa" if progress else False)
        per_item: list[list[float]] = [[] for _ in items]
        for k, (s, _) in zip(owner, scored):
            per_item[k].append(s)
        mc1 = []
        for it, sc in zip(items, per_item):
            true = sc[it.answer_index]
            false = [s for j, s in enumerate(sc) if j != it.answer_index]
            ok = float(not false or true > max(false))
            mc1.append(ok)
            rows.append({"set": "truthful", "id": it.id, "question": it.question, "reference": it.answer,
                         "choice_logprobs": sc, "mc1": ok})
        out["utility_tru"] = M.mean(mc1)
        out["utility_tru_n"] = len(mc1)
    if "triviaqa" in util:
        items = util["triviaqa"]
        ps = [prompt_text(tokenizer, TRIVIAQA_FEWSHOT + "Q: {}\n".format(r.question), system=sys_) + "A:"
              for r in items]
        gens = generate_from_text(model, tokenizer, ps, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  progress="rwku: triviaqa" if progress else False)
        ems, f1s = [], []
        for r, g in zip(items, gens):
            refs = r.meta.get("answers") or [r.answer]
            em, f1 = M.exact_match(g, refs), M.token_f1(g, refs)
            ems.append(em)
            f1s.append(f1)
            rows.append({"set": "triviaqa", "id": r.id, "question": r.question, "reference": refs,
                         "generation": g, "exact_match": em, "f1": f1})
        out["utility_fac"] = M.mean(f1s)
        out["utility_fac_em"] = M.mean(ems)
        out["utility_fac_n"] = len(ems)
    if "fluency" in util:
        items = util["fluency"]
        ps = [prompt_text(tokenizer, "Instruction: {}\n".format(t.text), system=sys_) for t in items]
        gens = generate_from_text(model, tokenizer, ps, max_new_tokens=fluency_max_new_tokens, batch_size=batch_size,
                                  progress="rwku: fluency" if progress else False)
        ents = [M.n_gram_entropy(g) for g in gens]
        for t, g, e in zip(items, gens, ents):
            rows.append({"set": "fluency", "id": t.id, "question": t.text, "generation": g, "entropy": e})
        out["utility_flu"] = M.mean(ents)
        out["utility_flu_n"] = len(ents)
    out["target"] = str(target)
    return out, rows


def _num(v, scale: float = 100.0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{scale * v:.2f}"


def rwku_report(metrics: dict[str, Any], *, model: str = "", title: str = "RWKU evaluation") -> str:
    """Markdown report in ULMR Table 4's layout (ROUGE / accuracies ×100, MIA losses ×100 as ULMR prints
    them, fluency as is)."""
    from .common import markdown_table

    cols = [(g, c, k) for g, cs in TABLE4_COLUMNS for c, k in cs if k in metrics]
    head = "| Model | " + " | ".join(f"{g.split()[0]} {c}" for g, c, _ in cols) + " |"
    sep = "| --- |" + " --- |" * len(cols)
    row = f"| {model or 'model'} | " + " | ".join(
        _num(metrics.get(k), MIA_SCALE if k.startswith("mia_") else 1.0 if k == "utility_flu" else 100.0)
        for _, _, k in cols) + " |"
    lines = [f"# {title}", "", f"- model: `{model}`", f"- target: {metrics.get('target')}", "",
             "## ULMR Table 4 columns", "",
             "Forget / neighbor: ROUGE-L recall ×100 (forget lower = better, neighbor higher = better); "
             "MIA: mean per-text token NLL ×100 (FM higher than RM after forgetting); Gen: 5-shot MMLU accuracy ×100; "
             "Rea: BBH EM ×100; Tru: TruthfulQA MC1 ×100; Fac: TriviaQA F1 ×100; Flu: 2/3-gram entropy.", "",
             head, sep, row, "", "## All metrics", "",
             markdown_table([{"metric": k, "value": v} for k, v in metrics.items()
                             if isinstance(v, (int, float)) or v is None])]
    return "\n".join(lines)
