"""lekutils.engine.models.fast_attention: MLX's CPU attention fallback with a faster softmax, same bits."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from lekutils.engine.models import fast_attention  # noqa: E402


def _qkv(rng, B, n_q, n_kv, L, kL, D=64):
    def arr(*shape):
        return mx.array((rng.standard_normal(shape) * 2).astype(np.float32))

    return arr(B, n_q, L, D), arr(B, n_kv, kL, D), arr(B, n_kv, kL, D)


def _masks(rng, B, L, kL):
    yield None
    yield "causal"
    yield mx.array(rng.random((B, 1, L, kL)) > 0.3) | mx.array(np.eye(L, kL, kL - L, dtype=bool))  # boolean rows
    yield mx.array((rng.standard_normal((L, kL)) * 3).astype(np.float32))  # additive
    q_idx, k_idx = np.arange(kL - L, kL)[:, None], np.arange(kL)[None]  # a sliding window of 16
    yield mx.array((q_idx >= k_idx) & (q_idx < k_idx + 16))


@pytest.mark.parametrize(("B", "n_q", "n_kv", "L", "kL"), [(1, 9, 3, 37, 37), (1, 9, 3, 40, 700), (2, 4, 1, 5, 33),
                                                           (3, 8, 8, 1, 50), (1, 4, 2, 64, 64)])
def test_same_bits_as_mx_fast_sdpa(B, n_q, n_kv, L, kL):
    rng = np.random.default_rng(B * 100 + L)
    q, k, v = _qkv(rng, B, n_q, n_kv, L, kL)
    if not fast_attention.applies(q, k, None, None):
        pytest.skip("needs float32 on an x86_64 CPU with the native JIT")
    for mask in _masks(rng, B, L, kL):
        want = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask=mask)
        got = fast_attention.sdpa(q, k, v, 0.125, mask)
        assert got.shape == want.shape
        assert (np.array(got).view(np.int32) == np.array(want).view(np.int32)).all(), type(mask)


def test_applies_only_where_it_is_exact():
    q = mx.zeros((1, 2, 3, 8))
    assert not fast_attention.applies(q.astype(mx.float16), q.astype(mx.float16), None, None)
    assert not fast_attention.applies(q, q, mx.zeros((2,)), None)  # attention sinks

    class Quantized:
        bits = 4

    assert not fast_attention.applies(q, q, None, Quantized())
    with pytest.raises(ValueError, match="unknown attention mask"):
        fast_attention.sdpa(q, q, q, 1.0, "sliding")
