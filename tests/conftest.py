"""Shared test fixtures. The session re-executes itself once with OpenBLAS preloaded (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lekutils.core.blas import reexec_needed, reexec_with_fast_blas
from lekutils.core.paths import upstream_dir
from lekutils.core.upstream import FETCH_COMMAND

ROOT = Path(__file__).resolve().parents[1]
#: Every skip for missing upstream data carries this phrase; the terminal summary counts them.
UPSTREAM_SKIP = "upstream reference data not found"


def pytest_configure(config: pytest.Config) -> None:
    """Re-exec the test session once with OpenBLAS preloaded (Linux; see lekutils.core.blas)."""
    if config.pluginmanager.hasplugin("xdist") and os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not reexec_needed():
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()  # give the new process the real stdout/stderr
    reexec_with_fast_blas()


@pytest.fixture(scope="session")
def upstream() -> Path:
    """The upstream reference folder (lekutils.core.paths.upstream_dir); skips the test where it is absent."""
    d = upstream_dir()
    if not (d / "benchmarks").is_dir():
        pytest.skip(f"{UPSTREAM_SKIP} at {d} (run `{FETCH_COMMAND}` or set LEK_UPSTREAM)")
    return d


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    """Say how many reproduction tests were skipped for missing upstream data, and how to enable them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if UPSTREAM_SKIP in _skip_reason(r)]
    if not skipped:
        return
    terminalreporter.write_sep("=", "upstream reference data", yellow=True)
    terminalreporter.write_line(
        f"{len(skipped)} reproduction test(s) skipped: the upstream LEK data was not found at {upstream_dir()}.")
    terminalreporter.write_line(
        f"Enable them with `{FETCH_COMMAND}` (clones the pinned upstream commit into the user cache and "
        "verifies every file's sha256), or set LEK_UPSTREAM to a folder holding the data.")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
