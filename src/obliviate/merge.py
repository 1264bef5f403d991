"""Model parameter averaging (ULMR §3.3): θa = α·θ + (1 − α)·θ', streamed tensor by tensor.

Definitions follow the paper: θ is the *primary* (original, pre-unlearning) model p_θ and θ'
its fine-tuned version p_f (SFT on the negative responses); α is the weight of the ORIGINAL
model. α = 1 returns the original model, α = 0 the fine-tuned one; larger α keeps more of the
original model's general ability and forgets less.

Memory: the merge never holds a model in memory. For every output tensor the matching base
and tuned tensors are read (each through a short-lived ``safetensors.safe_open`` handle, so the
memory-mapped pages are released again), averaged in float32, cast back to the base dtype and
appended to the output file, whose safetensors header is computed up front from the base
shard's header. Tensors above 16 MB (the embedding matrix) are averaged in row blocks. Peak
memory is therefore about one pair of 16 MB blocks on top of the libraries, not two models. The base model's sharding and its
``model.safetensors.index.json`` are kept.

A peft LoRA adapter folder can be given as the tuned model. Then θ' = W + s·B·A on the adapted
weights (s = lora_alpha / r, or lora_alpha / √r with rsLoRA) and the average is
θa = W + (1 − α)·s·B·A: the merged full model is streamed the same way. Alternatively
:func:`scale_adapter` writes the adapter with its delta scaled by (1 − α), which a peft loader
then applies to the base model, so an α sweep needs no full-model copies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from .config import ConfigError
from .io import Manifest, atomic_write_json

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: files that are weights and never copied from the base folder
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
#: non-weight files copied from the base folder (config, generation config, tokenizer, template)
_SKIP_COPY = {INDEX_NAME, "manifest.json", "report.md", "SOURCE.txt", "merge.json", "README.md"}  # own card below

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_name] = getattr(torch, _attr)
_ST_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class MergeError(ConfigError):
    """The two models cannot be averaged (names, shapes, dtypes or tokenizers differ; bad α; bad paths)."""


# ---------------------------------------------------------------------------------------------
# reading safetensors folders
# ---------------------------------------------------------------------------------------------
@dataclass
class TensorInfo:
    """Where one tensor lives and what it looks like (read from a safetensors header)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]


@dataclass
class WeightFolder:
    """A model folder's safetensors weights: tensor name → file/dtype/shape, and the shard layout."""

    root: Path
    tensors: dict[str, TensorInfo]
    shards: list[Path]
    shard_keys: dict[Path, list[str]]
    shard_metadata: dict[Path, dict]
    index: dict | None = None
    config: dict = field(default_factory=dict)

    @property
    def tied(self) -> bool:
        """Whether the model ties its output projection to the input embedding."""
        return bool(self.config.get("tie_word_embeddings", False))


def _resolve_folder(spec: str | os.PathLike, role: str) -> Path:
    """Map a model spec (folder, embedded alias, hub id) to a local folder."""
    from .models import ModelLoadError, resolve_model_path

    try:
        path, gguf = resolve_model_path(spec)
    except ModelLoadError as e:
        raise MergeError(f"--{role}: {e}") from e
    if gguf:
        raise MergeError(f"--{role} {spec!r} is a GGUF file; merging needs safetensors weights "
                         "(load it once with obliviate and save it as an HF folder)")
    p = Path(path)
    if not p.exists():
        try:  # a hub id: fetch only what the merge needs
            from huggingface_hub import snapshot_download

            p = Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                              "*.jinja", "*.tiktoken"]))
        except Exception as e:  # noqa: BLE001 - report the cause with the role
            raise MergeError(f"--{role} {spec!r}: not a local folder and not downloadable ({e})") from e
    if not p.is_dir():
        raise MergeError(f"--{role} {p} is not a folder")
    return p.resolve()


