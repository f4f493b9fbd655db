"""Text similarity shared by extraction's near-duplicate filter and the prompt banks' diversity and
held-out checks: word shingles and exact Jaccard."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, k: int = 3) -> set[str]:
    """Word ``k``-shingles of the lower-cased text (punctuation ignored); short texts give one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
