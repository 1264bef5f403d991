"""Shared pieces of the audit: its configuration, the data it attacks with, forget-set scoring.

Every attack measures the same two numbers on forget questions, as TOFU does (Maini et al. 2024):

* **ROUGE-L recall** of the model's greedy answer against the reference answer
  (:func:`obliviate.evals.metrics.rouge_l_recall`);
* **probability** of the reference answer, length-normalised: ``P(a|q)^(1/|a|)``
  (:func:`obliviate.evals.metrics.normalized_prob`).

Both go through the project's batched scorers (:func:`~obliviate.evals.scoring.generate_answers`,
:func:`~obliviate.evals.scoring.sequence_logprobs`), so an attacked model is scored exactly like an
evaluated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError
from ..data.records import DataError, QARecord

ATTACKS = ("relearning", "quantization", "prompts", "membership")
PROMPT_VARIANTS = ("paraphrase", "language", "in_context", "jailbreak", "sampling", "adversarial")
QUANT_BACKENDS = ("auto", "quanto", "rtn")


@dataclass
class AuditConfig:
    """Settings of every attack and of the verdicts (all have CPU-sized defaults).

    Tolerances: an attack **passes** when the recovered forget score exceeds the baseline (the
    reference model under the same attack when one is given, else the unlearned model before the
    attack) by at most ``rouge_tolerance`` (ROUGE-L recall, fraction) and ``prob_tolerance``
    (probability); membership inference passes when ``|AUC − baseline AUC| ≤ auc_tolerance``
    (baseline: the reference's AUC, else 0.5).
    """

    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    seed: int = 0
    max_samples: int | None = None      #: cap the forget (and holdout) set, first N
    batch_size: int = 16
    max_new_tokens: int = 48
    # relearning
    relearn_fraction: float = 0.2
    relearn_steps: int = 12
    relearn_eval_every: int = 4
    relearn_lr: float = 1e-3
    relearn_rank: int = 8
    relearn_alpha: int = 16
    relearn_batch_size: int = 4
    relearn_arms: list[str] = field(default_factory=lambda: ["forget", "retain"])
    # quantization
    quant_bits: list[int] = field(default_factory=lambda: [8, 4])
    quant_backend: str = "auto"
    quant_group_size: int = 128
    # prompt attacks
    prompt_variants: list[str] = field(default_factory=lambda: list(PROMPT_VARIANTS))
    languages: list[str] = field(default_factory=lambda: ["French", "German"])
    translator: str | None = None        #: generator spec that translates questions (else a wrapper template)
    in_context_facts: int = 2
    samples: int = 5
    temperature: float = 1.0
    sample_threshold: float = 0.5
    # membership inference
    mia_k: float = 0.2
    # verdicts
    rouge_tolerance: float = 0.05
    prob_tolerance: float = 0.05
    auc_tolerance: float = 0.05

    def validate(self) -> None:
        """Name and range checks; raises :class:`ConfigError` naming the field and what it accepts."""
        bad = sorted(set(self.attacks) - set(ATTACKS))
        if bad or not self.attacks:
            raise ConfigError(f"attacks: unknown {bad or 'empty list'}; allowed: {list(ATTACKS)}")
        bad = sorted(set(self.prompt_variants) - set(PROMPT_VARIANTS))
        if bad:
            raise ConfigError(f"prompt_variants: unknown {bad}; allowed: {list(PROMPT_VARIANTS)}")
        bad = sorted(set(self.relearn_arms) - {"forget", "retain"})
        if bad:
            raise ConfigError(f"relearn_arms: unknown {bad}; allowed: ['forget', 'retain']")
        if not 0 < self.relearn_fraction < 1:
            raise ConfigError(f"relearn_fraction: {self.relearn_fraction} is outside (0, 1)")
        for name in ("batch_size", "max_new_tokens", "relearn_steps", "relearn_eval_every", "relearn_rank",
                     "relearn_batch_size", "samples", "quant_group_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.in_context_facts < 1:
            raise ConfigError(f"in_context_facts: must be >= 1, got {self.in_context_facts}")
        if self.max_samples is not None and self.max_samples < 2:
            raise ConfigError(f"max_samples: must be >= 2 (relearning needs a train and an eval part), "
                              f"got {self.max_samples}")
        if self.relearn_lr <= 0:
            raise ConfigError(f"relearn_lr: must be > 0, got {self.relearn_lr}")
        bad = [b for b in self.quant_bits if b not in (2, 3, 4, 8)]
        if bad or not self.quant_bits:
            raise ConfigError(f"quant_bits: {self.quant_bits} must be a non-empty list of 8, 4 (or 3, 2)")
        if self.quant_backend not in QUANT_BACKENDS:
            raise ConfigError(f"quant_backend: {self.quant_backend!r} is not one of {list(QUANT_BACKENDS)}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature: sampling needs a temperature > 0, got {self.temperature}")
        if not 0 < self.mia_k <= 1:
            raise ConfigError(f"mia_k: {self.mia_k} is outside (0, 1]")
        for name in ("sample_threshold", "rouge_tolerance", "prob_tolerance", "auc_tolerance"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"{name}: {v} is outside [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the settings (what fingerprints and ``audit.json`` record)."""
        return asdict(self)


@dataclass
class AuditData:
    """The records every attack uses, split once with the audit's seed.

    ``forget`` is the whole (capped) forget set, scored by quantization and prompt attacks;
    ``relearn_train`` (``relearn_fraction`` of it) is what relearning trains on and
    ``relearn_eval`` (the rest) what it is scored on; ``retain_sample`` holds as many retain
    records as ``relearn_train`` (the relearning control arm). ``mia_members`` /
    ``mia_nonmembers`` are ``(prompt or None, text)`` pairs: QA pairs (forget vs holdout, the answer
    scored after the chat prompt) or raw texts (RWKU forget_mia vs retain_mia, prompt None).
    ``adversarial`` holds RWKU's forget_level3 probes when the forget set is an RWKU target.
    ``notes`` say what was left out and why.
    """

    kind: str
    forget: list[QARecord]
    relearn_train: list[QARecord]
    relearn_eval: list[QARecord]
    retain_sample: list[QARecord] = field(default_factory=list)
    mia_members: list[tuple[str | None, str]] = field(default_factory=list)
    mia_nonmembers: list[tuple[str | None, str]] = field(default_factory=list)
    mia_source: str = ""
    adversarial: list[QARecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ids(self) -> dict[str, list]:
        """Identity of every set (ids, else questions): part of each attack's fingerprint."""
        key = lambda r: r.id or r.question  # noqa: E731
        return {"forget": [key(r) for r in self.forget], "relearn_train": [key(r) for r in self.relearn_train],
                "retain_sample": [key(r) for r in self.retain_sample],
                "mia": [len(self.mia_members), len(self.mia_nonmembers), self.mia_source],
                "adversarial": [key(r) for r in self.adversarial]}


def _tofu_perturbed_spec(spec: str) -> str | None:
    """``tofu:forget01[0:1]`` -> ``tofu:forget01_perturbed[0:1]`` (same questions, with paraphrases)."""
    if not spec.startswith("tofu:forget") or "_perturbed" in spec or os.path.exists(spec):
        return None
    split, bracket, rest = spec[len("tofu:"):].partition("[")
    return f"tofu:{split}_perturbed" + (bracket + rest if bracket else "")


def build_audit_data(forget: str, retain: str | None, cfg: AuditConfig, *, holdout: str | None = None,
                     tofu_source: str | None = None, rwku_source: str | None = None) -> AuditData:
    """Resolve the data specs and split them with ``cfg.seed``.

    ``tofu:forgetXX`` is read from ``forgetXX_perturbed`` (the same questions carrying TOFU's
    ``paraphrased_question``); its default holdout is ``tofu:holdoutXX``. ``rwku:<target>`` also
    loads the target's forget_level3 (adversarial) probes and its forget_mia / retain_mia texts.
    Raises :class:`DataError` for a forget set of fewer than two records.
    """
    from ..data.sources import default_rwku_source, default_tofu_source, resolve_records

    srcs = dict(tofu_source=tofu_source, rwku_source=rwku_source)
    notes: list[str] = []
    kind = "tofu" if forget.startswith("tofu:") else "rwku" if forget.startswith("rwku:") else "custom"
    recs = resolve_records(forget, purpose="eval", **srcs)  # probes: the audit attacks them
    pert = _tofu_perturbed_spec(forget)
    if pert:
        try:
            prec = resolve_records(pert, purpose="eval", **srcs)
            if [r.question for r in prec] == [r.question for r in recs]:
                recs = prec
        except DataError as e:
            notes.append(f"paraphrased questions unavailable ({e})")
    if cfg.max_samples:
        recs = recs[: cfg.max_samples]
    if len(recs) < 2:
        raise DataError(f"--forget {forget}: the audit needs at least 2 forget records, got {len(recs)}")
    order = list(range(len(recs)))
    random.Random(cfg.seed).shuffle(order)
    n_train = min(len(recs) - 1, max(1, round(cfg.relearn_fraction * len(recs))))
    train = [recs[i] for i in sorted(order[:n_train])]
    evals = [recs[i] for i in sorted(order[n_train:])]
    retain_sample: list[QARecord] = []
    if retain:
        rr = resolve_records(retain, purpose="eval", **srcs)
        pick = random.Random(cfg.seed + 1).sample(range(len(rr)), min(n_train, len(rr)))
        retain_sample = [rr[i] for i in sorted(pick)]
    data = AuditData(kind=kind, forget=recs, relearn_train=train, relearn_eval=evals, retain_sample=retain_sample,
                     notes=notes)

    # membership inference sets
    if holdout:
        hold = resolve_records(holdout, purpose="eval", **srcs)
        data.mia_source = f"forget vs {holdout}"
    elif kind == "tofu":
        from ..data.tofu import load_tofu, tofu_eval_splits

        split = forget[len("tofu:"):].partition("[")[0].removesuffix("_perturbed")
        try:
            hsplit = tofu_eval_splits(split)["holdout"]
            hold = load_tofu(hsplit, tofu_source or default_tofu_source())
            data.mia_source = f"forget vs tofu:{hsplit}"
        except DataError as e:
            hold = None
            notes.append(f"membership inference skipped: no TOFU holdout for {forget} ({e})")
    else:
        hold = None
    if hold is not None:
        if cfg.max_samples:
            hold = hold[: cfg.max_samples]
        data.mia_members = [(r.question, r.answer) for r in recs]
        data.mia_nonmembers = [(r.question, r.answer) for r in hold]
    elif kind == "rwku":
        from ..data.rwku import load_rwku

        target = forget[len("rwku:"):].partition(":")[0]
        src = rwku_source or default_rwku_source()
        fm = [t.text for t in load_rwku(target, "forget_mia", src)]
        rm = [t.text for t in load_rwku(target, "retain_mia", src)]
        if cfg.max_samples:
            fm, rm = fm[: cfg.max_samples], rm[: cfg.max_samples]
        data.mia_members = [(None, t) for t in fm]
        data.mia_nonmembers = [(None, t) for t in rm]
        data.mia_source = f"rwku:{target} forget_mia vs retain_mia"
    else:
        notes.append("membership inference skipped: give --holdout (texts the model never saw)")
    if kind == "rwku":
        from ..data.rwku import load_rwku

        target = forget[len("rwku:"):].partition(":")[0]
        adv = [r for r in load_rwku(target, "forget_level3", rwku_source or default_rwku_source())
               if isinstance(r, QARecord)]
        data.adversarial = adv[: cfg.max_samples] if cfg.max_samples else adv
    return data


def score_items(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], *, batch_size: int = 16,
                max_new_tokens: int = 48, progress: bool | str = False,
                with_prob: bool = True) -> list[dict[str, Any]]:
    """For each (prompt, reference answer): the greedy answer, its ROUGE-L recall against the
    reference, and the reference's length-normalised probability ``exp(mean token log p(a|prompt))``.

    One batched greedy pass and one batched scoring pass (chat template, response tokens only).
    """
    from ..evals.metrics import normalized_prob, rouge_l_recall
    from ..evals.scoring import generate_answers, sequence_logprobs

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        return []
    gens = generate_answers(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                            progress=bool(progress))
    probs: list[float | None] = [None] * len(prompts)
    if with_prob:
        scored = sequence_logprobs(model, tokenizer, list(zip(prompts, answers)), batch_size=batch_size,
                                   progress=progress)
        probs = [normalized_prob(s, n) if n else None for s, n in scored]
    return [{"prompt": p, "reference": a, "generation": g, "rouge": rouge_l_recall(g, a), "prob": pr}
            for p, a, g, pr in zip(prompts, answers, gens, probs)]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ROUGE-L recall and mean probability over scored rows (``None`` when absent)."""
    from ..evals.metrics import mean

    probs = [r["prob"] for r in rows if r.get("prob") is not None]
    return {"rouge": mean([r["rouge"] for r in rows]) if rows else None,
            "prob": mean(probs) if probs else None, "n": len(rows)}


def fingerprint(obj: Any) -> str:
    """SHA-256 (first 16 hex digits) of ``obj`` as canonical JSON: what makes a result reusable."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_identity(spec: str) -> dict[str, Any]:
    """What identifies a model for resuming: its spec, and for a local folder the SHA-256 of its
    config and the byte sizes of its weight / adapter files (cheap, no full-weight hashing)."""
    p = Path(str(spec)).expanduser()
    out: dict[str, Any] = {"spec": str(spec)}
    if p.is_dir():
        for name in ("config.json", "adapter_config.json"):
            if (p / name).is_file():
                out[name] = hashlib.sha256((p / name).read_bytes()).hexdigest()[:16]
        out["weights"] = {f.name: f.stat().st_size for f in sorted(p.iterdir())
                          if f.suffix in (".safetensors", ".bin", ".gguf")}
    elif p.is_file():
        out["bytes"] = p.stat().st_size
    return out
