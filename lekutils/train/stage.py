"""The steps of ``notebooks/20_train_phase.ipynb``, one function per notebook cell.

The notebook is executed once per curriculum phase (executions ``20_phase0_train`` ...
``60_phase4_train``); each cell makes one call here: :func:`plan` (paths and the
:class:`~lekutils.train.config.PhaseConfig` from the notebook's parameters), :func:`train`,
:func:`loss_report`, :func:`evaluate_gates` (then :func:`lekutils.train.gates.enforce`),
:func:`budgets` and :func:`compare_outputs`. Nothing here prints: values are returned for the
notebook to show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lekutils.core import stages
from lekutils.train.config import PhaseConfig
from lekutils.train.gates import GateReport
from lekutils.train.loop import PhaseResult

#: Notebook parameters that are PhaseConfig fields (the same names); ``{}`` / ``[]`` mean None there.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(PhaseConfig))


@dataclass
class Stage:
    """Where one phase reads and writes, and its training config."""

    phase: int
    model: str
    run_dir: Path
    data_dir: Path
    out_dir: Path
    previous_adapter: Path | None
    config: PhaseConfig
    data_parallel: Any = None  # lekutils.train.distributed.DataParallel, None = one process

    def describe(self) -> str:
        return (f"phase {self.phase}: data {self.data_dir}, previous adapter {self.previous_adapter}, "
                f"output {self.out_dir}")

    def config_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([self.config.to_dict()]).T.rename(columns={0: "value"})


def config_from(params: Mapping[str, Any]) -> PhaseConfig:
    """The PhaseConfig of a notebook's parameters (``lr_schedule = {}`` and ``keys = []`` are None)."""
    vals = {k: params[k] for k in CONFIG_FIELDS if k in params}
    for k in ("lr_schedule", "keys"):
        if k in vals and not vals[k]:
            vals[k] = None
    return PhaseConfig.from_params(vals)


def plan(params: Mapping[str, Any]) -> Stage:
    """Paths and config of the phase from the notebook's parameters (``globals()`` of the notebook).

    ``data_dir`` "" = ``<run_dir>/distill/phaseK``; ``previous_adapter`` "" = ``<run_dir>/adapters/phaseK-1``
    (none for phase 0), "none" = train from the base model.
    """
    run_dir, phase = Path(params["run_dir"]), int(params["phase"])
    data = Path(params["data_dir"]) if params.get("data_dir") else run_dir / "distill" / f"phase{phase}"
    prev_param = params.get("previous_adapter", "")
    if prev_param == "none" or (phase == 0 and not prev_param):
        prev = None
    else:
        prev = Path(prev_param) if prev_param else run_dir / "adapters" / f"phase{phase - 1}"
    stages.require(data / "train.jsonl", run_dir, "training data")
    if prev is not None:
        stages.require(prev / "adapters.safetensors", run_dir, "previous phase's adapter")
    from lekutils.train.distributed import DataParallel

    return Stage(phase, str(params["model"]), run_dir, data, run_dir / "adapters" / f"phase{phase}", prev,
                 config_from(params), DataParallel.from_params(params.get("data_parallel") or None))


def data_parallel_of(stage: Stage) -> Any:
    """The stage's :class:`~lekutils.train.distributed.DataParallel` setting (None: one process)."""
    return stage.data_parallel


def train(stage: Stage, progress: Callable[[int, int, dict], None] | None = None) -> tuple[PhaseResult, Any]:
    """Load the base model and train (or resume, or skip a finished) phase; returns ``(result, base model)``.

    With ``data_parallel`` (more than one process) the phase trains in ``mlx.launch``'s workers
    (:func:`lekutils.train.distributed.run_phase`; ``progress`` follows rank 0's metrics) and the
    base model is loaded here afterwards, for the budgets."""
    from lekutils.engine import models
    from lekutils.train.loop import train_phase

    if stage.data_parallel is not None and stage.data_parallel.world_size > 1:
        from lekutils.train.distributed import job_of, run_phase

        result = run_phase(job_of(stage), stage.data_parallel, progress=progress)
        base, _ = models.load(stage.model)
        return result, base
    base, tokenizer = models.load(stage.model)
    result = train_phase(base, tokenizer, stage.config, stage.data_dir, stage.out_dir,
                         previous_adapter=stage.previous_adapter, model_info=models.fingerprint(stage.model),
                         progress=progress)
    return result, base


