"""Benchmark: the in-process engine vs 1 vs 2 local ``mlx_lm.server`` processes (loopback), one run.

    python -m lekutils bench serve [--model SPEC] [--probes 8] [--samples 2] [--max-tokens 48]

The same model, prompts (the probes of ``bench generate`` with the kernel file as system text),
sampler and ``max_tokens`` go (a) to the in-process engine (:mod:`lekutils.engine.local`, batched,
shared kernel prefix), (b) to one ``mlx_lm.server`` through :class:`lekutils.engine.remote.RemoteGenerator`,
(c) to two servers behind one spec (least-in-flight balancing). Servers run on OpenBLAS, one BLAS
thread each (started through ``python -m lekutils exec``), and are warmed up before timing; on a
machine with C cores all servers share those C cores. Each configuration reports samples/h and
generated tok/s (tokens counted by the engine or reported by the server, EOS respected, so
lengths can differ slightly between configurations; both figures use the actual counts).
The last line printed is one JSON object with every figure and the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def _measure(gen: Any, requests: list[Any], sampler: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    results = gen.generate(requests, sampler)
    wall = time.perf_counter() - t0
    tokens = sum(max(r.generation_tokens, 0) for r in results)
    return {"samples": len(results), "generated_tokens": tokens, "wall_s": round(wall, 2),
            "samples_per_hour": round(len(results) / wall * 3600, 1), "tok_per_s": round(tokens / wall, 2),
            "cut_off": sum(r.finish_reason == "length" for r in results),
            "endpoints": sorted({r.endpoint for r in results if r.endpoint}) or None,
            "per_endpoint": {e: sum(r.endpoint == e for r in results) for e in {r.endpoint for r in results if r.endpoint}}
            or None}


def build_parser() -> argparse.ArgumentParser:
    from lekutils.core.paths import REPO_ROOT
    from lekutils.engine.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="python -m lekutils bench serve", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="a local model spec (served from its MLX folder)")
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2, help="samples per probe")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0 (default): greedy, seedless requests, which mlx_lm.server batches; > 0 sends a seed "
                         "per request, which mlx_lm.server serves one at a time")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--kernel", default=str(REPO_ROOT / "data" / "kernels" / "lek-example-v1.json"),
                    help="system text file ('none': no system text)")
    ap.add_argument("--batch-size", type=int, default=16, help="the in-process engine's batch")
    ap.add_argument("--in-flight", type=int, default=8, help="requests in flight per server")
    ap.add_argument("--configs", nargs="+", default=["engine", "server1", "server2"],
                    choices=["engine", "server1", "server2"])
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(run(args)))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lekutils.bench.generate import PROBES
    from lekutils.core.blas import active_blas
    from lekutils.engine.base import GenerationRequest, SamplerSettings
    from lekutils.engine.mlx_server import start_mlx_server
    from lekutils.engine.models import mlx_model_dir
    from lekutils.engine.remote import RemoteGenerator

    load_start = _loadavg()
    system = None if args.kernel == "none" else Path(args.kernel).read_text(encoding="utf-8")
    prompts = [PROBES[i % len(PROBES)] + ("" if i < len(PROBES) else f" ({i})") for i in range(args.probes)]
    requests = [GenerationRequest(f"p{i}", p, system, args.samples) for i, p in enumerate(prompts)]
    sampler = SamplerSettings(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=0)
    warm = [GenerationRequest("warm", "Hello", system, 1)]
    out: dict[str, Any] = {"bench": "serve", "model": args.model, "probes": args.probes, "samples": args.samples,
                           "sampler": sampler.to_dict(), "kernel": args.kernel, "cpu_count": os.cpu_count(),
                           "blas": active_blas(), "batch_size": args.batch_size, "in_flight": args.in_flight,
                           "loadavg_start": load_start, "results": {},
                           "note": f"all servers and the engine share this machine's {os.cpu_count()} cores"}
    if "engine" in args.configs:
        from lekutils.engine.factory import open_generator

        gen = open_generator(args.model, batch_size=args.batch_size)
        gen.generate(warm, sampler)
        out["results"]["engine"] = r = _measure(gen, requests, sampler)
        print(f"engine (in-process, batch {args.batch_size}): {r['samples_per_hour']} samples/h, "
              f"{r['tok_per_s']} tok/s, {r['wall_s']} s", flush=True)
        del gen
    model_dir = mlx_model_dir(args.model)
    with tempfile.TemporaryDirectory(prefix="lek-bench-serve-") as tmp:
        for name, n in (("server1", 1), ("server2", 2)):
            if name not in args.configs:
                continue
            servers = [start_mlx_server(model_dir, log_path=Path(tmp) / f"{name}-{i}.log") for i in range(n)]
            try:
                spec = "openai:default_model@" + ",".join(s.url for s in servers)
                gen = RemoteGenerator(spec, batch_size=len(requests) * args.samples, in_flight=args.in_flight,
                                      timeout_s=600.0)
                for s in servers:  # each server warm (the first request of each loads its prompt cache)
                    RemoteGenerator(f"openai:default_model@{s.url}").generate(warm, sampler)
                out["results"][name] = r = _measure(gen, requests, sampler)
                gen.close()
            finally:
                for s in servers:
                    s.stop()
            print(f"{name} ({n} mlx_lm.server, {args.in_flight} in flight each): {r['samples_per_hour']} samples/h, "
                  f"{r['tok_per_s']} tok/s, {r['wall_s']} s, per endpoint {r['per_endpoint']}", flush=True)
    base = out["results"].get("engine")
    if base:
        for name in ("server1", "server2"):
            if name in out["results"]:
                out["results"][name]["vs_engine"] = round(out["results"][name]["tok_per_s"] / base["tok_per_s"], 3)
    out["loadavg_end"] = _loadavg()
    return out
