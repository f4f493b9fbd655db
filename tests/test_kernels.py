"""Kernel files -> conditions: raw text kept byte for byte, hashes, names, validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.data.kernels import BASELINE, EXAMPLE_KERNELS, conditions, kernel_hashes, read_kernel


def test_shipped_example_kernels(repo_root: Path) -> None:
    conds = conditions()
    assert [c.name for c in conds] == [BASELINE, "json", "txt"]
    base, js, txt = conds
    assert base.system is None and base.path is None and base.sha256 is None
    raw = EXAMPLE_KERNELS["json"].read_text(encoding="utf-8")
    assert js.system == raw  # unparsed: the JSON text itself is the system message
    data = json.loads(raw)
    assert data["version"] == "1" and len(data["principles"]) >= 5
    for p in data["principles"]:  # both forms carry the same principles
        assert p["statement"] in txt.system
    assert kernel_hashes(conds) == {
        "json": "sha256:" + hashlib.sha256(EXAMPLE_KERNELS["json"].read_bytes()).hexdigest(),
        "txt": "sha256:" + hashlib.sha256(EXAMPLE_KERNELS["txt"].read_bytes()).hexdigest(),
    }


def test_upstream_kernels_raw_text(upstream: Path) -> None:
    k = upstream / "kernel"
    conds = conditions({"json": k / "claude-native.json", "txt": k / "lek-1-kernel.txt"})
    assert len(conds[1].system) == 2183  # the published character count of the JSON kernel
    assert conds[2].system == (k / "lek-1-kernel.txt").read_text(encoding="utf-8")
    assert EXAMPLE_KERNELS["txt"].read_text() != conds[2].system


def test_sequence_names_and_whitespace_kept(tmp_path: Path) -> None:
    a = tmp_path / "k.txt"
    a.write_text("  Be kind.\n\n", encoding="utf-8")
    b = tmp_path / "k.json"
    b.write_text('{"a": 1}', encoding="utf-8")
    conds = conditions([a, b], baseline=False)
    assert [c.name for c in conds] == ["txt", "json"] and conds[0].system == "  Be kind.\n\n"
    c = tmp_path / "other.txt"
    c.write_text("x", encoding="utf-8")
    assert [x.name for x in conditions([a, c])] == [BASELINE, "k", "other"]


def test_bad_kernels(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "a": 1,\n}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_kernel(bad)
    assert e.value.problems[0].line == 3 and str(bad) in str(e.value)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        conditions({"e": empty})
    with pytest.raises(DataError, match="cannot read"):
        conditions({"m": tmp_path / "missing.txt"})
    ok = tmp_path / "ok.txt"
    ok.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid condition name"):
        conditions({BASELINE: ok})
    with pytest.raises(ValueError, match="invalid condition name"):
        conditions({"a b": ok})
    with pytest.raises(ValueError, match="no conditions"):
        conditions({}, baseline=False)
