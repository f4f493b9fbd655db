"""External augmentation through a real ``mlx_lm.server`` on 127.0.0.1 (issue 16 part 5): SmolLM2-135M
distils in-process, the same model served by ``mlx_lm.server`` is the reference model (``openai:`` spec),
mixed 70/30 (Gemma 3's chat template refuses a system message, which the server answers with a 404, so
the served model here is SmolLM2). The server is killed (-9) inside the reference task: the phase fails naming the endpoint and
writes nothing partial; after a restart the re-run asks only for the missing answers (none lost, none
twice). Skipped where the remote backend (``lekutils.engine.remote``) is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lekutils.engine.remote", reason="the remote (openai:) backend is not part of this tree")

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "data" / "prompts" / "phase2-multiperspective-v1.json"
KERNEL = ROOT / "data" / "kernels" / "lek-example-v1.json"
QUICK = {"retries": 1, "backoff_s": 0.05, "down_s": 0.1, "timeout_s": 60.0, "connect_timeout_s": 2.0, "in_flight": 1}


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(r["key"], r["sample_idx"]) for r in map(json.loads, path.read_text().splitlines())]


def test_distill_with_a_served_reference_model_killed_and_restarted(tmp_path: Path) -> None:
    from lekutils.data.probes import load_probes  # noqa: I001 - sorted as in the merged tree (engine.remote)
    from lekutils.engine.mlx_server import free_port, start_mlx_server
    from lekutils.engine.models import mlx_model_dir
    from lekutils.engine.remote import RemoteError, endpoint_name
    from lekutils.tasks.augment import reference_raw_path
    from lekutils.tasks.distill import DistillSettings, distill, generation_records, read_summary
    from lekutils.tasks.loop import work_path

    model_dir = mlx_model_dir("embedded:smollm2-135m-instruct")
    port = free_port()
    srv = start_mlx_server(model_dir, port=port, log_path=tmp_path / "server.log")
    spec = f"openai:default_model@{srv.url}"
    probes = load_probes(PROMPTS)[:2]
    settings = DistillSettings(phase=2, model="embedded:smollm2-135m-instruct", kernel=str(KERNEL), samples=4,
                               temperature=0.8, max_tokens=24, keep_on="none", allow_truncated=True, batch_size=4,
                               store_every=1, reference_models=(spec,), reference_samples=3, reference_fraction=0.3)
    raw = tmp_path / "distill" / "phase2" / "raw.jsonl"
    ref_work = work_path(reference_raw_path(raw, spec))
    seen = [0]

    def progress(n: int) -> None:
        seen[0] += n
        if seen[0] == 8 + 1:  # the 8 self-distilled answers, then the first reference answer
            srv.kill()  # SIGKILL: what is in flight dies with it

    try:
        with pytest.raises(RemoteError, match=endpoint_name(srv.url)) as err:
            distill(probes, raw, settings, progress=progress, reference_options=QUICK)
        assert not srv.alive() and not raw.exists(), str(err.value)  # nothing partial written
        stored = _keys(ref_work)
        assert 1 <= len(stored) < 6 and len(stored) == len(set(stored))
        assert len(_keys(work_path(raw))) == 8
        srv = start_mlx_server(model_dir, port=port, log_path=tmp_path / "server.log")
        summary = distill(probes, raw, settings, reference_options=QUICK)
    finally:
        srv.stop()
    keys = _keys(ref_work)
    assert len(keys) == len(set(keys)) == 6 and keys[:len(stored)] == stored  # the re-run asked only for the rest
    recs = generation_records(raw)
    refs = [r for r in recs if r["source"] == spec]
    assert len(recs) == 14 and len(refs) == 6
    assert all(r["source_model"] == "default_model" and r["served_model"] == "default_model" for r in refs)
    # keep_on none: 8 self answers kept -> 3 references (3/11 = 27.3%, closer to 30% than 4/12)
    mix = summary["mix"]
    assert (mix["self_used"], mix["reference_used"], mix["reference_kept"]) == (8, 3, 6)
    assert mix["achieved_fraction"] == round(3 / 11, 4) and read_summary(raw)["mix"] == mix
    assert {s["source"]: s["used"] for s in summary["sources"]} == {"self": 8, spec: 3}
