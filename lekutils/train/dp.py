"""The in-process side of data-parallel training: ranks, broadcasts, batch sharding, the sharded loss.

Used by :mod:`lekutils.train.loop` when the process runs in an MLX distributed group of N > 1
processes (started by ``mlx.launch``; see :mod:`lekutils.train.distributed` for the launcher).

Global batch semantics: ``PhaseConfig.batch_size`` is the *global* batch (mlx-lm's convention).
Every rank builds the same global batch (same seeded order, same padding) and keeps every N-th
row (rank r: rows r, r+N, ...: mlx-lm's sharding), so each process trains ``batch_size / N``
examples per step. Its loss is its share of the global token-weighted loss (its tokens'
cross-entropy sum x N / the global batch's token count), so mlx-lm's gradient averaging
(``mlx.nn.utils.average_gradients``: all-sum / N) gives exactly the one-process gradient of the
whole batch: N processes x ``batch_size/N`` rows == one process x ``batch_size`` rows, up to float
rounding. (mlx-lm's own ``default_loss`` averages per rank, which weights ranks equally whatever
their token counts; the sharded loss removes that difference.) LoRA dropout masks are drawn per
process, so with ``dropout > 0`` the runs agree in distribution, not bitwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn


def world() -> Any:
    """The MLX distributed group of this process (size 1 when not launched by ``mlx.launch``)."""
    return mx.distributed.init()


def rank_size() -> tuple[int, int]:
    g = world()
    return g.rank(), g.size()


def broadcast_ints(values: list[int]) -> list[int]:
    """Rank 0's ``values`` on every rank (ints; the others' inputs are ignored)."""
    rank, size = rank_size()
    if size == 1:
        return [int(v) for v in values]
    arr = mx.array([int(v) if rank == 0 else 0 for v in values], dtype=mx.int64)
    out = mx.distributed.all_sum(arr, stream=mx.cpu)
    return [int(v) for v in out.tolist()]


def broadcast_arrays(arrays: dict[str, mx.array]) -> dict[str, mx.array]:
    """Rank 0's arrays on every rank (every rank passes arrays of the same names, shapes and dtypes)."""
    rank, size = rank_size()
    if size == 1:
        return arrays
    out = {}
    for k, v in arrays.items():
        out[k] = mx.distributed.all_sum(v if rank == 0 else mx.zeros_like(v), stream=mx.cpu)
    mx.eval(out)
    return out


def barrier() -> None:
    """Wait until every rank gets here."""
    if rank_size()[1] > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1), stream=mx.cpu))


def target_tokens(batch: mx.array, lengths: mx.array) -> mx.array:
    """Tokens that count in mlx-lm's ``default_loss`` for a padded batch (its mask, summed)."""
    steps = mx.arange(1, batch.shape[1])
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
    return mask.sum()


def shard(batches: Iterator[tuple[mx.array, mx.array]], rank: int, size: int) -> Iterator[tuple[mx.array, ...]]:
    """Rows ``rank::size`` of each global batch, with the global batch's target-token count."""
    for batch, lengths in batches:
        if batch.shape[0] % size:
            raise ValueError(f"batch of {batch.shape[0]} rows does not split over {size} processes")
        total = target_tokens(batch, lengths)
        yield batch[rank::size], lengths[rank::size], total


def sharded_loss(size: int) -> Any:
    """mlx-lm's loss, scaled so that the average over ``size`` ranks is the global batch's loss."""

    def loss(model: nn.Module, batch: mx.array, lengths: mx.array, total_tokens: mx.array) -> tuple:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(inputs)
        steps = mx.arange(1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        ce = nn.losses.cross_entropy(logits, targets) * mask
        ntoks = mask.sum()
        return ce.astype(mx.float32).sum() * (size / total_tokens.astype(mx.float32)), ntoks

    return loss
