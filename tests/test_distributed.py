"""Data-parallel LoRA (lekutils.train.dp / lekutils.train.distributed): 2 processes on loopback (ring
backend, mlx.launch) against one process with the same global batch, and kill -9 + resume.

Global batch semantics: ``batch_size`` is the global batch; N processes take ``batch_size / N`` rows
each. Measured on the tiny model here (dropout 0): the loss curves of 1 process x batch 4 and
2 processes x 2 rows agree to a max relative difference of about 1e-6 (float rounding); the test
allows :data:`REL_TOL` = 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from lekutils.core.errors import DataError
from lekutils.core.jsonl import read_jsonl
from lekutils.engine.models.tiny import byte_model, byte_tokenizer, save_model_dir, write_chat_data
from lekutils.train import dp
from lekutils.train.adapters import ADAPTER_FILE
from lekutils.train.config import PhaseConfig
from lekutils.train.distributed import DataParallel, launch_command
from lekutils.train.loop import train_phase

REL_TOL = 1.0e-4
# checkpoints at steps 4, 6, 8 (checkpoint_every 3 rounded up to the 2-step updates); dropout 0 so
# that 1 and 2 processes draw no random masks (with dropout they agree in distribution only)
CFG = {"iters": 8, "learning_rate": 1.0e-3, "rank": 4, "dropout": 0.0, "scale": 8.0, "num_layers": 2,
       "batch_size": 4, "grad_accumulation": 2, "grad_checkpoint": False, "max_seq_length": 96,
       "val_every": 4, "val_batches": 2, "checkpoint_every": 3}
ROOT = Path(__file__).resolve().parents[1]

KILL_SCRIPT = r"""
import json, os, signal, sys
from lekutils.engine import models
from lekutils.train import dp
from lekutils.train.config import PhaseConfig
from lekutils.train.loop import train_phase
job, kill_at = json.loads(sys.argv[1]), int(sys.argv[2])
def progress(step, iters, row):
    if step == kill_at and dp.rank_size()[0] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
model, tok = models.load(job["model"])
train_phase(model, tok, PhaseConfig.from_params(job["config"]), job["data_dir"], job["out_dir"], progress=progress)
"""


def test_data_parallel_setting_errors_name_the_field(tmp_path: Path) -> None:
    assert DataParallel.from_params({}) is None
    d = DataParallel.from_params({"processes": 2, "hosts": "10.0.0.1,10.0.0.2"})
    assert d is not None and d.world_size == 4 and d.hosts == ("10.0.0.1", "10.0.0.2")
    with pytest.raises(DataError) as e:
        DataParallel.from_params({"processes": 0, "backend": "tcp", "gpus": 2}, "curriculum.yaml")
    msg = str(e.value)
    assert "curriculum.yaml" in msg and "data_parallel.processes" in msg and "data_parallel.backend" in msg \
        and "data_parallel.gpus" in msg
    hf = tmp_path / "hosts.json"
    hf.write_text(json.dumps({"backend": "ring", "hosts": [{"ssh": "a", "ips": ["10.0.0.1"]},
                                                            {"ssh": "b", "ips": ["10.0.0.2"]}]}))
    d = DataParallel.from_params({"hostfile": str(hf)})
    assert d is not None and d.world_size == 2
    cmd = launch_command(DataParallel(processes=2, port=40000), ["worker", "--job", "{}"])
    assert cmd[1:9] == ["--backend", "ring", "--hosts", "127.0.0.1", "-n", "2", "--starting-port", "40000"]
    assert cmd[cmd.index("--") + 1:][:3] == [sys.executable, "-m", "lekutils.train.distributed"]


def test_profile_option_reaches_the_stage(tmp_path: Path) -> None:
    """``data_parallel`` is a notebook-20 parameter: curriculum/-p values resolve and become the Stage's setting."""
    from lekutils.runner.profile import load_pipeline, resolve
    from lekutils.train import stage

    ex = [e for e in load_pipeline("smoke") if e.name == "30_phase1_train"]
    got = resolve(ex, "smoke", overrides={"data_parallel": {"processes": 2, "backend": "ring"}})[0].parameters
    assert got["data_parallel"] == {"processes": 2, "backend": "ring"}
    data = write_chat_data(tmp_path / "data", n_train=4, n_valid=2)
    params = {**got, "run_dir": str(tmp_path), "data_dir": str(data), "previous_adapter": "none"}
    assert stage.plan(params).data_parallel == DataParallel(processes=2)
    assert stage.plan({**params, "data_parallel": {}}).data_parallel is None
    with pytest.raises(DataError, match="data_parallel.hostfile"):
        stage.plan({**params, "data_parallel": {"hosts": ["10.0.0.1"], "hostfile": "h.json"}})


