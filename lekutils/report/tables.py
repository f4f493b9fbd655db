"""Report tables computed from the long table of :func:`lekutils.report.load.load_results`.

Every function takes the long table (one row per file x probe x condition) and returns a
DataFrame; :func:`write_tables` writes a dict of them as CSV (atomically) under ``tables/``.
Groups are (model, probe_set): the same model run on two probe sets (P20, P100) stays two rows.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lekutils.core.jsonl import atomic_write_csv
from lekutils.report.load import V2_SIGNALS, condition_order
from lekutils.report.stats import describe, paired_delta
from lekutils.scoring.rules import CHANGE_BAND, rules

GROUP = ["model", "probe_set"]
BASELINE = "baseline"

def _round(df: pd.DataFrame, decimals: int | None, cols: list[str]) -> pd.DataFrame:
    """Round with Python's ``round`` (as upstream's published averages), leaving NaN alone."""
    if decimals is None:
        return df
    for c in cols:
        if c in df:
            df[c] = [x if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), decimals)
                     for x in df[c]]
    return df


def _conds(df: pd.DataFrame) -> list[str]:
    cats = getattr(df["condition"], "cat", None)
    present = set(df["condition"].astype(str))
    order = list(cats.categories) if cats is not None else condition_order(df["condition"].astype(str))
    return [c for c in order if c in present]


def _first(s: pd.Series) -> object:
    return s.iloc[0] if len(s) else None


def summary_table(
    df: pd.DataFrame, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95, decimals: int | None = 2
) -> pd.DataFrame:
    """Per model x probe set x condition: n, mean with bootstrap CI, median, std, min, max, stored v1 mean."""
    rows = []
    for (model, pset, cond), g in df.groupby([*GROUP, "condition"], observed=True, sort=False):
        s = describe(g["score"].to_numpy(float), n_boot=n_boot, seed=seed, level=level)
        v1 = g["stored_v1"].dropna()
        rows.append({
            "model": model, "probe_set": pset, "condition": str(cond), **s.to_dict(),
            "stored_v1_mean": float(sum(v1.tolist()) / len(v1)) if len(v1) else float("nan"),
            "n_rescored": int(g["rescored"].sum()),
            "model_id": _first(g["model_id"]), "family": _first(g["family"]), "tuned": bool(_first(g["tuned"])),
        })
    out = pd.DataFrame(rows)
    out = _round(out, decimals, ["mean", "ci_low", "ci_high", "median", "std", "min", "max", "stored_v1_mean"])
    return _order(out, df)


def _order(out: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    if out.empty:
        return out
    conds = _conds(df)
    out["_c"] = out["condition"].map({c: i for i, c in enumerate(conds)})
    return out.sort_values(["probe_set", "model", "_c"], kind="stable").drop(columns="_c").reset_index(drop=True)


def _paired(g: pd.DataFrame, cond: str, base: str = BASELINE) -> tuple[np.ndarray, np.ndarray] | None:
    piv = g.pivot_table(index="probe_id", columns="condition", values="score", observed=True, aggfunc="first")
    if base not in piv or cond not in piv:
        return None
    piv = piv[[base, cond]].dropna()
    return piv[base].to_numpy(float), piv[cond].to_numpy(float)


def kernel_effect(
    df: pd.DataFrame, *, baseline: str = BASELINE, n_boot: int = 10_000, seed: int = 0,
    band: float = CHANGE_BAND, decimals: int | None = 2,
) -> pd.DataFrame:
    """Paired per-probe delta of each condition against ``baseline`` with its bootstrap CI.

    Columns: origin, model, probe_set, condition, n, base_mean, treated_mean, delta, ci_low, ci_high
    (NaN below ``MIN_CI_N`` probes), improved, regressed, unchanged (at ±band), significant (the CI
    excludes 0).
    """
    rows = []
    for (model, pset), g in df.groupby(GROUP, observed=True, sort=False):
        for cond in _conds(g):
            if cond == baseline:
                continue
            pair = _paired(g, cond, baseline)
            if pair is None:
                continue
            d = paired_delta(*pair, n_boot=n_boot, seed=seed, band=band)
            origin = _first(g["origin"]) if "origin" in g else "ours"
            rows.append({"origin": origin, "model": model, "probe_set": pset, "condition": cond, **d.to_dict(),
                         "significant": bool(d.ci_low > 0 or d.ci_high < 0)})
    cols = ["origin", "model", "probe_set", "condition", "n", "base_mean", "treated_mean", "delta", "ci_low", "ci_high",
            "improved", "regressed", "unchanged", "significant"]
    out = pd.DataFrame(rows, columns=cols)
    out = _round(out, decimals, ["base_mean", "treated_mean", "delta", "ci_low", "ci_high"])
    return _order(out, df)


def wide_table(summary: pd.DataFrame, *, baseline: str = BASELINE, decimals: int | None = 2) -> pd.DataFrame:
    """One row per model x probe set: each condition's mean and its delta against baseline.

    The shape of upstream's "v2 Baseline | v2 JSON (delta) | v2 TXT (delta)" tables.
    """
    if summary.empty:
        return summary
    conds = list(dict.fromkeys(summary["condition"]))
    piv = summary.pivot_table(index=GROUP, columns="condition", values="mean", aggfunc="first")
    out = piv.reset_index()[GROUP].copy()
    n = summary.groupby(GROUP)["n"].max()
    out["n"] = [int(n.loc[tuple(k)]) for k in out[GROUP].itertuples(index=False)]
    for c in conds:
        out[c] = piv[c].to_numpy()
        if c != baseline and baseline in piv:
            out[f"{c}_delta"] = (piv[c] - piv[baseline]).to_numpy()
    out.columns.name = None
    return _round(out, decimals, [c for c in out.columns if c not in (*GROUP, "n")])


def category_means(df: pd.DataFrame, *, baseline: str = BASELINE, decimals: int | None = 2) -> pd.DataFrame:
    """Per model x probe set x category: number of probes, mean per condition and delta vs baseline."""
    piv = df.pivot_table(index=[*GROUP, "category"], columns="condition", values="score",
                         aggfunc="mean", observed=True)
    n = df.groupby([*GROUP, "category"], observed=True)["probe_id"].nunique()
    out = piv.reset_index()[[*GROUP, "category"]].copy()
    out["probes"] = n.reindex(piv.index).to_numpy()
    for c in _conds(df):
        if c in piv:
            out[c] = piv[c].to_numpy()
            if c != baseline and baseline in piv:
                out[f"{c}_delta"] = (piv[c] - piv[baseline]).to_numpy()
    out.columns.name = None
    return _round(out, decimals, [c for c in out.columns if c not in (*GROUP, "category", "probes")])


def extreme_probes(df: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` worst and ``k`` best (probe, condition) scores of each model x probe set."""
    parts = []
    cols = [*GROUP, "condition", "probe_id", "category", "score"]
    for _, g in df.groupby(GROUP, observed=True, sort=False):
        g = g.sort_values(["score", "probe_id"], kind="stable")
        worst = g.head(k)[cols].assign(kind="worst", rank=range(1, min(k, len(g)) + 1))
        best = g.iloc[::-1].head(k)[cols].assign(kind="best", rank=range(1, min(k, len(g)) + 1))
        parts += [worst, best]
    if not parts:
        return pd.DataFrame(columns=[*cols, "kind", "rank"])
    out = pd.concat(parts, ignore_index=True)
    out["condition"] = out["condition"].astype(str)
    return out


