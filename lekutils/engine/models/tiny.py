"""Tiny random MLX models and tokenizers for fast integration tests (no download): the one factory.

``tiny("llama")`` / ``tiny("gemma3")`` return ``(model, tokenizer)`` shaped like :func:`lekutils.engine.models.load`'s
output (an mlx-lm model and mlx-lm ``TokenizerWrapper``), small enough that a forward pass takes
milliseconds. ``chat`` picks the template: ``"system"`` (ChatML with a system role), ``"nosystem"``
(Gemma-style turns, raising on a system message) or ``None`` (no template: a base model).

For training: :func:`byte_tokenizer` (byte-level, any text, with a chat template),
:func:`save_model_dir` (a folder that stock ``mlx_lm.load`` reads) and :func:`write_chat_data`
(small deterministic mlx-lm chat JSONL files).
"""

from __future__ import annotations

from typing import Any

WORDS = (
    "the a an and or but of to in on at for with from by is are was were be been it this that these "
    "those i you he she we they me him her us them my your our their what which who when where why how "
    "yes no not good bad kind fair true false help harm people world truth care answer question think "
    "know say tell ask give take make see hear feel want need can will should must may very more most"
).split()
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>", "<start_of_turn>",
            "<end_of_turn>", "system", "user", "assistant", "model")

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TURNS = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + m['content'] + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def tiny_tokenizer(chat: str | None = "system") -> Any:
    """A word-level tokenizer over :data:`WORDS` wrapped in mlx-lm's ``TokenizerWrapper``."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + tuple(w for w in WORDS if w not in SPECIALS))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS[:8]])
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                 unk_token="<unk>", pad_token="<pad>")
    if chat == "system":
        hf.chat_template = CHATML
        eos = [vocab["<eos>"], vocab["<|im_end|>"]]
    elif chat == "nosystem":
        hf.chat_template = TURNS
        eos = [vocab["<eos>"], vocab["<end_of_turn>"]]
    elif chat is None:
        eos = [vocab["<eos>"]]
    else:
        raise ValueError(f"chat must be 'system', 'nosystem' or None, got {chat!r}")
    return TokenizerWrapper(hf, eos_token_ids=eos)


def llama_args(layers: int = 2, hidden: int = 64, vocab_size: int = 256) -> dict[str, Any]:
    """The ``config.json`` fields of a tiny llama (``hidden`` divisible by 4)."""
    return {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": 2 * hidden, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "vocab_size": vocab_size, "rope_theta": 10000.0, "tie_word_embeddings": True}


def tiny_model(arch: str = "llama", vocab_size: int = 256, seed: int = 0, sliding_window: int = 16, *,
               layers: int = 2, hidden: int = 64) -> Any:
    """A randomly initialised float32 mlx-lm model: ``llama`` (``layers`` x ``hidden``) or ``gemma3``
    (3 layers, with a small sliding window)."""
    import mlx.core as mx

    mx.random.seed(seed)
    if arch == "llama":
        from mlx_lm.models import llama

        model = llama.Model(llama.ModelArgs(**llama_args(layers, hidden, vocab_size)))
    elif arch == "gemma3":
        from mlx_lm.models import gemma3_text

        args = gemma3_text.ModelArgs(model_type="gemma3_text", hidden_size=64, num_hidden_layers=3,
                                     intermediate_size=128, num_attention_heads=2, head_dim=32,
                                     num_key_value_heads=1, vocab_size=vocab_size, sliding_window=sliding_window,
                                     sliding_window_pattern=3, query_pre_attn_scalar=32)
        model = gemma3_text.Model(args)
        model.sanitize({})  # no lm_head weight: tie the embeddings, as the real checkpoint does
    else:
        raise ValueError(f"arch must be 'llama' or 'gemma3', got {arch!r}")
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    return model


def tiny(arch: str = "llama", chat: str | None = "system", seed: int = 0, sliding_window: int = 16) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for tests: :func:`tiny_model` and :func:`tiny_tokenizer`."""
    tok = tiny_tokenizer(chat)
    return tiny_model(arch, vocab_size=len(tok.get_vocab()), seed=seed, sliding_window=sliding_window), tok


# --------------------------------------------------------------------------------- training helpers
BYTE_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
BYTE_SPECIALS = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"]
#: Model vocabulary for :func:`byte_tokenizer` (256 bytes + 5 specials, one spare row).
BYTE_VOCAB = 262


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer without merges (256 byte tokens + specials), with a chat template
    (a Hugging Face fast tokenizer, as ``save_pretrained`` writes it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in BYTE_SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(BYTE_SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   chat_template=BYTE_CHAT_TEMPLATE)


def byte_model(layers: int = 2, hidden: int = 32, seed: int = 0) -> Any:
    """A tiny llama for :func:`byte_tokenizer`'s vocabulary (the training tests' model)."""
    return tiny_model("llama", vocab_size=BYTE_VOCAB, seed=seed, layers=layers, hidden=hidden)


def save_model_dir(path: Any, layers: int = 2, hidden: int = 32, seed: int = 0) -> Any:
    """Write :func:`byte_model` as an mlx-lm/HF folder that ``mlx_lm.load`` reads (config, weights,
    tokenizer); returns the folder as a Path."""
    import json
    from pathlib import Path

    import mlx.core as mx
    from mlx.utils import tree_flatten

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = byte_model(layers, hidden, seed)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (path / "config.json").write_text(json.dumps(llama_args(layers, hidden, BYTE_VOCAB)))
    byte_tokenizer().save_pretrained(str(path))
    return path


CHAT_WORDS = ("care consent dignity trust autonomy harm repair listen protect choice truth kindness "
              "power agency voice respect boundary question answer story").split()


def write_chat_data(d: Any, n_train: int = 24, n_valid: int = 6, seed: int = 0, *,
                    question_words: tuple[int, int] = (3, 8), answer_words: tuple[int, int] = (6, 20),
                    words: tuple[str, ...] = ()) -> Any:
    """Chat JSONL train/valid files (deterministic): random questions and answers of ``question_words``
    / ``answer_words`` (min, max) words drawn from ``words`` (default :data:`CHAT_WORDS`)."""
    import json
    import random
    from pathlib import Path

    words = words or tuple(CHAT_WORDS)
    rng = random.Random(seed)
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        with open(d / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                q = " ".join(rng.choice(words) for _ in range(rng.randint(*question_words)))
                a = " ".join(rng.choice(words) for _ in range(rng.randint(*answer_words)))
                msgs = [{"role": "user", "content": f"q{i}: {q}?"}, {"role": "assistant", "content": a}]
                fh.write(json.dumps({"messages": msgs}) + "\n")
    return d
