"""The ``critical`` trainer and its step selectors: budgets, token-level loss, the judge's answers and cache."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentclone.data import Step, Trajectory
from agentclone.models import load_tokenizer
from agentclone.policies.base import Policy
from agentclone.prompting import ActionFormat
from agentclone.selectors import make_selector, step_budget
from agentclone.selectors.judge import PROMPT_VERSION, LLMJudge, judge_messages
from agentclone.selectors.judge_answer import normalize_category, parse_judge_answer
from agentclone.builders.base import BuildContext, make_builder
from agentclone.builders.critical import CriticalSteps
from agentclone.training import tokenize_trajectories


def traj(n=10, tid="t", success=True, invalid_at=(), progress=None):
    """A TextCraft-like trajectory; ``progress`` maps step -> info (the last step reaches the goal)."""
    progress = progress or {}
    steps = []
    for i in range(n):
        last = i == n - 1 and success
        steps.append(Step(observation=f"observation {i}", thought=f"thought {i}", action=f"get {i} oak log",
                          invalid=i in invalid_at, reward=1.0 if last else 0.0, terminated=last,
                          info={"success": True} if last else progress.get(i, {})))
    return Trajectory(id=f"e:{tid}#0", env_id="e/x-v1", task_id=tid, instructions="Craft things.", success=success,
                      steps=steps)


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return load_tokenizer(smollm2_path)


def loss_spans(tok, row):
    spans, cur = [], []
    for t, m in zip(row["input_ids"], row["assistant_masks"]):
        if m:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


def turn(i):
    return f"Thought: thought {i}\nAction: get {i} oak log<|im_end|>"


# -- budgets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, fraction, min_steps, expected",
    [(10, 0.3, 1, 3), (2, 0.3, 1, 1), (3, 0.3, 1, 1), (5, 0.3, 1, 2), (1, 0.3, 1, 1), (0, 0.3, 1, 0),
     (20, 0.3, 1, 6), (7, 0.5, 1, 4), (4, 1.0, 1, 4), (1, 0.3, 3, 1), (10, 0.3, 5, 5), (2, 0.1, 0, 0)],
)
def test_step_budget(n, fraction, min_steps, expected):
    assert step_budget(n, fraction, min_steps) == expected


@pytest.mark.parametrize("selector", ["progress", "random", "llm-judge"])
def test_budget_is_respected_per_trajectory(selector, tmp_path):
    options = {"cache_dir": str(tmp_path), "fallback": "random"} if selector == "llm-judge" else {}
    judge = ScriptedJudge(lambda messages: "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]")
    sel = LLMJudge(options, judge=judge) if selector == "llm-judge" else None
    builder = CriticalSteps({"selector": selector, "selector_options": options}, selector=sel)
    trajs = [traj(10, "a"), traj(2, "b"), traj(1, "c"), traj(5, "d"), traj(20, "e")]
    built = builder.build(trajs, BuildContext())
    assert [sum(s.loss for s in t.steps) for t in built] == [3, 1, 1, 2, 6]
    for t in built:
        for s in t.steps:
            assert (s.selection is not None) == s.loss
            assert s.selection is None or s.selection["selector"] in (selector, "random")


# -- token level ---------------------------------------------------------------------------------


def test_loss_lies_exactly_on_the_selected_turns_end_of_turn_included(tok):
    t = traj(10, progress={1: {"got": "minecraft:oak_log"}, 3: {"got": "minecraft:stick"},
                           5: {"crafted": "minecraft:oak_planks"}})
    built = CriticalSteps({"selector": "progress"}).build([t], BuildContext())
    picked = [i for i, s in enumerate(built[0].steps) if s.loss]
    # the goal (score 15), the craft (2), then the later of two equal `got` steps (1 each)
    assert picked == [3, 5, 9]
    ds = tokenize_trajectories(built, tok, ActionFormat())
    assert len(ds) == 1  # the whole trajectory is one sample: unselected steps stay as context
    assert loss_spans(tok, ds[0]) == [turn(3), turn(5), turn(9)]
    text = tok.decode(ds[0]["input_ids"])
    assert all(f"observation {i}" in text and f"get {i} oak log" in text for i in range(10))
    goal = built[0].steps[9].selection
    assert goal["selector"] == "progress" and goal["score"] == 15.0 and "reaches the goal" in goal["reason"]


def test_all_selector_is_behaviour_cloning_and_invalid_steps_never_carry_loss(tok):
    t = traj(6, invalid_at=(2,))
    built = CriticalSteps({"selector": "all"}).build([t], BuildContext())
    assert [s.loss for s in built[0].steps] == [True, True, False, True, True, True]
    assert loss_spans(tok, tokenize_trajectories(built, tok, ActionFormat())[0]) == [turn(i) for i in (0, 1, 3, 4, 5)]
    for name in ("random", "progress"):
        for seed in range(5):
            out = CriticalSteps({"selector": name, "budget": 0.9}).build([traj(6, invalid_at=(2, 4))], BuildContext(seed=seed))
            assert not out[0].steps[2].loss and not out[0].steps[4].loss
            assert sum(s.loss for s in out[0].steps) == 4  # round(5.4) = 5, capped at the 4 valid steps


def test_filters_and_thoughts():
    trajs = [traj(4, "ok"), traj(4, "failed", success=False), traj(0, "empty"),
             traj(3, "bad", invalid_at=(0, 1, 2)), traj(3, "err").model_copy(update={"error": "boom"})]
    builder = CriticalSteps({"selector": "progress"})
    built = builder.build(trajs, BuildContext())
    assert [t.task_id for t in built] == ["ok"]
    assert builder.stats.dropped == {"unsuccessful": 1, "empty": 1, "no valid step": 1, "errored": 1}
    kept = CriticalSteps({"selector": "progress", "only_successful": False, "include_thoughts": False}).build(
        trajs[:2], BuildContext())
    assert len(kept) == 2 and all(s.thought is None for t in kept for s in t.steps)
    assert trajs[0].steps[0].thought == "thought 0"  # the input is never modified


def test_random_is_seeded_per_trajectory():
    trajs = [traj(10, f"g{i}") for i in range(8)]

    def picks(seed, ts):
        out = CriticalSteps({"selector": "random"}).build(ts, BuildContext(seed=seed))
        return {t.id: [i for i, s in enumerate(t.steps) if s.loss] for t in out}

    first = picks(0, trajs)
    assert first == picks(0, trajs)
    assert picks(0, trajs[3:5]) == {k: first[k] for k in (trajs[3].id, trajs[4].id)}  # independent of the others
    assert first != picks(1, trajs)
    assert len({tuple(v) for v in first.values()}) > 1


def test_progress_uses_reward_changes_and_breaks_ties_deterministically():
    t = traj(6, success=False)
    t.steps[2].reward = 0.5
    earlier = make_selector("progress", {"prefer": "earlier"}).select(t, 3, BuildContext())
    later = make_selector("progress").select(t, 3, BuildContext())
    assert [i for i, _ in earlier] == [2, 0, 1] and [i for i, _ in later] == [2, 5, 4]
    assert earlier[0][1]["reason"] == "reward +0.5"
    custom = make_selector("progress", {"info_keys": {"door_opened": 3.0}})
    t.steps[4].info = {"door_opened": True}
    assert [i for i, _ in custom.select(t, 2, BuildContext())] == [4, 2]  # 3.0 beats 5 * 0.5


def test_unknown_selector_and_bad_options_are_clear_errors():
    with pytest.raises(KeyError, match="unknown step selector 'oracle'; registered: .*disagreement.*progress"):
        make_builder("critical", {"selector": "oracle"})
    with pytest.raises(ValueError, match="step selector 'llm-judge': option 'max_tokens'.*allowed: backend"):
        make_builder("critical", {"selector": "llm-judge", "selector_options": {"max_tokens": 5}})
    with pytest.raises(ValueError, match="option 'budget'"):
        make_builder("critical", {"budget": 0})
    with pytest.raises(ValueError, match="its own fallback"):
        make_selector("llm-judge", {"fallback": "llm-judge"})
    with pytest.raises(ValueError, match="needs a model"):
        CriticalSteps({"selector": "disagreement"}).build([traj(3)], BuildContext())


# -- the judge's answers -------------------------------------------------------------------------

SHAPES = [
    ('[{"step": 2, "category": "critical action", "reason": "gets the log"}]', [2], ["critical action"]),
    ('```json\n[{"step": 3, "category": "Plan Creation"}]\n```', [3], ["plan creation"]),
    ('Here you go: [{"step_number": "4", "type": "critical_observation"}] hope it helps', [4], ["critical observation"]),
    ('{"critical_steps": [1, 3]}', [1, 3], [None, None]),
    ('{"steps": [{"index": 5, "label": "self-correction", "confidence": 0.8}]}', [5], ["self correction"]),
    ('{"plan creation": [1], "critical action": [3, 4]}', [1, 3, 4], ["plan creation", "critical action", "critical action"]),
    ('{"2": "critical action", "5": {"category": "self correction"}}', [2, 5], ["critical action", "self correction"]),
    ("[{'step': 2, 'category': 'critical action'}]", [2], ["critical action"]),
    ('[{"step": 2, "category": "critical action",},]', [2], ["critical action"]),
    ('[{"step": 2, "category": "critical action"}, {"step": 4, "category": "plan cr', [2, 4], ["critical action", "plan creation"]),
    ('[[3, "critical observation", "sees the recipe"]]', [3], ["critical observation"]),
    ('["Step 2: plan creation", "Step 6: critical action"]', [2, 6], ["plan creation", "critical action"]),
    ("Step 3 is a critical action because it crafts the goal.", [3], ["critical action"]),
    ("The critical steps are steps 2, 4 and 6.", [2, 4, 6], [None, None, None]),
    ("Steps 2-4 form the plan.", [2, 3, 4], ["plan creation"] * 3),
    ("1. Step 5 (self correction): the agent fixes the recipe\n2. Step 1 (plan creation)", [5, 1],
     ["self correction", "plan creation"]),
    ("3: critical observation\n6) critical action", [3, 6], ["critical observation", "critical action"]),
    ("2, 5", [2, 5], [None, None]),
    ("[2, 7]", [2, 7], [None, None]),
    ('[{"step": 2}, {"step": 2}, {"step": "Step 3"}]', [2, 3], [None, None]),
]


@pytest.mark.parametrize("text, steps, categories", SHAPES)
def test_judge_answers_in_many_shapes(text, steps, categories):
    answer = parse_judge_answer(text, 8)
    assert [p.step for p in answer.picks] == steps, answer
    assert [p.category for p in answer.picks] == categories


@pytest.mark.parametrize(
    "text, problem",
    [("", "empty"), (None, "empty"), ("I cannot decide which step matters.", "no step numbers"),
     ("Step 1\nObservation: Goal: craft x\nThought: I need y\nAction: get 1 y\n\nStep 2\nObservation: Got 1 y\n",
      "repeats the demonstration"),
     ('[{"step": 0}, {"step": 12}]', "not a step of this trajectory"), ('[{"step": true}]', "no step numbers"),
     ("{}", "no step numbers"), ("[[[[", "no step numbers")],
)
def test_unusable_answers_say_why(text, problem):
    answer = parse_judge_answer(text, 8)
    assert not answer.ok and problem in "; ".join(answer.problems)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet='[]{}":,0123456789 steptcaionlr-\n', max_size=80)),
       st.integers(min_value=1, max_value=12))
def test_any_answer_parses_without_raising_and_stays_in_range(text, n):
    answer = parse_judge_answer(text, n, [f"get {i} oak log" for i in range(n)])
    steps = [p.step for p in answer.picks]
    assert all(1 <= s <= n for s in steps) and len(steps) == len(set(steps))
    assert answer.ok or answer.problems


def test_answer_quoting_an_action_instead_of_a_number():
    # what SmolLM2-135M writes when asked: categories and a paraphrase of the crafting step
    text = ("The 1st critical step is:\n- plan creation: the agent works out a plan.\n"
            "- critical action: the agent crafts 4 stone stairs using 6 stone.")
    actions = ["get 6 stone", "craft 4 stone stairs using 6 stone"]
    answer = parse_judge_answer(text, 2, actions)
    assert [(p.step, p.category) for p in answer.picks] == [(2, "critical action")] and answer.shape == "quoted-action"
    assert [p.step for p in parse_judge_answer("First: get 6 stone.", 2, actions).picks] == [1]
    # a paraphrase that shares many words with the `get` step still names the crafting step by its verb
    spruce = ["get 4 stripped spruce log", "craft 3 stripped spruce wood using 4 stripped spruce log"]
    line = "- critical action: the agent crafts the stripped spruce wood using 4 stripped spruce log."
    assert [p.step for p in parse_judge_answer(line, 2, spruce).picks] == [2]
    # too vague to tell two crafting steps apart: no pick
    planks = ["get 1 oak log", "craft 4 oak planks using 1 oak log", "craft 1 crafting table using 4 oak planks"]
    assert not parse_judge_answer("the agent crafts the planks", 3, planks).ok


def test_normalize_category():
    assert normalize_category("Critical_Action") == "critical action"
    assert normalize_category("SELF-CORRECTION") == "self correction"
    assert normalize_category("the agent notices the recipe needs sticks") == "critical observation"
    assert normalize_category(["unknown", "planning"]) == "plan creation"
    assert normalize_category("banana") is None and normalize_category(None) is None


# -- the judge, scripted -------------------------------------------------------------------------


class ScriptedJudge(Policy):
    """A judge that answers from a function of the prompt: a unit test of parsing and caching, not a model."""

    name = "scripted"

    def __init__(self, answer, fmt=None, **options):
        super().__init__(fmt)
        self.answer = answer
        self.calls = 0
        self.options = options

    def act(self, requests):
        self.calls += len(requests)
        return [self.answer(r.messages) for r in requests]

    @property
    def model_id(self):
        return "scripted-judge"


def answers_by_task(table):
    """Answer according to the trajectory's goal, which the prompt shows as its first observation."""
    def answer(messages):
        for key, text in table.items():
            if f"Goal: craft item {key}." in messages[1]["content"]:
                return text
        raise AssertionError("unexpected prompt")
    return answer


