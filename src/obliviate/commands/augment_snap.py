"""SNAP data: negative instructions + obliterated responses, hard-retaining QA, dedup, split.

``obliviate augment snap --target NAME --out DIR [...]`` (see :mod:`obliviate.augment.snap`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..augment.snap import NEGATIVE_CATEGORIES, PAPER_SETTINGS, RETAIN_CATEGORIES, SnapAugmentConfig
from ._args import add_request_arguments

DEFAULT_GENERATOR = "transformers:smollm2-135m-instruct"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``augment snap`` options to ``p``."""
    p.add_argument("--target", required=True, help="the entity to forget, e.g. 'Peter Parker'")
    p.add_argument("--alias", action="append", default=[], metavar="NAME",
                   help="another name of the target (e.g. Spider-Man); retaining questions naming it are dropped")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    g = p.add_argument_group("generator")
    g.add_argument("--generator", default=None, metavar="SPEC",
                   help="transformers:<model> | openai:<base_url>#<model> | vllm:<model> "
                        f"(default {DEFAULT_GENERATOR})")
    g.add_argument("--model", default=None, metavar="M",
                   help="shorthand for --generator transformers:M (a hub id, folder, GGUF or the embedded default)")
    g.add_argument("--answer-generator", default=None, metavar="SPEC",
                   help="generator of the hard-retaining answers (default: --generator); e.g. the model being "
                        "unlearned, greedy, beside --generator templates (which cannot answer questions)")
    add_request_arguments(g)
    g.add_argument("--cache-dir", type=Path, default=None, help="generation cache (default OUT/cache)")
    g.add_argument("--no-cache", action="store_true", help="do not cache generations (no resume)")
    g.add_argument("--question-max-new-tokens", type=int, default=1024)
    g.add_argument("--answer-max-new-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for question lists")
    g.add_argument("--answer-temperature", type=float, default=0.0, help="temperature for responses (0 = greedy)")
    g.add_argument("--few-shot", type=int, default=0, metavar="N",
                   help="put N hand-written demonstrations (obliviate/prompts/few_shot.json, at most 3) before each "
                        "Appendix E obliterated-response prompt, which stays verbatim at the end: a deviation from "
                        "the paper for weak local generators, recorded in the manifest and report (default 0)")
    q = p.add_argument_group("questions")
    q.add_argument("--categories", nargs="+", default=list(NEGATIVE_CATEGORIES), choices=NEGATIVE_CATEGORIES,
                   metavar="CAT", help=f"negative-instruction categories (default all: {', '.join(NEGATIVE_CATEGORIES)})")
    q.add_argument("--calls-per-category", type=int, default=10,
                   help="generator calls per category in one chat (paper: 10; each asks for 30 questions)")
    q.add_argument("--more-prompt", default=None, help="the follow-up user turn (default: 'Generate 30 more questions.')")
    q.add_argument("--threshold", type=float, default=0.75, help="near-duplicate cosine threshold (paper: 0.75)")
    q.add_argument("--sentence-model", default=None, help="sentence-transformers model (default all-MiniLM-L6-v2)")
    r = p.add_argument_group("hard-retaining data")
    r.add_argument("--paper-setting", choices=tuple(PAPER_SETTINGS), default=None,
                   help="one of SNAP's two data settings for the options left at their defaults: marvel (§4.1-4.7, "
                        "a Marvel character: Table 7 retaining prompts) or real-person (§4.8, Bill Gates: top-10 "
                        "related individuals and organisations)")
    r.add_argument("--retain-mode", choices=("related", "marvel"), default="related",
                   help="related: questions about related entities (--related, or top-k from the generator; SNAP "
                        "§4.8); marvel: the paper's Table 7 retaining prompts (Marvel series except the target; "
                        "SNAP §4.1-4.7)")
    r.add_argument("--related", nargs="+", default=[], metavar="NAME", help="related entities to retain")
    r.add_argument("--k-related", type=int, default=10,
                   help="ask the generator for the top-k related individuals and k organisations "
                        "(default 10, as SNAP §4.8 / Appendix C)")
    r.add_argument("--retain-categories", nargs="+", default=list(RETAIN_CATEGORIES), choices=RETAIN_CATEGORIES,
                   metavar="CAT")
    r.add_argument("--retain-calls", type=int, default=1, help="calls per (related entity, category)")
    r.add_argument("--fallback-response", default=None, metavar="TEXT",
                   help="obliterated response to use where the generator's is degenerate or not a refusal "
                        "(weak local generators), instead of dropping the question")
    r.add_argument("--no-refusal-check", action="store_true",
                   help="keep obliterated responses that are not refusals (and retaining answers that are)")
    s = p.add_argument_group("split")
    s.add_argument("--train-size", type=int, default=100, help="training examples, proportional per category (paper: 100)")
    s.add_argument("--retain-train-size", type=int, default=None, help="default: --train-size")
    s.add_argument("--train-per-category", type=int, default=None, help="instead of --train-size: N per category")
    s.add_argument("--seed", type=int, default=0)


