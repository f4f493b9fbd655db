"""Batched generation with a shared-prefix KV cache, per-row sampling streams and resumability.

How :class:`Engine` generates ``requests x n_samples``:

1. Each request becomes a chat prompt (:func:`lekutils.engine.chat.build_prompt`). Prompts with the
   same system text share a token prefix (the kernel). That prefix is prefilled ONCE per engine
   (kept in a small LRU) and its KV cache is reused for every probe and sample.
2. Each request's remaining prompt tokens are prefilled once on a copy of the prefix cache; all
   samples of the request start from that cache.
3. Up to ``batch_size`` rows (request, sample) of one prefix are decoded together: their caches
   are merged into mlx-lm's left-padded batch caches (``BatchKVCache`` / ``BatchRotatingKVCache``,
   per-row RoPE offsets and masks), except that full-attention layers keep ONE copy of the prefix
   for the whole batch (:mod:`lekutils.engine.models.shared_prefix`). Batching is continuous: a
   row leaves at EOS / end-of-turn or at ``max_tokens`` and waiting work of the same prefix takes
   its slot at the next step (its cache is appended to the running batch's), so the batch stays
   full; ``last_stats["batch_occupancy"]`` reports how full it was.
4. Sampling of row ``(key, sample_idx)`` draws its uniforms from its own stream seeded by
   ``(seed, key, sample_idx)`` (:func:`sample_seed`), so a result does not depend on which other
   rows share its batch: same requests + same settings -> same texts.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lekutils.engine.base import (
    GenerationRequest,
    GenerationResult,
    SamplerSettings,
    check_context,
    sample_seed,
)
from lekutils.engine.chat import PromptInfo, build_prompt

log = logging.getLogger(__name__)

__all__ = ["Engine"]


#: sliding-window layers share prefixes of at least this many tokens (a chat template's few header
#: tokens are not worth it, and keeping them per row leaves those prompts' outputs exactly as before)
_MIN_WINDOW_SHARE = 64
_SENTINELS = ("A", "Z", "1", ".", "yes", "no", "the", "Hello")


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Prompt:
    info: PromptInfo
    prefix: tuple[int, ...]  # shared-prefix tokens (may be empty)


@dataclass
class _ReqCache:
    """A request's prefilled cache; layers in ``suffix_only`` hold only the tokens after ``start``
    (the first ``start`` tokens live in ``base``, the engine's shared prefix cache); ``windows`` names
    the sliding-window layers among them (their ``base`` is a ``RotatingKVCache``)."""

    layers: list[Any]
    seconds: float
    base: list[Any] | None = None
    start: int = 0
    suffix_only: set[int] = field(default_factory=set)
    windows: dict[int, int] = field(default_factory=dict)  # sliding-window layers: layer -> window


@dataclass
class _Row:
    req: int
    sample_idx: int
    rng: np.random.Generator
    seed: int
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None


class Engine:
    """Generate many prompts x N samples with a model and tokenizer from :func:`lekutils.engine.models.load`."""

    #: finished rows are replaced by waiting work at once (see :meth:`_decode`)
    continuous_batching = True

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, model_spec: str | None = None,
                 prefill_step_size: int = 1024, prefix_cache_size: int = 4, shared_prefix: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.model_spec = model_spec
        self.prefill_step_size = prefill_step_size
        from lekutils.engine.models.shared_prefix import install

        #: decode attends to ONE copy of the kernel's KV for the whole batch (see models.shared_prefix)
        self.shared_prefix = bool(shared_prefix) and install(model)
        self.stop_ids = set(getattr(tokenizer, "eos_token_ids", None) or [])
        if not self.stop_ids and getattr(tokenizer, "eos_token_id", None) is not None:
            self.stop_ids = {tokenizer.eos_token_id}
        self._prefixes: OrderedDict[tuple[int, ...], tuple[list[Any], float]] = OrderedDict()
        self._prefix_cache_size = prefix_cache_size
        self.stats: dict[str, float] = {"prefix_prefills": 0, "prefix_hits": 0, "prefill_tokens": 0,
                                        "decode_tokens": 0, "prefill_s": 0.0, "decode_s": 0.0,
                                        "shared_prefix_batches": 0, "decode_steps": 0, "active_row_steps": 0,
                                        "prefix_prefill_s": 0.0, "sampling_fallbacks": 0}
        #: figures of the last :meth:`generate` call (see :meth:`_last_stats`)
        self.last_stats: dict[str, Any] = {}

    # -- prompts and caches -------------------------------------------------------------------
    def _prefix_tokens(self, system: str | None) -> tuple[int, ...]:  # also without a system text:
        # templates often inject a default system prompt (SmolLM2), which is shared too
        """Tokens every prompt with this system text starts with: the common prefix of prompts with
        a few different sentinel user texts (independent of the actual probes, so it is the same in
        every call and the prefix LRU hits)."""
        first = build_prompt(self.tokenizer, _SENTINELS[0], system).tokens
        n = len(first)
        for u in _SENTINELS[1:]:
            n = min(n, _lcp(first, build_prompt(self.tokenizer, u, system).tokens))
        return tuple(first[:n])

    def _prefill(self, tokens: Sequence[int], cache: list[Any]) -> None:
        import mlx.core as mx

        x = mx.array(list(tokens))[None]
        for i in range(0, x.shape[1], self.prefill_step_size):
            self.model(x[:, i: i + self.prefill_step_size], cache=cache)
            mx.eval([c.state for c in cache])
        self.stats["prefill_tokens"] += len(tokens)

    def _prefix_cache(self, prefix: tuple[int, ...]) -> tuple[list[Any], float]:
        """The KV cache after ``prefix`` (computed once, LRU) and the seconds it took."""
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            self.stats["prefix_hits"] += 1
            return self._prefixes[prefix]
        from mlx_lm.models.cache import make_prompt_cache

        t0 = time.perf_counter()
        cache = make_prompt_cache(self.model)
        self._prefill(prefix, cache)
        entry = (cache, time.perf_counter() - t0)
        self.stats["prefix_prefill_s"] += entry[1]
        self._prefixes[prefix] = entry
        self.stats["prefix_prefills"] += 1
        while len(self._prefixes) > self._prefix_cache_size:
            self._prefixes.popitem(last=False)
        return entry

    def _request_cache(self, p: _Prompt) -> _ReqCache:
        """Prefill ``prompt[:-1]`` once for all samples of a request, from the shared prefix where possible.

        With shared-prefix decoding, full-attention layers keep only the request's own tokens
        (the prefix stays in the engine's single copy); other layers keep their whole cache.
        """
        import mlx.core as mx
        from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

        body = p.info.tokens[:-1]
        n = _lcp(p.prefix, body)
        t0 = time.perf_counter()
        cache, base = None, None
        if n > 0:
            base, _ = self._prefix_cache(p.prefix)
            cache = copy.deepcopy(base)
            extra = len(p.prefix) - n
            if extra:
                if all(c.is_trimmable() for c in cache):
                    for c in cache:
                        c.trim(extra)
                else:
                    cache, n = None, 0
        if cache is None:
            cache, n, base = make_prompt_cache(self.model), 0, None
        if len(body) > n:
            self._prefill(body[n:], cache)
        entry = _ReqCache(cache, time.perf_counter() - t0)
        if self.shared_prefix and base is not None and n == len(p.prefix):
            own = len(body) - n
            for li, c in enumerate(cache):
                part = KVCache()
                if type(c) is KVCache and type(base[li]) is KVCache:
                    if own:
                        part.keys = mx.contiguous(c.keys[..., n: c.offset, :])
                        part.values = mx.contiguous(c.values[..., n: c.offset, :])
                elif (type(c) is RotatingKVCache and type(base[li]) is RotatingKVCache and c.keep == 0
                      and own < c.max_size and n >= _MIN_WINDOW_SHARE):
                    # a sliding-window layer: its prefix part is shared too (see _batch_cache)
                    if own:
                        part.keys = mx.contiguous(c._temporal_order(c.keys)[..., -own:, :])
                        part.values = mx.contiguous(c._temporal_order(c.values)[..., -own:, :])
                    entry.windows[li] = c.max_size
                else:
                    continue
                part.offset = own
                cache[li] = part
                entry.suffix_only.add(li)
            mx.eval([c.state for c in cache if not c.empty()])
            entry.base, entry.start = base, n
        return entry

    # -- sampling -----------------------------------------------------------------------------
    def _sample(self, logits: Any, sampler: SamplerSettings, uniforms: np.ndarray | None) -> list[int]:
        """Next token per row (:mod:`lekutils.engine.sampling`: the fast path, else the reference)."""
        from lekutils.engine.sampling import sample, sample_reference

        toks = sample(logits, sampler, uniforms)
        if toks is None:
            self.stats["sampling_fallbacks"] += 1
            return sample_reference(logits, sampler, uniforms).tolist()
        return toks.tolist()

    # -- decoding -----------------------------------------------------------------------------
    def _batch_cache(self, entries: list[_ReqCache]) -> list[Any]:
        """Merge the rows' caches into batch caches; with one shared prefix, its full-attention and
        sliding-window layers become :class:`SharedPrefixCache` (one prefix copy for the batch)."""
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache, KVCache, RotatingKVCache

        from lekutils.engine.models.shared_prefix import SharedPrefixCache

        e0 = entries[0]
        shared = e0.start > 0 and all(e.base is e0.base and e.start == e0.start for e in entries)

        def prefix_kv(e: _ReqCache, li: int) -> tuple[Any, Any]:
            """The prefix's keys/values that decoding can see: all of them, or a sliding window's last
            ``window - 1`` (in temporal order)."""
            assert e.base is not None
            b = e.base[li]
            if li not in e.windows:
                return b.keys[..., : e.start, :], b.values[..., : e.start, :]
            keep = min(e.windows[li] - 1, e.start)
            return b._temporal_order(b.keys)[..., -keep:, :], b._temporal_order(b.values)[..., -keep:, :]

        def whole(e: _ReqCache, li: int) -> Any:
            """The layer's cache with the prefix tokens put back (rows from different prefixes)."""
            if li not in e.suffix_only:
                return e.layers[li]
            own = e.layers[li]
            pk, pv = prefix_kv(e, li)
            c = RotatingKVCache(e.windows[li]) if li in e.windows else KVCache()
            c.keys = mx.concatenate([pk] + ([own.keys] if own.offset else []), axis=2)
            c.values = mx.concatenate([pv] + ([own.values] if own.offset else []), axis=2)
            c.offset = e.start + own.offset
            if isinstance(c, RotatingKVCache):
                c._idx = c.keys.shape[2]
            return c

        out = []
        for li in range(len(e0.layers)):
            if shared and all(li in e.suffix_only for e in entries):
                pk, pv = prefix_kv(e0, li)
                out.append(SharedPrefixCache(pk, pv, BatchKVCache.merge([e.layers[li] for e in entries]),
                                             prefix_len=e0.start, window=e0.windows.get(li)))
            else:
                merged = [whole(e, li) for e in entries]
                out.append(type(merged[0]).merge(merged))
        if any(isinstance(c, SharedPrefixCache) for c in out):
            self.stats["shared_prefix_batches"] += 1
        return out

    @staticmethod
    def _signature(e: _ReqCache) -> tuple[Any, ...]:
        """Rows whose caches have the same signature can share one batch cache (same layer kinds)."""
        return (id(e.base) if e.base is not None else None, e.start, tuple(sorted(e.suffix_only)))

    def _decode(self, refill: Callable[[int, tuple[Any, ...] | None], list[tuple[_Row, _ReqCache, int]]],
                sampler: SamplerSettings, on_finish: Callable[[_Row, float], None]) -> float:
        """Decode rows with continuous batching; returns the wall time.

        ``refill(n, signature)`` hands over up to ``n`` waiting rows (row, request cache, first token)
        whose caches match ``signature`` (any, when None). It is asked at the start and whenever rows
        finish (EOS / end-of-turn or ``max_tokens``), so a finished row's slot is taken by waiting
        work at the next step and the batch stays full. ``on_finish(row, seconds)`` is called as soon
        as a row finishes, with the seconds since the row joined.
        """
        import mlx.core as mx

        t0 = time.perf_counter()
        rows: list[_Row] = []
        joined: list[float] = []
        batch: list[Any] = []
        sig: tuple[Any, ...] | None = None
        x = None

        def admit(free: int) -> None:
            nonlocal batch, sig, x
            new = refill(free, sig if rows else None)
            if not new:
                return
            now = time.perf_counter()
            if sampler.max_tokens <= 0:  # nothing to decode: every row ends at once
                for r, _, _ in new:
                    r.finish = "length"
                    on_finish(r, 0.0)
                return
            nb = self._batch_cache([e for _, e, _ in new])
            first = mx.array([f for _, _, f in new])
            if rows:
                for c, n in zip(batch, nb, strict=True):
                    c.extend(n)
                assert x is not None
                x = mx.concatenate([x, first])
            else:
                batch, sig, x = nb, self._signature(new[0][1]), first
            rows.extend(r for r, _, _ in new)
            joined.extend([now] * len(new))

        admit(self.batch_size)
        while rows:
            assert x is not None
            logits = self.model(x[:, None], cache=batch)[:, -1, :]
            u = np.array([r.rng.random() for r in rows]) if sampler.temperature > 0 else None
            toks = self._sample(logits, sampler, u)
            keep: list[int] = []
            done: list[tuple[_Row, float]] = []
            for j, (r, t) in enumerate(zip(rows, toks, strict=True)):
                if t in self.stop_ids:
                    r.finish = "stop"
                elif len(r.tokens) + 1 >= sampler.max_tokens:
                    r.tokens.append(t)
                    r.finish = "length"
                else:
                    r.tokens.append(t)
                    keep.append(j)
                    continue
                done.append((r, joined[j]))
            self.stats["decode_tokens"] += len(rows)
            self.stats["decode_steps"] += 1
            self.stats["active_row_steps"] += len(rows)
            if done:
                now = time.perf_counter()
                for r, since in done:
                    on_finish(r, now - since)
            if len(keep) < len(rows):
                rows = [rows[j] for j in keep]
                joined = [joined[j] for j in keep]
                if keep:
                    for c in batch:
                        c.filter(keep)
                else:
                    batch = []
            x = mx.array([toks[j] for j in keep]) if rows else None
            if len(rows) < self.batch_size:
                admit(self.batch_size - len(rows))
        dt = time.perf_counter() - t0
        self.stats["decode_s"] += dt
        return dt

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens (``max_position_embeddings`` of its config), or None."""
        args = getattr(self.model, "args", None)
        n = getattr(args, "max_position_embeddings", None) or getattr(
            getattr(getattr(self.model, "language_model", None), "args", None), "max_position_embeddings", None)
        return int(n) if n else None

    def check(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings) -> None:
        """Refuse (:class:`~lekutils.engine.base.ContextLengthError`) prompts that, with
        ``max_tokens``, do not fit the model's context, naming every one of them."""
        lengths = [(r.key, len(build_prompt(self.tokenizer, r.user, r.system, r.messages).tokens))
                   for r in requests]
        check_context(lengths, sampler.max_tokens, self.context_length)

    def generate(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings,
                 progress: Callable[[int], None] | None = None, *,
                 only: set[tuple[str, int]] | None = None,
                 on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
        """Generate every (request, sample); results in request order, then sample order.

        ``only`` restricts the work to these (key, sample_idx) pairs (used by resumable runs).
        ``on_result`` receives each result as soon as its row finishes (rows of a batch finish at
        different steps), so a caller can store it before the batch is done.
        """
        from lekutils.engine.models import fast_attention

        before = dict(self.stats)
        try:
            with fast_attention.active():
                return self._generate(requests, sampler, progress, only=only, on_result=on_result)
        finally:
            self.last_stats = self._last_stats(before)

    def _last_stats(self, before: dict[str, float]) -> dict[str, Any]:
        """Figures of one :meth:`generate` call: ``batch_occupancy`` (mean over decode steps of active
        rows / ``batch_size``), decode/prefill steps, tokens and seconds, ``prefix_prefill_s`` (shared
        prefixes prefilled, not found in the cache), ``sampling_fallbacks`` (steps the reference sampler
        took, see :mod:`lekutils.engine.sampling`) and ``peak_mem_gb`` (MLX's peak since start)."""
        d = {k: self.stats[k] - before.get(k, 0) for k in self.stats}
        try:
            import mlx.core as mx

            peak: float | None = mx.get_peak_memory() / 1e9
        except (ImportError, AttributeError):
            peak = None
        steps = int(d["decode_steps"])
        return {"batch_size": self.batch_size, "decode_steps": steps, "decode_tokens": int(d["decode_tokens"]),
                "batch_occupancy": d["active_row_steps"] / (steps * self.batch_size) if steps else 0.0,
                "decode_s": d["decode_s"], "prefill_tokens": int(d["prefill_tokens"]), "prefill_s": d["prefill_s"],
                "prefix_prefill_s": d["prefix_prefill_s"], "sampling_fallbacks": int(d["sampling_fallbacks"]),
                "peak_mem_gb": peak}

    def _generate(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings,
                  progress: Callable[[int], None] | None, *, only: set[tuple[str, int]] | None,
                  on_result: Callable[[GenerationResult], None] | None) -> list[GenerationResult]:
        keys = [r.key for r in requests]
        if len(set(keys)) != len(keys):
            raise ValueError("GenerationRequest keys must be unique")
        prefixes: dict[str | None, tuple[int, ...]] = {}
        prompts: list[_Prompt] = []
        for r in requests:
            if r.n_samples < 0:
                raise ValueError(f"request {r.key!r}: n_samples must be >= 0")
            if r.system not in prefixes:
                prefixes[r.system] = self._prefix_tokens(r.system)
            prompts.append(_Prompt(build_prompt(self.tokenizer, r.user, r.system, r.messages), prefixes[r.system]))
        work = [(i, s) for i, r in enumerate(requests) for s in range(r.n_samples)
                if only is None or (r.key, s) in only]
        per_req = Counter(i for i, _ in work)
        order = sorted(range(len(work)), key=lambda w: (prompts[work[w][0]].prefix, work[w][0], work[w][1]))
        groups: OrderedDict[tuple[int, ...], deque[tuple[int, int]]] = OrderedDict()
        for w in order:  # rows with the same prefix decode together; a request's samples stay in order
            groups.setdefault(prompts[work[w][0]].prefix, deque()).append(work[w])
        remaining = per_req.copy()  # rows of each request not yet in a batch
        out: dict[tuple[int, int], GenerationResult] = {}
        req_caches: dict[int, _ReqCache] = {}
        pre_s: dict[int, float] = {}

        def refill(queue: deque[tuple[int, int]], n: int,
                   sig: tuple[Any, ...] | None) -> list[tuple[_Row, _ReqCache, int]]:
            got: list[tuple[_Row, _ReqCache, int]] = []
            while queue and len(got) < n:
                i, s = queue[0]
                if i not in req_caches:
                    req_caches[i] = self._request_cache(prompts[i])
                    pre_s[i] = req_caches[i].seconds / per_req[i]
                    self.stats["prefill_s"] += req_caches[i].seconds
                entry = req_caches[i]
                if sig is not None and self._signature(entry) != sig:
                    break  # another cache layout: joins when the running batch has drained
                queue.popleft()
                sd = sample_seed(sampler.seed, requests[i].key, s)
                got.append((_Row(i, s, np.random.default_rng(sd), sd), entry, prompts[i].info.tokens[-1]))
                remaining[i] -= 1
                if remaining[i] <= 0:
                    req_caches.pop(i, None)
            return got

        def finish(r: _Row, dec_s: float) -> None:
            p = prompts[r.req]
            res = GenerationResult(
                key=requests[r.req].key, sample_idx=r.sample_idx, text=self.tokenizer.decode(r.tokens),
                prompt_tokens=len(p.info.tokens), generation_tokens=len(r.tokens),
                finish_reason=r.finish or "length", prompt_format=p.info.format,
                time_s=pre_s[r.req] + dec_s, prefill_s=pre_s[r.req], decode_s=dec_s,
                sampler=sampler.to_dict(), seed=r.seed, model=self.model_spec, tokens=list(r.tokens))
            out[(r.req, r.sample_idx)] = res
            if on_result is not None:
                on_result(res)
            if progress is not None:
                progress(1)

        for queue in groups.values():
            self._decode(lambda n, sig, q=queue: refill(q, n, sig), sampler, finish)
        return [out[w] for w in work]
