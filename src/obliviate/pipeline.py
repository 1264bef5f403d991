"""The whole pipeline in one run directory: augment → train → merge → evaluate → report.

``obliviate run CONFIG.yaml`` builds a :class:`RunConfig` (validated before any heavy work: the
method, the training settings through the method preset, α values, data sources) and runs the
stages the method needs:

=============  ===================================================  ===========================
stage          ULMR                                                 other methods
=============  ===================================================  ===========================
augment        rewrites + negative responses (Tables 1, 2)          skipped (data used as is)
train          NLL on the augmented pairs (preset ``ulmr``)         the method's preset
               (``train: false`` presets such as Prompting skip it)
merge          θa = α·θ + (1 − α)·θ' for every α                    only with ``merge.enabled``
evaluate       ROUGE-L recall of greedy answers on the forget and retain sets (``eval.suite: rouge``)
               or the full TOFU benchmark (``eval.suite: tofu``), for the base, trained and merged models
=============  ===================================================  ===========================

Layout of ``out``::

    config.yaml  manifest.json  report.md  metrics.json
    augment/   forget_augmented.jsonl  augment_report.md  augment_stats.json  cache/
    train/     model/ (+ README.md model card)  train_log.jsonl  config.yaml  manifest.json
    merge/     alpha_<α>/  (safetensors model + tokenizer + merge.json + manifest.json + README.md)
    eval/      <model label>/metrics.json  generations.jsonl

A finished stage is reused only when the ``stage.json`` beside its output (the stage's config fields
and the hashes of its inputs, written before the stage runs) matches what the config asks for now, so
an interrupted run resumes where it stopped (the generation cache also resumes a half-done
augmentation); a finished stage made with other settings stops the run with the list of differing
fields before anything is written, unless ``force`` (``obliviate run --force``) redoes it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from .augment.ulmr import UlmrAugmentConfig
from .config import ConfigError, check_range, load_config
from .data.records import DataError, QARecord
from .data.sources import TOFU_HUB, default_rwku_source, default_tofu_source, resolve_records  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Data sources (files, saved datasets, ``tofu:<split>``, ``rwku:<target>``)."""

    forget: str = ""
    retain: str | None = None
    eval_forget: str | None = None  #: default: ``forget``
    eval_retain: str | None = None  #: default: ``retain``
    target: str | None = None       #: the unlearning target's name (Prompting's system prompt)
    tofu_source: str | None = None
    rwku_source: str | None = None
    limit: int | None = None        #: use only the first N forget records

    def validate(self) -> None:
        if not self.forget:
            raise ConfigError("data.forget: required (a file, a saved dataset, or tofu:<split>)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit: must be >= 1, got {self.limit}")


@dataclass
class MergeConfig:
    """Parameter averaging θa = α·θ + (1 − α)·θ' (α = weight of the original model)."""

    alpha: list[float] = field(default_factory=lambda: [0.5])
    enabled: bool | None = None  #: None: on for ULMR, off for the other methods

    def validate(self) -> None:
        if not self.alpha:
            raise ConfigError("merge.alpha: give at least one value in [0, 1]")
        for i, a in enumerate(self.alpha):
            check_range(f"merge.alpha[{i}]", a, 0.0, 1.0)
        if len(set(self.alpha)) != len(self.alpha):
            raise ConfigError(f"merge.alpha: duplicate values in {self.alpha}")


#: the quick ``rouge`` suite's default answer budget (short QA answers, as ``obliviate demo`` uses)
ROUGE_MAX_NEW_TOKENS = 64


