import subprocess
import sys

import pytest

from obliviate.cli import COMMANDS, build_parser, main
from obliviate.config import ConfigError, apply_overrides, from_dict, load_config


def test_help_lists_every_pipeline_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ["augment", "train", "merge", "eval", "report", "run", "demo", "models"]:
        assert name in out, name
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "obliviate.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "obliviate" in r.stdout


def test_models_command_without_loading(capsys):
    assert main(["models", "--no-generate"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "SmolLM2-135M-Instruct.Q4_1.gguf" in out


def test_typed_config_validation(tmp_path):
    from dataclasses import dataclass, field
    from typing import Literal, Optional

    @dataclass
    class Inner:
        alpha: float = 0.5

        def validate(self):
            if not 0 <= self.alpha <= 1:
                raise ConfigError(f"inner.alpha: {self.alpha} is outside [0, 1]")

    @dataclass
    class Cfg:
        method: Literal["ulmr", "snap"] = "ulmr"
        epochs: int = 5
        names: list[str] = field(default_factory=list)
        lr: Optional[float] = None
        inner: Inner = field(default_factory=Inner)

    p = tmp_path / "c.yaml"
    p.write_text("method: snap\nepochs: 3\ninner: {alpha: 0.2}\n")
    cfg = load_config(Cfg, p, ["epochs=7", "names=a,b", "inner.alpha=0.4"])
    assert (cfg.method, cfg.epochs, cfg.names, cfg.inner.alpha) == ("snap", 7, ["a", "b"], 0.4)
    with pytest.raises(ConfigError, match=r"method.*not one of \['ulmr', 'snap'\]"):
        from_dict(Cfg, {"method": "magic"})
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        from_dict(Cfg, {"epochs": "many"})
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(Cfg, {"epoch": 3})
    with pytest.raises(ConfigError, match="outside"):
        from_dict(Cfg, {"inner": {"alpha": 2}})
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_run_dispatches_target_configs_and_validates(capsys):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "snap.yaml"
    assert main(["run", str(cfg), "--dry-run", "--set", "mode=batch"]) == 0
    out = capsys.readouterr().out
    assert "mode: batch" in out and "Stephen King" in out
    assert main(["run", str(cfg), "--dry-run", "--set", "mode=parallel"]) == 2
    assert "mode: 'parallel' is not one of" in capsys.readouterr().err
