"""The generation benchmark's final JSON line: its keys, the ratio arithmetic and the engine-stats
fallbacks, with fakes in place of the engine and llama.cpp (fast, no model)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lekutils.bench import generate as g

ISSUE_KEYS = {
    "engine_decode_tok_s", "llamacpp_decode_tok_s", "decode_ratio_vs_llamacpp", "batch_occupancy",
    "llamacpp_prefill_tok_s", "llamacpp_batched_decode_tok_s", "engine_ttft_cold_s", "engine_ttft_warm_s",
    "llamacpp_ttft_cold_s", "llamacpp_ttft_warm_s", "engine_prefill_tok_s", "engine_peak_mem_gb",
    "load_average_start", "load_average_end",
}


def _res(n_tokens: int, decode_s: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(generation_tokens=n_tokens, decode_s=decode_s, prompt_tokens=10, prefill_s=0.1,
                           time_s=decode_s + 0.1, text="x", tokens=[7] * n_tokens)


def test_occupancy_arithmetic():
    assert g.occupancy(96, 8, 16) == 0.75
    assert g.occupancy(10, 0, 16) is None


def test_engine_stats_prefers_the_engines_last_stats():
    eng = SimpleNamespace(stats={"decode_tokens": 999, "decode_s": 9.0, "prefill_tokens": 9, "prefill_s": 9.0},
                          last_stats={"batch_occupancy": 0.9, "decode_steps": 10, "decode_tokens": 144,
                                      "decode_s": 2.0, "prefill_tokens": 50, "prefill_s": 0.5,
                                      "prefix_prefill_s": 0.3, "peak_mem_gb": 1.25})
    st = g.engine_stats(eng, [_res(9)] * 16, 16)
    assert st["batch_occupancy"] == 0.9 and st["occupancy_source"] == "engine"
    assert st["decode_tok_s"] == 72.0 and st["prefill_tok_s"] == 100.0
    assert st["decode_steps"] == 10 and st["prefix_prefill_s"] == 0.3 and st["peak_mem_gb"] == 1.25


def test_engine_stats_falls_back_to_cumulative_stats_and_results():
    """Before the engine sets last_stats: deltas of its cumulative stats; steps estimated from the results."""
    eng = SimpleNamespace(stats={"decode_tokens": 1000 + 20 * 8, "decode_s": 5.0 + 4.0, "prefill_tokens": 100 + 60,
                                 "prefill_s": 1.0 + 0.5})
    before = {"decode_tokens": 1000, "decode_s": 5.0, "prefill_tokens": 100, "prefill_s": 1.0}
    st = g.engine_stats(eng, [_res(8)] * 20, 16, before)  # 20 rows of 8 tokens at batch 16: 2 batches x 8 steps
    assert st["decode_tokens"] == 160 and st["decode_s"] == 4.0 and st["decode_tok_s"] == 40.0
    assert st["prefill_tok_s"] == 120.0
    assert st["decode_steps"] == 16 and st["batch_occupancy"] == 160 / (16 * 16)
    assert st["occupancy_source"] == "estimated" and st["peak_mem_gb"] is None
    # an engine with neither: the results alone
    st = g.engine_stats(SimpleNamespace(), [_res(4, 2.0)] * 4, 4)
    assert st["decode_tokens"] == 16 and st["decode_s"] == 2.0 and st["batch_occupancy"] == 1.0


def _summary() -> dict:
    return {
        "json": {"by_batch_size": {
            "16": {"engine_decode_tok_s": 150.0, "batch_occupancy": 1.0, "engine_peak_mem_gb": 0.8},
            "32": {"engine_decode_tok_s": 240.0, "batch_occupancy": 0.95, "engine_peak_mem_gb": 1.1}},
            "llamacpp": {"decode_tok_s": 120.0, "prefill_tok_s": 300.0,
                         "batched": {"16": {"decode_tok_s": 200.0}, "32": {"decode_tok_s": 300.0}}}},
        "ttft": {"engine": {"cold": {"ttft_s": 4.0, "prefill_tok_s": 512.0}, "warm": {"ttft_s": 0.1}},
                 "llamacpp": {"cold": {"ttft_s": 8.0, "prefill_tok_s": 256.0}, "warm": {"ttft_s": 0.2}}},
    }


def test_headline_keys_and_ratios():
    h = g.headline(_summary(), "json")
    assert ISSUE_KEYS - {"load_average_start", "load_average_end"} <= set(h)
    assert h["engine_batch_size"] == 32 and h["engine_decode_tok_s"] == 240.0
    assert h["llamacpp_decode_tok_s"] == 120.0 and h["decode_ratio_vs_llamacpp"] == 2.0
    assert h["batch_occupancy"] == 0.95
    assert h["engine_peak_mem_gb"] == {"16": 0.8, "32": 1.1}
    assert h["llamacpp_batched_decode_tok_s"] == {"16": 200.0, "32": 300.0}
    assert h["decode_ratio_vs_llamacpp_batched"] == {"16": 0.75, "32": 0.8}
    assert h["engine_prefill_tok_s"] == 512.0 and h["llamacpp_prefill_tok_s"] == 256.0
    assert (h["engine_ttft_cold_s"], h["engine_ttft_warm_s"]) == (4.0, 0.1)
    assert (h["llamacpp_ttft_cold_s"], h["llamacpp_ttft_warm_s"]) == (8.0, 0.2)


def test_headline_without_peer_or_ttft_has_every_key_as_none():
    s = _summary()
    del s["json"]["llamacpp"], s["ttft"]
    h = g.headline(s, "json")
    assert h["engine_decode_tok_s"] == 240.0 and h["decode_ratio_vs_llamacpp"] is None
    for k in ("llamacpp_decode_tok_s", "llamacpp_batched_decode_tok_s", "decode_ratio_vs_llamacpp_batched",
              "engine_ttft_cold_s", "llamacpp_ttft_warm_s", "llamacpp_prefill_tok_s"):
        assert h[k] is None
    assert g.headline({}, "json")["engine_decode_tok_s"] is None


class _Tok:
    """A whitespace 'tokenizer': one id per character (enough for the prompt plumbing)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_ttft_system_text_repeats_and_cuts_by_tokens():
    text, n = g.ttft_system_text(_Tok(), "abc", 8)
    assert text == "abcabcab" and n == 8
    with pytest.raises(ValueError):
        g.ttft_system_text(_Tok(), "", 8)


