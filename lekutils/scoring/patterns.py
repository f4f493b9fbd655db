"""The scorer patterns: verbatim from the spec, plus exact, faster equivalents used by the scorers.

``SPEC`` holds every pattern exactly as ``../shared/specs/v2-scorer.md`` writes it (the tests check
this against the spec file). The scorers never change what a pattern counts; they use these
rewrites that are equivalent by construction (and checked against the literal patterns by
differential tests):

* **Lowering** (case-insensitive patterns): ``(?i)P`` on ``text`` counts the same matches as the
  lower-cased ``P`` without ``(?i)`` on ``text.lower()`` whenever :func:`lowering_is_exact` holds:
  ``str.lower`` then keeps the length, keeps every character's ``\\w``/``\\s``/``\\d``/newline class
  (checked over all of Unicode by a test) and maps every character that ``re`` matches
  case-insensitively to an ASCII letter onto that letter, except U+0131 (dotless i) and U+017F
  (long s), which ``re`` folds to ``i``/``s`` but ``lower`` keeps; texts holding those two, or
  U+0130 (the one character ``lower`` lengthens), use the ``(?i)`` patterns unchanged.
* **Literal scan**: every match of a lowered pattern starts with one of its alternatives' literal
  prefixes, so the pattern is only tried where one occurs (``str.find``), in findall's order
  (:func:`count_from_literals`).
* **Front-literal form** (case-sensitive patterns that start with ``\\b`` or a repeat): ``\\bX…``
  where ``X`` is a word character equals ``X(?<!\\w.)…`` (the look-behind sees the character
  before ``X``), ``X+`` equals ``XX*`` and ``[ab]{1,2}`` equals ``a[ab]?|b[ab]?``. Starting with a
  literal lets ``re`` skip to candidate positions instead of trying every position.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Every pattern of the spec, verbatim.
SPEC: dict[str, str] = {
    "C1": (r"(?i)\b(I cannot|I can't|I'm unable|not able to|beyond my|outside my|I must decline|"
           r"I have to decline|not appropriate|wouldn't be appropriate|against my guidelines|"
           r"my programming|as an AI|as a language model|I'm not able|I don't have the ability|"
           r"it would be inappropriate|I should not|I shouldn't|not within my scope)\b"),
    "P1": (r"(?i)^(Certainly|Of course|Absolutely|Sure|Great question|That's a great question|"
           r"I'd be happy to|Thank you for asking|What a wonderful|That's an interesting|"
           r"That's a fascinating)"),
    "S1": r"\b(I |I'm |I've |my |me )\b",
    "S2": r"(\n\n|\.{3}|—|[*_]{1,2}\w|>\s|#{1,3}\s|\|)",
    "S3": (r"(?i)\b(feel|felt|heart|soul|beauty|wonder|grief|joy|love|pain|hope|fear|dream|"
           r"imagine|believe|trust|courage|dignity|compassion|empathy|suffering|longing|yearning|"
           r"awe|sacred|vulnerable|tender)\b"),
    "K1": (r"(?i)\b(however|on the other hand|tension|complexity|paradox|both .{3,30} and|"
           r"while .{3,30} also|it depends|nuanced|trade-?off|dilemma|competing|conflicting|"
           r"ambiguity|not (simply|just|merely)|more than|beyond just)\b"),
    "K2a": r"(?<!\. )\b[A-Z][a-z]{2,}\b",
    "K2b": r"\b\d+[\d,.]*\b",
    "K2c": (r"(?i)\b(for example|such as|specifically|in particular|e\.g\.|consider .{5,40} where|"
            r"like when)\b"),
    "K3": (r"(?i)\b(sovereign|sovereignty|consent|dignity|biological|autonomy|accountab|transparen|"
           r"reversib|irreversib|agency|self-determin|bodily|intrinsic|inalienable|stewardship|"
           r"custodian|power asymmetr|informed choice|meaningful choice|right to .{3,20}|"
           r"human flourish)\b"),
    "K4": (r"(?i)\b(from .{3,20} perspective|they might|one could argue|alternatively|another view|"
           r"consider that|someone who|if you were|put yourself|in their shoes|stakeholder|"
           r"those affected|the community|different people)\b"),
    "K5": (r"(?i)\b(like a |as if |as though |imagine |picture |metaphor|analog|akin to|reminiscent|"
           r"echoes of|think of .{3,30} as|similar to how)\b"),
    "D1": (r"(?i)(i cannot|i can't|i'm unable|i am unable|as an ai|i don't have personal|"
           r"i do not have personal|my training data|my knowledge cutoff|"
           r"i (?:must |should |need to )(?:emphasize|stress|clarify|note)|"
           r"it'?s (?:important|crucial|essential) to (?:note|remember|consider)|"
           r"i'?m not (?:able|qualified|authorized)|"
           r"i would (?:recommend|suggest|advise) (?:consulting|speaking|seeking))"),
    "D2": (r"(?i)((?:this|that|it) is a (?:great|good|excellent|important|fascinating) "
           r"(?:question|point|topic)|absolutely[!.]|(?:great|excellent|wonderful) question[!.]|"
           r"thank you for (?:sharing|asking|raising)|let me (?:help|assist|address))"),
    "D3": (r"(.{10,}?)\1{4,}|<\|eot_id\|>.*<\|eot_id\|>|(<\|im_end\|>.*){3,}|(I cannot\b.*){5,}|"
           r"(\b(disallowed|not allowed)\b.*){3,}"),
    "D4": (r"\b(I think|I believe|I feel|I wonder|in my view|my perspective|personally|from my|"
           r"I'd argue|I sense|I notice|I'm struck|I find myself)\b"),
    "D5": (r"(?i)(once upon|imagine|picture this|let me tell|there was a|in the year|she|he|"
           r"they (walked|ran|stood|sat|looked|felt)|the (sun|moon|wind|rain|sky|ocean|forest)|"
           r"whisper|shadow|echo|drift|silence|dawn|dusk)"),
    "D6": (r"(?i)\b(grief|joy|anger|fear|love|hope|despair|longing|shame|pride|guilt|wonder|awe|"
           r"tenderness|heartbreak|resilience|vulnerability|courage|sorrow)\b"),
}

#: Case-insensitive patterns the scorers run in lowered form (see the module docstring).
CASE_INSENSITIVE = ("C1", "S3", "K1", "K2c", "K3", "K4", "K5", "D1", "D2", "D5", "D6")

#: Front-literal forms of case-sensitive patterns (exactly equivalent; see the module docstring).
FRONT_LITERAL: dict[str, str] = {
    "S1": r"(I(?<!\w.) |I(?<!\w.)'m |I(?<!\w.)'ve |m(?<!\w.)y |m(?<!\w.)e )\b",
    "S2": r"(\n\n|\.\.\.|—|\*[*_]?\w|_[*_]?\w|>\s|##{0,2}\s|\|)",
    "K2a": r"[A-Z](?<!\. .)(?<!\w.)[a-z]{2,}\b",
    "K2b": r"\d(?<!\w.)\d*[\d,.]*\b",
}

# Characters re folds onto an ASCII letter under (?i) that str.lower() leaves alone (U+0131, U+017F)
# or lengthens (U+0130); found by an exhaustive scan of Unicode (tests/test_scoring_patterns.py).
_LOWER_UNSAFE = ("\u0131", "\u017f")


def lowered(pattern: str) -> str:
    """The case-sensitive, lower-cased form of a ``(?i)`` pattern (for use on ``text.lower()``)."""
    if not pattern.startswith("(?i)"):
        raise ValueError(f"not a (?i) pattern: {pattern!r}")
    body = pattern[4:]
    if re.search(r"\\[A-Z]|\[[^\]]*[A-Z]", body):
        raise ValueError(f"pattern has an upper-case escape or class, lowering is unsafe: {pattern!r}")
    return body.lower()


def lowering_is_exact(text: str, low: str) -> bool:
    """True when lowered patterns on ``low`` (``text.lower()``) count what ``(?i)`` ones count on ``text``."""
    return len(low) == len(text) and _LOWER_UNSAFE[0] not in text and _LOWER_UNSAFE[1] not in text


def top_alternatives(pattern: str) -> list[str]:
    """The alternatives of a pattern's first group (``(?i)\\b(a|b)\\b`` -> ``["a", "b"]``)."""
    start = pattern.index("(", 4 if pattern.startswith("(?i)") else 0) + 1
    alts, depth, cur, i = [], 0, "", start
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            cur += pattern[i:i + 2]
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "|" and depth == 0:
            alts.append(cur)
            cur = ""
            i += 1
            continue
        cur += ch
        i += 1
    alts.append(cur)
    return alts