@dataclass
class EvalConfig:
    """Evaluation: ``rouge`` (ROUGE-L recall of greedy answers on forget/retain) or ``tofu`` (full TOFU)."""

    suite: Literal["rouge", "tofu", "none"] = "rouge"
    forget_split: str = "forget01"   #: TOFU suite: which forget split
    max_samples: int | None = None   #: cap every evaluated set (first N)
    #: greedy answer budget; None = the suite's convention: 200 for ``tofu`` (open-unlearning's
    #: generation config, :data:`obliviate.evals.tofu.DEFAULT_MAX_NEW_TOKENS`), 64 for the quick ``rouge`` suite
    max_new_tokens: int | None = None
    batch_size: int = 16
    models: list[str] = field(default_factory=lambda: ["base", "trained", "merged"])
    #: TOFU suite: a retain model's saved forget-set truth ratios (an ``obliviate eval tofu`` run dir,
    #: its metrics.json / samples.jsonl, a JSON list, or TOFU's eval_log_forget.json) for forget quality
    retain_result: str | None = None
    #: ``obliviate audit`` settings (:class:`~obliviate.audit.common.AuditConfig` fields, ``{}`` for its
    #: defaults) to audit every evaluated model except the base after evaluation; None = no audit
    audit: dict | None = None
    #: the audit's reference model (a Retraining model that never saw the forget set), optional
    audit_reference: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens is None:  # the suite's convention (see the field's comment)
            from .evals.tofu import DEFAULT_MAX_NEW_TOKENS

            self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS if self.suite == "tofu" else ROUGE_MAX_NEW_TOKENS

    def validate(self) -> None:
        if self.audit is not None:  # fail on a bad audit setting before any heavy work
            from .audit.common import AuditConfig
            from .config import from_dict

            if not isinstance(self.audit, dict):
                raise ConfigError(f"eval.audit: a mapping of audit settings (or {{}}), got {self.audit!r}")
            from_dict(AuditConfig, dict(self.audit))
        elif self.audit_reference is not None:
            raise ConfigError("eval.audit_reference: only used with eval.audit")
        if self.retain_result is not None:
            if self.suite != "tofu":
                raise ConfigError("eval.retain_result: only used with eval.suite: tofu")
            from .evals.tofu import load_retain_truth_ratios

            try:
                load_retain_truth_ratios(self.retain_result)  # fail before any heavy work
            except (OSError, ValueError) as e:
                raise ConfigError(f"eval.retain_result: {e}") from None
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("eval.max_new_tokens and eval.batch_size must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"eval.max_samples: must be >= 1, got {self.max_samples}")
        bad = set(self.models) - {"base", "trained", "merged"}
        if bad:
            raise ConfigError(f"eval.models: unknown {sorted(bad)}; allowed: ['base', 'trained', 'merged']")


@dataclass
class RunConfig:
    """One unlearning run: method, model, data, and the settings of each stage."""

    method: str = "ulmr"
    model: str = "smollm2-135m-instruct"
    out: str = ""
    seed: int = 0
    #: augment generator: a spec string or a ``GeneratorConfig`` mapping; default ``transformers:<model>`` (p_θ)
    generator: str | dict[str, Any] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augment: UlmrAugmentConfig = field(default_factory=UlmrAugmentConfig)
    train: dict[str, Any] = field(default_factory=dict)  #: TrainConfig fields over the method preset
    merge: MergeConfig = field(default_factory=MergeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        from .methods import method_names

        if self.method not in method_names():
            raise ConfigError(f"method: unknown method {self.method!r}; allowed: {method_names()}")
        if not self.out:
            raise ConfigError("out: required (the run directory)")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if "method" in self.train and self.train["method"] != self.method:
            raise ConfigError(f"train.method: {self.train['method']!r} differs from method {self.method!r}")
        if self.generator is not None and self.generator != "self":
            from .generate.factory import as_generator_config

            as_generator_config(self.generator)  # a string form or a mapping (README "Choosing a generator")

    # derived -------------------------------------------------------------------------------
    def train_config(self):
        """The resolved :class:`~obliviate.train.TrainConfig` (preset ← ``train`` overrides), validated."""
        from .train import resolve_train_config

        data = {"seed": self.seed, **self.train}
        try:
            return resolve_train_config(self.method, data)
        except ConfigError as e:
            raise ConfigError(f"train.{e}" if not str(e).startswith("train") else str(e)) from e

    @property
    def merge_enabled(self) -> bool:
        return self.merge.enabled if self.merge.enabled is not None else self.method == "ulmr"

    @property
    def augment_enabled(self) -> bool:
        return self.method == "ulmr"


def load_run_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), base: dict | None = None
                    ) -> RunConfig:
    """Read a run config YAML (+ ``--set`` overrides) and validate it fully (incl. the training preset)."""
    cfg = load_config(RunConfig, path, overrides, base=base)
    tc = cfg.train_config()
    from .methods import build_terms, streams_needed

    needs = streams_needed(build_terms(tc)[0]) if tc.train else []
    if "retain" in needs and not cfg.data.retain:
        raise ConfigError(f"data.retain: method {cfg.method!r} trains on a retain set; give data.retain")
    return cfg


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
                                    "augment": to_dict(cfg.augment)},
                        None if forget is None else {"forget": records_digest(forget)})


