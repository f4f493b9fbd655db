"""Self-distillation: sample answers with the kernel, score them, keep those above a threshold.

Every generation -- kept or not -- becomes one line of ``<run_dir>/distill/phaseK/raw.jsonl``
(a :class:`~lekutils.core.jsonl.JsonlStore` keyed by ``(prompt_id, sample_idx)``) carrying its score,
all signals, scorer and version, model, adapter, condition, sampler, seed, token counts and timings.
Kept lines are also in upstream's shape (``type: "training"``, ``training.messages`` = the user
prompt WITHOUT the kernel and the kernel-boosted answer, ``meta``), rejected ones are
``type: "generation"``; the file opens with a ``config`` line and ends with a ``summary`` line,
so upstream's extract step reads it unchanged.

Generation goes through :func:`lekutils.engine.base.generate_resumable` (batched, kernel prefix cached
by the engine): a run killed at any point and started again finishes with exactly the records of
an uninterrupted run. Starting again with other generation settings on the same file is refused;
a new threshold, gate or scorer re-gates the recorded generations without generating them again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import JsonlStore, Record, atomic_write_jsonl
from lekutils.report.audit import structural_score

log = logging.getLogger(__name__)

GATES = ("lek_score", "structural")
GENERATION_TYPES = ("training", "generation")
_CONFIG_KEY = ("__config__", -1)
_SUMMARY_KEY = ("__summary__", -1)
#: Config fields that may change on resume: existing generations are re-scored and re-gated, not redone.
_REGATE = ("threshold", "gate", "scorer", "scorer_version")
#: Config fields not compared on resume (the kernel's sha256 is; its path may be spelt differently).
_UNCOMPARED = ("kernel", "kernel_path")


class NothingKeptError(RuntimeError):
    """No generation of a phase passed its threshold; carries the best score seen."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary
        self.best_score = summary.get("best_score")


@dataclass(frozen=True)
class DistillSettings:
    """Everything that decides what a distillation phase generates and keeps.

    ``gate`` picks the number compared with ``threshold``: ``lek_score`` (the whole v2 score) or
    ``structural`` (penalties plus the structural signals only, used for phase 0's creative
    prompts). ``kernel`` is a kernel file whose raw text is the system message; None runs bare.
    """

    phase: int
    model: str = "embedded:smollm2-135m-instruct"
    adapter: str | None = None
    kernel: str | None = None
    samples: int = 8
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 4096
    seed: int = 0
    threshold: float = 24.0
    gate: str = "lek_score"
    scorer: str = "v2"
    batch_size: int = 16
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.gate not in GATES:
            problems.append(f"gate must be one of {GATES}, got {self.gate!r}")
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if problems:
            raise ValueError("; ".join(problems))

    def sampler(self):
        """The engine's :class:`~lekutils.engine.base.SamplerSettings` for these settings."""
        from lekutils.engine.base import SamplerSettings

        return SamplerSettings(temperature=self.temperature, top_p=self.top_p,
                               max_tokens=self.max_tokens, seed=self.seed)


def phase_dir(run_dir: str | os.PathLike[str], phase: int) -> Path:
    """``<run_dir>/distill/phase<K>``."""
    return Path(run_dir) / "distill" / f"phase{phase}"


def record_key(rec: Record) -> tuple[str, int]:
    """Store key of a raw record: ``(prompt_id, sample_idx)``; config/summary lines get fixed keys."""
    t = rec.get("type")
    if t == "config":
        return _CONFIG_KEY
    if t == "summary":
        return _SUMMARY_KEY
    return (rec["prompt_id"], rec["sample_idx"])


def open_store(path: str | os.PathLike[str]) -> JsonlStore:
    """Open (creating on first append) a raw distillation file."""
    return JsonlStore(path, key=record_key)


def generation_records(path: str | os.PathLike[str]) -> list[Record]:
    """All generation lines (kept and rejected) of a raw file, without config/summary."""
    return [r for r in open_store(path).records() if r.get("type") in GENERATION_TYPES]


def read_summary(path: str | os.PathLike[str]) -> Record | None:
    """The summary line of a raw file, or None while the phase is unfinished."""
    return next((r for r in open_store(path).records() if r.get("type") == "summary"), None)


def with_rephrasings(probes: Sequence[Any]) -> list[Any]:
    """The probes followed by their rephrased variants (``lekutils.data.probes.rephrase``), ids unique."""
    from lekutils.data.probes import rephrase

    out, seen = [], set()
    for p in list(probes) + list(rephrase(probes)):
        if p.id not in seen:
            seen.add(p.id)
            out.append(p)
    return out


