"""Unit tests of lekutils.report.stats: seeded bootstrap CIs, summaries, paired deltas, the ±0.5 tally."""

from __future__ import annotations

import numpy as np
import pytest

from lekutils.report.stats import MIN_CI_N, bootstrap_ci, classify_deltas, describe, paired_delta


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    x = np.random.default_rng(1).normal(10.0, 2.0, size=60)
    a = bootstrap_ci(x, n_boot=2000, seed=7)
    assert a == bootstrap_ci(x, n_boot=2000, seed=7)
    assert a != bootstrap_ci(x, n_boot=2000, seed=8)
    assert a[0] < x.mean() < a[1]
    # ~ mean ± 1.96 * sd / sqrt(n)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert a[1] - a[0] == pytest.approx(2 * half, rel=0.15)


def test_bootstrap_ci_narrows_with_more_data_and_widens_with_level() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=20), rng.normal(size=500)
    w = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert w(bootstrap_ci(large, n_boot=2000)) < w(bootstrap_ci(small, n_boot=2000))
    assert w(bootstrap_ci(small, n_boot=2000, level=0.99)) > w(bootstrap_ci(small, n_boot=2000, level=0.8))


def test_bootstrap_ci_custom_stat_edge_cases_and_errors() -> None:
    x = [1.0, 2.0, 3.0, 100.0, float("nan")]
    lo, hi = bootstrap_ci(x, lambda a, axis: np.median(a, axis=axis), n_boot=500)
    assert 1.0 <= lo <= hi <= 100.0
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert all(np.isnan(bootstrap_ci([])))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1, 2], level=1.5)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci([[1, 2], [3, 4]])


def test_describe_known_values_and_no_ci_below_min_n() -> None:
    s = describe([1.0, 2.0, 3.0, 4.0, float("nan")], n_boot=500)
    assert (s.n, s.mean, s.median, s.min, s.max) == (4, 2.5, 2.5, 1.0, 4.0)
    assert s.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert np.isnan(s.ci_low) and np.isnan(s.ci_high)  # n < MIN_CI_N: no interval
    s = describe([1.0, 2.0, 3.0, 4.0], n_boot=500, min_n=2)
    assert s.ci_low <= s.mean <= s.ci_high
    big = describe(np.arange(MIN_CI_N, dtype=float), n_boot=500)
    assert big.ci_low < big.mean < big.ci_high
    assert set(s.to_dict()) == {"n", "mean", "ci_low", "ci_high", "median", "std", "min", "max"}
    empty = describe([])
    assert empty.n == 0 and np.isnan(empty.mean)


def test_describe_mean_is_left_to_right_sum() -> None:
    # Upstream's published means are sum(values)/n in record order; pairwise (numpy) summation
    # can differ in the last bit, which flips a 2-decimal rounding at .xx5 boundaries.
    vals = [0.1] * 10 + [1e16, -1e16]
    assert describe(vals, n_boot=10).mean == sum(vals) / len(vals)


def test_classify_deltas_band_is_strict() -> None:
    d = [0.5, 0.51, -0.5, -0.5000001, 0.0, 3.0, -3.0]
    assert classify_deltas(d) == {"improved": 2, "regressed": 2, "unchanged": 3}
    assert classify_deltas(d, band=2.0) == {"improved": 1, "regressed": 1, "unchanged": 5}


def test_paired_delta() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(15, 5, size=40)
    treated = base + 2.0 + rng.normal(0, 0.5, size=40)
    d = paired_delta(base, treated, n_boot=2000, seed=1)
    assert d.n == 40
    assert d.delta == pytest.approx(d.treated_mean - d.base_mean)
    assert 1.5 < d.ci_low < d.delta < d.ci_high < 2.5  # paired: narrow despite the spread of base
    assert d.improved + d.regressed + d.unchanged == 40
    assert d == paired_delta(base, treated, n_boot=2000, seed=1)


def test_paired_delta_drops_nan_pairs_and_checks_shapes() -> None:
    d = paired_delta([1.0, 2.0, float("nan")], [2.0, float("nan"), 5.0], n_boot=100)
    assert d.n == 1 and d.delta == 1.0
    with pytest.raises(ValueError, match="aligned"):
        paired_delta([1.0, 2.0], [1.0])
    assert paired_delta([], []).n == 0


def test_bootstrap_ci_is_scipy_bca_with_percentile_fallback() -> None:
    from scipy.stats import bootstrap

    x = np.random.default_rng(4).exponential(3.0, size=40)
    ref = bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(9)).confidence_interval
    assert bootstrap_ci(x, n_boot=2000, seed=9) == pytest.approx((ref.low, ref.high))
    skewed = bootstrap_ci(x, n_boot=2000, seed=9, method="percentile")
    assert skewed != bootstrap_ci(x, n_boot=2000, seed=9)  # BCa corrects the skew
    # nearly constant data: BCa is undefined (zero jackknife variance), the percentile interval is used
    lo, hi = bootstrap_ci([1.0] * 30 + [2.0], n_boot=500)
    assert 1.0 <= lo <= hi <= 2.0
