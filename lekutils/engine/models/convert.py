"""Convert a GGUF file (llama or gemma3 architecture) into an MLX model directory.

The directory holds what ``mlx_lm.load`` reads: ``config.json``, ``model.safetensors``,
``tokenizer.json`` and ``tokenizer_config.json``. Facts this relies on:

- llama.cpp permutes the Q/K rows of llama models for interleaved RoPE; the float conversion
  undoes the permutation (standard HF layout, ``rope_traditional=False``), while the quantized
  path keeps the rows as stored and sets ``rope_traditional=True``.
- llama.cpp stores every Gemma ``*norm.weight`` as ``w + 1``; MLX's Gemma adds the 1 itself.
- K-quants (Q4_K, Q5_K, Q6_K) and Q5_0 are dequantized with ``gguf.quants.dequantize``; MLX's
  ``mx.load`` reads Q4_0/Q4_1/Q8_0 natively as MLX quantized weights.
- Tokenizers are rebuilt from the GGUF metadata with ``transformers``' GGUF tokenizer builders
  (no torch needed).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lekutils.core.errors import DataError, Problem

log = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("llama", "gemma3")

#: Our Gemma turn template: no system role (``chat.build_prompt`` folds the system text into the
#: first user turn), BOS first, ``<start_of_turn>model`` as the generation prompt.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ raise_exception('Gemma has no system role: fold the system text into the first user turn') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_COMMON_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "llama": {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
    "gemma3": {
        "attn_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    },
}


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The MLX/HF parameter name of a GGUF tensor (``.weight`` etc. kept), or None if unknown."""
    if gguf_name in _COMMON_NAMES:
        return _COMMON_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit():
        mapped = _BLOCK_NAMES[arch].get(parts[2])
        if mapped is not None:
            return f"model.layers.{parts[1]}.{mapped}.{parts[3]}"
    return None