def train_record(cfg: "RunConfig", streams: dict[str, Sequence[QARecord]] | None) -> dict:
    """The train stage's record: the base model, the resolved training settings, each stream's hash."""
    from .config import to_dict

    tc = {k: v for k, v in to_dict(cfg.train_config()).items() if k not in TRAIN_FIELDS_NOT_RECORDED}
    return stage_record("train", {"model": cfg.model, "train": tc},
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


def eval_record(cfg: "RunConfig", label: str, model_spec: Any, sets: dict[str, list[QARecord]] | None,
                system: str | None, out: Path) -> dict:
    """The record of one model's evaluation: the model, system prompt and evaluation settings; the
    model weights' fingerprint and the evaluated sets' hashes as inputs."""
    from .config import to_dict
    from .io import file_sha256

    spec = Path(str(model_spec))
    try:
        shown = str(spec.resolve().relative_to(out.resolve()))  # a run folder may be moved
    except ValueError:
        shown = str(model_spec)
    ev = {k: v for k, v in to_dict(cfg.eval).items() if k != "models"}
    fields = {"model": shown, "system_prompt": system, "eval": ev}
    if cfg.eval.suite == "tofu":
        fields["tofu_source"] = cfg.data.tofu_source
    inputs = None
    if sets is not None:
        inputs = {"model": _weights_id(model_spec)}
        if cfg.eval.suite == "rouge":
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
                  model=None, tokenizer=None, force: bool = False) -> tuple[list[dict], dict]:
    """ULMR augmentation into ``out/augment`` (reused when ``forget_augmented.jsonl`` exists and its
    ``stage.json`` matches the generator, augmentation settings and forget data; see :func:`reuse_stage`)."""
    from .generate.factory import make_generator
    from .io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
    from .augment.ulmr import augment_ulmr, render_report

    d = out / "augment"
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
    rows, stats = augment_ulmr(forget, gen, config=cfg.augment, progress=progress)
    if not rows:
        raise DataError(f"augment: every generation was degenerate ({stats['dropped_reasons']})")
    atomic_write_json(d / "augment_stats.json", stats)
    atomic_write_text(d / "augment_report.md", render_report(rows, stats))
    atomic_write_jsonl(f, rows)  # last: its presence marks the stage as done
    return rows, stats


def stage_train(cfg: RunConfig, streams: dict[str, list[QARecord]], out: Path, *, progress: bool = True,
                model_spec: Any = None, tokenizer=None, force: bool = False) -> Path | None:
    """Train into ``out/train`` (none for ``train: false`` presets). ``out/train/model`` is reused when
    its ``stage.json`` matches the model, the training settings and the streams' data."""
    from .train import train_unlearning

    tc = cfg.train_config()
    if not tc.train:
        return None
    final = out / "train" / "model"
    rec = train_record(cfg, streams)
    if reuse_stage(out / "train" / STAGE_FILE, rec, _is_model_dir(final), force=force,
                   outputs=[final, out / "train" / "checkpoints"], run_dir=out):
        log.info("train: %s exists, reused", final)
        return final
    (out / "train").mkdir(parents=True, exist_ok=True)
    write_stage_record(out / "train" / STAGE_FILE, rec)
    tc.progress = progress
    return train_unlearning(model_spec if model_spec is not None else cfg.model, tokenizer, streams, tc,
                            out / "train")