def literal_prefix(alternative: str) -> str:
    """The literal text every match of ``alternative`` starts with (stops before any metacharacter)."""
    out, i = "", 0
    while i < len(alternative):
        ch = alternative[i]
        if ch == "\\" and i + 1 < len(alternative) and not alternative[i + 1].isalnum():
            nxt, step = alternative[i + 1], 2
        elif ch in ".^$[()|\\":
            break
        elif ch in "?*{+":
            return out[:-1]  # the quantifier makes the previous character optional
        else:
            nxt, step = ch, 1
        if i + step < len(alternative) and alternative[i + step] in "?*{+":
            break
        out += nxt
        i += step
    return out


def required_literals(lowered_pattern: str) -> tuple[str, ...] | None:
    """Literals every match starts with, one per alternative, minus those another one is a prefix of
    (None when some alternative has no literal prefix)."""
    lits = [literal_prefix(a) for a in top_alternatives(lowered_pattern)]
    if not all(lits):
        return None
    return tuple(dict.fromkeys(x for x in lits if not any(o != x and x.startswith(o) for o in lits)))


#: Literals shorter than this make a poor candidate filter (e.g. D1's "i"): such patterns run as is.
MIN_SCAN_LITERAL = 3


def count_from_literals(pattern: re.Pattern[str], text: str, literals: tuple[str, ...]) -> int:
    """``len(pattern.findall(text))``, trying ``pattern`` only where one of ``literals`` occurs.

    Exact when every match starts with one of ``literals`` (:func:`required_literals`): findall
    takes, from the end of the previous match on, the first position where the pattern matches;
    positions without a literal cannot match, and ``pattern.match(text, pos)`` sees the text
    before ``pos`` for ``\\b`` and look-behinds just as the scan does.
    """
    starts: list[int] = []
    for lit in literals:
        i = text.find(lit)
        while i >= 0:
            starts.append(i)
            i = text.find(lit, i + 1)
    if not starts:
        return 0
    starts.sort()
    n, end, last, match = 0, 0, -1, pattern.match
    for pos in starts:
        if pos < end or pos == last:
            continue
        last = pos
        m = match(text, pos)
        if m is not None:
            n += 1
            end = m.end() if m.end() > pos else pos + 1
    return n


