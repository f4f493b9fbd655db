"""Data-parallel training: 1 process x global batch B against N processes x B/N rows (``mlx.launch``).

``python -m lekutils bench dp_train [--model SPEC_OR_DIR] [--np 2] [--batch-size 4] [--iters 12] [--out r.json]``

Both runs go through :func:`lekutils.train.distributed.run_phase` (``mlx.launch -n 1`` and ``-n N``,
ring backend on loopback), same phase config, seed, data and global batch, dropout 0. Reported:
time per step (median of mlx-lm's per-step training time, step 1 with its compilation left out;
and the wall time between the metric rows of steps ``skip`` and ``iters``, which includes our
per-step work), and the largest relative difference of the two loss curves (train and validation).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from lekutils.train.config import PhaseConfig


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def _timing(metrics: list[dict[str, Any]], skip: int) -> dict[str, float]:
    rows = [r for r in metrics if r.get("train_loss") is not None]
    per_step = [1.0 / r["steps_per_s"] for r in rows if r["step"] > skip and r.get("steps_per_s")]
    t = {r["step"]: r["time"] for r in rows}
    last = max(t)
    return {"median_step_s": statistics.median(per_step), "wall_step_s": (t[last] - t[skip]) / (last - skip)}


def max_rel_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Largest relative difference of train and validation losses, step by step."""
    worst = 0.0
    for ra, rb in zip(a, b, strict=True):
        if ra["step"] != rb["step"]:
            raise ValueError(f"step {ra['step']} != {rb['step']}")
        for k in ("train_loss", "val_loss"):
            if ra.get(k) is not None and rb.get(k) is not None:
                worst = max(worst, abs(ra[k] - rb[k]) / abs(ra[k]))
    return worst


def bench(model: str, *, processes: int = 2, batch_size: int = 4, iters: int = 12, num_layers: int = 8,
          rank: int = 8, max_seq_length: int = 256, skip: int = 2, work: Path | None = None) -> dict[str, Any]:
    from lekutils.bench.train import write_bench_data
    from lekutils.engine.models import mlx_model_dir
    from lekutils.train.distributed import DataParallel, run_phase

    if work is None:
        with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
            return bench(model, processes=processes, batch_size=batch_size, iters=iters, num_layers=num_layers,
                         rank=rank, max_seq_length=max_seq_length, skip=skip, work=Path(tmp))
    data = write_bench_data(work / "data", n_train=iters * batch_size + 8, n_valid=batch_size)
    cfg = PhaseConfig(iters=iters, learning_rate=1.0e-4, rank=rank, dropout=0.0, scale=16.0, num_layers=num_layers,
                      batch_size=batch_size, grad_accumulation=1, grad_checkpoint=False,
                      max_seq_length=max_seq_length, val_every=iters, val_batches=1, checkpoint_every=iters)
    mdir = mlx_model_dir(model)
    out: dict[str, Any] = {"model": model, "config": cfg.to_dict(), "runs": {}, "loadavg_start": _loadavg()}
    for n in (1, processes):
        job = {"model": mdir, "config": cfg.to_dict(), "data_dir": str(data), "out_dir": str(work / f"np{n}"),
               "previous_adapter": None}
        res = run_phase(job, DataParallel(processes=n))
        out["runs"][n] = {"processes": n, "rows_per_process": batch_size // n, **_timing(res.metrics, skip),
                          "metrics": res.metrics}
    out["loadavg_end"] = _loadavg()
    one, many = out["runs"][1], out["runs"][processes]
    out["max_rel_loss_diff"] = max_rel_diff(one["metrics"], many["metrics"])
    out["speedup_median_step"] = one["median_step_s"] / many["median_step_s"]
    out["speedup_wall_step"] = one["wall_step_s"] / many["wall_step_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lekutils bench dp_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="global batch (split over --np processes)")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--num-layers", type=int, default=8)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.batch_size % a.np:
        ap.error("--batch-size must be a multiple of --np")
    res = bench(a.model, processes=a.np, batch_size=a.batch_size, iters=a.iters, num_layers=a.num_layers,
                rank=a.rank, max_seq_length=a.max_seq_length)
    print(f"loadavg start: {res['loadavg_start']}")
    for n, r in res["runs"].items():
        print(f"{n} process(es) x {r['rows_per_process']} rows: median step {r['median_step_s']:.3f}s, "
              f"wall per step {r['wall_step_s']:.3f}s")
    print(f"speedup {a.np} vs 1: median step {res['speedup_median_step']:.2f}x, wall {res['speedup_wall_step']:.2f}x; "
          f"max relative loss difference {res['max_rel_loss_diff']:.2e}")
    print(f"loadavg end: {res['loadavg_end']}")
    if a.out:
        from lekutils.core.jsonl import atomic_write_json

        atomic_write_json(a.out, res)
    return 0
