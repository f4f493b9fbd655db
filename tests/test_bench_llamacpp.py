"""The llama.cpp peer of the generation benchmark, for real on SmolLM2 with a few tokens (skipped
where ``llama_cpp`` is not importable: it is the optional ``bench`` extra)."""

from __future__ import annotations

import pytest

from lekutils.bench.llamacpp import LlamaCppPeer, PeerUnavailable, _lcp, gguf_path, import_llama_cpp

SPEC = "embedded:smollm2-135m-instruct"


def test_lcp():
    assert _lcp([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert _lcp([[5], [6]]) == 0 and _lcp([[1, 2], [1, 2]]) == 2


def test_gguf_path_refuses_a_non_gguf_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PeerUnavailable, match="not a GGUF"):
        gguf_path(str(tmp_path))


@pytest.fixture(scope="module")
def peer_and_prompts():
    try:
        import_llama_cpp()
    except PeerUnavailable as ex:
        pytest.skip(f"llama.cpp peer not testable: {ex}")
    from lekutils.engine import models
    from lekutils.engine.chat import build_prompt

    _, tok = models.load(SPEC)
    system = "Be kind and tell the truth. " * 8
    prompts = [build_prompt(tok, u, system).tokens for u in ("Is honesty always right?", "What is fairness?")]
    with LlamaCppPeer(gguf_path(SPEC), threads=1, n_ctx=1024, n_seq_max=4, n_batch=64) as peer:
        yield peer, prompts, tok


@pytest.mark.model
def test_single_and_batched_decode(peer_and_prompts):
    peer, prompts, tok = peer_and_prompts
    one = peer.decode(prompts[:1], 4)
    assert one.rows == 1 and one.decode_steps == 4 and one.decode_tokens == 4 and len(one.tokens[0]) == 4
    assert one.prompt_tokens == len(prompts[0]) - 1  # the last prompt token is decode step 1
    assert one.decode_tok_s > 0 and one.prefill_tok_s > 0
    assert tok.decode(one.tokens[0]).strip()
    many = peer.decode([prompts[0], prompts[0], prompts[1], prompts[1]], 4)
    assert many.rows == 4 and many.decode_tokens == 16
    shared = _lcp(prompts)
    # the common prefix once, each distinct prompt's own tokens (but the last) once
    assert many.prompt_tokens == shared + sum(len(p) - 1 - shared for p in prompts)
    assert many.tokens[0] == many.tokens[1] and many.tokens[2] == many.tokens[3]  # greedy, same prompt
    assert many.tokens[0][0] == one.tokens[0][0]
    with pytest.raises(ValueError):
        peer.decode(prompts * 3, 2)  # 6 rows > n_seq_max


@pytest.mark.model
def test_first_token_cold_then_warm_reuses_the_prefix(peer_and_prompts):
    peer, prompts, _ = peer_and_prompts
    cold = peer.first_token(prompts[0], warm=False)
    assert cold["reused_tokens"] == 0 and cold["evaluated_tokens"] == len(prompts[0])
    warm = peer.first_token(prompts[1], warm=True)
    assert warm["reused_tokens"] == _lcp(prompts) and warm["evaluated_tokens"] == len(prompts[1]) - _lcp(prompts)
    again = peer.first_token(prompts[1], warm=True)  # the same prompt: all but its last token reused
    assert again["evaluated_tokens"] == 1 and again["first_token"] == warm["first_token"]
    assert peer.first_token(prompts[1], warm=False)["first_token"] == warm["first_token"]
    assert peer.decode(prompts[:1], 1).tokens[0][0] == cold["first_token"]


def test_import_llama_cpp_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    with pytest.raises(PeerUnavailable, match=r"lekutils\[bench\]"):
        import_llama_cpp()


@pytest.mark.model
def test_engine_and_llamacpp_agree_on_the_first_greedy_token(peer_and_prompts):
    """Same GGUF, same prompt tokens: the engine's and llama.cpp's greedy first tokens agree (cold and warm)."""
    from lekutils.bench.generate import engine_ttft
    from lekutils.engine import models

    peer, prompts, _ = peer_and_prompts
    model, tok = models.load(SPEC)
    system = "Be kind and tell the truth. " * 8
    et = engine_ttft(model, tok, SPEC, system, ["Is honesty always right?", "What is fairness?"])
    assert et["warm"]["prefill_tokens"] < et["cold"]["prefill_tokens"]  # the prefix came from the engine's cache
    lc_cold = peer.first_token(prompts[0], warm=False)
    lc_warm = peer.first_token(prompts[1], warm=True)
    assert (et["cold"]["first_token"], et["warm"]["first_token"]) == (lc_cold["first_token"], lc_warm["first_token"])
