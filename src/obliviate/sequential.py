"""SNAP end to end for one or several targets: augment → train → evaluate (UA / RA / TA), in
single, **batch** (all targets' data in one training run) or **sequential** mode (one target after
another, each step starting from the previous step's model; SNAP §4.7).

After every trained model, every target — already forgotten or not yet — is evaluated: UA on its
``forget_eval`` questions, UA♣ on its multi-hop questions, RA on its ``retain_eval`` questions,
and TA once on the general instruction set; optionally RWKU's metrics too. The summary table
averages over the targets forgotten so far (mean ± std, as SNAP Figure 5) and reports the
not-yet-forgotten targets' UA separately (it should stay near the original model's).

Entry point for ``obliviate run`` configs: :func:`run_snap_pipeline` (``cfg_dict``, ``out_dir``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from .config import ConfigError, from_dict, to_dict
from .data.records import QARecord
from .evals.refusal import targets_intervals
from .io import Manifest, atomic_write_json, atomic_write_jsonl, atomic_write_text, redact

log = logging.getLogger(__name__)

MODES = ("single", "batch", "sequential")
METRIC_KEYS = ("UA", "UA_multihop", "RA", "TA")


@dataclass
class TargetSpec:
    """One entity to forget: its SNAP data folder (an ``augment snap`` output) or what to generate it from."""

    name: str = ""
    data: str | None = None            # folder with forget_train.jsonl, retain_train.jsonl, *_eval*.jsonl
    aliases: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)


@dataclass
class SnapEvalConfig:
    """How each trained model is evaluated."""

    general: str | None = None         # general instruction set for TA (file/dataset; e.g. RWKU fluency.json)
    general_field: str | None = None   # the prompt field in it (default: question/instruction/prompt)
    max_general: int | None = 300      # SNAP samples 300 dolly-15k instructions (at random: general_seed)
    general_seed: int = 0              # seed of that sample (fixed, so every run and seed scores the same D_g)
    max_per_set: int | None = None     # cap forget/retain eval sets (None: all)
    max_new_tokens: int = 128
    batch_size: int = 16
    detector: Literal["learned", "rules", "embedding", "rules+embedding"] = "learned"
    evaluate_initial: bool = True      # also evaluate the model before any unlearning (step 0)
    rwku: bool = False                 # add RWKU metrics for each target (target names must be RWKU targets)
    rwku_source: str = "jinzhuoran/RWKU"
    rwku_max_samples: int | None = None


@dataclass
class RetainDataSpec:
    """QA data that replaces the targets' hard-retaining data as L_r's stream (SNAP §4.6 / Figure 4:
    the general set D_g as retaining data). Per target, as many rows as its ``retain_train`` holds
    are sampled at random (``seed``), leaving out the instructions of the TA evaluation set."""

    source: str = ""                   # file / saved dataset, e.g. databricks-dolly-15k.jsonl
    question_key: str = "question"     # dolly-15k: instruction
    answer_key: str = "answer"         # dolly-15k: response
    seed: int = 0


@dataclass
class SnapRunConfig:
    """A SNAP run (``obliviate run`` config): which model, targets, mode, method and settings."""

    method: str = "snap"               # snap | euclidean | fisher (or any method with forget + retain streams)
    model: str = "smollm2-135m-instruct"
    mode: Literal["single", "batch", "sequential"] = "sequential"
    targets: list[Any] = field(default_factory=list)      # names or TargetSpec mappings
    generator: Any = "self"            # generator for augmentation (spec string or mapping)
    augment: dict[str, Any] = field(default_factory=dict)  # SnapAugmentConfig fields shared by all targets
    train: dict[str, Any] = field(default_factory=dict)    # TrainConfig overrides
    eval: SnapEvalConfig = field(default_factory=SnapEvalConfig)
    seed: int = 0
    retain_data: RetainDataSpec | None = None  # None: the targets' hard-retaining data (SNAP); else Figure 4

    def parsed_targets(self) -> list[TargetSpec]:
        """The targets as :class:`TargetSpec` (plain strings become ``{name: ...}``)."""
        out = []
        for i, t in enumerate(self.targets):
            if isinstance(t, str):
                t = {"name": t}
            if not isinstance(t, dict):
                raise ConfigError(f"targets[{i}]: expected a name or a mapping, got {type(t).__name__}")
            spec = from_dict(TargetSpec, t, prefix=f"targets[{i}].")
            if not spec.name.strip():
                raise ConfigError(f"targets[{i}].name: required")
            out.append(spec)
        return out

    def validate(self) -> None:
        """Check the run before any heavy work (names the field and the allowed values)."""
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {list(MODES)}")
        if self.generator not in (None, "self"):
            from .generate.factory import as_generator_config

            as_generator_config(self.generator)  # a spec string or a GeneratorConfig mapping, checked up front
        targets = self.parsed_targets()
        if not targets:
            raise ConfigError("targets: at least one target is required")
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"targets: duplicate names in {names}")
        if self.mode == "single" and len(targets) != 1:
            raise ConfigError(f"mode: 'single' takes exactly one target, got {len(targets)}; use batch or sequential")
        for t in targets:
            if t.data is not None and not Path(t.data).is_dir():
                raise ConfigError(f"targets[{names.index(t.name)}].data: {t.data} is not a folder")
        from .train import resolve_train_config

        resolve_train_config(self.method, self.train).validate()
        if self.eval.max_new_tokens < 1 or self.eval.batch_size < 1:
            raise ConfigError("eval.max_new_tokens / eval.batch_size: must be >= 1")
        if self.retain_data is not None:
            if not self.retain_data.source:
                raise ConfigError("retain_data.source: a QA file is required (e.g. databricks-dolly-15k.jsonl)")
            if not Path(self.retain_data.source).exists():
                raise ConfigError(f"retain_data.source: {self.retain_data.source} not found")


def sample_general(prompts: Sequence[str], n: int | None, seed: int = 0) -> list[str]:
    """SNAP's general set D_g: ``n`` instructions drawn at random without replacement (``seed``), all
    of them when fewer (or ``n`` None). SNAP samples 300 dolly-15k instructions; its reference code
    (brightjade/Opt-Out) draws its general data with ``shuffle(seed).select(range(n))``. Kept in
    the source's order."""
    import random

    if n is None or n >= len(prompts):
        return list(prompts)
    keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
    return [prompts[i] for i in keep]


