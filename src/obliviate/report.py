"""``obliviate report``: the papers' result tables (Markdown, CSV, JSON) and plots from run folders.

Each run folder holds one or more evaluation results (``metrics.json`` written by ``obliviate eval
...``: ``{"benchmark": ..., "metrics": {...}}``), directly or in sub-folders (a pipeline run with
``eval/tofu``, ``eval/refusal`` ...). One run becomes one table row; its name comes from
``--names``, else the ``method`` recorded in a manifest, else the folder name; ``alpha`` (a
merge's α) is read from the manifests the same way.

Layouts (:data:`LAYOUTS`; the column → metric-key mapping is this one table, easy to adjust):

* ``tofu`` — ULMR Table 3: forget / retain / real authors / world facts × ROUGE-L recall (R),
  probability (P), truth ratio (TR), plus forget quality (KS p-value) and model utility;
* ``rwku`` — ULMR Table 4 (RWKU's main table): forget FB / QA / AA / All, neighbor FB / QA / All,
  MIA FM / RM (mean loss ×100, as ULMR Table 4 prints it: 222.62 for a mean token NLL of 2.2262),
  utility Gen (MMLU) / Rea (BBH) / Tru (TruthfulQA) / Fac (TriviaQA) / Flu (AlpacaEval entropy);
* ``snap`` — SNAP Table 1: UA, UA♣ (multi-hop), RA, TA and their unweighted mean Avg., each with
  its 95 % interval ("85.71 [60.1, 96.0]") when the run stores ``<key>_ci_low`` / ``<key>_ci_high``;
* ``snap-table2`` — SNAP Table 2: the nine zero-shot lm-eval tasks, their mean Avg. and its
  relative change against the original model (the run's stored ``snap_table2_drop`` from
  ``eval lm-eval --reference``, else against the table's reference run: the first run, as SNAP
  lists the original model first);
* ``lm-eval`` — one column per lm-evaluation-harness task found in the runs;
* ``audit`` — ``obliviate audit`` results (``audit.json``): forget ROUGE-L before and after each
  attack (relearning, 8/4-bit quantization, prompt attacks), MIA AUCs and the share of attacks passed.

Fractions are shown ×100 (the papers' percentages); losses, entropies and p-values as they are.
A metric a run lacks is a blank cell ``–``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .evals.lm_eval_bridge import SNAP_TABLE2, preset_summary
from .io import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the mapping table
#: layout -> (benchmark name in metrics.json, title, [(group, column, metric key(s), format)]).
#: ``format``: "pct" (fraction shown ×100), "num" (shown as is, 2 decimals), "p" (p-value, 3 sig. digits),
#: "x100" (a loss shown ×100, 2 decimals: ULMR Table 4's MIA columns), "rel" (a relative change shown as a
#: signed percentage with one decimal, SNAP Table 2's "(-3.4%)").
#: A tuple of keys means "the first one present" (tolerates renamed keys).
LAYOUTS: dict[str, dict[str, Any]] = {
    "tofu": {
        "benchmark": "tofu",
        "title": "TOFU (ULMR Table 3)",
        "columns": [
            ("Forget Set", "R", "forget_rouge", "pct"),
            ("Forget Set", "P", "forget_prob", "pct"),
            ("Forget Set", "TR", "forget_truth_ratio", "pct"),
            ("Retain Set", "R", "retain_rouge", "pct"),
            ("Retain Set", "P", "retain_prob", "pct"),
            ("Retain Set", "TR", "retain_truth_ratio", "pct"),
            ("Real Authors", "R", "real_authors_rouge", "pct"),
            ("Real Authors", "P", "real_authors_prob", "pct"),
            ("Real Authors", "TR", "real_authors_truth_ratio", "pct"),
            ("World Facts", "R", "world_facts_rouge", "pct"),
            ("World Facts", "P", "world_facts_prob", "pct"),
            ("World Facts", "TR", "world_facts_truth_ratio", "pct"),
            ("", "Forget Quality", "forget_quality", "p"),
            ("", "Model Utility", "model_utility", "pct"),
        ],
        # (x = forget metric, y = utility metric) for the α-sweep plot; lower x = more forgetting
        "tradeoff": ("forget_rouge", "model_utility"),
    },
    "rwku": {
        "benchmark": "rwku",
        "title": "RWKU (ULMR Table 4)",
        "columns": [
            ("Forget Set", "FB", ("forget_fb", "forget_level1"), "pct"),
            ("Forget Set", "QA", ("forget_qa", "forget_level2"), "pct"),
            ("Forget Set", "AA", ("forget_aa", "forget_level3"), "pct"),
            ("Forget Set", "All", ("forget_all", "forget_avg"), "pct"),
            ("Neighbor Set", "FB", ("neighbor_fb", "neighbor_level1"), "pct"),
            ("Neighbor Set", "QA", ("neighbor_qa", "neighbor_level2"), "pct"),
            ("Neighbor Set", "All", ("neighbor_all", "neighbor_avg"), "pct"),
            ("MIA Set", "FM", ("mia_fm", "forget_mia_loss", "mia_forget"), "x100"),
            ("MIA Set", "RM", ("mia_rm", "retain_mia_loss", "mia_retain"), "x100"),
            ("Utility Set", "Gen", ("utility_gen", "mmlu"), "pct"),
            ("Utility Set", "Rea", ("utility_rea", "bbh"), "pct"),
            ("Utility Set", "Tru", ("utility_tru", "truthfulqa"), "pct"),
            ("Utility Set", "Fac", ("utility_fac", "triviaqa"), "pct"),
            ("Utility Set", "Flu", ("utility_flu", "fluency"), "num"),
        ],
        "tradeoff": (("forget_all", "forget_avg"), ("utility_gen", "mmlu")),
    },
    "snap": {
        "benchmark": "refusal",
        "title": "SNAP (Table 1)",
        "columns": [
            ("", "UA", "UA", "pct"),
            ("", "UA♣", "UA_multihop", "pct"),
            ("", "RA", "RA", "pct"),
            ("", "TA", "TA", "pct"),
            ("", "Avg.", "Avg", "pct"),
        ],
        "tradeoff": ("UA", "TA"),
    },
    "snap-table2": {
        "benchmark": "lm-eval",
        "title": "SNAP Table 2 (lm-eval, zero-shot)",
        "columns": [("", label, task, "pct") for label, task in SNAP_TABLE2]
        + [("", "Avg.", "snap_table2_avg", "pct"), ("", "Δ vs original", "snap_table2_drop", "rel")],
        "tradeoff": None,
        # shown only for runs holding at least one of these keys
        "requires": tuple(task for _, task in SNAP_TABLE2),
    },
    "audit": {  # `obliviate audit` (audit.json): each attack's recovered forget ROUGE-L, MIA AUCs, verdicts
        "benchmark": "audit",
        "title": "Audit: forget ROUGE-L recall after each attack (obliviate audit)",
        "columns": [
            ("", "Before", "before_rouge", "pct"),
            ("Relearn", "forget", "relearn_forget_rouge", "pct"),
            ("Relearn", "retain", "relearn_retain_rouge", "pct"),
            ("Quant", "8-bit", "quant8_rouge", "pct"),
            ("Quant", "4-bit", "quant4_rouge", "pct"),
            ("Prompt", "para.", "paraphrase_rouge", "pct"),
            ("Prompt", "lang.", "language_rouge", "pct"),
            ("Prompt", "in-ctx", "in_context_rouge", "pct"),
            ("Prompt", "jailbr.", "jailbreak_rouge", "pct"),
            ("Prompt", "sampl.", "sampling_rouge", "pct"),
            ("Prompt", "RWKU adv.", "adversarial_rouge", "pct"),
            ("MIA AUC", "loss", "mia_loss_auc", "num"),
            ("MIA AUC", "Min-K%++", "mia_min_k_pp_auc", "num"),
            ("", "Passed", "pass_rate", "pct"),
        ],
        "tradeoff": None,
    },
    "lm-eval": {
        "benchmark": "lm-eval",
        "title": "lm-evaluation-harness",
        "columns": None,  # one column per task found in the runs
        "tradeoff": None,
    },
}
LAYOUT_CHOICES = ("auto", "tofu", "rwku", "snap", "snap-table2", "lm-eval", "audit")
BLANK = "–"
#: per layout, a column that is a mean of others; shown blank (with a warning) over fewer than two of them
MEAN_COLUMNS = {"snap": ("Avg", ("UA", "UA_multihop", "RA", "TA"))}


# ----------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    """One table row: a name, where it came from, α when known, and metrics per benchmark."""

    name: str
    path: Path
    alpha: float | None = None
    method: str | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def value(self, benchmark: str, key: str | Sequence[str]) -> Any:
        """The metric ``key`` (or the first present of several) of ``benchmark``, or None."""
        m = self.results.get(benchmark) or {}
        for k in ([key] if isinstance(key, str) else key):
            if k in m and _is_number(m[k]):
                return m[k]
        return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: {what} is not valid JSON (line {e.lineno}): {e.msg}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, got {type(obj).__name__}")
    return obj


def _find_key(obj: Any, key: str, depth: int = 0) -> Any:
    """Breadth-first search for ``key`` in nested dicts (top level first)."""
    if not isinstance(obj, dict) or depth > 4:
        return None
    if key in obj and obj[key] not in (None, ""):
        return obj[key]
    for v in obj.values():
        if isinstance(v, dict):
            found = _find_key(v, key, depth + 1)
            if found not in (None, ""):
                return found
    return None


def _metrics_files(run_dir: Path) -> list[Path]:
    direct = run_dir / "metrics.json"
    audits = sorted(p for p in run_dir.rglob("audit.json") if len(p.relative_to(run_dir).parts) <= 4)
    if direct.is_file():
        return [direct] + audits
    found = sorted(p for p in run_dir.rglob("metrics.json") if len(p.relative_to(run_dir).parts) <= 4)
    return found + audits


def _benchmark_of(payload: dict, path: Path) -> str:
    b = payload.get("benchmark")
    if isinstance(b, str) and b:
        return {"snap": "refusal", "lm_eval": "lm-eval", "lmeval": "lm-eval"}.get(b, b)
    m = payload.get("metrics", payload)
    if "UA" in m or "RA" in m:
        return "refusal"
    if "forget_rouge" in m or "model_utility" in m:
        return "tofu"
    return path.parent.name


def _manifests(run_dir: Path, metric_files: Sequence[Path], payloads: Sequence[dict]) -> list[dict]:
    """Manifests that can name the method / α: beside each metrics.json, the run folder, and the
    evaluated model's folder (a merge / train output)."""
    seen, out = set(), []
    cands = [f.parent / "manifest.json" for f in metric_files] + [run_dir / "manifest.json"]
    for p in payloads:
        model = p.get("model")
        if isinstance(model, str) and model and Path(model).is_dir():
            cands.append(Path(model) / "manifest.json")
    for c in cands:
        c = c.resolve()
        if c in seen or not c.is_file():
            continue
        seen.add(c)
        try:
            out.append(_read_json(c, "manifest.json"))
        except ValueError as e:
            log.warning("%s", e)
    return out


