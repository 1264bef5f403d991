"""Draw the pictures of the committed result folders: the forget-vs-utility frontier of every folder
that compares methods, and the refusal detector's held-out accuracy / recall per mode and round.

    python benchmarks/plot_frontiers.py

Re-plots from what is committed (``report.json`` of ``obliviate report``, the tables' JSON of
``benchmarks/reproduce.py``), so no model or run folder is needed: writes
``benchmarks/results/tofu_comparison/tofu_frontier.png`` and
``benchmarks/results/reproduce/tofu/frontier_<split>.png`` (also written by reproduce.py itself) and
``benchmarks/results/refusal_detector/heldout.png`` (from ``results_v*.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from obliviate.report import plot_frontier, runs_from_report  # noqa: E402
from reproduce import plot_tofu_frontier  # noqa: E402

RESULTS = HERE / "results"


def plot_detector_rounds(folder: Path) -> Path | None:
    """Grouped bars: held-out accuracy and recall of each detector mode, one group per held-out round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = sorted(folder.glob("results_v*.json"), key=lambda p: int(p.stem.split("_v")[1]))
    data = {p.stem.split("_")[1]: json.loads(p.read_text()).get("heldout") or {} for p in rounds}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    modes = [m for m in ("rules", "embedding", "rules+embedding", "learned") if any(m in v for v in data.values())]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    width = 0.8 / len(modes)
    for ax, metric in zip(axes, ("accuracy", "recall")):
        for i, m in enumerate(modes):
            xs = [j + i * width for j in range(len(data))]
            ys = [(v.get(m) or {}).get(metric, 0.0) for v in data.values()]
            ax.bar(xs, ys, width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(data))], [f"held-out {k}" for k in data])
        ax.axhline(0.95, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"held-out {metric} (dashed: the 0.95 target)", fontsize=9)
        ax.set_ylim(0, 1.3)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    out = folder / "heldout.png"
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def main() -> int:
    written = []
    rep = RESULTS / "tofu_comparison" / "report.json"
    if rep.is_file() and plot_frontier("tofu", runs_from_report(rep), rep.parent / "tofu_frontier.png"):
        written.append(rep.parent / "tofu_frontier.png")
    for table in sorted((RESULTS / "reproduce" / "tofu").glob("tofu_*.json")):
        split = table.stem.split("_", 1)[1]
        out = table.parent / f"frontier_{split}.png"
        plot_tofu_frontier(json.loads(table.read_text())["metrics"], out)
        written.append(out)
    det = plot_detector_rounds(RESULTS / "refusal_detector")
    if det:
        written.append(det)
    for p in written:
        print(f"wrote {p.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