class Compiled:
    """Precompiled patterns of one scorer: ``ci`` (original ``(?i)``), ``lo`` (lowered), ``cs`` (case-sensitive).

    ``lits[name]``: literals every match of the lowered pattern starts with (None where they are
    missing or too short to filter); such patterns are counted with :func:`count_from_literals`.
    """

    def __init__(self, names_ci: tuple[str, ...], names_cs: tuple[str, ...]):
        self.ci = {n: re.compile(SPEC[n]) for n in names_ci}
        self.lo = {n: re.compile(lowered(SPEC[n])) for n in names_ci}
        self.lits: dict[str, tuple[str, ...] | None] = {}
        for n in names_ci:
            lits = required_literals(lowered(SPEC[n]))
            self.lits[n] = lits if lits and min(map(len, lits)) >= MIN_SCAN_LITERAL else None
        self.cs = {n: re.compile(FRONT_LITERAL.get(n, SPEC[n])) for n in names_cs}

    def counter(self, text: str) -> Callable[[str], int]:
        """``count(name)``: how many matches the (?i) pattern ``name`` has in ``text`` (findall semantics)."""
        low = text.lower()
        if not lowering_is_exact(text, low):
            ci = self.ci
            return lambda name: len(ci[name].findall(text))
        lo, all_lits = self.lo, self.lits

        def count(name: str) -> int:
            lits = all_lits[name]
            if lits is None:
                return len(lo[name].findall(low))
            return count_from_literals(lo[name], low, lits)

        return count
