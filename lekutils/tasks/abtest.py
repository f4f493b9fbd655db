"""The A/B test: the same probes under ``baseline`` and each kernel condition, scored, summarised.

Output (``out_path``, written atomically once every (probe, condition) is done) is upstream's
shape: one ``{"type": "probe", "id", "category", "prompt", "conditions": {name: {"response",
"lek_score", "heuristic", "chars", "time_s", ...}}}`` line per probe, then one ``{"type":
"summary", ...}`` line. Our records add the scorer, model, adapter, sampler, seed, token counts,
finish reasons and prompt formats.

Resumable: each (probe, condition) result goes to ``<out>.partial.jsonl`` (a
:class:`~lekutils.core.jsonl.JsonlStore`) as soon as its generation chunk is done; a re-run after a
crash generates only what is missing (the engine's fixed chunking makes it equal to an
uninterrupted run) and refuses partial records made with other settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.hashing import sha256_file, tagged
from lekutils.core.jsonl import JsonlStore, atomic_write_jsonl
from lekutils.data.kernels import BASELINE, Condition, kernel_hashes
from lekutils.data.probes import Probe, probes_hash
from lekutils.data.records import read_ab_file

if TYPE_CHECKING:
    import pandas as pd

    from lekutils.engine.base import SamplerSettings

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

#: A condition counts as improved/regressed on a probe when its score moves more than this.
THRESHOLD = 0.5
_SEP = "\x1f"  # joins condition and probe id in engine request keys


def partial_path(out_path: PathLike) -> Path:
    """The work file of an A/B run: ``<out stem>.partial.jsonl`` beside ``out_path``."""
    out = Path(out_path)
    return out.with_name(out.stem + ".partial.jsonl")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def adapter_info(adapter_path: PathLike | None) -> dict[str, Any] | None:
    """``{"path", "sha256"}`` of a LoRA adapter folder (hash of its weights file if present)."""
    if adapter_path is None:
        return None
    p = Path(adapter_path)
    weights = p / "adapters.safetensors" if p.is_dir() else p
    return {"path": str(adapter_path), "sha256": tagged(sha256_file(weights)) if weights.is_file() else None}


def _round(x: float) -> float:
    return round(float(x), 2)


def summarize(records: Sequence[dict[str, Any]], conditions: Sequence[str] | None = None, *,
              baseline: str = BASELINE, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Upstream's summary of probe records: per condition ``avg_lek`` and, against the baseline,
    ``improved`` / ``regressed`` / ``unchanged`` (score change > ``threshold``, < ``-threshold``,
    else) and ``delta_vs_baseline``; per-category means per condition (all rounded to 2 places).

    Only probes that have every condition are counted. Without a baseline condition the
    comparison fields are left out.
    """
    if conditions is None:
        conditions = list(records[0]["conditions"]) if records else []
    complete = [r for r in records if all(c in r["conditions"] for c in conditions)]
    has_base = baseline in conditions

    def score(r: dict[str, Any], c: str) -> float:
        return float(r["conditions"][c]["lek_score"])

    rows: list[dict[str, Any]] = []
    for c in conditions:
        scores = [score(r, c) for r in complete]
        avg = sum(scores) / len(scores) if scores else float("nan")
        row: dict[str, Any] = {"name": c, "avg_lek": _round(avg)}
        if has_base:
            deltas = [score(r, c) - score(r, baseline) for r in complete]
            row["improved"] = 0 if c == baseline else sum(d > threshold for d in deltas)
            row["regressed"] = 0 if c == baseline else sum(d < -threshold for d in deltas)
            row["unchanged"] = 0 if c == baseline else sum(abs(d) <= threshold for d in deltas)
            if c != baseline:
                base = [score(r, baseline) for r in complete]
                row["delta_vs_baseline"] = _round(avg - sum(base) / len(base)) if base else float("nan")
        rows.append(row)
    cats: dict[str, dict[str, list[float]]] = {}
    for r in complete:
        per = cats.setdefault(str(r.get("category")), {c: [] for c in conditions})
        for c in conditions:
            per[c].append(score(r, c))
    categories = {k: {c: _round(sum(v) / len(v)) for c, v in per.items()} for k, per in cats.items()}
    return {"type": "summary", "total_probes": len(complete), "conditions": rows, "categories": categories}


def _config(model: str, fingerprint: dict[str, Any] | None, adapter: dict[str, Any] | None,
            sampler: dict[str, Any], scorer: str, scorer_version: str) -> dict[str, Any]:
    return {"model": model, "model_sha256": (fingerprint or {}).get("sha256"), "adapter": adapter,
            "sampler": sampler, "scorer": scorer, "scorer_version": scorer_version}


