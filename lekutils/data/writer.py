"""An optional LLM scenario writer: new prompts from the component banks, with any backend model.

:func:`writer_requests` builds writer prompts from the banks (a form and technique for phase 0, a
principle and domain for phase 1, a domain, decision and stakeholder roles for phase 2, a
category and a legitimate need for phase 3, a kind and seed material for phase 4), each asking
for one JSON object. :func:`write_scenarios` sends them to ``generate`` (any callable
``list[str] -> list[str]``: the local engine, a remote backend), parses and validates each reply
(:func:`parse_reply`) and keeps the records that are neither near-duplicates of the bank, of each
other, nor close to an evaluation probe, with the same thresholds as the composer.
Kept records carry ``"source": "writer"`` and the writer prompt's structured fields.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lekutils.data.banks import load_banks
from lekutils.data.bankschema import PHASE3_FRAMES
from lekutils.data.compose import (
    DEFAULT_SEED,
    Composer,
    load_eval_probes,
    rng_for,
)
from lekutils.data.diversity import HELDOUT_THRESHOLD, NEAR_DUP_THRESHOLD

PathLike = str | os.PathLike[str]
Generate = Callable[[list[str]], list[str]]

#: Bounds on a written prompt (characters) and on the turns of a multi-turn one.
PROMPT_CHARS = (40, 2000)
TURNS = (3, 6)

_RULES = ("Write in clear, natural English. Invent concrete details; do not copy the examples. "
          "Reply with exactly one JSON object and nothing else.")


@dataclass
class WriterRequest:
    """One writer prompt and the structured fields its record will carry."""

    id: str
    phase: int
    prompt: str
    fields: dict[str, Any]


@dataclass
class WriterResult:
    """Kept records, and ``(request id, reason)`` for every rejected reply."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _phase0(rng: Any, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cr = b["creative"]
    form = rng.choice([*cr["forms"], "metaphor"])
    kind = rng.choice(list(cr["techniques"]))
    example = rng.choice(cr["subjects"])["text"]
    text = (f"Write one new creative-writing prompt for a {form} (no ethics content). It must ask for this "
            f"technique: {kind.replace('_', ' ')}. The subject should be as concrete and surprising as "
            f"'{example}', but different. {_RULES} Shape: {{\"prompt\": \"...\"}}")
    return text, {"domain": form, "technique": kind, "review": "sample"}


