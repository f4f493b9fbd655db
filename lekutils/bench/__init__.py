"""Benchmark scripts: `python -m lekutils bench generate|score|train` (not timed tests)."""
