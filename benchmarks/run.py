"""Run obliviate's benchmark suite and write one combined table.

    python benchmarks/run.py [--quick] [--only NAME,...] [--out FILE.md] [--timeout S]

Every script ``benchmarks/<name>.py`` of :data:`SUITE` runs in its own subprocess (a clean peak-RSS
figure per benchmark; a crash or hang cannot take the suite down) through
``common.run_script_to_json``, which calls the script's ``main(quick=...)`` and stores its rows.
A missing, failing or timed-out script becomes a row saying so (a timed-out script that saved
rows with ``common.checkpoint_rows`` still contributes them; scripts that read
``common.time_left()`` skip what would not fit their limit). The combined table (benchmark,
figure, value, unit, ratio, what the ratio compares against, note) is printed and written
atomically to ``--out`` (default ``benchmarks/results/cpu.md``, or ``gpu.md`` on a CUDA machine),
followed by each script's own full table.

``--quick`` sets ``OBLIVIATE_BENCH_QUICK=1`` for every script: the whole suite then finishes in
under 15 minutes on 2 CPU cores (each script also gets a wall-clock limit, ``--timeout``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEADLINE_ENV, PARTIAL_ENV, QUICK_ENV, RESULTS_DIR, format_table  # noqa: E402

#: name → (script, quick time limit in seconds, full time limit)
SUITE: dict[str, tuple[str, int, int]] = {
    "train_throughput": ("train_throughput.py", 360, 1800),
    "reference_cache": ("reference_cache.py", 120, 900),
    "eval_throughput": ("eval_throughput.py", 180, 900),
    "merge_memory": ("merge_memory.py", 120, 900),
    "swd_overhead": ("swd_overhead.py", 120, 900),
}
SUMMARY_HEADERS = ["benchmark", "figure", "value", "unit", "ratio", "ratio_vs", "note"]
_VALUE_KEYS = ("value", "tokens/s", "seconds", "peak_mb", "time_s")


def _summary_rows(name: str, rows: list[dict]) -> list[dict]:
    """Map a script's rows onto the combined columns; rows without ``figure`` keep all their cells in ``note``."""
    out = []
    for r in rows:
        if "figure" in r:
            out.append({"benchmark": name, **{k: r.get(k) for k in SUMMARY_HEADERS[1:]}})
        else:
            cells = ", ".join(f"{k}={_short(v)}" for k, v in r.items())
            out.append({"benchmark": name, "figure": "(row)", "note": cells})
    return out


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_one(name: str, script: Path, quick: bool, timeout: int, workdir: Path) -> dict:
    """Run one benchmark script in a subprocess; return ``{"status", "rows", "seconds", "peak_rss_mb", "log"}``."""
    if not script.is_file():
        return {"status": "missing", "rows": [], "seconds": 0.0, "peak_rss_mb": None, "log": f"{script} not found"}
    out_json = workdir / f"{name}.json"
    cmd = [sys.executable, str(HERE / "common.py"), "--run-script", str(script), "--json", str(out_json)]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if quick:
        env[QUICK_ENV] = "1"
    # scripts that read it stop starting new parts 15 s before the hard limit
    env[DEADLINE_ENV] = str(time.time() + max(timeout - 15, timeout * 0.8))
    partial = workdir / f"{name}.partial.json"
    env[PARTIAL_ENV] = str(partial)
    src = HERE.parent / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    # own process group, so that a time-out also ends the script's own subprocesses
    proc = subprocess.Popen(cmd, env=env, cwd=str(HERE.parent), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        rows = json.loads(partial.read_text()).get("rows", []) if partial.is_file() else []
        return {"status": f"timeout after {timeout} s" + (f" ({len(rows)} rows measured before)" if rows else ""),
                "rows": rows, "seconds": time.perf_counter() - t0, "peak_rss_mb": None, "log": log}
    seconds = time.perf_counter() - t0
    if code != 0 or not out_json.is_file():
        tail = [ln for ln in log.strip().splitlines() if ln.strip()][-1:] or [f"exit code {code}"]
        return {"status": f"failed (exit {code}): {tail[0][:160]}", "rows": [], "seconds": seconds,
                "peak_rss_mb": None, "log": log}
    payload = json.loads(out_json.read_text())
    return {"status": "ok", "rows": payload.get("rows", []), "seconds": seconds,
            "peak_rss_mb": payload.get("peak_rss_mb"), "log": log}


def machine_line() -> str:
    """One line describing the machine: CPU count, torch version, CUDA device if any."""
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, {dev}, "
            f"python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the selected benchmarks, print and write the combined table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small budgets (whole suite < 15 min on 2 cores)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SUITE)}")
    p.add_argument("--out", default=None, help="Markdown file to write (default benchmarks/results/cpu.md)")
    p.add_argument("--timeout", type=int, default=None, help="per-script limit in seconds (default per script)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.only.split(",") if n.strip()] or list(SUITE)
    bad = [n for n in names if n not in SUITE]
    if bad:
        p.error(f"--only: unknown benchmark(s) {bad}; allowed: {', '.join(SUITE)}")
    import torch

    out = Path(a.out) if a.out else RESULTS_DIR / ("gpu.md" if torch.cuda.is_available() else "cpu.md")
    t_start = time.perf_counter()
    combined: list[dict] = []
    sections: list[str] = []
    status_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="obl-bench-") as tmp:
        for name in names:
            script, t_quick, t_full = SUITE[name]
            limit = a.timeout or (t_quick if a.quick else t_full)
            print(f"== {name} (limit {limit} s) ...", file=sys.stderr, flush=True)
            res = run_one(name, HERE / script, a.quick, limit, Path(tmp))
            print(f"== {name}: {res['status']} in {res['seconds']:.0f} s", file=sys.stderr, flush=True)
            status_rows.append({"benchmark": name, "status": res["status"], "seconds": res["seconds"],
                                "peak RSS (MiB)": res["peak_rss_mb"]})
            if res["status"] != "ok" and not res["rows"]:
                combined.append({"benchmark": name, "figure": "(not measured)", "note": res["status"]})
                continue
            if res["status"] != "ok":
                combined.append({"benchmark": name, "figure": "(incomplete)", "note": res["status"]})
            combined.extend(_summary_rows(name, res["rows"]))
            sections.append(f"### {name}\n\n{format_table(res['rows']) if res['rows'] else '(no rows)'}")
    total = time.perf_counter() - t_start
    header = (f"# obliviate benchmark results ({'quick' if a.quick else 'full'} run)\n\n"
              f"Machine: {machine_line()}. Suite wall time {total:.0f} s, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n")
    text = (header + "\n## Summary\n\n" + format_table(combined, SUMMARY_HEADERS) + "\n## Runs\n\n"
            + format_table(status_rows) + "\n## Per-benchmark tables\n\n" + "\n".join(sections))
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    os.replace(tmp_out, out)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