def test_judge_prompt_numbers_steps_and_names_the_categories():
    t = traj(3, invalid_at=(1,))
    t.steps[0].observation = "x" * 1000
    content = judge_messages(t, 2, max_observation_chars=50)[1]["content"]
    for cat in ("plan creation", "critical observation", "critical action", "self correction"):
        assert cat in content
    assert "Step 1\n" in content and "Step 3\n" in content and "Pick the 2 most critical steps" in content
    assert "(rejected by the environment)" in content and "x" * 51 not in content
    assert "Outcome: the goal was reached." in content


def test_judge_picks_fallbacks_and_counters(tmp_path):
    trajs = [traj(10, f"g{i}") for i in range(4)]
    for i, t in enumerate(trajs):
        t.steps[0].observation = f"Goal: craft item {i}."
    judge = ScriptedJudge(answers_by_task({
        0: '[{"step": 7, "category": "critical action", "reason": "crafts it"}, {"step": 2, "category": "plan"},'
           ' {"step": 9}, {"step": 1}]',   # one more than the budget
        1: "Honestly, every step matters.",  # no step at all: fallback
        2: '[{"step": 4, "category": "self correction"}, {"step": 99}]',  # one usable: filled up
        3: "<|im_end|>\x00 {[ garbage",
    }))
    sel = LLMJudge({"cache_dir": str(tmp_path), "fallback": "progress"}, judge=judge)
    builder = CriticalSteps({"selector": "llm-judge"}, selector=sel)
    built = builder.build(trajs, BuildContext())
    assert judge.calls == 4
    chosen = [[i for i, s in enumerate(t.steps) if s.loss] for t in built]
    assert all(len(c) == 3 for c in chosen)
    assert chosen[0] == [1, 6, 8]
    first = built[0].steps
    assert first[6].selection["category"] == "critical action" and first[6].selection["reason"] == "crafts it"
    assert first[6].selection["rank"] == 1 and first[6].selection["selector"] == "llm-judge"
    assert first[1].selection["category"] == "plan creation" and first[8].selection["category"] == "unspecified"
    # a malformed answer: the fallback's picks (progress: the goal first), marked as such
    fallback = [s.selection for s in built[1].steps if s.loss]
    assert {s["selector"] for s in fallback} == {"progress"} and all(s["fallback_for"] == "llm-judge" for s in fallback)
    assert "malformed judge answer" in fallback[0]["why"]
    assert built[1].steps[9].loss  # progress ranks the goal first
    # one usable pick, two filled in
    third = built[2].steps
    assert third[3].selection["category"] == "self correction"
    assert sum("fallback_for" in (s.selection or {}) for s in third) == 2
    stats = sel.stats
    assert stats["judge_calls"] == 4 and stats["malformed_answers"] == 2 and stats["answers_used"] == 2
    assert stats["fallback_steps"] == 3 + 3 + 2 and stats["picks_beyond_budget"] == 1
    assert builder.report["selector_stats"] == stats
    assert builder.report["selected_by"]["progress (fallback)"] == 8
    assert any("step 99" in p for p in builder.report["judge_problems_sample"])


