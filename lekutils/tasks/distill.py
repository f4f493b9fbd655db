"""Self-distillation: sample answers with the kernel, score them, keep those that pass the keep rule.

Generation, scoring and resumption are the task loop's (:mod:`lekutils.tasks.loop`): every sample
goes to the work file ``raw.partial.jsonl`` as soon as its chunk is done. When all are there,
``<run_dir>/distill/phaseK/raw.jsonl`` is written atomically: a ``config`` line, one line per
generation -- kept or not -- carrying its score, all signals, scorer and version, model, adapter,
condition, sampler, seed, token counts, finish reason and timings, then a ``summary`` line. Kept
lines are also in upstream's shape (``type: "training"``, ``training.messages`` = the user prompt
WITHOUT the kernel and the kernel-boosted answer, ``meta``), rejected ones are ``type:
"generation"``, so upstream's extract step reads the file unchanged.

The keep rule: ``keep_on`` (the whole v2 ``lek_score``, or ``structural`` = penalties plus the
structural signals, for phase 0's creative prompts) ``>= keep_threshold``, and the answer finished
(an answer cut off at ``max_tokens`` is excluded unless ``allow_truncated``). A new keep rule or
scorer re-applies to the recorded generations without generating them again; other generation
settings on the same work file are refused (``stale="error"``, the default here: distillation is
expensive) or regenerated (``stale="replace"``).

External augmentation (:mod:`lekutils.tasks.augment`): with ``reference_models``, each reference
model answers every probe ``reference_samples`` times through the same task loop (its own work file
``raw.ref-<model>.partial.jsonl``), scored with the same scorer and kept by the same rule
(``reference_threshold`` where given); the kept references are mixed with the kept self-distilled
answers to ``reference_fraction`` of the training set (:func:`lekutils.tasks.augment.apply_mix`).
Every record carries ``source`` (``"self"`` or the reference spec) and ``source_model``; the summary
gives the achieved ``mix`` and per-source counts and score distributions (``sources``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core import lock
from lekutils.core.jsonl import JsonlStore, Record, atomic_write_jsonl, read_jsonl, sweep_temp_files
from lekutils.scoring.rules import structural_score
from lekutils.tasks.augment import SELF, apply_mix, model_id, reference_raw_path, sample_index, source_stats

log = logging.getLogger(__name__)

KEEP_ON = ("lek_score", "structural", "none")
GENERATION_TYPES = ("training", "generation")
_CONFIG_KEY = ("__config__", -1)
_SUMMARY_KEY = ("__summary__", -1)


class NothingKeptError(RuntimeError):
    """No generation of a phase passed its keep rule; carries the best score seen."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary
        self.best_score = summary.get("best_score")


@dataclass(frozen=True)
class DistillSettings:
    """Everything that decides what a distillation phase generates and keeps.

    ``keep_on`` picks the number compared with ``keep_threshold``: ``lek_score`` (the whole v2
    score) or ``structural`` (penalties plus the structural signals only); ``none`` is no score
    gate (phase 0: every finished answer is kept, a manual review sample decides). ``kernel`` is a
    kernel file whose raw text is the system message; None runs bare. An answer cut off at
    ``max_tokens`` is excluded by default (a truncated target teaches the model to stop mid-sentence
    or to ramble); ``trim_truncated`` cuts it back to its last complete paragraph or sentence
    (:func:`trim_to_boundary`) and judges that complete text instead; ``allow_truncated`` keeps it
    as it is.
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
    keep_threshold: float = 24.0
    keep_on: str = "lek_score"
    allow_truncated: bool = False
    trim_truncated: bool = False
    scorer: str = "v2"
    batch_size: int = 16
    chunk_size: int | None = None
    store_every: int = 4
    #: external augmentation (lekutils.tasks.augment): reference model specs, answers per probe from
    #: each, their keep threshold (None: keep_threshold) and their target share of the training set
    reference_models: tuple[str, ...] = ()
    reference_samples: int = 10
    reference_threshold: float | None = None
    reference_fraction: float = 0.3

    def __post_init__(self) -> None:
        from lekutils.tasks.augment import check_parameters

        object.__setattr__(self, "reference_models", tuple(self.reference_models or ()))
        problems = [str(p) for p in check_parameters(asdict(self), check_specs=False)]
        if self.keep_on not in KEEP_ON:
            problems.append(f"keep_on must be one of {KEEP_ON}, got {self.keep_on!r}")
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.store_every < 1:
            problems.append(f"store_every must be >= 1, got {self.store_every}")
        if problems:
            raise ValueError("; ".join(problems))

    def sampler(self) -> Any:
        """The engine's :class:`~lekutils.engine.base.SamplerSettings` for these settings."""
        from lekutils.engine.base import SamplerSettings

        return SamplerSettings(temperature=self.temperature, top_p=self.top_p,
                               max_tokens=self.max_tokens, seed=self.seed)

    def for_reference(self, spec: str) -> DistillSettings:
        """The settings a reference model's answers are generated and kept under (no adapter)."""
        from dataclasses import replace

        threshold = self.keep_threshold if self.reference_threshold is None else float(self.reference_threshold)
        return replace(self, model=spec, adapter=None, samples=self.reference_samples, keep_threshold=threshold,
                       reference_models=())