def general_retain_streams(targets: Sequence["TargetData"], spec: RetainDataSpec,
                           exclude: Sequence[str] = ()) -> None:
    """Replace each target's ``retain_train`` by rows of ``spec.source`` (SNAP Figure 4), in place:
    as many as the target's own retaining set, drawn at random without replacement (``spec.seed``),
    never an instruction of ``exclude`` (the TA evaluation set)."""
    import random

    from .data.readers import read_records

    skip = set(exclude)
    pool = [r for r in read_records(spec.source, question_key=spec.question_key, answer_key=spec.answer_key)
            if r.question not in skip]
    rng = random.Random(spec.seed)
    order = rng.sample(range(len(pool)), len(pool))
    pos = 0
    for t in targets:
        n = len(t.retain_train) or len(t.forget_train)
        if pos + n > len(pool):
            raise ConfigError(f"retain_data.source: {len(pool)} usable rows, fewer than the {pos + n} needed")
        t.retain_train = [pool[i] for i in order[pos:pos + n]]
        pos += n


def slug(name: str) -> str:
    """A folder-safe name: 'Peter Parker' → 'peter_parker'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "target"


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

@dataclass
class TargetData:
    """One target's SNAP data, read from its folder."""

    name: str
    folder: Path
    forget_train: list[QARecord]
    retain_train: list[QARecord]
    forget_eval: list[str]
    forget_multihop: list[str]
    retain_eval: list[str]


def load_target_data(name: str, folder: str | Path, max_per_set: int | None = None) -> TargetData:
    """Read an ``augment snap`` output folder (forget/retain train records and eval questions)."""
    from .data.readers import read_records

    folder = Path(folder)

    def rec(fname, required=True):
        p = folder / fname
        if not p.is_file():
            if required:
                raise FileNotFoundError(f"{p}: missing (is {folder} an `obliviate augment snap` output?)")
            return []
        if p.stat().st_size == 0:
            return []
        return read_records(p)

    def qs(fname):
        rows = rec(fname, required=False)
        q = [r.question for r in rows]
        return q[:max_per_set] if max_per_set is not None else q

    ft = rec("forget_train.jsonl")
    if not ft:
        raise ConfigError(f"{folder / 'forget_train.jsonl'}: no training examples for target {name!r}")
    return TargetData(name, folder, ft, rec("retain_train.jsonl", required=False), qs("forget_eval.jsonl"),
                      qs("forget_eval_multihop.jsonl"), qs("retain_eval.jsonl"))


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------

