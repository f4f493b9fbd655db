"""LoRA curriculum phases on top of ``mlx_lm.tuner``, with chaining and exact resume.

One phase = :func:`train_phase`: LoRA layers from :func:`mlx_lm.tuner.utils.linear_to_lora_layers`,
datasets from :mod:`mlx_lm.tuner.datasets`, the loop of :func:`mlx_lm.tuner.trainer.train`. What we
add around mlx-lm's loop (through its ``training_callback`` and ``iterate_batches`` hooks):

- a metrics JSONL (``metrics.jsonl``, one row per step; validation loss on the steps that validate),
  written through :class:`lekutils.core.jsonl.JsonlStore`;
- step checkpoints (:mod:`lekutils.train.checkpoints`) in mlx-lm's layout (``0000025_adapters.safetensors``) plus the optimizer state
  (``0000025_optimizer.safetensors``: ``tree_flatten(optimizer.state)``, which holds Adam's moments,
  the update counter that drives the learning-rate schedule) and ``0000025_state.json`` (written
  last: the commit mark of a checkpoint, with the hashes of its two files);
- resume: a re-run restores the newest complete checkpoint (weights, optimizer state, step), skips
  the batches already consumed (the batch order comes from a private seeded RNG), re-seeds MLX's
  RNG exactly as the uninterrupted run did at that step, drops metric rows after the checkpoint and
  trains the remaining steps — so it ends where an uninterrupted run ends, with the same weights;
- chaining: phase K loads phase K-1's adapter (every tensor checked) into freshly made LoRA layers,
  the base stays frozen (the trainable-parameter count is checked), and ``lineage.json`` records
  the chain of adapters and data hashes.

Step numbers are mlx-lm's iterations (micro-batches); with gradient accumulation the optimizer
updates every ``grad_accumulation`` steps. Checkpoints fall on update boundaries (a multiple of
``checkpoint_every`` rounded up to the next multiple of ``grad_accumulation``) and on the last step,
so no partially accumulated gradient is ever lost on resume.

Data parallel (:mod:`lekutils.train.dp`, launched by :mod:`lekutils.train.distributed`): in a
group of N processes ``cfg.batch_size`` is the global batch, split by rows over the ranks, and
mlx-lm averages the gradients. Only rank 0 locks and writes the phase folder (adapters, checkpoints,
metrics, log, lineage); it reads the checkpoint to resume from and broadcasts the step, the LoRA
weights and the optimizer state, so the other ranks need no access to the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.tuner.datasets import CacheDataset, create_dataset
from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, evaluate
from mlx_lm.tuner.trainer import train as mlx_train
from mlx_lm.tuner.utils import build_schedule

from lekutils.core import lock
from lekutils.core.errors import DataError, Problem
from lekutils.core.hashing import sha256_file
from lekutils.core.jsonl import JsonlStore, atomic_write_json, atomic_write_jsonl, read_jsonl
from lekutils.train import dp
from lekutils.train.adapters import (
    ADAPTER_FILE,
    CONFIG_FILE,
    AdapterError,
    apply_lora,
    check_frozen_base,
    count_params,
    load_adapter_weights,
    read_adapter_config,
    save_safetensors_atomic,
)
from lekutils.train.checkpoints import (
    clean_temp_files,
    latest_checkpoint,
    make_iterate_batches,
    prune_checkpoints,
    restore_optimizer,
    resume_key,
    rng_seed,
    save_checkpoint,
)
from lekutils.train.config import PhaseConfig
from lekutils.train.metrics import METRICS_FILE

log = logging.getLogger(__name__)
LINEAGE_FILE = "lineage.json"
LOG_FILE = "mlx_train.log"
_NEVER = 10**12  # "never" for mlx-lm's own eval/save schedule: we drive both from the callback


@dataclass
class PhaseResult:
    """What :func:`train_phase` returns (also summarised in ``lineage.json``)."""

    adapter_dir: Path
    steps: int
    resumed_from: int | None
    trainable_params: int
    total_params: int
    final_train_loss: float | None
    final_val_loss: float | None
    train_s: float
    tokens: int
    skipped: bool = False
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else float("nan")


def load_chat_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read an mlx-lm chat JSONL file, checking every record's ``messages`` (errors name line, field)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found (expected mlx-lm chat JSONL: {\"messages\": [...]})")
    records = read_jsonl(path)
    problems = []
    for n, rec in enumerate(records, start=1):
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs:
            problems.append(Problem("expected a non-empty list of messages", line=n, field="messages"))
            continue
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                problems.append(Problem("each message needs role in system/user/assistant and a string content",
                                        line=n, field=f"messages[{i}]"))
                break
        else:
            if msgs[-1]["role"] != "assistant":
                problems.append(Problem("the last message must be the assistant's", line=n, field="messages"))
    if not records:
        problems.append(Problem("no records"))
    if problems:
        raise DataError(path, problems)
    return records


class _PhaseCallback(TrainingCallback):
    """Writes metrics rows, validates and checkpoints on the phase's global step numbers."""

    def __init__(self, *, start: int, cfg: PhaseConfig, model: nn.Module, optimizer: optim.Optimizer,
                 store: JsonlStore | None, out_dir: Path, val_fn: Callable[[], float] | None, tokens0: int,
                 ckpt_extra: Mapping[str, Any], progress: Callable[[int, int, dict], None] | None):
        self.start, self.cfg, self.model, self.optimizer = start, cfg, model, optimizer
        self.store, self.out_dir, self.val_fn, self.tokens = store, out_dir, val_fn, tokens0
        self.ckpt_extra, self.progress = ckpt_extra, progress
        self.ckpt_steps = set(cfg.checkpoint_steps())
        self.val_steps = set(cfg.val_steps())

    def on_train_loss_report(self, info: dict) -> None:
        step = self.start + int(info["iteration"])
        tok_s = float(info["tokens_per_second"])
        it_s = float(info["iterations_per_second"])
        n_tok = int(round(tok_s / it_s)) if it_s > 0 else 0
        self.tokens += n_tok
        row: dict[str, Any] = {
            "step": step, "train_loss": float(info["train_loss"]), "val_loss": None,
            "learning_rate": float(info["learning_rate"]), "tokens_per_s": tok_s, "steps_per_s": it_s,
            "tokens": n_tok, "trained_tokens": self.tokens, "peak_memory_gb": float(info["peak_memory"]),
            "time": time.time(),
        }
        if step in self.val_steps and self.val_fn is not None:
            row["val_loss"] = self.val_fn()  # every rank: validation is a collective in a group
        if self.store is not None:  # rank 0 only
            self.store.append(row)
        if step in self.ckpt_steps:
            if self.store is not None:
                save_checkpoint(self.out_dir, step, self.model, self.optimizer,
                                {**self.ckpt_extra, "trained_tokens": self.tokens})
                prune_checkpoints(self.out_dir, int(self.cfg.keep_checkpoints))
            mx.random.seed(rng_seed(self.cfg.seed, step))  # the resumed run re-seeds here too
        if self.progress is not None:
            self.progress(step, self.cfg.iters, row)


