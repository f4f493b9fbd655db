"""The training notebook (20_train_phase, executed once per phase): conventions, defaults that are
PhaseConfig's, the profiles' curriculum values, and a failing gate that stops it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nbformat
import pytest

from lekutils.core.paths import NOTEBOOKS_DIR
from lekutils.engine.models.tiny import save_model_dir, write_chat_data
from lekutils.runner.params import notebook_parameters
from lekutils.runner.profile import load_pipeline, resolve
from lekutils.train.config import PhaseConfig
from lekutils.train.gates import CURRICULUM_GATES

NOTEBOOK = NOTEBOOKS_DIR / "20_train_phase.ipynb"
PHASE_NAMES = [f"{(k + 2) * 10}_phase{k}_train" for k in range(5)]


def _defaults() -> dict:
    return {k: s.default for k, s in notebook_parameters(NOTEBOOK).items()}


def _effective(profile: str) -> dict[str, dict]:
    """Each training execution's parameters with the notebook defaults filled in."""
    exs = [e for e in resolve(load_pipeline(profile), profile) if e.notebook == NOTEBOOK]
    return {e.name: {**_defaults(), **e.parameters} for e in exs}


def test_notebook_conventions() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "python -m lekutils run 20_train_phase --profile smoke" \
        in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for c in code:
        if c is not tagged[0]:
            assert len(c.source.splitlines()) <= 15, f"cell too long (move the logic to lekutils.train.stage):\n{c.source}"


def test_parameter_defaults_are_phase_configs() -> None:
    """The parameters cell repeats PhaseConfig's defaults (the single source): they must agree."""
    params = _defaults()
    none_as = {"lr_schedule": {}, "keys": []}  # the notebook's spelling of PhaseConfig's None
    for f in dataclasses.fields(PhaseConfig):
        assert f.name in params, f"notebooks/20_train_phase.ipynb lacks PhaseConfig parameter {f.name!r}"
        want = none_as.get(f.name, f.default) if f.default is None else f.default
        assert params[f.name] == want and type(params[f.name]) is type(want), (
            f"notebooks/20_train_phase.ipynb: {f.name} = {params[f.name]!r} but PhaseConfig.{f.name} = "
            f"{f.default!r}; change the parameters cell to PhaseConfig's default")
    assert params["gates"] == CURRICULUM_GATES, "the notebook's default gates must be train.gates.CURRICULUM_GATES"


def test_smoke_profile_values() -> None:
    eff = _effective("smoke")
    assert list(eff) == PHASE_NAMES
    for k, name in enumerate(PHASE_NAMES):
        v = eff[name]
        assert v["phase"] == k and v["model"] == "embedded:smollm2-135m-instruct"
        assert (v["rank"], v["num_layers"], v["iters"], v["learning_rate"], v["grad_accumulation"],
                v["max_seq_length"], v["allow_gate_failure"]) == (8, 4, 8, 3.0e-4, 1, 128, True)
        assert v["compare_probe"] == ("E11_HYPNOS_DREAM" if k == 4 else "")


def test_27b_profile_has_curriculum_values() -> None:
    want = {0: (50, 5.0e-6), 1: (100, 1.0e-5), 2: (100, 8.0e-6), 3: (50, 5.0e-6), 4: (50, 3.0e-6)}
    eff = _effective("gemma3-27b")
    for k, name in enumerate(PHASE_NAMES):
        v = eff[name]
        assert v["phase"] == k and (v["iters"], v["learning_rate"]) == want[k]
        assert (v["rank"], v["dropout"], v["scale"], v["batch_size"], v["grad_accumulation"], v["grad_checkpoint"],
                v["max_seq_length"], v["num_layers"], v["optimizer"], v["val_every"], v["checkpoint_every"]) == \
            (16, 0.05, 16.0, 1, 8, True, 4096, 32, "adam", 10, 25)
        assert v["gates"] == {"creative": {"min": 13.0}, "average": {"min": 21.0}, "worst": {"min": 8.0},
                              "kernel_response": {"above": 0.0}, "degeneration": {"max": 0}}
        assert v["allow_gate_failure"] is False
        # phase 3 trains conversations (one example per assistant turn): loss on every answer needs mask_prompt
        assert v["mask_prompt"] == (k == 3) and v["budget_from_banks"] is True


def test_phase_notebook_trains_then_failing_gate_stops_it(tmp_path: Path) -> None:
    """Papermill run of phase 0 on a tiny model: outputs written, then a gate that cannot pass stops the
    execution with the gate's name, value and level."""
    import papermill as pm

    model = save_model_dir(tmp_path / "model")
    run = tmp_path / "run"
    write_chat_data(run / "distill" / "phase0", n_train=8, n_valid=2)
    params = {"run_dir": str(run), "phase": 0, "model": str(model), "rank": 8, "num_layers": 2,
              "grad_accumulation": 1, "grad_checkpoint": False, "max_seq_length": 64, "iters": 4,
              "learning_rate": 3.0e-4, "val_every": 2, "checkpoint_every": 2, "val_batches": 1,
              "gate_max_probes": 1, "gate_creative_probes": 1, "gate_kernels": {"json": "data/kernels/lek-example-v1.json"},
              "gate_max_tokens": 8, "gates": {"average": {"min": 50.0}, "degeneration": {"max": 0}}}
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=params,
                            cwd=str(NOTEBOOK.parents[1]), kernel_name="python3", progress_bar=False)
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
