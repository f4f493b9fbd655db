"""Where things live: the repository, the upstream reference data, run folders, caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_DIR = REPO_ROOT / "figures"


def upstream_dir() -> Path:
    """The upstream LEK reference folder: ``$LEK_UPSTREAM``, else the folder ``python -m lekutils upstream
    fetch`` installed for the shipped pin, else ``../shared/upstream`` beside the repo (see
    :mod:`lekutils.core.upstream`)."""
    from lekutils.core.upstream import find_upstream

    return find_upstream()


def run_dir(profile: str = "smoke", base: str | os.PathLike[str] | None = None) -> Path:
    """The output folder of a profile's runs: ``runs/<profile>`` (``$LEK_RUNS`` overrides ``runs``)."""
    root = Path(base) if base else Path(os.environ.get("LEK_RUNS", REPO_ROOT / "runs"))
    return root / profile


def cache_dir() -> Path:
    """User cache for converted models etc.: ``$LEK_CACHE`` or ``~/.cache/lekutils``."""
    env = os.environ.get("LEK_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lekutils"
    base.mkdir(parents=True, exist_ok=True)
    return base