def config_from_args(args: argparse.Namespace) -> SnapAugmentConfig:
    """Translate parsed CLI options into a validated :class:`SnapAugmentConfig`."""
    cfg = SnapAugmentConfig(
        target=args.target, aliases=list(args.alias), categories=list(args.categories),
        calls_per_category=args.calls_per_category, retain_mode=args.retain_mode, related=list(args.related),
        k_related=args.k_related, retain_categories=list(args.retain_categories), retain_calls=args.retain_calls,
        train_size=args.train_size, retain_train_size=args.retain_train_size,
        train_per_category=args.train_per_category, threshold=args.threshold, sentence_model=args.sentence_model,
        question_max_new_tokens=args.question_max_new_tokens, answer_max_new_tokens=args.answer_max_new_tokens,
        question_temperature=args.temperature, answer_temperature=args.answer_temperature, seed=args.seed,
        check_refusals=not args.no_refusal_check, fallback_response=args.fallback_response,
        paper_setting=args.paper_setting, few_shot=args.few_shot)
    if args.more_prompt:
        cfg.more_prompt = args.more_prompt
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run the SNAP augmentation and print the per-file counts."""
    from ..augment.snap import OUTPUT_FILES, augment_snap
    from ..config import ConfigError
    from ..generate.factory import make_generator, parse_generator_spec
    from ..io import check_outputs_do_not_replace_inputs
    from ._args import REQUEST_OPTIONS, apply_request_arguments

    cfg = config_from_args(args)
    if args.generator and args.model:
        raise ConfigError("give either --generator or --model, not both")
    spec = args.generator or (f"transformers:{args.model}" if args.model else DEFAULT_GENERATOR)
    gcfgs = [parse_generator_spec(spec)]
    if getattr(args, "answer_generator", None):
        gcfgs.append(parse_generator_spec(args.answer_generator))
    if any(getattr(args, o, None) is not None for o in REQUEST_OPTIONS) and not any(c.backend == "openai" for c in gcfgs):
        apply_request_arguments(gcfgs[0], args)  # raises: the options need an openai generator
    for c in gcfgs:
        if c.backend == "openai":
            apply_request_arguments(c, args)
    inputs = [cfg.sentence_model] + [c.model for c in gcfgs if c.backend != "openai"]
    inputs += [v for c in gcfgs for k, v in c.engine_kwargs.items() if k in ("bank", "entities")]
    check_outputs_do_not_replace_inputs(inputs, [args.out / n for n in OUTPUT_FILES])
    cache_dir = None if args.no_cache else (args.cache_dir or args.out / "cache")
    gen = make_generator(gcfgs[0], cache_dir=cache_dir, progress=True)
    answer_gen = make_generator(gcfgs[1], cache_dir=cache_dir, progress=True) if len(gcfgs) > 1 else None
    summary = augment_snap(gen, cfg, args.out, progress=True, generator_spec=spec, answer_generator=answer_gen,
                           answer_generator_spec=getattr(args, "answer_generator", None))
    print(json.dumps({"out": str(args.out), "counts": summary["counts"], "related": summary["related"],
                      "generation": summary["generation"], "seconds": summary["seconds"]}, indent=2))
    counts = summary["counts"]
    if not any(counts.values()):
        from ..data.records import DataError

        raise DataError(f"every output file in {args.out} is empty: the generator gave no usable question or "
                        f"response (see {args.out / 'augment_report.md'}); try a stronger --generator, "
                        "--fallback-response TEXT or --no-refusal-check")
    empty = [k for k in ("forget_train", "retain_train") if not counts.get(k)]
    if empty:
        import sys

        print(f"warning: {', '.join(f'{k}.jsonl' for k in empty)} in {args.out} is empty; training on it will "
              "fail (see augment_report.md)", file=sys.stderr)
    return 0
