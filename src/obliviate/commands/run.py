"""``obliviate run CONFIG.yaml``: the whole pipeline (augment → train → merge → evaluate) in one run folder."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a whole unlearning pipeline from a YAML config (resumable run directory)",
        description="Run augment → train → merge → evaluate as the method needs (ULMR: all four; other methods "
                    "skip augment/merge; Prompting skips training). The config is validated before any heavy "
                    "work; a finished stage in the run directory is reused only when it was made with the same settings and "
                    "inputs (its stage.json), so rerunning resumes; otherwise the run is refused (or --force). "
                    "See configs/ulmr.yaml.")
    p.add_argument("config", help="run config YAML (fields: method, model, out, seed, generator, data, augment, "
                                  "train, merge, eval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set out=runs/x --set merge.alpha=[0.3,0.5] --set train.epochs=1")
    p.add_argument("--out", help="run directory (same as --set out=DIR)")
    p.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved and exit")
    p.add_argument("--force", action="store_true",
                   help="redo the finished stages whose recorded settings or inputs differ from the config (and "
                        "the stages after them); without it such a run folder is refused, naming the fields")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    import yaml

    from ..config import apply_overrides, read_yaml, to_dict
    from ..pipeline import load_run_config, run_pipeline

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    raw = apply_overrides(read_yaml(args.config), overrides)
    if "targets" in raw:  # a SNAP-style run over named targets (configs/snap.yaml)
        return _run_targets(raw, args)
    cfg = load_run_config(args.config, overrides)
    if args.dry_run:
        from ..io import redact

        print(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False, allow_unicode=True), end="")
        print(f"# train (resolved from preset {cfg.method!r}):")
        print(yaml.safe_dump(to_dict(cfg.train_config()), sort_keys=False, allow_unicode=True), end="")
        return 0
    t = time.time()
    res = run_pipeline(cfg, progress=not args.no_progress, force=args.force)
    for stage, status in res["stages"].items():
        print(f"{stage:9s} {status}")
    for label, m in res["results"].items():
        vals = "  ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))
        print(f"{label:18s} {vals}")
    print(f"run directory: {cfg.out} ({time.time() - t:.1f}s; report.md, metrics.json, manifest.json)")
    return 0


def _run_targets(raw: dict, args) -> int:
    """Dispatch a config with ``targets`` (SNAP / Euclidean / Fisher, single, batch or sequential)."""
    import time

    import yaml

    from ..config import from_dict, to_dict
    from ..sequential import SnapRunConfig, run_snap_pipeline

    out = raw.pop("out", None) or f"runs/{raw.get('method', 'snap')}"
    cfg = from_dict(SnapRunConfig, raw)
    cfg.validate()
    cfg.parsed_targets()
    if args.dry_run:
        print(yaml.safe_dump({"out": out, **to_dict(cfg)}, sort_keys=False, allow_unicode=True), end="")
        return 0
    t = time.time()
    summary = run_snap_pipeline(cfg, out, force=getattr(args, "force", False))
    final = summary.get("metrics") or {}
    vals = "  ".join(f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float))
    if vals:
        print(vals)
    print(f"run directory: {out} ({time.time() - t:.1f}s; summary.md, metrics.json, manifest.json)")
    return 0
