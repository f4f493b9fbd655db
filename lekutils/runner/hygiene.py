"""Notebook hygiene: committed notebooks carry no outputs and exactly one ``parameters`` cell."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat


def check_notebook(path: str | os.PathLike[str]) -> list[str]:
    """Problems of one notebook as committed (empty list = clean)."""
    path = Path(path)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:  # noqa: BLE001 - any unreadable notebook is a problem to report
        return [f"{path}: not a readable notebook ({e})"]
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"{path}: cell {i} carries outputs or an execution count")
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{path}: {len(tagged)} cells tagged 'parameters' (want exactly 1)")
    elif nb.cells[tagged[0]].cell_type != "code":
        problems.append(f"{path}: the 'parameters' cell is not a code cell")
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
        problems.append(f"{path}: the first cell must be markdown starting with a '# ' title")
    elif "python -m lekutils run" not in first.source:
        problems.append(f"{path}: the first cell must give the command that runs it (python -m lekutils run ...)")
    if not nb.metadata.get("kernelspec", {}).get("name"):
        problems.append(f"{path}: no kernelspec in the notebook metadata")
    return problems


def strip_notebook(path: str | os.PathLike[str]) -> bool:
    """Remove outputs and execution counts in place; return True if the file changed."""
    nb = nbformat.read(str(path), as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, str(path))
    return changed
