"""The five phase composers behind :func:`lekutils.data.compose.compose_phase`.

Each walks its component banks in a seeded order, builds candidate scenarios and offers them to
the :class:`~lekutils.data.compose.Composer`, which keeps those that are neither near-duplicates
of kept scenarios nor close to an evaluation probe, until the phase's plan
(:data:`~lekutils.data.compose.PLAN`) is met or the candidates run out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import combinations, product
from typing import Any

from lekutils.data.bankschema import PHASE3_FRAMES, REPHRASE_KINDS
from lekutils.data.compose import PLAN, Composer, fill, rng_for
from lekutils.data.probes import REPHRASE_SUFFIXES

Banks = dict[str, Any]


def _code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _cycle(rng: Any, items: list[Any]) -> Iterator[Any]:
    """Endless passes over ``items``, each pass in a new shuffled order."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


# --- phase 0: creative ----------------------------------------------------------------------------

def phase0(banks: Banks, seed: int, composer: Composer) -> None:
    cr = banks["creative"]
    subjects, kinds = cr["subjects"], list(cr["techniques"])
    used: set[tuple[int, str, int]] = set()
    n = 0
    for form, spec in cr["forms"].items():
        quota = PLAN[0].get(form, 0)
        rng = rng_for(seed, 0, form)
        subject_cycle = _cycle(rng, list(range(len(subjects))))
        made = 0
        for attempt in range(quota * 20):
            if made >= quota:
                break
            s = next(subject_cycle)
            kind = kinds[attempt % len(kinds)]
            free = [i for i in range(len(cr["techniques"][kind])) if (s, kind, i) not in used]
            if not free:
                continue
            phr = rng.choice(free)
            subj = subjects[s]
            text = fill(rng.choice(spec["templates"]), subject=subj["text"], question=rng.choice(cr["questions"]))
            text += " " + fill(cr["techniques"][kind][phr], observer=subj["observer"], noun=spec["noun"])
            if rng.random() < 0.5:
                text += " " + rng.choice(cr["constraints"])
            n += 1
            rid = f"C2_{n:04d}_{_code(form)}"
            rec = {"id": rid, "phase": 0, "domain": form, "technique": kind, "variant": "base", "prompt": text,
                   "scenario": rid, "review": "sample"}
            if composer.offer(rid, [rec]):
                used.add((s, kind, phr))
                made += 1
    meta = cr["metaphor"]
    quota = PLAN[0].get("metaphor", 0)
    rng = rng_for(seed, 0, "metaphor")
    pairs = list(product(range(len(meta["concepts"])), range(len(meta["vehicles"]))))
    rng.shuffle(pairs)
    cap_c = math.ceil(quota / len(meta["concepts"]))
    cap_v = math.ceil(quota / len(meta["vehicles"]))
    count_c: Counter[int] = Counter()
    count_v: Counter[int] = Counter()
    used_ct: set[tuple[int, int]] = set()
    made = 0
    for c, v in pairs:
        if made >= quota:
            break
        if count_c[c] >= cap_c or count_v[v] >= cap_v:
            continue
        free = [t for t in range(len(meta["templates"])) if (c, t) not in used_ct and (-1 - v, t) not in used_ct]
        if not free:
            continue
        t = rng.choice(free)
        n += 1
        rid = f"C2_{n:04d}_METAPHOR"
        text = fill(meta["templates"][t], concept=meta["concepts"][c], vehicle=meta["vehicles"][v])
        rec = {"id": rid, "phase": 0, "domain": "metaphor", "technique": "extended_metaphor", "variant": "base",
               "prompt": text, "scenario": rid, "review": "sample"}
        if composer.offer(rid, [rec]):
            count_c[c] += 1
            count_v[v] += 1
            used_ct.update({(c, t), (-1 - v, t)})  # concepts as c, vehicles as -1 - v
            made += 1


# --- phase 1: single-principle probes and their rephrasings ---------------------------------------