def _validator(model: nn.Module, valid: Any, cfg: PhaseConfig) -> Callable[[], float] | None:
    if valid is None or len(valid) < cfg.batch_size:
        return None

    def val() -> float:  # the same validation batches every time (fixed RNG for their order)
        outer = np.random.get_state()
        np.random.seed(cfg.seed)
        try:
            loss = evaluate(model=model, dataset=valid, batch_size=cfg.batch_size, num_batches=cfg.val_batches,
                            max_seq_length=cfg.max_seq_length)
        finally:
            np.random.set_state(outer)
        model.train()
        return float(loss)

    return val


def data_fingerprint(data_dir: Path) -> dict[str, Any]:
    out = {}
    for split in ("train", "valid"):
        p = data_dir / f"{split}.jsonl"
        if p.exists():
            out[split] = {"path": str(p), "sha256": sha256_file(p), "examples": len(read_jsonl(p))}
    return out


def train_phase(model: nn.Module, tokenizer: Any, cfg: PhaseConfig, data_dir: str | os.PathLike[str],
                out_dir: str | os.PathLike[str], *, previous_adapter: str | os.PathLike[str] | None = None,
                model_info: Mapping[str, Any] | None = None,
                progress: Callable[[int, int, dict], None] | None = None) -> PhaseResult:
    """Train one phase into ``out_dir`` (mlx-lm adapter layout), resuming where a run stopped.

    ``model`` is the base model (no LoRA layers yet); ``data_dir`` holds ``train.jsonl`` and
    ``valid.jsonl`` (mlx-lm chat format). ``previous_adapter`` is phase K-1's adapter directory.
    A finished phase with the same config, data and previous adapter is not retrained. Data with
    multi-turn conversations (one example per assistant turn) needs ``cfg.mask_prompt``.
    ``progress(step, iters, row)`` is called after every step.

    The phase folder is locked for the run (:mod:`lekutils.core.lock`): a second process training
    into it fails at once naming the holder's PID. Temporary files of a killed save are removed on
    start; only the newest ``cfg.keep_checkpoints`` step checkpoints are kept (plus the final adapter).

    In an MLX distributed group (``mlx.launch``; :mod:`lekutils.train.distributed`) every rank calls
    this with the same arguments; only rank 0 locks and writes ``out_dir``.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if dp.rank_size()[0] != 0:
        return _train_phase(model, tokenizer, cfg, data_dir, out_dir, previous_adapter=previous_adapter,
                            model_info=model_info, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock.hold(out_dir, folder=True, hint="another process is training into this folder; wait for it"):
        return _train_phase(model, tokenizer, cfg, data_dir, out_dir, previous_adapter=previous_adapter,
                            model_info=model_info, progress=progress)


def _train_phase(model: nn.Module, tokenizer: Any, cfg: PhaseConfig, data_dir: Path, out_dir: Path, *,
                 previous_adapter: str | os.PathLike[str] | None, model_info: Mapping[str, Any] | None,
                 progress: Callable[[int, int, dict], None] | None) -> PhaseResult:
    from lekutils.tasks.extract import check_mask_prompt

    rank, size = dp.rank_size()
    check_mask_prompt(data_dir, cfg.mask_prompt)  # multi-turn expansions train only with mask_prompt
    if cfg.batch_size % size:
        raise DataError("PhaseConfig", [Problem(f"the global batch ({cfg.batch_size}) must split evenly over "
                                                f"{size} processes", field="batch_size")])
    if rank == 0:
        for tmp in clean_temp_files(out_dir):
            log.warning("%s: removed %s left by an interrupted save", out_dir, tmp.name)
    train_recs = load_chat_jsonl(data_dir / "train.jsonl")
    valid_recs = load_chat_jsonl(data_dir / "valid.jsonl") if (data_dir / "valid.jsonl").exists() else []
    if len(train_recs) < cfg.batch_size:
        raise DataError(data_dir / "train.jsonl", f"{len(train_recs)} examples < batch_size {cfg.batch_size}")
    data = data_fingerprint(data_dir)
    prev_info = None
    if previous_adapter is not None:
        prev_dir = Path(previous_adapter)
        prev_cfg = read_adapter_config(prev_dir)
        if int(prev_cfg["num_layers"]) != cfg.num_layers or \
                int(prev_cfg["lora_parameters"]["rank"]) != cfg.rank:
            raise AdapterError(prev_dir / CONFIG_FILE, "previous phase has num_layers="
                               f"{prev_cfg['num_layers']}, rank={prev_cfg['lora_parameters']['rank']}; "
                               f"this phase wants num_layers={cfg.num_layers}, rank={cfg.rank}")
        prev_lineage = _read_json(prev_dir / LINEAGE_FILE) or {}
        prev_info = {"path": str(prev_dir), "adapters_sha256": sha256_file(prev_dir / ADAPTER_FILE),
                     "phase": prev_lineage.get("phase"), "lineage": prev_lineage.get("chain", [])}
    key = resume_key(cfg, data, prev_info)

    # rank 0 reads the folder: finished already? which checkpoint? (broadcast to the other ranks)
    done, ckpt, start, have_val0 = None, None, 0, False
    if rank == 0:
        done = _read_json(out_dir / LINEAGE_FILE)
        if not (done and done.get("complete") and done.get("resume_key") == key and (out_dir / ADAPTER_FILE).exists()):
            done = None
            ckpt = latest_checkpoint(out_dir) if out_dir.exists() else None
            if ckpt is not None and ckpt.get("resume_key") != key:
                raise DataError(out_dir, f"holds checkpoints of a different config/data/previous adapter "
                                f"(resume key {ckpt.get('resume_key')} != {key}); use a new folder or delete it")
            start = min(int(ckpt["step"]) if ckpt else 0, cfg.iters)
            mpath = out_dir / METRICS_FILE
            have_val0 = start == 0 and mpath.exists() and \
                0 in {r["step"] for r in JsonlStore(mpath, key=lambda r: r["step"]).records()}
    is_done, start, have_val0, resumed = dp.broadcast_ints(
        [done is not None, start, have_val0, bool(ckpt and ckpt.get("optimizer"))])
    if is_done:
        if rank != 0:
            return _rank_result(out_dir, cfg, None, 0, 0, skipped=True)
        metrics = read_jsonl(out_dir / METRICS_FILE) if (out_dir / METRICS_FILE).exists() else []
        return _result_from_lineage(out_dir, done, metrics)

    # LoRA layers (seeded init), previous phase's weights, frozen base
    mx.random.seed(rng_seed(cfg.seed, 0))
    apply_lora(model, cfg.num_layers, cfg.lora_parameters())
    if prev_info is not None:
        load_adapter_weights(model, Path(prev_info["path"]) / ADAPTER_FILE)
    trainable = check_frozen_base(model)
    _, total = count_params(model)

    lr = build_schedule(cfg.lr_schedule) if cfg.lr_schedule else float(cfg.learning_rate)
    opt_cls = optim.AdamW if cfg.optimizer.lower() == "adamw" else optim.Adam
    optimizer = opt_cls(learning_rate=lr)
    if ckpt:
        load_adapter_weights(model, out_dir / ckpt["adapters"])
        if ckpt.get("optimizer"):
            restore_optimizer(optimizer, model, out_dir / ckpt["optimizer"])
    if size > 1:
        _broadcast_state(model, optimizer, resumed=bool(resumed) and start > 0)
    mx.random.seed(rng_seed(cfg.seed, start))

    if rank != 0:  # the other ranks train along: validation and the step collectives, no files
        with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stdout(null), _quiet_mlx_console():
            _run(model, tokenizer, cfg, optimizer, train_recs, valid_recs, None, out_dir, start, None, key,
                 progress, val0=not have_val0)
        dp.barrier()
        return _rank_result(out_dir, cfg, start if resumed else None, trainable, total)

    atomic_write_json(out_dir / CONFIG_FILE, {
        **cfg.mlx_lm_config(str((model_info or {}).get("spec", "")), str(data_dir), str(out_dir)),
        "lekutils": {"phase": cfg.phase, "resume_key": key, "previous_adapter": prev_info and prev_info["path"],
                     "processes": size}})

    # metrics: keep rows up to the checkpoint, drop the rest (they will be re-done)
    mpath = out_dir / METRICS_FILE
    if mpath.exists():
        kept = [r for r in JsonlStore(mpath, key=lambda r: r["step"]).records() if r["step"] <= start]
        atomic_write_jsonl(mpath, kept)
    store = JsonlStore(mpath, key=lambda r: r["step"])

    with open(out_dir / LOG_FILE, "a", encoding="utf-8") as logfh, contextlib.redirect_stdout(logfh), \
            _quiet_mlx_console():
        _run(model, tokenizer, cfg, optimizer, train_recs, valid_recs, store, out_dir, start, ckpt, key, progress,
             val0=not have_val0)
    res = _finish(model, cfg, out_dir, store, start, ckpt, key, trainable, total, model_info, data, prev_info, size)
    dp.barrier()
    return res


def _broadcast_state(model: nn.Module, optimizer: optim.Optimizer, *, resumed: bool) -> None:
    """Rank 0's LoRA weights (and, when resuming, its optimizer state) on every rank."""
    weights = dp.broadcast_arrays(dict(tree_flatten(model.trainable_parameters())))
    model.load_weights(list(weights.items()), strict=False)
    if resumed:
        from mlx.utils import tree_map_with_path

        if dp.rank_size()[0] != 0:  # rank 0 initialised its optimizer when it restored the checkpoint
            optimizer.init(model.trainable_parameters())
        state = dp.broadcast_arrays(dict(tree_flatten(optimizer.state)))
        optimizer.state = tree_map_with_path(lambda p, _: state[p], optimizer.state)
    mx.eval(model.parameters(), optimizer.state)


