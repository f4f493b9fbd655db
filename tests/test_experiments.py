"""Re-runs that keep what was there: named experiments, the manifest's history with parameters,
missing earlier-stage inputs that name the notebook to run, stale work files out of the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lekutils.core import stages
from lekutils.core.errors import DataError, ParameterError
from lekutils.report.load import resolve_paths
from lekutils.runner.execute import run_pipeline
from lekutils.runner.manifest import merge_executions

PARAMS = 'run_dir = "runs/x"\nsteps = 3\nexperiment = ""\n'
BODY = ("import json, pathlib\n"
        "p = pathlib.Path(run_dir) / (f'seen@{experiment}.json' if experiment else 'seen.json')\n"
        "p.parent.mkdir(parents=True, exist_ok=True)\n"
        "p.write_text(json.dumps({'steps': steps, 'experiment': experiment}))\n")
PROGRESS_BODY = ("from lekutils.core.progress import Progress\n"
                 "with Progress(3, 'demo work', unit='items', interval=0) as bar:\n"
                 "    for _ in range(3):\n"
                 "        bar(1, tokens=10)\n")


def _notebook(path: Path, params: str = PARAMS, body: str = BODY) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "lekutils", "display_name": "LEK workbook", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    nb = _notebook(tmp_path / "01_named.ipynb")
    plain = _notebook(tmp_path / "02_plain.ipynb", params='run_dir = "runs/x"\nsteps = 3\n',
                      body=BODY.replace("experiment", "xp").replace("import json", "xp = ''\nimport json", 1)
                      + PROGRESS_BODY)
    root = tmp_path / "params"
    (root / "t").mkdir(parents=True)
    (root / "t" / "pipeline.yaml").write_text(
        f"executions:\n  - notebook: {nb}\n    name: first\n  - notebook: {plain}\n    name: second\n")
    return root


def test_rerun_of_one_notebook_keeps_the_others_and_the_history_with_parameters(profile, tmp_path):
    out = tmp_path / "out"
    run_pipeline("t", params_root=profile, out_dir=out, progress_bar=False)
    run_pipeline("t", ["second"], params_root=profile, out_dir=out, progress_bar=False, overrides={"steps": 9})
    m = json.loads((out / "manifest.json").read_text())
    assert [(e["name"], e["status"]) for e in m["executions"]] == [("first", "ok"), ("second", "ok")]
    first, second = m["executions"]
    assert first.get("from_earlier_run") is True and not second.get("from_earlier_run")
    assert second["parameters"]["steps"] == 9
    assert len(m["history"]) == 1
    earlier = m["history"][0]["executions"]
    assert [(e["name"], e["parameters"].get("steps")) for e in earlier] == [("first", None), ("second", None)]
    assert all(e["parameters"]["run_dir"] and e["status"] == "ok" for e in earlier)
    assert json.loads((out / "seen.json").read_text())["steps"] == 9


def test_named_experiment_writes_beside_the_unnamed_run(profile, tmp_path):
    out = tmp_path / "out"
    run_pipeline("t", ["first"], params_root=profile, out_dir=out, progress_bar=False)
    run_pipeline("t", ["first"], params_root=profile, out_dir=out, progress_bar=False, name="short",
                 overrides={"steps": 5})
    assert json.loads((out / "seen.json").read_text()) == {"steps": 3, "experiment": ""}
    assert json.loads((out / "seen@short.json").read_text()) == {"steps": 5, "experiment": "short"}
    assert (out / "notebooks" / "first.ipynb").exists() and (out / "notebooks" / "first@short.ipynb").exists()
    m = json.loads((out / "manifest.json").read_text())
    assert [(e["name"], e.get("experiment")) for e in m["executions"]] == [("first", None), ("first", "short")]


def test_name_is_refused_by_notebooks_without_an_experiment_parameter(profile, tmp_path):
    with pytest.raises(ParameterError, match="no 'experiment' parameter"):
        run_pipeline("t", ["second"], params_root=profile, out_dir=tmp_path / "o", name="short", dry_run=True)
    for bad in ("", "a b", "../x", "-x", "x" * 65):
        with pytest.raises(ParameterError, match="experiment name|--name"):
            run_pipeline("t", ["first"], params_root=profile, out_dir=tmp_path / "o", name=bad or " ", dry_run=True)


def test_merge_executions_replaces_by_name_and_experiment():
    old = [{"name": "a", "status": "ok"}, {"name": "b", "status": "failed"}, {"name": "a", "experiment": "x"}]
    new = [{"name": "b", "status": "ok"}, {"name": "c", "status": "ok"}]
    merged = merge_executions(old, new)
    assert [(e["name"], e.get("experiment"), e.get("status")) for e in merged] == [
        ("a", None, "ok"), ("b", None, "ok"), ("a", "x", None), ("c", None, "ok")]
    assert merged[1] is new[0]


def test_terminal_shows_live_progress_from_inside_the_notebook(profile, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lekutils", "run", "second", "--profile", "t", "--params-root",
                           str(profile), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "demo work: 3/3 items" in proc.stdout and "tok/s" in proc.stdout
    assert "running over TCP without encryption" not in proc.stdout + proc.stderr
    assert not (out / ".progress" / "second.json").exists()


def test_missing_earlier_stage_input_names_the_notebook(tmp_path):
    run = tmp_path / "runs" / "exp"
    with pytest.raises(DataError) as e:
        stages.require(run / "probes" / "eval.json", run, "probe set")
    assert "run 00_probes" in str(e.value) and "eval.json" in str(e.value) and f"--out {run}" in str(e.value)
    with pytest.raises(DataError, match=r"10_self_distill for phase 2: run that execution first"):
        stages.require(run / "distill" / "phase2" / "train.jsonl", run, "training data")
    with pytest.raises(DataError, match=r"20_train_phase for phase 1"):
        stages.require(run / "adapters" / "phase1" / "adapters.safetensors", run)
    elsewhere = tmp_path / "nope.json"
    with pytest.raises(DataError) as e:
        stages.require(elsewhere, run)
    assert "notebook" not in str(e.value)


def test_work_and_stale_files_never_reach_the_report(tmp_path):
    ab = tmp_path / "ab"
    (ab / ".stale").mkdir(parents=True)
    for name in ("m.jsonl", "m@short.jsonl", "m.partial.jsonl", "m.partial.stale-20261206.jsonl",
                 "m.turn2.partial.jsonl", "m.jsonl.stale", ".m.jsonl.tmp", ".stale/m.20261206.jsonl"):
        (ab / name).write_text("{}\n")
    got = [p.name for p in resolve_paths(["{run_dir}/ab/*.jsonl"], run_dir=tmp_path)]
    assert got == ["m.jsonl", "m@short.jsonl"]
