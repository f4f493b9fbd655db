"""The one resumable generate -> score -> store loop behind the A/B test, self-distillation and the
regression gates' evaluation.

A task is a list of :class:`TaskItem` (a prompt, its system text, how many samples, and the fields
its records carry) and a :class:`TaskSpec` (model, adapter, sampler, scorer). Every sample's
record goes to a work file (:class:`~lekutils.core.jsonl.JsonlStore`, keyed by ``(item key,
sample_idx)``) as soon as its generation chunk is done, so a killed run resumes where it stopped
and, because sampling depends only on (seed, key, sample_idx), equals an uninterrupted run.

One staleness rule: each record carries a **content key**, the hash of everything that decides
its text (user prompt, system text hash, model fingerprint, adapter hash, sampler settings). A
saved record whose content key differs from the current one is stale: moved aside into
``<work dir>/.stale/`` and regenerated (``stale="replace"``), or refused (``stale="error"``). The
scorer is deterministic, so a record made under another scorer is re-scored in place, not
regenerated.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core import lock
from lekutils.core.errors import DataError, Problem
from lekutils.core.hashing import sha256_bytes, sha256_file, sha256_json, tagged
from lekutils.core.jsonl import JsonlStore, Record, atomic_write_jsonl, sweep_temp_files
from lekutils.engine.base import (
    STORE_EVERY,
    GenerationRequest,
    GenerationResult,
    Generator,
    SamplerSettings,
    generate_resumable,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
STALE_POLICIES = ("replace", "error")
#: Fields the loop writes into every record (besides the item's own fields and the scores).
LOOP_FIELDS = ("key", "sample_idx", "content_key", "scorer", "scorer_version", "ts")
LOCK_HINT = "it is being written by another process; wait for it or use another output file"


@dataclass(frozen=True)
class TaskItem:
    """One prompt of a task: ``samples`` answers to ``user`` (with ``system`` as system text).

    ``fields`` are copied into every record of the item (probe id, condition, category, ...).
    ``messages`` are a conversation's earlier turns (user/assistant dicts; ``user`` is the last
    user turn), empty for a single-turn prompt.
    """

    key: str
    user: str
    system: str | None = None
    samples: int = 1
    fields: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """What, besides the prompt, decides a record: the model (its reference dict with ``spec`` and
    ``sha256``), the adapter (``{"path", "sha256"}`` or None), the sampler and the scorer's name."""

    model: Mapping[str, Any]
    adapter: Mapping[str, Any] | None
    sampler: SamplerSettings
    scorer: str = "v2"


@dataclass
class TaskRun:
    """The records of a finished task in item order (then sample order) and what this run did."""

    records: list[Record]
    generated: int
    rescored: int
    stale: int
    engine_stats: dict[str, Any]
    session_s: float

    @property
    def resumed(self) -> bool:
        return self.generated < len(self.records)


def work_path(out_path: PathLike) -> Path:
    """The work file of a task whose final output is ``out_path``: ``<stem>.partial.jsonl`` beside it."""
    out = Path(out_path)
    return out.with_name(out.stem + ".partial.jsonl")


def adapter_info(adapter_path: PathLike | None) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a LoRA adapter folder (hash of its weights file if present)."""
    if adapter_path is None:
        return None
    p = Path(adapter_path)
    weights = p / "adapters.safetensors" if p.is_dir() else p
    return {"path": str(adapter_path), "sha256": tagged(sha256_file(weights)) if weights.is_file() else None}


def model_reference(model: str, generator: Any = None) -> dict[str, Any]:
    """The model's reference (:func:`lekutils.engine.models.fingerprint`). A name that is no model
    spec (a caller's own generator, e.g. a test model) gets ``{"spec", "kind": "engine", "sha256":
    None}``; loading such a model, if anything is missing, fails with the spec error."""
    from lekutils.engine import models

    try:
        return models.fingerprint(model)
    except (ValueError, OSError):
        return {"spec": model, "kind": "engine", "sha256": None}


def content_key(spec: TaskSpec, item: TaskItem) -> str:
    """16 hex characters identifying everything that decides an item's generated text."""
    # a remote model's identity is openai:<model>: adding or moving endpoints regenerates nothing
    model = spec.model.get("sha256") or spec.model.get("identity") or spec.model.get("spec")
    adapter = (spec.adapter or {}).get("sha256") or (spec.adapter or {}).get("path")
    system = None if item.system is None else sha256_bytes(item.system.encode("utf-8"))
    parts = [item.user, system, model, adapter, spec.sampler.to_dict()]
    if item.messages:  # a conversation's earlier turns (single-turn keys stay as they were)
        parts.append([[m["role"], m["content"]] for m in item.messages])
    return sha256_json(parts, length=16)


def store_key(rec: Record) -> tuple[str, int]:
    """The work file's key of a record: ``(item key, sample_idx)``."""
    return (rec["key"], int(rec["sample_idx"]))


def _stale_dir(path: Path) -> Path:
    return path.parent / ".stale"


