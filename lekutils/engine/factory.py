"""One entry point from a model spec to a :class:`~lekutils.engine.base.Generator`.

Every task that generates (A/B test, distillation, its reference models, the gates) opens its
generator here, so a new kind of backend (e.g. a remote server) is accepted wherever a model spec is.
"""

from __future__ import annotations

import os
from typing import Any

from lekutils.engine.base import Generator

__all__ = ["open_generator"]


def open_generator(spec: str, *, batch_size: int = 16, adapter_path: str | os.PathLike[str] | None = None,
                   **options: Any) -> Generator:
    """The generator for model ``spec``: an embedded name, a GGUF file, an MLX folder or an HF id
    (the local MLX engine, with an optional LoRA adapter; option ``workers``, default
    ``$LEK_DECODE_WORKERS`` or 1, runs that many engine processes: ``auto`` = one per CPU core, see
    :mod:`lekutils.engine.parallel`), or ``openai:<model>@<url>[,<url>...]``
    (:class:`lekutils.engine.remote.RemoteGenerator`; ``options`` are its
    :class:`~lekutils.engine.remote.RemoteOptions`, e.g. ``in_flight=4, api_key_env="OPENAI_API_KEY"``)."""
    from lekutils.engine import models, remote

    if remote.is_remote(spec):
        if adapter_path is not None:
            raise ValueError(f"{spec}: a remote model takes no local adapter ({adapter_path}); serve the adapter "
                             "with the model (e.g. mlx_lm.server --adapter-path) and use that server's spec")
        return remote.RemoteGenerator(spec, batch_size=batch_size, **options)
    from lekutils.engine.local import Engine
    from lekutils.engine.parallel import ParallelEngine, decode_workers

    workers = decode_workers(options.pop("workers", None))
    if options:
        raise TypeError(f"unknown options for a local model: {sorted(options)}")
    adapter = None if adapter_path is None else str(adapter_path)
    if workers > 1:
        return ParallelEngine(spec, workers=workers, batch_size=batch_size, adapter_path=adapter)
    model, tokenizer = models.load(spec, adapter_path=adapter)
    return Engine(model, tokenizer, batch_size=batch_size, model_spec=spec)
