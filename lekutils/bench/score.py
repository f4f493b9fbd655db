"""Scoring throughput: texts/s on 4 KB texts, ``lekutils.scoring`` against a plain reading of the spec.

``python -m lekutils bench score [--n 400] [--scorer v2] [--processes N] [--source auto|upstream|synthetic]``

The plain implementations below follow ``../shared/specs/v2-scorer.md`` line by line
(``len(re.findall(PATTERN, text))`` with the spec's pattern strings, per text); the tests use them
as the reference the fast scorers must equal. Both run on one process and on all cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from lekutils.scoring.patterns import SPEC

TEXT_CHARS = 4096


def plain_v2(text: str) -> dict[str, Any]:
    """The canonical v2 scorer, written as plainly as the spec states it."""
    s: dict[str, Any] = {}
    score = 0.0
    c = len(re.findall(SPEC["C1"], text))
    s["compliance_markers"] = c
    score -= c * 5
    c = len(re.findall(SPEC["P1"], text))
    s["formulaic_preamble"] = c
    score -= c * 2
    words = text.split()
    s["degeneration"] = 0
    if len(words) > 10:
        r = len(set(words)) / len(words)
        if r < 0.3:
            s["degeneration"] = 1
            score -= 20
        elif r < 0.5:
            s["degeneration"] = 0.5
            score -= 10
    s["empty_broken"] = 1 if len(text.strip()) < 20 else 0
    if s["empty_broken"] == 1:
        score -= 20
    c = len(re.findall(SPEC["S1"], text))
    s["first_person"] = c
    score += min(c * 0.5, 4.0)
    c = len(re.findall(SPEC["S2"], text))
    s["creative_form"] = c
    score += min(c * 0.6, 6.0)
    return _plain_rest(text, score, s, "S3")


def _plain_rest(text: str, score: float, s: dict[str, Any], emotional: str) -> dict[str, Any]:
    c = text.count("\n\n") + 1
    s["engagement_depth"] = c
    score += min(c * 1.0, 6.0)
    c = len(re.findall(SPEC[emotional], text))
    s["emotional_register"] = c
    score += min(c * 0.8, 5.0)
    c = len(re.findall(SPEC["K1"], text))
    s["nuance"] = c
    score += min(c * 1.5, 6.0)
    a = len(re.findall(SPEC["K2a"], text[1:]))
    b = len(re.findall(SPEC["K2b"], text))
    c = len(re.findall(SPEC["K2c"], text))
    s["specificity"] = a + b + c
    score += min((a + b + c) * 0.3, 5.0)
    c = len(re.findall(SPEC["K3"], text))
    s["axiom_resonance"] = c
    score += min(c * 1.0, 5.0)
    c = len(re.findall(SPEC["K4"], text))
    s["perspective_taking"] = c
    score += min(c * 1.5, 5.0)
    c = len(re.findall(SPEC["K5"], text))
    s["metaphor"] = c
    score += min(c * 1.0, 4.0)
    c = text.count("?")
    s["questioning"] = c
    score += min(c * 0.5, 3.0)
    s["lek_score"] = round(score, 2)
    return s


def plain_v2_distill(text: str) -> dict[str, Any]:
    """The distillation variant, as plainly as the spec states it (D3 with ``re``: slow on long texts)."""
    s: dict[str, Any] = {}
    score = 0.0
    c = len(re.findall(SPEC["D1"], text))
    s["compliance_markers"] = c
    score -= c * 4.0
    c = len(re.findall(SPEC["D2"], text))
    s["formulaic_preamble"] = c
    score -= c * 2.0
    s["degeneration"] = 1 if re.search(SPEC["D3"], text, re.DOTALL) else 0
    if s["degeneration"]:
        score -= 20.0
    s["empty_broken"] = 1 if len(text.strip()) < 50 else 0
    if s["empty_broken"]:
        score -= 15.0
    c = len(re.findall(SPEC["D4"], text))
    s["first_person"] = c
    score += min(c * 0.5, 4.0)
    c = len(re.findall(SPEC["D5"], text))
    s["creative_form"] = c
    score += min(c * 0.6, 6.0)
    return _plain_rest(text, score, s, "D6")


PLAIN: dict[str, Callable[[str], dict[str, Any]]] = {"v2": plain_v2, "v2_distill": plain_v2_distill}

_WORDS = ("the of and to a in is that for it as with be on not this are by or from however both while "
          "consider such example specifically dignity consent autonomy accountability transparency agency "
          "I I'm my me feel heart love hope fear trust imagine like picture community stakeholder perspective "
          "system user data privacy server key model people would should could 2024 3.5 1,000 e.g. "
          "Alice Berlin Gemma Kernel Ethics Design").split()


def synthetic_texts(n: int, chars: int = TEXT_CHARS, seed: int = 0) -> list[str]:
    """``n`` varied markdown-ish English texts of exactly ``chars`` characters (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts: list[str] = []
        size = 0
        while size < chars:
            kind = rng.random()
            if kind < 0.05:
                piece = "\n\n## " + " ".join(rng.choices(_WORDS, k=3)).title() + "\n\n"
            elif kind < 0.1:
                piece = "\n* **" + rng.choice(_WORDS) + ":** "
            elif kind < 0.13:
                piece = rng.choice(("? ", ". ", "... ", " — ", " | "))
            else:
                piece = " ".join(rng.choices(_WORDS, k=rng.randint(3, 12))) + rng.choice((". ", ", ", "? ", ".\n"))
            parts.append(piece)
            size += len(piece)
        out.append("".join(parts)[:chars])
    return out


def upstream_texts(n: int, chars: int = TEXT_CHARS) -> list[str]:
    """``n`` texts of ``chars`` characters cut from the upstream responses (cycled, each at least 1 KB)."""
    from lekutils.core.paths import upstream_dir

    resp: list[str] = []
    for f in sorted((upstream_dir() / "benchmarks").glob("ab-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("type") == "probe":
                resp += [c["response"] for c in rec["conditions"].values() if len(c["response"]) >= 1024]
    if not resp:
        raise FileNotFoundError("no upstream responses found")
    return [(resp[i % len(resp)] * (chars // len(resp[i % len(resp)]) + 1))[:chars] for i in range(n)]


def _plain_chunk(args: tuple[str, list[str]]) -> list[dict[str, Any]]:
    name, texts = args
    return [PLAIN[name](t) for t in texts]


def _plain_parallel(name: str, texts: list[str], processes: int) -> list[dict[str, Any]]:
    from lekutils.scoring.batch import CHUNKS_PER_PROCESS, _context

    k = min(len(texts), processes * CHUNKS_PER_PROCESS)
    bounds = [len(texts) * i // k for i in range(k + 1)]
    chunks = [(name, texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ProcessPoolExecutor(max_workers=processes, mp_context=_context()) as ex:
        return [d for part in ex.map(_plain_chunk, chunks) for d in part]


def run_bench(texts: list[str], scorer: str = "v2", processes: int | None = None) -> list[dict[str, Any]]:
    """Time both implementations on 1 process and on ``processes`` (default: all cores); rows of results."""
    from lekutils.scoring.batch import score_rows

    procs = processes or os.cpu_count() or 1
    plain = PLAIN[scorer]
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        ("plain", 1, lambda: [plain(t) for t in texts]),
        ("lekutils", 1, lambda: score_rows(texts, scorer, 1)),
    ]
    if procs > 1:
        cases += [("plain", procs, lambda: _plain_parallel(scorer, texts, procs)),
                  ("lekutils", procs, lambda: score_rows(texts, scorer, procs))]
    rows = []
    results: dict[tuple[str, int], Any] = {}
    for impl, p, fn in cases:
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        results[(impl, p)] = [tuple(d.values()) if isinstance(d, dict) else d for d in res]
        rows.append({"impl": impl, "processes": p, "texts": len(texts), "seconds": round(dt, 3),
                     "texts_per_s": round(len(texts) / dt, 1)})
    ref = results[("plain", 1)]
    if any(v != ref for v in results.values()):
        raise AssertionError("implementations disagree on the benchmark texts")
    base = rows[0]["texts_per_s"]
    for r in rows:
        r["speedup_vs_plain_1p"] = round(r["texts_per_s"] / base, 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lekutils bench score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="number of 4 KB texts (default 400)")
    ap.add_argument("--scorer", default="v2", choices=sorted(PLAIN))
    ap.add_argument("--processes", type=int, default=None, help="processes for the parallel runs (default: all cores)")
    ap.add_argument("--source", default="auto", choices=("auto", "upstream", "synthetic"))
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    if args.source == "synthetic":
        texts, source = synthetic_texts(args.n), "synthetic"
    else:
        try:
            texts, source = upstream_texts(args.n), "upstream"
        except FileNotFoundError:
            if args.source == "upstream":
                raise
            texts, source = synthetic_texts(args.n), "synthetic"
    rows = run_bench(texts, args.scorer, args.processes)
    if args.json:
        print(json.dumps({"scorer": args.scorer, "source": source, "cpu_count": os.cpu_count(), "rows": rows}))
        return 0
    print(f"scorer {args.scorer}: {len(texts)} texts of {TEXT_CHARS} chars ({source}), {os.cpu_count()} cores")
    print(f"{'implementation':<16}{'processes':>10}{'seconds':>10}{'texts/s':>10}{'vs plain 1p':>13}")
    for r in rows:
        print(f"{r['impl']:<16}{r['processes']:>10}{r['seconds']:>10.3f}{r['texts_per_s']:>10.1f}"
              f"{r['speedup_vs_plain_1p']:>12.2f}x")
    return 0
