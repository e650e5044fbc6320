"""Preference objectives on the agent's mistakes: sample files, the step-pairs / kto-labels / eto-pairs builders,
the dpo and kto objectives (reference = the start adapter, assistant-only scoring of ETO continuations)."""

import json

import pytest
import torch

from agentclone import hookimpl
from agentclone.building import BuildContext
from agentclone.data import ExpertLabel, Step, Trajectory, write_trajectories
from agentclone.models import load_tokenizer
from agentclone.plugins import build_registry, use_registry
from agentclone.preferences import (
    LabelledCompletion,
    PreferenceFileError,
    PreferencePair,
    read_preference_file,
    tokenize_completion,
)
from agentclone.training import TrainSettings, build_trl_config, is_adapter_complete, train_lora

from test_disagreement import tiny_model  # noqa: F401  (a fixture)


class PreferencePlugin:
    """Registers the preference builders and objectives the way agentclone.builtins will."""

    @hookimpl
    def register_builders(self, register):
        from agentclone.builders.preference import ETOPairs, KTOLabels, StepPairs

        register("step-pairs", StepPairs)
        register("kto-labels", KTOLabels)
        register("eto-pairs", ETOPairs)

    @hookimpl
    def register_objectives(self, register):
        from agentclone.objectives.dpo import DPO
        from agentclone.objectives.kto import KTO

        register("dpo", DPO)
        register("kto", KTO)


@pytest.fixture
def registry():
    with use_registry(build_registry(extra_plugins={"pref": PreferencePlugin()})) as reg:
        yield reg


def rollout(tid="t", success=False, rep=0):
    """The agent: a wrong item, an unparsable answer, then the expert's action, then a state the expert cannot judge."""
    return Trajectory(id=f"e:{tid}#{rep}", env_id="e/x-v1", task_id=tid, instructions="Craft things.", success=success,
                      steps=[
        Step(observation=f"Goal: craft 4 oak planks ({tid}).", thought="I need birch.", action="get 1 birch log",
             expert=ExpertLabel(action="get 1 oak log", thought="Planks need 1 oak log.")),
        Step(observation="Got 1 birch log.", action="", invalid=True, raw_output="planks please",
             info={"invalid": True, "parse_error": True},
             expert=ExpertLabel(action="get 1 oak log", thought="I still need 1 oak log.")),
        Step(observation="Invalid action: no 'Action:' line found.", thought="Get oak.", action="Get 1 oak log.",
             expert=ExpertLabel(action="get 1 oak log", thought="I need 1 oak log.")),
        Step(observation="Got 1 oak log.", thought="Craft.", action="craft 4 oak planks using 1 oak log",
             expert=ExpertLabel(error="the expert cannot act from this state")),
    ])


def demo(tid="t"):
    return Trajectory(id=f"x:{tid}#0", env_id="e/x-v1", task_id=tid, instructions="Craft things.", success=True, steps=[
        Step(observation=f"Goal: craft 4 oak planks ({tid}).", thought="Planks need 1 oak log.", action="get 1 oak log"),
        Step(observation="Got 1 oak log.", thought="Craft.", action="craft 4 oak planks using 1 oak log"),
    ])


SYSTEM = ("Craft things.\nAnswer with one line 'Thought: <your reasoning>' then one line 'Action: <action>'.")


