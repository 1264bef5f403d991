"""The one runner of ``obliviate run``: forget requests × a method × augment → train → merge →
evaluate → audit, in ``single``, ``batch`` or ``sequential`` mode (:mod:`obliviate.runconfig`).

Every method runs in every mode: ULMR and SNAP are presets of the same run (``preset: ulmr`` /
``preset: snap``). A **step** trains one model: ``single`` and ``batch`` have one step holding every
request's data; ``sequential`` has one step per request, each starting from the previous step's
final model (its merged model when merging is on). Before the first step the original model is
evaluated (``eval.models`` holds ``base``); after every step every request — forgotten so far or
still pending — is evaluated, so a sequential run shows forgetting accumulate and what it does to
the requests not yet unlearned (SNAP §4.7, Figure 5).

Layout of ``out``::

    config.yaml  manifest.json  metrics.json  summary.json  summary.md  (report.md: QA requests)
    augment/[<request>/]   ULMR pairs of each QA request (one request: augment/ itself)
    data/<target>/         the generated SNAP data of each target without ``data``
    eval/base/             the original model's evaluation (step 0)
    train/  merge/alpha_<α>/  eval/<model>/  audit/<model>/      single and batch
    step_<k>_<request>/{train, merge, eval}/                       sequential, one per request

Every stage writes a ``stage.json`` — the fingerprint of its config fields and input hashes —
before it runs; a finished stage is reused only when its record matches, and the whole plan is
checked before anything is written (:class:`~obliviate.pipeline.StageMismatchError` names every
differing field; ``force`` redoes those stages).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import ConfigError, to_dict
from .data.records import QARecord
from .pipeline import (STAGE_FILE, StageMismatchError, _is_model_dir, augment_record, eval_record, merge_record,
                       read_stage_record, reuse_stage, stage_augment, stage_eval, stage_merge, stage_record,
                       stage_train, train_record, write_stage_record)
from .runconfig import ForgetRequest, RunConfig, slug

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the plan: requests, steps
# ---------------------------------------------------------------------------------------------
@dataclass
class Request:
    """A forget request with its data resolved."""

    spec: ForgetRequest
    name: str
    slug: str
    forget: list[QARecord] = field(default_factory=list)    #: training forget records (augmented for ULMR)
    retain: list[QARecord] = field(default_factory=list)    #: training retain records
    eval_sets: dict[str, list[QARecord]] = field(default_factory=dict)  #: QA: forget / retain evaluation sets
    target: Any = None                                       #: target requests: :class:`~obliviate.sequential.TargetData`
    files: dict[str, Path] = field(default_factory=dict)     #: data files, for the manifests


@dataclass
class Step:
    """One trained model: the requests whose data it trains on and those forgotten after it."""

    index: int
    label: str
    trains: list[int]
    forgotten: list[int]
    dir: Path


def plan_steps(cfg: RunConfig, out: Path, names: Sequence[str]) -> list[Step]:
    """The steps of ``cfg.mode``: one over every request (single / batch) or one per request."""
    n = len(names)
    tc = cfg.train_config()
    if cfg.mode == "sequential":
        return [Step(k + 1, names[k], [k], list(range(k + 1)), out / f"step_{k + 1:02d}_{slug(names[k])}")
                for k in range(n)]
    return [Step(1, "prompting" if not tc.train else "batch", list(range(n)), list(range(n)), out)]


def _augment_dir(out: Path, req: Request, n: int) -> Path:
    return out / "augment" if n == 1 else out / "augment" / req.slug


# ---------------------------------------------------------------------------------------------
# request data
# ---------------------------------------------------------------------------------------------
def _resolve_qa(cfg: RunConfig, spec: ForgetRequest, label: str) -> Request:
    from .data.sources import resolve_records

    srcs = dict(tofu_source=cfg.data.tofu_source, rwku_source=cfg.data.rwku_source)
    forget = resolve_records(spec.forget, **srcs)
    if cfg.data.limit:
        forget = forget[: cfg.data.limit]
    retain = resolve_records(spec.retain, **srcs) if spec.retain else []
    sets = {"forget": resolve_records(spec.eval_forget, purpose="eval", **srcs) if spec.eval_forget else forget}
    if spec.eval_retain or retain:
        sets["retain"] = resolve_records(spec.eval_retain, purpose="eval", **srcs) if spec.eval_retain else retain
    if cfg.eval.max_samples:
        sets = {k: v[: cfg.eval.max_samples] for k, v in sets.items()}
    files = {n: Path(s) for n, s in (("forget", spec.forget), ("retain", spec.retain)) if s and os.path.exists(s)}
    return Request(spec, label, slug(label), forget, retain, sets, files=files)


def _snap_augment_config(cfg: RunConfig, spec: ForgetRequest):
    from .augment.snap import SnapAugmentConfig
    from .config import from_dict

    return from_dict(SnapAugmentConfig, {"seed": cfg.seed, **cfg.augment.snap, "target": spec.target,
                                         "aliases": spec.aliases, "related": spec.related}, prefix="augment.snap.")


def target_data_record(cfg: RunConfig, spec: ForgetRequest) -> dict:
    """The record of a target's generated data (``data/<target>/stage.json``): generator identity and
    the SNAP augmentation settings."""
    from .generate.factory import generator_identity

    return stage_record(f"augment snap ({spec.target})",
                        {"generator": generator_identity(cfg.generator or "self", cfg.model),
                         "augment": to_dict(_snap_augment_config(cfg, spec))})


def _target_folder(out: Path, spec: ForgetRequest) -> Path:
    return Path(spec.data) if spec.data else out / "data" / slug(spec.target)


class _Generators:
    """The augmentation generator, built once on first use."""

    def __init__(self, cfg: RunConfig, out: Path, progress: bool):
        self.cfg, self.out, self.progress, self.gen = cfg, out, progress, None

    def snap(self):
        if self.gen is None:
            from .generate.factory import as_generator_config, make_generator

            gcfg = as_generator_config(self.cfg.generator or "self")
            model = tok = None
            if gcfg.backend == "transformers" and gcfg.model in (None, "", "self"):
                from .models import load_model

                model, tok = load_model(self.cfg.model)
            self.gen = make_generator(gcfg, model=model, tokenizer=tok, cache_dir=self.out / "cache",
                                      progress=self.progress)
        return self.gen


def _prepare_target(cfg: RunConfig, spec: ForgetRequest, label: str, out: Path, gens: _Generators | None,
                    force: bool) -> Request | None:
    """A target request's SNAP data: its folder, or generated into ``data/<target>`` (reused when its
    record matches). With ``gens`` None (the up-front check) nothing is generated: None when missing."""
    from .augment.snap import augment_snap
    from .sequential import load_target_data

    folder = _target_folder(out, spec)
    if not spec.data:
        rec = target_data_record(cfg, spec)
        done = (folder / "manifest.json").is_file()
        if gens is None:
            reuse_stage(folder / STAGE_FILE, rec, done, run_dir=out)
            if not done:
                return None
        elif not reuse_stage(folder / STAGE_FILE, rec, done, force=force, outputs=[folder / "manifest.json"],
                             run_dir=out):
            folder.mkdir(parents=True, exist_ok=True)
            write_stage_record(folder / STAGE_FILE, rec)
            augment_snap(gens.snap(), _snap_augment_config(cfg, spec), folder, progress=gens.progress,
                         command="run (augment snap)", generator_spec=cfg.generator)
    t = load_target_data(spec.target, folder, cfg.eval.max_per_set)
    files = {f: folder / f for f in ("forget_train.jsonl", "retain_train.jsonl") if (folder / f).is_file()}
    return Request(spec, label, slug(label), list(t.forget_train), list(t.retain_train), target=t, files=files)


# ---------------------------------------------------------------------------------------------
# evaluation of one model on every request
# ---------------------------------------------------------------------------------------------
REFUSAL_EVAL_FIELDS = ("max_new_tokens", "batch_size", "general", "general_field", "max_general", "general_seed",
                       "max_per_set", "detector", "rwku", "rwku_source", "rwku_max_samples")


def _refusal_eval_config(cfg: RunConfig):
    return dataclasses.replace(cfg.eval, max_new_tokens=cfg.eval.answer_budget("refusal"))


def refusal_eval_record(cfg: RunConfig, label: str, model_spec: Any, targets: Sequence[Any] | None,
                        general: Sequence[str], system: str | None, out: Path) -> dict:
    """The record of one model's UA / RA / TA evaluation: model, system prompt, refusal-suite settings;
    the weights' fingerprint, the general set and each target's questions as inputs."""
    import hashlib

    from .pipeline import _weights_id

    ev = {k: v for k, v in to_dict(_refusal_eval_config(cfg)).items() if k in REFUSAL_EVAL_FIELDS}
    try:
        shown = str(Path(str(model_spec)).resolve().relative_to(out.resolve()))
    except ValueError:
        shown = str(model_spec)
    inputs = None
    if targets is not None:
        def h(xs):
            return hashlib.sha256(json.dumps(list(xs), ensure_ascii=False).encode()).hexdigest()

        inputs = {"model": _weights_id(model_spec), "general": h(general)}
        for t in targets:
            inputs[f"target.{t.name}"] = h([t.forget_eval, t.forget_multihop, t.retain_eval])
    return stage_record(f"eval {label}", {"model": shown, "system_prompt": system, "eval": {"suite": "refusal", **ev}},
                        inputs)


def _evaluate_targets_spec(spec: str, targets, general, ecfg, out_dir: Path, system_prompt=None) -> dict:
    """UA / UA♣ / RA per target and TA of the model ``spec`` (+ RWKU's metrics with ``eval.rwku``),
    written to ``out_dir/metrics.json`` and ``responses.jsonl``."""
    from .io import atomic_write_json
    from .models import load_model
    from .sequential import evaluate_targets

    model, tok = load_model(str(spec))
    try:
        m = evaluate_targets(model, tok, targets, general, ecfg, out_dir=out_dir, system_prompt=system_prompt)
        if ecfg.rwku:
            from .evals.rwku import evaluate_rwku

            m["rwku"] = {}
            for t in targets:
                rm, _ = evaluate_rwku(model, tok, t.name, source=ecfg.rwku_source, max_samples=ecfg.rwku_max_samples,
                                      batch_size=ecfg.batch_size, progress=True)
                m["rwku"][t.name] = rm
    finally:
        del model
        gc.collect()
    m = {"model": str(spec), **m}
    atomic_write_json(out_dir / "metrics.json", m)
    return m


def _qa_sets(reqs: Sequence[Request]) -> dict[str, list[QARecord]]:
    if len(reqs) == 1:
        return dict(reqs[0].eval_sets)
    return {f"{r.slug}.{k}": v for r in reqs for k, v in r.eval_sets.items()}


def _qa_summary(metrics: dict, reqs: Sequence[Request], forgotten: Sequence[int]) -> dict:
    """Per request ROUGE of a multi-request evaluation, and the means over the forgotten / pending ones."""
    if len(reqs) == 1 or not any(k.startswith(f"{reqs[0].slug}.") for k in metrics):
        return metrics
    per: dict[str, dict] = {}
    for r in reqs:
        per[r.name] = {k[len(r.slug) + 1:]: v for k, v in metrics.items() if k.startswith(f"{r.slug}.")}
    out = {k: v for k, v in metrics.items() if not any(k.startswith(f"{r.slug}.") for r in reqs)}
    done = [reqs[i].name for i in forgotten]
    pending = [r.name for i, r in enumerate(reqs) if i not in forgotten]
    for key in ("forget_rouge", "retain_rouge"):
        vals = [per[n][key] for n in done if per[n].get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
        pv = [per[n][key] for n in pending if per[n].get(key) is not None]
        out[f"{key}_pending"] = sum(pv) / len(pv) if pv else None
    out["per_request"] = per
    return out


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
class _Run:
    """One execution (or, with ``check``, the up-front check) of a run's plan."""

    def __init__(self, cfg: RunConfig, *, progress: bool, force: bool, check: bool):
        self.cfg, self.progress, self.force, self.check = cfg, progress, force, check
        self.out = Path(cfg.out)
        self.tc = cfg.train_config()
        self.errors: list[str] = []
        self.status: dict[str, list[str]] = {}
        self.paths: dict[str, Any] = {}
        self._general: list[str] | None = None  #: D_g, sampled on first use

    # the check collects every mismatch instead of stopping at the first
    def _reuse(self, rec_path: Path, rec: dict, done: bool, *, outputs: Sequence[Path] = (),
               inputs: bool = True) -> bool:
        if self.check:
            try:
                return reuse_stage(rec_path, rec, done, inputs=inputs, run_dir=self.out)
            except StageMismatchError as e:
                self.errors.append(str(e).split(": the finished stage ", 1)[-1].split(". Rerun with --force")[0])
                return False
        return reuse_stage(rec_path, rec, done, force=self.force, outputs=outputs, run_dir=self.out)

    def _status(self, stage: str, text: str) -> None:
        self.status.setdefault(stage, []).append(text)

    # --- data ----------------------------------------------------------------------------------
    def requests(self) -> list[Request] | None:
        cfg, out = self.cfg, self.out
        reqs: list[Request] = []
        gens = None if self.check else _Generators(cfg, out, self.progress)
        labels = [r.label for r in cfg.requests]
        for spec, label in zip(cfg.requests, labels):
            if spec.kind == "target":
                r = _prepare_target(cfg, spec, label, out, gens, self.force)
                if r is None:
                    return None  # generated data missing: nothing downstream can be checked yet
                reqs.append(r)
            else:
                reqs.append(_resolve_qa(cfg, spec, label))
        if cfg.retain_data is not None and reqs:  # SNAP Figure 4: the general set as retaining data
            from .sequential import general_retain_streams

            targets = [r.target for r in reqs]
            general_retain_streams(targets, cfg.retain_data, exclude=self.general())
            for r in reqs:
                r.retain = list(r.target.retain_train)
        if self.cfg.augment_enabled and self.tc.train:
            for r in reqs:
                if not self.augment(r, len(reqs)):
                    return None
        return reqs

    def augment(self, r: Request, n: int) -> bool:
        """ULMR augmentation of one QA request (its forget records become the augmented pairs)."""
        from .augment.ulmr import rows_to_records
        from .io import read_jsonl

        d = _augment_dir(self.out, r, n)
        f = d / "forget_augmented.jsonl"
        if self.check:
            rec = augment_record(self.cfg, r.forget)
            ok = self._reuse(d / STAGE_FILE, rec, f.is_file())
            if not ok:
                return False
            r.forget = rows_to_records(read_jsonl(f))
            return True
        rows, stats = stage_augment(self.cfg, r.forget, self.out, progress=self.progress, force=self.force, folder=d)
        r.forget = rows_to_records(rows)
        r.files["forget_augmented"] = f
        self._status("augment", "skipped (exists)" if stats.get("skipped") else f"done: {len(rows)} pairs")
        self.paths.setdefault("augment", {})[r.name] = str(f)
        self.augment_stats = {k: stats.get(k) for k in ("kept", "requested", "regenerated", "dropped",
                                                       "dropped_reasons")}
        return True

    def general(self) -> list[str]:
        """SNAP's general set D_g for TA (sampled once, the same at every step)."""
        if self._general is None:
            from .data.readers import read_prompts
            from .sequential import sample_general

            ev = self.cfg.eval
            self._general = (sample_general(read_prompts(ev.general, field=ev.general_field), ev.max_general,
                                            ev.general_seed) if ev.general else [])
        return self._general

    # --- stages --------------------------------------------------------------------------------
    def train(self, step: Step, reqs: list[Request], start: str) -> str | None:
        """Train ``step`` from ``start``; the trained model's spec (None when not trainable yet)."""
        from .methods import build_terms, streams_needed

        needs = streams_needed(build_terms(self.tc)[0])
        trained = [reqs[i] for i in step.trains]
        streams = {"forget": [x for r in trained for x in r.forget]}
        retain = [x for r in trained for x in r.retain]
        if "retain" in needs and not retain:
            raise ConfigError(f"no retaining data for {[r.name for r in trained]}: method {self.cfg.method!r} "
                              "trains on a retain set (a target's data needs retain_train.jsonl: augment with "
                              "related entities)")
        if retain:
            streams["retain"] = retain
        final = step.dir / "train" / "model"
        rec = train_record(self.cfg, streams, start)
        if self.check:
            self._reuse(step.dir / "train" / STAGE_FILE, rec, _is_model_dir(final))
            return str(self._full_model(final, step, dry=True))
        old = read_stage_record(step.dir / "train" / STAGE_FILE)
        reused = _is_model_dir(final) and old is not None and old.get("fingerprint") == rec["fingerprint"]
        inputs = {f"{r.name}/{k}": p for r in trained for k, p in r.files.items()}
        path = stage_train(self.cfg, streams, step.dir, progress=self.progress, model_spec=start, force=self.force,
                           run_dir=self.out, inputs=inputs, record=rec)
        self._status("train", "skipped (exists)" if reused else "done")
        return str(self._full_model(Path(path), step))

    def _full_model(self, trained: Path, step: Step, dry: bool = False) -> Path:
        """A LoRA adapter merged into its base (``train/merged_model``) where a later step starts from it."""
        if self.tc.lora is None or self.cfg.mode != "sequential" or self.cfg.merge_enabled:
            return trained
        dest = step.dir / "train" / "merged_model"
        if dry:
            return dest
        marker = dest / "obliviate_adapter.json"
        from .pipeline import _weights_id

        ident = _weights_id(trained)
        if marker.is_file() and json.loads(marker.read_text()).get("adapter") == ident:
            return dest
        from peft import PeftModel

        from .io import atomic_write_json
        from .models import _adapter_base, load_model

        base_spec = _adapter_base(str(trained))  # the adapter's base, with a clear error for a broken config
        base, tok = load_model(base_spec, dtype="fp32", device="cpu")
        merged = PeftModel.from_pretrained(base, str(trained)).merge_and_unload()
        merged.save_pretrained(dest)
        tok.save_pretrained(dest)
        atomic_write_json(marker, {"adapter": ident})
        del base, merged
        gc.collect()
        return dest

    def merge(self, step: Step, start: str, trained: str) -> dict[float, Path]:
        if self.check:
            res = {}
            for a in self.cfg.merge.alpha:
                target = step.dir / "merge" / f"alpha_{a:g}"
                self._reuse(step.dir / "merge" / f"alpha_{a:g}.{STAGE_FILE}",
                            merge_record(self.cfg, a, Path(trained), start), (target / "merge.json").is_file())
                res[a] = target
            return res
        merged = stage_merge(self.cfg, start, Path(trained), step.dir, progress=self.progress, force=self.force,
                             run_dir=self.out)
        self._status("merge", "α = " + ", ".join(f"{a:g}" for a in merged))
        return merged

    def evaluate(self, label: str, spec: Any, where: Path, reqs: list[Request], forgotten: Sequence[int],
                 system: str | None) -> dict:
        """Evaluate one model on every request into ``where/eval/<label>``."""
        cfg = self.cfg
        suite = cfg.eval.resolved_suite(cfg.kind)
        d = where / "eval" / label
        if suite == "refusal":
            targets = [r.target for r in reqs]
            rec = refusal_eval_record(cfg, label, spec, targets, self.general(), system, self.out)
            done = (d / "metrics.json").is_file()
            if self._reuse(d / STAGE_FILE, rec, done, outputs=[d / "metrics.json", d / "responses.jsonl"]):
                return json.loads((d / "metrics.json").read_text())
            if self.check:
                return {}
            d.mkdir(parents=True, exist_ok=True)
            write_stage_record(d / STAGE_FILE, rec)
            return _evaluate_targets_spec(str(spec), targets, self.general(), _refusal_eval_config(cfg), d,
                                          system_prompt=system)
        sets = _qa_sets(reqs)
        if self.check:
            self._reuse(d / STAGE_FILE, eval_record(cfg, label, spec, sets, system, where),
                        (d / "metrics.json").is_file())
            return {}
        m = stage_eval(cfg, label, spec, sets, where, system=system, progress=self.progress, force=self.force,
                       run_dir=self.out)
        return _qa_summary(m, reqs, forgotten)

    # --- the whole run -------------------------------------------------------------------------
    def execute(self) -> dict:
        from .methods import prompting_system_prompt

        cfg, out, tc = self.cfg, self.out, self.tc
        reqs = self.requests()
        if reqs is None:
            return {}
        names = [r.name for r in reqs]
        steps = plan_steps(cfg, out, names)
        rows: list[dict] = []
        results: dict[str, dict] = {}
        suite = cfg.eval.resolved_suite(cfg.kind)
        evaluating = suite != "none"

        def row(step: int, label: str, model: str, forgotten: Sequence[int], metrics: dict, where: Path) -> None:
            if self.check or not metrics:
                return
            r = {"step": step, "label": label, "model": model, "forgotten": [names[i] for i in forgotten],
                 "dir": str((where / "eval" / model).relative_to(out))}
            if suite == "refusal":
                from .sequential import aggregate

                r.update(aggregate(metrics, r["forgotten"], [n for n in names if n not in r["forgotten"]]))
                r["per_target"] = metrics["per_target"]
                if "rwku" in metrics:
                    r["rwku"] = metrics["rwku"]
            else:
                r.update({k: v for k, v in metrics.items() if k != "model"})
            rows.append(r)

        if evaluating and "base" in cfg.eval.models:
            m = self.evaluate("base", cfg.model, out, reqs, [], None)
            row(0, "initial", "base", [], m, out)
            if m:
                results["base"] = m
        start = cfg.model
        final_spec: str = cfg.model
        last: dict[str, dict] = {}
        for step in steps:
            last = {}
            who = " or ".join(dict.fromkeys(n for i in step.forgotten for n in
                                            [reqs[i].spec.who, *reqs[i].spec.aliases]))
            if not tc.train:  # Prompting (SNAP §4.3, ULMR's baseline): the system prompt, no training
                system = prompting_system_prompt(who, tc.system_prompt) if tc.system_prompt else None
                if evaluating:
                    m = self.evaluate("prompting", cfg.model, step.dir, reqs, step.forgotten, system)
                    row(step.index, step.label, "prompting", step.forgotten, m, step.dir)
                    last["prompting"] = m
                continue
            trained = self.train(step, reqs, start)
            models: list[tuple[str, str]] = [("trained", trained)]
            step_final = trained
            if cfg.merge_enabled:
                merged = self.merge(step, start, trained)
                models += [(f"merged_alpha_{a:g}", str(p)) for a, p in merged.items()]
                step_final = str(merged[cfg.merge.alpha[-1]])
                self.paths.setdefault("merged", {}).update({f"{a:g}": str(p) for a, p in merged.items()})
            self.paths["trained"] = trained
            if evaluating:
                for label, spec in models:
                    kind = "merged" if label.startswith("merged") else "trained"
                    if kind not in cfg.eval.models:
                        continue
                    m = self.evaluate(label, spec, step.dir, reqs, step.forgotten, None)
                    row(step.index, step.label, label, step.forgotten, m, step.dir)
                    last[label] = m
            start = final_spec = step_final
            self._last_models = models
        self.steps, self.rows, self.final_spec = steps, rows, final_spec
        results.update({k: v for k, v in last.items() if v})
        self.results = results
        self.reqs = reqs
        return results


def check_run(cfg: RunConfig) -> None:
    """Before anything is written: every finished stage of the run folder must have been made with the
    settings ``cfg`` asks for and, where they are known up front, from the same inputs. Raises
    :class:`~obliviate.pipeline.StageMismatchError` listing every difference, stage by stage."""
    r = _Run(cfg, progress=False, force=False, check=True)
    r.execute()
    if r.errors:
        raise StageMismatchError(f"{cfg.out}: finished stages were made with another config (nothing was run): "
                                 + " | ".join(r.errors) + ". Rerun with --force to redo them (and the stages after "
                                 "them) with the new config, or choose another --out")


def run(cfg: RunConfig, *, progress: bool = True, force: bool = False) -> dict:
    """Run every stage ``cfg`` asks for in ``cfg.out``; return ``{"results", "paths", "stages", "steps"}``.

    ``results``: the metrics of the original model and of every model of the last step, by label
    (``base``, ``prompting``, ``trained``, ``merged_alpha_<α>``); ``steps``: one row per evaluated
    model and step (for target requests UA / UA♣ / RA averaged over the targets forgotten so far,
    with 95 % intervals, and the pending targets' UA; for QA requests ROUGE per request and the means
    over the forgotten and pending ones). Writes ``config.yaml`` (credentials redacted),
    ``metrics.json``, ``summary.json``, ``summary.md``, ``report.md`` (QA requests) and
    ``manifest.json`` at the top of the run directory.
    """
    from .io import Manifest, atomic_write_json, atomic_write_text, redact

    cfg.validate()
    t0 = time.time()
    out = Path(cfg.out)
    if not force:
        check_run(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False, allow_unicode=True))
    manifest = Manifest(out, "run", config=to_dict(cfg), seed=cfg.seed)
    r = _Run(cfg, progress=progress, force=force, check=False)
    results = r.execute()
    for req in r.reqs:
        for name, p in req.files.items():
            if p.is_file() and name != "forget_augmented":  # an output of this run, not an input
                manifest.add_input(f"{req.name}/{name}" if len(r.reqs) > 1 or cfg.kind == "target" else name, p)
        for k in ("forget", "retain"):
            s = getattr(req.spec, k)
            if s and not os.path.exists(s):
                manifest.data["inputs"][f"{req.name}/{k}" if len(r.reqs) > 1 else k] = {"spec": s}
    if cfg.eval.general and cfg.kind == "target":
        manifest.add_input("general", cfg.eval.general)
    # audit (optional): attacks on every unlearned model of the last step; resumable like the other stages
    stages = {k: _join(v) for k, v in r.status.items()}
    for st, why in (("augment", "not used by this method"), ("train", "not used by this method (train: false)"),
                    ("merge", "not used")):
        stages.setdefault(st, why)
    stages["evaluate"] = (f"{cfg.eval.resolved_suite(cfg.kind)}: " + ", ".join(results)
                          if cfg.eval.resolved_suite(cfg.kind) != "none" else "not requested")
    if cfg.eval.audit is not None:
        stages["audit"] = _audit(cfg, r, progress)
    else:
        stages["audit"] = "not requested"
    # model cards: add this run's evaluation to the README.md of the trained and merged models
    # (rewritten only when it changed, so a resumed run leaves the model folders untouched)
    if cfg.eval.resolved_suite(cfg.kind) != "none" or cfg.eval.audit is not None:
        from .modelcard import try_write_model_card

        for step in r.steps:
            for d in [step.dir / "train" / "model", *sorted((step.dir / "merge").glob("alpha_*"))]:
                if d.is_dir() and _is_model_dir(d):
                    try_write_model_card(d)
    wall = time.time() - t0
    summary = {"mode": cfg.mode, "method": cfg.method, "model": cfg.model, "requests": [q.name for q in r.reqs],
               "steps": r.rows}
    atomic_write_json(out / "summary.json", summary)
    if cfg.kind == "target":
        from .sequential import METRIC_KEYS, render_summary

        metrics = _target_metrics(cfg, r, METRIC_KEYS)
        atomic_write_text(out / "summary.md", render_summary(_target_rows(r.rows), cfg.mode, cfg.method, cfg.model))
        atomic_write_json(out / "metrics.json", metrics)
    else:
        atomic_write_json(out / "metrics.json", results)
        atomic_write_text(out / "summary.md", render_qa_summary(r.rows, cfg))
        atomic_write_text(out / "report.md", render_run_report(cfg, results, {"stages": stages, "wall_time_s": wall,
                                                                               "augment": getattr(r, "augment_stats",
                                                                                                  None)}))
        manifest.add_output("report.md")
    for p in ("config.yaml", "metrics.json", "summary.json", "summary.md"):
        manifest.add_output(p)
    manifest.write(stages=stages, paths=r.paths, augment=getattr(r, "augment_stats", None),
                   final_model=r.final_spec, wall_s=round(wall, 1))
    return {"results": results, "paths": r.paths, "stages": stages, "steps": r.rows,
            "metrics": metrics if cfg.kind == "target" else results, "mode": cfg.mode, "method": cfg.method,
            "requests": [q.name for q in r.reqs]}


