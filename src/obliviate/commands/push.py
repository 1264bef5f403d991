"""``obliviate push``: upload a model (or a run's final model) to the Hugging Face Hub with its model card."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "push", help="upload a model or a run's final model to the Hugging Face Hub, with its README.md card",
        description="Upload PATH to the hub repository --repo. PATH is a model folder (config.json or "
                    "adapter_config.json) or a run folder: the final model its manifest names, its merged "
                    "model (merge/alpha_<α>/, alpha_<α>/; with several α push one folder) or else model/, "
                    "train/model/ or the last step_<k>_*/ of a sequential run. A README.md model card is written first when the folder has none "
                    "(it never contains the forget data, only hashes and row counts). Log in with "
                    "`hf auth login`, set HF_TOKEN, or pass --token.")
    p.add_argument("path", metavar="RUN_OR_MODEL", help="model folder or run folder")
    p.add_argument("--repo", required=True, metavar="ID", help="hub repository id, e.g. user/model-unlearned")
    p.add_argument("--private", action="store_true", help="create the repository as private (if it is new)")
    p.add_argument("--revision", metavar="R", help="branch to push to (created if missing; default: main)")
    p.add_argument("--commit-message", metavar="M", help="commit message")
    p.add_argument("--token", metavar="T", help="hub token (default: the logged-in one or $HF_TOKEN)")
    p.add_argument("--refresh-card", action="store_true",
                   help="rewrite README.md from the folder's metadata (adds evaluations made since the save)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub import push_model

    res = push_model(args.path, args.repo, private=args.private, revision=args.revision,
                     commit_message=args.commit_message, token=args.token, refresh_card=args.refresh_card)
    if res["card_written"]:
        print(f"wrote {res['card']}")
    url = getattr(res["commit"], "commit_url", None) or f"https://huggingface.co/{args.repo}"
    print(f"pushed {res['folder']} to {args.repo}: {url}")
    return 0
