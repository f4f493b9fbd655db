"""Notebook 00_probes executes with the smoke parameters and writes the run's probe sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("papermill")


def test_00_probes_notebook_smoke(tmp_path: Path, repo_root: Path) -> None:
    import papermill as pm
    import yaml

    from lekutils.data.probes import load_probes, probes_hash

    params = yaml.safe_load((repo_root / "params" / "smoke" / "00_probes.yaml").read_text())
    run_dir = tmp_path / "run"
    pm.execute_notebook(str(repo_root / "notebooks" / "00_probes.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters={**params, "run_dir": str(run_dir)}, cwd=str(repo_root),
                        kernel_name="python3", progress_bar=False, stdout_file=sys.stdout)
    index = json.loads((run_dir / "probes" / "index.json").read_text())
    assert set(index["sets"]) == {"eval", "eval-rephrased", "creative"}
    for info in index["sets"].values():
        probes = load_probes(info["path"])
        assert len(probes) == info["n"] and probes_hash(probes) == info["hash"]
    assert index["sets"]["eval-rephrased"]["n"] == 4 * index["sets"]["eval"]["n"]
    assert (run_dir / "figures" / "00_prompt_lengths.png").stat().st_size > 1000
