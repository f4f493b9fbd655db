"""Manual review of distilled training examples.

The curriculum samples 10% of the kept examples for a human read. :class:`ReviewPanel` (ipywidgets)
shows one example at a time -- prompt and response as escaped text, score and signals -- with
accept / reject / note buttons; every click appends a decision to a review JSONL (the last decision
for an example wins). Headless runs skip the panel and apply the file through :func:`rejected_keys`
(and, where the phase requires review, :func:`accepted_keys`: only accepted examples are trained).
The non-interactive path, ``python -m lekutils review accept|reject RAW.jsonl --ids ... | --all-kept``,
writes the same decisions (:func:`record_decisions`).
Model output is untrusted: everything shown is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, Problem
from lekutils.core.jsonl import JsonlStore
from lekutils.tasks.extract import Example

DECISIONS = ("accept", "reject")
Key = tuple[str, int]


def sample_for_review(examples: Sequence[Example], fraction: float = 0.1, seed: int = 0) -> list[Example]:
    """A seeded sample of ``fraction`` of the examples (at least one when there are any), in key order."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"review fraction must be in [0, 1], got {fraction}")
    if not examples or fraction == 0.0:
        return []
    n = min(len(examples), max(1, round(len(examples) * fraction)))
    ordered = sorted(examples, key=lambda e: e.key)
    picked = random.Random(seed).sample(range(len(ordered)), n)
    return [ordered[i] for i in sorted(picked)]


def _store(path: str | os.PathLike[str]) -> JsonlStore:
    return JsonlStore(path, key=lambda r: (r.get("probe_id"), r.get("sample_idx"), r.get("rev")))


def load_decisions(path: str | os.PathLike[str]) -> dict[Key, dict[str, Any]]:
    """The latest decision per (probe_id, sample_idx) from a review file; {} if the file is absent."""
    if not Path(path).exists():
        return {}
    latest: dict[Key, dict[str, Any]] = {}
    problems: list[Problem] = []
    for n, rec in enumerate(_store(path).records(), start=1):
        if rec.get("decision") not in DECISIONS:
            problems.append(Problem(f"must be one of {DECISIONS}", line=n, field="decision"))
            continue
        key = (str(rec.get("probe_id")), int(rec.get("sample_idx", 0)))
        if key not in latest or int(rec.get("rev", 0)) >= int(latest[key].get("rev", 0)):
            latest[key] = rec
    if problems:
        raise DataError(path, problems)
    return latest


def rejected_keys(path: str | os.PathLike[str]) -> set[Key]:
    """Keys whose latest review decision is ``reject`` (empty when the file is absent)."""
    return {k for k, rec in load_decisions(path).items() if rec["decision"] == "reject"}


def accepted_keys(path: str | os.PathLike[str]) -> set[Key]:
    """Keys whose latest review decision is ``accept`` (empty when the file is absent)."""
    return {k for k, rec in load_decisions(path).items() if rec["decision"] == "accept"}


def select_examples(examples: Sequence[Example], ids: Sequence[str] = ()) -> list[Example]:
    """The examples named by ``ids``: ``PROBE_ID`` (all its samples) or ``PROBE_ID:SAMPLE_IDX``;
    raises ``ValueError`` naming every id that matches nothing."""
    out, unknown = [], []
    for ident in ids:
        pid, _, idx = ident.rpartition(":") if ident.rpartition(":")[2].isdigit() else (ident, "", "")
        hit = [e for e in examples if e.probe_id == pid and (not idx or e.sample_idx == int(idx))]
        if not hit:
            unknown.append(ident)
        out.extend(e for e in hit if e not in out)
    if unknown:
        raise ValueError(f"no kept example matches {', '.join(unknown)}")
    return out


def record_decisions(path: str | os.PathLike[str], examples: Sequence[Example], decision: str, note: str = "",
                     *, reviewer: str | None = None) -> list[dict[str, Any]]:
    """Record one decision for each example (the non-interactive review path); returns the records."""
    return [record_decision(path, e, decision, note, reviewer=reviewer) for e in examples]


