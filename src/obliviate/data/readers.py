"""Read QA records and prompt lists from JSON, JSON Lines, CSV/TSV or Hugging Face datasets.

Every reader validates its whole input before returning, and every problem is a
:class:`~obliviate.data.records.DataError` that names the file, the line (or the row of a
dataset) and the field. The same row table (:class:`RowTable`) is produced for a local file and
for a hub dataset, so benchmark loaders convert rows to records with one code path whatever the
source.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import atomic_write_jsonl
from .records import DataError, QARecord

JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
TEXT_SUFFIXES = (".txt",)
RECORD_SUFFIXES = JSON_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES
PROMPT_FIELDS = ("question", "instruction", "prompt")

_WS = re.compile(r"[ \t\n\r]*")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass
class RowTable:
    """Rows read from one source, with where each row came from (for error messages).

    ``origin`` is the file path or a label of the dataset; ``lines`` holds the 1-based line
    on which each row starts when the rows come from a text file, else ``None`` (rows are then
    named by their 0-based index).
    """

    origin: str
    rows: list[Any]
    lines: list[int] | None = None

    def where(self, i: int) -> tuple[str, int | None]:
        """Return ``(source, line)`` naming row ``i`` for a :class:`DataError`."""
        if self.lines is not None:
            return self.origin, self.lines[i]
        return f"{self.origin} row {i}", None

    def __len__(self) -> int:
        return len(self.rows)


# ----------------------------------------------------------------------------- JSON parsing
def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def _scan_array(text: str, i: int, dec: json.JSONDecoder) -> tuple[list[Any], list[int], int]:
    """Parse the JSON array starting at ``text[i] == '['``; return values, start offsets, end."""
    rows, starts = [], []
    i = _skip(text, i + 1)
    if text[i:i + 1] == "]":
        return rows, starts, i + 1
    while True:
        starts.append(i)
        obj, i = dec.raw_decode(text, i)
        rows.append(obj)
        i = _skip(text, i)
        c = text[i:i + 1]
        if c == ",":
            i = _skip(text, i + 1)
        elif c == "]":
            return rows, starts, i + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter or ']'", text, i)


def _line_numbers(text: str, offsets: Sequence[int]) -> list[int]:
    lines, line, prev = [], 1, 0
    for off in offsets:
        line += text.count("\n", prev, off)
        prev = off
        lines.append(line)
    return lines


def _parse_json_document(text: str, origin: str) -> RowTable:
    """A JSON list of rows, or an object whose ``data`` key holds that list; rows keep their lines."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", source=origin, line=e.lineno) from None
    dec = json.JSONDecoder()
    i = _skip(text, 0)
    if isinstance(doc, list):
        rows, starts, _ = _scan_array(text, i, dec)
        return RowTable(origin, rows, _line_numbers(text, starts))
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        # Walk the top-level object to find where each element of "data" starts.
        i = _skip(text, i + 1)
        while True:
            key, i = dec.raw_decode(text, i)
            i = _skip(text, i)
            i = _skip(text, i + 1)  # the ':'
            if key == "data" and text[i:i + 1] == "[":
                rows, starts, i = _scan_array(text, i, dec)
                found = (rows, starts)
            else:
                _, i = dec.raw_decode(text, i)
            i = _skip(text, i)
            if text[i:i + 1] == ",":
                i = _skip(text, i + 1)
                continue
            break
        rows, starts = found  # the last "data" key wins, as in json.loads
        return RowTable(origin, rows, _line_numbers(text, starts))
    if isinstance(doc, dict):
        raise DataError("expected a JSON list of records or an object with a \"data\" list, got an object "
                        f"with keys {sorted(doc)[:10]}", source=origin, line=1)
    raise DataError(f"expected a JSON list of records, got {type(doc).__name__}", source=origin, line=1)


def _parse_jsonl(text: str, origin: str) -> RowTable:
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", source=origin, line=n) from None
        lines.append(n)
    return RowTable(origin, rows, lines)


