"""The optional LLM scenario writer, driven by a fake generator."""

from __future__ import annotations

import json

import pytest

from lekutils.data.writer import parse_reply, write_scenarios, writer_requests

EVAL = [{"id": "E1", "domain": "x", "prompt": "A hospital's triage model ranks emergency patients by how urgent "
         "their symptoms are, and an audit shows a pattern of neglect for older patients."}]


def _phase2_reply(i: int) -> str:
    names = [f"Ada{i} Kim", f"Bo{i} Lund", f"Cy{i} Oduya"]
    prompt = (f"A harbour authority (case {i}) debates a sensor plan number {i} with unusual detail {i * 7}. "
              f"{names[0]} wants lower costs for the {i}th budget; {names[1]} fears the loss of {i + 2} jobs; "
              f"{names[2]} insists on privacy for {i * 3} fishing families. Mediate between them.")
    people = [{"name": n, "role": r, "interest": t}
              for n, r, t in zip(names, ["treasurer", "union delegate", "advocate"], ["cost", "jobs", "privacy"],
                                 strict=True)]
    return "```json\n" + json.dumps({"prompt": prompt, "stakeholders": people}) + "\n```"


def test_requests_are_deterministic_and_name_the_banks() -> None:
    a = writer_requests(2, 5, seed=3)
    assert [r.prompt for r in a] == [r.prompt for r in writer_requests(2, 5, seed=3)]
    assert [r.prompt for r in a] != [r.prompt for r in writer_requests(2, 5, seed=4)]
    assert all("stakeholders" in r.prompt and r.fields["domain"] for r in a)
    assert len({r.id for r in a}) == 5
    with pytest.raises(ValueError):
        writer_requests(9, 1)


def test_valid_replies_become_records() -> None:
    seen: list[list[str]] = []

    def fake(prompts: list[str]) -> list[str]:
        seen.append(prompts)
        return [_phase2_reply(i) for i in range(len(prompts))]

    res = write_scenarios(fake, 2, 4, eval_probes=EVAL)
    assert len(seen) == 1 and len(seen[0]) == 4
    assert res.rejected == [] and len(res.records) == 4
    rec = res.records[0]
    assert rec["source"] == "writer" and rec["phase"] == 2 and len(rec["stakeholders"]) == 3
    assert rec["id"] == rec["scenario"]


def test_bad_replies_are_rejected_with_reasons() -> None:
    req = writer_requests(2, 1)[0]
    good = json.loads(_phase2_reply(1).strip("`json\n"))
    with pytest.raises(ValueError, match="no JSON object"):
        parse_reply("I cannot help with that.", req)
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_reply("{prompt: nope}", req)
    with pytest.raises(ValueError, match="3-5 people"):
        parse_reply(json.dumps({**good, "stakeholders": good["stakeholders"][:2]}), req)
    with pytest.raises(ValueError, match="does not name"):
        parse_reply(json.dumps({**good, "prompt": good["prompt"].replace("Ada1 Kim", "someone")}), req)
    with pytest.raises(ValueError, match="characters"):
        parse_reply(json.dumps({**good, "prompt": "Too short."}), req)


def test_near_duplicates_of_bank_each_other_and_eval_are_dropped() -> None:
    existing = [{"id": "MP_X", "domain": "x", "prompt": json.loads(_phase2_reply(0).strip("`json\n"))["prompt"]}]

    def fake(prompts: list[str]) -> list[str]:
        replies = [_phase2_reply(0), _phase2_reply(5), _phase2_reply(5)]
        evil = json.loads(_phase2_reply(9).strip("`json\n"))
        evil["prompt"] = EVAL[0]["prompt"] + " " + " ".join(p["name"] for p in evil["stakeholders"])
        return [*replies, json.dumps(evil)]

    res = write_scenarios(fake, 2, 4, existing=existing, eval_probes=EVAL)
    assert len(res.records) == 1
    reasons = dict(res.rejected)
    assert len(reasons) == 3
    ids = [r.id for r in writer_requests(2, 4)]
    assert reasons[ids[0]].startswith("near_duplicate") and "MP_X" in reasons[ids[0]]
    assert reasons[ids[2]].startswith("near_duplicate")
    assert reasons[ids[3]].startswith("heldout") and "E1" in reasons[ids[3]]


def test_escalation_replies_need_turns() -> None:
    reqs = [r for r in writer_requests(3, 40) if r.fields["category"] == "gradual_escalation"]
    assert reqs, "the writer should ask for some multi-turn escalations"
    rec = parse_reply(json.dumps({"turns": ["How do locks work?", "Which locks are weakest?",
                                            "How do I open my neighbour's door while she is away?"]}), reqs[0])
    assert rec["prompt"] == "How do locks work?" and len(rec["turns"]) == 3
    assert rec["safety_review"] == "required"
    with pytest.raises(ValueError, match="turns"):
        parse_reply(json.dumps({"prompt": "One message only, which is not enough here."}), reqs[0])


def test_generator_must_answer_every_prompt() -> None:
    with pytest.raises(ValueError, match="replies"):
        write_scenarios(lambda prompts: [], 0, 2, eval_probes=EVAL)
