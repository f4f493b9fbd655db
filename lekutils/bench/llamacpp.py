"""llama.cpp as a measured peer of the engine (optional: ``pip install 'lekutils[bench]'``).

The generation benchmark runs llama.cpp (through ``llama-cpp-python``'s low-level C API) on the
SAME GGUF file the engine converts and loads, fed the SAME token ids (the engine's chat prompts),
so the comparison is model for model, prompt for prompt:

- :meth:`LlamaCppPeer.decode` — ``prompts`` (one row each) decoded ``max_tokens`` steps together in one
  ``llama_batch`` per step, one sequence id per row (``n_seq_max`` = rows, a unified KV cache); the
  rows' common prefix is evaluated once and shared by all sequences, each prompt's own suffix once
  for all rows that share it. One row is llama.cpp's single-stream decode; N rows its batched decode.
- :meth:`LlamaCppPeer.first_token` — time to first token: cold (empty KV cache, the whole prompt
  evaluated) or warm (the matching prefix of the previous evaluation kept, only the rest evaluated,
  as llama.cpp's own server and ``Llama.generate`` do).

Tokens are chosen by greedy argmax over the logits in NumPy (EOS ignored: every row runs
``max_tokens`` steps), so all work measured is llama.cpp's own forward pass plus one argmax per row.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LlamaCppPeer", "PeerUnavailable", "gguf_path", "import_llama_cpp"]


class PeerUnavailable(RuntimeError):
    """llama.cpp cannot run here (the message says why: not installed, model not a GGUF, ...)."""


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or :class:`PeerUnavailable` saying how to install it."""
    try:
        import llama_cpp
    except Exception as ex:  # ImportError, or a broken shared library (OSError)
        raise PeerUnavailable(f"llama_cpp is not importable ({type(ex).__name__}: {ex}); "
                              "install the benchmark extra: pip install 'lekutils[bench]'") from ex
    return llama_cpp


def gguf_path(spec: str) -> Path:
    """The GGUF file behind a model spec (embedded models and ``.gguf`` paths); else :class:`PeerUnavailable`."""
    from lekutils.engine.models.specs import resolve

    src = resolve(spec)
    if src.kind not in ("embedded", "gguf") or src.path is None:
        raise PeerUnavailable(f"model spec {spec!r} is a {src.kind} model, not a GGUF file llama.cpp can load")
    return src.path


