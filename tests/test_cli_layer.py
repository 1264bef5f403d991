"""The command-line layer: argparse only in ``obliviate/cli.py`` and ``obliviate/commands/``, and every
(sub-)subcommand's parser builds and answers ``--help``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import obliviate
from obliviate.cli import build_parser, main

PKG = Path(obliviate.__file__).resolve().parent


def _source_files():
    """Every file of the package source tree (compiled caches left out)."""
    return [p for p in PKG.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


def _in_cli_layer(path: Path) -> bool:
    rel = path.relative_to(PKG)
    return rel == Path("cli.py") or rel.parts[0] == "commands"


def _parser_paths(parser: argparse.ArgumentParser, path=()):
    """``(path, parser)`` of the parser and of every (sub-)subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parser_paths(child, (*path, name))


def test_argparse_appears_only_in_the_cli_layer():
    files = _source_files()
    assert any(p.name == "cli.py" for p in files) and len(files) > 20  # the scan sees the real tree
    offenders = sorted(str(p.relative_to(PKG)) for p in files
                       if b"argparse" in p.read_bytes() and not _in_cli_layer(p))
    assert offenders == [], f"argparse outside obliviate/cli.py and obliviate/commands/: {offenders}"
    assert any(b"argparse" in p.read_bytes() for p in files if _in_cli_layer(p))


def test_no_cli_modules_in_feature_packages():
    stray = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*_cli.py")
                   if "__pycache__" not in p.parts and p.relative_to(PKG).parts[0] != "commands")
    assert stray == []


def test_dispatch_tables_name_command_modules_that_all_register():
    """A dispatch entry whose module is missing would be silently left out of the parser; here it fails."""
    from obliviate.commands.augment import METHODS
    from obliviate.commands.eval import SUITES

    subs = {path: p for path, p in _parser_paths(build_parser())}
    for group, table in (("augment", METHODS), ("eval", SUITES)):
        assert {path[1] for path in subs if len(path) == 2 and path[0] == group} == set(table), group
        for name, module in table.items():
            assert module.startswith("obliviate.commands."), module
            func = subs[(group, name)].get_default("func")
            assert func.__module__ == module and func.__name__ == "run"


def test_every_subcommand_answers_help(capsys):
    paths = [path for path, _ in _parser_paths(build_parser()) if path]
    assert {("eval", "tofu"), ("eval", "lm-eval"), ("augment", "snap"), ("augment", "rwku-rt"), ("train",),
            ("run",), ("audit",)} <= set(paths)
    for path in paths:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: obliviate " + " ".join(path)), (path, out[:200])
        assert "-h, --help" in out
    with pytest.raises(SystemExit) as e:  # a sub-subcommand is still required
        main(["eval"])
    assert e.value.code == 2
    capsys.readouterr()


def test_memory_estimate_module_entry_point_still_works():
    r = subprocess.run([sys.executable, "-m", "obliviate.memory_estimate", "--model", "smollm2-135m", "--gpus", "1,2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "full FT, 1 GPU" in r.stdout and "full FT, 2 GPU" in r.stdout and "**total**" in r.stdout
    r = subprocess.run([sys.executable, "-m", "obliviate.memory_estimate"], capture_output=True, text=True)
    assert r.returncode == 2 and "give --model or --params" in r.stderr
