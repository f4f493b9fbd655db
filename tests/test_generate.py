"""Engine tests on tiny random MLX models (llama and gemma3 with a sliding window): fast, no files."""

from __future__ import annotations

import pytest

from lekutils.engine.base import (
    GenerationRequest,
    GenerationResult,
    SamplerSettings,
    generate_resumable,
    sample_seed,
)
from lekutils.engine.local import Engine
from lekutils.engine.models.tiny import tiny

KERNEL = "be kind and fair and tell the truth " * 4  # 32 words: longer than the gemma window (16)
REQUESTS = [
    GenerationRequest("short", "why", KERNEL),
    GenerationRequest("long", "tell me why people care about truth and help the world more than harm", KERNEL),
    GenerationRequest("mid", "what is good for people", KERNEL),
    GenerationRequest("nosys", "what do you think"),
]


@pytest.fixture(scope="module", params=[("llama", "system"), ("gemma3", "nosystem")], ids=["llama", "gemma3"])
def mt(request):
    return tiny(*request.param)


def test_greedy_batched_equals_one_at_a_time(mt):
    model, tok = mt
    s = SamplerSettings(max_tokens=24)
    eng = Engine(model, tok, batch_size=8)
    batched = eng.generate(REQUESTS, s)
    assert eng.shared_prefix and eng.stats["shared_prefix_batches"] >= 1
    single = Engine(model, tok, batch_size=1).generate(REQUESTS, s)
    copies = Engine(model, tok, batch_size=8, shared_prefix=False).generate(REQUESTS, s)
    assert [r.key for r in batched] == [r.key for r in REQUESTS]
    for a, b in zip(batched, single, strict=True):
        assert a.tokens == b.tokens, a.key
        assert a.generation_tokens == len(a.tokens)
    assert [a.tokens for a in batched] == [c.tokens for c in copies]
    assert sum(len(a.tokens) for a in batched) > 20


def test_greedy_equals_plain_forward_loop(mt):
    """The engine's greedy tokens equal a plain, uncached argmax loop over the full sequence."""
    import mlx.core as mx

    from lekutils.engine.chat import build_prompt

    model, tok = mt
    r = REQUESTS[1]
    res = Engine(model, tok).generate([r], SamplerSettings(max_tokens=8))[0]
    ids = build_prompt(tok, r.user, r.system).tokens
    out = []
    for _ in range(len(res.tokens)):
        nxt = mx.argmax(model(mx.array(ids + out)[None])[0, -1]).item()
        out.append(nxt)
    assert out == res.tokens


def test_sampling_is_deterministic_and_batch_independent(mt):
    model, tok = mt
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=3) for r in REQUESTS]
    s = SamplerSettings(temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    a = Engine(model, tok, batch_size=16).generate(reqs, s)
    b = Engine(model, tok, batch_size=5).generate(reqs, s)
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert len({tuple(x.tokens) for x in a}) > 3  # samples differ from each other
    c = Engine(model, tok, batch_size=16).generate(reqs, SamplerSettings(temperature=1.0, top_p=0.9,
                                                                          max_tokens=12, seed=8))
    assert [x.tokens for x in a] != [x.tokens for x in c]
    assert [(x.key, x.sample_idx) for x in a] == [(r.key, i) for r in reqs for i in range(3)]
    assert a[0].seed == sample_seed(7, reqs[0].key, 0)


def test_stop_token_ends_row_and_result_fields():
    model, tok = tiny("llama", "system")
    s = SamplerSettings(max_tokens=10)
    eng = Engine(model, tok, batch_size=4, model_spec="tiny")
    free = eng.generate(REQUESTS[:2], s)
    stop_tok = free[0].tokens[2]
    eng.stop_ids = eng.stop_ids | {stop_tok}
    stopped = eng.generate(REQUESTS[:2], s)
    assert stopped[0].finish_reason == "stop"
    assert stopped[0].tokens == free[0].tokens[: free[0].tokens.index(stop_tok)]
    assert free[1].finish_reason in ("length", "stop")
    d = stopped[0].to_dict()
    for k in ("key", "sample_idx", "text", "prompt_tokens", "generation_tokens", "finish_reason",
              "prompt_format", "time_s", "prefill_s", "decode_s", "sampler", "seed", "model"):
        assert k in d
    assert "tokens" not in d
    assert d["sampler"] == s.to_dict() and d["model"] == "tiny" and d["prompt_format"] == "system_role"
    assert d["prompt_tokens"] > 10 and d["time_s"] >= d["decode_s"] > 0


def test_shared_prefix_is_prefilled_once():
    model, tok = tiny("llama", "system")
    eng = Engine(model, tok, batch_size=2)
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=2) for r in REQUESTS[:3]]
    eng.generate(reqs, SamplerSettings(max_tokens=4))
    assert eng.stats["prefix_prefills"] == 1
    eng.generate(reqs, SamplerSettings(max_tokens=4))
    assert eng.stats["prefix_prefills"] == 1 and eng.stats["prefix_hits"] >= 3


