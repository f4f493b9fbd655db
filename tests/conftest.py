"""Shared test fixtures. The session re-executes itself once with OpenBLAS preloaded (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lekutils.core.blas import reexec_needed, reexec_with_fast_blas
from lekutils.core.paths import upstream_dir

ROOT = Path(__file__).resolve().parents[1]


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
    """Path to ../shared/upstream; skips the test with a reason where it is absent."""
    d = upstream_dir()
    if not (d / "benchmarks").is_dir():
        pytest.skip(f"upstream reference data not found at {d} (set LEK_UPSTREAM)")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
