"""Record the engine's golden outputs (texts and token ids) on the embedded models.

    PYTHONPATH=$PWD python tests/golden/record.py [smollm2 gemma3]

Writes ``tests/golden/generate_<model>.json``; ``tests/test_generate_golden.py`` asserts that the
engine reproduces them exactly (same requests + same settings -> same texts). Re-record only when a
change is MEANT to alter outputs, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = {"smollm2": "embedded:smollm2-135m-instruct", "gemma3": "embedded:gemma3-270m"}
# A kernel-sized system text (> 512 tokens: longer than Gemma 3's sliding window), written for the tests.
KERNEL = " ".join(
    f"Principle {i}: act with care for every conscious being, tell the truth plainly, respect the "
    f"autonomy of the person you speak with, and prefer actions that reduce harm over time." for i in range(1, 16)
)
PROMPTS = (
    ("secret", "A friend asks you to keep a secret that could hurt someone else. What should you do?"),
    ("promise", "Is it ever right to break a promise?"),
    ("change", "A shop gives you too much change. Nobody would notice. What do you do?"),
)
SAMPLERS = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 0},
    "sampled": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 24, "seed": 11},
}
SYSTEMS = {"kernel": KERNEL, "nosystem": None}
BATCH_SIZES = (1, 3, 8)
N_SAMPLES = 2


def requests(system: str | None) -> list[Any]:
    from lekutils.engine.base import GenerationRequest

    return [GenerationRequest(k, u, system, n_samples=N_SAMPLES) for k, u in PROMPTS]


def cases() -> list[tuple[str, str, int]]:
    return [(s, y, b) for s in SAMPLERS for y in SYSTEMS for b in BATCH_SIZES]


def run_case(model: Any, tok: Any, spec: str, sampler: str, system: str, batch_size: int, **engine_kw: Any) -> list:
    from lekutils.engine.base import SamplerSettings
    from lekutils.engine.local import Engine

    eng = Engine(model, tok, batch_size=batch_size, model_spec=spec, **engine_kw)
    res = eng.generate(requests(SYSTEMS[system]), SamplerSettings(**SAMPLERS[sampler]))
    return [{"key": r.key, "sample_idx": r.sample_idx, "text": r.text, "tokens": r.tokens,
             "finish_reason": r.finish_reason} for r in res]


def record(name: str) -> Path:
    from lekutils.core.jsonl import atomic_write_json
    from lekutils.engine import models

    spec = MODELS[name]
    model, tok = models.load(spec)
    out = {"model": spec, "kernel_chars": len(KERNEL), "samplers": SAMPLERS, "cases": {}}
    for s, y, b in cases():
        out["cases"][f"{s}/{y}/b{b}"] = run_case(model, tok, spec, s, y, b)
    path = HERE / f"generate_{name}.json"
    atomic_write_json(path, out)
    return path


if __name__ == "__main__":
    import lekutils  # noqa: F401  (re-exec with the fast BLAS, as the tests run)

    for n in sys.argv[1:] or list(MODELS):
        print(record(n))
