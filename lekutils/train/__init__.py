"""Training layer: phase config, adapters, checkpoints, the LoRA loop, gates and budgets."""
