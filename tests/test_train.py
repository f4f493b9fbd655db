"""Training phases on tiny random models: config, data checks, SIGKILL + resume, chaining, adapters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from lekutils.core.errors import DataError
from lekutils.core.jsonl import read_jsonl
from lekutils.engine.models.tiny import byte_model as make_model
from lekutils.engine.models.tiny import byte_tokenizer as make_tokenizer
from lekutils.engine.models.tiny import save_model_dir, write_chat_data
from lekutils.train.adapters import ADAPTER_FILE, AdapterError, load_adapter
from lekutils.train.config import PhaseConfig
from lekutils.train.loop import load_chat_jsonl, train_phase

TINY = {"iters": 12, "learning_rate": 1.0e-3, "rank": 4, "dropout": 0.1, "scale": 8.0, "num_layers": 2,
        "batch_size": 2, "grad_accumulation": 2, "grad_checkpoint": False, "max_seq_length": 96,
        "val_every": 4, "val_batches": 2, "checkpoint_every": 3,
        "lr_schedule": {"name": "cosine_decay", "arguments": [1.0e-3, 6, 1.0e-4]}}

SCRIPT = r"""
import json, os, signal, sys
from pathlib import Path
from lekutils.engine.models.tiny import byte_model as make_model, byte_tokenizer as make_tokenizer
from lekutils.train.config import PhaseConfig
from lekutils.train.loop import train_phase
kill_at = int(sys.argv[3])
def progress(step, iters, row):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
cfg = PhaseConfig(**json.loads(sys.argv[4]))
r = train_phase(make_model(), make_tokenizer(), cfg, sys.argv[1], sys.argv[2], progress=progress)
print(json.dumps({{"steps": r.steps, "resumed_from": r.resumed_from}}))
"""


def _run(tmp: Path, data: Path, out: Path, kill_at: int, cfg: dict) -> subprocess.CompletedProcess:
    script = tmp / "train_script.py"
    script.write_text(SCRIPT.format())
    return subprocess.run([sys.executable, str(script), str(data), str(out), str(kill_at), json.dumps(cfg)],
                          capture_output=True, text=True, timeout=300)


def test_config_steps_and_validation() -> None:
    cfg = PhaseConfig(iters=50, grad_accumulation=8, checkpoint_every=25, val_every=10)
    assert cfg.checkpoint_steps() == [32, 50]  # 25 rounded up to an update boundary, and the end
    assert cfg.val_steps() == [0, 10, 20, 30, 40, 50]
    assert PhaseConfig(iters=12, grad_accumulation=1, checkpoint_every=5).checkpoint_steps() == [5, 10, 12]
    with pytest.raises(DataError) as e:
        PhaseConfig(iters=0, dropout=1.5, optimizer="sgd")
    msg = str(e.value)
    assert "field 'iters'" in msg and "field 'dropout'" in msg and "field 'optimizer'" in msg
    assert PhaseConfig.from_params({"learning_rate": "1.0e-5", "notebook_only": 1}).learning_rate == 1.0e-5


def test_chat_data_errors_name_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                 + "\n" + json.dumps({"text": "x"}) + "\n"
                 + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(DataError) as e:
        load_chat_jsonl(p)
    msg = str(e.value)
    assert str(p) in msg and "line 2, field 'messages'" in msg and "line 3, field 'messages[0]'" in msg


def test_sigkill_mid_phase_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    data = write_chat_data(tmp_path / "data")
    ref = _run(tmp_path, data, tmp_path / "ref", -1, TINY)
    assert ref.returncode == 0, ref.stderr[-2000:]

    # keep_checkpoints=2 (the default): of the checkpoints at 4, 6, 10, 12 only 10 and 12 remain
    assert sorted(p.name for p in (tmp_path / "ref").glob("*_state.json")) == \
        ["0000010_state.json", "0000012_state.json"]
    assert len(list((tmp_path / "ref").glob("0*_adapters.safetensors"))) == 2

    out = tmp_path / "killed"
    killed = _run(tmp_path, data, out, 8, TINY)  # checkpoints at 4, 6, 10, 12: dies after step 8
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "lineage.json").exists()
    assert max(r["step"] for r in read_jsonl(out / "metrics.jsonl")) == 8
    stale = out / ".0000010_adapters.12345.tmp.safetensors"  # what a kill inside a save leaves
    stale.write_bytes(b"partial")

    resumed = _run(tmp_path, data, out, -1, TINY)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    info = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert info == {"steps": 12, "resumed_from": 6}

    m_ref, m_res = read_jsonl(tmp_path / "ref" / "metrics.jsonl"), read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in m_res] == list(range(13)) == [r["step"] for r in m_ref]  # no gap, no repeat
    # same data order, learning-rate schedule, optimizer state and dropout RNG as the uninterrupted run
    for a, b in zip(m_ref, m_res, strict=True):
        assert a["learning_rate"] == b["learning_rate"]
        assert a["tokens"] == b["tokens"]
        if a["train_loss"] is not None:
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-4)
    w_ref = mx.load(str(tmp_path / "ref" / ADAPTER_FILE))
    w_res = mx.load(str(out / ADAPTER_FILE))
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        np.testing.assert_allclose(np.array(w_ref[k]), np.array(w_res[k]), rtol=1e-4, atol=1e-5)
    lin = json.loads((out / "lineage.json").read_text())
    assert lin["complete"] and lin["resumed_from"] == 6 and lin["steps"] == 12
    assert not stale.exists() and not list(out.glob(".*.tmp*"))  # cleaned on start
    assert sorted(p.name for p in out.glob("*_state.json")) == ["0000010_state.json", "0000012_state.json"]


def test_keep_checkpoints_zero_keeps_all_and_is_not_in_the_resume_key(tmp_path: Path) -> None:
    from lekutils.train.checkpoints import resume_key

    assert resume_key(PhaseConfig(keep_checkpoints=0), {}, None) == resume_key(PhaseConfig(), {}, None)
    with pytest.raises(DataError, match="keep_checkpoints"):
        PhaseConfig(keep_checkpoints=-1)
    data = write_chat_data(tmp_path / "data")
    r = _run(tmp_path, data, tmp_path / "all", -1, {**TINY, "keep_checkpoints": 0})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "all").glob("*_state.json"))) == 4


def test_second_trainer_on_a_phase_folder_fails_at_once(tmp_path: Path) -> None:
    from lekutils.core import lock

    data = write_chat_data(tmp_path / "data")
    out = tmp_path / "phase"
    with lock.hold(out, folder=True):  # another trainer holds the folder
        r = _run(tmp_path, data, out, -1, TINY)
    assert r.returncode != 0 and "LockedError" in r.stderr and str(out) in r.stderr
    assert f"PID {os.getpid()}" in r.stderr


def test_chain_loads_previous_adapter_and_mlx_lm_loads_result(tmp_path: Path) -> None:
    from mlx_lm import generate, load

    data = write_chat_data(tmp_path / "data")
    mdir = save_model_dir(tmp_path / "model")
    cfg0 = PhaseConfig(phase=0, **{**TINY, "iters": 6, "learning_rate": 5.0e-3, "lr_schedule": None})
    r0 = train_phase(make_model(), make_tokenizer(), cfg0, data, tmp_path / "a0", model_info={"spec": str(mdir)})
    assert r0.steps == 6 and not r0.skipped
    # trainable = LoRA tensors only: 2 layers x 7 linears x rank 4 x (in + out)
    assert r0.trainable_params == 2 * 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 2 + (64 + 32))
    again = train_phase(make_model(), make_tokenizer(), cfg0, data, tmp_path / "a0")
    assert again.skipped and again.steps == 6  # finished phase is not retrained

    cfg1 = PhaseConfig(phase=1, **{**TINY, "iters": 4, "lr_schedule": None})
    r1 = train_phase(make_model(), make_tokenizer(), cfg1, data, tmp_path / "a1",
                     previous_adapter=tmp_path / "a0")
    assert r1.trainable_params == r0.trainable_params
    m1 = read_jsonl(tmp_path / "a1" / "metrics.jsonl")
    m0 = read_jsonl(tmp_path / "a0" / "metrics.jsonl")
    assert m1[0]["step"] == 0 and m1[0]["val_loss"] == pytest.approx(m0[-1]["val_loss"], rel=1e-4)  # starts at K-1
    lin = json.loads((tmp_path / "a1" / "lineage.json").read_text())
    assert [c["phase"] for c in lin["chain"]] == [0, 1]
    assert lin["previous"]["adapters_sha256"] == json.loads((tmp_path / "a0" / "lineage.json").read_text())["adapters_sha256"]
    assert lin["data"]["train"]["sha256"] and lin["data"]["train"]["examples"] == 24

    base, tok = load(str(mdir))
    tuned, _ = load(str(mdir), adapter_path=str(tmp_path / "a1"))  # mlx_lm's own API
    prompt = tok.apply_chat_template([{"role": "user", "content": "q1: care consent?"}], add_generation_prompt=True)
    out_base = generate(base, tok, prompt, max_tokens=12)
    out_tuned = generate(tuned, tok, prompt, max_tokens=12)
    assert out_base != out_tuned
    from lekutils.engine import models

    ours, tok2 = models.load(str(mdir), adapter_path=tmp_path / "a1")  # our loader
    assert generate(ours, tok2, prompt, max_tokens=12) == out_tuned


def test_corrupt_and_mismatched_adapters_name_file_and_tensors(tmp_path: Path) -> None:
    data = write_chat_data(tmp_path / "data", n_train=4, n_valid=2)
    cfg = PhaseConfig(**{**TINY, "iters": 2, "lr_schedule": None, "val_every": 2})
    train_phase(make_model(), make_tokenizer(), cfg, data, tmp_path / "a0")
    weights = tmp_path / "a0" / ADAPTER_FILE

    # mismatched: one tensor dropped, one reshaped, one foreign
    w = dict(mx.load(str(weights)))
    names = sorted(w)
    dropped, reshaped = names[0], names[1]
    del w[dropped]
    w[reshaped] = mx.zeros((3, 3))
    w["model.layers.0.self_attn.q_proj.extra"] = mx.zeros((1,))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((tmp_path / "a0" / "adapter_config.json").read_text())
    mx.save_safetensors(str(bad / ADAPTER_FILE), w)
    with pytest.raises(AdapterError) as e:
        load_adapter(make_model(), bad)
    msg = str(e.value)
    assert str(bad / ADAPTER_FILE) in msg and dropped in msg and reshaped in msg and "q_proj.extra" in msg
    assert "missing tensor" in msg and "(3, 3)" in msg

    # corrupt: truncated file, also when chained into the next phase
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(AdapterError, match=str(weights)):
        load_adapter(make_model(), tmp_path / "a0")
    cfg1 = PhaseConfig(phase=1, **{**TINY, "iters": 2, "lr_schedule": None})
    with pytest.raises(AdapterError, match="corrupt"):
        train_phase(make_model(), make_tokenizer(), cfg1, data, tmp_path / "a1", previous_adapter=tmp_path / "a0")


def test_subprocess_corrupt_adapter_exits_with_message(tmp_path: Path) -> None:
    """The same error, seen from a separate process (as the pipeline sees it)."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "adapter_config.json").write_text(json.dumps({"num_layers": 2, "lora_parameters":
                                                       {"rank": 4, "scale": 8.0, "dropout": 0.0}}))
    (a / ADAPTER_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\": broken")
    code = ("from lekutils.engine.models.tiny import byte_model; from lekutils.train.adapters import load_adapter; "
            f"load_adapter(byte_model(), {str(a)!r})")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ})
    assert p.returncode == 1
    assert "AdapterError" in p.stderr and str(a / ADAPTER_FILE) in p.stderr and "corrupt" in p.stderr


def test_tiny_model_dir_roundtrip(tmp_path: Path) -> None:
    """The tiny model folder loads through stock mlx_lm.load and its chat template tokenizes."""
    from mlx_lm import load

    save_model_dir(tmp_path / "m")
    model, tok = load(str(tmp_path / "m"))
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert tok.decode(ids) == "<|user|>hi<|end|><|assistant|>"
    assert model(mx.array([ids])).shape == (1, len(ids), 262)