class GGUFFile:
    """A parsed GGUF file: metadata as Python values and its tensors (via ``gguf.GGUFReader``)."""

    def __init__(self, path: str | os.PathLike[str]):
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: GGUF file not found")
        try:
            self.reader = GGUFReader(self.path)
        except Exception as e:  # gguf raises ValueError/struct.error/IndexError on bad files
            raise DataError(self.path, f"not a readable GGUF file ({type(e).__name__}: {e})") from e
        self.arch = str(self.get("general.architecture", ""))
        if self.arch not in SUPPORTED_ARCHS:
            raise DataError(self.path, Problem(
                f"unsupported architecture {self.arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})",
                field="general.architecture"))

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value (strings decoded, arrays as lists), or ``default``."""
        from gguf import GGUFValueType

        f = self.reader.fields.get(key)
        if f is None:
            return default
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            if f.types[-1] == GGUFValueType.STRING:
                return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]
            return [f.parts[i][0].item() for i in f.data]
        if t == GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")
        return f.parts[f.data[0]][0].item()

    def arch_get(self, key: str, default: Any = None) -> Any:
        return self.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        v = self.arch_get(key)
        if v is None:
            raise DataError(self.path, Problem("missing metadata", field=f"{self.arch}.{key}"))
        return v


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE -> HF half-split layout)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def model_config(g: GGUFFile, *, quantized: bool = False) -> dict[str, Any]:
    """The ``config.json`` for mlx-lm's model class of this GGUF's architecture."""
    tensor_names = {t.name for t in g.reader.tensors}
    tokens = g.get("tokenizer.ggml.tokens") or []
    n_embd = int(g.require("embedding_length"))
    n_head = int(g.require("attention.head_count"))
    eos = [int(g.get("tokenizer.ggml.eos_token_id", 2))]
    cfg: dict[str, Any] = {
        "hidden_size": n_embd,
        "num_hidden_layers": int(g.require("block_count")),
        "intermediate_size": int(g.require("feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(g.arch_get("attention.head_count_kv", n_head)),
        "rms_norm_eps": float(g.require("attention.layer_norm_rms_epsilon")),
        "vocab_size": int(g.arch_get("vocab_size", len(tokens))),
        "max_position_embeddings": int(g.arch_get("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if g.arch == "llama":
        cfg.update(model_type="llama", rope_theta=float(g.arch_get("rope.freq_base", 10000.0)),
                   rope_traditional=quantized, head_dim=n_embd // n_head)
    else:
        head_dim = int(g.arch_get("attention.key_length", n_embd // n_head))
        n_layer = cfg["num_hidden_layers"]
        cfg.update(
            model_type="gemma3_text", head_dim=head_dim,
            rope_theta=float(g.arch_get("rope.freq_base", 1_000_000.0)), rope_local_base_freq=10_000.0,
            # llama.cpp: Gemma 3 27B (62 layers) scales queries by 1/sqrt(n_embd/n_head), others by 1/sqrt(head_dim)
            query_pre_attn_scalar=(n_embd // n_head) if n_layer == 62 else head_dim,
            sliding_window=int(g.arch_get("attention.sliding_window", 512)), sliding_window_pattern=6,
        )
        factor = g.arch_get("rope.scaling.factor")
        if factor and float(factor) != 1.0:
            cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
        if "<end_of_turn>" in tokens:
            eos.append(tokens.index("<end_of_turn>"))
    cfg["eos_token_id"] = eos
    return cfg


def _tensor_float32(g: GGUFFile, t: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            arr = np.asarray(t.data)
            if t.tensor_type == GGMLQuantizationType.BF16:
                arr = dequantize(arr, t.tensor_type)
            arr = arr.astype(np.float32)
        else:
            arr = dequantize(np.asarray(t.data), t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        return arr.reshape(shape)
    except Exception as e:
        raise DataError(g.path, Problem(
            f"cannot dequantize tensor of type {t.tensor_type.name} ({type(e).__name__}: {e})", field=t.name)) from e


def float_weights(g: GGUFFile) -> dict[str, np.ndarray]:
    """All tensors as float32 numpy arrays under MLX/HF names (Q/K unpermuted, Gemma norms - 1)."""
    n_head = int(g.require("attention.head_count"))
    n_kv = int(g.arch_get("attention.head_count_kv", n_head))
    out: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for t in g.reader.tensors:
        name = hf_name(g.arch, t.name)
        if name is None:
            if t.name.startswith("rope_freqs"):
                continue
            problems.append(Problem(f"unknown tensor for architecture {g.arch!r}", field=t.name))
            continue
        w = _tensor_float32(g, t)
        if g.arch == "llama" and t.name.endswith("attn_q.weight"):
            w = _unpermute(w, n_head)
        elif g.arch == "llama" and t.name.endswith("attn_k.weight"):
            w = _unpermute(w, n_kv)
        if g.arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - 1.0
        out[name] = w
    if problems:
        raise DataError(g.path, problems)
    return out


def quantized_weights(g: GGUFFile) -> dict[str, Any]:
    """Tensors as MLX quantized weights, read natively by ``mx.load`` (Q4_0/Q4_1/Q8_0 files only)."""
    import mlx.core as mx

    try:
        raw = mx.load(str(g.path))
    except Exception as e:
        raise DataError(g.path, f"mx.load cannot read this GGUF natively ({e}); use a float dtype") from e
    out = {}
    for k, v in raw.items():
        base, _, suffix = k.rpartition(".")
        name = hf_name(g.arch, base + ".weight")
        if name is None:
            raise DataError(g.path, Problem(f"unknown tensor for architecture {g.arch!r}", field=k))
        out[name[: -len("weight")] + suffix] = v
    return out


def build_tokenizer_files(g: GGUFFile, out_dir: Path) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` rebuilt from the GGUF metadata."""
    from tokenizers import pre_tokenizers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    tok: dict[str, Any] = {}
    for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        v = g.get(f"tokenizer.{key}")
        if v is not None:
            tok[name] = v
    if "tokens" not in tok:
        raise DataError(g.path, Problem("no tokenizer vocabulary", field="tokenizer.ggml.tokens"))
    try:
        backend, _ = convert_gguf_tokenizer(g.arch, tok)
    except Exception as e:
        raise DataError(g.path, Problem(f"cannot build tokenizer: {e}", field="tokenizer.ggml.model")) from e
    if tok.get("pre_tokenizer_type") == "smollm":  # llama.cpp's smollm pre-tokenizer splits digits
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    backend.save(str(out_dir / "tokenizer.json"))
    tokens = tok["tokens"]

    def special(key: str) -> str | None:
        i = g.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    template = g.get("tokenizer.chat_template")
    if template is None and g.arch == "gemma3":
        template = GEMMA_CHAT_TEMPLATE
    add_bos = g.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = tok.get("tokenizer_type") == "llama"
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": special("bos_token_id"), "eos_token": special("eos_token_id"),
        "unk_token": special("unknown_token_id"), "pad_token": special("padding_token_id"),
        "add_bos_token": bool(add_bos), "add_eos_token": False,
        "model_max_length": int(g.arch_get("context_length", 4096)),
        "clean_up_tokenization_spaces": False,
    }
    if template:
        cfg["chat_template"] = template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")


def convert_gguf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 dtype: str = "float32", source_info: dict | None = None) -> Path:
    """Convert a GGUF file into an MLX model directory at ``out_dir`` (written atomically).

    ``dtype`` is ``float32``, ``float16``, ``bfloat16`` or ``quantized`` (MLX's native reading of
    Q4_0/Q4_1/Q8_0 tensors, as the file stores them).
    """
    import mlx.core as mx

    g = GGUFFile(gguf_path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        quantized = dtype == "quantized"
        cfg = model_config(g, quantized=quantized)
        if quantized:
            weights = quantized_weights(g)
            cfg["quantization"] = {"group_size": 32, "bits": 4}
        else:
            mdt = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}[dtype]
            weights = {k: mx.array(v).astype(mdt) for k, v in float_weights(g).items()}
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        build_tokenizer_files(g, tmp)
        info = {"source": str(g.path), "architecture": g.arch, "dtype": dtype, **(source_info or {})}
        (tmp / "lekutils_source.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (out_dir / "model.safetensors").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s -> %s (%s)", g.path, out_dir, dtype)
    return out_dir
