"""Remote generation through a REAL ``mlx_lm.server`` on 127.0.0.1 serving the embedded SmolLM2's
converted MLX folder (started via ``python -m lekutils exec``, so on OpenBLAS): an A/B test and a
distillation phase through it, a second endpoint that is down (failover), and the server killed
(SIGKILL) mid-run and restarted (the run resumes: nothing lost, nothing duplicated, the same texts
as an uninterrupted run). Small: 2-3 probes, 16 tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lekutils.data.kernels import conditions
from lekutils.data.probes import load_probes
from lekutils.engine.base import SamplerSettings
from lekutils.engine.mlx_server import free_port, start_mlx_server
from lekutils.engine.remote import RemoteError, endpoint_name
from lekutils.tasks.abtest import load_ab, load_ab_summary, run_ab
from lekutils.tasks.loop import work_path

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "data" / "probes" / "eval-v1.json"
KERNEL = ROOT / "data" / "kernels" / "lek-example-v1.json"
SAMPLER = SamplerSettings(max_tokens=16)
QUICK = {"retries": 1, "backoff_s": 0.05, "down_s": 0.1, "timeout_s": 60.0, "connect_timeout_s": 2.0}


@pytest.fixture(scope="module")
def model_dir() -> str:
    from lekutils.engine.models import mlx_model_dir

    return mlx_model_dir("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def server(model_dir: str, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("srv") / "server.log"
    with start_mlx_server(model_dir, log_path=log) as srv:
        yield srv


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(r["key"], r["sample_idx"]) for r in map(json.loads, path.read_text().splitlines())]


def test_ab_through_mlx_server_with_a_down_endpoint(server, tmp_path: Path) -> None:
    probes = load_probes(EVAL)[:2]
    conds = conditions({"json": str(KERNEL)})
    dead = f"http://127.0.0.1:{free_port()}/v1"
    spec = f"openai:default_model@{server.url},{dead}"
    out = tmp_path / "ab.jsonl"
    s = run_ab(spec, probes, conds, out, sampler=SAMPLER, generator_options=QUICK)
    assert s["total_probes"] == 2 and s["generated_this_run"] == 4 and s["prompt_formats"] == ["server"]
    fp = s["model_fingerprint"]
    assert fp["kind"] == "openai" and fp["identity"] == "openai:default_model"
    assert fp["server_models"][endpoint_name(server.url)] == "default_model"
    assert fp["server_models"][endpoint_name(dead)] is None
    for rec in load_ab(out):
        assert rec["model"] == spec
        for c in rec["conditions"].values():
            assert c["endpoint"] == endpoint_name(server.url) and c["served_model"] == "default_model"
            assert c["response"] and 0 < c["generation_tokens"] <= 16 and c["prompt_tokens"] > 0
            assert c["sampler"] == SAMPLER.to_dict()
    # the kernel is the system message: the kernel condition's prompts are much longer
    rec = load_ab(out)[0]
    assert rec["conditions"]["json"]["prompt_tokens"] > rec["conditions"]["baseline"]["prompt_tokens"] + 100


def test_distill_phase_through_mlx_server(server, tmp_path: Path) -> None:
    from lekutils.tasks.distill import DistillSettings, distill

    probes = load_probes(EVAL)[:2]
    settings = DistillSettings(phase=1, model=f"openai:default_model@{server.url}", samples=2,
                               temperature=0.8, max_tokens=16, keep_on="none", allow_truncated=True, batch_size=4)
    summary = distill(probes, tmp_path / "raw.jsonl", settings)
    lines = [json.loads(x) for x in (tmp_path / "raw.jsonl").read_text().splitlines()]
    gens = [x for x in lines if x.get("type") in ("training", "generation")]
    assert len(gens) == 4 and summary["type"] == "summary"
    seeds = {x.get("sample_seed") for x in map(json.loads, work_path(tmp_path / "raw.jsonl").read_text().splitlines())}
    assert len(seeds) == 4  # one seeded request per sample


def test_server_killed_mid_run_and_restarted(model_dir: str, tmp_path: Path) -> None:
    probes = load_probes(EVAL)[:3]
    conds = conditions({})  # baseline only: short prompts, a quick test
    opts = {**QUICK, "in_flight": 1}
    port = free_port()
    srv = start_mlx_server(model_dir, port=port, log_path=tmp_path / "server.log")
    spec = f"openai:default_model@{srv.url}"
    try:
        ref = tmp_path / "ref.jsonl"  # uninterrupted
        run_ab(spec, probes, conds, ref, sampler=SAMPLER, store_every=1, generator_options=opts)
        out = tmp_path / "ab.jsonl"
        seen = [0]

        def progress(n: int) -> None:
            seen[0] += n
            if seen[0] == 1:
                srv.kill()  # SIGKILL: the request in flight dies with it

        with pytest.raises(RemoteError, match=endpoint_name(srv.url)):
            run_ab(spec, probes, conds, out, sampler=SAMPLER, store_every=1, generator_options=opts,
                   progress=progress)
        assert not srv.alive() and not out.exists()
        stored = _keys(work_path(out))
        assert len(stored) == 1 == len(set(stored))
        srv = start_mlx_server(model_dir, port=port, log_path=tmp_path / "server.log")
        s = run_ab(spec, probes, conds, out, sampler=SAMPLER, store_every=1, generator_options=opts)
    finally:
        srv.stop()
    assert s["resumed"] and s["generated_this_run"] == 2 and s["total_probes"] == 3
    keys = _keys(work_path(out))
    assert len(keys) == len(set(keys)) == 3
    assert load_ab_summary(out)["conditions"] == load_ab_summary(ref)["conditions"]
    texts = {(r["id"], c): v["response"] for r in load_ab(out) for c, v in r["conditions"].items()}
    assert texts == {(r["id"], c): v["response"] for r in load_ab(ref) for c, v in r["conditions"].items()}