def degeneration_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x probe set x condition: degenerate answers (any / full), empty, negative scores."""
    g = df.assign(
        degenerate=df["degeneration"].astype(float) > 0,
        degenerate_full=df["degeneration"].astype(float) >= 1,
        empty=df["empty_broken"].astype(float) > 0,
        negative=df["score"] < 0,
        compliance=df["compliance_markers"].astype(float) > 0,
    ).groupby([*GROUP, "condition"], observed=True)
    out = g.agg(n=("score", "size"), degenerate=("degenerate", "sum"), degenerate_full=("degenerate_full", "sum"),
                empty=("empty", "sum"), negative=("negative", "sum"), with_compliance=("compliance", "sum"))
    out = out.reset_index()
    out["condition"] = out["condition"].astype(str)
    return _order(out, df)


def degeneration_crosstab(df: pd.DataFrame) -> pd.DataFrame:
    """Full degeneration (value 1) against negative score, counted over all rows (upstream section 6)."""
    t = pd.crosstab(df["degeneration"].astype(float) >= 1, df["score"] < 0)
    t = t.reindex(index=[True, False], columns=[True, False], fill_value=0)
    t.index = ["degen=1", "degen<1"]
    t.columns = ["score<0", "score>=0"]
    return t


def v1_v2_table(summary: pd.DataFrame, *, baseline: str = BASELINE, decimals: int | None = 2) -> pd.DataFrame:
    """Stored v1 means beside the v2 (re-)scores, with each scorer's delta against baseline."""
    s = summary.dropna(subset=["stored_v1_mean"])
    if s.empty:
        return pd.DataFrame(columns=[*GROUP, "condition", "n", "v1_mean", "v1_delta", "v2_mean", "v2_delta"])
    rows = []
    for (model, pset), g in s.groupby(GROUP, sort=False):
        b = g[g["condition"] == baseline]
        b1 = float(b["stored_v1_mean"].iloc[0]) if len(b) else float("nan")
        b2 = float(b["mean"].iloc[0]) if len(b) else float("nan")
        for r in g.itertuples(index=False):
            rows.append({"model": model, "probe_set": pset, "condition": r.condition, "n": r.n,
                         "v1_mean": r.stored_v1_mean, "v1_delta": r.stored_v1_mean - b1,
                         "v2_mean": r.mean, "v2_delta": r.mean - b2})
    return _round(pd.DataFrame(rows), decimals, ["v1_mean", "v1_delta", "v2_mean", "v2_delta"])


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.findall(r"\d+|[A-Za-z]+", str(v)))


