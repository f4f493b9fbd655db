"""The generator interface: sampler settings, requests, results, and the resumable chunked driver.

A *generator* is anything with ``batch_size`` and ``generate(requests, sampler, progress=None, *,
only=None) -> list[GenerationResult]`` whose samples depend only on (seed, key, sample_idx): the
local MLX engine (:class:`lekutils.engine.local.Engine`) implements it, and so may a remote backend
or a test fake. :func:`generate_resumable` drives any generator in fixed chunks so a killed run
resumes to exactly the uninterrupted result.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from lekutils.core.progress import Progress

__all__ = ["ContextLengthError", "GenerationRequest", "GenerationResult", "Generator", "SamplerSettings", "check_context",
           "STORE_EVERY", "generate_resumable", "sample_seed"]


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling settings; ``temperature == 0`` is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: ``user`` text, optional ``system`` text (the kernel), ``n_samples`` samples.

    ``messages`` holds the earlier turns of a conversation (``{"role": "user"|"assistant",
    "content"}`` dicts, alternating, starting with a user turn); ``user`` is then the last user
    turn. Empty (the default) is a single-turn prompt.
    """

    key: str
    user: str
    system: str | None = None
    n_samples: int = 1
    messages: tuple[dict[str, str], ...] = ()


@dataclass
class GenerationResult:
    """One sample. Times are wall-clock seconds; ``prefill_s`` is this row's share of prefill."""

    key: str
    sample_idx: int
    text: str
    prompt_tokens: int
    generation_tokens: int
    finish_reason: str  # "stop" | "length"
    prompt_format: str
    time_s: float
    prefill_s: float
    decode_s: float
    sampler: dict
    seed: int
    model: str | None = None
    tokens: list[int] = field(default_factory=list, repr=False)
    endpoint: str | None = None  # a remote backend's endpoint name (host:port/path); None in-process

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tokens")
        return d


