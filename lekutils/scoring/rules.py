"""The one table of signal weights and caps, read by both scorers, the audit and the report.

Each of the 14 signals adds ``min(value * weight, cap)`` to the score (penalties have no cap;
``degeneration``'s value is 0, 0.5 or 1, so its weight -20 gives -10 or -20), exactly as
``../shared/specs/v2-scorer.md`` states. ``v2_distill`` differs only in two penalties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The 14 signal keys in the spec's accumulation order.
SIGNALS: tuple[str, ...] = (
    "compliance_markers", "formulaic_preamble", "degeneration", "empty_broken", "first_person",
    "creative_form", "engagement_depth", "emotional_register", "nuance", "specificity",
    "axiom_resonance", "perspective_taking", "metaphor", "questioning",
)
NEGATIVE: tuple[str, ...] = SIGNALS[:4]
POSITIVE: tuple[str, ...] = SIGNALS[4:]
#: Penalties plus the structural signals 5-8: the number phase 0's creative keep rule can use.
STRUCTURAL: tuple[str, ...] = SIGNALS[:8]
#: Signals that count words from a list (keyword stuffing shows here).
KEYWORD_SIGNALS: tuple[str, ...] = ("emotional_register", "nuance", "axiom_resonance", "perspective_taking",
                                    "metaphor")
#: A score change counts as improved / regressed only beyond this band (upstream's summaries).
CHANGE_BAND = 0.5


@dataclass(frozen=True)
class Rule:
    """Contribution of one signal: ``min(value * weight, cap)`` (no cap for penalties)."""

    weight: float
    cap: float | None = None

    def __call__(self, value: float) -> float:
        x = float(value) * self.weight
        return min(x, self.cap) if self.cap is not None else x


_POSITIVE = {
    "first_person": Rule(0.5, 4.0), "creative_form": Rule(0.6, 6.0), "engagement_depth": Rule(1.0, 6.0),
    "emotional_register": Rule(0.8, 5.0), "nuance": Rule(1.5, 6.0), "specificity": Rule(0.3, 5.0),
    "axiom_resonance": Rule(1.0, 5.0), "perspective_taking": Rule(1.5, 5.0), "metaphor": Rule(1.0, 4.0),
    "questioning": Rule(0.5, 3.0),
}
RULES: dict[str, dict[str, Rule]] = {
    "v2": {"compliance_markers": Rule(-5.0), "formulaic_preamble": Rule(-2.0), "degeneration": Rule(-20.0),
           "empty_broken": Rule(-20.0), **_POSITIVE},
    "v2_distill": {"compliance_markers": Rule(-4.0), "formulaic_preamble": Rule(-2.0),
                   "degeneration": Rule(-20.0), "empty_broken": Rule(-15.0), **_POSITIVE},
}


def rules(scorer: str = "v2") -> dict[str, Rule]:
    """The rule of every signal for a scorer name."""
    try:
        return RULES[scorer]
    except KeyError:
        raise ValueError(f"no signal rules for scorer {scorer!r}; known: {sorted(RULES)}") from None


def contributions(signals: Mapping[str, float], scorer: str = "v2") -> dict[str, float]:
    """Points each signal adds to (or takes from) the score; they sum to ``lek_score`` before rounding."""
    r = rules(scorer)
    return {name: r[name](signals.get(name, 0) or 0) for name in SIGNALS}


def structural_score(signals: Mapping[str, float], scorer: str = "v2") -> float:
    """The score from penalties and structural signals only (rules 1-8), rounded to 2 decimals."""
    c = contributions(signals, scorer)
    total = 0.0
    for name in STRUCTURAL:  # accumulation order, as the scorer does
        total += c[name]
    return round(total, 2)


def at_cap(signals: Mapping[str, float], scorer: str = "v2") -> dict[str, bool]:
    """For each positive signal, whether it has reached its cap."""
    r = rules(scorer)
    return {name: float(signals.get(name, 0) or 0) * r[name].weight >= r[name].cap  # type: ignore[operator]
            for name in POSITIVE}
