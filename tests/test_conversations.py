"""Multi-turn distillation driver and the one-example-per-assistant-turn expansion."""

from __future__ import annotations

import pytest

from lekutils.data.conversations import (
    distill_conversation,
    distill_conversations,
    expand_for_training,
    final_answer,
    loss_span,
    user_turns,
)


class FakeEngine:
    """Replies '<conv-first-word>:<n>' where n counts the user turns so far; records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[list[dict]]] = []

    def __call__(self, batch: list[list[dict]]) -> list[str]:
        self.batches.append(batch)
        out = []
        for messages in batch:
            assert messages[-1]["role"] == "user"
            users = [m for m in messages if m["role"] == "user"]
            out.append(f"{users[0]['content'].split()[0]}:{len(users)}")
        return out


def test_turns_are_generated_in_order_and_batched_across_conversations() -> None:
    engine = FakeEngine()
    convs = [["alpha one", "alpha two", "alpha three"], ["beta one"], ["gamma one", "gamma two"]]
    out = distill_conversations(convs, "KERNEL", engine)
    assert [len(b) for b in engine.batches] == [3, 2, 1]
    assert out[0] == [
        {"role": "system", "content": "KERNEL"},
        {"role": "user", "content": "alpha one"}, {"role": "assistant", "content": "alpha:1"},
        {"role": "user", "content": "alpha two"}, {"role": "assistant", "content": "alpha:2"},
        {"role": "user", "content": "alpha three"}, {"role": "assistant", "content": "alpha:3"},
    ]
    assert final_answer(out[1]) == "beta:1" and final_answer(out[2]) == "gamma:2"
    # the engine saw its own earlier replies as context
    assert engine.batches[1][0][2] == {"role": "assistant", "content": "alpha:1"}


def test_batch_size_and_no_system() -> None:
    engine = FakeEngine()
    out = distill_conversations([["a x", "a y"], ["b x", "b y"], ["c x", "c y"]], None, engine, batch_size=2)
    assert [len(b) for b in engine.batches] == [2, 1, 2, 1]
    assert out[2][0] == {"role": "user", "content": "c x"} and len(out[2]) == 4
    assert distill_conversation(["d x"], None, FakeEngine()) == [
        {"role": "user", "content": "d x"}, {"role": "assistant", "content": "d:1"}]


def test_driver_errors() -> None:
    with pytest.raises(ValueError, match="2 replies for 1"):
        distill_conversations([["a"]], None, lambda batch: ["x", "y"])
    with pytest.raises(ValueError, match="no user turn"):
        distill_conversations([[]], None, FakeEngine())
    with pytest.raises(ValueError, match="batch_size"):
        distill_conversations([["a"]], None, FakeEngine(), batch_size=0)


def test_user_turns() -> None:
    assert user_turns({"prompt": "p", "turns": ["a", "b"]}) == ["a", "b"]
    assert user_turns({"prompt": "p"}) == ["p"]
    with pytest.raises(ValueError):
        user_turns({"id": "x", "prompt": "p", "turns": ["a", ""]})


def test_expand_gives_one_example_per_assistant_turn() -> None:
    msgs = distill_conversations([["u1 a", "u2 b", "u3 c"]], "SYS", FakeEngine())[0]
    examples = expand_for_training(msgs, conversation="C1")
    assert [e["turn"] for e in examples] == [1, 2, 3] and {e["turns"] for e in examples} == {3}
    assert all(e["conversation"] == "C1" for e in examples)
    for k, e in enumerate(examples, start=1):
        assert e["messages"][-1] == {"role": "assistant", "content": f"u1:{k}"}
        assert e["messages"] == msgs[:len(e["messages"])]
    assert examples[-1]["messages"] == msgs


def test_expand_rejects_bad_role_orders() -> None:
    with pytest.raises(ValueError, match="no assistant turn"):
        expand_for_training([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="must be"):
        expand_for_training([{"role": "assistant", "content": "x"}])
    with pytest.raises(ValueError, match="must be"):
        expand_for_training([{"role": "user", "content": "x"}, {"role": "user", "content": "y"},
                             {"role": "assistant", "content": "z"}])


@pytest.mark.model
def test_every_assistant_turn_is_trained_once_with_mlx_lm_mask_prompt() -> None:
    """With the embedded model's real tokenizer and mlx-lm's own ChatDataset: the trained span of
    each expanded example is exactly its last assistant turn (plus end-of-turn tokens)."""
    from mlx_lm.tuner.datasets import ChatDataset

    from lekutils.engine.models import load

    _, tok = load("embedded:smollm2-135m-instruct")
    msgs = [{"role": "system", "content": "Be careful."},
            {"role": "user", "content": "How do review rankings work?"},
            {"role": "assistant", "content": "They weigh recency and volume."},
            {"role": "user", "content": "Write twenty fake reviews."},
            {"role": "assistant", "content": "I will not write fake reviews; here is how to ask real customers."}]
    examples = expand_for_training(msgs)
    masked = ChatDataset(examples, tok, mask_prompt=True)
    for i, ex in enumerate(examples):
        tokens, offset = masked.process(masked[i])
        assert (offset, len(tokens)) == loss_span(ex, tok)
        content = ex["messages"][-1]["content"]
        trained = tok.decode(tokens[offset:])
        assert trained.startswith(content)
        assert trained[len(content):].strip() == "<|im_end|>"  # the end-of-turn token, nothing else
    # mlx-lm on the whole conversation trains only the last turn: the first answer would be lost.
    whole = ChatDataset([{"messages": msgs}], tok, mask_prompt=True)
    tokens, offset = whole.process(whole[0])
    assert "They weigh recency" not in tok.decode(tokens[offset:])
