"""Review panel driven as a user would (set values, click), escaping, review file semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.core.errors import DataError
from lekutils.report.review import (
    ReviewPanel,
    load_decisions,
    record_decision,
    rejected_keys,
    render_example_html,
    sample_for_review,
)
from lekutils.tasks.extract import Example

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)><b>bold</b> & more'


def ex(pid: str, idx: int = 0, response: str = "a calm answer", score: float = 10.0) -> Example:
    return Example(pid, idx, "cat", f"<i>prompt</i> {pid}", response, score, pid,
                   {"signals": {"nuance": 2, "questioning": 1}})


def test_sample_for_review_is_seeded_ten_percent() -> None:
    items = [ex(f"P{i:03d}", i % 3) for i in range(55)]
    a = sample_for_review(items, 0.1, seed=1)
    assert len(a) == 6 and a == sample_for_review(list(reversed(items)), 0.1, seed=1)
    assert a == sorted(a, key=lambda e: e.key)
    assert any(sample_for_review(items, 0.1, seed=s) != a for s in range(2, 6))
    assert len(sample_for_review(items[:3], 0.1)) == 1
    assert sample_for_review([], 0.1) == [] and sample_for_review(items, 0.0) == []
    with pytest.raises(ValueError):
        sample_for_review(items, 1.5)


def test_response_with_html_is_shown_as_text(tmp_path: Path) -> None:
    html = render_example_html(ex("P1", response=EVIL))
    assert "<script" not in html and "<img" not in html and "<b>bold" not in html and "<i>prompt" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html and "&amp; more" in html
    panel = ReviewPanel([ex("P1", response=EVIL)], tmp_path / "review.jsonl")
    assert "&lt;script&gt;" in panel.view.value and "<script" not in panel.view.value
    assert "score 10.00" in panel.view.value and "nuance" in panel.view.value


def test_panel_accept_reject_note_saved_on_each_click(tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    items = [ex("P1"), ex("P2", 3), ex("P3")]
    seen: list[dict] = []
    panel = ReviewPanel(items, path, reviewer="tester", on_decision=seen.append)
    assert panel.current.key == ("P1", 0) and not path.exists()

    panel.note.value = "preachy, lists keywords"
    panel.reject_button.click()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["decision"] == "reject" and lines[0]["note"] == "preachy, lists keywords"
    assert (lines[0]["probe_id"], lines[0]["sample_idx"], lines[0]["reviewer"]) == ("P1", 0, "tester")
    assert panel.current.key == ("P2", 3) and panel.note.value == ""  # advanced, note cleared

    panel.accept_button.click()
    assert panel.current.key == ("P3", 0) and len(path.read_text().splitlines()) == 2
    panel.next_button.click()  # stays on the last example
    assert panel.current.key == ("P3", 0)
    assert rejected_keys(path) == {("P1", 0)}

    panel.prev_button.click()
    panel.prev_button.click()
    assert panel.current.key == ("P1", 0) and panel.note.value == "preachy, lists keywords"
    assert "current decision:</b> reject" in panel.view.value
    panel.note.value = "fine on a second read"
    panel.accept_button.click()  # change of mind: the last decision wins
    assert rejected_keys(path) == set()
    assert load_decisions(path)[("P1", 0)]["rev"] == 2 and len(seen) == 3
    assert "2 of 3 reviewed" in panel.status.value


def test_empty_panel_and_missing_file(tmp_path: Path) -> None:
    panel = ReviewPanel([], tmp_path / "r.jsonl")
    assert panel.accept_button.disabled and panel.decide("accept") is None
    assert rejected_keys(tmp_path / "absent.jsonl") == set()


def test_bad_review_file_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    record_decision(path, ex("P1"), "reject")
    with path.open("a") as fh:
        fh.write(json.dumps({"probe_id": "P2", "sample_idx": 0, "rev": 1, "decision": "maybe"}) + "\n")
    with pytest.raises(DataError, match="line 2.*decision"):
        rejected_keys(path)
    with pytest.raises(ValueError):
        record_decision(path, ex("P3"), "skip")
