"""RWKU's rejection-tuning data: generated questions about a target, answered with refusals."""

from __future__ import annotations

from ._args import add_request_arguments


def add_arguments(p) -> None:
    """Options of ``obliviate augment rwku-rt``."""
    p.description = ("RWKU's rejection tuning (RT): ask the generator --n-questions times (sampled) for a question "
                     "about each --target, given its RWKU description, and pair the i-th question with refusal "
                     "i mod len(refusals). Never reads RWKU's evaluation probes. Writes OUT/forget_rt.jsonl (train it "
                     "with `obliviate train --method rt --forget OUT/forget_rt.jsonl`), OUT/rt_stats.json and "
                     "OUT/manifest.json; generations are cached in OUT/cache.")
    p.add_argument("--target", required=True, action="append",
                   help="RWKU target ('Stephen King' or '1_Stephen_King'); repeat for several targets")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rwku-source", default=None,
                   help="where RWKU is read (default: $OBLIVIATE_RWKU, ../shared/data/rwku, jinzhuoran/RWKU)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="the model being unlearned (default generator, as in RWKU; default: %(default)s)")
    p.add_argument("--generator", default=None,
                   help="generator spec: transformers:<model>, openai:<base_url>#<model>, vllm:<model> "
                        "(default: transformers:<--model>)")
    p.add_argument("--n-questions", type=int, default=300, help="questions per target (RWKU: 300)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=50, help="token budget of a question (RWKU: 50)")
    p.add_argument("--max-retries", type=int, default=3, help="regeneration rounds for empty (or duplicate) questions")
    p.add_argument("--dedup", action="store_true", help="regenerate repeated questions (RWKU keeps them)")
    p.add_argument("--refusals", default=None,
                   help="text file of refusal answers, one per line (default: TOFU's ten \"I don't know\" answers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size (transformers backend)")
    p.add_argument("--cache-dir", default=None, help="generation cache folder (default: OUT/cache)")
    p.add_argument("--no-progress", action="store_true")
    add_request_arguments(p)


def run(args) -> int:
    """Generate the RT set for every target (see :func:`obliviate.augment.rwku_rt.generate_rt_questions`)."""
    import time
    from pathlib import Path

    from ..augment.rwku_rt import RejectionTuningConfig, generate_rt_questions, load_target_intros, read_refusals
    from ..config import ConfigError
    from ..data.sources import default_rwku_source
    from ..generate.factory import make_generator
    from ..io import Manifest, atomic_write_json, atomic_write_jsonl, check_outputs_do_not_replace_inputs
    from ._args import generator_config_from_args

    t0 = time.time()
    cfg = RejectionTuningConfig(n_questions=args.n_questions, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, max_retries=args.max_retries, dedup=args.dedup,
                                seed=args.seed)
    cfg.validate()
    refusals = read_refusals(args.refusals) if args.refusals else None
    source = args.rwku_source or default_rwku_source()
    intros = load_target_intros(args.target, source)  # validate every target before loading a model
    spec, gcfg = generator_config_from_args(args)
    out = Path(args.out)
    outputs = [out / n for n in ("forget_rt.jsonl", "rt_stats.json", "manifest.json")]
    check_outputs_do_not_replace_inputs([args.refusals, args.rwku_source], outputs)
    out.mkdir(parents=True, exist_ok=True)
    gen = make_generator(gcfg, cache_dir=args.cache_dir or out / "cache", progress=not args.no_progress)
    rows, per_target = [], {}
    for name, intro in intros.items():
        r, st = generate_rt_questions(name, intro, gen, config=cfg, refusals=refusals)
        rows.extend(r)
        per_target[name] = st
    if not rows:
        raise ConfigError("every generated question was empty; nothing written. Try another --generator.")
    atomic_write_jsonl(out / "forget_rt.jsonl", rows)
    stats = {"targets": per_target, "kept": len(rows), "rwku_source": str(source)}
    atomic_write_json(out / "rt_stats.json", stats)
    m = Manifest(out, "augment rwku-rt", config={**vars(args), "func": None, "generator_spec": spec,
                                                 "augment": cfg.__dict__}, seed=args.seed)
    if args.refusals:
        m.add_input("refusals", args.refusals)
    for name in ("forget_rt.jsonl", "rt_stats.json"):
        m.add_output(out / name)
    m.write(stats={n: {k: s[k] for k in ("requested", "kept", "dropped", "distinct_questions")}
                   for n, s in per_target.items()})
    for n, s in per_target.items():
        print(f"{n}: kept {s['kept']} of {s['requested']} questions ({s['distinct_questions']} distinct)")
    print(f"wrote {out / 'forget_rt.jsonl'} in {time.time() - t0:.1f}s")
    return 0
