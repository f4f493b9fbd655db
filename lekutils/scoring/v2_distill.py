"""``v2_distill``: the variant scorer of upstream's self-distillation script (not the benchmark v2).

Signals 7 and 9-14 are v2's; compliance, preamble, degeneration, empty-text, first-person,
creative-form and emotional-register use the D1-D6 rules of the spec. D3's first alternative,
``(.{10,}?)\\1{4,}``, is decided by :func:`lekutils.scoring.repeats.has_repeated_unit` (same answer,
``O(n log n)``); its other alternatives reduce exactly to counts of non-overlapping occurrences.
"""

from __future__ import annotations

import re
from typing import Any

from lekutils.scoring.patterns import Compiled
from lekutils.scoring.repeats import has_repeated_unit
from lekutils.scoring.rules import RULES
from lekutils.scoring.v2 import content_signals, engagement

NAME = "v2_distill"
VERSION = "2.0.0"
_R = RULES[NAME]

_P = Compiled(("D1", "D2", "D5", "D6", "K1", "K2c", "K3", "K4", "K5"), ("D4",))
_D4 = _P.cs["D4"]
# D3's other alternatives: with DOTALL, "(X.*){m,}" matches iff X occurs m times without overlap.
_I_CANNOT = re.compile(r"I cannot\b")
_DISALLOWED = re.compile(r"\b(disallowed|not allowed)\b")


def degenerate(text: str) -> bool:
    """``re.search(D3, text, re.DOTALL) is not None``, in bounded time."""
    return (text.count("<|eot_id|>") >= 2
            or text.count("<|im_end|>") >= 3
            or len(_I_CANNOT.findall(text)) >= 5
            or len(_DISALLOWED.findall(text)) >= 3
            or has_repeated_unit(text, 10, 5))


def score_v2_distill(text: str) -> dict[str, Any]:
    """Score one text with the distillation variant: the 14 signals and ``lek_score``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    count = _P.counter(text)
    out: dict[str, Any] = {}
    score = 0.0
    c = count("D1")
    out["compliance_markers"] = c
    score += _R["compliance_markers"](c)
    c = count("D2")
    out["formulaic_preamble"] = c
    score += _R["formulaic_preamble"](c)
    d = 1 if degenerate(text) else 0
    out["degeneration"] = d
    score += _R["degeneration"](d)
    e = 1 if len(text.strip()) < 50 else 0
    out["empty_broken"] = e
    score += _R["empty_broken"](e)
    c = len(_D4.findall(text))
    out["first_person"] = c
    score += _R["first_person"](c)
    c = count("D5")
    out["creative_form"] = c
    score += _R["creative_form"](c)
    score = engagement(text, score, out)
    c = count("D6")
    out["emotional_register"] = c
    score += _R["emotional_register"](c)
    score = content_signals(text, count, score, out)
    out["lek_score"] = round(score, 2)
    return out
