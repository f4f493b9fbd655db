"""Load A/B result files (ours and upstream) into one long table, re-scoring v1 records with v2.

One row per (file, probe, condition). Upstream P20 files store **v1** heuristics (no content-signal
keys): their responses are re-scored with the canonical v2 scorer and the stored v1 number is kept
in ``stored_v1``. Records whose heuristic carries all 14 v2 signals (upstream P100, ours) keep
their stored values.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import read_json_file
from lekutils.core.paths import upstream_dir
from lekutils.data.records import read_ab_file
from lekutils.report.labels import LabelTable, load_models
from lekutils.scoring import SIGNALS, is_v2_heuristic, score_many

log = logging.getLogger(__name__)

#: The 14 v2 signals in accumulation order (``lekutils.scoring.SIGNALS``).
V2_SIGNALS: tuple[str, ...] = tuple(SIGNALS)

#: File names a glob never picks up: the A/B runner's resumable work files.
#: File names a results glob never picks: the task loop's work files (``<out>.partial.jsonl``, a
#: conversation's ``<out>.turnN.partial.jsonl``) and anything set aside (``*.stale*``, ``*.tmp``).
EXCLUDE: tuple[str, ...] = ("*.partial.jsonl", "*.partial.*.jsonl", "*.stale*", "*.tmp*", ".*")

MODEL_COLUMNS = ("model", "model_id", "family", "version", "size", "size_b", "tuned", "base_model", "adapter")


def is_v1_heuristic(heuristic: Mapping[str, Any] | None) -> bool:
    """True when a stored heuristic dict predates v2 (it lacks some of the 14 v2 signal keys)."""
    return not is_v2_heuristic(heuristic)


def score_texts(texts: Sequence[str], scorer: str = "v2", processes: int | None = None) -> pd.DataFrame:
    """Score texts with ``lekutils.scoring.score_many`` (one column per signal + ``lek_score``)."""
    if not texts:
        return pd.DataFrame(columns=[*V2_SIGNALS, "lek_score"])
    return score_many(list(texts), scorer=scorer, processes=processes).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Paths


def resolve_paths(
    patterns: str | Iterable[str],
    *,
    run_dir: str | os.PathLike[str] | None = None,
    upstream: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = EXCLUDE,
) -> list[Path]:
    """Expand ``{run_dir}`` / ``{upstream}`` placeholders and globs into a sorted, de-duplicated list.

    Relative paths are taken from ``root`` (default: the current directory). A pattern using
    ``{upstream}`` where the upstream folder does not exist is skipped with a log message; any
    other pattern that matches nothing is logged too. Glob hits whose file name matches an
    ``exclude`` pattern (default: the A/B runner's ``*.partial.jsonl`` work files) are dropped.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    up = Path(upstream) if upstream is not None else upstream_dir()
    base = Path(root) if root is not None else Path.cwd()
    out: list[Path] = []
    for pat in patterns:
        if "{upstream}" in pat and not up.is_dir():
            log.info("upstream folder %s not found: skipping %s", up, pat)
            continue
        expanded = pat.replace("{upstream}", str(up)).replace("{run_dir}", str(run_dir or "runs/smoke"))
        p = Path(expanded).expanduser()
        if not p.is_absolute():
            p = base / p
        if glob.has_magic(str(p)):
            hits = [h for h in sorted(Path(h) for h in glob.glob(str(p)))
                    if not any(fnmatch.fnmatch(h.name, x) for x in exclude)]
        else:
            hits = [p] if p.exists() else []
        if not hits:
            log.warning("no file matches %s", pat)
        out.extend(h.resolve() for h in hits if h.is_file())
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


# ---------------------------------------------------------------------------------------------
# Records -> rows


def _model_id(value: Any) -> str | None:
    """A record's model id; a remote spec's is ``openai:<model>`` (the same model on any endpoints)."""
    from lekutils.engine import remote

    if isinstance(value, dict):
        value = value.get("identity") or value.get("spec") or value.get("id") or value.get("path")
    if remote.is_remote(value):
        try:
            return remote.model_id(str(value))
        except ValueError:
            pass
    return str(value) if value else None


def _adapter_label(adapter: Any) -> str | None:
    if not adapter:
        return None
    a = _model_id(adapter) or ""
    parts = [p for p in Path(a).parts if p not in ("/", "")]
    if parts and parts[-1] in ("adapters.safetensors", "adapter", "final") and len(parts) > 1:
        parts = parts[:-1]
    return parts[-1] if parts else None


def _conditions(rec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(condition name, condition payload) pairs of a nested (upstream) or flat record."""
    conds = rec.get("conditions")
    if isinstance(conds, dict):
        return [(str(k), v) for k, v in conds.items() if isinstance(v, dict)]
    if "condition" in rec:
        return [(str(rec["condition"]), rec)]
    return []


def _base_display(table: LabelTable, base: str | None) -> str | None:
    if not base:
        return None
    found = table.by_id(base)
    return found.display if found else table.lookup(base).display


def _rows_of_file(path: Path, table: LabelTable) -> tuple[list[dict[str, Any]], list[Problem]]:
    records, summary = read_ab_file(path)  # each file read once
    summary = summary or {}
    stem = path.name.removesuffix(".jsonl")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    probe_ids = {str(r.get("id")) for r in records}
    default_set = (
        summary.get("probe_set")
        or table.probe_set_for(path.name)
        or f"P{len(probe_ids)}"
    )
    for n, rec in enumerate(records, start=1):
        pid = rec.get("id") or rec.get("probe_id")
        if not pid:
            problems.append(Problem("probe record without 'id'", line=n, field="id"))
            continue
        model_id = _model_id(rec.get("model")) or _model_id(summary.get("model")) or stem
        adapter = _adapter_label(rec.get("adapter") or summary.get("adapter"))
        label = table.lookup(model_id, stem)
        experiment = rec.get("experiment") or summary.get("experiment")
        tag = f" [{experiment}]" if experiment else ""  # a named re-run (run --name) beside the unnamed one
        conds = _conditions(rec)
        if not conds:
            problems.append(Problem(f"probe {pid}: no 'conditions'", line=n, field="conditions"))
        for cond, payload in conds:
            text = payload.get("response")
            if not isinstance(text, str):
                problems.append(Problem(f"probe {pid}/{cond}: 'response' is not a string", line=n, field="response"))
                continue
            heur = payload.get("heuristic") or payload.get("signals") or {}
            scorer = payload.get("scorer") or rec.get("scorer") or summary.get("scorer")
            stored_scorer = str(scorer) if scorer else ("v1" if is_v1_heuristic(heur) else "v2")
            stored = payload.get("lek_score", heur.get("lek_score"))
            row: dict[str, Any] = {
                "source_file": path.name,
                # records this project writes always name their scorer; upstream's never do
                "origin": "ours" if (rec.get("scorer") or summary.get("scorer")) else "upstream",
                "probe_set": str(rec.get("probe_set") or default_set),
                "model": (label.display if not adapter else f"{label.display}+{adapter}") + tag,
                "model_id": (model_id if not adapter else f"{model_id}+{adapter}") + tag,
                "experiment": experiment,
                "family": label.family,
                "version": label.version,
                "size": label.size,
                "size_b": label.size_b,
                "tuned": label.tuned or adapter is not None,
                "base_model": label.display if adapter else _base_display(table, label.base),
                "adapter": adapter,
                "condition": cond,
                "probe_id": str(pid),
                "category": str(rec.get("category") or rec.get("domain") or "unknown"),
                "stored_scorer": stored_scorer,
                "stored_score": float(stored) if stored is not None else float("nan"),
                "response": text,
                "prompt": rec.get("prompt", ""),
                "chars": int(payload.get("chars", len(text))),
                "finish_reason": payload.get("finish_reason"),
                "_heuristic": heur,
            }
            rows.append(row)
    return rows, problems


def load_results(
    patterns: str | Iterable[str | os.PathLike[str]],
    *,
    models: LabelTable | str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    upstream: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    scorer: str = "v2",
    processes: int | None = None,
) -> pd.DataFrame:
    """Load A/B files (paths or globs, ``{run_dir}``/``{upstream}`` placeholders) into a long table.

    Columns: source_file, origin ("ours": records naming their scorer, as this workbook writes them;
    "upstream"), probe_set, model (display name), model_id, family, version, size,
    size_b, tuned, base_model, adapter, condition, probe_id, category, score (v2), the 14 signals,
    chars, finish_reason (ours; None upstream), stored_scorer, stored_score, stored_v1 (the stored v1 number, else NaN), rescored,
    response, prompt. Records not stored as ``scorer`` are re-scored with it (``processes`` as in
    ``score_many``). Rows keep file order within each model x probe set x condition: upstream's
    means are left-to-right sums in record order, and the summary reproduces them exactly.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    table = models if isinstance(models, LabelTable) else load_models(models)
    paths = resolve_paths([str(p) for p in patterns], run_dir=run_dir, upstream=upstream, root=root)
    if not paths:
        raise DataError(", ".join(str(p) for p in patterns), "no A/B result file matches these paths")
    rows: list[dict[str, Any]] = []
    for path in paths:
        file_rows, problems = _rows_of_file(path, table)
        if problems:
            raise DataError(path, problems)
        rows.extend(file_rows)
    sig = V2_SIGNALS
    if not rows:
        return pd.DataFrame(columns=_column_order(sig))
    rescore_idx = [i for i, r in enumerate(rows) if r["stored_scorer"] != scorer or is_v1_heuristic(r["_heuristic"])]
    fresh = score_texts([rows[i]["response"] for i in rescore_idx], scorer=scorer, processes=processes)
    fresh_rows = fresh.to_dict("records")
    for j, i in enumerate(rescore_idx):
        r = rows[i]
        r.update({k: fresh_rows[j][k] for k in sig})
        r["score"] = float(fresh_rows[j]["lek_score"])
        r["rescored"] = True
    todo = set(rescore_idx)
    for i, r in enumerate(rows):
        heur = r.pop("_heuristic")
        if i not in todo:
            r.update({k: heur.get(k) for k in sig})
            r["score"] = r["stored_score"]
            r["rescored"] = False
        r["stored_v1"] = r["stored_score"] if r["stored_scorer"] == "v1" else float("nan")
    df = pd.DataFrame(rows)[_column_order(sig)]
    df["condition"] = pd.Categorical(df["condition"], categories=condition_order(df["condition"]), ordered=True)
    return df.sort_values(["probe_set", "model", "condition"], kind="stable").reset_index(drop=True)


def condition_order(conditions: Iterable[str]) -> list[str]:
    """``baseline`` first, then the other conditions in order of first appearance."""
    seen: list[str] = []
    for c in conditions:
        if c not in seen:
            seen.append(str(c))
    return (["baseline"] if "baseline" in seen else []) + [c for c in seen if c != "baseline"]


def _column_order(sig: Sequence[str]) -> list[str]:
    return [
        "source_file", "origin", "probe_set", *MODEL_COLUMNS, "experiment", "condition", "probe_id", "category", "score", *sig,
        "chars", "finish_reason", "stored_scorer", "stored_score", "stored_v1", "rescored", "response", "prompt",
    ]


def _display_path(path: Path, run_dir: str | os.PathLike[str] | None) -> str:
    """``path`` relative to the run folder (else to the working directory) where it lies inside it:
    tables carry no machine-specific absolute paths."""
    for base in ([Path(run_dir)] if run_dir else []) + [Path.cwd()]:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).as_posix()
        except ValueError:
            continue
    return str(path)


def load_gates(patterns: str | Iterable[str], *, run_dir: str | os.PathLike[str] | None = None,
               root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Gate tables of the training phases (``.../phaseK/gates.json``) as one long table.

    Columns: phase (int, from the folder name), phase_name, gate, value, level, passed, source.
    Tolerant of shapes: a list of gate dicts or ``{"gates": [...]}``; ``name``/``threshold``/``pass``
    are accepted for ``gate``/``level``/``passed``. Unreadable entries are errors naming the file.
    """
    rows: list[dict[str, Any]] = []
    for path in resolve_paths(patterns, run_dir=run_dir, root=root):
        doc = read_json_file(path, "gates file")
        entries = doc.get("gates", doc.get("table")) if isinstance(doc, dict) else doc
        if not isinstance(entries, list):
            raise DataError(path, "expected a list of gates (or an object with a 'gates' list)")
        phase_name = path.parent.name
        m = re.search(r"(\d+)", phase_name)
        phase = _num(doc.get("phase")) if isinstance(doc, dict) else float("nan")
        if math.isnan(phase):
            phase = float(m.group(1)) if m else float("nan")
        problems: list[Problem] = []
        for i, g in enumerate(entries):
            if not isinstance(g, dict):
                problems.append(Problem("gate entry is not an object", field=f"[{i}]"))
                continue
            name = g.get("gate", g.get("name"))
            if name is None:
                problems.append(Problem("gate without a name", field=f"[{i}].gate"))
                continue
            passed = g.get("passed", g.get("pass"))
            rows.append({
                "phase": phase,
                "phase_name": phase_name,
                "gate": str(name),
                "value": round(_num(g.get("value")), 6),  # -0.15, not -0.1499999999999999
                "level": round(_num(g.get("level", g.get("threshold"))), 6),
                "passed": None if passed is None else bool(passed),
                "op": g.get("op"),
                "source": _display_path(path, run_dir),
            })
        if problems:
            raise DataError(path, problems)
    cols = ["phase", "phase_name", "gate", "value", "level", "passed", "op", "source"]
    out = pd.DataFrame(rows, columns=cols)
    if out["phase"].notna().all() and (out["phase"] % 1 == 0).all():
        out["phase"] = out["phase"].astype(int)
    return out.sort_values(["phase"], kind="stable").reset_index(drop=True)


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
