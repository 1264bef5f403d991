"""Optional few-shot demonstrations before the papers' verbatim prompts (off by default).

A documented deviation for weak local generators (135M–1.5B models): asked with the bare ULMR
Table 1 prompt they return the instruction unchanged, asked with Table 2 or SNAP's Appendix E
prompt they answer instead of refusing. With ``few_shot: N`` (``--few-shot N``) the prompt sent
becomes ``N`` worked examples followed by the verbatim prompt::

    <verbatim prompt filled with demonstration 1's instruction>\\n<demonstration 1's output>\\n\\n
    ...
    <verbatim prompt filled with demonstration N's instruction>\\n<demonstration N's output>\\n\\n
    <verbatim prompt filled with the real instruction>

one user message, whose end is byte for byte the prompt obliviate sends without demonstrations.
``N = 0`` (the default) sends exactly the verbatim prompt. The demonstrations are hand-written,
about invented people (none from TOFU, RWKU or any benchmark), in ``obliviate/prompts/few_shot.json``;
the first ``N`` of a kind are used, in file order.

Kinds (:data:`KINDS`, with the prompt file each one precedes): ``ulmr_rewrite`` (Table 1),
``ulmr_negative`` (Table 2), ``snap_obliterated`` (Appendix E; the instruction follows the prompt
after a blank line, as :func:`obliviate.augment.snap.obliterated_request` writes it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

from ..config import ConfigError

FEW_SHOT_FILE = "few_shot.json"
#: where the demonstrations live, as recorded in reports and manifests
FEW_SHOT_PATH = f"obliviate/prompts/{FEW_SHOT_FILE}"
PLACEHOLDER = "{instruction}"
#: demonstration kind -> the packaged prompt file it is rendered with
KINDS: dict[str, str] = {
    "ulmr_rewrite": "ulmr_prompt_rewrite.txt",
    "ulmr_negative": "ulmr_negative_prompt.txt",
    "snap_obliterated": "snap_obliterated.txt",
}
#: the kinds each method's ``few_shot`` setting applies to
ULMR_KINDS = ("ulmr_rewrite", "ulmr_negative")
SNAP_KINDS = ("snap_obliterated",)
#: the rejection reason of an output that copies a demonstration or names its invented person
COPY_REASON = "copy_of_demonstration"
DEVIATION = ("few-shot demonstrations precede the papers' verbatim prompts (a deviation for weak generators; "
             "few_shot: 0 sends the verbatim prompts)")


@dataclass(frozen=True)
class Demonstration:
    """One worked example: the instruction the prompt is filled with, the output shown after it, and
    the invented person it is about (None when it names nobody)."""

    instruction: str
    output: str
    subject: str | None = None


def _file():
    return resources.files("obliviate").joinpath("prompts", FEW_SHOT_FILE)


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, tuple[Demonstration, ...]]:
    try:
        raw = json.loads(_file().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{FEW_SHOT_PATH} is missing (the few-shot demonstrations)") from None
    except ValueError as e:
        raise ValueError(f"{FEW_SHOT_PATH}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{FEW_SHOT_PATH}: expected a mapping kind -> list of demonstrations")
    out: dict[str, tuple[Demonstration, ...]] = {}
    for kind in KINDS:
        items = raw.get(kind, [])
        if not isinstance(items, list):
            raise ValueError(f"{FEW_SHOT_PATH}: {kind!r} must be a list")
        demos = []
        for i, d in enumerate(items):
            if not isinstance(d, dict) or not all(isinstance(d.get(k), str) and d[k].strip()
                                                  for k in ("instruction", "output")):
                raise ValueError(f"{FEW_SHOT_PATH}: {kind}[{i}] needs non-empty 'instruction' and 'output' strings")
            subject = d.get("subject")
            if subject is not None and not (isinstance(subject, str) and subject.strip()):
                raise ValueError(f"{FEW_SHOT_PATH}: {kind}[{i}].subject must be a name or null")
            demos.append(Demonstration(d["instruction"], d["output"], subject))
        out[kind] = tuple(demos)
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"few-shot kind {kind!r} is not one of {list(KINDS)}")


def demonstrations(kind: str, n: int | None = None) -> list[Demonstration]:
    """The first ``n`` (default: all) demonstrations of ``kind``, in file order."""
    _check_kind(kind)
    demos = list(_load()[kind])
    return demos if n is None else demos[:n]


def available(kinds: Sequence[str]) -> int:
    """How many demonstrations every one of ``kinds`` has (the largest valid ``few_shot``)."""
    return min(len(demonstrations(k)) for k in kinds)


def check_few_shot(n: object, kinds: Sequence[str], field: str = "few_shot") -> None:
    """Raise :class:`~obliviate.config.ConfigError` (a ``ValueError``) naming ``field`` and the maximum
    unless ``n`` is an integer in ``[0, available(kinds)]``. ``0`` never reads the file."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigError(f"{field}: expected an integer number of few-shot demonstrations, got {n!r}")
    if n < 0:
        raise ConfigError(f"{field}: must be >= 0 (0 = the papers' verbatim prompts), got {n}")
    if n == 0:
        return
    most = available(kinds)
    if n > most:
        raise ConfigError(f"{field}: {n} is more than the {most} demonstrations available (maximum {most}: "
                          f"{FEW_SHOT_PATH} holds {most} for {', '.join(kinds)}); use 0..{most}")


