"""``obliviate merge``: parameter averaging θa = α·θ + (1 − α)·θ' (ULMR §3.3), streamed."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "merge", help="average an original and a fine-tuned model: θa = α·θ + (1−α)·θ' (α sweeps, LoRA)",
        description="Write θa = α·θ + (1 − α)·θ', where θ is the ORIGINAL model (--base) and θ' its "
                    "fine-tuned version (--tuned, a full model folder or a peft LoRA adapter). α is the weight "
                    "of the original model: α=1 gives back --base, α=0 gives --tuned. Tensors are streamed "
                    "one at a time from the safetensors shards, so memory stays at about one tensor pair.")
    p.add_argument("--base", required=True, help="the original model θ (folder, hub id, or 'smollm2-135m-instruct')")
    p.add_argument("--tuned", required=True, help="the fine-tuned model θ' (folder) or a LoRA adapter folder")
    p.add_argument("--alpha", required=True,
                   help="weight of the original model in [0, 1]; a comma list (0.2,0.4,0.6) writes a sweep "
                        "into OUT/alpha_<α>/")
    p.add_argument("--out", required=True, help="output folder (must not be --base or --tuned)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--scaled-adapter", action="store_true",
                   help="with a LoRA --tuned: write the adapter with its delta scaled by (1 − α) instead of a "
                        "full model (load it on --base with peft)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..merge import merge_models, parse_alphas, scale_adapter

    t = time.time()
    alphas = parse_alphas(args.alpha)  # MergeError is a ConfigError: the CLI prints it and exits 2
    if args.scaled_adapter:
        outs = []
        for a in alphas:
            target = Path(args.out) / f"alpha_{a:g}" if len(alphas) > 1 else Path(args.out)
            outs.append(scale_adapter(args.tuned, a, target, overwrite=args.overwrite))
    else:
        res = merge_models(args.base, args.tuned, alphas if len(alphas) > 1 else alphas[0], args.out,
                           overwrite=args.overwrite, progress=not args.no_progress)
        outs = res if isinstance(res, list) else [res]
    for a, o in zip(alphas, outs):
        print(f"α={a:g}: wrote {o}")
    print(f"done in {time.time() - t:.1f}s")
    return 0
