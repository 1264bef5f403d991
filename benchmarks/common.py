"""Shared helpers for obliviate's benchmark scripts: timing, peak memory, machine limits, tables.

Contract for a benchmark script ``benchmarks/<name>.py`` (what ``benchmarks/run.py`` relies on):

* it defines ``main(quick: bool = False) -> list[dict]`` returning table rows (and, when run as a
  script, prints them with :func:`print_table`);
* rows may carry any keys; the combined table of ``run.py`` reads ``figure`` (what is measured),
  ``value`` (the number, with its unit in ``unit``), ``ratio`` (a float: vs the naive path or the
  machine limit) and ``ratio_vs`` (what the ratio compares against) when present;
* ``quick`` (or the environment variable ``OBLIVIATE_BENCH_QUICK=1``, see :func:`is_quick`) asks
  for a small budget: the whole suite must finish in under 15 minutes on 2 CPU cores.

Run ``python benchmarks/common.py`` to print this machine's measured fp32 matmul rate.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TOFU_DIR = SHARED_DATA / "tofu"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

QUICK_ENV = "OBLIVIATE_BENCH_QUICK"
DEADLINE_ENV = "OBLIVIATE_BENCH_DEADLINE"
PARTIAL_ENV = "OBLIVIATE_BENCH_PARTIAL"


def is_quick(quick: bool | None = None) -> bool:
    """Return True when a quick (small-budget) run is requested, by argument or ``$OBLIVIATE_BENCH_QUICK``."""
    if quick is not None and quick:
        return True
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def time_left() -> float:
    """Seconds until ``$OBLIVIATE_BENCH_DEADLINE`` (a Unix time set by ``run.py``); +inf when unset.

    Scripts check it between their parts and skip what no longer fits (saying so in a row), so that
    a slow or shared machine yields a partial table rather than a time-out with nothing.
    """
    raw = os.environ.get(DEADLINE_ENV)
    if not raw:
        return float("inf")
    try:
        return float(raw) - time.time()
    except ValueError:
        return float("inf")


def checkpoint_rows(rows: Sequence[dict]) -> None:
    """Save the rows measured so far to ``$OBLIVIATE_BENCH_PARTIAL`` (set by ``run.py``), atomically.

    If the script then runs past its time limit, ``run.py`` still reports these rows. A no-op
    when the variable is unset.
    """
    path = os.environ.get(PARTIAL_ENV)
    if not path:
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps({"rows": list(rows)}, default=_json_default))
    os.replace(tmp, path)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (default: all cores, at least 1) and return it."""
    n = int(n or os.environ.get("OBLIVIATE_BENCH_THREADS") or (os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


# --------------------------------------------------------------------------- machine limits
def measure_matmul_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5,
                          device: str | torch.device = "cpu", warmup: int = 1) -> float:
    """Measure the machine's dense matmul rate in GFLOP/s: ``2 n³ / t`` for an ``n × n`` product.

    The best of ``repeats`` timed products (after ``warmup`` untimed ones) is reported, which is
    the usual way of stating a peak rate. This is the denominator of model FLOP utilisation.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n}, repeats={repeats}")
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float32).to(dev, dtype)
    b = torch.randn(n, n, generator=g, dtype=torch.float32).to(dev, dtype)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# --------------------------------------------------------------------------- timing
class Timer:
    """Context manager measuring wall time in seconds (``.seconds``), synchronising CUDA if used."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda and torch.cuda.is_available()
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        if self.cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._t0


def time_call(fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones; return min/median/mean seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times), "mean": statistics.fmean(times),
            "repeats": repeats}


# --------------------------------------------------------------------------- memory
def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (from /proc on Linux, else ru_maxrss)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or of its finished, waited-for children).

    ``ru_maxrss`` is a high-water mark for the whole process life, so a clean per-benchmark figure
    needs one process per benchmark: ``run.py`` runs every script in its own subprocess and reads
    ``peak_rss_mb(children=True)`` style numbers from there.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2 ** 20


