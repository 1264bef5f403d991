"""A disk cache in front of any generator, so an interrupted run resumes without regenerating.

Storage is one SQLite database (``generations.sqlite``) in write-ahead-log mode with
``synchronous=FULL``: every completed generation is committed as soon as the inner backend
hands it over, a crash mid-run loses at most the generations in flight, and several processes
can read and write the same cache at once (SQLite's file locks; use a local disk, not NFS).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .base import GenerationError, GenerationParams, Generator, Messages

DB_NAME = "generations.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    completion TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def normalise_messages(messages: Messages) -> list[dict]:
    """Messages reduced to plain ``{"role": str, "content": str, ...}`` dicts with string values.

    Key order does not matter (the cache key serialises with sorted keys); content is kept
    byte for byte, since any change to a prompt may change the completion.
    """
    out = []
    for m in messages:
        d = {str(k): (v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, sort_keys=True))
             for k, v in m.items()}
        d["role"], d["content"] = str(m["role"]), str(m["content"])
        out.append(d)
    return out


def cache_key(backend: str, model_id: str, messages: Messages, params: GenerationParams, occurrence: int = 0) -> str:
    """sha256 hex digest of (backend name, model id, normalised messages, every decoding param incl. seed).

    ``occurrence`` tells apart repeated identical prompts in one sampled call (the k-th copy
    gets its own entry, so asking for the same prompt three times still gives three samples).
    """
    payload = {"backend": backend, "model": model_id, "messages": normalise_messages(messages),
               "params": dataclasses.asdict(params)}
    if occurrence:
        payload["occurrence"] = occurrence
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """The SQLite store behind :class:`CachedGenerator`: ``get_many(keys)`` and ``put(key, ...)``.

    ``durable=True`` (default) fsyncs every commit (``synchronous=FULL``): nothing committed is
    lost even on power failure. ``durable=False`` (``synchronous=NORMAL``) still survives a killed
    process but may lose the last commits on an OS crash; it is faster for very fast servers.
    """

    def __init__(self, cache_dir: str | Path, *, durable: bool = True):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._conn.execute("PRAGMA busy_timeout=60000")
            self._conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise GenerationError(f"generation cache {self.path} is not a usable SQLite database ({e}); move it "
                                  "away or delete it to start a fresh cache") from e

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached completions for those of ``keys`` that are present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._lock:
            for s in range(0, len(keys), 500):
                part = keys[s:s + 500]
                q = f"SELECT key, completion FROM generations WHERE key IN ({','.join('?' * len(part))})"
                found.update(self._conn.execute(q, part).fetchall())
        return found

    def put(self, key: str, completion: str, *, backend: str, model: str, messages: Messages,
            params: GenerationParams) -> None:
        """Store one completion and commit it durably (first writer wins on a duplicate key)."""
        row = (key, completion, backend, model, json.dumps(normalise_messages(messages), ensure_ascii=False),
               json.dumps(dataclasses.asdict(params), sort_keys=True), time.time())
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO generations VALUES (?,?,?,?,?,?,?)", row)

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()


class CachedGenerator(Generator):
    """Wrap ``inner`` with a disk cache keyed by :func:`cache_key`; only misses reach ``inner``.

    The misses of one ``generate`` call are sent to ``inner`` in one call when it can stream
    results (a ``_iter_generate`` method yielding ``(index, text)``, as every obliviate backend
    has), each result committed as it arrives; otherwise in chunks of ``chunk_size`` (default:
    ``inner.cache_chunk_size`` or 32), committed per chunk. Greedy duplicates in one call are
    generated once; sampled duplicates each get their own sample (and cache entry).

    ``hits`` and ``misses`` count prompts served from the cache and generations made by
    ``inner``, over the lifetime of this object (``hits + misses`` = prompts seen); ``stats()`` returns them with the number of stored entries.
    """

    def __init__(self, inner: Generator, cache_dir: str | Path, *, chunk_size: int | None = None,
                 durable: bool = True):
        if isinstance(inner, CachedGenerator):
            raise ValueError("inner is already a CachedGenerator")
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.cache = GenerationCache(cache_dir, durable=durable)
        self.chunk_size = int(chunk_size or getattr(inner, "cache_chunk_size", 32) or 32)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CachedGenerator({self.inner!r}, cache_dir={str(self.cache.dir)!r})"

    def stats(self) -> dict:
        """``{"hits", "misses", "entries", "path"}`` for logs and run manifests."""
        return {"hits": self.hits, "misses": self.misses, "entries": len(self.cache), "path": str(self.cache.path)}

    def _keys(self, prompts: Sequence[Messages], params: GenerationParams) -> list[str]:
        seen: dict[str, int] = {}
        keys = []
        for m in prompts:
            base = cache_key(self.inner.name, self.inner.model_id, m, params)
            k = seen.get(base, 0)
            seen[base] = k + 1
            keys.append(base if (k == 0 or params.temperature == 0) else
                        cache_key(self.inner.name, self.inner.model_id, m, params, occurrence=k))
        return keys

    def _stream(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        it = getattr(self.inner, "_iter_generate", None)
        if callable(it):
            yield from it(prompts, params)
            return
        for s in range(0, len(prompts), self.chunk_size):
            chunk = prompts[s:s + self.chunk_size]
            texts = self.inner._generate(chunk, params)
            if len(texts) != len(chunk):
                raise GenerationError(f"{self.inner.name} returned {len(texts)} completions for {len(chunk)} prompts")
            yield from ((s + j, t) for j, t in enumerate(texts))

    def _generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        keys = self._keys(prompts, params)
        found = self.cache.get_many(keys)
        out: list[str | None] = [found.get(k) for k in keys]
        where: dict[str, list[int]] = {}  # missing key -> every prompt index that needs it
        for i, k in enumerate(keys):
            if out[i] is None:
                where.setdefault(k, []).append(i)
        generated = 0
        if where:
            firsts = [idx[0] for idx in where.values()]
            # Similar lengths next to each other: tighter batches for chunked backends.
            firsts.sort(key=lambda i: sum(len(str(m["content"])) for m in prompts[i]))
            for j, text in self._stream([prompts[i] for i in firsts], params):
                k = keys[firsts[j]]
                self.cache.put(k, text, backend=self.inner.name, model=self.inner.model_id,
                               messages=prompts[firsts[j]], params=params)
                self.misses += 1
                generated += 1
                for r in where[k]:
                    out[r] = text
        missing = [i for i, o in enumerate(out) if o is None]
        if missing:
            raise GenerationError(f"{self.inner.name} produced no completion for prompt(s) {missing[:10]}")
        self.hits += len(prompts) - generated  # greedy duplicates of a miss count as hits
        return out  # type: ignore[return-value]
