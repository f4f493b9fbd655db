"""Fault injection (marker ``faults``, run in CI): ``kill -9`` at seeded random points of an A/B test,
a distillation and a training phase (subprocesses on tiny random models), torn tails at every byte offset of a record
holding multi-byte text, two concurrent runs on one output, and a full disk (``ENOSPC`` injected into
the store's writes). After each fault a re-run completes with 0 lost and 0 duplicated records, and
its results equal an uninterrupted run's.

Every case appends one line to ``FAULT_LOG`` (``$LEK_FAULT_LOG`` or none), so a CI run can count them.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lekutils.core import jsonl
from lekutils.core.jsonl import JsonlStore
from lekutils.data.kernels import conditions
from lekutils.data.probes import load_probes
from lekutils.engine.base import SamplerSettings
from lekutils.engine.local import Engine
from lekutils.engine.models.tiny import tiny
from lekutils.tasks.abtest import load_ab, run_ab
from lekutils.tasks.distill import DistillSettings, distill, generation_records
from lekutils.tasks.loop import work_path

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "data" / "probes" / "eval-v1.json"
N_PROBES, MAX_TOKENS, BATCH, STORE_EVERY = 5, 12, 8, 2
SEED = int(os.environ.get("LEK_FAULT_SEED", "20261206"))


def _log(case: str, **info: object) -> None:
    path = os.environ.get("LEK_FAULT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case, **info}) + "\n")


def _engine() -> Engine:
    model, tok = tiny("llama", "system", seed=1)
    return Engine(model, tok, batch_size=BATCH, model_spec="tiny:system")


def _probes() -> list:
    return load_probes(EVAL)[:N_PROBES]


def _ab(out: Path, **kw: object) -> dict:
    return run_ab("tiny:system", _probes(), conditions(), out, engine=_engine(),
                  sampler=SamplerSettings(max_tokens=MAX_TOKENS), store_every=STORE_EVERY, **kw)


def _distill_settings() -> DistillSettings:
    return DistillSettings(phase=1, model="tiny:system", kernel=str(ROOT / "data" / "kernels" / "lek-example-v1.txt"),
                           samples=3, temperature=0.9, top_p=0.95, max_tokens=MAX_TOKENS, seed=5, keep_threshold=-99.0,
                           allow_truncated=True, batch_size=BATCH, store_every=STORE_EVERY)


def _distill(raw: Path) -> dict:
    return distill(_probes()[:3], raw, _distill_settings(), engine=_engine())


def _ab_responses(out: Path) -> dict:
    return {(r["id"], c): v["response"] for r in load_ab(out) for c, v in r["conditions"].items()}


def _distill_responses(raw: Path) -> dict:
    return {(r["prompt_id"], r["sample_idx"]): (r["response"], r["lek_score"]) for r in generation_records(raw)}


def _key(r: dict) -> tuple[str, int]:
    return (r["key"], int(r["sample_idx"]))


def _work_keys(path: Path) -> list[tuple[str, int]]:
    return [(r["key"], r["sample_idx"]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("reference")
    _ab(d / "ab.jsonl")
    _distill(d / "distill" / "raw.jsonl")
    return {"ab": _ab_responses(d / "ab.jsonl"), "distill": _distill_responses(d / "distill" / "raw.jsonl"),
            "ab_items": N_PROBES * 3, "distill_items": 9}


CHILD = """
import json, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
import test_faults as tf
from lekutils.engine.local import Engine
plain = Engine.generate


def generate(self, *a, on_result=None, **k):  # report each finished row: what a kill may lose is counted
    def report(r):
        print("FIN", json.dumps([r.key, r.sample_idx]), flush=True)
        if on_result is not None:
            on_result(r)
    return plain(self, *a, on_result=report, **k)


