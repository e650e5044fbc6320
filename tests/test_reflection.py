"""The reflection trainer (Agent-R revision trajectories) and the rounds of self-training.

TextCraft trajectories are played in the real environment, action by action, and recorded the
way the rollout engine records them; only the actions are chosen by hand.
"""

import json
import re

import pytest

from agentclone.data import Step, Trajectory
from agentclone.envs import make_env
from agentclone.models import load_tokenizer
from agentclone.policies.base import Policy
from agentclone.prompting import ActionFormat, assistant_text
from agentclone.builders.base import BuildContext, make_builder
from agentclone.builders.reflection import (
    DEFAULT_REFLECTIONS,
    Reflection,
    ReplayMismatch,
    expert_first_bad_step,
    model_first_bad_steps,
    parse_verdict,
    replay,
)
from agentclone.training import tokenize_trajectories

ENV = "textcraft/craft-v1"
KW = {"max_depth": 1, "num_distractors": 3, "max_steps": 10}
# coarse dirt: the expert's plan is `get 2 dirt`, `get 2 gravel`, `craft 4 coarse dirt using 2 dirt, 2 gravel`
GOOD = ["get 2 dirt", "get 2 gravel", "craft 4 coarse dirt using 2 dirt, 2 gravel"]


def play(actions, task_id="coarse_dirt", tid=None):
    """Play ``actions`` in the real TextCraft and record the trajectory as the rollout engine does."""
    env = make_env(ENV, **KW)
    task = next(t for t in env.tasks("train") if t.id == task_id)
    obs = env.reset(task)
    traj = Trajectory(id=tid or f"{task_id}-{len(actions)}", env_id=ENV, task_id=task_id, split="train",
                      env_kwargs=KW, policy="hand", instructions=env.instructions)
    for a in actions:
        nobs, reward, term, trunc, info = env.step(a)
        traj.steps.append(Step(observation=obs, thought=f"thinking about {a}", action=a, reward=reward,
                               terminated=term, truncated=trunc, invalid=bool(info.get("invalid")), info=info))
        obs = nobs
        if term or trunc:
            break
    traj.final_observation = obs
    traj.success = bool(traj.steps and traj.steps[-1].terminated and traj.steps[-1].reward > 0)
    traj.terminated = bool(traj.steps and traj.steps[-1].terminated)
    return traj


# -- the expert critic ------------------------------------------------------------------------------


def test_expert_critic_names_the_wrong_item_at_step_2():
    t = play(["get 2 dirt", "get 2 sand", "get 2 gravel"])
    v = expert_first_bad_step(t)
    assert v.index == 1 and "get 2 sand" in v.why


def test_expert_critic_names_the_invalid_craft_at_step_3():
    t = play(["get 2 dirt", "get 2 gravel", "craft 4 coarse dirt using 1 dirt, 2 gravel"])
    assert t.steps[2].invalid
    v = expert_first_bad_step(t)
    assert v.index == 2 and "invalid" in v.why


def test_expert_critic_finds_nothing_wrong_in_the_experts_own_path():
    t = play(GOOD)
    assert t.success
    assert expert_first_bad_step(t).index is None
    # a failure that is only short (good steps, ran out) has no bad step either
    assert expert_first_bad_step(play(GOOD[:2])).index is None


def test_textcraft_distance_is_the_remaining_plan():
    env = make_env(ENV, **KW)
    env.reset(next(t for t in env.tasks("train") if t.id == "coarse_dirt"))
    assert env.distance_to_goal() == 3
    env.step("get 2 dirt")
    assert env.distance_to_goal() == 2
    env.step("get 2 sand")  # useless: no closer
    assert env.distance_to_goal() == 2


# -- replay -----------------------------------------------------------------------------------------


def test_replay_reproduces_the_recorded_state():
    t = play(["get 2 dirt", "get 2 sand", "inventory"])
    env, dist = replay(t, 3)
    assert env.inventory == {"minecraft:dirt": 2, "minecraft:sand": 2}
    assert dist == [3, 2, 2, 2]
    env.close()


