"""Generation through any OpenAI-compatible ``/chat/completions`` endpoint.

Works with a vLLM server (``vllm serve``), a llama.cpp server (``llama-server``), and hosted
APIs. Only the standard library is used (``urllib``); requests run concurrently on daemon
threads and results come back in the input order. Every failure that survives the retries is an
:class:`APIError` (a :class:`~obliviate.generate.base.GenerationError`) whose message names the
endpoint with its credentials redacted (:func:`obliviate.io.redact_url`).

The API key is read from the environment variable named by ``api_key_env`` at request time;
it is never stored on the object, never shown in ``repr`` and never part of a cache key.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import math
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator

from tqdm.auto import tqdm

from ..io import redact_text, redact_url
from .base import GenerationError, GenerationParams, Messages, StreamingGenerator

log = logging.getLogger(__name__)

#: HTTP status codes that are worth retrying (rate limit, server-side trouble).
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: default bound on one request across all its attempts and backoff waits (seconds)
DEFAULT_DEADLINE = 180.0
#: a reply larger than this is not a chat completion
MAX_REPLY_BYTES = 64 << 20


class APIError(GenerationError):
    """A chat-completions request failed for good (a non-retryable status, a reply that is not a chat
    completion, or the retries / deadline ran out); a :class:`~obliviate.generate.base.GenerationError`.

    ``status`` is the HTTP status (None for connection errors and timeouts), ``server_message``
    the error text the server sent back, if any, and ``endpoint`` the URL (credentials redacted).
    """

    def __init__(self, message: str, status: int | None = None, server_message: str | None = None, *,
                 endpoint: str | None = None):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.endpoint = endpoint


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None,
                 server_message: str | None = None, kind: str = "http"):
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status
        self.server_message = server_message
        self.kind = kind


class _Cancelled(Exception):
    """The batch this request belongs to was cancelled (a failure elsewhere, or an interrupt)."""


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


class OpenAIChatGenerator(StreamingGenerator):
    """Generate by POSTing to ``{base_url}/chat/completions`` of an OpenAI-compatible server.

    Each prompt becomes one request with ``model``, ``messages``, ``max_tokens``, ``temperature``,
    ``top_p`` and ``seed``; the completion is ``choices[0].message.content``. Requests failing
    with 408/409/425/429/5xx, a connection error or a timeout are retried up to ``max_retries``
    times, waiting ``backoff * 2**attempt`` seconds (capped at ``max_backoff``) or the server's
    ``Retry-After`` when it sends one. ``timeout`` bounds every wait on the socket of one attempt;
    ``deadline`` (seconds, None for none) bounds one request across all its attempts and waits: no
    attempt or backoff runs past it. Any other 4xx, a reply that is not a chat completion, or the
    retries / deadline running out raise :class:`APIError` (a :class:`GenerationError`) naming the
    endpoint, credentials redacted, and what to do. ``concurrency`` requests run in parallel on
    daemon threads; when one request fails for good, or the caller is interrupted (Ctrl-C), the
    others stop before their next attempt and the caller returns at once, without waiting for
    requests still in flight.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 60, max_retries: int = 5, backoff: float = 1.0, concurrency: int = 4,
                 max_backoff: float = 60.0, deadline: float | None = DEFAULT_DEADLINE, progress: bool = False,
                 extra_body: dict | None = None):
        parsed = urllib.parse.urlsplit(str(base_url))
        shown = redact_url(str(base_url))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {shown!r}")
        if not model:
            raise ValueError("model must name the served model (the 'model' field of the request)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        for label, v in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not math.isfinite(float(v)) or float(v) < 0 or (label == "timeout" and float(v) == 0):
                raise ValueError(f"{label} must be a {'positive' if label == 'timeout' else 'non-negative'} "
                                 f"number of seconds, got {v!r}")
        if deadline is not None and (not math.isfinite(float(deadline)) or float(deadline) <= 0):
            raise ValueError(f"deadline must be a positive number of seconds (or None for none), got {deadline!r}")
        self.base_url = str(base_url).rstrip("/")
        # user:password@host becomes a Basic Authorization header (urllib cannot send user info in a URL)
        self._basic_auth = None
        if parsed.username is not None or parsed.password is not None:
            user = urllib.parse.unquote(parsed.username or "")
            pw = urllib.parse.unquote(parsed.password or "")
            self._basic_auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")
        host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        netloc = host + (f":{parsed.port}" if parsed.port else "")
        path = parsed.path.rstrip("/") + "/chat/completions"
        #: the request URL (user info removed; a query string such as ``?api-version=`` kept after the path)
        self.url = urllib.parse.urlunsplit((parsed.scheme, netloc, path, parsed.query, ""))
        #: the request URL as shown in logs and errors (credentials redacted)
        self.display_url = redact_url(self.url)
        self.model_id = str(model)
        self.api_key_env = api_key_env or None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.deadline = None if deadline is None else float(deadline)
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
        return (f"OpenAIChatGenerator(base_url={redact_url(self.base_url)!r}, model={self.model_id!r}, "
                f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency}, timeout={self.timeout:g}, "
                f"max_retries={self.max_retries}, deadline={self.deadline})")

    # -- one request ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif self._basic_auth:
            headers["Authorization"] = self._basic_auth
        return headers

    def _body(self, messages: Messages, params: GenerationParams) -> dict:
        body = {"model": self.model_id, "messages": messages, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        body.update(self.extra_body)
        return body

    def _hint(self, status: int | None, kind: str) -> str:
        """What the user can do about a failure of this kind."""
        if status in (401, 403):
            env = f"${self.api_key_env}" if self.api_key_env else "the variable named by generator.api_key_env"
            return f"check the API key in {env} and that it may use model {self.model_id!r}"
        if status == 404:
            return (f"check base_url (it usually ends in /v1) and that the server serves model {self.model_id!r}")
        if status == 429:
            return "the server is rate-limiting: lower generator.concurrency or retry later"
        if status is not None and status >= 500:
            return "the server is failing: check its logs, or retry later"
        if status is not None:
            return "the server refused the request: check the model name and the generation settings"
        if kind == "timeout":
            return ("the server accepted the connection but sent no answer in time: check that it is serving, "
                    "or raise --request-timeout / --request-deadline (generator.timeout / generator.deadline)")
        return "check that the server is running and that base_url is right (e.g. http://127.0.0.1:8000/v1)"

    def _read_reply(self, resp, deadline_at: float | None, cancel: threading.Event | None) -> bytes:
        chunks, size = [], 0
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            if deadline_at is not None and time.monotonic() > deadline_at:
                raise socket.timeout("the deadline passed while the reply was being read")
            b = resp.read(1 << 16)
            if not b:
                return b"".join(chunks)
            size += len(b)
            if size > MAX_REPLY_BYTES:
                raise APIError(f"{self.display_url} sent a reply larger than {MAX_REPLY_BYTES >> 20} MiB, not a "
                               "chat completion; check that base_url is an OpenAI-compatible endpoint",
                               endpoint=self.display_url)
            chunks.append(b)

    def _attempt(self, data: bytes, timeout: float | None = None, deadline_at: float | None = None,
                 cancel: threading.Event | None = None) -> str:
        req = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        with self._count_lock:
            self.requests_made += 1
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                raw = self._read_reply(resp, deadline_at, cancel)
        except urllib.error.HTTPError as e:
            try:
                body = e.read(1 << 16)
            except Exception:  # noqa: BLE001 - the body is only for the message
                body = b""
            msg = redact_text(_server_message(body) or str(e.reason))
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {msg}", parse_retry_after(e.headers.get("Retry-After")),
                                 e.code, msg, kind="http") from None
            raise APIError(f"{self.display_url} answered HTTP {e.code}: {msg}; {self._hint(e.code, 'http')}",
                           e.code, msg, endpoint=self.display_url) from None
        except (_Cancelled, APIError):
            raise
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise _Retryable(f"no answer within {timeout or self.timeout:g} s ({reason or 'timed out'})",
                                 kind="timeout") from None
            if isinstance(reason, ConnectionRefusedError):
                raise _Retryable("connection refused", kind="refused") from None
            raise _Retryable(redact_text(f"{type(reason).__name__}: {reason}"), kind="connection") from None
        try:
            payload = json.loads(raw)
            content = payload["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise APIError(f"{self.display_url} sent a reply that is not a chat completion "
                           f"({type(e).__name__}: {e}): {raw[:200]!r}; check that base_url is an OpenAI-compatible "
                           "endpoint (it usually ends in /v1)", endpoint=self.display_url) from None
        return "" if content is None else str(content).strip()

    def complete(self, messages: Messages, params: GenerationParams, *, cancel: threading.Event | None = None) -> str:
        """One chat completion for ``messages``, with retries within the deadline.

        Raises :class:`APIError` when it fails for good. ``cancel`` (set by the batch runner on a
        failure elsewhere or an interrupt) stops it before the next attempt and wakes a backoff wait.
        """
        data = json.dumps(self._body(messages, params), ensure_ascii=False).encode("utf-8")
        start = time.monotonic()
        deadline_at = None if self.deadline is None else start + self.deadline
        last: _Retryable | None = None
        attempts = 0
        out_of_time = False
        next_wait = None
        for attempt in range(self.max_retries + 1):
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            timeout = self.timeout
            if deadline_at is not None:
                remaining = deadline_at - time.monotonic()
                if remaining <= 0:
                    out_of_time = True
                    break
                timeout = min(timeout, remaining)
            attempts += 1
            try:
                return self._attempt(data, timeout, deadline_at, cancel)
            except _Retryable as e:
                last = e
            if attempt == self.max_retries:
                break
            wait = last.retry_after if last.retry_after is not None else self.backoff * (2 ** attempt)
            wait = min(wait, self.max_backoff)
            if deadline_at is not None and time.monotonic() + wait >= deadline_at:
                out_of_time, next_wait = True, wait
                break
            log.warning("%s: %s; retry %d/%d in %.2fs", self.display_url, last, attempt + 1, self.max_retries, wait)
            if cancel is not None:
                if cancel.wait(wait):
                    raise _Cancelled()
            else:
                time.sleep(wait)
        elapsed = time.monotonic() - start
        hint = self._hint(last.status if last else None, last.kind if last else "timeout")
        if out_of_time:
            why = (f"; a retry after the {next_wait:g} s wait would pass it" if next_wait is not None else "")
            raise APIError(f"{self.display_url}: no chat completion within the {self.deadline:g} s deadline "
                           f"({attempts} attempt(s) in {elapsed:.1f} s{why}; last error: {last or 'none'}); {hint}",
                           last.status if last else None, last.server_message if last else None,
                           endpoint=self.display_url)
        assert last is not None
        raise APIError(f"{self.display_url}: giving up after {attempts} attempts in {elapsed:.1f} s; last error: "
                       f"{last}; {hint}", last.status, last.server_message, endpoint=self.display_url)

    # -- batches -------------------------------------------------------------------------------
    def _iter_generate(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        """Yield ``(index, completion)`` as requests finish (any order); stops at the first failure.

        Requests run on ``concurrency`` daemon threads. On a failure, an interrupt (Ctrl-C in the
        calling thread) or the caller closing the iterator, a shared event stops every worker before
        its next attempt and wakes its backoff wait; this call returns at once, without joining
        requests still in flight (daemon threads never delay the interpreter's exit).
        """
        n = len(prompts)
        if n == 0:
            return
        cancel = threading.Event()
        results: queue.Queue = queue.Queue()
        todo = iter(range(n))
        todo_lock = threading.Lock()

        def worker() -> None:
            while not cancel.is_set():
                with todo_lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results.put((i, self.complete(prompts[i], params, cancel=cancel), None))
                except _Cancelled:
                    return
                except BaseException as e:  # noqa: BLE001 - handed to the calling thread
                    results.put((i, None, e))
                    return

        for k in range(min(self.concurrency, n)):
            threading.Thread(target=worker, name=f"obliviate-openai-{k}", daemon=True).start()
        bar = tqdm(total=n, desc=f"generate ({self.model_id})", disable=not self.progress)
        try:
            for _ in range(n):
                while True:
                    try:
                        i, text, err = results.get(timeout=0.2)  # short slices: Ctrl-C acts at once
                        break
                    except queue.Empty:
                        continue
                if err is not None:
                    raise err
                bar.update(1)
                yield i, text
        finally:
            cancel.set()
            bar.close()

