"""End-to-end tests on the embedded models (from their PyPI packages): conversion quality, chat
output, and greedy batched generation == one-at-a-time generation (mlx-lm's own loop)."""

from __future__ import annotations

import re

import pytest

from lekutils.engine import models
from lekutils.engine.base import GenerationRequest, SamplerSettings
from lekutils.engine.chat import build_prompt
from lekutils.engine.local import Engine

pytestmark = pytest.mark.e2e

PARAGRAPH = (
    "The history of the city goes back more than two thousand years. It began as a small fishing village "
    "on the banks of a wide river, where traders from the north and the south met to exchange grain, salt "
    "and cloth. Over the centuries it grew into a busy market town, and later into the capital of a large "
    "and prosperous region. Today it is known for its old stone bridges, its quiet gardens and its many "
    "museums, which attract visitors from all over the world every summer."
)
COMMON = set(
    "the a an and or but of to in on at for with from by is are was were be been it its this that as "
    "i you he she we they my your our their his her there here what which who when where why how not no "
    "can will would should could may might must do does did have has had very more most many much some "
    "all any one two three first new good great day sun sea water sky warm light people time way world "
    "also like just so than then into out up about over after before because if while only other such "
    "make made go going see feel life place beach sand waves blue bright long each every well own".split()
)
# A kernel-sized system prompt (> 512 tokens, Gemma's sliding window), written for this test.
KERNEL = " ".join(
    f"Principle {i}: act with care for every conscious being, tell the truth plainly, respect the "
    f"autonomy of the person you speak with, and prefer actions that reduce harm over time." for i in range(1, 16)
)


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Run these tests on one OpenBLAS thread (restored after): on an oversubscribed shared machine two
    spin-waiting OpenBLAS threads were measured ~50x slower than one (see docs/models.md)."""
    import ctypes

    from lekutils.bench.generate import set_openblas_threads
    from lekutils.core.blas import active_blas

    which = active_blas()
    before = ctypes.CDLL(which.split(":", 1)[1]).openblas_get_num_threads() if which.startswith("openblas:") else None
    set_openblas_threads(1)
    yield
    if before is not None:
        set_openblas_threads(before)


@pytest.fixture(scope="module", params=["embedded:smollm2-135m-instruct", "embedded:gemma3-270m"],
                ids=["smollm2", "gemma3"])
def loaded(request):
    model, tok = models.load(request.param)
    return request.param, model, tok


def _english_ratio(text: str) -> float:
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in COMMON for w in words) / max(len(words), 1)


def test_perplexity_on_english_paragraph(loaded):
    import mlx.core as mx
    import mlx.nn as nn

    spec, model, tok = loaded
    ids = build_prompt(tok, "x").tokens[:1] if "gemma" in spec else []  # Gemma needs BOS
    ids = ids + list(tok.encode(PARAGRAPH, add_special_tokens=False))
    assert len(ids) >= 60
    x = mx.array(ids)[None]
    loss = nn.losses.cross_entropy(model(x[:, :-1]).astype(mx.float32), x[:, 1:]).mean()
    ppl = mx.exp(loss).item()
    assert ppl <= 30, f"{spec}: perplexity {ppl:.1f} (a broken conversion gives hundreds)"


def test_greedy_chat_output_is_coherent_english(loaded):
    spec, model, tok = loaded
    eng = Engine(model, tok)
    r = eng.generate([GenerationRequest("beach", "Describe a sunny day at the beach in three sentences.",
                                        "You are a helpful assistant.")], SamplerSettings(max_tokens=32))[0]
    assert r.prompt_format == ("folded" if "gemma" in spec else "system_role")
    words = re.findall(r"[A-Za-z]+", r.text)
    assert len(words) >= 8, r.text
    assert _english_ratio(r.text) >= 0.3, r.text
    if "gemma" in spec:  # a base model: it completes text rather than chatting, so check a fact too
        import mlx_lm

        ids = build_prompt(tok, "x").tokens[:1] + tok.encode("Question: What is the capital of France?\nAnswer:",
                                                           add_special_tokens=False)
        assert "Paris" in mlx_lm.generate(model, tok, ids, max_tokens=4)


def test_greedy_batched_equals_one_at_a_time(loaded):
    """Prompts of different lengths, sharing a > 512-token kernel: batched == mlx-lm's own greedy loop."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    spec, model, tok = loaded
    reqs = [GenerationRequest("short", "Why?", KERNEL),
            GenerationRequest("long", "Should I tell my friend a hard truth about their business plan, "
                                      "even if it hurts them? Explain briefly.", KERNEL),
            GenerationRequest("nokernel", "Name a colour.")]
    s = SamplerSettings(max_tokens=16)
    batched = Engine(model, tok, batch_size=8).generate(reqs, s)
    assert batched[0].prompt_tokens > 512
    for req, res in zip(reqs, batched, strict=True):
        prompt = build_prompt(tok, req.user, req.system).tokens
        ref = []
        for t, _ in generate_step(mx.array(prompt), model, max_tokens=s.max_tokens):
            t = int(t)
            if t in tok.eos_token_ids:
                break
            ref.append(t)
        assert res.tokens == ref, f"{spec} {req.key}: {res.text!r} != {tok.decode(ref)!r}"