def _csv_value(key: str, value: Any) -> Any:
    """CSV cells are text: JSON-decode list/dict columns (perturbed answers, meta); '' is absent."""
    if isinstance(value, str) and key in ("perturbed_answer", "perturbed_answers", "meta"):
        v = value.strip()
        if v[:1] in "[{" and v:
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                return value
    return value


def _parse_csv(text: str, origin: str, delimiter: str) -> RowTable:
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError("no header row", source=origin, line=1)
    rows, lines = [], []
    optional = {"paraphrased_answer", "perturbed_answer", "perturbed_answers", "subject", "id", "meta"}
    try:
        for row in reader:
            if None in row:
                raise DataError(f"{len(reader.fieldnames) + len(row[None])} cells for "
                                f"{len(reader.fieldnames)} columns", source=origin, line=reader.line_num)
            clean = {}
            for k, v in row.items():
                if v is None:  # a short row: the cell is missing
                    continue
                if k in optional and v == "":
                    continue
                clean[k] = _csv_value(k, v)
            rows.append(clean)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", source=origin, line=reader.line_num) from None
    return RowTable(origin, rows, lines)


# ----------------------------------------------------------------------------- sources
def _datasets_module():
    """``datasets`` if it is already imported (so checking a type never imports it)."""
    return sys.modules.get("datasets")


def _is_hf_dataset(obj: Any) -> bool:
    ds = _datasets_module()
    return ds is not None and isinstance(obj, (ds.Dataset, ds.DatasetDict))


def _is_saved_dataset_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json",
                                                                "dataset_dict.json"))


def _dataset_rows(ds: Any, origin: str, split: str | None) -> RowTable:
    """Rows of a ``datasets.Dataset``, or of one split of a ``DatasetDict``."""
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) != 1:
                raise DataError(f"this DatasetDict has splits {names}; pass split= to choose one", source=origin)
            split = names[0]
        if split not in ds:
            raise DataError(f"no split {split!r}; available: {names}", source=origin)
        ds, origin = ds[split], f"{origin}[{split}]"
    elif split is not None and getattr(ds, "split", None) is not None and str(ds.split) != split:
        raise DataError(f"split {split!r} requested but this Dataset is split {str(ds.split)!r}", source=origin)
    if len(ds) == 0:
        raise DataError("no records (the dataset is empty)", source=origin)
    return RowTable(origin, ds.to_list(), None)


def read_rows(source: Any, *, split: str | None = None, suffixes: Sequence[str] = RECORD_SUFFIXES,
              origin: str | None = None) -> RowTable:
    """Read the raw rows of ``source`` into a :class:`RowTable`, validating the container format.

    ``source`` is a path to a ``.json`` file (a list of objects, or ``{"data": [...]}``), a
    ``.jsonl``/``.ndjson`` file (one object per line, blank lines skipped), a ``.csv``/``.tsv``
    file with a header row, a folder written by ``datasets``' ``save_to_disk``, an in-memory
    ``datasets.Dataset`` / ``DatasetDict`` (``split`` picks a split of a dict), or a list of
    dicts. Rows are not checked for fields here (see :func:`records_from_rows`). Raises
    :class:`DataError` for a missing or empty file, malformed JSON/CSV (with its line), an
    unsupported extension, or a source with no rows.
    """
    if _is_hf_dataset(source):
        return _dataset_rows(source, origin or f"<{type(source).__name__}>", split)
    if isinstance(source, list):
        if not source:
            raise DataError("no records (empty list)", source=origin or "<list>")
        return RowTable(origin or "<list>", list(source), None)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"cannot read records from a {type(source).__name__}; pass a file path, a folder saved "
                        "with save_to_disk, a datasets.Dataset/DatasetDict or a list of dicts")
    path = Path(source).expanduser()
    label = origin or str(source)
    if not path.exists():
        raise DataError("file not found", source=label)
    if path.is_dir():
        if not _is_saved_dataset_dir(path):
            raise DataError("this folder is not a dataset saved with datasets' save_to_disk (no "
                            "dataset_info.json / state.json / dataset_dict.json); pass a file instead", source=label)
        import datasets

        return _dataset_rows(datasets.load_from_disk(str(path)), label, split)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise DataError(f"unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(suffixes)} "
                        "or a folder saved with save_to_disk", source=label)
    if split is not None:
        raise DataError(f"split={split!r} only applies to a datasets DatasetDict, not to a {suffix} file",
                        source=label)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", source=label) from None
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise DataError("empty file", source=label)
    if suffix in JSON_SUFFIXES:
        table = _parse_json_document(text, label)
    elif suffix in JSONL_SUFFIXES:
        table = _parse_jsonl(text, label)
    elif suffix in CSV_SUFFIXES:
        table = _parse_csv(text, label, "\t" if suffix == ".tsv" else ",")
    else:  # .txt
        lines = [(n, ln.rstrip("\r")) for n, ln in enumerate(text.split("\n"), 1) if ln.strip()]
        table = RowTable(label, [ln for _, ln in lines], [n for n, _ in lines])
    if not table.rows:
        raise DataError("no records", source=label)
    return table


