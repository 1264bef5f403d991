"""The stages of a run and their records: augment → train → merge → evaluate, for QA requests.

Each stage function writes into a folder of the run directory and is reused when the ``stage.json``
beside its output (the stage's config fields and the hashes of its inputs, written before the stage
runs) matches what the config asks for now, so an interrupted run resumes where it stopped (the
generation cache also resumes a half-done augmentation); a finished stage made with other settings
stops the run with the list of differing fields before anything is written, unless ``force``
(``obliviate run --force``) redoes it. The order of the stages, the modes (single, batch,
sequential) and the target requests' stages are :mod:`obliviate.runner`'s.

=============  ===================================================  ===========================
stage          ULMR                                                 other methods
=============  ===================================================  ===========================
augment        rewrites + negative responses (Tables 1, 2)          skipped (data used as is)
train          NLL on the augmented pairs (preset ``ulmr``)         the method's preset
               (``train: false`` presets such as Prompting skip it)
merge          θa = α·θ + (1 − α)·θ' for every α                    only with ``merge.enabled``
evaluate       ROUGE-L recall of greedy answers on the forget and retain sets (``eval.suite: rouge``)
               or the full TOFU benchmark (``eval.suite: tofu``)
=============  ===================================================  ===========================
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError
from .data.records import DataError, QARecord
from .data.sources import TOFU_HUB, default_rwku_source, default_tofu_source, resolve_records  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# the run config lives in obliviate.runconfig (one schema for every method and mode); re-exported here
from .runconfig import (EvalConfig, ForgetRequest, MergeConfig, ROUGE_MAX_NEW_TOKENS, RunConfig,  # noqa: F401,E402
                        SourcesConfig, load_run_config)

# ---------------------------------------------------------------------------------------------
# stage records: a stage's output is reused only when it was made from the same settings and inputs
# ---------------------------------------------------------------------------------------------
#: the record of the settings and inputs a stage was made with, in the stage's folder
STAGE_FILE = "stage.json"
#: TrainConfig fields that do not change the trained model (left out of the train stage's record)
TRAIN_FIELDS_NOT_RECORDED = ("progress", "num_workers", "logging_steps", "save_steps", "save_total_limit",
                             "description", "source")
_MISSING = "<absent>"


class StageMismatchError(ConfigError):
    """An existing stage of a run folder was made with other settings or inputs than the config asks for."""


def records_digest(records: Sequence[QARecord]) -> str:
    """sha256 of the records' content (every field, in order): the identity of a stage's data input."""
    import hashlib

    blob = json.dumps([r.to_dict() for r in records], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _plain(obj: Any) -> Any:
    from .io import redact

    return json.loads(json.dumps(redact(obj), sort_keys=True, default=str))


def stage_record(stage: str, fields: dict, inputs: dict | None = None) -> dict:
    """The record of one stage: its config ``fields`` and its ``inputs`` (name → content hash), plus a
    ``fingerprint`` = sha256 over both. Credentials in URLs are redacted first (they never change outputs)."""
    import hashlib

    fields, inputs = _plain(fields), _plain(inputs or {})
    blob = json.dumps({"fields": fields, "inputs": inputs}, sort_keys=True)
    return {"stage": stage, "fingerprint": hashlib.sha256(blob.encode()).hexdigest(), "fields": fields,
            "inputs": inputs}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def _show(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def stage_differences(old: dict, new: dict, *, inputs: bool = True) -> list[str]:
    """``field: old → new`` for every config field (dotted path) that differs between two stage records,
    and ``input NAME: changed`` for every input whose hash differs (when ``inputs``)."""
    diffs = []
    a, b = _flatten(old.get("fields", {})), _flatten(new.get("fields", {}))
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
        if va != vb:
            diffs.append(f"{k}: {_show(va)} → {_show(vb)}")
    if inputs:
        a, b = _flatten(old.get("inputs", {})), _flatten(new.get("inputs", {}))
        for k in sorted(set(a) | set(b)):
            if a.get(k, _MISSING) != b.get(k, _MISSING):
                diffs.append(f"input {k}: changed ({str(a.get(k, _MISSING))[:12]} → {str(b.get(k, _MISSING))[:12]})")
    return diffs


def read_stage_record(path: Path) -> dict | None:
    """The stage record at ``path``, or None when it is missing or unreadable."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "fields" in rec else None


