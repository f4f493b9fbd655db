"""Re-score A/B result files (ours and upstream's ``ab-*.jsonl``) with a named scorer.

Every response is scored again; each condition then carries ``scorer``, ``scorer_version``, the
new ``lek_score``/``heuristic`` and what was stored before: ``stored_lek_score``,
``stored_heuristic`` and ``stored_scorer`` (the record's own ``scorer`` when it names one, else
``"v2"`` when the stored heuristic has the 14 v2 keys and ``"v1"`` when it lacks them). A record
re-scored earlier keeps its first ``stored_*`` values. The summary line is replaced by one with
the new and the stored means per condition (``mean_score``: how upstream publishes them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core.jsonl import atomic_write_jsonl
from lekutils.scoring.batch import score_rows
from lekutils.scoring.registry import KEYS, Scorer, get_scorer, is_v2_heuristic, mean_score

Record = dict[str, Any]


@dataclass
class ConditionMeans:
    """One condition of one file: number of responses, stored and new mean ``lek_score``."""

    condition: str
    n: int
    stored_mean: float | None
    new_mean: float
    stored_scorers: list[str] = field(default_factory=list)


@dataclass
class RescoredFile:
    """The re-scored lines of one file (probe records, then the new summary) and its means."""

    path: Path
    scorer: str
    scorer_version: str
    records: list[Record]
    summary: Record
    means: list[ConditionMeans]

    @property
    def n_responses(self) -> int:
        return sum(m.n for m in self.means)


def stored_scorer_of(condition: Record, record: Record) -> str:
    """Which scorer produced a stored condition: its named scorer, else ``v2``/``v1`` from its heuristic."""
    named = condition.get("scorer") or record.get("scorer")
    if named:
        return str(named)
    return "v2" if is_v2_heuristic(condition.get("heuristic")) else "v1"


def read_ab_lines(path: str | os.PathLike[str]) -> tuple[list[Record], Record | None]:
    """Probe records and summary (or None) of an A/B file; every problem of the file in one DataError."""
    from lekutils.data.records import read_ab_file

    return read_ab_file(path, need_response=True, need_score=False)


def rescore_records(records: Sequence[Record], scorer: str | Scorer = "v2",
                    processes: int | None = None) -> list[Record]:
    """Re-scored copies of probe records (inputs untouched); see the module docstring for the fields."""
    sc = get_scorer(scorer)
    texts = [c["response"] for r in records for c in r["conditions"].values()]
    rows = iter(score_rows(texts, sc, processes))
    out: list[Record] = []
    for rec in records:
        new = dict(rec)
        conds: dict[str, Record] = {}
        for name, c in rec["conditions"].items():
            h = dict(zip(KEYS, next(rows), strict=True))
            nc = dict(c)
            if "stored_lek_score" not in c:
                nc["stored_lek_score"] = c.get("lek_score")
                nc["stored_heuristic"] = c.get("heuristic")
                nc["stored_scorer"] = stored_scorer_of(c, rec)
            nc.update({"lek_score": h["lek_score"], "heuristic": h, "scorer": sc.name,
                       "scorer_version": sc.version})
            conds[name] = nc
        new["conditions"] = conds
        new["scorer"], new["scorer_version"] = sc.name, sc.version
        out.append(new)
    return out


def condition_means(records: Sequence[Record]) -> list[ConditionMeans]:
    """Per condition (first-seen order): stored and new means over the records holding it."""
    names: list[str] = []
    for r in records:
        names += [n for n in r["conditions"] if n not in names]
    means = []
    for name in names:
        conds = [r["conditions"][name] for r in records if name in r["conditions"]]
        stored = [c["stored_lek_score"] for c in conds if isinstance(c.get("stored_lek_score"), (int, float))]
        scorers = sorted({str(c.get("stored_scorer")) for c in conds})
        means.append(ConditionMeans(name, len(conds), mean_score(stored) if stored else None,
                                    mean_score(c["lek_score"] for c in conds), scorers))
    return means


def rescore_file(path: str | os.PathLike[str], scorer: str | Scorer = "v2",
                 processes: int | None = None) -> RescoredFile:
    """Read and re-score one A/B file (nothing is written; see :func:`write_rescored`)."""
    from lekutils.core.errors import DataError

    sc = get_scorer(scorer)
    probes, old_summary = read_ab_lines(path)
    if not probes:
        raise DataError(path, "no probe records to score (the file is empty)" if old_summary is None
                        else "no probe records to score (only a summary line)")
    records = rescore_records(probes, sc, processes)
    means = condition_means(records)
    summary: Record = {
        "type": "summary", "scorer": sc.name, "scorer_version": sc.version,
        "rescored_from": str(path), "total_probes": len(records),
        "conditions": [{"name": m.condition, "n": m.n, "avg_lek": m.new_mean, "stored_avg_lek": m.stored_mean,
                        "stored_scorers": m.stored_scorers} for m in means],
        "stored_summary": old_summary,
        "ts": datetime.now(timezone.utc).isoformat(),
    }
    return RescoredFile(Path(path), sc.name, sc.version, records, summary, means)


def output_path(in_path: str | os.PathLike[str], out: str | os.PathLike[str] | None, n_inputs: int,
                scorer: str, default_dir: str | os.PathLike[str]) -> Path:
    """Where a re-scored file goes: ``out`` itself (one input, ``*.jsonl``), else ``<dir>/<stem>.<scorer>.jsonl``."""
    src = Path(in_path)
    if out is not None:
        o = Path(out)
        if n_inputs == 1 and o.suffix == ".jsonl" and not o.is_dir():
            return o
        return o / f"{src.stem}.{scorer}.jsonl"
    return Path(default_dir) / f"{src.stem}.{scorer}.jsonl"


def write_rescored(result: RescoredFile, out_path: str | os.PathLike[str]) -> Path:
    """Write the re-scored records and summary atomically (never over the input file)."""
    out = Path(out_path)
    if out.resolve() == result.path.resolve():
        raise ValueError(f"refusing to overwrite the input file {result.path}")
    return atomic_write_jsonl(out, [*result.records, result.summary])


def format_means(results: Sequence[RescoredFile]) -> str:
    """A plain-text table: per file and condition, the stored mean beside the new one."""
    lines = []
    for res in results:
        lines.append(f"{res.path.name}  ({len(res.records)} probes, {res.n_responses} responses, "
                     f"scorer {res.scorer} {res.scorer_version})")
        lines.append(f"  {'condition':<16}{'n':>5}  {'stored':>8} {'(by)':<8}{'new':>8}{'delta':>9}")
        for m in res.means:
            stored = "-" if m.stored_mean is None else f"{m.stored_mean:.2f}"
            delta = "" if m.stored_mean is None else f"{m.new_mean - m.stored_mean:+.2f}"
            by = "/".join(m.stored_scorers)
            lines.append(f"  {m.condition:<16}{m.n:>5}  {stored:>8} {by:<8}{m.new_mean:>8.2f}{delta:>9}")
    return "\n".join(lines)
