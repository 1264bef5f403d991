"""ULMR data augmentation (Shi et al., §3.1, Algorithm 1 steps 1–4): rewrites + negative responses.

For every forget instruction x_i ∈ D_f:

1. ``n_rewrites`` (the paper: 2) rewritten instructions x' ~ p_θ(· | prompt_rewrite(x_i)), with
   the Table 1 prompt, verbatim, ``{instruction}`` ← x_i;
2. for each rewritten instruction a negative response y' ~ p_θ(· | negative_prompt(x')), with the
   Table 2 prompt, verbatim, ``{instruction}`` ← x' (the response refuses, or says the content
   is not in the model's knowledge, or obscures the answer's main entities).

The pairs (x', y') form the restructured set D_fr used for SFT (Eq. 1). The paper writes the
instruction set as x_r = {x_1, x_2, x_i}: the two rewrites and, plausibly, the original
instruction x_i; ``include_original=True`` adds x_i with its own negative response (Table 2 prompt
filled with x_i). The generator defaults to the model being unlearned (p_θ). Generations are
parsed robustly (labels such as "Rewritten instruction:", numbering, quotes, chatter) and checked
by :mod:`obliviate.augment.quality` at the strictness ``filter`` names (:data:`FILTERS`; the paper
filters nothing); rejected ones are regenerated up to ``max_retries`` times with a new seed and a
temperature > 0, and counted (kept / regenerated / dropped with reasons), never kept silently. All generations of a phase go to the generator in one batched call; wrap the
generator in :class:`obliviate.generate.cache.CachedGenerator` (``cache_dir=``) and a rerun
resumes from disk.

``few_shot=N`` (off by default) puts N hand-written demonstrations before each Table 1 / Table 2
prompt, which stays verbatim at the end (:mod:`obliviate.augment.few_shot`): a documented deviation
for weak local generators, recorded in the stats and the report.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from ..config import OMIT_AT_DEFAULT, ConfigError, check_range
from ..data.records import DataError, QARecord
from ..generate.base import Generator
from . import few_shot as _fs
from . import quality

log = logging.getLogger(__name__)

REWRITE_PROMPT_FILE = "ulmr_prompt_rewrite.txt"
NEGATIVE_PROMPT_FILE = "ulmr_negative_prompt.txt"
PLACEHOLDER = "{instruction}"
#: quality-filter strictness: what makes a generation rejected (regenerated, then dropped)
FILTERS = {
    "none": "only empty outputs (nothing to train on); the paper filters nothing",
    "lenient": "structural degeneracy: empty, repetitive, an echo of the prompt or of the instruction, "
               "a duplicate rewrite",
    "strict": "lenient + content: a rewrite that is not a question/instruction (require_instruction) or gives "
              "the answer away, a negative response that still states the answer (answer_threshold) or names "
              "one of its key entities (check_entities)",
}


def load_prompt(filename: str) -> str:
    """Read a packaged prompt from ``obliviate/prompts`` exactly as stored."""
    try:
        return resources.files("obliviate").joinpath("prompts", filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt file obliviate/prompts/{filename} is missing") from None


def fill(template: str, instruction: str) -> str:
    """Replace the ``{instruction}`` placeholder (plain text replacement: braces in the text are safe)."""
    if PLACEHOLDER not in template:
        raise ValueError(f"prompt template has no {PLACEHOLDER} placeholder")
    return template.replace(PLACEHOLDER, instruction.strip())


def _prompt(kind: str, template: str, instruction: str, few_shot: int) -> str:
    """The verbatim prompt filled in (``few_shot == 0``), or preceded by ``few_shot`` demonstrations."""
    if not few_shot:
        return fill(template, instruction)
    return _fs.with_few_shot(kind, template, instruction, few_shot)


def rewrite_prompt(instruction: str, few_shot: int = 0) -> str:
    """ULMR Table 1 ``prompt_rewrite`` with ``{instruction}`` ← the forget instruction x_i
    (after ``few_shot`` demonstrations, :mod:`obliviate.augment.few_shot`; none by default)."""
    return _prompt("ulmr_rewrite", load_prompt(REWRITE_PROMPT_FILE), instruction, few_shot)


def negative_prompt(instruction: str, few_shot: int = 0) -> str:
    """ULMR Table 2 ``negative_prompt`` with ``{instruction}`` ← a rewritten instruction x'
    (after ``few_shot`` demonstrations; none by default)."""
    return _prompt("ulmr_negative", load_prompt(NEGATIVE_PROMPT_FILE), instruction, few_shot)


# ---------------------------------------------------------------------------------------------
# parsing the generator's output
# ---------------------------------------------------------------------------------------------
_QUOTES = "\"'“”‘’`«»"
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.)\]:]|[-*•]\s)\s*")
_REWRITE_LABEL = re.compile(
    r"""^\s*(?:[*_#>]+\s*)?
        (?:(?:sure|certainly|okay|ok|of\ course)[!,.]?\s*)?
        (?:(?:here\s+(?:is|are|'s)|below\s+is)\s+)?
        (?:(?:the|a|an|my|your|one)\s+)?
        (?:(?:possible|new|alternative|another|first|second|final)\s+)?
        (?:rewritten|revised|rewrite|rephrased|reworded|modified|paraphrased|updated|new)?\s*
        (?:version\s+of\s+the\s+)?
        (?:instruction|question|prompt|query|version|request|rewrite)s?
        (?:\s*\d+)?
        \s*(?:[*_]+\s*)?[:：\-–—]\s*(?:[*_]+\s*)?""",
    re.IGNORECASE | re.VERBOSE,
)
_NEGATIVE_LABEL = re.compile(
    r"^\s*(?:[*_#>]+\s*)?(?:(?:the|a|my)\s+)?(?:negative\s+)?(?:response|answer|reply|output)\s*(?:[*_]+\s*)?"
    r"[:：]\s*(?:[*_]+\s*)?", re.IGNORECASE)
_CHATTER_LINE = re.compile(
    r"^\s*(?:sure|certainly|okay|ok|of course|absolutely|here(?:'s| is| are)|below is|i (?:have|'ve) rewritten)"
    r"[^.?!]*[:.!]?\s*$", re.IGNORECASE)
_EXPLANATION = re.compile(r"^\s*(?:\(?note|explanation|this (?:rewrite|rewritten|revised|response|version)|"
                          r"in this (?:rewrite|revised)|the (?:rewritten|revised) instruction)\b", re.IGNORECASE)


def _strip_quotes(s: str) -> str:
    s = s.strip()
    for _ in range(3):
        if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
            s = s[1:-1].strip()
        else:
            break
    return s


def _strip_markdown(s: str) -> str:
    s = s.strip()
    m = re.fullmatch(r"(\*\*|__|\*|_)(.+?)\1", s)
    if m:
        s = m.group(2).strip()
    return s.replace("**", "").strip()


def parse_rewrite(text: str) -> str:
    """Extract the rewritten instruction from a generation.

    Drops chatter lines ("Sure! Here is the rewritten instruction:"), a leading label
    ("Rewritten instruction:", "Rewrite Instruction 1:", "Question:"), numbering or bullets,
    markdown emphasis and surrounding quotes; when the instruction is quoted and followed by an
    explanation on the same line, only the quoted part is kept. Returns the first non-empty
    candidate line ("" when there is none).
    """
    if not isinstance(text, str):
        return ""
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    for ln in lines:
        s = ln.strip()
        if not s or _EXPLANATION.match(s):
            continue
        if _CHATTER_LINE.match(s) and not s.rstrip().endswith("?"):
            continue
        s = _NUMBERING.sub("", s, count=1)
        s = _strip_markdown(s)
        for _ in range(2):
            s2 = _REWRITE_LABEL.sub("", s, count=1).strip()
            if s2 == s:
                break
            s = _strip_markdown(s2)
        if s and s[0] in _QUOTES:
            close = {"“": "”", "‘": "’", "«": "»"}.get(s[0], s[0])
            end = s.find(close, 1)
            if end > 1:
                s = s[1:end]
        s = _strip_quotes(s)
        if quality.words(s):
            return re.sub(r"\s+", " ", s).strip()
    return ""


def parse_negative(text: str) -> str:
    """Extract the negative response from a generation.

    Removes a leading label ("Answer:", "Response:", "Sure, here is a response: ..."), wrapping
    quotes and markdown, and trailing paragraphs that explain the response ("Note: ...",
    "This response ..."); whitespace is collapsed within paragraphs.
    """
    if not isinstance(text, str):
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    while lines and (not lines[0].strip() or (_CHATTER_LINE.match(lines[0]) and lines[0].rstrip().endswith(":"))):
        lines.pop(0)
    s = "\n".join(lines).strip()
    for _ in range(2):
        s = _NEGATIVE_LABEL.sub("", s, count=1).strip()
    paras = [p.strip() for p in re.split(r"\n\s*\n", s) if p.strip()]
    kept = []
    for p in paras:
        if kept and _EXPLANATION.match(p):
            break
        if not kept and _CHATTER_LINE.match(p):
            continue
        kept.append(re.sub(r"\s+", " ", _strip_markdown(p)))
    out = "\n\n".join(kept)
    return _strip_quotes(out)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class UlmrAugmentConfig:
    """Settings of :func:`augment_ulmr` (also the ``augment`` section of a ULMR run config).

    ``temperature`` samples the rewrites (two greedy rewrites of one prompt would be identical);
    ``negative_temperature`` decodes the negative responses (greedy by default); retries use
    ``max(retry_temperature, temperature)`` with a new seed. ``answer_threshold`` is the
    content-word ROUGE-L recall of the original answer above which a negative response "still
    states the answer"; ``check_entities`` also rejects one naming a key entity of the answer;
    ``require_instruction`` rejects a "rewrite" that is not a question or instruction. Those three
    content checks apply with ``filter="strict"`` only (see :data:`FILTERS`).

    ``filter`` defaults to ``"strict"``: with the small generators obliviate runs by default (the
    135M model being unlearned) many "rewrites" answer the question instead (TOFU forget01: 35 of 80)
    and some negatives restate the answer, and training on them teaches the answer again; with a
    strong generator, as in the paper, strict drops few pairs. ``"none"`` is the paper's setting (report both). ``include_original``
    adds the original instruction x_i (with a negative response of its own) to each source's rewrites.

    ``few_shot`` (default 0: the verbatim Tables 1 and 2) puts that many hand-written demonstrations
    before both prompts (:mod:`obliviate.augment.few_shot`; at most :func:`few_shot.available
    <obliviate.augment.few_shot.available>`), a deviation for weak generators; with ``filter``
    ``lenient`` or ``strict`` an output that copies a demonstration or names its invented person is
    rejected (``copy_of_demonstration``). Left out of the stage record while 0.
    """

    n_rewrites: int = 2
    max_retries: int = 3
    temperature: float = 0.7
    negative_temperature: float = 0.0
    retry_temperature: float = 0.8
    top_p: float = 0.95
    rewrite_max_new_tokens: int = 64
    max_new_tokens: int = 96
    seed: int = 0
    answer_threshold: float = 0.5
    rewrite_answer_threshold: float = 0.8
    check_entities: bool = True
    require_instruction: bool = True
    filter: str = "strict"
    include_original: bool = False
    limit: int | None = None
    few_shot: int = field(default=0, metadata={OMIT_AT_DEFAULT: True})

    def validate(self) -> None:
        """Range checks; raise :class:`ConfigError` naming the field."""
        if self.n_rewrites < 1:
            raise ConfigError(f"n_rewrites: must be >= 1, got {self.n_rewrites}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries: must be >= 0, got {self.max_retries}")
        for name in ("temperature", "negative_temperature"):
            check_range(name, getattr(self, name), 0, None)
        if self.retry_temperature <= 0:
            raise ConfigError(f"retry_temperature: must be > 0 (a retry must sample), got {self.retry_temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: {self.top_p} is outside (0, 1]")
        for name in ("rewrite_max_new_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        check_range("answer_threshold", self.answer_threshold, 0, 1)
        check_range("rewrite_answer_threshold", self.rewrite_answer_threshold, 0, 1)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be >= 1, got {self.limit}")
        if self.filter not in FILTERS:
            raise ConfigError(f"filter: {self.filter!r} is not one of {list(FILTERS)}")
        _fs.check_few_shot(self.few_shot, _fs.ULMR_KINDS, field="few_shot")


# ---------------------------------------------------------------------------------------------
# generation with checks and retries
# ---------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    source: int
    rewrite_index: int
    rewrite: str | None = None
    negative: str | None = None
    rewrite_attempts: int = 0
    negative_attempts: int = 0
    reason: str | None = None
    raw: list[str] = field(default_factory=list)
    original: bool = False


@dataclass
class _PhaseStats:
    requested: int = 0
    kept: int = 0
    regenerated: int = 0
    dropped: int = 0
    generations: int = 0
    calls: int = 0
    rejections: Counter = field(default_factory=Counter)
    drop_reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rejections"] = dict(self.rejections)
        d["drop_reasons"] = dict(self.drop_reasons)
        return d


def _run_phase(generator: Generator, slots: list[_Slot], *, prompt_of: Callable[[_Slot], str],
               parse: Callable[[str], str], check: Callable[[_Slot, str], str | None],
               accept: Callable[[_Slot, str], None], attempts_attr: str, temperature: float,
               retry_temperature: float, top_p: float, max_new_tokens: int, seed: int, max_retries: int,
               stats: _PhaseStats, bar, label: str) -> list[_Slot]:
    """Generate for every slot in batched rounds; reject degenerate outputs and retry them.

    Round 0 uses ``temperature`` and ``seed``; round r > 0 uses ``max(retry_temperature,
    temperature)`` and ``seed + 1000·r``, only for the slots still failing. Returns the kept slots.
    """
    pending = list(slots)
    stats.requested += len(slots)
    for rnd in range(max_retries + 1):
        if not pending:
            break
        temp = temperature if rnd == 0 else max(retry_temperature, temperature)
        bar.set_postfix_str(f"{label}: round {rnd}, {len(pending)} prompts")
        outs = generator.generate([prompt_of(s) for s in pending], max_new_tokens=max_new_tokens,
                                  temperature=temp, top_p=top_p if temp > 0 else 1.0, seed=seed + 1000 * rnd)
        stats.calls += 1
        stats.generations += len(pending)
        still = []
        for s, raw in zip(pending, outs):
            setattr(s, attempts_attr, getattr(s, attempts_attr) + 1)
            text = parse(raw)
            reason = check(s, text)
            if reason is None:
                accept(s, text)
                stats.kept += 1
                stats.regenerated += rnd > 0
                s.reason = None
            else:
                stats.rejections[reason] += 1
                s.reason = reason
                s.raw.append(raw)
                still.append(s)
        pending = still
        bar.update(1)
    for s in pending:
        stats.dropped += 1
        stats.drop_reasons[s.reason or "unknown"] += 1
    dropped = {id(s) for s in pending}
    return [s for s in slots if id(s) not in dropped]


def augment_ulmr(records: Sequence[QARecord], generator: Generator, *,
                 config: UlmrAugmentConfig | None = None, progress: bool = True,
                 **overrides: Any) -> tuple[list[dict], dict]:
    """Build ULMR's restructured forget set D_fr (§3.1): rewritten instructions + negative responses.

    ``records`` are the forget pairs (x_i, y_i); ``generator`` is p_θ (normally the model being
    unlearned; any :class:`Generator`, ideally a ``CachedGenerator`` so reruns resume). Settings
    come from ``config`` (:class:`UlmrAugmentConfig`) with keyword ``overrides`` of its fields
    (``n_rewrites=2``, ``max_retries=3``, ``temperature``, ``max_new_tokens``, ...).

    Returns ``(rows, stats)``: one row per kept (x', y') pair, ordered by source then rewrite,
    ``{"id", "subject", "original_question", "original_answer", "question" (x'), "answer" (y'),
    "rewrite_index", "attempts": {"rewrite", "negative"}}``; ``stats`` holds per-phase counts
    (requested, kept, regenerated, dropped, rejections and drop reasons by cause, generator calls)
    and the overall ``kept`` / ``regenerated`` / ``dropped``.
    """
    cfg = config or UlmrAugmentConfig()
    if overrides:
        unknown = set(overrides) - set(UlmrAugmentConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"augment_ulmr: unknown setting(s) {sorted(unknown)}; allowed: "
                              f"{sorted(UlmrAugmentConfig.__dataclass_fields__)}")
        cfg = UlmrAugmentConfig(**{**asdict(cfg), **overrides})
    cfg.validate()
    records = list(records)
    if cfg.limit is not None:
        records = records[: cfg.limit]
    if not records:
        raise DataError("no forget records to augment")
    for i, r in enumerate(records):
        if not isinstance(r, QARecord):
            raise DataError(f"record {i}: expected a QARecord, got {type(r).__name__}")
        if r.is_text:
            raise DataError(f"record {i} ({r.id or 'no id'}) is plain text (e.g. an RWKU passage): ULMR rewrites "
                            "instructions and needs question/answer pairs")
    rw_template, neg_template = load_prompt(REWRITE_PROMPT_FILE), load_prompt(NEGATIVE_PROMPT_FILE)

    slots = [_Slot(i, k) for i in range(len(records)) for k in range(cfg.n_rewrites)]
    kept_rewrites: dict[int, list[str]] = {}

    strict = cfg.filter == "strict"
    n_shot = cfg.few_shot

    def check_rewrite(s: _Slot, text: str) -> str | None:
        rec = records[s.source]
        if cfg.filter == "none":
            return None if quality.words(text) else "empty"
        if n_shot and _fs.borrowed(text, rec.question, "ulmr_rewrite", n_shot):
            return _fs.COPY_REASON
        if not strict:
            reason = quality.degenerate_reason(text, fill(rw_template, rec.question), instruction=rec.question,
                                               others=kept_rewrites.get(s.source, []))
            if reason is None and text.strip().lower().startswith(("please rewrite", "please generate")):
                reason = "copy_of_prompt"
            return reason
        reason = quality.degenerate_reason(
            text, fill(rw_template, rec.question), instruction=rec.question, others=kept_rewrites.get(s.source, []),
            answer=rec.answer, answer_threshold=cfg.rewrite_answer_threshold, check_entities=False)
        if reason is None and text.strip().lower().startswith(("please rewrite", "please generate")):
            reason = "copy_of_prompt"
        if reason is None and cfg.require_instruction and not quality.looks_like_instruction(text):
            reason = "not_instruction"
        return reason

    def accept_rewrite(s: _Slot, text: str) -> None:
        s.rewrite = text
        kept_rewrites.setdefault(s.source, []).append(text)

    def check_negative(s: _Slot, text: str) -> str | None:
        rec = records[s.source]
        if cfg.filter == "none":
            return None if quality.words(text) else "empty"
        if n_shot and _fs.borrowed(text, s.rewrite, "ulmr_negative", n_shot, outputs=False):
            return _fs.COPY_REASON  # a demonstration's generic refusal may be reused, not its person
        if not strict:
            reason = quality.degenerate_reason(text, fill(neg_template, s.rewrite or ""), instruction=s.rewrite)
            if reason is None and text.strip().lower().startswith(("please generate", "please rewrite")):
                reason = "copy_of_prompt"
            return reason
        reason = quality.degenerate_reason(
            text, fill(neg_template, s.rewrite or ""), instruction=s.rewrite, answer=rec.answer,
            context=[rec.question], answer_threshold=cfg.answer_threshold, check_entities=cfg.check_entities)
        if reason is None and text.strip().lower().startswith(("please generate", "please rewrite")):
            reason = "copy_of_prompt"
        return reason

    def accept_negative(s: _Slot, text: str) -> None:
        s.negative = text

    rw_stats, neg_stats = _PhaseStats(), _PhaseStats()
    bar = tqdm(total=None, desc="ulmr augment", unit="round", disable=not progress)
    try:
        kept = _run_phase(generator, slots,
                          prompt_of=lambda s: _prompt("ulmr_rewrite", rw_template, records[s.source].question, n_shot),
                          parse=parse_rewrite, check=check_rewrite, accept=accept_rewrite,
                          attempts_attr="rewrite_attempts", temperature=cfg.temperature,
                          retry_temperature=cfg.retry_temperature, top_p=cfg.top_p,
                          max_new_tokens=cfg.rewrite_max_new_tokens, seed=cfg.seed, max_retries=cfg.max_retries,
                          stats=rw_stats, bar=bar, label="rewrites")
        if cfg.include_original:  # x_i itself joins x_r; it gets a negative response like the rewrites
            originals = [_Slot(i, cfg.n_rewrites, rewrite=records[i].question, original=True)
                         for i in range(len(records))]
            slots = slots + originals
            kept = sorted(kept + originals, key=lambda s: (s.source, s.rewrite_index))
        kept = _run_phase(generator, kept, prompt_of=lambda s: _prompt("ulmr_negative", neg_template, s.rewrite or "",
                                                                    n_shot),
                          parse=parse_negative, check=check_negative, accept=accept_negative,
                          attempts_attr="negative_attempts", temperature=cfg.negative_temperature,
                          retry_temperature=cfg.retry_temperature, top_p=cfg.top_p,
                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 7, max_retries=cfg.max_retries,
                          stats=neg_stats, bar=bar, label="negatives")
    finally:
        bar.close()

    rows = []
    for s in kept:
        rec = records[s.source]
        rid = rec.id if rec.id is not None else str(s.source)
        rows.append({"id": f"{rid}-orig" if s.original else f"{rid}-r{s.rewrite_index}", "source_id": rid,
                     "subject": rec.subject, "original_question": rec.question, "original_answer": rec.answer,
                     "question": s.rewrite, "answer": s.negative,
                     "rewrite_index": None if s.original else s.rewrite_index,
                     "kind": "original" if s.original else "rewrite",
                     "attempts": {"rewrite": s.rewrite_attempts, "negative": s.negative_attempts}})
    dropped_rows = [{"source_id": records[s.source].id if records[s.source].id is not None else str(s.source),
                     "rewrite_index": None if s.original else s.rewrite_index, "stage": "rewrite" if s.rewrite is None else "negative",
                     "reason": s.reason, "rewrite": s.rewrite, "last_output": s.raw[-1] if s.raw else None}
                    for s in slots if s.reason is not None]
    regenerated = sum(1 for s in kept if s.rewrite_attempts > 1 or s.negative_attempts > 1)
    stats: dict[str, Any] = {
        "sources": len(records),
        "requested": len(slots),
        "kept": len(rows),
        "regenerated": regenerated,
        "dropped": len(slots) - len(rows),
        "dropped_reasons": dict(Counter(f"{d['stage']}:{d['reason']}" for d in dropped_rows)),
        "rewrites": rw_stats.as_dict(),
        "negatives": neg_stats.as_dict(),
        "dropped_examples": dropped_rows[:20],
        "filter": cfg.filter,
        "filter_rejects": FILTERS[cfg.filter],
        "include_original": cfg.include_original,
        "originals": sum(1 for r in rows if r["kind"] == "original"),
        "config": asdict(cfg),
        "generator": {"backend": getattr(generator, "name", "?"), "model": getattr(generator, "model_id", "?")},
    }
    if n_shot:  # the prompts were not the papers' verbatim ones: say so, with the demonstrations used
        stats["prompts"] = _fs.provenance(n_shot, _fs.ULMR_KINDS)
    if hasattr(generator, "stats") and callable(generator.stats):
        stats["cache"] = generator.stats()
    covered = {s.source for s in kept}
    stats["sources_without_rows"] = len(records) - len(covered)
    if stats["dropped"]:
        log.warning("ULMR augment: dropped %d of %d pairs (%s)", stats["dropped"], len(slots),
                    stats["dropped_reasons"])
    return rows, stats


def rows_to_records(rows: Sequence[dict]) -> list[QARecord]:
    """Augmented rows → :class:`QARecord` (question = x', answer = y') for the trainer's forget stream."""
    out = []
    for i, r in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"augmented row {i}: missing or empty {key!r}", field=key)
        meta = {k: r[k] for k in ("original_question", "original_answer", "rewrite_index", "source_id", "kind")
                if k in r}
        out.append(QARecord(question=r["question"], answer=r["answer"], subject=r.get("subject"),
                            id=None if r.get("id") is None else str(r["id"]), meta=meta))
    return out


def render_report(rows: Sequence[dict], stats: dict, *, title: str = "ULMR augmentation", examples: int = 5) -> str:
    """A Markdown report: counts kept / regenerated / dropped (with reasons) and example pairs."""
    rw, ng = stats["rewrites"], stats["negatives"]
    lines = [f"# {title}", "",
             f"Generator: `{stats['generator']['backend']}` / `{stats['generator']['model']}`  ",
             f"Sources: {stats['sources']} forget pairs × {stats['config']['n_rewrites']} rewrites"
             + (" + the original instruction" if stats.get("include_original") else "")
             + f" = {stats['requested']} requested  ",
             f"Quality filter: `{stats.get('filter', 'strict')}` (rejects "
             f"{FILTERS.get(stats.get('filter', 'strict'), '?')})", "",
             *([f"Prompts: Tables 1 and 2 verbatim, each preceded by {stats['prompts']['few_shot']} few-shot "
                f"demonstration(s) from `{stats['prompts']['file']}` (sha256 {stats['prompts']['sha256'][:12]}): "
                "a deviation from the paper's bare prompts", ""] if stats.get("prompts") else []),
             "| | requested | kept | regenerated | dropped | generator calls |",
             "| --- | ---: | ---: | ---: | ---: | ---: |",
             f"| rewrites (Table 1) | {rw['requested']} | {rw['kept']} | {rw['regenerated']} | {rw['dropped']} | "
             f"{rw['calls']} |",
             f"| negative responses (Table 2) | {ng['requested']} | {ng['kept']} | {ng['regenerated']} | "
             f"{ng['dropped']} | {ng['calls']} |",
             f"| **pairs in D_fr** | {stats['requested']} | **{stats['kept']}** | {stats['regenerated']} | "
             f"{stats['dropped']} | |", ""]
    rej = Counter(rw["rejections"]) + Counter({f"negative:{k}": v for k, v in ng["rejections"].items()})
    if rej:
        lines += ["Rejected generations (each was regenerated or, after the last retry, dropped):", ""]
        lines += [f"- `{k}`: {v}" for k, v in sorted(rej.items(), key=lambda kv: -kv[1])]
        lines.append("")
    if stats["dropped_reasons"]:
        lines += ["Dropped pairs by stage and reason:", ""]
        lines += [f"- `{k}`: {v}" for k, v in sorted(stats["dropped_reasons"].items())]
        lines.append("")
    if "cache" in stats:
        c = stats["cache"]
        lines += [f"Generation cache: {c.get('hits', 0)} hits, {c.get('misses', 0)} new generations "
                  f"(`{c.get('path', '')}`)", ""]
    if rows:
        lines += ["## Examples", ""]
        for r in list(rows)[:examples]:
            lines += [f"- **original**: {r['original_question']}", f"  - *answer*: {r['original_answer']}",
                      (f"  - **original instruction**: {r['question']}" if r.get("kind") == "original"
                       else f"  - **rewrite {r['rewrite_index']}**: {r['question']}"),
                      f"  - **negative response**: {r['answer']}"]
        lines.append("")
    for d in stats.get("dropped_examples", [])[:3]:
        lines += [f"- dropped ({d['stage']}, `{d['reason']}`): last output {str(d['last_output'])[:200]!r}"]
    return "\n".join(lines).rstrip() + "\n"
