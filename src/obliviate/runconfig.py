"""The one run config of ``obliviate run``: forget requests × a method × stages × a mode.

A run is a list of **forget requests** — QA sets (``forget: tofu:forget01``, a file, a saved
dataset, ``rwku:<target>``) or **targets** (an entity name whose SNAP data is generated, or a folder
holding it) — unlearned with one **method** (any of :func:`obliviate.methods.method_names`) through
the stages augment → train → merge → evaluate → audit, in one of three **modes**:

``single``
    one request.
``batch``
    every request's data in one training run (SNAP §4.7).
``sequential``
    one request after another, each step starting from the previous step's model (SNAP §4.7;
    with merging, θa = α·θ_{k−1} + (1 − α)·θ'_k at every step).

``preset: ulmr`` and ``preset: snap`` fill the paper's defaults (``presets/runs/<name>.yaml``); the
config's own fields win. Configs written for obliviate ≤ 0.x (``data.forget`` for ULMR and the
baselines, ``targets`` for SNAP) are converted on load (:func:`convert_legacy_config`, printed by
``obliviate run --convert OLD.yaml``).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from .augment.ulmr import UlmrAugmentConfig
from .config import OMIT_AT_DEFAULT, ConfigError, _deep_merge, apply_overrides, check_range, from_dict, read_yaml

log = logging.getLogger(__name__)

MODES = ("single", "batch", "sequential")
PRESETS = ("ulmr", "snap")
#: the quick ``rouge`` suite's default answer budget (short QA answers, as ``obliviate demo`` uses)
ROUGE_MAX_NEW_TOKENS = 64
#: the refusal suite's answer budget (UA / RA / TA of SNAP)
REFUSAL_MAX_NEW_TOKENS = 128


def slug(name: str) -> str:
    """A folder-safe name: 'Peter Parker' → 'peter_parker', 'tofu:forget01' → 'tofu_forget01'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "request"