Engine.generate = generate
print("READY", flush=True)
out = Path(sys.argv[2])
s = tf._ab(out) if sys.argv[1] == "ab" else tf._distill(out)
print("DONE", json.dumps(s.get("generated_this_run", s.get("total_generated"))), flush=True)
"""


def _child(tmp_path: Path, kind: str, out: Path) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    return subprocess.Popen([sys.executable, str(script), kind, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)


@pytest.mark.parametrize("kind", ["ab", "distill"])
@pytest.mark.parametrize("point", range(5))
def test_kill9_at_random_point_then_rerun(tmp_path: Path, reference: dict, kind: str, point: int) -> None:
    rng = random.Random(f"{SEED}-{kind}-{point}")
    out = tmp_path / ("ab.jsonl" if kind == "ab" else "raw.jsonl")
    part = work_path(out)
    proc = _child(tmp_path, kind, out)
    assert proc.stdout is not None
    finished: set[tuple[str, int]] = set()
    line = proc.stdout.readline()
    while line and not line.startswith("READY"):
        line = proc.stdout.readline()
    # the kill lands after a seeded random number of finished rows (0 .. all), plus a random delay
    after = rng.randint(0, reference[f"{kind}_items"])
    while len(finished) < after and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("FIN "):
            finished.add(tuple(json.loads(line[4:])))
    time.sleep(rng.uniform(0, 0.05))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # (not communicate(): it would skip what readline() has buffered)
    proc.wait(timeout=60)
    finished |= {tuple(json.loads(ln[4:])) for ln in rest.splitlines() if ln.startswith("FIN ")}
    stored = set(JsonlStore(part, _key).keys) if part.exists() else set()  # (cuts a torn tail)
    lost = len(finished - stored)
    assert stored <= finished and lost <= STORE_EVERY, (lost, "a kill lost more than one store group")
    if kind == "ab":  # the re-run completes, generating exactly what was not stored
        s = _ab(out)
        assert s["generated_this_run"] == reference["ab_items"] - len(stored)
        got = _ab_responses(out)
    else:
        _distill(out)
        got = _distill_responses(out)
    keys = _work_keys(part)
    assert len(keys) == len(set(keys)) == reference[f"{kind}_items"]  # 0 lost, 0 duplicated
    assert got == reference[kind]  # equal to an uninterrupted run
    _log(f"kill9-{kind}", point=point, after_rows=after, stored_at_kill=len(stored), lost_at_kill=lost)


def test_torn_tail_at_every_byte_offset_of_a_multibyte_record(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    key = lambda r: r["k"]  # noqa: E731
    first = {"k": "a", "text": "plain"}
    last = {"k": "b", "text": "naïve café — 中文 😀 ضد", "n": 1}
    line = (json.dumps(last, ensure_ascii=False) + "\n").encode()
    assert len(line) != len(line.decode())  # multi-byte text
    head = (json.dumps(first) + "\n").encode()
    cases = 0
    for cut in range(len(line) + 1):
        path.write_bytes(head + line[:cut])
        store = JsonlStore(path, key)
        complete = cut >= len(line) - 1  # the whole record, with or without its newline
        assert store.keys == ({"a", "b"} if complete else {"a"}), cut
        assert store.extend([first, last]) == (0 if complete else 1)
        assert path.read_bytes() == head + line, cut  # repaired, nothing lost or doubled
        cases += 1
    _log("torn-tail", offsets=cases)
    assert cases == len(line) + 1


class MultiByteFake:
    """A generator of multi-byte answers that depend only on (key, sample_idx)."""

    batch_size = 4

    def check(self, requests, sampler) -> None:  # noqa: ANN001
        pass

    def generate(self, requests, sampler, progress=None, *, only=None):  # noqa: ANN001
        from lekutils.engine.base import GenerationResult

        return [GenerationResult(r.key, s, f"Réponse {s} à « {r.user} » — 中文 😀 ضد", 5, 9, "stop", "plain", 0.0, 0.0,
                                 0.0, sampler.to_dict(), s)
                for r in requests for s in range(r.n_samples) if only is None or (r.key, s) in only]


def test_torn_work_file_at_every_byte_offset_then_rerun(tmp_path: Path) -> None:
    """The task loop's work file cut at every byte offset of its last record (multi-byte text):
    each re-run completes with every record once and the same results."""
    from lekutils.tasks.loop import TaskItem, TaskSpec, run_task

    items = [TaskItem(f"p{i}", f"question {i} ∑", None, 2) for i in range(2)]
    spec = TaskSpec({"spec": "fake", "sha256": None}, None, SamplerSettings(max_tokens=9))
    ref_path = tmp_path / "ref.partial.jsonl"
    ref = run_task(items, spec, ref_path, generator=MultiByteFake())
    data = ref_path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    assert len(data[start:]) != len(data[start:].decode())
    want = [(r["key"], r["sample_idx"], r["response"], r["lek_score"]) for r in ref.records]
    work = tmp_path / "w.partial.jsonl"
    for cut in range(start, len(data) + 1):
        work.write_bytes(data[:cut])
        run = run_task(items, spec, work, generator=MultiByteFake())
        assert run.generated == (0 if cut >= len(data) - 1 else 1), cut
        keys = _work_keys(work)
        assert len(keys) == len(set(keys)) == 4, cut
        assert [(r["key"], r["sample_idx"], r["response"], r["lek_score"]) for r in run.records] == want, cut
    _log("torn-work-file", offsets=len(data) + 1 - start)


@pytest.mark.parametrize("kind", ["ab", "distill"])
def test_two_concurrent_runs_on_one_output(tmp_path: Path, reference: dict, kind: str) -> None:
    out = tmp_path / ("ab.jsonl" if kind == "ab" else "raw.jsonl")
    procs = [_child(tmp_path, kind, out) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    generated = sorted(int(next(ln for ln in lg.splitlines() if ln.startswith("DONE"))[5:]) for lg in logs)
    keys = _work_keys(work_path(out))
    assert len(keys) == len(set(keys)) == reference[f"{kind}_items"]
    if kind == "ab":
        assert generated == [0, reference["ab_items"]]  # one waited for the other, then found the work done
        assert _ab_responses(out) == reference["ab"]
    else:
        assert _distill_responses(out) == reference["distill"]
    _log(f"concurrent-{kind}", generated=generated)


@pytest.mark.parametrize("budget", [0, 150, 1200, 2600, 5000])
def test_disk_full_on_write_then_rerun(tmp_path: Path, reference: dict, monkeypatch: pytest.MonkeyPatch,
                                       budget: int) -> None:
    """``os.write`` in the store raises ENOSPC once ``budget`` bytes are written (a partial write first)."""
    out = tmp_path / "ab.jsonl"
    real = os.write
    left = [budget]

    def full(fd: int, data: bytes | memoryview) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data)[: left[0]])
        left[0] -= n
        return n

    monkeypatch.setattr(jsonl.os, "write", full)
    with pytest.raises(OSError) as e:
        _ab(out)
    assert e.value.errno == errno.ENOSPC and not out.exists()
    monkeypatch.setattr(jsonl.os, "write", real)
    part = work_path(out)
    stored = len(JsonlStore(part, _key)) if part.exists() else 0  # cuts the partial write
    s = _ab(out)  # space again: the re-run completes
    keys = _work_keys(part)
    assert len(keys) == len(set(keys)) == reference["ab_items"]
    assert s["generated_this_run"] == reference["ab_items"] - stored
    assert _ab_responses(out) == reference["ab"]
    _log("enospc", budget=budget, stored_before=stored, generated_after=s["generated_this_run"])


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from lekutils.engine.models.tiny import write_chat_data
    from tests.test_train import TINY, _run

    d = tmp_path_factory.mktemp("train")
    data = write_chat_data(d / "data")
    r = _run(d, data, d / "ref", -1, TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    return {"dir": d, "data": data, "cfg": TINY, "out": d / "ref"}


@pytest.mark.parametrize("point", range(2))
def test_kill9_training_at_random_step_then_rerun(tmp_path: Path, train_reference: dict, point: int) -> None:
    """A training phase killed at a seeded random step resumes to the uninterrupted run's metrics and weights."""
    import mlx.core as mx
    import numpy as np

    from lekutils.core.jsonl import read_jsonl
    from tests.test_train import _run

    cfg, data = train_reference["cfg"], train_reference["data"]
    step = random.Random(f"{SEED}-train-{point}").randint(1, cfg["iters"] - 1)
    out = tmp_path / "killed"
    killed = _run(tmp_path, data, out, step, cfg)
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(tmp_path, data, out, -1, cfg)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ref = train_reference["out"]
    m_ref, m_res = read_jsonl(ref / "metrics.jsonl"), read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in m_res] == [r["step"] for r in m_ref]  # 0 lost, 0 duplicated
    for a, b in zip(m_ref, m_res, strict=True):
        assert a["learning_rate"] == b["learning_rate"] and a["tokens"] == b["tokens"]
    w_ref, w_res = mx.load(str(ref / "adapters.safetensors")), mx.load(str(out / "adapters.safetensors"))
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        np.testing.assert_allclose(np.array(w_ref[k]), np.array(w_res[k]), rtol=1e-4, atol=1e-5)
    assert not list(out.glob(".*.tmp*"))
    _log("kill9-train", point=point, killed_at_step=step)
