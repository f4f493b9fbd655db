"""Notebook hygiene and the shipped profiles' parameters, checked without executing anything."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from lekutils.core.paths import NOTEBOOKS_DIR, PARAMS_DIR
from lekutils.runner.hygiene import check_notebook, strip_notebook
from lekutils.runner.profile import load_pipeline, resolve

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PROFILES = sorted(p.name for p in PARAMS_DIR.iterdir() if (p / "pipeline.yaml").exists())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    assert check_notebook(path) == []


def _nb(tmp_path: Path, *, tags: list[list[str]], outputs: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# T\n\nPurpose.\n\n`python -m lekutils run t`"))
    for t in tags:
        c = nbformat.v4.new_code_cell("x = 1")
        c.metadata["tags"] = t
        if outputs:
            c.outputs = [nbformat.v4.new_output("stream", text="hi")]
            c.execution_count = 1
        nb.cells.append(c)
    p = tmp_path / "t.ipynb"
    nbformat.write(nb, str(p))
    return p


def test_hygiene_catches_outputs_and_parameter_cells(tmp_path):
    assert check_notebook(_nb(tmp_path, tags=[["parameters"]])) == []
    assert any("0 cells tagged" in m for m in check_notebook(_nb(tmp_path, tags=[[]])))
    assert any("2 cells tagged" in m for m in check_notebook(_nb(tmp_path, tags=[["parameters"], ["parameters"]])))
    p = _nb(tmp_path, tags=[["parameters"]], outputs=True)
    assert any("outputs" in m for m in check_notebook(p))
    assert strip_notebook(p) and check_notebook(p) == []


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_parameters_validate(profile):
    executions = resolve(load_pipeline(profile), profile)
    assert executions, f"profile {profile} lists no executions"
    for ex in executions:
        assert ex.notebook.exists()


def test_every_notebook_is_in_the_smoke_pipeline():
    names = {e.notebook.stem for e in load_pipeline("smoke")}
    assert {p.stem for p in NOTEBOOKS} <= names
