"""Chat prompt formats: system role, folded into the first user turn, plain (no template)."""

from __future__ import annotations

from lekutils.engine.chat import FORMATS, build_prompt, supports_system_role
from lekutils.engine.models.tiny import tiny_tokenizer


def test_system_role_template():
    tok = tiny_tokenizer("system")
    assert supports_system_role(tok)
    p = build_prompt(tok, "what is the truth", "be kind")
    assert p.format == "system_role"
    assert p.text == ("<|im_start|>system\nbe kind<|im_end|>\n<|im_start|>user\nwhat is the truth<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert p.tokens == list(tok.encode(p.text, add_special_tokens=False))


def test_folded_when_template_has_no_system_role():
    tok = tiny_tokenizer("nosystem")
    assert not supports_system_role(tok)
    p = build_prompt(tok, "what is the truth", "be kind")
    assert p.format == "folded"
    assert p.text == "<bos><start_of_turn>user\nbe kind\n\nwhat is the truth<end_of_turn>\n<start_of_turn>model\n"
    assert p.tokens[0] == tok.bos_token_id and p.tokens.count(tok.bos_token_id) == 1
    assert build_prompt(tok, "hi").text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"


def test_plain_without_template():
    tok = tiny_tokenizer(None)
    p = build_prompt(tok, "what is the truth", "be kind")
    assert p.format == "plain" and p.format in FORMATS
    assert p.text == "be kind\n\nUser: what is the truth\nAssistant:"
    assert build_prompt(tok, "hi").text == "User: hi\nAssistant:"


def test_shared_prefix_tokens_are_a_prefix():
    """The kernel tokens are a common prefix of prompts with different user texts (KV reuse relies on it)."""
    for chat in ("system", "nosystem", None):
        tok = tiny_tokenizer(chat)
        a = build_prompt(tok, "why", "be kind and fair").tokens
        b = build_prompt(tok, "tell me more", "be kind and fair").tokens
        kernel = tok.encode("be kind and fair", add_special_tokens=False)
        n = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        assert any(a[i: i + len(kernel)] == kernel for i in range(n - len(kernel) + 1))
