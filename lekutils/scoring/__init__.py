"""Scoring: the registry of named scorers (``v2`` canonical, ``v2_distill``), batch scoring, re-scoring.

``score(text)`` returns the 14 signals (in accumulation order) and ``lek_score``, exactly as the
spec ``../shared/specs/v2-scorer.md`` defines them; see ``docs/scoring.md``.
"""

from __future__ import annotations

from lekutils.scoring.batch import score_many
from lekutils.scoring.registry import (
    KEYS,
    Scorer,
    available_scorers,
    get_scorer,
    is_v2_heuristic,
    mean_score,
    score,
)
from lekutils.scoring.v2 import SIGNALS

__all__ = [
    "KEYS", "SIGNALS", "Scorer", "available_scorers", "get_scorer", "is_v2_heuristic", "mean_score",
    "score", "score_many",
]
