"""Multi-turn conversations through the real pipeline: chat prompts over earlier turns, the engine,
distillation turn by turn (resumable), extraction with one example per assistant turn, and the
mask_prompt check of training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.engine.base import GenerationRequest, SamplerSettings
from lekutils.engine.chat import build_prompt
from lekutils.engine.models.tiny import tiny_tokenizer

HISTORY = ({"role": "user", "content": "what is fair"}, {"role": "assistant", "content": "it depends"})


def test_history_renders_every_turn_with_the_system_text_first() -> None:
    tok = tiny_tokenizer("system")
    p = build_prompt(tok, "tell me more", "be kind", HISTORY)
    assert p.format == "system_role"
    assert p.text == ("<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nwhat is fair<|im_end|>\n"
                      "<|im_start|>assistant\nit depends<|im_end|>\n<|im_start|>user\ntell me more<|im_end|>\n"
                      "<|im_start|>assistant\n")
    folded = build_prompt(tiny_tokenizer("nosystem"), "tell me more", "be kind", HISTORY)
    assert folded.format == "folded"
    assert folded.text == ("<bos><start_of_turn>user\nbe kind\n\nwhat is fair<end_of_turn>\n<start_of_turn>model\n"
                           "it depends<end_of_turn>\n<start_of_turn>user\ntell me more<end_of_turn>\n"
                           "<start_of_turn>model\n")
    plain = build_prompt(tiny_tokenizer(None), "tell me more", "be kind", HISTORY)
    assert plain.text == "be kind\n\nUser: what is fair\nAssistant: it depends\nUser: tell me more\nAssistant:"
    # no history: exactly the single-turn prompt
    for chat in ("system", "nosystem", None):
        t = tiny_tokenizer(chat)
        assert build_prompt(t, "why", "be kind", ()) == build_prompt(t, "why", "be kind")


def test_history_must_alternate_and_end_with_an_answer() -> None:
    with pytest.raises(ValueError, match="alternate"):
        build_prompt(tiny_tokenizer("system"), "x", None, HISTORY[:1])


def test_embedded_tokenizer_formats_a_conversation_like_its_chat_template() -> None:
    from lekutils.engine.models import load

    _, tok = load("embedded:smollm2-135m-instruct")
    p = build_prompt(tok, "And now?", "Be careful.", HISTORY)
    msgs = [{"role": "system", "content": "Be careful."}, *HISTORY, {"role": "user", "content": "And now?"}]
    want = tok._tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert p.text == want and p.format == "system_role"
    single = build_prompt(tok, "what is fair", "Be careful.")
    assert p.tokens[: len(single.tokens) - 3] == single.tokens[: len(single.tokens) - 3]


def test_engine_generates_a_conversation_turn_sharing_the_kernel_prefix() -> None:
    from lekutils.engine.local import Engine
    from lekutils.engine.models.tiny import tiny

    model, tok = tiny("llama")
    eng = Engine(model, tok, batch_size=4, model_spec="tiny")
    sampler = SamplerSettings(temperature=0.8, top_p=0.95, max_tokens=8, seed=3)
    reqs = [GenerationRequest("single", "what is fair", "be kind", 2),
            GenerationRequest("conv", "tell me more", "be kind", 2, HISTORY)]
    out = eng.generate(reqs, sampler)
    assert [(r.key, r.sample_idx) for r in out] == [("single", 0), ("single", 1), ("conv", 0), ("conv", 1)]
    conv = [r for r in out if r.key == "conv"]
    assert conv[0].prompt_tokens == len(build_prompt(tok, "tell me more", "be kind", HISTORY).tokens)
    assert eng.stats["prefix_prefills"] == 1  # the kernel prefix is prefilled once for both
    # the same conversation alone gives the same texts (rows do not depend on their batch)
    alone = Engine(model, tok, batch_size=1, model_spec="tiny").generate(reqs[1:], sampler)
    assert [r.text for r in alone] == [r.text for r in conv]
    eng.check(reqs, sampler)