def test_tampered_trajectory_is_dropped_with_a_counted_reason():
    good = play(["get 2 dirt", "get 2 sand", "get 2 gravel"], tid="ok")
    tampered = play(["get 2 dirt", "get 2 sand", "get 2 gravel"], tid="tampered")
    tampered.steps[1].observation = "Got 3 dirt"  # not what the game said
    with pytest.raises(ReplayMismatch):
        replay(tampered, 3)
    b = Reflection({"success_ratio": None})
    out = b.build([good, tampered], BuildContext(seed=0))
    assert [t.id for t in out] == ["ok/revision"]
    assert b.stats.dropped == {"replay mismatch": 1}


# -- splicing ---------------------------------------------------------------------------------------


def test_revision_splices_prefix_reflection_and_expert_continuation():
    t = play(["get 2 dirt", "get 2 sand", "get 2 sand", "inventory"])
    b = Reflection({"success_ratio": 0})
    [rev] = b.build([t], BuildContext(seed=3))
    assert [s.action for s in rev.steps] == ["get 2 dirt", "get 2 sand", "get 2 gravel",
                                             "craft 4 coarse dirt using 2 dirt, 2 gravel"]
    assert [s.loss for s in rev.steps] == [False, False, True, True]
    reflection = rev.steps[2]
    assert reflection.info["reflection"] and reflection.info["bad_step"] == 1
    # the reflection turn sees what the bad step produced, then says why and gives the expert's thought
    assert reflection.observation == "Got 2 sand"
    assert any(reflection.thought.startswith(r.format(why=reflection.info["why"])) for r in DEFAULT_REFLECTIONS)
    assert reflection.thought.endswith("I need 2 gravel to craft coarse dirt.")
    assert rev.success and rev.steps[-1].reward == 1.0


def test_reflection_sentence_is_seeded():
    fails = [play(["get 2 dirt", "get 2 sand"], tid=f"f{i}") for i in range(6)]

    def thoughts(seed):
        out = Reflection({"success_ratio": 0}).build(fails, BuildContext(seed=seed))
        return sorted(s.thought for t in out for s in t.steps if s.info.get("reflection"))

    assert thoughts(1) == thoughts(1)
    assert len({th.split(":")[0] for th in thoughts(1) + thoughts(2)}) > 1


def test_bad_step_that_ended_the_episode_branches_from_before_it():
    t = play(["get 2 dirt", "inventory", "inventory", "inventory"])
    t.steps[-1].truncated = True  # e.g. the step budget ran out on it
    v = expert_first_bad_step(t)
    assert v.index == 1
    env = make_env(ENV, **KW)
    t2 = play(["get 2 dirt", "get 2 sand"])
    t2.steps[-1].truncated = True
    t2.truncated = True
    rev = Reflection().revise(t2, expert_first_bad_step(t2), __import__("random").Random(0))
    assert [s.action for s in rev.steps][:2] == ["get 2 dirt", "get 2 gravel"]
    assert [s.loss for s in rev.steps] == [False, True, True]
    env.close()


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return load_tokenizer(smollm2_path)


def decoded_loss_spans(tok, row):
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


def test_loss_lies_exactly_on_reflection_and_continuation_tokens(tok):
    fmt = ActionFormat()
    t = play(["get 2 dirt", "get 2 sand", "craft 4 coarse dirt using 2 dirt, 2 sand"])
    [rev] = Reflection({"success_ratio": 0}).build([t], BuildContext(seed=0))
    row = tokenize_trajectories([rev], tok, fmt)[0]
    spans = decoded_loss_spans(tok, row)
    wanted = [assistant_text(s, fmt) for s in rev.steps if s.loss]
    assert len(spans) == len(wanted) == 2
    for span, text in zip(spans, wanted):
        assert span.strip().startswith(text.strip())
        assert span.endswith("<|im_end|>")  # the end of turn is learned too
    assert "I realize" in spans[0] or "mistake" in spans[0] or "wrong" in spans[0] or "error" in spans[0]
    # the bad prefix's assistant turns are all in the text without loss
    no_loss = tok.decode([i for i, m in zip(row["input_ids"], row["assistant_masks"]) if not m])
    prefix = [assistant_text(s, fmt) for s in rev.steps if not s.loss]
    assert len(prefix) == 2 and all(text.strip() in no_loss for text in prefix)
    assert sum(row["assistant_masks"]) == sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in spans)


