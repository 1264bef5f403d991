"""Generation through any OpenAI-compatible ``/chat/completions`` endpoint.

Works with a vLLM server (``vllm serve``), a llama.cpp server (``llama-server``), and hosted
APIs. Only the standard library is used (``urllib``); requests run concurrently on a thread
pool and results come back in the input order.

The API key is read from the environment variable named by ``api_key_env`` at request time;
it is never stored on the object, never shown in ``repr`` and never part of a cache key.
"""

from __future__ import annotations

import concurrent.futures as cf
import email.utils
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator

from tqdm.auto import tqdm

from .base import GenerationParams, Generator, Messages

log = logging.getLogger(__name__)

#: HTTP status codes that are worth retrying (rate limit, server-side trouble).
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class APIError(RuntimeError):
    """A chat-completions request failed for good (a non-retryable status, or retries exhausted).

    ``status`` is the HTTP status (None for connection errors and timeouts) and ``server_message``
    the error text the server sent back, if any.
    """

    def __init__(self, message: str, status: int | None = None, server_message: str | None = None):
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None,
                 server_message: str | None = None):
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status
        self.server_message = server_message


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _server_message(body: bytes) -> str:
    """The human-readable error text in an error response (OpenAI ``{"error": {"message"}}`` or raw text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:2000]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)
        elif isinstance(err, str):
            return err
        if "detail" in data:
            return str(data["detail"])
    return text[:2000]


class OpenAIChatGenerator(Generator):
    """Generate by POSTing to ``{base_url}/chat/completions`` of an OpenAI-compatible server.

    Each prompt becomes one request with ``model``, ``messages``, ``max_tokens``, ``temperature``,
    ``top_p`` and ``seed``; the completion is ``choices[0].message.content``. Requests failing
    with 408/409/425/429/5xx, a connection error or a timeout are retried up to ``max_retries``
    times, waiting ``backoff * 2**attempt`` seconds (capped at ``max_backoff``) or the server's
    ``Retry-After`` when it sends one. Any other 4xx fails at once with an :class:`APIError`
    carrying the server's message. ``concurrency`` requests run in parallel.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60, max_retries: int = 5, backoff: float = 1.0, concurrency: int = 4,
                 max_backoff: float = 60.0, progress: bool = False, extra_body: dict | None = None):
        parsed = urllib.parse.urlparse(str(base_url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        if not model:
            raise ValueError("model must name the served model (the 'model' field of the request)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = str(base_url).rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model_id = str(model)
        self.api_key_env = api_key_env or None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = int(concurrency)
        self.progress = progress
        self.extra_body = dict(extra_body or {})
        self.cache_chunk_size = 8 * self.concurrency
        #: number of HTTP attempts made (including retries); handy for logs and tests
        self.requests_made = 0
        self._count_lock = threading.Lock()
        # Never send a loopback request through an HTTP proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return (f"OpenAIChatGenerator(base_url={self.base_url!r}, model={self.model_id!r}, "
                f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})")

    # -- one request ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, messages: Messages, params: GenerationParams) -> dict:
        body = {"model": self.model_id, "messages": messages, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        body.update(self.extra_body)
        return body

    def _attempt(self, data: bytes) -> str:
        req = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        with self._count_lock:
            self.requests_made += 1
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except Exception:  # noqa: BLE001 - the body is only for the message
                body = b""
            msg = _server_message(body) or e.reason
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {msg}", parse_retry_after(e.headers.get("Retry-After")),
                                 e.code, msg) from None
            raise APIError(f"{self.url} answered HTTP {e.code}: {msg}", e.code, msg) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{type(reason).__name__}: {reason}") from None
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise APIError(f"{self.url} returned a response that is not a chat completion "
                           f"({type(e).__name__}: {e}): {raw[:300]!r}") from None
        return "" if content is None else str(content).strip()

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        """One chat completion for ``messages``, with retries; raises :class:`APIError` when it fails for good."""
        data = json.dumps(self._body(messages, params), ensure_ascii=False).encode("utf-8")
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(data)
            except _Retryable as e:
                last = e
                if attempt == self.max_retries:
                    break
                wait = e.retry_after if e.retry_after is not None else self.backoff * (2 ** attempt)
                wait = min(wait, self.max_backoff)
                log.warning("%s: %s; retry %d/%d in %.2fs", self.url, e, attempt + 1, self.max_retries, wait)
                time.sleep(wait)
        assert last is not None
        raise APIError(f"{self.url}: giving up after {self.max_retries + 1} attempts; last error: {last}",
                       last.status, last.server_message)

    # -- batches -------------------------------------------------------------------------------
    def _iter_generate(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        """Yield ``(index, completion)`` as requests finish (any order); stops at the first failure."""
        pool = cf.ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)) or 1,
                                     thread_name_prefix="obliviate-openai")
        bar = tqdm(total=len(prompts), desc=f"generate ({self.model_id})", disable=not self.progress)
        try:
            futures = {pool.submit(self.complete, m, params): i for i, m in enumerate(prompts)}
            for fut in cf.as_completed(futures):
                text = fut.result()
                bar.update(1)
                yield futures[fut], text
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def _generate(self, prompts: list[Messages], params: GenerationParams) -> list[str]:
        out: list[str | None] = [None] * len(prompts)
        for i, text in self._iter_generate(prompts, params):
            out[i] = text
        return out  # type: ignore[return-value]