def reuse_stage(record_path: Path, new: dict, done: bool, *, force: bool = False, inputs: bool = True,
                outputs: Sequence[Path] = (), run_dir: Path | None = None) -> bool:
    """Whether the finished output of a stage may be reused; else prepare to (re)run it.

    ``done``: the stage's output exists. Returns True when it does and its record (``record_path``)
    matches ``new`` (fields, and inputs when ``inputs``). A finished stage whose record differs (or
    is missing) raises :class:`StageMismatchError` listing the differing fields, unless ``force``:
    then its ``outputs`` are deleted and False is returned. Returns False when the stage is not done.
    """
    import shutil

    if not done:
        return False
    old = read_stage_record(record_path)
    if old is not None and old.get("fingerprint") == new["fingerprint"]:
        return True
    if old is None:
        diffs = [f"no record of the settings it was made with ({record_path.name} missing: made by an older "
                 "obliviate, or interrupted)"]
    else:
        diffs = stage_differences(old, new, inputs=inputs)
        if not diffs:
            return True
    where = record_path.parent
    if not force:
        more = f" (and {len(diffs) - 10} more)" if len(diffs) > 10 else ""
        raise StageMismatchError(
            f"{run_dir or where}: the finished stage '{new['stage']}' in {where} was made with other settings: "
            f"{'; '.join(diffs[:10])}{more}. Rerun with --force to redo it (and the stages after it) with the new "
            "config, or choose another --out")
    log.warning("%s: --force: redoing stage %s (%s)", where, new["stage"], "; ".join(diffs[:10]))
    for p in outputs:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    return False


def write_stage_record(record_path: Path, rec: dict) -> None:
    """Write a stage's record (before the stage runs: a finished output always has its record)."""
    from .io import atomic_write_json

    atomic_write_json(record_path, rec)


def _generator_spec(cfg: "RunConfig", model=None) -> Any:
    """The augment generator: ``cfg.generator`` (string or mapping) or ``transformers:<model>``;
    ``self`` and a transformers mapping without a model mean ``cfg.model`` unless a model is handed over."""
    g = cfg.generator
    if g is None or g == "self":
        return "self" if model is not None else f"transformers:{cfg.model}"
    if isinstance(g, dict) and g.get("backend", "transformers") == "transformers" \
            and g.get("model") in (None, "", "self") and model is None:
        return {**g, "model": cfg.model}
    return g


def augment_record(cfg: "RunConfig", forget: Sequence[QARecord] | None) -> dict:
    """The augment stage's record: generator identity, ULMR augmentation settings, the forget data's hash."""
    from .config import to_dict
    from .generate.factory import generator_identity

    return stage_record("augment", {"generator": generator_identity(_generator_spec(cfg), cfg.model),
                                    "augment": to_dict(cfg.augment.ulmr)},
                        None if forget is None else {"forget": records_digest(forget)})


def train_record(cfg: "RunConfig", streams: dict[str, Sequence[QARecord]] | None, model: Any = None) -> dict:
    """The train stage's record: the model it starts from (``model``, default ``cfg.model``), the
    resolved training settings, each stream's hash."""
    from .config import to_dict

    tc = {k: v for k, v in to_dict(cfg.train_config()).items() if k not in TRAIN_FIELDS_NOT_RECORDED}
    return stage_record("train", {"model": str(model if model is not None else cfg.model), "train": tc},
                        None if streams is None else {k: records_digest(v) for k, v in streams.items()})


def _weights_id(spec: Any) -> str:
    from .generate.factory import weights_fingerprint

    try:
        return weights_fingerprint(Path(str(spec))) or str(spec)
    except OSError:
        return str(spec)


def merge_record(cfg: "RunConfig", alpha: float, tuned: Path | None, base: Any = None) -> dict:
    """The record of one merge α: the base model, α, and a fingerprint of the trained weights."""
    return stage_record(f"merge α={alpha:g}", {"model": str(base or cfg.model), "alpha": alpha},
                        None if tuned is None else {"trained": _weights_id(tuned)})


#: the evaluation settings recorded for the QA suites (the refusal suite's are in obliviate.runner)
QA_EVAL_FIELDS = ("suite", "forget_split", "max_samples", "max_new_tokens", "batch_size", "retain_result", "audit",
                  "audit_reference")


def eval_fields(cfg: "RunConfig") -> dict:
    """The evaluation settings a QA model evaluation depends on (the suite and answer budget resolved)."""
    from .config import to_dict

    ev = {k: v for k, v in to_dict(cfg.eval).items() if k in QA_EVAL_FIELDS}
    suite = cfg.eval.resolved_suite("qa")
    return {**ev, "suite": suite, "max_new_tokens": cfg.eval.answer_budget(suite)}


