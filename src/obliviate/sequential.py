"""SNAP end to end for one or several targets: augment → train → evaluate (UA / RA / TA), in
single, **batch** (all targets' data in one training run) or **sequential** mode (one target after
another, each step starting from the previous step's model; SNAP §4.7).

After every trained model, every target — already forgotten or not yet — is evaluated: UA on its
``forget_eval`` questions, UA♣ on its multi-hop questions, RA on its ``retain_eval`` questions,
and TA once on the general instruction set; optionally RWKU's metrics too. The summary table
averages over the targets forgotten so far (mean ± std, as SNAP Figure 5) and reports the
not-yet-forgotten targets' UA separately (it should stay near the original model's).

The run itself is :mod:`obliviate.runner`'s (one runner for every method and mode);
:func:`run_snap_pipeline` converts a config in the old SNAP schema (:class:`SnapRunConfig`) to it.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence


from .config import ConfigError, from_dict, to_dict
from .data.records import QARecord
from .evals.refusal import targets_intervals
from .io import atomic_write_jsonl
from .runconfig import RetainDataSpec, slug  # noqa: F401 (re-exported)

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
            self.retain_data.validate()


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
    """Set each target's ``retain_train`` from rows of ``spec.source``, in place, drawn at random
    without replacement (``spec.seed``), never an instruction of ``exclude`` (the TA evaluation set):

    * ``mode="replace"`` (SNAP Figure 4): as many rows as the target's own retaining set replace it;
    * ``mode="add"`` (D_r ∪ D_g, not in the paper): ``spec.size`` rows (default: as many as its own
      retaining set) are appended to the hard-retaining data."""
    import random

    from .data.readers import read_records

    skip = set(exclude)
    pool = [r for r in read_records(spec.source, question_key=spec.question_key, answer_key=spec.answer_key)
            if r.question not in skip]
    rng = random.Random(spec.seed)
    order = rng.sample(range(len(pool)), len(pool))
    pos = 0
    for t in targets:
        own = len(t.retain_train) or len(t.forget_train)
        n = (spec.size or own) if spec.mode == "add" else own
        if pos + n > len(pool):
            raise ConfigError(f"retain_data.source: {len(pool)} usable rows, fewer than the {pos + n} needed")
        drawn = [pool[i] for i in order[pos:pos + n]]
        t.retain_train = (list(t.retain_train) + drawn) if spec.mode == "add" else drawn
        pos += n


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
# the old entry point: converted to the one run config and run by obliviate.runner
# ----------------------------------------------------------------------------------------------

def run_snap_pipeline(cfg_dict: dict | SnapRunConfig, out_dir: str | Path, *, force: bool = False,
                      progress: bool = True) -> dict:
    """Run a config in the old SNAP schema (:class:`SnapRunConfig`: ``targets``, ``mode``, ``method``
    snap | euclidean | fisher | ..., ``augment``, ``train``, ``eval``, ``retain_data``) with the one
    runner (:func:`obliviate.runner.run`) in ``out_dir``; see :mod:`obliviate.runner` for the layout.
    Returns the runner's result (``steps``, ``metrics`` as SNAP's UA / UA♣ / RA / TA / Avg, ...)."""
    from .runconfig import RunConfig, convert_legacy_config
    from .runner import run

    if isinstance(cfg_dict, SnapRunConfig):
        cfg = cfg_dict
    else:
        data = dict(cfg_dict)
        data.pop("out", None)  # the run folder comes as out_dir (an `obliviate run` config may carry it)
        cfg = from_dict(SnapRunConfig, data)
    cfg.validate()  # the old schema's checks and messages first
    new = convert_legacy_config(to_dict(cfg))
    new["out"] = str(out_dir)
    return run(from_dict(RunConfig, new), force=force, progress=progress)


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
