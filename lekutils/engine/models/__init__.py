"""Load models by spec: embedded GGUF models, ``.gguf`` files, MLX directories, HF ids.

``load(spec)`` returns ``(model, tokenizer)`` that ``mlx_lm.generate`` and mlx-lm's LoRA tuner
accept (the tokenizer is mlx-lm's ``TokenizerWrapper``). GGUF files are converted once into an
MLX model directory under ``lekutils.core.paths.cache_dir()/models`` and loaded from there afterwards.
The weight dtype is chosen per device (see :func:`default_dtype`) and recorded in :func:`load_info`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import weakref
from pathlib import Path
from typing import Any

from lekutils.core.hashing import sha256_file
from lekutils.core.paths import cache_dir
from lekutils.engine.models.specs import (
    DEFAULT_MODEL,
    EMBEDDED,
    VALID_FORMS,
    ModelPackageMissing,
    ModelSource,
    ModelSpecError,
    resolve,
)

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "VALID_FORMS", "ModelPackageMissing", "ModelSource", "ModelSpecError",
    "converted_dir", "default_dtype", "file_sha256", "fingerprint", "load", "load_info", "mlx_model_dir", "resolve",
]

log = logging.getLogger(__name__)

#: Bumped when the conversion changes, so stale cached conversions are not reused.
CONVERTER_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16", "quantized")
_INFO: dict[int, dict[str, Any]] = {}


def default_dtype() -> str:
    """The weight dtype for this device, chosen by measurement; ``$LEK_DTYPE`` overrides.

    CPU (Linux/OpenBLAS, measured on 2 cores): float32 matmuls run on the optimized BLAS, while
    MLX's quantized and half-precision CPU kernels are several times slower, so float32.
    GPU (Metal or CUDA): half precision halves memory traffic and is the fast path, so bfloat16.
    """
    env = os.environ.get("LEK_DTYPE")
    if env:
        if env not in DTYPES:
            raise ValueError(f"LEK_DTYPE={env!r}: expected one of {', '.join(DTYPES)}")
        return env
    import mlx.core as mx

    return "bfloat16" if mx.default_device().type == mx.DeviceType.gpu else "float32"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a (large) model file, cached by path, size and mtime (:func:`sha256_file`)."""
    return sha256_file(path, cached=True)


def converted_dir(gguf_path: str | os.PathLike[str], dtype: str, *, source_info: dict | None = None) -> Path:
    """The cached MLX directory converted from a GGUF (converting on first use)."""
    from lekutils.engine.models.convert import convert_gguf

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    digest = file_sha256(gguf_path)
    out = cache_dir() / "models" / f"{digest[:20]}-{dtype}-v{CONVERTER_VERSION}"
    if not ((out / "model.safetensors").exists() and (out / "tokenizer.json").exists()):
        log.info("converting %s to MLX (%s), once", gguf_path, dtype)
        convert_gguf(gguf_path, out, dtype=dtype, source_info={"sha256": digest, **(source_info or {})})
    return out


def _model_dir(src: ModelSource, dtype: str) -> str:
    if src.kind in ("embedded", "gguf"):
        assert src.path is not None
        return str(converted_dir(src.path, dtype, source_info={"spec": src.spec}))
    return str(src.path) if src.path is not None else src.spec


def _is_quantized(model: Any) -> bool:
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def load(spec: str = DEFAULT_MODEL, adapter_path: str | os.PathLike[str] | None = None, *,
         dtype: str | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a spec, optionally with an mlx-lm LoRA adapter directory.

    ``dtype`` defaults to :func:`default_dtype`; ``"quantized"`` keeps a GGUF's Q4_0/Q4_1/Q8_0
    tensors as MLX quantized weights (mlx-lm's own quantized path). Float MLX directories and HF
    models are cast to ``dtype``; quantized ones are left as they are.
    """
    import mlx.core as mx
    import mlx_lm

    src = resolve(spec)
    if src.kind == "openai":
        raise ModelSpecError(f"model spec {spec!r} is served remotely and cannot be loaded in this process; "
                             "generate with lekutils.engine.factory.open_generator(spec)")
    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if adapter_path is not None:
        ap = Path(adapter_path)
        if not (ap / "adapter_config.json").is_file() or not (ap / "adapters.safetensors").is_file():
            raise FileNotFoundError(
                f"{ap}: not an mlx-lm adapter directory (needs adapter_config.json and adapters.safetensors)")
    model, tokenizer = mlx_lm.load(_model_dir(src, dtype),
                                   adapter_path=str(adapter_path) if adapter_path is not None else None)
    if dtype != "quantized" and not _is_quantized(model):
        model.set_dtype(getattr(mx, dtype))
    info = {"spec": src.spec, "kind": src.kind, "dtype": dtype,
            "device": str(mx.default_device()), "adapter": str(adapter_path) if adapter_path else None}
    _INFO[id(model)] = info
    weakref.finalize(model, _INFO.pop, id(model), None)
    log.info("loaded %s (%s, %s)", src.spec, dtype, info["device"])
    return model, tokenizer


def load_info(model: Any) -> dict[str, Any]:
    """What :func:`load` recorded for this model (spec, kind, dtype, device, adapter), or {}."""
    return dict(_INFO.get(id(model), {}))


def fingerprint(spec: str) -> dict[str, Any]:
    """Identify a model for manifests: spec, kind, source path, SHA-256 of its weights, size.

    A remote spec (``openai:...``) loads nothing: :func:`lekutils.engine.remote.fingerprint` (the
    endpoint names and the server-reported model ids, never the API key)."""
    from lekutils.engine import remote

    if remote.is_remote(spec):
        return remote.fingerprint(spec)
    src = resolve(spec)
    out: dict[str, Any] = {"spec": src.spec, "kind": src.kind, "name": src.name,
                           "path": str(src.path) if src.path else None, "sha256": None, "size": None}
    if src.kind in ("embedded", "gguf") and src.path is not None:
        out["sha256"] = file_sha256(src.path)
        out["size"] = src.path.stat().st_size
    elif src.kind == "mlx_dir" and src.path is not None:
        files = sorted(src.path.glob("*.safetensors"))
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
        out["sha256"] = h.hexdigest() if files else None
        out["size"] = sum(f.stat().st_size for f in files)
    if src.kind == "embedded" and src.name in EMBEDDED:
        out["package"] = EMBEDDED[src.name].package
    if src.kind in ("embedded", "gguf") and src.path is not None:  # what stock mlx_lm.load opens (mlx_model_dir)
        d = Path(converted_dir(src.path, default_dtype(), source_info={"spec": src.spec}))
        out["mlx_dir"] = str(d) if (d / "config.json").exists() else None
    return out


def mlx_model_dir(spec: str) -> str:
    """The MLX folder that stock ``mlx_lm.load`` opens, for a spec.

    A folder is returned as is; an embedded model or ``.gguf`` file gives our loader's converted copy
    in the cache (converted once, on first use); an HF id is returned as is (mlx-lm downloads it).
    """
    if Path(spec).is_dir():
        return str(spec)
    src = resolve(spec)
    if src.kind == "openai":
        raise ModelSpecError(f"model spec {spec!r} is served remotely: it has no local MLX folder")
    if src.path is not None and src.kind in ("embedded", "gguf"):
        d = converted_dir(src.path, default_dtype(), source_info={"spec": src.spec})
        if not (Path(d) / "config.json").exists():
            load(spec)  # converts once into the cache
        return str(d)
    return str(src.path or spec)
