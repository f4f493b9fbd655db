"""Next-token sampling for the batched engine: greedy, or temperature + top-p by inverse CDF.

:func:`sample_reference` is the definition (the engine's sampler since its first version, all in
MLX: softmax, ``argpartition`` of the top :data:`TOP_K`, sort, nucleus, inverse CDF; a sort of the
whole vocabulary of every row when some row's top-k mass is below top-p). :func:`sample` returns the
same tokens 3-6x faster: the softmax is MLX's, bit for bit (:func:`lekutils.engine.fastexp.softmax_numpy`),
and the nucleus is found in NumPy among each row's candidates (tokens above a threshold that leaves
out less than ``1 - top_p - 0.01`` of the mass; the top-k route where rows are too flat for that to
pay). Why the tokens are the same:

- the sorted candidate probabilities are the same values in the same order whatever the ties
  among them (equal values are interchangeable), so the cumulative sums, the nucleus cut, the
  target ``u * total`` and the sampled POSITION are the same float32 numbers (NumPy's ``cumsum`` of
  float32 is sequential in float32, as MLX's CPU scan is; positions past the nucleus add nothing);
- only the token AT that position can differ, and only when its probability equals a neighbour's:
  the reference's top-k path orders ties by MLX's ``argpartition`` arrangement, this by token id
  (as the reference's whole-vocabulary sort does).

So :func:`sample` gives up (returns None) when the reference would take its top-k path and a row's
sampled position has a tied neighbour, or when a row's top-k mass lies within :data:`_MARGIN` of
top-p (where the reference's summation order could decide the path the other way); the engine then
calls :func:`sample_reference` for the whole batch (``last_stats["sampling_fallbacks"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lekutils.engine.base import SamplerSettings

#: candidates sorted for top-p (a full sort when their mass is below top_p)
TOP_K = 1024
#: mean candidates per row above which the top-k route is cheaper than sorting the candidates
_MAX_CANDIDATES = 4096
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


def _top(P: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most likely tokens by (probability desc, token id asc) and their probabilities."""
    if k >= P.shape[-1]:
        order = np.argsort(-P, axis=-1, kind="stable")
    else:
        top = np.sort(np.argpartition(-P, k - 1, axis=-1)[:, :k], axis=-1)
        cand = np.take_along_axis(P, top, axis=-1)
        order = np.take_along_axis(top, np.argsort(-cand, axis=-1, kind="stable"), axis=-1)
    return order, np.take_along_axis(P, order, axis=-1)


def _pick(order: np.ndarray, sp: np.ndarray, top_p: float, u: np.ndarray) -> np.ndarray:
    return order[np.arange(len(order)), _inverse_cdf(sp, top_p, u)]


