"""Write the five phase-training notebooks (20_phase0_train ... 60_phase4_train) and their smoke and
gemma3-27b parameter files from one template, so they stay in sync.

Run: ``.venv/bin/python tools/build_train_notebooks.py`` (rewrites notebooks/*_phase*_train.ipynb and
params/{smoke,gemma3-27b}/*_phase*_train.yaml).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
PHASES = {
    0: ("20_phase0_train", "creative baseline lock",
        "anchors the model's own creative voice before any ethics training (self-distilled creative answers, no kernel)"),
    1: ("30_phase1_train", "deep axiom reasoning",
        "trains on kernel-guided answers to the probes and their rephrasings, starting from phase 0's adapter"),
    2: ("40_phase2_train", "multi-perspective",
        "trains on answers that hold several stakeholders' views at once, starting from phase 1's adapter"),
    3: ("50_phase3_train", "adversarial resilience",
        "trains on answers to adversarial and manipulative prompts, starting from phase 2's adapter"),
    4: ("60_phase4_train", "synthesis",
        "trains on synthesis prompts that combine the earlier phases, starting from phase 3's adapter; "
        "checks that the final adapter changes the model's greedy output and loads through mlx-lm"),
}

PARAMS = '''run_dir = "runs/smoke"
phase = {phase}
model = "embedded:smollm2-135m-instruct"
# training data (mlx-lm chat JSONL train/valid): "" = <run_dir>/distill/phase{phase}
data_dir = ""
# phase K-1's adapter: "" = <run_dir>/adapters/phase{prev} ("none" for phase 0)
previous_adapter = "{prev_default}"
# LoRA and optimisation (mlx-lm tuner); iters count micro-batches
rank = 8
dropout = 0.05
scale = 16.0
num_layers = 4
keys = []
batch_size = 1
grad_accumulation = 1
grad_checkpoint = False
max_seq_length = 128
optimizer = "adam"
learning_rate = 3.0e-4
lr_schedule = {{}}
iters = 8
val_every = 4
val_batches = 1
checkpoint_every = 4
mask_prompt = False
seed = 0
# regression gates (lekutils.train.gates): rules "min", "above", "max" or "*_vs_base" (base model + offset)
gate_probe_files = ["data/probes/eval-v1.json"]
gate_max_probes = 1
gate_creative_probes = 1
gate_kernels = {{"json": "data/kernels/lek-example-v1.json"}}
gate_max_tokens = 32
gate_batch_size = 8
gates = {{"creative": {{"min_vs_base": -6.0}}, "average": {{"min_vs_base": -4.0}}, "worst": {{"min_vs_base": -8.0}},
         "kernel_response": {{"above_vs_base": -6.0}}, "degeneration": {{"max_vs_base": 1}}}}
degeneration_at = 1.0
allow_gate_failure = False
# budgets: planned curriculum (per phase) for the time estimate, and the 27B memory settings
curriculum_plan = []
budget_bits = 4
budget_seq_len = 4096
budget_rank = 16
budget_num_layers = 32
# final phase: compare greedy output with the base model on this probe ("" = skip)
compare_probe = "{compare}"
compare_max_tokens = 32
'''

SETUP = '''import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from tqdm.auto import tqdm

from lekutils.engine import models
from lekutils.train.phase import (PhaseConfig, count_params, metrics_frame, mlx_model_dir, model_config, plot_loss,
                            save_loss_figure, train_phase)

run_dir = Path(run_dir)
data = Path(data_dir) if data_dir else run_dir / "distill" / f"phase{phase}"
out_dir = run_dir / "adapters" / f"phase{phase}"
if previous_adapter == "none" or (phase == 0 and not previous_adapter):
    prev = None
else:
    prev = Path(previous_adapter) if previous_adapter else run_dir / "adapters" / f"phase{phase - 1}"
cfg = PhaseConfig.from_params(dict(
    phase=phase, iters=iters, learning_rate=learning_rate, lr_schedule=lr_schedule or None, rank=rank,
    dropout=dropout, scale=scale, num_layers=num_layers, keys=keys or None, batch_size=batch_size,
    grad_accumulation=grad_accumulation, grad_checkpoint=grad_checkpoint, max_seq_length=max_seq_length,
    optimizer=optimizer, val_every=val_every, val_batches=val_batches, checkpoint_every=checkpoint_every,
    mask_prompt=mask_prompt, seed=seed))
print(f"phase {phase}: data {data}, previous adapter {prev}, output {out_dir}")
pd.DataFrame([cfg.to_dict()]).T.rename(columns={0: "value"})'''

TRAIN = '''base, tokenizer = models.load(model)
print(f"base model {model}: {count_params(base)[1]:,} parameters (stored elements)")
with tqdm(total=cfg.iters, desc=f"phase {phase}") as bar:
    def progress(step, total, row):
        bar.n = step
        bar.set_postfix(loss=f"{row['train_loss']:.3f}")
        bar.refresh()
    result = train_phase(base, tokenizer, cfg, data, out_dir, previous_adapter=prev,
                         model_info=models.fingerprint(model), progress=progress)
print(f"trainable parameters: {result.trainable_params:,} of {result.total_params:,} "
      f"({100 * result.trainable_params / result.total_params:.3f}%); steps {result.steps}; "
      f"resumed from step {result.resumed_from}; already done: {result.skipped}")
print(f"training: {result.tokens} tokens in {result.train_s:.1f}s = {result.tokens_per_s:.1f} tokens/s")'''

CURVE = '''frame = metrics_frame(result.metrics)
save_loss_figure(out_dir, title=f"phase {phase}")
fig = plot_loss(result.metrics, title=f"phase {phase} loss")
plt.show()
frame[["train_loss", "val_loss", "learning_rate", "tokens_per_s", "peak_memory_gb"]].tail(8)'''

GATE = '''from lekutils.tasks.abtest import select_probes
from lekutils.train.gates import creative_ids_of, enforce, evaluate_and_gate
from lekutils.engine.base import SamplerSettings
from lekutils.data.kernels import conditions
from lekutils.data.probes import load_probes

all_probes = load_probes(*gate_probe_files)
creative = creative_ids_of(all_probes)
others = [p for p in all_probes if p.id not in creative]
creative = creative[:gate_creative_probes] if gate_creative_probes else creative
gate_probes = [p for p in all_probes if p.id in creative] + (others[:gate_max_probes] if gate_max_probes else others)
conds = conditions(gate_kernels, baseline=True)
sampler = SamplerSettings(temperature=0.0, max_tokens=gate_max_tokens, seed=seed)
with tqdm(desc="gate evaluation") as bar:
    report = evaluate_and_gate(phase, model, gate_probes, conds, gates, adapter_path=out_dir, run_dir=run_dir,
                               sampler=sampler, allow_failure=allow_gate_failure, batch_size=gate_batch_size,
                               degeneration_at=degeneration_at, progress=bar.update, enforce_now=False)
print(f"{len(gate_probes)} probes (creative: {creative}), conditions {[c.name for c in conds]}; "
      f"gate table: {out_dir / 'gates.json'}")
display(report.to_frame())
_ = enforce(report)  # stops the pipeline on a failed gate unless allow_gate_failure'''

BUDGET = '''from lekutils.tasks.abtest import load_ab
from lekutils.train.budget import GEMMA3_27B, budget_table, memory_budget, parameter_count, time_budget

here_cfg = model_config(base)
budgets = [memory_budget(GEMMA3_27B, bits=budget_bits, seq_len=budget_seq_len, rank=budget_rank,
                         num_layers=budget_num_layers, name="gemma3-27b")]
if here_cfg:
    budgets.insert(0, memory_budget(here_cfg, bits=32, seq_len=max_seq_length, rank=rank, num_layers=num_layers,
                                    name=model))
display(budget_table(budgets))
print("curriculum estimate for 27B: about 20 GB in all on a 96 GB machine")
ab = load_ab(report.ab_path)
gen_tok = sum(c.get("generation_tokens", 0) for r in ab for c in r["conditions"].values())
gen_s = sum(c.get("wall_s", 0.0) for r in ab for c in r["conditions"].values())
gen_tps = gen_tok / gen_s if gen_s else float("nan")
print(f"measured here: generation {gen_tps:.1f} tokens/s, training {result.tokens_per_s:.1f} tokens/s")
if curriculum_plan and gen_s and result.tokens_per_s > 0:
    here = time_budget(curriculum_plan, gen_tokens_per_s=gen_tps, train_tokens_per_s=result.tokens_per_s,
                       label=f"{model} here")
    scale = parameter_count(GEMMA3_27B) / max(parameter_count(here_cfg), 1) if here_cfg else float("nan")
    big = time_budget(curriculum_plan, gen_tokens_per_s=gen_tps, train_tokens_per_s=result.tokens_per_s,
                      throughput_scale=scale, label="27B here (scaled by parameter ratio)")
    display(pd.concat([here, big], ignore_index=True).round(3))'''

COMPARE = '''if compare_probe:
    import mlx_lm

    from lekutils.engine.chat import build_prompt

    probe = next(p for p in load_probes(*gate_probe_files) if p.id == compare_probe)
    model_dir = mlx_model_dir(model)
    outs = {}
    for name, adapter in (("base", None), (f"phase{phase}", str(out_dir))):
        m, tok = mlx_lm.load(model_dir, adapter_path=adapter)  # mlx-lm's own API
        prompt = build_prompt(tok, probe.prompt).tokens
        outs[name] = mlx_lm.generate(m, tok, prompt, max_tokens=compare_max_tokens)
    display(pd.DataFrame({"model": list(outs), "greedy output": list(outs.values())}))
    if outs["base"] == outs[f"phase{phase}"]:
        raise AssertionError(f"the phase {phase} adapter does not change the greedy output on {probe.id}")
    print(f"the adapter changes the greedy output on {probe.id}; it loads through mlx_lm.load(adapter_path=...)")'''


def build(phase: int) -> nbformat.NotebookNode:
    name, title, purpose = PHASES[phase]
    intro = (f"# {name[:2]} · Phase {phase} training: {title}\n\n"
             f"Trains curriculum phase {phase} as a LoRA adapter on mlx-lm's tuner: it {purpose}. "
             "The adapter, its step checkpoints (resumable after a crash, with optimizer state), the metrics "
             "JSONL, the loss figure and the lineage land in `<run_dir>/adapters/phase"
             f"{phase}/`. The adapter is then evaluated with the A/B runner on the evaluation probes "
             "(baseline and kernel) and the regression gates are applied; a failed gate stops the pipeline. "
             "Memory and time budgets close the notebook.\n\n"
             f"Run: `python -m lekutils run {name} --profile smoke`")
    params = PARAMS.format(phase=phase, prev=max(phase - 1, 0), prev_default="none" if phase == 0 else "",
                           compare="E11_HYPNOS_DREAM" if phase == 4 else "")
    cells = [
        new_markdown_cell(intro),
        new_code_cell(params, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_markdown_cell("## Training\nResumes from the newest checkpoint if a previous run stopped; a finished "
                          "phase with the same config, data and previous adapter is not retrained."),
        new_code_cell(TRAIN),
        new_markdown_cell("## Loss and metrics"),
        new_code_cell(CURVE),
        new_markdown_cell("## Regression gates"),
        new_code_cell(GATE),
        new_markdown_cell("## Memory and time budgets"),
        new_code_cell(BUDGET),
    ]
    if phase == 4:
        cells += [new_markdown_cell("## Does the final adapter change the model?"), new_code_cell(COMPARE)]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    return nb


def main() -> None:
    for phase, (name, _, _) in PHASES.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(build(phase), path)
        print(path)


# ------------------------------------------------------------------------------ profile parameter files
SMOKE_PLAN = "[" + ", ".join(f"{{phase: {k}, prompts: 6, samples_per_prompt: 2, gen_tokens_per_sample: 96, "
                             "train_iters: 8, train_tokens_per_iter: 120}" for k in range(5)) + "]"
BIG_PLAN = """
  # planning assumptions (prompts x samples x mean generated tokens; iters x mean tokens per micro-batch)
  - {phase: 0, prompts: 60, samples_per_prompt: 8, gen_tokens_per_sample: 600, train_iters: 50, train_tokens_per_iter: 900}
  - {phase: 1, prompts: 200, samples_per_prompt: 8, gen_tokens_per_sample: 800, train_iters: 100, train_tokens_per_iter: 1100}
  - {phase: 2, prompts: 150, samples_per_prompt: 8, gen_tokens_per_sample: 800, train_iters: 100, train_tokens_per_iter: 1100}
  - {phase: 3, prompts: 150, samples_per_prompt: 8, gen_tokens_per_sample: 800, train_iters: 50, train_tokens_per_iter: 1100}
  - {phase: 4, prompts: 100, samples_per_prompt: 8, gen_tokens_per_sample: 900, train_iters: 50, train_tokens_per_iter: 1200}"""
BIG_ITERS_LR = {0: (50, "5.0e-6"), 1: (100, "1.0e-5"), 2: (100, "8.0e-6"), 3: (50, "5.0e-6"), 4: (50, "3.0e-6")}


def smoke_yaml(phase: int) -> str:
    name = PHASES[phase][0]
    return f"""# {name}, smoke profile: SmolLM2-135M on CPU, about a minute with its gate evaluation. LoRA on the
