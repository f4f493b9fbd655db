"""Resumable step checkpoints of a phase, and the seeds and batch order that make resume exact.

A checkpoint is mlx-lm's adapter file for the step (``0000025_adapters.safetensors``), the optimizer
state (``0000025_optimizer.safetensors``: ``tree_flatten(optimizer.state)``, Adam's moments and the
update counter that drives the learning-rate schedule) and ``0000025_state.json`` (written last: the
commit mark, with the hashes of both files). A resumed run restores the newest intact checkpoint,
skips the batches already consumed (:func:`make_iterate_batches`) and re-seeds MLX's RNG as the
uninterrupted run did at that step (:func:`rng_seed`). :func:`resume_key` identifies a phase's
config, data and previous adapter, so checkpoints of another setup are never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path
from mlx_lm.tuner.trainer import iterate_batches as mlx_iterate_batches

from lekutils.core.errors import Problem
from lekutils.core.hashing import sha256_file
from lekutils.core.jsonl import atomic_write_json
from lekutils.train.adapters import ADAPTER_FILE, AdapterError, save_safetensors_atomic
from lekutils.train.config import PhaseConfig

log = logging.getLogger(__name__)


def _ckpt_paths(out_dir: Path, step: int) -> tuple[Path, Path, Path]:
    return (out_dir / f"{step:07d}_{ADAPTER_FILE}", out_dir / f"{step:07d}_optimizer.safetensors",
            out_dir / f"{step:07d}_state.json")


def save_checkpoint(out_dir: Path, step: int, model: nn.Module, optimizer: optim.Optimizer,
                    extra: Mapping[str, Any]) -> Path:
    """Save weights, optimizer state and a ``state.json`` commit mark for ``step``."""
    w_path, o_path, s_path = _ckpt_paths(out_dir, step)
    save_safetensors_atomic(w_path, dict(tree_flatten(model.trainable_parameters())))
    ostate = dict(tree_flatten(optimizer.state))
    if ostate:
        save_safetensors_atomic(o_path, ostate)
    atomic_write_json(s_path, {"step": step, **extra, "adapters": w_path.name,
                               "adapters_sha256": sha256_file(w_path),
                               "optimizer": o_path.name if ostate else None,
                               "optimizer_sha256": sha256_file(o_path) if ostate else None})
    return s_path


def checkpoint_steps_on_disk(out_dir: Path) -> list[int]:
    """Steps of the checkpoints in ``out_dir`` (by their ``state.json`` commit marks), oldest first."""
    steps = []
    for s_path in out_dir.glob("*_state.json"):
        head = s_path.name.split("_", 1)[0]
        if head.isdigit():
            steps.append(int(head))
    return sorted(steps)


def prune_checkpoints(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints (0 keeps all); return the deleted files.

    The commit mark (``state.json``) goes first, so an interrupted prune never leaves a checkpoint
    that looks complete. The final adapter (``adapters.safetensors``) is not a step checkpoint.
    """
    if keep <= 0:
        return []
    gone: list[Path] = []
    for step in checkpoint_steps_on_disk(out_dir)[:-keep]:
        w_path, o_path, s_path = _ckpt_paths(out_dir, step)
        for p in (s_path, w_path, o_path):
            try:
                p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass
    return gone


def clean_temp_files(out_dir: Path) -> list[Path]:
    """Delete temporary files that a killed save left in a phase folder (``.*.tmp.safetensors``,
    ``.*.tmp``); call it only while holding the folder's lock. Returns the deleted files."""
    gone = []
    for pattern in (".*.tmp.safetensors", ".*.tmp"):
        for p in out_dir.glob(pattern):
            try:
                p.unlink()
                gone.append(p)
            except OSError:
                pass
    return gone


def latest_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint whose ``state.json`` and files are intact (corrupt ones are skipped)."""
    for s_path in sorted(out_dir.glob("*_state.json"), reverse=True):
        try:
            state = json.loads(s_path.read_text())
            w_path = out_dir / state["adapters"]
            if sha256_file(w_path) != state["adapters_sha256"]:
                raise ValueError(f"{w_path.name} does not match its hash")
            if state.get("optimizer") and sha256_file(out_dir / state["optimizer"]) != state["optimizer_sha256"]:
                raise ValueError(f"{state['optimizer']} does not match its hash")
        except (OSError, ValueError, KeyError) as e:
            log.warning("skipping checkpoint %s: %s", s_path.name, e)
            continue
        return state
    return None


def restore_optimizer(optimizer: optim.Optimizer, model: nn.Module, path: Path) -> None:
    """Initialise ``optimizer`` for the model's trainable tensors and fill it from ``path``."""
    optimizer.init(model.trainable_parameters())
    saved = mx.load(str(path))
    have = dict(tree_flatten(optimizer.state))
    missing = sorted(set(have) - set(saved))
    extra = sorted(set(saved) - set(have))
    if missing or extra:
        raise AdapterError(path, [Problem("missing optimizer tensor", field=k) for k in missing]
                           + [Problem("unexpected optimizer tensor", field=k) for k in extra])
    optimizer.state = tree_map_with_path(lambda p, _: saved[p], optimizer.state)


def rng_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step)) % (2**31)


def make_iterate_batches(seed: int, skip: int) -> Callable[..., Iterator]:
    """mlx-lm's ``iterate_batches`` with a private seeded RNG for the training order (validation
    cannot shift it) that skips the first ``skip`` training batches (already consumed).

    In a group of N > 1 processes (``comm_group``) every rank draws the same global batch and keeps
    its rows (:func:`lekutils.train.dp.shard`: ``(rows, lengths, global token count)``, for
    :func:`lekutils.train.dp.sharded_loss`), so the order does not depend on N."""

    def iterate(dataset, batch_size, max_seq_length, loop=False, comm_group=None, **_kw):
        size = comm_group.size() if comm_group is not None else 1
        if not loop:
            return mlx_iterate_batches(dataset, batch_size, max_seq_length, loop=loop, comm_group=comm_group)
        gen = _private(mlx_iterate_batches(dataset, batch_size, max_seq_length, loop=loop, comm_group=None))
        if size > 1:
            from lekutils.train.dp import shard

            return shard(gen, comm_group.rank(), size)
        return gen

    def _private(gen: Iterator) -> Iterator:
        state = np.random.RandomState(seed).get_state()
        n = 0
        while True:
            outer = np.random.get_state()
            np.random.set_state(state)
            try:
                batch = next(gen)
            finally:
                state = np.random.get_state()
                np.random.set_state(outer)
            n += 1
            if n > skip:
                yield batch

    return iterate



#: PhaseConfig fields that do not change what is trained (left out of the resume key).
NOT_IN_RESUME_KEY = ("keep_checkpoints",)


def resume_key(cfg: PhaseConfig, data: Mapping[str, Any], prev: Mapping[str, Any] | None) -> str:
    config = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_RESUME_KEY}
    blob = json.dumps({"config": config, "data": {k: v["sha256"] for k, v in data.items()},
                       "previous": prev and prev.get("adapters_sha256")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

