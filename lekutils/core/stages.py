"""Which notebook writes which part of a run folder, so a missing input names the notebook to run first.

A run folder (``runs/<profile>`` or ``--out``) is filled stage by stage: ``probes/`` by
``00_probes``, ``distill/phaseK/`` by ``10_self_distill`` (phase K), ``adapters/phaseK/`` by
``20_train_phase`` (phase K), ``ab/`` by ``80_ab_test``. :func:`require` turns a missing input of a
later stage into a :class:`~lekutils.core.errors.DataError` that says which notebook writes it and
the command that runs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lekutils.core.errors import DataError

#: The profile a runner executes (set by ``python -m lekutils run`` for the notebooks' kernels).
PROFILE_ENV = "LEK_PROFILE"

#: (pattern on the path relative to the run folder, the notebook that writes it, what it is)
PRODUCERS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"^probes(/|$)"), "00_probes", "the run's probe sets"),
    (re.compile(r"^distill/phase(?P<phase>\d+)(/|$)"), "10_self_distill", "phase {phase}'s training data"),
    (re.compile(r"^adapters/phase(?P<phase>\d+)(/|$)"), "20_train_phase", "phase {phase}'s adapter"),
    (re.compile(r"^ab(/|$)"), "80_ab_test", "the A/B results"),
)


def producer(path: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(notebook, description)`` of the stage that writes ``path`` inside ``run_dir``, or None."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        return None
    for pattern, notebook, what in PRODUCERS:
        m = pattern.match(rel)
        if m:
            return notebook, what.format(**m.groupdict())
    return None


def missing_hint(path: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> str:
    """What to run so that ``path`` exists (empty when no stage of the run folder writes it).

    Under ``python -m lekutils run`` the profile (``LEK_PROFILE``, set by the runner) is named too."""
    found = producer(path, run_dir)
    if found is None:
        return ""
    notebook, what = found
    profile = os.environ.get(PROFILE_ENV)
    opts = (f" --profile {profile}" if profile else "") + f" --out {run_dir}"
    m = re.search(r"phase(\d+)", Path(path).as_posix())
    if m and "phase" in what:
        return (f"it is {what}, written by notebook {notebook} for phase {m.group(1)}: run that execution first "
                f"(`python -m lekutils run --dry-run{opts}` lists the executions; "
                f"`python -m lekutils run{opts}` runs the whole pipeline)")
    return (f"it is {what}, written by notebook {notebook}: run it first, "
            f"`python -m lekutils run {notebook}{opts}` (or the whole pipeline: `python -m lekutils run{opts}`)")


def require(path: str | os.PathLike[str], run_dir: str | os.PathLike[str], what: str = "input") -> Path:
    """``path`` if it exists, else a :class:`DataError` naming the notebook that writes it."""
    p = Path(path)
    if p.exists():
        return p
    hint = missing_hint(p, run_dir)
    raise DataError(p, f"{what} not found" + (f"; {hint}" if hint else ""))