def _join(parts: list[str]) -> str:
    uniq = list(dict.fromkeys(parts))
    return uniq[0] if len(uniq) == 1 else "; ".join(parts)


def _target_rows(rows: list[dict]) -> list[dict]:
    """The summary table's rows: the step's final model only (merged over trained when both were evaluated)."""
    by_step: dict[int, dict] = {}
    for r in rows:
        by_step[r["step"]] = r
    return [by_step[k] for k in sorted(by_step)]


def _target_metrics(cfg: RunConfig, r: _Run, keys: Sequence[str]) -> dict:
    rows = _target_rows(r.rows)
    final = rows[-1] if rows else {}
    metrics = {k: final.get(k) for k in (*keys, "Avg")}
    metrics.update({f"{k}_ci_{e}": final.get(f"{k}_ci_{e}") for k in (*keys, "Avg") for e in ("low", "high")})
    metrics.update({"method": cfg.method, "model": cfg.model, "mode": cfg.mode, "targets": [q.name for q in r.reqs],
                    "final_model": r.final_spec, "per_target": final.get("per_target"), "benchmark": "snap"})
    return metrics


def _audit(cfg: RunConfig, r: _Run, progress: bool) -> str:
    """Audit every unlearned model of the last step against each QA request's forget / retain data."""
    from .audit.runner import stage_audit

    step = r.steps[-1]
    models = getattr(r, "_last_models", [])
    audited = []
    for label, spec in models:
        for q in r.reqs:
            dest = step.dir / "audit" / label if len(r.reqs) == 1 else step.dir / "audit" / label / q.slug
            stage_audit(cfg, label, spec, step.dir, reference=cfg.eval.audit_reference, audit=cfg.eval.audit,
                        progress=progress, request=q.spec, dest=dest)
            r.paths.setdefault("audit", {})[label if len(r.reqs) == 1 else f"{label}/{q.slug}"] = str(dest)
        audited.append(label)
    return ", ".join(audited) or "no unlearned model"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def render_run_report(cfg: RunConfig, results: dict[str, dict], info: dict) -> str:
    """Markdown summary of a run of QA requests: stages, augmentation counts and the metrics table."""
    lines = [f"# obliviate run: {cfg.method} on {cfg.model} ({cfg.mode})", "",
             f"Run directory: `{cfg.out}`  ", f"Wall time: {info.get('wall_time_s', 0):.1f} s", ""]
    lines += ["| stage | status |", "| --- | --- |"]
    for st, status in info.get("stages", {}).items():
        lines.append(f"| {st} | {status} |")
    lines.append("")
    aug = info.get("augment")
    if aug and aug.get("kept") is not None:
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


def render_qa_summary(rows: list[dict], cfg: RunConfig) -> str:
    """The step table of a run of QA requests: forget / retain scores after every step."""
    lines = [f"# {cfg.mode} unlearning — method {cfg.method}, model {cfg.model}", "",
             "Forget and retain scores of every evaluated model after every step (means over the requests "
             "forgotten so far; 'pending': the requests not yet forgotten).", ""]
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if isinstance(v, float) and k not in keys]
    keys = keys[:8]
    lines += ["| step | model | forgotten | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['step']} | {r['model']} | {', '.join(r['forgotten']) or '(original model)'} | "
                     + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