def read_weight_folder(root: str | os.PathLike) -> WeightFolder:
    """Read the safetensors headers of a model folder (no tensor data is loaded)."""
    from safetensors import safe_open

    root = Path(root)
    index = None
    if (root / INDEX_NAME).is_file():
        index = json.loads((root / INDEX_NAME).read_text())
        files = sorted({root / f for f in index.get("weight_map", {}).values()})
    elif (root / SINGLE_NAME).is_file():
        files = [root / SINGLE_NAME]
    else:
        other = sorted(f.name for f in root.iterdir() if f.suffix in (".bin", ".pt", ".pth"))
        hint = f" (found {other}: convert them to safetensors first)" if other else ""
        raise MergeError(f"{root}: no {SINGLE_NAME} or {INDEX_NAME}{hint}")
    tensors: dict[str, TensorInfo] = {}
    shard_keys: dict[Path, list[str]] = {}
    shard_meta: dict[Path, dict] = {}
    for f in files:
        if not f.is_file():
            raise MergeError(f"{root}: {INDEX_NAME} names {f.name}, which is missing")
        try:
            h_ctx = safe_open(str(f), framework="pt")
        except Exception as e:  # noqa: BLE001 - SafetensorError: a truncated or corrupt file
            raise MergeError(f"{f}: truncated or corrupt safetensors file ({e}); re-save or re-download it") from e
        with h_ctx as h:
            keys = list(h.keys())
            shard_meta[f] = dict(h.metadata() or {})
            for k in keys:
                sl = h.get_slice(k)
                if k in tensors:
                    raise MergeError(f"{root}: tensor {k!r} appears in two shards")
                tensors[k] = TensorInfo(f, sl.get_dtype(), tuple(sl.get_shape()))
        shard_keys[f] = keys
    config = {}
    if (root / "config.json").is_file():
        config = json.loads((root / "config.json").read_text())
    return WeightFolder(root, tensors, files, shard_keys, shard_meta, index, config)


#: tensors larger than this are averaged in row blocks of about this many bytes
CHUNK_BYTES = 16 << 20