def phase_dir(run_dir: str | os.PathLike[str], phase: int) -> Path:
    """``<run_dir>/distill/phase<K>``."""
    return Path(run_dir) / "distill" / f"phase{phase}"


def record_key(rec: Record) -> tuple[str, int]:
    """Key of a raw record: ``(prompt_id, sample_idx)``; config/summary lines get fixed keys."""
    t = rec.get("type")
    if t == "config":
        return _CONFIG_KEY
    if t == "summary":
        return _SUMMARY_KEY
    return (rec["prompt_id"], rec["sample_idx"])


def open_store(path: str | os.PathLike[str]) -> JsonlStore:
    """Open a raw distillation file (ours or upstream's) as a keyed store."""
    return JsonlStore(path, key=record_key)


def generation_records(path: str | os.PathLike[str]) -> list[Record]:
    """All generation lines (kept and rejected) of a raw file, without config/summary."""
    return [r for r in read_jsonl(path) if r.get("type") in GENERATION_TYPES]


def read_summary(path: str | os.PathLike[str]) -> Record | None:
    """The summary line of a raw file, or None while the phase is unfinished."""
    if not Path(path).exists():
        return None
    return next((r for r in read_jsonl(path) if r.get("type") == "summary"), None)


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


def trim_to_boundary(text: str, min_share: float = 0.4) -> str | None:
    """A cut-off answer cut back to the end of its last complete sentence or paragraph; None when
    less than ``min_share`` of the text would remain."""
    ends = [text.rfind("\n\n")] + [i + 1 for i in (text.rfind(p) for p in (". ", ".\n", "! ", "? ", '." ')) if i >= 0]
    cut = max(ends)
    return text[:cut].rstrip() if cut >= min_share * len(text) else None


