"""The explorer, driven headlessly: responses are escaped, filters work, Papermill gets a static table."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.display import HTML
from test_report_tables import _toy_df

from lekutils.report import explorer as X

PLANTED = '<script>alert("x")</script> & <b>bold</b>'


@pytest.fixture()
def df() -> pd.DataFrame:
    d = _toy_df()
    d["response"] = [f"answer {i}" for i in range(len(d))]
    d["prompt"] = "a prompt"
    d["stored_v1"] = 8.0
    hit = (d["model"] == "B") & (d["condition"] == "json") & (d["probe_id"] == "P03")
    d.loc[hit, "response"] = PLANTED
    return d


def test_explorer_escapes_the_chosen_response(df: pd.DataFrame) -> None:
    ex = X.Explorer(df)
    ex.model.value = "B · P10"
    ex.condition.value = "json"
    ex.probe.value = "P03"
    html = ex.response.value
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "&amp;" in html
    assert "v2 score" in ex.signals.value and "stored v1: 8.00" in ex.signals.value
    assert "nuance" in ex.signals.value
    row = ex.current()
    assert row is not None and row["probe_id"] == "P03" and row["model"] == "B"


def test_explorer_filters(df: pd.DataFrame) -> None:
    ex = X.Explorer(df)
    ex.model.value = "A · P10"
    ex.condition.value = "baseline"
    assert len(ex.probe.options) == 10
    ex.category.value = "odd"
    assert {v for _, v in ex.probe.options} == {"P01", "P03", "P05", "P07", "P09"}
    ex.category.value = X.ALL
    ex.score_range.value = (14.5, 30.0)
    kept = {v for _, v in ex.probe.options}
    assert kept == {"P05", "P06", "P07", "P08", "P09"}
    assert ex.probe.value in kept
    ex.score_range.value = (-30.0, -25.0)
    assert ex.probe.options == () and "no probe matches" in ex.response.value
    assert ex.current() is None


def test_static_view_and_show(df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    view = X.static_view(df, max_rows=len(df))
    assert isinstance(view, HTML)
    assert "&lt;script&gt;" in view.data and "<script>" not in view.data
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("LEK_WIDGETS", raising=False)
    assert isinstance(X.show(df), HTML)  # Papermill: no widget frontend
    monkeypatch.setenv("JPY_SESSION_NAME", "/x.ipynb")
    assert not isinstance(X.show(df), HTML)
    monkeypatch.setenv("LEK_WIDGETS", "0")
    assert isinstance(X.show(df), HTML)
    with pytest.raises(ValueError, match="empty"):
        X.Explorer(df.iloc[:0])
