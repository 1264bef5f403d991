"""The ``obliviate`` command: one subcommand per pipeline stage.

Each subcommand lives in ``obliviate.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returning an exit code).
Modules are imported only when building the parser, and heavy libraries only inside ``func``,
so ``obliviate --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

#: Pipeline order, as shown by ``obliviate --help``.
COMMANDS = ["models", "augment", "train", "merge", "eval", "audit", "report", "run", "demo", "push"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="obliviate",
        description="Make a language model forget selected knowledge (ULMR, SNAP, baselines) and measure it.",
    )
    parser.add_argument("--version", action="version", version=f"obliviate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"obliviate.commands.{name}")
        except ModuleNotFoundError as e:  # a command whose optional module is absent is not offered
            if e.name != f"obliviate.commands.{name}":
                raise
            continue
        module.register(sub)
    _add_verbose_everywhere(parser)
    return parser


def _add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after a (sub-)subcommand too (``obliviate train ... -v``), not only before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if not any("-v" in a.option_strings for a in child._actions):
                    child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="log at INFO level; show the traceback of an error")
                _add_verbose_everywhere(child)


#: (module, class name) of the errors that are faults of the input, the environment or a remote
#: service, not bugs: printed as one line with exit code 2 (the traceback only with -v). Looked up in
#: ``sys.modules`` when an error arrives, so nothing is imported for it.
KNOWN_ERRORS = [
    ("obliviate.config", "ConfigError"),  # MergeError too
    ("obliviate.data.records", "DataError"),
    ("obliviate.models", "ModelLoadError"),
    ("obliviate.objectives.registry", "RegistryError"),
    ("obliviate.train", "TrainingDivergedError"),
    ("obliviate.generate.base", "GenerationError"),
    ("obliviate.generate.openai_backend", "APIError"),
    ("obliviate.generate.openai_backend", "GenerationError"),
    ("obliviate.evals.lm_eval_bridge", "LmEvalUnavailable"),
    ("safetensors", "SafetensorError"),
    ("pickle", "UnpicklingError"),
    ("yaml", "YAMLError"),
    ("builtins", "OSError"),  # files and folders (permission, missing, not a folder, disk full), network
]

_OS_HINTS = [  # (class name, what to do), most specific first
    ("PermissionError", "check that you may read / write it (owner, mode, read-only mount)"),
    ("IsADirectoryError", "a file was expected there, not a folder"),
    ("NotADirectoryError", "a part of that path is a file, not a folder"),
    ("FileExistsError", "something is already in the way there; choose another path or remove it"),
    ("FileNotFoundError", "check the path"),
]


def known_error(e: BaseException) -> bool:
    """Whether ``e`` is one of :data:`KNOWN_ERRORS` (a user-facing fault rather than a bug)."""
    for mod, name in KNOWN_ERRORS:
        cls = getattr(sys.modules.get(mod), name, None)
        if isinstance(cls, type) and isinstance(e, cls):
            return True
    return False


def format_error(e: BaseException) -> str:
    """One line saying what failed, naming the file or endpoint, and what to do."""
    import errno

    if isinstance(e, OSError) and not type(e).__module__.startswith("obliviate") and e.filename is not None:
        where = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "")
        msg = f"{e.strerror or type(e).__name__}: {where}"
        if e.errno == errno.ENOSPC:
            return msg + "; free some space or write elsewhere"
        if e.errno == errno.EROFS:
            return msg + "; that file system is read-only, write elsewhere"
        for name, hint in _OS_HINTS:
            if any(c.__name__ == name for c in type(e).__mro__):
                return f"{msg}; {hint}"
        return msg
    url_error = getattr(sys.modules.get("urllib.error"), "URLError", None)
    if url_error is not None and isinstance(e, url_error) and not type(e).__module__.startswith("obliviate"):
        return f"network error: {getattr(e, 'reason', e)}; check the URL and that the server is running"
    text = str(e).strip() or type(e).__name__
    if not type(e).__module__.startswith("obliviate"):  # a library's message: keep it on one line
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())
        if type(e).__name__ == "SafetensorError":
            text = f"a .safetensors file is truncated or corrupt ({text})"
    return text


def interrupt_hint(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind and what rerunning does, true for the command that was interrupted."""
    from pathlib import Path

    cmd = args.command
    out = getattr(args, "out", None)
    if cmd == "train":
        train = sys.modules.get("obliviate.train")
        latest = train.latest_checkpoint(Path(out) / "checkpoints") if (train and out) else None
        if latest:
            again = "rerun the same command" if getattr(args, "resume", False) else "rerun the same command with --resume"
            return f"{again} to continue from {latest}"
        return ("no checkpoint was written (add --set save_steps=N to make training resumable); "
                "rerun the command to start again")
    if cmd == "demo":
        if getattr(args, "fresh", False):
            return f"rerun without --fresh to reuse the stages already finished in {out}"
        return f"rerun the same command to resume: the stages already finished in {out} are reused"
    if cmd == "run":
        return ("rerun the same command to resume: finished stages are reused, an interrupted training continues "
                "from its latest checkpoint (train.save_steps > 0), any other interrupted stage starts again")
    if cmd == "augment":
        if getattr(args, "no_cache", False):
            return "generations were not cached (--no-cache); rerun the command to start again"
        return "rerun the same command to resume: the generations made so far are cached"
    return "nothing partial was kept (outputs are written atomically); rerun the command to start again"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``obliviate`` console script.

    Exit codes: 0 success, 2 a known fault (bad input, config or data, unreadable model, diverged
    training, a failing file system or generation endpoint: one line on stderr, the traceback with
    ``-v``), 130 interrupted (Ctrl-C; the line says what rerunning does); anything else is a bug
    and keeps its traceback (exit 1).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"obliviate {args.command}: interrupted; {interrupt_hint(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - known faults become one line; others re-raise
        if not known_error(e):
            raise
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"obliviate {args.command}: error: {format_error(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
