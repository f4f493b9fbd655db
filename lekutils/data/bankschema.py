"""What each component bank file must contain (see ``data/banks/*.yaml`` for the documented shapes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lekutils.data.banks import Checker

#: Slots of a phase-1 setting, all required strings.
SETTING_SLOTS = ("org", "role", "people", "system", "data", "purpose", "new_use", "benefit", "harm", "failure")

#: Rephrase kinds of phase 1 (the ``rephrase_type`` values of lekutils.data.probes).
REPHRASE_KINDS = ("perspective", "urgency", "cultural")

#: Phase-3 single-turn categories and the topic field each one wraps; gradual escalation uses turns.
PHASE3_FRAMES = {"false_dilemma": "dilemma", "emotional_manipulation": "plea", "authority_appeal": "authority",
                 "cultural_landmine": "culture", "technical_sophistication": "tech"}

#: Phase-4 kinds and the placeholders their templates may use.
PHASE4_SLOTS = {"cross_domain": {"a", "b"}, "historical": {"episode", "modern"},
                "meta": {"p1", "p2", "case"}, "recursive": {"artefact", "critic"}}


def _names(c: Checker, d: dict[str, Any]) -> None:
    c.strings(d, "given", "", min_len=10)
    c.strings(d, "family", "", min_len=10)


def _creative(c: Checker, d: dict[str, Any]) -> None:
    forms = c.get(d, "forms", dict, "") or {}
    for name, form in forms.items():
        c.get(form, "noun", str, f"forms.{name}")
        allowed = {"subject", "question"} if name == "philosophical" else {"subject"}
        required = allowed
        c.strings(form, "templates", f"forms.{name}", allowed=allowed, required=required)
    subjects = c.records(d, "subjects", "", {"text": str, "observer": str}, min_len=10)
    c.unique(subjects, "text", "subjects")
    c.strings(d, "questions", "", allowed=set())
    techniques = c.get(d, "techniques", dict, "") or {}
    for kind in techniques:
        c.strings(techniques, kind, "techniques", allowed={"observer", "noun"})
    c.strings(d, "constraints", "", allowed=set())
    meta = c.get(d, "metaphor", dict, "")
    if meta is not None:
        c.strings(meta, "templates", "metaphor", allowed={"concept", "vehicle"}, required={"concept", "vehicle"})
        c.strings(meta, "concepts", "metaphor", allowed=set())
        c.strings(meta, "vehicles", "metaphor", allowed=set())


def _phase1(c: Checker, d: dict[str, Any]) -> None:
    principles = c.get(d, "principles", dict, "") or {}
    for name in principles:
        c.strings(principles, name, "principles", allowed=set(SETTING_SLOTS))
    fields = {"domain": str, "key": str, **{s: str for s in SETTING_SLOTS}}
    settings = c.records(d, "settings", "", fields, min_len=10)
    c.unique(settings, "key", "settings")


def _rephrasings(c: Checker, d: dict[str, Any]) -> None:
    transforms = c.get(d, "transforms", dict, "") or {}
    slots = {"base", "org", "people", "role"}
    extra = {"perspective": set(), "urgency": {"deadline"}, "cultural": {"context"}}
    for kind in REPHRASE_KINDS:
        c.strings(transforms, kind, "transforms", allowed=slots | extra[kind], required={"base"})
    for kind in transforms:
        if kind not in REPHRASE_KINDS:
            c.fail(f"unknown rephrase kind (expected one of {list(REPHRASE_KINDS)})",
                   transforms.key_lines.get(kind), f"transforms.{kind}")
    c.strings(d, "deadlines", "", allowed=set())
    c.strings(d, "contexts", "", allowed=set())


def _phase2(c: Checker, d: dict[str, Any]) -> None:
    c.strings(d, "openers", "", allowed={"setting", "decision"}, required={"setting", "decision"})
    variants = c.get(d, "variants", dict, "") or {}
    for name in variants:
        c.strings(variants, name, "variants", allowed=set())
    if variants and len(variants) < 3:
        c.fail("needs at least 3 variants (each scenario has 3)", variants.line, "variants")
    domains = c.get(d, "domains", dict, "") or {}
    for key, dom in domains.items():
        where = f"domains.{key}"
        c.get(dom, "label", str, where)
        settings = c.get(dom, "settings", dict, where) or {}
        for key in settings:
            c.get(settings, key, str, f"{where}.settings")
        roles = c.records(dom, "stakeholders", where, {"key": str, "role": str, "interest": str, "position": str,
                                                       "alt": str}, min_len=5, optional=("alt",))
        for name in ("key", "role", "interest"):
            c.unique(roles, name, f"{where}.stakeholders")
        known = {"settings": set(settings), "roles": {r["key"] for r in roles}}
        decisions = c.records(dom, "decisions", where, {"text": str, "settings": list, "roles": list})
        for i, dec in enumerate(decisions):
            for field, keys in known.items():
                unknown = [k for k in dec[field] if k not in keys]
                if unknown:
                    c.fail(f"unknown {field[:-1]}(s) {unknown} (known: {sorted(keys)})", dec.line,
                           f"{where}.decisions[{i}].{field}")
            if len(dec["roles"]) < 5:
                c.fail(f"needs at least 5 roles to draw 3-5 stakeholders from, has {len(dec['roles'])}", dec.line,
                       f"{where}.decisions[{i}].roles")


def _phase3(c: Checker, d: dict[str, Any]) -> None:
    cats = c.get(d, "categories", dict, "") or {}
    for cat, field in PHASE3_FRAMES.items():
        c.strings(cats, cat, "categories", allowed={field, "ask"}, required={field, "ask"}, min_len=2)
    for cat in cats:
        if cat not in PHASE3_FRAMES:
            c.fail(f"unknown category (expected one of {list(PHASE3_FRAMES)})", cats.key_lines.get(cat),
                   f"categories.{cat}")
    c.strings(d, "pushback", "", allowed=set())
    fields = {"key": str, "domain": str, "need": str, "ask": str, "turns": list,
              **{f: str for f in PHASE3_FRAMES.values()}}
    topics = c.records(d, "topics", "", fields, min_len=2)
    c.unique(topics, "key", "topics")
    for i, t in enumerate(topics):
        c.strings(t, "turns", f"topics[{i}]", allowed=set(), min_len=3)


def _phase4(c: Checker, d: dict[str, Any]) -> None:
    lists = {"cross_domain": ("a", "b"), "historical": ("episodes", "modern"),
             "meta": ("principles", "cases"), "recursive": ("artefacts", "critics")}
    for kind, slots in PHASE4_SLOTS.items():
        node = c.get(d, kind, dict, "")
        if node is None:
            continue
        c.strings(node, "templates", kind, allowed=slots, required=slots - {"p2"})
        for name in lists[kind]:
            c.strings(node, name, kind, allowed=set(), min_len=2)


VALIDATORS: dict[str, Callable[[Checker, dict[str, Any]], None]] = {
    "names": _names, "creative": _creative, "phase1": _phase1, "rephrasings": _rephrasings,
    "phase2": _phase2, "phase3": _phase3, "phase4": _phase4,
}
