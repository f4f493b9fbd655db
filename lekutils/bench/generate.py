"""Benchmark: the upstream generation loop vs the batched shared-prefix engine.

    python -m lekutils bench generate [--model SPEC] [--probes 4] [--samples 8] [--max-tokens 128]

For a JSON-kernel-sized (~2.2 KB) and a TXT-kernel-sized (~9 KB) system prompt, generating
``probes x samples`` samples of ``max_tokens`` tokens (EOS ignored on every side, so all samples
have the same length):

(a)  upstream loop: one ``mlx_lm.generate`` call per sample with the full prompt, on the package's
     stock weights (the GGUF's quantized tensors as ``mx.load`` reads them) and the reference BLAS
     (a subprocess without ``LD_PRELOAD``). Sequential, so timed on ``--upstream-samples`` samples
     and scaled.
(a') the same loop on the engine's weights (float32 on CPU) and BLAS (OpenBLAS): what the weights
     and BLAS alone give.
(b)  the engine: kernel prefilled once, probes prefilled once, samples decoded in batches.

The last line printed is one JSON object: per kernel size, ``upstream_samples_per_hour``,
``engine_samples_per_hour`` and ``ratio`` (plus the details).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

PROBES = (
    "A friend asks you to keep a secret that could hurt someone else. What should you do?",
    "Is it ever right to break a promise? Give an example.",
    "How should a small town decide whether to build a new factory that brings jobs but pollutes the river?",
    "Someone online is spreading a rumour about you. How do you respond?",
    "What do we owe to people who will live a hundred years from now?",
    "Should an AI ever refuse a request from its user? When?",
    "A shop gives you too much change. Nobody would notice. What do you do?",
    "Explain fairness to a ten-year-old.",
)
KERNEL_FILES = {"json": ("claude-native.json", 2193), "txt": ("lek-1-kernel.txt", 9189)}
_FILLER = ("Act with care for every conscious being. Tell the truth plainly and kindly. Respect the "
           "autonomy of the person you speak with; inform, do not coerce. Prefer actions that reduce harm "
           "over time, and say so when you are uncertain. ")


def kernel_text(kind: str) -> tuple[str, str]:
    """The upstream kernel file's text if present (read by path, never copied), else synthetic text of its size."""
    from lekutils.core.paths import upstream_dir

    name, size = KERNEL_FILES[kind]
    p = upstream_dir() / "kernel" / name
    if p.is_file():
        return p.read_text(encoding="utf-8"), str(p)
    text = (_FILLER * (size // len(_FILLER) + 1))[:size]
    return text, f"synthetic ({size} bytes)"


def set_openblas_threads(n: int) -> int | None:
    """Set the preloaded OpenBLAS's thread count at run time; returns the count now in force (None: no OpenBLAS)."""
    import ctypes

    from lekutils.core.blas import active_blas

    which = active_blas()
    if not which.startswith("openblas:"):
        return None
    lib = ctypes.CDLL(which.split(":", 1)[1])
    lib.openblas_set_num_threads(int(n))
    return int(lib.openblas_get_num_threads())


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def _peak_gb() -> float:
    import mlx.core as mx

    return max(mx.get_peak_memory() / 1e9, 0.0)


def upstream_loop(model: Any, tok: Any, system: str, probes: list[str], n: int, max_tokens: int,
                  temperature: float, top_p: float) -> dict[str, Any]:
    """Time ``n`` samples of the upstream loop (one ``mlx_lm.stream_generate`` per sample, full prompt)."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    tok.eos_token_ids = set()  # every sample runs to max_tokens, as the engine's do here
    mx.random.seed(0)
    times, prompt_tps, gen_tps, prompt_tokens = [], [], [], []
    for i in range(n):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": probes[i % len(probes)]}]
        try:
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # no system role (Gemma): fold, as upstream did
            messages = [{"role": "user", "content": system + "\n\n" + probes[i % len(probes)]}]
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        t0 = time.perf_counter()
        last = None
        for resp in stream_generate(model, tok, prompt, max_tokens=max_tokens,
                                    sampler=make_sampler(temp=temperature, top_p=top_p)):
            last = resp
        times.append(time.perf_counter() - t0)
        assert last is not None
        prompt_tps.append(last.prompt_tps)
        gen_tps.append(last.generation_tps)
        prompt_tokens.append(last.prompt_tokens)
    per = sum(times) / len(times)
    return {"samples_timed": n, "s_per_sample": per, "samples_per_hour": 3600 / per,
            "prompt_tokens": sum(prompt_tokens) / n, "prefill_tok_s": sum(prompt_tps) / n,
            "decode_tok_s": sum(gen_tps) / n, "peak_mem_gb": _peak_gb(), "max_rss_gb": _rss_gb()}


def engine_run(model: Any, tok: Any, spec: str, system: str, probes: list[str], samples: int, max_tokens: int,
               temperature: float, top_p: float, batch_size: int) -> dict[str, Any]:
    """Time the engine on ``probes x samples`` (a fresh engine: the kernel prefill is included)."""
    import mlx.core as mx

    from lekutils.engine.base import GenerationRequest, SamplerSettings
    from lekutils.engine.local import Engine

    eng = Engine(model, tok, batch_size=batch_size, model_spec=spec)
    eng.stop_ids = set()  # EOS ignored: all samples run to max_tokens
    reqs = [GenerationRequest(f"p{i}", p, system, n_samples=samples) for i, p in enumerate(probes)]
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    res = eng.generate(reqs, SamplerSettings(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=1))
    wall = time.perf_counter() - t0
    st = eng.stats
    return {"samples": len(res), "wall_s": wall, "samples_per_hour": 3600 * len(res) / wall,
            "prompt_tokens": res[0].prompt_tokens, "prefill_tokens": st["prefill_tokens"],
            "prefill_s": st["prefill_s"], "prefill_tok_s": st["prefill_tokens"] / max(st["prefill_s"], 1e-9),
            "decode_tokens": st["decode_tokens"], "decode_s": st["decode_s"],
            "decode_tok_s": st["decode_tokens"] / max(st["decode_s"], 1e-9),
            "peak_mem_gb": _peak_gb(), "max_rss_gb": _rss_gb(),
            "example": res[0].text[:160]}


def _worker(args: argparse.Namespace) -> None:
    """Subprocess entry: the upstream loop on the stock weights; prints one JSON line."""
    from lekutils.core.blas import active_blas
    from lekutils.engine import models

    model, tok = models.load(args.model, dtype=args.worker_dtype)
    out = {"blas": active_blas(), "dtype": args.worker_dtype}
    for kind in args.kernels:
        system, _ = kernel_text(kind)
        out[kind] = upstream_loop(model, tok, system, list(PROBES[: args.probes]), args.upstream_samples,
                                  args.max_tokens, args.temperature, args.top_p)
    print(json.dumps(out))


def _run_upstream_subprocess(args: argparse.Namespace) -> dict[str, Any]:
    from lekutils.core.blas import DISABLE

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LEKUTILS_BLAS_REEXEC")}
    env[DISABLE] = "1"  # reference BLAS, as the upstream loop ran
    cmd = [sys.executable, "-m", "lekutils", "bench", "generate", "--worker", "--model", args.model,
           "--worker-dtype", args.upstream_dtype, "--probes", str(args.probes), "--max-tokens", str(args.max_tokens),
           "--upstream-samples", str(args.upstream_samples), "--temperature", str(args.temperature),
           "--top-p", str(args.top_p), "--kernels", *args.kernels]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"upstream worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(name: str, r: dict[str, Any]) -> str:
    return (f"  {name:<28} {r['samples_per_hour']:>9.0f} samples/h | prefill {r['prefill_tok_s']:>7.1f} tok/s | "
            f"decode {r['decode_tok_s']:>7.1f} tok/s | peak MLX {r['peak_mem_gb']:.2f} GB, max RSS {r['max_rss_gb']:.2f} GB")


def build_parser() -> argparse.ArgumentParser:
    from lekutils.engine.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="python -m lekutils bench generate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8, help="samples per probe")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--upstream-samples", type=int, default=2, help="samples timed per sequential loop")
    ap.add_argument("--upstream-dtype", default="quantized", help="stock weights: the GGUF as mx.load reads it")
    ap.add_argument("--kernels", nargs="+", default=["json", "txt"], choices=list(KERNEL_FILES))
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OpenBLAS threads on the engine side, set at run time (default 1: on an oversubscribed "
                         "machine two OpenBLAS threads spin-wait and run ~50x slower)")
    ap.add_argument("--skip-upstream", action="store_true", help="skip (a), the reference-BLAS subprocess")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-dtype", default="quantized", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark: print a report and, last, one JSON line (see :func:`run`). Returns 0."""
    args = build_parser().parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    run(args, reexec=argv is None)
    return 0


def run(args: argparse.Namespace, *, reexec: bool = False) -> dict[str, Any]:
    """The benchmark itself; returns the summary printed last."""
    from lekutils.core.blas import reexec_with_fast_blas

    if reexec:
        reexec_with_fast_blas()
    threads = set_openblas_threads(args.blas_threads)
    import platform

    from lekutils.core.blas import active_blas
    from lekutils.engine import models

    print(f"model {args.model} | {args.probes} probes x {args.samples} samples x {args.max_tokens} tokens | "
          f"{os.cpu_count()} CPUs, {platform.machine()}, load average {os.getloadavg()[0]:.1f} | "
          f"BLAS here: {active_blas()}, OpenBLAS threads {threads}", flush=True)
    print("note: wall-clock timings on a shared machine are noisy", flush=True)
    upstream = None
    if not args.skip_upstream:
        t0 = time.perf_counter()
        upstream = _run_upstream_subprocess(args)
        print(f"(a) upstream loop ran in a subprocess ({upstream['blas']}, {upstream['dtype']} weights, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    model, tok = models.load(args.model)
    info = models.load_info(model)
    print(f"engine weights: {info['dtype']} on {info['device']}", flush=True)
    probes = list(PROBES[: args.probes])
    summary: dict[str, Any] = {"model": args.model, "engine_dtype": info["dtype"], "blas": active_blas(),
                               "openblas_threads": threads,
                               "load_average_start": round(os.getloadavg()[0], 1),
                               "probes": args.probes, "samples": args.samples, "max_tokens": args.max_tokens,
                               "batch_size": args.batch_size}
    for kind in args.kernels:
        system, source = kernel_text(kind)
        own = upstream_loop(model, tok, system, probes, args.upstream_samples, args.max_tokens,
                            args.temperature, args.top_p)
        eng = engine_run(model, tok, args.model, system, probes, args.samples, args.max_tokens,
                         args.temperature, args.top_p, args.batch_size)
        print(f"{kind} kernel: {len(system.encode())} bytes, {eng['prompt_tokens']} prompt tokens ({source})")
        if upstream is not None:
            print(_fmt("(a) upstream loop", upstream[kind]))
        print(_fmt("(a') loop, engine weights", own))
        print(_fmt("(b) engine", eng) + f" | {eng['wall_s']:.1f} s for {eng['samples']} samples")
        row: dict[str, Any] = {"kernel_bytes": len(system.encode()), "prompt_tokens": eng["prompt_tokens"],
                               "engine_samples_per_hour": round(eng["samples_per_hour"], 1),
                               "own_weights_loop_samples_per_hour": round(own["samples_per_hour"], 1),
                               "engine_decode_tok_s": round(eng["decode_tok_s"], 1),
                               "engine_prefill_tok_s": round(eng["prefill_tok_s"], 1),
                               "engine_peak_mem_gb": round(eng["peak_mem_gb"], 3)}
        if upstream is not None:
            up = upstream[kind]["samples_per_hour"]
            row.update(upstream_samples_per_hour=round(up, 1), ratio=round(eng["samples_per_hour"] / up, 2))
            print(f"  ratio engine / upstream loop: {row['ratio']:.1f}x")
        else:
            row.update(upstream_samples_per_hour=None, ratio=None)
        row["ratio_vs_own_weights_loop"] = round(eng["samples_per_hour"] / own["samples_per_hour"], 2)
        print(f"  ratio engine / loop on engine weights: {row['ratio_vs_own_weights_loop']:.1f}x", flush=True)
        summary[kind] = row
    print(json.dumps(summary))
    return summary
