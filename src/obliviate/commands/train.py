"""``obliviate train``: run one unlearning method (a preset plus overrides) and save the model."""

from __future__ import annotations

import os
import sys

def register(sub) -> None:
    p = sub.add_parser(
        "train", help="unlearn with one method (ulmr, snap, ga, graddiff, kl, dpo, idkdpo, npo, npo_rt, ...)",
        description="Train a model with an unlearning method's loss terms. The method's preset gives the defaults; "
                    "--config (YAML of TrainConfig fields) and --set key=value override them. Data files: JSON, "
                    "JSONL, CSV or a saved HF dataset with question/answer fields, or tofu:<split> "
                    "(e.g. tofu:forget01, tofu:full[0:4]) or rwku:<target>[:<split>]. Writes DIR/model (with a "
                    "README.md model card), DIR/train_log.jsonl, DIR/config.yaml, DIR/manifest.json.")
    p.add_argument("--method", help="method preset name (see --list)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="hub id, HF folder, .gguf file or the embedded default (default: %(default)s)")
    p.add_argument("--forget", help="forget data (for ULMR/SNAP: the augmented negative / obliterated pairs)")
    p.add_argument("--retain", help="retain data (GradDiff, KL, IdkDPO, NPO+RT, SNAP, Retraining)")
    p.add_argument("--preferred", help="DPO: preferred responses paired row by row with --forget "
                                       "(default: each record's 'preferred' field, else \"I don't know\")")
    p.add_argument("--reference", help="frozen reference model (default: the input model before training)")
    p.add_argument("--config", help="YAML file of TrainConfig fields (a copied preset works)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lr=1e-5 --set lora.r=8 --set term_weights.retain_nll=0.5")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter (r=16, alpha=32, all linear layers)")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in DIR/checkpoints")
    p.add_argument("--tofu-source", default=None,
                   help="where tofu:<split> reads TOFU: hub id or a local folder (default: $OBLIVIATE_TOFU, else "
                        "../shared/data/tofu when present, else locuslab/TOFU)")
    p.add_argument("--rwku-source", default=None,
                   help="where rwku:<target> reads RWKU (default: $OBLIVIATE_RWKU, ../shared/data/rwku, jinzhuoran/RWKU)")
    p.add_argument("--allow-eval-probes", action="store_true",
                   help="allow training on an RWKU evaluation split named explicitly (e.g. rwku:<target>:forget_level2); "
                        "refused otherwise, since it trains on the test set")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument("--show-preset", metavar="NAME", help="print a method's preset YAML (to copy and edit) and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import ConfigError
    from ..data.records import DataError
    from ..data.sources import resolve_records
    from ..methods import get_method, method_names, preset_path

    if args.list:
        for name in method_names():
            m = get_method(name)
            print(f"{name:10s} {m.get('description', '')}")
        return 0
    if args.show_preset:
        sys.stdout.write(preset_path(args.show_preset).read_text(encoding="utf-8"))
        return 0

    from ..methods import build_terms, streams_needed
    from ..train import check_output_dir, resolve_train_config

    overrides = list(args.overrides)
    if args.lora:
        overrides.insert(0, "lora={}")
    cfg = resolve_train_config(args.method, args.config, overrides)
    if not cfg.train:
        raise ConfigError(f"method {cfg.method!r} needs no training; pass its system prompt to the evaluation "
                          f"instead:\n  {cfg.system_prompt}")
    if not args.out:
        raise ConfigError("--out: a run directory is required")
    terms, _ = build_terms(cfg)
    needed = streams_needed(terms)
    files = {"forget": args.forget, "retain": args.retain, "forget_pref": args.preferred}
    for s in needed:
        if s == "forget_pref":
            continue
        if not files.get(s):
            raise ConfigError(f"--{s}: method {cfg.method!r} needs {s} data (its terms: "
                              f"{', '.join(t.name for t in terms)})")
    check_output_dir(args.out, args.model, args.reference)
    from pathlib import Path

    from ..io import check_outputs_do_not_replace_inputs

    check_outputs_do_not_replace_inputs(  # e.g. --config OUT/config.yaml or --forget OUT/train_log.jsonl
        [args.config, *files.values()],
        [Path(args.out) / n for n in ("model", "config.yaml", "train_log.jsonl", "manifest.json", "checkpoints")])
    streams = {}
    for s, src in files.items():
        if src and (s in needed):
            streams[s] = resolve_records(src, tofu_source=args.tofu_source, rwku_source=args.rwku_source,
                                         allow_eval_probes=args.allow_eval_probes)
            if not streams[s]:
                raise DataError(f"{src}: no records", source=src)
    unused = [f"--{s}" for s, src in files.items() if src and s not in needed]
    if unused:
        print(f"note: {', '.join(unused)} not used by method {cfg.method!r}", file=sys.stderr)

    from ..io import read_jsonl
    from ..train import train_unlearning

    print(f"method {cfg.method}: " + " + ".join(f"{t.weight:g}·{t.name}" for t in terms)
          + (f" + {cfg.regularizer_weight:g}·{cfg.regularizer}" if cfg.regularizer else ""))
    print("data: " + ", ".join(f"{s}={len(r)}" for s, r in streams.items()) + f"; model: {args.model}"
          + (" (LoRA)" if cfg.lora is not None else ""))
    inputs = {s: src for s, src in files.items() if src and s in needed}
    final = train_unlearning(args.model, None, streams, cfg, args.out, reference=args.reference,
                             resume_from_checkpoint=True if args.resume else None, inputs=inputs)
    logs = [r for r in read_jsonl(os.path.join(args.out, "train_log.jsonl")) if "loss" in r]
    if logs:
        first, last = logs[0], logs[-1]
        keys = [k for k in last if k not in ("step", "epoch", "grad_norm", "learning_rate")]
        print("step {:>5} -> {:>5}: ".format(first["step"], last["step"])
              + ", ".join(f"{k} {first.get(k, float('nan')):.4f} -> {last[k]:.4f}" for k in keys))
    print(f"saved {final}")
    return 0