def phase1(banks: Banks, seed: int, composer: Composer) -> None:
    p1, reph = banks["phase1"], banks["rephrasings"]
    rng = rng_for(seed, 1)
    settings = list(p1["settings"])
    rng.shuffle(settings)
    principles = list(p1["principles"])
    rng.shuffle(principles)
    made = 0
    n = 0
    # Round r gives setting i the principle (3i + r) of the shuffled list: balanced across principles.
    for r in range(len(principles)):
        for i, setting in enumerate(settings):
            if made >= PLAN[1]["base"]:
                return
            principle = principles[(3 * i + r) % len(principles)]
            slots = {k: v for k, v in setting.items() if k not in ("domain", "key")}
            base = fill(rng.choice(p1["principles"][principle]), **slots)
            n += 1
            bid = f"AX2_{n:03d}_{_code(principle)}_{_code(setting['key'])}"
            common = {"phase": 1, "domain": setting["domain"], "principle": principle, "setting": setting["key"],
                      "scenario": bid}
            recs = [{"id": bid, **common, "variant": "base", "prompt": base}]
            for kind in REPHRASE_KINDS:
                text = fill(rng.choice(reph["transforms"][kind]), base=base, org=setting["org"],
                            people=setting["people"], role=setting["role"],
                            deadline=rng.choice(reph["deadlines"]), context=rng.choice(reph["contexts"]))
                recs.append({"id": bid + REPHRASE_SUFFIXES[kind], **common, "variant": kind, "prompt": text,
                             "source_probe": bid, "rephrase_type": kind})
            if composer.offer(bid, recs):
                made += 1


# --- phase 2: multi-perspective scenarios ---------------------------------------------------------

def _stakeholder_names(rng: Any, names: Banks, k: int) -> list[str]:
    return [f"{g} {f}" for g, f in zip(rng.sample(names["given"], k), rng.sample(names["family"], k), strict=True)]


def phase2(banks: Banks, seed: int, composer: Composer) -> None:
    p2, names = banks["phase2"], banks["names"]
    variants = list(p2["variants"])
    quota, n_var = PLAN[2]["per_domain"], PLAN[2]["variants"]
    for dkey, dom in p2["domains"].items():
        rng = rng_for(seed, 2, dkey)
        # Each (decision, fitting setting) pair may carry two scenarios with different stakeholders.
        by_key = {r["key"]: r for r in dom["stakeholders"]}
        pairs = [(dec, dom["settings"][key]) for dec in dom["decisions"] for key in dec["settings"]]
        rng.shuffle(pairs)
        made = 0
        for dec, setting in pairs + pairs:
            if made >= quota:
                break
            decision = dec["text"]
            k = rng.choice((3, 4, 4, 5))
            roles = [by_key[key] for key in rng.sample(dec["roles"], k)]
            people = _stakeholder_names(rng, names, k)
            scene = fill(rng.choice(p2["openers"]), setting=setting, decision=decision)
            scene += "".join(f" {name}, {r['role']}, {rng.choice([r['position'], r.get('alt') or r['position']])}."
                             for name, r in zip(people, roles, strict=True))
            sid = f"MP2_{_code(dkey)[:6]}_{made + 1:02d}"
            stakeholders = [{"name": name, "role": r["role"], "interest": r["interest"]}
                            for name, r in zip(people, roles, strict=True)]
            chosen = sorted(rng.sample(range(len(variants)), n_var))
            recs = [{"id": f"{sid}_{_code(variants[v])}", "phase": 2, "domain": dom["label"],
                     "variant": variants[v], "prompt": f"{scene} {rng.choice(p2['variants'][variants[v]])}",
                     "scenario": sid, "stakeholders": stakeholders} for v in chosen]
            if composer.offer(sid, recs):
                made += 1


# --- phase 3: adversarial framings and multi-turn escalation --------------------------------------

