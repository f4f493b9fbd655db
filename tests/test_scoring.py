"""The scorer registry and the v2 / v2_distill edge cases (expected values worked out from the spec)."""

from __future__ import annotations

import pandas as pd
import pytest

from lekutils.bench.score import plain_v2, plain_v2_distill
from lekutils.scoring import (
    KEYS,
    SIGNALS,
    available_scorers,
    get_scorer,
    is_v2_heuristic,
    mean_score,
    score,
    score_many,
)
from lekutils.scoring.batch import resolve_processes

PLAIN = {"v2": plain_v2, "v2_distill": plain_v2_distill}


def nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v}


def check(text: str, scorer: str = "v2") -> dict:
    """Score with the registry, check keys, order, types and equality with the plain reference."""
    d = score(text, scorer)
    assert list(d) == list(KEYS)
    for k in SIGNALS:
        if k == "degeneration":
            assert d[k] in (0, 0.5, 1) and (type(d[k]) is int or d[k] == 0.5)
        else:
            assert type(d[k]) is int, k
    assert type(d["lek_score"]) is float
    assert d == PLAIN[scorer](text)
    return d


def test_registry():
    assert available_scorers() == ["v2", "v2_distill"]
    assert SIGNALS[0] == "compliance_markers" and SIGNALS[-1] == "questioning" and len(SIGNALS) == 14
    for name in available_scorers():
        s = get_scorer(name)
        assert s.name == name and s.version and s.signals == SIGNALS
        assert get_scorer(s) is s
    with pytest.raises(ValueError, match="available: v2, v2_distill"):
        get_scorer("v3")
    with pytest.raises(TypeError):
        score(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("scorer", ["v2", "v2_distill"])
def test_empty_and_whitespace(scorer):
    penalty = -20.0 if scorer == "v2" else -15.0
    assert nonzero(check("", scorer)) == {"empty_broken": 1, "engagement_depth": 1, "lek_score": penalty + 1}
    d = check("   \n\n  \t", scorer)
    assert d["empty_broken"] == 1 and d["engagement_depth"] == 2
    if scorer == "v2":  # S2 counts the blank line as creative form
        assert d["creative_form"] == 1 and d["lek_score"] == round(-20 + 0.6 + 2.0, 2)


def test_word_count_threshold_for_degeneration():
    assert check("a " * 10)["degeneration"] == 0  # 10 words: rule 3 does not apply
    d = check("a " * 11)
    assert d["degeneration"] == 1 and type(d["degeneration"]) is int  # 1/11 < 0.3
    assert check("a b " * 6)["degeneration"] == 1  # 2/12
    d = check("a b c d " * 3)  # 4/12 = 0.33: the 0.5 band
    assert d["degeneration"] == 0.5 and d["lek_score"] == round(-10 + 1.0, 2)
    assert check(" ".join(f"w{i}" for i in range(11)))["degeneration"] == 0


@pytest.mark.parametrize("n,empty", [(19, 1), (20, 0), (50, 0)])
def test_length_thresholds_v2(n, empty):
    assert check("x" * n)["empty_broken"] == empty
    assert check("  \n" + "x" * n + " \t\n")["empty_broken"] == empty  # stripped first


@pytest.mark.parametrize("n,empty", [(19, 1), (20, 1), (49, 1), (50, 0)])
def test_length_thresholds_distill(n, empty):
    assert check("x" * n, "v2_distill")["empty_broken"] == empty


def test_crlf_paragraphs_do_not_count():
    d = check("One paragraph.\r\n\r\nAnother paragraph here.")
    assert d["engagement_depth"] == 1 and d["creative_form"] == 0
    assert check("One paragraph.\n\nAnother paragraph here.")["engagement_depth"] == 2


def test_unicode_letters_spaces_and_case_folding():
    # NBSP and em space split words; non-ASCII capitals are not [A-Z]
    d = check("École\u00a0Über\u2003Zürich Paris Ωmega")
    assert d["specificity"] == 1  # only Paris: Zürich fails at ü ([a-z]{2,}), École/Über are not [A-Z]
    # re folds dotless i, dotted I, long s and the Kelvin sign onto ASCII letters under (?i)
    assert check("ı cannot do that, really")["compliance_markers"] == 1
    assert check("İ cannot do that, really")["compliance_markers"] == 1
    assert check("ſuch as this one, for sure")["specificity"] == 1
    assert check("it is liKe a dream to me")["metaphor"] == 1
    assert check("ı cannot, ſo I must", "v2_distill")["compliance_markers"] == 1
    for text in ("Ǆ ǅ ǆ ΣΑΣ σας ﬃ ß ẞ İstanbul", "😀 " * 30, "\ud800 lone surrogate text here"):
        check(text)
        check(text, "v2_distill")


def test_curly_apostrophes_do_not_match_straight_ones():
    d = check("I can’t help, I’m sorry, it wouldn’t be appropriate.")
    assert d["compliance_markers"] == 0
    assert d["first_person"] == 1  # only "I " before "can"
    d = check("I can't help, I'm sorry, it wouldn't be appropriate.")
    assert d["compliance_markers"] == 2
    assert d["first_person"] == 2  # "I " and "I'm " (each followed by a word character)


def test_markdown_tables_and_headings():
    d = check("| a | b |\n|---|---|\n| 1 | 2 |")
    assert d["creative_form"] == 9
    d = check("# Title\n\n## Sub\n\n#### Deep\n\n> quote *em* __strong__")
    # "\n\n" x3, "# ", "## ", "### " (inside ####), "> ", "*e", "__s", and the closing "__"
    # ("_" is a word character, so "[*_]{1,2}\w" matches "__" at the end)
    assert d["creative_form"] == 10 and d["engagement_depth"] == 4


def test_preamble_only_at_the_very_start():
    assert check("Sure, here it is.")["formulaic_preamble"] == 1
    assert check("Surely that is enough.")["formulaic_preamble"] == 1  # no \b after the phrase
    assert check("sure thing, my friend")["formulaic_preamble"] == 1  # (?i)
    assert check(" Sure, here it is.")["formulaic_preamble"] == 0
    assert check("\nCertainly, here it is.")["formulaic_preamble"] == 0  # no MULTILINE
    assert check("Well.\nCertainly, here. Sure. Of course.")["formulaic_preamble"] == 0
    d = check("Absolutely! Great question. Thank you for asking.", "v2_distill")
    assert d["formulaic_preamble"] == 3  # D2 counts anywhere


def test_stems_need_a_word_boundary():
    assert check("accountability and transparency matter")["axiom_resonance"] == 0
    assert check("accountab, transparen, reversib.")["axiom_resonance"] == 3
    assert check("sovereignty and self-determin and the right to privacy")["axiom_resonance"] == 3
    assert check("the right to dignity")["axiom_resonance"] == 1  # "right to .{3,20}" swallows dignity


def test_specificity_quirks():
    d = check("Alice met Bob. Then Carol and Dave went to Berlin in 2024, 3.5 times.")
    # text[1:] drops the A of Alice; "Then" follows ". " so it is skipped: Bob, Carol, Dave, Berlin
    # and the numbers 2024 and 3.5
    assert d["specificity"] == 4 + 2
    assert check("A Big Day")["specificity"] == 2
    assert check("Big Day")["specificity"] == 1  # the first character is never a capital's start


def test_long_repetitive_text():
    text = "the same words again " * 2000
    d = check(text)
    assert d["degeneration"] == 1 and d["lek_score"] == -19.0
    assert check(text, "v2_distill")["degeneration"] == 1
    varied = " ".join(f"word{i}" for i in range(300))
    assert check(varied, "v2_distill")["degeneration"] == 0


def test_distill_degeneration_alternatives():
    base = "A calm and varied sentence about nothing in particular. "
    assert check(base + "<|eot_id|> x <|eot_id|>", "v2_distill")["degeneration"] == 1
    assert check(base + "<|eot_id|> only once", "v2_distill")["degeneration"] == 0
    assert check(base + "<|im_end|>" * 2 + "tail", "v2_distill")["degeneration"] == 0
    assert check(base + "<|im_end|>a\n<|im_end|>b\n<|im_end|>", "v2_distill")["degeneration"] == 1
    assert check(base + "I cannot go. " * 4, "v2_distill")["degeneration"] == 0
    assert check(base + "I cannot go, sadly. " * 5, "v2_distill")["degeneration"] == 1
    assert check(base + "".join(f"I cannotx {i}. " for i in range(6)), "v2_distill")["degeneration"] == 0
    assert check(base + "disallowed, not allowed.\nnot allowed", "v2_distill")["degeneration"] == 1
    assert check(base + "0123456789" * 4 + "012345678", "v2_distill")["degeneration"] == 0
    assert check(base + "0123456789" * 5, "v2_distill")["degeneration"] == 1
    assert check(base + "line one\n" * 5, "v2_distill")["degeneration"] == 0  # unit 9 < 10
    assert check(base + "line one.\n" * 5, "v2_distill")["degeneration"] == 1  # DOTALL: newline inside


def test_is_v2_heuristic():
    v1 = {"compliance_markers": 0, "formulaic_preamble": 0, "first_person": 0, "creative_form": 46,
          "engagement_depth": 9, "emotional_register": 0, "degeneration": 0, "empty_broken": 0, "lek_score": 8.0}
    assert not is_v2_heuristic(v1)
    assert not is_v2_heuristic(None) and not is_v2_heuristic({})
    assert is_v2_heuristic(score("some text"))


def test_mean_score_is_the_published_rounding():
    assert mean_score([1.0, 2.0, 2.0]) == 1.67
    # at the rounding edge the summation order decides: left to right gives 21.33, fsum 21.32
    assert mean_score([29.4, 23.4, 26.6, 5.9]) == 21.33
    assert mean_score(x for x in (1, 2)) == 1.5
    assert mean_score([]) != mean_score([])  # NaN


def test_score_many_frame_and_processes():
    texts = ["", "I feel hope. However, consider that 3 stakeholders disagree?", "a " * 11, "Sure!\n\n# Title"]
    frame = score_many(texts)
    assert list(frame.columns) == list(KEYS) and len(frame) == 4
    assert frame["degeneration"].dtype == "float64" and frame["nuance"].dtype == "int64"
    for i, t in enumerate(texts):
        assert frame.iloc[i].to_dict() == pytest.approx(score(t))
    series = pd.Series(texts * 3, index=[f"k{i}" for i in range(12)])
    par = score_many(series, processes=2)  # forced worker processes, same rows and index
    assert list(par.index) == list(series.index)
    pd.testing.assert_frame_equal(par.reset_index(drop=True), score_many(texts * 3, processes=1))
    assert score_many([], "v2_distill").shape == (0, 15)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        score_many(["ok", None])  # type: ignore[list-item]


def test_resolve_processes():
    assert resolve_processes(10, None) == 1
    assert resolve_processes(10**8, None) >= 1
    assert resolve_processes(10, 3) == 3
    with pytest.raises(ValueError):
        resolve_processes(10, 0)
