"""ULMR rewrites + negative responses (Tables 1 and 2) for a forget set."""

from __future__ import annotations

import os

from ._args import add_request_arguments


def add_arguments(p) -> None:
    """Options of ``obliviate augment ulmr``."""
    p.description = ("ULMR §3.1: rewrite every forget instruction n times with the Table 1 prompt and generate a "
                     "negative response for each rewrite with the Table 2 prompt (both verbatim). Degenerate "
                     "generations are regenerated up to --max-retries times, then dropped and counted. Writes "
                     "OUT/forget_augmented.jsonl, OUT/augment_report.md, OUT/augment_stats.json and "
                     "OUT/manifest.json; generations are cached in OUT/cache so a rerun resumes.")
    p.add_argument("--forget", required=True,
                   help="forget QA pairs: a JSON/JSONL/CSV file, a saved HF dataset, or tofu:<split> (e.g. tofu:forget01); "
                        "RWKU's probes (rwku:<target>:forget_level2) only with --allow-eval-probes")
    p.add_argument("--allow-eval-probes", action="store_true",
                   help="allow an RWKU evaluation split named explicitly as --forget (trains on the test set; warns)")
    p.add_argument("--rwku-source", default=None,
                   help="where rwku:<target> reads RWKU (default: $OBLIVIATE_RWKU, ../shared/data/rwku, jinzhuoran/RWKU)")
    p.add_argument("--filter", default="strict", choices=["none", "lenient", "strict"],
                   help="quality-filter strictness: none = the paper (only empty outputs rejected), lenient = structural "
                        "degeneracy only, strict = also answer leaks and non-instruction rewrites (default: %(default)s)")
    p.add_argument("--include-original", action="store_true",
                   help="also train on the original instruction x_i with its own negative response "
                        "(x_r = {x_1, x_2, x_i}, ULMR §3.1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="the model being unlearned (default generator, p_θ in the paper; default: %(default)s)")
    p.add_argument("--generator", default=None,
                   help="generator spec: transformers:<model>, openai:<base_url>#<model>, vllm:<model> "
                        "(default: transformers:<--model>, i.e. the model being unlearned)")
    add_request_arguments(p)
    p.add_argument("--tofu-source", default=None,
                   help="where tofu:<split> reads TOFU (hub id or folder; default: $OBLIVIATE_TOFU, ../shared/data/tofu "
                        "when present, else locuslab/TOFU)")
    p.add_argument("--n-rewrites", type=int, default=2, help="rewrites per instruction (paper: 2)")
    p.add_argument("--max-retries", type=int, default=3, help="regenerations of a degenerate output before dropping it")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the rewrites")
    p.add_argument("--negative-temperature", type=float, default=0.0, help="temperature of the negative responses "
                                                                          "(0 = greedy)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="token budget of a negative response")
    p.add_argument("--rewrite-max-new-tokens", type=int, default=64, help="token budget of a rewrite")
    p.add_argument("--answer-threshold", type=float, default=0.5,
                   help="reject a negative response whose content-word ROUGE-L recall of the original answer is >= this")
    p.add_argument("--allow-statement-rewrites", action="store_true",
                   help="keep rewrites that are statements rather than questions/instructions (turns off the "
                        "not_instruction check; small generators often answer instead of rewriting)")
    p.add_argument("--few-shot", type=int, default=0, metavar="N",
                   help="put N hand-written demonstrations (obliviate/prompts/few_shot.json, at most 3) before the "
                        "Table 1 and Table 2 prompts, which stay verbatim at the end: a deviation from the paper for "
                        "weak local generators, recorded in the stats, report and manifest (default 0: verbatim)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size (transformers backend)")
    p.add_argument("--limit", type=int, default=None, help="only the first N forget pairs")
    p.add_argument("--cache-dir", default=None, help="generation cache folder (default: OUT/cache)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Run the augmentation and write the outputs (see :func:`obliviate.augment.ulmr.augment_ulmr`)."""
    import time
    from pathlib import Path

    from ..augment.ulmr import UlmrAugmentConfig, augment_ulmr, render_report
    from ..config import ConfigError
    from ..generate.factory import make_generator
    from ..io import Manifest, atomic_write_json, atomic_write_jsonl, atomic_write_text, check_outputs_do_not_replace_inputs
    from ..pipeline import resolve_records
    from ._args import generator_config_from_args

    t0 = time.time()
    cfg = UlmrAugmentConfig(n_rewrites=args.n_rewrites, max_retries=args.max_retries, temperature=args.temperature,
                            negative_temperature=args.negative_temperature, max_new_tokens=args.max_new_tokens,
                            rewrite_max_new_tokens=args.rewrite_max_new_tokens, seed=args.seed,
                            answer_threshold=args.answer_threshold, limit=args.limit,
                            require_instruction=not args.allow_statement_rewrites, filter=args.filter,
                            include_original=args.include_original, few_shot=args.few_shot)
    cfg.validate()
    out = Path(args.out)
    spec, gcfg = generator_config_from_args(args)
    outputs = [out / n for n in ("forget_augmented.jsonl", "augment_stats.json", "augment_report.md", "manifest.json")]
    check_outputs_do_not_replace_inputs([args.forget, args.tofu_source], outputs)
    records = resolve_records(args.forget, tofu_source=args.tofu_source, rwku_source=args.rwku_source,
                              allow_eval_probes=args.allow_eval_probes)  # validate data before loading a model
    from ..data.records import DataError, is_text_record

    if any(is_text_record(r) for r in records):
        raise DataError(f"--forget {args.forget}: plain-text records (e.g. RWKU's passage corpus) have no instruction "
                        "to rewrite; ULMR needs question/answer pairs (for RWKU: questions generated with "
                        "`obliviate augment rwku-rt`, or GA / NPO on the passages)")
    out.mkdir(parents=True, exist_ok=True)
    m = Manifest(out, "augment ulmr", config={**vars(args), "func": None, "generator_spec": spec,
                                              "augment": cfg.__dict__}, seed=args.seed)
    m.add_input("forget", args.forget if os.path.exists(args.forget) else None)  # hashed before any output
    if not os.path.exists(args.forget):
        m.data["inputs"]["forget"] = {"spec": args.forget}
    if cfg.few_shot:
        from ..augment.few_shot import packaged_file

        m.add_input("few_shot_demonstrations", packaged_file())
    gen = make_generator(gcfg, cache_dir=args.cache_dir or out / "cache", progress=not args.no_progress)
    rows, stats = augment_ulmr(records, gen, config=cfg, progress=not args.no_progress)
    if not rows:
        raise ConfigError(f"every generation was degenerate ({stats['dropped_reasons']}); nothing written. "
                          "Try another --generator or a larger --max-retries.")
    atomic_write_jsonl(out / "forget_augmented.jsonl", rows)
    atomic_write_json(out / "augment_stats.json", stats)
    atomic_write_text(out / "augment_report.md", render_report(rows, stats))
    for name in ("forget_augmented.jsonl", "augment_report.md", "augment_stats.json"):
        m.add_output(out / name)
    m.write(stats={k: stats[k] for k in ("sources", "requested", "kept", "regenerated", "dropped", "dropped_reasons",
                                         "filter", "include_original", "originals", "prompts") if k in stats},
            cache=stats.get("cache"))
    print(f"kept {stats['kept']} of {stats['requested']} pairs ({stats['regenerated']} regenerated, "
          f"{stats['dropped']} dropped{': ' + str(stats['dropped_reasons']) if stats['dropped'] else ''})")
    print(f"wrote {out / 'forget_augmented.jsonl'} and {out / 'augment_report.md'} in {time.time() - t0:.1f}s")
    return 0
