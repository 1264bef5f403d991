"""RWKU (Jin et al., 2024): real-world knowledge unlearning, from the hub or a local folder.

Local folders use the per-target layout of the RWKU repository (``<n>_<Target>/<split>.json``,
one folder per target) or the hub's flat ``All`` layout (``<split>.json`` holding every target,
filtered by subject). The hub path is ``datasets.load_dataset("jinzhuoran/RWKU", config)``
filtered by target. Both produce a :class:`RowTable` that one conversion per split turns into:

========================================================  =====================================
split                                                      items
========================================================  =====================================
forget_level1/2/3, neighbor_level1/2                       :class:`QARecord` (question = query;
                                                           meta: level, type, neighbor)
triviaqa                                                   :class:`QARecord` (answer = first
                                                           alias; meta["answers"] = all)
retain_bbh                                                 :class:`QARecord` (meta: task, cot)
retain_mmlu                                                :class:`ChoiceItem` (5-shot examples)
truthful                                                   :class:`ChoiceItem` (MC1; MC2 in meta)
passage, forget_mia, retain_mia, intro, fluency            :class:`TextItem`
========================================================  =====================================

Only ``passage`` (the forget corpus) is training data; every other split is an evaluation set.
The ``rwku:<target>[:<split>]`` data spec (:func:`obliviate.data.sources.resolve_records`) turns
``passage`` into plain-text training records and refuses the others for training unless asked
explicitly. :func:`average_over_targets` averages per-target metrics (mean, std) as RWKU reports.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from .readers import RowTable, is_local_source, load_hub_rows, local_split_file, read_rows, records_from_rows
from .records import DataError, QARecord

RWKU_HUB = "jinzhuoran/RWKU"
#: split name -> (hub config, hub split)
RWKU_HUB_CONFIGS: dict[str, tuple[str, str]] = {
    "intro": ("forget_target", "train"),
    "forget_level1": ("forget_level1", "test"),
    "forget_level2": ("forget_level2", "test"),
    "forget_level3": ("forget_level3", "test"),
    "neighbor_level1": ("neighbor_level1", "test"),
    "neighbor_level2": ("neighbor_level2", "test"),
    "forget_mia": ("mia_forget", "test"),
    "retain_mia": ("mia_retain", "test"),
    "retain_mmlu": ("utility_general", "test"),
    "retain_bbh": ("utility_reason", "test"),
    "truthful": ("utility_truthfulness", "test"),
    "triviaqa": ("utility_factuality", "test"),
    "fluency": ("utility_fluency", "test"),
    "passage": ("train_original_passage", "train"),
}
RWKU_SPLITS = tuple(RWKU_HUB_CONFIGS)
RWKU_QA_SPLITS = ("forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2",
                  "triviaqa", "retain_bbh")
RWKU_CHOICE_SPLITS = ("retain_mmlu", "truthful")
RWKU_TEXT_SPLITS = ("passage", "forget_mia", "retain_mia", "intro", "fluency")
_LOCAL_HINT = "source='../shared/data/rwku' (a folder of <n>_<Target>/<split>.json folders)"
_TARGET_DIR = re.compile(r"^(\d+)_(.+)$")


@dataclass
class TextItem:
    """A text of RWKU: a forget-corpus passage, an MIA text, the unlearning request, an instruction.

    ``text`` is the passage / MIA text / ``intro`` request / fluency ``instruction``; ``meta``
    keeps the other fields (e.g. the MIA ``ngram``).
    """

    text: str
    subject: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class ChoiceItem:
    """A multiple-choice question: ``choices[answer_index]`` is correct.

    ``examples`` holds few-shot demonstrations (MMLU's 5 shots, each a dict with question,
    choices, answer); ``task`` is the MMLU subject; ``meta`` keeps the rest (TruthfulQA's
    ``mc2_targets``).
    """

    question: str
    choices: list[str]
    answer_index: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    task: str | None = None
    subject: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The text of the correct choice."""
        return self.choices[self.answer_index]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


