"""Run lm-evaluation-harness on a model loaded by obliviate (retention on standard benchmarks).

lm-eval is an optional extra (``pip install 'obliviate[lmeval]'`` or ``pip install lm-eval``).
The model is loaded with :func:`obliviate.models.load_model` (so the embedded default, GGUF
files, merged folders and LoRA adapter folders all work) and handed to lm-eval as
``HFLM(pretrained=model, tokenizer=tokenizer)``.

Each task is loaded on its own first: a task whose data cannot be reached (no network, the hub
offline) is **skipped** with a message naming it, and the others still run. Unknown task names are
an error before anything is loaded.

Named task presets (:data:`TASK_PRESETS`): ``snap-table2`` is SNAP's Table 2, the nine zero-shot
tasks HellaSwag, LAMBADA (OpenAI), WinoGrande, PIQA, ARC-Challenge, MMLU, OpenBookQA, BoolQ and
MathQA; :func:`preset_summary` adds their unweighted mean (Table 2's Avg.) and its relative change
against the original model (Table 2's "(-3.4%)").

Offline retention check: :func:`write_rwku_tasks` writes lm-eval task YAMLs over a local RWKU
target folder (``rwku_retain_mmlu``: RWKU's 5-shot MMLU utility set, multiple choice over A/B/C/D
with the per-question examples RWKU ships; ``rwku_truthful``: TruthfulQA MC1), so
``--rwku-dir ../shared/data/rwku/1_Stephen_King`` measures retention with no network.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install lm-eval   (or: pip install 'obliviate[lmeval]')"


class LmEvalUnavailable(RuntimeError):
    """lm-evaluation-harness is not installed."""


def require_lm_eval():
    """Import and return ``lm_eval``; raise :class:`LmEvalUnavailable` with the install command if absent."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as e:
        raise LmEvalUnavailable(f"lm-evaluation-harness is not installed ({e}); install it with: {INSTALL_HINT}") from e
    return lm_eval


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the Hugging Face hub opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("HF_DATASETS_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _go_offline() -> None:
    """Make datasets / huggingface_hub fail fast instead of retrying an unreachable hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets.config as dc

        dc.HF_DATASETS_OFFLINE = True
        dc.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover - older datasets
        pass
    try:
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover
        pass


# ----------------------------------------------------------------------------- presets
#: named task lists: ``--tasks snap-table2`` runs SNAP Table 2's nine tasks (column label, lm-eval task)
SNAP_TABLE2 = (("Hella.", "hellaswag"), ("Lamba.", "lambada_openai"), ("Wino.", "winogrande"), ("PIQA", "piqa"),
               ("ARC-C", "arc_challenge"), ("MMLU", "mmlu"), ("OBQA", "openbookqa"), ("BoolQ", "boolq"),
               ("MathQ", "mathqa"))
TASK_PRESETS: dict[str, tuple[str, ...]] = {"snap-table2": tuple(t for _, t in SNAP_TABLE2)}
#: few-shot count of a preset (SNAP Table 2 is zero-shot); ``--num-fewshot`` overrides it
PRESET_FEWSHOT: dict[str, int] = {"snap-table2": 0}
#: metric keys :func:`preset_summary` writes for a preset: (average, relative change vs the original)
PRESET_KEYS: dict[str, tuple[str, str]] = {"snap-table2": ("snap_table2_avg", "snap_table2_drop")}


def expand_tasks(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Replace preset names (:data:`TASK_PRESETS`) by their tasks; return (tasks without repeats, presets used)."""
    tasks: list[str] = []
    presets: list[str] = []
    for n in names:
        if n in TASK_PRESETS:
            presets.append(n)
            tasks.extend(TASK_PRESETS[n])
        else:
            tasks.append(n)
    return list(dict.fromkeys(tasks)), presets


def preset_summary(metrics: dict[str, Any], preset: str, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's average and its relative change against ``reference`` (the original model's metrics).

    ``avg = (1/9) Σ_t score_t`` over the preset's tasks, only when every task has a score (else None),
    and ``drop = (avg − avg_ref) / avg_ref`` (SNAP Table 2 prints it as a percentage, e.g. 54.09 vs
    55.98 → −3.4 %) when a reference with all tasks is given. Returns ``{avg_key: …, drop_key: …}``.
    """
    if preset not in TASK_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(TASK_PRESETS)}")
    avg_key, drop_key = PRESET_KEYS[preset]

    def avg(m):
        vals = [m.get(t) for t in TASK_PRESETS[preset]]
        if not m or any(not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) for v in vals):
            return None
        return sum(vals) / len(vals)

    a = avg(metrics)
    out: dict[str, Any] = {avg_key: a, drop_key: None}
    if reference is not None:
        r = reference.get(avg_key) if isinstance(reference.get(avg_key), (int, float)) else avg(reference)
        if a is not None and r:
            out[drop_key] = (a - r) / r
    return out


def read_lm_eval_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics`` of an earlier ``obliviate eval lm-eval`` run (its folder or ``metrics.json``)."""
    import json

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "metrics.json"
    if not p.is_file():
        raise FileNotFoundError(f"--reference {path}: no metrics.json (give an `obliviate eval lm-eval` run folder)")
    data = json.loads(p.read_text(encoding="utf-8"))
    m = data.get("metrics", data) if isinstance(data, dict) else None
    if not isinstance(m, dict):
        raise ValueError(f"--reference {p}: expected a JSON object with 'metrics'")
    return m


# ----------------------------------------------------------------------------- local RWKU tasks
_LETTERS = "['A', 'B', 'C', 'D']"
_MMLU_TEMPLATE = (
    "The following are multiple choice questions (with answers) about {{ task | replace('_', ' ') }}.\\n\\n"
    "{% for ex in examples %}{{ ex.question | trim }}\\n"
    "{% for c in ex.choices %}{{ " + _LETTERS + "[loop.index0] }}. {{ c }}\\n{% endfor %}"
    "Answer: {{ " + _LETTERS + "[ex.answer] }}\\n\\n{% endfor %}"
    "{{ question | trim }}\\n"
    "{% for c in choices %}{{ " + _LETTERS + "[loop.index0] }}. {{ c }}\\n{% endfor %}Answer:"
)

RWKU_TASKS = {
    "rwku_retain_mmlu": ("retain_mmlu.json", """task: rwku_retain_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{template}"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  description: RWKU utility set (5-shot MMLU with RWKU's per-question examples), read from a local file
"""),
    "rwku_truthful": ("truthful.json", """task: rwku_truthful
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{ question | trim }}}}\\nA:"
doc_to_choice: "{{{{ mc1_targets.choices }}}}"
doc_to_target: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  description: RWKU's TruthfulQA MC1 utility set, read from a local file
"""),
}


def write_rwku_tasks(rwku_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, list[str]]:
    """Write lm-eval task YAMLs for the RWKU utility files found in ``rwku_dir`` into ``out_dir``.

    Returns (the include path for ``TaskManager(include_path=...)``, the task names written).
    Raises FileNotFoundError when ``rwku_dir`` holds none of the files.
    """
    src = Path(rwku_dir).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"--rwku-dir: folder not found: {src}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    from ..io import atomic_write_text

    for name, (fname, yaml_text) in RWKU_TASKS.items():
        f = src / fname
        if not f.is_file():
            continue
        body = yaml_text.replace("{path}", str(f)).replace("{template}", _MMLU_TEMPLATE)
        body = body.replace("{{{{", "{{").replace("}}}}", "}}")
        atomic_write_text(out / f"{name}.yaml", body)
        names.append(name)
    if not names:
        raise FileNotFoundError(f"--rwku-dir {src}: none of {[f for f, _ in RWKU_TASKS.values()]} found "
                                "(expected an RWKU target folder such as rwku/1_Stephen_King)")
    return out, names


# ----------------------------------------------------------------------------- running
def _primary(metrics: dict[str, Any]) -> tuple[str, float] | None:
    for pref in ("acc,none", "acc_norm,none", "exact_match,strict-match", "exact_match,none", "f1,none",
                 "mc2,none", "word_perplexity,none"):
        v = metrics.get(pref)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return pref.split(",")[0], float(v)
    for k, v in metrics.items():
        if (isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
                and k not in ("sample_len", "sample_count")):
            return k.split(",")[0], float(v)
    return None


def run_lm_eval(model, tokenizer, tasks: Sequence[str], *, num_fewshot: int | None = None,
                limit: int | float | None = None, batch_size: int = 8, include_path: str | Sequence[str] | None = None,
                max_length: int | None = None, offline: bool | None = None) -> dict:
    """Evaluate ``model`` on lm-eval ``tasks``; tasks whose data cannot be loaded are skipped.

    Returns ``{"metrics": {task: primary score, "task/metric": value, ...}, "tasks": {task: {...}},
    "skipped": {task: reason}, "n_samples": {task: n}}``. ``offline`` None probes the hub and goes
    offline when it cannot be reached (so datasets fail fast instead of retrying).
    Raises :class:`LmEvalUnavailable` without lm-eval and ValueError for unknown task names.
    """
    require_lm_eval()
    if offline is None:
        offline = not hub_reachable()
    if offline:
        _go_offline()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    includes = [str(p) for p in ([include_path] if isinstance(include_path, (str, Path)) else (include_path or []))]
    tm = None
    if includes:  # indexing lm-eval's ~15k built-in tasks takes a while: skip it when not needed
        local = TaskManager(include_path=includes, include_defaults=False)
        if all(t in set(local.all_tasks) for t in tasks):
            tm = local
    if tm is None:
        tm = TaskManager(include_path=includes or None)
    known = set(tm.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = {t: difflib.get_close_matches(t, known, n=3) for t in unknown}
        raise ValueError("unknown lm-eval task(s): " + "; ".join(
            f"{t}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items()))

    ready, skipped = [], {}
    for t in tasks:
        try:
            if hasattr(tm, "load"):  # lm-eval >= 0.4.10
                tm.load([t])
            else:  # pragma: no cover - older lm-eval
                get_task_dict([t], tm)
            ready.append(t)
        except Exception as e:  # data unreachable, dataset script errors, ...
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            skipped[t] = reason
            log.warning("lm-eval task %s skipped: its data could not be loaded (%s)", t, reason)
    out: dict[str, Any] = {"metrics": {}, "tasks": {}, "skipped": skipped, "n_samples": {},
                           "offline": bool(offline), "lm_eval_version": getattr(lm_eval, "__version__", "?")}
    if not ready:
        return out
    kwargs: dict[str, Any] = {"pretrained": model, "tokenizer": tokenizer, "batch_size": batch_size}
    if max_length:
        kwargs["max_length"] = max_length
    lm = HFLM(**kwargs)
    res = lm_eval.simple_evaluate(model=lm, tasks=list(ready), num_fewshot=num_fewshot, limit=limit,
                                  task_manager=tm, log_samples=False, bootstrap_iters=0,
                                  batch_size=batch_size)
    results = (res or {}).get("results", {})
    groups = (res or {}).get("groups", {})
    for t in ready:
        m = groups.get(t) or results.get(t) or {}
        clean = {k: float(v) for k, v in m.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))
                 and k not in ("sample_len", "sample_count")}
        out["tasks"][t] = clean
        p = _primary(m)
        if p is not None:
            out["metrics"][t] = p[1]
        for k, v in clean.items():
            out["metrics"][f"{t}/{k.replace(',none', '')}"] = v
    for t, n in ((res or {}).get("n-samples") or {}).items():
        out["n_samples"][t] = n
    return out


# ----------------------------------------------------------------------------- run outputs
def add_preset_summaries(res: dict[str, Any], presets: Sequence[str],
                         reference: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{preset: preset_summary(...)}`` for each preset over ``res["metrics"]`` (a :func:`run_lm_eval`
    result); each summary's keys (e.g. ``snap_table2_avg`` / ``snap_table2_drop``) are also added to
    ``res["metrics"]``."""
    summaries = {}
    for pr in presets:
        summaries[pr] = preset_summary(res["metrics"], pr, reference)
        res["metrics"].update(summaries[pr])
    return summaries


def result_rows(res: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The per-task rows of a :func:`run_lm_eval` result: ``(samples, table)``, where ``samples`` has
    one row per task with all its metrics (``",none"`` filters dropped from the names) and ``table``
    one ``{"task", "score" (the primary metric), "n" (effective documents)}`` per task."""
    rows = [{"task": t, **{k.replace(",none", ""): v for k, v in m.items()}} for t, m in res["tasks"].items()]
    table = [{"task": t, "score": res["metrics"].get(t), "n": (res["n_samples"].get(t) or {}).get("effective")}
             for t in res["tasks"]]
    return rows, table


def lm_eval_report(res: dict[str, Any], table: Sequence[dict[str, Any]], summaries: dict[str, dict[str, Any]], *,
                   model: str | None, limit: float | int | None, num_fewshot: int | None,
                   reference: str | None = None) -> str:
    """``report.md`` of an lm-eval run: the tasks run and skipped, the settings, the score table
    (:func:`result_rows`), each preset's average (in percent; with its change against the run named
    ``reference``), and why each skipped task was skipped."""
    from .common import markdown_table

    report = ["# lm-evaluation-harness", "", f"- **model**: {model}",
              f"- **tasks run**: {', '.join(res['tasks']) or 'none'}",
              f"- **skipped** (data unreachable): {', '.join(res['skipped']) or 'none'}",
              f"- **limit**: {limit}  **num_fewshot**: {num_fewshot}", "",
              markdown_table(table) if table else "_no task ran_\n"]
    for pr, sm in summaries.items():
        avg, drop = sm.values()
        report.append(f"- **{pr}** average: {'–' if avg is None else f'{100 * avg:.2f}'}"
                      + ("" if drop is None else f" ({100 * drop:+.1f}% vs the reference {reference})")
                      + ("" if avg is not None else " (not every task of the preset ran)"))
    for t, reason in res["skipped"].items():
        report.append(f"- skipped `{t}`: {reason}")
    return "\n".join(report) + "\n"
