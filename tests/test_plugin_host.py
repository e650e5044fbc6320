"""The plugin host: hooks called through pluggy (order, validation, all-or-nothing), and one way to make things.

Plugins here are installed the way pip installs them (a module and a dist-info with an entry
point, in a folder on sys.path), so they load through the same path as a real plugin.
"""

import pytest

from agentclone.builders.bc import BehaviourCloning
from agentclone.envs import TextEnv, check_env_options, make_env
from agentclone.errors import UserError
from agentclone.plugins import OptionError, UnknownNameError, build_registry, create, get_registry, use_registry

from conftest import CounterEnv

ENV_PLUGIN = """
from agentclone import hookimpl
from agentclone.envs import TextEnv


class {cls}(TextEnv):
    pass


@hookimpl{marker}
def register_environments(register):
    register("contested/x-v1", {cls})
    register("{name}/own-v1", {cls})
"""


def load(monkeypatch, *names):
    monkeypatch.setenv("AGENTCLONE_LOAD_PLUGINS", ",".join(names))
    return build_registry()


def test_tryfirst_decides_who_keeps_a_name_both_plugins_register(installed_plugins, monkeypatch):
    installed_plugins("early", ENV_PLUGIN.format(cls="Early", name="early", marker="(tryfirst=True)"))
    installed_plugins("late", ENV_PLUGIN.format(cls="Late", name="late", marker=""))
    reg = load(monkeypatch, "early", "late")
    assert reg.environments["contested/x-v1"].__name__ == "Early"
    assert {"early/own-v1", "late/own-v1"} <= set(reg.environments)
    [conflict] = reg.conflicts
    assert (conflict.name, conflict.plugin, conflict.kept_by) == ("contested/x-v1", "late", "early")
    late = next(p for p in reg.plugins if p.name == "late")
    assert late.registered == {"environments": ["late/own-v1"]}  # what it did not get is not listed as its

    # and the other way round: the order follows the markers, not the order of installation
    installed_plugins("first", ENV_PLUGIN.format(cls="First", name="first", marker="(trylast=True)"))
    reg = load(monkeypatch, "first", "late")
    assert reg.environments["contested/x-v1"].__name__ == "Late"


def test_builtins_keep_their_names_unless_a_plugin_says_tryfirst(installed_plugins, monkeypatch):
    installed_plugins("clash", """
        from agentclone import hookimpl

        @hookimpl
        def register_builders(register):
            register("bc", object)
    """)
    installed_plugins("override", """
        from agentclone import hookimpl
        from agentclone.policies.expert import ExpertPolicy

        class LoudExpert(ExpertPolicy):
            pass

        @hookimpl(tryfirst=True)
        def register_policy_backends(register):
            register("expert", LoudExpert)
    """)
    reg = load(monkeypatch, "clash", "override")
    assert reg.builders["bc"] is BehaviourCloning
    assert reg.policy_backends["expert"].__name__ == "LoudExpert"
    assert {(c.table, c.name, c.plugin, c.kept_by) for c in reg.conflicts} == {
        ("builders", "bc", "clash", "agentclone.builtins"),
        ("policy_backends", "expert", "agentclone.builtins", "override"),
    }
    assert not reg.failures  # a lost name is reported, it does not fail the plugin
    builtins = next(p for p in reg.plugins if p.name == "agentclone.builtins")
    assert "hf" in builtins.registered["policy_backends"] and "expert" not in builtins.registered["policy_backends"]


def test_a_plugin_that_raises_halfway_registers_nothing(installed_plugins, monkeypatch):
    installed_plugins("half", """
        from agentclone import hookimpl
        from agentclone.envs import TextEnv

        @hookimpl
        def register_environments(register):
            register("half/x-v1", TextEnv)

        @hookimpl
        def register_policy_backends(register):
            register("half-policy", object)
            raise RuntimeError("broken halfway")
    """)
    installed_plugins("fine", ENV_PLUGIN.format(cls="Fine", name="fine", marker=""))
    reg = load(monkeypatch, "half", "fine")
    assert "half/x-v1" not in reg.environments and "half-policy" not in reg.policy_backends
    [failure] = reg.failures
    assert failure.name == "half" and failure.error == "register_policy_backends: RuntimeError: broken halfway"
    assert "half" not in {p.name for p in reg.plugins}
    assert "fine/own-v1" in reg.environments  # the others load
    assert reg.plugin_manager.get_plugin("half") is None  # and it is not called again