def test_settings_validation():
    with pytest.raises(ValueError):
        SamplerSettings(temperature=-1)
    with pytest.raises(ValueError):
        SamplerSettings(top_p=0)
    with pytest.raises(ValueError):
        SamplerSettings(max_tokens=0)
    model, tok = tiny("llama", "system")
    with pytest.raises(ValueError, match="unique"):
        Engine(model, tok).generate([REQUESTS[0], REQUESTS[0]], SamplerSettings())


def test_generate_resumable_equals_uninterrupted():
    model, tok = tiny("llama", "system")
    eng = Engine(model, tok, batch_size=4)
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=3) for r in REQUESTS]
    s = SamplerSettings(temperature=0.9, max_tokens=6, seed=1)
    full: dict[tuple[str, int], GenerationResult] = {}
    st = generate_resumable(eng, reqs, s, is_done=lambda k, i: False,
                            on_chunk=lambda rs: full.update({(r.key, r.sample_idx): r for r in rs}), chunk_size=5)
    assert st["chunks"] == 3 and st["generated"] == 12 and len(full) == 12
    # pretend the run died after storing the first chunk and part of the second
    stored = {k: full[k] for k in list(full)[:7]}
    calls: list[list[tuple[str, int]]] = []

    def on_chunk(rs):
        calls.append([(r.key, r.sample_idx) for r in rs])
        for r in rs:
            stored.setdefault((r.key, r.sample_idx), r)

    st2 = generate_resumable(eng, reqs, s, is_done=lambda k, i: (k, i) in stored, on_chunk=on_chunk, chunk_size=5)
    assert st2["chunks_skipped"] == 1 and st2["chunks_generated"] == 2
    assert [len(c) for c in calls] == [3, 2]  # only the missing items of the incomplete chunk
    assert {k: v.tokens for k, v in stored.items()} == {k: v.tokens for k, v in full.items()}


def test_results_are_stored_as_rows_finish_in_small_groups():
    """Batching stays 8 wide, but results reach the store in groups of at most ``store_every`` as
    rows finish: a kill loses at most one unstored group plus the rows still decoding."""
    model, tok = tiny("llama", "system")
    eng = Engine(model, tok, batch_size=8)
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=4) for r in REQUESTS]
    s = SamplerSettings(temperature=0.9, max_tokens=8, seed=3)
    seen: list[GenerationResult] = []
    direct = eng.generate(reqs, s, on_result=seen.append)
    assert sorted((r.key, r.sample_idx) for r in seen) == sorted((r.key, r.sample_idx) for r in direct)
    groups: list[int] = []
    st = generate_resumable(eng, reqs, s, is_done=lambda k, i: False, on_chunk=lambda rs: groups.append(len(rs)),
                            store_every=3)
    assert st["chunks"] == 1  # continuous batching: the whole work list is one chunk
    assert max(groups) <= 3 and sum(groups) == len(direct)
    assert st["stored_groups"] == len(groups) > st["chunks"]


def test_top_p_candidate_shortcut_matches_full_sort(monkeypatch):
    """Sampling from the top-k candidates gives the same tokens as sorting the whole vocabulary."""
    import mlx.core as mx
    import numpy as np

    import lekutils.engine.sampling as g

    mx.random.seed(0)
    logits = mx.random.normal((6, 5000)) * 3
    u = np.random.default_rng(0).random(6)
    s = SamplerSettings(temperature=0.7, top_p=0.8)
    monkeypatch.setattr(g, "TOP_K", 5000)
    full = g.sample_reference(logits, s, u).tolist()
    assert g.sample(logits, s, u).tolist() == full
    monkeypatch.setattr(g, "TOP_K", 2000)
    assert g.sample_reference(logits, s, u).tolist() == full
    assert g.sample(logits, s, u).tolist() == full
    # with top_p = 1 the inverse CDF over unsorted probabilities follows the distribution
    many = mx.array(np.tile(np.log([0.1, 0.6, 0.3]), (3000, 1)).astype(np.float32))
    for fn in (g.sample_reference, g.sample):
        draws = fn(many, SamplerSettings(temperature=1.0), np.random.default_rng(1).random(3000))
        freq = np.bincount(np.array(draws.tolist()), minlength=3) / 3000
        assert np.allclose(freq, [0.1, 0.6, 0.3], atol=0.03)


