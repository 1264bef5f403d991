"""Hugging Face model cards (``README.md``) for every model obliviate writes.

A card has YAML metadata (``base_model``, ``tags``, ``library_name``, ``license`` when known) and a
markdown body: the method and its paper, the forget request as hashes and row counts (never the
text of the data), the hyperparameters, evaluation tables when a ``metrics.json`` / ``audit.json``
sits beside the model, and the obliviate version.

``train`` and ``merge`` write the card into the model folder as part of the save; a card that
cannot be built only logs a warning (:func:`try_write_model_card`), it never fails a save.
:func:`card_info_from_folder` rebuilds the card's inputs from the files obliviate leaves in and
around a model folder (``obliviate_model.json``, ``merge.json``, ``config.yaml``), which is what
``obliviate push`` uses for a folder without a card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
#: first line of every card obliviate writes (an HTML comment: invisible on the hub)
MARKER = "<!-- model card written by obliviate -->"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_LICENSE = "apache-2.0"

ULMR_PAPER = "ULMR: Unlearning Large Language Models via Negative Response and Model Parameter Average"
SNAP_PAPER = "SNAP: Unlearning Selective Knowledge in Large Language Models with Negative Instructions"
TOFU_PAPER = "TOFU: A Task of Fictitious Unlearning for LLMs"
RWKU_PAPER = "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language Models"
MERGE_METHOD = "ULMR parameter averaging θa = αθ + (1−α)θ'"

#: method name → (plain name, paper title or None)
METHODS: dict[str, tuple[str, str | None]] = {
    "ulmr": ("ULMR: fine-tuning on rewritten instructions with negative responses", ULMR_PAPER),
    "merge": (MERGE_METHOD, ULMR_PAPER),
    "snap": ("SNAP: negative instructions with a sliced-Wasserstein regulariser", SNAP_PAPER),
    "euclidean": ("Euclidean-distance regularised unlearning (SNAP baseline)", SNAP_PAPER),
    "fisher": ("Fisher-weighted regularised unlearning (SNAP baseline)", SNAP_PAPER),
    "ga": ("Gradient ascent (GA)", None),
    "graddiff": ("Gradient difference (GradDiff)", None),
    "kl": ("Gradient ascent with KL divergence on the retain set (KL)", None),
    "dpo": ("Direct preference optimisation (DPO)", None),
    "idkdpo": ("DPO towards \"I don't know\" answers (IdkDPO)", None),
    "npo": ("Negative preference optimisation (NPO)", None),
    "npo_rt": ("Negative preference optimisation with a retain term (NPO+RT)", None),
    "retrain": ("Retraining on the retain set only", None),
    "rt": ("Rejection tuning (RT)", RWKU_PAPER),
    "prompting": ("Prompting (no training)", SNAP_PAPER),
}
#: config fields left out of the hyperparameter table (texts, bookkeeping)
_SKIP_HPARAMS = {"description", "source", "system_prompt", "progress", "num_workers", "terms", "train"}


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def records_sha256(records: Sequence[Any]) -> str:
    """sha256 of data records' content (every field, in order); the same digest ``obliviate run`` records."""
    rows = []
    for r in records:
        to_dict = getattr(r, "to_dict", None)
        rows.append(to_dict() if callable(to_dict) else r)
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def describe_source(spec: Any) -> str:
    """A data source as the card may show it: a TOFU split by name, anything else by its kind only.

    File names and RWKU targets can name what was forgotten, so they are withheld.
    """
    if spec is None:
        return "in memory"
    s = str(spec)
    if s.startswith("tofu:"):
        return s
    if s.startswith("rwku:"):
        return "rwku:<target withheld>"
    p = Path(s)
    if p.is_dir():
        return "saved dataset folder"
    suffix = p.suffix.lower()
    return f"file ({suffix})" if suffix else "file"


def describe_data(streams: Mapping[str, Sequence[Any]], inputs: Mapping[str, Any] | None = None) -> dict:
    """``{stream: {rows, records_sha256, source, file_sha256?}}`` for the card: counts and hashes, no text."""
    from .io import file_sha256

    out: dict[str, dict] = {}
    for name, rows in streams.items():
        src = (inputs or {}).get(name)
        entry: dict[str, Any] = {"rows": len(rows), "records_sha256": records_sha256(rows),
                                 "source": describe_source(src)}
        if src is not None and Path(str(src)).is_file():
            entry["file_sha256"] = file_sha256(src)
        out[name] = entry
    return out


