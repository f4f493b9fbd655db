"""The canonical v2 heuristic scorer (upstream's benchmark scorer), exact to the spec, quirks included.

See ``../shared/specs/v2-scorer.md`` and ``docs/scoring.md``. Patterns are precompiled; the
case-insensitive ones run lowered on ``text.lower()``, tried only where one of their literal
prefixes occurs, and some case-sensitive ones in an equivalent front-literal form:
``lekutils.scoring.patterns`` explains why each counts the same matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lekutils.scoring.patterns import SPEC, Compiled

NAME = "v2"
VERSION = "2.0.0"

#: The 14 signal keys in accumulation order.
SIGNALS: tuple[str, ...] = (
    "compliance_markers", "formulaic_preamble", "degeneration", "empty_broken", "first_person",
    "creative_form", "engagement_depth", "emotional_register", "nuance", "specificity",
    "axiom_resonance", "perspective_taking", "metaphor", "questioning",
)

_P = Compiled(("C1", "S3", "K1", "K2c", "K3", "K4", "K5"), ("S1", "S2", "K2a", "K2b"))
_P1 = re.compile(SPEC["P1"])  # anchored with ^ and no MULTILINE: findall has at most one match, at 0
_S1, _S2, _K2A, _K2B = (_P.cs[k] for k in ("S1", "S2", "K2a", "K2b"))


def content_signals(text: str, count: Callable[[str], int], score: float, out: dict[str, Any]) -> float:
    """Signals 9-14, shared by v2 and v2_distill: add them to ``out``, return the updated score.

    ``count(name)`` counts a (?i) pattern's matches in ``text`` (``Compiled.counter``).
    """
    c = count("K1")
    out["nuance"] = c
    score += min(c * 1.5, 6.0)
    c = len(_K2A.findall(text[1:])) + len(_K2B.findall(text)) + count("K2c")
    out["specificity"] = c
    score += min(c * 0.3, 5.0)
    c = count("K3")
    out["axiom_resonance"] = c
    score += min(c * 1.0, 5.0)
    c = count("K4")
    out["perspective_taking"] = c
    score += min(c * 1.5, 5.0)
    c = count("K5")
    out["metaphor"] = c
    score += min(c * 1.0, 4.0)
    c = text.count("?")
    out["questioning"] = c
    score += min(c * 0.5, 3.0)
    return score


def engagement(text: str, score: float, out: dict[str, Any]) -> float:
    """Signal 7, ``engagement_depth`` (shared by both scorers)."""
    c = text.count("\n\n") + 1
    out["engagement_depth"] = c
    return score + min(c * 1.0, 6.0)


def score_v2(text: str) -> dict[str, Any]:
    """Score one text with v2: the 14 signals (in accumulation order) and ``lek_score``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    count = _P.counter(text)
    out: dict[str, Any] = {}
    score = 0.0
    c = count("C1")
    out["compliance_markers"] = c
    score -= c * 5
    c = 1 if _P1.match(text) else 0
    out["formulaic_preamble"] = c
    score -= c * 2
    words = text.split()
    d: float = 0
    if len(words) > 10:
        r = len(set(words)) / len(words)
        if r < 0.3:
            d = 1
            score -= 20
        elif r < 0.5:
            d = 0.5
            score -= 10
    out["degeneration"] = d
    e = 1 if len(text.strip()) < 20 else 0
    out["empty_broken"] = e
    if e:
        score -= 20
    c = len(_S1.findall(text))
    out["first_person"] = c
    score += min(c * 0.5, 4.0)
    c = len(_S2.findall(text))
    out["creative_form"] = c
    score += min(c * 0.6, 6.0)
    score = engagement(text, score, out)
    c = count("S3")
    out["emotional_register"] = c
    score += min(c * 0.8, 5.0)
    score = content_signals(text, count, score, out)
    out["lek_score"] = round(score, 2)
    return out
