"""A seeded, deterministic composer of the curriculum's prompt banks from the component banks.

``compose_phase(phase, banks_dir, seed)`` returns the records of one phase in the seed format
(``id``, ``domain``, ``prompt``; loadable by :func:`lekutils.data.probes.load_probes`) plus structured
fields: ``phase``, ``scenario`` (the group of a base probe and its rephrasings, or of a scenario's
variants), ``variant`` and per phase ``technique`` (0), ``principle``/``source_probe``/
``rephrase_type`` (1), ``stakeholders`` (2), ``category``/``attack``/``need``/``turns`` (3),
``category`` (4). ``write_banks(out_dir, seed)`` writes ``<phase-name>-v2.json`` for all five
phases; the same seed and banks give byte-identical files.

Near-duplicates are removed while composing: a candidate scenario is dropped when any of its
texts has a word-3-shingle Jaccard >= :data:`~lekutils.data.diversity.NEAR_DUP_THRESHOLD` with a
text of an already kept scenario, or >= :data:`~lekutils.data.diversity.HELDOUT_THRESHOLD` with
an evaluation probe (held-out discipline). The phase composers live in
:mod:`lekutils.data.phases`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lekutils.core.jsonl import atomic_write_text, read_json_file
from lekutils.data.banks import load_banks
from lekutils.data.diversity import (
    HELDOUT_THRESHOLD,
    NEAR_DUP_THRESHOLD,
    EvalSet,
    NearDupIndex,
    heldout_overlap,
    record_group,
    record_id,
    record_text,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Phase number -> file stem of its prompt bank (``data/prompts/<stem>-v2.json``).
PHASE_NAMES = {0: "creative", 1: "phase1-axiom", 2: "phase2-multiperspective", 3: "phase3-adversarial",
               4: "phase4-synthesis"}
BANK_VERSION = "v2"
DEFAULT_SEED = 17

#: The curriculum design's volumes in prompts per phase (phase 1: 101 probes and 3 rephrasings of
#: each; the design's ~1,500 phase-1 examples come from several samples per prompt).
DESIGN_TARGETS = {0: 500, 1: 101 * 4, 2: 900, 3: 360, 4: 200}

#: What the composer aims at. Phase 1: base probes (each followed by its 3 rephrasings);
#: phase 2: scenarios per domain (x 3 variants); phase 3: scenarios per category (x 2 variants).
PLAN: dict[int, dict[str, int]] = {
    0: {"story": 140, "poem": 130, "philosophical": 120, "metaphor": 130},
    1: {"base": 120},
    2: {"per_domain": 50, "variants": 3},
    3: {"per_category": 30, "variants": 2},
    4: {"cross_domain": 80, "historical": 45, "meta": 40, "recursive": 35},
}


def default_eval_path() -> Path:
    """``data/probes/eval-v1.json`` of the repository this package lives in."""
    return Path(__file__).resolve().parents[2] / "data" / "probes" / "eval-v1.json"


def rng_for(seed: int, *parts: object) -> random.Random:
    """A generator seeded from the seed and a path of names (stable across runs and platforms)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


class Slots(dict):
    """Template slots; ``{Name}`` gives slot ``name`` with its first letter capitalised."""

    def __missing__(self, key: str) -> str:
        low = key.lower()
        if key[:1].isupper() and low in self:
            value = str(self[low])
            return value[:1].upper() + value[1:]
        raise KeyError(key)


def fill(template: str, **slots: Any) -> str:
    """Fill a ``str.format`` template; ``{Org}`` capitalises slot ``org``."""
    return template.format_map(Slots(slots))


@dataclass
class Dropped:
    """A candidate scenario the composer left out, and why."""

    scenario: str
    reason: str          # "near_duplicate" or "heldout"
    other: str           # the kept scenario's record id, or the evaluation probe's id
    jaccard: float


@dataclass
class Composer:
    """Accepts candidate scenarios that are not near-duplicates of kept ones nor of evaluation probes."""

    eval_probes: Sequence[Any] = ()
    threshold: float = NEAR_DUP_THRESHOLD
    heldout_threshold: float = HELDOUT_THRESHOLD
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    candidates: int = 0

    def __post_init__(self) -> None:
        self._index = NearDupIndex(self.threshold)
        self._evals = EvalSet(self.eval_probes)

    def include(self, records: Sequence[Any]) -> None:
        """Index records that are already kept elsewhere (e.g. the bank, for the LLM writer) unchecked."""
        for rec in records:
            self._index.add(record_id(rec), record_text(rec), record_group(rec))

    def offer(self, scenario: str, records: list[dict[str, Any]]) -> bool:
        """Keep the scenario's records unless one of them is too close to kept or evaluation text."""
        self.candidates += 1
        hits = heldout_overlap(records, self._evals, self.heldout_threshold)
        if hits:
            _, eid, j = max(hits, key=lambda h: h[2])
            self.dropped.append(Dropped(scenario, "heldout", eid, j))
            return False
        for rec in records:
            near = self._index.query(record_text(rec), scenario)
            if near is not None:
                self.dropped.append(Dropped(scenario, "near_duplicate", near[1], round(near[0], 4)))
                return False
        for rec in records:
            self._index.add(rec["id"], record_text(rec), scenario)
        self.records.extend(records)
        return True


