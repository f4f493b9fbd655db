"""The scoring benchmark runs, compares like with like, and its synthetic texts have the stated size."""

from __future__ import annotations

from lekutils.bench.score import TEXT_CHARS, main, run_bench, synthetic_texts
from lekutils.scoring import score


def test_synthetic_texts_are_4kb_varied_and_deterministic():
    texts = synthetic_texts(5)
    assert texts == synthetic_texts(5) and len(set(texts)) == 5
    assert all(len(t) == TEXT_CHARS for t in texts)
    d = score(texts[0])
    assert d["specificity"] > 0 and d["creative_form"] > 0 and d["engagement_depth"] > 1


def test_run_bench_rows(capsys):
    rows = run_bench(synthetic_texts(6), "v2", processes=2)
    assert [(r["impl"], r["processes"]) for r in rows] == [("plain", 1), ("lekutils", 1), ("plain", 2), ("lekutils", 2)]
    assert rows[0]["speedup_vs_plain_1p"] == 1.0 and all(r["texts_per_s"] > 0 for r in rows)
    assert main(["--n", "4", "--source", "synthetic", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "texts/s" in out and "lekutils" in out and "plain" in out
