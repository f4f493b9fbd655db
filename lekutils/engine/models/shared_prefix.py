"""Decode attention over a KV prefix shared by every row of a batch, without copying it per row.

A batch of B rows that all start with the same P-token kernel would normally hold B copies of the
kernel's keys and values and read all of them at every decode step (B x P x layers, the main
cost for long kernels). :class:`SharedPrefixCache` keeps ONE copy of the prefix (batch 1) plus
mlx-lm's left-padded ``BatchKVCache`` for each row's own tokens (probe + generated). Attention is
computed in two parts and merged exactly with their log-sum-exp:

- prefix: all B x heads queries against the prefix at once, one matrix product per layer;
- rows: each row's queries against its own keys (padding masked).

mlx-lm's model files call ``scaled_dot_product_attention(q, k, v, cache=, scale=, mask=)`` from
their module namespace; :func:`install` wraps that name in the model's attention module(s) so a
:class:`SharedPrefixCache` is routed here; inside the engine's generation, other float32 CPU attention
goes to :mod:`lekutils.engine.models.fast_attention` (MLX's fallback, same bits, faster softmax), and
everything else to mlx-lm's function unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

_PATCHED = "_lek_shared_prefix"


class SharedPrefixCache:
    """One layer's cache: a shared prefix ``(1, H_kv, K, D)`` + per-row ``BatchKVCache`` (decode only).

    ``prefix_len`` is the prefix's length in tokens; the stored keys are its LAST ``K`` tokens (all
    of them for full attention). With ``window`` (a sliding-window layer: each query sees the
    ``window`` most recent positions, itself included, as mlx-lm's ``RotatingKVCache`` does) only
    the prefix's last ``window - 1`` tokens can ever be seen, and each row masks what has left its
    window.
    """

    def __init__(self, prefix_keys: Any, prefix_values: Any, rows: Any, *, prefix_len: int | None = None,
                 window: int | None = None):
        self.prefix_keys = prefix_keys
        self.prefix_values = prefix_values
        self.prefix_len = int(prefix_keys.shape[2]) if prefix_len is None else int(prefix_len)
        if self.prefix_len < prefix_keys.shape[2]:
            raise ValueError(f"prefix_len {self.prefix_len} < {prefix_keys.shape[2]} stored prefix tokens")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.rows = rows

    @property
    def offset(self) -> Any:
        """Per-row absolute positions (prefix + the row's own tokens), for RoPE."""
        return self.rows.offset + self.prefix_len

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        return self.rows.update_and_fetch(keys, values)

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> None:
        if N != 1:
            raise ValueError("SharedPrefixCache supports decoding one token at a time")
        return None  # attend() masks the rows' left padding itself

    def filter(self, batch_indices: Any) -> None:
        self.rows.filter(batch_indices)

    def extend(self, other: SharedPrefixCache) -> None:
        """Add ``other``'s rows (continuous batching); both must hold the same prefix."""
        if (other.prefix_len, other.window) != (self.prefix_len, self.window):
            raise ValueError(f"cannot join rows of a {other.prefix_len}-token prefix to a {self.prefix_len}-token one")
        self.rows.extend(other.rows)

    def is_trimmable(self) -> bool:
        return False

    @property
    def state(self) -> list[Any]:
        return [self.prefix_keys, self.prefix_values, *[s for s in self.rows.state if hasattr(s, "shape")]]

    @property
    def nbytes(self) -> int:
        return int(self.prefix_keys.nbytes + self.prefix_values.nbytes + self.rows.nbytes)

    def attend(self, queries: Any, keys: Any, values: Any, scale: float) -> Any:
        """Softmax attention of ``queries (B, Hq, 1, D)`` over prefix + row keys, merged exactly."""
        import mlx.core as mx

        from lekutils.engine.fastexp import exp_diff

        B, Hq, L, D = queries.shape
        if L != 1:
            raise ValueError("SharedPrefixCache supports decoding one token at a time")
        Hkv = self.prefix_keys.shape[1]
        rep = Hq // Hkv
        Dv = self.prefix_values.shape[-1]
        q = (queries * scale).reshape(B, Hkv, rep, D)
        # prefix: (1, Hkv, B*rep, D) @ (1, Hkv, D, P): one GEMM per kv head, prefix read once
        qp = q.transpose(1, 0, 2, 3).reshape(1, Hkv, B * rep, D)
        sp = qp @ self.prefix_keys.swapaxes(-1, -2)
        K = self.prefix_keys.shape[2]
        R = keys.shape[2]
        if self.window is not None:
            # row b's query is at position prefix_len + own_b - 1 (own_b: its tokens, this one included);
            # prefix position p (stored: prefix_len - K .. prefix_len - 1) is seen iff p > query - window
            own = self.rows.offset
            first = own - 1 - self.window + 1  # first visible position, relative to prefix_len
            seen = (mx.arange(K)[None, :] - K) >= first[:, None]  # (B, K)
            seen = mx.repeat(seen, rep, axis=0)[None, None]  # rows of qp are (b, rep) pairs
            sp = mx.where(seen, sp, mx.array(-mx.inf, dtype=sp.dtype))
        mp = mx.max(sp, axis=-1, keepdims=True)
        if self.window is not None:  # a row whose window has left the prefix: keep exp() NaN-free
            mp = mx.maximum(mp, mx.array(-1e30, dtype=sp.dtype))
        ep = exp_diff(sp, mp)
        lp = mx.sum(ep, axis=-1, keepdims=True)
        op = ep @ self.prefix_values

        def per_row(x: Any, d: int) -> Any:
            return x.reshape(Hkv, B, rep, d).transpose(1, 0, 2, 3)

        op, mp, lp = per_row(op, Dv), per_row(mp, 1), per_row(lp, 1)
        # rows: (B, Hkv, rep, D) @ (B, Hkv, D, R), left padding masked out
        sr = q @ keys.swapaxes(-1, -2)
        valid = mx.arange(R)[None, :] >= self.rows.left_padding[:, None]
        if self.window is not None and R > self.window:
            valid = valid & (mx.arange(R)[None, :] >= R - self.window)  # the current token is at R - 1
        sr = mx.where(valid[:, None, None, :], sr, mx.array(-mx.inf, dtype=sr.dtype))
        mr = mx.max(sr, axis=-1, keepdims=True)  # finite: the current token is always valid
        er = exp_diff(sr, mr)
        lr = mx.sum(er, axis=-1, keepdims=True)
        orow = er @ values
        m = mx.maximum(mp, mr)
        a, b = exp_diff(mp, m), exp_diff(mr, m)
        out = (op * a + orow * b) / (lp * a + lr * b)
        return out.reshape(B, Hq, 1, Dv).astype(queries.dtype)


def install(model: Any) -> bool:
    """Route :class:`SharedPrefixCache` attention in this model's attention module(s); idempotent.

    Returns False if the model's attention does not call mlx-lm's ``scaled_dot_product_attention``
    by module-level name (then the engine falls back to per-row cache copies).
    """
    from lekutils.engine.models import fast_attention

    modules = {type(m).__module__ for _, m in model.named_modules() if type(m).__name__ == "Attention"}
    ok = bool(modules)
    for name in modules:
        mod = sys.modules.get(name)
        orig = getattr(mod, "scaled_dot_product_attention", None)
        if orig is None:
            ok = False
            continue
        if getattr(orig, _PATCHED, False):
            continue

        def sdpa(queries: Any, keys: Any, values: Any, cache: Any = None, scale: float = 1.0,
                 mask: Any = None, sinks: Any = None, _orig: Any = orig) -> Any:
            if isinstance(cache, SharedPrefixCache) and sinks is None:
                return cache.attend(queries, keys, values, scale)
            if fast_attention.enabled() and fast_attention.applies(queries, keys, sinks, cache):
                return fast_attention.sdpa(queries, keys, values, scale, mask)
            return _orig(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

        setattr(sdpa, _PATCHED, True)
        mod.scaled_dot_product_attention = sdpa  # type: ignore[union-attr]
    return ok
