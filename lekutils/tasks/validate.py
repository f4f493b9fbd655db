"""Check every input of a generation task before the first generation: model specs, LoRA adapter
folders, kernel files. A bad input fails in seconds with a :class:`~lekutils.core.errors.DataError`
naming the file, not after hours of work on the inputs before it.

Adapters are checked without loading a model: ``adapter_config.json`` parses (strict JSON) and has
what mlx-lm needs; ``adapters.safetensors``'s header is readable with ``safetensors.safe_open`` and
the data it announces fits the file; every tensor is a LoRA ``lora_a``/``lora_b`` whose rank matches
the config; where the base model is an MLX directory, the layers named exist in its config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import read_json_file

PathLike = str | os.PathLike[str]
ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _model_layers(model: str | None) -> int | None:
    """``num_hidden_layers`` of an MLX model directory's config (None when not cheaply known)."""
    if not model:
        return None
    cfg = Path(model).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    try:
        doc = read_json_file(cfg, "model config")
    except DataError:
        return None
    n = doc.get("num_hidden_layers") or (doc.get("text_config") or {}).get("num_hidden_layers")
    return int(n) if isinstance(n, int) else None


def check_adapter(adapter: PathLike, model: str | None = None) -> dict[str, Any]:
    """Validate an mlx-lm LoRA adapter folder; return ``{"path", "rank", "tensors"}``.

    Raises :class:`DataError` naming the folder or file and what is wrong.
    """
    folder = Path(adapter)
    if not folder.exists():
        raise DataError(folder, "adapter folder not found")
    if not folder.is_dir():
        raise DataError(folder, "expected an adapter folder (with adapter_config.json and adapters.safetensors)")
    cfg_path, weights = folder / CONFIG_FILE, folder / ADAPTER_FILE
    for f in (cfg_path, weights):
        if not f.is_file():
            raise DataError(f, "missing from the adapter folder")
    cfg = read_json_file(cfg_path, "adapter config")
    if not isinstance(cfg, dict):
        raise DataError(cfg_path, f"expected a JSON object, got {type(cfg).__name__}")
    problems = [Problem("missing", field=k) for k in ("num_layers", "lora_parameters") if k not in cfg]
    lora = cfg.get("lora_parameters")
    if "lora_parameters" in cfg and (not isinstance(lora, dict) or not isinstance(lora.get("rank"), int)):
        problems.append(Problem("needs an integer 'rank'", field="lora_parameters"))
    if cfg.get("fine_tune_type", "lora") != "lora":
        problems.append(Problem(f"unsupported fine_tune_type {cfg.get('fine_tune_type')!r}", field="fine_tune_type"))
    if problems:
        raise DataError(cfg_path, problems)
    rank = int(lora["rank"])
    shapes = _safetensors_shapes(weights)
    if not shapes:
        raise DataError(weights, "holds no tensors")
    layers = _model_layers(model)
    for name, shape in sorted(shapes.items()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in ("lora_a", "lora_b"):
            problems.append(Problem("not a LoRA tensor (lora_a/lora_b)", field=name))
        elif len(shape) != 2 or shape[1 if leaf == "lora_a" else 0] != rank:
            problems.append(Problem(f"shape {tuple(shape)} does not fit rank {rank} of {CONFIG_FILE}", field=name))
        m = _LAYER.search(name)
        if layers is not None and m and int(m.group(1)) >= layers:
            problems.append(Problem(f"layer {m.group(1)} does not exist in the model ({layers} layers)", field=name))
    if problems:
        raise DataError(weights, problems)
    return {"path": str(folder), "rank": rank, "tensors": len(shapes)}


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a safetensors header, checked against the file's size."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            shapes = {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"cannot read the safetensors header ({msg}); the file is corrupt or truncated") from None
    return shapes


def check_model(spec: str) -> None:
    """A model spec that can be resolved (file or folder present, known embedded name); no loading."""
    from lekutils.engine.models.specs import resolve

    try:
        resolve(spec)
    except FileNotFoundError as e:
        raise DataError(spec, str(e)) from None


def check_inputs(*, models: Sequence[str] = (), adapters: Iterable[tuple[str | None, PathLike]] | Iterable[PathLike] = (),
                 kernels: Mapping[str, PathLike] | Sequence[PathLike] | None = None) -> None:
    """Validate every model spec, adapter folder and kernel file; raise on the first bad one.

    ``adapters`` are folders, or ``(model spec, folder)`` pairs (the model lets the check compare
    layer counts where cheap).
    """
    from lekutils.data.kernels import read_kernel

    for m in models:
        check_model(m)
    for a in adapters:
        model, folder = a if isinstance(a, tuple) else (models[0] if models else None, a)
        check_adapter(folder, model)
    if kernels:
        for path in (kernels.values() if isinstance(kernels, Mapping) else kernels):
            read_kernel(path)
