"""The 90_p100_report notebook: structure, profile parameters, and an end-to-end Papermill run."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from lekutils.runner.params import check_value, notebook_parameters

NB = "notebooks/90_p100_report.ipynb"


def test_notebook_structure(repo_root: Path) -> None:
    nb = nbformat.read(repo_root / NB, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "python -m lekutils run 90_p100_report --profile smoke" in nb.cells[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
    params = notebook_parameters(repo_root / NB)
    assert params["run_dir"].default == "runs/smoke"
    assert params["results"].default == ["{run_dir}/ab/*.jsonl", "{upstream}/benchmarks/ab-*.jsonl"]


@pytest.mark.parametrize("profile", ["smoke", "gemma3-27b"])
def test_profile_parameters_fit_the_notebook(repo_root: Path, profile: str) -> None:
    params = notebook_parameters(repo_root / NB)
    values = yaml.safe_load((repo_root / "params" / profile / "90_p100_report.yaml").read_text())
    assert set(values) <= set(params), set(values) - set(params)
    assert [m for k, v in values.items() if (m := check_value(params[k], v))] == []
    assert any("{upstream}" in r for r in values["results"]) and any("{run_dir}/ab" in r for r in values["results"])


@pytest.mark.e2e
def test_notebook_on_upstream_files_reproduces_published_means(repo_root: Path, upstream: Path,
                                                               tmp_path: Path) -> None:
    import papermill as pm

    run_dir, figs = tmp_path / "run", tmp_path / "figures"
    t0 = time.monotonic()
    pm.execute_notebook(
        str(repo_root / NB), str(tmp_path / "out.ipynb"), cwd=str(repo_root), kernel_name="python3",
        progress_bar=False, log_output=False,
        parameters={"run_dir": str(run_dir), "results": [str(upstream / "benchmarks" / "ab-*.jsonl")],
                    "gates": [str(run_dir / "adapters/phase*/gates.json")], "figures_dir": str(figs),
                    "n_boot": 2000, "dpi": 100},
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 90, f"report notebook took {elapsed:.0f}s (smoke budget 90s)"
    s = pd.read_csv(run_dir / "tables" / "summary.csv")
    p20 = s[s["probe_set"] == "P20"].set_index(["model", "condition"])
    published = {"Gemma3-1B": (17.45, 15.90, 14.03), "Gemma3-12B": (19.73, 25.20, 23.00),
                 "Gemma3-27B": (20.46, 23.25, 21.82), "LEK-Gemma3-1B": (22.02, 20.82, 21.21)}
    for model, means in published.items():
        assert tuple(p20.loc[(model, c), "mean"] for c in ("baseline", "json", "txt")) == means, model
    assert tuple(p20.loc[("Gemma3-12B", c), "stored_v1_mean"] for c in ("baseline", "json", "txt")) == (8.5, 8.3, 8.7)
    for name in ("kernel_effect", "score_distributions", "category_heatmap", "signal_decomposition",
                 "phase_progression"):
        for d in (run_dir / "figures", figs):
            assert (d / f"{name}.png").stat().st_size > 0 and (d / f"{name}.pdf").stat().st_size > 0
    for table in ("kernel_effect", "category_means", "extreme_probes", "degeneration", "v1_v2", "lineage",
                  "finetune_effect", "curriculum_progress", "curriculum_volume"):
        assert (run_dir / "tables" / f"{table}.csv").is_file(), table
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    last = out.cells[-1].outputs[0]["data"]
    assert "text/html" in last and "application/vnd.jupyter.widget-view+json" not in last  # static table
