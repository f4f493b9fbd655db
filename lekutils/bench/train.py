"""Training throughput: ``lekutils.train.loop`` against the ``mlx_lm lora`` command line, same config and data.

``python -m lekutils bench train [--model SPEC_OR_DIR] [--iters 40] [--repeats 2] [--out result.json]``

Both run in fresh processes, alternating (ours, CLI, ours, CLI, ...), with the same phase config,
seed and data (synthetic chat examples, enough that no example repeats, so both see the same
batches). Steps/s is wall-clock between the end of step ``R`` and the end of step ``iters - R``
(``R`` = the CLI's report interval): for the CLI the arrival time of its report lines, for ours
the progress callback. That window excludes model loading, compilation warm-up and the
validations both do at the start and end; it includes all of our per-step work (metrics row,
fsync). Tokens/s: ours exact from the metrics, the CLI's from its ``trained tokens`` column
(0.1k resolution). Ratio = ours / CLI (median over repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lekutils.engine.models import mlx_model_dir
from lekutils.train.config import PhaseConfig

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LINE = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+\S+\s+([\d,]+)\s+([\d.]+)k\s*$")

OURS = r"""
import json, sys, time
from lekutils.core.blas import reexec_with_fast_blas
reexec_with_fast_blas()
import mlx_lm
from lekutils.train.config import PhaseConfig
from lekutils.train.loop import train_phase
model_dir, data, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
model, tok = mlx_lm.load(model_dir)
stamps = {}
def progress(step, iters, row):
    stamps[step] = (time.perf_counter(), row["trained_tokens"])
r = train_phase(model, tok, PhaseConfig(**cfg), data, out, progress=progress)
print("BENCH " + json.dumps({"stamps": stamps, "steps": r.steps}))
"""


def write_bench_data(d: Path, n_train: int, n_valid: int = 4, seed: int = 0) -> Path:
    """Synthetic chat examples of varied length (deterministic): answers of 40-120 words."""
    from lekutils.engine.models.tiny import CHAT_WORDS, write_chat_data

    words = (*CHAT_WORDS, "river", "lantern", "bridge", "garden")
    return write_chat_data(d, n_train, n_valid, seed, question_words=(5, 15), answer_words=(40, 120), words=words)


def _env() -> dict[str, str]:
    from lekutils.core.blas import blas_env

    return {**os.environ, **blas_env(), "PYTHONUNBUFFERED": "1", "LEKUTILS_BLAS_REEXEC": "1"}


def run_ours(model_dir: str, data: Path, work: Path, cfg: PhaseConfig, report: int) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="ours-", dir=work))
    p = subprocess.run([sys.executable, "-c", OURS, model_dir, str(data), str(out), json.dumps(cfg.to_dict())],
                       capture_output=True, text=True, env=_env(), timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"lekutils.train.loop run failed:\n{p.stderr[-3000:]}")
    res = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("BENCH "))[6:])
    st = {int(k): v for k, v in res["stamps"].items()}
    a, b = report, cfg.iters - report
    return {"steps": b - a, "seconds": st[b][0] - st[a][0], "tokens": st[b][1] - st[a][1]}


def run_cli(model_dir: str, data: Path, work: Path, cfg: PhaseConfig, report: int) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    conf = cfg.mlx_lm_config(model_dir, str(data), str(out))
    conf.update({"steps_per_report": report, "steps_per_eval": 10**9, "save_every": 10**9})
    conf = {k: v for k, v in conf.items() if v is not None}
    (out / "config.yaml").write_text(json.dumps(conf))  # JSON is YAML
    proc = subprocess.Popen([sys.executable, "-m", "mlx_lm", "lora", "-c", str(out / "config.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    stamps: dict[int, tuple[float, float]] = {}
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter()
        tail = (tail + [line])[-40:]
        m = _LINE.match(_ANSI.sub("", line))
        if m:
            stamps[int(m.group(1))] = (now, float(m.group(4)) * 1000)
    if proc.wait() != 0:
        raise RuntimeError("mlx_lm lora failed:\n" + "".join(tail))
    a, b = report, cfg.iters - report
    if a not in stamps or b not in stamps:
        raise RuntimeError("could not read the CLI's report lines:\n" + "".join(tail))
    return {"steps": b - a, "seconds": stamps[b][0] - stamps[a][0], "tokens": stamps[b][1] - stamps[a][1]}


def bench(model: str, *, iters: int = 40, report: int = 5, repeats: int = 2, batch_size: int = 1,
          num_layers: int = 8, rank: int = 8, max_seq_length: int = 512, grad_accumulation: int = 1,
          grad_checkpoint: bool = False, work: Path | None = None) -> dict[str, Any]:
    """Run the comparison; return both throughputs per repeat, medians and the ratio."""
    if work is None:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            return bench(model, iters=iters, report=report, repeats=repeats, batch_size=batch_size,
                         num_layers=num_layers, rank=rank, max_seq_length=max_seq_length,
                         grad_accumulation=grad_accumulation, grad_checkpoint=grad_checkpoint, work=Path(tmp))
    work = Path(work)
    data = write_bench_data(work / "data", n_train=iters * batch_size + 8)
    cfg = PhaseConfig(iters=iters, learning_rate=1.0e-5, rank=rank, dropout=0.0, scale=16.0, num_layers=num_layers,
                      batch_size=batch_size, grad_accumulation=grad_accumulation, grad_checkpoint=grad_checkpoint,
                      max_seq_length=max_seq_length, val_every=10**6, val_batches=1, checkpoint_every=10**6)
    mdir = mlx_model_dir(model)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "cli": []}
    for _ in range(repeats):
        runs["ours"].append(run_ours(mdir, data, work, cfg, report))
        runs["cli"].append(run_cli(mdir, data, work, cfg, report))
    out: dict[str, Any] = {"model": model, "model_dir": mdir, "config": cfg.to_dict(), "window": [report, iters - report],
                           "runs": runs}
    for k, rs in runs.items():
        for r in rs:
            r["steps_per_s"] = r["steps"] / r["seconds"]
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
        out[k] = {"steps_per_s": statistics.median(r["steps_per_s"] for r in rs),
                  "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs)}
    out["ratio_steps_per_s"] = out["ours"]["steps_per_s"] / out["cli"]["steps_per_s"]
    out["ratio_tokens_per_s"] = out["ours"]["tokens_per_s"] / out["cli"]["tokens_per_s"]
    from lekutils.core.blas import active_blas

    out["blas"] = active_blas()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lekutils bench train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--report", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--num-layers", type=int, default=8)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--grad-accumulation", type=int, default=1)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.iters < 3 * a.report:
        ap.error("--iters must be at least 3 x --report")
    res = bench(a.model, iters=a.iters, report=a.report, repeats=a.repeats, batch_size=a.batch_size,
                num_layers=a.num_layers, rank=a.rank, max_seq_length=a.max_seq_length,
                grad_accumulation=a.grad_accumulation, grad_checkpoint=a.grad_checkpoint)
    for k in ("ours", "cli"):
        each = ", ".join(f"{r['steps_per_s']:.3f}" for r in res["runs"][k])
        print(f"{k:5s} steps/s {res[k]['steps_per_s']:.3f}  tokens/s {res[k]['tokens_per_s']:.1f}  (runs: {each})")
    print(f"ratio ours/cli: steps/s {res['ratio_steps_per_s']:.3f}, tokens/s {res['ratio_tokens_per_s']:.3f}")
    if a.out:
        from lekutils.core.jsonl import atomic_write_json

        atomic_write_json(a.out, res)
    return 0
