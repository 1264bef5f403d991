"""The step runner and small helpers every part of ``benchmarks/reproduce.py`` shares.

:class:`Steps` runs one ``obliviate`` command per step, skips a finished step (its marker file) or
restores it from the committed archive, and keeps every step's wall time in ``steps.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("benchmarks") / "data"  # relative to ROOT, where every command runs
#: preset effective batch sizes (batch_size × grad_accum), kept with a CPU-sized micro-batch
EFFECTIVE_BATCH = {"ga": 32, "kl": 32, "dpo": 32, "npo": 32, "graddiff": 32, "ulmr": 16, "snap": 32, "euclidean": 32,
                   "fisher": 32}
MICRO_BATCH = 8


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "obliviate.cli", *args]


def _shown(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in ["obliviate", *cmd[3:]])


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file and a rename: a kill mid-copy leaves no
    truncated ``dst`` (which would then stand for a finished step)."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class Steps:
    """Runs CLI steps in order and keeps what they produced across sessions.

    A step is skipped when its marker file exists in the work folder (this session's models), or
    when every file it archives is already in the committed archive: those copies are restored
    into the work folder instead of running it (a new checkout has the committed results but no
    models). A step runs its ``needs`` (other steps, e.g. the training run an evaluation scores)
    only when it has to run itself, so a resumed run re-trains a model only for an evaluation that
    is still missing. Every step's wall time is kept in ``steps.json`` beside the tables
    (atomically rewritten after each step), so timings survive interruptions too."""

    def __init__(self, record: Path):
        from obliviate.io import atomic_write_json

        self._write = atomic_write_json
        self.path = record / "steps.json"
        self.times: dict[str, float] = json.loads(self.path.read_text())["seconds"] if self.path.is_file() else {}
        self.log: list[dict] = []
        self._logged: set[str] = set()
        self.part = "tofu"  #: the part the next steps belong to (each part has its own commands.sh)

    def _note(self, name: str, shown: str, seconds, how: str) -> None:
        entry = {"step": name, "command": shown, "seconds": seconds, "skipped": how != "ran", "how": how,
                 "part": self.part}
        if name not in self._logged:
            self._logged.add(name)
            self.log.append(entry)
            return
        for i, old in enumerate(self.log):  # a deferred step noted as not needed, now run or restored
            if old["step"] == name and old["how"] == "not needed":
                self.log[i] = {**entry, "part": old["part"]}

    def run(self, name: str, cmd: list[str], done: Path, archive: dict[Path, Path] | None = None,
            needs: tuple = (), keep: dict[Path, Path] | None = None) -> str:
        """Run ``cmd`` unless finished (``done`` exists) or archived; returns ``ran``, ``done`` or
        ``restored``. ``archive`` maps produced files to their committed copies (which stand for
        the step when present); ``keep`` files are copied out too but never stand for the step
        (a training run's log: the model it writes cannot be committed)."""
        shown = _shown(cmd)
        copies = {**(archive or {}), **(keep or {})}
        archive = archive or {}
        if done.exists():
            for src, dst in copies.items():
                if src.is_file() and not dst.is_file():
                    _copy_atomic(src, dst)
            self._note(name, shown, self.times.get(shown), "done")
            return "done"
        if archive and all(dst.is_file() for dst in archive.values()):
            for src, dst in sorted(archive.items(), key=lambda kv: kv[0] == done):
                _copy_atomic(dst, src)  # each whole, the step's done marker last
            print(f"[skip] {name} (restored from {next(iter(archive.values())).parent})", flush=True)
            self._note(name, shown, self.times.get(shown), "restored")
            return "restored"
        for need in needs:
            need()
        print(f"[run ] {name}: {shown}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        dt = round(time.time() - t0, 1)
        self.times[shown] = dt
        self._write(self.path, {"seconds": self.times})
        for src, dst in copies.items():
            _copy_atomic(src, dst)
        print(f"[done] {name}: {dt:.0f} s", flush=True)
        self._note(name, shown, dt, "ran")
        return "ran"

    def step(self, name: str, cmd: list[str], done: Path, archive: dict[Path, Path] | None = None,
             needs: tuple = (), keep: dict[Path, Path] | None = None):
        """A deferred :meth:`run`: a callable that runs the step (once) when called. It is logged at
        once as ``not needed`` with its wall seconds from an earlier run (a training run whose
        evaluations were all restored still appears in ``commands.sh`` with its time), and updated
        when it runs."""
        state: dict = {}
        self._note(name, _shown(cmd), self.times.get(_shown(cmd)), "not needed")

        def ensure() -> None:
            if "how" not in state:
                state["how"] = self.run(name, cmd, done, archive, needs, keep)
        return ensure


def _floats(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def _lr_map(text: str, methods: list[str]) -> dict[str, float]:
    """``"1e-4"`` (every method) or ``"ga=1e-4,ulmr=5e-5"`` (the rest keep 1e-4)."""
    out = {m: 1e-4 for m in methods}
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip() not in out:
                raise SystemExit(f"--lr: unknown method {k!r} (methods: {', '.join(methods)})")
            out[k.strip()] = float(v)
        else:
            out = {m: float(part) for m in out}
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def read_train_log(path: Path) -> list[dict]:
    """The loss rows of a ``train_log.jsonl`` (one per optimizer step)."""
    if not path.is_file():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if "loss" in r]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_").replace("__", "_")


def _cell(values: list[float], scale: float) -> str:
    """Mean ± sample std of ``values × scale`` for a table cell: the bare value for one, "–" for none
    (``scale == 1``: a p-value, in 3 significant digits)."""
    if not values:
        return "–"
    m, s = mean_std([v * scale for v in values])
    if scale == 1:  # forget quality: a p-value, shown in scientific notation when small
        return f"{m:.3g} ± {s:.2g}" if len(values) > 1 else f"{m:.3g}"
    return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"


def merge_step_logs(earlier: list[dict], now: list[dict]) -> list[dict]:
    """The steps of ``earlier`` in their order with this invocation's ``now`` entries in their place
    (same step name); a step new in ``now`` goes right after the step that precedes it in ``now``
    (at the front if none). Earlier steps not in ``now`` are marked ``how: earlier invocation``."""
    names = {s["step"] for s in now}
    out = [s if s["step"] in names else {**s, "skipped": True, "how": "earlier invocation"} for s in earlier]
    where = {s["step"]: i for i, s in enumerate(out)}
    prev = None
    for s in now:
        if s["step"] in where:
            out[where[s["step"]]] = s
        else:
            at = where[prev] + 1 if prev is not None else 0
            out.insert(at, s)
            where = {x["step"]: i for i, x in enumerate(out)}
        prev = s["step"]
    return out


def write_record(steps: Steps, out: Path, parts: tuple, seconds: float | None = None,
                 extra: dict | None = None) -> float:
    """Write ``commands.sh`` (every command of ``parts``, in order, with its wall seconds from any run)
    and ``timings.json`` (the same steps, their sum, this invocation's wall seconds and ``extra``) into
    ``out``; return the sum of the step seconds. The steps of an earlier invocation that this one did
    not touch (``--snap-rows Fisher`` after a run of every row) are kept from the ``timings.json``
    already in ``out``, marked ``earlier invocation``: the record covers every committed result."""
    from obliviate.io import atomic_write_json, atomic_write_text

    made_by = "python benchmarks/reproduce.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log = [s for s in steps.log if s.get("part", "tofu") in parts]
    try:
        earlier = json.loads((out / "timings.json").read_text()).get("steps", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    log = merge_step_logs([s for s in earlier if isinstance(s, dict) and s.get("part", "tofu") in parts
                           and "step" in s and "command" in s], log)
    lines = ["#!/usr/bin/env bash", f"# made by: {made_by}",
             f"# every command of the {'/'.join(parts)} part of benchmarks/reproduce.py, in order, "
             "with its wall seconds (from any run)",
             "set -euo pipefail"]
    total = 0.0
    for s in log:
        sec = s["seconds"]
        total += sec or 0
        lines += [f"# {s['step']}: {sec if sec is not None else '?'} s", s["command"]]
    atomic_write_text(out / "commands.sh", "\n".join(lines) + "\n")
    record = {"made_by": made_by}
    if seconds is not None:
        record["this_invocation_seconds"] = round(seconds, 1)
    record.update({"sum_of_step_seconds": round(total, 1), "steps": log, "micro_batch": MICRO_BATCH})
    record.update(extra or {})
    atomic_write_json(out / "timings.json", record)
    return total
