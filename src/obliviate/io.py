"""Atomic writes and run manifests: every output can be traced back to what produced it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import sys
import tempfile
import time
import urllib.parse
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .config import ConfigError


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


#: whole key names that hold a credential (compared after lower-casing and ``-`` → ``_``)
SECRET_NAMES = frozenset({
    "key", "api_key", "apikey", "secret", "password", "passwd", "pwd", "pass", "token", "auth", "authorization",
    "bearer", "credential", "credentials", "cookie", "set_cookie", "session", "sig", "signature",
    "private_key", "access_key", "secret_key", "client_secret", "x_api_key", "proxy_authorization",
})
#: name endings that mark a credential (``openai_api_key``, ``hf_token``, ``db_password``, ...)
SECRET_SUFFIXES = ("_key", "_apikey", "_secret", "_password", "_passwd", "_token", "_auth", "_credentials",
                   "_credential", "_cookie", "_signature")
#: ``*_token`` / ``*_key`` names that are not credentials: tokenizer special tokens, lookup keys
_HARMLESS_NAMES = frozenset({
    "pad_token", "eos_token", "bos_token", "unk_token", "sep_token", "cls_token", "mask_token",
    "chat_token", "sort_key", "cache_key", "group_key", "metric_key", "primary_key", "question_key",
    "answer_key", "prompt_key", "text_key", "id_key", "label_key", "response_key",
})
#: kept for compatibility: the words the old key-name rule looked for
SECRET_MARKERS = ("key", "token", "secret", "password")
REDACTED = "<redacted>"


def is_secret_name(name: Any) -> bool:
    """Whether a key / parameter name holds a credential: ``api_key``, ``token``, ``hf_token``, ``password``,
    ``authorization``... but not a budget or setting that merely contains such a word (``max_new_tokens``,
    ``api_key_env`` (the *name* of a variable), ``pad_token``, ``answer_key``, ``num_tokens``)."""
    n = str(name).strip().lower().replace("-", "_")
    if not n or n in _HARMLESS_NAMES:
        return False
    if n in SECRET_NAMES:
        return True
    if n.endswith(("_env", "_id", "_ids", "_len", "_length", "_count", "_size", "_file", "_path", "_name")):
        return False  # an environment variable's name, a count, a reference to where a secret lives
    if n.startswith(("max_", "min_", "num_", "n_")) or "tokens" in n:
        return False  # a budget or a count of tokens
    return n.endswith(SECRET_SUFFIXES)


#: ``scheme://...`` up to whitespace or a quote: the URLs inside any text
_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_ASSIGN_RE = re.compile(r"^(--?[\w.\-]+=|[\w.\-]+=)(.+)$", re.S)


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``<redacted>``: the password of ``user:pass@host`` (the whole
    user info when it is a bare ``token@host``) and the values of secret query parameters (``?api_key=``,
    ``?key=``, ``?token=``, ``?access_token=``, ``?sig=``...). Everything else is kept byte for byte."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)(.*)$", url, re.S)
    if not m:
        return url
    scheme, netloc, rest = m.groups()
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if colon and user else f"{REDACTED}@{host}"
    path, qmark, query = rest.partition("?")
    if qmark:
        query, hash_, frag = query.partition("#")
        parts = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            parts.append(f"{name}={REDACTED}" if eq and is_secret_name(urllib.parse.unquote_plus(name)) else part)
        rest = path + "?" + "&".join(parts) + hash_ + frag
    return scheme + netloc + rest


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (a generator spec such as
    ``openai:https://u:KEY@host/v1#model``, an argv item, a log line), and a ``name=value`` /
    ``--name=value`` item whose name is a secret (:func:`is_secret_name`) redacted."""
    if "://" in text:
        text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    m = _ASSIGN_RE.match(text)
    if m and is_secret_name(m.group(1).rstrip("=").lstrip("-").rsplit(".", 1)[-1]):
        return m.group(1) + REDACTED
    return text


def redact(obj: Any) -> Any:
    """Return ``obj`` with credentials replaced by ``<redacted>``: the values of secret keys
    (:func:`is_secret_name`: ``api_key``, ``token``, ``hf_token``... not ``max_new_tokens`` or
    ``api_key_env``), and credentials inside any string that holds a URL (:func:`redact_text`),
    in mappings, lists and tuples at any depth."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_name(k) and v not in (None, "", [], {}) and not isinstance(v, bool)
                    else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, os.PathLike):
        return redact_text(os.fspath(obj))
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


class OutputReplacesInputError(ConfigError):
    """An output path is, or would replace, one of the command's inputs (raised before anything is written)."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links too
    except OSError:
        return a == b


def check_outputs_do_not_replace_inputs(inputs: Iterable[Any], outputs: Iterable[Any], *,
                                        what: str = "--out") -> None:
    """Refuse (``OutputReplacesInputError``) when an output would overwrite an input.

    ``inputs``: the files and folders the command reads (``None`` and specs that are not local paths,
    such as ``tofu:forget01`` or a hub id, are skipped). ``outputs``: the files the command writes and
    the folders it replaces as a whole. An output conflicts with an input when both resolve (symlinks
    followed, ``~`` expanded, hard links detected) to the same path, or when the output is a folder that
    holds the input (writing it would replace the input). Call it before any output is written.
    """
    ins = [(str(i), _real(i)) for i in inputs if i is not None and str(i) and os.path.exists(os.path.expanduser(str(i)))]
    for o in outputs:
        if o is None:
            continue
        ro = _real(o)
        for shown, ri in ins:
            if _same_file(ro, ri):
                raise OutputReplacesInputError(
                    f"{what}: writing {o} would overwrite the input {shown}" + (f" ({ri})" if str(ri) != shown else "")
                    + "; choose another output folder (inputs are never replaced)")
            if ro in ri.parents:
                raise OutputReplacesInputError(
                    f"{what}: {o} holds the input {shown} and would be replaced; choose another output folder")


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
        return atomic_write_json(self.out_dir / "manifest.json", redact(self.data))  # URLs, argv too


#: written into a run folder that obliviate created; only such a folder may be deleted (``demo --fresh``)
RUN_MARKER = ".obliviate-run.json"


def mark_run_dir(path: str | os.PathLike, command: str) -> Path:
    """Create ``path`` if needed and mark it as a run folder made by ``obliviate <command>`` (atomic write)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p / RUN_MARKER, {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       "note": "made by obliviate; `--fresh` may delete this folder"})
    return p / RUN_MARKER


def run_dir_command(path: str | os.PathLike) -> str | None:
    """The command that marked ``path`` as its run folder (see :func:`mark_run_dir`), or None if unmarked."""
    try:
        data = json.loads((Path(path) / RUN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cmd = data.get("command") if isinstance(data, dict) else None
    return cmd if isinstance(cmd, str) else None


def remove_run_dir(path: str | os.PathLike, command: str) -> bool:
    """Delete ``path`` only if it is empty or marked as ``command``'s run folder; return whether it existed.

    Anything else (a folder obliviate did not create, a file) raises ``FileExistsError`` and nothing is
    deleted: a mistyped ``--out`` never costs the user their files.
    """
    import shutil

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return False
    if p.is_symlink() or not p.is_dir():
        raise FileExistsError(f"{p} is not a folder made by obliviate {command}; refusing to delete it")
    if any(p.iterdir()) and run_dir_command(p) != command:
        raise FileExistsError(f"{p} was not made by obliviate {command} (no {RUN_MARKER} marker); refusing to "
                              "delete it: choose another --out, or delete it yourself")
    shutil.rmtree(p)
    return True
