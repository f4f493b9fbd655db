"""Ground layer: paths, errors, BLAS set-up, hashing, atomic files and the JSONL store."""