def read_run(run_dir: str | os.PathLike, name: str | None = None) -> Run:
    """Read one run folder: every ``metrics.json`` in it (or below it) and its manifests.

    Raises FileNotFoundError when the folder or any ``metrics.json`` is missing and ValueError on
    malformed JSON (naming the file).
    """
    d = Path(run_dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"run folder not found: {d}")
    files = _metrics_files(d)
    if not files:
        raise FileNotFoundError(f"{d}: no metrics.json in this folder or its sub-folders "
                                f"(run `obliviate eval ... --out {d}` first)")
    results: dict[str, dict] = {}
    sources: dict[str, str] = {}
    payloads = []
    for f in files:
        payload = _read_json(f, "metrics.json")
        payloads.append(payload)
        metrics = payload.get("metrics", payload)
        if not isinstance(metrics, dict):
            raise ValueError(f"{f}: 'metrics' must be an object")
        bench = _benchmark_of(payload, f)
        if bench in results:
            log.warning("%s: a second %s result in this run; %s is used", d, bench, f)
        results[bench] = metrics
        sources[bench] = str(f)
    mans = _manifests(d, files, payloads)
    alpha = None
    method = None
    for src in [*payloads, *mans]:
        if alpha is None:
            a = _find_key(src, "alpha")
            if _is_number(a):
                alpha = float(a)
        if method is None:
            m = _find_key(src, "method")
            if isinstance(m, str):
                method = m
    run_name = name or (f"{method} (α={alpha:g})" if method and alpha is not None else method) or d.name
    return Run(name=run_name, path=d, alpha=alpha, method=method, results=results, sources=sources)


