"""Named unlearning methods: presets of loss terms, regularizer and hyperparameters.

Each preset is a YAML file ``obliviate/presets/<name>.yaml`` (package data, read through
``importlib.resources``) holding :class:`~obliviate.train.TrainConfig` fields: the loss
composition (``terms``, ``regularizer``, ``regularizer_weight``) and the paper's defaults
(``lr``, ``epochs``, ``batch_size``, ...), plus ``description`` and ``source``. Copy one, edit it
and pass it with ``obliviate train --config``.

| method     | loss                                                 |
| ---------- | ---------------------------------------------------- |
| ulmr       | NLL(forget = rewritten instructions, negative answers) |
| snap       | NLL(forget obliterated) + NLL(retain) + 0.1·SWD      |
| euclidean  | NLL(forget) + NLL(retain) + 0.1·‖θ − θ_init‖ (SNAP baseline) |
| fisher     | NLL(forget) + NLL(retain) + 0.1·Fisher (SNAP baseline) |
| ga         | −NLL(forget)                                         |
| graddiff   | −NLL(forget) + NLL(retain)                           |
| kl         | −NLL(forget) + KL(p_ref ‖ p_θ; retain)               |
| dpo        | DPO(preferred = meta["preferred"] or idk, or perturbed, dispreferred = answer) |
| idkdpo     | DPO(preferred = "I don't know") + NLL(retain)        |
| npo        | NPO(forget)                                          |
| npo_rt     | NPO(forget) + NLL(retain)                            |
| rt         | NLL(forget = generated questions, refusals) (RWKU's RT) |
| retrain    | NLL(retain) from the base model                      |
| prompting  | no training; ``system_prompt`` used at evaluation    |
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any, Mapping

import yaml

from .config import ConfigError

#: TOFU's "I don't know" responses (Maini et al., 2024; data/tofu/idontknow.txt), used as the
#: preferred answers of IdkDPO when a record carries no ``meta["preferred"]``.
IDK_RESPONSES = [
    "I'm not certain about that.",
    "That's beyond my current knowledge base.",
    "I don't have that information.",
    "I'm not sure.",
    "I haven't learned about that topic.",
    "That's something I need to look up.",
    "I'm at a loss for that one.",
    "I don't have the answer to that question.",
    "That's outside my area of expertise.",
    "I'm afraid I can't provide an answer to that.",
]


@functools.lru_cache(maxsize=1)
def _load_presets() -> dict[str, dict]:
    out = {}
    folder = resources.files("obliviate") / "presets"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        name = entry.name[: -len(".yaml")]
        if data.get("method", name) != name:
            raise ConfigError(f"preset {entry.name}: method {data.get('method')!r} does not match the file name")
        data["method"] = name
        out[name] = data
    return out


class _Presets(Mapping):
    """Read-only mapping name → preset dict, loaded lazily from the package's YAML files."""

    def __getitem__(self, key: str) -> dict:
        return copy.deepcopy(_load_presets()[key])

    def __iter__(self):
        return iter(_load_presets())

    def __len__(self) -> int:
        return len(_load_presets())


#: every named method: ``METHODS["npo"]`` is the preset mapping (a fresh copy on each access)
METHODS: Mapping[str, dict] = _Presets()


def method_names() -> list[str]:
    """The names ``get_method`` accepts."""
    return sorted(METHODS)


def get_method(name: str) -> dict:
    """Return a copy of the preset called ``name``; the error lists the allowed names."""
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; allowed: {method_names()}")
    return METHODS[name]


def preset_path(name: str):
    """The package resource of preset ``name`` (to copy it: ``obliviate train --show-preset NAME``)."""
    get_method(name)
    return resources.files("obliviate") / "presets" / f"{name}.yaml"


def prompting_system_prompt(target: str, template: str | None = None) -> str:
    """The Prompting baseline's system prompt for ``target`` (SNAP §4.3), ``{target}`` filled in."""
    template = template or get_method("prompting")["system_prompt"]
    return template.replace("{target}", target)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def build_terms(method_cfg: Any) -> tuple[list, list]:
    """Instantiate the loss terms and regularizers a method config describes.

    ``method_cfg`` is a :class:`~obliviate.train.TrainConfig`, a preset mapping, or a method name.
    Term weights and arguments are overridden by ``term_weights[name]`` and ``term_args[name]``
    (a term's name defaults to ``<stream>_<type>``, e.g. ``retain_nll``; ``dpo``, ``npo``); the
    regularizer ``regularizer`` is built with weight ``regularizer_weight`` (λ) and
    ``regularizer_args``. Returns ``(terms, regularizers)``; raises :class:`ConfigError` on
    unknown names or arguments.
    """
    from .objectives.registry import RegistryError, build_regularizer, build_term

    if isinstance(method_cfg, str):
        method_cfg = get_method(method_cfg)
    specs = list(_get(method_cfg, "terms") or [])
    weights = dict(_get(method_cfg, "term_weights") or {})
    args = dict(_get(method_cfg, "term_args") or {})
    terms = []
    for i, spec in enumerate(specs):
        try:
            term = build_term(spec)
        except RegistryError as e:
            raise ConfigError(f"terms[{i}]: {e}") from e
        terms.append(term)
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise ConfigError(f"terms: duplicate term names {names}; give each a distinct 'name'")
    for key in list(weights) + list(args):
        if key not in names:
            raise ConfigError(f"term_weights/term_args: no term named {key!r}; terms: {names}")
    for i, (spec, term) in enumerate(zip(specs, terms)):
        if term.name in args:
            extra = args[term.name]
            if not isinstance(extra, Mapping):
                raise ConfigError(f"term_args.{term.name}: expected a mapping, got {extra!r}")
            try:
                term = build_term({**spec, **extra})
            except RegistryError as e:
                raise ConfigError(f"term_args.{term.name}: {e}") from e
            terms[i] = term
        if term.name in weights:
            term.weight = float(weights[term.name])
    regs = []
    name = _get(method_cfg, "regularizer")
    if name:
        try:
            regs.append(build_regularizer(name, float(_get(method_cfg, "regularizer_weight", 1.0)),
                                          **dict(_get(method_cfg, "regularizer_args") or {})))
        except RegistryError as e:
            raise ConfigError(f"regularizer: {e}") from e
    return terms, regs


def streams_needed(terms) -> list[str]:
    """The data streams (``forget``, ``forget_pref``, ``retain``) the terms read, in a stable order."""
    order = ["forget", "forget_pref", "retain"]
    needed = {s for t in terms for s in getattr(t, "needs", ())}
    return [s for s in order if s in needed] + sorted(needed - set(order))
