"""Run-folder and work-file locks; kernel death and interrupted manifests in the runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lekutils.core import lock
from lekutils.engine.base import GenerationResult, SamplerSettings
from lekutils.tasks.loop import TaskItem, TaskSpec, run_task
from tests.test_runner import make_notebook

HOLD = """
import sys, time
from lekutils.core import lock
with lock.hold(sys.argv[1], folder=True, export=True):
    print("HELD", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path: Path, folder: Path, seconds: float) -> subprocess.Popen:
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    proc = subprocess.Popen([sys.executable, str(script), str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
    return proc


def test_second_holder_fails_at_once_naming_folder_and_pid(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "smoke"
    proc = _holder(tmp_path, folder, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(lock.LockedError) as e, lock.hold(folder, folder=True):
            pass
        assert time.monotonic() - t0 < 5
        assert str(folder) in str(e.value) and f"PID {proc.pid}" in str(e.value)
        with pytest.raises(lock.LockedError), lock.hold(folder, folder=True, wait=True, timeout=0.3):
            pass
    finally:
        proc.kill()
        proc.wait()
    with lock.hold(folder, folder=True, wait=True, timeout=10):  # a killed holder's lock is free at once
        assert lock.holder(folder, True)["pid"] == os.getpid()
    assert lock.holder(folder, True) is None


def test_child_of_the_holder_reenters_instead_of_deadlocking(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with lock.hold(folder, folder=True, export=True):
        code = ("import sys; from lekutils.core import lock\n"
                "with lock.hold(sys.argv[1], folder=True): print('IN')")
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "IN", out.stderr
    # without the inherited token a child is refused
    env = {k: v for k, v in os.environ.items() if k != lock.ENV_VAR}
    proc = _holder(tmp_path, folder, 30)
    try:
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=60,
                             env=env)
        assert out.returncode != 0 and "LockedError" in out.stderr
    finally:
        proc.kill()
        proc.wait()


class SlowFake:
    """A generator whose texts depend only on (key, sample_idx); slow enough for threads to overlap."""

    batch_size = 2

    def __init__(self) -> None:
        self.calls = 0

    def check(self, requests, sampler) -> None:  # noqa: ANN001
        pass

    def generate(self, requests, sampler, progress=None, *, only=None):  # noqa: ANN001
        self.calls += 1
        time.sleep(0.05)
        return [GenerationResult(r.key, s, f"{r.key} answer {s}", 3, 2, "stop", "plain", 0.0, 0.0, 0.0,
                                 sampler.to_dict(), 0)
                for r in requests for s in range(r.n_samples) if only is None or (r.key, s) in only]


def test_two_concurrent_tasks_on_one_work_file_never_duplicate(tmp_path: Path) -> None:
    items = [TaskItem(f"p{i}", f"prompt {i}", None, 2) for i in range(6)]
    spec = TaskSpec({"spec": "fake", "sha256": None}, None, SamplerSettings(max_tokens=4))
    work = tmp_path / "ab" / "x.partial.jsonl"
    fakes = [SlowFake(), SlowFake()]
    runs: list = [None, None]

    def go(i: int) -> None:
        runs[i] = run_task(items, spec, work, generator=fakes[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    keys = [(r["key"], r["sample_idx"]) for r in map(json.loads, work.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 12
    assert sorted(r.generated for r in runs) == [0, 12]  # the second waited, then found the work done
    assert [r["response"] for r in runs[0].records] == [r["response"] for r in runs[1].records]


@pytest.fixture
def sleepy(tmp_path: Path) -> tuple[Path, Path]:
    nb = make_notebook(tmp_path / "01_sleep.ipynb", body="import time\ntime.sleep(steps)\n")
    root = tmp_path / "params"
    (root / "s").mkdir(parents=True)
    (root / "s" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {nb}\n    name: sleepy\n")
    return root, tmp_path / "out"


def _cli(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lekutils", "run", "--profile", "s", "--params-root", str(root), "--out", str(out),
            "--no-progress", *extra]


def test_second_run_on_a_folder_fails_fast_then_interrupted_run_is_recorded(sleepy) -> None:
    root, out = sleepy
    first = subprocess.Popen(_cli(root, out, "-p", "steps=60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "notebooks" / "sleepy.ipynb").exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(_cli(root, out, "-p", "steps=0"), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
        assert str(out) in err and f"PID {first.pid}" in err and "--wait-lock" in err
        assert time.monotonic() - t0 < 60
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the runner and its kernel, as a crash would
        first.wait()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    third = subprocess.run(_cli(root, out, "-p", "steps=0", "--wait-lock"), capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "ok" and len(m["history"]) == 1
    old = m["history"][0]
    assert old["status"] == "interrupted" and old["interrupted_noticed"]
    assert old["executions"][0]["status"] == "interrupted"
    fourth = subprocess.run(_cli(root, out, "-p", "steps=0"), capture_output=True, text=True, timeout=300)
    assert fourth.returncode == 0, fourth.stderr
    hist = json.loads((out / "manifest.json").read_text())["history"]
    assert [h["status"] for h in hist] == ["interrupted", "ok"]


def test_kernel_death_is_one_short_message_with_path_and_resume_hint(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "01_die.ipynb", body="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    root = tmp_path / "params"
    (root / "s").mkdir(parents=True)
    (root / "s" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {nb}\n    name: dying\n")
    out = tmp_path / "out"
    proc = subprocess.run(_cli(root, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 5, proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1 and "kernel died" in err[0] and str(out / "notebooks" / "dying.ipynb") in err[0]
    assert "re-run the same command to resume" in err[0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["executions"][0]["status"] == "interrupted"


def test_sigterm_marks_the_manifest_interrupted_at_once(sleepy) -> None:
    root, out = sleepy
    proc = subprocess.Popen(_cli(root, out, "-p", "steps=60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "notebooks" / "sleepy.ipynb").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "re-run the same command to resume" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["executions"][0]["status"] == "interrupted"
    assert lock.holder(out, True) is None  # the lock's sidecar is gone with the run
