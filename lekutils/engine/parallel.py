"""Decode on every CPU core: one engine process per core, the work split between them.

MLX's CPU backend runs its own kernels on one thread, and a second OpenBLAS thread spin-waits on a
busy 2-core machine (docs/decode-profile.md), so the way to use both cores is two engines. A
:class:`ParallelEngine` runs one :class:`~lekutils.engine.local.Engine` in this process and
``workers - 1`` more in child processes (``spawn``: the model is loaded from its spec there, with
the same adapter). Each call splits the rows by request (a request's samples stay together, so its
prompt is prefilled once) into shares of equal size; every engine batches its share continuously.
Results come back as rows finish and are handed to ``on_result`` from THIS thread (the local
engine's callbacks poll the workers), so a caller's store sees them in one thread, at once.

Rows do not depend on their batch mates (sampling is seeded per row), so the texts equal a
single engine's. Enabled by ``workers`` in :func:`lekutils.engine.factory.open_generator` or
``$LEK_DECODE_WORKERS`` (``auto``: one per CPU core on a CPU device; GPUs keep one engine).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from lekutils.engine.base import GenerationRequest, GenerationResult, SamplerSettings

log = logging.getLogger(__name__)

__all__ = ["ParallelEngine", "decode_workers"]

ENV = "LEK_DECODE_WORKERS"


def decode_workers(value: str | int | None = None) -> int:
    """Engines to run: ``value`` (or ``$LEK_DECODE_WORKERS``, default 1); ``auto`` = the CPU cores
    this process may use when MLX runs on the CPU, else 1."""
    raw = os.environ.get(ENV, "1") if value is None else value
    if str(raw).strip().lower() == "auto":
        import mlx.core as mx

        if mx.default_device().type != mx.DeviceType.cpu:
            return 1
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # macOS
            return max(1, os.cpu_count() or 1)
    try:
        n = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{ENV}={raw!r}: expected a positive integer or 'auto'") from None
    if n < 1:
        raise ValueError(f"{ENV}={raw!r}: expected a positive integer or 'auto'")
    return n


def _worker(spec: str, adapter: str | None, batch_size: int, tasks: Any, results: Any) -> None:
    """Child process: load the model, then generate each task's share, streaming results."""
    try:
        from lekutils.engine import models
        from lekutils.engine.local import Engine

        model, tok = models.load(spec, adapter_path=adapter)
        eng = Engine(model, tok, batch_size=batch_size, model_spec=spec)
        results.put(("ready", None))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("error", traceback.format_exc()))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        if task == ("no_eos",):  # benchmarks: rows run to max_tokens, as llama.cpp's do
            eng.stop_ids = set()
            continue
        reqs, only, sampler = task
        try:
            eng.generate(reqs, sampler, only=only, on_result=lambda r: results.put(("result", r)))
            results.put(("done", eng.last_stats))
        except BaseException:  # noqa: BLE001
            results.put(("error", traceback.format_exc()))


class WorkerError(RuntimeError):
    """A decode worker process failed (its traceback is in the message)."""


