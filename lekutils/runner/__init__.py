"""Orchestration: parameters (params), profiles (profile), the run manifest (manifest), Papermill
execution and the Jupyter kernel spec (execute), notebook hygiene, and one module per CLI command (cmd_*)."""