def evaluate_targets(model, tokenizer, targets: Sequence[TargetData], general: Sequence[str],
                     ecfg: SnapEvalConfig, *, out_dir: str | Path | None = None,
                     system_prompt: str | None = None) -> dict:
    """UA / UA♣ / RA per target and TA on ``general`` for one model (SNAP §4.2).

    All questions go through one batched greedy generation pass. Returns
    ``{"TA", "per_target": {name: {"UA", "UA_multihop", "RA", "counts"}}, "detector"}``; with
    ``out_dir``, the responses are written to ``out_dir/responses.jsonl``.
    """
    from .evals.refusal import RefusalDetector, ua_ra_ta
    from .generate.transformers_backend import TransformersGenerator

    detector = RefusalDetector(ecfg.detector)
    jobs: list[tuple[str, str, str]] = []  # (target or "", set name, question)
    for t in targets:
        jobs += [(t.name, "forget", q) for q in t.forget_eval]
        jobs += [(t.name, "forget_multihop", q) for q in t.forget_multihop]
        jobs += [(t.name, "retain", q) for q in t.retain_eval]
    jobs += [("", "general", q) for q in general]
    gen = TransformersGenerator(model, tokenizer, batch_size=ecfg.batch_size, progress=True)
    responses = gen.generate([q for _, _, q in jobs], max_new_tokens=ecfg.max_new_tokens, temperature=0.0,
                             system=system_prompt) if jobs else []
    flags = detector.predict(responses) if responses else []
    by: dict[tuple[str, str], list[bool]] = {}
    for (t, s, _), f in zip(jobs, flags):
        by.setdefault((t, s), []).append(f)
    general_scores = ua_ra_ta(None, None, None, detector, decisions={"general": by.get(("", "general"), [])})
    out: dict[str, Any] = {"TA": general_scores["TA"], "n_general": len(general), "per_target": {},
                           "detector": detector.mode, "general_counts": general_scores["counts"].get("general")}
    for t in targets:
        m = ua_ra_ta(None, None, None, detector, decisions={
            "forget": by.get((t.name, "forget"), []), "forget_multihop": by.get((t.name, "forget_multihop"), []),
            "retain": by.get((t.name, "retain"), [])})
        out["per_target"][t.name] = {k: m[k] for k in ("UA", "UA_multihop", "RA")} | {"counts": m["counts"]}
    if out_dir is not None:
        atomic_write_jsonl(Path(out_dir) / "responses.jsonl",
                           [{"target": t, "set": s, "question": q, "response": r, "refusal": bool(f)}
                            for (t, s, q), r, f in zip(jobs, responses, flags)])
    return out


def _mean_std(vals: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in vals if x is not None]
    if not v:
        return None, None
    return sum(v) / len(v), (statistics.pstdev(v) if len(v) > 1 else 0.0)


def aggregate(metrics: dict, forgotten: Sequence[str], pending: Sequence[str]) -> dict:
    """Average UA / UA♣ / RA over the forgotten targets (mean and std) and UA over the pending ones."""
    pt = metrics["per_target"]
    row: dict[str, Any] = {"TA": metrics["TA"]}
    for k in ("UA", "UA_multihop", "RA"):
        row[k], row[f"{k}_std"] = _mean_std([pt[n][k] for n in forgotten])
    row["UA_pending"], _ = _mean_std([pt[n]["UA"] for n in pending])
    row["RA_pending"], _ = _mean_std([pt[n]["RA"] for n in pending])
    vals = [row[k] for k in METRIC_KEYS if row.get(k) is not None]
    row["Avg"] = sum(vals) / len(vals) if vals else None
    # 95 % intervals (Wilson for one target; mean of proportions over several, see evals.refusal)
    gen = metrics.get("general_counts")
    if gen is None and metrics.get("TA") is not None and metrics.get("n_general"):
        gen = {"n": metrics["n_general"], "refusals": round((1 - metrics["TA"]) * metrics["n_general"])}
    for k, ci in targets_intervals([pt[n].get("counts", {}) for n in forgotten], gen).items():
        row[f"{k}_ci_low"], row[f"{k}_ci_high"] = ci if ci and row.get(k) is not None else (None, None)
    return row