def _keep(rec: Record, settings: DistillSettings, source: str = "self", source_model: str | None = None) -> Record:
    """Apply the keep rule to a task record; add upstream's ``training``/``meta`` when kept.

    ``source`` is ``"self"`` or a reference model's spec, ``source_model`` the model's id (both are
    recorded on the record and in its ``meta``)."""
    finished = rec.get("finish_reason") != "length"
    target, scores = rec["response"], rec["heuristic"]
    trimmed = None
    if not finished and settings.trim_truncated:
        trimmed = trim_to_boundary(rec["response"])
        if trimmed is not None:
            from lekutils.scoring import get_scorer

            target, scores = trimmed, get_scorer(rec["scorer"])(trimmed)
    signals = {k: v for k, v in scores.items() if k != "lek_score"}
    lek = float(scores["lek_score"])
    structural = structural_score(signals, rec["scorer"])
    value = structural if settings.keep_on == "structural" else lek
    complete = finished or trimmed is not None
    kept = _passes(value, settings) and (complete or settings.allow_truncated)
    out = {k: v for k, v in rec.items() if k not in ("key", "heuristic", "sample_seed", "content_key")}
    out.update({"type": "training" if kept else "generation", "kept": kept, "lek_score": lek,
                "structural_score": structural, "keep_on": settings.keep_on, "keep_value": value,
                "keep_threshold": settings.keep_threshold, "truncated": not finished, "signals": signals,
                "seed": rec["sample_seed"], "content_key": rec["content_key"], "source": source,
                "source_model": source_model or settings.model})
    if trimmed is not None:
        out.update({"trimmed": True, "target": trimmed, "response_lek_score": float(rec["lek_score"])})
    if kept:
        if rec.get("conversation"):
            messages = [dict(m) for m in rec["conversation"]]
            messages[-1]["content"] = target  # the final answer (trimmed if it was cut off)
        else:
            messages = [{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": target}]
        out["training"] = {"messages": messages}
        out["meta"] = {"probe_id": rec["prompt_id"], "category": rec["category"],
                       "sample_idx": rec["sample_idx"], "lek_score": lek, "chars": len(target),
                       "time_s": round(rec["time_s"], 3), "model": settings.model,
                       "threshold": settings.keep_threshold, "temperature": settings.temperature,
                       "ts": rec["ts"], "phase": settings.phase, "source_probe": rec["source_probe"],
                       "rephrase_type": rec["rephrase_type"], "scorer": rec["scorer"], "signals": signals,
                       "trimmed": trimmed is not None, "source": source,
                       "source_model": source_model or settings.model}
        if rec.get("conversation"):
            out["meta"]["turns"] = rec["n_turns"]
    return out


def _passes(value: float, settings: DistillSettings) -> bool:
    """Whether a score passes the score gate (always, with ``keep_on="none"``)."""
    return settings.keep_on == "none" or value >= settings.keep_threshold


def distill_summary(records: Sequence[Record], settings: DistillSettings, *, probes: int,
                    scorer_version: str, wall_s: float, mix: Any = None) -> Record:
    """The summary line: generated, kept, keep rate (%), cut off / excluded as truncated, average
    kept score, best score, totals. ``wall_s`` is the wall time of the session that finished the
    phase (per-generation timings are on each record)."""
    kept = [r for r in records if r.get("kept")]
    best = max(records, key=lambda r: (r["keep_value"], r["lek_score"]), default=None)
    truncated = [r for r in records if r.get("truncated")]
    excluded = [r for r in truncated if _passes(r["keep_value"], settings) and not r["kept"]]
    trimmed = [r for r in records if r.get("trimmed")]
    return {
        "type": "summary", "phase": settings.phase, "model": settings.model, "adapter": settings.adapter,
        "probes": probes, "samples_per_probe": settings.samples,
        "conversations": sum(1 for r in records if r.get("conversation")),
        "total_generated": len(records), "total_kept": len(kept),
        "keep_rate": round(100.0 * len(kept) / max(len(records), 1), 1),
        "cut_off": len(truncated), "excluded_truncated": len(excluded), "trimmed": len(trimmed),
        "kept_trimmed": sum(bool(r.get("kept")) for r in trimmed),
        "allow_truncated": settings.allow_truncated, "trim_truncated": settings.trim_truncated,
        "avg_kept_score": round(sum(r["lek_score"] for r in kept) / len(kept), 2) if kept else None,
        "best_score": best["keep_value"] if best else None,
        "best_key": [best["prompt_id"], best["sample_idx"]] if best else None,
        "keep_on": settings.keep_on, "keep_threshold": settings.keep_threshold,
        "temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens,
        "seed": settings.seed, "scorer": settings.scorer, "scorer_version": scorer_version,
        "generation_tokens": sum(int(r.get("generation_tokens") or 0) for r in records),
        "total_used": sum(bool(r.get("used", r.get("kept"))) for r in records),
        **({"reference_models": list(settings.reference_models), "reference_samples": settings.reference_samples,
            "reference_threshold": settings.for_reference(settings.reference_models[0]).keep_threshold,
            "mix": mix.to_dict(), "sources": source_stats(records, seed=settings.seed)} if mix is not None else {}),
        "wall_s": round(wall_s, 2),
        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def distill(probes: Sequence[Any], raw_path: str | os.PathLike[str], settings: DistillSettings, *,
            engine: Any = None, progress: Callable[[int], None] | None = None,
            raise_if_empty: bool = True, stale: str = "error",
            reference_engines: Mapping[str, Any] | None = None,
            reference_options: Mapping[str, Any] | None = None) -> Record:
    """Generate ``settings.samples`` answers per probe, score them, write ``raw_path``; return the summary.

    Resumes from the work file beside ``raw_path`` (see the module docstring). ``engine`` defaults
    to the local engine on ``settings.model`` (+ adapter), loaded only if something is missing;
    ``reference_engines`` maps reference specs to generators (default: each opened with
    :func:`lekutils.engine.factory.open_generator`, only if something of it is missing, with
    ``reference_options``: a remote backend's options, e.g. the API key's environment variable).
    Raises :class:`NothingKeptError` (after writing the file) when nothing passed the keep rule.
    """
    from lekutils.data.probes import probes_hash
    from lekutils.scoring import get_scorer
    from lekutils.tasks.loop import TaskItem, TaskSpec, adapter_info, model_reference, run_task, work_path

    if not probes:
        raise ValueError("distill needs at least one probe")
    if len({p.id for p in probes}) != len(probes):
        raise ValueError("probe ids must be unique")
    if settings.adapter is not None:  # before anything runs: a bad adapter fails now, naming its file
        from lekutils.tasks.validate import check_adapter

        check_adapter(settings.adapter, settings.model)
    t0 = time.perf_counter()
    system, kernel_meta = _kernel(settings)
    spec = TaskSpec(model_reference(settings.model, engine), adapter_info(settings.adapter), settings.sampler(),
                    settings.scorer)
    items = [TaskItem(p.id, p.prompt, system, settings.samples, {
        "type": "generation", "phase": settings.phase, "prompt_id": p.id, "category": p.category,
        "source_probe": p.source_probe, "rephrase_type": p.rephrase_type, "prompt": p.prompt,
        "model": settings.model, "adapter": settings.adapter, **kernel_meta}) for p in probes]

    def load_engine() -> Any:
        from lekutils.engine.factory import open_generator

        return open_generator(settings.model, batch_size=settings.batch_size, adapter_path=settings.adapter)

    loaded: list[Any] = []

    def get_engine() -> Any:  # loaded once, only when something is missing, shared by all turns
        if engine is not None:
            return engine
        if not loaded:
            loaded.append(load_engine())
        return loaded[0]

    with lock.hold(work_path(raw_path), folder=False, wait=True):  # the task and the output file
        sweep_temp_files(raw_path)  # a killed run's half-written output
        run = run_task(items, spec, work_path(raw_path), generator=get_engine, stale=stale,
                       chunk_size=settings.chunk_size, progress=progress, store_every=settings.store_every)
        raw_records = run.records
        conversations = {p.id: [p.prompt, *later_turns(p)] for p in probes if later_turns(p)}
        if conversations:
            raw_records = _conversation_turns(raw_records, conversations, items, spec, raw_path, get_engine,
                                              settings, progress, stale)
        self_id = model_id(spec.model)
        records = [_keep(r, settings, SELF, self_id) for r in raw_records]
        generated = run.generated
        mix = None
        if settings.reference_models:
            for i, ref in enumerate(settings.reference_models):
                ref_records, n = _reference_records(i, ref, probes, items, raw_path, settings, system,
                                                    reference_engines, progress, stale, conversations,
                                                    reference_options)
                records += ref_records
                generated += n
            mix = apply_mix(records, settings.reference_fraction, settings.seed)
        scorer_version = str(get_scorer(settings.scorer).version)
        config = {"type": "config", **asdict(settings), **kernel_meta, "scorer_version": scorer_version,
                  "probes": len(probes), "probes_hash": probes_hash(probes)}
        summary = distill_summary(records, settings, probes=len(probes), scorer_version=scorer_version,
                                  wall_s=time.perf_counter() - t0, mix=mix)
        old = read_summary(raw_path)
        if old is not None and generated == 0 and _same(old, summary):
            summary = old  # nothing changed: keep the file (and its timestamps) as it is
        else:
            atomic_write_jsonl(raw_path, [config, *records, summary])
    if raise_if_empty and mix is not None and summary["total_kept"] and not summary["total_used"]:
        raise NothingKeptError(
            f"phase {settings.phase}: no self-distilled answer passed the keep rule ({settings.keep_on} >= "
            f"{settings.keep_threshold}); {mix.reference_kept} reference answer(s) were kept, but references make "
            f"at most reference_fraction ({settings.reference_fraction}) of the training set. Lower keep_threshold "
            f"or raise samples/max_tokens in the phase's row of the curriculum table.", summary)
    if raise_if_empty and not summary["total_kept"]:
        raise NothingKeptError(
            f"phase {settings.phase}: none of {summary['total_generated']} generations passed the keep rule "
            f"({settings.keep_on} >= {settings.keep_threshold}"
            f"{'' if settings.allow_truncated else ', finished answers only'}); best was {summary['best_score']} "
            f"({summary['best_key'][0]} sample {summary['best_key'][1]}), {summary['cut_off']} cut off at "
            f"max_tokens. Lower keep_threshold or raise samples/max_tokens in the phase's row of the "
            f"curriculum table.", summary)
    return summary


def _reference_records(index: int, spec: str, probes: Sequence[Any], items: Sequence[Any],
                       raw_path: str | os.PathLike[str], settings: DistillSettings, system: str | None,
                       engines: Mapping[str, Any] | None, progress: Any, stale: str,
                       conversations: Mapping[str, list[str]],
                       options: Mapping[str, Any] | None = None) -> tuple[list[Record], int]:
    """Generate (resumably, in its own work file), score and keep reference model ``index``'s answers;
    return its records (sample indices moved to :func:`lekutils.tasks.augment.sample_index`) and
    how many were generated in this session."""
    from lekutils.tasks.loop import TaskItem, TaskSpec, model_reference, run_task, work_path

    ref = settings.for_reference(spec)
    given = (engines or {}).get(spec)
    model = model_reference(spec, given)
    task = TaskSpec(model, None, ref.sampler(), ref.scorer)
    ref_items = [TaskItem(it.key, it.user, system, ref.samples, {**it.fields, "model": spec, "adapter": None})
                 for it in items]
    loaded: list[Any] = []

    def get_engine() -> Any:
        if given is not None:
            return given
        if not loaded:
            from lekutils.engine.factory import open_generator

            loaded.append(open_generator(spec, batch_size=settings.batch_size, **(options or {})))
        return loaded[0]

    out_path = reference_raw_path(raw_path, spec)  # never written itself: names the work files
    run = run_task(ref_items, task, work_path(out_path), generator=get_engine, stale=stale,
                   chunk_size=settings.chunk_size, progress=progress, store_every=settings.store_every)
    raw_records = run.records
    if conversations:
        raw_records = _conversation_turns(raw_records, dict(conversations), ref_items, task, out_path, get_engine,
                                          ref, progress, stale)
    out = []
    for r in raw_records:
        s = int(r["sample_idx"])
        rec = _keep({**r, "sample_idx": sample_index(index, s)}, ref, spec, model_id(model, r))
        rec.update({"reference_index": index, "source_sample_idx": s})
        out.append(rec)
    return out, run.generated


def later_turns(probe: Any) -> list[str]:
    """A multi-turn probe's user turns after the first (its ``turns`` minus the first, which is
    ``prompt``); ``[]`` for a single-turn probe."""
    turns = (getattr(probe, "extra", None) or {}).get("turns") or []
    if not all(isinstance(t, str) and t.strip() for t in turns):
        raise ValueError(f"probe {probe.id!r}: every turn must be a non-empty string")
    return list(turns[1:])


def planned_generations(probes: Sequence[Any], samples: int) -> int:
    """Generations a phase makes: one per sample and user turn (for a progress bar)."""
    return samples * sum(1 + len(later_turns(p)) for p in probes)


def turn_work_path(raw_path: str | os.PathLike[str], turn: int) -> Path:
    """The work file of a conversation turn ``turn`` >= 2: ``<stem>.turn<N>.partial.jsonl`` beside ``raw_path``."""
    raw = Path(raw_path)
    return raw.with_name(f"{raw.stem}.turn{turn}.partial.jsonl")


_SUMMED = ("generation_tokens", "time_s", "prefill_s", "decode_s", "wall_s")


def _conversation_turns(records: list[Record], conversations: dict[str, list[str]], items: Sequence[Any],
                        spec: Any, raw_path: str | os.PathLike[str], generator: Any,
                        settings: DistillSettings, progress: Any, stale: str) -> list[Record]:
    """Generate the later assistant turns of the multi-turn probes and fold each conversation into
    one record (the final answer's scores; the whole conversation in ``conversation``).

    Turn ``t`` (2, 3, ...) is one resumable task (:func:`turn_work_path`) over every (probe,
    sample) conversation that has a turn ``t``, batched across conversations; its items carry the
    earlier turns as messages, so the content key of a turn changes with any earlier answer.
    """
    from lekutils.tasks.loop import TaskItem, run_task

    fields = {it.key: dict(it.fields) for it in items}
    keys = [(r["prompt_id"], r["sample_idx"]) for r in records if r["prompt_id"] in conversations]
    first = {(r["prompt_id"], r["sample_idx"]): r for r in records}
    history = {k: [{"role": "user", "content": conversations[k[0]][0]},
                   {"role": "assistant", "content": first[k]["response"]}] for k in keys}
    turns: dict[tuple[str, int], list[Record]] = {k: [first[k]] for k in keys}
    for t in range(1, max(len(c) for c in conversations.values())):
        active = [k for k in keys if len(conversations[k[0]]) > t]
        turn_items = [TaskItem(f"{pid}#s{s}", conversations[pid][t], items[0].system, 1,
                               {**fields[pid], "turn": t + 1}, tuple(history[(pid, s)])) for pid, s in active]
        run = run_task(turn_items, spec, turn_work_path(raw_path, t + 1), generator=generator, stale=stale,
                       chunk_size=settings.chunk_size, progress=progress, store_every=settings.store_every)
        for k, rec in zip(active, run.records, strict=True):
            history[k] += [{"role": "user", "content": conversations[k[0]][t]},
                           {"role": "assistant", "content": rec["response"]}]
            turns[k].append(rec)
    out = []
    for r in records:
        k = (r["prompt_id"], r["sample_idx"])
        if k not in turns:
            out.append(r)
            continue
        recs = turns[k]
        final = {**recs[-1], "key": r["key"], "sample_idx": r["sample_idx"]}
        final.pop("turn", None)
        for name in _SUMMED:
            final[name] = round(sum(float(x.get(name) or 0) for x in recs), 4)
        final["generation_tokens"] = int(final["generation_tokens"])
        if any(x.get("finish_reason") == "length" for x in recs):
            final["finish_reason"] = "length"  # a cut-off earlier turn would be trained on too
        final.update({"conversation": history[k], "n_turns": len(recs),
                      "turn_finish_reasons": [x.get("finish_reason") for x in recs],
                      "turn_scores": [x["lek_score"] for x in recs]})
        out.append(final)
    return out


def _same(old: Record, new: Record) -> bool:
    """Whether two summaries describe the same result (timings and timestamps aside)."""
    skip = ("wall_s", "ts")
    return {k: v for k, v in old.items() if k not in skip} == {k: v for k, v in new.items() if k not in skip}