def test_successes_are_mixed_at_the_configured_ratio():
    fails = [play(["get 2 dirt", "get 2 sand"], tid=f"f{i}") for i in range(2)]
    wins = [play(GOOD, tid=f"w{i}") for i in range(5)]
    b = Reflection({"success_ratio": 1.5})
    out = b.build(fails + wins, BuildContext(seed=0))
    assert b.counts == {"revisions": 2, "successes": 3}
    assert b.stats.dropped == {"success beyond success_ratio": 2}
    assert all(s.loss for t in out if not t.id.endswith("/revision") for s in t.steps)
    all_kept = Reflection({"success_ratio": None}).build(fails + wins, BuildContext(seed=0))
    assert len(all_kept) == 7


def test_registered_and_options_validated():
    assert isinstance(make_builder("reflection", {"critic": "expert"}), Reflection)
    with pytest.raises(ValueError, match="critic"):
        make_builder("reflection", {"critic": "oracle"})


# -- the model critic -------------------------------------------------------------------------------


@pytest.mark.parametrize("text,verdict", [
    ("bad", "bad"), (" Bad.", "bad"), ("The step is GOOD", "good"), ("incorrect: it gets sand", "bad"),
    ("I am not sure", "uncertain"), ("", "uncertain"), (None, "uncertain"), ("uncertain, maybe bad", "uncertain"),
])
def test_verdict_parsing(text, verdict):
    assert parse_verdict(text) == verdict


class ScriptedVerifier(Policy):
    """Answers from a function of the prompt: a test of the critic's plumbing and parsing, not a model."""

    name = "scripted"

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.prompts = []

    def act(self, requests):
        self.prompts += [r.messages[0]["content"] for r in requests]
        return [self.answer(r.messages[0]["content"]) for r in requests]


def test_model_critic_takes_the_first_step_called_bad():
    t = play(["get 2 dirt", "get 2 sand", "get 2 gravel"])

    def answer(prompt):
        judged = re.findall(r"^Step \d+: (.*)$", prompt, re.MULTILINE)[-1]  # the step being judged
        return "Bad." if "sand" in judged or "gravel" in judged else "good"

    verifier = ScriptedVerifier(answer)
    [v] = model_first_bad_steps([t], verifier)
    assert v.index == 1
    assert len(verifier.prompts) == 3 and "(step 2)" in verifier.prompts[1]
    b = Reflection({"critic": "model", "success_ratio": 0}, critic_policy=ScriptedVerifier(lambda p: "unsure"))
    assert b.build([t], BuildContext(seed=0)) == [] and b.stats.dropped == {"no bad step found": 1}


@pytest.mark.slow
def test_model_critic_with_the_real_model_follows_its_answers(smollm2_path):
    """SmolLM2-135M cannot judge these steps (it answers neither good nor bad), so the test checks what
    must hold whatever it answers: one non-empty answer per step, and the critic's first bad step is
    exactly the first step whose own answer parses as ``bad`` (None when none does)."""
    from agentclone.builders.reflection import verifier_messages
    from agentclone.policies.base import GenerationSettings, PolicyRequest, make_policy

    verifier = make_policy("hf", model=str(smollm2_path), stop_at_action=False,
                           generation=GenerationSettings(max_new_tokens=6))
    try:
        t = play(["get 2 dirt", "get 2 sand"])
        answers = verifier.act([PolicyRequest(messages=verifier_messages(t, k)) for k in range(2)])
        assert len(answers) == 2 and all(a.strip() for a in answers)
        first_bad = next((k for k, a in enumerate(answers) if parse_verdict(a) == "bad"), None)
        [v] = model_first_bad_steps([t], verifier)
        assert v.index == first_bad
    finally:
        verifier.close()


# -- rounds -----------------------------------------------------------------------------------------


