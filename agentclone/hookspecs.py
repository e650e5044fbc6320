"""Every extension point of agentclone, in one place.

A plugin is a module (or object) with functions named like these hooks and
decorated with ``agentclone.hookimpl`` (undecorated functions are not hooks).
Each hook receives a ``register`` callable; the plugin calls it once per thing
it adds::

    from agentclone import hookimpl

    @hookimpl
    def register_environments(register):
        register("mygame/level-v1", MyGameEnv)

Plugins are found through the entry point group ``agentclone``; docs/plugins.md
has a working example of each kind. ``@hookimpl(tryfirst=True)`` makes a hook run
before the others, so its names win when two plugins register the same one.
"""

import pluggy

hookspec = pluggy.HookspecMarker("agentclone")
hookimpl = pluggy.HookimplMarker("agentclone")


@hookspec
def register_environments(register):
    """Register text environments: ``register(env_id, factory)``; the factory takes keyword options."""


@hookspec
def register_builders(register):
    """Register data builders: ``register(name, builder_class)`` turning trajectories into a training set."""


@hookspec
def register_trainers(register):
    """Deprecated name of ``register_builders``; registers into the same table, with a warning."""


@hookspec
def register_objectives(register):
    """Register training objectives: ``register(name, objective_class)`` (a TRL config and its trainer)."""


@hookspec
def register_step_selectors(register):
    """Register critical-step selectors: ``register(name, selector_class)``."""


@hookspec
def register_policy_backends(register):
    """Register policy backends: ``register(name, backend_class)`` acting on batches of conversations."""


@hookspec
def register_formats(register):
    """Register trajectory file formats: ``register(name, format_class)`` (a ``agentclone.formats.Format``),
    read by ``agentclone import --from NAME`` and written by ``agentclone export --to NAME``."""


@hookspec
def register_models(register):
    """Register model aliases: ``register(alias, resolver)``; the resolver returns a local directory."""
