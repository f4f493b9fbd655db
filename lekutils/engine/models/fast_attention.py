"""Prefill attention on x86_64 CPUs: MLX's own fallback, op for op, with a faster softmax (same bits).

On CPUs ``mx.fast.scaled_dot_product_attention`` runs MLX's generic fallback (``mlx/fast.cpp``):
``scale * q``, grouped-query reshape, ``q @ k^T``, the causal or given mask, a float32 softmax,
``@ v``. Its softmax evaluates one scalar ``exp`` per score (~15 ns each on the 2-core EPYC), so
prefilling a 2k-token kernel spent about half its time there. :func:`sdpa` issues the same ops in
the same order except that the softmax is :func:`lekutils.engine.fastexp.softmax` (bit for bit
MLX's, vectorised by the native JIT), so every result is unchanged: ``tests/test_fast_attention.py``
compares the outputs bit for bit against ``mx.fast.scaled_dot_product_attention`` for causal,
boolean, additive and windowed masks with grouped-query heads; the golden texts hold.

Used only while :func:`active` (the engine's generation, see :meth:`lekutils.engine.local.Engine.generate`):
its gradients would not be those of MLX's primitive, so training keeps ``mx.fast``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()


@contextmanager
def active() -> Iterator[None]:
    """Route eligible attention calls (graphs built in this thread, in this block) to :func:`sdpa`."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def enabled() -> bool:
    """Whether this thread is inside :func:`active`."""
    return bool(getattr(_state, "on", False))


def applies(queries: Any, keys: Any, sinks: Any, cache: Any) -> bool:
    """Float32 on an x86_64 CPU with the native JIT, no attention sinks, no quantized cache."""
    import mlx.core as mx

    from lekutils.engine.fastexp import native

    return (sinks is None and not hasattr(cache, "bits") and queries.dtype == mx.float32
            and keys.dtype == mx.float32 and native(queries))


def sdpa(queries: Any, keys: Any, values: Any, scale: float, mask: Any) -> Any:
    """``mx.fast.scaled_dot_product_attention(queries, keys, values, scale=, mask=)``, same bits."""
    import mlx.core as mx

    from lekutils.engine.fastexp import softmax

    B, n_q, L, _ = queries.shape
    n_kv = keys.shape[1]
    rep = n_q // n_kv
    q = mx.array(scale, queries.dtype) * queries
    k, v = keys, values
    if rep > 1:
        q = q.reshape(B, n_kv, rep, L, -1)
        k = mx.expand_dims(k, 2)
        v = mx.expand_dims(v, 2)
    scores = q @ mx.swapaxes(k, -1, -2)
    if mask is not None:
        kL = k.shape[-2]
        if isinstance(mask, str):
            if mask != "causal":
                raise ValueError(f"unknown attention mask {mask!r}")
            off = max(kL - L, 0)
            m = mx.arange(off, off + L)[:, None] >= mx.arange(0, kL)[None, :]
        else:
            m = mask if mask.dtype == mx.bool_ else mask.astype(queries.dtype)
            m = mx.broadcast_to(m, (*queries.shape[:-1], kL))
            if rep > 1:
                m = m.reshape(B, n_kv, rep, L, kL)
        if m.dtype == mx.bool_:
            scores = mx.where(m, scores, mx.array(-float("inf"), scores.dtype))
        else:
            scores = scores + m
    out = softmax(scores) @ v
    if rep > 1:
        out = out.reshape(B, n_q, L, -1)
    return out
