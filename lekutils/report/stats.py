"""Summary statistics, seeded bootstrap confidence intervals and paired per-probe deltas.

Everything here is deterministic for a given ``seed``: the same data and seed give the same
interval. Intervals are percentile bootstrap intervals over the items (probes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

#: A kernel moves a probe when its score changes by more than this (upstream's A/B threshold).
DELTA_THRESHOLD = 0.5


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
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (default: the mean) over ``values``.

    ``stat`` receives a ``(n_boot, n)`` array and must reduce along ``axis=1`` (e.g.
    ``lambda a: np.median(a, axis=1)``). NaNs are dropped; fewer than two values give
    ``(nan, nan)`` for an empty input and ``(x, x)`` for a single value.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = _as_array(values)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    if arr.size == 1:
        return (float(arr[0]), float(arr[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    samples = arr[idx]
    boot = samples.mean(axis=1) if stat is None else np.asarray(stat(samples), dtype=float)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return (float(low), float(high))


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


def summarize(values: ArrayLike, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> Summary:
    """n, mean (with bootstrap CI), median, sample std (ddof=1), min and max of ``values``."""
    arr = _as_array(values)
    if arr.size == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan)
    low, high = bootstrap_ci(arr, n_boot=n_boot, level=level, seed=seed)
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


def classify_deltas(deltas: ArrayLike, threshold: float = DELTA_THRESHOLD) -> dict[str, int]:
    """Count deltas ``> threshold`` (improved), ``< -threshold`` (regressed) and the rest (unchanged).

    The comparison is on the raw float deltas, as upstream's A/B summary does it.
    """
    arr = _as_array(deltas)
    improved = int((arr > threshold).sum())
    regressed = int((arr < -threshold).sum())
    return {"improved": improved, "regressed": regressed, "unchanged": int(arr.size) - improved - regressed}


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-item differences ``treated - base`` with its bootstrap CI and a ±threshold tally."""

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


def paired_delta(
    base: ArrayLike,
    treated: ArrayLike,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    threshold: float = DELTA_THRESHOLD,
) -> PairedDelta:
    """Paired per-item delta of two aligned score vectors (same items, same order).

    Pairs where either side is NaN are dropped. The CI resamples items, so it reflects the
    probe-to-probe variation of the effect.
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
    low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
    return PairedDelta(
        n=int(d.size),
        base_mean=_mean(a),
        treated_mean=_mean(b),
        delta=_mean(d),
        ci_low=low,
        ci_high=high,
        **classify_deltas(d, threshold),
    )
