import pytest

from agentclone.data import Step
from agentclone.prompting import ActionFormat, ParseError, build_prompt, stop_after_action


def test_parse_thought_and_action():
    fmt = ActionFormat()
    assert fmt.parse("Thought: need wood.\nAction: get 1 oak log") == ("need wood.", "get 1 oak log")
    assert fmt.parse("thought: x\naction:  craft 1 stick using 2 oak planks \nObservation: ...")[1] == (
        "craft 1 stick using 2 oak planks"
    )
    assert fmt.parse("Action: inventory") == (None, "inventory")


@pytest.mark.parametrize("text", ["", "   ", "I will get wood", "Action:", "Action: " + "x" * 1000])
def test_unparseable_answers_raise_parse_error(text):
    with pytest.raises(ParseError):
        ActionFormat().parse(text)


def test_stop_after_action():
    assert not stop_after_action("Thought: hm\nAction: get 1")
    assert stop_after_action("Thought: hm\nAction: get 1 oak log\n")


def test_history_budget_keeps_instructions_and_task_and_marks_drops():
    fmt = ActionFormat()
    steps = [Step(observation=("task statement" if i == 0 else f"obs {i} " + "x" * 200), action=f"a{i}") for i in range(10)]

    def count(text):
        return len(text) // 4

    msgs = build_prompt("instructions", steps, "now", fmt, count, max_prompt_tokens=400)
    assert msgs[0]["role"] == "system" and "instructions" in msgs[0]["content"]
    assert msgs[1]["content"] == "task statement"
    assert msgs[-1]["content"] == "now"
    assert "earlier turns omitted]" in msgs[3]["content"]
    assert sum(count(m["content"]) + 4 for m in msgs) <= 400 + 20
    full = build_prompt("instructions", steps, "now", fmt, count, max_prompt_tokens=100_000)
    assert len(full) == 1 + 2 * len(steps) + 1
    assert not any("omitted" in m["content"] for m in full)
