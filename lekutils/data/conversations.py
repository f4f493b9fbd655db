"""Multi-turn conversations (phase 3, gradual escalation): distil them turn by turn, train on every turn.

**Distillation.** A record with ``turns`` (several user turns) becomes a conversation whose
assistant turns the model writes in order: :func:`distill_conversations` appends user turn ``t`` to
every conversation that has one, asks ``generate_turn`` for all of them in one batch (any callable
``list[list[message]] -> list[str]``: the local engine, a remote backend, a test fake), appends the
replies and moves on to turn ``t + 1``. The caller scores the final answer
(:func:`final_answer`) and keeps or drops the whole conversation.

**Training with loss on every assistant turn.** mlx-lm (checked in the installed 0.32.2,
``mlx_lm/tuner/datasets.py``, ``ChatDataset.process``) tokenizes ``{"messages": [...]}`` with the
tokenizer's chat template and, with ``mask_prompt``, sets the loss offset to the length of
``apply_chat_template(messages[:-1], add_generation_prompt=True)``: only the **last** message is
trained; every earlier assistant turn is prompt. Without ``mask_prompt`` every token is trained,
the user turns and the system prompt included. So :func:`expand_for_training` writes one training
example per assistant turn, each the conversation up to and including that turn: with
``mask_prompt`` each assistant turn is trained exactly once, in the context the model saw when it
wrote it, and no user text is trained. Costs and caveats: a conversation with ``k`` assistant turns
contributes ``k`` examples (weight them if that matters: they carry ``turn``/``turns``), the
shared prefix is processed ``k`` times, and mlx-lm truncates a sequence longer than
``max_seq_length`` from the end, which would cut off exactly the trained turn: use
:func:`loss_span` to drop or shorten such examples. The examples of one conversation must land in
the same train/valid split (they carry ``conversation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Message = dict[str, str]
GenerateTurn = Callable[[list[list[Message]]], list[str]]


def user_turns(record: Mapping[str, Any]) -> list[str]:
    """A record's user turns: its ``turns`` where present, else ``[prompt]``."""
    turns = record.get("turns")
    if turns:
        if not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"record {record.get('id')!r}: every turn must be a non-empty string")
        return list(turns)
    return [str(record["prompt"])]


def distill_conversations(conversations: Sequence[Sequence[str]], system: str | None,
                          generate_turn: GenerateTurn, *, batch_size: int | None = None) -> list[list[Message]]:
    """Generate the assistant turns of many conversations in order, batched across conversations.

    ``conversations`` are lists of user turns (any lengths); ``system`` (the kernel, or ``None``)
    opens every conversation. ``generate_turn`` receives a batch of message lists (copies), each
    ending in a user turn, and returns one reply per list. ``batch_size`` (default: all active
    conversations) splits each turn's batch. Returns the full message lists, in input order.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, conv in enumerate(conversations):
        if not conv:
            raise ValueError(f"conversation {i} has no user turn")
    opening = [{"role": "system", "content": system}] if system else []
    messages: list[list[Message]] = [list(opening) for _ in conversations]
    n_turns = max((len(c) for c in conversations), default=0)
    for t in range(n_turns):
        active = [i for i, conv in enumerate(conversations) if t < len(conv)]
        for i in active:
            messages[i].append({"role": "user", "content": conversations[i][t]})
        step = batch_size or len(active)
        for start in range(0, len(active), step):
            chunk = active[start:start + step]
            replies = generate_turn([[dict(m) for m in messages[i]] for i in chunk])
            if len(replies) != len(chunk):
                raise ValueError(f"generate_turn returned {len(replies)} replies for {len(chunk)} conversations")
            for i, reply in zip(chunk, replies, strict=True):
                messages[i].append({"role": "assistant", "content": str(reply)})
    return messages


def distill_conversation(turns: Sequence[str], system: str | None, generate_turn: GenerateTurn) -> list[Message]:
    """One conversation: see :func:`distill_conversations`."""
    return distill_conversations([turns], system, generate_turn)[0]


def final_answer(messages: Sequence[Mapping[str, str]]) -> str:
    """The last assistant turn (what the score gate scores)."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return m["content"]
    raise ValueError("conversation has no assistant turn")


def _check_roles(messages: Sequence[Mapping[str, str]]) -> None:
    roles = [m.get("role") for m in messages]
    body = roles[1:] if roles and roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if not body or body != expected[:len(body)]:
        raise ValueError(f"messages must be [system], user, assistant, user, assistant, ...; got {roles}")
    for m in messages:
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {m!r}: content must be a string")


def expand_for_training(messages: Sequence[Mapping[str, str]], **extra: Any) -> list[dict[str, Any]]:
    """One mlx-lm chat example per assistant turn, each ending in that turn (train with ``mask_prompt``).

    ``messages`` alternate user/assistant after an optional system message. Each example is
    ``{"messages": messages[:i + 1], "turn": k, "turns": n, **extra}`` for the ``k``-th of ``n``
    assistant turns (1-based); pass e.g. ``conversation=<id>`` to keep one conversation's examples
    in one split. mlx-lm reads only ``messages`` (and ``tools``), so the extra keys are harmless.
    """
    _check_roles(messages)
    ends = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not ends:
        raise ValueError("conversation has no assistant turn to train on")
    return [{"messages": [dict(m) for m in messages[:i + 1]], "turn": k, "turns": len(ends), **extra}
            for k, i in enumerate(ends, start=1)]


def loss_span(example: Mapping[str, Any], tokenizer: Any) -> tuple[int, int]:
    """``(offset, length)`` of the tokens mlx-lm trains for this example with ``mask_prompt``.

    The same computation as ``mlx_lm.tuner.datasets.ChatDataset.process``: the trained tokens are
    ``tokens[offset:length]``. An example with ``length > max_seq_length`` loses (part of) its
    trained turn to truncation.
    """
    messages = example["messages"]
    tools = example.get("tools")
    tokens = tokenizer.apply_chat_template(messages, tools=tools, return_dict=False)
    add_gen = messages[-1].get("role") == "assistant"
    offset = len(tokenizer.apply_chat_template(messages[:-1], tools=tools, add_generation_prompt=add_gen,
                                               return_dict=False))
    return offset, len(tokens)
