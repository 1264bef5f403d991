"""Name → class lookups for loss terms and parameter regularizers, and builders from config specs.

A term spec is a mapping ``{"type": "nll", "stream": "retain", "weight": 1.0, ...}`` (the other
keys are the term's constructor arguments). A regularizer is looked up by name: first among
those registered with :func:`register_regularizer`, then, lazily, among the
:class:`~obliviate.objectives.base.Regularizer` subclasses of
``obliviate.objectives.regularizers`` (SNAP's "swd", "euclidean", "fisher"); a dotted path
``package.module:ClassName`` names any other subclass.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

from .base import Regularizer, Term
from .forget import NLL, GradientAscent
from .preference import DPO, NPO
from .retain import KLRetain

#: term type name → class
TERMS: dict[str, type[Term]] = {"nll": NLL, "ga": GradientAscent, "kl": KLRetain, "dpo": DPO, "npo": NPO}

_REGULARIZERS: dict[str, type[Regularizer]] = {}
REGULARIZER_MODULE = "obliviate.objectives.regularizers"


class RegistryError(ValueError):
    """An unknown term or regularizer name, or bad arguments for one."""


def register_regularizer(name: str, cls: type[Regularizer]) -> None:
    """Make ``cls`` available under ``name`` (overrides a built-in of the same name)."""
    if not (inspect.isclass(cls) and issubclass(cls, Regularizer)):
        raise TypeError(f"{cls!r} is not a Regularizer subclass")
    _REGULARIZERS[name] = cls


def _module_regularizers() -> dict[str, type[Regularizer]]:
    try:
        mod = importlib.import_module(REGULARIZER_MODULE)
    except ModuleNotFoundError as e:
        if e.name != REGULARIZER_MODULE:
            raise
        return {}
    found = {}
    registry = getattr(mod, "REGULARIZERS", None)
    if isinstance(registry, Mapping):
        found.update({k: v for k, v in registry.items() if inspect.isclass(v) and issubclass(v, Regularizer)})
    for _, obj in vars(mod).items():
        if inspect.isclass(obj) and issubclass(obj, Regularizer) and obj is not Regularizer \
                and not inspect.isabstract(obj):
            found.setdefault(getattr(obj, "name", obj.__name__.lower()), obj)
    return found


def available_regularizers() -> list[str]:
    """Names a regularizer spec may use right now."""
    return sorted(set(_REGULARIZERS) | set(_module_regularizers()))


def get_regularizer_class(name: str) -> type[Regularizer]:
    """Return the Regularizer class for ``name`` (registered, in obliviate.objectives.regularizers, or ``mod:Class``)."""
    if name in _REGULARIZERS:
        return _REGULARIZERS[name]
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise RegistryError(f"regularizer {name!r}: cannot import it ({e})") from e
        if not (inspect.isclass(cls) and issubclass(cls, Regularizer)):
            raise RegistryError(f"regularizer {name!r} is not a Regularizer subclass")
        return cls
    found = _module_regularizers()
    if name not in found:
        have = sorted(set(_REGULARIZERS) | set(found))
        hint = "" if found else f" ({REGULARIZER_MODULE} is not available)"
        raise RegistryError(f"unknown regularizer {name!r}; allowed: {have or 'none'}{hint}")
    return found[name]


def _check_kwargs(cls, kwargs: Mapping[str, Any], what: str) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in params if p != "self"]
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise RegistryError(f"{what}: unknown argument(s) {bad}; allowed: {allowed}")


def build_term(spec: Mapping[str, Any]) -> Term:
    """Instantiate a term from ``{"type": ..., **kwargs}``; errors name the type and allowed values."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise RegistryError(f"a term spec needs a 'type' key (one of {sorted(TERMS)}), got {spec!r}")
    kind = spec["type"]
    if kind not in TERMS:
        raise RegistryError(f"unknown term type {kind!r}; allowed: {sorted(TERMS)}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    _check_kwargs(TERMS[kind], kwargs, f"term {kind!r}")
    try:
        return TERMS[kind](**kwargs)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"term {kind!r}: {e}") from e


def build_regularizer(name: str, weight: float = 1.0, **kwargs: Any) -> Regularizer:
    """Instantiate the regularizer called ``name`` with ``weight`` (λ) and its own arguments."""
    cls = get_regularizer_class(name)
    _check_kwargs(cls, kwargs, f"regularizer {name!r}")
    try:
        return cls(weight=weight, **kwargs)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"regularizer {name!r}: {e}") from e
