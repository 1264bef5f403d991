"""Shared plumbing for the ``obliviate eval ...`` commands: run directory, manifest, tables.

Every evaluation command writes the same four files into ``--out DIR`` (all atomically):

* ``metrics.json`` — the benchmark's aggregate numbers (a flat ``{name: float}`` dict under
  ``"metrics"`` plus ``"benchmark"``, ``"model"`` and any extra context),
* ``samples.jsonl`` — one row per scored item (question, reference, generation, each score),
* ``report.md`` — a human-readable summary (tables),
* ``manifest.json`` — :class:`obliviate.io.Manifest` (command, config, package versions, inputs,
  wall time, peak memory).

The command-line options these commands share (``--model``, ``--out``, ``--batch-size``, ...) and
the model loading from them live in :mod:`obliviate.commands._args`; the commands themselves in
``obliviate.commands.eval_*``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..io import Manifest, atomic_write_json, atomic_write_jsonl, atomic_write_text

__all__ = [
    "check_out_dir",
    "check_data_source",
    "resolve_system_prompt",
    "start_manifest",
    "to_jsonable",
    "markdown_table",
    "metrics_report",
    "write_eval_run",
]

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.jsonl"
REPORT_FILE = "report.md"


def resolve_system_prompt(value: str | None) -> str | None:
    """``--system-prompt`` value: literal text, or ``@path`` to read the prompt from a file."""
    if value and value.startswith("@"):
        p = Path(value[1:]).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--system-prompt: file not found: {p}")
        return p.read_text(encoding="utf-8").strip()
    return value


def check_out_dir(path: str | os.PathLike) -> Path:
    """Validate ``--out`` before any heavy work: it must be a folder (created if missing), not a file."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"--out {p} exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    if not os.access(p, os.W_OK):
        raise PermissionError(f"--out {p} is not writable")
    return p


def _args_config(args: Any) -> dict:
    """The recorded config: a mapping, or the attributes of an options object (e.g. parsed
    command-line options), without callables."""
    if args is None:
        return {}
    d = dict(args) if isinstance(args, Mapping) else dict(vars(args))
    return {k: v for k, v in d.items() if not callable(v)}


def start_manifest(out_dir: str | os.PathLike, command: str, args: Any = None,
                   *, seed: int | None = None, inputs: Mapping[str, Any] | None = None) -> Manifest:
    """Start the run's :class:`~obliviate.io.Manifest` (config = ``args``: a mapping or an options
    object such as the parsed command-line arguments; secrets redacted).

    ``inputs`` maps names to files / folders / specs to hash (the ``model`` argument is added
    automatically when ``args`` has one). Refuses (before anything is written) an ``out_dir`` whose
    output files would overwrite one of those inputs.
    """
    from ..io import check_outputs_do_not_replace_inputs

    cfg = _args_config(args)
    out = Path(out_dir)
    check_outputs_do_not_replace_inputs(  # e.g. --responses OUT/samples.jsonl --out OUT
        [cfg.get("model"), *(inputs or {}).values()],
        [out / METRICS_FILE, out / SAMPLES_FILE, out / REPORT_FILE, out / "manifest.json"])
    m = Manifest(out_dir, command, config=cfg, seed=seed)
    if cfg.get("model"):
        m.add_input("model", cfg["model"])
    for name, value in (inputs or {}).items():
        m.add_input(name, value)
    return m


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / torch scalars and containers to plain JSON types; NaN and inf become ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


def _fmt(v: Any, floatfmt: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, floatfmt)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                   floatfmt: str = ".4f") -> str:
    """Render ``rows`` (dicts) as a GitHub Markdown table; ``columns`` default to the first row's keys."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), floatfmt) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def metrics_report(title: str, metrics: Mapping[str, Any], *, sections: Iterable[tuple[str, str]] = (),
                   context: Mapping[str, Any] | None = None) -> str:
    """A ``report.md`` body: a title, optional context lines, extra ``(heading, markdown)`` sections,
    and the full metric list as a two-column table."""
    out = [f"# {title}\n"]
    for k, v in (context or {}).items():
        out.append(f"- **{k}**: {v}")
    if context:
        out.append("")
    for heading, body in sections:
        out.append(f"## {heading}\n\n{body}")
    out.append("## All metrics\n")
    out.append(markdown_table([{"metric": k, "value": v} for k, v in metrics.items()
                               if isinstance(v, (int, float)) or v is None]))
    return "\n".join(out)


def write_eval_run(out_dir: str | os.PathLike, *, benchmark: str, metrics: Mapping[str, Any],
                   rows: Sequence[Mapping[str, Any]], report: str, manifest: Manifest | None = None,
                   extra: Mapping[str, Any] | None = None, **context: Any) -> dict[str, Path]:
    """Write ``metrics.json``, ``samples.jsonl``, ``report.md`` and ``manifest.json`` atomically.

    ``metrics.json`` holds ``{"benchmark", "metrics": {...}, **context, **extra}``; ``context``
    keywords (``model=..., target=...``) are also recorded in the manifest. Returns the paths.
    """
    out = check_out_dir(out_dir)
    payload = {"benchmark": benchmark, **to_jsonable(dict(context)), "metrics": to_jsonable(dict(metrics))}
    if extra:
        payload.update(to_jsonable(dict(extra)))
    paths = {
        "metrics": atomic_write_json(out / METRICS_FILE, payload),
        "samples": atomic_write_jsonl(out / SAMPLES_FILE, (to_jsonable(dict(r)) for r in rows)),
        "report": atomic_write_text(out / REPORT_FILE, report if report.endswith("\n") else report + "\n"),
    }
    if manifest is not None:
        for p in paths.values():
            manifest.add_output(p)
        paths["manifest"] = manifest.write(benchmark=benchmark, **to_jsonable(dict(context)))
    return paths


def check_data_source(source: str, benchmark: str):
    """Validate ``--data-source``: a hub id passes as is (returns None); a local path must be a
    folder (returned as a Path), else a clear error naming the option."""
    from pathlib import Path

    from ..data.readers import is_local_source
    from ..data.records import DataError

    try:
        local = is_local_source(source)
    except DataError as e:
        raise DataError(f"--data-source: {e}") from None
    if not local:
        return None
    src = Path(source).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"--data-source {src}: not a folder (give a local {benchmark} folder or a hub id)")
    return src