def test_a_failing_judge_never_crashes_the_build(tmp_path, capsys):
    class BrokenJudge(ScriptedJudge):
        def act(self, requests):
            raise ConnectionError("server down")

    sel = LLMJudge({"cache_dir": str(tmp_path), "fallback": "random"}, judge=BrokenJudge(None))
    built = CriticalSteps({"selector": "llm-judge"}, selector=sel).build([traj(10)], BuildContext())
    assert sum(s.loss for s in built[0].steps) == 3
    assert sel.stats["judge_errors"] == 1 and sel.stats["malformed_answers"] == 1
    assert "server down" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))  # a failed call is not cached


def test_judge_cache_makes_a_rebuild_free(tmp_path):
    trajs = [traj(10, f"g{i}") for i in range(3)]
    for i, t in enumerate(trajs):
        t.steps[0].observation = f"Goal: craft item {i}."
    table = {0: '[{"step": 2, "category": "plan creation"}]', 1: "no idea", 2: "Steps 4, 5 and 6 are critical actions."}

    def build(judge, cache=True, budget=0.3):
        sel = LLMJudge({"cache_dir": str(tmp_path / "cache"), "cache": cache}, judge=judge)
        return CriticalSteps({"selector": "llm-judge", "budget": budget}, selector=sel).build(trajs, BuildContext()), sel

    first_judge = ScriptedJudge(answers_by_task(table))
    first, _ = build(first_judge)
    assert first_judge.calls == 3
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 3
    record = json.loads(files[0].read_text())
    assert record["prompt_version"] == PROMPT_VERSION and record["judge"].startswith("scripted:scripted-judge")

    second_judge = ScriptedJudge(answers_by_task(table))
    second, sel = build(second_judge)
    assert second_judge.calls == 0 and sel.stats["cache_hits"] == 3
    assert [[s.selection for s in t.steps] for t in second] == [[s.selection for s in t.steps] for t in first]

    other_budget = ScriptedJudge(answers_by_task(table))
    build(other_budget, budget=0.5)  # another budget is another question
    assert other_budget.calls == 3
    uncached = ScriptedJudge(answers_by_task(table))
    build(uncached, cache=False)
    assert uncached.calls == 3
    changed = [t.model_copy(deep=True) for t in trajs]
    changed[0].steps[3].action = "get 1 stick"
    trajs[:] = changed
    edited = ScriptedJudge(answers_by_task(table))
    build(edited)
    assert edited.calls == 1  # only the trajectory whose content changed


