"""Peak memory and time of the streamed merge vs loading both models and averaging in memory.

Model: SmolLM2-135M-Instruct (the embedded default, fp32, 538 MB) as θ, and a perturbed copy of
it as θ'. Each approach runs in its own fresh subprocess, which reports its own peak RSS
(``VmHWM`` from ``/proc/self/status``, reset after the imports with ``clear_refs``; ``ru_maxrss``
is not used because a child inherits its parent's high-water mark across fork/exec). "Added" is
the peak minus the RSS just before the operation, i.e. what the approach itself needs.

    python benchmarks/merge_memory.py [--model smollm2-135m-instruct] [--alpha 0.5]

Prints a Markdown table and writes ``benchmarks/results/merge_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
mode, base, tuned, out, alpha = sys.argv[1:6]
alpha = float(alpha)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
import torch, transformers, safetensors  # the fixed import cost, same for every mode
from transformers import AutoModelForCausalLM
from obliviate import merge
rss_before = status("VmRSS")
try:  # reset the high-water mark so that it covers the operation only (Linux >= 4.0)
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
t = time.time()
if mode == "streamed":
    merge.merge_models(base, tuned, alpha, out, progress=False)
elif mode == "in_memory":
    a = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(tuned, dtype=torch.float32)
    pb = dict(b.named_parameters())
    with torch.no_grad():  # named_parameters lists a tied weight once
        for k, v in a.named_parameters():
            v.mul_(alpha).add_(pb[k], alpha=1 - alpha)
    a.save_pretrained(out)
elif mode == "imports":
    pass
print(json.dumps({"mode": mode, "seconds": time.time() - t, "rss_before_mb": rss_before,
                  "peak_rss_mb": status("VmHWM")}))
"""


def _child(mode: str, base: Path, tuned: Path, out: Path, alpha: float) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(base), str(tuned), str(out), str(alpha)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _make_tuned(base: Path, dest: Path) -> None:
    """θ' = θ + small noise, saved like a fine-tuned model (same config, tokenizer)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    g = torch.Generator().manual_seed(0)
    sd = load_file(str(base / "model.safetensors"))
    for k, v in sd.items():
        v.add_(torch.randn(v.shape, generator=g) * 1e-3)
    save_file(sd, str(dest / "model.safetensors"), metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    """Run the three subprocesses and print the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "merge_memory.json"))
    args = ap.parse_args(argv)
    from obliviate.merge import _resolve_folder

    base = _resolve_folder(args.model, "model")
    size_mb = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**20
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        tmp = Path(tmp)
        tuned = tmp / "tuned"
        _make_tuned(base, tuned)
        rows = [_child("streamed", base, tuned, tmp / "o1", args.alpha),
                _child("in_memory", base, tuned, tmp / "o2", args.alpha)]
        # both outputs must agree
        from safetensors.torch import load_file

        import torch

        a, b = load_file(str(tmp / "o1" / "model.safetensors")), load_file(str(tmp / "o2" / "model.safetensors"))
        agree = all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k in b)
    s, m = rows[0], rows[1]
    imp = s["rss_before_mb"]
    s["added"], m["added"] = s["peak_rss_mb"] - s["rss_before_mb"], m["peak_rss_mb"] - m["rss_before_mb"]
    result = {"model": args.model, "weights_mb": round(size_mb, 1), "alpha": args.alpha,
              "import_baseline_rss_mb": round(imp, 1),
              "streamed": {"seconds": round(s["seconds"], 2), "peak_rss_mb": round(s["peak_rss_mb"], 1),
                           "added_mb": round(s["added"], 1)},
              "in_memory": {"seconds": round(m["seconds"], 2), "peak_rss_mb": round(m["peak_rss_mb"], 1),
                            "added_mb": round(m["added"], 1)},
              "outputs_agree": agree,
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result["rss_ratio_in_memory_over_streamed"] = round(m["peak_rss_mb"] / s["peak_rss_mb"], 2)
    result["added_ratio_in_memory_over_streamed"] = round(m["added"] / max(s["added"], 1.0), 2)
    result["time_ratio_in_memory_over_streamed"] = round(m["seconds"] / max(s["seconds"], 1e-9), 2)
    print(f"model {args.model}: {size_mb:.0f} MB of weights, α={args.alpha}; "
          f"RSS after imports {imp:.0f} MB\n")
    print("| approach | time (s) | peak RSS (MB) | added by the merge (MB) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| streamed (obliviate merge) | {s['seconds']:.1f} | {s['peak_rss_mb']:.0f} | {s['added']:.0f} |")
    print(f"| load both + average + save | {m['seconds']:.1f} | {m['peak_rss_mb']:.0f} | {m['added']:.0f} |")
    print(f"\nin-memory / streamed: peak RSS {result['rss_ratio_in_memory_over_streamed']}x, memory added "
          f"{result['added_ratio_in_memory_over_streamed']}x, time {result['time_ratio_in_memory_over_streamed']}x; "
          f"outputs agree: {agree}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
