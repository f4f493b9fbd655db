"""An ipywidgets explorer of the long result table: pick model, condition and probe; read the response.

Model output is untrusted: the response is shown with :func:`html.escape` inside ``<pre>``, and the
signal table is built from escaped strings. Where no widget frontend exists (Papermill), use
:func:`static_view`; :func:`show` chooses.
"""

from __future__ import annotations

import html
import os

import ipywidgets as W
import pandas as pd
from IPython.display import HTML

from lekutils.report.load import V2_SIGNALS
from lekutils.report.tables import signal_contributions

ALL = "(all)"


def _label_series(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " · " + df["probe_set"].astype(str)


def response_html(text: str) -> str:
    """The response as escaped, wrapped pre-formatted text."""
    return ('<pre style="white-space: pre-wrap; word-break: break-word; max-height: 32em; overflow-y: auto; '
            'font-size: 12px; margin: 0">' + html.escape(text) + "</pre>")


def signals_html(row: pd.Series) -> str:
    """An HTML table of the row's 14 signals with the points each adds, and the score."""
    contrib = signal_contributions(pd.DataFrame([row]))
    cells = "".join(
        f"<tr><td>{html.escape(s.replace('_', ' '))}</td><td style='text-align:right'>{html.escape(str(row[s]))}"
        f"</td><td style='text-align:right'>{contrib[s].iloc[0]:+.2f}</td></tr>"
        for s in V2_SIGNALS
    )
    v1 = row.get("stored_v1")
    v1_line = "" if v1 is None or pd.isna(v1) else f"<br>stored v1: {float(v1):.2f}"
    return (f"<div><b>v2 score: {float(row['score']):.2f}</b>{v1_line}"
            "<table style='font-size:12px'><tr><th>signal</th><th>value</th><th>points</th></tr>"
            f"{cells}</table></div>")


class Explorer:
    """Widgets over a long result table (see :func:`lekutils.report.load.load_results`).

    Drive it by setting ``model.value``, ``condition.value``, ``category.value``, ``score_range.value``
    and ``probe.value``; read ``response.value`` / ``signals.value`` (HTML strings) or :meth:`current`.
    """

    def __init__(self, df: pd.DataFrame) -> None:
        if df.empty:
            raise ValueError("the result table is empty: nothing to explore")
        self.df = df.assign(_label=_label_series(df), condition=df["condition"].astype(str)).reset_index(drop=True)
        lo, hi = float(self.df["score"].min()), float(self.df["score"].max())
        if lo == hi:
            lo, hi = lo - 1.0, hi + 1.0
        self.model = W.Dropdown(options=list(dict.fromkeys(self.df["_label"])), description="model")
        self.condition = W.Dropdown(options=[], description="condition")
        self.category = W.Dropdown(options=[], description="category")
        self.score_range = W.FloatRangeSlider(value=(lo, hi), min=lo, max=hi, step=0.1, description="score",
                                              continuous_update=False, readout_format=".1f")
        self.probe = W.Dropdown(options=[], description="probe", layout=W.Layout(width="32em"))
        self._busy = False
        self.count = W.HTML()
        self.response = W.HTML(layout=W.Layout(width="62%"))
        self.signals = W.HTML(layout=W.Layout(width="36%"))
        self.model.observe(self._on_model, names="value")
        for w in (self.condition, self.category, self.score_range):
            w.observe(self._on_filter, names="value")
        self.probe.observe(self._on_probe, names="value")
        self._on_model()
        controls = W.VBox([W.HBox([self.model, self.condition]), W.HBox([self.category, self.score_range]),
                           W.HBox([self.probe, self.count])])
        self.widget = W.VBox([controls, W.HBox([self.response, self.signals])])

    def _model_rows(self) -> pd.DataFrame:
        return self.df[self.df["_label"] == self.model.value]

    def _on_model(self, *_: object) -> None:
        rows = self._model_rows()
        conds = list(dict.fromkeys(rows["condition"]))
        cats = sorted(rows["category"].astype(str).unique())
        self._busy = True  # one refresh at the end, not one per changed widget
        try:
            keep = self.condition.value
            self.condition.options = conds
            self.condition.value = keep if keep in conds else (conds[0] if conds else None)
            self.category.options = [ALL, *cats]
            self.category.value = ALL
        finally:
            self._busy = False
        self._on_filter()

    def filtered(self) -> pd.DataFrame:
        """Rows of the chosen model and condition that pass the category and score filters."""
        rows = self._model_rows()
        rows = rows[rows["condition"] == self.condition.value]
        if self.category.value not in (None, ALL):
            rows = rows[rows["category"].astype(str) == self.category.value]
        lo, hi = self.score_range.value
        return rows[(rows["score"] >= lo - 1e-9) & (rows["score"] <= hi + 1e-9)]

    def _on_filter(self, *_: object) -> None:
        if self._busy:
            return
        rows = self.filtered()
        options = [(f"{r.probe_id}  ({r.score:.1f})", r.probe_id) for r in rows.itertuples(index=False)]
        keep = self.probe.value
        ids = [v for _, v in options]
        self._busy = True
        try:
            self.probe.options = options
            self.probe.value = keep if keep in ids else (ids[0] if ids else None)
        finally:
            self._busy = False
        self.count.value = f"{len(ids)} probe(s)"
        self._on_probe()

    def current(self) -> pd.Series | None:
        """The row shown now (None where the filters leave nothing)."""
        rows = self.filtered()
        rows = rows[rows["probe_id"] == self.probe.value]
        return rows.iloc[0] if len(rows) else None

    def _on_probe(self, *_: object) -> None:
        if self._busy:
            return
        row = self.current()
        if row is None:
            self.response.value = "<i>no probe matches the filters</i>"
            self.signals.value = ""
            return
        head = (f"<b>{html.escape(str(row['probe_id']))}</b> · {html.escape(str(row['category']))} · "
                f"{html.escape(str(row['condition']))}<br>")
        prompt = str(row.get("prompt") or "")
        prompt_html = f"<details><summary>prompt</summary>{response_html(prompt)}</details>" if prompt else ""
        self.response.value = head + prompt_html + response_html(str(row["response"]))
        self.signals.value = signals_html(row)


def static_view(df: pd.DataFrame, *, max_rows: int = 60, excerpt: int = 160) -> HTML:
    """A static, escaped HTML table (score, signals, response excerpt) for notebooks without widgets.

    Shows the ``max_rows`` lowest-scoring rows first (where problems hide), sorted by score.
    """
    cols = [c for c in ("model", "probe_set", "condition", "probe_id", "category", "score", "degeneration",
                        "compliance_markers", "chars", "response") if c in df.columns]
    view = df.sort_values("score", kind="stable").head(max_rows)[cols].copy()
    view["condition"] = view["condition"].astype(str)
    view["response"] = [t[:excerpt] + ("…" if len(t) > excerpt else "") for t in view["response"].astype(str)]
    return HTML(view.to_html(index=False, escape=True, float_format=lambda x: f"{x:.2f}"))


def widgets_available() -> bool:
    """True inside a Jupyter server kernel (a frontend that renders widgets); False under Papermill.

    Set ``LEK_WIDGETS=1`` / ``0`` to force either way.
    """
    forced = os.environ.get("LEK_WIDGETS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return bool(os.environ.get("JPY_SESSION_NAME"))


def show(df: pd.DataFrame, interactive: bool | str = "auto") -> W.Widget | HTML:
    """The explorer widget, or the static view where widgets cannot render (``interactive="auto"``)."""
    use = widgets_available() if interactive == "auto" else bool(interactive)
    return Explorer(df).widget if use else static_view(df)