def _rank_result(out_dir: Path, cfg: PhaseConfig, resumed_from: int | None, trainable: int, total: int, *,
                 skipped: bool = False) -> PhaseResult:
    """What a rank other than 0 returns (rank 0 holds the metrics and the lineage)."""
    return PhaseResult(adapter_dir=out_dir, steps=cfg.iters, resumed_from=resumed_from, trainable_params=trainable,
                       total_params=total, final_train_loss=None, final_val_loss=None, train_s=0.0, tokens=0,
                       skipped=skipped)


@contextlib.contextmanager
def _quiet_mlx_console() -> Iterator[None]:
    """Silence mlx-lm's rich console (its progress display bypasses stdout in Jupyter)."""
    from mlx_lm.cli_ui import make_console

    console = make_console()
    before = (console.quiet, console.is_jupyter)
    console.quiet, console.is_jupyter = True, False
    try:
        yield
    finally:
        console.quiet, console.is_jupyter = before


def _run(model: nn.Module, tokenizer: Any, cfg: PhaseConfig, optimizer: optim.Optimizer, train_recs: list,
         valid_recs: list, store: JsonlStore | None, out_dir: Path, start: int, ckpt: dict | None, key: str,
         progress: Callable[[int, int, dict], None] | None, *, val0: bool = True) -> None:
    ds_cfg = types.SimpleNamespace(mask_prompt=cfg.mask_prompt)
    train_ds = CacheDataset(create_dataset(train_recs, tokenizer, ds_cfg))
    valid_ds = CacheDataset(create_dataset(valid_recs, tokenizer, ds_cfg)) if valid_recs else None
    val_fn = _validator(model, valid_ds, cfg)
    if start == 0 and val0 and val_fn is not None:
        row0 = {"step": 0, "train_loss": None, "val_loss": val_fn(), "learning_rate": None,
                "tokens_per_s": None, "steps_per_s": None, "tokens": 0, "trained_tokens": 0,
                "peak_memory_gb": mx.get_peak_memory() / 1e9, "time": time.time()}
        if store is not None:
            store.append(row0)

    cb = _PhaseCallback(start=start, cfg=cfg, model=model, optimizer=optimizer, store=store, out_dir=out_dir,
                        val_fn=val_fn, tokens0=int(ckpt.get("trained_tokens", 0)) if ckpt else 0,
                        ckpt_extra={"resume_key": key, "phase": cfg.phase}, progress=progress)
    if start < cfg.iters:
        args = TrainingArgs(batch_size=cfg.batch_size, iters=cfg.iters - start, val_batches=cfg.val_batches,
                            steps_per_report=1, steps_per_eval=_NEVER, steps_per_save=_NEVER,
                            max_seq_length=cfg.max_seq_length, adapter_file=str(out_dir / ADAPTER_FILE),
                            grad_checkpoint=cfg.grad_checkpoint, grad_accumulation_steps=cfg.grad_accumulation)
        size = dp.rank_size()[1]
        extra = {"loss": dp.sharded_loss(size)} if size > 1 else {}
        mlx_train(model=model, optimizer=optimizer, train_dataset=train_ds, val_dataset=None, args=args,
                  iterate_batches=make_iterate_batches(cfg.seed, start), training_callback=cb, **extra)


