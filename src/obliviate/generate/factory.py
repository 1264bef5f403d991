"""Build a generator from a config mapping or a short string (``self``, ``transformers:...``, ...)."""

from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, from_dict
from ..io import redact_text
from .base import Generator

BACKENDS = ("transformers", "openai", "vllm", "templates")
STRING_FORMS = ("self", "transformers:<model spec>", "openai:<base_url>#<model>", "vllm:<model>",
                "templates[:seed=N,bank=FILE,entities=FILE]")
#: ``engine_kwargs`` the ``templates`` stand-in accepts (see templates_backend.TemplatesGenerator)
TEMPLATES_OPTIONS = ("seed", "bank", "entities")


@dataclass
class GeneratorConfig:
    """Which LLM generates text, and how (embed it in other configs as ``generator: {...}``).

    * ``backend``: ``transformers`` (local, batched; ``model`` is any spec ``load_model`` takes,
      or ``self``/unset for the model handed to :func:`make_generator`), ``openai`` (any
      OpenAI-compatible server at ``base_url``; ``model`` is the served model name), or
      ``vllm`` (in-process vLLM on a GPU), or ``templates`` (the offline stand-in for the papers'
      data generators, not a model; ``engine_kwargs`` ``seed``/``bank``/``entities``).
    * ``api_key_env``: the *name* of the environment variable holding the API key (never the key).
    * ``cache``: wrap the generator in the on-disk cache when a cache folder is given.
    """

    backend: Literal["transformers", "openai", "vllm", "templates"] = "transformers"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    batch_size: int = 16
    concurrency: int = 4
    timeout: float = 60.0           #: openai: seconds any wait on the socket of one attempt may take
    max_retries: int = 5            #: openai: retries of a request (connection errors, timeouts, 429, 5xx)
    backoff: float = 1.0            #: openai: first wait between attempts, doubled each retry
    max_backoff: float = 60.0       #: openai: cap of one wait (a server's Retry-After included)
    deadline: float | None = 180.0  #: openai: seconds one request may take over all its attempts (None: none)
    cache: bool = True
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Range and consistency checks; raises :class:`ConfigError` naming the field."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"generator.backend: {self.backend!r} is not one of {list(BACKENDS)}")
        for name in ("batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generator.{name}: must be >= 1, got {getattr(self, name)}")
        import math

        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"generator.timeout: must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise ConfigError(f"generator.max_retries: must be >= 0, got {self.max_retries}")
        for name in ("backoff", "max_backoff"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"generator.{name}: must be >= 0 seconds, got {v}")
        if self.deadline is not None and not (math.isfinite(self.deadline) and self.deadline > 0):
            raise ConfigError(f"generator.deadline: must be > 0 seconds (or null for none), got {self.deadline}")
        if self.backend == "openai":
            if not self.base_url:
                raise ConfigError("generator.base_url: required for backend 'openai' "
                                  "(e.g. http://127.0.0.1:8000/v1)")
            from ..io import redact_url

            u = urllib.parse.urlsplit(self.base_url)
            try:
                u.port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ConfigError(f"generator.base_url: {redact_url(self.base_url)!r} has an invalid port") from None
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ConfigError(f"generator.base_url: {redact_url(self.base_url)!r} is not an http:// or "
                                  "https:// URL")
            if not self.model:
                raise ConfigError("generator.model: required for backend 'openai' (the served model's name)")
        if self.backend == "templates":
            bad = sorted(set(self.engine_kwargs) - set(TEMPLATES_OPTIONS))
            if bad:
                raise ConfigError(f"generator.engine_kwargs: {bad} not accepted by backend 'templates' "
                                  f"(allowed: {list(TEMPLATES_OPTIONS)})")
            try:
                int(self.engine_kwargs.get("seed", 0))
            except (TypeError, ValueError):
                raise ConfigError(f"generator.engine_kwargs.seed: {self.engine_kwargs['seed']!r} is not an integer")
        if self.backend == "vllm" and not self.model:
            raise ConfigError("generator.model: required for backend 'vllm' (a hub id or local folder)")
        if self.api_key_env and not self.api_key_env.replace("_", "").isalnum():
            raise ConfigError(f"generator.api_key_env: {self.api_key_env!r} must be the NAME of an environment "
                              "variable (letters, digits, _), not the key itself")


