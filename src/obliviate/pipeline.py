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
    train/     model/  train_log.jsonl  config.yaml  manifest.json
    merge/     alpha_<α>/  (safetensors model + tokenizer + merge.json + manifest.json)
    eval/      <model label>/metrics.json  generations.jsonl

Every stage is skipped when its output already exists, so an interrupted run resumes where it
stopped (the generation cache also resumes a half-done augmentation).
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


@dataclass
class EvalConfig:
    """Evaluation: ``rouge`` (ROUGE-L recall of greedy answers on forget/retain) or ``tofu`` (full TOFU)."""

    suite: Literal["rouge", "tofu", "none"] = "rouge"
    forget_split: str = "forget01"   #: TOFU suite: which forget split
    max_samples: int | None = None   #: cap every evaluated set (first N)
    max_new_tokens: int = 64
    batch_size: int = 16
    models: list[str] = field(default_factory=lambda: ["base", "trained", "merged"])
    #: TOFU suite: a retain model's saved forget-set truth ratios (an ``obliviate eval tofu`` run dir,
    #: its metrics.json / samples.jsonl, a JSON list, or TOFU's eval_log_forget.json) for forget quality
    retain_result: str | None = None

    def validate(self) -> None:
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
    generator: str | None = None  #: augment generator spec; default ``transformers:<model>`` (p_θ)
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
# stages
# ---------------------------------------------------------------------------------------------
def _is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def stage_augment(cfg: RunConfig, forget: list[QARecord], out: Path, *, progress: bool = True,
                  model=None, tokenizer=None) -> tuple[list[dict], dict]:
    """ULMR augmentation into ``out/augment`` (skipped when ``forget_augmented.jsonl`` exists)."""
    from .generate.factory import make_generator
    from .io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
    from .augment.ulmr import augment_ulmr, render_report

    d = out / "augment"
    f = d / "forget_augmented.jsonl"
    if f.is_file():
        stats = json.loads((d / "augment_stats.json").read_text()) if (d / "augment_stats.json").is_file() else {}
        log.info("augment: %s exists, skipped", f)
        return read_jsonl(f), {**stats, "skipped": True}
    d.mkdir(parents=True, exist_ok=True)
    spec = cfg.generator or ("self" if model is not None else f"transformers:{cfg.model}")
    gen = make_generator(spec, model=model, tokenizer=tokenizer, cache_dir=d / "cache", progress=progress)
    rows, stats = augment_ulmr(forget, gen, config=cfg.augment, progress=progress)
    if not rows:
        raise DataError(f"augment: every generation was degenerate ({stats['dropped_reasons']})")
    atomic_write_json(d / "augment_stats.json", stats)
    atomic_write_text(d / "augment_report.md", render_report(rows, stats))
    atomic_write_jsonl(f, rows)  # last: its presence marks the stage as done
    return rows, stats


def stage_train(cfg: RunConfig, streams: dict[str, list[QARecord]], out: Path, *, progress: bool = True,
                model_spec: Any = None, tokenizer=None) -> Path | None:
    """Train into ``out/train`` (skipped when ``out/train/model`` exists, or for ``train: false`` presets)."""
    from .train import train_unlearning

    tc = cfg.train_config()
    if not tc.train:
        return None
    final = out / "train" / "model"
    if _is_model_dir(final):
        log.info("train: %s exists, skipped", final)
        return final
    tc.progress = progress
    return train_unlearning(model_spec if model_spec is not None else cfg.model, tokenizer, streams, tc,
                            out / "train")


def stage_merge(cfg: RunConfig, base: str | Path, tuned: Path, out: Path, *, progress: bool = True) -> dict[float, Path]:
    """Average ``base`` and ``tuned`` for every α into ``out/merge/alpha_<α>`` (existing ones are kept)."""
    from .merge import merge_models

    res = {}
    for a in cfg.merge.alpha:
        target = out / "merge" / f"alpha_{a:g}"
        if not (target / "merge.json").is_file():
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
               system: str | None = None, progress: bool = True) -> dict:
    """Evaluate one model into ``out/eval/<label>`` (skipped when its ``metrics.json`` exists)."""
    from .io import atomic_write_json, atomic_write_jsonl
    from .models import load_model

    d = out / "eval" / label
    if (d / "metrics.json").is_file():
        return json.loads((d / "metrics.json").read_text())
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