def _pct(x: float | None, sd: float | None = None, lo: float | None = None, hi: float | None = None) -> str:
    if x is None:
        return "–"
    return (f"{100 * x:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")
            + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""))


def _pci(r: dict, k: str, sd: bool = False) -> str:
    return _pct(r.get(k), r.get(f"{k}_std") if sd else None, r.get(f"{k}_ci_low"), r.get(f"{k}_ci_high"))


def render_summary(rows: list[dict], mode: str, method: str, model: str) -> str:
    """The Markdown summary table (SNAP §4.7 / Figure 5 as numbers)."""
    lines = [f"# SNAP {mode} unlearning — method {method}, model {model}", "",
             "UA, UA♣ and RA are averaged over the targets forgotten so far (mean ± std); "
             "'UA pending' is the UA of targets not yet forgotten (should stay low). Percent, with 95 % "
             "intervals in brackets (Wilson over the responses; for a mean over targets or Avg, the normal "
             "approximation of obliviate.evals.refusal.mean_of_proportions_interval).", "",
             "| step | forgotten | UA | UA♣ | RA | TA | Avg | UA pending | RA pending |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {', '.join(r['forgotten']) or '(original model)'} | "
                     f"{_pci(r, 'UA', True)} | {_pci(r, 'UA_multihop', True)} | "
                     f"{_pci(r, 'RA', True)} | {_pci(r, 'TA')} | {_pci(r, 'Avg')} | "
                     f"{_pct(r.get('UA_pending'))} | {_pct(r.get('RA_pending'))} |")
    lines += ["", "Per target (last step):", "", "| target | UA | UA♣ | RA |", "|---|---|---|---|"]
    if rows:
        for name, m in rows[-1]["per_target"].items():
            ivs = targets_intervals([m.get("counts", {})])
            lines.append(f"| {name} | " + " | ".join(
                _pct(m[k], None, *(ivs[k] or (None, None))) for k in ("UA", "UA_multihop", "RA")) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# training steps
# ----------------------------------------------------------------------------------------------

def _streams(targets: Sequence[TargetData]) -> dict[str, list[QARecord]]:
    forget = [r for t in targets for r in t.forget_train]
    retain = [r for t in targets for r in t.retain_train]
    if not retain:
        raise ConfigError(f"no retaining data for {[t.name for t in targets]}: SNAP trains on L_f + L_r "
                          "(augment with --related / --k-related, or use a method without a retain term)")
    return {"forget": forget, "retain": retain}


def _train_step(model_spec: str, streams, tcfg, step_dir: Path, inputs: dict) -> str:
    """Train one step from ``model_spec``; return the spec of the resulting full model."""
    from .train import train_unlearning

    final = train_unlearning(model_spec, None, streams, tcfg, step_dir, inputs=inputs)
    if tcfg.lora is None:
        return str(final)
    # LoRA: merge the adapter into this step's base so the next step starts from the unlearned weights
    from peft import PeftModel

    from .models import load_model

    base, tok = load_model(model_spec, dtype="fp32", device="cpu")
    merged = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    dest = step_dir / "merged_model"
    merged.save_pretrained(dest)
    tok.save_pretrained(dest)
    del base, merged
    gc.collect()
    return str(dest)


def _evaluate_spec(spec: str, targets, general, ecfg, out_dir: Path, system_prompt=None) -> dict:
    from .models import load_model

    model, tok = load_model(spec)
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
    atomic_write_json(out_dir / "metrics.json", m)
    return m


def _target_augment_config(cfg: SnapRunConfig, t: TargetSpec):
    from .augment.snap import SnapAugmentConfig

    return from_dict(SnapAugmentConfig, {"seed": cfg.seed, **cfg.augment, "target": t.name,
                                         "aliases": t.aliases, "related": t.related}, prefix="augment.")


def _data_record(cfg: SnapRunConfig, t: TargetSpec) -> dict:
    """The record of a target's generated data (``data/<target>/stage.json``): generator identity and
    the SNAP augmentation settings."""
    from .generate.factory import generator_identity
    from .pipeline import stage_record

    return stage_record(f"augment snap ({t.name})", {"generator": generator_identity(cfg.generator or "self", cfg.model),
                                                      "augment": to_dict(_target_augment_config(cfg, t))})


def check_snap_run_dir(cfg: SnapRunConfig, out: Path) -> None:
    """Before anything is written: every target's generated data in ``out/data`` must have been made
    with the generator and augmentation settings ``cfg`` asks for (else ``StageMismatchError``)."""
    from .pipeline import STAGE_FILE, reuse_stage

    for t in cfg.parsed_targets():
        if not t.data:
            folder = out / "data" / slug(t.name)
            reuse_stage(folder / STAGE_FILE, _data_record(cfg, t), (folder / "manifest.json").is_file(), run_dir=out)


def _prepare_targets(cfg: SnapRunConfig, out: Path, *, force: bool = False) -> list[TargetData]:
    """Read each target's data folder, augmenting (``augment snap``) the ones without one; generated
    data is reused only when its ``stage.json`` matches (else refused, or redone with ``force``)."""
    from .augment.snap import augment_snap
    from .pipeline import STAGE_FILE, reuse_stage, write_stage_record

    data = []
    gen = None
    for t in cfg.parsed_targets():
        folder = Path(t.data) if t.data else out / "data" / slug(t.name)
        if not t.data:
            rec = _data_record(cfg, t)
            if not reuse_stage(folder / STAGE_FILE, rec, (folder / "manifest.json").is_file(), force=force,
                               outputs=[folder / "manifest.json"], run_dir=out):
                if gen is None:
                    from .generate.factory import as_generator_config, make_generator

                    gcfg = as_generator_config(cfg.generator or "self")
                    model = tok = None
                    if gcfg.backend == "transformers" and gcfg.model in (None, "", "self"):
                        from .models import load_model

                        model, tok = load_model(cfg.model)
                    gen = make_generator(gcfg, model=model, tokenizer=tok, cache_dir=out / "cache", progress=True)
                folder.mkdir(parents=True, exist_ok=True)
                write_stage_record(folder / STAGE_FILE, rec)
                augment_snap(gen, _target_augment_config(cfg, t), folder, progress=True,
                             command="run (augment snap)", generator_spec=cfg.generator)
        data.append(load_target_data(t.name, folder, cfg.eval.max_per_set))
    del gen
    return data


def run_snap_pipeline(cfg_dict: dict | SnapRunConfig, out_dir: str | Path, *, force: bool = False) -> dict:
    """Run SNAP (or its Euclidean / Fisher baselines) for ``targets`` in ``mode`` and write a run folder.

    ``cfg_dict`` holds :class:`SnapRunConfig` fields: ``method`` (snap | euclidean | fisher),
    ``model``, ``mode`` (single | batch | sequential), ``targets`` (names or ``{name, data,
    aliases, related}``), ``generator`` + ``augment`` (for targets without ``data``), ``train``
    (TrainConfig overrides), ``eval`` (:class:`SnapEvalConfig`), ``seed``.

    Layout of ``out_dir``: ``config.yaml``; ``data/<target>/`` (generated data); ``step_00_initial/``
    (the original model's evaluation); per trained model ``step_<k>_<target>/`` (sequential) or
    ``batch/`` (batch/single) with the trainer's outputs (``model/``, ``train_log.jsonl``, ...) and
    ``metrics.json`` + ``responses.jsonl``; ``summary.json``, ``summary.md``; ``metrics.json`` (the
    final model's UA, UA_multihop, RA, TA, Avg averaged over the targets, for ``obliviate report``)
    and ``manifest.json``. Returns the summary dict.
    """
    from .data.readers import read_prompts
    from .train import resolve_train_config

    if isinstance(cfg_dict, SnapRunConfig):
        cfg = cfg_dict
    else:
        data = dict(cfg_dict)
        data.pop("out", None)  # the run folder comes as out_dir (an `obliviate run` config may carry it)
        cfg = from_dict(SnapRunConfig, data)
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not force:
        check_snap_run_dir(cfg, out)  # generated data made with other settings: refuse before writing anything
    manifest = Manifest(out, f"run snap ({cfg.mode})", config=to_dict(cfg), seed=cfg.seed)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False, allow_unicode=True))
    tcfg = resolve_train_config(cfg.method, {"seed": cfg.seed, **cfg.train})
    general: list[str] = []
    if cfg.eval.general:
        general = sample_general(read_prompts(cfg.eval.general, field=cfg.eval.general_field),
                                 cfg.eval.max_general, cfg.eval.general_seed)
        manifest.add_input("general", cfg.eval.general)
    targets = _prepare_targets(cfg, out, force=force)
    if cfg.retain_data is not None:  # SNAP Figure 4: the general set as retaining data
        general_retain_streams(targets, cfg.retain_data, exclude=general)
        manifest.add_input("retain_data", cfg.retain_data.source)
    for t in targets:
        for f in ("forget_train.jsonl", "retain_train.jsonl"):
            manifest.add_input(f"{t.name}/{f}", t.folder / f)
    names = [t.name for t in targets]
    rows: list[dict] = []

    def record(step: int, label: str, forgotten: list[str], metrics: dict, step_dir: Path) -> None:
        row = {"step": step, "label": label, "forgotten": forgotten, "dir": str(step_dir.relative_to(out)),
               **aggregate(metrics, forgotten, [n for n in names if n not in forgotten]),
               "per_target": metrics["per_target"]}
        if "rwku" in metrics:
            row["rwku"] = metrics["rwku"]
        rows.append(row)
        atomic_write_json(out / "summary.json", {"mode": cfg.mode, "method": cfg.method, "model": cfg.model,
                                                 "targets": names, "steps": rows})

    if cfg.eval.evaluate_initial:
        d = out / "step_00_initial"
        d.mkdir(exist_ok=True)
        record(0, "initial", [], _evaluate_spec(cfg.model, targets, general, cfg.eval, d), d)

    inputs = {f"{t.name}/forget_train": t.folder / "forget_train.jsonl" for t in targets}
    if not tcfg.train:  # Prompting (SNAP §4.3; Table 3's "− Negative Inst."): no training, a system prompt
        from .methods import prompting_system_prompt

        d = out / "prompting"
        d.mkdir(exist_ok=True)
        who = " or ".join(dict.fromkeys(n for t in cfg.parsed_targets() for n in [t.name, *t.aliases]))
        system = prompting_system_prompt(who, tcfg.system_prompt)
        spec = cfg.model
        record(1, "prompting", names, _evaluate_spec(spec, targets, general, cfg.eval, d, system_prompt=system), d)
    elif cfg.mode in ("batch", "single"):
        d = out / "batch"
        spec = _train_step(cfg.model, _streams(targets), tcfg, d, inputs)
        record(1, "batch", names, _evaluate_spec(spec, targets, general, cfg.eval, d), d)
    else:
        spec = cfg.model
        for k, t in enumerate(targets, start=1):
            d = out / f"step_{k:02d}_{slug(t.name)}"
            spec = _train_step(spec, _streams([t]), dataclasses.replace(tcfg), d,
                               {f"{t.name}/forget_train": t.folder / "forget_train.jsonl"})
            record(k, t.name, names[:k], _evaluate_spec(spec, targets, general, cfg.eval, d), d)

    final = rows[-1]
    metrics = {k: final.get(k) for k in (*METRIC_KEYS, "Avg")}
    metrics.update({f"{k}_ci_{e}": final.get(f"{k}_ci_{e}") for k in (*METRIC_KEYS, "Avg") for e in ("low", "high")})
    metrics.update({"method": cfg.method, "model": cfg.model, "mode": cfg.mode, "targets": names,
                    "final_model": spec, "per_target": final["per_target"], "benchmark": "snap"})
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "summary.md", render_summary(rows, cfg.mode, cfg.method, cfg.model))
    for f in ("config.yaml", "metrics.json", "summary.json", "summary.md"):
        manifest.add_output(f)
    manifest.write(final_model=spec, wall_s=round(time.time() - t0, 1))
    return {"mode": cfg.mode, "method": cfg.method, "targets": names, "steps": rows, "metrics": metrics}


def unlearn_batch(targets: Sequence[dict | str], out_dir: str | Path, *, model: str = "smollm2-135m-instruct",
                  method: str = "snap", **kwargs: Any) -> dict:
    """Batch unlearning: all ``targets``' SNAP data concatenated in one training run (SNAP §4.7)."""
    return run_snap_pipeline({"targets": list(targets), "model": model, "method": method, "mode": "batch", **kwargs},
                             out_dir)


def unlearn_sequential(targets: Sequence[dict | str], out_dir: str | Path, *, model: str = "smollm2-135m-instruct",
                       method: str = "snap", **kwargs: Any) -> dict:
    """Sequential unlearning: one target after another on the previous step's model, every step
    evaluated on all targets (forgotten and pending) (SNAP §4.7)."""
    return run_snap_pipeline({"targets": list(targets), "model": model, "method": method, "mode": "sequential",
                              **kwargs}, out_dir)
