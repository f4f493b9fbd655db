"""Data layer: probe sets, prompt banks, kernels and conditions, the A/B record reader."""