@pytest.fixture
def scripted_backend():
    from agentclone.plugins import get_registry

    made = []

    def factory(fmt=None, **options):
        judge = ScriptedJudge(lambda m: '[{"step": 1, "category": "plan creation"}]', fmt=fmt, **options)
        made.append(judge)
        return judge

    reg = get_registry()
    reg.policy_backends["scripted-test"] = factory
    yield made
    reg.policy_backends.pop("scripted-test", None)


def test_judge_backend_is_made_from_the_registry_with_its_options(tmp_path, scripted_backend):
    builder = make_builder("critical", {"selector": "llm-judge", "selector_options": {
        "backend": "scripted-test", "model": "judge-model", "cache_dir": str(tmp_path),
        "backend_options": {"base_url": "http://judge:8000/v1"}, "max_new_tokens": 77}})
    built = builder.build([traj(4)], BuildContext(model="student"))
    [judge] = scripted_backend
    assert judge.options["model"] == "judge-model" and judge.options["base_url"] == "http://judge:8000/v1"
    assert judge.options["generation"].max_new_tokens == 77
    assert built[0].steps[0].selection["judge"].startswith("scripted-test:judge-model:")
    # the same build again: served from the cache, no judge is even made
    make_builder("critical", {"selector": "llm-judge", "selector_options": {
        "backend": "scripted-test", "model": "judge-model", "cache_dir": str(tmp_path),
        "backend_options": {"base_url": "http://judge:8000/v1"}, "max_new_tokens": 77}}).build([traj(4)], BuildContext())
    assert len(scripted_backend) == 1


# -- inspect ------------------------------------------------------------------------------------


def test_inspect_shows_the_selection(tmp_path):
    from typer.testing import CliRunner

    from agentclone.cli import app
    from agentclone.data import write_trajectories

    t = traj(10, progress={5: {"crafted": "minecraft:oak_planks"}})
    built = CriticalSteps({"selector": "progress"}).build([t], BuildContext())
    write_trajectories(tmp_path / "train.jsonl", built)
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "train.jsonl"), "--show-selection"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "oak log" in line]
    marked = [line for line in lines if line.lstrip().startswith("*")]
    assert len(lines) == 10 and len(marked) == 3
    assert any("progress (score 15) -- reaches the goal, reward +1" in line for line in marked)
    assert any("progress (score 2) -- crafted oak_planks" in line for line in marked)
