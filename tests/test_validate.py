"""Inputs are validated before the first generation: a corrupt adapter fails in seconds, naming its file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lekutils.core.errors import DataError
from lekutils.data.kernels import conditions
from lekutils.data.probes import load_probes
from lekutils.tasks.abtest import run_ab
from lekutils.tasks.loop import work_path
from lekutils.tasks.validate import check_adapter, check_inputs

EVAL = Path(__file__).resolve().parents[1] / "data" / "probes" / "eval-v1.json"


def make_adapter(folder: Path, rank: int = 4) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"model.layers.0.self_attn.q_proj.lora_a": np.zeros((16, rank), np.float32),
               "model.layers.0.self_attn.q_proj.lora_b": np.zeros((rank, 16), np.float32)},
              str(folder / "adapters.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": rank, "scale": 1.0, "dropout": 0.0}}))
    return folder


def test_check_adapter_good_and_each_kind_of_bad(tmp_path: Path) -> None:
    good = make_adapter(tmp_path / "good")
    assert check_adapter(good) == {"path": str(good), "rank": 4, "tensors": 2}
    bad = make_adapter(tmp_path / "bad")
    w = bad / "adapters.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) - 7])  # truncated
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        check_adapter(bad)
    assert e.value.path == str(w)
    w.write_bytes(data)
    (bad / "adapter_config.json").write_text('{"num_layers": 2, "num_layers": 3, "lora_parameters": {"rank": 4}}')
    with pytest.raises(DataError, match="duplicate key 'num_layers'"):
        check_adapter(bad)
    (bad / "adapter_config.json").write_text('{"num_layers": 2, "lora_parameters": {"rank": 8}}')
    with pytest.raises(DataError, match="does not fit rank 8") as e:
        check_adapter(bad)
    assert e.value.path == str(w) and len(e.value.problems) == 2
    with pytest.raises(DataError, match="adapter folder not found"):
        check_adapter(tmp_path / "nope")
    with pytest.raises(DataError, match="missing from the adapter folder"):
        check_adapter(tmp_path)
    with pytest.raises(DataError, match="kernel file"):
        check_inputs(adapters=[good], kernels=[tmp_path / "missing.txt"])


class NeverCalled:
    batch_size = 2

    def check(self, requests, sampler) -> None:  # noqa: ANN001
        raise AssertionError("no generation may start")

    def generate(self, *a, **k):  # noqa: ANN002, ANN003
        raise AssertionError("no generation may start")


def test_run_ab_refuses_a_corrupt_adapter_before_generating(tmp_path: Path) -> None:
    bad = make_adapter(tmp_path / "adapter")
    (bad / "adapters.safetensors").write_bytes(b"\x00" * 64)
    out = tmp_path / "ab.jsonl"
    with pytest.raises(DataError, match="adapters.safetensors"):
        run_ab("tiny:system", load_probes(EVAL)[:2], conditions(), out, adapter_path=bad, engine=NeverCalled())
    assert not out.exists() and not work_path(out).exists()


def test_ab_notebook_with_corrupt_adapter_fails_before_the_base_model_runs(tmp_path: Path, repo_root: Path) -> None:
    bad = make_adapter(tmp_path / "adapter")
    (bad / "adapters.safetensors").write_bytes(b"garbage, not safetensors")
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lekutils", "run", "80_ab_test", "--out", str(out), "--no-progress",
                           "-p", f"probe_files=[{EVAL}]", "-p", f"adapters=[{bad}]", "-p", "max_probes=2"],
                          capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert proc.returncode == 1, proc.stderr
    assert str(bad / "adapters.safetensors") in proc.stderr and "corrupt" in proc.stderr
    assert not list((out / "ab").glob("*.jsonl")) if (out / "ab").exists() else True  # nothing generated
    assert time.monotonic() - t0 < 300
