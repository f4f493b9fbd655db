"""Next-token sampling for the batched engine: greedy, or temperature + top-p by inverse CDF.

:func:`sample_reference` is the definition (the engine's sampler since its first version, all in
MLX). :func:`sample` returns the same tokens faster: the softmax is MLX's, bit for bit
(:func:`lekutils.engine.fastexp.softmax`), and the nucleus is found in NumPy on the top
:data:`TOP_K` candidates. Why the tokens are the same:

- the sorted candidate probabilities are the same values in the same order whatever the ties
  among them (equal values are interchangeable), so the cumulative sums, the nucleus cut, the
  target ``u * total`` and the sampled POSITION are the same float32 numbers (NumPy's ``cumsum`` of
  float32 is sequential in float32, as MLX's CPU scan is);
- only the token AT that position can differ, and only when its probability equals a neighbour's:
  the reference orders ties by MLX's ``argpartition`` arrangement, this by vocabulary index;
- the reference sorts the whole vocabulary for every row when any row's top-k mass is below top-p
  (same values and positions; ties then by vocabulary index).

So :func:`sample` gives up (returns None) when a row's sampled position has a tied neighbour while
the reference would take its top-k path, or a row's top-k mass lies within :data:`_MARGIN` of top-p (where the reference's summation order could
decide the other way), and the engine then calls :func:`sample_reference` for the whole batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lekutils.engine.base import SamplerSettings

#: candidates sorted for top-p (a full sort when their mass is below top_p)
TOP_K = 1024
#: float32 sums of TOP_K values in two orders differ by far less (1024 x 2**-24 ~ 6e-5)
_MARGIN = 1e-4


def sample_reference(logits: Any, sampler: SamplerSettings, uniforms: np.ndarray | None) -> Any:
    """Next token per row (an MLX array): argmax, or inverse-CDF sampling with the rows' uniforms."""
    import mlx.core as mx

    if sampler.temperature == 0:
        return mx.argmax(logits, axis=-1)
    assert uniforms is not None
    probs = mx.softmax(logits.astype(mx.float32) / sampler.temperature, axis=-1)
    order = None
    if sampler.top_p < 1.0:
        # The nucleus lies within the top-k tokens whenever their mass reaches top_p: then sort
        # only those (exact, and far cheaper than sorting the vocabulary); else sort it all.
        k = min(TOP_K, probs.shape[-1])
        top = mx.argpartition(-probs, k - 1, axis=-1)[:, :k]
        if k < probs.shape[-1] and mx.all(mx.sum(mx.take_along_axis(probs, top, axis=-1), axis=-1)
                                          >= sampler.top_p).item():
            cand = mx.take_along_axis(probs, top, axis=-1)
            sub = mx.argsort(-cand, axis=-1)
            order = mx.take_along_axis(top, sub, axis=-1)
        else:
            order = mx.argsort(-probs, axis=-1)
        probs = mx.take_along_axis(probs, order, axis=-1)
        before = mx.cumsum(probs, axis=-1) - probs
        probs = mx.where(before < sampler.top_p, probs, 0.0)
    cdf = mx.cumsum(probs, axis=-1)
    target = mx.array(uniforms.astype(np.float32))[:, None] * cdf[:, -1:]
    idx = mx.minimum(mx.sum(cdf < target, axis=-1), probs.shape[-1] - 1)
    if order is None:
        return idx
    return mx.take_along_axis(order, idx[:, None], axis=-1)[:, 0]


def _inverse_cdf(sorted_p: np.ndarray, top_p: float, u: np.ndarray) -> np.ndarray:
    """Sampled position per row in descending-sorted probabilities (float32, as the reference)."""
    p = sorted_p
    if top_p < 1.0:
        before = np.cumsum(p, axis=-1, dtype=np.float32) - p
        p = np.where(before < np.float32(top_p), p, np.float32(0.0))
    cdf = np.cumsum(p, axis=-1, dtype=np.float32)
    target = u.astype(np.float32)[:, None] * cdf[:, -1:]
    return np.minimum(np.sum(cdf < target, axis=-1), p.shape[-1] - 1)


def sample(logits: Any, sampler: SamplerSettings, uniforms: np.ndarray | None) -> np.ndarray | None:
    """The tokens :func:`sample_reference` gives (int64 array), or None where that cannot be assured."""
    import mlx.core as mx

    from lekutils.engine.fastexp import softmax

    if sampler.temperature == 0:
        return np.array(mx.argmax(logits, axis=-1)).astype(np.int64)
    assert uniforms is not None
    P = np.asarray(softmax(logits.astype(mx.float32), sampler.temperature))
    rows, V = P.shape
    if sampler.top_p >= 1.0:
        return _inverse_cdf(P, 1.0, uniforms).astype(np.int64)
    k = min(TOP_K, V)
    if k < V:
        top = np.sort(np.argpartition(-P, k - 1, axis=-1)[:, :k], axis=-1)  # ties: by vocabulary index
        cand = np.take_along_axis(P, top, axis=-1)
        order = np.take_along_axis(top, np.argsort(-cand, axis=-1, kind="stable"), axis=-1)
    else:
        order = np.argsort(-P, axis=-1, kind="stable")
    sp = np.take_along_axis(P, order, axis=-1)
    full_sort = k >= V
    if not full_sort:
        mass = np.cumsum(sp, axis=-1, dtype=np.float32)[:, -1]
        if np.any(np.abs(mass - np.float32(sampler.top_p)) < _MARGIN):
            return None
        if np.any(mass < sampler.top_p):  # the reference sorts the whole vocabulary (all rows)
            full_sort = True
            order = np.argsort(-P, axis=-1, kind="stable")
            sp = np.take_along_axis(P, order, axis=-1)
    idx = _inverse_cdf(sp, sampler.top_p, uniforms)
    if full_sort:  # ties ordered by vocabulary index here and there
        return order[np.arange(rows), idx].astype(np.int64)
    at = sp[np.arange(rows), idx]
    left = sp[np.arange(rows), np.maximum(idx - 1, 0)]
    right = sp[np.arange(rows), np.minimum(idx + 1, sp.shape[-1] - 1)]
    tied = ((idx > 0) & (left == at)) | ((idx + 1 < sp.shape[-1]) & (right == at))
    if np.any(tied):
        return None
    return order[np.arange(rows), idx].astype(np.int64)
