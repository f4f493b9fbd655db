"""Benchmark: the upstream generation loop vs the batched shared-prefix engine, with llama.cpp as a peer.

    python -m lekutils bench generate [--model SPEC] [--probes 4] [--samples 8] [--max-tokens 128]
                                      [--batch-sizes 16 32] [--peer/--no-peer] [--ttft-tokens 2048]

For a JSON-kernel-sized (~2.2 KB) and a TXT-kernel-sized (~9 KB) system prompt, generating
``probes x samples`` samples of ``max_tokens`` tokens (EOS ignored on every side, so all samples
have the same length):

(a)  upstream loop: one ``mlx_lm.generate`` call per sample with the full prompt, on the package's
     stock weights (the GGUF's quantized tensors as ``mx.load`` reads them) and the reference BLAS
     (a subprocess without ``LD_PRELOAD``). Sequential, so timed on ``--upstream-samples`` samples
     and scaled.
(a') the same loop on the engine's weights (float32 on CPU) and BLAS (OpenBLAS): what the weights
     and BLAS alone give.
(b)  the engine: kernel prefilled once, probes prefilled once, samples decoded in batches, once per
     batch size in ``--batch-sizes`` (aggregate decode tok/s, batch occupancy, peak memory).
(c)  llama.cpp (``--peer``, default on where ``llama_cpp`` imports; :mod:`lekutils.bench.llamacpp`) on
     the same GGUF with the same prompt tokens, on ``--llamacpp-threads`` threads (default: the
     engine's OpenBLAS threads): prefill, single-stream decode, batched decode at each batch size.
(d)  time to first token after a long kernel prefix (the first kernel's text repeated and cut at
     ``--ttft-tokens`` tokens of the model's tokenizer): cold (prefix prefilled) and warm (prefix
     reused: the engine's prefix cache, llama.cpp's matching KV prefix), engine and llama.cpp.

The last line printed is one JSON object: per kernel size, ``upstream_samples_per_hour``,
``engine_samples_per_hour`` and ``ratio`` (plus the details, ``by_batch_size`` and ``llamacpp``), and at
the top level the comparison keys of :func:`headline` (``engine_decode_tok_s``, ``llamacpp_decode_tok_s``,
``decode_ratio_vs_llamacpp``, ``batch_occupancy``, TTFT and prefill, peak memory per batch size) and
``load_average_start`` / ``load_average_end`` (1, 5, 15 minutes). See docs/benchmarks.md.
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


def engine_stats(eng: Any, results: list[Any], batch_size: int, before: dict[str, float] | None = None,
                 ) -> dict[str, Any]:
    """Decode/prefill figures of one ``Engine.generate`` call: the engine's ``last_stats`` where it sets
    them, else computed from its cumulative ``stats`` (minus ``before``) and the results.

    ``batch_occupancy`` = decode tokens / (decode steps x batch size). Without the engine's own
    ``decode_steps`` the steps are estimated as the fewest batches the rows fit in times the longest
    generation (exact here, where EOS is ignored and every row runs ``max_tokens``); the source is
    recorded in ``occupancy_source`` ("engine" or "estimated").
    """
    last = dict(getattr(eng, "last_stats", None) or {})
    cum = dict(getattr(eng, "stats", None) or {})
    base = before or {}

    def delta(k: str) -> float:
        return float(cum.get(k, 0.0)) - float(base.get(k, 0.0))

    out: dict[str, Any] = {}
    for k in ("decode_tokens", "decode_s", "prefill_tokens", "prefill_s"):
        v = last.get(k)
        out[k] = float(v) if v is not None else delta(k)
    if not out["decode_tokens"]:
        out["decode_tokens"] = float(sum(r.generation_tokens for r in results))
    if not out["decode_s"]:
        out["decode_s"] = max((r.decode_s for r in results), default=0.0)
    steps = last.get("decode_steps")
    if last.get("batch_occupancy") is not None:
        out["batch_occupancy"], out["occupancy_source"] = float(last["batch_occupancy"]), "engine"
    else:
        if steps is None and results:
            n_batches = -(-len(results) // batch_size)
            steps = n_batches * max(r.generation_tokens for r in results)
        out["batch_occupancy"] = occupancy(out["decode_tokens"], steps or 0, batch_size)
        out["occupancy_source"] = "engine" if last.get("decode_steps") is not None else "estimated"
    out["decode_steps"] = steps
    out["prefix_prefill_s"] = last.get("prefix_prefill_s")
    out["peak_mem_gb"] = last.get("peak_mem_gb")
    out["decode_tok_s"] = out["decode_tokens"] / max(out["decode_s"], 1e-9)
    out["prefill_tok_s"] = out["prefill_tokens"] / max(out["prefill_s"], 1e-9)
    return out


def occupancy(decode_tokens: float, decode_steps: float, batch_size: int) -> float | None:
    """Mean fraction of the batch's rows that decoded a token per step (None without steps)."""
    if not decode_steps or batch_size < 1:
        return None
    return decode_tokens / (decode_steps * batch_size)