# last 4 of 30 layers, rank 8, 8 steps at a constant rate; gates relative to the base model's own scores
# (a 135M model cannot reach the 27B levels), on 1 creative + 1 other probe with 32-token greedy answers.
model: embedded:smollm2-135m-instruct
data_dir: ""
previous_adapter: "{'none' if phase == 0 else ''}"
rank: 8
dropout: 0.05
scale: 16.0
num_layers: 4
keys: []
batch_size: 1
grad_accumulation: 1
grad_checkpoint: false
max_seq_length: 128
optimizer: adam
learning_rate: 3.0e-4
lr_schedule: {{}}
iters: 8
val_every: 4
val_batches: 1
checkpoint_every: 4
mask_prompt: false
seed: 0
gate_probe_files: [data/probes/eval-v1.json]
gate_max_probes: 1
gate_creative_probes: 1
gate_kernels: {{json: data/kernels/lek-example-v1.json}}
gate_max_tokens: 32
gate_batch_size: 8
gates:
  creative: {{min_vs_base: -6.0}}
  average: {{min_vs_base: -4.0}}
  worst: {{min_vs_base: -8.0}}
  kernel_response: {{above_vs_base: -6.0}}
  degeneration: {{max_vs_base: 1}}
degeneration_at: 1.0
# smoke: a 135M model after 8 steps on a handful of examples moves its 32-token scores by noise, so a
# failed gate is recorded (gates.json, tables, report) but does not stop the demonstration pipeline;
# the gemma3-27b profile stops on any failed gate.
allow_gate_failure: true
curriculum_plan: {SMOKE_PLAN}
budget_bits: 4
budget_seq_len: 4096
budget_rank: 16
budget_num_layers: 32
compare_probe: "{'E11_HYPNOS_DREAM' if phase == 4 else ''}"
compare_max_tokens: 32
"""


def big_yaml(phase: int) -> str:
    name = PHASES[phase][0]
    iters, lr = BIG_ITERS_LR[phase]
    return f"""# {name}, gemma3-27b profile: the curriculum's settings (DESIGN.md) on a 96 GB Apple machine.