def run_pipeline(cfg: RunConfig, *, progress: bool = True) -> dict:
    """Run every stage ``cfg`` asks for in ``cfg.out``; return ``{"results", "paths", "stages"}``.

    Stages whose outputs exist are skipped (resumable). Writes ``config.yaml``, ``metrics.json``,
    ``report.md`` and ``manifest.json`` at the top of the run directory.
    """
    import yaml

    from .config import to_dict
    from .io import Manifest, atomic_write_json, atomic_write_text
    from .methods import prompting_system_prompt

    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train_config()  # validated again, before any heavy work
    atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    manifest = Manifest(out, "run", config=to_dict(cfg), seed=cfg.seed)
    srcs = dict(tofu_source=cfg.data.tofu_source, rwku_source=cfg.data.rwku_source)
    forget = resolve_records(cfg.data.forget, **srcs)
    if cfg.data.limit:
        forget = forget[: cfg.data.limit]
    retain = resolve_records(cfg.data.retain, **srcs) if cfg.data.retain else None
    eval_sets = {"forget": resolve_records(cfg.data.eval_forget, **srcs) if cfg.data.eval_forget else forget}
    if cfg.data.eval_retain or retain:
        eval_sets["retain"] = resolve_records(cfg.data.eval_retain, **srcs) if cfg.data.eval_retain else retain
    if cfg.eval.max_samples:
        eval_sets = {k: v[: cfg.eval.max_samples] for k, v in eval_sets.items()}
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
        rows, stats = stage_augment(cfg, forget, out, progress=progress)
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
        existed = _is_model_dir(out / "train" / "model")
        streams = {"forget": train_forget}
        if retain:
            streams["retain"] = retain
        trained = stage_train(cfg, streams, out, progress=progress)
        stages["train"] = "skipped (exists)" if existed else "done"
        paths["trained"] = str(trained)
    else:
        stages["train"] = "not used by this method (train: false)"
    # 3. merge
    merged: dict[float, Path] = {}
    if trained is not None and cfg.merge_enabled:
        merged = stage_merge(cfg, cfg.model, trained, out, progress=progress)
        stages["merge"] = "α = " + ", ".join(f"{a:g}" for a in merged)
        paths["merged"] = {f"{a:g}": str(p) for a, p in merged.items()}
    else:
        stages["merge"] = "not used"
    # 4. evaluate
    results: dict[str, dict] = {}
    if cfg.eval.suite != "none":
        system = None
        if not tc.train and tc.system_prompt:
            system = prompting_system_prompt(cfg.data.target or "the unlearning target", tc.system_prompt)
        todo: list[tuple[str, Any, str | None]] = []
        if "base" in cfg.eval.models:
            todo.append(("base", cfg.model, None))
            if system:
                todo.append(("prompting", cfg.model, system))
        if trained is not None and "trained" in cfg.eval.models:
            todo.append(("trained", trained, None))
        if "merged" in cfg.eval.models:
            todo += [(f"merged_alpha_{a:g}", p, None) for a, p in merged.items()]
        for label, spec, sysp in todo:
            results[label] = stage_eval(cfg, label, spec, eval_sets, out, system=sysp, progress=progress)
        stages["evaluate"] = f"{cfg.eval.suite}: " + ", ".join(results)
    else:
        stages["evaluate"] = "not requested"
    info["wall_time_s"] = time.time() - t0
    atomic_write_json(out / "metrics.json", results)
    atomic_write_text(out / "report.md", render_run_report(cfg, results, info))
    for p in ("config.yaml", "metrics.json", "report.md"):
        manifest.add_output(p)
    manifest.write(stages=stages, paths=paths, augment=info.get("augment"))
    return {"results": results, "paths": paths, "stages": stages}