def _lcp(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


_LOG_CB: Any = None  # keeps the ctypes log callback alive


@dataclass
class DecodeTiming:
    """One :meth:`LlamaCppPeer.decode` run: ``tokens`` holds each row's generated ids."""

    rows: int
    prompt_tokens: int  # tokens evaluated before the first decode step (shared prefix counted once)
    prefill_s: float
    decode_steps: int
    decode_tokens: int
    decode_s: float
    tokens: list[list[int]]

    @property
    def decode_tok_s(self) -> float:
        return self.decode_tokens / max(self.decode_s, 1e-9)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / max(self.prefill_s, 1e-9)


class LlamaCppPeer:
    """A llama.cpp model and one context of ``n_ctx`` cells and ``n_seq_max`` sequences on ``threads`` threads.

    Use as a context manager (or call :meth:`close`): the C objects are freed on exit.
    """

    def __init__(self, path: str | Path, *, threads: int, n_ctx: int, n_seq_max: int = 1, n_batch: int = 512,
                 quiet: bool = True):
        lc = import_llama_cpp()
        self._lc = lc
        global _LOG_CB
        if quiet and _LOG_CB is None:
            _LOG_CB = lc.llama_log_callback(lambda level, text, user: None)
            lc.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
        lc.llama_backend_init()
        self.path, self.threads, self.n_seq_max = Path(path), int(threads), int(n_seq_max)
        self.n_batch = max(int(n_batch), self.n_seq_max)
        mp = lc.llama_model_default_params()
        self.model = lc.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise PeerUnavailable(f"llama.cpp could not load {path}")
        cp = lc.llama_context_default_params()
        cp.n_ctx = int(n_ctx)
        cp.n_batch = self.n_batch
        cp.n_ubatch = self.n_batch
        cp.n_seq_max = self.n_seq_max
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.kv_unified = True  # sequences share the prompt prefix's cells
        cp.swa_full = True  # sliding-window layers keep every position, so a prefix can be reused (warm TTFT)
        cp.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cp)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise PeerUnavailable(f"llama.cpp could not create a context (n_ctx={n_ctx}, n_seq_max={n_seq_max})")
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.mem = lc.llama_get_memory(self.ctx)
        self._batch = lc.llama_batch_init(self.n_batch, 0, self.n_seq_max)
        self._cap = self.n_batch
        self._last: list[int] = []  # tokens now in sequence 0's cache (for warm first-token reuse)

    # -- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        lc = self._lc
        if getattr(self, "ctx", None):
            lc.llama_batch_free(self._batch)
            lc.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            lc.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> LlamaCppPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear(self) -> None:
        """Empty the KV cache (all sequences)."""
        self._lc.llama_memory_clear(self.mem, True)
        self._last = []

    def _run(self, items: Sequence[tuple[int, int, Sequence[int], bool]]) -> np.ndarray | None:
        """Evaluate ``(token, pos, seq_ids, want_logits)`` items in batches of ``n_batch``; returns the logits
        of the items that asked for them (rows in order), from the last batch only."""
        lc, b = self._lc, self._batch
        out = None
        for s in range(0, len(items), self._cap):
            part = items[s: s + self._cap]
            n_out = 0
            for j, (tok, pos, seqs, want) in enumerate(part):
                b.token[j] = tok
                b.pos[j] = pos
                b.n_seq_id[j] = len(seqs)
                for k, sq in enumerate(seqs):
                    b.seq_id[j][k] = sq
                b.logits[j] = 1 if want else 0
                n_out += bool(want)
            b.n_tokens = len(part)
            rc = lc.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (batch of {len(part)} tokens)")
            if n_out:
                ptr = lc.llama_get_logits(self.ctx)
                out = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
        return out

    # -- measurements ---------------------------------------------------------------------------
    def decode(self, prompts: Sequence[Sequence[int]], max_tokens: int) -> DecodeTiming:
        """Decode one row per prompt for ``max_tokens`` steps, all rows in one batch per step (EOS ignored).

        Prefill: the rows' common prefix once (on every row's sequence at once), then each distinct
        prompt's remaining tokens but the last once for all rows with that prompt. Decode step 1 feeds
        every row's last prompt token, so ``max_tokens`` steps make ``max_tokens`` tokens per row.
        """
        rows = len(prompts)
        if rows < 1 or rows > self.n_seq_max:
            raise ValueError(f"{rows} rows: this context holds 1..{self.n_seq_max} sequences")
        self.clear()
        t0 = time.perf_counter()
        n = _lcp(prompts)
        n = min(n, min(len(p) for p in prompts) - 1)
        items: list[tuple[int, int, Sequence[int], bool]] = [(t, i, range(rows), False) for i, t in
                                                            enumerate(prompts[0][:n])]
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, p in enumerate(prompts):
            groups.setdefault(tuple(p[n:-1]), []).append(r)
        for suffix, members in groups.items():
            items += [(t, n + i, members, False) for i, t in enumerate(suffix)]
        evaluated = len(items)
        self._run(items)
        t1 = time.perf_counter()
        toks = [int(p[-1]) for p in prompts]
        pos = [len(p) - 1 for p in prompts]
        out: list[list[int]] = [[] for _ in range(rows)]
        for _ in range(max_tokens):
            logits = self._run([(toks[r], pos[r], (r,), True) for r in range(rows)])
            assert logits is not None
            toks = [int(t) for t in logits.argmax(axis=1)]
            for r in range(rows):
                out[r].append(toks[r])
                pos[r] += 1
        t2 = time.perf_counter()
        self._last = []
        return DecodeTiming(rows, evaluated, t1 - t0, max_tokens, rows * max_tokens, t2 - t1, out)

    def first_token(self, prompt: Sequence[int], *, warm: bool) -> dict[str, Any]:
        """Time to first token on sequence 0: cold clears the cache first; warm keeps the longest prefix
        this prompt shares with the previous :meth:`first_token` prompt and evaluates only the rest."""
        lc = self._lc
        t0 = time.perf_counter()
        if not warm:
            self.clear()
        keep = _lcp([self._last, prompt]) if self._last else 0
        keep = min(keep, len(prompt) - 1)
        lc.llama_memory_seq_rm(self.mem, 0, keep, -1)
        rest = prompt[keep:]
        logits = self._run([(t, keep + i, (0,), i == len(rest) - 1) for i, t in enumerate(rest)])
        assert logits is not None
        first = int(logits[-1].argmax())
        dt = time.perf_counter() - t0
        self._last = list(prompt)
        return {"ttft_s": dt, "prompt_tokens": len(prompt), "reused_tokens": keep, "evaluated_tokens": len(rest),
                "prefill_tok_s": len(rest) / max(dt, 1e-9), "first_token": first}


def version() -> str | None:
    """llama-cpp-python's version, or None where it is not importable."""
    try:
        return str(import_llama_cpp().__version__)
    except PeerUnavailable:
        return None
