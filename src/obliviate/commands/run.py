"""``obliviate run CONFIG.yaml``: forget requests × a method × augment → train → merge → evaluate →
audit, in single, batch or sequential mode, in one resumable run folder (:mod:`obliviate.runner`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a whole unlearning job from a YAML config (resumable run directory)",
        description="Run forget requests (QA sets or target names) through augment → train → merge → evaluate "
                    "→ audit with any method, in mode single, batch or sequential; preset: ulmr / snap fills a "
                    "paper's defaults. The config is validated before any heavy work; a finished stage in the "
                    "run directory is reused only when it was made with the same settings and inputs (its "
                    "stage.json), so rerunning resumes; otherwise the run is refused (or --force). Configs in "
                    "the old schema (data.forget, targets) are converted (--convert prints them in the new "
                    "one). See configs/ulmr.yaml and configs/snap.yaml.")
    p.add_argument("config", help="run config YAML (fields: preset, method, model, out, seed, mode, requests, "
                                  "generator, data, augment, train, merge, eval, retain_data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set out=runs/x --set merge.alpha=[0.3,0.5] --set mode=batch")
    p.add_argument("--out", help="run directory (same as --set out=DIR)")
    p.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved and exit")
    p.add_argument("--convert", action="store_true",
                   help="print the config in the one run schema (converting an old one) and exit")
    p.add_argument("--force", action="store_true",
                   help="redo the finished stages whose recorded settings or inputs differ from the config (and "
                        "the stages after them); without it such a run folder is refused, naming the fields")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    import yaml

    from ..config import apply_overrides, read_yaml, to_dict
    from ..io import redact
    from ..runconfig import convert_legacy_config, load_run_config
    from ..runner import run as run_job

    raw = read_yaml(args.config)
    if args.convert:
        new = convert_legacy_config(apply_overrides(raw, list(args.overrides)))
        print(yaml.safe_dump(redact(new), sort_keys=False, allow_unicode=True), end="")
        return 0
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    if "out" not in raw and not args.out and not any(o.startswith("out=") for o in args.overrides):
        overrides.append(f"out=runs/{raw.get('preset') or raw.get('method') or 'run'}")
    cfg = load_run_config(args.config, overrides)
    if args.dry_run:
        print(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False, allow_unicode=True), end="")
        print(f"# train (resolved from preset {cfg.method!r}):")
        print(yaml.safe_dump(to_dict(cfg.train_config()), sort_keys=False, allow_unicode=True), end="")
        return 0
    t = time.time()
    res = run_job(cfg, progress=not args.no_progress, force=args.force)
    for stage, status in res["stages"].items():
        print(f"{stage:9s} {status}")
    if cfg.kind == "target":
        final = res["metrics"] or {}
        vals = "  ".join(f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float) and "_ci_" not in k)
        if vals:
            print(vals)
    else:
        for label, m in res["results"].items():
            vals = "  ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))
            print(f"{label:18s} {vals}")
    print(f"run directory: {cfg.out} ({time.time() - t:.1f}s; summary.md, metrics.json, manifest.json)")
    return 0