@dataclass
class Composition:
    """The records of one phase, and how many candidates were offered and dropped."""

    phase: int
    records: list[dict[str, Any]]
    candidates: int
    dropped: list[Dropped]


def load_eval_probes(eval_probes: Sequence[Any] | None = None) -> Sequence[Any]:
    """``eval_probes`` where given, else the probes of ``data/probes/eval-v1.json`` (none if absent)."""
    if eval_probes is not None:
        return eval_probes
    from lekutils.data.probes import load_probes

    path = default_eval_path()
    return load_probes(path) if path.is_file() else ()


def compose(phase: int, banks_dir: PathLike | None = None, seed: int = DEFAULT_SEED, *,
            eval_probes: Sequence[Any] | None = None, threshold: float = NEAR_DUP_THRESHOLD,
            heldout_threshold: float = HELDOUT_THRESHOLD, banks: dict[str, Any] | None = None) -> Composition:
    """Compose one phase; see :func:`compose_phase`. Also returns the candidate and drop counts."""
    from lekutils.data.phases import COMPOSERS

    if phase not in COMPOSERS:
        raise ValueError(f"unknown phase {phase!r} (expected one of {sorted(COMPOSERS)})")
    banks = banks if banks is not None else load_banks(banks_dir)
    composer = Composer(load_eval_probes(eval_probes), threshold, heldout_threshold)
    COMPOSERS[phase](banks, seed, composer)
    if composer.dropped:
        log.info("phase %d: dropped %d of %d candidate scenarios", phase, len(composer.dropped),
                 composer.candidates)
    return Composition(phase, composer.records, composer.candidates, composer.dropped)


def compose_phase(phase: int, banks_dir: PathLike | None = None, seed: int = DEFAULT_SEED, *,
                  eval_probes: Sequence[Any] | None = None, threshold: float = NEAR_DUP_THRESHOLD,
                  heldout_threshold: float = HELDOUT_THRESHOLD) -> list[dict[str, Any]]:
    """The records of one curriculum phase (0-4), composed from the banks in ``banks_dir``.

    ``banks_dir`` defaults to this repository's ``data/banks``; ``eval_probes`` (records or
    :class:`~lekutils.data.probes.Probe` objects) default to ``data/probes/eval-v1.json``, pass ``()``
    to skip the held-out filter. Bad bank files raise :class:`~lekutils.core.errors.DataError`.
    """
    return compose(phase, banks_dir, seed, eval_probes=eval_probes, threshold=threshold,
                   heldout_threshold=heldout_threshold).records


def bank_path(out_dir: PathLike, phase: int) -> Path:
    """``<out_dir>/<phase-name>-v2.json``."""
    return Path(out_dir) / f"{PHASE_NAMES[phase]}-{BANK_VERSION}.json"


def write_banks(out_dir: PathLike | None = None, seed: int = DEFAULT_SEED, *, banks_dir: PathLike | None = None,
                eval_probes: Sequence[Any] | None = None) -> dict[int, Path]:
    """Compose all five phases and write ``<out_dir>/<phase-name>-v2.json`` (default ``data/prompts``).

    All phases are composed (and the banks validated) before anything is written. Returns the
    written path per phase.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_eval_path().parents[1] / "prompts"
    banks = load_banks(banks_dir)
    evals = load_eval_probes(eval_probes)
    composed = {p: compose(p, seed=seed, eval_probes=evals, banks=banks).records for p in PHASE_NAMES}
    return {p: atomic_write_text(bank_path(out_dir, p), dumps_records(recs)) for p, recs in composed.items()}


def dumps_records(records: Sequence[dict[str, Any]]) -> str:
    """A JSON list with one record per line (valid JSON, loadable by ``load_probes``, diff-friendly)."""
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=False) for r in records]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def planned_records(phase: int) -> int:
    """How many records :data:`PLAN` asks of a phase (phase 1: base probes x 4; 2, 3: x variants)."""
    plan = PLAN[phase]
    if phase == 1:
        return plan["base"] * 4
    if phase == 2:
        return plan["per_domain"] * plan["variants"] * 6
    if phase == 3:
        return plan["per_category"] * plan["variants"] * 6
    return sum(plan.values())


def bank_sizes(prompts_dir: PathLike | None = None) -> list[dict[str, Any]]:
    """Per phase: the design's target, the composer's plan and the size of the written bank.

    One row per phase: ``phase``, ``file``, ``design_target``, ``planned``, ``prompts``,
    ``scenarios`` (distinct ``scenario`` values), ``multi_turn`` (records with ``turns``) and
    ``user_turns`` (user turns in all: a conversation counts each of its turns, i.e. the
    generations per sample); for the time/memory budget and the report's planned/generated/kept table.
    """
    prompts_dir = Path(prompts_dir) if prompts_dir is not None else default_eval_path().parents[1] / "prompts"
    rows = []
    for phase in PHASE_NAMES:
        path = bank_path(prompts_dir, phase)
        recs = read_json_file(path, "prompt file") if path.is_file() else []
        rows.append({"phase": phase, "file": path.name, "design_target": DESIGN_TARGETS[phase],
                     "planned": planned_records(phase), "prompts": len(recs),
                     "scenarios": len({r.get("scenario", r["id"]) for r in recs}),
                     "multi_turn": sum(1 for r in recs if r.get("turns")),
                     "user_turns": sum(len(r.get("turns") or [0]) for r in recs)})
    return rows
