"""The A/B test: the same probes under ``baseline`` and each kernel condition, scored, summarised.

Output (``out_path``, written atomically once every (probe, condition) is done) is upstream's
shape: one ``{"type": "probe", "id", "category", "prompt", "conditions": {name: {"response",
"lek_score", "heuristic", "chars", "time_s", ...}}}`` line per probe, then one ``{"type":
"summary", ...}`` line. Our records add the scorer, model, adapter, sampler, seed, token counts,
finish reasons and prompt formats.

Resumable (:mod:`lekutils.tasks.loop`): each (probe, condition) result goes to ``<out>.partial.jsonl`` (a
:class:`~lekutils.core.jsonl.JsonlStore`) as soon as its generation chunk is done; a re-run after a
crash generates only what is missing (the engine's fixed chunking makes it equal to an
uninterrupted run) and refuses partial records made with other settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lekutils.core import lock
from lekutils.core.jsonl import atomic_write_jsonl, sweep_temp_files
from lekutils.data.kernels import BASELINE, Condition, kernel_hashes
from lekutils.data.probes import Probe, probes_hash
from lekutils.data.records import read_ab_file
from lekutils.scoring.rules import CHANGE_BAND

if TYPE_CHECKING:
    import pandas as pd

    from lekutils.engine.base import SamplerSettings

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

_SEP = "\x1f"  # joins condition and probe id in engine request keys


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _round(x: float) -> float:
    return round(float(x), 2)


def ab_summary(records: Sequence[dict[str, Any]], conditions: Sequence[str] | None = None, *,
              baseline: str = BASELINE, band: float = CHANGE_BAND) -> dict[str, Any]:
    """Upstream's summary of probe records: per condition ``avg_lek`` and, against the baseline,
    ``improved`` / ``regressed`` / ``unchanged`` (score change > ``band``, < ``-band``,
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
            row["improved"] = 0 if c == baseline else sum(d > band for d in deltas)
            row["regressed"] = 0 if c == baseline else sum(d < -band for d in deltas)
            row["unchanged"] = 0 if c == baseline else sum(abs(d) <= band for d in deltas)
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


def run_ab(model: str, probes: Sequence[Probe], conditions: Sequence[Condition], out_path: PathLike, *,
           adapter_path: PathLike | None = None, sampler: SamplerSettings | None = None,
           scorer: str = "v2", batch_size: int = 16, engine: Any = None,
           progress: Callable[[int], None] | None = None, chunk_size: int | None = None,
           probe_set: str | None = None, stale: str = "replace", store_every: int = 4,
           experiment: str = "", generator_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) an A/B test and write ``out_path``; return its summary line.

    ``model`` is a model spec (see ``lekutils.engine.models.load``); ``engine`` an already built
    generator for that model (else the local engine is loaded, only if work is missing). Greedy
    decoding by default (``SamplerSettings()``), as upstream. ``probe_set`` names the set in the
    records (for reports); ``chunk_size`` and ``store_every`` (finished results are stored in groups
    of at most this many, so a kill loses at most that many) are passed to the task loop. Work-file records made with
    other settings are regenerated (``stale="replace"``) or refused (``"error"``): see
    :mod:`lekutils.tasks.loop`. ``experiment`` (a named re-run, ``run --name``) is recorded in every
    line, and the report labels the run ``<model> [<experiment>]``. ``generator_options`` go to
    :func:`lekutils.engine.factory.open_generator` (a remote model's options, e.g. ``{"in_flight": 4,
    "api_key_env": "OPENAI_API_KEY"}``; see :mod:`lekutils.engine.remote`).
    """
    from lekutils.engine.base import SamplerSettings
    from lekutils.tasks.loop import TaskItem, TaskSpec, adapter_info, model_reference, run_task, work_path

    sampler = sampler or SamplerSettings()
    if not probes:
        raise ValueError("run_ab needs at least one probe")
    names = [c.name for c in conditions]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"conditions must be non-empty with distinct names: {names}")
    if len({p.id for p in probes}) != len(probes):
        raise ValueError("probe ids must be unique")
    if adapter_path is not None:  # before anything runs: a bad adapter fails now, naming its file
        from lekutils.engine.remote import is_remote

        if is_remote(model):
            raise ValueError(f"{model}: a remote model takes no local adapter ({adapter_path}); serve the adapter "
                             "with the model (e.g. mlx_lm.server --adapter-path) and use that server's spec")
        from lekutils.tasks.validate import check_adapter

        check_adapter(adapter_path, model)
    out_path = Path(out_path)
    fingerprint = model_reference(model, engine)
    adapter = adapter_info(adapter_path)
    spec = TaskSpec(fingerprint, adapter, sampler, scorer)
    items = [TaskItem(f"{c.name}{_SEP}{p.id}", p.prompt, c.system, 1, {"id": p.id, "condition": c.name})
             for c in conditions for p in probes]

    def load_engine() -> Any:
        from lekutils.engine.factory import open_generator

        return open_generator(model, batch_size=batch_size, adapter_path=adapter_path, **(generator_options or {}))

    with lock.hold(work_path(out_path), folder=False, wait=True):  # the task and the output file
        sweep_temp_files(out_path)  # a killed run's half-written output
        run = run_task(items, spec, work_path(out_path), generator=engine or load_engine, stale=stale,
                       chunk_size=chunk_size, progress=progress, store_every=store_every)
        done = {(r["id"], r["condition"]): r for r in run.records}
        first = run.records[0]
        scorer_name, scorer_version = first["scorer"], first["scorer_version"]
        sampler_d = sampler.to_dict()
        lines = []
        for p in probes:
            conds = {}
            for c in conditions:
                r = done[(p.id, c.name)]
                conds[c.name] = {k: v for k, v in r.items() if k not in ("id", "condition", "key", "sample_idx",
                                                                         "content_key", "ts")}
                conds[c.name]["condition"] = c.name
            lines.append({"type": "probe", "id": p.id, "category": p.category, "prompt": p.prompt,
                          "conditions": conds, "scorer": scorer_name, "scorer_version": scorer_version,
                          "model": model, "model_sha256": fingerprint.get("sha256"), "adapter": adapter,
                          "sampler": sampler_d, "seed": sampler_d.get("seed"),
                          "probe_set": probe_set, "source_probe": p.source_probe, "rephrase_type": p.rephrase_type,
                          **({"experiment": experiment} if experiment else {}),
                          "ts": max(done[(p.id, c.name)]["ts"] for c in conditions)})
        summary = ab_summary(lines, names)
        duration = sum(float(r.get("wall_s", 0.0)) for r in run.records)
        summary.update({
            "model": model, "model_fingerprint": fingerprint, "adapter": adapter, "probe_set": probe_set,
            **({"experiment": experiment} if experiment else {}),
            "scorer": scorer_name, "scorer_version": scorer_version,
            "sampler": sampler_d, "seed": sampler_d.get("seed"), "max_tokens": sampler_d.get("max_tokens"),
            "duration": f"{round(duration)}s", "duration_s": round(duration, 2),
            "probes_hash": probes_hash(probes), "kernels": kernel_hashes(conditions),
            "kernel_paths": {c.name: c.path for c in conditions if c.path},
            "prompt_formats": sorted({r["prompt_format"] for r in run.records if r.get("prompt_format")}),
            "cut_off": sum(r.get("finish_reason") == "length" for r in run.records),
            "generated_this_run": run.generated, "resumed": run.resumed, "rescored": run.rescored,
            "stale_replaced": run.stale, "session_s": run.session_s, "engine_stats": run.engine_stats,
            "ts": _now()})
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
    """A file-name-safe name for an A/B run: the model's last path part (``embedded:`` dropped; a
    remote model: ``openai-<model name's last part>``, whatever its endpoints), plus ``+<adapter folder>``."""
    from lekutils.engine import remote

    def slug(s: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in s).strip("-.") or "model"

    if remote.is_remote(model):
        base = slug("openai-" + Path(remote.parse_spec(model).model.rstrip("/")).name)
    else:
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