def weights_fingerprint(path: str | Path, samples: int = 16, sample_bytes: int = 1 << 16) -> str | None:
    """A cheap content fingerprint of a local model (file or folder of weight files), or None if not local.

    sha256 over each weight file's name, size and ``samples`` slices of ``sample_bytes`` spread
    evenly through it: a re-trained model saved to the same path gets a new cache key without
    hashing gigabytes.
    """
    import hashlib
    import os

    p = Path(path).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    else:
        return None
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for k in range(samples):
                fh.seek(max(0, (size - sample_bytes) * k // max(1, samples - 1)), os.SEEK_SET)
                h.update(fh.read(sample_bytes))
    return h.hexdigest()[:16]


def parse_generator_spec(spec: str) -> GeneratorConfig:
    """Parse the short string forms ``self``, ``transformers:<model>``, ``openai:<base_url>#<model>``, ``vllm:<model>``,
    ``templates`` / ``templates:seed=N,bank=FILE,entities=FILE`` (options go to ``engine_kwargs``)."""
    s = spec.strip()
    if s == "self":
        return GeneratorConfig(backend="transformers", model=None)
    backend, sep, rest = s.partition(":")
    if backend == "templates":
        opts: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            if not eq or not value:
                raise ConfigError(f"generator: {spec!r}: {part!r} is not KEY=VALUE "
                                  f"(templates:seed=N,bank=FILE,entities=FILE)")
            opts[key.strip()] = int(value) if key.strip() == "seed" and value.strip().lstrip("-").isdigit() else value
        cfg = GeneratorConfig(backend="templates", engine_kwargs=opts)
        cfg.validate()
        return cfg
    if not sep or backend not in BACKENDS:
        raise ConfigError(f"generator: {redact_text(spec)!r} is not one of the forms {list(STRING_FORMS)}")
    if backend == "openai":
        url, sep, model = rest.rpartition("#")
        if not sep or not url or not model:
            raise ConfigError(f"generator: {redact_text(spec)!r} must look like openai:<base_url>#<model>, "
                              "e.g. openai:http://127.0.0.1:8000/v1#my-model")
        cfg = GeneratorConfig(backend="openai", base_url=url, model=model)
    else:
        if not rest:
            raise ConfigError(f"generator: {spec!r} names no model; use {backend}:<model>")
        cfg = GeneratorConfig(backend=backend, model=rest)
    cfg.validate()
    return cfg


def as_generator_config(spec: dict | str | GeneratorConfig) -> GeneratorConfig:
    """The validated :class:`GeneratorConfig` for a string form, a mapping of its fields, or a config (copied)."""
    if isinstance(spec, str):
        return parse_generator_spec(spec)
    if isinstance(spec, dict):
        return from_dict(GeneratorConfig, spec, prefix="generator.")
    if isinstance(spec, GeneratorConfig):
        cfg = dataclasses.replace(spec, engine_kwargs=dict(spec.engine_kwargs))
        cfg.validate()
        return cfg
    raise ConfigError(f"generator: expected a mapping or a string like {list(STRING_FORMS)}, "
                      f"got {type(spec).__name__}")


def make_generator(spec: dict | str | GeneratorConfig, *, model=None, tokenizer=None,
                   cache_dir: str | Path | None = None, progress: bool = False) -> Generator:
    """Build the :class:`Generator` that ``spec`` describes (optionally behind a disk cache).

    ``spec`` is a :class:`GeneratorConfig`, a mapping of its fields (validated with
    :func:`obliviate.config.from_dict`), or a string (see :func:`parse_generator_spec`).
    ``model``/``tokenizer`` are used for the ``self`` form (the transformers backend with no model
    named). With ``cache_dir`` and ``cache`` true, the result is a :class:`CachedGenerator`.
    """
    cfg = as_generator_config(spec)

    gen: Generator
    if cfg.backend == "transformers":
        from .transformers_backend import TransformersGenerator

        if cfg.model in (None, "", "self"):
            if model is None or tokenizer is None:
                raise ConfigError("generator.model: the 'self' generator needs the model and tokenizer being "
                                  "unlearned; name a model (e.g. transformers:smollm2-135m-instruct) instead")
            gen = TransformersGenerator(model, tokenizer, batch_size=cfg.batch_size, progress=progress)
        else:
            from ..models import load_model

            from ..models import resolve_model_path

            m, t = load_model(cfg.model)
            fp = weights_fingerprint(Path(*[x for x in resolve_model_path(cfg.model) if x]))
            model_id = f"{cfg.model}@{fp}" if fp else cfg.model
            gen = TransformersGenerator(m, t, batch_size=cfg.batch_size, progress=progress, model_id=model_id)
    elif cfg.backend == "templates":
        from .templates_backend import TemplatesGenerator

        kw = cfg.engine_kwargs
        gen = TemplatesGenerator(seed=int(kw.get("seed", 0)), bank=kw.get("bank"), entities=kw.get("entities"))
    elif cfg.backend == "openai":
        from .openai_backend import OpenAIChatGenerator

        gen = OpenAIChatGenerator(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, timeout=cfg.timeout,
                                  max_retries=cfg.max_retries, backoff=cfg.backoff, max_backoff=cfg.max_backoff,
                                  deadline=cfg.deadline, concurrency=cfg.concurrency, progress=progress)
    else:
        from .vllm_backend import VLLMGenerator

        gen = VLLMGenerator(cfg.model, progress=progress, **cfg.engine_kwargs)

    if cache_dir is not None and cfg.cache:
        from .cache import CachedGenerator

        gen = CachedGenerator(gen, cache_dir)
    return gen


#: GeneratorConfig fields that change what is generated (the rest: how requests are made)
IDENTITY_FIELDS = {"transformers": ("backend", "model", "batch_size"), "openai": ("backend", "base_url", "model"),
                   "vllm": ("backend", "model", "engine_kwargs"), "templates": ("backend", "engine_kwargs")}


def generator_identity(spec: dict | str | GeneratorConfig, default_model: str | None = None) -> dict:
    """The fields of a generator that determine its outputs (backend, model, base_url with credentials
    redacted, batch size / engine options where they matter), for a run stage's fingerprint; timeouts,
    retries, concurrency and the API key's variable are left out. ``default_model`` names the model
    for the ``self`` form."""
    from ..io import redact

    cfg = as_generator_config(spec)
    if cfg.backend == "transformers" and cfg.model in (None, "", "self"):
        cfg.model = default_model or "self"
    return redact({f: getattr(cfg, f) for f in IDENTITY_FIELDS.get(cfg.backend, ("backend", "model"))})
