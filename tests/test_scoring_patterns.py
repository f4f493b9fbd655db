"""The pattern strings are the spec's, and every faster form counts exactly what the spec's pattern counts."""

from __future__ import annotations

import random
import re

import pytest

from lekutils.core.paths import REPO_ROOT, upstream_dir
from lekutils.scoring.patterns import (
    CASE_INSENSITIVE,
    FRONT_LITERAL,
    SPEC,
    count_from_literals,
    literal_prefix,
    lowered,
    lowering_is_exact,
    required_literals,
    top_alternatives,
)

SPEC_FILES = [upstream_dir().parent / "specs" / "v2-scorer.md", REPO_ROOT.parent / "shared" / "specs" / "v2-scorer.md"]


def test_patterns_are_verbatim_from_the_spec():
    spec_file = next((f for f in SPEC_FILES if f.is_file()), None)
    if spec_file is None:
        pytest.skip(f"spec not found at {SPEC_FILES[0]} or {SPEC_FILES[1]}")
    found = dict(re.findall(r"^- \*\*(\w+)\*\* `([^`]+)`", spec_file.read_text(encoding="utf-8"), re.M))
    assert found == SPEC


def test_case_insensitive_set_is_complete():
    assert sorted(CASE_INSENSITIVE) == sorted(k for k, v in SPEC.items() if v.startswith("(?i)") and k != "P1")
    with pytest.raises(ValueError):
        lowered(SPEC["S1"])
    with pytest.raises(ValueError):
        lowered(r"(?i)\Sfoo")


def test_literal_prefixes():
    assert literal_prefix(r"trade-?off") == "trade"
    assert literal_prefix(r"e\.g\.") == "e.g."
    assert literal_prefix(r"both .{3,30} and") == "both "
    assert literal_prefix(r"it'?s (?:x)") == "it"
    assert literal_prefix(r"(?:this|that) is") == ""
    assert literal_prefix(r"ab+c") == "a"
    assert top_alternatives(r"\b(a|b(c|d)|e\|f)\b") == ["a", "b(c|d)", r"e\|f"]
    assert top_alternatives(SPEC["S3"])[:2] == ["feel", "felt"]
    assert required_literals(lowered(SPEC["D2"])) is None
    assert "accountab" in required_literals(lowered(SPEC["K3"]))


def test_lowering_assumptions_hold_over_all_of_unicode():
    """The exhaustive check behind ``lowering_is_exact`` (see lekutils/scoring/patterns.py)."""
    allc = "".join(map(chr, [*range(0xD800), *range(0xE000, 0x110000)]))
    letters = "abcdefghijklmnopqrstuvwxyz"
    others = sorted({ch for k in CASE_INSENSITIVE for ch in SPEC[k] if ch.isascii() and not ch.isalpha()})
    for x in [*letters, *others]:
        for c in re.findall("(?i)" + re.escape(x), allc):
            if c.isascii():
                assert c.lower() == x
            else:  # a non-ASCII character re folds onto x: lower() gives x, or lowering is refused
                assert c.lower() == x or not lowering_is_exact(c, c.lower()), (hex(ord(c)), x)
    pairs = [(c, c.lower()) for c in allc if len(c.lower()) == 1 and c.lower() != c]
    for c, lc in pairs:
        if lc.isascii():  # lower() may only produce an ASCII character that re folds c onto
            assert re.fullmatch("(?i)" + re.escape(lc), c), hex(ord(c))
    src = "".join(c for c, _ in pairs)
    dst = "".join(lc for _, lc in pairs)
    for cls in (r"\w", r"\s", r"\d", r"."):  # lower() keeps every character class the patterns use
        assert [m.start() for m in re.finditer(cls, src)] == [m.start() for m in re.finditer(cls, dst)]
    assert [c for c in allc if len(c.lower()) != 1] == ["\u0130"]
    assert not lowering_is_exact("\u0130", "\u0130".lower())
    assert not lowering_is_exact("x\u0131", "x\u0131") and not lowering_is_exact("\u017f", "\u017f")


ALPHABET = list("I'mvyeM \n\t.*_#>|—-AZaBcxQ0123456789,.\u00a0é") + ["I ", "I'm ", "I've ", "my ", "me ", ". "]


@pytest.mark.parametrize("name", sorted(FRONT_LITERAL))
def test_front_literal_forms_count_the_same(name):
    spec, fast = re.compile(SPEC[name]), re.compile(FRONT_LITERAL[name])
    rng = random.Random(name)
    for _ in range(3000):
        t = "".join(rng.choices(ALPHABET, k=rng.randint(0, 40)))
        assert len(spec.findall(t)) == len(fast.findall(t)), repr(t)
        assert len(spec.findall(t[1:])) == len(fast.findall(t[1:])), repr(t)


@pytest.mark.parametrize("name", [n for n in CASE_INSENSITIVE if required_literals(lowered(SPEC[n]))])
def test_literal_scan_counts_what_findall_counts(name):
    lits = required_literals(lowered(SPEC[name]))
    pat = re.compile(lowered(SPEC[name]))
    alts = [a.replace("\\", "").lower().replace(".{", "xyz {") for a in top_alternatives(SPEC[name])]
    rng = random.Random(name)
    matched = 0
    for _ in range(500):
        pieces = [rng.choice(alts) if rng.random() < 0.5 else rng.choice(NOISE) for _ in range(rng.randint(0, 12))]
        t = "".join(pieces)
        expected = len(pat.findall(t))
        assert count_from_literals(pat, t, lits) == expected, repr(t)
        matched += expected > 0
        for m in pat.finditer(t):
            assert any(m.group(1).startswith(lit) for lit in lits), (m.group(1), t)
    assert matched > 100


NOISE = [" ", "  ", "x", "y ", "-", "'", ".", "\n", "é", "the ", "not ", "a", "s", "ing "]