def engine_run(model: Any, tok: Any, spec: str, system: str, probes: list[str], samples: int, max_tokens: int,
               temperature: float, top_p: float, batch_size: int, keep_eos: bool = False,
               workers: int = 1) -> dict[str, Any]:
    """Time the engine on ``probes x samples`` (a fresh engine: the kernel prefill is included).

    EOS is ignored (every row runs to ``max_tokens``, as llama.cpp's rows do) unless ``keep_eos``:
    then rows end at different steps and ``batch_occupancy`` shows how full continuous batching
    keeps the batch. ``workers`` > 1 runs that many engine processes
    (:class:`~lekutils.engine.parallel.ParallelEngine`, loaded and warmed up before the clock starts)."""
    import mlx.core as mx

    from lekutils.engine.base import GenerationRequest, SamplerSettings
    from lekutils.engine.local import Engine

    par = None
    if workers > 1:
        from lekutils.engine.parallel import ParallelEngine

        par = ParallelEngine(spec, workers=workers, batch_size=batch_size)
        par.start()
        eng: Any = par.local
        if not keep_eos:
            par.ignore_eos()
    else:
        eng = Engine(model, tok, batch_size=batch_size, model_spec=spec)
        if not keep_eos:
            eng.stop_ids = set()  # EOS ignored: all samples run to max_tokens
    reqs = [GenerationRequest(f"p{i}", p, system, n_samples=samples) for i, p in enumerate(probes)]
    mx.reset_peak_memory()
    before = dict(getattr(eng, "stats", {}) or {})
    t0 = time.perf_counter()
    sampler = SamplerSettings(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=1)
    if par is not None:
        res = par.generate(reqs, sampler)
    else:
        res = eng.generate(reqs, sampler)
    wall = time.perf_counter() - t0
    st = engine_stats(par if par is not None else eng, res, batch_size, before if par is None else {})
    if par is not None:
        par.close()
    peak = st["peak_mem_gb"] if st["peak_mem_gb"] is not None else _peak_gb()
    return {"samples": len(res), "wall_s": wall, "samples_per_hour": 3600 * len(res) / wall,
            "prompt_tokens": res[0].prompt_tokens, "prefill_tokens": st["prefill_tokens"],
            "prefill_s": st["prefill_s"], "prefill_tok_s": st["prefill_tok_s"],
            "decode_tokens": st["decode_tokens"], "decode_s": st["decode_s"], "decode_steps": st["decode_steps"],
            "decode_tok_s": st["decode_tok_s"], "batch_occupancy": st["batch_occupancy"],
            "occupancy_source": st["occupancy_source"],
            "peak_mem_gb": peak, "max_rss_gb": _rss_gb(),
            "example": res[0].text[:160]}


