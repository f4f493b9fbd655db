"""The v2 scorer reproduces upstream's published figures and stored v2 heuristics exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from lekutils.scoring import KEYS, score
from lekutils.scoring.rescore import RescoredFile, read_ab_lines, rescore_file

#: Published v2 means (baseline, json, txt) per upstream file (../shared/upstream/README.md).
PUBLISHED = {
    "ab-base-gemma3-12b-mlxlm.jsonl": (19.73, 25.20, 23.00),
    "ab-lek-gemma3-1b-v1-mlxlm.jsonl": (22.02, 20.82, 21.21),
    "ab-base-1b-mlxlm.jsonl": (17.45, 15.90, 14.03),
    "ab-base-27b-mlxlm.jsonl": (20.46, 23.25, 21.82),
    "ab-p100-gemma3-12b-mlxlm.jsonl": (20.47, 23.66, 22.17),
}


@pytest.fixture(scope="module")
def rescored(upstream: Path) -> dict[str, RescoredFile]:
    out = {}
    for name in PUBLISHED:
        path = upstream / "benchmarks" / name
        if not path.is_file():
            pytest.skip(f"upstream reference data not found: {path} (run `python -m lekutils upstream fetch`)")
        out[name] = rescore_file(path, "v2", processes=1)
    return out


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_v2_means(rescored, name):
    res = rescored[name]
    got = {m.condition: m.new_mean for m in res.means}
    assert got == dict(zip(("baseline", "json", "txt"), PUBLISHED[name], strict=True))
    assert all(m.n == len(res.records) for m in res.means)


def test_p20_files_store_v1_and_p100_stores_v2(rescored):
    for name, res in rescored.items():
        kinds = {c["stored_scorer"] for r in res.records for c in r["conditions"].values()}
        assert kinds == ({"v2"} if "p100" in name else {"v1"}), name
    # the stored v1 means are the v1 figures upstream printed in the summary line
    res = rescored["ab-base-gemma3-12b-mlxlm.jsonl"]
    stored = {m.condition: m.stored_mean for m in res.means}
    assert stored == {c["name"]: c["avg_lek"] for c in res.summary["stored_summary"]["conditions"]}
    assert stored == {"baseline": 8.5, "json": 8.3, "txt": 8.7}


def test_every_stored_v2_heuristic_is_reproduced_exactly(upstream):
    probes, _ = read_ab_lines(upstream / "benchmarks" / "ab-p100-gemma3-12b-mlxlm.jsonl")
    n = 0
    for rec in probes:
        for name, cond in rec["conditions"].items():
            h = score(cond["response"])
            stored = cond["heuristic"]
            assert h == stored, (rec["id"], name)
            assert list(h) == list(stored) == list(KEYS)
            assert [type(v) for v in h.values()] == [type(v) for v in stored.values()], (rec["id"], name)
            assert h["lek_score"] == cond["lek_score"]
            n += 1
    assert n == 303


MUTATIONS = {
    "upper": str.upper, "swapcase": str.swapcase, "title": str.title,
    "crlf": lambda t: t.replace("\n", "\r\n"), "curly": lambda t: t.replace("'", "’"),
    "dotless-i": lambda t: t.replace("i", "ı", 5), "long-s": lambda t: t.replace("s", "ſ", 5),
    "dotted-I": lambda t: t.replace("I", "İ", 3), "cut": lambda t: t[37:],
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_real_answers_equal_the_plain_reference(upstream, name):
    from lekutils.bench.score import plain_v2

    probes, _ = read_ab_lines(upstream / "benchmarks" / "ab-base-27b-mlxlm.jsonl")
    texts = [MUTATIONS[name](c["response"]) for r in probes[:8] for c in r["conditions"].values()]
    assert [score(t) for t in texts] == [plain_v2(t) for t in texts]