@pytest.mark.parametrize("source,message", [
    ("@hookimpl\ndef register_environment(register):\n    pass\n", "unknown hook 'register_environment'"),
    ("@hookimpl\ndef register_environments(reg):\n    pass\n", "reg"),
])
def test_pluggy_validates_hook_implementations(installed_plugins, monkeypatch, source, message):
    installed_plugins("typo", "from agentclone import hookimpl\n" + source)
    reg = load(monkeypatch, "typo")
    [failure] = reg.failures
    assert failure.name == "typo" and message in failure.error


def test_an_undecorated_function_is_not_a_hook(installed_plugins, monkeypatch):
    installed_plugins("plain", """
        from agentclone.envs import TextEnv

        def register_environments(register):
            register("plain/x-v1", TextEnv)
    """)
    reg = load(monkeypatch, "plain")
    assert "plain/x-v1" not in reg.environments and not reg.failures


def test_register_trainers_still_works_and_warns_naming_the_plugin(installed_plugins, monkeypatch):
    installed_plugins("old", """
        from agentclone import hookimpl
        from agentclone.builders.bc import BehaviourCloning

        class Legacy(BehaviourCloning):
            name = "legacy"

        @hookimpl
        def register_trainers(register):
            register("legacy", Legacy)
    """)
    with pytest.warns(DeprecationWarning, match="plugin old: the register_trainers hook is deprecated"):
        reg = load(monkeypatch, "old")
    assert reg.builders["legacy"].__name__ == "Legacy" and reg.trainers["legacy"] is reg.builders["legacy"]
    old = next(p for p in reg.plugins if p.name == "old")
    assert old.registered == {"builders": ["legacy"]} and "register_builders" in old.notes[0]
    with pytest.raises(TypeError):
        reg.trainers["x"] = object  # the old name reads, it does not write
    with pytest.raises(AttributeError):
        reg.trainers = {}


def test_objectives_are_registered_and_made_by_name(installed_plugins, monkeypatch):
    installed_plugins("obj", """
        from agentclone import hookimpl

        class Pairwise:
            def __init__(self, beta: float = 0.1):
                self.beta = beta

        @hookimpl
        def register_objectives(register):
            register("pairwise", Pairwise)
    """)
    with use_registry(load(monkeypatch, "obj")) as reg:
        assert {"sft", "pairwise"} <= set(reg.objectives)
        assert create("objective", "pairwise", beta=0.5).beta == 0.5
        with pytest.raises(OptionError, match=r"objective 'pairwise': option 'beta': expected float"):
            create("objective", "pairwise", beta="high")


def test_load_plugins_matches_entry_point_or_distribution_name(installed_plugins, monkeypatch):
    installed_plugins("named", ENV_PLUGIN.format(cls="Named", name="named", marker=""))
    for selection in ("named", "named-plugin", "named_plugin", " named , textcraft"):
        assert "named/own-v1" in load(monkeypatch, selection).environments, selection
    assert "named/own-v1" not in load(monkeypatch, "textcraft").environments


# -- create: one way to make a thing by name, one error shape ------------------------------------------


@pytest.mark.parametrize("kind,label,table,some", [
    ("environment", "environment", "environments", "textcraft/craft-v1"),
    ("builder", "builder", "builders", "bc"),
    ("step_selector", "step selector", "step_selectors", "progress"),
    ("policy_backend", "policy backend", "policy_backends", "expert"),
    ("objective", "objective", "objectives", "sft"),
    ("format", "trajectory format", "formats", "agentgym"),
])
def test_an_unknown_name_is_one_message_for_every_kind(kind, label, table, some):
    registered = sorted(getattr(get_registry(), table))
    assert some in registered
    with pytest.raises(UnknownNameError) as info:
        create(kind, "nope")
    assert str(info.value) == f"unknown {label} 'nope'; registered: {', '.join(registered)}"
    assert isinstance(info.value, UserError) and isinstance(info.value, KeyError)  # old callers catch KeyError


def test_unknown_name_names_the_plugins_that_failed_to_load(installed_plugins, monkeypatch):
    installed_plugins("broken", "import not_a_module_anywhere\n")
    with use_registry(load(monkeypatch, "broken", "textcraft")):
        with pytest.raises(UnknownNameError, match="registered: textcraft/craft-v1; plugins that failed to load: broken$"):
            make_env("nope/x-v1")