def train_summary(result: PhaseResult) -> str:
    return (f"trainable parameters: {result.trainable_params:,} of {result.total_params:,} "
            f"({100 * result.trainable_params / result.total_params:.3f}%); steps {result.steps}; "
            f"resumed from step {result.resumed_from}; already done: {result.skipped}\n"
            f"training: {result.tokens} tokens in {result.train_s:.1f}s = {result.tokens_per_s:.1f} tokens/s")


def loss_report(stage: Stage, result: PhaseResult, rows: int = 8) -> tuple[Any, Any]:
    """Write ``loss.png|pdf`` into the adapter folder; return the loss figure and the last metric rows."""
    from lekutils.train.metrics import metrics_frame, plot_loss, save_loss_figure

    save_loss_figure(stage.out_dir, title=f"phase {stage.phase}")
    frame = metrics_frame(result.metrics)
    cols = [c for c in ("train_loss", "val_loss", "learning_rate", "tokens_per_s", "peak_memory_gb") if c in frame]
    return plot_loss(result.metrics, title=f"phase {stage.phase} loss"), frame[cols].tail(rows)


def gate_probes(probe_files: Sequence[str], max_probes: int = 0, creative_probes: int = 0) -> tuple[list, list[str]]:
    """The evaluation probes of the gates: the creative ones (first ``creative_probes``, 0 = all) then the
    others (first ``max_probes``, 0 = all); returns ``(probes, creative ids)``."""
    from lekutils.data.probes import load_probes
    from lekutils.train.gates import creative_ids_of

    all_probes = load_probes(*probe_files)
    creative = creative_ids_of(all_probes)
    others = [p for p in all_probes if p.id not in creative]
    creative = creative[:creative_probes] if creative_probes else creative
    chosen = [p for p in all_probes if p.id in creative] + (others[:max_probes] if max_probes else others)
    return chosen, creative


def evaluate_gates(stage: Stage, *, probe_files: Sequence[str], max_probes: int, creative_probes: int,
                   kernels: Mapping[str, str], max_tokens: int, batch_size: int,
                   gates: Mapping[str, Mapping[str, float]], degeneration_at: float, allow_failure: bool,
                   progress: Any = None) -> GateReport:
    """Evaluate the adapter with the A/B runner and compute the gate table (not enforced yet: show it,
    then call :func:`lekutils.train.gates.enforce`)."""
    from lekutils.data.kernels import conditions
    from lekutils.engine.base import SamplerSettings
    from lekutils.train.gates import evaluate_and_gate

    probes, _ = gate_probes(probe_files, max_probes, creative_probes)
    conds = conditions(kernels, baseline=True)
    sampler = SamplerSettings(temperature=0.0, max_tokens=max_tokens, seed=stage.config.seed)
    return evaluate_and_gate(stage.phase, stage.model, probes, conds, gates, adapter_path=stage.out_dir,
                             run_dir=stage.run_dir, sampler=sampler, allow_failure=allow_failure,
                             batch_size=batch_size, degeneration_at=degeneration_at, progress=progress,
                             enforce_now=False)


def gate_summary(stage: Stage, report: GateReport) -> str:
    values = report.values
    return (f"{values.get('n_probes')} probes (creative: {values.get('creative_probes')}), conditions "
            f"{['baseline', *values.get('kernels', [])]}; gate table: {stage.out_dir / 'gates.json'}")