def _candidates(P: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row the tokens where ``keep`` by (probability desc, token id asc), zero-padded to the
    longest row: (token ids, probabilities, count per row)."""
    r, c = np.nonzero(keep)
    v = P[r, c]
    o = np.lexsort((c, -v, r))
    r, c, v = r[o], c[o], v[o]
    rows = P.shape[0]
    count = np.bincount(r, minlength=rows)
    pos = np.arange(r.size) - np.concatenate([[0], np.cumsum(count)[:-1]])[r]
    width = max(int(count.max()), 1)
    order = np.zeros((rows, width), np.int64)
    sp = np.zeros((rows, width), np.float32)
    order[r, pos] = c
    sp[r, pos] = v
    return order, sp, count


def sample(logits: Any, sampler: SamplerSettings, uniforms: np.ndarray | None) -> np.ndarray | None:
    """The tokens :func:`sample_reference` gives (int64 array), or None where that cannot be assured.

    Candidates: the tokens with p >= (1 - top_p - 0.01) / vocabulary, a prefix of each row's sorted
    vocabulary holding more than top_p + 0.01 of its mass (what is left out holds less than
    1 - top_p - 0.01), so the nucleus lies inside it; one pass and one small sort instead of an
    ``argpartition`` of the vocabulary. Where top_p > 0.99 the top-k route (:func:`_sample_topk`).
    """
    import mlx.core as mx

    from lekutils.engine.fastexp import softmax_numpy

    if sampler.temperature == 0:
        return np.array(mx.argmax(logits, axis=-1)).astype(np.int64)
    assert uniforms is not None
    P = softmax_numpy(logits.astype(mx.float32), sampler.temperature)
    rows, V = P.shape
    top_p = sampler.top_p
    if top_p >= 1.0:
        return _inverse_cdf(P, 1.0, uniforms).astype(np.int64)
    k = min(TOP_K, V)
    thr = (1.0 - top_p - 0.01) / V
    if k >= V or thr <= 0:
        return _sample_topk(P, top_p, uniforms)
    keep = P >= np.float32(thr)
    if np.count_nonzero(keep) > rows * _MAX_CANDIDATES:  # flat rows: sorting them all costs more
        return _sample_topk(P, top_p, uniforms)
    order, sp, count = _candidates(P, keep)
    cum = np.cumsum(sp, axis=-1, dtype=np.float32)
    at = np.arange(rows)
    if np.any(cum[at, count - 1] < top_p + _MARGIN):  # cannot happen but by rounding: the slow route
        return _sample_topk(P, top_p, uniforms)
    # the reference's choice: top-k path when every row's top-k mass reaches top_p (rows with fewer
    # than k candidates: their candidates alone do)
    mass = np.where(count >= k, cum[:, min(k, cum.shape[1]) - 1], np.float32(np.inf))
    if np.any(np.abs(mass - np.float32(top_p)) < _MARGIN):
        return None
    idx = _inverse_cdf(sp, top_p, uniforms)
    if np.all(mass >= top_p):  # ties in the reference's own arrangement: give up on a tied position
        val = sp[at, idx]  # (past a row's candidates nothing ties: those tokens are below thr)
        tied = (((idx > 0) & (sp[at, np.maximum(idx - 1, 0)] == val))
                | ((idx + 1 < count) & (sp[at, np.minimum(idx + 1, sp.shape[1] - 1)] == val)))
        if np.any(tied):
            return None
    return order[at, idx]


def _sample_topk(P: np.ndarray, top_p: float, uniforms: np.ndarray) -> np.ndarray | None:
    """:func:`sample` from each row's top :data:`TOP_K` (widened x8 where a row needs more)."""
    rows, V = P.shape
    k = min(TOP_K, V)
    order, sp = _top(P, k)
    if k >= V:  # the reference sorts the whole vocabulary: ties by token id there and here
        return _pick(order, sp, top_p, uniforms).astype(np.int64)
    mass = np.cumsum(sp, axis=-1, dtype=np.float32)[:, -1]
    if np.any(np.abs(mass - np.float32(top_p)) < _MARGIN):
        return None
    short = mass < top_p
    if not short.any():  # the reference's top-k path: ties in its own arrangement
        idx = _inverse_cdf(sp, top_p, uniforms)
        at = np.arange(rows)
        val = sp[at, idx]
        tied = (((idx > 0) & (sp[at, np.maximum(idx - 1, 0)] == val))
                | ((idx + 1 < k) & (sp[at, np.minimum(idx + 1, k - 1)] == val)))
        return None if np.any(tied) else order[at, idx].astype(np.int64)
    # The reference sorts the whole vocabulary of every row (ties by token id, as here). A row whose top
    # k already holds top_p + margin gives the same position from them; the others widen k (x8) until
    # theirs does (positions past it are cut from the nucleus there too) or the whole row is sorted.
    toks = np.empty(rows, np.int64)
    toks[~short] = _pick(order[~short], sp[~short], top_p, uniforms[~short])
    rest = np.flatnonzero(short)
    while rest.size:
        k = min(k * 8, V)
        order, sp = _top(P[rest], k)
        enough = (np.cumsum(sp, axis=-1, dtype=np.float32)[:, -1] >= top_p + _MARGIN) if k < V \
            else np.ones(rest.size, bool)
        toks[rest[enough]] = _pick(order[enough], sp[enough], top_p, uniforms[rest[enough]])
        rest = rest[~enough]
    return toks
