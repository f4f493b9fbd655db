"""The five phase notebooks and their parameter files: in sync, valid, and a failing gate stops the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
import build_train_notebooks as builder  # noqa: E402
from test_train_helpers import save_model_dir, write_chat_data  # noqa: E402

NAMES = [name for name, _, _ in builder.PHASES.values()]


def _params(nb: nbformat.NotebookNode) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    ns: dict = {}
    exec(cells[0].source, ns)  # noqa: S102 - our own parameters cell
    return {k: v for k, v in ns.items() if not k.startswith("__")}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_builder_and_conventions(name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    built = builder.build(NAMES.index(name))
    assert [c.source for c in nb.cells] == [c.source for c in built.cells], "rerun tools/build_train_notebooks.py"
    assert nb.cells[0].cell_type == "markdown" and f"python -m lekutils run {name} --profile smoke" in nb.cells[0].source
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    params = _params(nb)
    assert params["run_dir"] == "runs/smoke" and params["phase"] == NAMES.index(name)
    for profile in ("smoke", "gemma3-27b"):
        values = yaml.safe_load((ROOT / "params" / profile / f"{name}.yaml").read_text())
        assert set(values) <= set(params), set(values) - set(params)
        for k, v in values.items():
            want = type(params[k])
            assert isinstance(v, want) or (want is float and isinstance(v, int)), (profile, k, v)
        assert builder.big_yaml(NAMES.index(name)) == (ROOT / "params" / "gemma3-27b" / f"{name}.yaml").read_text()
        assert builder.smoke_yaml(NAMES.index(name)) == (ROOT / "params" / "smoke" / f"{name}.yaml").read_text()


def test_27b_profile_has_curriculum_values() -> None:
    want = {0: (50, 5.0e-6), 1: (100, 1.0e-5), 2: (100, 8.0e-6), 3: (50, 5.0e-6), 4: (50, 3.0e-6)}
    for k, name in enumerate(NAMES):
        v = yaml.safe_load((ROOT / "params" / "gemma3-27b" / f"{name}.yaml").read_text())
        assert (v["iters"], v["learning_rate"]) == want[k]
        assert (v["rank"], v["dropout"], v["scale"], v["batch_size"], v["grad_accumulation"], v["grad_checkpoint"],
                v["max_seq_length"], v["num_layers"], v["optimizer"], v["val_every"], v["checkpoint_every"]) == \
            (16, 0.05, 16.0, 1, 8, True, 4096, 32, "adam", 10, 25)
        assert v["gates"] == {"creative": {"min": 13.0}, "average": {"min": 21.0}, "worst": {"min": 8.0},
                              "kernel_response": {"above": 0.0}, "degeneration": {"max": 0}}


def test_phase_notebook_trains_then_failing_gate_stops_it(tmp_path: Path) -> None:
    """Papermill run of the phase-0 notebook on a tiny model: outputs written, then a gate that cannot
    pass stops the execution with the gate's name, value and level."""
    import papermill as pm

    model = save_model_dir(tmp_path / "model")
    run = tmp_path / "run"
    write_chat_data(run / "distill" / "phase0", n_train=8, n_valid=2)
    params = {"run_dir": str(run), "model": str(model), "num_layers": 2, "max_seq_length": 64, "iters": 4,
              "val_every": 2, "checkpoint_every": 2, "val_batches": 1, "gate_max_probes": 1, "gate_max_tokens": 8,
              "gates": {"average": {"min": 50.0}, "degeneration": {"max": 0}}}
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "notebooks" / "20_phase0_train.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=params, cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    assert e.value.ename == "GateFailed"
    assert "phase 0: gate 'average' failed: value" in e.value.evalue and ">= level 50 is false" in e.value.evalue
    adapter = run / "adapters" / "phase0"
    for f in ("adapters.safetensors", "adapter_config.json", "metrics.jsonl", "lineage.json", "loss.png"):
        assert (adapter / f).exists(), f
    table = json.loads((adapter / "gates.json").read_text())
    assert table["passed"] is False and table["gates"][0]["gate"] == "average"
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    shown = "".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for c in out.cells
                    if c.cell_type == "code" for o in c.get("outputs", []))
    assert "iter   train_loss" not in shown and "Output()" not in shown  # mlx-lm's console is silenced
    assert "FAIL" in shown  # the gate table was displayed before stopping
