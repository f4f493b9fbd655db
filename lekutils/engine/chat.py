"""Chat prompts: the kernel as a system message, folded into the first user turn, or plain text.

Three paths, recorded in :attr:`PromptInfo.format`:

- ``system_role``: the tokenizer's chat template renders a system message (SmolLM2, Llama, Qwen).
- ``folded``: the template has no system role (Gemma): the system text and the user text become
  one user turn, ``system + "\\n\\n" + user`` (what Gemma's own template does).
- ``plain``: no chat template (a base model): ``system + "\\n\\n"`` (if any) ``+ "User: " + user +
  "\\nAssistant:"``, tokenized with the tokenizer's special tokens (BOS where it adds one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMATS = ("system_role", "folded", "plain")
_PROBE = "\x1fLEK_SYSTEM_PROBE\x1f"


@dataclass(frozen=True)
class PromptInfo:
    """A rendered prompt: its token ids, its text and which format path produced it."""

    tokens: list[int]
    text: str
    format: str


def _hf(tokenizer: Any) -> Any:
    """The underlying Hugging Face tokenizer (mlx-lm's TokenizerWrapper forwards attributes)."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(_hf(tokenizer), "chat_template", None))


def supports_system_role(tokenizer: Any) -> bool:
    """Whether the chat template renders a system message's text (cached on the tokenizer)."""
    hf = _hf(tokenizer)
    cached = getattr(hf, "_lek_system_role", None)
    if cached is not None:
        return bool(cached)
    try:
        text = hf.apply_chat_template(
            [{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}],
            add_generation_prompt=True, tokenize=False)
        ok = _PROBE in text
    except Exception:  # templates raise (Gemma: "System role not supported")
        ok = False
    try:
        hf._lek_system_role = ok
    except AttributeError:
        pass
    return ok


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    hf = _hf(tokenizer)
    ids = list(hf.encode(text, add_special_tokens=special))
    bos = getattr(hf, "bos_token_id", None)
    wants_bos = bool(getattr(hf, "add_bos_token", False))
    if wants_bos and bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def build_prompt(tokenizer: Any, user: str, system: str | None = None,
                 history: Sequence[Mapping[str, str]] = ()) -> PromptInfo:
    """Render one user turn (with an optional system text/kernel) ready for generation.

    ``history`` holds the conversation's earlier turns (user/assistant messages, alternating,
    starting with a user turn); ``user`` is then the last user turn. The chat template renders all
    of them; the system text opens the conversation as in a single turn (a system message, or
    folded into the FIRST user turn), so it stays the prompts' common prefix. Without history the
    output is exactly the single-turn prompt.
    """
    hf = _hf(tokenizer)
    turns = _history(history) + [{"role": "user", "content": user}]
    if not has_chat_template(tokenizer):
        text = (f"{system}\n\n" if system else "") + "".join(
            f"User: {m['content']}\n" if m["role"] == "user" else f"Assistant: {m['content']}\n"
            for m in turns[:-1]) + f"User: {user}\nAssistant:"
        return PromptInfo(_encode(tokenizer, text, special=True), text, "plain")
    if system is None:
        messages = turns
        fmt = "system_role" if supports_system_role(tokenizer) else "folded"
    elif supports_system_role(tokenizer):
        messages = [{"role": "system", "content": system}, *turns]
        fmt = "system_role"
    else:
        messages = [{"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}, *turns[1:]]
        fmt = "folded"
    text = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return PromptInfo(_encode(tokenizer, text, special=False), text, fmt)


def _history(history: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The earlier turns as plain dicts, checked: user, assistant, user, ..., ending in an assistant turn."""
    out = [{"role": str(m["role"]), "content": str(m["content"])} for m in history]
    roles = [m["role"] for m in out]
    if roles != ["user", "assistant"] * (len(out) // 2) or len(out) % 2:
        raise ValueError(f"history must alternate user, assistant, ... and end with an assistant turn; got {roles}")
    return out