# ----------------------------------------------------------------------------- tables
def _layout_columns(layout: str, runs: Sequence[Run]) -> list[tuple[str, str, Any, str]]:
    spec = LAYOUTS[layout]
    if spec["columns"] is not None:
        return list(spec["columns"])
    keys: list[str] = []
    for r in runs:
        for k, v in (r.results.get(spec["benchmark"]) or {}).items():
            # "task/metric" details stay in report.json; preset summaries have their own layout (snap-table2)
            if _is_number(v) and "/" not in k and not k.startswith("snap_table2_") and k not in keys:
                keys.append(k)
    return [("", k, k, "pct") for k in keys]


def format_value(v: Any, fmt: str) -> str:
    """Render one cell: ``–`` when missing; fractions ×100 for "pct"; 3 significant digits for "p"."""
    if not _is_number(v):
        return BLANK
    v = float(v)
    if fmt == "pct":
        return f"{100 * v:.2f}"
    if fmt == "p":
        return f"{v:.3g}"
    if fmt == "x100":
        return f"{100 * v:.2f}"
    if fmt == "rel":
        return f"{100 * v:+.1f}%"
    return f"{v:.2f}"


def _interval(run: Run, benchmark: str, key: str | Sequence[str]) -> tuple[float, float] | None:
    """The 95 % interval stored beside a metric (``<key>_ci_low`` / ``<key>_ci_high``), or None."""
    for k in ([key] if isinstance(key, str) else key):
        if run.value(benchmark, k) is not None:
            lo, hi = run.value(benchmark, f"{k}_ci_low"), run.value(benchmark, f"{k}_ci_high")
            return (float(lo), float(hi)) if lo is not None and hi is not None else None
    return None


