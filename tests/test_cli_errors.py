"""Errors a user causes end as one line, ``error: <message>``, with status 2: never a traceback.

Each test runs the real entry point (``agentclone.cli:main``, what the ``agentclone`` script
calls) with its arguments, in this process.
"""

import sys

import pytest

from agentclone.cli import main
from agentclone.data import Step, Trajectory, write_trajectories
from agentclone.models import ModelNotFoundError, resolve_model


@pytest.fixture
def agentclone(monkeypatch, capsys):
    """``agentclone(*args)`` -> (exit status, stderr)."""

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["agentclone", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code, capsys.readouterr().err

    return run


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err[len("error: "):].strip()


def trajectories(n: int, loss: bool = True) -> list[Trajectory]:
    steps = [Step(observation="Value 0. Target 2.", thought="go", action="add 2", loss=loss)]
    return [Trajectory(id=f"t{i}", env_id="test/counter-v0", task_id=f"t{i}", steps=steps, success=True)
            for i in range(n)]


def test_eval_without_an_adapter_says_which_path_and_what_to_do(agentclone, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nenv:\n  id: textcraft/craft-v1\neval:\n  policies: [adapter]\n")
    message = one_line_error(*agentclone("eval", recipe, "--output", tmp_path / "out"))
    assert str(tmp_path / "out" / "adapter") in message
    assert "run the train stage" in message and "--adapter" in message
    assert not (tmp_path / "out" / "eval").exists()  # nothing ran before the check

    message = one_line_error(*agentclone("eval", recipe, "--output", tmp_path / "out", "--adapter", tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in message


def test_train_on_a_file_without_a_sample_names_the_file_and_why(agentclone, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    message = one_line_error(*agentclone("train", empty, "--output", tmp_path / "a"))
    assert message.startswith(f"{empty}: no training sample") and "empty" in message

    no_loss = tmp_path / "no-loss.jsonl"
    write_trajectories(no_loss, trajectories(3, loss=False))
    message = one_line_error(*agentclone("train", no_loss, "--output", tmp_path / "a"))
    assert message.startswith(f"{no_loss}: no training sample") and "every trajectory was dropped" in message
    assert "3 trajectories" in message


def test_a_model_that_does_not_exist_is_named_with_the_aliases(agentclone, tmp_path):
    data = tmp_path / "data.jsonl"
    write_trajectories(data, trajectories(2))
    missing = tmp_path / "models" / "nothing-here"
    message = one_line_error(*agentclone("train", data, "--output", tmp_path / "a", "--model", missing))
    assert f"model '{missing}'" in message and "no such directory" in message and "smollm2-135m" in message

    message = one_line_error(*agentclone("train", data, "--output", tmp_path / "a", "--model", "someorg/some-model"))
    assert "model 'someorg/some-model' is not a registered alias (smollm2-135m)" in message
    assert "offline" in message


def test_resolve_model_refuses_before_transformers_tries_the_hub(tmp_path):
    (tmp_path / "weights.bin").write_text("")
    for name, words in ((str(tmp_path / "absent"), "no such directory"), ("./absent-model", "no such directory"),
                        (str(tmp_path / "weights.bin"), "is a file"), ("gpt-nothing", "not in the local Hugging Face cache")):
        with pytest.raises(ModelNotFoundError, match=words) as info:
            resolve_model(name)
        assert repr(name) in str(info.value) and "smollm2-135m" in str(info.value)
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # a directory is taken as it is


def test_collect_with_an_unknown_env_id(agentclone, tmp_path):
    message = one_line_error(*agentclone("collect", "--env", "nope/x-v1", "--output", tmp_path / "o.jsonl"))
    assert message == "unknown environment 'nope/x-v1'; registered: textcraft/craft-v1"
    assert not (tmp_path / "o.jsonl").exists()


def test_collect_with_an_env_kwarg_of_the_wrong_type(agentclone, tmp_path):
    message = one_line_error(*agentclone("collect", "--env", "textcraft/craft-v1", "--env-kwarg", "max_depth=deep",
                                         "--output", tmp_path / "o.jsonl"))
    assert message.startswith("environment 'textcraft/craft-v1': option 'max_depth': expected int or None, "
                              "got str 'deep' (allowed: min_depth, max_depth,")
    message = one_line_error(*agentclone("collect", "--env", "textcraft/craft-v1", "--env-kwarg", "depth=2",
                                         "--output", tmp_path / "o.jsonl"))
    assert message.startswith("environment 'textcraft/craft-v1': option 'depth': unknown option (allowed: ")


def test_agentclone_debug_shows_the_traceback_too(agentclone, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCLONE_DEBUG", "1")
    code, err = agentclone("collect", "--env", "nope/x-v1", "--output", tmp_path / "o.jsonl")
    assert code == 2 and "Traceback (most recent call last)" in err and "UnknownNameError" in err
    assert err.rstrip().splitlines()[-1] == "error: unknown environment 'nope/x-v1'; registered: textcraft/craft-v1"


def test_a_missing_input_file_is_one_line(agentclone, tmp_path):
    message = one_line_error(*agentclone("train", tmp_path / "nowhere.jsonl", "--output", tmp_path / "a"))
    assert str(tmp_path / "nowhere.jsonl") in message


def test_run_set_overrides_a_recipe_key_and_a_bad_one_is_one_error(tmp_path, counter_env_registered, agentclone):
    """`agentclone run R --set train.seed=3` runs the recipe with that key changed (and records it)."""
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text("env: {id: test/counter-v0}\ncollect: {policy: expert, episodes: 2}\nstages: [collect]\n")
    out = tmp_path / "run"
    code, _ = agentclone("run", recipe, "--output", out, "--set", "seed=3", "--set", "collect.episodes=3")
    assert code in (0, None)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["seed"] == 3 and saved["collect"]["episodes"] == 3
    assert len((out / "demos.jsonl").read_text().splitlines()) == 3
    message = one_line_error(*agentclone("run", recipe, "--output", out, "--set", "collect.episods=3"))
    assert "collect.episods: unknown key" in message
