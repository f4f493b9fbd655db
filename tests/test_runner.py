"""The Papermill runner: parameter validation, precedence, failures, manifest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lekutils.core.errors import DataError, ParameterError
from lekutils.runner.execute import run_pipeline
from lekutils.runner.params import load_yaml, notebook_parameters, parse_value
from lekutils.runner.profile import load_pipeline, resolve

PARAMS_CELL = '''run_dir = "runs/smoke"
lr = 1.0e-5
steps: int = 3
name = "x"
flags = ["a"]
adapter = None  # optional adapter path
verbose = False
'''


def make_notebook(path: Path, body: str = "", params: str = PARAMS_CELL) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    out = ("import json, pathlib\n"
           "p = pathlib.Path(run_dir) / 'seen.json'\n"
           "p.parent.mkdir(parents=True, exist_ok=True)\n"
           "p.write_text(json.dumps(dict(lr=lr, steps=steps, name=name, flags=flags, adapter=adapter, verbose=verbose)))\n")
    nb.cells = [nbformat.v4.new_markdown_cell("# Test notebook"), cell, nbformat.v4.new_code_cell(out + body)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def profile(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "nb").mkdir()
    nb = make_notebook(tmp_path / "nb" / "01_test.ipynb")
    root = tmp_path / "params"
    (root / "t").mkdir(parents=True)
    (root / "t" / "pipeline.yaml").write_text(
        f"executions:\n  - notebook: {nb}\n    name: first\n    params: first.yaml\n"
        f"  - notebook: {nb}\n    name: second\n    parameters: {{steps: 7}}\n")
    (root / "t" / "first.yaml").write_text("lr: 1e-4\nname: from-profile\n")
    return root, nb


def test_parse_value_floats_and_yaml():
    assert parse_value("1e-5") == 1e-5 and isinstance(parse_value("1e-5"), float)
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True
    assert parse_value("hello") == "hello"


def test_yaml_float_strings_become_floats(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("lr: 1e-5\nother: 5.0e-6\nlist: [1e-3, abc]\n")
    assert load_yaml(p) == {"lr": 1e-5, "other": 5e-6, "list": [1e-3, "abc"]}


def test_notebook_parameters_infers_types(profile):
    _, nb = profile
    specs = notebook_parameters(nb)
    assert specs["lr"].type is float and specs["steps"].type is int and specs["name"].type is str
    assert specs["flags"].type is list and specs["verbose"].type is bool
    assert specs["adapter"].type is None and specs["adapter"].nullable


def test_precedence_default_profile_file_p(profile, tmp_path):
    root, _ = profile
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: from-f\nsteps: 11\n")
    exs = load_pipeline("t", root)
    out = resolve(exs, "t", [extra], {"steps": 12, "second.name": "scoped"}, out_dir=tmp_path / "out")
    first, second = out
    assert first.parameters["lr"] == 1e-4 and first.sources["lr"].endswith("first.yaml")
    assert first.parameters["name"] == "from-f" and first.parameters["steps"] == 12
    assert second.parameters["steps"] == 12 and second.parameters["name"] == "scoped"
    assert "lr" not in second.parameters  # notebook default applies
    assert first.parameters["run_dir"] == str(tmp_path / "out")


def test_int_accepted_for_float_and_coerced(profile):
    root, _ = profile
    (first,) = resolve(load_pipeline("t", root)[:1], "t", overrides={"lr": 1})
    assert first.parameters["lr"] == 1.0 and isinstance(first.parameters["lr"], float)


def test_unknown_parameter_names_notebook_and_known(profile):
    root, _ = profile
    with pytest.raises(ParameterError) as ei:
        resolve(load_pipeline("t", root), "t", overrides={"stepz": 3})
    msg = str(ei.value)
    assert "stepz" in msg and "not declared" in msg


def test_unknown_parameter_in_profile_file(profile):
    root, _ = profile
    (root / "t" / "first.yaml").write_text("lrr: 0.1\n")
    with pytest.raises(ParameterError) as ei:
        resolve(load_pipeline("t", root), "t")
    msg = str(ei.value)
    assert "unknown parameter 'lrr'" in msg and "first (01_test.ipynb)" in msg and "known parameters: run_dir" in msg


@pytest.mark.parametrize("key,value,typename", [("steps", "three", "int"), ("steps", 2.5, "int"),
                                                ("lr", "fast", "float"), ("verbose", 1, "bool"),
                                                ("flags", "a", "list")])
def test_mistyped_parameter(profile, key, value, typename):
    root, _ = profile
    with pytest.raises(ParameterError) as ei:
        resolve(load_pipeline("t", root)[:1], "t", overrides={key: value})
    assert f"'{key}' must be {typename}" in str(ei.value)


def test_bad_pipeline_reports_all_problems(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pipeline.yaml").write_text(
        "executions:\n  - notebook: nope\n  - name: x\n  - notebook: nope\n    params: missing.yaml\n")
    with pytest.raises(DataError) as ei:
        load_pipeline("bad", tmp_path)
    msg = str(ei.value)
    assert "pipeline.yaml" in msg and "executions[1]" in msg and "missing.yaml" in msg and "duplicate" in msg


def test_unknown_profile_lists_known(tmp_path, profile):
    root, _ = profile
    with pytest.raises(DataError, match="known profiles: t"):
        load_pipeline("nope", root)


def test_run_executes_and_writes_manifest(profile, tmp_path):
    root, nb = profile
    out = tmp_path / "out"
    manifest = run_pipeline("t", params_root=root, out_dir=out, progress_bar=False,
                                   overrides={"second.verbose": True})
    assert manifest["status"] == "ok"
    saved = json.loads((out / "manifest.json").read_text())
    assert [e["status"] for e in saved["executions"]] == ["ok", "ok"]
    assert all(e["duration_s"] > 0 for e in saved["executions"])
    assert saved["executions"][0]["parameters"]["lr"] == 1e-4
    assert set(saved["git"]) == {"commit", "dirty", "branch"}
    for pkg in ("mlx", "mlx-lm", "papermill"):
        assert saved["packages"][pkg]
    assert saved["blas"] and saved["python"] and saved["platform"]["machine"] and saved["mlx_jit_flags"]
    assert len(saved["inputs"][str(nb)]) == 64  # sha256 of the notebook
    assert len(saved["inputs"][str(root / "t" / "first.yaml")]) == 64
    seen = json.loads((out / "seen.json").read_text())
    assert seen["verbose"] is True and seen["steps"] == 7  # the second execution ran last
    executed = nbformat.read(str(out / "notebooks" / "second.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_failing_notebook_exits_nonzero_with_path(tmp_path):
    nb = make_notebook(tmp_path / "02_fail.ipynb", body="raise ValueError('boom from cell')\n")
    root = tmp_path / "params"
    (root / "f").mkdir(parents=True)
    (root / "f" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {nb}\n    name: failing\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lekutils", "run", "--profile", "f", "--params-root", str(root),
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert str(out / "notebooks" / "failing.ipynb") in proc.stderr
    assert re.search(r"failed in cell \d+ \(In \[\d+\]\): ValueError: boom from cell", proc.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["executions"][0]["status"] == "failed"


def test_cli_rejects_bad_parameter_before_running(profile, tmp_path):
    root, _ = profile
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lekutils", "run", "--profile", "t", "--params-root", str(root),
                           "--out", str(out), "-p", "steps=many"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'steps' must be int" in proc.stderr
    assert not (out / "manifest.json").exists()


def test_cli_lists_one_module_per_command(tmp_path, capsys):
    from lekutils.__main__ import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"run", "score", "gates", "bench", "kernelspec", "review", "export", "upstream",
                                "exec", "model"}
    args = parser.parse_args(["bench", "score", "--n", "2", "--source", "synthetic", "--processes", "1"])
    assert args.func(args) == 0 and "texts/s" in capsys.readouterr().out
    assert parser.parse_args(["kernelspec"]).name == "lekutils"