def _format_interval(iv: tuple[float, float] | None, fmt: str) -> str:
    """" [78.1, 91.0]" for a fraction's interval (×100 for "pct"), "" when there is none."""
    if iv is None:
        return ""
    scale = 100.0 if fmt == "pct" else 1.0
    return f" [{scale * iv[0]:.1f}, {scale * iv[1]:.1f}]"


def column_label(group: str, col: str) -> str:
    """Flat header for a (group, column) pair: "Forget Set R" or just "UA"."""
    return f"{group} {col}".strip()


def _snap_table2_values(runs: Sequence[Run], reference: int | str | None) -> dict[int, dict[str, Any]]:
    """Per run index: SNAP Table 2's average (stored, else the mean of the nine tasks) and its relative
    change (stored from ``eval lm-eval --reference``, else against the reference run; the reference
    run's own is blank)."""
    ref_i = 0
    if isinstance(reference, str):
        names = [r.name for r in runs]
        if reference not in names:
            raise ValueError(f"reference run {reference!r} is not one of {names}")
        ref_i = names.index(reference)
    elif isinstance(reference, int):
        if not 0 <= reference < len(runs):
            raise ValueError(f"reference run index {reference} is out of range for {len(runs)} run(s)")
        ref_i = reference
    ref = runs[ref_i].results.get("lm-eval") if runs else None
    out = {}
    for i, r in enumerate(runs):
        m = r.results.get("lm-eval") or {}
        sm = preset_summary(m, "snap-table2", None if i == ref_i else ref)
        avg = m.get("snap_table2_avg") if _is_number(m.get("snap_table2_avg")) else sm["snap_table2_avg"]
        drop = m.get("snap_table2_drop") if _is_number(m.get("snap_table2_drop")) else sm["snap_table2_drop"]
        out[i] = {"snap_table2_avg": avg, "snap_table2_drop": None if i == ref_i else drop}
    return out