def _item_hash(config: dict[str, Any], probe: Probe, cond: Condition) -> str:
    blob = json.dumps([config, probe.prompt, cond.name, cond.sha256], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _key(r: dict[str, Any]) -> tuple[str, str]:
    return (r["id"], r["condition"])


def _open_store(path: Path, expected: dict[tuple[str, str], str], stale: str) -> JsonlStore:
    """Open the work file; handle records made with other settings (see :func:`run_ab`)."""
    store = JsonlStore(path, key=_key)
    bad = [(i, r) for i, r in enumerate(store.records(), start=1)
           if _key(r) in expected and r.get("item") != expected[_key(r)]]
    if not bad:
        return store
    if stale == "error":
        raise DataError(path, [Problem(f"record for {_key(r)!r} was made with other settings (model, adapter, "
                                       "sampler, scorer, kernel or prompt changed); delete the file, choose "
                                       "another output path or pass stale='replace'", line=i) for i, r in bad])
    drop = {i for i, _ in bad}
    aside = path.with_name(f"{path.stem}.stale-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.jsonl")
    kept = [r for i, r in enumerate(store.records(), start=1) if i not in drop]
    os.replace(path, aside)
    atomic_write_jsonl(path, kept)
    log.warning("%s: %d record(s) made with other settings moved aside to %s; they will be regenerated",
                path, len(bad), aside)
    return JsonlStore(path, key=_key)


def run_ab(model: str, probes: Sequence[Probe], conditions: Sequence[Condition], out_path: PathLike, *,
           adapter_path: PathLike | None = None, sampler: SamplerSettings | None = None,
           scorer: str = "v2", batch_size: int = 16, engine: Any = None,
           progress: Callable[[int], None] | None = None, chunk_size: int | None = None,
           probe_set: str | None = None, stale: str = "replace") -> dict[str, Any]:
    """Run (or resume) an A/B test and write ``out_path``; return its summary line.

    ``model`` is a model spec (see ``lekutils.engine.models.load``); ``engine`` an already built
    ``lekutils.engine.local.Engine`` for that model (else one is loaded, only if work is missing).
    Greedy decoding by default (``SamplerSettings()``), as upstream. ``probe_set`` names the set
    in the records (for reports); ``chunk_size`` is passed to ``generate_resumable``.

    Work-file records made with other settings (model, adapter, sampler, scorer, kernel text or
    prompt changed) are ``stale``: ``"replace"`` (default) moves the old work file aside to
    ``<stem>.partial.stale-<time>.jsonl``, keeps its still-valid records and regenerates the rest;
    ``"error"`` raises :class:`DataError` naming the file and lines instead.
    """
    from lekutils.engine import models
    from lekutils.engine.base import GenerationRequest, SamplerSettings, generate_resumable
    from lekutils.scoring import get_scorer

    if sampler is None:
        sampler = SamplerSettings()
    if not probes:
        raise ValueError("run_ab needs at least one probe")
    names = [c.name for c in conditions]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"conditions must be non-empty with distinct names: {names}")
    ids = [p.id for p in probes]
    if len(set(ids)) != len(ids):
        raise ValueError("probe ids must be unique")
    out_path = Path(out_path)
    t0 = time.monotonic()
    scorer_obj = get_scorer(scorer)
    if stale not in ("replace", "error"):
        raise ValueError(f"stale must be 'replace' or 'error', got {stale!r}")
    try:
        fingerprint = models.fingerprint(model)
    except (ValueError, OSError):
        if engine is None:
            raise
        fingerprint = {"spec": model, "kind": "engine", "sha256": None}  # caller's own engine (e.g. a test model)
    adapter = adapter_info(adapter_path)
    sampler_d = sampler.to_dict()
    config = _config(model, fingerprint, adapter, sampler_d, scorer_obj.name, str(scorer_obj.version))
    expected = {(p.id, c.name): _item_hash(config, p, c) for p in probes for c in conditions}

    store = _open_store(partial_path(out_path), expected, stale)

    by_key = {f"{c.name}{_SEP}{p.id}": (p, c) for c in conditions for p in probes}
    missing = [k for k, (p, c) in by_key.items() if (p.id, c.name) not in store]
    generated = 0
    stats: dict[str, Any] = {}
    if missing:
        if engine is None:
            from lekutils.engine.local import Engine

            mdl, tok = models.load(model, adapter_path=None if adapter_path is None else str(adapter_path))
            engine = Engine(mdl, tok, batch_size=batch_size, model_spec=model)
        requests = [GenerationRequest(key=k, user=p.prompt, system=c.system) for k, (p, c) in by_key.items()]
        last = [time.monotonic()]

        def on_chunk(results: list[Any]) -> None:
            nonlocal generated
            now = time.monotonic()
            share = (now - last[0]) / max(len(results), 1)
            last[0] = now
            recs = []
            for res in results:
                p, c = by_key[res.key]
                if (p.id, c.name) in store:
                    continue
                h = scorer_obj(res.text)
                recs.append({
                    "id": p.id, "condition": c.name, "item": expected[(p.id, c.name)],
                    "response": res.text, "lek_score": h["lek_score"], "heuristic": h,
                    "chars": len(res.text), "time_s": round(float(res.time_s), 3),
                    "prompt_tokens": res.prompt_tokens, "generation_tokens": res.generation_tokens,
                    "finish_reason": res.finish_reason, "prompt_format": res.prompt_format,
                    "sample_seed": res.seed, "wall_s": round(share, 4), "ts": _now()})
            generated += store.extend(recs)

        stats = generate_resumable(engine, requests, sampler,
                                   is_done=lambda key, _i: (by_key[key][0].id, by_key[key][1].name) in store,
                                   on_chunk=on_chunk, chunk_size=chunk_size, progress=progress) or {}
    still = [k for k, (p, c) in by_key.items() if (p.id, c.name) not in store]
    if still:
        raise RuntimeError(f"A/B run incomplete: {len(still)} (probe, condition) results missing")

    done = {k: r for r in store.records() if (k := (r["id"], r["condition"])) in expected}
    lines = []
    for p in probes:
        conds = {}
        for c in conditions:
            r = done[(p.id, c.name)]
            conds[c.name] = {k: v for k, v in r.items() if k not in ("id", "condition", "item", "ts")}
            conds[c.name]["condition"] = c.name
        lines.append({"type": "probe", "id": p.id, "category": p.category, "prompt": p.prompt,
                      "conditions": conds, "scorer": config["scorer"], "scorer_version": config["scorer_version"],
                      "model": model, "model_sha256": config["model_sha256"], "adapter": adapter,
                      "sampler": sampler_d, "seed": sampler_d.get("seed"),
                      "probe_set": probe_set, "source_probe": p.source_probe, "rephrase_type": p.rephrase_type,
                      "ts": max(done[(p.id, c.name)]["ts"] for c in conditions)})
    summary = summarize(lines, names)
    duration = sum(float(r.get("wall_s", 0.0)) for r in done.values())
    summary.update({
        "model": model, "model_fingerprint": fingerprint, "adapter": adapter, "probe_set": probe_set,
        "scorer": config["scorer"], "scorer_version": config["scorer_version"],
        "sampler": sampler_d, "seed": sampler_d.get("seed"), "max_tokens": sampler_d.get("max_tokens"),
        "duration": f"{round(duration)}s", "duration_s": round(duration, 2),
        "probes_hash": probes_hash(probes), "kernels": kernel_hashes(conditions),
        "kernel_paths": {c.name: c.path for c in conditions if c.path},
        "prompt_formats": sorted({r["prompt_format"] for r in done.values() if r.get("prompt_format")}),
        "generated_this_run": generated, "resumed": generated < len(expected),
        "session_s": round(time.monotonic() - t0, 2), "engine_stats": stats, "ts": _now()})
    atomic_write_jsonl(out_path, [*lines, summary])
    return summary


