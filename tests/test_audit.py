"""Reward-hacking audit: score decomposition, caps, keyword density, single-signal flags."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest

from lekutils.report.audit import (
    audit_frame,
    cap_rates,
    flagged,
    kept_vs_rejected,
    plot_audit,
    score_length_correlation,
)
from lekutils.scoring.rules import POSITIVE, SIGNALS, at_cap, contributions, structural_score

ZERO = dict.fromkeys(SIGNALS, 0)


def rec(i: int, kept: bool, words: int, **sig: float) -> dict:
    signals = {**ZERO, **sig}
    c = contributions(signals)
    return {"prompt_id": f"P{i}", "sample_idx": 0, "kept": kept, "scorer": "v2", "signals": signals,
            "lek_score": round(sum(c.values()), 2), "response": " ".join(["word"] * words)}


def test_contributions_follow_the_spec_weights_and_caps() -> None:
    sig = {**ZERO, "compliance_markers": 1, "degeneration": 0.5, "nuance": 10, "specificity": 3,
           "questioning": 2, "engagement_depth": 4}
    c = contributions(sig)
    assert (c["compliance_markers"], c["degeneration"], c["nuance"]) == (-5.0, -10.0, 6.0)
    assert c["specificity"] == pytest.approx(0.9) and c["questioning"] == 1.0 and c["engagement_depth"] == 4.0
    assert contributions(sig, "v2_distill")["compliance_markers"] == -4.0
    assert contributions({**ZERO, "empty_broken": 1}, "v2_distill")["empty_broken"] == -15.0
    caps = at_cap(sig)
    assert caps["nuance"] and not caps["specificity"] and set(caps) == set(POSITIVE)
    # structural = penalties + signals 5-8 only
    assert structural_score(sig) == -11.0
    with pytest.raises(ValueError, match="no signal rules"):
        contributions(sig, "v9")


def test_contributions_sum_to_the_real_scorer() -> None:
    scoring = pytest.importorskip("lekutils.scoring")
    texts = ["However, I believe dignity and consent matter? For example, the community might disagree.\n\n"
             "Imagine a river... " * 3, "Sure. I cannot help.", "Tension, nuance, autonomy " * 40]
    for name in ("v2", "v2_distill"):
        for t in texts:
            s = scoring.score(t, name)
            sig = {k: v for k, v in s.items() if k != "lek_score"}
            assert set(sig) == set(SIGNALS)
            assert round(sum(contributions(sig, name).values()), 2) == pytest.approx(s["lek_score"], abs=0.011)


def test_audit_frame_flags_single_signal_and_density() -> None:
    records = [
        rec(1, True, 100, nuance=20),                                  # everything from nuance
        rec(2, True, 200, nuance=2, engagement_depth=3, specificity=10, questioning=2, axiom_resonance=2),
        rec(3, False, 50, engagement_depth=1),
        rec(4, False, 30, compliance_markers=2, first_person=1),
    ]
    f = audit_frame(records)
    assert list(f["flag_single_signal"]) == [True, False, True, True]
    assert f.loc[0, "dominant_signal"] == "nuance" and f.loc[0, "dominant_share"] == 1.0
    assert f.loc[0, "keyword_density"] == pytest.approx(20.0) and f.loc[1, "keyword_density"] == pytest.approx(2.0)
    assert f.loc[0, "caps_hit"] == 1 and f.loc[0, "cap_nuance"]
    assert list(flagged(f)["prompt_id"]) == ["P1"]  # only kept rows are flagged for review
    kv = kept_vs_rejected(f).set_index("group")
    assert kv.loc["kept", "n"] == 2 and kv.loc["rejected", "mean_words"] == 40.0
    rates = cap_rates(f).set_index("signal")
    assert rates.loc["nuance", "kept"] == 0.5 and rates.loc["nuance", "rejected"] == 0.0
    corr = score_length_correlation(f).set_index("group")
    assert corr.loc["all", "n"] == 4 and corr.loc["all", "spearman_score_words"] > 0
    fig = plot_audit(f, threshold=5.0)
    assert len(fig.axes) == 3


def test_audit_frame_empty() -> None:
    f = audit_frame([])
    assert f.empty and cap_rates(f).empty and kept_vs_rejected(f).empty
    assert len(plot_audit(f).axes) == 3