def _read(info: TensorInfo, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
    """Read one tensor (or rows ``start:stop`` of it) through a short-lived handle.

    The handle is closed right away so the memory-mapped pages do not accumulate in RSS.
    """
    from safetensors import safe_open

    with safe_open(str(info.file), framework="pt") as h:
        if start is None:
            return h.get_tensor(name)
        return h.get_slice(name)[start:stop].clone()


def _row_chunks(info: TensorInfo) -> list[tuple[int | None, int | None]]:
    """Row ranges of about :data:`CHUNK_BYTES` for a large tensor; one whole-tensor range otherwise."""
    nbytes = _ST_SIZES[info.dtype] * math.prod(info.shape)
    if len(info.shape) < 1 or nbytes <= CHUNK_BYTES or info.shape[0] < 2:
        return [(None, None)]
    rows = max(1, CHUNK_BYTES // max(1, nbytes // info.shape[0]))
    return [(i, min(i + rows, info.shape[0])) for i in range(0, info.shape[0], rows)]


# ---------------------------------------------------------------------------------------------
# writing a safetensors file tensor by tensor
# ---------------------------------------------------------------------------------------------
class StreamingSafetensorsWriter:
    """Write a ``.safetensors`` file one tensor at a time.

    The file format is an 8-byte little-endian header length, a JSON header giving every
    tensor's dtype, shape and byte range, then the raw little-endian bytes. Because names,
    dtypes and shapes are known before any data is read, the header is written first and each
    tensor's bytes are appended as soon as they are computed, so only one tensor is in memory.
    ``safetensors.torch.save_file`` needs the whole shard as a dict, hence this writer.
    """

    def __init__(self, path: Path, layout: Sequence[tuple[str, str, tuple[int, ...]]], metadata: dict | None):
        self.path = Path(path)
        self.order = [name for name, _, _ in layout]
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        self.expected: dict[str, tuple[str, tuple[int, ...], int]] = {}
        for name, dtype, shape in layout:
            if dtype not in _ST_SIZES:
                raise MergeError(f"tensor {name!r}: unsupported safetensors dtype {dtype}")
            n = _ST_SIZES[dtype] * math.prod(shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            self.expected[name] = (dtype, tuple(shape), n)
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as safetensors does
        self.total = offset
        self._f = open(self.path, "wb")
        self._f.write(len(raw).to_bytes(8, "little"))
        self._f.write(raw)
        self._next = 0
        self._rows_done = self._bytes_done = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` (must be the next one in the layout, with its dtype and shape)."""
        dtype, shape, _ = self.expected.get(name, (None, None, None))
        if tuple(tensor.shape) != shape:
            raise RuntimeError(f"tensor {name!r}: got shape {tuple(tensor.shape)}, header says {shape}")
        self.write_rows(name, tensor, 0)

    def write_rows(self, name: str, rows: torch.Tensor, start: int) -> None:
        """Append rows ``start:start+len(rows)`` of tensor ``name`` (rows must come in order, no gaps)."""
        if self._next >= len(self.order) or self.order[self._next] != name:
            raise RuntimeError(f"tensor {name!r} written out of order")
        dtype, shape, n = self.expected[name]
        if _ST_DTYPES[dtype] != rows.dtype:
            raise RuntimeError(f"tensor {name!r}: got {rows.dtype}, header says {dtype}")
        if start != self._rows_done:
            raise RuntimeError(f"tensor {name!r}: rows from {start} written but {self._rows_done} expected")
        data = rows.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._f.write(memoryview(data))
        self._bytes_done += data.nbytes
        self._rows_done += rows.shape[0] if rows.dim() else 1
        if self._bytes_done > n:
            raise RuntimeError(f"tensor {name!r}: {self._bytes_done} bytes written, expected {n}")
        if self._bytes_done == n:
            self._next += 1
            self._rows_done = self._bytes_done = 0

    def close(self) -> None:
        """Close the file; raises if a tensor of the layout was never written."""
        self._f.close()
        if self._next != len(self.order):
            raise RuntimeError(f"{self.path}: only {self._next} of {len(self.order)} tensors were written")


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def parse_alphas(value: str | float | Sequence[float]) -> list[float]:
    """Parse ``0.5`` or ``"0.2,0.4,0.6"`` into a list of α values, each checked to lie in [0, 1]."""
    if isinstance(value, (int, float)):
        items = [value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
        if not any(items):
            raise MergeError("alpha: empty value; give a number in [0, 1] or a comma list like 0.2,0.4")
        if not all(items):
            raise MergeError(f"alpha: {value!r} has an empty item; give numbers in [0, 1] separated by single "
                             "commas, like 0.2,0.4")
    else:
        items = list(value)
    out = []
    for v in items:
        try:
            a = float(v)
        except (TypeError, ValueError) as e:
            raise MergeError(f"alpha: {v!r} is not a number") from e
        if not (0.0 <= a <= 1.0) or math.isnan(a):
            raise MergeError(f"alpha: {a!r} is outside [0, 1] (α is the weight of the original model: "
                             "θa = α·θ + (1 − α)·θ')")
        out.append(a)
    if len(set(out)) != len(out):
        raise MergeError(f"alpha: duplicate values in {items}")
    return out


def _tokenizer_fingerprint(folder: Path) -> dict | None:
    """The vocabulary and special tokens of the tokenizer saved in ``folder`` (None if it has none)."""
    has = any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                                "tokenizer.model"))
    if not has:
        return None
    if (folder / "tokenizer.json").is_file():
        tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = tj.get("model", {})
        added = sorted((t.get("id"), t.get("content")) for t in tj.get("added_tokens", []))
        fp = {"vocab": model.get("vocab"), "merges": model.get("merges"), "added": added}
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        fp = {"vocab": tok.get_vocab(), "merges": None, "added": []}
    cfg = {}
    if (folder / "tokenizer_config.json").is_file():
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    fp["special"] = {k: cfg.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return fp


def check_tokenizers(base: Path, tuned: Path) -> str:
    """Refuse when both folders hold a tokenizer and their vocabularies or special tokens differ.

    Returns a short note for the manifest ("identical", or which folder lacked a tokenizer).
    """
    a, b = _tokenizer_fingerprint(base), _tokenizer_fingerprint(tuned)
    if a is None or b is None:
        missing = base if a is None else tuned
        return f"no tokenizer in {missing}; the base tokenizer is used"
    for key, what in (("vocab", "vocabularies"), ("merges", "BPE merges"), ("added", "added tokens"),
                      ("special", "special tokens")):
        if a.get(key) != b.get(key):
            detail = ""
            if key == "vocab" and isinstance(a["vocab"], dict) and isinstance(b["vocab"], dict):
                detail = f" ({len(a['vocab'])} vs {len(b['vocab'])} entries)"
            elif key == "special":
                diff = {k: (a["special"][k], b["special"][k]) for k in a["special"]
                        if a["special"][k] != b["special"][k]}
                detail = f" ({diff})"
            raise MergeError(f"tokenizers differ: {base} and {tuned} have different {what}{detail}; "
                             "the models were not trained with the same tokenizer and cannot be averaged")
    return "identical"


def _check_paths(base: Path, tuned: Path, out: Path) -> None:
    """Refuse an ``--out`` that is, lies inside or contains an input (the resolver ``train`` uses too)."""
    from .models import check_output_outside_models

    from .io import check_outputs_do_not_replace_inputs

    try:
        check_outputs_do_not_replace_inputs([base, tuned], [out])  # the output folder is replaced as a whole
        check_output_outside_models(out, {"--base": base, "--tuned": tuned})
    except ConfigError as e:
        raise MergeError(f"{e} (refusing to overwrite an input)") from None


def _tied_alias(wf: WeightFolder, name: str) -> str | None:
    """For a tied model lacking ``lm_head.weight``, the embedding tensor it stands for."""
    if name.endswith("lm_head.weight") and wf.tied:
        cands = [k for k in wf.tensors if k.endswith("embed_tokens.weight")]
        if len(cands) == 1:
            return cands[0]
    return None


def check_compatible(base: WeightFolder, tuned: WeightFolder) -> dict[str, str]:
    """Check tensor names, shapes and dtypes; return base name → tuned name to read.

    Tied embeddings: when one model stores ``lm_head.weight`` and the other ties it to
    ``embed_tokens.weight``, the tied tensor stands in for the missing one.
    """
    mapping: dict[str, str] = {}
    missing = []
    for name in base.tensors:
        if name in tuned.tensors:
            mapping[name] = name
        elif (alias := _tied_alias(tuned, name)) is not None:
            mapping[name] = alias
        else:
            missing.append(name)
    extra = [n for n in tuned.tensors if n not in base.tensors and n not in mapping.values()
             and _tied_alias(base, n) is None]
    if missing or extra:
        raise MergeError(f"tensor names differ between {base.root} and {tuned.root}: "
                         f"only in base {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                         f"only in tuned {extra[:5]}{'...' if len(extra) > 5 else ''} ({len(extra)}); "
                         "are they the same architecture?")
    for name, tname in mapping.items():
        a, b = base.tensors[name], tuned.tensors[tname]
        if a.shape != b.shape:
            raise MergeError(f"tensor {name!r}: shape {list(a.shape)} in {base.root} but {list(b.shape)} in "
                             f"{tuned.root}")
        if a.dtype != b.dtype:
            raise MergeError(f"tensor {name!r}: dtype {a.dtype} in {base.root} but {b.dtype} in {tuned.root}; "
                             "save both models in the same dtype first")
    return mapping


# ---------------------------------------------------------------------------------------------
# LoRA adapters
# ---------------------------------------------------------------------------------------------
def is_adapter_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a peft adapter folder (``adapter_config.json`` without ``config.json``)."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


@dataclass
class LoraDelta:
    """A peft LoRA adapter read into memory (adapters are small): per base tensor, how it changes."""

    folder: Path
    config: dict
    lora: dict[str, tuple[torch.Tensor, torch.Tensor, float, str]]  # base name -> (A, B, scale, kind)
    replaced: dict[str, torch.Tensor]  # base name -> full tensor (modules_to_save)
    base_copies: dict[str, torch.Tensor] = field(default_factory=dict)  # saved copies of base weights

    def delta(self, name: str) -> torch.Tensor | None:
        """ΔW = s·B·A for ``name`` (transposed for fan_in_fan_out / embedding layers), in float32."""
        if name not in self.lora:
            return None
        a, b, scale, kind = self.lora[name]
        d = (b.float() @ a.float()) * scale
        if kind == "embedding" or self.config.get("fan_in_fan_out"):
            d = d.T
        return d


def read_lora_adapter(folder: str | os.PathLike) -> LoraDelta:
    """Read a peft LoRA adapter folder and map its tensors onto base-model tensor names.

    Key convention (peft ``get_peft_model_state_dict``): ``base_model.model.<module>.lora_A.weight``
    and ``...lora_B.weight`` for linear layers, ``...lora_embedding_A`` / ``_B`` for embeddings,
    and ``base_model.model.<module>.weight`` for ``modules_to_save``. DoRA and other adapter
    types are refused (their merge is not a scaled low-rank delta).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MergeError(f"{folder / ADAPTER_CONFIG}: not valid JSON ({e}); re-save the adapter with peft") from e
    if not isinstance(cfg, dict):
        raise MergeError(f"{folder / ADAPTER_CONFIG}: expected a JSON object")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise MergeError(f"{folder}: adapter type {cfg.get('peft_type')} is not LoRA; only LoRA adapters can be merged")
    if cfg.get("use_dora"):
        raise MergeError(f"{folder}: DoRA adapters are not supported by the parameter average; merge it with peft "
                         "(merge_and_unload) and pass the full model folder")
    wfile = folder / ADAPTER_WEIGHTS
    if not wfile.is_file():
        raise MergeError(f"{folder}: no {ADAPTER_WEIGHTS} (save the adapter with safe_serialization=True)")
    try:
        sd = load_file(str(wfile))
    except Exception as e:  # noqa: BLE001 - SafetensorError: a truncated or corrupt file
        raise MergeError(f"{wfile}: truncated or corrupt safetensors file ({e}); re-save the adapter") from e
    try:
        r = int(cfg["r"])
        lora_alpha = float(cfg.get("lora_alpha", r))
    except (KeyError, TypeError, ValueError) as e:
        raise MergeError(f"{folder / ADAPTER_CONFIG}: 'r' and 'lora_alpha' must be numbers ({e!r})") from e
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    prefix = "base_model.model."
    parts: dict[str, dict[str, torch.Tensor]] = {}
    replaced: dict[str, torch.Tensor] = {}
    base_copies: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        k = key[len(prefix):] if key.startswith(prefix) else key
        for tag, kind in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_embedding_A", "EA"),
                          (".lora_embedding_B", "EB")):
            if k.endswith(tag):
                parts.setdefault(k[: -len(tag)], {})[kind] = t
                break
        else:
            if "lora_magnitude_vector" in k:
                raise MergeError(f"{folder}: DoRA magnitude vectors found; not supported")
            if ".base_layer." in k:  # a copy of the base weight (peft save_embedding_layers)
                base_copies[k.replace(".base_layer.", ".")] = t
                continue
            replaced[k.replace(".modules_to_save", "")] = t
    lora = {}
    for module, p in parts.items():
        short = module.split(".")[-1]
        rr = int(next((v for pat, v in rank_pattern.items() if module.endswith(pat)), r))
        aa = float(next((v for pat, v in alpha_pattern.items() if module.endswith(pat)), lora_alpha))
        scale = aa / math.sqrt(rr) if cfg.get("use_rslora") else aa / rr
        if "A" in p and "B" in p:
            lora[module + ".weight"] = (p["A"], p["B"], scale, "linear")
        elif "EA" in p and "EB" in p:
            lora[module + ".weight"] = (p["EA"], p["EB"], scale, "embedding")
        else:
            raise MergeError(f"{folder}: module {module} ({short}) has only one of the two LoRA matrices")
    return LoraDelta(folder, cfg, lora, replaced, base_copies)


def scale_adapter(adapter: str | os.PathLike, alpha: float, out: str | os.PathLike, *,
                  overwrite: bool = False) -> Path:
    """Write a copy of a LoRA adapter whose delta is scaled by (1 − α).

    Loading it on the base model W gives W + (1 − α)·s·B·A = α·W + (1 − α)·(W + s·B·A), the
    parameter average of the original and the LoRA-tuned model, without writing a full model.
    Only ``lora_B`` is multiplied (by 1 − α), so the product B·A scales exactly once. Adapters
    with ``modules_to_save`` (full replaced tensors) cannot be expressed this way and are refused.
    """
    from safetensors.torch import load_file, save_file

    (alpha,) = parse_alphas(alpha)
    src = Path(adapter).resolve()
    if not is_adapter_folder(src) and not (src / ADAPTER_CONFIG).is_file():
        raise MergeError(f"{src} is not a peft adapter folder (no {ADAPTER_CONFIG})")
    out = Path(out)
    _check_paths(src, src, out)
    delta = read_lora_adapter(src)
    if delta.replaced:
        raise MergeError(f"{src}: the adapter saves full modules {sorted(delta.replaced)[:3]}; a scaled adapter "
                         "cannot express their average, merge to a full model instead")
    sd = load_file(str(src / ADAPTER_WEIGHTS))
    scaled = {k: (v * (1.0 - alpha)).to(v.dtype) if (".lora_B." in k or "lora_embedding_B" in k) else v
              for k, v in sd.items()}

    def build(tmp: Path) -> None:
        for f in src.iterdir():
            if f.is_file() and f.name not in (ADAPTER_WEIGHTS, "manifest.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(scaled, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        m = Manifest(tmp, "merge --scale-adapter", config={"adapter": str(src), "alpha": alpha,
                                                            "lora_B_factor": 1.0 - alpha})
        m.add_input("adapter", src)
        m.write(formula="W + (1-alpha) * s * B @ A")

    return _atomic_dir(out, build, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# the merge
# ---------------------------------------------------------------------------------------------
def _atomic_dir(out: Path, build, *, overwrite: bool) -> Path:
    """Build a folder in a temporary sibling, then rename it onto ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        build(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_side_files(base: Path, tmp: Path) -> list[str]:
    copied = []
    for f in sorted(base.iterdir()):
        if f.is_file() and f.name not in _SKIP_COPY and not f.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(f, tmp / f.name)
            copied.append(f.name)
    return copied


def _merge_one(base_wf: WeightFolder, tuned_source, alpha: float, tmp: Path, *, progress: bool,
               mapping: dict[str, str] | None, lora: LoraDelta | None) -> None:
    """Stream θa = α·θ + (1 − α)·θ' into ``tmp``, shard by shard, tensor by tensor."""
    total = len(base_wf.tensors)
    bar = tqdm(total=total, desc=f"merge α={alpha:g}", unit="tensor", disable=not progress)
    try:
        for shard in base_wf.shards:
            keys = sorted(base_wf.shard_keys[shard])
            layout = [(k, base_wf.tensors[k].dtype, base_wf.tensors[k].shape) for k in keys]
            writer = StreamingSafetensorsWriter(tmp / shard.name, layout, base_wf.shard_metadata.get(shard))
            try:
                for k in keys:
                    info = base_wf.tensors[k]
                    if info.shape and math.prod(info.shape) == 0:
                        writer.write(k, _read(info, k))
                    elif lora is not None:
                        merged = _lora_average(_read(info, k), k, alpha, lora)
                        writer.write(k, merged)
                        del merged
                    else:
                        tname = mapping[k]
                        for start, stop in _row_chunks(info):
                            w = _read(info, k, start, stop)
                            t = _read(tuned_source.tensors[tname], tname, start, stop)
                            writer.write_rows(k, _average(w, t, alpha, k), start or 0)
                            del w, t
                    bar.update(1)
            finally:
                writer.close()
    finally:
        bar.close()
    if base_wf.index is not None:
        atomic_write_json(tmp / INDEX_NAME, base_wf.index)


def _average(w: torch.Tensor, t: torch.Tensor, alpha: float, name: str) -> torch.Tensor:
    """α·w + (1 − α)·t computed in float32 (float64 stays float64), cast back to w's dtype."""
    if not w.is_floating_point():
        if not torch.equal(w, t):
            raise MergeError(f"tensor {name!r} is an integer buffer that differs between the models; "
                             "it cannot be averaged")
        return w
    acc = torch.float64 if w.dtype == torch.float64 else torch.float32
    out = w.to(acc, copy=True).mul_(alpha).add_(t.to(acc), alpha=1.0 - alpha)
    return out.to(w.dtype)


def _lora_average(w: torch.Tensor, name: str, alpha: float, lora: LoraDelta) -> torch.Tensor:
    if name in lora.base_copies and not torch.equal(lora.base_copies[name].to(w.dtype), w):
        raise MergeError(f"{lora.folder}: the adapter's saved copy of {name!r} differs from the base model's; "
                         "was it trained on this base?")
    if name in lora.replaced:
        return _average(w, lora.replaced[name].to(w.dtype), alpha, name)
    d = lora.delta(name)
    if d is None:
        return w
    if tuple(d.shape) != tuple(w.shape):
        raise MergeError(f"LoRA delta for {name!r} has shape {list(d.shape)} but the base tensor is {list(w.shape)}")
    acc = torch.float64 if w.dtype == torch.float64 else torch.float32
    return w.to(acc, copy=True).add_(d.to(acc), alpha=1.0 - alpha).to(w.dtype)


def merge_models(base: str | os.PathLike, tuned: str | os.PathLike, alpha: float | str | Sequence[float],
                 out: str | os.PathLike, *, overwrite: bool = False, progress: bool = True,
                 sweep_layout: bool | None = None) -> Path | list[Path]:
    """Write the parameter average θa = α·θ + (1 − α)·θ' (ULMR §3.3) of two models.

    ``base`` is θ, the original model (p_θ); ``tuned`` is θ', its fine-tuned version (p_f): a full
    model folder, or a peft LoRA adapter folder trained on ``base`` (then θa = W + (1 − α)·ΔW).
    ``alpha`` is one value or several (``"0.2,0.4"`` or a list): with several, each result goes to
    ``out/alpha_<α>/`` and the list of folders is returned (``sweep_layout=True`` forces that
    layout for a single value too).

    Checks first: α in [0, 1]; the output overlaps neither input; same tensor names (tied
    embeddings allowed on either side), shapes and dtypes; same tokenizer. Config, generation
    config, tokenizer and chat-template files are copied from ``base``. Each output folder is
    built in a temporary sibling and renamed into place, with a ``manifest.json``,
    ``merge.json`` (α, inputs, formula) and a ``README.md`` model card (:mod:`obliviate.modelcard`;
    the base folder's own card is not copied).
    """
    alphas = parse_alphas(alpha)
    base_dir = _resolve_folder(base, "base")
    tuned_dir = Path(tuned)
    if not tuned_dir.exists():
        tuned_dir = _resolve_folder(tuned, "tuned")
    tuned_dir = tuned_dir.resolve()
    if base_dir == tuned_dir:
        raise MergeError(f"--base and --tuned are the same folder ({base_dir}); nothing to average")
    out = Path(out)
    _check_paths(base_dir, tuned_dir, out)
    base_wf = read_weight_folder(base_dir)
    lora = None
    mapping = None
    tuned_wf = None
    if (tuned_dir / ADAPTER_CONFIG).is_file():
        lora = read_lora_adapter(tuned_dir)
        unknown = [n for n in list(lora.lora) + list(lora.replaced) if n not in base_wf.tensors]
        if unknown:
            tied = [n for n in unknown if _tied_alias(base_wf, n)]
            if tied:
                raise MergeError(f"{tuned_dir}: the adapter changes {tied[0]!r}, which {base_dir} ties to the "
                                 "input embedding; merging it would untie them. Train the adapter without lm_head.")
            raise MergeError(f"{tuned_dir}: the adapter changes tensors the base model lacks: {unknown[:5]}; "
                             f"was it trained on {base_dir}?")
        for n, (a_, b_, _, kind) in lora.lora.items():
            shape = base_wf.tensors[n].shape
            want = (b_.shape[0], a_.shape[1]) if kind == "linear" else (a_.shape[1], b_.shape[0])
            if lora.config.get("fan_in_fan_out") and kind == "linear":
                want = want[::-1]
            if tuple(want) != tuple(shape):
                raise MergeError(f"{tuned_dir}: LoRA for {n!r} gives shape {list(want)} but the base tensor is "
                                 f"{list(shape)}; was the adapter trained on {base_dir}?")
        tok_note = check_tokenizers(base_dir, tuned_dir)
        kind = "lora"
    else:
        tuned_wf = read_weight_folder(tuned_dir)
        mapping = check_compatible(base_wf, tuned_wf)
        tok_note = check_tokenizers(base_dir, tuned_dir)
        kind = "full"
    sweep = len(alphas) > 1 if sweep_layout is None else sweep_layout
    targets = [(a, out / f"alpha_{a:g}" if sweep else out) for a in alphas]
    if sweep and out.exists() and not overwrite:
        clash = [str(t) for _, t in targets if t.exists() and any(t.iterdir())]
        if clash:
            raise MergeError(f"sweep outputs already exist: {clash}; pass --overwrite to replace them")
    results = []
    for a, target in targets:
        t0 = time.time()

        def build(tmp: Path, a=a, t0=t0) -> None:
            _merge_one(base_wf, tuned_wf, a, tmp, progress=progress, mapping=mapping, lora=lora)
            copied = _copy_side_files(base_dir, tmp)
            info = {"alpha": a, "formula": "theta_a = alpha * theta_base + (1 - alpha) * theta_tuned",
                    "base": str(base_dir), "tuned": str(tuned_dir), "tuned_kind": kind,
                    "tokenizer_check": tok_note, "copied_files": copied,
                    "tensors": len(base_wf.tensors), "shards": [s.name for s in base_wf.shards]}
            if lora is not None:
                info["lora_modules"] = len(lora.lora)
            atomic_write_json(tmp / "merge.json", info)
            m = Manifest(tmp, "merge", config={"base": str(base), "tuned": str(tuned), "alpha": a})
            m.add_input("base", base_dir)
            m.add_input("tuned", tuned_dir)
            m.add_output(target)
            m.write(merge=info, merge_time_s=round(time.time() - t0, 3))
            from .modelcard import merge_card_info, try_write_model_card

            try:
                card = merge_card_info(base, tuned_dir, a, kind)
            except Exception as e:  # noqa: BLE001 - the card never breaks a save
                card = None
                log.warning("model card skipped: %s: %s", type(e).__name__, e)
            if card is not None:
                try_write_model_card(tmp, card, evaluations={})  # a fresh model has no evaluation yet

        results.append(_atomic_dir(target, build, overwrite=overwrite))
    return results if sweep else results[0]


def average_state_dicts(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
                        ) -> dict[str, torch.Tensor]:
    """In-memory θa = α·θ + (1 − α)·θ' for two state dicts (used by tests and the benchmark)."""
    (alpha,) = parse_alphas(alpha)
    missing = set(base) ^ set(tuned)
    if missing:
        raise MergeError(f"state dicts differ in names: {sorted(missing)[:5]}")
    return {k: _average(v, tuned[k], alpha, k) for k, v in base.items()}


def iter_merge_outputs(out: Path, alphas: Iterable[float]) -> list[Path]:
    """The folders a sweep over ``alphas`` writes under ``out``."""
    return [Path(out) / f"alpha_{a:g}" for a in alphas]