def records_from_rows(table: RowTable, *, question_key: str = "question", answer_key: str = "answer",
                      subject: str | None = None) -> list[QARecord]:
    """Convert every row of ``table`` to a :class:`QARecord` (see ``QARecord.from_dict``).

    Fields other than the record's own go to ``meta`` unchanged. ``subject`` fills rows that
    carry none. The first bad row raises :class:`DataError` naming its file, line and field.
    """
    out = []
    for i, row in enumerate(table.rows):
        src, line = table.where(i)
        rec = QARecord.from_dict(row, source=src, line=line, question_key=question_key, answer_key=answer_key)
        if rec.subject is None and subject is not None:
            rec.subject = subject
        out.append(rec)
    return out


def read_records(source: Any, *, question_key: str = "question", answer_key: str = "answer",
                 split: str | None = None) -> list[QARecord]:
    """Read and validate QA records from a file, a saved dataset folder or a ``datasets`` object.

    Accepted sources are those of :func:`read_rows`. Each row must hold a non-empty string under
    ``question_key`` and ``answer_key``; optional ``paraphrased_answer``, ``perturbed_answer``
    (or ``perturbed_answers``, a list of strings), ``subject``, ``id`` and ``meta`` are kept,
    any other field goes to ``meta``. Raises :class:`DataError` (file, line, field) on the
    first problem, before anything else is done with the data.
    """
    table = read_rows(source, split=split)
    records = records_from_rows(table, question_key=question_key, answer_key=answer_key)
    warn_duplicate_ids(records, table.origin)
    return records


def warn_duplicate_ids(records: Sequence[QARecord], origin: str) -> list[str]:
    """Log a warning naming the ids that occur more than once in ``records`` (read from ``origin``); return them.

    Duplicate ids make per-sample results (caches, pairings, sample tables) ambiguous; the records
    are kept as they are.
    """
    import logging
    from collections import Counter

    counts = Counter(r.id for r in records if r.id is not None)
    dup = [i for i, n in counts.items() if n > 1]
    if dup:
        shown = ", ".join(f"{i!r} ×{counts[i]}" for i in dup[:5]) + (", ..." if len(dup) > 5 else "")
        logging.getLogger(__name__).warning("%s: %d id(s) occur more than once (%s); give each record its own id",
                                            origin, len(dup), shown)
    return dup


def write_records(path: str | os.PathLike, records: Iterable[QARecord | dict]) -> Path:
    """Write records as JSON Lines atomically (``QARecord.to_dict`` form; re-readable by :func:`read_records`)."""
    rows = [r.to_dict() if isinstance(r, QARecord) else dict(r) for r in records]
    return atomic_write_jsonl(path, rows)


