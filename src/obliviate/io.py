"""Atomic writes and run manifests: every output can be traced back to what produced it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

SECRET_MARKERS = ("key", "token", "secret", "password")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as JSON Lines to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return Path(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file written by obliviate (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def file_sha256(path: str | os.PathLike, limit: int | None = None) -> str:
    """SHA-256 of a file's bytes (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    read = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if limit is not None:
                chunk = chunk[: max(0, limit - read)]
            h.update(chunk)
            read += len(chunk)
            if limit is not None and read >= limit:
                break
    return h.hexdigest()


def redact(obj: Any) -> Any:
    """Return ``obj`` with the values of secret-looking keys (api_key, token, ...) replaced."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if any(m in str(k).lower() for m in SECRET_MARKERS) and v else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def package_versions(names: Iterable[str] = ("obliviate", "torch", "transformers", "peft", "trl", "accelerate",
                                             "datasets", "safetensors", "sentence-transformers", "POT",
                                             "rouge-score", "scipy", "numpy")) -> dict[str, str]:
    """Installed versions of the packages that shape a result."""
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def peak_memory_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / (1024 * 1024)


class Manifest:
    """Collects what produced a run directory and writes ``manifest.json`` atomically.

    Records the command, the redacted config, package versions, input file hashes, the seed,
    wall time and peak memory (CPU RSS, plus CUDA peak when a GPU was used).
    """

    def __init__(self, out_dir: str | os.PathLike, command: str, config: dict | None = None,
                 seed: int | None = None):
        self.out_dir = Path(out_dir)
        self.start = time.time()
        self.data: dict[str, Any] = {
            "command": command,
            "argv": sys.argv,
            "config": redact(config or {}),
            "seed": seed,
            "inputs": {},
            "outputs": [],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
        }

    def add_input(self, name: str, path: str | os.PathLike | None) -> None:
        """Record an input: files get a SHA-256 (first 64 MiB for big ones), others their spec."""
        if path is None:
            return
        p = Path(str(path))
        if p.is_file():
            self.data["inputs"][name] = {"path": str(p), "sha256": file_sha256(p, limit=64 << 20),
                                         "bytes": p.stat().st_size}
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in {".json", ".safetensors", ".jsonl"})
            self.data["inputs"][name] = {"path": str(p),
                                         "sha256": {f.name: file_sha256(f, limit=1 << 20) for f in files[:32]}}
        else:
            self.data["inputs"][name] = {"spec": str(path)}

    def add_output(self, path: str | os.PathLike) -> None:
        """Record an artifact written into the run directory."""
        self.data["outputs"].append(str(path))

    def write(self, **extra: Any) -> Path:
        """Write ``manifest.json`` with wall time and peak memory so far."""
        self.data.update(extra)
        self.data["wall_time_s"] = round(time.time() - self.start, 3)
        self.data["peak_rss_mb"] = round(peak_memory_mb(), 1)
        try:
            import torch

            if torch.cuda.is_available():
                self.data["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        except Exception:  # pragma: no cover - torch always importable here
            pass
        return atomic_write_json(self.out_dir / "manifest.json", self.data)
