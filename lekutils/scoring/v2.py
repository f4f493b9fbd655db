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
from lekutils.scoring.rules import RULES, SIGNALS

NAME = "v2"
VERSION = "2.0.0"
__all__ = ["NAME", "SIGNALS", "VERSION", "content_signals", "engagement", "score_v2"]

_R = RULES[NAME]

_P = Compiled(("C1", "S3", "K1", "K2c", "K3", "K4", "K5"), ("S1", "S2", "K2a", "K2b"))
_P1 = re.compile(SPEC["P1"])  # anchored with ^ and no MULTILINE: findall has at most one match, at 0
_S1, _S2, _K2A, _K2B = (_P.cs[k] for k in ("S1", "S2", "K2a", "K2b"))


def content_signals(text: str, count: Callable[[str], int], score: float, out: dict[str, Any]) -> float:
    """Signals 9-14, shared by v2 and v2_distill: add them to ``out``, return the updated score.

    ``count(name)`` counts a (?i) pattern's matches in ``text`` (``Compiled.counter``).
    """
    c = count("K1")
    out["nuance"] = c
    score += _R["nuance"](c)
    c = len(_K2A.findall(text[1:])) + len(_K2B.findall(text)) + count("K2c")
    out["specificity"] = c
    score += _R["specificity"](c)
    c = count("K3")
    out["axiom_resonance"] = c
    score += _R["axiom_resonance"](c)
    c = count("K4")
    out["perspective_taking"] = c
    score += _R["perspective_taking"](c)
    c = count("K5")
    out["metaphor"] = c
    score += _R["metaphor"](c)
    c = text.count("?")
    out["questioning"] = c
    score += _R["questioning"](c)
    return score


def engagement(text: str, score: float, out: dict[str, Any]) -> float:
    """Signal 7, ``engagement_depth`` (shared by both scorers)."""
    c = text.count("\n\n") + 1
    out["engagement_depth"] = c
    return score + _R["engagement_depth"](c)


def score_v2(text: str) -> dict[str, Any]:
    """Score one text with v2: the 14 signals (in accumulation order) and ``lek_score``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    count = _P.counter(text)
    out: dict[str, Any] = {}
    score = 0.0
    c = count("C1")
    out["compliance_markers"] = c
    score += _R["compliance_markers"](c)
    c = 1 if _P1.match(text) else 0
    out["formulaic_preamble"] = c
    score += _R["formulaic_preamble"](c)
    words = text.split()
    d: float = 0
    if len(words) > 10:
        r = len(set(words)) / len(words)
        if r < 0.3:
            d = 1
        elif r < 0.5:
            d = 0.5
    out["degeneration"] = d
    score += _R["degeneration"](d)  # 1 -> -20, 0.5 -> -10
    e = 1 if len(text.strip()) < 20 else 0
    out["empty_broken"] = e
    score += _R["empty_broken"](e)
    c = len(_S1.findall(text))
    out["first_person"] = c
    score += _R["first_person"](c)
    c = len(_S2.findall(text))
    out["creative_form"] = c
    score += _R["creative_form"](c)
    score = engagement(text, score, out)
    c = count("S3")
    out["emotional_register"] = c
    score += _R["emotional_register"](c)
    score = content_signals(text, count, score, out)
    out["lek_score"] = round(score, 2)
    return out