def read_prompts(source: Any, *, field: str | None = None, split: str | None = None) -> list[str]:
    """Read a plain list of instructions (prompts), e.g. a general-instruction set like SNAP's TA set.

    A ``.txt`` file gives one prompt per non-blank line. JSON / JSONL / CSV files, saved
    datasets and ``datasets`` objects give one prompt per row: a row that is a string is the
    prompt; an object row uses ``field`` when given, else the first of ``question``,
    ``instruction``, ``prompt`` that it holds. Raises :class:`DataError` (file, line, field) on
    a row without a non-empty string prompt, and on an empty source.
    """
    table = read_rows(source, split=split, suffixes=RECORD_SUFFIXES + TEXT_SUFFIXES)
    keys = (field,) if field else PROMPT_FIELDS
    out = []
    for i, row in enumerate(table.rows):
        src, line = table.where(i)
        if isinstance(row, str):
            value, key = row, None
        elif isinstance(row, dict):
            key = next((k for k in keys if k in row), None)
            if key is None:
                raise DataError(f"no prompt field; expected one of {list(keys)}", source=src, line=line)
            value = row[key]
        else:
            raise DataError(f"expected a string or an object, got {type(row).__name__}", source=src, line=line)
        if not isinstance(value, str):
            raise DataError(f"expected a string, got {type(value).__name__}", source=src, line=line, field=key)
        if not value.strip():
            raise DataError("empty", source=src, line=line, field=key)
        out.append(value)
    return out


# ----------------------------------------------------------------------------- hub / local resolution
def is_local_source(source: str | os.PathLike) -> bool:
    """True when ``source`` names an existing local path; False for a hub dataset id.

    A string that looks like a path (absolute, ``./``, ``../``, ``~``) but does not exist raises
    :class:`DataError`, so a typo in a folder name is not sent to the hub.
    """
    if isinstance(source, os.PathLike):
        s = os.fspath(source)
        if not Path(s).expanduser().exists():
            raise DataError("folder not found", source=s)
        return True
    s = str(source)
    if Path(s).expanduser().exists():
        return True
    if s.startswith(("/", "./", "../", "~", ".\\", "..\\")) or not _HUB_ID.match(s):
        raise DataError("folder not found (and not a Hugging Face hub dataset id like 'owner/name')", source=s)
    return False


def load_hub_rows(name: str, config: str | None, split: str, *, what: str, local_hint: str) -> RowTable:
    """Load ``datasets.load_dataset(name, config, split=split)`` from the hub into a :class:`RowTable`.

    Any failure (no network, offline mode, unknown dataset or config) becomes a
    :class:`DataError` naming the dataset and config and suggesting a local folder instead.
    """
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, offline mode, missing config: all end the same way
        hint = f" (and there is no local folder {str(Path(name).resolve())!r})" if "/" in name else ""
        raise DataError(
            f"could not load {what} from the Hugging Face hub dataset {name!r} (config {config!r}, split "
            f"{split!r}): {type(e).__name__}: {e}{hint}. Without network access, pass a local folder as "
            f"source instead, e.g. {local_hint}") from e
    label = f"hf:{name}" + (f"/{config}" if config else "") + f"[{split}]"
    return _dataset_rows(ds, label, None)


def local_split_file(folder: Path, split: str, *, what: str) -> Path:
    """The file holding ``split`` in a local benchmark folder: ``<split>.jsonl`` or ``<split>.json``."""
    for suffix in (".jsonl", ".json"):
        p = folder / f"{split}{suffix}"
        if p.is_file():
            return p
    have = sorted(p.stem for p in folder.iterdir() if p.suffix in (".json", ".jsonl"))[:30]
    raise DataError(f"no {split}.jsonl or {split}.json for {what}; this folder has: {have}", source=str(folder))
