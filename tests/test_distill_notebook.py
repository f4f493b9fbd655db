"""Notebook 10 in the smoke profile on the default embedded model (one phase), and its parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.core.paths import NOTEBOOKS_DIR, PARAMS_DIR
from lekutils.runner.execute import execute, install_kernelspec, kernelspec_installed
from lekutils.runner.profile import Execution, resolve

NOTEBOOK = NOTEBOOKS_DIR / "10_self_distill.ipynb"


def _execution(profile: str, phase: int, out_dir: Path | None = None, **overrides) -> Execution:
    ex = Execution(f"10_self_distill_phase{phase}", NOTEBOOK,
                          PARAMS_DIR / profile / f"10_self_distill_phase{phase}.yaml")
    return resolve([ex], profile, overrides=overrides or None, out_dir=out_dir)[0]


@pytest.mark.parametrize("profile", ["smoke", "gemma3-27b"])
def test_phase_parameter_files_validate(profile: str) -> None:
    expect = {"smoke": None, "gemma3-27b": {0: 10.0, 1: 24.0, 2: 22.0, 3: 20.0, 4: 25.0}}[profile]
    for k in range(5):
        p = _execution(profile, k).parameters
        assert p["phase"] == k and (p["kernel"] == "") == (k == 0) and (p["keep_on"] == "structural") == (k == 0)
        assert p["temperature"] == (0.9 if k == 0 else 0.8) and p["rephrasings"] == (k == 1)
        if expect:
            assert p["keep_threshold"] == expect[k] and p["samples_per_prompt"] == 8
        for f in p["prompt_files"]:
            assert Path(f).exists() or (PARAMS_DIR.parent / f).exists()


@pytest.mark.e2e
def test_smoke_phase_runs_end_to_end(tmp_path: Path) -> None:
    if not kernelspec_installed():
        install_kernelspec()
    ex = _execution("smoke", 2, out_dir=tmp_path, run_dir=str(tmp_path))
    execute(ex, tmp_path, progress_bar=False)
    phase = tmp_path / "distill" / "phase2"
    info = json.loads((phase / "extract.json").read_text())
    assert info["mlx_lm"]["train"] == info["train"] >= 1 and info["mlx_lm"]["valid"] == info["valid"] >= 1
    assert info["summary"]["total_generated"] == 4 and info["summary"]["total_kept"] >= 2
    assert (tmp_path / "figures" / "distill_phase2_audit.png").exists()
    assert (tmp_path / "tables" / "distill_phase2_categories.csv").exists()
    for name in ("train", "valid"):
        for line in (phase / f"{name}.jsonl").read_text().splitlines():
            assert list(json.loads(line)) == ["messages"]
