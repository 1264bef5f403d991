"""One trainer for every unlearning method: a transformers ``Trainer`` summing configured loss terms.

A method is a list of :class:`~obliviate.objectives.base.Term` (each reading one or two data
streams) plus parameter :class:`~obliviate.objectives.base.Regularizer`; the step loss is

    L(θ) = Σ_i w_i · term_i(θ; batches) + Σ_j λ_j · regularizer_j(θ).

Each training item holds one example per stream: the i-th forget example (the primary stream),
its paired preferred response for DPO (``forget_pref``), and a retain example that cycles through
a seeded permutation of the retain set (a different partner every epoch). Batches are length
grouped and padded per stream to their own longest row. The frozen reference's per-sample
statistics (NPO, DPO, top-k KL) are computed once before training; the reference model is kept
only when a term needs its live forward (exact KL), and with LoRA it is the base model reached by
disabling the adapters, never a second copy.

Because this is HF ``Trainer``, the same code runs under ``accelerate launch`` (DDP, DeepSpeed,
FSDP), with gradient accumulation, gradient checkpointing, bf16 autocast, checkpoints and
``resume_from_checkpoint``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from .config import ConfigError, apply_overrides, check_finite, check_range, from_dict, read_yaml, to_dict
from .data.formatting import TEXT_OVERFLOW, DataCollator, encode_example, encode_record, length_grouped_batches, pad_batch
from .data.records import DataError, QARecord, is_text_record
from .methods import IDK_RESPONSES, build_terms, get_method, method_names, streams_needed

log = logging.getLogger(__name__)

LR_SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay"]
OPTIMIZERS = ["adamw_torch", "adamw_torch_fused", "adamw_8bit", "adafactor", "sgd", "paged_adamw_8bit"]
PREFERRED = ["meta", "idk", "meta_or_idk", "perturbed"]
LORA_KEYS = {"r", "alpha", "dropout", "target_modules", "extra"}
#: streams paired row by row with "forget" (same length, same sample ids)
PAIRED = {"forget_pref": "forget"}


@dataclass
class TrainConfig:
    """Everything that defines an unlearning training run (a method preset plus overrides).

    ``batch_size`` is the per-device micro-batch; the effective batch is ``batch_size ×
    grad_accum × number of processes``. ``terms`` lists the loss terms (``{"type": "nll",
    "stream": "retain", "weight": 1.0, ...}``); ``term_weights`` / ``term_args`` override a term's
    weight or arguments by its name (``forget_nll``, ``retain_nll``, ``forget_ga``, ``retain_kl``,
    ``dpo``, ``npo``). ``regularizer`` names a parameter penalty (``swd``, ``euclidean``,
    ``fisher`` or ``module:Class``) with weight λ = ``regularizer_weight``. ``lora`` is None for
    full fine-tuning or a :class:`~obliviate.models.LoraSpec` mapping. ``bf16``: ``"auto"`` uses bf16
    autocast on GPUs that support it. ``model_dtype``: ``"auto"`` loads fp32 master weights for full
    fine-tuning and bf16 frozen weights for LoRA when bf16 is on. ``preferred`` says where DPO's
    preferred responses come from: ``meta`` (record.meta["preferred"]), ``idk`` (TOFU's "I don't
    know" answers), ``meta_or_idk``, or ``perturbed`` (TOFU's perturbed answers, records of the
    ``*_perturbed`` splits: a wrong answer is preferred, ULMR's DPO baseline that "generates
    incorrect knowledge"). ``text_overflow`` (``truncate`` | ``chunk``) says what happens to a
    plain-text record (RWKU's forget corpus) longer than ``max_length``. ``train: false`` marks a preset that needs no training
    (Prompting), whose ``system_prompt`` is used at evaluation; for trained methods a
    ``system_prompt`` is put in every training example's chat.
    """

    method: str = "ulmr"
    description: str = ""
    source: str = ""
    train: bool = True
    terms: list[dict] = field(default_factory=list)
    term_weights: dict[str, float] = field(default_factory=dict)
    term_args: dict[str, dict] = field(default_factory=dict)
    regularizer: str | None = None
    regularizer_weight: float = 0.1
    regularizer_args: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    preferred: str = "meta_or_idk"
    text_overflow: str = "truncate"
    lr: float = 1e-4
    epochs: float = 5.0
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 512
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    seed: int = 42
    lora: dict | None = None
    gradient_checkpointing: bool = False
    bf16: Any = "auto"
    model_dtype: str = "auto"
    save_steps: int = 0
    save_total_limit: int = 2
    max_steps: int = -1
    logging_steps: int = 1
    group_by_length: bool = True
    num_workers: int = 0
    progress: bool = True

    def validate(self) -> None:
        """Range and name checks; raises :class:`ConfigError` naming the field and what it accepts."""
        if self.method not in method_names():
            raise ConfigError(f"method: unknown method {self.method!r}; allowed: {method_names()}")
        for f in dataclasses.fields(self):  # a NaN weight or rate would train and save an all-NaN model
            check_finite(f.name, getattr(self, f.name))
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ConfigError(f"lr: must be a positive number, got {self.lr!r}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs: must be > 0, got {self.epochs!r}")
        for name in ("batch_size", "grad_accum", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)!r}")
        if self.max_length < 16:
            raise ConfigError(f"max_length: must be >= 16 tokens, got {self.max_length!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio: {self.warmup_ratio!r} is outside [0, 1)")
        check_range("max_grad_norm", self.max_grad_norm, 0, None)
        check_range("regularizer_weight", self.regularizer_weight, 0, None)
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(f"lr_scheduler: {self.lr_scheduler!r} is not one of {LR_SCHEDULERS}")
        if self.optim not in OPTIMIZERS:
            raise ConfigError(f"optim: {self.optim!r} is not one of {OPTIMIZERS}")
        if self.preferred not in PREFERRED:
            raise ConfigError(f"preferred: {self.preferred!r} is not one of {PREFERRED}")
        if self.text_overflow not in TEXT_OVERFLOW:
            raise ConfigError(f"text_overflow: {self.text_overflow!r} is not one of {list(TEXT_OVERFLOW)}")
        if self.bf16 not in ("auto", True, False):
            if isinstance(self.bf16, str) and self.bf16.lower() in ("true", "false"):
                self.bf16 = self.bf16.lower() == "true"
            else:
                raise ConfigError(f"bf16: {self.bf16!r} is not one of ['auto', true, false]")
        if self.model_dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"model_dtype: {self.model_dtype!r} is not one of ['auto', 'fp32', 'bf16', 'fp16']")
        if self.save_steps < 0:
            raise ConfigError(f"save_steps: must be >= 0 (0 = no intermediate checkpoints), got {self.save_steps!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps: must be -1 (use epochs) or >= 1, got {self.max_steps!r}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: must be >= 0, got {self.num_workers!r}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed!r}")
        if self.lora is not None:
            from .models import LoraSpec

            bad = sorted(set(self.lora) - LORA_KEYS)
            if bad:
                raise ConfigError(f"lora: unknown key(s) {bad}; allowed: {sorted(LORA_KEYS)}")
            spec = from_dict(LoraSpec, dict(self.lora), prefix="lora.")  # checks every key's type
            if spec.r < 1:
                raise ConfigError(f"lora.r: must be >= 1, got {spec.r!r}")
            if not 0 <= spec.dropout < 1:
                raise ConfigError(f"lora.dropout: {spec.dropout!r} is outside [0, 1)")
            tm = spec.target_modules
            if not (isinstance(tm, str) or (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm))):
                raise ConfigError(f"lora.target_modules: expected 'all-linear', a module name or a list of names, "
                                  f"got {tm!r}")
        if self.train:
            if not self.terms:
                raise ConfigError("terms: a trained method needs at least one loss term")
            build_terms(self)  # checks term types, arguments, names and the regularizer

    def resolved_bf16(self) -> bool:
        """Whether bf16 autocast will be used on this machine."""
        if self.bf16 == "auto":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return bool(self.bf16)


def resolve_train_config(method: str | None = None, config: str | os.PathLike | Mapping | None = None,
                         overrides: Sequence[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig`: the method's preset, then ``config`` (YAML path or mapping), then ``--set`` overrides.

    The method comes from ``method`` if given, else from the config's / overrides' ``method`` key.
    """
    user = read_yaml(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    user = apply_overrides(user, overrides)
    name = method or user.get("method")
    if not name:
        raise ConfigError(f"method: no method given; pass --method (one of {method_names()}) or set 'method' "
                          "in the config")
    if method and user.get("method") not in (None, method):
        log.info("--method %s overrides the config's method %s", method, user.get("method"))
    base = get_method(name)
    if "terms" in user:  # a user-given composition replaces the preset's (it does not merge)
        base.pop("terms", None)
    data = {**base, **user, "method": name}
    return from_dict(TrainConfig, data)


# --------------------------------------------------------------------------------------------
# data


def encode_streams(tokenizer, streams: Mapping[str, Sequence[QARecord]], cfg: TrainConfig,
                   needed: Sequence[str]) -> dict[str, list[dict]]:
    """Encode each needed stream's records (question → prompt, answer → response, response-only labels).

    Every encoded example carries ``sample_id`` = its index in the stream. DPO's ``forget_pref``
    stream, when not given, is built from the forget records: ``meta["preferred"]`` and/or one of
    TOFU's "I don't know" answers (seeded choice), according to ``cfg.preferred``.
    """
    streams = dict(streams)
    for s, base in PAIRED.items():
        if s in needed and any(is_text_record(r) for r in (*(streams.get(base) or []), *(streams.get(s) or []))):
            raise DataError(f"stream {base!r} holds plain-text records, which have no question to pair a "
                            f"preferred response with ({s!r}); method {cfg.method!r} needs QA pairs "
                            "(plain text suits ga / graddiff / npo)", field=base)
    for s in needed:
        if s == "forget_pref" and s not in streams:
            streams[s] = _preferred_stream(streams.get("forget") or [], cfg)
        if s not in streams or not streams[s]:
            raise DataError(f"method {cfg.method!r} needs a non-empty {s!r} stream "
                            f"(got {len(streams.get(s) or [])} records)", field=s)
    for s, base in PAIRED.items():
        if s in needed and len(streams[s]) != len(streams[base]):
            raise DataError(f"stream {s!r} must pair row by row with {base!r}: {len(streams[s])} vs "
                            f"{len(streams[base])} records", field=s)
    out = {}
    for s in needed:
        enc = []
        cut: list[tuple[int, QARecord, int, int]] = []  # (index, record, response tokens kept, of how many)
        for i, r in enumerate(streams[s]):
            if not isinstance(r, QARecord):
                raise DataError(f"stream {s!r} item {i}: expected a QARecord, got {type(r).__name__}", field=s)
            if is_text_record(r):  # plain text (RWKU's passages): no chat template, loss on every token
                for e in encode_record(tokenizer, r, max_length=cfg.max_length, text_overflow=cfg.text_overflow):
                    e["sample_id"] = len(enc)
                    enc.append(e)
                continue
            if not r.question.strip() or not r.answer.strip():
                raise DataError(f"stream {s!r} record {i} ({r.id or 'no id'}) has an empty question or answer",
                                field=s)
            e = encode_example(tokenizer, r.question, r.answer, system=cfg.system_prompt, max_length=cfg.max_length)
            if len(e["input_ids"]) >= cfg.max_length:  # maybe cut: compare with the uncut encoding
                whole = encode_example(tokenizer, r.question, r.answer, system=cfg.system_prompt, max_length=None)
                if len(whole["input_ids"]) > len(e["input_ids"]):
                    cut.append((i, r, _n_response(e), _n_response(whole)))
            e["sample_id"] = len(enc)
            enc.append(e)
        _check_truncation(s, cut, len(streams[s]), cfg.max_length)
        out[s] = enc
    return out


def _n_response(example: dict) -> int:
    from .data.formatting import IGNORE_INDEX

    return sum(1 for t in example["labels"] if t != IGNORE_INDEX)


def _check_truncation(stream: str, cut: Sequence[tuple[int, QARecord, int, int]], n: int, max_length: int) -> None:
    """Warn how many records of ``stream`` ``max_length`` cuts; refuse when a response is cut away entirely.

    A response that keeps at most one of its tokens (its prompt alone fills ``max_length``) would train
    as a single token: :class:`DataError` naming the record.
    """
    if not cut:
        return
    gone = [(i, r, k, w) for i, r, k, w in cut if k <= 1 < w]
    if gone:
        i, r, k, w = gone[0]
        raise DataError(f"stream {stream!r}: {len(gone)} record(s) lose their whole response to max_length="
                        f"{max_length} (e.g. record {i} ({r.id or 'no id'}): its prompt fills the budget and "
                        f"{k} of {w} response tokens would remain); shorten those questions or raise "
                        f"--set max_length=N", field=stream)
    lost = sum(w - k for _, _, k, w in cut)
    longest = max(w for _, _, _, w in cut)
    ids = ", ".join(str(r.id if r.id is not None else f"#{i}") for i, r, _, _ in cut[:5])
    log.warning("stream %r: max_length=%d cuts %d of %d records (%s%s); %d response tokens are not trained "
                "(the longest response has %d tokens); raise --set max_length=N to train them whole",
                stream, max_length, len(cut), n, ids, ", ..." if len(cut) > 5 else "", lost, longest)


def _preferred_stream(forget: Sequence[QARecord], cfg: TrainConfig) -> list[QARecord]:
    """DPO's preferred responses y_w, one per forget record, according to ``cfg.preferred``.

    ``perturbed``: one of the record's ``perturbed_answers`` (TOFU's wrong-but-plausible answers),
    a seeded choice per record; :class:`DataError` when a record carries none.
    """
    rng = random.Random(cfg.seed)
    out = []
    if cfg.preferred == "perturbed":
        bare = [i for i, r in enumerate(forget) if not [p for p in r.perturbed_answers if p and p.strip()]]
        if bare:
            r = forget[bare[0]]
            raise DataError(f"preferred='perturbed' needs records with perturbed answers, but {len(bare)} of "
                            f"{len(forget)} forget records carry none (first: record {bare[0]}, "
                            f"{r.id or 'no id'}); read the forget set from a TOFU *_perturbed split "
                            "(e.g. tofu:forget01_perturbed) or give each record a 'perturbed_answer' list, "
                            "or use preferred=idk", field="preferred")
        for r in forget:
            pref = rng.choice([p for p in r.perturbed_answers if p and p.strip()])
            out.append(QARecord(question=r.question, answer=pref, id=r.id, subject=r.subject))
        return out
    for i, r in enumerate(forget):
        pref = r.meta.get("preferred") if cfg.preferred in ("meta", "meta_or_idk") else None
        if pref is None and cfg.preferred == "meta":
            raise DataError(f"forget record {i} ({r.id or 'no id'}) has no meta['preferred'] response, which "
                            "preferred='meta' requires (use preferred=idk or meta_or_idk)", field="preferred")
        if pref is None:
            pref = rng.choice(IDK_RESPONSES)
        if not isinstance(pref, str) or not pref.strip():
            raise DataError(f"forget record {i}: meta['preferred'] must be a non-empty string", field="preferred")
        out.append(QARecord(question=r.question, answer=pref, id=r.id, subject=r.subject))
    return out


class UnlearningDataset(torch.utils.data.Dataset):
    """Items holding one encoded example per stream, for an epoch-aware index.

    Index ``epoch · n + i`` (see :class:`EpochSampler`) gives the i-th example of the primary
    stream, the i-th of each paired stream, and retain example ``perm[(i + epoch · n) mod m]`` of a
    seeded permutation of the m retain examples, so the retain partners change every epoch and are
    reproducible (a resumed run sees the same pairs).
    """

    def __init__(self, encoded: Mapping[str, list[dict]], primary: str, seed: int = 0):
        self.encoded = dict(encoded)
        self.primary = primary
        self.n = len(self.encoded[primary])
        rng = random.Random(seed)
        self.perms = {}
        for s, rows in self.encoded.items():
            if s != primary and PAIRED.get(s) != primary:
                perm = list(range(len(rows)))
                rng.shuffle(perm)
                self.perms[s] = perm

    def __len__(self) -> int:
        return self.n

    def lengths(self) -> list[int]:
        """Token length of each item's primary (plus paired) example, for length grouping."""
        out = []
        for i in range(self.n):
            out.append(max(len(self.encoded[s][i]["input_ids"]) for s in self.encoded
                           if s == self.primary or PAIRED.get(s) == self.primary))
        return out

    def __getitem__(self, idx: int) -> dict[str, dict]:
        epoch, i = divmod(int(idx), self.n)
        item = {}
        for s, rows in self.encoded.items():
            if s in self.perms:
                perm = self.perms[s]
                item[s] = rows[perm[(i + epoch * self.n) % len(perm)]]
            else:
                item[s] = rows[i]
        return item


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``epoch · n + i`` in a seeded, per-epoch order, length-grouped when asked.

    With ``group_by_length`` the order comes from
    :func:`~obliviate.data.formatting.length_grouped_batches` (shuffled mega-batches sorted by
    length), so consecutive ``batch_size`` indices have similar lengths and little padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, group_by_length: bool = True, seed: int = 0):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.group_by_length = group_by_length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        n = len(self.lengths)
        if self.group_by_length:
            batches = length_grouped_batches(self.lengths, self.batch_size, shuffle=True, seed=self.seed + self.epoch)
            order = [i for b in batches for i in b]
        else:
            order = list(range(n))
            random.Random(self.seed + self.epoch).shuffle(order)
        base = self.epoch * n
        return iter([base + i for i in order])


class StreamCollator:
    """Pads each stream of a list of items separately (dynamic padding): ``{stream: batch}``."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[Mapping[str, dict]]) -> dict[str, dict[str, torch.Tensor]]:
        return {s: pad_batch([it[s] for it in items], self.pad_token_id) for s in items[0]}


def stream_loader(examples: list[dict], pad_token_id: int, batch_size: int):
    """A length-sorted, unshuffled DataLoader over one stream (for reference caching and setup)."""
    batches = length_grouped_batches([len(e["input_ids"]) for e in examples], batch_size, shuffle=False)
    return torch.utils.data.DataLoader(examples, batch_sampler=batches, collate_fn=DataCollator(pad_token_id))


# --------------------------------------------------------------------------------------------
# trainer


def _trainer_classes():
    from transformers import Trainer, TrainerCallback

    from .objectives.base import StepContext
    from .objectives.forget import clear_step_cache

    class UnlearningTrainer(Trainer):
        """HF ``Trainer`` whose loss is Σ w·term + Σ λ·regularizer over per-stream batches."""

        def __init__(self, *args, terms=(), regularizers=(), ctx: StepContext | None = None,
                     sampler_seed: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            self.terms = list(terms)
            self.regularizers = list(regularizers)
            self.ctx = ctx or StepContext()
            self.sampler_seed = sampler_seed
            self.loss_is_scaled_for_ga = False  # our loss is a per-micro-batch mean: let Trainer divide by GA
            self._term_sums: dict[str, float] = {}
            self._term_count = 0
            self._bad_loss = None  # bool tensor: a non-finite step loss since the last check (no sync per step)
            self._last_parts: dict = {}
            self._staging_dir = None
            self.out_model = None

        def check_finite(self, *, weights: bool, where: str) -> None:
            """Raise :class:`TrainingDivergedError` if a step loss since the last call (or, with ``weights``,
            any parameter) is NaN/inf; one device sync, and one all-reduce across processes."""
            from .models import non_finite_parameters

            dev = self.args.device
            bad = torch.zeros((), dtype=torch.int32, device=dev) if self._bad_loss is None \
                else self._bad_loss.to(device=dev, dtype=torch.int32)
            self._bad_loss = None
            bad_weights: list[str] = []
            if weights:
                bad_weights = non_finite_parameters(self.accelerator.unwrap_model(self.model))
            flags = torch.stack([bad, torch.tensor(len(bad_weights), dtype=torch.int32, device=dev)])
            if self.accelerator.num_processes > 1:
                flags = self.accelerator.reduce(flags, reduction="sum")
            n_loss, n_weights = flags.tolist()
            if not (n_loss or n_weights):
                return
            parts = ", ".join(f"{k} {float(v):.4g}" for k, v in self._last_parts.items())
            what = f"the loss became non-finite ({parts})" if n_loss else \
                f"{n_weights} weight tensor(s) became NaN/inf" + (f" (e.g. {bad_weights[0]})" if bad_weights else "")
            saved = f"; nothing was saved to {self.out_model}" if self.out_model is not None else ""
            raise TrainingDivergedError(
                f"training diverged {where}: {what}{saved}. Lower lr, keep gradient clipping on "
                f"(max_grad_norm > 0, now {self.args.max_grad_norm:g}) and check the term weights")

        def _get_output_dir(self, trial):
            return str(self._staging_dir) if self._staging_dir is not None else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            """Write ``checkpoint-N`` into a staging folder, then rename it into place: a kill while saving
            never leaves a half-written checkpoint for ``--resume`` to pick."""
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

            run_dir = Path(super()._get_output_dir(trial))
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            staging = run_dir / f".staging-{name}"
            if self.is_world_process_zero() and staging.exists():
                shutil.rmtree(staging)
            self.accelerator.wait_for_everyone()
            self._staging_dir = staging
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging_dir = None
            self.accelerator.wait_for_everyone()
            if self.is_world_process_zero():
                final = run_dir / name
                if final.exists():
                    old = run_dir / f".old-{name}-{os.getpid()}"
                    os.replace(final, old)
                    shutil.rmtree(old, ignore_errors=True)
                os.replace(staging / name, final)
                shutil.rmtree(staging, ignore_errors=True)
                if self.args.save_total_limit:
                    rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                                       best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
            self.accelerator.wait_for_everyone()

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if isinstance(ds, UnlearningDataset):
                return EpochSampler(ds.lengths(), self.args.per_device_train_batch_size,
                                    group_by_length=self.args.train_sampling_strategy == "group_by_length",
                                    seed=self.sampler_seed)
            return super()._get_train_sampler(train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """Σ_i w_i·term_i(model, batches) + Σ_j λ_j·regularizer_j(model); logs each part."""
            self.ctx.step = self.state.global_step
            total = None
            parts = {}
            try:
                for term in self.terms:
                    v = term(model, inputs, self.ctx)
                    parts[term.name] = v.detach()
                    total = term.weight * v if total is None else total + term.weight * v
                if self.regularizers:
                    bare = self.accelerator.unwrap_model(model)
                    for reg in self.regularizers:
                        v = reg(bare)
                        parts[f"reg_{reg.name}"] = v.detach()
                        total = reg.weight * v if total is None else total + reg.weight * v
            finally:
                clear_step_cache(self.ctx)
            if total is not None:
                bad = ~torch.isfinite(total.detach())
                self._bad_loss = bad if self._bad_loss is None else (self._bad_loss | bad)
                self._last_parts = parts
            for k, v in parts.items():  # summed as tensors: no device sync per step, one at logging time
                v = v.float()
                self._term_sums[k] = v if k not in self._term_sums else self._term_sums[k] + v
            self._term_count += 1
            return (total, None) if return_outputs else total

        def log(self, logs, start_time=None):
            if "loss" in logs and self._term_count:
                for k, v in self._term_sums.items():
                    logs[k] = round(float(v) / self._term_count, 6)
                self._term_sums, self._term_count = {}, 0
            return super().log(logs, start_time)

    class JsonlLogCallback(TrainerCallback):
        """Appends every Trainer log record (loss, each term, lr, grad norm) to ``train_log.jsonl``."""

        def __init__(self, path: Path):
            self.path = Path(path)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, default=float) + "\n")

    class FiniteCheckCallback(TrainerCallback):
        """After every optimizer step: stop with :class:`TrainingDivergedError` if a loss was NaN/inf; before
        every checkpoint, if a weight is."""

        trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.trainer is not None:
                self.trainer.check_finite(weights=bool(control.should_save), where=f"at step {state.global_step}")

    return UnlearningTrainer, JsonlLogCallback, FiniteCheckCallback


def _model_dtype(cfg: TrainConfig, bf16: bool) -> str:
    if cfg.model_dtype != "auto":
        return cfg.model_dtype
    return "bf16" if (bf16 and cfg.lora is not None) else "fp32"


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN / infinite during training; nothing non-finite was saved."""


def check_output_dir(out_dir: str | os.PathLike, model_spec: Any, reference: Any = None) -> Path:
    """Refuse an output folder that is, lies inside, or contains the input (or reference) model's folder.

    Model specs resolve with :func:`obliviate.models.local_model_folder`, the resolver ``merge``
    uses too, so the embedded default's alias guards its cache folder. An ``--out`` that exists as a
    file is refused as well. Returns the resolved output folder.
    """
    from .models import check_output_outside_models

    models = {"--model": model_spec}
    if reference is not None:
        models["--reference"] = reference
    out = check_output_outside_models(out_dir, models)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a run directory")
    return out


def checkpoint_is_complete(path: str | os.PathLike) -> bool:
    """Whether a ``checkpoint-N`` folder was written to the end: its ``trainer_state.json`` (written last by
    ``Trainer``) parses and names a step, and it holds model weights."""
    p = Path(path)
    try:
        state = json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or "global_step" not in state:
        return False
    return any(p.glob("*.safetensors")) or any(p.glob("*.bin")) or any(p.glob("pytorch_model_fsdp*")) \
        or any(p.glob("global_step*"))


def latest_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder``; incomplete ones (a kill while saving) are skipped
    with a warning."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not folder.is_dir():
        return None
    steps = []
    for d in folder.iterdir():
        head, _, tail = d.name.rpartition("-")
        if d.is_dir() and head == PREFIX_CHECKPOINT_DIR and tail.isdigit():
            steps.append((int(tail), d))
    for _, d in sorted(steps, reverse=True):
        if checkpoint_is_complete(d):
            return str(d)
        log.warning("skipping %s: it is incomplete (interrupted while being written?); delete it when done", d)
    return None


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a ``checkpoint-N`` folder was saved at (its ``trainer_state.json``'s
    ``global_step``, else the ``N`` of its name)."""
    p = Path(checkpoint)
    try:
        return int(json.loads((p / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return int(p.name.rpartition("-")[2])


def trim_train_log(log_path: Path, step: int) -> int:
    """Drop the rows of ``train_log.jsonl`` logged after optimizer step ``step`` (an interrupted run
    logged them after its last checkpoint; the resumed run logs those steps again), atomically.
    Returns the number of rows dropped; unreadable rows are dropped too."""
    from .io import atomic_write_text

    kept, dropped = [], 0
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and int(row.get("step", 0)) <= step
        except (ValueError, TypeError):
            ok = False
        if ok:
            kept.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        atomic_write_text(log_path, "".join(f"{k}\n" for k in kept))
        log.info("%s: dropped %d rows logged after step %d (the run resumes from there)", log_path, dropped, step)
    return dropped


def _save_final(trainer, tokenizer, out: Path, note: dict, card: dict | None = None) -> Path:
    """Save the trained model (full: safetensors; LoRA: the adapter) + tokenizer into ``out/model`` atomically.

    ``card`` (:func:`obliviate.modelcard.build_model_card` arguments) is written as the folder's
    ``README.md`` model card before the folder is renamed into place; a card that fails only warns.
    Refuses (:class:`TrainingDivergedError`) when any weight is NaN or infinite: a broken model is never saved.
    """
    trainer.check_finite(weights=True, where="after the last step")
    final = out / "model"
    tmp = out / ".model.tmp"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    bare = trainer.accelerator.unwrap_model(trainer.model)
    if getattr(bare, "config", None) is not None and hasattr(bare.config, "use_cache"):
        bare.config.use_cache = True
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(tmp)
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle: keep the model folder pickle-free
        (tmp / "obliviate_model.json").write_text(json.dumps(note, indent=2, default=str) + "\n")
        if card is not None:
            from .modelcard import try_write_model_card

            try_write_model_card(tmp, card, evaluations={})  # a fresh model has no evaluation yet
        old = None
        if final.exists():
            old = out / f".model.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return final


def train_unlearning(model_spec_or_model: Any, tokenizer, streams: Mapping[str, Sequence[QARecord]],
                     cfg: TrainConfig, out_dir: str | os.PathLike, *, reference: Any = None,
                     resume_from_checkpoint: bool | str | None = None,
                     inputs: Mapping[str, Any] | None = None) -> Path:
    """Train ``cfg.method`` on ``streams`` and save the result into ``out_dir/model``; return that path.

    ``model_spec_or_model`` is anything :func:`obliviate.models.load_model` accepts, or an in-memory
    causal LM (trained in place; LoRA wraps it). ``tokenizer`` may be None when a spec is given.
    ``streams`` maps ``"forget"`` / ``"retain"`` (/ ``"forget_pref"``) to QA records: question →
    prompt, answer → response. ``reference`` optionally gives the frozen reference model (default:
    the model as it is before training). ``resume_from_checkpoint``: True resumes from the latest
    checkpoint in ``out_dir/checkpoints`` (starting fresh if there is none), a path from that one.
    ``inputs`` (name → file) are hashed into the manifest.

    Writes ``out_dir/model`` (full: safetensors + tokenizer; LoRA: adapter + tokenizer +
    ``obliviate_model.json`` naming the base), ``train_log.jsonl``, ``config.yaml`` (resolved) and
    ``manifest.json``. Never writes into the input model's folder.
    """
    from transformers import TrainingArguments, set_seed

    from .io import Manifest, atomic_write_text
    from .models import apply_lora, load_model
    from .objectives.base import StepContext
    from .objectives.reference import AdapterDisabledReference, cache_nbytes

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    if not cfg.train:
        raise ConfigError(f"method {cfg.method!r} needs no training (train: false); use its system_prompt at "
                          "evaluation time")
    out = check_output_dir(out_dir, model_spec_or_model, reference)
    out.mkdir(parents=True, exist_ok=True)
    terms, regularizers = build_terms(cfg)
    needed = streams_needed(terms)
    primary = "forget" if "forget" in needed else needed[0]
    set_seed(cfg.seed)
    t0 = time.time()

    bf16 = cfg.resolved_bf16()
    ckpt_dir = out / "checkpoints"
    extra: dict[str, Any] = {}
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        extra = {"use_cpu": True, "ddp_backend": "gloo"}  # `accelerate launch` on CPUs: DDP over gloo
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler,
        optim=cfg.optim,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to="none",
        logging_nan_inf_filter=False,  # log a NaN loss as NaN (the filter printed 0 for a diverged run)
        remove_unused_columns=False,
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        disable_tqdm=not cfg.progress,
        **extra,
    )

    # model
    spec = None
    if isinstance(model_spec_or_model, (str, os.PathLike)):
        spec = str(model_spec_or_model)
        model, tok = load_model(spec, dtype=_model_dtype(cfg, bf16), device=str(args.device))
        tokenizer = tokenizer or tok
    else:
        model = model_spec_or_model
        if tokenizer is None:
            raise ConfigError("tokenizer: required when the model is passed in memory")
        model.to(args.device)
    if tokenizer.pad_token_id is None:
        from .models import ensure_chat_template

        ensure_chat_template(tokenizer)
    base_name = spec or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__

    # data (before touching the model, so bad data fails fast)
    encoded = encode_streams(tokenizer, streams, cfg, needed)
    dataset = UnlearningDataset(encoded, primary, seed=cfg.seed)
    loaders = {s: stream_loader(rows, tokenizer.pad_token_id, cfg.batch_size) for s, rows in encoded.items()}

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.lora is not None:
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, dict(cfg.lora))

    # reference statistics, computed once; keep the reference only if a term needs it live
    live = any(getattr(t, "needs_live_reference", False) for t in terms)
    uses_ref = any(hasattr(t, "needs_live_reference") for t in terms)
    ctx = StepContext()
    if reference is not None:
        if isinstance(reference, (str, os.PathLike)):
            reference, _ = load_model(reference, dtype=_model_dtype(cfg, bf16), device=str(args.device))
        reference.requires_grad_(False).eval()
        ctx.reference = reference
    elif cfg.lora is not None:
        ctx.reference = AdapterDisabledReference(model)
    else:
        ctx.reference = model  # θ before training is the reference for the one-off cache pass
    # under bf16 autocast too, so that cached and trained log-probs are computed alike
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and args.device.type == "cuda" \
        else contextlib.nullcontext()
    with amp:
        for t in terms:
            t.prepare(model, loaders, ctx)
    if live and reference is None and cfg.lora is None:
        ctx.reference = copy.deepcopy(model).requires_grad_(False).eval()
    elif not live:
        ctx.reference = reference = None  # nothing needs the reference any more: free it
    gc.collect()
    if uses_ref:
        log.info("reference statistics cached: %.1f KiB; live reference kept: %s", cache_nbytes(ctx) / 1024, live)

    for r in regularizers:
        r.setup(model, loaders.get("retain"))

    # resume
    resume = resume_from_checkpoint
    if resume is True:
        resume = latest_checkpoint(ckpt_dir)
        if resume is None:
            log.warning("no checkpoint in %s: starting from scratch", ckpt_dir)
    elif resume:
        resume = str(resume)

    Trainer, JsonlLogCallback, FiniteCheckCallback = _trainer_classes()
    log_path = out / "train_log.jsonl"
    if not resume and log_path.exists():
        log_path.unlink()
    elif resume and log_path.exists() and int(os.environ.get("RANK", "0")) == 0:
        trim_train_log(log_path, checkpoint_step(resume))
    if ckpt_dir.is_dir() and int(os.environ.get("RANK", "0")) == 0:
        for stale in ckpt_dir.glob(".staging-*"):  # a checkpoint interrupted while being written
            log.warning("removing %s: an interrupted checkpoint write", stale)
            shutil.rmtree(stale, ignore_errors=True)
    finite_cb = FiniteCheckCallback()
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=StreamCollator(tokenizer.pad_token_id),
        processing_class=tokenizer, terms=terms, regularizers=regularizers, ctx=ctx, sampler_seed=cfg.seed,
        callbacks=[JsonlLogCallback(log_path), finite_cb],
    )
    finite_cb.trainer = trainer
    trainer.out_model = out / "model"
    manifest = Manifest(out, "train", config=to_dict(cfg), seed=cfg.seed)
    manifest.add_input("model", spec if spec else f"<in-memory {base_name}>")
    for name, path in (inputs or {}).items():
        manifest.add_input(name, path)
    if trainer.is_world_process_zero():
        atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))

    try:
        result = trainer.train(resume_from_checkpoint=resume or None)
    finally:
        if trainer.is_world_process_zero() and ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()

    note = {"method": cfg.method, "base_model": base_name, "lora": cfg.lora is not None,
            "terms": [f"{t.weight:g}·{t.name}" for t in terms] + [f"{r.weight:g}·{r.name}" for r in regularizers]}
    card = None
    try:  # the model card's inputs; its data part (counts and hashes, never text) is kept in the note too
        from .modelcard import describe_data, train_card_info

        note["data"] = describe_data(streams, inputs)
        note["base_model_id"] = spec or getattr(getattr(model, "config", None), "_name_or_path", "") or None
        card = train_card_info({**note, "base_model": note["base_model_id"]}, to_dict(cfg))
    except Exception as e:  # noqa: BLE001 - the card never breaks a save
        log.warning("model card skipped: %s: %s", type(e).__name__, e)
    final = _save_final(trainer, tokenizer, out, note, card)
    if trainer.is_world_process_zero():
        if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()
        for p in (final, log_path, out / "config.yaml"):
            manifest.add_output(p.relative_to(out))
        manifest.write(
            base_model=base_name,
            streams={s: len(rows) for s, rows in encoded.items()},
            global_step=trainer.state.global_step,
            train_loss=round(float(result.training_loss), 6),
            train_runtime_s=round(time.time() - t0, 2),
            bf16=bf16,
            reference_cache_kib=round(cache_nbytes(ctx) / 1024, 1),
            live_reference=live,
            resumed_from=resume or None,
        )
    ctx.reference = None
    return final
