"""Stages that generate: the one task loop, the A/B test, self-distillation and extraction."""
