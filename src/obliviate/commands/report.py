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
    p.add_argument("--layout", default="auto", choices=["auto", "tofu", "rwku", "snap", "lm-eval"],
                   help="table layout (auto: every layout whose benchmark the runs contain)")
    p.add_argument("--names", default=None, metavar="A,B,...",
                   help="comma-separated row names, one per RUN_DIR (default: method from the manifest, or folder name)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..report import build_report

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and len(names) != len(args.runs):
        raise ConfigError(f"--names has {len(names)} names for {len(args.runs)} run folders")
    try:
        rep = build_report(args.runs, args.out, layout=args.layout, names=names, plots=not args.no_plots)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    for lay, t in rep["tables"].items():
        from ..report import table_markdown

        print(table_markdown({**t, "layout": lay}))
    print(f"wrote {', '.join(rep['files'])} to {args.out}")
    return 0
