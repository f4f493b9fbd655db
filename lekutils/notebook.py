"""The first call of every workbook notebook: :func:`setup`.

It makes a notebook behave the same wherever it is opened or executed — JupyterLab started at
the repository root or in ``notebooks/``, an executed copy under ``runs/<profile>/notebooks/``,
plain ``papermill`` from any folder:

- the working directory becomes the workbook root (the folder holding ``params/`` and
  ``notebooks/``), so the parameters' relative paths (``data/...``, ``runs/...``,
  ``params/models.yaml``) mean the same everywhere;
- figures show inline (the inline backend, also under Papermill) in the report's one theme
  (:func:`lekutils.report.figures.set_theme`) and are still saved by the notebooks;
- warnings from third-party libraries that say nothing about the research are filtered.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lekutils.core.paths import REPO_ROOT

MARKERS = ("params", "notebooks")


def workbook_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current one) holding ``params/`` and
    ``notebooks/``; else ``LEK_WORKBOOK_ROOT``; else the folder the package was installed from."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if all((d / m).is_dir() for m in MARKERS) and (d / "lekutils").is_dir():
            return d
    env = os.environ.get("LEK_WORKBOOK_ROOT")
    if env:
        return Path(env).resolve()
    return REPO_ROOT


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules and getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)() is not None


def inline_figures() -> None:
    """Use the inline backend in a Jupyter kernel (a kernel started with ``MPLBACKEND=Agg`` shows
    ``<Figure size ...>`` instead of the figure)."""
    if not _in_kernel():
        return
    from IPython import get_ipython

    get_ipython().run_line_magic("matplotlib", "inline")  # also registers the show-at-end-of-cell hook
    try:  # crisp figures inline; the saved files keep their own dpi
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - matplotlib-inline ships with ipykernel
        pass


def quiet_warnings() -> None:
    """Filter third-party noise that the notebooks' readers cannot act on."""
    warnings.filterwarnings("ignore", message=r".*IProgress not found.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(seaborn|pandas)\..*")


def setup(*, chdir: bool = True) -> Path:
    """Enter the workbook root, show figures inline in the report's theme; return the root."""
    root = workbook_root()
    if chdir and Path.cwd().resolve() != root:
        os.chdir(root)
    inline_figures()
    from lekutils.report.figures import set_theme

    set_theme()
    quiet_warnings()
    return root