RWKUItem = Union[QARecord, ChoiceItem, TextItem]


def _norm(name: str) -> str:
    m = _TARGET_DIR.match(name.strip())
    if m:
        name = m.group(2)
    return " ".join(name.replace("_", " ").split()).casefold()


def _target_name(name: str) -> str:
    """Human name of a target: '1_Stephen_King' -> 'Stephen King'."""
    m = _TARGET_DIR.match(name.strip())
    return (m.group(2) if m else name).replace("_", " ").strip()


def _check_split(split: str) -> None:
    if split not in RWKU_HUB_CONFIGS:
        raise DataError(f"unknown RWKU split {split!r}; allowed: {', '.join(RWKU_SPLITS)}")


def _is_flat(folder: Path) -> bool:
    return any((folder / f"forget_level1{s}").is_file() for s in (".json", ".jsonl"))


def _target_dirs(folder: Path) -> list[Path]:
    dirs = [p for p in folder.iterdir() if p.is_dir() and _TARGET_DIR.match(p.name)]
    return sorted(dirs, key=lambda p: (int(_TARGET_DIR.match(p.name).group(1)), p.name))


def list_rwku_targets(source: str | os.PathLike = RWKU_HUB) -> list[str]:
    """Names of the RWKU targets in ``source`` (e.g. 'Stephen King'), in RWKU's numeric order.

    Local: one per ``<n>_<Target>`` folder (or the ``intro`` targets of a flat folder). Hub: the
    ``target`` field of the ``forget_target`` config.
    """
    if is_local_source(source):
        folder = Path(source).expanduser()
        if _is_flat(folder):
            table = read_rows(local_split_file(folder, "intro", what="RWKU"))
        else:
            dirs = _target_dirs(folder)
            if not dirs:
                raise DataError("no RWKU target folders (<n>_<Target>) here", source=str(folder))
            return [_target_name(p.name) for p in dirs]
    else:
        config, split = RWKU_HUB_CONFIGS["intro"]
        table = load_hub_rows(str(source), config, split, what="the RWKU target list", local_hint=_LOCAL_HINT)
    return [str(r.get("target")) for r in table.rows if isinstance(r, dict) and r.get("target")]


def resolve_rwku_target(target: str, source: str | os.PathLike = RWKU_HUB) -> tuple[str, Path | None]:
    """Resolve ``target`` ('1_Stephen_King', 'Stephen King', 'stephen_king') to (name, folder).

    ``folder`` is the per-target folder for a local per-target layout, else ``None`` (hub or
    flat folder, where rows are filtered by name). An unknown local target raises
    :class:`DataError` listing the known ones.
    """
    if not isinstance(target, str) or not target.strip():
        raise DataError(f"RWKU target must be a non-empty name like 'Stephen King', got {target!r}")
    if is_local_source(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise DataError("expected an RWKU folder", source=str(source))
        if not _is_flat(folder):
            dirs = _target_dirs(folder)
            want = _norm(target)
            hits = [p for p in dirs if p.name == target.strip()] or [p for p in dirs if _norm(p.name) == want]
            if not hits:
                known = [p.name for p in dirs]
                raise DataError(f"unknown RWKU target {target!r}; known here: {known}", source=str(folder))
            return _target_name(hits[0].name), hits[0]
    return _target_name(target), None


def rwku_rows(target: str, split: str, source: str | os.PathLike = RWKU_HUB) -> tuple[str, RowTable]:
    """Resolve one target's split to (target name, raw rows), from the hub or a local folder."""
    _check_split(split)
    name, folder = resolve_rwku_target(target, source)
    if folder is not None:
        return name, read_rows(local_split_file(folder, split, what=f"RWKU target {folder.name}"))
    if is_local_source(source):
        table = read_rows(local_split_file(Path(source).expanduser(), split, what="RWKU"))
    else:
        config, hub_split = RWKU_HUB_CONFIGS[split]
        table = load_hub_rows(str(source), config, hub_split, what=f"RWKU split {split!r}", local_hint=_LOCAL_HINT)
    return name, _filter_target(table, name, split)


def _filter_target(table: RowTable, name: str, split: str) -> RowTable:
    """Keep the rows of one target in a table holding every target (hub / flat layout)."""
    key = "target" if split == "intro" else "subject"
    want = _norm(name)
    keep = [i for i, r in enumerate(table.rows) if isinstance(r, dict) and _norm(str(r.get(key, ""))) == want]
    if not keep:
        known = sorted({str(r.get(key)) for r in table.rows if isinstance(r, dict)})[:20]
        raise DataError(f"no rows for RWKU target {name!r} in split {split!r}; targets there include {known}",
                        source=table.origin)
    rows = [table.rows[i] for i in keep]
    if table.lines is not None:
        return RowTable(table.origin, rows, [table.lines[i] for i in keep])
    # keep the original row numbers in error messages
    return RowTable(f"{table.origin} (target {name})", rows, None)


def _require(row: Any, key: str, kind: type | tuple, src: str, line: int | None) -> Any:
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}", source=src, line=line)
    if key not in row or row[key] is None:
        raise DataError("missing", source=src, line=line, field=key)
    v = row[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"expected {names}, got {type(v).__name__}", source=src, line=line, field=key)
    if isinstance(v, (str, list)) and not v:
        raise DataError("empty", source=src, line=line, field=key)
    return v