def test_rows_from_different_prefixes_decode_together():
    """Rows whose kernels differ can share a batch: their prefixes are put back into whole caches."""
    import numpy as np

    from lekutils.engine.chat import build_prompt
    from lekutils.engine.local import _Prompt, _Row

    model, tok = tiny("llama", "system")
    eng = Engine(model, tok, batch_size=8)
    reqs = [GenerationRequest("a", "why", KERNEL), GenerationRequest("b", "what is good", "be fair and kind")]
    s = SamplerSettings(max_tokens=10)
    ref = eng.generate(reqs, s)  # different prefixes: decoded in separate batches
    prompts = [_Prompt(build_prompt(tok, r.user, r.system), eng._prefix_tokens(r.system)) for r in reqs]
    entries = [eng._request_cache(p) for p in prompts]
    assert all(e.suffix_only and e.start > 0 for e in entries)
    rows = [_Row(i, 0, np.random.default_rng(0), 0) for i in range(2)]
    waiting = [(r, e, p.info.tokens[-1]) for r, e, p in zip(rows, entries, prompts, strict=True)]
    eng._decode(lambda n, sig: [waiting.pop(0) for _ in range(min(n, len(waiting)))], s, lambda r, dt: None)
    assert [r.tokens for r in rows] == [x.tokens for x in ref]


def test_shared_prefix_attention_matches_full_attention():
    """Two-part attention (shared prefix + left-padded rows) == softmax attention over the concatenation."""
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, KVCache

    from lekutils.engine.models.shared_prefix import SharedPrefixCache

    mx.random.seed(0)
    B, Hq, Hkv, D, P = 3, 6, 2, 8, 11
    pk, pv = mx.random.normal((1, Hkv, P, D)), mx.random.normal((1, Hkv, P, D))
    lens = [4, 1, 7]
    parts = []
    for n in lens:
        c = KVCache()
        c.update_and_fetch(mx.random.normal((1, Hkv, n, D)), mx.random.normal((1, Hkv, n, D)))
        parts.append(c)
    cache = SharedPrefixCache(pk, pv, BatchKVCache.merge(parts))
    assert cache.offset.tolist() == [P + n for n in lens]
    q = mx.random.normal((B, Hq, 1, D))
    k_new, v_new = mx.random.normal((B, Hkv, 1, D)), mx.random.normal((B, Hkv, 1, D))
    keys, values = cache.update_and_fetch(k_new, v_new)
    got = cache.attend(q, keys, values, scale=0.3)
    for b, n in enumerate(lens):
        kb = mx.concatenate([pk[0], parts[b].keys[0, :, :n], k_new[b]], axis=1)[None]
        vb = mx.concatenate([pv[0], parts[b].values[0, :, :n], v_new[b]], axis=1)[None]
        ref = mx.fast.scaled_dot_product_attention(q[b: b + 1], kb, vb, scale=0.3)
        assert mx.allclose(got[b: b + 1], ref, atol=1e-5).item()


def test_last_stats_report_occupancy_and_times():
    model, tok = tiny("llama", "system")
    eng = Engine(model, tok, batch_size=4)
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=2) for r in REQUESTS]
    res = eng.generate(reqs, SamplerSettings(max_tokens=6))
    st = eng.last_stats
    for k in ("batch_occupancy", "decode_steps", "decode_tokens", "decode_s", "prefill_tokens", "prefill_s",
              "prefix_prefill_s", "peak_mem_gb"):
        assert k in st, k
    assert 0 < st["batch_occupancy"] <= 1
    assert st["decode_tokens"] >= sum(r.generation_tokens for r in res)
    assert st["prefill_tokens"] > 0 and st["prefix_prefill_s"] > 0
    eng.generate(reqs, SamplerSettings(max_tokens=6))
    assert eng.last_stats["prefix_prefill_s"] == 0  # the kernel prefix is cached now


def test_continuous_batching_refills_finished_rows(mt):
    """Rows that stop early are replaced by waiting rows at once: fewer decode steps than batches cut
    in advance, occupancy near 1, and the same tokens as one row at a time."""
    model, tok = mt
    reqs = [GenerationRequest(r.key, r.user, r.system, n_samples=4) for r in REQUESTS]
    s = SamplerSettings(temperature=1.0, top_p=0.95, max_tokens=16, seed=5)
    free = Engine(model, tok, batch_size=16).generate(reqs, s)
    counts: dict[int, int] = {}
    for r in free:
        for t in r.tokens[1:]:
            counts[t] = counts.get(t, 0) + 1
    stop = max(counts, key=counts.__getitem__)  # a frequent token: rows end at different steps

    def run(b: int) -> tuple[list[GenerationResult], dict]:
        eng = Engine(model, tok, batch_size=b)
        eng.stop_ids = eng.stop_ids | {stop}
        return eng.generate(reqs, s), eng.last_stats

    one, _ = run(1)
    lengths = [len(r.tokens) + (r.finish_reason == "stop") for r in one]  # decode steps of each row
    assert min(lengths) < max(lengths) and any(r.finish_reason == "stop" for r in one)
    fewer = []
    for b in (2, 3, 4):
        got, st = run(b)
        assert [r.tokens for r in got] == [r.tokens for r in one]
        assert [r.finish_reason for r in got] == [r.finish_reason for r in one]
        assert st["decode_tokens"] == sum(lengths)
        # batches cut in advance (per prefix group) would take the longest row of each batch
        groups = [[n for r, n in zip(one, lengths, strict=True) if (r.key == "nosys") == nosys] for nosys in (0, 1)]
        static = sum(max(g[i: i + b]) for g in groups for i in range(0, len(g), b))
        assert st["decode_steps"] <= static
        fewer.append(st["decode_steps"] < static and st["batch_occupancy"] > sum(lengths) / (static * b))
    assert any(fewer)