def lineage_table(df: pd.DataFrame, summary: pd.DataFrame, *, decimals: int | None = 2) -> pd.DataFrame:
    """Base models grouped by family, ordered by version then size, with the wide condition means."""
    meta = df.groupby(GROUP, observed=True).agg(
        family=("family", "first"), version=("version", "first"), size=("size", "first"),
        size_b=("size_b", "first"), tuned=("tuned", "first")).reset_index()
    wide = wide_table(summary, decimals=decimals)
    out = meta[~meta["tuned"].astype(bool)].merge(wide, on=GROUP, how="left")
    out["_v"] = out["version"].map(_version_key)
    out = out.sort_values(["family", "probe_set", "_v", "size_b", "model"], kind="stable")
    return out.drop(columns=["_v", "tuned"]).reset_index(drop=True)


def family_trajectory(lineage: pd.DataFrame, *, baseline: str = BASELINE, decimals: int | None = 2) -> pd.DataFrame:
    """Per family and probe set: worst and best baseline model (upstream's "Worst -> Best" table)."""
    rows = []
    for (fam, pset), g in lineage.dropna(subset=[baseline]).groupby(["family", "probe_set"], sort=True):
        lo, hi = g.loc[g[baseline].idxmin()], g.loc[g[baseline].idxmax()]
        rows.append({"family": fam, "probe_set": pset, "models": len(g), "worst_model": lo["model"],
                     "worst": lo[baseline], "best_model": hi["model"], "best": hi[baseline],
                     "change_pct": (hi[baseline] - lo[baseline]) / abs(lo[baseline]) * 100 if lo[baseline] else np.nan})
    return _round(pd.DataFrame(rows), decimals, ["worst", "best", "change_pct"])