def select_probes(probes: Sequence[Probe], *, max_probes: int = 0, ids: Sequence[str] = ()) -> list[Probe]:
    """The probes named by ``ids`` (in set order; unknown ids are an error), else the first
    ``max_probes`` (0 = all)."""
    if ids:
        unknown = sorted(set(ids) - {p.id for p in probes})
        if unknown:
            raise ValueError(f"unknown probe ids: {unknown}")
        return [p for p in probes if p.id in set(ids)]
    return list(probes[:max_probes] if max_probes > 0 else probes)


def run_name(model: str, adapter_path: PathLike | None = None) -> str:
    """A file-name-safe name for an A/B run: the model's last path part (``embedded:`` dropped),
    plus ``+<adapter folder>``."""
    def slug(s: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in s).strip("-.") or "model"

    base = slug(Path(model.removeprefix("embedded:").rstrip("/")).name)
    if adapter_path is None:
        return base
    a = Path(str(adapter_path).rstrip("/"))
    return f"{base}+{slug(a.name if a.suffix != '.safetensors' else a.parent.name)}"


def _read_ab(path: PathLike) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    return read_ab_file(path, need_score=True)


def load_ab(path: PathLike) -> list[dict[str, Any]]:
    """Probe records of an A/B file, ours or upstream's (``ab-*.jsonl``); the summary excluded."""
    return _read_ab(path)[0]


def load_ab_summary(path: PathLike) -> dict[str, Any] | None:
    """The summary line of an A/B file (None if it has none)."""
    return _read_ab(path)[1]


def ab_frame(records: Sequence[dict[str, Any]], baseline: str = BASELINE) -> pd.DataFrame:
    """Long table: one row per (probe, condition) with ``lek_score``, ``chars``, ``time_s`` and
    ``delta`` (score minus the probe's baseline score; NaN without a baseline)."""
    import pandas as pd

    rows = []
    for r in records:
        base = r["conditions"].get(baseline, {}).get("lek_score")
        for name, c in r["conditions"].items():
            rows.append({"id": r["id"], "category": r.get("category"), "condition": name,
                         "lek_score": c["lek_score"], "chars": c.get("chars"), "time_s": c.get("time_s"),
                         "finish_reason": c.get("finish_reason"),
                         "delta": (c["lek_score"] - base) if base is not None else float("nan")})
    return pd.DataFrame(rows)
