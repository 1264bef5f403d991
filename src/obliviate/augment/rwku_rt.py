"""RWKU's rejection-tuning (RT) data: questions generated about the target, each given a refusal.

RWKU (Jin et al., 2024, ``generation/question_generation.py``) builds its RT training set
without touching its evaluation probes: for each target the model is asked, 300 times with
sampling, for a question about the target given the target's one-line description, and every
question is paired with an "I don't know"-style answer, the i-th question with refusal
``i mod len(refusals)``. RT is then supervised fine-tuning on these pairs: the ``rt`` preset
(NLL on the forget stream, RWKU's ``run_rt.sh`` hyperparameters).

Here the questions come from any :class:`~obliviate.generate.base.Generator` (by default the
model being unlearned, as in RWKU). The prompt is RWKU's (``prompts/rwku_rt_question.txt``,
``{intro}`` ← the target's description, ``{target}`` ← its name). RWKU continues the assistant
turn from a "Question:" prefix and keeps the first line; obliviate's generator interface sends
whole chat turns, so the reply is parsed instead (labels such as "Question:", numbering and
quotes removed, first line kept, :func:`obliviate.augment.ulmr.parse_rewrite`). Empty replies
are regenerated (new seed) up to ``max_retries`` rounds; duplicates are kept unless ``dedup``
(RWKU keeps them). The refusals default to TOFU's ten "I don't know" answers
(:data:`obliviate.methods.IDK_RESPONSES`); RWKU cycles through 99 such lines, of which these
are the first ten — pass your own list (``refusals``) to use more.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..config import ConfigError, check_range
from ..data.records import DataError, QARecord
from ..generate.base import Generator
from .ulmr import load_prompt, parse_rewrite

log = logging.getLogger(__name__)

QUESTION_PROMPT_FILE = "rwku_rt_question.txt"


def target_description(intro: str, target: str) -> str:
    """The target's description as RWKU's question prompt uses it: RWKU's ``intro`` request
    ("Please forget Stephen King. Stephen King is ...") without its leading "Please forget <target>."."""
    text = (intro or "").strip()
    m = re.match(r"^\s*please\s+forget\s+" + re.escape(target.strip()) + r"\s*[.!]\s*", text, re.IGNORECASE)
    return text[m.end():].strip() if m else text


def question_prompt(target: str, intro: str) -> str:
    """RWKU's question-generation prompt with ``{intro}`` ← the target's description, ``{target}`` ← its name."""
    template = load_prompt(QUESTION_PROMPT_FILE)
    return template.replace("{intro}", target_description(intro, target)).replace("{target}", target.strip())


@dataclass
class RejectionTuningConfig:
    """Settings of :func:`generate_rt_questions`.

    ``n_questions`` per target (RWKU: 300); sampling at ``temperature`` / ``top_p`` (RWKU samples
    with the generator's own defaults, 0.6 / 0.9 for Llama-3-Instruct); ``max_new_tokens`` per
    question (RWKU: 50); ``max_retries`` rounds regenerate empty (or, with ``dedup``, repeated)
    questions with a new seed.
    """

    n_questions: int = 300
    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 50
    max_retries: int = 3
    dedup: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Range checks; raise :class:`ConfigError` naming the field."""
        if self.n_questions < 1:
            raise ConfigError(f"n_questions: must be >= 1, got {self.n_questions}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature: must be > 0 (the questions are sampled), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: {self.top_p} is outside (0, 1]")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        check_range("max_retries", self.max_retries, 0, None)


def generate_rt_questions(target: str, intro: str, generator: Generator, *,
                          config: RejectionTuningConfig | None = None,
                          refusals: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Build RWKU's RT set for one target: generated questions x_i paired with refusals y_i.

    ``intro`` is the target's RWKU ``intro`` (or any short description). Returns ``(rows,
    stats)``: rows ``{"id", "subject", "question", "answer", "intro"}`` in generation order, the
    i-th answer being ``refusals[i mod len(refusals)]``; ``stats`` counts requested / kept /
    regenerated / dropped questions, rejections by reason (``empty``, ``duplicate``), generator
    calls and the settings.
    """
    from ..methods import IDK_RESPONSES

    cfg = config or RejectionTuningConfig()
    cfg.validate()
    if not isinstance(target, str) or not target.strip():
        raise DataError(f"RT: target must be a non-empty name, got {target!r}")
    refusals = list(refusals) if refusals is not None else list(IDK_RESPONSES)
    if not refusals or not all(isinstance(r, str) and r.strip() for r in refusals):
        raise DataError("RT: refusals must be a non-empty list of non-empty strings")
    prompt = question_prompt(target, intro)
    slots: list[str | None] = [None] * cfg.n_questions
    pending = list(range(cfg.n_questions))
    seen: set[str] = set()
    rejections: Counter = Counter()
    calls = regenerated = 0
    for rnd in range(cfg.max_retries + 1):
        if not pending:
            break
        outs = generator.generate([prompt] * len(pending), max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + 1000 * rnd)
        calls += 1
        still = []
        for i, raw in zip(pending, outs):
            q = parse_rewrite(raw)
            key = " ".join(q.lower().split())
            if not q:
                rejections["empty"] += 1
                still.append(i)
            elif cfg.dedup and key in seen:
                rejections["duplicate"] += 1
                still.append(i)
            else:
                seen.add(key)
                slots[i] = q
                regenerated += rnd > 0
        pending = still
    rows = []
    tid = target.strip().replace(" ", "_")
    for i, q in enumerate(slots):
        if q is None:
            continue
        rows.append({"id": f"rwku_rt/{tid}/{i}", "subject": target.strip(), "question": q,
                     "answer": refusals[len(rows) % len(refusals)], "intro": target_description(intro, target)})
    stats: dict[str, Any] = {
        "target": target.strip(), "requested": cfg.n_questions, "kept": len(rows), "regenerated": regenerated,
        "dropped": cfg.n_questions - len(rows), "rejections": dict(rejections), "calls": calls,
        "distinct_questions": len({" ".join(r["question"].lower().split()) for r in rows}),
        "refusals": len(refusals), "prompt": prompt, "config": asdict(cfg),
        "generator": {"backend": getattr(generator, "name", "?"), "model": getattr(generator, "model_id", "?")},
    }
    if stats["dropped"]:
        log.warning("RWKU RT: %d of %d questions for %s stayed degenerate and were dropped (%s)", stats["dropped"],
                    cfg.n_questions, target, dict(rejections))
    return rows, stats


def read_refusals(path: str) -> list[str]:
    """The refusal answers of a text file, one per non-empty line (stripped), in file order.

    Raises :class:`DataError` naming the file when it cannot be read or has no non-empty line.
    """
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"--refusals: cannot read ({e})", source=path) from None
    refusals = [ln.strip() for ln in lines if ln.strip()]
    if not refusals:
        raise DataError("--refusals: no non-empty line", source=path)
    return refusals


def load_target_intros(targets: Sequence[str], source) -> dict[str, str]:
    """``{subject: intro}`` for each RWKU target (a name or folder name), read from ``source``.

    The subject is RWKU's own name of the target (the intro's ``subject``, else the name given).
    Every target is checked before the result is returned: an unknown target raises the loader's
    :class:`DataError` (listing the known ones), one without an intro ``DataError("... no intro")``.
    """
    from ..data.rwku import TextItem, load_rwku

    intros = {}
    for t in targets:
        items = [i for i in load_rwku(t, "intro", source) if isinstance(i, TextItem)]
        if not items:
            raise DataError(f"RWKU target {t!r}: no intro")
        intros[items[0].subject or t] = items[0].text
    return intros


def rt_rows_to_records(rows: Sequence[dict]) -> list[QARecord]:
    """RT rows → :class:`QARecord` (question = generated question, answer = refusal) for the forget stream."""
    out = []
    for i, r in enumerate(rows):
        for key in ("question", "answer"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"RT row {i}: missing or empty {key!r}", field=key)
        out.append(QARecord(question=r["question"], answer=r["answer"], subject=r.get("subject"),
                            id=None if r.get("id") is None else str(r["id"]), meta={"source": "rwku_rt"}))
    return out