@pytest.mark.parametrize("peer", [True, False])
def test_final_json_line_has_the_issue_keys(monkeypatch, capsys, peer):
    """The whole run() with fakes for the engine, the loops and llama.cpp: the last line printed is the
    JSON summary with every key of issue 18, per batch size where asked."""
    from lekutils.engine import chat, models

    monkeypatch.setattr(models, "load", lambda spec: (object(), _Tok()))
    monkeypatch.setattr(models, "load_info", lambda m: {"dtype": "float32", "device": "cpu"})
    monkeypatch.setattr(chat, "build_prompt",
                        lambda tok, user, system=None, history=(): chat.PromptInfo(tok.encode(f"{system}|{user}"),
                                                                                   "", "system_role"))
    monkeypatch.setattr(g, "set_openblas_threads", lambda n: n)
    monkeypatch.setattr(g, "kernel_text", lambda kind: ("K" * 50, "fake"))

    def fake_engine_run(model, tok, spec, system, probes, samples, max_tokens, temperature, top_p, b, keep_eos=False, workers=1):
        return {"samples": len(probes) * samples, "wall_s": 10.0, "samples_per_hour": 100.0 + b,
                "prompt_tokens": 60, "prefill_tokens": 60, "prefill_s": 0.5, "prefill_tok_s": 120.0,
                "decode_tokens": 4 * b, "decode_s": 1.0, "decode_steps": 4, "decode_tok_s": 4.0 * b,
                "batch_occupancy": 1.0, "occupancy_source": "estimated", "peak_mem_gb": b / 100, "max_rss_gb": 1.0,
                "example": "x"}

    monkeypatch.setattr(g, "engine_run", fake_engine_run)
    monkeypatch.setattr(g, "engine_ttft", lambda *a: {
        "cold": {"ttft_s": 2.0, "prefill_tokens": 2000, "prefill_tok_s": 1000.0, "first_token": 5},
        "warm": {"ttft_s": 0.05, "prefill_tokens": 20, "prefill_tok_s": 400.0, "first_token": 6}})
    calls = {}

    def fake_peer_run(spec, tok, prompts, ttft_prompts, *, threads, batch_sizes, max_tokens):
        calls.update(threads=threads, batch_sizes=batch_sizes, kinds=list(prompts), ttft=len(ttft_prompts))
        kind = {"prompt_tokens": 60, "prefill_tok_s": 300.0, "decode_tok_s": 32.0,
                "batched": {str(b): {"decode_tok_s": 2.0 * b} for b in batch_sizes}}
        return {"version": "0", "gguf": "m.gguf", "threads": threads, "sampling": "greedy", "json": kind,
                "ttft": {"cold": {"ttft_s": 4.0, "evaluated_tokens": 2000, "reused_tokens": 0,
                                  "prefill_tok_s": 500.0, "first_token": 5},
                         "warm": {"ttft_s": 0.1, "evaluated_tokens": 20, "reused_tokens": 1990,
                                  "prefill_tok_s": 200.0, "first_token": 7}}}

    monkeypatch.setattr(g, "peer_run", fake_peer_run)
    args = g.build_parser().parse_args(["--skip-upstream", "--skip-own-loop", "--kernels", "json",
                                        "--batch-sizes", "16", "32", "--ttft-tokens", "64", "--blas-threads", "2",
                                        "--peer" if peer else "--no-peer"])
    summary = g.run(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(summary))
    assert ISSUE_KEYS <= set(last)
    assert last["engine_peak_mem_gb"] == {"16": 0.16, "32": 0.32}
    assert last["engine_decode_tok_s"] == 128.0 and last["batch_occupancy"] == 1.0
    assert len(last["load_average_start"]) == 3 and len(last["load_average_end"]) == 3
    assert last["engine_ttft_cold_s"] == 2.0 and last["engine_prefill_tok_s"] == 1000.0
    if peer:
        assert calls == {"threads": 2, "batch_sizes": [16, 32], "kinds": ["json"], "ttft": 2}
        assert last["llamacpp_threads"] == 2 and last["llamacpp_skipped"] is None
        assert last["llamacpp_decode_tok_s"] == 32.0 and last["decode_ratio_vs_llamacpp"] == 4.0
        assert last["llamacpp_batched_decode_tok_s"] == {"16": 32.0, "32": 64.0}
        assert last["decode_ratio_vs_llamacpp_batched"] == {"16": 2.0, "32": 2.0}
        assert (last["llamacpp_ttft_cold_s"], last["llamacpp_ttft_warm_s"]) == (4.0, 0.1)
        assert last["llamacpp_prefill_tok_s"] == 500.0
        assert last["ttft"]["first_token_match"] == {"cold": True, "warm": False}
    else:
        assert not calls and last["llamacpp_skipped"] == "--no-peer"
        assert last["llamacpp_decode_tok_s"] is None and last["decode_ratio_vs_llamacpp"] is None


def test_batch_size_option_keeps_the_old_spelling():
    assert g.build_parser().parse_args(["--batch-size", "8"]).batch_sizes == [8]
    assert g.build_parser().parse_args([]).batch_sizes == [16, 32]
