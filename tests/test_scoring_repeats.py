"""v2_distill's D3 repeat rule: same answer as ``re`` where ``re`` finishes, bounded time where it does not."""

from __future__ import annotations

import random
import re
import time

import pytest

from lekutils.scoring import score
from lekutils.scoring.repeats import has_repeated_unit

D3_FIRST = re.compile(r"(.{10,}?)\1{4,}", re.DOTALL)


def _random_text(rng: random.Random) -> str:
    alpha = rng.choice(["ab", "abc", "a\nb", "xyz\n ", "aé😀", "0123456789"])
    t = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 200)))
    if rng.random() < 0.6:  # plant a unit repeated 3-6 times, maybe cut short
        unit = "".join(rng.choice(alpha) for _ in range(rng.randint(8, 16)))
        planted = unit * rng.randint(3, 6) + unit[:rng.randint(0, len(unit))]
        i = rng.randint(0, len(t))
        t = t[:i] + planted + t[i:]
    return t


def test_matches_re_on_random_texts():
    rng = random.Random(7)
    outcomes = set()
    for _ in range(1500):
        t = _random_text(rng)
        expected = D3_FIRST.search(t) is not None
        assert has_repeated_unit(t) is expected, repr(t)
        outcomes.add(expected)
    assert outcomes == {True, False}


@pytest.mark.parametrize("text,expected", [
    ("", False),
    ("0123456789" * 5, True),
    ("0123456789" * 4 + "012345678", False),
    ("x" * 49, False),
    ("x" * 50, True),
    ("abcdefghi\n" * 5, True),  # newline inside the unit (DOTALL)
    ("123456789" * 6, False),  # a 9-character unit is too short; 18 would need 90 characters
    ("123456789" * 10, True),
    ("pre " + "the same!! " * 5 + " post", True),
    ("AbCdEfGhIj" * 4 + "abcdefghij", False),  # case-sensitive
])
def test_examples(text, expected):
    assert (D3_FIRST.search(text) is not None) is expected
    assert has_repeated_unit(text) is expected


def test_general_parameters():
    assert has_repeated_unit("abab", min_unit=2, copies=3) is False
    assert has_repeated_unit("ababab", min_unit=2, copies=3) is True
    with pytest.raises(ValueError):
        has_repeated_unit("x", min_unit=0)


@pytest.mark.parametrize("kind", ["random", "runs"])
def test_hostile_100kb_text_is_fast(kind):
    rng = random.Random(kind)
    if kind == "random":  # no repeat at all: re would need ~5e9 steps
        text = "".join(rng.choice("abcdefghij \n") for _ in range(100_000))
    else:  # near misses everywhere: 4 copies of units of many lengths
        parts = []
        while sum(map(len, parts)) < 100_000:
            unit = "".join(chr(rng.randint(97, 122)) for _ in range(rng.randint(10, 200)))
            parts.append(unit * 4 + chr(rng.randint(0x4E00, 0x9FFF)))
        text = "".join(parts)
    t0 = time.perf_counter()
    d = score(text, "v2_distill")
    elapsed = time.perf_counter() - t0
    assert d["degeneration"] == 0
    assert elapsed < 3.0, f"{elapsed:.2f}s for a {len(text)}-character hostile text"
