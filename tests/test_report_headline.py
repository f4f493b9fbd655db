"""The study headline: stage table, curriculum effect, internalisation, gain by signal, hacking flags."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from lekutils.report import headline as H
from lekutils.report.figures import headline_figure
from lekutils.scoring.rules import SIGNALS, contributions

BASE = "Tiny"


def _row(model: str, cond: str, pid: str, sig: dict, chars: int = 400, finish: str = "stop") -> dict:
    full = {s: 0 for s in SIGNALS} | sig
    score = round(sum(contributions(full).values()), 2)
    return {"model": model, "condition": cond, "probe_id": pid, "score": score, **full, "chars": chars,
            "finish_reason": finish, "category": "c"}


def frame(n: int = 40, *, lift: dict | None = None, degenerate_final: int = 0) -> pd.DataFrame:
    """Base answers with a spread of signals; the kernel adds nuance; each phase adds ``lift`` (scaled)."""
    rng = np.random.default_rng(0)
    lift = lift or {"nuance": 2, "perspective_taking": 1, "axiom_resonance": 2, "specificity": 6}
    rows = []
    for k, model in enumerate([BASE, *(f"{BASE}+phase{i}" for i in range(5))]):
        for i in range(n):
            base_sig = {"engagement_depth": int(rng.integers(1, 4)), "specificity": int(rng.integers(0, 8)),
                        "first_person": int(rng.integers(0, 3))}
            grow = {s: base_sig.get(s, 0) + (v * k) // 5 for s, v in lift.items()}
            sig = {**base_sig, **grow}
            if model.endswith("phase4") and i < degenerate_final:
                sig["degeneration"] = 1
            for cond, extra in (("baseline", {}), ("json", {"nuance": sig.get("nuance", 0) + 2})):
                rows.append(_row(model, cond, f"P{i:02d}", {**sig, **extra}, chars=400 + 10 * k))
    return pd.DataFrame(rows)


def test_stage_table_and_effect_are_paired_with_cis() -> None:
    df = frame()
    assert H.stages(df, BASE) == [BASE, *(f"{BASE}+phase{i}" for i in range(5))]
    t = H.stage_table(df, BASE, n_boot=500)
    assert list(t["stage"].unique()) == ["base", "phase0", "phase1", "phase2", "phase3", "phase4"]
    assert (t["n"] == 40).all() and t["cut_off_share"].eq(0).all()
    final = t[(t["stage"] == "phase4") & (t["condition"] == "baseline")].iloc[0]
    assert final["delta_ci_low"] > 0 and final["mean_chars"] == 450
    e = H.curriculum_effect(df, BASE, n_boot=500)
    assert e["significant"] and e["delta"] == pytest.approx(final["delta_vs_base"], abs=0.01)
    assert "raised" in e["statement"] and "n = 40" in e["statement"]
    gap = H.internalisation(df, BASE, n_boot=500).iloc[0]
    assert gap["condition"] == "json" and gap["base_kernel_gap"] > 0 and gap["baseline_lift"] > 0


def test_no_ci_below_ten_probes_and_plain_statement() -> None:
    e = H.curriculum_effect(frame(6), BASE, n_boot=200)
    assert np.isnan(e["ci_low"]) and not e["significant"] and "too few" in e["statement"]


def test_gain_by_signal_flags_a_dominant_signal_degeneration_and_creative_regression() -> None:
    healthy = H.headline(frame(), BASE, creative_ids=["P00"], n_boot=300)
    assert healthy["flags"] == [] and healthy["passed"]
    assert abs(healthy["gain_by_signal"]["share_of_gain"].sum() - 1.0) < 0.01
    stuffed = frame(lift={"axiom_resonance": 5})
    flags = H.hacking_flags(stuffed, BASE)
    assert any("axiom_resonance" in f and "100%" in f for f in flags)
    degen = H.hacking_flags(frame(degenerate_final=3), BASE)
    assert any("degeneration rose: 3" in f for f in degen)
    # fewer repetition loops carrying the whole gain is not reward hacking: a penalty is never "dominant"
    cured = frame(lift={"engagement_depth": 0})
    cured.loc[(cured["model"] == BASE) & (cured["probe_id"] < "P10"), ["degeneration", "score"]] = [1, -20.0]
    gain = H.gain_by_signal(cured, BASE)
    assert gain.set_index("signal").loc["degeneration", "share_of_gain"] > 0.5
    assert not gain["dominant"].any() and not any("carries" in f for f in H.hacking_flags(cured, BASE))
    df = frame()
    watch = (df["model"] == f"{BASE}+phase4") & (df["probe_id"] == "P01") & (df["condition"] == "baseline")
    df.loc[watch, "score"] = -50.0
    assert any("P01 regressed" in f for f in H.hacking_flags(df, BASE, creative_ids=["P01"]))


def test_headline_figure_draws_both_panels(tmp_path) -> None:
    t = H.stage_table(frame(), BASE, n_boot=200)
    fig = headline_figure(t)
    assert len(fig.axes) == 2 and "n = 40" in fig.axes[0].get_title(loc="left")
    fig.savefig(tmp_path / "h.png")
    small = headline_figure(H.stage_table(frame(5), BASE, n_boot=200))  # no CIs: hollow markers only
    small.savefig(tmp_path / "headline_small.png")
    assert (tmp_path / "h.png").stat().st_size > 0 and (tmp_path / "headline_small.png").stat().st_size > 0


def test_study_report_uses_our_runs_only_and_writes_tables_and_figure(tmp_path) -> None:
    ours = frame().assign(origin="ours", probe_set="eval")
    other = frame().assign(origin="upstream", probe_set="eval", score=-99.0)  # never mixed in
    df = pd.concat([ours, other], ignore_index=True)
    h = H.study_report(df, BASE, probe_set="eval", n_boot=200, run_dir=str(tmp_path), figure_dirs=[tmp_path / "f"])
    assert h["passed"] and h["effect"]["base_mean"] > 0
    for name in ("headline_stages", "headline_effect", "headline_internalisation", "headline_gain_by_signal"):
        assert (tmp_path / "tables" / f"{name}.csv").exists()
    assert (tmp_path / "figures" / "headline.png").exists() and (tmp_path / "f" / "headline.pdf").exists()
    with pytest.raises(ValueError, match="no results"):
        H.study_report(df, "Other", n_boot=100)