# -- sample files -------------------------------------------------------------------------------
def test_sample_files_round_trip_and_a_malformed_record_names_file_line_and_field(tmp_path):
    pair = PreferencePair(id="p", prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                          chosen=[{"role": "assistant", "content": "Action: a"}],
                          rejected=[{"role": "assistant", "content": "Action: b"}])
    label = LabelledCompletion(id="l", prompt=pair.prompt, completion=pair.chosen, desirable=True)
    path = tmp_path / "train.jsonl"
    write_trajectories(path, [pair, label])
    assert read_preference_file(path) == [pair, label]
    assert isinstance(read_preference_file(path)[0].prompt[0], dict)  # plain chat messages
    assert pair.content_hash() == PreferencePair.model_validate_json(pair.to_json_line()).content_hash()
    assert pair.content_hash() != pair.model_copy(update={"rejected": [{"role": "assistant", "content": "x"}]}).content_hash()
    with pytest.raises(PreferenceFileError, match=r"train.jsonl:2: a labelled completion .* where preference pair"):
        read_preference_file(path, kind="preference")

    good = pair.model_dump()
    cases = [
        ({k: v for k, v in good.items() if k != "rejected"}, r"bad.jsonl:2: field 'rejected': Field required"),
        ({**good, "prompt": [{"role": "robot", "content": "s"}, good["prompt"][1]]}, r"bad.jsonl:2: field 'prompt.0.role'"),
        ({**good, "prompt": good["prompt"][1:]}, r"bad.jsonl:2: field 'prompt': the prompt must start with the system"),
        ({**good, "chosen": [{"role": "user", "content": "x"}]}, r"bad.jsonl:2: field 'chosen': a continuation must start"),
        ({**good, "rejected": good["chosen"]}, r"bad.jsonl:2: .*chosen and rejected are the same"),
        ({**good, "surprise": 1}, r"bad.jsonl:2: field 'surprise': Extra inputs"),
        (json.loads(rollout().to_json_line()), r"bad.jsonl:2: neither a preference pair.*trajectory"),
    ]
    for record, message in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(pair.to_json_line() + "\n" + json.dumps(record) + "\n")
        with pytest.raises(PreferenceFileError, match=message):
            read_preference_file(bad)
    bad.write_text(pair.to_json_line() + "\n{not json\n")
    with pytest.raises(PreferenceFileError, match=r"bad.jsonl:2: not valid JSON"):
        read_preference_file(bad)


# -- builders -----------------------------------------------------------------------------------
def test_step_pairs_the_experts_answer_over_the_agents_own_at_each_disagreement(registry):
    from agentclone.builders.base import make_builder

    builder = make_builder("step-pairs")
    assert builder.sample_kind == "preference"
    pairs = builder.build([rollout(), rollout("ok", success=True)], BuildContext())
    assert [p.id for p in pairs] == ["e:t#0@0", "e:t#0@1", "e:ok#0@0", "e:ok#0@1"]
    first, second = pairs[:2]
    assert first.prompt == [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "Goal: craft 4 oak planks (t)."}]
    assert first.chosen == [{"role": "assistant", "content": "Thought: Planks need 1 oak log.\nAction: get 1 oak log"}]
    assert first.rejected == [{"role": "assistant", "content": "Thought: I need birch.\nAction: get 1 birch log"}]
    # the agent's own history is the prompt; where its answer did not parse, its raw text is the rejected answer
    assert [m["role"] for m in second.prompt] == ["system", "user", "assistant", "user"]
    assert second.prompt[2]["content"] == first.rejected[0]["content"]
    assert second.rejected == [{"role": "assistant", "content": "planks please"}]
    assert second.chosen[0]["content"] == "Thought: I still need 1 oak log.\nAction: get 1 oak log"
    # state 2 agreed ("Get 1 oak log." is the expert's action), state 3 has no expert action
    assert builder.report["disagreements"] == 4 and builder.report["states_without_expert"] == 2
    assert builder.report["pairs"] == 4 and builder.report["pairs_on_invalid_answers"] == 2
    assert builder.stats.trajectories_out == 4

    only_first = make_builder("step-pairs", {"states": "first_disagreement", "only_failed": True,
                                             "include_thoughts": False})
    pairs = only_first.build([rollout(), rollout("ok", success=True)], BuildContext())
    assert [p.id for p in pairs] == ["e:t#0@0"] and pairs[0].chosen[0]["content"] == "Action: get 1 oak log"
    assert only_first.stats.dropped == {"successful (only_failed)": 1}
    unlabelled = rollout()
    for s in unlabelled.steps:
        s.expert = None
    aggregated = make_builder("step-pairs", {"aggregate": True})
    pairs = aggregated.build([unlabelled], BuildContext(earlier_rollouts=[[rollout("old")]]))
    assert [p.id for p in pairs] == ["e:old#0@0~round_1", "e:old#0@1~round_1"]
    assert aggregated.stats.dropped == {"no expert labels (collect with expert_labels: true)": 1}
    assert aggregated.report["pairs_round_1"] == 2


