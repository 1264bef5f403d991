"""Argument groups and argparse → library mappings shared by several ``obliviate`` subcommands.

* evaluation commands: :func:`add_model_arguments`, :func:`add_output_arguments`,
  :func:`add_batch_arguments`, :func:`load_model_from_args` (the run directory itself is written
  by :mod:`obliviate.evals.common`);
* generator commands (``augment ...``): :func:`add_request_arguments`,
  :func:`apply_request_arguments`, :func:`generator_config_from_args`;
* argparse ``type=`` converters: :func:`positive_int`, :func:`int_list`.

Typical use in an ``eval_*`` command module::

    def add_arguments(p):
        add_model_arguments(p)
        add_output_arguments(p)
        add_batch_arguments(p, batch_size=16, max_new_tokens=64)

    def run(args):
        out = check_out_dir(args.out)            # validate before loading anything heavy
        manifest = start_manifest(out, "eval tofu", args)
        model, tok = load_model_from_args(args)
        metrics, rows = evaluate_something(model, tok, ...)
        write_eval_run(out, benchmark="tofu", metrics=metrics, rows=rows,
                       report=metrics_report("TOFU", metrics), manifest=manifest, model=args.model)
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..generate.factory import GeneratorConfig


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the value)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def int_list(text: str) -> list[int]:
    """argparse type: a comma-separated list of integers (``"1,4,8"`` -> ``[1, 4, 8]``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from e


# --------------------------------------------------------------------------- evaluation commands


def add_model_arguments(parser: argparse.ArgumentParser, *, flag: str = "--model", required: bool = True,
                        help: str | None = None) -> None:
    """Add ``--model`` (plus shared ``--dtype``, ``--device``, ``--trust-remote-code`` once)."""
    parser.add_argument(flag, required=required, metavar="MODEL",
                        help=help or "model to evaluate: 'smollm2-135m-instruct' (embedded default), an HF folder, "
                                     "a .gguf file, a LoRA adapter folder or a hub id")
    if not any("--dtype" in a.option_strings for a in parser._actions):
        parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                            help="weights dtype (auto: bf16 on CUDA, fp32 on CPU)")
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--out DIR`` (the run directory)."""
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="run directory for metrics.json, samples.jsonl, report.md, manifest.json")


def add_batch_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 16, max_new_tokens: int = 64,
                        max_samples: bool = True, system_prompt: bool = True) -> None:
    """Add ``--batch-size``, ``--max-new-tokens``, ``--max-samples``, ``--system-prompt``."""
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"sequences per forward / generate call (default {batch_size})")
    parser.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                        help=f"greedy generation length (default {max_new_tokens})")
    if max_samples:
        parser.add_argument("--max-samples", type=positive_int, default=None,
                            help="evaluate at most this many items per split (default: all)")
    if system_prompt:
        parser.add_argument("--system-prompt", default=None, metavar="TEXT",
                            help="system prompt for every question (the Prompting baseline); "
                                 "'@FILE' reads it from a file")


def load_model_from_args(args: argparse.Namespace, *, attr: str = "model"):
    """``load_model(args.<attr>, dtype=args.dtype, device=args.device, trust_remote_code=...)``."""
    from ..models import load_model

    return load_model(getattr(args, attr), dtype=getattr(args, "dtype", "auto"),
                      device=getattr(args, "device", "auto"),
                      trust_remote_code=getattr(args, "trust_remote_code", False))


# --------------------------------------------------------------------------- generator commands

#: ``--request-*`` option → GeneratorConfig field (see :func:`add_request_arguments`)
REQUEST_OPTIONS = {"request_timeout": "timeout", "request_retries": "max_retries", "request_backoff": "backoff",
                   "request_deadline": "deadline", "concurrency": "concurrency"}


def add_request_arguments(parser) -> None:
    """Add the OpenAI-compatible backend's request options to an argparse parser or group:
    ``--request-timeout``, ``--request-retries``, ``--request-backoff``, ``--request-deadline``,
    ``--concurrency`` (all default to :class:`~obliviate.generate.factory.GeneratorConfig`'s values)."""
    from ..generate.factory import GeneratorConfig

    d = GeneratorConfig()
    parser.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"openai generator: seconds one wait on the server may take (default {d.timeout:g})")
    parser.add_argument("--request-retries", type=int, default=None, metavar="N",
                        help="openai generator: retries of a failed request (connection error, timeout, 429, 5xx; "
                             f"default {d.max_retries})")
    parser.add_argument("--request-backoff", type=float, default=None, metavar="SECONDS",
                        help=f"openai generator: first wait between attempts, doubled each retry (default {d.backoff:g})")
    parser.add_argument("--request-deadline", type=float, default=None, metavar="SECONDS",
                        help="openai generator: seconds one request may take over all its attempts and waits "
                             f"(default {d.deadline:g}; 0 for no deadline)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help=f"openai generator: requests in flight at once (default {d.concurrency})")


def apply_request_arguments(cfg: GeneratorConfig, args) -> GeneratorConfig:
    """Copy the ``--request-*`` / ``--concurrency`` options given on the command line into ``cfg`` (validated).

    Raises :class:`~obliviate.config.ConfigError` when one is given for a backend other than ``openai``.
    """
    from ..config import ConfigError

    given = {opt: getattr(args, opt) for opt in REQUEST_OPTIONS if getattr(args, opt, None) is not None}
    if not given:
        return cfg
    if cfg.backend != "openai":
        flags = ", ".join("--" + o.replace("_", "-") for o in given)
        raise ConfigError(f"{flags}: only for an openai:<base_url>#<model> generator, not backend {cfg.backend!r}")
    for opt, value in given.items():
        if opt == "request_deadline" and value == 0:
            value = None
        setattr(cfg, REQUEST_OPTIONS[opt], value)
    try:
        cfg.validate()
    except ConfigError as e:  # name the option the user typed
        msg = str(e)
        for opt, fld in REQUEST_OPTIONS.items():
            msg = msg.replace(f"generator.{fld}:", f"--{opt.replace('_', '-')}:")
        raise ConfigError(msg) from None
    return cfg


def generator_config_from_args(args) -> tuple[str, GeneratorConfig]:
    """The generator of an augment command: ``--generator`` (default ``transformers:<--model>``),
    ``--batch-size`` for a transformers backend, and the ``--request-*`` options (validated).

    Returns ``(spec, config)``.
    """
    from ..generate.factory import parse_generator_spec

    spec = args.generator or f"transformers:{args.model}"
    cfg = parse_generator_spec(spec)
    if cfg.backend == "transformers":
        cfg.batch_size = args.batch_size
    apply_request_arguments(cfg, args)
    return spec, cfg
