"""Orchestration: parameters, profiles, manifests, papermill execution and the CLI commands."""