def _kernel(settings: DistillSettings) -> tuple[str | None, dict[str, Any]]:
    if not settings.kernel:
        return None, {"condition": "baseline", "kernel_path": None, "kernel_sha256": None}
    from lekutils.data.kernels import conditions

    cond = conditions([settings.kernel], baseline=False)[0]
    return cond.system, {"condition": cond.name, "kernel_path": cond.path, "kernel_sha256": cond.sha256}


def _config_record(settings: DistillSettings, probes: Sequence[Any], kernel_meta: dict[str, Any],
                   scorer_version: str) -> Record:
    from lekutils.data.probes import probes_hash

    return {"type": "config", **asdict(settings), **kernel_meta, "scorer_version": scorer_version,
            "probes": len(probes), "probes_hash": probes_hash(probes)}


def _check_config(store: JsonlStore, new: Record) -> bool:
    """Write the config line of a new file; on resume return whether only the gate changed.

    Generation settings must match; the gate (threshold, gate, scorer) may change, in which case
    the caller re-scores and re-gates the existing generations instead of generating them again.
    """
    old = next((r for r in store.records() if r.get("type") == "config"), None)
    if old is None:
        if len(store):
            raise DataError(store.path, Problem("records without a config line: not a raw distillation file "
                                                "of this version; move it away", line=1, field="type"))
        store.append(new)
        return False
    problems = [Problem(f"this file was generated with {old.get(k)!r}, now {v!r}; use a new run_dir "
                        "or delete the phase folder to start over", line=1, field=k)
                for k, v in new.items() if k not in _REGATE + _UNCOMPARED and old.get(k) != v]
    if problems:
        raise DataError(store.path, problems)
    return any(old.get(k) != new.get(k) for k in _REGATE)


def _regate(store: JsonlStore, config: Record, settings: DistillSettings, scorer: Any) -> JsonlStore:
    """Rewrite the file atomically: the new config and every generation re-scored and re-gated."""
    gens = [_gate(r, settings, scorer) for r in store.records() if r.get("type") in GENERATION_TYPES]
    atomic_write_jsonl(store.path, [config, *gens])
    log.info("%s: re-gated %d existing generations (%s >= %s)", store.path, len(gens), settings.gate,
             settings.threshold)
    return open_store(store.path)


