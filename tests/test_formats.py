"""Bring your own trajectories: import / export of AgentGym, ShareGPT, OpenAI messages and LLaMA-Factory
files, formats as plugins, training on imported data, and the merged-model export.

Round trips agentclone -> format -> agentclone give back the same chat messages (what training renders)
and, for the formats with per-turn loss (agentgym, openai), the same loss flags. The sample files
below are written by hand after each format's public description.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentclone.cli import main
from agentclone.data import Step, Trajectory, read_trajectories, write_trajectories
from agentclone.formats import (
    ExportOptions,
    FormatError,
    ImportOptions,
    export_file,
    import_file,
    iter_import,
    iter_records,
    make_format,
)
from agentclone.formats import base as formats_base
from agentclone.prompting import ActionFormat, trajectory_messages

FORMATS = ["agentgym", "sharegpt", "openai", "llamafactory"]
WITH_LOSS = {"agentgym", "openai"}
HINT = ActionFormat().hint


@pytest.fixture
def agentclone(monkeypatch, capsys):
    """``agentclone(*args)`` -> (exit status, stderr), through the real entry point."""

    def run(*args) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["agentclone", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        return code, capsys.readouterr().err

    return run


def roundtrip(name: str, trajs: list[Trajectory], folder: Path, suffix: str = ".jsonl", loss: str = "all",
              fmt: ActionFormat = ActionFormat()) -> list[Trajectory]:
    out = folder / f"out{suffix}"
    export_file(make_format(name), trajs, out, ExportOptions(fmt=fmt))
    return list(iter_import(make_format(name), out, ImportOptions(loss=loss, fmt=fmt)))


# -- round trips: property based -------------------------------------------------------------------

texts = st.text(max_size=40)
steps = st.builds(
    Step,
    observation=texts,
    thought=st.none() | texts,
    action=st.text(min_size=1, max_size=30),
    loss=st.booleans(),
    invalid=st.booleans(),
)


@st.composite
def trajectories(draw):
    n = draw(st.integers(1, 5))
    step_list = []
    for _ in range(n):
        step = draw(steps)
        if step.invalid and draw(st.booleans()):  # a model answer that did not parse: its raw text is trained on
            step.raw_output = draw(texts)
            step.info = {"parse_error": "no 'Action:' line found"}
        step_list.append(step)
    return Trajectory(id=draw(st.text(min_size=1, max_size=10)), env_id="e/x-v1", task_id="t",
                      instructions=draw(texts), steps=step_list)


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(trajs=st.lists(trajectories(), min_size=1, max_size=3), fmt_name=st.sampled_from(["thought-action", "action"]),
       array=st.booleans())
def test_roundtrip_keeps_messages_and_loss_flags(name, trajs, fmt_name, array, tmp_path):
    fmt = ActionFormat(fmt_name)
    back = roundtrip(name, trajs, tmp_path, ".json" if array else ".jsonl", fmt=fmt)
    assert len(back) == len(trajs)
    for a, b in zip(trajs, back):
        messages_a, loss_a = trajectory_messages(a, fmt)
        messages_b, loss_b = trajectory_messages(b, fmt)
        assert messages_b == messages_a
        assert loss_b == (loss_a if name in WITH_LOSS else [True] * len(loss_a))


@pytest.mark.parametrize("name", FORMATS)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(trajs=st.lists(trajectories(), min_size=1, max_size=3, unique_by=lambda t: t.id))
def test_roundtrip_with_keep_meta_gives_back_the_whole_trajectory(name, trajs, tmp_path):
    out = tmp_path / "out.jsonl"
    export_file(make_format(name), trajs, out, ExportOptions(keep_meta=True))
    assert list(iter_import(make_format(name), out, ImportOptions())) == trajs


@pytest.mark.parametrize("name", ["sharegpt", "llamafactory"])
def test_formats_without_loss_flags_take_the_loss_rule(name, tmp_path):
    traj = Trajectory(id="a", env_id="e", task_id="a", instructions="Do.",
                      steps=[Step(observation=f"o{i}", action=f"a{i}", loss=i == 0) for i in range(3)])
    assert [s.loss for s in roundtrip(name, [traj], tmp_path, loss="all")[0].steps] == [True, True, True]
    assert [s.loss for s in roundtrip(name, [traj], tmp_path, loss="last")[0].steps] == [False, False, True]


# -- the formats' own files, written by hand ---------------------------------------------------------

AGENTGYM = [
    {"item_id": "textcraft_7", "conversations": [
        {"from": "human", "loss": None, "value": "You are given crafting recipes. Reply with Thought and Action."},
        {"from": "gpt", "loss": False, "value": "OK. I'll follow your instructions and try my best."},
        {"from": "human", "loss": None, "value": "Crafting commands:\ncraft 4 oak planks using 1 oak log\nGoal: craft 4 oak planks."},
        {"from": "gpt", "loss": True, "value": "Thought:\nI need an oak log first.\n\nAction:\nget 1 oak log"},
        {"from": "human", "loss": None, "value": "Got 1 oak log"},
        {"from": "gpt", "loss": True, "value": "Thought: Now I can craft.\nAction: craft 4 oak planks using 1 oak log"},
        {"from": "human", "loss": None, "value": "Crafted 4 minecraft:oak_planks"},
    ]},
    # AgentInstruct names records with `id`, and a turn may be free text
    {"id": "os_12", "conversations": [
        {"from": "human", "loss": True, "value": "How many files are in /etc?"},
        {"from": "gpt", "loss": True, "value": "Think: I should count them.\n\nAct: bash\n\n```bash\nls /etc | wc -l\n```"},
        {"from": "human", "loss": None, "value": "The output of the OS:\n220"},
        {"from": "gpt", "loss": False, "value": "Act: answer(220)"},
    ]},
]


def write_json(path: Path, records, lines: bool = False) -> Path:
    if lines:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=2))
    return path


def test_agentgym_sample(tmp_path):
    trajs = list(iter_import(make_format("agentgym"), write_json(tmp_path / "a.json", AGENTGYM),
                             ImportOptions(env_id="textcraft")))
    t = trajs[0]
    assert (t.id, t.task_id, t.env_id) == ("textcraft_7", "textcraft_7", "textcraft")
    assert t.instructions == AGENTGYM[0]["conversations"][0]["value"]  # the preamble
    assert t.steps[0].info["agentgym_ack"].startswith("OK. I'll follow")
    assert [s.observation for s in t.steps] == ["Crafting commands:\ncraft 4 oak planks using 1 oak log\nGoal: craft 4 oak planks.",
                                                "Got 1 oak log"]
    assert (t.steps[0].thought, t.steps[0].action) == ("I need an oak log first.", "get 1 oak log")
    assert t.steps[0].raw_output == AGENTGYM[0]["conversations"][3]["value"]  # AgentGym's own layout is kept
    assert t.steps[1].raw_output is None and t.steps[1].action == "craft 4 oak planks using 1 oak log"
    assert t.final_observation == "Crafted 4 minecraft:oak_planks"
    messages, loss = trajectory_messages(t, ActionFormat())
    assert messages[2]["content"] == AGENTGYM[0]["conversations"][3]["value"] and loss == [True, True]
    # no preamble (the first gpt turn trains): the first human turn is an observation
    s = trajs[1]
    assert (s.task_id, s.instructions) == ("os_12", "")
    assert [st.loss for st in s.steps] == [True, False]
    assert s.steps[0].info["parse_error"].startswith("no 'Action:' line")
    assert trajectory_messages(s, ActionFormat())[0][2]["content"] == AGENTGYM[1]["conversations"][1]["value"]
    # and back: the same conversation, loss flags included
    out = tmp_path / "back.jsonl"
    export_file(make_format("agentgym"), trajs, out, ExportOptions())
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[0]["conversations"][1:] == AGENTGYM[0]["conversations"][1:-1]  # the final observation is not trained
    assert again[0]["conversations"][0]["value"] == AGENTGYM[0]["conversations"][0]["value"] + "\n" + HINT


SHAREGPT = [
    {"id": "x1", "system": "You control a robot.", "tools": "[]", "conversations": [
        {"from": "human", "value": "You are in a room."},
        {"from": "gpt", "value": "Thought: look first.\nAction: look"},
        {"from": "human", "value": "You see a door."},
        {"from": "gpt", "value": "Action: open door"},
    ]},
    {"conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello!"},
    ]},
]


def test_sharegpt_sample_jsonl(tmp_path):
    path = write_json(tmp_path / "s.jsonl", SHAREGPT, lines=True)
    opts = ImportOptions(loss="last")
    a, b = iter_import(make_format("sharegpt"), path, opts)
    assert (a.task_id, a.instructions) == ("x1", "You control a robot.")
    assert [(s.thought, s.action, s.loss) for s in a.steps] == [("look first.", "look", False), (None, "open door", True)]
    assert (b.task_id, b.instructions, b.steps[0].raw_output) == ("1", "Be brief.", "Hello!")
    assert (opts.stats.rule_turns, opts.stats.flagged_turns, opts.stats.unparsed_steps) == (3, 0, 1)


OPENAI = [
    {"messages": [
        {"role": "system", "content": "Reach the target number."},
        {"role": "user", "content": "Value 0. Target 4."},
        {"role": "assistant", "content": "Thought: I need 4 more.\nAction: add 3", "weight": 0},
        {"role": "user", "content": "Value 3. Target 4."},
        {"role": "assistant", "content": "Thought: I need 1 more.\nAction: add 1", "weight": 1},
    ]},
    {"messages": [
        {"role": "user", "content": "Value 0. Target 2."},
        {"role": "assistant", "content": "Action: add 2", "loss": False},
        {"role": "tool", "content": "Value 2. Done!"},
        {"role": "assistant", "content": "Action: stop"},
    ]},
]


def test_openai_sample(tmp_path):
    a, b = iter_import(make_format("openai"), write_json(tmp_path / "o.json", OPENAI), ImportOptions(loss="last"))
    assert a.instructions == "Reach the target number." and [s.loss for s in a.steps] == [False, True]
    assert [s.action for s in a.steps] == ["add 3", "add 1"]
    assert b.instructions == "" and [s.loss for s in b.steps] == [False, True]  # `loss` flag, then --loss last
    assert b.steps[1].observation == "Value 2. Done!"


def test_llamafactory_export_writes_dataset_info_and_reads_it_back(tmp_path, agentclone):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    trajs = [Trajectory(id=f"t{i}", env_id="e", task_id=f"t{i}", instructions="Count.",
                        steps=[Step(observation=f"o{j}", action=f"add {j}", loss=j == 2) for j in range(3)])
             for i in range(2)]
    write_trajectories(tmp_path / "t.jsonl", trajs)
    code, err = agentclone("export", tmp_path / "t.jsonl", "--to", "llamafactory", "-o", data / "agent.json",
                           "--name", "my_agent")
    assert code == 0, err
    info = json.loads((data / "dataset_info.json").read_text())
    assert "alpaca_en_demo" in info  # other entries are kept
    assert info["my_agent"] == {
        "file_name": "agent.json", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    assert "set `mask_history: true`" in err
    records = json.loads((data / "agent.json").read_text())  # a JSON array
    assert records[0]["conversations"][0] == {"from": "human", "value": "o0"} and records[0]["system"].startswith("Count.")
    # reading goes through the entry's mapping: rename the columns and tags, and it still reads
    renamed = [{"msgs": [{"role": "user" if m["from"] == "human" else "assistant", "text": m["value"]}
                         for m in r["conversations"]], "sys": r["system"]} for r in records]
    write_json(data / "renamed.jsonl", renamed, lines=True)
    info["renamed"] = {"file_name": "renamed.jsonl", "formatting": "sharegpt", "columns": {"messages": "msgs", "system": "sys"},
                       "tags": {"role_tag": "role", "content_tag": "text", "user_tag": "user", "assistant_tag": "assistant"}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    back = list(iter_import(make_format("llamafactory"), data / "renamed.jsonl", ImportOptions()))
    assert [trajectory_messages(t, ActionFormat())[0] for t in back] == [trajectory_messages(t, ActionFormat())[0] for t in trajs]


def test_llamafactory_warns_when_loss_flags_cannot_be_kept(tmp_path):
    traj = Trajectory(id="a", env_id="e", task_id="a",
                      steps=[Step(observation="o", action="x", loss=flag) for flag in (True, False, True)])
    stats = export_file(make_format("llamafactory"), [traj], tmp_path / "d.jsonl", ExportOptions())
    assert any(n.startswith("warning: LLaMA-Factory has no per-turn loss key") and "1 on other turns" in n
               for n in stats.notes)


# -- reading: JSON arrays and lines, streamed ---------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(records=st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=30) | st.integers(), max_size=4),
                        max_size=6),
       chunk=st.integers(1, 40), indent=st.sampled_from([None, 1]))
def test_array_reader_streams_any_chunking(records, chunk, indent, tmp_path_factory):
    path = tmp_path_factory.mktemp("arr") / "a.json"
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    saved, formats_base.CHUNK = formats_base.CHUNK, chunk
    try:
        got = list(iter_records(path))
    finally:
        formats_base.CHUNK = saved
    assert [r for _, _, r in got] == records
    assert [i for i, _, _ in got] == list(range(len(records)))


def test_record_lines_are_reported(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1},\n\n  {"b":\n 2}\n]\n')
    assert [(i, line) for i, line, _ in iter_records(path)] == [(0, 2), (1, 4)]
    path.write_text('\n{"a": 1}\n\n{"b": 2}\n')
    assert [(i, line) for i, line, _ in iter_records(path)] == [(0, 2), (1, 4)]


# -- errors: one message, file + record + line + field, and no output left behind -----------------


def bad_agentgym(tmp_path, lines: bool) -> Path:
    records = json.loads(json.dumps(AGENTGYM))
    records.append(json.loads(json.dumps(AGENTGYM[0])))
    records[2]["conversations"][3]["from"] = "assistant"
    return write_json(tmp_path / ("bad.jsonl" if lines else "bad.json"), records, lines=lines)


@pytest.mark.parametrize("lines", [True, False])
def test_a_bad_record_is_one_error_and_no_output_is_left(tmp_path, agentclone, lines):
    path = bad_agentgym(tmp_path, lines)
    out = tmp_path / "out.jsonl"
    code, err = agentclone("import", path, "--from", "agentgym", "-o", out)
    starts = [i + 1 for i, text in enumerate(path.read_text().splitlines()) if text == "  {"]  # indent=2 array
    line = 3 if lines else starts[2]
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.strip() == (f"error: {path}: record 2 (line {line}): field 'conversations[3].from': unknown role "
                           "'assistant' (expected one of: human, gpt)")
    assert not out.exists() and list(tmp_path.glob(".out.jsonl*")) == []
    out.write_text("keep me\n")  # an existing output is left as it was
    assert agentclone("import", path, "--from", "agentgym", "-o", out)[0] == 2
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize("text,message", [
    ('{"conversations": [{"from": "human", "value": 3}]}\n', "record 0 (line 1): field 'conversations[0].value': expected a string, got int"),
    ('{"messages": []}\n', "record 0 (line 1): field 'conversations': missing"),
    ('{"conversations": [{"from": "gpt", "value": "hi"}]}\n',
     "record 0 (line 1): field 'conversations[0]': expected a user turn here (turns alternate, user first), got assistant"),
    ('{"conversations": []}\n{"conversations": \n', "record 1 (line 2): not valid JSON"),
    ('[{"conversations": []},\n 3]', "record 1 (line 2): expected a JSON object, got int"),
    ('[{"conversations": []}', "record 0 (line 1): the array is not closed"),
    ('{"conversations": [{"from": "human", "value": "o"}, {"from": "gpt", "value": "a", "loss": "yes"}]}\n',
     "record 0 (line 1): field 'conversations[1].loss': expected true, false or null, got 'yes'"),
])
def test_error_messages_name_record_line_and_field(tmp_path, text, message):
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        import_file(make_format("sharegpt"), path, tmp_path / "o.jsonl", ImportOptions())
    assert str(info.value).startswith(f"{path}: {message}")
    assert list(tmp_path.iterdir()) == [path]


def test_openai_weight_must_be_0_or_1(tmp_path):
    path = write_json(tmp_path / "o.jsonl", [{"messages": [{"role": "user", "content": "o"},
                                                           {"role": "assistant", "content": "a", "weight": 2}]}], lines=True)
    with pytest.raises(FormatError, match=r"field 'messages\[1\].weight': expected 0 or 1, got 2"):
        list(iter_import(make_format("openai"), path, ImportOptions()))


def test_unknown_format_and_bad_options(tmp_path, agentclone):
    path = write_json(tmp_path / "a.json", AGENTGYM)
    code, err = agentclone("import", path, "--from", "nope", "-o", tmp_path / "o.jsonl")
    assert code == 2 and "unknown trajectory format 'nope'; registered: agentclone, agentgym, llamafactory, openai, sharegpt" in err
    code, err = agentclone("import", path, "--from", "agentgym", "-o", tmp_path / "o.jsonl", "--loss", "first")
    assert code == 2 and "--loss must be all or last" in err


# -- the commands ---------------------------------------------------------------------------------


def test_import_and_export_commands_say_where_loss_came_from(tmp_path, agentclone):
    code, err = agentclone("import", write_json(tmp_path / "a.json", AGENTGYM), "--from", "agentgym",
                           "-o", tmp_path / "a.jsonl", "--env", "textcraft/craft-v1")
    assert code == 0, err
    assert "imported 2 trajectories (4 steps)" in err and "4 assistant turns from the file's own loss flags" in err
    assert {t.env_id for t in read_trajectories(tmp_path / "a.jsonl")} == {"textcraft/craft-v1"}
    assert "success: unknown in these records, so recorded as false" in err
    assert not any(t.success for t in read_trajectories(tmp_path / "a.jsonl"))
    code, err = agentclone("import", tmp_path / "a.json", "--from", "agentgym", "-o", tmp_path / "ok.jsonl", "--successful")
    assert code == 0 and "success: unknown" not in err
    assert all(t.success for t in read_trajectories(tmp_path / "ok.jsonl"))
    code, err = agentclone("import", write_json(tmp_path / "s.json", SHAREGPT), "--from", "sharegpt",
                           "-o", tmp_path / "s.jsonl")
    assert code == 0 and "loss on 3 of 3 steps: 3 by --loss all (no flag in the file)" in err
    code, err = agentclone("export", tmp_path / "a.jsonl", "--to", "sharegpt", "-o", tmp_path / "s2.jsonl")
    assert code == 0 and "sharegpt has no per-turn loss flag: 1 of 4 assistant turns had loss=false" in err
    code, err = agentclone("export", tmp_path / "a.jsonl", "--to", "openai", "-o", tmp_path / "o.jsonl")
    assert code == 0 and "with per-turn loss flags" in err
    assert [m.get("weight") for m in json.loads((tmp_path / "o.jsonl").read_text().splitlines()[1])["messages"]] == \
        [None, None, 1, None, 0]


def test_import_twice_gives_the_same_file(tmp_path):
    path = write_json(tmp_path / "a.json", AGENTGYM)
    import_file(make_format("agentgym"), path, tmp_path / "1.jsonl", ImportOptions())
    import_file(make_format("agentgym"), path, tmp_path / "2.jsonl", ImportOptions())
    assert (tmp_path / "1.jsonl").read_bytes() == (tmp_path / "2.jsonl").read_bytes()


def test_duplicate_ids_are_made_unique(tmp_path):
    path = write_json(tmp_path / "a.json", [AGENTGYM[0], AGENTGYM[0]])
    assert [t.id for t in iter_import(make_format("agentgym"), path, ImportOptions())] == ["textcraft_7", "textcraft_7#1"]


# -- formats are plugins ------------------------------------------------------------------------------


def test_an_outside_plugin_registers_a_format(installed_plugins, monkeypatch, tmp_path, agentclone):
    installed_plugins("csvish", """
        from agentclone import hookimpl
        from agentclone.formats.base import Format, Turn, conversation_to_trajectory, trajectory_to_conversation

        class PromptAnswer(Format):
            name = "prompt-answer"
            carries_loss = False

            def decode(self, record, index, opts):
                turns = [Turn("user", record["prompt"]), Turn("assistant", record["answer"])]
                return conversation_to_trajectory(None, turns, task_id=str(index), traj_id=str(index), opts=opts)

            def encode(self, traj, opts):
                _, turns = trajectory_to_conversation(traj, opts.fmt)
                return {"prompt": turns[0].content, "answer": turns[1].content}

        @hookimpl
        def register_formats(register):
            register("prompt-answer", PromptAnswer)
    """)
    monkeypatch.setenv("AGENTCLONE_LOAD_PLUGINS", "csvish")
    from agentclone.plugins import build_registry, use_registry

    with use_registry(build_registry()) as reg:
        assert {"agentgym", "prompt-answer"} <= set(reg.formats)
        assert next(p for p in reg.plugins if p.name == "csvish").registered == {"formats": ["prompt-answer"]}
        path = write_json(tmp_path / "pa.jsonl", [{"prompt": "Value 0. Target 1.", "answer": "Action: add 1"}], lines=True)
        code, err = agentclone("import", path, "--from", "prompt-answer", "-o", tmp_path / "t.jsonl")
        assert code == 0, err
        assert read_trajectories(tmp_path / "t.jsonl")[0].steps[0].action == "add 1"


# -- training on imported data ----------------------------------------------------------------------


from test_disagreement import tiny_model  # noqa: E402,F401  (a fixture: a random 2-layer Llama)


def expert_demos(path: Path, n: int = 8) -> list[Trajectory]:
    """Quickstart-style demonstrations: TextCraft's expert on one-recipe goals, built with `bc`."""
    from agentclone.builders.base import BuildContext, make_builder
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    res = collect("textcraft/craft-v1", {"max_depth": 1, "num_distractors": 3, "max_steps": 10},
                  make_policy("expert", fmt=ActionFormat()), "train", n, path.with_name("raw.jsonl"), seed=0)
    built = make_builder("bc", {"only_successful": True}).build(res.trajectories, BuildContext())
    write_trajectories(path, built)
    return built


