"""The curriculum table (params/<profile>/curriculum.yaml): shape checks, and parameter precedence
notebook default < defaults[section] < phases[K][section] < params file < -f < -p."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from lekutils.core.errors import DataError, ParameterError
from lekutils.core.hashing import sha256_file
from lekutils.runner.curriculum import SECTIONS, load_curriculum
from lekutils.runner.manifest import build_manifest
from lekutils.runner.profile import load_pipeline, resolve

PARAMS = ('run_dir = "runs/smoke"\nphase = 0\nlr = 1.0e-5\nsteps: int = 3\nname = "x"\nflags = ["a"]\n'
          'adapter = None\nverbose = False\n')


def make_notebook(path: Path, params: str = PARAMS) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Test notebook"), cell]
    nbformat.write(nb, str(path))
    return path


TABLE = """defaults:
  train: {lr: 2.0e-5, name: from-defaults, steps: 4}
  distill: {steps: 99}
phases:
  - phase: 0
    title: zero
    train: {name: phase-zero}
  - phase: 1
    title: one
    train: {name: phase-one, flags: [b]}
"""


@pytest.fixture
def curriculum(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "nb").mkdir()
    nb = make_notebook(tmp_path / "nb" / "20_train_phase.ipynb")
    root = tmp_path / "params"
    (root / "t").mkdir(parents=True)
    (root / "t" / "pipeline.yaml").write_text(
        f"executions:\n  - notebook: {nb}\n    name: p0\n    phase: 0\n"
        f"  - notebook: {nb}\n    name: p1\n    phase: 1\n    params: p1.yaml\n")
    (root / "t" / "p1.yaml").write_text("steps: 5\n")
    (root / "t" / "curriculum.yaml").write_text(TABLE)
    return root, nb


def test_sections_are_the_per_phase_notebooks(repo_root: Path) -> None:
    assert SECTIONS == {"10_self_distill": "distill", "20_train_phase": "train"}
    for stem in SECTIONS:
        assert (repo_root / "notebooks" / f"{stem}.ipynb").exists()


def test_precedence(curriculum: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = curriculum
    f = tmp_path / "f.yaml"
    f.write_text("p1.verbose: true\n")
    p0, p1 = resolve(load_pipeline("t", root), "t", [f], {"p1.lr": 3.0e-5}, out_dir=tmp_path)
    assert p0.parameters == {"lr": 2.0e-5, "name": "phase-zero", "steps": 4, "phase": 0, "run_dir": str(tmp_path)}
    assert p0.sources["lr"].endswith("curriculum.yaml defaults.train")
    assert p0.sources["name"].endswith("curriculum.yaml phases[0].train")
    assert p1.parameters["phase"] == 1 and p1.parameters["name"] == "phase-one" and p1.parameters["flags"] == ["b"]
    assert p1.parameters["steps"] == 5 and p1.sources["steps"].endswith("p1.yaml")  # params file over the table
    assert p1.parameters["lr"] == 3.0e-5 and p1.sources["lr"] == "-p"
    assert p1.parameters["verbose"] is True and p1.sources["verbose"] == f"-f {f}"
    manifest = build_manifest("t", [p0, p1], ["test"])
    table = root / "t" / "curriculum.yaml"
    assert sha256_file(table) in manifest["inputs"].values()


def test_unknown_and_mistyped_parameters_name_the_table(curriculum: tuple[Path, Path]) -> None:
    root, _ = curriculum
    (root / "t" / "curriculum.yaml").write_text(TABLE.replace("name: phase-one", "nmae: phase-one")
                                                .replace("steps: 4", "steps: four"))
    with pytest.raises(ParameterError) as e:
        resolve(load_pipeline("t", root), "t")
    msg = str(e.value)
    assert "unknown parameter 'nmae' in" in msg and "phases[1].train" in msg
    assert "'steps' must be int" in msg and "defaults.train" in msg


@pytest.mark.parametrize("text, line, field, words", [
    ("defaults:\n  trian: {a: 1}\nphases:\n  - {phase: 0}\n", 2, "defaults.trian", "unknown section"),
    ("phases:\n  - {phase: 0}\n  - {phase: 2}\n", 1, "phases", "missing phase(s) 1"),
    ("phases:\n  - {phase: 0}\n  - phase: 0\n", 3, "phases[1].phase", "duplicate phase 0"),
    ("phases:\n  - {phase: 0}\n  - just text\n", 3, "phases[1]", "expected a mapping"),
    ("phases:\n  - {phase: 0, distill: [1]}\n", 2, "phases[0].distill", "expected a mapping"),
    ("phases:\n  - {phase: 0, train: {}, colour: red}\n", 2, "phases[0].colour", "unknown key"),
    ("default: {}\nphases:\n  - {phase: 0}\n", 1, "default", "unknown key"),
    ("phases:\n  - {title: x}\n", 2, "phases[0].phase", "must be an integer"),
])
def test_shape_errors_name_file_line_field(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    path = tmp_path / "curriculum.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_curriculum(path)
    hits = [p for p in e.value.problems if p.field == field]
    assert hits and hits[0].line == line and words in hits[0].message, e.value.problems
    assert str(path) in str(e.value)


def test_phase_without_row_or_section(curriculum: tuple[Path, Path], tmp_path: Path) -> None:
    root, nb = curriculum
    (root / "t" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {nb}\n    phase: 7\n")
    with pytest.raises(DataError, match="no row for phase 7"):
        resolve(load_pipeline("t", root), "t")
    other = make_notebook(tmp_path / "nb" / "01_other.ipynb")
    (root / "t" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {other}\n    phase: 0\n")
    with pytest.raises(DataError, match="has no curriculum section"):
        resolve(load_pipeline("t", root), "t")
    (root / "t" / "pipeline.yaml").write_text(f"executions:\n  - notebook: {nb}\n    phase: one\n")
    with pytest.raises(DataError, match="'phase' must be an integer"):
        load_pipeline("t", root)


@pytest.mark.parametrize("profile", ["smoke", "gemma3-27b", "demo"])
def test_shipped_tables_cover_five_phases(profile: str, repo_root: Path) -> None:
    table = load_curriculum(repo_root / "params" / profile / "curriculum.yaml")
    assert sorted(table.phases) == [0, 1, 2, 3, 4]
    assert [table.title(k) for k in range(5)] == ["creative baseline lock", "deep axiom reasoning",
                                                  "multi-perspective", "adversarial resilience", "synthesis"]
    names = [e.name for e in load_pipeline(profile) if e.phase is not None]
    assert sorted(names) == sorted([f"10_self_distill_phase{k}" for k in range(5)]
                                   + [f"{(k + 2) * 10}_phase{k}_train" for k in range(5)])
    train = [n for n in names if n.endswith("_train")]
    assert train == sorted(train)  # phases train in order, each from the previous adapter


def test_demo_study_never_trains_on_its_evaluation_probes() -> None:
    """Held-out discipline of the default study: every distillation prompt (with its rephrasings) is
    checked against the probes the gates evaluate on, by id and near-duplicate text."""
    from lekutils.data.diversity import refuse_heldout_overlap
    from lekutils.data.probes import load_probes
    from lekutils.runner.params import notebook_parameters
    from lekutils.tasks.distill import with_rephrasings

    def params(e):  # the notebook's defaults under the resolved values
        return {**{k: s.default for k, s in notebook_parameters(e.notebook).items()}, **e.parameters}

    executions = resolve(load_pipeline("demo"), "demo")
    evals = {tuple(params(e)["gate_probe_files"]) for e in executions if e.notebook.stem == "20_train_phase"}
    assert len(evals) == 1
    (eval_files,) = evals
    for e in executions:
        if e.notebook.stem != "10_self_distill":
            continue
        p = params(e)
        assert tuple(p["heldout_files"]) == eval_files, e.name
        prompts = load_probes(*p["prompt_files"])
        refuse_heldout_overlap(with_rephrasings(prompts) if p["rephrasings"] else prompts, eval_files)