def hub_base_model(spec: Any) -> tuple[str | None, str | None]:
    """``(base_model, local_path)`` for a model spec: a hub id is kept as is; the embedded default maps
    to its hub id; a local folder gives its name (or the hub id of a hub-cache snapshot) and its path."""
    if spec is None or str(spec) == "":
        return None, None
    from .models import is_embedded_alias

    s = str(spec)
    if is_embedded_alias(s):
        return EMBEDDED_HUB_ID, None
    from .models import packaged_model

    pm = packaged_model(s)
    if pm is not None:
        return pm.hub_id, None
    p = Path(s).expanduser()
    if p.exists():
        path = p.resolve()
        parts = path.parts
        for i, part in enumerate(parts):  # ~/.cache/huggingface/hub/models--org--name/snapshots/<rev>
            if part.startswith("models--") and i + 1 < len(parts) and parts[i + 1] == "snapshots":
                return part[len("models--"):].replace("--", "/"), str(path)
        name = path.stem if path.is_file() else path.name
        return name, str(path)
    if s.startswith((".", "/", "~")) or s.count("/") > 1 or s.endswith(".gguf"):  # a local path gone since
        return Path(s).stem if s.endswith(".gguf") else Path(s).name, s
    return s, None


def _base_license(spec: Any) -> str | None:
    """The base model's license when it is known locally (embedded default, or the base folder's card)."""
    if spec is None:
        return None
    from .models import is_embedded_alias

    if is_embedded_alias(str(spec)):
        return EMBEDDED_LICENSE
    from .models import packaged_model

    pm = packaged_model(spec)
    if pm is not None:
        return pm.licence
    readme = Path(str(spec)).expanduser() / CARD_NAME
    if readme.is_file():
        try:
            from huggingface_hub import ModelCard

            lic = ModelCard.load(readme, ignore_metadata_errors=True).data.license
            return lic if isinstance(lic, str) and lic else None
        except Exception:  # noqa: BLE001 - a malformed card only loses the license
            return None
    return None


