"""Data-parallel LoRA training of one curriculum phase over N processes or machines (``mlx.launch``).

Command (one phase of a profile, the parameters resolved as the runner resolves notebook 20's)::

    python -m lekutils.train.distributed --profile smoke --phase 1 --np 2            # 2 processes here
    python -m lekutils.train.distributed --profile smoke --phase 1 --hosts 10.0.0.1,10.0.0.2
    python -m lekutils.train.distributed --profile smoke --phase 1 --hostfile hosts.json -p iters=16

or, in a profile, the curriculum option ``data_parallel`` of notebook 20 (``params/<profile>/
curriculum.yaml``, section ``train``), honoured by :func:`lekutils.train.stage.train`::

    data_parallel: {processes: 2, backend: ring}                 # 2 processes on this machine
    data_parallel: {hosts: [10.0.0.1, 10.0.0.2], processes: 1}   # one per machine (ring over their IPs)
    data_parallel: {hostfile: hosts.json}                        # mlx.launch's JSON host file

The launcher starts ``mlx.launch`` with one worker per rank (``python -m lekutils.train.distributed
worker --job JSON``); every worker loads the model and calls :func:`lekutils.train.loop.train_phase`,
which trains in the group (:mod:`lekutils.train.dp`): ``batch_size`` is the GLOBAL batch, split by
rows over the N ranks (N x ``batch_size/N`` == one process x ``batch_size``), gradients are
averaged by mlx-lm, and rank 0 alone writes the phase folder (adapters, checkpoints, metrics, log,
lineage). A killed run resumes exactly from rank 0's last checkpoint (rank 0 broadcasts it): re-run
the same command. Workers die with the launcher (Linux: parent-death signal), so a killed notebook
kernel leaves no trainer holding the phase folder.

Every host needs the workbook (same path, or ``cwd``), the model, the phase's data and the previous
phase's adapter at the same paths; outputs land on rank 0's host (the first host).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lekutils.core.errors import DataError, ParameterError, Problem

RESULT_MARK = "LEKUTILS_DP_RESULT "
LAUNCH_LOG = "launch.log"
BACKENDS = ("ring", "mpi", "nccl", "jaccl", "jaccl-ring")


class DistributedError(RuntimeError):
    """A data-parallel run that did not finish (names the log and how to resume)."""


@dataclass(frozen=True)
class DataParallel:
    """Where and how many processes train one phase (the ``data_parallel`` parameter of notebook 20).

    ``processes`` per host; ``hosts`` IPs (the ring backend needs IPs; default this machine,
    127.0.0.1) or ``hostfile`` (mlx.launch's JSON host file: one rank per entry); ``port`` the ring
    backend's first port (0 = a free one here); ``env`` extra ``KEY=VALUE`` for the workers;
    ``python`` and ``cwd`` the interpreter and workbook root on the hosts (default: this one's).
    """

    processes: int = 1
    backend: str = "ring"
    hosts: tuple[str, ...] = ()
    hostfile: str = ""
    port: int = 0
    env: tuple[str, ...] = ()
    python: str = ""
    cwd: str = ""

    @classmethod
    def from_params(cls, value: Mapping[str, Any] | None, where: str = "data_parallel") -> DataParallel | None:
        """The setting of a ``data_parallel`` mapping (``{}``/None = one process: None)."""
        if not value:
            return None
        if not isinstance(value, Mapping):
            raise DataError(where, [Problem(f"expected a mapping, got {value!r}", field="data_parallel")])
        known = {f for f in cls.__dataclass_fields__}
        problems = [Problem(f"unknown key (known: {', '.join(sorted(known))})", field=f"data_parallel.{k}")
                    for k in value if k not in known]
        vals = {k: v for k, v in value.items() if k in known}
        for k in ("hosts", "env"):
            if isinstance(vals.get(k), str):
                vals[k] = [x.strip() for x in vals[k].split(",") if x.strip()]
            if k in vals:
                vals[k] = tuple(str(x) for x in vals[k])
        try:
            out = cls(**vals)
        except TypeError as e:
            raise DataError(where, [Problem(str(e), field="data_parallel")]) from e
        if not isinstance(out.processes, int) or out.processes < 1:
            problems.append(Problem(f"must be an integer >= 1, got {out.processes!r}", field="data_parallel.processes"))
        if out.backend not in BACKENDS:
            problems.append(Problem(f"unknown backend {out.backend!r} ({', '.join(BACKENDS)})",
                                    field="data_parallel.backend"))
        if out.hosts and out.hostfile:
            problems.append(Problem("give hosts or hostfile, not both", field="data_parallel.hostfile"))
        if out.hostfile and out.processes != 1:
            problems.append(Problem("a hostfile has one rank per entry: leave processes at 1",
                                    field="data_parallel.processes"))
        if problems:
            raise DataError(where, problems)
        return out

    @property
    def world_size(self) -> int:
        if self.hostfile:
            doc = json.loads(Path(self.hostfile).read_text(encoding="utf-8"))
            return len(doc["hosts"] if isinstance(doc, dict) else doc)
        return self.processes * max(len(self.hosts), 1)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def mlx_launch_path() -> str:
    """The ``mlx.launch`` script beside this interpreter (else on PATH)."""
    here = Path(sys.executable).parent / "mlx.launch"
    if here.exists():
        return str(here)
    found = shutil.which("mlx.launch")
    if not found:
        raise DistributedError("mlx.launch not found (it comes with the mlx package)")
    return found


def free_port_range(n: int, tries: int = 50) -> int:
    """A first port p such that p .. p+n-1 are free on this machine (for the ring backend)."""
    rng = random.Random()
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise DistributedError(f"no {n} consecutive free ports found")


def launch_command(dp: DataParallel, worker_argv: Sequence[str]) -> list[str]:
    """The ``mlx.launch`` command line that runs ``worker_argv`` on every rank."""
    cmd = [mlx_launch_path(), "--backend", dp.backend]
    if dp.hostfile:
        cmd += ["--hostfile", dp.hostfile]
    else:
        cmd += ["--hosts", ",".join(dp.hosts or ("127.0.0.1",)), "-n", str(dp.processes)]
    if dp.backend == "ring":
        cmd += ["--starting-port", str(dp.port or free_port_range(dp.world_size))]
    if dp.cwd:
        cmd += ["--cwd", dp.cwd]
    remote = bool(dp.hostfile) or any(h not in ("127.0.0.1", "localhost") for h in dp.hosts)
    env = list(dp.env)
    if not remote and os.environ.get("PYTHONPATH") and not any(e.startswith("PYTHONPATH=") for e in env):
        env.append(f"PYTHONPATH={os.environ['PYTHONPATH']}")
    for e in env:
        cmd += ["--env", e]
    return [*cmd, "--", dp.python or sys.executable, "-m", "lekutils.train.distributed", *worker_argv]


def _set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux: this process gets ``sig`` when its parent dies (no orphaned trainers)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG


def run_phase(job: Mapping[str, Any], dp: DataParallel, *, progress: Callable[[int, int, dict], None] | None = None,
              timeout: float | None = None) -> Any:
    """Train one phase with ``dp``'s processes and return its :class:`~lekutils.train.loop.PhaseResult`.

    ``job``: ``model`` (spec), ``config`` (PhaseConfig fields), ``data_dir``, ``out_dir``,
    ``previous_adapter`` (or None). The launcher's output goes to ``<out_dir>/launch.log``;
    ``progress(step, iters, row)`` follows rank 0's metrics file. Raises :class:`DistributedError`
    when the run does not finish (re-running resumes from the last checkpoint).
    """
    from lekutils.core.jsonl import read_jsonl
    from lekutils.train.loop import LINEAGE_FILE, _result_from_lineage
    from lekutils.train.metrics import METRICS_FILE

    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    world = dp.world_size
    job = {**job, "world_size": world}
    cmd = launch_command(dp, ["worker", "--job", json.dumps(job)])
    if world == 1:  # one process: the worker alone (mlx.launch gives a single rank an empty host file)
        cmd = cmd[cmd.index("--"):]
    log_path = out_dir / LAUNCH_LOG
    iters = int(job["config"].get("iters", 0))
    seen = -1
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as logfh:
        logfh.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {world} processes: "
                    f"{' '.join(cmd[:cmd.index('--')])} -- ... worker\n")
        logfh.flush()
        pos = logfh.tell()
        proc = subprocess.Popen(cmd[1:] if cmd[0] == "--" else cmd, stdin=subprocess.DEVNULL, stdout=logfh,
                                stderr=subprocess.STDOUT,
                                preexec_fn=_set_parent_death_signal)  # noqa: PLW1509
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                if progress is not None:
                    seen = _follow(out_dir / METRICS_FILE, seen, iters, progress)
                if timeout is not None and time.time() - t0 > timeout:
                    raise DistributedError(f"data-parallel training exceeded {timeout:.0f}s; see {log_path}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if progress is not None:
        _follow(out_dir / METRICS_FILE, seen, iters, progress)
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        fh.seek(pos)
        text = fh.read()
    result = None
    for line in text.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    if result is None or proc.returncode not in (0, None):
        tail = "\n".join(text.splitlines()[-15:])
        raise DistributedError(f"data-parallel training with {world} processes did not finish (mlx.launch exit "
                               f"code {proc.returncode}); log: {log_path}; re-run to resume from the last "
                               f"checkpoint. Last lines:\n{tail}")
    lineage = json.loads((out_dir / LINEAGE_FILE).read_text(encoding="utf-8"))
    metrics = read_jsonl(out_dir / METRICS_FILE) if (out_dir / METRICS_FILE).exists() else []
    res = _result_from_lineage(out_dir, lineage, metrics)
    res.skipped = bool(result.get("skipped"))
    return res


def _follow(path: Path, seen: int, iters: int, progress: Callable[[int, int, dict], None]) -> int:
    """Report metric rows after step ``seen`` (complete lines only); returns the last step reported."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return seen
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", -1)) > seen and row.get("train_loss") is not None:
            seen = int(row["step"])
            progress(seen, iters, row)
    return seen


def worker(job: Mapping[str, Any]) -> int:
    """One rank: load the model and train the phase in the MLX group; rank 0 prints the result line."""
    _set_parent_death_signal()
    from lekutils.engine import models
    from lekutils.train import dp
    from lekutils.train.config import PhaseConfig
    from lekutils.train.loop import train_phase

    rank, size = dp.rank_size()
    if size != int(job.get("world_size", size)):
        print(f"error: rank {rank} sees a group of {size} processes, expected {job['world_size']} "
              "(MLX distributed did not start: run through mlx.launch)", file=sys.stderr)
        return 2
    from lekutils.core.blas import active_blas

    print(f"rank {rank}/{size} (pid {os.getpid()}): BLAS {active_blas()}", file=sys.stderr, flush=True)
    cfg = PhaseConfig.from_params(job["config"])
    model, tokenizer = models.load(job["model"])
    info = models.fingerprint(job["model"]) if rank == 0 else None
    res = train_phase(model, tokenizer, cfg, job["data_dir"], job["out_dir"],
                      previous_adapter=job.get("previous_adapter"), model_info=info)
    if rank == 0:
        print(RESULT_MARK + json.dumps({"steps": res.steps, "resumed_from": res.resumed_from,
                                        "skipped": res.skipped, "processes": size}), flush=True)
    return 0


def job_of(stage: Any) -> dict[str, Any]:
    """The worker job of a :class:`lekutils.train.stage.Stage`."""
    return {"model": stage.model, "config": stage.config.to_dict(), "data_dir": str(Path(stage.data_dir).absolute()),
            "out_dir": str(Path(stage.out_dir).absolute()),
            "previous_adapter": str(Path(stage.previous_adapter).absolute()) if stage.previous_adapter else None}


def _stage_from_profile(profile: str, phase: int, overrides: dict[str, Any], out: str | None) -> Any:
    from lekutils.runner.profile import load_pipeline, resolve
    from lekutils.train import stage as stage_mod

    executions = [e for e in load_pipeline(profile) if e.notebook.stem == "20_train_phase" and e.phase == phase]
    if not executions:
        raise DataError(f"params/{profile}/pipeline.yaml", f"no 20_train_phase execution for phase {phase}")
    ex = resolve(executions[:1], profile, overrides=overrides, out_dir=Path(out) if out else None)[0]
    return stage_mod.plan(ex.parameters)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lekutils.train.distributed",
                                description="Train one curriculum phase with N data-parallel processes "
                                            "(mlx.launch; batch_size is the global batch).")
    sub = p.add_subparsers(dest="cmd")
    w = sub.add_parser("worker", help="one rank (started by mlx.launch)")
    w.add_argument("--job", required=True)
    p.add_argument("--profile", default="smoke")
    p.add_argument("--phase", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<profile>)")
    p.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook 20 parameter (e.g. -p iters=16 -p data_dir=...)")
    p.add_argument("--np", type=int, default=None, help="processes per host (overrides data_parallel.processes)")
    p.add_argument("--backend", default=None)
    p.add_argument("--hosts", default=None, help="comma-separated IPs (ring backend)")
    p.add_argument("--hostfile", default=None, help="mlx.launch JSON host file")
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)
    if args.cmd == "worker":
        return worker(json.loads(args.job))

    from lekutils.runner.params import parse_overrides
    from lekutils.train.stage import data_parallel_of

    try:
        st = _stage_from_profile(args.profile, args.phase, parse_overrides(args.params), args.out)
        base = (data_parallel_of(st) or DataParallel()).to_dict()
        for key, val in (("processes", args.np), ("backend", args.backend), ("hosts", args.hosts),
                         ("hostfile", args.hostfile), ("port", args.port)):
            if val is not None:
                base[key] = val
        dp = DataParallel.from_params(base, "command line") or DataParallel()
        print(f"phase {st.phase}: {dp.world_size} processes, global batch {st.config.batch_size} "
              f"({st.config.batch_size // max(dp.world_size, 1)} per process); output {st.out_dir}", flush=True)
        res = run_phase(job_of(st), dp)
    except (DataError, ParameterError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {res.steps} steps, resumed from {res.resumed_from}, already done: {res.skipped}; "
          f"final train loss {res.final_train_loss}, val loss {res.final_val_loss}; {res.adapter_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
