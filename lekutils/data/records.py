"""The A/B record file format (ours and upstream's ``ab-*.jsonl``) and its one reader."""

from __future__ import annotations

import os
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import iter_jsonl

Record = dict[str, Any]


def read_ab_file(path: str | os.PathLike[str], *, need_response: bool = False,
                 need_score: bool = True) -> tuple[list[Record], Record | None]:
    """Probe records and the summary line (or None) of an A/B file.

    Lines are ``type: "probe"`` (upstream's older files may omit ``type``; a line with
    ``conditions`` is a probe) or ``type: "summary"``. Every problem of the file is reported in
    one :class:`DataError` naming line and field; ``need_response`` / ``need_score`` require a
    string ``response`` / a numeric ``lek_score`` in every condition.
    """
    probes: list[Record] = []
    summary: Record | None = None
    problems: list[Problem] = []
    for n, rec in iter_jsonl(path):
        kind = rec.get("type", "probe" if "conditions" in rec else None)
        if kind == "summary":
            summary = rec
            continue
        if kind != "probe":
            problems.append(Problem(f"unknown record type {rec.get('type')!r} (expected 'probe' or 'summary')",
                                    line=n, field="type"))
            continue
        if not isinstance(rec.get("id"), str) or not rec["id"]:
            problems.append(Problem("missing or not a string", line=n, field="id"))
        conds = rec.get("conditions")
        if not isinstance(conds, dict) or not conds:
            problems.append(Problem("missing or not a non-empty object", line=n, field="conditions"))
            continue
        for name, c in conds.items():
            if not isinstance(c, dict):
                problems.append(Problem("not an object", line=n, field=f"conditions.{name}"))
                continue
            if need_response and not isinstance(c.get("response"), str):
                problems.append(Problem("needs a string 'response'", line=n, field=f"conditions.{name}.response"))
            score = c.get("lek_score")
            if (need_score or score is not None) and (not isinstance(score, (int, float)) or isinstance(score, bool)):
                problems.append(Problem("needs a numeric 'lek_score'", line=n, field=f"conditions.{name}.lek_score"))
        probes.append(rec)
    if problems:
        raise DataError(path, problems)
    return probes, summary