class ParallelEngine:
    """The :class:`~lekutils.engine.base.Generator` of ``workers`` engines on one model (see module doc)."""

    continuous_batching = True

    def __init__(self, spec: str, *, workers: int, batch_size: int = 16, adapter_path: str | None = None,
                 start_timeout_s: float = 600.0):
        from lekutils.engine import models
        from lekutils.engine.local import Engine

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        model, tok = models.load(spec, adapter_path=adapter_path)
        self.local = Engine(model, tok, batch_size=batch_size, model_spec=spec)
        self.model_spec = spec
        self.adapter_path = adapter_path
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self._procs: list[tuple[Any, Any, Any]] = []  # (process, task queue, result queue)
        self.last_stats: dict[str, Any] = {}

    # -- the Generator interface ---------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.local.batch_size

    @property
    def model(self) -> Any:
        return self.local.model

    @property
    def tokenizer(self) -> Any:
        return self.local.tokenizer

    @property
    def context_length(self) -> int | None:
        return self.local.context_length

    def check(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings) -> None:
        self.local.check(requests, sampler)

    def generate(self, requests: Sequence[GenerationRequest], sampler: SamplerSettings,
                 progress: Callable[[int], None] | None = None, *,
                 only: set[tuple[str, int]] | None = None,
                 on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
        """Like :meth:`Engine.generate`; the rows are shared between the engines."""
        work = [(r.key, s) for r in requests for s in range(r.n_samples) if only is None or (r.key, s) in only]
        shares = self._split(work)
        if self.workers == 1 or len([s for s in shares if s]) < 2:
            res = self.local.generate(requests, sampler, progress, only=only, on_result=on_result)
            self.last_stats = dict(self.local.last_stats, engines=1)
            return res
        self.start()

        def part(keys: set[str]) -> tuple[list[GenerationRequest], set[tuple[str, int]]]:
            return [r for r in requests if r.key in keys], {k for k in work if k[0] in keys}

        got: dict[tuple[str, int], GenerationResult] = {}
        pending = set()
        for w, share in enumerate(shares[1:]):
            if share:
                self._procs[w][1].put((*part(share), sampler))
                pending.add(w)
        stats: list[dict[str, Any]] = []

        def take(res: GenerationResult) -> None:
            got[(res.key, res.sample_idx)] = res
            if on_result is not None:
                on_result(res)
            if progress is not None:
                progress(1)

        def poll(block: bool) -> None:
            for w in sorted(pending):
                q = self._procs[w][2]
                while True:
                    try:
                        kind, payload = q.get(timeout=0.5) if block else q.get_nowait()
                    except queue_mod.Empty:
                        if block and not self._procs[w][0].is_alive():
                            code = self._procs[w][0].exitcode
                            self.close()
                            raise WorkerError(f"decode worker {w + 1} died (exit code {code})") from None
                        if block:
                            continue
                        break
                    if kind == "result":
                        take(payload)
                    elif kind == "done":
                        stats.append(payload)
                        pending.discard(w)
                        break
                    elif kind == "error":
                        self.close()
                        raise WorkerError(f"decode worker {w + 1} failed:\n{payload}")

        def local_result(res: GenerationResult) -> None:
            take(res)
            poll(block=False)

        if shares[0]:
            mine, only_mine = part(shares[0])
            self.local.generate(mine, sampler, only=only_mine, on_result=local_result)
            stats.append(self.local.last_stats)
        while pending:
            poll(block=True)
        self.last_stats = self._merge_stats(stats)
        missing = [k for k in work if k not in got]
        if missing:
            raise WorkerError(f"{len(missing)} rows never came back, e.g. {missing[:3]}")
        return [got[k] for k in work]

    def ignore_eos(self) -> None:
        """Benchmarks: every engine runs its rows to ``max_tokens`` (as llama.cpp's rows do)."""
        self.start()
        self.local.stop_ids = set()
        for _, tasks, _ in self._procs:
            tasks.put(("no_eos",))

    # -- internals -----------------------------------------------------------------------------
    def _split(self, work: list[tuple[str, int]]) -> list[set[str]]:
        """Request keys per engine, row counts balanced (largest requests first)."""
        counts = Counter(k for k, _ in work)
        shares: list[set[str]] = [set() for _ in range(self.workers)]
        load = [0] * self.workers
        for key in sorted(counts, key=lambda k: -counts[k]):
            w = min(range(self.workers), key=lambda i: (load[i], i))
            shares[w].add(key)
            load[w] += counts[key]
        return shares

    def start(self) -> None:
        """Start the worker processes and wait until each has loaded the model (else on first use)."""
        if self._procs:
            return
        ctx = mp.get_context("spawn")
        for _ in range(self.workers - 1):
            tasks, results = ctx.Queue(), ctx.Queue()
            p = ctx.Process(target=_worker, args=(self.model_spec, self.adapter_path, self.batch_size, tasks, results),
                            daemon=True)
            p.start()
            self._procs.append((p, tasks, results))
        deadline = time.monotonic() + self.start_timeout_s
        for w, (p, _, results) in enumerate(self._procs):
            while True:
                try:
                    kind, payload = results.get(timeout=0.5)
                    break
                except queue_mod.Empty:
                    if not p.is_alive() or time.monotonic() > deadline:
                        why = (f"exited with code {p.exitcode}" if not p.is_alive()
                               else f"did not load it within {self.start_timeout_s:.0f} s")
                        self.close()
                        raise WorkerError(f"decode worker {w + 1} for {self.model_spec} {why}") from None
            if kind != "ready":
                self.close()
                raise WorkerError(f"decode worker {w + 1} could not load {self.model_spec}:\n{payload}")
        log.info("%d decode worker process(es) ready for %s", len(self._procs), self.model_spec)

    @staticmethod
    def _merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"engines": len(stats)}
        for k in ("decode_steps", "decode_tokens", "prefill_tokens"):
            out[k] = sum(int(s.get(k) or 0) for s in stats)
        for k in ("decode_s", "prefill_s", "prefix_prefill_s"):
            out[k] = max(float(s.get(k) or 0.0) for s in stats)  # the engines run side by side
        occ = [(s.get("batch_occupancy") or 0.0, s.get("decode_steps") or 0) for s in stats]
        steps = sum(n for _, n in occ)
        out["batch_occupancy"] = sum(o * n for o, n in occ) / steps if steps else 0.0
        out["batch_size"] = stats[0].get("batch_size") if stats else None
        peaks = [s.get("peak_mem_gb") for s in stats if s.get("peak_mem_gb") is not None]
        out["peak_mem_gb"] = sum(peaks) if peaks else None  # all processes together
        return out

    def close(self) -> None:
        """Stop the worker processes (also at exit: they are daemons)."""
        for _p, tasks, _ in self._procs:
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        for p, _, _ in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self._procs = []

    def __enter__(self) -> ParallelEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