def budgets(stage: Stage, result: PhaseResult, base: Any, report: GateReport, *, bits: float, seq_len: int,
            rank: int, num_layers: int, curriculum_plan: Sequence[Any],
            budget_from_banks: bool = False) -> tuple[Any, Any, str]:
    """Memory budgets (this model at its settings, and Gemma3-27B at the curriculum's), the time budget
    from the throughputs measured here (None without a plan) and a line of measured throughputs.
    With ``budget_from_banks`` the plan's prompts per phase are the v2 banks' real sizes
    (:func:`lekutils.train.budget.plan_from_banks`)."""
    import pandas as pd

    from lekutils.tasks.abtest import load_ab
    from lekutils.train.budget import (
        GEMMA3_27B,
        architecture_config,
        budget_table,
        memory_budget,
        parameter_count,
        plan_from_banks,
        time_budget,
    )

    cfg = stage.config
    here_cfg = architecture_config(base)
    mem = [memory_budget(GEMMA3_27B, bits=bits, seq_len=seq_len, rank=rank, num_layers=num_layers,
                         name="gemma3-27b")]
    if here_cfg:
        mem.insert(0, memory_budget(here_cfg, bits=32, seq_len=cfg.max_seq_length, rank=cfg.rank,
                                    num_layers=cfg.num_layers, name=stage.model))
    ab = load_ab(report.ab_path)
    gen_tok = sum(c.get("generation_tokens", 0) for r in ab for c in r["conditions"].values())
    gen_s = sum(c.get("wall_s", 0.0) for r in ab for c in r["conditions"].values())
    gen_tps = gen_tok / gen_s if gen_s else float("nan")
    line = (f"curriculum estimate for 27B: about 20 GB in all on a 96 GB machine\n"
            f"measured here: generation {gen_tps:.1f} tokens/s, training {result.tokens_per_s:.1f} tokens/s")
    times = None
    if curriculum_plan and budget_from_banks:
        curriculum_plan = plan_from_banks(curriculum_plan)
    if curriculum_plan and gen_s and result.tokens_per_s > 0:
        here = time_budget(curriculum_plan, gen_tokens_per_s=gen_tps, train_tokens_per_s=result.tokens_per_s,
                           label=f"{stage.model} here")
        scale = parameter_count(GEMMA3_27B) / max(parameter_count(here_cfg), 1) if here_cfg else float("nan")
        big = time_budget(curriculum_plan, gen_tokens_per_s=gen_tps, train_tokens_per_s=result.tokens_per_s,
                          throughput_scale=scale, label="27B here (scaled by parameter ratio)")
        times = pd.concat([here, big], ignore_index=True).round(3)
    return budget_table(mem), times, line


def compare_outputs(stage: Stage, probe_files: Sequence[str], probe_id: str, max_tokens: int) -> Any:
    """Greedy output of the base model and of base + this phase's adapter on one probe, both loaded by
    stock ``mlx_lm.load`` (so the adapter is proven to load through mlx-lm); raises AssertionError when
    the adapter does not change the output. Returns the two outputs as a DataFrame."""
    import mlx_lm
    import pandas as pd

    from lekutils.data.probes import load_probes
    from lekutils.engine.chat import build_prompt
    from lekutils.engine.models import mlx_model_dir

    probe = next(p for p in load_probes(*probe_files) if p.id == probe_id)
    model_dir = mlx_model_dir(stage.model)
    outs = {}
    for name, adapter in (("base", None), (f"phase{stage.phase}", str(stage.out_dir))):
        m, tok = mlx_lm.load(model_dir, adapter_path=adapter)
        outs[name] = mlx_lm.generate(m, tok, build_prompt(tok, probe.prompt).tokens, max_tokens=max_tokens)
    if outs["base"] == outs[f"phase{stage.phase}"]:
        raise AssertionError(f"the phase {stage.phase} adapter does not change the greedy output on {probe.id}")
    return pd.DataFrame({"model": list(outs), "greedy output": list(outs.values())})
