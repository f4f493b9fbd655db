"""Exact, bounded-time replacement for the first alternative of v2_distill's D3 pattern.

``re.search(r"(.{10,}?)\\1{4,}", text, re.DOTALL)`` asks: is there a substring of length ``L >= 10``
immediately followed by 4 more copies of itself? ``re`` answers by trying every start and every
length, ``O(n**2)`` steps on a text without such a run (minutes for 100 KB). The same question,
with the same answer:

* a match at ``i`` with unit ``L`` means ``text[j] == text[j + L]`` for all ``j`` in
  ``[i, i + 4L)`` (a run of length ``4L`` of the "equal at distance L" predicate);
* such a run covers the 3 whole aligned blocks ``[kL, (k+3)L)`` for the ``k`` with
  ``(k-1)L < i <= kL``, so the aligned blocks ``k .. k+3`` are equal: only those ``k`` are
  candidates, and there are ``n/L`` aligned blocks per ``L``, ``O(n log n)`` over all ``L``;
* a candidate matches iff the run extends, left of ``kL`` and right of ``(k+3)L``, by ``L``
  characters in total.

Block equalities and extensions are decided with polynomial hashes modulo two primes with
random bases (vectorised with numpy, binary search for the extensions); a hash can only err by
calling unequal strings equal, so every candidate a hash accepts is confirmed by comparing the
characters, and the answer is always exact; only the time depends on the hashes.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

_PRIMES = (2147483647, 2147483629)
_BASES = tuple(random.SystemRandom().randrange(1 << 20, p - 1) for p in _PRIMES)
_BATCH_PAIRS = 1 << 18


def _powers(base: int, p: int, n: int) -> np.ndarray:
    """``base**j % p`` for ``j < n`` (by doubling; every product stays below 2**62)."""
    w = np.empty(n, dtype=np.int64)
    w[0] = 1
    m = 1
    while m < n:
        k = min(m, n - m)
        w[m:m + k] = w[:k] * pow(base, m, p) % p
        m += k
    return w


class _Hashes:
    """Prefix hashes ``sum(a[j] * B**j)`` of a code point array, modulo each prime."""

    def __init__(self, a: np.ndarray):
        n = len(a)
        self.tables: list[tuple[int, np.ndarray, np.ndarray]] = []
        for p, b in zip(_PRIMES, _BASES, strict=True):
            w = _powers(b, p, n + 1)
            pre = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(a * w[:n] % p, out=pre[1:])
            pre %= p
            self.tables.append((p, pre, w))

    def shifted_equal(self, s: np.ndarray, e: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Per element: does ``[s, e)`` hash like ``[s + shift, e + shift)``? (Never False when equal.)"""
        ok = np.ones(len(s), dtype=bool)
        for p, pre, w in self.tables:
            h1 = (pre[e] - pre[s]) % p
            h2 = (pre[e + shift] - pre[s + shift]) % p
            ok &= h1 * w[shift] % p == h2
        return ok


def _max_true(pred: Callable[[np.ndarray], np.ndarray], hi: np.ndarray) -> np.ndarray:
    """Vectorised binary search: the largest ``e`` in ``[0, hi]`` with ``pred(e)`` (``pred(0)`` holds)."""
    lo = np.zeros_like(hi)
    hi = hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi + 1) // 2
        ok = pred(mid)
        lo = np.where(active & ok, mid, lo)
        hi = np.where(active & ~ok, mid - 1, hi)


def _exact_run(a: np.ndarray, start: int, end: int, unit: int, need: int) -> bool:
    """Exact check: ``a[j] == a[j + unit]`` on ``[start, end)`` and the run around it reaches ``need``."""
    n = len(a)
    if not np.array_equal(a[start:end], a[start + unit:end + unit]):
        return False
    lo = max(0, start - unit)
    left_eq = a[lo:start] == a[lo + unit:start + unit]
    left = len(left_eq) if left_eq.all() else len(left_eq) - 1 - int(np.flatnonzero(~left_eq)[-1])
    hi = min(end + unit, n - unit)
    right_eq = a[end:hi] == a[end + unit:hi + unit]
    right = len(right_eq) if right_eq.all() else int(np.flatnonzero(~right_eq)[0])
    return (end - start) + left + right >= need


def _check_batch(a: np.ndarray, hashes: _Hashes, units: np.ndarray, counts: np.ndarray, copies: int) -> bool:
    n = len(a)
    unit = np.repeat(units, counts)
    offsets = np.cumsum(counts) - counts
    k = np.arange(unit.size, dtype=np.int64) - np.repeat(offsets, counts)
    s = k * unit
    eq = hashes.shifted_equal(s, s + unit, unit)  # aligned block k equals block k+1
    r = copies - 2  # a run of (copies-1)*L covers r whole aligned block pairs
    for width, exact_only in ((copies - 1, True), (r, False)):
        if unit.size < width:
            continue
        m = unit.size - width + 1
        win = eq[:m].copy()
        for t in range(1, width):
            win &= eq[t:m + t]
        win &= unit[:m] == unit[width - 1:]
        cand = np.flatnonzero(win)
        if cand.size == 0:
            continue
        cu, cs = unit[cand], s[cand]
        ce = cs + width * cu
        if not exact_only:  # width == r: the run must extend by L in total
            left = _max_true(lambda e, cs=cs, cu=cu: hashes.shifted_equal(cs - e, cs, cu), np.minimum(cu, cs))
            right = _max_true(lambda e, ce=ce, cu=cu: hashes.shifted_equal(ce, ce + e, cu),
                              np.minimum(cu, n - ce - cu))
            keep = np.flatnonzero(left + right >= cu)
            cu, cs, ce = cu[keep], cs[keep], ce[keep]
        for u, st, en in zip(cu.tolist(), cs.tolist(), ce.tolist(), strict=True):
            if _exact_run(a, st, en, u, (copies - 1) * u):
                return True
    return False


def has_repeated_unit(text: str, min_unit: int = 10, copies: int = 5) -> bool:
    """True iff some substring of length ``>= min_unit`` occurs ``copies`` times in a row.

    Same answer as ``re.search(r"(.{%d,}?)\\1{%d,}" % (min_unit, copies - 1), text, re.DOTALL)``
    in ``O(n log n)`` vectorised work.
    """
    if min_unit < 1 or copies < 3:
        raise ValueError("min_unit must be >= 1 and copies >= 3")
    n = len(text)
    if n < min_unit * copies:
        return False
    a = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
    hashes = _Hashes(a)
    units_all = np.arange(min_unit, n // copies + 1, dtype=np.int64)
    counts_all = n // units_all - 1  # aligned block pairs (k, k+1) with (k+2)L <= n
    cum = np.cumsum(counts_all)
    start = 0
    while start < units_all.size:  # batches of about _BATCH_PAIRS pairs, smallest units first
        before = int(cum[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(cum, before + _BATCH_PAIRS, side="right")))
        if _check_batch(a, hashes, units_all[start:end], counts_all[start:end], copies):
            return True
        start = end
    return False
