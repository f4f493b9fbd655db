"""lekutils.engine.fastexp: the same bits as mx.exp (its speed is measured by ``lekutils bench generate``)."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from lekutils.engine import fastexp  # noqa: E402


def _bits(a) -> np.ndarray:
    return np.array(a).view(np.int32)


@pytest.mark.parametrize("scale", [1.0, 10.0, 60.0])
def test_exp_is_bit_identical_to_mlx(scale):
    x = mx.array((np.random.default_rng(int(scale)).standard_normal(1_000_000) * scale).astype(np.float32))
    assert (_bits(fastexp.exp(x)) == _bits(mx.exp(x))).all()


def test_exp_edges_dtypes_and_views():
    edge = np.array([0.0, -0.0, 88.0, 88.0001, -88.0, -88.0001, -87.5, -87.7, 87.9, np.nan, np.inf, -np.inf,
                     1e-30, -1e-30, 0.5, -0.5, -1.5, 2.5], np.float32)
    x = mx.array(np.concatenate([edge, np.linspace(-100, 100, 200_001, dtype=np.float32)]))
    assert (_bits(fastexp.exp(x)) == _bits(mx.exp(x))).all()
    grid = mx.array(np.random.default_rng(1).standard_normal((6, 50)).astype(np.float32))
    part = grid[:, 3:41]  # a strided view
    assert (_bits(fastexp.exp(part)) == _bits(mx.exp(part))).all()
    half = grid.astype(mx.float16)  # other dtypes: mx.exp itself
    assert np.array_equal(np.array(fastexp.exp(half)), np.array(mx.exp(half)))
    assert fastexp.exp(mx.zeros((0,))).shape == (0,)