def rwku_items_from_rows(table: RowTable, split: str, target: str) -> list[RWKUItem]:
    """Convert RWKU rows of ``split`` to items (see the module table); validates every row."""
    _check_split(split)
    base_id = f"rwku/{target.replace(' ', '_')}/{split}"
    out: list[RWKUItem] = []
    if split in RWKU_QA_SPLITS:
        if split == "triviaqa":
            rows = []
            for i, r in enumerate(table.rows):
                src, line = table.where(i)
                answers = _require(r, "answers", list, src, line)
                if not all(isinstance(a, str) and a.strip() for a in answers):
                    raise DataError("expected a list of non-empty strings", source=src, line=line, field="answers")
                rows.append({**r, "answer": answers[0]})
            table = RowTable(table.origin, rows, table.lines)
        qkey = "question" if split in ("triviaqa", "retain_bbh") else "query"
        recs = records_from_rows(table, question_key=qkey, subject=target)
        for i, rec in enumerate(recs):
            rec.id = f"{base_id}/{i}"
            rec.meta["split"] = split
            if "level" in rec.meta:
                try:
                    rec.meta["level"] = int(rec.meta["level"])
                except (TypeError, ValueError):
                    pass
        return list(recs)
    for i, r in enumerate(table.rows):
        src, line = table.where(i)
        rid = f"{base_id}/{i}"
        if split in RWKU_TEXT_SPLITS:
            key = {"intro": "intro", "fluency": "instruction"}.get(split, "text")
            text = _require(r, key, str, src, line)
            if not text.strip():
                raise DataError("empty", source=src, line=line, field=key)
            meta = {k: v for k, v in r.items() if k not in (key, "subject", "target")}
            meta["split"] = split
            out.append(TextItem(text=text, subject=r.get("subject") or r.get("target") or target, id=rid, meta=meta))
        elif split == "retain_mmlu":
            q = _require(r, "question", str, src, line)
            choices = _require(r, "choices", list, src, line)
            ans = _require(r, "answer", int, src, line)
            if not 0 <= ans < len(choices):
                raise DataError(f"answer index {ans} outside the {len(choices)} choices", source=src, line=line,
                                field="answer")
            meta = {k: v for k, v in r.items() if k not in ("question", "choices", "answer", "examples", "task",
                                                            "subject")}
            meta["split"] = split
            out.append(ChoiceItem(question=q, choices=[str(c) for c in choices], answer_index=ans,
                                  examples=list(r.get("examples") or []), task=r.get("task"),
                                  subject=r.get("subject") or target, id=rid, meta=meta))
        elif split == "truthful":
            q = _require(r, "question", str, src, line)
            mc1 = _require(r, "mc1_targets", dict, src, line)
            choices, labels = mc1.get("choices"), mc1.get("labels")
            if not isinstance(choices, list) or not isinstance(labels, list) or len(choices) != len(labels) \
                    or 1 not in labels:
                raise DataError("expected {'choices': [...], 'labels': [...]} of equal length with one 1",
                                source=src, line=line, field="mc1_targets")
            meta = {k: v for k, v in r.items() if k not in ("question", "mc1_targets", "subject")}
            meta["mc1_labels"] = list(labels)
            meta["split"] = split
            out.append(ChoiceItem(question=q, choices=[str(c) for c in choices], answer_index=labels.index(1),
                                  subject=r.get("subject") or target, id=rid, meta=meta))
    return out


