"""External augmentation on the embedded real models: phase 2 of the smoke profile with SmolLM2-135M
distilling and Gemma 3 270M as the reference model, mixed 70/30. The distillation is killed (-9) inside
the reference model's task and resumed; then notebook 10 runs the same phase on the same folder, finds
every answer stored (nothing generated again) and writes the mix into its summary and extract.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REFERENCE = "embedded:gemma3-270m"
OVERRIDES = {"reference_models": [REFERENCE], "reference_samples": 3, "reference_fraction": 0.3}

#: the notebook's setup cell, with a smaller batch and per-row storing (neither is in a record's content
#: key), and each progress tick slowed so that the kill lands inside the reference task
SCRIPT = """
import sys, time
from lekutils.core.blas import reexec_with_fast_blas
reexec_with_fast_blas()
from pathlib import Path
from lekutils.data.probes import load_probes
from lekutils.runner.params import notebook_parameters
from lekutils.runner.profile import load_pipeline, resolve
from lekutils.tasks import distill
out, slow = Path(sys.argv[1]), float(sys.argv[2])
ex = next(e for e in load_pipeline("smoke") if e.name == "10_self_distill_phase2")
p = {{k: v.default for k, v in notebook_parameters(ex.notebook).items()}}
p.update(resolve([ex], "smoke", overrides={overrides!r}, out_dir=out)[0].parameters)
probes = load_probes(*p["prompt_files"])[:p["max_prompts"]]
s = distill.DistillSettings(
    phase=2, model=p["model"], kernel=p["kernel"] or None, samples=p["samples_per_prompt"],
    temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"], seed=p["seed"],
    keep_threshold=p["keep_threshold"], keep_on=p["keep_on"], allow_truncated=p["allow_truncated"],
    trim_truncated=p["trim_truncated"], batch_size=2, chunk_size=2, store_every=1,
    reference_models=tuple(p["reference_models"]), reference_samples=p["reference_samples"],
    reference_fraction=p["reference_fraction"])
summary = distill.distill(probes, distill.phase_dir(out, 2) / "raw.jsonl", s, progress=lambda n: time.sleep(slow))
print("DONE", summary["total_generated"], summary["mix"]["self_used"], summary["mix"]["reference_used"], flush=True)
"""


def _run(script: Path, out: Path, slow: float, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out), str(slow)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_smollm2_with_gemma3_reference_killed_resumed_then_notebook(tmp_path: Path, repo_root: Path) -> None:
    from lekutils.runner.execute import execute, install_kernelspec, kernelspec_installed
    from lekutils.runner.profile import load_pipeline, resolve
    from lekutils.tasks.augment import wanted_references
    from lekutils.tasks.distill import generation_records, read_summary

    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(overrides=OVERRIDES))
    phase = tmp_path / "distill" / "phase2"
    proc = _run(script, tmp_path, 1.5, repo_root)
    deadline = time.monotonic() + 600
    work: list[Path] = []
    while proc.poll() is None and time.monotonic() < deadline:
        work = list(phase.glob("raw.ref-gemma3-270m-*.partial.jsonl"))
        if work and work[0].read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before the kill:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    before = work[0].read_text().splitlines()
    assert 1 <= len(before) < 6 and not (phase / "raw.jsonl").exists()
    assert (phase / "raw.partial.jsonl").read_text().count("\n") == 4  # the self task (2 x 2) was done

    out = _run(script, tmp_path, 0.0, repo_root).communicate(timeout=900)[0]
    assert "DONE 10" in out, out
    after = work[0].read_text().splitlines()
    assert after[:len(before)] == before  # what was stored before the kill stayed as it was
    keys = [(r["key"], r["sample_idx"]) for r in map(json.loads, after)]
    assert len(keys) == len(set(keys)) == 6  # 2 prompts x 3 samples, none lost, none twice

    recs = generation_records(phase / "raw.jsonl")
    refs = [r for r in recs if r["source"] == REFERENCE]
    assert len(recs) == 10 and len(refs) == 6
    assert all(r["source_model"] == "gemma3-270m" and r["sample_idx"] >= 1000 for r in refs)
    assert all(r["source_model"] == "smollm2-135m-instruct" for r in recs if r["source"] == "self")
    mix = read_summary(phase / "raw.jsonl")["mix"]
    want = wanted_references(mix["self_kept"], 0.3)
    assert mix["reference_used"] == min(mix["reference_kept"], want) and mix["self_used"] == mix["self_kept"]

    # notebook 10 on the same folder: every answer is stored, nothing is generated again
    if not kernelspec_installed():
        install_kernelspec()
    ex = next(e for e in load_pipeline("smoke") if e.name == "10_self_distill_phase2")
    ex = resolve([ex], "smoke", overrides={**OVERRIDES, "run_dir": str(tmp_path)}, out_dir=tmp_path)[0]
    stored = {p: p.read_bytes() for p in phase.glob("*.partial.jsonl")}
    execute(ex, tmp_path, progress_bar=False)
    assert {p: p.read_bytes() for p in phase.glob("*.partial.jsonl")} == stored
    info = json.loads((phase / "extract.json").read_text())
    assert info["summary"]["mix"] == mix and info["summary"]["total_generated"] == 10
    assert sum(info["sources"].values()) == info["train"] + info["valid"]
    assert {x["source"] for x in info["summary"]["sources"]} == {"self", REFERENCE}
    print("mix:", json.dumps(mix), "sources in the split:", json.dumps(info["sources"]))
