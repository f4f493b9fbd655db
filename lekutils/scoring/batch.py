"""Batch scoring into a DataFrame; large inputs are split over worker processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from lekutils.scoring.registry import KEYS, Scorer, available_scorers, get_scorer

if TYPE_CHECKING:
    import pandas as pd

#: With ``processes=None``, inputs of at least this many characters (~0.4 s on one core) go parallel.
PARALLEL_MIN_CHARS = 1_000_000
#: Chunks per worker process (load balance against per-chunk overhead).
CHUNKS_PER_PROCESS = 4


def _score_chunk(args: tuple[str, list[str]]) -> list[tuple[Any, ...]]:
    name, texts = args
    fn = get_scorer(name)
    return [tuple(fn(t).values()) for t in texts]


def _context() -> mp.context.BaseContext:
    """Worker start method: fork on Linux (instant start, no re-import of ``__main__``; workers only
    run ``re`` and element-wise numpy, never MLX or BLAS), spawn elsewhere (scripts then need the
    ``if __name__ == "__main__":`` guard, as for any multiprocessing code)."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def resolve_processes(n_chars: int, processes: int | None) -> int:
    """How many processes :func:`score_many` uses for ``n_chars`` characters of text."""
    if processes is not None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        return processes
    if n_chars < PARALLEL_MIN_CHARS:
        return 1
    return max(1, os.cpu_count() or 1)


def score_rows(texts: list[str], scorer: str | Scorer = "v2", processes: int | None = None) -> list[tuple[Any, ...]]:
    """Score ``texts``; one tuple of values (``KEYS`` order) per text, in input order."""
    sc = get_scorer(scorer)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
    procs = min(resolve_processes(sum(map(len, texts)), processes), max(1, len(texts)))
    if procs == 1:
        return [tuple(sc(t).values()) for t in texts]
    if sc.name not in available_scorers() or get_scorer(sc.name) is not sc:
        raise ValueError("parallel scoring needs a registered scorer (pass processes=1 for others)")
    n_chunks = min(len(texts), procs * CHUNKS_PER_PROCESS)
    bounds = [len(texts) * i // n_chunks for i in range(n_chunks + 1)]
    chunks = [(sc.name, texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ProcessPoolExecutor(max_workers=procs, mp_context=_context()) as ex:
        return [row for part in ex.map(_score_chunk, chunks) for row in part]


def score_many(texts: Iterable[str], scorer: str | Scorer = "v2", processes: int | None = None) -> pd.DataFrame:
    """Score many texts (a list or a pandas Series): a DataFrame with one column per key.

    Columns: the 14 signals in accumulation order, then ``lek_score``; rows in input order (a
    Series keeps its index). ``processes=None`` stays in-process for small inputs and uses all
    cores for large ones (:data:`PARALLEL_MIN_CHARS`); an integer forces that many processes.
    """
    import pandas as pd

    index = texts.index if isinstance(texts, pd.Series) else None
    items = list(texts)
    rows = score_rows(items, scorer, processes)
    frame = pd.DataFrame.from_records(rows, columns=list(KEYS), index=index)
    return frame.astype({k: "float64" if k in ("degeneration", "lek_score") else "int64" for k in KEYS})