def test_sharded_loss_gradient_equals_the_whole_batch_gradient() -> None:
    """The averaged gradients of the N shards' losses are the one-process gradient of the whole batch."""
    from mlx_lm.tuner.trainer import default_loss

    mx.random.seed(0)
    model = byte_model()
    rng = np.random.default_rng(0)
    batch = mx.array(rng.integers(3, 200, size=(4, 33)), dtype=mx.int32)
    lengths = mx.array([[1, 30], [1, 12], [5, 32], [2, 20]])  # unequal token counts per row
    (ref_loss, ref_tok), ref_grad = nn.value_and_grad(model, default_loss)(model, batch, lengths)
    size = 2
    shards = list(dp.shard(iter([(batch, lengths)]), 0, size)) + list(dp.shard(iter([(batch, lengths)]), 1, size))
    loss_fn = nn.value_and_grad(model, dp.sharded_loss(size))
    outs = [loss_fn(model, *s) for s in shards]
    avg = {k: sum(dict(tree_flatten(g))[k] for (_, g) in outs) / size for k in dict(tree_flatten(ref_grad))}
    assert sum(float(lv) for (lv, _), _ in outs) / size == pytest.approx(float(ref_loss), rel=1e-5)
    assert sum(int(t) for (_, t), _ in outs) == int(ref_tok) == int(shards[0][2])
    for k, g in dict(tree_flatten(ref_grad)).items():
        np.testing.assert_allclose(np.array(avg[k]), np.array(g), rtol=1e-4, atol=1e-6)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _cli(out: Path, model: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    params = [f"-p{k}={json.dumps(v)}" for k, v in CFG.items()]
    return subprocess.run([sys.executable, "-m", "lekutils.train.distributed", "--profile", "smoke", "--phase", "0",
                           "--out", str(out), f"-pmodel={model}", f"-pdata_dir={data}", *params, *extra],
                          capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)


def _curve(path: Path) -> list[tuple[int, float | None, float | None]]:
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in read_jsonl(path / "metrics.jsonl")]


def _max_rel(a: list, b: list) -> float:
    worst = 0.0
    for (sa, ta, va), (sb, tb, vb) in zip(a, b, strict=True):
        assert sa == sb
        for x, y in ((ta, tb), (va, vb)):
            assert (x is None) == (y is None)
            if x is not None:
                worst = max(worst, abs(x - y) / abs(x))
    return worst


@pytest.mark.e2e
def test_two_processes_match_one_process_with_the_whole_batch_and_resume_after_kill9(tmp_path: Path) -> None:
    model_dir, data = save_model_dir(tmp_path / "model"), write_chat_data(tmp_path / "data")

    # one process, global batch 4 (in this process: a group of 1)
    one = tmp_path / "one"
    mx.random.seed(0)
    r1 = train_phase(byte_model(), byte_tokenizer(), PhaseConfig(**CFG), data, one)
    assert r1.steps == 8

    # two processes on loopback (ring backend), global batch 4 = 2 rows each, through the command
    two = tmp_path / "two"
    p = _cli(two, model_dir, data, "--np", "2")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    phase = two / "adapters" / "phase0"
    assert "2 processes, global batch 4 (2 per process)" in p.stdout
    lin = json.loads((phase / "lineage.json").read_text())
    assert lin["complete"] and lin["processes"] == 2
    log = (phase / "launch.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log  # each worker names its BLAS (OpenBLAS where found)
    worst = _max_rel(_curve(one), _curve(phase))
    assert worst < REL_TOL, f"loss curves differ by {worst:.2e} (relative)"
    w1, w2 = mx.load(str(one / ADAPTER_FILE)), mx.load(str(phase / ADAPTER_FILE))
    for k in w1:
        np.testing.assert_allclose(np.array(w2[k]), np.array(w1[k]), rtol=1e-3, atol=1e-5)

    # kill -9 of rank 0 after step 5 (checkpoint at 4): mlx.launch stops rank 1; nothing complete is left
    killed = tmp_path / "killed" / "adapters" / "phase0"
    job = {"model": str(model_dir), "config": CFG, "data_dir": str(data), "out_dir": str(killed)}
    script = tmp_path / "kill_script.py"
    script.write_text(KILL_SCRIPT)
    cmd = launch_command(DataParallel(processes=2), [])
    cmd = cmd[:cmd.index("--") + 1] + [sys.executable, str(script), json.dumps(job), "5"]
    k = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    assert not (killed / "lineage.json").exists(), k.stdout[-2000:] + k.stderr[-2000:]
    assert max(r["step"] for r in read_jsonl(killed / "metrics.jsonl")) == 5
    assert "rank 0" in (k.stdout + k.stderr) or k.returncode != 0

    # resume through stage.train with the notebook's data_parallel parameter: exact continuation
    from lekutils.train import stage

    params = {**CFG, "run_dir": str(tmp_path / "killed"), "phase": 0, "model": str(model_dir),
              "data_dir": str(data), "previous_adapter": "none", "data_parallel": {"processes": 2}}
    st = stage.plan(params)
    assert st.data_parallel == DataParallel(processes=2)
    seen: list[int] = []
    res, _base = stage.train(st, progress=lambda step, iters, row: seen.append(step))
    assert res.resumed_from == 4 and res.steps == 8 and not res.skipped
    assert seen and seen[-1] == 8 and seen == sorted(set(seen))
    m_two, m_res = read_jsonl(phase / "metrics.jsonl"), read_jsonl(killed / "metrics.jsonl")
    assert [r["step"] for r in m_res] == list(range(9)) == [r["step"] for r in m_two]  # no gap, no repeat
    assert _max_rel(_curve(phase), _curve(killed)) < 1e-5
    w3 = mx.load(str(killed / ADAPTER_FILE))
    for k in w2:
        np.testing.assert_allclose(np.array(w3[k]), np.array(w2[k]), rtol=1e-5, atol=1e-6)
    # a finished phase is not retrained
    res2, _ = stage.train(st)
    assert res2.skipped and res2.steps == 8