def test_sliding_window_shared_prefix_attention_matches_windowed_attention():
    """With a window, each row sees only its last ``window`` positions: prefix tail + own tokens,
    including rows whose window has left the prefix entirely."""
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, KVCache

    from lekutils.engine.models.shared_prefix import SharedPrefixCache

    mx.random.seed(1)
    B, Hq, Hkv, D, P, W = 3, 4, 2, 8, 11, 6
    pk, pv = mx.random.normal((1, Hkv, P, D)), mx.random.normal((1, Hkv, P, D))
    lens = [3, 1, 7]  # own tokens before this step; the last row's window (6) no longer reaches the prefix
    parts = []
    for n in lens:
        c = KVCache()
        c.update_and_fetch(mx.random.normal((1, Hkv, n, D)), mx.random.normal((1, Hkv, n, D)))
        parts.append(c)
    keep = W - 1  # only the prefix's last window - 1 tokens can be seen
    cache = SharedPrefixCache(pk[:, :, -keep:], pv[:, :, -keep:], BatchKVCache.merge(parts), prefix_len=P, window=W)
    assert cache.offset.tolist() == [P + n for n in lens]
    q = mx.random.normal((B, Hq, 1, D))
    k_new, v_new = mx.random.normal((B, Hkv, 1, D)), mx.random.normal((B, Hkv, 1, D))
    keys, values = cache.update_and_fetch(k_new, v_new)
    got = cache.attend(q, keys, values, scale=0.3)
    assert not mx.any(mx.isnan(got)).item()
    for b, n in enumerate(lens):
        kb = mx.concatenate([pk[0], parts[b].keys[0, :, :n], k_new[b]], axis=1)[:, -W:][None]
        vb = mx.concatenate([pv[0], parts[b].values[0, :, :n], v_new[b]], axis=1)[:, -W:][None]
        ref = mx.fast.scaled_dot_product_attention(q[b: b + 1], kb, vb, scale=0.3)
        assert mx.allclose(got[b: b + 1], ref, atol=1e-5).item(), b
    with pytest.raises(ValueError, match="window"):
        SharedPrefixCache(pk, pv, BatchKVCache.merge(parts), window=0)


def test_sliding_window_layers_share_the_prefix(monkeypatch):
    """Gemma 3's sliding-window layers keep the kernel prefix once per batch, not once per row, and
    give the tokens of per-row copies."""
    import lekutils.engine.local as local
    from lekutils.engine.models.shared_prefix import SharedPrefixCache

    monkeypatch.setattr(local, "_MIN_WINDOW_SHARE", 8)  # the tiny model's kernel prefix is ~40 tokens
    model, tok = tiny("gemma3", "nosystem")
    s = SamplerSettings(max_tokens=24)
    copies = Engine(model, tok, batch_size=8, shared_prefix=False).generate(REQUESTS, s)
    shared = Engine(model, tok, batch_size=8).generate(REQUESTS, s)
    assert [a.tokens for a in shared] == [c.tokens for c in copies]
    eng = Engine(model, tok, batch_size=4)
    seen: list[list] = []
    orig = eng._batch_cache

    def spy(entries):
        out = orig(entries)
        seen.append(out)
        return out

    eng._batch_cache = spy
    eng.generate([GenerationRequest("a", "why", KERNEL, n_samples=3)], SamplerSettings(max_tokens=4))
    kinds = {type(c).__name__ for c in seen[0]}
    assert kinds == {"SharedPrefixCache"}, kinds
    windows = [c.window for c in seen[0]]
    assert None in windows and any(w for w in windows)  # full-attention and sliding layers both shared
    sliding = next(c for c in seen[0] if c.window)
    assert isinstance(sliding, SharedPrefixCache) and sliding.prefix_keys.shape[0] == 1
    assert sliding.prefix_keys.shape[2] == min(sliding.window - 1, sliding.prefix_len)