def eval_record(cfg: "RunConfig", label: str, model_spec: Any, sets: dict[str, list[QARecord]] | None,
                system: str | None, out: Path) -> dict:
    """The record of one model's evaluation: the model, system prompt and evaluation settings; the
    model weights' fingerprint and the evaluated sets' hashes as inputs."""
    from .io import file_sha256

    spec = Path(str(model_spec))
    try:
        shown = str(spec.resolve().relative_to(out.resolve()))  # a run folder may be moved
    except ValueError:
        shown = str(model_spec)
    fields = {"model": shown, "system_prompt": system, "eval": eval_fields(cfg)}
    if cfg.eval.resolved_suite("qa") == "tofu":
        fields["tofu_source"] = cfg.data.tofu_source
    inputs = None
    if sets is not None:
        inputs = {"model": _weights_id(model_spec)}
        if cfg.eval.resolved_suite("qa") == "rouge":
            inputs.update({f"set.{k}": records_digest(v) for k, v in sets.items()})
        if cfg.eval.retain_result and Path(cfg.eval.retain_result).is_file():
            inputs["retain_result"] = file_sha256(cfg.eval.retain_result)
    return stage_record(f"eval {label}", fields, inputs)


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------
def _is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def stage_augment(cfg: RunConfig, forget: list[QARecord], out: Path, *, progress: bool = True,
                  model=None, tokenizer=None, force: bool = False, folder: Path | None = None
                  ) -> tuple[list[dict], dict]:
    """ULMR augmentation into ``folder`` (default ``out/augment``; reused when ``forget_augmented.jsonl``
    exists and its ``stage.json`` matches the generator, augmentation settings and forget data; see
    :func:`reuse_stage`)."""
    from .generate.factory import make_generator
    from .io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
    from .augment.ulmr import augment_ulmr, render_report

    d = folder if folder is not None else out / "augment"
    f = d / "forget_augmented.jsonl"
    rec = augment_record(cfg, forget)
    if reuse_stage(d / STAGE_FILE, rec, f.is_file(), force=force, outputs=[f], run_dir=out):
        stats = json.loads((d / "augment_stats.json").read_text()) if (d / "augment_stats.json").is_file() else {}
        log.info("augment: %s exists, reused", f)
        return read_jsonl(f), {**stats, "skipped": True}
    d.mkdir(parents=True, exist_ok=True)
    write_stage_record(d / STAGE_FILE, rec)
    spec = _generator_spec(cfg, model)
    gen = make_generator(spec, model=model, tokenizer=tokenizer, cache_dir=d / "cache", progress=progress)
    rows, stats = augment_ulmr(forget, gen, config=cfg.augment.ulmr, progress=progress)
    if not rows:
        raise DataError(f"augment: every generation was degenerate ({stats['dropped_reasons']})")
    atomic_write_json(d / "augment_stats.json", stats)
    atomic_write_text(d / "augment_report.md", render_report(rows, stats))
    atomic_write_jsonl(f, rows)  # last: its presence marks the stage as done
    return rows, stats


def stage_train(cfg: RunConfig, streams: dict[str, list[QARecord]], out: Path, *, progress: bool = True,
                model_spec: Any = None, tokenizer=None, force: bool = False, run_dir: Path | None = None,
                inputs: dict | None = None, record: dict | None = None) -> Path | None:
    """Train from ``model_spec`` (default ``cfg.model``) into ``out/train`` (none for ``train: false``
    presets). ``out/train/model`` is reused when its ``stage.json`` matches the start model, the
    training settings and the streams' data. ``inputs`` (name → file) go into the trainer's manifest;
    ``record`` is :func:`train_record` of these arguments when the caller already computed it. A run
    interrupted after writing a checkpoint (``save_steps``) resumes from its latest complete one when
    its recorded settings and data are the ones asked for now; otherwise training starts afresh."""
    from .train import train_unlearning

    tc = cfg.train_config()
    if not tc.train:
        return None
    final = out / "train" / "model"
    rec = record if record is not None else train_record(cfg, streams, model_spec)
    if reuse_stage(out / "train" / STAGE_FILE, rec, _is_model_dir(final), force=force,
                   outputs=[final, out / "train" / "checkpoints"], run_dir=run_dir or out):
        log.info("train: %s exists, reused", final)
        return final
    from .train import latest_checkpoint

    old = read_stage_record(out / "train" / STAGE_FILE)
    checkpoints = out / "train" / "checkpoints"
    resume = None
    if old is not None and old.get("fingerprint") == rec["fingerprint"]:
        resume = latest_checkpoint(checkpoints)  # an interrupted run with these settings
        if resume:
            log.info("train: resuming the interrupted run from %s", resume)
    if resume is None and checkpoints.is_dir():  # an interrupted run with other settings (or unrecorded): never resume it
        log.warning("train: removing %s: checkpoints of an interrupted run with other settings", checkpoints)
        shutil.rmtree(checkpoints)
    (out / "train").mkdir(parents=True, exist_ok=True)
    write_stage_record(out / "train" / STAGE_FILE, rec)
    tc.progress = progress
    return train_unlearning(model_spec if model_spec is not None else cfg.model, tokenizer, streams, tc,
                            out / "train", inputs=inputs, resume_from_checkpoint=resume)