def test_a_bad_option_is_one_message_for_every_kind():
    cases = [
        (("builder", "bc"), {"only_sucessful": True},
         "builder 'bc': option 'only_sucessful': Extra inputs are not permitted (allowed: only_successful,"),
        (("step_selector", "progress"), {"prefer": "sooner"}, "step selector 'progress': option 'prefer': "),
        (("policy_backend", "expert"), {"bogus": 1},
         "policy backend 'expert': option 'bogus': unknown option (allowed: fmt, include_thoughts)"),
        (("policy_backend", "expert"), {"include_thoughts": "yes"},
         "policy backend 'expert': option 'include_thoughts': expected bool, got str 'yes' (allowed: fmt, "),
        (("environment", "textcraft/craft-v1"), {"max_depth": 1, "min_depth": 3},
         "environment 'textcraft/craft-v1': max_depth (1) is below min_depth (3)"),  # the constructor's own check
    ]
    for (kind, name), options, message in cases:
        with pytest.raises(OptionError) as info:
            create(kind, name, **options)
        assert str(info.value).startswith(message), str(info.value)
        assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)  # old callers catch ValueError


def test_create_makes_each_kind_with_its_options():
    assert create("environment", "textcraft/craft-v1", max_depth=1).tasks("train")
    assert create("builder", "bc", only_successful=False).config.only_successful is False
    assert create("step_selector", "progress", prefer="earlier").config.prefer == "earlier"
    assert create("policy_backend", "expert", include_thoughts=False).include_thoughts is False
    assert create("objective", "sft").name == "sft"


# -- check_env_options: names and types, without making the environment ---------------------------------


def test_check_env_options_on_textcraft():
    check_env_options("textcraft/craft-v1", {"max_depth": 2, "heldout_fraction": 1, "max_steps": 5})
    with pytest.raises(OptionError) as info:
        check_env_options("textcraft/craft-v1", {"max_dept": 2})
    assert str(info.value) == (
        "environment 'textcraft/craft-v1': option 'max_dept': unknown option "
        "(allowed: min_depth, max_depth, max_steps, num_distractors, heldout_fraction)"
    )
    with pytest.raises(OptionError, match=r"option 'max_depth': expected int or None, got str 'abc' \(allowed: min_depth"):
        check_env_options("textcraft/craft-v1", {"max_depth": "abc"})
    with pytest.raises(OptionError, match=r"option 'heldout_fraction': expected float, got bool"):
        check_env_options("textcraft/craft-v1", {"heldout_fraction": True})
    with pytest.raises(UnknownNameError, match="unknown environment 'textcraft/craft-v2'"):
        check_env_options("textcraft/craft-v2", {})


class ExpensiveEnv(TextEnv):
    """Stands for an environment that is slow to make (TextWorld compiles games)."""

    def __init__(self, games: int = 3, names: list[str] | None = None, **kwargs) -> None:
        raise AssertionError("check_env_options made the environment")


def test_check_env_options_does_not_make_the_environment():
    reg = get_registry()
    reg.environments["test/expensive-v0"] = ExpensiveEnv
    try:
        check_env_options("test/expensive-v0", {"games": 2, "names": ["a"], "max_steps": 4})  # max_steps: TextEnv's
        for options, option in (({"games": "two"}, "games"), ({"names": "a"}, "names"), ({"bogus": 1}, "bogus")):
            with pytest.raises(OptionError, match=f"option '{option}'.*allowed: games, names, max_steps"):
                check_env_options("test/expensive-v0", options)
    finally:
        reg.environments.pop("test/expensive-v0")


def test_make_env_and_make_selector_go_through_create(counter_env_registered):
    from agentclone.selectors import make_selector

    assert make_env("test/counter-v0", targets=2).env_id == "test/counter-v0"
    with pytest.raises(OptionError, match="environment 'test/counter-v0': option 'targets': expected int"):
        make_env("test/counter-v0", targets="ten")
    with pytest.raises(UnknownNameError, match="unknown step selector 'oracle'; registered: all, disagreement"):
        make_selector("oracle")


class GameFamilyEnv(CounterEnv):
    """Like TextWorld's: a base class the subclasses fill ``settings`` of, and options of its own."""

    def __init__(self, settings: dict, games: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings, self.games = settings, games


class CookingLikeEnv(GameFamilyEnv):
    def __init__(self, recipe: int = 1, **kwargs) -> None:
        super().__init__(settings={"recipe": recipe}, **kwargs)


def test_options_of_base_classes_count_but_what_a_subclass_fills_itself_does_not():
    reg = get_registry()
    reg.environments["test/cooking-v0"] = CookingLikeEnv
    try:
        check_env_options("test/cooking-v0", {"recipe": 2, "games": 1, "max_steps": 3})
        with pytest.raises(OptionError, match=r"option 'settings': unknown option \(allowed: recipe, games, targets, max_steps, crash_on\)"):
            check_env_options("test/cooking-v0", {"settings": {}})
        env = make_env("test/cooking-v0", recipe=2, games=1)
        assert env.settings == {"recipe": 2} and env.games == 1
    finally:
        reg.environments.pop("test/cooking-v0")
