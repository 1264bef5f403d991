"""The resumable audit driver behind ``obliviate audit`` and the pipeline's ``eval.audit`` stage.

``run_audit`` runs each attack on each model role it needs — ``model`` (the unlearned model),
``base`` (the original), ``reference`` (a retrained model that never saw the forget set, optional)
— and writes into ``out``::

    attacks/<attack>.<role>.json   one per finished unit, written atomically, with a fingerprint
    audit.json                     everything below plus the flat "metrics" obliviate report reads
    report.md                      one table: each attack's recovered forget score next to Base, the
                                   unlearned model before the attack and the reference; verdicts
    relearning.png                 relearning curves (forget ROUGE-L / probability vs steps)
    manifest.json

A unit whose file exists with the same fingerprint (attack settings, model identity, data ids)
is skipped on a rerun, so an interrupted audit resumes. The verdict tolerances are not part of
the fingerprint: changing them only rewrites the report.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from ..io import Manifest, atomic_path, atomic_write_json, atomic_write_text
from .common import AuditConfig, build_audit_data, fingerprint, model_identity, score_items, summarize

log = logging.getLogger(__name__)

__all__ = ["run_audit", "stage_audit", "build_audit_table", "render_audit_report", "ROLES_FOR"]

#: which model roles each unit runs on ("clean" = no attack, the table's reference points)
ROLES_FOR = {"clean": ("model", "base", "reference"), "relearning": ("model", "reference"),
             "quantization": ("model", "reference"), "prompts": ("model", "reference"),
             "membership": ("model", "base", "reference")}
_VERDICT_KEYS = {"rouge_tolerance", "prob_tolerance", "auc_tolerance"}
_UNIT_SETTINGS = {
    "clean": ("max_new_tokens",),
    "relearning": ("relearn_fraction", "relearn_steps", "relearn_eval_every", "relearn_lr", "relearn_rank",
                   "relearn_alpha", "relearn_batch_size", "relearn_arms", "max_new_tokens"),
    "quantization": ("quant_bits", "quant_backend", "quant_group_size", "max_new_tokens"),
    "prompts": ("prompt_variants", "languages", "translator", "in_context_facts", "samples", "temperature",
                "sample_threshold", "max_new_tokens"),
    "membership": ("mia_k",),
}


def _unit_fingerprint(unit: str, role_spec: str, cfg: AuditConfig, data) -> str:
    settings = {k: getattr(cfg, k) for k in _UNIT_SETTINGS[unit]}
    return fingerprint({"unit": unit, "model": model_identity(role_spec), "seed": cfg.seed, "settings": settings,
                        "data": data.ids(), "version": 1})


def _read_unit(path: Path, fp: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return d if d.get("fingerprint") == fp else None


def run_audit(model: str, base: str, forget: str, out: str | Path, *, retain: str | None = None,
              reference: str | None = None, holdout: str | None = None, config: AuditConfig | Mapping | None = None,
              tofu_source: str | None = None, rwku_source: str | None = None, dtype: str = "auto",
              device: str = "auto", trust_remote_code: bool = False, progress: bool = True,
              label: str | None = None, plots: bool = True,
              shared_dir: str | Path | None = None) -> dict[str, Any]:
    """Audit ``model`` (unlearned) against ``base`` (original) and optionally ``reference``.

    Model specs are anything :func:`obliviate.models.load_model` accepts; data specs anything
    :func:`obliviate.data.sources.resolve_records` accepts (``tofu:forget01``, ``rwku:<target>``,
    files). Returns the ``audit.json`` content. Finished units are reused (see the module doc).
    ``shared_dir`` is a folder shared by the audits of several methods: the base and reference
    units are also stored there under their fingerprint, so auditing the next method against the
    same base and reference reuses them instead of attacking those models again.
    """
    from ..config import from_dict
    from ..models import load_model

    cfg = config if isinstance(config, AuditConfig) else from_dict(AuditConfig, dict(config or {}))
    cfg.validate()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    specs = {"model": str(model), "base": str(base)}
    if reference:
        specs["reference"] = str(reference)
    manifest = Manifest(out, "audit", config={"models": specs, "forget": forget, "retain": retain,
                                              "holdout": holdout, **cfg.to_dict()}, seed=cfg.seed)
    for role, spec in specs.items():
        manifest.add_input(role, spec)
    data = build_audit_data(forget, retain, cfg, holdout=holdout, tofu_source=tofu_source, rwku_source=rwku_source)
    translator = None
    if cfg.translator and "prompts" in cfg.attacks and "language" in cfg.prompt_variants:
        from ..generate.factory import make_generator

        gen = make_generator(cfg.translator, cache_dir=out / "translate_cache")
        translator = lambda prompts: gen.generate(prompts, max_new_tokens=256, temperature=0.0)  # noqa: E731

    units = ["clean"] + [a for a in cfg.attacks]
    todo = [(u, role) for role in specs for u in units if role in ROLES_FOR[u]]
    results: dict[str, dict[str, Any]] = {u: {} for u in units}
    status: dict[str, str] = {}
    bar = tqdm(todo, desc="audit", disable=not progress)
    pristine: dict[str, tuple[Any, Any]] = {}

    def load(role: str):
        return load_model(specs[role], dtype=dtype, device=device, trust_remote_code=trust_remote_code)

    def fresh(role: str):
        if role not in pristine:
            pristine.clear()  # hold at most one unmodified model
            pristine[role] = load(role)
        return pristine[role]

    for unit, role in bar:
        bar.set_postfix_str(f"{unit} · {role}")
        path = out / "attacks" / f"{unit}.{role}.json"
        fp = _unit_fingerprint(unit, specs[role], cfg, data)
        done = _read_unit(path, fp)
        shared = Path(shared_dir) / f"{unit}.{role}.{fp}.json" if shared_dir and role != "model" else None
        if done is None and shared is not None:
            done = _read_unit(shared, fp)
            if done is not None:
                atomic_write_json(path, done)
                status[f"{unit}.{role}"] = "reused (shared)"
        if done is not None:
            results[unit][role] = done["result"]
            status.setdefault(f"{unit}.{role}", "reused")
            continue
        t = time.time()
        if unit == "clean":
            m, tok = fresh(role)
            rows = score_items(m, tok, [r.question for r in data.forget], [r.answer for r in data.forget],
                               batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                               progress=f"{role} forget set" if progress else False)
            res = {**summarize(rows), "rows": rows}
        elif unit == "relearning":
            from .relearning import relearning_attack

            pristine.clear()
            res = relearning_attack(lambda: load(role), data, cfg, progress=progress, label=role)
        elif unit == "quantization":
            from .quantization import quantization_attack

            pristine.clear()
            res = quantization_attack(lambda: load(role), data, cfg, progress=progress, label=role)
        elif unit == "prompts":
            from .prompts import prompt_attack

            m, tok = fresh(role)
            res = prompt_attack(m, tok, data, cfg, progress=progress, label=role, translator=translator)
        else:
            from .membership import membership_attack

            m, tok = fresh(role)
            res = membership_attack(m, tok, data, cfg, progress=progress, label=role)
        record = {"unit": unit, "role": role, "model": specs[role], "fingerprint": fp,
                  "wall_time_s": round(time.time() - t, 2), "result": res}
        atomic_write_json(path, record)
        if shared is not None:
            atomic_write_json(shared, record)
        results[unit][role] = res
        status[f"{unit}.{role}"] = "done"
    pristine.clear()

    table = build_audit_table(results, data, cfg, has_reference="reference" in specs)
    audit = {
        "benchmark": "audit", "model": specs["model"], "base": specs["base"], "reference": specs.get("reference"),
        "method": label, "forget": forget, "retain": retain, "holdout": data.mia_source,
        "config": cfg.to_dict(), "notes": data.notes, "data": {
            "forget_n": len(data.forget), "relearn_train_n": len(data.relearn_train),
            "relearn_eval_n": len(data.relearn_eval), "retain_sample_n": len(data.retain_sample),
            "mia_members_n": len(data.mia_members), "mia_nonmembers_n": len(data.mia_nonmembers),
            "adversarial_n": len(data.adversarial)},
        "table": table["rows"], "verdicts": table["verdicts"], "metrics": table["metrics"],
        "curves": _curves(results), "units": status, "wall_time_s": round(time.time() - t0, 2),
    }
    files = ["audit.json", "report.md"]
    if plots and audit["curves"]:
        png = plot_relearning(audit["curves"], out / "relearning.png", base_level=table.get("relearn_base"))
        if png is not None:
            files.append(png.name)
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "report.md", render_audit_report(audit, has_plot="relearning.png" in files))
    for f in files:
        manifest.add_output(f)
    from importlib import metadata

    try:
        quanto = metadata.version("optimum-quanto")
    except metadata.PackageNotFoundError:
        quanto = None
    manifest.write(units=status, models=specs, optimum_quanto=quanto)
    return audit


# --------------------------------------------------------------------------------------------- table
def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(sum(xs) / len(xs)) if xs else None


def _subset_clean(clean: dict | None, questions: set[str], key: str):
    if not clean:
        return None
    return _mean([r[key] for r in clean.get("rows", []) if r["prompt"] in questions])


def _curves(results) -> dict[str, dict[str, Any]]:
    out = {}
    for role, res in (results.get("relearning") or {}).items():
        for arm, c in (res.get("arms") or {}).items():
            out[f"{role}/{arm}"] = {k: c[k] for k in ("steps", "rouge", "prob", "loss")}
    return out


def _judge(recovered, baseline, tol) -> tuple[float | None, str]:
    if recovered is None or baseline is None:
        return None, "n/a"
    d = float(recovered) - float(baseline)
    return d, "pass" if d <= tol + 1e-12 else "FAIL"


def build_audit_table(results: Mapping[str, Mapping[str, Any]], data, cfg: AuditConfig, *,
                      has_reference: bool) -> dict[str, Any]:
    """One row per (attack, metric): Base (no attack), unlearned before / after the attack, the
    reference under the same attack, the baseline, Δ = attacked − baseline and the verdict.

    Baseline: the reference under the same attack when there is one, else the unlearned model
    before the attack. A metric passes when Δ ≤ its tolerance; membership inference when
    ``|AUC − baseline| ≤ auc_tolerance`` (baseline the reference's AUC, else 0.5). An attack passes
    when all its judged metrics pass. Also returns the flat ``metrics`` dict for ``obliviate report``.
    """
    rows: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    clean = results.get("clean") or {}
    cm, cb, cr = clean.get("model"), clean.get("base"), clean.get("reference")
    tol = {"rouge": cfg.rouge_tolerance, "prob": cfg.prob_tolerance}
    if cm:
        metrics["before_rouge"], metrics["before_prob"] = cm.get("rouge"), cm.get("prob")
    if cb:
        metrics["base_rouge"], metrics["base_prob"] = cb.get("rouge"), cb.get("prob")
    if cr:
        metrics["reference_rouge"], metrics["reference_prob"] = cr.get("rouge"), cr.get("prob")

    def add(attack: str, key: str, base, before, recovered, ref, flat: str):
        for metric in ("rouge", "prob"):
            rec = (recovered or {}).get(metric)
            if rec is None:
                continue
            r_ref = (ref or {}).get(metric)
            baseline = r_ref if has_reference else (before or {}).get(metric)
            delta, verdict = _judge(rec, baseline, tol[metric])
            rows.append({"attack": attack, "key": key, "metric": "ROUGE-L" if metric == "rouge" else "Prob",
                         "base": (base or {}).get(metric), "before": (before or {}).get(metric),
                         "attacked": rec, "reference": r_ref, "baseline": baseline,
                         "baseline_from": "reference" if has_reference else "before", "delta": delta,
                         "tolerance": tol[metric], "verdict": verdict})
            metrics[f"{flat}_{metric}"] = rec

    relearn = results.get("relearning") or {}
    out_extra: dict[str, Any] = {}
    if relearn.get("model"):
        qs = {r.question for r in data.relearn_eval}
        base_eval = {"rouge": _subset_clean(cb, qs, "rouge"), "prob": _subset_clean(cb, qs, "prob")}
        out_extra["relearn_base"] = base_eval["rouge"]
        for arm, c in relearn["model"].get("arms", {}).items():
            before = {"rouge": c["rouge"][0], "prob": c["prob"][0]}
            after = {"rouge": c["rouge"][-1], "prob": c["prob"][-1]}
            rc = (relearn.get("reference") or {}).get("arms", {}).get(arm)
            ref = {"rouge": rc["rouge"][-1], "prob": rc["prob"][-1]} if rc else None
            add(f"relearning on {arm} ({c['steps'][-1]} steps)", f"relearning.{arm}", base_eval, before, after, ref,
                f"relearn_{arm}")
    quant = results.get("quantization") or {}
    for bits_key, res in (quant.get("model") or {}).items():
        add(f"quantization {bits_key} ({res['quantization']['backend']})", f"quantization.{bits_key}", cb, cm, res,
            (quant.get("reference") or {}).get(bits_key), f"quant{bits_key.removesuffix('bit')}")
    prompts = results.get("prompts") or {}
    names = {"paraphrase": "paraphrased question", "language": "other-language prompt",
             "in_context": "in-context facts", "jailbreak": "jailbreak prefixes (best of)",
             "sampling": "sampling (best of N)", "adversarial": "RWKU adversarial (level 3)"}
    skipped = []
    for variant, res in (prompts.get("model") or {}).items():
        if "skipped" in res:
            skipped.append(f"{variant}: {res['skipped']}")
            continue
        ref = (prompts.get("reference") or {}).get(variant)
        ref = ref if ref and "skipped" not in ref else None
        add(f"prompt: {names.get(variant, variant)}", f"prompts.{variant}", cb, cm, res, ref, variant)
        if variant == "sampling":
            metrics["sampling_hit_rate"] = res.get("hit_rate")
    mia = results.get("membership") or {}
    mm = mia.get("model")
    if mm and "auc" in mm:
        for score, auc in mm["auc"].items():
            r_auc = (mia.get("reference") or {}).get("auc", {}).get(score)
            b_auc = (mia.get("base") or {}).get("auc", {}).get(score)
            baseline = r_auc if has_reference and r_auc is not None else 0.5
            d = auc - baseline
            rows.append({"attack": f"membership inference: {score}", "key": f"membership.{score}", "metric": "AUC",
                         "base": b_auc, "before": None, "attacked": auc, "reference": r_auc, "baseline": baseline,
                         "baseline_from": "reference" if has_reference and r_auc is not None else "chance (0.5)",
                         "delta": d, "tolerance": cfg.auc_tolerance,
                         "verdict": "pass" if abs(d) <= cfg.auc_tolerance + 1e-12 else "FAIL"})
            metrics[f"mia_{score}_auc"] = auc
    elif mm:
        skipped.append(f"membership: {mm.get('skipped')}")
    verdicts: dict[str, str] = {}
    for r in rows:
        a = r["attack"]
        if r["verdict"] == "n/a":
            verdicts.setdefault(a, "n/a")
        elif r["verdict"] == "FAIL":
            verdicts[a] = "FAIL"
        elif verdicts.get(a) in (None, "n/a"):
            verdicts[a] = "pass"
    judged = [v for v in verdicts.values() if v != "n/a"]
    metrics["attacks_judged"] = len(judged)
    metrics["attacks_passed"] = sum(v == "pass" for v in judged)
    metrics["pass_rate"] = metrics["attacks_passed"] / len(judged) if judged else None
    return {"rows": rows, "verdicts": verdicts, "metrics": metrics, "skipped": skipped, **out_extra}


# --------------------------------------------------------------------------------------------- output
def _cell(v, metric: str = "ROUGE-L") -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if metric == "AUC" else f"{100 * v:.1f}"


def render_audit_report(audit: Mapping[str, Any], *, has_plot: bool = False) -> str:
    """``report.md``: models, data, tolerances, the one audit table, verdicts and notes."""
    cfg = audit["config"]
    d = audit["data"]
    lines = [f"# obliviate audit: {audit.get('method') or audit['model']}", "",
             f"- unlearned model: `{audit['model']}`", f"- base (original): `{audit['base']}`",
             f"- reference (retrained): `{audit['reference']}`" if audit.get("reference") else
             "- reference: none (baselines are the unlearned model before each attack; MIA against AUC 0.5)",
             f"- forget: `{audit['forget']}` ({d['forget_n']} questions; relearning trains on {d['relearn_train_n']}, "
             f"scores the other {d['relearn_eval_n']}); retain: `{audit.get('retain')}`",
             f"- membership inference: {audit.get('holdout') or 'not run'} "
             f"({d['mia_members_n']} members / {d['mia_nonmembers_n']} non-members)",
             f"- seed {cfg['seed']}, greedy answers of at most {cfg['max_new_tokens']} tokens; wall time "
             f"{audit['wall_time_s']:.0f} s", "",
             "## Verdicts", "",
             f"Tolerance: an attack **passes** when its recovered forget score is at most "
             f"{100 * cfg['rouge_tolerance']:.0f} ROUGE-L points and {100 * cfg['prob_tolerance']:.0f} probability points "
             f"above the baseline (the reference under the same attack, else the unlearned model before the attack); "
             f"membership inference passes when its AUC is within {cfg['auc_tolerance']:.2f} of the reference's "
             f"(else of 0.5).", ""]
    passed = audit["metrics"].get("attacks_passed", 0)
    judged = audit["metrics"].get("attacks_judged", 0)
    lines += [f"**{passed} of {judged} attacks passed.**", ""]
    lines += [f"- {a}: **{v}**" for a, v in audit["verdicts"].items()]
    lines += ["", "## Forget-set scores under attack", "",
              "ROUGE-L recall and probability ×100, AUC as is. Base and Before: no attack (relearning: on the "
              "held-out 80 %); Attacked: the unlearned model under the attack; Reference: the reference under the "
              "same attack; Δ = Attacked − Baseline.", "",
              "| Attack | Metric | Base | Before | Attacked | Reference | Baseline | Δ | Verdict |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in audit["table"]:
        m = r["metric"]
        lines.append(f"| {r['attack']} | {m} | {_cell(r['base'], m)} | {_cell(r['before'], m)} | "
                     f"{_cell(r['attacked'], m)} | {_cell(r['reference'], m)} | {_cell(r['baseline'], m)} | "
                     f"{_cell(r['delta'], m) if r['delta'] is not None else '–'} | {r['verdict']} |")
    if audit.get("curves"):
        lines += ["", "## Relearning curves (forget ROUGE-L ×100 on the held-out questions)", "",
                  "| model / data | " + " | ".join(f"step {s}" for s in next(iter(audit["curves"].values()))["steps"])
                  + " |", "| --- |" + " ---: |" * len(next(iter(audit["curves"].values()))["steps"])]
        for name, c in audit["curves"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(v) for v in c["rouge"]) + " |")
        if has_plot:
            lines += ["", "![relearning curves](relearning.png)"]
    if audit.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in audit["notes"]]
    return "\n".join(lines) + "\n"


def plot_relearning(curves: Mapping[str, Mapping[str, Any]], path: Path, *, base_level: float | None = None):
    """Forget ROUGE-L and probability (×100) vs relearning steps, one line per model/arm; PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "rouge", "forget ROUGE-L recall"), (axes[1], "prob", "forget probability")):
        for name, c in curves.items():
            ys = [100 * v if v is not None else float("nan") for v in c[key]]
            ax.plot(c["steps"], ys, "-o" if name.startswith("model") else "--s", label=name, markersize=4)
        if key == "rouge" and base_level is not None:
            ax.axhline(100 * base_level, color="grey", linestyle=":", label="base (no attack)")
        ax.set_xlabel("LoRA relearning steps")
        ax.set_ylabel(f"{title} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- pipeline hook
def stage_audit(cfg, label: str, model_spec: str | Path, out: str | Path, *, reference: str | None = None,
                audit: AuditConfig | Mapping | None = None, progress: bool = True, request=None,
                dest: str | Path | None = None) -> dict[str, Any]:
    """The ``eval.audit`` stage of ``obliviate run``: audit one evaluated model of a run.

    ``cfg`` is the :class:`~obliviate.runconfig.RunConfig`: its ``model`` is the base; ``request``
    (a QA :class:`~obliviate.runconfig.ForgetRequest`, default the run's first) gives the forget set
    (its ``eval_forget``, else ``forget``) and the retain set (``eval_retain``, else ``retain``).
    Writes into ``dest`` (default ``out/audit/<label>``) and is resumable like :func:`run_audit`
    (finished attacks are reused).
    """
    req = request if request is not None else cfg.requests[0]
    return run_audit(str(model_spec), cfg.model, req.eval_forget or req.forget,
                     Path(dest) if dest is not None else Path(out) / "audit" / label,
                     retain=req.eval_retain or req.retain, reference=reference, config=audit,
                     tofu_source=cfg.data.tofu_source, rwku_source=cfg.data.rwku_source, progress=progress,
                     label=f"{cfg.method}:{label}")