@dataclass
class ForgetRequest:
    """One thing to forget: a QA set (``forget``) or a target entity (``target``)."""

    name: str = ""                  #: the request's label (default: the target, or the forget spec)
    forget: str | None = None       #: QA request: forget data (file, saved dataset, tofu:<split>, rwku:<target>)
    retain: str | None = None       #: its retain data (methods with a retain term train on it)
    eval_forget: str | None = None  #: default: ``forget``
    eval_retain: str | None = None  #: default: ``retain``
    target: str | None = None       #: target request: the entity (its SNAP data is generated unless ``data``)
    data: str | None = None         #: target request: a folder with its SNAP data (an ``augment snap`` output)
    aliases: list[str] = field(default_factory=list)
    related: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``"qa"`` or ``"target"``."""
        return "target" if self.target else "qa"

    @property
    def label(self) -> str:
        return self.name or self.target or self.forget or "request"

    @property
    def who(self) -> str:
        """The entity a Prompting system prompt names (the target, else the request's name)."""
        return self.target or self.name or "the unlearning target"

    def validate(self) -> None:
        if bool(self.forget) == bool(self.target):
            raise ConfigError("give either forget (a QA set) or target (an entity name), not both / neither")
        if self.kind == "qa" and (self.data or self.aliases or self.related):
            raise ConfigError("data / aliases / related: only for a target request (target: <name>)")
        if self.kind == "target" and (self.retain or self.eval_forget or self.eval_retain):
            raise ConfigError("retain / eval_forget / eval_retain: only for a QA request (forget: <data>); a "
                              "target's retain and evaluation sets come from its SNAP data")
        if self.data is not None and not Path(self.data).is_dir():
            raise ConfigError(f"data: {self.data} is not a folder")


@dataclass
class SourcesConfig:
    """Where the named benchmark data comes from, and a cap on every request's forget set."""

    tofu_source: str | None = None
    rwku_source: str | None = None
    limit: int | None = None        #: use only the first N forget records of every QA request

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit: must be >= 1, got {self.limit}")


@dataclass
class AugmentConfig:
    """The augment stage: ULMR's rewrites + negative responses for QA requests (``ulmr``), SNAP's
    negative instructions + hard-retaining data for target requests without ``data`` (``snap``)."""

    #: ULMR augmentation of the forget data; None: on for method ``ulmr``
    rewrite: bool | None = None
    ulmr: UlmrAugmentConfig = field(default_factory=UlmrAugmentConfig)
    #: :class:`~obliviate.augment.snap.SnapAugmentConfig` fields shared by every target
    snap: dict[str, Any] = field(default_factory=dict)


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
    """Evaluation of every model a run makes.

    ``suite``: ``rouge`` (ROUGE-L recall of greedy answers on each QA request's forget / retain
    sets), ``tofu`` (the full TOFU benchmark), ``refusal`` (SNAP's UA / UA♣ / RA per target and TA
    on ``general``), ``none``; ``auto``: ``rouge`` for QA requests, ``refusal`` for targets.
    """

    suite: Literal["auto", "rouge", "tofu", "refusal", "none"] = "auto"
    forget_split: str = "forget01"   #: TOFU suite: which forget split
    max_samples: int | None = None   #: cap every evaluated QA set (first N)
    #: greedy answer budget; None = the suite's convention: 200 for ``tofu`` (open-unlearning's
    #: generation config), 64 for ``rouge``, 128 for ``refusal``
    max_new_tokens: int | None = None
    batch_size: int = 16
    models: list[str] = field(default_factory=lambda: ["base", "trained", "merged"])
    #: TOFU suite: a retain model's saved forget-set truth ratios (an ``obliviate eval tofu`` run dir,
    #: its metrics.json / samples.jsonl, a JSON list, or TOFU's eval_log_forget.json) for forget quality
    retain_result: str | None = None
    #: ``obliviate audit`` settings (:class:`~obliviate.audit.common.AuditConfig` fields, ``{}`` for its
    #: defaults) to audit every unlearned model of the last step after evaluation; None = no audit
    audit: dict | None = None
    #: the audit's reference model (a Retraining model that never saw the forget set), optional
    audit_reference: str | None = None
    # --- the refusal suite (targets) ---
    general: str | None = None       #: general instruction set for TA (file/dataset; e.g. RWKU fluency.json)
    general_field: str | None = None  #: the prompt field in it (default: question/instruction/prompt)
    max_general: int | None = 300    #: SNAP samples 300 dolly-15k instructions (at random: general_seed)
    general_seed: int = 0
    max_per_set: int | None = None   #: cap each target's forget / retain evaluation questions
    detector: Literal["learned", "rules", "embedding", "rules+embedding"] = "learned"
    rwku: bool = False               #: add RWKU's metrics for each target (names must be RWKU targets)
    rwku_source: str = "jinzhuoran/RWKU"
    rwku_max_samples: int | None = None

    def resolved_suite(self, kind: str) -> str:
        """The suite used for requests of ``kind`` (``qa`` | ``target``)."""
        if self.suite == "auto":
            return "refusal" if kind == "target" else "rouge"
        return self.suite

    def answer_budget(self, suite: str) -> int:
        """``max_new_tokens`` or the suite's convention."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if suite == "tofu":
            from .evals.tofu import DEFAULT_MAX_NEW_TOKENS

            return DEFAULT_MAX_NEW_TOKENS
        return REFUSAL_MAX_NEW_TOKENS if suite == "refusal" else ROUGE_MAX_NEW_TOKENS

    def validate(self) -> None:
        if self.audit is not None:  # fail on a bad audit setting before any heavy work
            from .audit.common import AuditConfig

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
        if (self.max_new_tokens is not None and self.max_new_tokens < 1) or self.batch_size < 1:
            raise ConfigError("eval.max_new_tokens and eval.batch_size must be >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"eval.max_samples: must be >= 1, got {self.max_samples}")
        bad = set(self.models) - {"base", "trained", "merged"}
        if bad:
            raise ConfigError(f"eval.models: unknown {sorted(bad)}; allowed: ['base', 'trained', 'merged']")


@dataclass
class RetainDataSpec:
    """General QA data for L_r's stream. ``mode: replace`` (default) replaces the targets'
    hard-retaining data (SNAP §4.6 / Figure 4: the general set D_g as retaining data): per target, as
    many rows as its ``retain_train`` holds are sampled at random (``seed``). ``mode: add`` (not in
    the paper) keeps the hard-retaining data and adds ``size`` sampled rows (default: as many as the
    target's ``retain_train``): D_r ∪ D_g. The instructions of the TA evaluation set are never used."""

    source: str = ""                   # file / saved dataset, e.g. databricks-dolly-15k.jsonl
    question_key: str = "question"     # dolly-15k: instruction
    answer_key: str = "answer"         # dolly-15k: response
    seed: int = 0
    mode: Literal["replace", "add"] = field(default="replace", metadata={OMIT_AT_DEFAULT: True})
    size: int | None = field(default=None, metadata={OMIT_AT_DEFAULT: True})  #: rows added per target (add)

    def validate(self) -> None:
        """Refuse a missing source file, an unknown mode or a non-positive size, naming the field."""
        if not self.source:
            raise ConfigError("retain_data.source: a QA file is required (e.g. databricks-dolly-15k.jsonl)")
        if not Path(self.source).exists():
            raise ConfigError(f"retain_data.source: {self.source} not found")
        if self.mode not in ("replace", "add"):
            raise ConfigError(f"retain_data.mode: {self.mode!r} is not one of ['replace', 'add']")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ConfigError(f"retain_data.size: must be a positive integer, got {self.size!r}")


@dataclass
class RunConfig:
    """One unlearning run: the forget requests, the method, the mode, and each stage's settings."""

    preset: str | None = None       #: ulmr | snap: the paper's defaults under this config
    method: str = "ulmr"
    model: str = "smollm2-135m-instruct"
    out: str = ""
    seed: int = 0
    mode: Literal["single", "batch", "sequential"] = "single"
    requests: list[ForgetRequest] = field(default_factory=list)
    #: augment generator: a spec string or a ``GeneratorConfig`` mapping; default: the model being unlearned
    generator: str | dict[str, Any] | None = None
    data: SourcesConfig = field(default_factory=SourcesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: dict[str, Any] = field(default_factory=dict)  #: TrainConfig fields over the method preset
    merge: MergeConfig = field(default_factory=MergeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    retain_data: RetainDataSpec | None = None  #: None: each request's own retain data; else SNAP Figure 4

    def validate(self) -> None:
        from .methods import method_names

        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"preset: {self.preset!r} is not one of {list(PRESETS)}")
        if self.method not in method_names():
            raise ConfigError(f"method: unknown method {self.method!r}; allowed: {method_names()}")
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {list(MODES)}")
        if not self.out:
            raise ConfigError("out: required (the run directory)")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if "method" in self.train and self.train["method"] != self.method:
            raise ConfigError(f"train.method: {self.train['method']!r} differs from method {self.method!r}")
        if not self.requests:
            raise ConfigError("requests: at least one forget request is required ({forget: <data>} or "
                              "{target: <name>})")
        kinds = {r.kind for r in self.requests}
        if len(kinds) > 1:
            raise ConfigError("requests: mix of QA sets (forget:) and targets (target:); one run takes one kind "
                              "(split them into two runs)")
        labels = [r.label for r in self.requests]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"requests: duplicate names {labels} (give each a name:)")
        if self.mode == "single" and len(self.requests) != 1:
            raise ConfigError(f"mode: 'single' takes exactly one request, got {len(self.requests)}; use batch or "
                              "sequential")
        kind = self.kind
        suite = self.eval.resolved_suite(kind)
        if kind == "target" and suite in ("rouge", "tofu"):
            raise ConfigError(f"eval.suite: {suite!r} evaluates QA requests; targets use 'refusal' (or 'none')")
        if kind == "qa" and suite == "refusal":
            raise ConfigError("eval.suite: 'refusal' evaluates target requests; QA requests use rouge or tofu")
        if self.eval.audit is not None and kind == "target":
            raise ConfigError("eval.audit: audits QA requests (the forget answers are needed); give the target "
                              "as a QA request (e.g. forget: rwku:<target>)")
        if self.augment.rewrite and kind == "target":
            raise ConfigError("augment.rewrite: ULMR's rewrites apply to QA requests")
        if self.retain_data is not None:
            if kind != "target":
                raise ConfigError("retain_data: replaces the targets' hard-retaining data (target requests only)")
            self.retain_data.validate()
        if self.generator is not None and self.generator != "self":
            from .generate.factory import as_generator_config

            as_generator_config(self.generator)  # a string form or a mapping (README "Choosing a generator")
        if kind == "target" and self.augment.snap:  # fail on a bad SNAP augmentation setting up front
            from .augment.snap import SnapAugmentConfig

            from_dict(SnapAugmentConfig, {**self.augment.snap, "target": "x"}, prefix="augment.snap.")
        tc = self.train_config()
        if self.mode == "sequential" and tc.train and self.merge_enabled and len(self.merge.alpha) != 1:
            raise ConfigError(f"merge.alpha: sequential mode chains one merged model per step; give one α, got "
                              f"{self.merge.alpha}")
        if tc.train and kind == "qa":
            from .methods import build_terms, streams_needed

            if "retain" in streams_needed(build_terms(tc)[0]):
                for i, r in enumerate(self.requests):
                    if not r.retain:
                        raise ConfigError(f"requests[{i}].retain (data.retain): method {self.method!r} trains on "
                                          "a retain set; give one")

    # derived -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``qa`` or ``target``: the kind of every request."""
        return self.requests[0].kind if self.requests else "qa"

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
        """ULMR augmentation of the QA requests' forget data."""
        if self.kind != "qa":
            return False
        return self.augment.rewrite if self.augment.rewrite is not None else self.method == "ulmr"


# ---------------------------------------------------------------------------------------------
# presets and the old schemas
# ---------------------------------------------------------------------------------------------
def preset_defaults(name: str) -> dict:
    """The run preset ``name`` (``ulmr`` | ``snap``) as a config mapping (``presets/runs/<name>.yaml``)."""
    if name not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not one of {list(PRESETS)}")
    text = (resources.files("obliviate") / "presets" / "runs" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


_QA_DATA_KEYS = ("forget", "retain", "eval_forget", "eval_retain", "target")
_SOURCE_KEYS = ("tofu_source", "rwku_source", "limit")


def is_legacy_config(raw: dict) -> bool:
    """Whether ``raw`` is written in an old schema: ``targets`` (SNAP runs) or ``data.forget`` (the others)."""
    return "requests" not in raw and ("targets" in raw or (isinstance(raw.get("data"), dict)
                                                           and any(k in raw["data"] for k in _QA_DATA_KEYS)))


def convert_legacy_config(raw: dict) -> dict:
    """Convert an old ``obliviate run`` config to the one schema (leaves a new one as it is).

    * ``data: {forget, retain, eval_forget, eval_retain, target, ...}`` (ULMR and the baselines)
      → ``requests: [{forget, retain, eval_forget, eval_retain, name: target}]``, ``mode: single``,
      the ULMR augmentation fields under ``augment.ulmr``, the sources under ``data``.
    * ``targets: [...]`` (SNAP / Euclidean / Fisher) → ``requests: [{target, data, aliases, related}]``,
      ``mode`` (the old default: sequential), ``augment`` → ``augment.snap``, ``eval.evaluate_initial:
      false`` → ``eval.models`` without ``base``.

    Unknown fields are kept, so the new schema rejects them with their name.
    """
    if not is_legacy_config(raw):
        return raw
    old = copy.deepcopy(raw)
    new: dict[str, Any] = {}
    if "targets" in old:
        targets = old.pop("targets")
        reqs = []
        for i, t in enumerate(targets or []):
            if isinstance(t, str):
                t = {"name": t}
            if not isinstance(t, dict):
                raise ConfigError(f"targets[{i}]: expected a name or a mapping, got {type(t).__name__}")
            t = dict(t)
            r = {"target": t.pop("name", None)}
            r.update(t)  # data / aliases / related (unknown keys are rejected by the schema)
            reqs.append(r)
        new["mode"] = old.pop("mode", "sequential")
        new["method"] = old.pop("method", "snap")
        if "generator" in old:
            new["generator"] = old.pop("generator")
        else:
            new["generator"] = "self"
        if "augment" in old:
            new["augment"] = {"snap": old.pop("augment")}
        ev = dict(old.pop("eval", None) or {})
        if ev.pop("evaluate_initial", True) is False:
            ev["models"] = ["trained", "merged"]
        if ev:
            new["eval"] = ev
        new["requests"] = reqs
    else:
        data = dict(old.pop("data"))
        req = {k: data.pop(k) for k in ("forget", "retain", "eval_forget", "eval_retain") if k in data}
        if data.get("target"):
            req["name"] = data["target"]
        data.pop("target", None)
        new["mode"] = "single"
        new["requests"] = [req]
        if data:
            new["data"] = data
        if "augment" in old:
            new["augment"] = {"ulmr": old.pop("augment")}
        ev = old.pop("eval", None)
        if ev is not None:
            new["eval"] = {"suite": "rouge", **ev} if isinstance(ev, dict) else ev
        else:
            new["eval"] = {"suite": "rouge"}
    new.update(old)  # method, model, out, seed, generator, train, merge, retain_data, unknown keys
    return new


def resolve_run_dict(raw: dict, overrides: Sequence[str] = ()) -> dict:
    """The config mapping the run is built from: overrides applied, an old schema converted (with a
    warning naming ``obliviate run --convert``), the preset's defaults underneath."""
    data = apply_overrides(raw, overrides)
    if is_legacy_config(data):
        log.warning("this config uses the old run schema (%s); it was converted — `obliviate run --convert "
                    "CONFIG` prints it in the new one", "targets" if "targets" in data else "data.forget")
        data = convert_legacy_config(data)
    preset = data.get("preset")
    if preset is not None:
        data = _deep_merge(preset_defaults(preset), data)
    return data


def load_run_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), base: dict | None = None
                    ) -> RunConfig:
    """Read a run config YAML (+ ``--set`` overrides), convert an old schema, lay it over its preset,
    and validate it fully (incl. the training preset and the requests' data needs)."""
    raw = _deep_merge(dict(base or {}), read_yaml(path)) if path else dict(base or {})
    return run_config_from_dict(raw, overrides)


def run_config_from_dict(raw: dict, overrides: Sequence[str] = ()) -> RunConfig:
    """:func:`load_run_config` for a mapping."""
    return from_dict(RunConfig, resolve_run_dict(raw, overrides))
