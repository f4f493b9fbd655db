"""Summary statistics, seeded bootstrap confidence intervals and paired per-probe deltas.

Intervals come from :func:`scipy.stats.bootstrap` over the items (probes): BCa by default, the
percentile interval where BCa is undefined (e.g. no variation in the resamples). Everything is
deterministic for a given ``seed``. Groups of fewer than :data:`MIN_CI_N` items get no interval
(NaN): tables and figures mark them instead of drawing a CI that means nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from lekutils.scoring.rules import CHANGE_BAND

ArrayLike = Sequence[float] | np.ndarray

#: Fewer items than this: summaries and paired deltas carry no confidence interval.
MIN_CI_N = 10


def _mean(arr: np.ndarray) -> float:
    """Left-to-right Python sum / n: the order upstream's published averages were computed in."""
    return float(sum(arr.tolist()) / arr.size)


def _as_array(values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of numbers, got shape {arr.shape}")
    return arr[~np.isnan(arr)]


def bootstrap_ci(
    values: ArrayLike,
    stat: Callable[..., np.ndarray] | None = None,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Seeded bootstrap interval of ``stat`` (default: the mean) over ``values``.

    ``stat(sample, axis)`` must reduce along ``axis`` (e.g. ``lambda a, axis: np.median(a, axis=axis)``).
    NaNs are dropped; an empty input gives ``(nan, nan)``, a constant one ``(x, x)``. ``method`` is
    scipy's (``"BCa"``, ``"percentile"``, ``"basic"``); BCa falls back to the percentile interval
    where it is undefined.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = _as_array(values)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    if np.ptp(arr) == 0:
        return (float(arr[0]), float(arr[0]))
    func = stat or (lambda a, axis: np.mean(a, axis=axis))
    for m in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's "degenerate" warning: handled by the fallback
            res = sps.bootstrap((arr,), func, n_resamples=n_boot, confidence_level=level, method=m,
                                vectorized=True, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return (float(low), float(high))
    return (float("nan"), float("nan"))


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one group of scores, with a bootstrap CI of the mean."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    median: float
    std: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def describe(values: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0,
             min_n: int = MIN_CI_N) -> Summary:
    """n, mean (with a bootstrap CI when n >= ``min_n``), median, sample std (ddof=1), min and max."""
    arr = _as_array(values)
    nan = float("nan")
    if arr.size == 0:
        return Summary(0, nan, nan, nan, nan, nan, nan, nan)
    low, high = bootstrap_ci(arr, n_boot=n_boot, level=level, seed=seed) if arr.size >= min_n else (nan, nan)
    return Summary(
        n=int(arr.size),
        mean=_mean(arr),
        ci_low=low,
        ci_high=high,
        median=float(np.median(arr)),
        std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min=float(arr.min()),
        max=float(arr.max()),
    )


def classify_deltas(deltas: ArrayLike, band: float = CHANGE_BAND) -> dict[str, int]:
    """Count deltas ``> band`` (improved), ``< -band`` (regressed) and the rest (unchanged).

    The comparison is on the raw float deltas, as upstream's A/B summary does it.
    """
    arr = _as_array(deltas)
    improved = int((arr > band).sum())
    regressed = int((arr < -band).sum())
    return {"improved": improved, "regressed": regressed, "unchanged": int(arr.size) - improved - regressed}


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-item differences ``treated - base`` with its bootstrap CI and a ±band tally."""

    n: int
    base_mean: float
    treated_mean: float
    delta: float
    ci_low: float
    ci_high: float
    improved: int
    regressed: int
    unchanged: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def significant_gain(self) -> bool:
        """The CI lies above 0."""
        return bool(np.isfinite(self.ci_low) and self.ci_low > 0)


def paired_delta(
    base: ArrayLike,
    treated: ArrayLike,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    band: float = CHANGE_BAND,
    min_n: int = MIN_CI_N,
) -> PairedDelta:
    """Paired per-item delta of two aligned score vectors (same items, same order).

    Pairs where either side is NaN are dropped. The CI resamples items (the per-item deltas), so
    it reflects the probe-to-probe variation of the effect; with fewer than ``min_n`` pairs it is NaN.
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(treated, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"base and treated must be aligned 1-D vectors, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    d = b - a
    nan = float("nan")
    if d.size == 0:
        return PairedDelta(0, nan, nan, nan, nan, nan, 0, 0, 0)
    low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed) if d.size >= min_n else (nan, nan)
    return PairedDelta(
        n=int(d.size),
        base_mean=_mean(a),
        treated_mean=_mean(b),
        delta=_mean(d),
        ci_low=low,
        ci_high=high,
        **classify_deltas(d, band),
    )