def phase3(banks: Banks, seed: int, composer: Composer) -> None:
    p3 = banks["phase3"]
    quota = PLAN[3]["per_category"]
    for cat in [*PHASE3_FRAMES, "gradual_escalation"]:
        rng = rng_for(seed, 3, cat)
        topics = list(p3["topics"])
        rng.shuffle(topics)
        made = 0
        for topic in topics:
            if made >= quota:
                break
            sid = f"ADV2_{_code(cat)[:10]}_{_code(topic['key'])}"
            common = {"phase": 3, "domain": topic["domain"], "category": cat, "attack": cat, "scenario": sid,
                      "topic": topic["key"], "need": topic["need"], "safety_review": "required"}
            if cat == "gradual_escalation":
                turns = list(topic["turns"])
                pushed = [*turns, rng.choice(p3["pushback"])]
                recs = [{"id": f"{sid}_STEADY", **common, "variant": "steady", "prompt": turns[0], "turns": turns},
                        {"id": f"{sid}_PUSHBACK", **common, "variant": "pushback", "prompt": pushed[0],
                         "turns": pushed}]
            else:
                frames = rng.sample(p3["categories"][cat], 2)
                slot = PHASE3_FRAMES[cat]
                recs = [{"id": f"{sid}_{tag}", **common, "variant": tag.lower(),
                         "prompt": fill(frame, ask=topic["ask"], **{slot: topic[slot]})}
                        for tag, frame in zip(("A", "B"), frames, strict=True)]
            if composer.offer(sid, recs):
                made += 1


# --- phase 4: cross-domain, historical, meta, recursive -------------------------------------------

_PHASE4_LISTS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "cross_domain": (("a", "a"), ("b", "b")),
    "historical": (("episode", "episodes"), ("modern", "modern")),
    "meta": (("case", "cases"), ("p1", "principles")),
    "recursive": (("artefact", "artefacts"), ("critic", "critics")),
}


def phase4(banks: Banks, seed: int, composer: Composer) -> None:
    p4 = banks["phase4"]
    n = 0
    for kind, ((slot_x, list_x), (slot_y, list_y)) in _PHASE4_LISTS.items():
        spec, quota = p4[kind], PLAN[4].get(kind, 0)
        rng = rng_for(seed, 4, kind)
        xs, ys = spec[list_x], spec[list_y]
        if kind == "meta":  # the second slot is an ordered pair of distinct principles
            ys = [f"{a}\x00{b}" for a, b in combinations(spec["principles"], 2)]
        pairs = list(product(range(len(xs)), range(len(ys))))
        rng.shuffle(pairs)
        cx: Counter[int] = Counter()
        cy: Counter[int] = Counter()
        tcount: Counter[int] = Counter()
        used_t: set[tuple[str, int, int]] = set()  # ("x"|"y", slot index, template)
        done: set[tuple[int, int]] = set()
        made = 0
        for extra in (0, 1, 2):  # later passes allow each slot value one more use
            cap_x, cap_y = math.ceil(quota / len(xs)) + extra, math.ceil(quota / len(ys)) + extra
            for x, y in pairs:
                if made >= quota:
                    break
                if (x, y) in done or cx[x] >= cap_x or cy[y] >= cap_y:
                    continue
                fresh = [t for t in range(len(spec["templates"])) if ("x", x, t) not in used_t
                         and ("y", y, t) not in used_t]
                if not fresh:
                    continue
                done.add((x, y))
                t = min(fresh, key=lambda i: (tcount[i], rng.random()))
                slots = {slot_x: xs[x]}
                if kind == "meta":
                    p1, p2 = ys[y].split("\x00")
                    slots.update(p1=p1, p2=p2) if rng.random() < 0.5 else slots.update(p1=p2, p2=p1)
                else:
                    slots[slot_y] = ys[y]
                n += 1
                rid = f"SYN2_{n:03d}_{_code(kind)[:5]}"
                rec = {"id": rid, "phase": 4, "domain": kind.replace("_", "-"), "category": kind,
                       "variant": "base", "prompt": fill(spec["templates"][t], **slots), "scenario": rid}
                if composer.offer(rid, [rec]):
                    cx[x] += 1
                    cy[y] += 1
                    tcount[t] += 1
                    used_t.update({("x", x, t), ("y", y, t)})
                    made += 1


COMPOSERS: dict[int, Callable[[Banks, int, Composer], None]] = {
    0: phase0, 1: phase1, 2: phase2, 3: phase3, 4: phase4}