def _finish(model: nn.Module, cfg: PhaseConfig, out_dir: Path, store: JsonlStore, start: int, ckpt: dict | None,
            key: str, trainable: int, total: int, model_info: Mapping[str, Any] | None, data: dict,
            prev_info: dict | None, processes: int = 1) -> PhaseResult:
    save_safetensors_atomic(out_dir / ADAPTER_FILE, dict(tree_flatten(model.trainable_parameters())))
    prune_checkpoints(out_dir, int(cfg.keep_checkpoints))
    metrics = store.records()
    train_rows = [r for r in metrics if r.get("train_loss") is not None]
    val_rows = [r for r in metrics if r.get("val_loss") is not None]
    lineage = {
        "complete": True, "phase": cfg.phase, "resume_key": key, "steps": cfg.iters,
        "resumed_from": start if ckpt else None, "trainable_params": trainable, "total_params": total,
        "config": cfg.to_dict(), "model": dict(model_info or {}), "data": data, "previous": prev_info,
        "adapters_sha256": sha256_file(out_dir / ADAPTER_FILE),
        "chain": ((prev_info or {}).get("lineage") or [])
        + [{"phase": cfg.phase, "adapter_dir": str(out_dir), "data": {k: v["sha256"] for k, v in data.items()}}],
        "final_train_loss": train_rows[-1]["train_loss"] if train_rows else None,
        "final_val_loss": val_rows[-1]["val_loss"] if val_rows else None,
        "train_s": sum(1.0 / r["steps_per_s"] for r in train_rows if r.get("steps_per_s")),
        "tokens": sum(int(r.get("tokens") or 0) for r in train_rows),
        "processes": processes, "versions": _versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out_dir / LINEAGE_FILE, lineage)
    res = _result_from_lineage(out_dir, lineage, metrics)
    res.skipped = False
    return res


def _result_from_lineage(out_dir: Path, lin: Mapping[str, Any], metrics: list[dict]) -> PhaseResult:
    return PhaseResult(adapter_dir=out_dir, steps=int(lin["steps"]), resumed_from=lin.get("resumed_from"),
                       trainable_params=int(lin["trainable_params"]), total_params=int(lin["total_params"]),
                       final_train_loss=lin.get("final_train_loss"), final_val_loss=lin.get("final_val_loss"),
                       train_s=float(lin.get("train_s") or 0.0), tokens=int(lin.get("tokens") or 0),
                       skipped=True, metrics=metrics)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from lekutils.core.blas import active_blas

    out = {"blas": active_blas()}
    for pkg in ("mlx", "mlx-lm", "lekutils"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            out[pkg] = "unknown"
    return out