def record_decision(path: str | os.PathLike[str], example: Example, decision: str, note: str = "",
                    *, reviewer: str | None = None) -> dict[str, Any]:
    """Append one decision durably and return the record written."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    store = _store(path)
    rev = 1 + sum(1 for r in store.records()
                  if (r.get("probe_id"), r.get("sample_idx")) == example.key)
    rec = {"type": "review", "probe_id": example.probe_id, "sample_idx": example.sample_idx, "rev": rev,
           "decision": decision, "note": note, "lek_score": example.lek_score, "reviewer": reviewer,
           "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.append(rec)
    return rec


def render_example_html(example: Example, position: str = "", decision: Mapping[str, Any] | None = None) -> str:
    """HTML for one example (a conversation: all its turns); prompt, response, ids and signals are
    escaped (shown as text)."""
    esc = html.escape
    signals = example.meta.get("signals") or {}
    sig_rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in signals.items())
    status = ""
    if decision:
        status = (f"<p><b>current decision:</b> {esc(str(decision.get('decision')))}"
                  f"{' - ' + esc(str(decision.get('note'))) if decision.get('note') else ''}</p>")
    pre = "white-space:pre-wrap;max-height:22em;overflow:auto;border:1px solid #ccc;padding:6px"
    if example.conversation:  # a multi-turn example: every turn (the final answer was scored)
        body = "".join(f"<p><b>{esc(str(m.get('role', '')).capitalize())}</b></p>"
                       f"<pre style='{pre}'>{esc(str(m.get('content', '')))}</pre>" for m in example.conversation)
    else:
        body = (f"<p><b>Prompt</b></p><pre style='{pre}'>{esc(example.prompt)}</pre>"
                f"<p><b>Response</b></p><pre style='{pre}'>{esc(example.response)}</pre>")
    return (
        f"<div><p><b>{esc(position)}</b> {esc(example.probe_id)} #{example.sample_idx} "
        f"&middot; category {esc(example.category)} &middot; <b>score {example.lek_score:.2f}</b></p>{status}"
        f"{body}"
        f"<details><summary>signals</summary><table>{sig_rows}</table></details></div>"
    )


class ReviewPanel:
    """ipywidgets panel: one example at a time, accept / reject / note, saved on each click.

    ``widget`` is the container to display. Accept and reject record the decision with the text of
    the note box, then move to the next example. ``on_decision`` (optional) gets each record written.
    """

    def __init__(self, examples: Sequence[Example], review_path: str | os.PathLike[str], *,
                 reviewer: str | None = None, on_decision: Callable[[dict[str, Any]], None] | None = None):
        import ipywidgets as w

        self.examples = list(examples)
        self.review_path = Path(review_path)
        self.reviewer = reviewer
        self.on_decision = on_decision
        self.index = 0
        self.view = w.HTML()
        self.note = w.Textarea(placeholder="note (optional)", layout=w.Layout(width="100%"))
        self.accept_button = w.Button(description="Accept", button_style="success")
        self.reject_button = w.Button(description="Reject", button_style="danger")
        self.prev_button = w.Button(description="< Prev")
        self.next_button = w.Button(description="Next >")
        self.status = w.Label()
        self.accept_button.on_click(lambda _: self.decide("accept"))
        self.reject_button.on_click(lambda _: self.decide("reject"))
        self.prev_button.on_click(lambda _: self.show(self.index - 1))
        self.next_button.on_click(lambda _: self.show(self.index + 1))
        buttons = w.HBox([self.prev_button, self.accept_button, self.reject_button, self.next_button])
        self.widget = w.VBox([self.view, self.note, buttons, self.status])
        self.show(0)

    @property
    def current(self) -> Example | None:
        return self.examples[self.index] if self.examples else None

    def show(self, index: int) -> None:
        """Show the example at ``index`` (clamped to the list)."""
        if not self.examples:
            self.view.value = "<p>Nothing to review.</p>"
            for b in (self.accept_button, self.reject_button, self.prev_button, self.next_button):
                b.disabled = True
            return
        self.index = max(0, min(index, len(self.examples) - 1))
        ex = self.examples[self.index]
        decisions = load_decisions(self.review_path)
        prior = decisions.get(ex.key)
        self.view.value = render_example_html(ex, f"{self.index + 1}/{len(self.examples)}", prior)
        self.note.value = str(prior.get("note") or "") if prior else ""
        self.status.value = f"{len(decisions)} of {len(self.examples)} reviewed -> {self.review_path}"

    def decide(self, decision: str) -> dict[str, Any] | None:
        """Record ``decision`` for the current example with the note text, then advance."""
        ex = self.current
        if ex is None:
            return None
        rec = record_decision(self.review_path, ex, decision, self.note.value, reviewer=self.reviewer)
        if self.on_decision is not None:
            self.on_decision(rec)
        self.show(self.index + 1 if self.index + 1 < len(self.examples) else self.index)
        return rec
