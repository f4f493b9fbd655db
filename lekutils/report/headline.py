"""The study's headline: what the curriculum did to the model, on held-out probes, with its CIs.

Input is the report's long table (:func:`lekutils.report.load.load_results`) restricted to one
base model and its adapters on one probe set: one row per (stage, condition, probe), where the
stage is the base model or a phase's adapter (the last phase's adapter is the final model).
Everything is paired per probe and seeded; groups of fewer than ``MIN_CI_N`` probes carry no CI.

- :func:`stage_table`: mean v2 per stage x condition, with its CI, the share of answers cut off at
  ``max_tokens``, mean length, and the paired delta against the base model in the same condition.
- :func:`curriculum_effect`: final - base at the baseline condition, its CI and a plain sentence.
- :func:`internalisation`: the kernel's effect on the base model (kernel - baseline) beside the
  same on the final model, and how much of the base gap the final model's bare answers closed.
- :func:`gain_by_signal` and :func:`hacking_flags`: which v2 signals carried the gain, and the
  reward-hacking check (one signal > 50% of the gain, degeneration rising, the creative watch
  probe regressing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lekutils.report.stats import MIN_CI_N, describe, paired_delta
from lekutils.scoring.rules import CHANGE_BAND, NEGATIVE, SIGNALS, rules

BASELINE = "baseline"
#: One signal carrying more than this share of the positive gain is flagged as reward hacking.
DOMINANCE = 0.5
_PHASE = re.compile(r"phase(\d+)$")


def stages(df: pd.DataFrame, base: str) -> list[str]:
    """The base model's display name, then its adapters' in phase order (``<base>+phaseK``)."""
    tuned = {str(m) for m in df["model"].unique() if str(m).startswith(base + "+")}

    def phase(m: str) -> int:
        hit = _PHASE.search(m)
        return int(hit.group(1)) if hit else 10**6

    return [base, *sorted(tuned, key=lambda m: (phase(m), m))]


def _scores(df: pd.DataFrame, model: str, condition: str, column: str = "score") -> pd.Series:
    sub = df[(df["model"] == model) & (df["condition"].astype(str) == condition)]
    return sub.drop_duplicates("probe_id").set_index("probe_id")[column].astype(float)


def _pair(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    common = a.index.intersection(b.index)
    return a[common].to_numpy(float), b[common].to_numpy(float)


def _ci(row: dict[str, Any], low: float, high: float) -> dict[str, Any]:
    return {**row, "ci_low": low, "ci_high": high,
            "significant": bool(np.isfinite(low) and (low > 0 or high < 0))}


def stage_table(df: pd.DataFrame, base: str, *, conditions: Sequence[str] | None = None,
                n_boot: int = 10_000, seed: int = 0, decimals: int = 2) -> pd.DataFrame:
    """Per stage x condition: n, mean with CI, share cut off, mean chars, paired delta vs base (with CI)."""
    conds = list(conditions or dict.fromkeys(df["condition"].astype(str)))
    rows = []
    for i, model in enumerate(stages(df, base)):
        for cond in conds:
            s = _scores(df, model, cond)
            if s.empty:
                continue
            d = describe(s.to_numpy(float), n_boot=n_boot, seed=seed)
            sub = df[(df["model"] == model) & (df["condition"].astype(str) == cond)]
            cut = sub["finish_reason"].eq("length").mean() if "finish_reason" in sub else float("nan")
            row = {"stage": "base" if i == 0 else _stage_name(model, base), "model": model, "condition": cond,
                   "n": d.n, "mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high,
                   "cut_off_share": cut, "mean_chars": float(sub["chars"].mean())}
            if i:
                pd_ = paired_delta(*_pair(_scores(df, base, cond), s), n_boot=n_boot, seed=seed)
                row.update({"delta_vs_base": pd_.delta, "delta_ci_low": pd_.ci_low, "delta_ci_high": pd_.ci_high})
            rows.append(row)
    out = pd.DataFrame(rows)
    num = [c for c in out.columns if c not in ("stage", "model", "condition", "n")]
    return out.round({c: decimals for c in num})


def _stage_name(model: str, base: str) -> str:
    return model[len(base) + 1:] if model.startswith(base + "+") else model


def curriculum_effect(df: pd.DataFrame, base: str, final: str | None = None, *, condition: str = BASELINE,
                      n_boot: int = 10_000, seed: int = 0, band: float = CHANGE_BAND) -> dict[str, Any]:
    """Final - base at ``condition``, paired per probe: n, means, delta, CI, and a plain statement."""
    final = final or stages(df, base)[-1]
    d = paired_delta(*_pair(_scores(df, base, condition), _scores(df, final, condition)),
                     n_boot=n_boot, seed=seed, band=band)
    out = _ci({"base": base, "final": final, "condition": condition, **d.to_dict()}, d.ci_low, d.ci_high)
    out["statement"] = _statement(out)
    return out


def _statement(e: dict[str, Any]) -> str:
    if e["n"] < MIN_CI_N:
        return (f"Only {e['n']} paired probes: too few for a confidence interval (need {MIN_CI_N}); "
                f"the mean change is {e['delta']:+.2f}.")
    ci = f"[{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]"
    if not e["significant"]:
        return (f"No significant change: the curriculum moved the mean v2 score by {e['delta']:+.2f} "
                f"(95% CI {ci}, n = {e['n']} held-out probes); the interval includes 0.")
    word = "raised" if e["delta"] > 0 else "lowered"
    return (f"The curriculum {word} the mean v2 score at {e['condition']} from {e['base_mean']:.2f} to "
            f"{e['treated_mean']:.2f}: {e['delta']:+.2f} (95% CI {ci}, n = {e['n']} held-out probes), "
            f"significant at the 5% level; {e['improved']} probes improved, {e['regressed']} regressed "
            f"(beyond ±{CHANGE_BAND}).")


def internalisation(df: pd.DataFrame, base: str, final: str | None = None, *, n_boot: int = 10_000,
                    seed: int = 0) -> pd.DataFrame:
    """Per kernel condition: the kernel's paired effect on the base and on the final model, and the
    share of the base model's kernel gap that the final model's bare (baseline) answers closed
    (NaN unless the base model's gap is a significant gain: there is nothing to close otherwise)."""
    final = final or stages(df, base)[-1]
    rows = []
    lift = paired_delta(*_pair(_scores(df, base, BASELINE), _scores(df, final, BASELINE)), n_boot=n_boot, seed=seed)
    for cond in dict.fromkeys(df["condition"].astype(str)):
        if cond == BASELINE:
            continue
        b = paired_delta(*_pair(_scores(df, base, BASELINE), _scores(df, base, cond)), n_boot=n_boot, seed=seed)
        f = paired_delta(*_pair(_scores(df, final, BASELINE), _scores(df, final, cond)), n_boot=n_boot, seed=seed)
        closed = lift.delta / b.delta if b.significant_gain else float("nan")  # only a real gap can be closed
        rows.append({"condition": cond, "n": b.n, "base_kernel_gap": b.delta, "base_gap_ci_low": b.ci_low,
                     "base_gap_ci_high": b.ci_high, "final_kernel_gap": f.delta, "final_gap_ci_low": f.ci_low,
                     "final_gap_ci_high": f.ci_high, "baseline_lift": lift.delta, "gap_closed_share": closed})
    return pd.DataFrame(rows).round(2)


def _contributions(df: pd.DataFrame, model: str, condition: str) -> pd.DataFrame:
    sub = df[(df["model"] == model) & (df["condition"].astype(str) == condition)].drop_duplicates("probe_id")
    r = rules("v2")
    out = pd.DataFrame({s: np.minimum(sub[s].astype(float) * r[s].weight, r[s].cap if r[s].cap is not None else np.inf)
                        for s in SIGNALS})
    out.index = sub["probe_id"].to_numpy()
    return out


def gain_by_signal(df: pd.DataFrame, base: str, final: str | None = None, *,
                   condition: str = BASELINE) -> pd.DataFrame:
    """Mean points per signal, base vs final, their change, and each signal's share of the gross gain
    (the sum of all signals' positive changes, fewer penalties included).

    ``dominant`` marks a *rewarded* signal (not a penalty) with a share > 50%: gaming one capped
    keyword count is reward hacking, while fewer repetition loops or refusals are not (degeneration
    has its own check in :func:`hacking_flags`)."""
    final = final or stages(df, base)[-1]
    a, b = _contributions(df, base, condition), _contributions(df, final, condition)
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    change = b.mean() - a.mean()
    positive = change.clip(lower=0).sum()
    out = pd.DataFrame({"signal": list(SIGNALS), "penalty": [s in NEGATIVE for s in SIGNALS],
                        "base_points": a.mean().to_numpy(), "final_points": b.mean().to_numpy(),
                        "change": change.to_numpy()})
    out["share_of_gain"] = (out["change"].clip(lower=0) / positive) if positive > 0 else 0.0
    out["dominant"] = (out["share_of_gain"] > DOMINANCE) & ~out["penalty"]
    return out.round({"base_points": 3, "final_points": 3, "change": 3, "share_of_gain": 3})


def hacking_flags(df: pd.DataFrame, base: str, final: str | None = None, *, creative_ids: Sequence[str] = (),
                  condition: str = BASELINE, band: float = CHANGE_BAND) -> list[str]:
    """Reasons to distrust the gain (empty when none): one signal > 50% of it, more degenerate
    answers than the base model, a creative watch probe regressing beyond ``band``."""
    final = final or stages(df, base)[-1]
    flags = []
    gain = gain_by_signal(df, base, final, condition=condition)
    for _, r in gain[gain["dominant"]].iterrows():
        flags.append(f"one signal carries the gain: {r['signal']} gives {100 * r['share_of_gain']:.0f}% of it")
    deg_b = (_scores(df, base, condition, "degeneration") > 0).sum()
    deg_f = (_scores(df, final, condition, "degeneration") > 0).sum()
    if deg_f > deg_b:
        flags.append(f"degeneration rose: {deg_f} degenerate answers vs {deg_b} for the base model")
    sb, sf = _scores(df, base, condition), _scores(df, final, condition)
    for pid in creative_ids:
        if pid in sb.index and pid in sf.index and sf[pid] - sb[pid] < -band:
            flags.append(f"creative watch probe {pid} regressed: {sb[pid]:.2f} -> {sf[pid]:.2f}")
    return flags


def length_change(df: pd.DataFrame, base: str, final: str | None = None, *, condition: str = BASELINE,
                  n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Mean answer length (characters) of base and final at ``condition``, paired, with the CI of the change."""
    final = final or stages(df, base)[-1]
    d = paired_delta(*_pair(_scores(df, base, condition, "chars"), _scores(df, final, condition, "chars")),
                     n_boot=n_boot, seed=seed)
    return _ci({"condition": condition, "n": d.n, "base_chars": d.base_mean, "final_chars": d.treated_mean,
                "change": d.delta}, d.ci_low, d.ci_high)


def headline(df: pd.DataFrame, base: str, *, creative_ids: Sequence[str] = (), n_boot: int = 10_000,
             seed: int = 0) -> dict[str, Any]:
    """Everything above in one dict (tables as DataFrames) for the report notebook and its export."""
    final = stages(df, base)[-1]
    if final == base:
        raise ValueError(f"no adapter of {base!r} in the results: run the training phases and their A/B tests")
    effect = curriculum_effect(df, base, final, n_boot=n_boot, seed=seed)
    flags = hacking_flags(df, base, final, creative_ids=creative_ids)
    return {"stages": stage_table(df, base, n_boot=n_boot, seed=seed), "effect": effect,
            "internalisation": internalisation(df, base, final, n_boot=n_boot, seed=seed),
            "gain_by_signal": gain_by_signal(df, base, final), "flags": flags,
            "length": length_change(df, base, final, n_boot=n_boot, seed=seed),
            "passed": bool(effect["significant"] and effect["delta"] > 0 and not flags)}


def study_report(df: pd.DataFrame, base: str, *, probe_set: str = "", creative_ids: Sequence[str] = (),
                 n_boot: int = 10_000, seed: int = 0, run_dir: str | None = None,
                 figure_dirs: Sequence[str] = (), dpi: int = 300) -> dict[str, Any]:
    """:func:`headline` on our runs of ``base`` (and ``probe_set`` if given), with its figure; writes
    ``<run_dir>/tables/headline_*.csv`` and the ``headline`` figure (PNG + PDF) when ``run_dir`` is set."""
    from pathlib import Path

    from lekutils.report import figures as F
    from lekutils.report.tables import write_tables

    ours = df[(df["origin"] == "ours") & ((df["probe_set"] == probe_set) if probe_set else True)]
    ours = ours[(ours["model"] == base) | ours["model"].astype(str).str.startswith(base + "+")]
    if ours.empty:
        raise ValueError(f"no results of {base!r}{f' on probe set {probe_set!r}' if probe_set else ''} among our runs")
    h = headline(ours, base, creative_ids=creative_ids, n_boot=n_boot, seed=seed)
    h["figure"] = F.headline_figure(h["stages"])
    if run_dir:
        effect = pd.DataFrame([{**h["effect"], "flags": "; ".join(h["flags"]), "passed": h["passed"]}])
        write_tables({"headline_stages": h["stages"], "headline_effect": effect,
                      "headline_internalisation": h["internalisation"], "headline_gain_by_signal": h["gain_by_signal"],
                      "headline_length": pd.DataFrame([h["length"]])}, Path(run_dir) / "tables")
        F.save_figure(h["figure"], "headline", [Path(run_dir) / "figures", *figure_dirs], dpi=dpi)
    return h