def test_expert_demos_through_agentgym_give_the_same_training_samples(tmp_path, smollm2_path):
    from agentclone.models import load_tokenizer
    from agentclone.training import data_hash, tokenize_trajectories

    demos = expert_demos(tmp_path / "demos.jsonl")
    assert len(demos) >= 6 and all(t.success for t in demos)
    fmt = ActionFormat()
    export_file(make_format("agentgym"), read_trajectories(tmp_path / "demos.jsonl"), tmp_path / "demos.agentgym.json",
                ExportOptions())
    import_file(make_format("agentgym"), tmp_path / "demos.agentgym.json", tmp_path / "imported.jsonl", ImportOptions())
    imported = read_trajectories(tmp_path / "imported.jsonl")
    assert [trajectory_messages(t, fmt) for t in imported] == [trajectory_messages(t, fmt) for t in demos]
    tok = load_tokenizer(smollm2_path)
    original, again = tokenize_trajectories(demos, tok, fmt), tokenize_trajectories(imported, tok, fmt)
    assert original["input_ids"] == again["input_ids"] and original["assistant_masks"] == again["assistant_masks"]
    assert sum(map(sum, again["assistant_masks"])) > 0
    # the expert's turns parse back to the same thought and action: nothing needed to be kept verbatim
    assert [(s.thought, s.action) for t in imported for s in t.steps] == [(s.thought, s.action) for t in demos for s in t.steps]
    # AgentGym records carry no rewards, success or ids of agentclone's, so the data hash (which covers them) differs;
    # with --keep-meta the whole trajectory rides along and comes back exactly: the same data hash
    assert data_hash(imported) != data_hash(demos)
    export_file(make_format("agentgym"), demos, tmp_path / "meta.json", ExportOptions(keep_meta=True))
    opts = ImportOptions()
    restored = list(iter_import(make_format("agentgym"), tmp_path / "meta.json", opts))
    assert data_hash(restored) == data_hash(demos) and opts.stats.meta_restored == len(demos)