def test_kto_labels_agreements_desirable_disagreements_not(registry):
    from agentclone.builders.base import make_builder

    builder = make_builder("kto-labels")
    assert builder.sample_kind == "labelled"
    samples = builder.build([rollout()], BuildContext())
    assert [(s.id, s.desirable) for s in samples] == [("e:t#0@0:agent", False), ("e:t#0@1:agent", False),
                                                      ("e:t#0@2:agent", True)]
    assert samples[1].completion == [{"role": "assistant", "content": "planks please"}]
    assert samples[2].completion == [{"role": "assistant", "content": "Thought: Get oak.\nAction: Get 1 oak log."}]
    assert len(samples[2].prompt) == 6
    with_expert = make_builder("kto-labels", {"expert_at_disagreements": True, "agreements": False})
    samples = with_expert.build([rollout()], BuildContext())
    assert [(s.id, s.desirable) for s in samples] == [("e:t#0@0:agent", False), ("e:t#0@0:expert", True),
                                                      ("e:t#0@1:agent", False), ("e:t#0@1:expert", True)]
    assert samples[1].completion[0]["content"] == "Thought: Planks need 1 oak log.\nAction: get 1 oak log"
    assert with_expert.report["desirable"] == 2 and with_expert.report["undesirable"] == 2


def test_eto_pairs_the_experts_continuation_over_the_agents_failed_one(registry):
    from agentclone.builders.base import make_builder

    builder = make_builder("eto-pairs")
    assert builder.uses_expert_demos and builder.sample_kind == "preference"
    other_start = demo("moved")
    other_start.steps[0].observation = "Goal: something else."
    ctx = BuildContext(expert_demos=[demo("t"), demo("moved"), other_start.model_copy(update={"success": False})])
    moved = rollout("moved")
    moved.steps[0].observation = "Goal: a different first observation."
    pairs = builder.build([rollout("t"), rollout("t", rep=1), rollout("ok", success=True), rollout("nodemo"), moved], ctx)
    assert [p.id for p in pairs] == ["e:t#0~x:t#0", "e:t#1~x:t#0"]
    pair = pairs[0]
    assert pair.level == "trajectory"
    assert pair.prompt == [{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": "Goal: craft 4 oak planks (t)."}]
    assert [m["role"] for m in pair.chosen] == ["assistant", "user", "assistant"]
    assert pair.chosen[1] == {"role": "user", "content": "Got 1 oak log."}
    assert [m["role"] for m in pair.rejected] == ["assistant", "user"] * 3 + ["assistant"]
    assert pair.rejected[2] == {"role": "assistant", "content": "planks please"}
    assert builder.stats.dropped == {"successful": 1, "no expert demonstration of its task": 1,
                                     "the expert demonstration starts from another first observation": 1}
    one = make_builder("eto-pairs", {"max_pairs_per_task": 1, "include_thoughts": False})
    pairs = one.build([rollout("t"), rollout("t", rep=1)], ctx)
    assert len(pairs) == 1 and pairs[0].chosen[0]["content"] == "Action: get 1 oak log"


# -- tokenisation and the objectives ------------------------------------------------------------
def eto_pair():
    from agentclone.builders.preference import ETOPairs

    return ETOPairs().build([rollout("t")], BuildContext(expert_demos=[demo("t")]))[0]


def test_completion_mask_covers_exactly_the_assistant_turns(smollm2_path):
    tok = load_tokenizer(smollm2_path)
    pair = eto_pair()
    prompt_ids, ids, mask = tokenize_completion(tok, pair.prompt, pair.rejected)
    assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    scored = tok.decode([t for t, m in zip(ids, mask) if m])
    unscored = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert scored == "".join(m["content"] + "<|im_end|>" for m in pair.rejected if m["role"] == "assistant")
    for m in pair.rejected:
        if m["role"] == "user":
            assert m["content"] in unscored and m["content"] not in scored
    assert tok.decode(ids).endswith("Action: craft 4 oak planks using 1 oak log<|im_end|>")


def make_init_adapter(base_dir, out, scale=0.5):
    """A LoRA adapter whose policy clearly differs from the base model's (B is not zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, scale)
    model.save_pretrained(out)
    return out


def completion_logp(model, tok, prompt, completion):
    """log p(completion | prompt) summed over the assistant tokens, by a plain forward pass."""
    prompt_ids, ids, mask = tokenize_completion(tok, prompt, completion)
    full = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=full).logits[0].float(), dim=-1)
    p = len(prompt_ids)
    return sum(float(logp[p + i - 1, t]) for i, (t, m) in enumerate(zip(ids, mask)) if m)


SETTINGS = dict(max_steps=2, batch_size=2, save_steps=100, logging_steps=1, learning_rate=0.01, group_by_length=False,
                warmup_ratio=0.0)


def step_pairs():
    from agentclone.builders.preference import StepPairs

    return StepPairs().build([rollout("a"), rollout("b")], BuildContext())


def models(tiny_model, init):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    start = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(init)).eval()
    return base, start


@pytest.mark.parametrize("name", ["dpo", "kto"])
def test_the_reference_is_the_start_adapter_not_the_base_model(registry, tmp_path, tiny_model, name):
    """The measurement behind the objectives' policy_model: TRL's reference log-probabilities (precomputed
    here, so they can be read) are those of base + init adapter, and differ from the bare base model's."""
    from transformers import AutoModelForCausalLM

    from agentclone.objectives import make_objective

    init = make_init_adapter(tiny_model, tmp_path / "init")
    tok = load_tokenizer(tiny_model)
    base, start = models(tiny_model, init)
    objective = make_objective(name)
    samples = step_pairs()
    settings = TrainSettings(**SETTINGS, objective=name, trl={"precompute_ref_log_probs": True})
    config = build_trl_config(objective, settings, str(tmp_path / "ckpt"), progress=False)
    dataset = objective.dataset(samples, tok, None, settings.max_length)
    model, peft_config = objective.policy_model(AutoModelForCausalLM.from_pretrained(tiny_model), init, None)
    trainer = objective.trainer(model, config, dataset, tok, peft_config)
    rows = {r["id"]: r for r in trainer.train_dataset}
    checked = 0
    for s in samples:
        sides = [("ref_chosen_logps", s.chosen), ("ref_rejected_logps", s.rejected)] if name == "dpo" else \
            [("ref_logps", s.chosen)]
        for column, completion in sides:
            row = rows[s.id] if name == "dpo" else rows[f"{s.id}:chosen"]
            want = completion_logp(start, tok, s.prompt, completion)
            assert row[column] == pytest.approx(want, abs=1e-3)
            assert abs(completion_logp(base, tok, s.prompt, completion) - want) > 0.1
            checked += 1
    assert checked >= 4


def test_dpo_trains_from_the_start_adapter_and_the_saved_adapter_is_the_trained_policy(
        registry, tmp_path, tiny_model, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentclone.objectives.dpo import DPO

    trainers = []
    original = DPO.trainer

    def keep(self, *args, **kwargs):
        trainers.append(original(self, *args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(DPO, "trainer", keep)
    init = make_init_adapter(tiny_model, tmp_path / "init")
    data = tmp_path / "train.jsonl"
    write_trajectories(data, step_pairs())
    samples = DPO().read_samples(data)
    out = tmp_path / "dpo"
    metrics = train_lora(samples, tiny_model, out, TrainSettings(**SETTINGS, objective="dpo",
                                                                 trl={"beta": 0.5, "loss_type": ["sigmoid", "sft"],
                                                                      "loss_weights": [1.0, 0.5]}),
                         progress=False, init_adapter=init)
    assert metrics["objective"] == "dpo" and metrics["global_step"] == 2 and is_adapter_complete(out)
    assert metrics["loss_tokens_per_epoch"] > 0 and metrics["tokens_per_epoch"] > metrics["loss_tokens_per_epoch"]
    assert not (out / "ref").exists()  # TRL's frozen reference copy is not part of the adapter
    # the first step's policy is the start adapter and so is the reference: rewards exactly 0. With the base
    # model as reference they would be beta * (log p_start - log p_base), far from 0 with this start adapter
    first = next(h for h in metrics["log_history"] if "rewards/chosen" in h)
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/margins"] == pytest.approx(0, abs=1e-5)
    later = [h for h in metrics["log_history"] if "rewards/chosen" in h][-1]
    assert later["rewards/margins"] != pytest.approx(0, abs=1e-5)  # it trained

    trained = trainers[0].model.eval()
    assert trained.active_adapter == "default"
    ids = torch.tensor([tokenize_completion(load_tokenizer(tiny_model), samples[0].prompt, samples[0].chosen)[0]])
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out)).eval()
        got = saved(input_ids=ids).logits
        start = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(init)).eval()
        before = start(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-4
    assert (before - want).abs().max() > 1e-3  # and the trained policy moved away from the start


def test_kto_trains_end_to_end_from_the_start_adapter(registry, tmp_path, tiny_model):
    from agentclone.builders.preference import KTOLabels
    from agentclone.objectives.kto import KTO

    init = make_init_adapter(tiny_model, tmp_path / "init")
    data = tmp_path / "train.jsonl"
    samples = KTOLabels({"expert_at_disagreements": True}).build([rollout("a"), rollout("b")], BuildContext())
    write_trajectories(data, samples)
    out = tmp_path / "kto"
    metrics = train_lora(KTO().read_samples(data), tiny_model, out,
                         TrainSettings(**SETTINGS, objective="kto", trl={"beta": 0.5, "desirable_weight": 1.0}),
                         progress=False, init_adapter=init)
    assert metrics["objective"] == "kto" and metrics["global_step"] == 2 and is_adapter_complete(out)
    first = next(h for h in metrics["log_history"] if "kl" in h)
    assert first["kl"] == pytest.approx(0, abs=1e-5)  # the policy starts at the reference
    # KTO's KL term needs two samples a batch, and its fixed batches a sequential sampler: both said up front
    from agentclone.errors import UserError

    with pytest.raises(UserError, match="batch_size: kto needs at least 2"):
        build_trl_config(KTO(), TrainSettings(batch_size=1, objective="kto"), str(tmp_path))
    assert build_trl_config(KTO(), TrainSettings(objective="kto"), str(tmp_path)).train_sampling_strategy == "sequential"
    with pytest.raises(UserError, match="multi-turn completion"):
        KTO().labelled([eto_pair()])


def test_eto_environment_tokens_get_exactly_zero_gradient(registry, tmp_path, tiny_model):
    """Trajectory-level pairs: the gradient of the DPO loss with respect to the logits at every environment-turn
    token of the continuations is exactly zero, and not zero at the assistant's tokens.

    TRL's fused LM head never materialises the logits, so the gradient is read at h[t], the final norm's output:
    the logits at t are lm_head(h[t]) and h[t] feeds nothing else, so a zero gradient at the logits[t] gives a zero
    one at h[t], and a non-zero one at h[t] needs a non-zero one at the logits[t]."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from agentclone.objectives import make_objective

    objective = make_objective("dpo")
    tok = load_tokenizer(tiny_model)
    pairs = [eto_pair()]
    pairs.append(pairs[0].model_copy(update={"id": "second", "rejected": pairs[0].rejected[:3]}))
    dataset = objective.dataset(pairs, tok, None, 2048)
    settings = TrainSettings(**SETTINGS, objective="dpo")
    config = build_trl_config(objective, settings, str(tmp_path / "ckpt"), progress=False)
    init = make_init_adapter(tiny_model, tmp_path / "init")
    model, peft_config = objective.policy_model(AutoModelForCausalLM.from_pretrained(tiny_model), init,
                                                LoraConfig(r=4, task_type="CAUSAL_LM"))
    trainer = objective.trainer(model, config, dataset, tok, peft_config)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    hidden = {}
    norm = trainer.model.get_base_model().model.norm
    handle = norm.register_forward_hook(lambda mod, inp, out: hidden.setdefault("h", out) if torch.is_grad_enabled() else None)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    handle.remove()
    h = hidden["h"]
    (grad,) = torch.autograd.grad(loss, h)
    # the chat template's assistant mask, independent of the trainer: rows are the chosen sides, then the rejected
    sides = [(p, p.chosen) for p in pairs] + [(p, p.rejected) for p in pairs]
    env_tokens = assistant_tokens = 0
    for row, (pair, completion) in enumerate(sides):
        prompt_ids, ids, assistant = tokenize_completion(tok, pair.prompt, completion)
        assert batch["input_ids"][row, : len(prompt_ids) + len(ids)].tolist() == prompt_ids + ids
        for i, (token, is_assistant) in enumerate(zip(ids, assistant)):
            j = len(prompt_ids) + i
            g = grad[row, j - 1].abs().max()  # the logits at j-1 predict token j
            if is_assistant:
                assert g > 0, f"assistant token {j} of row {row} has no gradient"
                assistant_tokens += 1
            else:
                assert g == 0, f"environment token {tok.decode([token])!r} ({j}) of row {row} has gradient {g}"
                env_tokens += 1
    assert env_tokens > 20 and assistant_tokens > 20
    # the environment's turns are what the mask left out
    row0 = batch["input_ids"][0]
    unscored = tok.decode([t for t, m, a in zip(row0, batch["completion_mask"][0], batch["attention_mask"][0])
                           if a and not m])
    assert "Got 1 oak log." in unscored


def test_the_dpo_recipe_loads_once_registered(registry):
    from agentclone.recipes import load_recipe
    from conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "textcraft_dpo.yaml")
    assert recipe.builder.name == "step-pairs" and recipe.train.objective == "dpo"
    assert recipe.rounds.count == 2 and str(recipe.rounds.start_adapter) == "runs/quickstart/adapter"
    assert recipe.rounds.collect.expert_labels


GEN = {"max_new_tokens": 6, "batch_size": 8}
ROLLOUT = {"concurrency": 4, "max_consecutive_invalid": 1}


@pytest.mark.parametrize("builder,options,objective", [
    ("step-pairs", {}, "dpo"),
    ("eto-pairs", {}, "dpo"),
    ("kto-labels", {"expert_at_disagreements": True}, "kto"),
])
def test_a_round_collects_builds_and_trains_preferences_from_the_start_adapter(
        registry, tmp_path, counter_env_registered, tiny_model, builder, options, objective):
    from agentclone.pipeline import run_recipe
    from agentclone.recipes import validate_recipe

    init = make_init_adapter(tiny_model, tmp_path / "init")
    recipe = validate_recipe({
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}, "model": tiny_model,
        "collect": {"policy": "expert"},
        "builder": {"name": builder, "options": options},
        "rounds": {"count": 1, "collect_episodes": 4, "baseline": None, "start_adapter": str(init),
                   "collect": {"policy": "hf", "generation": {**GEN, "temperature": 1.0}, "rollout": ROLLOUT,
                               "expert_labels": True}},
        "train": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "logging_steps": 1, "objective": objective},
        "eval": {"episodes": 2, "generation": GEN, "rollout": ROLLOUT},
    })
    out = tmp_path / "run"
    first = run_recipe(recipe, out)
    assert first["stages"]["round-1 train"] == "ran"
    build = json.loads((out / "round-1" / "build.json").read_text())
    assert build["sample_kind"] == ("labelled" if objective == "kto" else "preference") and build["report"]
    samples = read_preference_file(out / "round-1" / "train.jsonl")
    assert samples and build["stats"]["trajectories_out"] == len(samples)
    meta = json.loads((out / "round-1" / "adapter" / "agentclone.json").read_text())
    assert meta["metrics"]["objective"] == objective and meta["init_adapter"] == str(init)
    assert (out / "round-1" / "eval.jsonl").exists()
    again = run_recipe(recipe, out)  # the samples' hashes make the train stage's fingerprint
    assert not [name for name, what in again["stages"].items() if what == "ran"]