def stage_merge(cfg: RunConfig, base: str | Path, tuned: Path, out: Path, *, progress: bool = True,
                force: bool = False) -> dict[float, Path]:
    """Average ``base`` and ``tuned`` for every α into ``out/merge/alpha_<α>`` (an existing one is reused
    when ``out/merge/alpha_<α>.stage.json`` matches the base, α and the trained weights)."""
    from .merge import merge_models

    res = {}
    for a in cfg.merge.alpha:
        target = out / "merge" / f"alpha_{a:g}"
        rec_path = out / "merge" / f"alpha_{a:g}.{STAGE_FILE}"
        rec = merge_record(cfg, a, tuned, base)
        if not reuse_stage(rec_path, rec, (target / "merge.json").is_file(), force=force, outputs=[target],
                           run_dir=out):
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
               system: str | None = None, progress: bool = True, force: bool = False) -> dict:
    """Evaluate one model into ``out/eval/<label>`` (its ``metrics.json`` is reused when ``stage.json``
    matches the model, its weights, the system prompt, the evaluation settings and the sets)."""
    from .io import atomic_write_json, atomic_write_jsonl
    from .models import load_model

    d = out / "eval" / label
    rec = eval_record(cfg, label, model_spec, sets, system, out)
    if reuse_stage(d / STAGE_FILE, rec, (d / "metrics.json").is_file(), force=force,
                   outputs=[d / "metrics.json", d / "generations.jsonl"], run_dir=out):
        return json.loads((d / "metrics.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    write_stage_record(d / STAGE_FILE, rec)
    model, tok = load_model(str(model_spec))
    if cfg.eval.suite == "tofu":
        from .evals.tofu import evaluate_tofu

        source = cfg.data.tofu_source or default_tofu_source()
        metrics, rows = evaluate_tofu(model, tok, forget_split=cfg.eval.forget_split, source=source,
                                      max_samples=cfg.eval.max_samples, batch_size=cfg.eval.batch_size,
                                      max_new_tokens=cfg.eval.max_new_tokens, system_prompt=system, progress=progress,
                                      retain_result=cfg.eval.retain_result)
        metrics.pop("forget_truth_ratios", None)
    else:
        metrics, rows = rouge_eval(model, tok, sets, max_new_tokens=cfg.eval.max_new_tokens,
                                   batch_size=cfg.eval.batch_size, system=system, progress=progress)
    metrics = {"model": str(model_spec), **metrics}
    atomic_write_jsonl(d / "generations.jsonl", rows)
    atomic_write_json(d / "metrics.json", metrics)
    del model
    return metrics


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def render_run_report(cfg: RunConfig, results: dict[str, dict], info: dict) -> str:
    """Markdown summary of a run: stages, augmentation counts and the metrics table."""
    lines = [f"# obliviate run: {cfg.method} on {cfg.model}", "",
             f"Run directory: `{cfg.out}`  ", f"Wall time: {info.get('wall_time_s', 0):.1f} s", ""]
    lines += ["| stage | status |", "| --- | --- |"]
    for st, status in info.get("stages", {}).items():
        lines.append(f"| {st} | {status} |")
    lines.append("")
    aug = info.get("augment")
    if aug and "kept" in aug:
        lines += [f"Augmentation: kept {aug['kept']} of {aug.get('requested', '?')} pairs, "
                  f"{aug.get('regenerated', 0)} regenerated, {aug.get('dropped', 0)} dropped "
                  f"{aug.get('dropped_reasons', {}) or ''}", ""]
    if results:
        keys = [k for k in next(iter(results.values())) if k.endswith(("_rouge", "_prob", "_truth_ratio",
                                                                      "forget_quality", "model_utility"))]
        lines += ["| model | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
        for label, m in results.items():
            lines.append(f"| {label} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def _eval_plan(cfg: RunConfig, tc, out: Path) -> list[tuple[str, Any, str | None]]:
    """``(label, model spec, system prompt)`` of every model the run evaluates."""
    from .methods import prompting_system_prompt

    if cfg.eval.suite == "none":
        return []
    system = None
    if not tc.train and tc.system_prompt:
        system = prompting_system_prompt(cfg.data.target or "the unlearning target", tc.system_prompt)
    todo: list[tuple[str, Any, str | None]] = []
    if "base" in cfg.eval.models:
        todo.append(("base", cfg.model, None))
        if system:
            todo.append(("prompting", cfg.model, system))
    if tc.train and "trained" in cfg.eval.models:
        todo.append(("trained", out / "train" / "model", None))
    if tc.train and cfg.merge_enabled and "merged" in cfg.eval.models:
        todo += [(f"merged_alpha_{a:g}", out / "merge" / f"alpha_{a:g}", None) for a in cfg.merge.alpha]
    return todo


def check_run_dir(cfg: RunConfig, out: Path | None = None, *, forget: Sequence[QARecord] | None = None,
                  retain: Sequence[QARecord] | None = None, eval_sets: dict[str, list[QARecord]] | None = None
                  ) -> None:
    """Before anything is written: every finished stage in the run folder must have been made with the
    settings ``cfg`` asks for and, where they are known up front (the data given, the outputs of the
    finished stages before it), from the same inputs; inputs are checked again when each stage is
    reached. Raises :class:`StageMismatchError` listing every difference, stage by stage."""
    from .io import read_jsonl

    out = Path(cfg.out) if out is None else out
    tc = cfg.train_config()
    plan: list[tuple[Path, dict, bool, bool]] = []  # record path, record, stage done, inputs known
    streams: dict[str, Sequence[QARecord]] | None = None
    if forget is not None:
        streams = {"forget": forget, **({"retain": retain} if retain else {})}
    if cfg.augment_enabled and tc.train:
        f = out / "augment" / "forget_augmented.jsonl"
        rec = augment_record(cfg, forget)
        plan.append((out / "augment" / STAGE_FILE, rec, f.is_file(), forget is not None))
        streams = None
        old = read_stage_record(out / "augment" / STAGE_FILE)
        if forget is not None and f.is_file() and old is not None and old.get("fingerprint") == rec["fingerprint"]:
            from .augment.ulmr import rows_to_records

            streams = {"forget": rows_to_records(read_jsonl(f)), **({"retain": retain} if retain else {})}
    if tc.train:
        model = out / "train" / "model"
        plan.append((out / "train" / STAGE_FILE, train_record(cfg, streams), _is_model_dir(model), streams is not None))
        if cfg.merge_enabled:
            plan += [(out / "merge" / f"alpha_{a:g}.{STAGE_FILE}", merge_record(cfg, a, model, cfg.model),
                      (out / "merge" / f"alpha_{a:g}" / "merge.json").is_file(), True) for a in cfg.merge.alpha]
    for label, spec, system in _eval_plan(cfg, tc, out):
        plan.append((out / "eval" / label / STAGE_FILE, eval_record(cfg, label, spec, eval_sets, system, out),
                     (out / "eval" / label / "metrics.json").is_file(), eval_sets is not None))
    errors = []
    for rec_path, rec, done, known in plan:
        try:
            reuse_stage(rec_path, rec, done, inputs=known, run_dir=out)
        except StageMismatchError as e:
            errors.append(str(e).split(": the finished stage ", 1)[-1].split(". Rerun with --force")[0])
    if errors:
        raise StageMismatchError(f"{out}: finished stages were made with another config (nothing was run): "
                                 + " | ".join(errors) + ". Rerun with --force to redo them (and the stages after "
                                 "them) with the new config, or choose another --out")


def run_pipeline(cfg: RunConfig, *, progress: bool = True, force: bool = False) -> dict:
    """Run every stage ``cfg`` asks for in ``cfg.out``; return ``{"results", "paths", "stages"}``.

    A finished stage is reused only when its ``stage.json`` (the settings and input hashes it was
    made with) matches; a finished stage made otherwise stops the run before anything is written
    (:func:`check_run_dir`, :class:`StageMismatchError` naming the fields that differ) unless
    ``force``, which redoes it and every stage after it that depends on it. Writes ``config.yaml``
    (credentials in URLs redacted), ``metrics.json``, ``report.md`` and ``manifest.json`` at the
    top of the run directory.
    """
    import yaml

    from .config import to_dict
    from .io import Manifest, atomic_write_json, atomic_write_text, redact

    t0 = time.time()
    out = Path(cfg.out)
    tc = cfg.train_config()  # validated again, before any heavy work
    srcs = dict(tofu_source=cfg.data.tofu_source, rwku_source=cfg.data.rwku_source)
    forget = resolve_records(cfg.data.forget, **srcs)
    if cfg.data.limit:
        forget = forget[: cfg.data.limit]
    retain = resolve_records(cfg.data.retain, **srcs) if cfg.data.retain else None
    eval_sets = {"forget": resolve_records(cfg.data.eval_forget, purpose="eval", **srcs)
                 if cfg.data.eval_forget else forget}
    if cfg.data.eval_retain or retain:
        eval_sets["retain"] = (resolve_records(cfg.data.eval_retain, purpose="eval", **srcs)
                               if cfg.data.eval_retain else retain)
    if cfg.eval.max_samples:
        eval_sets = {k: v[: cfg.eval.max_samples] for k, v in eval_sets.items()}
    if not force:
        check_run_dir(cfg, out, forget=forget, retain=retain, eval_sets=eval_sets)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False, allow_unicode=True))
    manifest = Manifest(out, "run", config=to_dict(cfg), seed=cfg.seed)
    for name, src in (("forget", cfg.data.forget), ("retain", cfg.data.retain)):
        if src and os.path.exists(src):
            manifest.add_input(name, src)
        elif src:
            manifest.data["inputs"][name] = {"spec": src}

    stages: dict[str, str] = {}
    paths: dict[str, Any] = {}
    info: dict[str, Any] = {"stages": stages}
    # 1. augment
    train_forget = forget
    if cfg.augment_enabled and tc.train:
        rows, stats = stage_augment(cfg, forget, out, progress=progress, force=force)
        from .augment.ulmr import rows_to_records

        train_forget = rows_to_records(rows)
        stages["augment"] = "skipped (exists)" if stats.get("skipped") else f"done: {len(rows)} pairs"
        info["augment"] = {k: stats.get(k) for k in ("kept", "requested", "regenerated", "dropped", "dropped_reasons")}
        paths["augment"] = str(out / "augment" / "forget_augmented.jsonl")
    else:
        stages["augment"] = "not used by this method"
    # 2. train
    trained = None
    if tc.train:
        streams = {"forget": train_forget}
        if retain:
            streams["retain"] = retain
        old = read_stage_record(out / "train" / STAGE_FILE)
        reused = (_is_model_dir(out / "train" / "model") and old is not None
                  and old.get("fingerprint") == train_record(cfg, streams)["fingerprint"])
        trained = stage_train(cfg, streams, out, progress=progress, force=force)
        stages["train"] = "skipped (exists)" if reused else "done"
        paths["trained"] = str(trained)
    else:
        stages["train"] = "not used by this method (train: false)"
    # 3. merge
    merged: dict[float, Path] = {}
    if trained is not None and cfg.merge_enabled:
        merged = stage_merge(cfg, cfg.model, trained, out, progress=progress, force=force)
        stages["merge"] = "α = " + ", ".join(f"{a:g}" for a in merged)
        paths["merged"] = {f"{a:g}": str(p) for a, p in merged.items()}
    else:
        stages["merge"] = "not used"
    # 4. evaluate
    results: dict[str, dict] = {}
    if cfg.eval.suite != "none":
        for label, spec, sysp in _eval_plan(cfg, tc, out):
            results[label] = stage_eval(cfg, label, spec, eval_sets, out, system=sysp, progress=progress,
                                        force=force)
        stages["evaluate"] = f"{cfg.eval.suite}: " + ", ".join(results)
    else:
        stages["evaluate"] = "not requested"
    # 5. audit (optional): attacks on every unlearned model; resumable like the other stages
    if cfg.eval.audit is not None:
        from .audit.runner import stage_audit

        audited = []
        for label, spec, _ in _eval_plan(cfg, tc, out):
            if label == "base":
                continue
            stage_audit(cfg, label, spec, out, reference=cfg.eval.audit_reference, audit=cfg.eval.audit,
                        progress=progress)
            audited.append(label)
            paths.setdefault("audit", {})[label] = str(out / "audit" / label)
        stages["audit"] = ", ".join(audited) or "no unlearned model"
    else:
        stages["audit"] = "not requested"
    # 6. model cards: add this run's evaluation to the README.md of the trained and merged models
    #    (rewritten only when it changed, so a resumed run leaves the model folders untouched)
    if cfg.eval.suite != "none" or cfg.eval.audit is not None:
        from .modelcard import try_write_model_card

        for model_dir in ([trained] if trained is not None else []) + list(merged.values()):
            if _is_model_dir(Path(model_dir)):
                try_write_model_card(model_dir)
    info["wall_time_s"] = time.time() - t0
    atomic_write_json(out / "metrics.json", results)
    atomic_write_text(out / "report.md", render_run_report(cfg, results, info))
    for p in ("config.yaml", "metrics.json", "report.md"):
        manifest.add_output(p)
    manifest.write(stages=stages, paths=paths, augment=info.get("augment"))
    return {"results": results, "paths": paths, "stages": stages}
