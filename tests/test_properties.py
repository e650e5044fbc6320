"""Property-based tests: every malformed input ends in one clear error, never a stray traceback."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentclone.data import TrajectoryFileError, read_trajectories
from agentclone.recipes import RecipeError, load_recipe

from test_data import make_traj

GOOD = make_traj(0).to_json_line()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_line(tmp_path_factory, junk):
    path = tmp_path_factory.mktemp("b") / "t.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + junk + b"\n" + GOOD.encode() + b"\n")
    try:
        trajs = read_trajectories(path)
    except TrajectoryFileError as exc:
        # the junk may hold newlines of its own: the error names one of its lines
        n_junk_lines = junk.count(b"\n") + 1
        assert any(f"{path}:{i}:" in str(exc) for i in range(2, 2 + n_junk_lines))
    else:
        assert len(trajs) >= 2  # blank junk is skipped


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.data())
def test_a_field_replaced_by_anything(tmp_path_factory, data):
    obj = json.loads(GOOD)
    paths = [("id",), ("steps",), ("success",), ("steps", 0, "action"), ("steps", 1, "reward"),
             ("steps", 0, "info"), ("timings",), ("return",), ("steps", 2)]
    where = data.draw(st.sampled_from(paths))
    value = data.draw(json_values)
    target = obj
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = tmp_path_factory.mktemp("f") / "t.jsonl"
    path.write_text(json.dumps(obj) + "\n")
    try:
        read_trajectories(path)
    except TrajectoryFileError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}:1:") and "field" in msg


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_recipe_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(path) in str(exc)


recipe_trees = st.dictionaries(
    st.sampled_from(["env", "train", "eval", "collect", "builder", "model", "seed", "lora", "bogus", "id"]),
    json_values,
    max_size=5,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(recipe_trees)
def test_arbitrary_recipe_structures(tmp_path_factory, tree):
    import yaml

    path = tmp_path_factory.mktemp("s") / "r.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(path) in str(exc)