def fill_prompt(kind: str, template: str, instruction: str) -> str:
    """The verbatim prompt of ``kind`` for ``instruction``, exactly as the augmenters write it without
    demonstrations: ULMR's ``{instruction}`` replaced by the stripped instruction, SNAP's Appendix E
    prompt followed by a blank line and the instruction."""
    _check_kind(kind)
    if kind == "snap_obliterated":
        return f"{template}\n\n{instruction}"
    if PLACEHOLDER not in template:
        raise ValueError(f"prompt template has no {PLACEHOLDER} placeholder")
    return template.replace(PLACEHOLDER, instruction.strip())


def render_demonstration(kind: str, template: str, demo: Demonstration) -> str:
    """One demonstration block: the filled prompt, a newline, the output, a blank line."""
    return f"{fill_prompt(kind, template, demo.instruction)}\n{demo.output}\n\n"


def with_few_shot(kind: str, template: str, instruction: str, n: int) -> str:
    """The prompt for ``instruction``: ``n`` demonstration blocks of ``kind`` (rendered with the same
    ``template``), then the verbatim prompt filled with ``instruction``, unchanged, at the end.
    ``n = 0`` gives exactly :func:`fill_prompt`."""
    check_few_shot(n, (kind,), field="few_shot")
    real = fill_prompt(kind, template, instruction)
    if n == 0:
        return real
    return "".join(render_demonstration(kind, template, d) for d in demonstrations(kind, n)) + real


@functools.lru_cache(maxsize=1)
def _packaged_blocks() -> tuple[str, ...]:
    blocks = []
    for kind, filename in KINDS.items():
        template = resources.files("obliviate").joinpath("prompts", filename).read_text(encoding="utf-8")
        blocks += [render_demonstration(kind, template, d) for d in demonstrations(kind)]
    return tuple(sorted(blocks, key=len, reverse=True))


def strip_demonstrations(text: str) -> tuple[str, int]:
    """``text`` without the leading packaged demonstration blocks (rendered with the packaged prompt
    files), and how many were removed; a text without them comes back unchanged with 0. Used by the
    ``templates`` stand-in, which answers the verbatim prompt at the end."""
    count = 0
    blocks = _packaged_blocks()
    while True:
        block = next((b for b in blocks if text.startswith(b) and len(text) > len(b)), None)
        if block is None:
            return text, count
        text = text[len(block):]
        count += 1


def _names(text: str, name: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(name.lower()) + r"(?!\w)", text.lower()) is not None


def borrowed(text: str, instruction: str | None, kind: str, n: int, *, outputs: bool = True) -> bool:
    """Whether a generation copies one of the first ``n`` demonstrations of ``kind`` instead of doing the
    task: it (nearly) repeats a demonstration's instruction (or, with ``outputs``, its output), or it
    names a demonstration's invented person that ``instruction`` does not name."""
    if n <= 0 or not (text or "").strip():
        return False
    from .quality import is_copy

    for d in demonstrations(kind, n):
        if d.subject and _names(text, d.subject) and not _names(instruction or "", d.subject):
            return True
        if is_copy(text, d.instruction) or (outputs and is_copy(text, d.output)):
            return True
    return False


def file_sha256() -> str:
    """sha256 of the packaged demonstrations file, as stored."""
    return hashlib.sha256(_file().read_bytes()).hexdigest()


def packaged_file():
    """The packaged demonstrations file (a path-like :mod:`importlib.resources` traversable)."""
    return _file()


def provenance(n: int, kinds: Sequence[str]) -> dict:
    """What a report or manifest records about the demonstrations used (``n > 0``): how many, the
    file and its sha256, the instructions of the demonstrations per kind, and the deviation."""
    return {"few_shot": n, "verbatim": False, "deviation": DEVIATION, "file": FEW_SHOT_PATH,
            "sha256": file_sha256(),
            "demonstrations": {k: [d.instruction for d in demonstrations(k, n)] for k in kinds}}
