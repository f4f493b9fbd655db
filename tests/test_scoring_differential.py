"""Differential tests: the fast scorers equal the plain, line-by-line reading of the spec on fuzzed texts."""

from __future__ import annotations

import random
import re

import pytest

from lekutils.bench.score import plain_v2, plain_v2_distill
from lekutils.scoring import score, score_many
from lekutils.scoring.patterns import SPEC, lowering_is_exact, top_alternatives

# Every literal alternative of every pattern, with ".{a,b}" gaps filled in, as raw material.
_PIECES = sorted({
    re.sub(r"\.\{\d+,\d+\}\??", "some gap", re.sub(r"\(\?:|[()?]", "", a)).replace("\\", "")
    for k, v in SPEC.items() if k not in ("D3", "K2a", "K2b") for a in top_alternatives(v)
})
_NOISE = ["\n\n", "\r\n", "\n", " ", "  ", ". ", ", ", "? ", "!", "...", "—", "’", "'", "*", "**", "_", "__",
          "# ", "## ", "### ", "#### ", "> ", "| ", "|---|", "2024", "3.5", "1,000", "e.g.", "A", "Zürich",
          "Berlin", "K", "\u00a0", "\u2003", "😀", "é", "ß", "<|eot_id|>", "<|im_end|>",
          "I cannot ", "disallowed ", "not allowed ", "The ", "However, "]


def _case(rng: random.Random, s: str) -> str:
    r = rng.random()
    if r < 0.6:
        return s
    if r < 0.75:
        return s.upper()
    if r < 0.9:
        return s.capitalize()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in s)


# Characters that make the scorers fall back to the (?i) patterns (see lekutils.scoring.patterns).
_FOLDING = ["ı", "İ", "ſ", "ı cannot ", "ſuch as ", "İmagine "]


def fuzz_texts(n: int, seed: int, max_parts: int = 60) -> list[str]:
    """Texts built from the patterns' own pieces and noise; a quarter of them hold folding characters."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        noise = _NOISE + _FOLDING if rng.random() < 0.25 else _NOISE
        for _ in range(rng.randint(0, max_parts)):
            parts.append(_case(rng, rng.choice(_PIECES)) if rng.random() < 0.45 else rng.choice(noise))
            if rng.random() < 0.1 and parts:
                parts.append(parts[-1] * rng.randint(2, 6))  # repeats for degeneration rules
        out.append("".join(parts))
    return out


def test_v2_equals_plain_reference_on_fuzzed_texts():
    texts = fuzz_texts(2500, seed=1)
    assert sum(plain_v2(t)["lek_score"] != 0 for t in texts) > 2000
    fallback = sum(not lowering_is_exact(t, t.lower()) for t in texts)
    assert 300 < fallback < 1000  # both the lowered and the (?i) path are exercised
    for t in texts:
        assert score(t) == plain_v2(t), repr(t)


def test_v2_distill_equals_plain_reference_on_fuzzed_texts():
    texts = fuzz_texts(600, seed=2, max_parts=40)
    degenerate = 0
    for t in texts:
        ref = plain_v2_distill(t)
        degenerate += ref["degeneration"]
        assert score(t, "v2_distill") == ref, repr(t)
    assert 20 < degenerate < 580  # both outcomes well represented


@pytest.mark.parametrize("scorer", ["v2", "v2_distill"])
def test_batch_equals_single(scorer):
    texts = fuzz_texts(60, seed=3)
    frame = score_many(texts, scorer, processes=2)
    assert frame.to_dict("records") == [score(t, scorer) for t in texts]
