"""LoRA adapters in mlx-lm's layout: LoRA layers, checked loading, parameter counts, atomic saves.

:func:`load_adapter` is a checked equivalent of ``mlx_lm.tuner.utils.load_adapters``: an
:class:`AdapterError` names the file and each missing, unexpected or misshaped tensor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import read_json_file

ADAPTER_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
LORA_LEAVES = ("lora_a", "lora_b")


class AdapterError(DataError):
    """An adapter file that is unreadable or does not fit the model (names file and tensors)."""


def save_safetensors_atomic(path: Path, arrays: dict[str, mx.array]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (quantized weights counted as stored elements)."""
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    return trainable, total


def lora_parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the model's LoRA tensors (``...lora_a`` / ``...lora_b``)."""
    return {k: tuple(v.shape) for k, v in tree_flatten(model.parameters()) if k.rsplit(".", 1)[-1] in LORA_LEAVES}


def apply_lora(model: nn.Module, num_layers: int, lora_parameters: Mapping[str, Any]) -> nn.Module:
    """Freeze the model and turn its last ``num_layers`` blocks' linears into LoRA layers (mlx-lm)."""
    n = len(model.layers)
    if num_layers > n:
        raise ValueError(f"num_layers={num_layers} but the model has only {n} layers")
    model.freeze()
    linear_to_lora_layers(model, num_layers, dict(lora_parameters))
    return model


def check_frozen_base(model: nn.Module) -> int:
    """Return the trainable count after checking that only LoRA tensors are trainable."""
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    bad = [k for k in names if k.rsplit(".", 1)[-1] not in LORA_LEAVES]
    if bad:
        raise RuntimeError(f"base model not frozen: {len(bad)} non-LoRA trainable tensors, e.g. {bad[:3]}")
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    expected = sum(int(np.prod(s)) for s in lora_parameter_shapes(model).values())
    if trainable != expected or trainable == 0:
        raise RuntimeError(f"trainable parameters {trainable} != LoRA parameters {expected}")
    return trainable


def read_adapter_config(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.exists():
        raise AdapterError(path, "adapter config not found")
    try:
        cfg = read_json_file(path, "adapter config")
    except DataError as e:  # bad UTF-8, bad JSON, repeated keys: file and line
        raise AdapterError(e.path, e.problems) from None
    problems = [Problem("missing", field=k) for k in ("num_layers", "lora_parameters") if k not in cfg]
    if cfg.get("fine_tune_type", "lora") != "lora":
        problems.append(Problem(f"unsupported fine_tune_type {cfg.get('fine_tune_type')!r}", field="fine_tune_type"))
    if problems:
        raise AdapterError(path, problems)
    return cfg


def load_adapter_weights(model: nn.Module, weights_file: str | os.PathLike[str]) -> dict[str, mx.array]:
    """Load LoRA tensors into a model that already has its LoRA layers, checking every tensor.

    Raises :class:`AdapterError` naming the file and each missing, unexpected or misshaped tensor.
    """
    path = Path(weights_file)
    if not path.exists():
        raise AdapterError(path, "adapter weights not found")
    try:
        weights = mx.load(str(path))
    except Exception as e:  # noqa: BLE001 - mlx raises RuntimeError/ValueError for bad files
        raise AdapterError(path, f"cannot read safetensors ({type(e).__name__}: {e}); the file is corrupt") from e
    if not isinstance(weights, dict):
        raise AdapterError(path, "not a safetensors tensor dictionary")
    want = lora_parameter_shapes(model)
    problems = []
    for name in sorted(set(want) - set(weights)):
        problems.append(Problem(f"missing tensor (model expects shape {want[name]})", field=name))
    for name in sorted(set(weights) - set(want)):
        problems.append(Problem(f"unexpected tensor of shape {tuple(weights[name].shape)} (not a LoRA tensor "
                                "of this model/config)", field=name))
    for name in sorted(set(weights) & set(want)):
        if tuple(weights[name].shape) != want[name]:
            problems.append(Problem(f"shape {tuple(weights[name].shape)} does not match the model's {want[name]}",
                                    field=name))
    if problems:
        raise AdapterError(path, problems)
    model.load_weights(list(weights.items()), strict=False)
    mx.eval(model.parameters())
    return weights


def load_adapter(model: nn.Module, adapter_dir: str | os.PathLike[str]) -> nn.Module:
    """Checked equivalent of ``mlx_lm.tuner.utils.load_adapters``: LoRA layers from the config, then
    :func:`load_adapter_weights` (precise errors instead of a generic one)."""
    cfg = read_adapter_config(adapter_dir)
    apply_lora(model, int(cfg["num_layers"]), cfg["lora_parameters"])
    load_adapter_weights(model, Path(adapter_dir) / ADAPTER_FILE)
    return model

