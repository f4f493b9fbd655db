"""``exp`` for float32 on MLX's x86_64 CPU backend, bit-identical to ``mx.exp`` and about 2.3x faster.

MLX's CPU ``exp`` (``mlx/backend/cpu/simd/math.h``) evaluates a Cephes-style polynomial with six
``fma`` calls per element; the ``mlx[cpu]`` wheels for x86_64 run it one element at a time with
library ``fma`` calls (~15 ns per element on the 2-core EPYC), which made the softmax over the
kernel prefix the largest single cost of a decode step. :func:`exp` computes the SAME formula with
ops that ``mx.compile`` fuses into vectorised loops: each ``fma(a, b, c)`` of float32 values is
evaluated as ``float32(float64(a) * float64(b) + float64(c))`` (the product is exact in float64, so
this is the fused result up to a double-rounding case of probability ~2**-29 per operation, never
seen in the tests' tens of millions of values), ``2**ipart`` is built from its IEEE bits, and the
NaN / overflow / underflow selects are MLX's. Other dtypes, devices and CPU types (ARM's NEON
kernels are vectorised already) use ``mx.exp`` itself. Used by the shared-prefix attention
(:mod:`lekutils.engine.models.shared_prefix`), whose softmax over the kernel prefix it speeds up.

Where MLX's JIT compiles with hardware FMA (:mod:`lekutils.core.jit`), a compiled ``mx.exp`` is
faster still (~0.8 ns per value, vectorised, against ~6 ns for the emulation and ~15 ns for
``mx.exp``) and exact by construction (a correctly rounded fma either way), so :func:`exp_diff` and
:func:`softmax` use it.
:func:`softmax` is MLX's CPU softmax (``mlx/backend/cpu/softmax.cpp``) for float32 rows written as
ops: max, ``exp(x - max)``, a sequential float32 sum (MLX's x86_64 reductions run one lane, as its
softmax does), times ``1 / sum``; the same bits, 4x faster on the sampling step's vocabulary.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

import numpy as np

# the polynomial's coefficients, as MLX writes them (float literals)
_COEFFS = tuple(float(np.float32(c)) for c in (
    1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3, 5.550332471162809e-2,
    2.402264791363012e-1, 6.931472028550421e-1, 1.0))


def _poly(x: Any) -> tuple[Any, Any]:
    import mlx.core as mx

    y = x * mx.array(1.442695, mx.float32)  # log2(e), as a float32 literal
    v = y + mx.array(0.5, mx.float32)
    ipart = mx.floor(v)
    f = (y - ipart).astype(mx.float64)
    p = mx.array(_COEFFS[0], mx.float32)
    for c in _COEFFS[1:]:
        p = (p.astype(mx.float64) * f + c).astype(mx.float32)
    return p, (ipart.astype(mx.int32) + 127) * (1 << 23)  # the IEEE bits of 2**ipart


def _scale(x: Any, p: Any, two: Any) -> Any:
    import mlx.core as mx

    r = mx.where(mx.isnan(x), x, two * p)
    r = mx.where(x > 88.0, mx.array(float("inf"), mx.float32), r)
    return mx.where(x < -88.0, mx.array(0.0, mx.float32), r)


@functools.cache
def _compiled() -> tuple[Any, Any]:
    import mlx.core as mx

    return mx.compile(_poly, shapeless=True), mx.compile(_scale, shapeless=True)


_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _fast(x: Any) -> bool:
    import mlx.core as mx

    return _X86 and x.dtype == mx.float32 and x.size > 0 and mx.default_device().type == mx.DeviceType.cpu


@functools.cache
def _native() -> tuple[Any, Any] | None:
    """Compiled ``exp(a - b)`` and ``exp(a / t - b)`` when the JIT has hardware FMA, else None."""
    import mlx.core as mx

    from lekutils.core.jit import active

    if not active():
        return None
    return (mx.compile(lambda a, b: mx.exp(a - b), shapeless=True),
            mx.compile(lambda a, t, b: mx.exp(a / t - b), shapeless=True))


def exp(x: Any) -> Any:
    """``mx.exp(x)``, bit for bit; the fast path for float32 on an x86_64 CPU."""
    import mlx.core as mx

    if not _fast(x):
        return mx.exp(x)
    poly, scale = _compiled()
    p, bits = poly(x)
    return scale(x, p, bits.view(mx.float32))


def exp_diff(a: Any, b: Any) -> Any:
    """``mx.exp(a - b)`` bit for bit (broadcasting as ``a - b`` does), on the fastest exact path."""
    import mlx.core as mx

    fused = _native()
    if fused is not None and _fast(a) and b.dtype == mx.float32:
        return fused[0](a, b)
    return exp(a - b)


def native(x: Any) -> bool:
    """Whether ``x`` takes the compiled hardware-fma path (float32 on an x86_64 CPU, native JIT)."""
    return _native() is not None and _fast(x)


def _exp_sum(x: Any, temperature: float) -> tuple[Any, Any]:
    """``exp(x / t - max(x / t))`` and its row sums, as MLX's CPU softmax computes them.

    The row maximum is taken before the division (``max(x) / t == max(x / t)``: dividing by t > 0
    is monotone and correctly rounded); on the native path the division is fused into the ``exp``.
    """
    import mlx.core as mx

    t = mx.array(temperature, mx.float32)
    m = mx.max(x, axis=-1, keepdims=True)
    if temperature != 1.0:
        m = m / t
    fused = _native()
    e = fused[1](x, t, m) if fused is not None else exp((x / t if temperature != 1.0 else x) - m)
    return e, mx.sum(e, axis=-1, keepdims=True)


def softmax(x: Any, temperature: float = 1.0) -> Any:
    """``mx.softmax(x / temperature, axis=-1)`` bit for bit for float32 on an x86_64 CPU (else MLX's)."""
    import mlx.core as mx

    if not _fast(x):
        return mx.softmax(x / temperature if temperature != 1.0 else x, axis=-1)
    e, s = _exp_sum(x, temperature)
    return e * (mx.array(1.0, mx.float32) / s)


def softmax_numpy(x: Any, temperature: float = 1.0) -> np.ndarray:
    """:func:`softmax` as a float32 NumPy array, same bits; the normalising multiply (float32, as
    MLX's) runs in NumPy, a pass fewer in MLX."""
    import mlx.core as mx

    if not _fast(x):
        return np.array(softmax(x, temperature))
    e, s = _exp_sum(x, temperature)
    mx.eval(e, s)
    return np.asarray(e) * (np.float32(1.0) / np.asarray(s))