def test_keep_meta_yields_to_edited_messages(tmp_path):
    traj = Trajectory(id="a", env_id="e/x-v1", task_id="t", instructions="Do.", success=True,
                      steps=[Step(observation="o", action="add 1", reward=1.0, loss=True)])
    for name in FORMATS:
        export_file(make_format(name), [traj], tmp_path / f"{name}.jsonl", ExportOptions(keep_meta=True))
        assert list(iter_import(make_format(name), tmp_path / f"{name}.jsonl", ImportOptions())) == [traj]
    record = json.loads((tmp_path / "openai.jsonl").read_text())
    record["messages"][2]["content"] = "Action: add 2"  # edited after export
    write_json(tmp_path / "edited.jsonl", [record], lines=True)
    opts = ImportOptions(env_id="mine")
    (back,) = iter_import(make_format("openai"), tmp_path / "edited.jsonl", opts)
    assert (back.steps[0].action, back.env_id, opts.stats.meta_stale) == ("add 2", "mine", 1)


def test_train_runs_on_an_imported_file(tmp_path, tiny_model, agentclone):
    path = write_json(tmp_path / "a.json", AGENTGYM)
    assert agentclone("import", path, "--from", "agentgym", "-o", tmp_path / "a.jsonl")[0] == 0
    code, err = agentclone("train", tmp_path / "a.jsonl", "-o", tmp_path / "adapter", "--model", tiny_model,
                           "--max-steps", "1")
    assert code == 0, err
    assert "adapter saved in" in err and (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    # export-model finds the base model in the adapter's agentclone.json
    code, err = agentclone("export-model", tmp_path / "adapter", "-o", tmp_path / "merged")
    assert code == 0 and f"base {tiny_model}" in err, err
    assert (tmp_path / "merged" / "model.safetensors").exists() and (tmp_path / "merged" / "tokenizer_config.json").exists()


# -- the merged model ---------------------------------------------------------------------------------


def test_export_model_merges_the_adapter_and_generates_the_same_tokens(tmp_path, tiny_model, agentclone):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = tmp_path / "adapter"
    get_peft_model(base, lora).save_pretrained(adapter)  # non-zero random LoRA weights: the merge changes the model
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(adapter)
    code, err = agentclone("export-model", adapter, "-o", tmp_path / "merged", "--model", tiny_model,
                           "--vllm-lora", tmp_path / "vllm")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "vllm").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (tmp_path / "merged" / "adapter_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(merged, "peft_config")
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.chat_template
    with_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompts = ["Value 0. Target 4.", "Craft 1 stick.", "Thought: I need"]
    differs = False
    for prompt in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        with torch.inference_mode():
            a = merged.generate(ids, **kwargs)
            b = with_peft.generate(ids, **kwargs)
            c = plain.generate(ids, **kwargs)
        assert a.tolist() == b.tolist()
        differs |= a.tolist() != c.tolist()
    assert differs  # the adapter mattered: the merged model is not the base model
    code, err = agentclone("export-model", adapter, "-o", tmp_path / "merged", "--model", tiny_model)
    assert code == 2 and "exists and is not an empty directory" in err
