"""``obliviate report RUN_DIR... --out DIR``: the papers' tables (Markdown, CSV, JSON) and plots."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="tables (ULMR Table 3/4, SNAP Table 1) and plots from evaluation runs",
                       description="Collect metrics.json files from run folders into the papers' result tables "
                                   "(Markdown + CSV + report.json) and PNG plots.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders holding metrics.json (directly or in sub-folders); one table row each")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, <layout>.md/.csv, PNGs, report.json")
    p.add_argument("--layout", default="auto", choices=["auto", "tofu", "rwku", "snap", "snap-table2", "lm-eval", "audit"],
                   help="table layout (auto: every layout whose benchmark the runs contain)")
    p.add_argument("--names", default=None, metavar="A,B,...",
                   help="comma-separated row names, one per RUN_DIR (default: method from the manifest, or folder name)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..io import check_outputs_do_not_replace_inputs
    from ..report import build_report

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and len(names) != len(args.runs):
        raise ConfigError(f"--names has {len(names)} names for {len(args.runs)} run folders")
    check_outputs_do_not_replace_inputs(_run_files(args.runs), _report_outputs(args.out))
    try:
        rep = build_report(args.runs, args.out, layout=args.layout, names=names, plots=not args.no_plots)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    for lay, t in rep["tables"].items():
        from ..report import table_markdown

        print(table_markdown({**t, "layout": lay}))
    print(f"wrote {', '.join(rep['files'])} to {args.out}")
    return 0


def _run_files(runs) -> list:
    """The files of every evaluation a report reads: those directly in each RUN_DIR and in every folder
    below it (4 levels) holding a ``metrics.json`` or ``audit.json`` (its report.md and manifest included)."""
    from pathlib import Path

    files = []
    for r in runs:
        root = Path(r).expanduser()
        if not root.is_dir():
            continue
        folders = {root} | {m.parent for pat in ("metrics.json", "audit.json") for m in root.rglob(pat)
                            if len(m.relative_to(root).parts) <= 4}
        files += [f for d in sorted(folders) for f in d.iterdir() if f.is_file()]
    return files


def _report_outputs(out) -> list:
    """Every file ``obliviate report --out OUT`` may write (report.md/json and each layout's table and plots)."""
    from pathlib import Path

    from ..report import LAYOUTS

    out = Path(out).expanduser()
    names = ["report.md", "report.json"]
    for lay in LAYOUTS:
        stem = lay.replace("-", "_")
        names += [f"{stem}.md", f"{stem}.csv", f"{stem}_bars.png", f"{stem}_alpha.png"]
    return [out / n for n in names]