def _open(path: Path, expected: Mapping[tuple[str, int], str], scorer: Any, stale: str) -> tuple[JsonlStore, int, int]:
    """Open the work file; move aside (or refuse) stale records; re-score records of another scorer."""
    store = JsonlStore(path, key=store_key)
    if store.repaired_bytes:
        log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", path, store.repaired_bytes)
    recs = store.records()
    bad = [(i, r) for i, r in enumerate(recs, start=1)
           if store_key(r) in expected and r.get("content_key") != expected[store_key(r)]]
    if bad and stale == "error":
        raise DataError(path, [Problem(
            f"record {store_key(r)!r} was made with other settings (prompt, kernel, model, adapter or sampler "
            "changed); delete the file, choose another output, or re-run with stale='replace'", line=i)
            for i, r in bad])
    drop = {i for i, _ in bad}
    keep = [r for i, r in enumerate(recs, start=1) if i not in drop]
    rescore = [r for r in keep if (r.get("scorer"), str(r.get("scorer_version"))) != (scorer.name, str(scorer.version))]
    if not bad and not rescore:
        return store, 0, 0
    if bad:
        aside = _stale_dir(path) / f"{path.stem}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.jsonl"
        atomic_write_jsonl(aside, [r for _, r in bad])
        log.warning("%s: %d record(s) made with other settings moved to %s; they will be regenerated",
                    path, len(bad), aside)
    for r in rescore:
        r.update(_scores(scorer, r["response"]))
    atomic_write_jsonl(path, keep)
    return JsonlStore(path, key=store_key), len(rescore), len(bad)


def _scores(scorer: Any, text: str) -> dict[str, Any]:
    h = scorer(text)
    return {"lek_score": h["lek_score"], "heuristic": h, "scorer": scorer.name, "scorer_version": str(scorer.version)}


def _record(item: TaskItem, res: GenerationResult, ck: str, scorer: Any, wall_s: float) -> Record:
    return {
        **item.fields, "key": item.key, "sample_idx": res.sample_idx, "content_key": ck,
        "response": res.text, **_scores(scorer, res.text), "chars": len(res.text),
        "prompt_tokens": res.prompt_tokens, "generation_tokens": res.generation_tokens,
        "finish_reason": res.finish_reason, "prompt_format": res.prompt_format,
        "time_s": round(float(res.time_s), 3), "prefill_s": round(float(res.prefill_s), 4),
        "decode_s": round(float(res.decode_s), 4), "wall_s": round(wall_s, 4),
        "sampler": res.sampler, "sample_seed": res.seed,
        **({"served_model": res.model, "endpoint": res.endpoint} if res.endpoint else {}),
        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_task(items: Sequence[TaskItem], spec: TaskSpec, work_path: PathLike, *,
             generator: Generator | Callable[[], Generator] | None = None, stale: str = "replace",
             chunk_size: int | None = None, progress: Callable[[int], None] | None = None,
             store_every: int = STORE_EVERY, wait_lock: bool = True) -> TaskRun:
    """Generate, score and store every (item, sample) not yet in ``work_path``; return all records.

    ``generator`` is a :class:`~lekutils.engine.base.Generator` or a zero-argument factory called
    only when something is missing (so a finished task never loads a model).

    The work file is locked (``<work file>.lock``) for the whole task, so two processes on one
    work file never write a key twice: the second waits (``wait_lock=True``, the default) and then
    finds the work done, or fails at once with :class:`~lekutils.core.lock.LockedError`.
    ``store_every`` (default 4) bounds what a kill can lose: finished rows are stored in groups of
    at most that many, as they finish, while the engine keeps batching ``batch_size`` rows.
    """
    from lekutils.scoring import get_scorer

    if stale not in STALE_POLICIES:
        raise ValueError(f"stale must be one of {STALE_POLICIES}, got {stale!r}")
    keys = [it.key for it in items]
    if not items or len(set(keys)) != len(keys):
        raise ValueError("a task needs at least one item and unique item keys")
    t0 = time.monotonic()
    scorer = get_scorer(spec.scorer)
    ck = {it.key: content_key(spec, it) for it in items}
    expected = {(it.key, s): ck[it.key] for it in items for s in range(it.samples)}
    with lock.hold(work_path, folder=False, wait=wait_lock, hint=LOCK_HINT):
        return _run_locked(items, spec, Path(work_path), scorer, ck, expected, generator, stale, chunk_size,
                           progress, t0, store_every)


def _run_locked(items: Sequence[TaskItem], spec: TaskSpec, work_path: Path, scorer: Any, ck: Mapping[str, str],
                expected: Mapping[tuple[str, int], str], generator: Any, stale: str, chunk_size: int | None,
                progress: Callable[[int], None] | None, t0: float, store_every: int) -> TaskRun:
    by_key = {it.key: it for it in items}
    for tmp in sweep_temp_files(work_path):
        log.warning("%s: removed %s left by an interrupted write", work_path, tmp.name)
    store, rescored, n_stale = _open(work_path, expected, scorer, stale)
    missing = [k for k in expected if k not in store]
    generated, stats = 0, {}
    if missing:
        if generator is None:
            raise ValueError(f"{work_path}: {len(missing)} results missing and no generator given")
        engine = generator if isinstance(generator, Generator) else generator()
        last = [time.monotonic()]

        def on_chunk(results: list[GenerationResult]) -> None:
            nonlocal generated
            now = time.monotonic()
            share = (now - last[0]) / max(len(results), 1)
            last[0] = now
            generated += store.extend(_record(by_key[r.key], r, ck[r.key], scorer, share) for r in results
                                      if (r.key, r.sample_idx) not in store)

        requests = [GenerationRequest(it.key, it.user, it.system, it.samples, tuple(it.messages)) for it in items]
        stats = generate_resumable(engine, requests, spec.sampler, is_done=lambda k, i: (k, i) in store,
                                   on_chunk=on_chunk, chunk_size=chunk_size, progress=progress,
                                   store_every=store_every) or {}
    done = {store_key(r): r for r in store.records()}
    still = [k for k in expected if k not in done]
    if still:
        raise RuntimeError(f"{work_path}: task incomplete, {len(still)} results missing (first: {still[0]!r})")
    return TaskRun([done[k] for k in expected], generated, rescored, n_stale, stats,
                   round(time.monotonic() - t0, 2))
