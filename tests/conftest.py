"""Shared test fixtures. The session re-executes itself once with OpenBLAS preloaded (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lekutils.blas import reexec_with_fast_blas

reexec_with_fast_blas()

ROOT = Path(__file__).resolve().parents[1]


def upstream_dir() -> Path:
    """The upstream reference folder: $LEK_UPSTREAM, else ../shared/upstream beside the repo."""
    env = os.environ.get("LEK_UPSTREAM")
    return Path(env) if env else ROOT.parent / "shared" / "upstream"


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