def ttft_system_text(tok: Any, text: str, n_tokens: int = 2048) -> tuple[str, int]:
    """``text`` repeated and cut at ``n_tokens`` tokens of the model's tokenizer (no special tokens),
    decoded back to text; returns the text and its token count when encoded again."""
    hf = getattr(tok, "_tokenizer", tok)
    ids = list(hf.encode(text, add_special_tokens=False))
    if not ids:
        raise ValueError("empty kernel text")
    reps = -(-n_tokens // len(ids))
    cut = (ids * reps)[:n_tokens]
    out = hf.decode(cut)
    return out, len(hf.encode(out, add_special_tokens=False))


def engine_ttft(model: Any, tok: Any, spec: str, system: str, probes: list[str]) -> dict[str, Any]:
    """Engine time to first token with a long system text: cold (a fresh engine: prefix and probe
    prefilled) on ``probes[0]``, then warm (same engine: the prefix from its prefix cache, only the
    probe's own tokens prefilled) on ``probes[1]``. Greedy, one token each."""
    from lekutils.engine.base import GenerationRequest, SamplerSettings
    from lekutils.engine.local import Engine

    eng = Engine(model, tok, batch_size=1, model_spec=spec)
    sampler = SamplerSettings(temperature=0.0, max_tokens=1, seed=0)
    out: dict[str, Any] = {}
    for name, probe in (("cold", probes[0]), ("warm", probes[1 % len(probes)])):
        before = dict(getattr(eng, "stats", {}) or {})
        t0 = time.perf_counter()
        res = eng.generate([GenerationRequest(f"ttft-{name}", probe, system)], sampler)
        dt = time.perf_counter() - t0
        st = engine_stats(eng, res, 1, before)
        toks = getattr(res[0], "tokens", None) or [None]
        out[name] = {"ttft_s": dt, "prompt_tokens": res[0].prompt_tokens, "prefill_tokens": st["prefill_tokens"],
                     "prefill_tok_s": st["prefill_tokens"] / max(dt, 1e-9),  # tokens prefilled / TTFT
                     "internal_prefill_s": st["prefill_s"], "internal_prefill_tok_s": st["prefill_tok_s"],
                     "prefix_prefill_s": st["prefix_prefill_s"], "first_token": toks[0]}
    return out


def peer_run(spec: str, tok: Any, prompts: dict[str, list[list[int]]], ttft_prompts: list[list[int]] | None,
             *, threads: int, batch_sizes: list[int], max_tokens: int) -> dict[str, Any]:
    """llama.cpp on the model's GGUF (:mod:`lekutils.bench.llamacpp`): per kernel, single-stream decode
    (one row) and batched decode (one batch of B rows per batch size, the kernel's probes in turn);
    and, given ``ttft_prompts`` (two prompts with a long common prefix), TTFT cold then warm.
    Raises :class:`~lekutils.bench.llamacpp.PeerUnavailable` where llama.cpp cannot run."""
    from lekutils.bench.llamacpp import LlamaCppPeer, gguf_path, version

    path = gguf_path(spec)
    out: dict[str, Any] = {"version": version(), "gguf": str(path), "threads": threads,
                           "sampling": "greedy argmax (NumPy), EOS ignored", "kv_cache": "unified, shared prefix"}
    longest = max(len(p) for ps in prompts.values() for p in ps)
    n_ctx = longest + max(batch_sizes) * (max_tokens + 64) + 256
    with LlamaCppPeer(path, threads=threads, n_ctx=n_ctx, n_seq_max=max(batch_sizes)) as peer:
        for kind, ps in prompts.items():
            single = peer.decode(ps[:1], max_tokens)
            row: dict[str, Any] = {"prompt_tokens": len(ps[0]), "prefill_tok_s": single.prefill_tok_s,
                                   "decode_tok_s": single.decode_tok_s, "batched": {}}
            for b in batch_sizes:
                rows = [ps[i % len(ps)] for i in range(b)]
                d = peer.decode(rows, max_tokens)
                row["batched"][str(b)] = {"decode_tok_s": d.decode_tok_s, "decode_s": d.decode_s,
                                          "decode_tokens": d.decode_tokens, "prefill_s": d.prefill_s}
            row["example"] = tok.decode(single.tokens[0])[:160]
            out[kind] = row
    if ttft_prompts:
        n_ctx = max(len(p) for p in ttft_prompts) + 64
        with LlamaCppPeer(path, threads=threads, n_ctx=n_ctx, n_seq_max=1) as peer:
            out["ttft"] = {"cold": peer.first_token(ttft_prompts[0], warm=False),
                           "warm": peer.first_token(ttft_prompts[1], warm=True)}
    return out


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def headline(summary: dict[str, Any], kind: str) -> dict[str, Any]:
    """The issue's comparison keys, from the per-kernel row ``summary[kind]`` (its ``by_batch_size``
    engine figures and ``llamacpp`` peer figures) and ``summary["ttft"]``; None where not measured.

    ``engine_decode_tok_s`` and ``batch_occupancy`` are taken at the batch size with the highest
    aggregate decode rate (``engine_batch_size``); ``decode_ratio_vs_llamacpp`` divides it by llama.cpp's
    single-stream decode rate; the ``*_by_batch_size`` dicts and ``engine_peak_mem_gb`` are keyed by batch size.
    """
    row = summary.get(kind) or {}
    by_b: dict[str, dict[str, Any]] = row.get("by_batch_size") or {}
    peer = row.get("llamacpp") or {}
    best = max(by_b, key=lambda b: by_b[b]["engine_decode_tok_s"]) if by_b else None
    eng_dec = by_b[best]["engine_decode_tok_s"] if best else None
    lc_dec = peer.get("decode_tok_s")
    lc_batched = {b: _r(v["decode_tok_s"], 1) for b, v in (peer.get("batched") or {}).items()} or None
    ttft = summary.get("ttft") or {}
    eng_t, lc_t = ttft.get("engine") or {}, ttft.get("llamacpp") or {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "headline_kernel": kind,
        "engine_batch_size": (int(best) if best.isdigit() else best) if best else None,
        "engine_decode_tok_s": _r(eng_dec, 1),
        "llamacpp_decode_tok_s": _r(lc_dec, 1),
        "decode_ratio_vs_llamacpp": ratio(eng_dec, lc_dec),
        "batch_occupancy": _r(by_b[best]["batch_occupancy"], 3) if best else None,
        "engine_decode_tok_s_by_batch_size": {b: v["engine_decode_tok_s"] for b, v in by_b.items()} or None,
        "batch_occupancy_by_batch_size": {b: v["batch_occupancy"] for b, v in by_b.items()} or None,
        "engine_peak_mem_gb": {b: v["engine_peak_mem_gb"] for b, v in by_b.items()} or None,
        "llamacpp_prefill_tok_s": _r((lc_t.get("cold") or {}).get("prefill_tok_s"), 1),
        "llamacpp_batched_decode_tok_s": lc_batched,
        "decode_ratio_vs_llamacpp_batched": ({b: ratio(by_b[b]["engine_decode_tok_s"], v)
                                              for b, v in lc_batched.items() if b in by_b} or None)
        if lc_batched else None,
        "engine_prefill_tok_s": _r((eng_t.get("cold") or {}).get("prefill_tok_s"), 1),
        "engine_ttft_cold_s": _r((eng_t.get("cold") or {}).get("ttft_s"), 3),
        "engine_ttft_warm_s": _r((eng_t.get("warm") or {}).get("ttft_s"), 3),
        "llamacpp_ttft_cold_s": _r((lc_t.get("cold") or {}).get("ttft_s"), 3),
        "llamacpp_ttft_warm_s": _r((lc_t.get("warm") or {}).get("ttft_s"), 3),
    }


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``)."""
    return [round(x, 2) for x in os.getloadavg()]


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


def _peer_default() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


def build_parser() -> argparse.ArgumentParser:
    from lekutils.engine.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="python -m lekutils bench generate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8, help="samples per probe")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-sizes", "--batch-size", dest="batch_sizes", type=int, nargs="+", default=[16, 32],
                    help="engine batch sizes, each timed on the same work (default: 16 32)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="engine processes, each timed at every batch size (ParallelEngine; keys '<B>x<W>')")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--keep-eos", action="store_true",
                    help="rows end at EOS (default: ignored, all rows run to --max-tokens); shows the "
                         "batch occupancy that continuous batching keeps when lengths vary")
    ap.add_argument("--upstream-samples", type=int, default=2, help="samples timed per sequential loop")
    ap.add_argument("--upstream-dtype", default="quantized", help="stock weights: the GGUF as mx.load reads it")
    ap.add_argument("--kernels", nargs="+", default=["json", "txt"], choices=list(KERNEL_FILES))
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OpenBLAS threads on the engine side, set at run time (default 1: on an oversubscribed "
                         "machine two OpenBLAS threads spin-wait and run ~50x slower)")
    ap.add_argument("--skip-upstream", action="store_true", help="skip (a), the reference-BLAS subprocess")
    ap.add_argument("--skip-own-loop", action="store_true", help="skip (a'), the loop on the engine's weights")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                    help="run llama.cpp on the same GGUF (default: on where llama_cpp is importable)")
    ap.add_argument("--llamacpp-threads", type=int, default=None,
                    help="llama.cpp threads (default: the engine's OpenBLAS threads, i.e. the same cores)")
    ap.add_argument("--ttft-tokens", type=int, default=2048,
                    help="tokens of the long kernel prefix for time-to-first-token (0: skip)")
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
    load_start = loadavg()
    threads = set_openblas_threads(args.blas_threads)
    import platform

    from lekutils.bench.llamacpp import PeerUnavailable
    from lekutils.core.blas import active_blas
    from lekutils.engine import models
    from lekutils.engine.chat import build_prompt

    peer_on = _peer_default() if args.peer is None else bool(args.peer)
    lc_threads = args.llamacpp_threads or threads or args.blas_threads
    batch_sizes = list(dict.fromkeys(args.batch_sizes))
    print(f"model {args.model} | {args.probes} probes x {args.samples} samples x {args.max_tokens} tokens | "
          f"batch sizes {batch_sizes} | {os.cpu_count()} CPUs, {platform.machine()}, load average {load_start} | "
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
                               "load_average_start": load_start,
                               "probes": args.probes, "samples": args.samples, "max_tokens": args.max_tokens,
                               "eos": "kept" if args.keep_eos else "ignored",
                               "batch_sizes": batch_sizes, "llamacpp_threads": lc_threads if peer_on else None}
    peer_prompts: dict[str, list[list[int]]] = {}
    for kind in args.kernels:
        system, source = kernel_text(kind)
        peer_prompts[kind] = [build_prompt(tok, p, system).tokens for p in probes]
        own = None
        if not args.skip_own_loop:
            own = upstream_loop(model, tok, system, probes, args.upstream_samples, args.max_tokens,
                                args.temperature, args.top_p)
        runs = {(str(b) if w == 1 else f"{b}x{w}"): engine_run(
                    model, tok, args.model, system, probes, args.samples, args.max_tokens, args.temperature,
                    args.top_p, b, keep_eos=args.keep_eos, workers=w)
                for w in dict.fromkeys(args.workers) for b in batch_sizes}
        best_b = max(runs, key=lambda b: runs[b]["samples_per_hour"])
        eng = runs[best_b]
        print(f"{kind} kernel: {len(system.encode())} bytes, {eng['prompt_tokens']} prompt tokens ({source})")
        if upstream is not None:
            print(_fmt("(a) upstream loop", upstream[kind]))
        if own is not None:
            print(_fmt("(a') loop, engine weights", own))
        for b, r in runs.items():
            occ = r["batch_occupancy"]
            print(_fmt(f"(b) engine, batch {b}", r) + f" | {r['wall_s']:.1f} s for {r['samples']} samples | "
                  f"occupancy {'n/a' if occ is None else f'{occ:.2f}'} ({r['occupancy_source']})")
        row: dict[str, Any] = {"kernel_bytes": len(system.encode()), "prompt_tokens": eng["prompt_tokens"],
                               "batch_size": best_b,
                               "engine_samples_per_hour": round(eng["samples_per_hour"], 1),
                               "engine_decode_tok_s": round(eng["decode_tok_s"], 1),
                               "engine_prefill_tok_s": round(eng["prefill_tok_s"], 1),
                               "engine_peak_mem_gb": round(eng["peak_mem_gb"], 3),
                               "by_batch_size": {str(b): {
                                   "engine_samples_per_hour": round(r["samples_per_hour"], 1),
                                   "engine_decode_tok_s": round(r["decode_tok_s"], 1),
                                   "engine_prefill_tok_s": round(r["prefill_tok_s"], 1),
                                   "batch_occupancy": _r(r["batch_occupancy"], 3),
                                   "occupancy_source": r["occupancy_source"],
                                   "decode_steps": r["decode_steps"],
                                   "engine_peak_mem_gb": round(r["peak_mem_gb"], 3),
                                   "wall_s": round(r["wall_s"], 2)} for b, r in runs.items()}}
        if own is not None:
            row["own_weights_loop_samples_per_hour"] = round(own["samples_per_hour"], 1)
        if upstream is not None:
            up = upstream[kind]["samples_per_hour"]
            row.update(upstream_samples_per_hour=round(up, 1), ratio=round(eng["samples_per_hour"] / up, 2))
            print(f"  ratio engine / upstream loop: {row['ratio']:.1f}x")
        else:
            row.update(upstream_samples_per_hour=None, ratio=None)
        if own is not None:
            row["ratio_vs_own_weights_loop"] = round(eng["samples_per_hour"] / own["samples_per_hour"], 2)
            print(f"  ratio engine / loop on engine weights: {row['ratio_vs_own_weights_loop']:.1f}x", flush=True)
        summary[kind] = row

    ttft_prompts = None
    if args.ttft_tokens > 0:
        base, _ = kernel_text(args.kernels[0])
        long_system, n_sys = ttft_system_text(tok, base, args.ttft_tokens)
        ttft_probes = [probes[0], probes[1 % len(probes)]]
        ttft_prompts = [build_prompt(tok, p, long_system).tokens for p in ttft_probes]
        et = engine_ttft(model, tok, args.model, long_system, ttft_probes)
        summary["ttft"] = {"system_tokens": n_sys, "kernel": args.kernels[0], "engine": et}
        print(f"TTFT, {args.kernels[0]} kernel repeated to {n_sys} tokens ({len(ttft_prompts[0])} prompt tokens):")
        for k in ("cold", "warm"):
            print(f"  engine {k:<5} {et[k]['ttft_s']:.3f} s to first token, {et[k]['prefill_tokens']:.0f} tokens "
                  f"prefilled ({et[k]['prefill_tok_s']:.1f} tok/s)", flush=True)

    summary["llamacpp_skipped"] = None
    if peer_on:
        try:
            pr = peer_run(args.model, tok, peer_prompts, ttft_prompts, threads=lc_threads,
                          batch_sizes=batch_sizes, max_tokens=args.max_tokens)
        except PeerUnavailable as ex:
            summary["llamacpp_skipped"] = str(ex)
        else:
            print(f"llama.cpp {pr['version']} on {pr['gguf']}, {lc_threads} thread(s), same prompt tokens, "
                  f"{pr['sampling']}:")
            for kind in args.kernels:
                r = pr[kind]
                summary[kind]["llamacpp"] = r
                batched = ", ".join(f"batch {b} {v['decode_tok_s']:.1f}" for b, v in r["batched"].items())
                print(f"  {kind} kernel: prefill {r['prefill_tok_s']:.1f} tok/s | single-stream decode "
                      f"{r['decode_tok_s']:.1f} tok/s | batched decode tok/s: {batched}", flush=True)
            if "ttft" in pr and "ttft" in summary:
                summary["ttft"]["llamacpp"] = pr["ttft"]
                summary["ttft"]["first_token_match"] = {  # greedy on both sides: a cross-check of the prompts
                    k: pr["ttft"][k]["first_token"] == summary["ttft"]["engine"][k]["first_token"]
                    for k in ("cold", "warm")}
                for k in ("cold", "warm"):
                    t = pr["ttft"][k]
                    print(f"  TTFT {k:<5} {t['ttft_s']:.3f} s, {t['evaluated_tokens']} tokens evaluated "
                          f"({t['reused_tokens']} reused, {t['prefill_tok_s']:.1f} tok/s)")
    else:
        summary["llamacpp_skipped"] = "--no-peer" if args.peer is False else (
            "llama_cpp is not importable; install the benchmark extra: pip install 'lekutils[bench]'")
    if summary["llamacpp_skipped"]:
        print(f"llama.cpp skipped: {summary['llamacpp_skipped']}", flush=True)
    summary.update(headline(summary, args.kernels[0]))
    summary["load_average_end"] = loadavg()
    print(f"load average at the end {summary['load_average_end']}")
    print(json.dumps(summary))
    return summary