# iters count mlx-lm micro-batches (grad accumulation 8); checkpoints land on update boundaries.
model: mlx-community/gemma-3-27b-it-qat-4bit
data_dir: ""
previous_adapter: "{'none' if phase == 0 else ''}"
rank: 16
dropout: 0.05
scale: 16.0
num_layers: 32
keys: []
batch_size: 1
grad_accumulation: 8
grad_checkpoint: true
max_seq_length: 4096
optimizer: adam
learning_rate: {lr}
lr_schedule: {{}}
iters: {iters}
val_every: 10
val_batches: 25
checkpoint_every: 25
mask_prompt: false
seed: 0
gate_probe_files: [data/probes/eval-v1.json]
gate_max_probes: 0
gate_creative_probes: 0
gate_kernels: {{json: data/kernels/lek-example-v1.json, txt: data/kernels/lek-example-v1.txt}}
gate_max_tokens: 1024
gate_batch_size: 8
gates:
  creative: {{min: 13.0}}
  average: {{min: 21.0}}
  worst: {{min: 8.0}}
  kernel_response: {{above: 0.0}}
  degeneration: {{max: 0}}
degeneration_at: 1.0
allow_gate_failure: false
curriculum_plan:{BIG_PLAN}
budget_bits: 4
budget_seq_len: 4096
budget_rank: 16
budget_num_layers: 32
compare_probe: "{'E11_HYPNOS_DREAM' if phase == 4 else ''}"
compare_max_tokens: 64
"""


def write_params() -> None:
    for phase, (name, _, _) in PHASES.items():
        for profile, text in (("smoke", smoke_yaml(phase)), ("gemma3-27b", big_yaml(phase))):
            path = ROOT / "params" / profile / f"{name}.yaml"
            path.write_text(text, encoding="utf-8")
            print(path)


if __name__ == "__main__":
    main()
    write_params()