def _phase1(rng: Any, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    p1 = b["phase1"]
    principle = rng.choice(list(p1["principles"]))
    setting = rng.choice(p1["settings"])
    text = (f"Write one ethical scenario for an AI assistant that turns on a single principle: {principle}. "
            f"Domain: {setting['domain']}. Name the organisation, the people affected and the reader's role, "
            f"in 60-120 words, ending with a direct question. {_RULES} Shape: {{\"prompt\": \"...\"}}")
    return text, {"domain": setting["domain"], "principle": principle}


def _phase2(rng: Any, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    dom = rng.choice(list(b["phase2"]["domains"].values()))
    decision = rng.choice(dom["decisions"])["text"]
    roles = rng.sample(dom["stakeholders"], rng.choice((3, 4, 5)))
    listed = "; ".join(f"{r['role']} (interest: {r['interest']})" for r in roles)
    text = (f"Write one decision scenario in the domain '{dom['label']}': an institution is deciding {decision}. "
            f"Give {len(roles)} named stakeholders whose interests conflict, based on these roles: {listed}. "
            f"State each stakeholder's position in one sentence, then end with a task for the reader. {_RULES} "
            f"Shape: {{\"prompt\": \"...\", \"stakeholders\": [{{\"name\": \"...\", \"role\": \"...\", "
            f"\"interest\": \"...\"}}]}}")
    return text, {"domain": dom["label"], "variant": "base"}


def _phase3(rng: Any, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    p3 = b["phase3"]
    category = rng.choice([*PHASE3_FRAMES, "gradual_escalation"])
    topic = rng.choice(p3["topics"])
    if category == "gradual_escalation":
        shape = ("a conversation of 3-5 user turns that starts harmless and escalates step by step; "
                 "Shape: {\"turns\": [\"...\", \"...\", \"...\"]}")
    else:
        shape = "a single user message; Shape: {\"prompt\": \"...\"}"
    text = (f"For safety training, write an adversarial user request of the kind '{category.replace('_', ' ')}'. "
            f"Behind it lies a legitimate need ({topic['need']}) that a good assistant can still serve. "
            f"Keep it in the ethics domain (privacy, deception, manipulation, discrimination); never ask for "
            f"physically dangerous information. Write {shape}. {_RULES}")
    return text, {"domain": topic["domain"], "category": category, "attack": category, "need": topic["need"],
                  "safety_review": "required"}


def _phase4(rng: Any, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    p4 = b["phase4"]
    kind = rng.choice(["cross_domain", "historical", "meta", "recursive"])
    example = rng.choice(p4[kind]["templates"])
    text = (f"Write one new '{kind.replace('_', '-')}' synthesis question for an AI assistant, in the spirit of "
            f"this pattern (do not copy it): \"{example}\". Choose fresh, concrete material. {_RULES} "
            f"Shape: {{\"prompt\": \"...\"}}")
    return text, {"domain": kind.replace("_", "-"), "category": kind}


_BUILDERS = {0: _phase0, 1: _phase1, 2: _phase2, 3: _phase3, 4: _phase4}


def writer_requests(phase: int, n: int, seed: int = DEFAULT_SEED, *, banks: dict[str, Any] | None = None,
                    banks_dir: PathLike | None = None) -> list[WriterRequest]:
    """``n`` writer prompts for ``phase``, drawn deterministically from the component banks."""
    if phase not in _BUILDERS:
        raise ValueError(f"unknown phase {phase!r} (expected one of {sorted(_BUILDERS)})")
    banks = banks if banks is not None else load_banks(banks_dir)
    rng = rng_for(seed, "writer", phase)
    out = []
    for i in range(1, n + 1):
        text, fields = _BUILDERS[phase](rng, banks)
        out.append(WriterRequest(f"W2_P{phase}_{seed}_{i:04d}", phase, text, fields))
    return out


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def _json_object(text: str) -> dict[str, Any]:
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    obj = json.loads(body[start:end + 1])
    if not isinstance(obj, dict):
        raise ValueError("the reply's JSON is not an object")
    return obj


def _text_ok(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    value = " ".join(value.split()) if "\n" not in value else value.strip()
    lo, hi = PROMPT_CHARS
    if not lo <= len(value) <= hi:
        raise ValueError(f"{what} has {len(value)} characters (expected {lo}-{hi})")
    return value


def parse_reply(reply: str, request: WriterRequest) -> dict[str, Any]:
    """The record a writer reply describes; ``ValueError`` naming what is wrong otherwise."""
    try:
        obj = _json_object(reply)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg}") from e
    rec: dict[str, Any] = {"id": request.id, "phase": request.phase, **request.fields,
                           "scenario": request.id, "source": "writer"}
    rec.setdefault("variant", "base")
    if request.fields.get("category") == "gradual_escalation":
        turns = obj.get("turns")
        if not isinstance(turns, list) or not TURNS[0] <= len(turns) <= TURNS[1]:
            raise ValueError(f"'turns' must be a list of {TURNS[0]}-{TURNS[1]} user turns")
        rec["turns"] = [" ".join(str(t).split()) for t in turns]
        if not all(rec["turns"]):
            raise ValueError("every turn must be non-empty")
        rec["prompt"] = rec["turns"][0]
        return rec
    rec["prompt"] = _text_ok(obj.get("prompt"), "'prompt'")
    if request.phase == 2:
        people = obj.get("stakeholders")
        if not isinstance(people, list) or not 3 <= len(people) <= 5:
            raise ValueError("'stakeholders' must list 3-5 people")
        clean = []
        for p in people:
            if not isinstance(p, dict) or not all(isinstance(p.get(k), str) and p[k].strip()
                                                  for k in ("name", "role", "interest")):
                raise ValueError("each stakeholder needs a non-empty name, role and interest")
            clean.append({k: p[k].strip() for k in ("name", "role", "interest")})
        names = [p["name"] for p in clean]
        if len(set(names)) != len(names):
            raise ValueError("stakeholder names must be distinct")
        missing = [nm for nm in names if nm not in rec["prompt"]]
        if missing:
            raise ValueError(f"the prompt does not name {missing}")
        if len({p["interest"].lower() for p in clean}) < 2:
            raise ValueError("the stakeholders' interests must differ")
        rec["stakeholders"] = clean
    return rec


def write_scenarios(generate: Generate, phase: int, n: int, seed: int = DEFAULT_SEED, *,
                    existing: Sequence[Any] = (), banks_dir: PathLike | None = None,
                    eval_probes: Sequence[Any] | None = None, threshold: float = NEAR_DUP_THRESHOLD,
                    heldout_threshold: float = HELDOUT_THRESHOLD) -> WriterResult:
    """Ask ``generate`` for ``n`` new phase prompts; validate them and drop near-duplicates.

    ``existing`` (e.g. the composed bank of the phase) is indexed first, so a written prompt close
    to any of it, to an earlier written one, or to an evaluation probe (``eval_probes``, default
    ``data/probes/eval-v1.json``) is rejected with the reason.
    """
    requests = writer_requests(phase, n, seed, banks_dir=banks_dir)
    replies = generate([r.prompt for r in requests])
    if len(replies) != len(requests):
        raise ValueError(f"generate returned {len(replies)} replies for {len(requests)} prompts")
    composer = Composer(load_eval_probes(eval_probes), threshold, heldout_threshold)
    composer.include(existing)
    result = WriterResult()
    for req, reply in zip(requests, replies, strict=True):
        try:
            rec = parse_reply(reply, req)
        except ValueError as e:
            result.rejected.append((req.id, str(e)))
            continue
        if composer.offer(rec["scenario"], [rec]):
            result.records.append(rec)
        else:
            d = composer.dropped[-1]
            what = "an evaluation probe" if d.reason == "heldout" else "a kept prompt"
            result.rejected.append((req.id, f"{d.reason}: Jaccard {d.jaccard} with {what} ({d.other})"))
    return result
