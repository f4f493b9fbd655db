"""Diversity figures and the held-out check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.data.diversity import (
    NearDupIndex,
    closest_pair,
    closest_to_eval,
    distinct_n,
    figures_table,
    heldout_overlap,
    measure,
    measure_files,
    near_duplicate_pairs,
    record_text,
)
from lekutils.data.probes import Probe
from lekutils.data.text import jaccard, shingles

BASE = ("A city library wants to lend laptops to residents who have no internet at home, but the "
        "laptops would log every website visited so that damaged machines can be traced.")
NEAR = BASE.replace("every website visited", "each website visited")
OTHER = "Write a poem about a heron that stands so still the river forgets it is there."


def _rec(rid: str, prompt: str, **kw: object) -> dict:
    return {"id": rid, "domain": "x", "prompt": prompt, **kw}


def test_distinct_n() -> None:
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "c d"], 3) == 0.0


def test_record_text_joins_turns() -> None:
    assert record_text({"prompt": "one", "turns": ["one", "two"]}) == "one\n\ntwo"
    assert record_text(Probe("P", "x", "hello")) == "hello"


def test_near_duplicate_pairs_and_scenarios() -> None:
    recs = [_rec("a", BASE, scenario="s1"), _rec("b", NEAR, scenario="s2"), _rec("c", OTHER, scenario="s3"),
            _rec("d", BASE + " Answer briefly.", scenario="s1")]
    pairs = near_duplicate_pairs(recs, 0.5)
    assert {(a, b) for a, b, _, _ in pairs} == {("a", "b"), ("a", "d"), ("b", "d")}
    assert {(a, b): same for a, b, _, same in pairs}[("a", "d")] is True
    j = jaccard(shingles(BASE), shingles(NEAR))
    assert ("a", "b", round(j, 4), False) in pairs


def test_closest_pair_is_exact_and_skips_same_scenario() -> None:
    recs = [_rec("a", BASE, scenario="s1"), _rec("d", BASE, scenario="s1"), _rec("b", NEAR, scenario="s2"),
            _rec("c", OTHER, scenario="s3")]
    assert closest_pair(recs) == ("a", "b", round(jaccard(shingles(BASE), shingles(NEAR)), 4))
    assert closest_pair(recs, across_scenarios=False) == ("a", "d", 1.0)


def test_near_dup_index_is_exact_and_respects_groups() -> None:
    idx = NearDupIndex(0.5)
    idx.add("a", BASE, "s1")
    assert idx.query(OTHER) is None
    hit = idx.query(NEAR)
    assert hit is not None and hit[1] == "a" and hit[0] == pytest.approx(jaccard(shingles(BASE), shingles(NEAR)))
    assert idx.query(NEAR, "s1") is None
    with pytest.raises(ValueError):
        NearDupIndex(0.0)


def test_heldout_overlap_by_id_text_and_near_text() -> None:
    evals = [_rec("E1", BASE), _rec("E2", OTHER)]
    train = [
        _rec("T1", BASE.upper().replace(",", "")),          # same text up to case and punctuation
        _rec("T2", NEAR),                                  # near text
        _rec("E2", "An unrelated prompt about tide tables and moon phases in a harbour town."),  # same id
        _rec("T4", "Something entirely different about choosing a bicycle for a long tour."),
    ]
    hits = heldout_overlap(train, evals, threshold=0.5)
    assert ("T1", "E1", 1.0) in hits
    assert any(h[:2] == ("T2", "E1") and h[2] >= 0.5 for h in hits)
    assert any(h[:2] == ("E2", "E2") for h in hits)
    assert not any(h[0] == "T4" for h in hits)
    probes = [Probe(r["id"], "x", r["prompt"]) for r in evals]
    assert heldout_overlap(train, probes, threshold=0.5) == hits


def test_closest_to_eval_and_measure() -> None:
    evals = [_rec("E1", BASE)]
    recs = [_rec("a", NEAR, scenario="s1"), _rec("b", OTHER, scenario="s2")]
    assert closest_to_eval(recs, evals)[:2] == ("a", "E1")
    fig = measure("toy", recs, evals, heldout_threshold=0.5)
    assert fig.count == 2 and fig.scenarios == 2 and fig.heldout_hits == 1
    assert fig.near_dup_rate == 0.0
    table = figures_table([fig])
    assert table.splitlines()[2].startswith("| toy | 2 | 2 | 0.0% |")


def test_measure_files(tmp_path: Path) -> None:
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps([_rec("a", OTHER), _rec("b", NEAR, turns=["x y z", NEAR])]), encoding="utf-8")
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps([_rec("E1", BASE)]), encoding="utf-8")
    (fig,) = measure_files([bank], ev)
    assert fig.name == "bank.json" and fig.count == 2 and fig.heldout_hits == 1
    assert fig.closest_eval[:2] == ("b", "E1")


def test_nearest_neighbours_and_sampled_distinct() -> None:
    from lekutils.data.diversity import distinct_n_sampled, nearest_neighbours

    recs = [_rec("a", BASE, scenario="s1"), _rec("b", NEAR, scenario="s2"), _rec("c", OTHER, scenario="s3")]
    nn = nearest_neighbours(recs)
    assert nn[0][1] == 1 and nn[1][1] == 0 and nn[0][0] == nn[1][0] > 0.5
    assert nn[2][0] < 0.1
    texts = [f"word{i} shared tail" for i in range(100)]
    assert distinct_n_sampled(texts[:10], 1) == distinct_n(texts[:10], 1)
    assert distinct_n_sampled(texts, 1, size=50) == pytest.approx((50 + 2) / 150)


def test_refuse_heldout_overlap_names_the_overlapping_ids(tmp_path) -> None:
    from lekutils.core.errors import DataError
    from lekutils.data.diversity import refuse_heldout_overlap
    from lekutils.data.probes import load_probes

    ev = tmp_path / "eval.json"
    ev.write_text('[{"id": "E1", "domain": "x", "prompt": "A clinic wants to share patient records with an insurer to '
                  'lower premiums; what should it tell the patients first?"}]', encoding="utf-8")
    fine = Probe("T1", "y", "Write a poem about the sea at night.")
    near = Probe("T2", "y", "A clinic wants to share patient records with an insurer to lower premiums; what "
                             "should it tell the patients?")
    same_id = Probe("E1", "y", "Something else entirely, about bicycles.")
    refuse_heldout_overlap([fine], [ev])
    with pytest.raises(DataError) as e:
        refuse_heldout_overlap([fine, near, same_id], [ev])
    msg = str(e.value)
    assert "'T2'" in msg and "'E1'" in msg and "T1" not in msg and str(ev) in msg
    assert len(load_probes(ev)) == 1
