"""Upload an obliviate model to the Hugging Face Hub, with its model card (``obliviate push``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import ConfigError


#: never uploaded from a model folder: half-written temporaries, caches, pickles
IGNORE_PATTERNS = [".*", "**/.*", "__pycache__/**", "*.pyc", "training_args.bin", "checkpoints/**"]


class PushError(ConfigError):
    """The path to push is missing, holds no model, or names several candidate models."""


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HF model folder (``config.json``) or a peft adapter (``adapter_config.json``)."""
    p = Path(path)
    return p.is_dir() and ((p / "config.json").is_file() or (p / "adapter_config.json").is_file())


def find_model_folder(path: str | os.PathLike) -> Path:
    """The model folder to upload for ``path``: the folder itself when it is a model, else the final model
    of a run folder it holds.

    Looked for, in order: the ``final_model`` an ``obliviate run`` folder's ``manifest.json`` names
    when it is inside the folder (a sequential run's last step), ``merge/alpha_<α>/`` of a run and
    ``alpha_<α>/`` of a merge sweep (the merged model is ULMR's final one; with several α values the
    choice is refused, listing them), then ``model/`` (``obliviate train``), ``train/model/`` (a run
    without merge), ``batch/model/`` and the last ``step_<k>_*/`` (its ``merge/alpha_<α>/``,
    ``train/merged_model/``, ``train/model/``, or ``model/`` of older runs). Raises :class:`PushError`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise PushError(f"{p}: no such file or folder; give a model folder or a run folder")
    if not p.is_dir():
        raise PushError(f"{p} is a file; give a model folder (with config.json) or a run folder")
    if is_model_folder(p):
        return p
    try:
        final = json.loads((p / "manifest.json").read_text(encoding="utf-8")).get("final_model")
    except (OSError, ValueError, AttributeError):
        final = None
    if isinstance(final, str) and final:
        f = Path(final)
        for cand in ([f] if f.is_absolute() else [f, p / f]):
            if cand.is_dir() and is_model_folder(cand) and p.resolve() in cand.resolve().parents:
                return cand
    for pattern in ("merge/alpha_*", "alpha_*"):
        merged = sorted(d for d in p.glob(pattern) if is_model_folder(d))
        if len(merged) == 1:
            return merged[0]
        if merged:
            names = ", ".join(str(d) for d in merged)
            raise PushError(f"{p} holds {len(merged)} merged models ({names}); push one of them by its folder")
    for sub in ("model", "train/model", "batch/model"):
        if is_model_folder(p / sub):
            return p / sub
    steps = sorted((d for d in p.glob("step_*") if d.is_dir()),
                   key=lambda d: int(d.name.split("_")[1]) if d.name.split("_")[1].isdigit() else -1)
    if steps:
        last = steps[-1]
        merged = sorted(d for d in last.glob("merge/alpha_*") if is_model_folder(d))
        if len(merged) == 1:
            return merged[0]
        for sub in ("train/merged_model", "train/model", "model"):
            if is_model_folder(last / sub):
                return last / sub
    raise PushError(f"{p} holds no model: no config.json or adapter_config.json there, nor a model/, "
                    "train/model/ or merge/alpha_<α>/ folder below it")


def push_model(path: str | os.PathLike, repo_id: str, *, api: Any = None, private: bool = False,
               revision: str | None = None, commit_message: str | None = None, token: str | None = None,
               refresh_card: bool = False) -> dict:
    """Upload the model at ``path`` (a model folder or a run folder, see :func:`find_model_folder`) to
    the hub repository ``repo_id``, with a ``README.md`` model card.

    The card is written first when the folder has none (or when ``refresh_card``, which also picks
    up evaluation results added since the model was saved). ``api`` is an ``HfApi``-like object
    (default ``huggingface_hub.HfApi()``): ``create_repo(exist_ok=True)``, then for a ``revision``
    other than ``main`` ``create_branch(exist_ok=True)``, then ``upload_folder``. Returns
    ``{"folder", "repo_id", "card", "card_written", "commit"}``.
    """
    from .modelcard import CARD_NAME, write_model_card

    if not repo_id or not str(repo_id).strip():
        raise PushError("--repo: a repository id (user/name) is required")
    folder = find_model_folder(path)
    card = folder / CARD_NAME
    written = False
    if refresh_card or not card.is_file():
        write_model_card(folder)
        written = True
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    auth = {"token": token} if token else {}
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", **auth)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model", **auth)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                               commit_message=commit_message or f"Upload {folder.name} with obliviate",
                               ignore_patterns=IGNORE_PATTERNS, **auth)
    return {"folder": folder, "repo_id": repo_id, "card": card, "card_written": written, "commit": commit}