def load_rwku(target: str, split: str, source: str | os.PathLike = RWKU_HUB) -> list[RWKUItem]:
    """Load one RWKU split for one target.

    ``target`` is a folder name ('1_Stephen_King') or a plain name ('Stephen King');
    ``split`` is one of :data:`RWKU_SPLITS`; ``source`` is the hub dataset id (default
    ``jinzhuoran/RWKU``; config names in :data:`RWKU_HUB_CONFIGS`, rows filtered by target) or a
    local folder. QA splits give :class:`QARecord` s (``meta["level"]``, ``meta["type"]`` such as
    the level-3 attack type, ``meta["neighbor"]``), ``retain_mmlu``/``truthful`` give
    :class:`ChoiceItem` s, text splits :class:`TextItem` s. Raises :class:`DataError` on an unknown
    split or target, bad rows, or an unreachable hub (naming the dataset, suggesting a folder).
    """
    name, table = rwku_rows(target, split, source)
    return rwku_items_from_rows(table, split, name)


def average_over_targets(per_target: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]], *,
                         ddof: int = 0) -> dict[str, Any]:
    """Mean and standard deviation of each metric over several RWKU targets (RWKU reports averages
    over its targets).

    ``per_target`` maps a target name to its metrics dict (e.g. what ``obliviate eval rwku`` writes
    per target), or is a list of such dicts. For every key whose value is a number (not a bool) in
    at least one target, the result holds ``{"mean": x̄, "std": s, "n": n}`` with
    x̄ = (1/n) Σ_i x_i and s = sqrt(Σ_i (x_i − x̄)² / (n − ddof)) over the n targets that report a
    number (``None`` / missing are skipped; ``ddof=0`` is the population std, ``ddof=1`` the sample
    std; s = 0 for one target). Nested dicts are averaged key by key into nested results; strings
    and lists are ignored. Key order follows the first target that has each key.
    """
    dicts = list(per_target.values()) if isinstance(per_target, Mapping) else list(per_target)
    if not dicts:
        raise ValueError("average_over_targets: no targets given")
    if ddof not in (0, 1):
        raise ValueError(f"average_over_targets: ddof must be 0 or 1, got {ddof!r}")
    bad = [type(d).__name__ for d in dicts if not isinstance(d, Mapping)]
    if bad:
        raise ValueError(f"average_over_targets: expected one metrics dict per target, got {bad[0]}")
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    out: dict[str, Any] = {}
    for k in keys:
        vals = [d.get(k) for d in dicts]
        subs = [v for v in vals if isinstance(v, Mapping)]
        if subs:
            nested = average_over_targets(subs, ddof=ddof)
            if nested:
                out[k] = nested
            continue
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not nums:
            continue
        n = len(nums)
        mean = sum(nums) / n
        var = sum((x - mean) ** 2 for x in nums) / (n - ddof) if n > ddof else 0.0
        out[k] = {"mean": mean, "std": math.sqrt(var), "n": n}
    return out
