"""Writes notebooks/90_p100_report.ipynb (run: .venv/bin/python tools/build_report_notebook.py)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md = new_markdown_cell
code = new_code_cell
cells = [
    md("""# 90 · Report: tables, publication figures and a response explorer

Loads A/B result files — this run's (`<run_dir>/ab/*.jsonl`) and upstream's published ones
(`{upstream}/benchmarks/ab-*.jsonl`) — into one long table, re-scoring upstream's v1-scored P20
records with the canonical v2 scorer (the stored v1 numbers stay in `stored_v1`). From it: per model ×
condition means with seeded bootstrap 95% CIs, the kernel effect as a paired per-probe delta with its CI
(improved / regressed / unchanged at ±0.5), per-category means, extreme probes, degeneration counts,
v1 beside v2, family lineages, the fine-tuning effect (tuned minus base) and the curriculum's gate values
per phase. Tables go to `<run_dir>/tables/` (CSV), figures (PNG + PDF) to `<run_dir>/figures/` and
`figures/`. P20 and P100 runs of the same model stay separate rows (column `probe_set`).

Run: `python -m lekutils run 90_p100_report --profile smoke`"""),
    code("""run_dir = "runs/smoke"
# A/B result files: paths or globs; "{run_dir}" and "{upstream}" (lekutils.core.paths.upstream_dir()) are expanded;
# "{upstream}" patterns are skipped where the upstream folder is absent
results = ["{run_dir}/ab/*.jsonl", "{upstream}/benchmarks/ab-*.jsonl"]
# gate tables of the training phases
gates = ["{run_dir}/adapters/phase*/gates.json"]
models_table = "params/models.yaml"
figures_dir = "figures"
n_boot = 10000
seed = 0
change_band = 0.5
dpi = 300
# "auto": widgets inside Jupyter, a static table under Papermill; or "yes" / "no"
interactive = "auto"
""", metadata={"tags": ["parameters"]}),
    code("""import logging
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from lekutils.report import explorer
from lekutils.report.build import report_figures, report_tables, write_report
from lekutils.report.load import load_gates, load_models, load_results, resolve_paths

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
pd.set_option("display.max_rows", 200)
pd.set_option("display.max_columns", 40)
pd.set_option("display.width", 200)

models = load_models(models_table)
files = resolve_paths(results, run_dir=run_dir)
df = load_results(files, models=models, run_dir=run_dir)
gate_rows = load_gates(gates, run_dir=run_dir)
display(Markdown(f"**{len(files)} result file(s)**, {len(df)} scored responses, "
                 f"{int(df['rescored'].sum())} re-scored with v2 (stored as v1); {len(gate_rows)} gate rows."))
df.groupby(["source_file", "probe_set", "model"], observed=True).agg(
    rows=("score", "size"), probes=("probe_id", "nunique"), rescored=("rescored", "sum")).reset_index()"""),
    code("""tables = report_tables(df, gate_rows, n_boot=n_boot, seed=seed, band=change_band)
figures = report_figures(df, tables)
written = write_report(tables, figures, run_dir, [figures_dir], dpi=dpi, close=True)
display(Markdown(f"Wrote {len(written['tables'])} tables to `{Path(run_dir) / 'tables'}` and "
                 f"{len(written['figures'])} figure files to `{Path(run_dir) / 'figures'}` and `{figures_dir}/`."))"""),
    md("""## Summary: v2 score per model × probe set × condition

`mean` with its bootstrap 95% CI (`ci_low`, `ci_high`; probes resampled, seeded); `stored_v1_mean` is the
mean of the v1 numbers stored in upstream's P20 files (their v2 values are re-scores of the same responses)."""),
    code("""tables["summary"]"""),
    md("""## Kernel effect: paired per-probe delta against baseline

`delta` is the mean of per-probe differences (condition − baseline) with its bootstrap 95% CI;
`significant` means the CI excludes 0. `improved` / `regressed` / `unchanged` count probes moving more
than ±0.5. (Published tables quote differences of rounded means, which can differ in the last digit.)"""),
    code("""tables["kernel_effect"]"""),
    md("""### The same in the published layout: condition means and their deltas"""),
    code("""tables["conditions_wide"]"""),
    md("""## v1 beside v2 (upstream P20 files)"""),
    code("""tables["v1_v2"]"""),
    md("""## Family lineages (base models) and the fine-tuning effect (tuned − base, baseline condition, paired)"""),
    code("""display(tables["lineage"])
display(tables["family_trajectory"])
tables["finetune_effect"]"""),
    md("""## Per-category means"""),
    code("""tables["category_means"]"""),
    md("""## Worst 5 and best 5 probes per model × probe set"""),
    code("""tables["extreme_probes"]"""),
    md("""## Degeneration

Counts of answers with any degeneration penalty (`degenerate`: unique-word ratio < 0.5), full degeneration
(`degenerate_full`: < 0.3), empty answers, negative scores and answers with compliance markers; then full
degeneration against negative scores over all rows."""),
    code("""display(tables["degeneration"])
tables["degeneration_crosstab"]"""),
    md("""## Signal decomposition: mean points each v2 signal contributes"""),
    code("""tables["signal_decomposition"].pivot_table(index=["model", "probe_set", "condition"], columns="signal",
                                           values="points", sort=False)"""),
    md("""## Curriculum progress: gate values per training phase"""),
    code("""tables["curriculum_progress"] if len(gate_rows) else Markdown("_No gate tables found (no training phase has run)._")"""),
    md("""## Figures

Kernel effect (forest plot), score distributions, per-category heatmap, signal decomposition and the phase
progression with the gate levels. Files: `<name>.png` / `<name>.pdf` in both figure folders."""),
    code("""for name, fig in figures.items():
    display(Markdown(f"**{name}**"))
    display(fig)"""),
    md("""## Explorer

Choose a model, condition and probe to read the response (escaped) beside its signals and score; filter by
category or score range. Without a widget frontend (Papermill) this shows a static table of the
lowest-scoring responses instead."""),
    code("""explorer.show(df, interactive if interactive == "auto" else interactive == "yes")"""),
]
nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
nbformat.validate(nb)
nbformat.write(nb, str(Path(__file__).resolve().parents[1] / "notebooks" / "90_p100_report.ipynb"))