def sample_seed(seed: int, key: str, sample_idx: int) -> int:
    """The 63-bit seed of one row's sampling stream, from (seed, key, sample_idx) only."""
    h = hashlib.sha256(f"{seed}\x00{key}\x00{sample_idx}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


class ContextLengthError(ValueError):
    """Prompts that do not fit the model's context with ``max_tokens`` of answer; names them."""

    def __init__(self, limit: int, max_tokens: int, too_long: Sequence[tuple[str, int]]):
        self.limit, self.max_tokens, self.too_long = limit, max_tokens, list(too_long)
        shown = ", ".join(f"{k.replace(chr(31), '/')} ({n} tokens)" for k, n in self.too_long[:10])
        more = f" and {len(self.too_long) - 10} more" if len(self.too_long) > 10 else ""
        super().__init__(f"{len(self.too_long)} prompt(s) do not fit the model's context of {limit} tokens with "
                         f"max_tokens={max_tokens}: {shown}{more}. Shorten or drop these prompts, or lower "
                         "max_tokens.")


def check_context(prompt_tokens: Sequence[tuple[str, int]], max_tokens: int, limit: int | None) -> None:
    """Raise :class:`ContextLengthError` for every ``(key, prompt length)`` whose prompt plus
    ``max_tokens`` exceeds ``limit`` (no check when the limit is unknown)."""
    if limit is None:
        return
    too_long = [(k, n) for k, n in prompt_tokens if n + max_tokens > limit]
    if too_long:
        raise ContextLengthError(limit, max_tokens, too_long)


@runtime_checkable
class Generator(Protocol):
    """What the task loop needs of an engine (local MLX, remote, or a test fake).

    ``check`` validates every request before the first generation (e.g. the context length) and
    raises ``ValueError`` naming the offending request keys.
    """

    batch_size: int

    def check(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings) -> None: ...

    def generate(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings,
                 progress: Callable[[int], None] | None = None, *,
                 only: set[tuple[str, int]] | None = None) -> list[GenerationResult]: ...
    # Optionally also ``on_result: Callable[[GenerationResult], None] | None`` (keyword): each
    # result as its row finishes; :func:`generate_resumable` then stores results before the batch ends.


#: Default group size in which :func:`generate_resumable` hands finished results to ``on_chunk``.
STORE_EVERY = 4


def _streams(engine: Generator) -> bool:
    """Whether ``engine.generate`` takes ``on_result`` (results reported as rows finish)."""
    import inspect

    try:
        return "on_result" in inspect.signature(engine.generate).parameters
    except (TypeError, ValueError):
        return False


def generate_resumable(engine: Generator, requests: Sequence[GenerationRequest], sampler: SamplerSettings, *,
                       is_done: Callable[[str, int], bool],
                       on_chunk: Callable[[list[GenerationResult]], None],
                       chunk_size: int | None = None,
                       progress: Callable[[int], None] | None = None,
                       store_every: int = STORE_EVERY) -> dict[str, Any]:
    """Generate the missing items of the flattened (request, sample) list; hand results to
    ``on_chunk`` in groups of at most ``store_every`` as soon as they finish.

    The engine gets fixed chunks of ``chunk_size`` items (default: its batch size, so batching
    stays as wide as it is; the whole list for a streaming engine with ``continuous_batching``, which
    keeps its batch full across it), cut from the work list independently of what is done; of each chunk
    only the items not ``is_done(key, sample_idx)`` are generated. An engine whose ``generate``
    takes ``on_result`` reports each row as it finishes, so a kill loses at most the finished
    rows of one unstored group (fewer than ``store_every``) plus the rows still decoding; other
    engines' results are handed over when their chunk is done. Sampling depends only on (seed,
    key, sample_idx) and the engine's rows do not depend on their batch mates, so a resumed run
    equals an uninterrupted one.
    """
    streams = _streams(engine)
    if not chunk_size:  # a continuously batching engine refills its batch across the whole work list
        chunk_size = engine.batch_size
        if streams and getattr(engine, "continuous_batching", False):
            chunk_size = max(chunk_size, sum(r.n_samples for r in requests))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if store_every < 1:
        raise ValueError(f"store_every must be >= 1, got {store_every}")
    work = [(r, s) for r in requests for s in range(r.n_samples)]
    pending = [r for r in requests if not all(is_done(r.key, s) for s in range(r.n_samples))]
    if pending:
        engine.check(pending, sampler)  # before any generation: a bad prompt fails now, not hours later
    stats = {"items": len(work), "chunks": 0, "chunks_skipped": 0, "chunks_generated": 0,
             "generated": 0, "stored_groups": 0, "store_every": store_every, "time_s": 0.0}
    t0 = time.perf_counter()
    buf: list[GenerationResult] = []

    def flush() -> None:
        if not buf:
            return
        group = list(buf)
        buf.clear()
        on_chunk(group)
        stats["generated"] += len(group)
        stats["stored_groups"] += 1
        if isinstance(progress, Progress):  # also counts generated tokens (tok/s in the terminal)
            progress(len(group), tokens=sum(r.generation_tokens for r in group))
        elif progress is not None:
            progress(len(group))

    def take(res: GenerationResult) -> None:
        buf.append(res)
        if len(buf) >= store_every:
            flush()

    for c in range(0, len(work), chunk_size):
        chunk = work[c: c + chunk_size]
        stats["chunks"] += 1
        todo = [(r, s) for r, s in chunk if not is_done(r.key, s)]
        if progress is not None and len(todo) < len(chunk):
            progress(len(chunk) - len(todo))
        if not todo:
            stats["chunks_skipped"] += 1
            continue
        seen: set[tuple[str, int]] = set()

        def on_result(res: GenerationResult, seen: set[tuple[str, int]] = seen) -> None:
            seen.add((res.key, res.sample_idx))
            take(res)

        results = _generate_items(engine, todo, sampler, on_result if streams else None)
        for res in results:
            if (res.key, res.sample_idx) not in seen:
                take(res)
        flush()
        stats["chunks_generated"] += 1
    stats["time_s"] = time.perf_counter() - t0
    return stats


def _generate_items(engine: Generator, items: list[tuple[GenerationRequest, int]], sampler: SamplerSettings,
                    on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
    """Generate exactly the given (request, sample_idx) items (sampling depends on no other item)."""
    by_key: OrderedDict[str, tuple[GenerationRequest, int]] = OrderedDict()
    for r, s in items:
        prev = by_key.get(r.key, (r, 0))[1]
        by_key[r.key] = (r, max(prev, s + 1))
    reqs = [GenerationRequest(r.key, r.user, r.system, n, r.messages) for r, n in by_key.values()]
    only = {(r.key, s) for r, s in items}
    if on_result is None:
        return engine.generate(reqs, sampler, only=only)
    return engine.generate(reqs, sampler, only=only, on_result=on_result)
