"""Notebook 80_ab_test with the smoke parameters on the default embedded model (e2e): the A/B file
loads with the same reader as upstream's records, its summary is right, table and figure exist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
pytest.importorskip("papermill")


def test_80_ab_test_notebook_smoke(tmp_path: Path, repo_root: Path, upstream: Path) -> None:
    import papermill as pm
    import yaml

    from lekutils.data.probes import build_probe_sets
    from lekutils.tasks.abtest import ab_summary, load_ab, load_ab_summary

    run_dir = tmp_path / "run"
    build_probe_sets({"eval": [repo_root / "data" / "probes" / "eval-v1.json"]}, run_dir / "probes")
    params = yaml.safe_load((repo_root / "params" / "smoke" / "80_ab_test.yaml").read_text())
    pm.execute_notebook(str(repo_root / "notebooks" / "80_ab_test.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters={**params, "run_dir": str(run_dir)}, cwd=str(repo_root),
                        kernel_name="python3", progress_bar=False, stdout_file=sys.stdout)
    out = run_dir / "ab" / "smollm2-135m-instruct.jsonl"
    records = load_ab(out)
    summary = load_ab_summary(out)
    assert [r["id"] for r in records] == params["probe_ids"]
    names = ["baseline", *params["kernels"]]
    expect = ab_summary(records, names)
    assert {k: summary[k] for k in expect} == expect
    assert summary["model"] == "embedded:smollm2-135m-instruct" and summary["max_tokens"] == params["max_tokens"]
    assert summary["probe_set"] == "eval" and summary["prompt_formats"] == ["system_role"]
    upstream_recs = load_ab(upstream / "benchmarks" / "ab-base-1b-mlxlm.jsonl")
    assert set(records[0]) >= set(upstream_recs[0])  # our records carry every upstream field
    assert set(records[0]["conditions"]["baseline"]) >= set(upstream_recs[0]["conditions"]["baseline"])
    assert (run_dir / "tables" / "ab_smollm2-135m-instruct_categories.csv").is_file()
    assert (run_dir / "figures" / "ab_smollm2-135m-instruct_deltas.png").stat().st_size > 1000