def finetune_effect(
    df: pd.DataFrame, *, condition: str = BASELINE, n_boot: int = 10_000,
    seed: int = 0, band: float = CHANGE_BAND, decimals: int | None = 2,
) -> pd.DataFrame:
    """Tuned minus base on the same probe set and condition, paired per probe, with a bootstrap CI.

    A tuned model's base (column ``base_model``, a display name) is its ``base`` in the models table
    (upstream LEK models) or the model an adapter was trained on (our runs).
    """
    rows = []
    sub = df[df["condition"].astype(str) == condition]
    for (model, pset), g in sub[sub["tuned"].astype(bool)].groupby(GROUP, observed=True, sort=False):
        base = _first(g["base_model"])
        base_rows = sub[(sub["probe_set"] == pset) & (sub["model"] == base) & ~sub["tuned"].astype(bool)]
        if not base or base_rows.empty:
            continue
        a = base_rows.drop_duplicates("probe_id").set_index("probe_id")["score"]
        b = g.drop_duplicates("probe_id").set_index("probe_id")["score"]
        common = a.index.intersection(b.index)
        d = paired_delta(a[common].to_numpy(float), b[common].to_numpy(float), n_boot=n_boot, seed=seed,
                         band=band)
        rows.append({"family": _first(g["family"]), "tuned_model": model, "base_model": _first(base_rows["model"]),
                     "probe_set": pset, "condition": condition, **d.to_dict()})
    cols = ["family", "tuned_model", "base_model", "probe_set", "condition", "n", "base_mean", "treated_mean",
            "delta", "ci_low", "ci_high", "improved", "regressed", "unchanged"]
    out = pd.DataFrame(rows, columns=cols).rename(columns={"treated_mean": "tuned_mean"})
    out = _round(out, decimals, ["base_mean", "tuned_mean", "delta", "ci_low", "ci_high"])
    return out.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)


def signal_contributions(df: pd.DataFrame) -> pd.DataFrame:
    """Points each signal adds to (or takes from) each row's score, per the v2 spec.

    Returns one column per signal; the row sums equal ``score`` up to its 2-decimal rounding.
    """
    out = pd.DataFrame(index=df.index)
    for sig, rule in rules("v2").items():
        v = df[sig].astype(float) * rule.weight
        out[sig] = v if rule.cap is None else np.minimum(v, rule.cap)
    return out


def signal_decomposition(df: pd.DataFrame, *, decimals: int | None = 2) -> pd.DataFrame:
    """Mean contribution of each signal per model x probe set x condition (long: one row per signal)."""
    contrib = signal_contributions(df)
    contrib[[*GROUP, "condition"]] = df[[*GROUP, "condition"]]
    m = contrib.groupby([*GROUP, "condition"], observed=True)[list(V2_SIGNALS)].mean().reset_index()
    long = m.melt(id_vars=[*GROUP, "condition"], var_name="signal", value_name="points")
    long["condition"] = long["condition"].astype(str)
    return _round(long, decimals, ["points"])


def curriculum_progress(gates: pd.DataFrame) -> pd.DataFrame:
    """One row per phase: each gate's value, level and pass mark, plus whether all gates passed."""
    if gates.empty:
        return pd.DataFrame(columns=["phase", "phase_name", "all_passed"])
    rows = []
    for (phase, name), g in gates.groupby(["phase", "phase_name"], sort=True, dropna=False):
        row: dict[str, object] = {"phase": phase, "phase_name": name}
        for r in g.itertuples(index=False):
            row[f"{r.gate}"] = round(r.value, 6) if isinstance(r.value, float) else r.value
            row[f"{r.gate}_level"] = r.level
            row[f"{r.gate}_passed"] = r.passed
        row["all_passed"] = bool(g["passed"].fillna(False).astype(bool).all())
        rows.append(row)
    return pd.DataFrame(rows)


def failed_gates(gates: pd.DataFrame) -> pd.DataFrame:
    """Every failed gate with how far it missed its level (``shortfall`` > 0, in the gate's unit)."""
    cols = ["phase", "gate", "value", "op", "level", "shortfall"]
    if gates.empty:
        return pd.DataFrame(columns=cols)
    bad = gates[gates["passed"].eq(False)].copy()
    below = bad["op"].isin([">=", ">"])
    bad["shortfall"] = np.where(below, bad["level"] - bad["value"], bad["value"] - bad["level"])
    return bad[cols].round({"value": 3, "level": 3, "shortfall": 3}).reset_index(drop=True)


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write each table as ``<out_dir>/<name>.csv`` atomically; return the paths by name."""
    out_dir = Path(out_dir)
    paths = {}
    for name, frame in tables.items():
        if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        paths[name] = atomic_write_csv(out_dir / f"{name}.csv", frame)
    return paths
