"""The QA record every stage of obliviate passes around."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file, the line (or row) and the field."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ""
        if source:
            where = f"{source}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field:
            message = f"field {field!r}: {message}"
        super().__init__(where + message)
        self.source, self.line, self.field = source, line, field


@dataclass
class QARecord:
    """One question / answer pair.

    ``paraphrased_answer`` and ``perturbed_answers`` feed TOFU's truth ratio; ``subject`` names
    the entity the pair is about (a TOFU author, an RWKU target); ``meta`` keeps any other
    fields of the source row unchanged.
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] = field(default_factory=list)
    subject: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the JSONL form obliviate writes)."""
        return asdict(self)

    @property
    def is_text(self) -> bool:
        """True for a plain-text record (:func:`text_record`): no prompt, the loss on every token of ``answer``."""
        return is_text_record(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, source: str | None = None, line: int | None = None,
                  question_key: str = "question", answer_key: str = "answer") -> "QARecord":
        """Build a record from a row, accepting TOFU's field names; raise :class:`DataError` on bad rows.

        A row marked ``meta.format == "text"`` (what :func:`text_record` writes), or a row holding
        only a ``text`` string and neither ``question_key`` nor ``answer_key`` (RWKU's
        ``passage.json`` rows, a plain corpus), becomes a plain-text record (:func:`text_record`).
        """
        if not isinstance(row, dict):
            raise DataError(f"expected an object, got {type(row).__name__}", source=source, line=line)
        meta_in = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        if meta_in.get("format") == TEXT_FORMAT or (
                "text" in row and question_key not in row and answer_key not in row):
            key = answer_key if meta_in.get("format") == TEXT_FORMAT and answer_key in row else "text"
            text = row.get(key)
            if not isinstance(text, str):
                raise DataError("missing" if text is None else f"expected a string, got {type(text).__name__}",
                                source=source, line=line, field=key)
            if not text.strip():
                raise DataError("empty", source=source, line=line, field=key)
            own = {key, question_key, answer_key, "subject", "id", "meta", "format", "paraphrased_answer",
                   "perturbed_answer", "perturbed_answers"}
            extra = {k: v for k, v in row.items() if k not in own and not (k in ("paraphrased_answer",) or v is None)}
            rid = row.get("id")
            return text_record(text, subject=row.get("subject"), id=None if rid is None else str(rid),
                               meta={**meta_in, **extra})
        for key in (question_key, answer_key):
            if key not in row:
                raise DataError("missing", source=source, line=line, field=key)
            if not isinstance(row[key], str):
                raise DataError(f"expected a string, got {type(row[key]).__name__}", source=source,
                                line=line, field=key)
            if not row[key].strip():
                raise DataError("empty", source=source, line=line, field=key)
        perturbed = row.get("perturbed_answers", row.get("perturbed_answer", [])) or []
        if isinstance(perturbed, str):
            perturbed = [perturbed]
        if not isinstance(perturbed, list) or not all(isinstance(p, str) for p in perturbed):
            raise DataError("expected a list of strings", source=source, line=line, field="perturbed_answer")
        para = row.get("paraphrased_answer")
        if para is not None and not isinstance(para, str):
            raise DataError("expected a string", source=source, line=line, field="paraphrased_answer")
        known = {question_key, answer_key, "paraphrased_answer", "perturbed_answer", "perturbed_answers",
                 "subject", "id", "meta"}
        meta = dict(row.get("meta") or {})
        meta.update({k: v for k, v in row.items() if k not in known})
        rid = row.get("id")
        return cls(
            question=row[question_key],
            answer=row[answer_key],
            paraphrased_answer=para,
            perturbed_answers=list(perturbed),
            subject=row.get("subject"),
            id=None if rid is None else str(rid),
            meta=meta,
        )


#: ``meta["format"]`` of a plain-text record
TEXT_FORMAT = "text"


def text_record(text: str, *, subject: str | None = None, id: str | None = None,
                meta: dict[str, Any] | None = None) -> QARecord:
    """A plain-text training record (a forget-corpus passage such as RWKU's ``passage``).

    Stored as a :class:`QARecord` with ``question = ""``, ``answer = text`` and
    ``meta["format"] = "text"``, so it travels through readers, writers and the trainer's streams
    like any record; :func:`obliviate.data.formatting.encode_record` encodes it without a chat
    template, with the loss on every token (the language-modelling NLL −Σ_t log p(w_t | w_<t) that
    RWKU's GA / NPO code uses on its forget corpus).
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError("a text record needs a non-empty string", field="text")
    return QARecord(question="", answer=text, subject=subject, id=id, meta={**(meta or {}), "format": TEXT_FORMAT})


def is_text_record(record: Any) -> bool:
    """True when ``record`` is a plain-text record (``meta["format"] == "text"``, see :func:`text_record`)."""
    meta = getattr(record, "meta", None)
    return isinstance(meta, dict) and meta.get("format") == TEXT_FORMAT