def stage_merge(cfg: RunConfig, base: str | Path, tuned: Path, out: Path, *, progress: bool = True,
                force: bool = False, run_dir: Path | None = None) -> dict[float, Path]:
    """Average ``base`` and ``tuned`` for every α into ``out/merge/alpha_<α>`` (an existing one is reused
    when ``out/merge/alpha_<α>.stage.json`` matches the base, α and the trained weights)."""
    from .merge import merge_models

    res = {}
    for a in cfg.merge.alpha:
        target = out / "merge" / f"alpha_{a:g}"
        rec_path = out / "merge" / f"alpha_{a:g}.{STAGE_FILE}"
        rec = merge_record(cfg, a, tuned, base)
        if not reuse_stage(rec_path, rec, (target / "merge.json").is_file(), force=force, outputs=[target],
                           run_dir=run_dir or out):
            write_stage_record(rec_path, rec)
            merge_models(base, tuned, a, target, progress=progress, overwrite=True)
        res[a] = target
    return res


def rouge_eval(model, tokenizer, sets: dict[str, list[QARecord]], *, max_new_tokens: int = 64, batch_size: int = 16,
               system: str | None = None, progress: bool = False) -> tuple[dict[str, float], list[dict]]:
    """ROUGE-L recall of greedy answers against the reference answers, per set (TOFU's ROUGE metric).

    Returns ``({"<set>_rouge": mean recall, "<set>_n": count}, per-question rows)``.
    """
    from .evals.metrics import mean, rouge_l_recall
    from .evals.scoring import generate_answers

    questions = list(dict.fromkeys(r.question for recs in sets.values() for r in recs))
    answers = dict(zip(questions, generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                                                   batch_size=batch_size, system=system, progress=progress)))
    metrics: dict[str, float] = {}
    rows = []
    for name, recs in sets.items():
        scores = []
        for r in recs:
            s = rouge_l_recall(answers[r.question], r.answer)
            scores.append(s)
            rows.append({"set": name, "id": r.id, "question": r.question, "reference": r.answer,
                         "generation": answers[r.question], "rouge_l_recall": s})
        metrics[f"{name}_rouge"] = mean(scores)
        metrics[f"{name}_n"] = len(recs)
    return metrics, rows


def stage_eval(cfg: RunConfig, label: str, model_spec: str | Path, sets: dict[str, list[QARecord]], out: Path, *,
               system: str | None = None, progress: bool = True, force: bool = False,
               run_dir: Path | None = None) -> dict:
    """Evaluate one model into ``out/eval/<label>`` (its ``metrics.json`` is reused when ``stage.json``
    matches the model, its weights, the system prompt, the evaluation settings and the sets)."""
    from .io import atomic_write_json, atomic_write_jsonl
    from .models import load_model

    d = out / "eval" / label
    rec = eval_record(cfg, label, model_spec, sets, system, out)
    if reuse_stage(d / STAGE_FILE, rec, (d / "metrics.json").is_file(), force=force,
                   outputs=[d / "metrics.json", d / "generations.jsonl"], run_dir=run_dir or out):
        return json.loads((d / "metrics.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    write_stage_record(d / STAGE_FILE, rec)
    model, tok = load_model(str(model_spec))
    budget = cfg.eval.answer_budget(cfg.eval.resolved_suite("qa"))
    if cfg.eval.resolved_suite("qa") == "tofu":
        from .evals.tofu import evaluate_tofu

        source = cfg.data.tofu_source or default_tofu_source()
        metrics, rows = evaluate_tofu(model, tok, forget_split=cfg.eval.forget_split, source=source,
                                      max_samples=cfg.eval.max_samples, batch_size=cfg.eval.batch_size,
                                      max_new_tokens=budget, system_prompt=system, progress=progress,
                                      retain_result=cfg.eval.retain_result)
        metrics.pop("forget_truth_ratios", None)
    else:
        metrics, rows = rouge_eval(model, tok, sets, max_new_tokens=budget,
                                   batch_size=cfg.eval.batch_size, system=system, progress=progress)
    metrics = {"model": str(model_spec), **metrics}
    atomic_write_jsonl(d / "generations.jsonl", rows)
    atomic_write_json(d / "metrics.json", metrics)
    del model
    return metrics


def run_pipeline(cfg: RunConfig, *, progress: bool = True, force: bool = False) -> dict:
    """Run ``cfg`` with the one runner (:func:`obliviate.runner.run`); kept for code written against
    obliviate's first API. Returns ``{"results", "paths", "stages", "steps"}``."""
    from .runner import run

    return run(cfg, progress=progress, force=force)
