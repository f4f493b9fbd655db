"""The curriculum volume table (planned vs generated vs kept vs the design's target) on a synthetic run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lekutils.report.curriculum import COLUMNS, curriculum_volume_table, write_curriculum_volume


def _lines(path: Path, recs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _raw(path: Path, n_prompts: int, samples: int, kept: list[tuple[str, int]], summary: bool = True) -> None:
    recs: list[dict] = [{"type": "config", "samples": samples, "probes": n_prompts}]
    for i in range(n_prompts):
        for s in range(samples):
            k = (f"P{i}", s) in kept
            recs.append({"type": "training" if k else "generation", "prompt_id": f"P{i}", "sample_idx": s,
                         "kept": k})
    if summary:
        recs.append({"type": "summary", "probes": n_prompts, "samples_per_probe": samples,
                     "total_generated": n_prompts * samples, "total_kept": len(kept), "conversations": 2})
    _lines(path, recs)


def test_volume_table_per_phase(tmp_path: Path, repo_root: Path) -> None:
    run = tmp_path / "run"
    _raw(run / "distill/phase0/raw.jsonl", 4, 2, [("P0", 0), ("P0", 1), ("P1", 0), ("P3", 1)])
    (run / "distill/phase0/extract.json").write_text(json.dumps(
        {"train": 2, "valid": 1, "rejected_in_review": [["P3", 1]], "unreviewed": []}))
    _raw(run / "distill/phase1/raw.jsonl", 3, 2, [("P0", 0)], summary=False)  # killed mid-phase
    _raw(run / "distill/phase3/raw.jsonl", 5, 1, [("P0", 0), ("P2", 0), ("P4", 0)])
    (run / "distill/phase3/extract.json").write_text(json.dumps(
        {"train": 1, "valid": 0, "rejected_in_review": [], "unreviewed": [["P2", 0], ["P4", 0]]}))
    sizes = [{"phase": k, "file": f"b{k}.json", "prompts": 10 * (k + 1)} for k in range(5)]
    df = curriculum_volume_table(run, sizes)
    assert list(df.columns) == COLUMNS and list(df.phase) == [0, 1, 2, 3, 4]
    assert list(df.status) == ["extracted", "unfinished", "not run", "extracted", "not run"]
    p0 = df.iloc[0]
    assert (p0.bank, p0.bank_prompts, p0.prompts, p0.planned_generations, p0.generated, p0.kept) == (
        "b0.json", 10, 4, 8, 8, 4)
    assert (p0.kept_prompts, p0.trained, p0.rejected_in_review, p0.unreviewed) == (3, 3, 1, 0)
    assert p0.design_target_prompts == 500 and p0.kept_prompts_vs_target_pct == 0.6
    assert p0.trained_vs_design_pct == 0.6
    p3 = df.iloc[3]
    assert (p3.kept, p3.kept_prompts, p3.trained, p3.unreviewed, p3.conversations) == (3, 3, 1, 2, 2)
    assert p3.design_target_examples == 360
    assert pd.isna(df.iloc[1].generated) and df.iloc[1].bank_prompts == 20
    out = write_curriculum_volume(run, sizes)
    back = pd.read_csv(run / "tables" / "curriculum_volume.csv")
    assert list(back.columns) == COLUMNS and len(back) == 5 and back.kept.tolist()[0] == out.kept.tolist()[0]
    # default sizes: the shipped v2 banks
    real = curriculum_volume_table(tmp_path / "empty")
    assert real.bank_prompts.tolist() == [520, 480, 900, 360, 200] and set(real.status) == {"not run"}
