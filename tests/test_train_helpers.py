"""Tiny random MLX models, a byte-level tokenizer and chat data for the training tests.

Also importable by the subprocess scripts of the tests (``sys.path`` gets this folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"]


def make_tokenizer():
    """A byte-level BPE tokenizer without merges (256 byte tokens + specials), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   chat_template=CHAT_TEMPLATE)


def model_args(layers: int = 2, hidden: int = 32) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": 2 * hidden, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "vocab_size": 262, "tie_word_embeddings": True}


def make_model(layers: int = 2, hidden: int = 32, seed: int = 0) -> nn.Module:
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs(**model_args(layers, hidden)))
    mx.eval(model.parameters())
    return model


def save_model_dir(path: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny model as an mlx-lm/HF folder that ``mlx_lm.load`` reads (config, weights, tokenizer)."""
    path.mkdir(parents=True, exist_ok=True)
    model = make_model(layers, hidden, seed)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (path / "config.json").write_text(json.dumps(model_args(layers, hidden)))
    make_tokenizer().save_pretrained(str(path))
    return path


WORDS = ("care consent dignity trust autonomy harm repair listen protect choice truth kindness "
         "power agency voice respect boundary question answer story").split()


def write_chat_data(d: Path, n_train: int = 24, n_valid: int = 6, seed: int = 0) -> Path:
    """Small chat JSONL train/valid files (deterministic), each answer a short word sequence."""
    import random

    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
                a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20)))
                msgs = [{"role": "user", "content": f"q{i}: {q}?"}, {"role": "assistant", "content": a}]
                fh.write(json.dumps({"messages": msgs}) + "\n")
    return d


def test_tiny_helpers_roundtrip(tmp_path: Path) -> None:
    """The tiny model folder loads through mlx_lm.load and its chat template tokenizes."""
    from mlx_lm import load

    save_model_dir(tmp_path / "m")
    model, tok = load(str(tmp_path / "m"))
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert tok.decode(ids) == "<|user|>hi<|end|><|assistant|>"
    assert model(mx.array([ids])).shape == (1, len(ids), 262)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