class PeakRSS:
    """Sample the process RSS in a background thread and report the peak *above the start* (MiB).

    Useful inside one process to compare two code paths (e.g. streaming merge vs two full models),
    where ``ru_maxrss`` would only report the larger of the two. Sampling every ``interval`` s can
    miss very short spikes; the figures are lower bounds.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.start_mb = self.peak_mb = current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def delta_mb(self) -> float:
        """Peak RSS minus RSS at entry, in MiB."""
        return self.peak_mb - self.start_mb


@contextlib.contextmanager
def cuda_peak_memory() -> Iterator[dict]:
    """Yield a dict filled on exit with ``peak_mb`` of CUDA memory (0.0 without CUDA)."""
    out = {"peak_mb": 0.0}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        yield out
    finally:
        if torch.cuda.is_available():
            out["peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20


# --------------------------------------------------------------------------- tables
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.2e}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[dict], headers: Sequence[str] | None = None) -> str:
    """Render ``rows`` (dicts) as a Markdown table; columns are ``headers`` or the union of keys in order."""
    if headers is None:
        headers = []
        for r in rows:
            headers.extend(k for k in r if k not in headers)
    headers = list(headers)
    if not headers:
        return "(no rows)\n"
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(h)) for h in headers) + " |")
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[dict], headers: Sequence[str] | None = None, *, file=None) -> str:
    """Print ``rows`` as a Markdown table (see :func:`format_table`) and return the text."""
    text = format_table(rows, headers)
    print(text, file=file or sys.stdout, flush=True)
    return text


def parse_markdown_table(text: str) -> list[dict]:
    """Parse the first Markdown table found in ``text`` back into rows (all values as strings)."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and set(lines[i + 1].replace("|", "").replace(":", "").strip()) <= {"-", " "} \
                and lines[i + 1].startswith("|") and "-" in lines[i + 1]:
            headers = [h.strip() for h in lines[i].strip("|").split("|")]
            rows = []
            for ln in lines[i + 2:]:
                if not ln.startswith("|"):
                    break
                cells = [c.strip() for c in ln.strip("|").split("|")]
                rows.append(dict(zip(headers, cells)))
            return rows
    return []


# --------------------------------------------------------------------------- script driver
def call_main(main: Callable[..., Any], quick: bool) -> list[dict]:
    """Call a benchmark's ``main`` with ``quick=`` when it accepts it, else with no argument.

    ``$OBLIVIATE_BENCH_QUICK`` is set either way, so scripts whose ``main()`` takes no argument
    can read the budget through :func:`is_quick`. Returns the rows (an empty list for ``None``).
    """
    if quick:
        os.environ[QUICK_ENV] = "1"
    try:
        params = inspect.signature(main).parameters
    except (TypeError, ValueError):
        params = {}
    if "quick" in params:
        rows = main(quick=quick)
    elif "argv" in params:
        rows = main(argv=[])  # the budget travels in $OBLIVIATE_BENCH_QUICK
    else:
        rows = main()
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        return []  # e.g. an exit code: the caller falls back to the printed table
    return [dict(r) for r in rows]


def run_script_to_json(path: str | os.PathLike, out_json: str | os.PathLike, quick: bool = False) -> None:
    """Import ``path`` as a module, run its ``main``, and write ``{"rows", "peak_rss_mb", "seconds"}``.

    This is what ``run.py`` executes in a fresh subprocess for each benchmark (so that the
    peak-RSS high-water mark belongs to that benchmark alone). A script without ``main`` is run as
    ``__main__`` and its printed Markdown table is parsed.
    """
    import io
    import runpy

    path = Path(path)
    sys.path.insert(0, str(path.parent))
    t0 = time.perf_counter()
    if quick:
        os.environ[QUICK_ENV] = "1"
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if callable(getattr(module, "main", None)):
        buf = _Tee(sys.stdout)
        with contextlib.redirect_stdout(buf):
            rows = call_main(module.main, quick)
        if not rows:  # main returned no rows (e.g. an exit code): use the table it printed
            rows = parse_markdown_table(buf.getvalue())
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            old_argv = sys.argv
            sys.argv = [str(path)] + (["--quick"] if quick else [])
            try:
                runpy.run_path(str(path), run_name="__main__")
            finally:
                sys.argv = old_argv
        sys.stdout.write(buf.getvalue())
        rows = parse_markdown_table(buf.getvalue())
    payload = {"rows": rows, "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0}
    tmp = Path(str(out_json) + ".tmp")
    tmp.write_text(json.dumps(payload, default=_json_default, indent=1))
    os.replace(tmp, out_json)


class _Tee:
    """A stdout stand-in that both forwards and records what is written."""

    def __init__(self, stream):
        import io

        self.stream, self.buf = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buf.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def getvalue(self) -> str:
        return self.buf.getvalue()


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def script_entry(main: Callable[..., list[dict]], argv: Iterable[str] | None = None) -> list[dict]:
    """Standard ``if __name__ == "__main__"`` body: parse ``--quick``, run ``main``, print its table."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="small budget (the suite's --quick)")
    args = p.parse_args(list(argv) if argv is not None else None)
    rows = call_main(main, args.quick)
    print_table(rows)
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Measure this machine's dense matmul rate.")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--run-script", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_script:
        run_script_to_json(a.run_script, a.json, quick=a.quick)
    else:
        threads = set_threads(a.threads)
        rate = measure_matmul_gflops(a.n, repeats=a.repeats)
        print_table([{"threads": threads, "n": a.n, "fp32 matmul GFLOP/s": rate}])
