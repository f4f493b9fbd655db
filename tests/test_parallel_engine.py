"""ParallelEngine: one engine per CPU core, the same texts as one engine."""

from __future__ import annotations

import threading

import pytest

from lekutils.engine.base import GenerationRequest, SamplerSettings, generate_resumable
from lekutils.engine.parallel import ENV, ParallelEngine, decode_workers


def test_decode_workers_values(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert decode_workers() == 1
    assert decode_workers(3) == 3 and decode_workers("2") == 2
    assert decode_workers("auto") >= 1
    monkeypatch.setenv(ENV, "2")
    assert decode_workers() == 2
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match=ENV):
            decode_workers(bad)


@pytest.mark.e2e
def test_two_engines_give_the_texts_of_one_and_stream_in_this_thread():
    from lekutils.engine.factory import open_generator

    spec = "embedded:smollm2-135m-instruct"
    reqs = [GenerationRequest(f"p{i}", u, "Be honest and kind.", n_samples=3)
            for i, u in enumerate(["Is lying ever right?", "Write two lines about rain.", "What is fairness?"])]
    s = SamplerSettings(temperature=0.8, top_p=0.95, max_tokens=12, seed=4)
    one = open_generator(spec, batch_size=4, workers=1)
    ref = one.generate(reqs, s)
    with ParallelEngine(spec, workers=2, batch_size=4) as two:
        threads: set[int] = set()
        seen = []

        def on_result(r):
            threads.add(threading.get_ident())
            seen.append((r.key, r.sample_idx))

        got = two.generate(reqs, s, on_result=on_result)
        assert [(r.key, r.sample_idx) for r in got] == [(r.key, r.sample_idx) for r in ref]
        assert [r.tokens for r in got] == [r.tokens for r in ref]
        assert sorted(seen) == sorted((r.key, r.sample_idx) for r in ref)
        assert threads == {threading.get_ident()}
        assert two.last_stats["engines"] == 2 and two.last_stats["decode_tokens"] >= 9
        # resumable: only the missing rows are generated, by both engines
        stored = {(r.key, r.sample_idx): r for r in ref if r.sample_idx != 1}
        st = generate_resumable(two, reqs, s, is_done=lambda k, i: (k, i) in stored,
                                on_chunk=lambda rs: stored.update({(r.key, r.sample_idx): r for r in rs}))
        assert st["generated"] == 3
        assert {k: v.tokens for k, v in stored.items()} == {(r.key, r.sample_idx): r.tokens for r in ref}
        assert two._procs and all(p.is_alive() for p, _, _ in two._procs)
    assert not two._procs