def _cell(v: Any) -> str:
    if isinstance(v, float):
        text = f"{v:.6g}"
    elif isinstance(v, (dict, list, tuple)):
        text = json.dumps(v, ensure_ascii=False, default=str, separators=(", ", ": "))
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _numeric(obj: Any) -> dict[str, float]:
    """The top-level numeric entries of a metrics mapping (an audit's ``metrics`` block when it has one)."""
    if not isinstance(obj, Mapping):
        return {}
    if isinstance(obj.get("metrics"), Mapping):
        obj = obj["metrics"]
    return {str(k): v for k, v in obj.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_evaluations(model_dir: str | Path) -> dict[str, dict[str, float]]:
    """Evaluation results found beside a model: ``metrics.json`` / ``audit.json`` in the folder or its
    parent (a train run, a SNAP step), and for a model inside an ``obliviate run`` folder its
    ``eval/<label>/metrics.json`` and ``audit/<label>/audit.json``. Maps a title to numeric metrics."""
    d = Path(model_dir)
    candidates = [d / "metrics.json", d / "audit.json", d.parent / "metrics.json", d.parent / "audit.json"]
    label = None
    if d.name == "model" and d.parent.name == "train":
        label = "trained"
    elif d.name.startswith("alpha_") and d.parent.name == "merge":
        label = f"merged_{d.name}"
    if label:
        root = d.parent.parent
        candidates += [root / "eval" / label / "metrics.json", root / "audit" / label / "audit.json"]
    found: dict[str, dict[str, float]] = {}
    for f in candidates:
        if f.is_file():
            nums = _numeric(_read_json(f))
            if nums:
                try:
                    shown = f.relative_to(d.parent.parent if label else d.parent).as_posix()
                except ValueError:
                    shown = f.name
                found[shown] = nums
    return found


# ---------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------
def build_model_card(*, method: str | None, base_model: Any = None, hyperparameters: Mapping[str, Any] | None = None,
                     data: Mapping[str, Mapping[str, Any]] | None = None,
                     evaluations: Mapping[str, Mapping[str, float]] | None = None, lora: bool = False,
                     terms: Sequence[str] | None = None, description: str | None = None,
                     merge: Mapping[str, Any] | None = None, license: str | None = None,
                     adapter: bool = False, tags: Sequence[str] = ()):
    """Build a :class:`huggingface_hub.ModelCard` for an unlearned model.

    ``method``: a preset name (``ulmr``, ``ga``, ...) or ``"merge"`` for ULMR parameter averaging;
    ``base_model``: the model spec as given (hub id, local folder, embedded alias; see
    :func:`hub_base_model`); ``hyperparameters``: the training config; ``data``: the output of
    :func:`describe_data` (counts and hashes only); ``evaluations``: title → numeric metrics;
    ``merge``: ``{"alpha", "tuned", "tuned_method", "tuned_kind"}`` for a merged model; ``license``
    defaults to the base model's when it is known locally; ``adapter``: a peft LoRA adapter folder.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    base_id, base_path = hub_base_model(base_model)
    method = method or None
    tag_list = ["obliviate", "machine-unlearning"]
    if merge is not None:
        tag_list += ["ulmr", "parameter-averaging"]
        if merge.get("tuned_method"):
            tag_list.append(str(merge["tuned_method"]))
    elif method:
        tag_list.append(method)
    if lora or adapter:
        tag_list.append("lora")
    tag_list += list(tags)
    tag_list = list(dict.fromkeys(t for t in tag_list if t))
    lic = license if license is not None else _base_license(base_model)
    card_data = ModelCardData(base_model=base_id, tags=tag_list, library_name="peft" if adapter else "transformers",
                              license=lic or None)

    name, paper = METHODS.get(method or "", (method or "unknown", None))
    how = "ULMR parameter averaging" if merge is not None else (method or "obliviate")
    title = f"{base_id or 'model'} unlearned with {how}"
    body = [MARKER, "", f"# {title}", "",
            f"This model was written by [obliviate](https://pypi.org/project/obliviate/) {__version__}, a toolkit "
            "that makes a language model forget selected knowledge.", "", "## Method", ""]
    body.append(f"- **Method:** {name}" + (f" (`{method}`)" if method and method != "merge" else ""))
    if paper:
        body.append(f"- **Paper:** *{paper}*")
    if description:
        body.append(f"- **Objective:** {_cell(description)}")
    if terms:
        label = "Loss of the fine-tuning θ → θ'" if merge is not None else "Loss"
        body.append(f"- **{label}:** " + " + ".join(f"`{t}`" for t in terms))
    if merge is None and method:
        body.append(f"- **Fine-tuning:** {'LoRA adapter' if lora else 'full parameters'}")
    if merge is not None:
        body.append(f"- **α:** {merge.get('alpha')} (weight of the original model θ; θ' is the fine-tuned model)")
        tm = merge.get("tuned_method")
        tuned_name = METHODS.get(tm, (tm, None))[0] if tm else None
        body.append(f"- **Fine-tuned model θ':** `{merge.get('tuned')}`"
                    + (f" ({merge.get('tuned_kind')})" if merge.get("tuned_kind") else "")
                    + (f", trained with {tuned_name}" if tuned_name else ""))
    if base_id:
        body.append(f"- **Base model:** `{base_id}`" + (f" (local folder `{base_path}`)" if base_path else ""))
    body.append("")

    body += ["## Forget request", "",
             "The data this model was trained to forget (and to keep) is identified by hashes and row counts "
             "only; its text is not part of this card.", ""]
    if data:
        rows = [[s, d.get("source", ""), d.get("rows", ""), f"`{d.get('records_sha256', '')}`",
                 f"`{d['file_sha256']}`" if d.get("file_sha256") else "-"] for s, d in data.items()]
        body += [_table(["stream", "source", "rows", "records sha256", "file sha256"], rows), ""]
    else:
        body += ["(no data description was recorded)", ""]

    hp = _hyperparameter_rows(hyperparameters or {})
    if hp:
        body += ["## Hyperparameters", "", _table(["parameter", "value"], hp), ""]

    if evaluations:
        body += ["## Evaluation", ""]
        for src, metrics in evaluations.items():
            body += [f"`{src}`", "", _table(["metric", "value"], [[k, v] for k, v in metrics.items()]), ""]

    body += ["## Limitations", "",
             "Unlearning is approximate: the forgotten knowledge may still be recoverable (relearning, "
             "paraphrased or adversarial prompts), and general ability may have changed. Evaluate it "
             "(`obliviate eval`, `obliviate audit`) before relying on it.", ""]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body)
    return ModelCard(content)


def _hyperparameter_rows(hp: Mapping[str, Any]) -> list[list[Any]]:
    from .io import redact

    hp = redact(dict(hp))
    rows = []
    for k, v in hp.items():
        short = k.split(".", 1)[-1]
        if short in ("lora",) and v is not None:  # {} means the default adapter: show its settings
            try:
                import dataclasses

                from .models import LoraSpec

                v = dataclasses.asdict(LoraSpec(**v))
            except Exception:  # noqa: BLE001 - shown as given
                pass
        elif short in _SKIP_HPARAMS or v is None or v == {} or v == []:
            continue
        elif short in ("regularizer_weight", "regularizer_args") and not hp.get(k.replace(short, "regularizer")):
            continue
        rows.append([k, v])
    return rows


def write_model_card(model_dir: str | Path, info: Mapping[str, Any] | None = None, **overrides: Any) -> Path:
    """Write ``model_dir/README.md`` atomically (temp file + ``os.replace``) and return its path.

    ``info`` holds :func:`build_model_card`'s keyword arguments; without it they are read from the
    folder (:func:`card_info_from_folder`). ``overrides`` replace single arguments. When
    ``evaluations`` is not given, :func:`find_evaluations` supplies them. A card identical to the one
    on disk is not rewritten (the file keeps its time stamp).
    """
    from .io import atomic_write_text

    d = Path(model_dir)
    kwargs = dict(card_info_from_folder(d) if info is None else info)
    kwargs.update(overrides)
    if kwargs.get("evaluations") is None:
        kwargs["evaluations"] = find_evaluations(d)
    text = str(build_model_card(**kwargs))
    text = text if text.endswith("\n") else text + "\n"
    path = d / CARD_NAME
    try:
        if path.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    return atomic_write_text(path, text)


def try_write_model_card(model_dir: str | Path, info: Mapping[str, Any] | None = None, **overrides: Any
                         ) -> Path | None:
    """:func:`write_model_card`, but a failure only logs a warning and returns None (a save never breaks)."""
    try:
        return write_model_card(model_dir, info, **overrides)
    except Exception as e:  # noqa: BLE001 - the card is a courtesy; the model is what matters
        log.warning("could not write the model card %s: %s: %s", Path(model_dir) / CARD_NAME, type(e).__name__, e)
        return None


# ---------------------------------------------------------------------------------------------
# reading a card's inputs back from a folder
# ---------------------------------------------------------------------------------------------
def train_card_info(note: Mapping[str, Any], hyperparameters: Mapping[str, Any] | None = None) -> dict:
    """Card arguments of a trained model from its ``obliviate_model.json`` note and training config."""
    hp = dict(hyperparameters or {})
    base = note["base_model_id"] if "base_model_id" in note else note.get("base_model")
    return {"method": note.get("method"), "base_model": base or None,
            "lora": bool(note.get("lora")), "adapter": bool(note.get("lora")), "terms": note.get("terms"),
            "data": note.get("data"), "hyperparameters": hp, "description": hp.get("description") or None}


def merge_card_info(base: Any, tuned: str | Path, alpha: float, tuned_kind: str | None = None) -> dict:
    """Card arguments of a merged model θa = α·θ + (1 − α)·θ' (θ = ``base``, θ' = ``tuned``).

    When θ' was trained by obliviate, its method, data hashes and training config are carried over.
    """
    tuned = Path(tuned)
    note = _read_json(tuned / "obliviate_model.json") or {}
    tuned_cfg = _train_config_beside(tuned, note.get("method"))
    hp: dict[str, Any] = {"alpha": alpha, "formula": "theta_a = alpha * theta_base + (1 - alpha) * theta_tuned"}
    if tuned_kind:
        hp["tuned_kind"] = tuned_kind
    for k, v in tuned_cfg.items():
        if k not in _SKIP_HPARAMS:
            hp[f"tuned.{k}"] = v
    return {"method": "merge", "base_model": base, "hyperparameters": hp, "data": note.get("data"),
            "terms": note.get("terms"),
            "merge": {"alpha": alpha, "tuned": str(tuned), "tuned_method": note.get("method"),
                      "tuned_kind": tuned_kind}}


def _train_config_beside(model_dir: Path, method: str | None) -> dict:
    """The training config (``config.yaml``) of the run folder holding ``model_dir``, when it matches."""
    cfg_path = model_dir.parent / "config.yaml"
    if not cfg_path.is_file():
        return {}
    try:
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an unreadable config only loses the table
        return {}
    if not isinstance(cfg, dict) or (method and cfg.get("method") != method):
        return {}
    return cfg


def card_info_from_folder(model_dir: str | Path) -> dict:
    """:func:`build_model_card` arguments read from what obliviate leaves in and around ``model_dir``:
    ``merge.json`` (+ ``manifest.json``) for a merged model, ``obliviate_model.json`` and the run's
    ``config.yaml`` for a trained one; for any other folder, its ``config.json`` name."""
    d = Path(model_dir)
    merge = _read_json(d / "merge.json")
    if isinstance(merge, dict) and "alpha" in merge:
        manifest = _read_json(d / "manifest.json") or {}
        base = (manifest.get("config") or {}).get("base") or merge.get("base")
        return merge_card_info(base, merge.get("tuned", ""), merge["alpha"], merge.get("tuned_kind"))
    note = _read_json(d / "obliviate_model.json")
    if isinstance(note, dict) and note.get("method"):
        return train_card_info(note, _train_config_beside(d, note.get("method")))
    config = _read_json(d / "config.json") or _read_json(d / "adapter_config.json") or {}
    base = config.get("_name_or_path") or config.get("base_model_name_or_path") or None
    if base and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(base)) and not Path(str(base)).exists():
        base = None
    return {"method": None, "base_model": base, "adapter": (d / "adapter_config.json").is_file()}
