"""The curriculum's data volumes per phase: planned vs generated vs kept vs the design's target.

:func:`curriculum_volume_table` reads what the distillation phases of a run wrote
(``<run_dir>/distill/phaseK/raw.jsonl``: its config and summary lines and the kept records, and
``extract.json``: what extraction and review left) and sets it beside the v2 prompt banks' sizes
(:func:`lekutils.data.compose.bank_sizes`) and the design's volumes
(:data:`lekutils.data.compose.DESIGN_TARGETS` in prompts; :data:`DESIGN_EXAMPLES` in training
examples). :func:`write_curriculum_volume` also writes ``<run_dir>/tables/curriculum_volume.csv``.
A phase not (fully) distilled yet has a ``status`` of ``not run`` / ``unfinished`` and empty counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: The design's volumes in training examples (phase 1: 101 probes x 3 rephrasings, ~1,500 examples).
DESIGN_EXAMPLES = {0: 500, 1: 1500, 2: 900, 3: 360, 4: 200}

COLUMNS = ["phase", "status", "bank", "bank_prompts", "prompts", "samples_per_prompt", "planned_generations",
           "generated", "conversations", "kept", "kept_prompts", "trained", "rejected_in_review", "unreviewed",
           "design_target_prompts", "design_target_examples", "kept_prompts_vs_target_pct",
           "trained_vs_design_pct"]


def _phase_row(phase_dir: Path) -> dict[str, Any]:
    raw = phase_dir / "raw.jsonl"
    if not raw.is_file():
        return {"status": "not run"}
    config = summary = None
    kept_ids: set[str] = set()
    with raw.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            t = rec.get("type")
            if t == "config":
                config = rec
            elif t == "summary":
                summary = rec
            elif t == "training":
                kept_ids.add(str(rec.get("prompt_id") or (rec.get("meta") or {}).get("probe_id")))
    if summary is None:
        return {"status": "unfinished"}
    samples = summary.get("samples_per_probe") or (config or {}).get("samples")
    prompts = summary.get("probes")
    # reference models (external augmentation) answer every prompt too: planned and generated count them
    per_prompt = (samples or 0) + len(summary.get("reference_models") or []) * int(summary.get("reference_samples") or 0)
    row: dict[str, Any] = {
        "status": "distilled", "prompts": prompts, "samples_per_prompt": samples,
        "planned_generations": prompts * per_prompt if prompts is not None and samples else None,
        "generated": summary.get("total_generated"), "conversations": summary.get("conversations", 0),
        "kept": summary.get("total_kept"), "kept_prompts": len(kept_ids)}
    ex = phase_dir / "extract.json"
    if ex.is_file():
        e = json.loads(ex.read_text(encoding="utf-8"))
        row.update({"status": "extracted", "trained": int(e.get("train", 0)) + int(e.get("valid", 0)),
                    "rejected_in_review": e.get("rejected_in_review") if isinstance(
                        e.get("rejected_in_review"), int) else len(e.get("rejected_in_review") or []),
                    "unreviewed": e.get("unreviewed") if isinstance(e.get("unreviewed"), int)
                    else len(e.get("unreviewed") or [])})
    return row


def curriculum_volume_table(run_dir: str | os.PathLike[str],
                            sizes: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per phase 0-4 (see the module docstring); ``sizes`` defaults to ``bank_sizes()``.

    ``prompts`` / ``planned_generations`` are what the run distilled (prompts x samples, plus the
    reference models' samples where the phase has any; a conversation counts once), ``generated`` /
    ``kept`` the distillation summary's answers (all sources)
    (``kept_prompts``: distinct prompts with a kept answer), ``trained`` the examples extraction
    wrote (train + valid; a conversation is one example, written as one line per assistant turn),
    ``unreviewed`` those left out because the phase requires review and they were not accepted.
    """
    from lekutils.data.compose import DESIGN_TARGETS, bank_sizes

    banks = {int(r["phase"]): r for r in (bank_sizes() if sizes is None else sizes)}
    rows = []
    for phase in sorted(DESIGN_TARGETS):
        bank = banks.get(phase, {})
        row = {"phase": phase, "bank": bank.get("file"), "bank_prompts": bank.get("prompts"),
               "design_target_prompts": DESIGN_TARGETS[phase], "design_target_examples": DESIGN_EXAMPLES[phase],
               **_phase_row(Path(run_dir) / "distill" / f"phase{phase}")}
        if row.get("kept_prompts") is not None:
            row["kept_prompts_vs_target_pct"] = round(100.0 * row["kept_prompts"] / DESIGN_TARGETS[phase], 1)
        if row.get("trained") is not None:
            row["trained_vs_design_pct"] = round(100.0 * row["trained"] / DESIGN_EXAMPLES[phase], 1)
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    ints = [c for c in COLUMNS if c not in ("status", "bank", "kept_prompts_vs_target_pct", "trained_vs_design_pct")]
    df[ints] = df[ints].astype("Int64")
    return df


def write_curriculum_volume(run_dir: str | os.PathLike[str],
                            sizes: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """:func:`curriculum_volume_table`, also written to ``<run_dir>/tables/curriculum_volume.csv``."""
    from lekutils.core.jsonl import atomic_write_text

    df = curriculum_volume_table(run_dir, sizes)
    atomic_write_text(Path(run_dir) / "tables" / "curriculum_volume.csv", df.to_csv(index=False))
    return df