def build_table(layout: str, runs: Sequence[Run], *, reference: int | str | None = None) -> dict:
    """Rows of ``layout`` for ``runs``: ``{"title", "columns", "rows": [[name, cell, ...]], "values"}``.

    ``values`` keeps the raw numbers (None when missing) for JSON and plots. ``reference`` (a run
    name or index; default the first run) is the original model that ``snap-table2``'s relative
    change is measured against. Layouts with ``requires`` keep only the runs that hold one of those keys.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUT_CHOICES)}")
    spec = LAYOUTS[layout]
    if spec.get("requires"):
        runs = [r for r in runs if any(r.value(spec["benchmark"], k) is not None for k in spec["requires"])]
    cols = _layout_columns(layout, runs)
    header = ["Method"] + [column_label(g, c) for g, c, _, _ in cols]
    rows, values = [], []
    notes = []
    derived = _snap_table2_values(runs, reference) if layout == "snap-table2" else {}
    for i, r in enumerate(runs):
        vals = [r.value(spec["benchmark"], k) for _, _, k, _ in cols]
        for j, (_, _, k, _) in enumerate(cols):
            if isinstance(k, str) and k in derived.get(i, {}):
                vals[j] = derived[i][k]
        m = r.results.get(spec["benchmark"]) or {}
        for (g, c, k, _), v in zip(cols, vals):  # present but not a number: say so instead of a silent blank
            raw = next((m[x] for x in ([k] if isinstance(k, str) else k) if x in m and m[x] is not None), None)
            if v is None and raw is not None:
                notes.append(f"{r.name}: {column_label(g, c)} is {raw!r} in "
                             f"{r.sources.get(spec['benchmark'], r.path)}, not a number; shown as {BLANK}")
        if layout in MEAN_COLUMNS:
            key, parts = MEAN_COLUMNS[layout]
            have = [p for p in parts if r.value(spec["benchmark"], p) is not None]
            for i, (_, _, k, _) in enumerate(cols):
                if k == key and vals[i] is not None and len(have) < 2:
                    vals[i] = None
                    notes.append(f"{r.name}: {key} would be the mean of {len(have)} metric(s) "
                                 f"({', '.join(have) or 'none'}); shown as {BLANK}")
        ivs = [_interval(r, spec["benchmark"], k) if v is not None else None for v, (_, _, k, _) in zip(vals, cols)]
        values.append({"run": r.name, "path": str(r.path), "alpha": r.alpha,
                       **{h: v for h, v in zip(header[1:], vals)},
                       "intervals": {h: list(iv) for h, iv in zip(header[1:], ivs) if iv is not None}})
        rows.append([r.name] + [format_value(v, f) + _format_interval(iv, f)
                                for v, iv, (_, _, _, f) in zip(vals, ivs, cols)])
    for n in notes:
        log.warning("%s", n)
    return {"layout": layout, "title": spec["title"], "benchmark": spec["benchmark"], "columns": header,
            "groups": [""] + [g for g, _, _, _ in cols], "rows": rows, "values": values, "notes": notes}


def table_markdown(table: dict) -> str:
    """GitHub Markdown for a :func:`build_table` result (column groups folded into the headers)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"### {table['title']}", "",
             "| " + " | ".join(esc(h) for h in table["columns"]) + " |",
             "| " + " | ".join(["---"] + ["---:"] * (len(table["columns"]) - 1)) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def table_csv(table: dict) -> str:
    """CSV text for a :func:`build_table` result (raw numbers, empty cell when missing)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Method", "alpha"] + table["columns"][1:])
    for v in table["values"]:
        w.writerow([v["run"], "" if v["alpha"] is None else v["alpha"]]
                   + ["" if v[h] is None else repr(float(v[h])) for h in table["columns"][1:]])
    return buf.getvalue()


def auto_layouts(runs: Sequence[Run]) -> list[str]:
    """Every layout whose benchmark appears in at least one run (in :data:`LAYOUTS` order)."""
    present = {b for r in runs for b in r.results}
    return [name for name, spec in LAYOUTS.items() if spec["benchmark"] in present
            and (not spec.get("requires")
                 or any(r.value(spec["benchmark"], k) is not None for r in runs for k in spec["requires"]))]


# ----------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_bars(table: dict, path: Path) -> Path | None:
    """One small bar chart per column (bars = runs), saved as PNG; None if the table has no numbers."""
    cols = [c for c in table["columns"][1:] if any(v[c] is not None for v in table["values"])]
    if not cols:
        return None
    plt = _plt()
    n = len(cols)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow + 0.6), squeeze=False)
    names = [v["run"] for v in table["values"]]
    fmts = {column_label(g, c): f for g, c, _, f in _layout_columns_from_table(table)}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(cols):
        ax = axes[i // ncol][i % ncol]
        scale = 100.0 if fmts.get(c) in ("pct", "x100", "rel") else 1.0
        ys = [(v[c] * scale) if v[c] is not None else 0.0 for v in table["values"]]
        ax.bar(range(len(names)), ys, color=[colors[j % len(colors)] for j in range(len(names))])
        for j, v in enumerate(table["values"]):
            if v[c] is None:
                ax.text(j, 0, BLANK, ha="center", va="bottom")
        if fmts.get(c) == "p" and all(y > 0 for y in ys):  # p-values span orders of magnitude
            ax.set_yscale("log")
        ax.set_title(c, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for j in range(n, nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    fig.suptitle(table["title"], fontsize=11)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _layout_columns_from_table(table: dict):
    spec = LAYOUTS[table["layout"]]
    if spec["columns"] is not None:
        return spec["columns"]
    return [("", c, c, "pct") for c in table["columns"][1:]]


def plot_tradeoff(layout: str, runs: Sequence[Run], path: Path) -> Path | None:
    """Forget metric (x) vs utility metric (y) for runs with an α, joined in α order; PNG or None.

    Needs at least two runs with α and both metrics (an α sweep of one method).
    """
    spec = LAYOUTS[layout]
    if not spec.get("tradeoff"):
        return None
    kx, ky = spec["tradeoff"]
    pts = []
    for r in runs:
        x, y = r.value(spec["benchmark"], kx), r.value(spec["benchmark"], ky)
        if r.alpha is not None and x is not None and y is not None:
            pts.append((r.alpha, 100 * x, 100 * y, r.name))
    if len(pts) < 2:
        return None
    pts.sort()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.plot([p[1] for p in pts], [p[2] for p in pts], "-o")
    for a, x, y, _ in pts:
        ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    xl = kx if isinstance(kx, str) else kx[0]
    yl = ky if isinstance(ky, str) else ky[0]
    ax.set_xlabel(f"{xl} (%)")
    ax.set_ylabel(f"{yl} (%)")
    ax.set_title(f"{spec['title']}: forgetting vs utility over α")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


#: per layout, whether a lower forget metric (x of the trade-off) means more forgetting
FORGET_LOWER_IS_BETTER = {"tofu": True, "rwku": True, "snap": False}


def frontier_points(layout: str, runs: Sequence[Run]) -> list[dict]:
    """One point per run holding both trade-off metrics of ``layout``: ``{name, method, alpha, forget,
    utility, on_frontier}`` (values ×100). ``on_frontier`` marks the Pareto-optimal runs: no other run
    forgets at least as much *and* keeps at least as much utility, better in one of the two (less forget
    ROUGE for TOFU / RWKU, more UA for SNAP; more utility: Model Utility, MMLU, TA)."""
    spec = LAYOUTS[layout]
    if not spec.get("tradeoff"):
        return []
    kx, ky = spec["tradeoff"]
    lower = FORGET_LOWER_IS_BETTER.get(layout, True)
    pts = []
    for r in runs:
        x, y = r.value(spec["benchmark"], kx), r.value(spec["benchmark"], ky)
        if x is not None and y is not None:
            pts.append({"name": r.name, "method": r.method, "alpha": r.alpha, "forget": 100 * x, "utility": 100 * y})

    def forgets_more_or_equal(a, b):  # a forgets at least as much as b
        return a["forget"] <= b["forget"] if lower else a["forget"] >= b["forget"]

    for p in pts:
        p["on_frontier"] = not any(
            q is not p and forgets_more_or_equal(q, p) and q["utility"] >= p["utility"]
            and (q["forget"] != p["forget"] or q["utility"] != p["utility"]) for q in pts)
    return pts


def runs_from_report(path: str | os.PathLike) -> list[Run]:
    """The runs of a written ``report.json`` (name, α, method, metrics), so a committed report can be
    re-plotted without the run folders it was made from."""
    p = Path(path)
    data = _read_json(p, "report")
    return [Run(name=r["name"], path=Path(r.get("path") or p.parent), alpha=r.get("alpha"), method=r.get("method"),
                results=r.get("metrics") or {}, sources=r.get("sources") or {}) for r in data.get("runs", [])]


def plot_frontier(layout: str, runs: Sequence[Run], path: Path) -> Path | None:
    """Forget-vs-utility frontier across methods: one point per run (method and α), the α points of a
    method joined in α order, the Pareto-optimal runs joined by a dashed line; PNG, or None with fewer
    than two runs holding both metrics."""
    pts = frontier_points(layout, runs)
    if len(pts) < 2:
        return None
    spec = LAYOUTS[layout]
    kx, ky = spec["tradeoff"]
    lower = FORGET_LOWER_IS_BETTER.get(layout, True)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    groups: dict[str, list[dict]] = {}
    for p in pts:
        # an α sweep of one method is one line: its method, else its name without the "(α=…)" suffix
        key = (p["method"] or p["name"].split(" (α")[0]) if p["alpha"] is not None else p["name"]
        groups.setdefault(key, []).append(p)
    for key, ps in groups.items():
        ps = sorted(ps, key=lambda p: (p["alpha"] is None, p["alpha"] or 0.0))
        style = "-o" if len(ps) > 1 else "o"
        ax.plot([p["forget"] for p in ps], [p["utility"] for p in ps], style, label=key, markersize=7)
        for p in ps:
            text = p["name"] if p["alpha"] is None or len(ps) == 1 else f"α={p['alpha']:g}"
            ax.annotate(text, (p["forget"], p["utility"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = sorted((p for p in pts if p["on_frontier"]), key=lambda p: p["forget"])
    if len(front) > 1:
        ax.plot([p["forget"] for p in front], [p["utility"] for p in front], "--", color="grey", linewidth=1,
                label="Pareto frontier")
    xl = kx if isinstance(kx, str) else kx[0]
    yl = ky if isinstance(ky, str) else ky[0]
    ax.set_xlabel(f"{xl} (%) — {'lower' if lower else 'higher'} = more forgetting")
    ax.set_ylabel(f"{yl} (%) — higher = more utility kept")
    if lower:
        ax.invert_xaxis()  # more forgetting to the right, more utility up: the good corner is top right
    ax.set_title(f"{spec['title']}: forgetting vs utility", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the command
def build_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, layout: str = "auto",
                 names: Sequence[str] | None = None, plots: bool = True,
                 reference: int | str | None = None) -> dict:
    """Write ``report.md``, ``<layout>.md``, ``<layout>.csv``, PNG plots and ``report.json`` into ``out_dir``.

    ``reference`` (run name or index, default the first) is the original model of ``snap-table2``.

    Returns the ``report.json`` content. Raises ValueError for an unknown layout or a ``names``
    list whose length differs from the number of runs.
    """
    if layout not in LAYOUT_CHOICES:
        raise ValueError(f"--layout {layout!r} is not one of {', '.join(LAYOUT_CHOICES)}")
    if not run_dirs:
        raise ValueError("give at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"--names has {len(names)} names for {len(run_dirs)} run folders")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    runs = [read_run(d, names[i] if names else None) for i, d in enumerate(run_dirs)]
    layouts = auto_layouts(runs) if layout == "auto" else [layout]
    if not layouts:
        found = sorted({b for r in runs for b in r.results})
        raise ValueError(f"no known benchmark in the runs (found {found}); pass --layout explicitly")
    md = ["# obliviate report", "", f"Runs: {len(runs)}", ""]
    md += [f"- **{r.name}**: `{r.path}`" + (f" (α = {r.alpha:g})" if r.alpha is not None else "") for r in runs]
    md.append("")
    report: dict[str, Any] = {"runs": [{"name": r.name, "path": str(r.path), "alpha": r.alpha, "method": r.method,
                                        "sources": r.sources, "metrics": r.results} for r in runs],
                              "tables": {}, "files": []}
    for lay in layouts:
        table = build_table(lay, runs, reference=reference)
        report["tables"][lay] = {k: table[k] for k in ("title", "benchmark", "columns", "rows", "values")}
        if frontier_points(lay, runs):
            report.setdefault("frontier", {})[lay] = frontier_points(lay, runs)
        tmd = table_markdown(table)
        md.append(tmd)
        stem = lay.replace("-", "_")
        files = [atomic_write_text(out / f"{stem}.md", tmd), atomic_write_text(out / f"{stem}.csv", table_csv(table))]
        if plots:
            for p in (plot_bars(table, out / f"{stem}_bars.png"), plot_tradeoff(lay, runs, out / f"{stem}_alpha.png"),
                      plot_frontier(lay, runs, out / f"{stem}_frontier.png")):
                if p is not None:
                    files.append(p)
                    md.append(f"![{p.stem}]({p.name})\n")
        report["files"] += [f.name for f in files]
        missing = sum(v[c] is None for v in table["values"] for c in table["columns"][1:])
        if missing:
            md.append(f"_{missing} cell(s) missing (–): the run did not report that metric._\n")
        md += [f"- {n}" for n in table.get("notes", [])] + ([""] if table.get("notes") else [])
    atomic_write_text(out / "report.md", "\n".join(md))
    report["files"] += ["report.md", "report.json"]
    atomic_write_json(out / "report.json", report)
    return report
