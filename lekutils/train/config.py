"""The knobs of one curriculum phase (:class:`PhaseConfig`): the single source of their defaults.

The defaults are the curriculum's values for Gemma3-27B (DESIGN.md). The training notebook
(``notebooks/20_train_phase.ipynb``) declares the same defaults in its parameters cell, checked
equal by ``tests/test_train_notebook.py``; profiles override them in ``params/<profile>/curriculum.yaml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lekutils.core.errors import DataError, Problem


@dataclass
class PhaseConfig:
    """All knobs of one curriculum phase (the 27B values are the curriculum's, see DESIGN.md).

    ``iters`` counts mlx-lm iterations (micro-batches). ``lr_schedule`` is mlx-lm's schedule dict
    (``{"name": "cosine_decay", "arguments": [1.0e-5, 10, 1.0e-6], "warmup": 2}``); None means a
    constant ``learning_rate``. ``val_batches=-1`` validates on the whole validation set.
    ``keep_checkpoints`` step checkpoints are kept (the newest; 0 keeps all), besides the final
    adapter; it does not change what is trained, so it is not part of the resume key.
    """

    phase: int = 0
    iters: int = 50
    learning_rate: float = 5.0e-6
    lr_schedule: dict[str, Any] | None = None
    rank: int = 16
    dropout: float = 0.05
    scale: float = 16.0
    num_layers: int = 32
    keys: list[str] | None = None
    batch_size: int = 1
    grad_accumulation: int = 8
    grad_checkpoint: bool = True
    max_seq_length: int = 4096
    optimizer: str = "adam"
    val_every: int = 10
    val_batches: int = 25
    checkpoint_every: int = 25
    keep_checkpoints: int = 2
    mask_prompt: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("iters", "rank", "batch_size", "grad_accumulation", "max_seq_length", "val_every",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                problems.append(Problem(f"must be >= 1, got {getattr(self, name)!r}", field=name))
        if int(self.keep_checkpoints) < 0:
            problems.append(Problem(f"must be >= 0 (0 keeps all), got {self.keep_checkpoints!r}",
                                    field="keep_checkpoints"))
        if not 0.0 <= float(self.dropout) < 1.0:
            problems.append(Problem(f"must be in [0, 1), got {self.dropout!r}", field="dropout"))
        if self.optimizer.lower() not in ("adam", "adamw"):
            problems.append(Problem(f"unsupported optimizer {self.optimizer!r} (adam, adamw)", field="optimizer"))
        if self.lr_schedule is not None and "name" not in self.lr_schedule:
            problems.append(Problem("needs 'name' and 'arguments' (mlx-lm schedule)", field="lr_schedule"))
        if problems:
            raise DataError("PhaseConfig", problems)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> PhaseConfig:
        """Build from a parameter mapping, ignoring keys that are not config fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        vals = {k: v for k, v in {**params, **overrides}.items() if k in names}
        for k in ("learning_rate", "dropout", "scale"):
            if k in vals:
                vals[k] = float(vals[k])
        return cls(**vals)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lora_parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": int(self.rank), "dropout": float(self.dropout), "scale": float(self.scale)}
        if self.keys:
            out["keys"] = list(self.keys)
        return out

    def checkpoint_steps(self) -> list[int]:
        """Steps that save a resumable checkpoint (update boundaries, and the last step)."""
        acc = int(self.grad_accumulation)
        steps = set()
        for k in range(self.checkpoint_every, self.iters + 1, self.checkpoint_every):
            s = -(-k // acc) * acc
            if s <= self.iters:
                steps.add(s)
        steps.add(int(self.iters))
        return sorted(steps)

    def val_steps(self) -> list[int]:
        """Steps after which the validation loss is computed (0 = before training)."""
        return sorted({0, *range(self.val_every, self.iters + 1, self.val_every), int(self.iters)})

    def mlx_lm_config(self, model: str, data: str, adapter_path: str) -> dict[str, Any]:
        """The equivalent ``mlx_lm.lora`` YAML config (used for adapter_config.json and the bench)."""
        return {
            "model": model, "train": True, "data": data, "fine_tune_type": "lora",
            "optimizer": self.optimizer.lower(), "num_layers": int(self.num_layers),
            "batch_size": int(self.batch_size), "iters": int(self.iters), "val_batches": int(self.val_batches),
            "learning_rate": float(self.learning_rate), "lr_schedule": self.lr_schedule,
            "steps_per_eval": int(self.val_every), "save_every": int(self.checkpoint_every),
            "adapter_path": adapter_path, "max_seq_length": int(self.max_seq_length),
            "grad_checkpoint": bool(self.grad_checkpoint), "grad_accumulation_steps": int(self.grad_accumulation),
            "lora_parameters": self.lora_parameters(), "mask_prompt": bool(self.mask_prompt), "seed": int(self.seed),
        }