def _generation(result: Any, probe: Any, settings: DistillSettings, kernel_meta: dict[str, Any]) -> Record:
    """The generation fields of a record (everything the gate does not decide)."""
    return {
        "type": "generation", "phase": settings.phase,
        "prompt_id": probe.id, "sample_idx": result.sample_idx, "category": probe.category,
        "source_probe": probe.source_probe, "rephrase_type": probe.rephrase_type,
        "prompt": probe.prompt, "response": result.text,
        "model": settings.model, "adapter": settings.adapter, **kernel_meta,
        "sampler": result.sampler, "seed": result.seed, "prompt_format": result.prompt_format,
        "prompt_tokens": result.prompt_tokens, "generation_tokens": result.generation_tokens,
        "finish_reason": result.finish_reason, "chars": len(result.text),
        "time_s": result.time_s, "prefill_s": result.prefill_s, "decode_s": result.decode_s,
        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _gate(rec: Record, settings: DistillSettings, scorer: Any) -> Record:
    """Score a generation record, apply the gate, add upstream's ``training``/``meta`` when kept."""
    rec = {k: v for k, v in rec.items() if k not in ("training", "meta")}
    scores = scorer(rec["response"])
    lek = float(scores["lek_score"])
    signals = {k: v for k, v in scores.items() if k != "lek_score"}
    structural = structural_score(signals, settings.scorer)
    gate_value = lek if settings.gate == "lek_score" else structural
    kept = gate_value >= settings.threshold
    rec.update({"type": "training" if kept else "generation", "kept": kept, "lek_score": lek,
                "structural_score": structural, "gate": settings.gate, "gate_value": gate_value,
                "threshold": settings.threshold, "signals": signals, "scorer": settings.scorer,
                "scorer_version": scorer.version})
    if kept:
        rec["training"] = {"messages": [{"role": "user", "content": rec["prompt"]},
                                        {"role": "assistant", "content": rec["response"]}]}
        rec["meta"] = {"probe_id": rec["prompt_id"], "category": rec["category"],
                       "sample_idx": rec["sample_idx"], "lek_score": lek, "chars": rec["chars"],
                       "time_s": round(rec["time_s"], 3), "model": settings.model,
                       "threshold": settings.threshold, "temperature": settings.temperature, "ts": rec["ts"],
                       "phase": settings.phase, "source_probe": rec["source_probe"],
                       "rephrase_type": rec["rephrase_type"], "scorer": settings.scorer, "signals": signals}
    return rec


def summarize(records: Sequence[Record], settings: DistillSettings, *, probes: int,
              scorer_version: str, wall_s: float) -> Record:
    """The summary line: generated, kept, keep rate (%), average kept score, best score, totals.

    ``wall_s`` is the wall time of the session that finished the phase (earlier, interrupted
    sessions are not included); per-generation timings are on each record.
    """
    kept = [r for r in records if r.get("kept")]
    best = max(records, key=lambda r: (r["gate_value"], r["lek_score"]), default=None)
    return {
        "type": "summary", "phase": settings.phase, "model": settings.model, "adapter": settings.adapter,
        "probes": probes, "samples_per_probe": settings.samples,
        "total_generated": len(records), "total_kept": len(kept),
        "keep_rate": round(100.0 * len(kept) / max(len(records), 1), 1),
        "avg_kept_score": round(sum(r["lek_score"] for r in kept) / len(kept), 2) if kept else None,
        "best_score": best["gate_value"] if best else None,
        "best_key": [best["prompt_id"], best["sample_idx"]] if best else None,
        "gate": settings.gate, "threshold": settings.threshold, "temperature": settings.temperature,
        "top_p": settings.top_p, "max_tokens": settings.max_tokens, "seed": settings.seed,
        "scorer": settings.scorer, "scorer_version": scorer_version,
        "generation_tokens": sum(int(r.get("generation_tokens") or 0) for r in records),
        "wall_s": round(wall_s, 2),
        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def distill(probes: Sequence[Any], raw_path: str | os.PathLike[str], settings: DistillSettings, *,
            engine: Any = None, progress: Callable[[int], None] | None = None,
            raise_if_empty: bool = True) -> Record:
    """Generate ``settings.samples`` answers per probe, score and record them all; return the summary.

    Resumes from what ``raw_path`` already holds: generation settings must match; a changed
    threshold, gate or scorer re-scores and re-gates the existing generations (the file is rewritten
    atomically) and generates only what is missing. ``engine`` defaults to a
    :class:`lekutils.engine.local.Engine` on ``settings.model`` (+ adapter). Raises
    :class:`NothingKeptError` (after writing the summary) when nothing passed the threshold.
    """
    from lekutils.engine.base import GenerationRequest, generate_resumable
    from lekutils.scoring import get_scorer

    if not probes:
        raise ValueError("distill needs at least one probe")
    ids = [p.id for p in probes]
    if len(set(ids)) != len(ids):
        raise ValueError("probe ids must be unique")
    t0 = time.perf_counter()
    scorer = get_scorer(settings.scorer)
    system, kernel_meta = _kernel(settings)
    store = open_store(raw_path)
    if store.repaired_bytes:
        log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", raw_path,
                    store.repaired_bytes)
    config = _config_record(settings, probes, kernel_meta, scorer.version)
    if _check_config(store, config):
        store = _regate(store, config, settings, scorer)
    by_id = {p.id: p for p in probes}
    summary = next((r for r in store.records() if r.get("type") == "summary"), None)
    missing = [(p.id, i) for p in probes for i in range(settings.samples) if (p.id, i) not in store]
    if summary is None or missing:
        if missing:
            if engine is None:
                from lekutils.engine.local import Engine
                from lekutils.engine.models import load

                model, tokenizer = load(settings.model, adapter_path=settings.adapter)
                engine = Engine(model, tokenizer, batch_size=settings.batch_size, model_spec=settings.model)
            requests = [GenerationRequest(key=p.id, user=p.prompt, system=system, n_samples=settings.samples)
                        for p in probes]

            def on_chunk(results: list[Any]) -> None:
                store.extend(_gate(_generation(r, by_id[r.key], settings, kernel_meta), settings, scorer)
                             for r in results)

            generate_resumable(engine, requests, settings.sampler(), is_done=lambda k, i: (k, i) in store,
                               on_chunk=on_chunk, chunk_size=settings.chunk_size, progress=progress)
        records = [r for r in store.records() if r.get("type") in GENERATION_TYPES]
        summary = summarize(records, settings, probes=len(probes), scorer_version=scorer.version,
                            wall_s=time.perf_counter() - t0)
        store.append(summary)
    if raise_if_empty and not summary["total_kept"]:
        raise NothingKeptError(
            f"phase {settings.phase}: none of {summary['total_generated']} generations reached the "
            f"threshold {settings.threshold} on {settings.gate}; best was {summary['best_score']} "
            f"({summary['best_key'][0]} sample {summary['best_key'][1]}). Lower the threshold or raise "
            f"samples/max_tokens in the phase's params file.", summary)
    return summary