def test_rounds_section_is_validated():
    from agentclone.recipes import RecipeError, validate_recipe

    base = {"env": {"id": ENV, "kwargs": KW}, "builder": {"name": "reflection"}}
    r = validate_recipe({**base, "rounds": {"count": 3, "start_adapter": "x"}})
    assert r.rounds.count == 3 and r.rounds.baseline.name == "bc"
    assert validate_recipe(base).rounds is None
    with pytest.raises(RecipeError, match="rounds.count"):
        validate_recipe({**base, "rounds": {"count": 0}})
    with pytest.raises(RecipeError, match="allowed keys here: count"):
        validate_recipe({**base, "rounds": {"cuont": 2}})


def test_shipped_recipe_loads():
    from agentclone.recipes import load_recipe

    r = load_recipe("recipes/textcraft_reflection.yaml")
    assert r.rounds.count >= 2 and r.builder.name == "reflection" and r.collect.policy == "hf"
    assert r.collect.generation.temperature > 0


def test_recovery_rate_counts_episodes_with_a_bad_step():
    from agentclone.rounds import round_summary

    recovered = play(["get 2 dirt", "get 2 sand", "get 2 gravel", "craft 4 coarse dirt using 2 dirt, 2 gravel"], tid="r")
    lost = play(["get 2 dirt", "get 2 sand"], tid="l")
    clean = play(GOOD, tid="c")
    s = round_summary([recovered, lost, clean], None)
    assert recovered.success and s["episodes_with_bad_step"] == 2 and s["recovered"] == 1
    assert s["recovery_rate"] == 0.5 and s["success_rate"] == pytest.approx(2 / 3)


def test_match_tokens_reaches_the_target_cycling_if_needed():
    from agentclone.rounds import match_tokens

    pool = [play(GOOD, tid=f"p{i}") for i in range(3)]
    lengths = {"p0": 10, "p1": 20, "p2": 30}
    picked = match_tokens(pool, 100, lengths, seed=0)
    total = sum(lengths[t.id.split("#")[0]] for t in picked)
    assert 100 <= total < 130 and len({t.id for t in picked}) == len(picked)
    assert match_tokens(pool, 100, lengths, seed=0) == picked


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny")
    tok = load_tokenizer(smollm2_path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_two_rounds_end_to_end_each_adapter_continues_the_last(tmp_path, tiny_model_dir):
    """Real TextCraft, a tiny random model (its answers fail: the revisions come from its failures)."""
    from agentclone.pipeline import run_recipe
    from agentclone.recipes import validate_recipe

    recipe = validate_recipe({
        "env": {"id": ENV, "kwargs": {**KW, "max_steps": 4}}, "model": str(tiny_model_dir),
        "collect": {"policy": "hf", "generation": {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 8},
                    "rollout": {"concurrency": 8, "max_consecutive_invalid": 2}},
        "builder": {"name": "reflection", "options": {"success_ratio": 1.0}},
        # no baseline chain here, to keep the test short (match_tokens is tested above)
        "rounds": {"count": 2, "collect_episodes": 3, "baseline": None},
        "train": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "logging_steps": 1},
        "eval": {"episodes": 2, "generation": {"max_new_tokens": 8, "batch_size": 8},
                 "rollout": {"concurrency": 8, "max_consecutive_invalid": 2}},
    })
    result = run_recipe(recipe, tmp_path)
    rows = result["rounds"]
    assert [(r["round"], r["chain"]) for r in rows] == [(0, "start"), (1, "reflection"), (2, "reflection")]
    meta2 = json.loads((tmp_path / "round-2" / "adapter" / "agentclone.json").read_text())
    assert meta2["init_adapter"] == str(tmp_path / "round-1" / "adapter")
    built = json.loads((tmp_path / "round-1" / "build.json").read_text())
    assert built["builder"] == "reflection" and built["report"]["revisions"] >= 1
    saved = json.loads((tmp_path / "rounds.json").read_text())["rounds"]
    assert all(r["episodes"] == 2 and "recovery_rate" in r for r in saved)
    assert "| 2 | reflection |" in (tmp_path / "rounds.md").read_text()
    # a rerun finds every stage done
    again = run_recipe(recipe, tmp_path)["rounds"]
    assert [r["success_rate"] for r in again] == [r["success_rate"] for r in rows]
