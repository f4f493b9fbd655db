"""Notebook 10 in the smoke profile on the default embedded model (one phase), and its parameters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lekutils.core.paths import NOTEBOOKS_DIR, PARAMS_DIR
from lekutils.runner.execute import execute, install_kernelspec, kernelspec_installed
from lekutils.runner.params import notebook_parameters
from lekutils.runner.profile import Execution, load_pipeline, resolve

NOTEBOOK = NOTEBOOKS_DIR / "10_self_distill.ipynb"


def _execution(profile: str, phase: int, out_dir: Path | None = None, **overrides) -> Execution:
    ex = next(e for e in load_pipeline(profile) if e.name == f"10_self_distill_phase{phase}")
    return resolve([ex], profile, overrides=overrides or None, out_dir=out_dir)[0]


def _defaults() -> dict:
    return {k: s.default for k, s in notebook_parameters(NOTEBOOK).items()}


#: DistillSettings field -> notebook parameter, where the names differ
NAMES = {"samples": "samples_per_prompt"}


def test_parameter_defaults_are_distill_settings() -> None:
    """The parameters cell repeats DistillSettings' defaults (the single source): they must agree."""
    from lekutils.tasks.distill import DistillSettings

    params = _defaults()
    for f in dataclasses.fields(DistillSettings):
        name = NAMES.get(f.name, f.name)
        if f.default is dataclasses.MISSING or name not in params or f.name in ("adapter", "kernel"):
            continue  # phase (required); adapter/kernel: paths, "" in the notebook; chunk_size: not a parameter
        default = list(f.default) if isinstance(f.default, tuple) else f.default  # a list in the notebook
        assert params[name] == default, (
            f"notebooks/10_self_distill.ipynb: {name} = {params[name]!r} but DistillSettings.{f.name} = "
            f"{f.default!r}; change the parameters cell to DistillSettings' default")


@pytest.mark.parametrize("profile", ["smoke", "gemma3-27b"])
def test_phase_parameter_files_validate(profile: str) -> None:
    expect = {"smoke": None, "gemma3-27b": {0: 0.0, 1: 24.0, 2: 22.0, 3: 20.0, 4: 25.0}}[profile]
    for k in range(5):
        p = {**_defaults(), **_execution(profile, k).parameters}
        phase0_rule = "structural" if profile == "smoke" else "none"  # gemma3-27b: no score gate in phase 0
        assert p["phase"] == k and (p["kernel"] == "") == (k == 0) and (p["keep_on"] == phase0_rule) == (k == 0)
        assert p["temperature"] == (0.9 if k == 0 else 0.8)
        if expect:
            assert p["keep_threshold"] == expect[k] and p["samples_per_prompt"] == 8 and p["max_tokens"] == 4096
            # the v2 banks; phase 1's file holds its own rephrasings; phase 3 requires the safety review
            names = ("creative", "phase1-axiom", "phase2-multiperspective", "phase3-adversarial", "phase4-synthesis")
            assert p["prompt_files"] == [f"data/prompts/{names[k]}-v2.json"]
            assert p["rephrasings"] is False and p["require_review"] == (k == 3)
        else:
            assert p["samples_per_prompt"] == 2 and p["max_tokens"] == 64 and p["rephrasings"] == (k == 1)
            assert p["require_review"] is False
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
