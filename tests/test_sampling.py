"""lekutils.engine.sampling: the fast sampler gives the reference sampler's tokens, or says it cannot."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from lekutils.engine import fastexp  # noqa: E402
from lekutils.engine.base import SamplerSettings  # noqa: E402
from lekutils.engine.sampling import TOP_K, sample, sample_reference  # noqa: E402


def _logits(rng: np.random.Generator, rows: int, vocab: int, spread: float) -> mx.array:
    """Model-like logits: a few strong tokens over a long tail (``spread`` sets how flat)."""
    x = rng.standard_normal((rows, vocab)).astype(np.float32) * spread
    strong = rng.integers(0, vocab, (rows, 8))
    np.put_along_axis(x, strong, np.take_along_axis(x, strong, axis=-1) + rng.uniform(2, 8, (rows, 8)), axis=-1)
    return mx.array(x.astype(np.float32))


@pytest.mark.parametrize(("temperature", "top_p", "spread"), [
    (0.8, 0.95, 1.0), (0.8, 0.95, 3.0), (1.0, 0.9, 0.3), (0.7, 1.0, 2.0), (1.3, 0.5, 1.5), (0.0, 1.0, 1.0)])
def test_same_tokens_as_reference(temperature, top_p, spread):
    rng = np.random.default_rng(int(spread * 10 + top_p * 100))
    s = SamplerSettings(temperature=temperature, top_p=top_p)
    fallbacks = 0
    for step in range(12):
        logits = _logits(rng, 16, 4096 if step % 2 else 49152, spread)
        u = rng.random(16)
        got = sample(logits, s, u)
        want = sample_reference(logits, s, u).tolist()
        if got is None:
            fallbacks += 1
            continue
        assert got.tolist() == want
    assert fallbacks <= 1


def test_flat_rows_take_the_full_sort_and_small_vocabularies_too():
    rng = np.random.default_rng(5)
    s = SamplerSettings(temperature=1.0, top_p=0.95)
    flat = mx.array((rng.standard_normal((8, 8000)) * 0.05).astype(np.float32))  # top-1024 mass ~13%
    probs = np.sort(np.array(mx.softmax(flat, axis=-1)), axis=-1)[:, ::-1]
    assert probs[:, :TOP_K].sum(axis=-1).max() < 0.95
    u = rng.random(8)
    assert sample(flat, s, u).tolist() == sample_reference(flat, s, u).tolist()
    small = mx.array(rng.standard_normal((4, 300)).astype(np.float32))  # vocabulary below TOP_K
    u = rng.random(4)
    assert sample(small, s, u).tolist() == sample_reference(small, s, u).tolist()


def test_a_tie_at_the_sampled_position_is_left_to_the_reference():
    s = SamplerSettings(temperature=1.0, top_p=0.95)
    x = np.full((1, 2000), -20.0, np.float32)
    x[0, [7, 1500]] = 3.0  # two equally likely tokens hold almost all the mass
    for u in (0.1, 0.6, 0.99):
        assert sample(mx.array(x), s, np.array([u])) is None
    x[0, 1500] = 2.0
    got = sample(mx.array(x), s, np.array([0.1]))
    assert got is not None and got.tolist() == sample_reference(mx.array(x), s, np.array([0.1])).tolist() == [7]


def test_softmax_is_mlx_softmax_bit_for_bit():
    rng = np.random.default_rng(3)
    for scale, t in ((1.0, 1.0), (4.0, 0.8), (30.0, 0.7)):
        x = mx.array((rng.standard_normal((5, 49152)) * scale).astype(np.float32))
        want = np.array(mx.softmax(x / t if t != 1.0 else x, axis=-1)).view(np.int32)
        assert (np.array(fastexp.softmax(x, t)).view(np.int32) == want).all()
        assert (fastexp.softmax_numpy(x, t).view(np.int32) == want).all()
        m = mx.max(x, axis=-1, keepdims=True)
        assert (np.array(fastexp.exp_diff(x, m)).view(np.int32) == np.array(mx.exp(x - m)).view(np.int32)).all()


def test_engine_counts_fallbacks_and_keeps_the_reference_tokens(monkeypatch):
    from lekutils.engine import local, sampling

    calls = []

    def never(logits, sampler, uniforms):
        calls.append(1)
        return None

    monkeypatch.setattr(sampling, "sample", never)
    eng = local.Engine.__new__(local.Engine)
    eng.stats = {"sampling_fallbacks": 0}
    logits = _logits(np.random.default_rng(9), 4, 3000, 1.0)
    u = np.random.default_rng(10).random(4)
    s = SamplerSettings(temperature=0.8, top_p=0.95)
    assert eng._sample(logits, s, u) == sample_reference(logits, s, u).tolist()
    assert calls and eng.stats["sampling_fallbacks"] == 1


def test_rows_widen_their_candidates_as_far_as_they_need():
    """Flat rows (a base model at T=0.8) need more than the top 1,024: the reference then sorts the
    vocabulary of every row; here each such row widens its own candidates (x8) instead."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((6, 262144)) - 20).astype(np.float32)
    x[0, rng.choice(262144, 4000, replace=False)] = rng.normal(0, 0.1, 4000)  # needs ~4,000 candidates
    x[1, rng.choice(262144, 30000, replace=False)] = rng.normal(0, 0.1, 30000)  # needs more than 8,192
    x[2:] = (rng.standard_normal((4, 262144)) * 4).astype(np.float32)  # peaked: the top 1,024 suffice
    logits = mx.array(x)
    s = SamplerSettings(temperature=0.8, top_p=0.95)
    for seed in range(4):
        u = np.random.default_rng(seed).random(6)
        got = sample(logits, s, u)
        assert got is not None and got.tolist() == sample_reference(logits, s, u).tolist()
