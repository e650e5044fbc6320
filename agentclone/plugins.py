"""The plugin manager: loads built-in and installed plugins, collects what they register, makes things by name.

Installed plugins are setuptools entry points of group ``agentclone``.
``AGENTCLONE_LOAD_PLUGINS`` restricts which of them load: a comma separated list
of entry point names or distribution names (empty string: none). The built-in
pieces (``agentclone.builtins``) always load and register through the same hooks.

Hooks are called through pluggy, one plugin at a time in pluggy's order
(``tryfirst`` first, then the last registered first, ``trylast`` last). What a
plugin registers is staged and kept only if all of its hooks succeed; when two
plugins register the same name, the one called first keeps it (built-ins are
registered last, so they are called first unless a plugin's hook says
``tryfirst``) and the other is listed in ``Registry.conflicts``.

Everything registered is made through one function, with one error message
for an unknown name and one for a bad option::

    create("environment", "textcraft/craft-v1", max_depth=2)
    create("step_selector", "progress", prefer="earlier")
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import traceback
import types
import typing
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import pluggy
from pydantic import BaseModel, ValidationError

from agentclone import hookspecs
from agentclone.errors import UserError

ENTRY_POINT_GROUP = "agentclone"
LOAD_ENV_VAR = "AGENTCLONE_LOAD_PLUGINS"
DEFAULT_PLUGINS = ("agentclone.builtins",)

#: each hook and the Registry table it fills
HOOK_TABLES = {
    "register_environments": "environments",
    "register_builders": "builders",
    "register_trainers": "builders",  # the deprecated name of register_builders
    "register_objectives": "objectives",
    "register_step_selectors": "step_selectors",
    "register_policy_backends": "policy_backends",
    "register_models": "models",
    "register_formats": "formats",
}
DEPRECATED_HOOKS = {"register_trainers": "register_builders"}

#: what ``create`` makes: kind -> (Registry table, the kind's name in messages)
KINDS = {
    "environment": ("environments", "environment"),
    "builder": ("builders", "builder"),
    "step_selector": ("step_selectors", "step selector"),
    "policy_backend": ("policy_backends", "policy backend"),
    "objective": ("objectives", "objective"),
    "format": ("formats", "trajectory format"),
}


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    #: table -> names this plugin registered (and kept)
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: things its author should fix that did not stop it loading (a deprecated hook)
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadFailure:
    name: str
    distribution: str | None
    error: str


@dataclass
class Conflict:
    """A name registered by two plugins: ``kept_by`` was called first and keeps it."""

    table: str
    name: str
    plugin: str
    kept_by: str


class DuplicateRegistrationError(ValueError):
    """One plugin registered the same name twice."""


class UnknownNameError(UserError, KeyError):
    """``create`` was asked for a name nothing registered."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.name = kind, name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class OptionError(UserError, ValueError):
    """An option ``create`` or ``check_options`` cannot accept: unknown name, wrong type, bad value."""

    def __init__(self, kind: str, name: str, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.name, self.option = kind, name, option


class Registry:
    """What all loaded plugins registered, by kind, plus where each came from."""

    def __init__(self) -> None:
        self.environments: dict[str, Callable[..., Any]] = {}
        self.builders: dict[str, Any] = {}
        self.objectives: dict[str, Any] = {}
        self.step_selectors: dict[str, Any] = {}
        self.policy_backends: dict[str, Any] = {}
        self.models: dict[str, Callable[..., Any]] = {}
        self.formats: dict[str, Any] = {}
        self.plugins: list[PluginInfo] = []
        self.failures: list[LoadFailure] = []
        self.conflicts: list[Conflict] = []
        self.plugin_manager: pluggy.PluginManager | None = None

    @property
    def trainers(self) -> Mapping[str, Any]:
        """The old name of ``builders`` (read-only)."""
        return MappingProxyType(self.builders)

    def to_json(self) -> dict:
        return {
            "plugins": [vars(p) for p in self.plugins],
            "failures": [vars(f) for f in self.failures],
            "conflicts": [vars(c) for c in self.conflicts],
        }


# -- loading -------------------------------------------------------------------------------------


def _allowed_entry_points() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV_VAR)
    if raw is None:
        return None
    return {_normalize(part) for part in raw.split(",") if part.strip()}


def _normalize(name: str) -> str:
    # distribution names compare like pip compares them: agentclone_textcraft == agentclone-textcraft
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _check_hook_names(pm: pluggy.PluginManager, plugin: object) -> None:
    """A ``@hookimpl`` whose name is no hook (a typo) would silently never run: refuse the plugin."""
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec() and not all(i.optionalhook for i in caller.get_hookimpls()):
            known = ", ".join(sorted(HOOK_TABLES))
            raise pluggy.PluginValidationError(plugin, f"unknown hook {caller.name!r}; agentclone's hooks: {known}")


def build_registry(extra_plugins: Mapping[str, object] | None = None) -> Registry:
    """Load built-ins and the installed plugins; a broken plugin is reported, not fatal.

    ``extra_plugins`` (name -> module or object) load like installed plugins whether or not
    they are installed (an installed one of the same name is skipped): a plugin's own tests
    use it, with ``use_registry``.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    registry.plugin_manager = pm
    installed: list[PluginInfo] = []

    def failed(info: PluginInfo, exc: BaseException, where: str = "") -> None:
        registry.failures.append(LoadFailure(info.name, info.distribution, f"{where}{type(exc).__name__}: {exc}"))
        if os.environ.get("AGENTCLONE_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)

    def load(info: PluginInfo, get_plugin: Callable[[], object]) -> None:
        try:
            plugin = get_plugin()
            pm.register(plugin, name=info.name)
            _check_hook_names(pm, plugin)
        except Exception as exc:  # a broken plugin must not take the others down
            if pm.has_plugin(info.name):
                pm.unregister(name=info.name)
            failed(info, exc)
            return
        installed.append(info)

    extra = dict(extra_plugins or {})
    allowed = _allowed_entry_points()
    seen: set[str] = set(extra)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if allowed is not None and _normalize(ep.name) not in allowed and _normalize(dist or "") not in allowed:
            continue
        if ep.name in seen:
            continue
        seen.add(ep.name)
        load(PluginInfo(name=ep.name, distribution=dist, version=ep.dist.version if ep.dist else None), ep.load)
    for name, plugin in extra.items():
        load(PluginInfo(name=name, distribution=None), lambda plugin=plugin: plugin)
    # registered last so that pluggy calls them first: a built-in name wins over an installed
    # plugin's unless that plugin's hook is marked tryfirst
    builtin: list[PluginInfo] = []
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        builtin.append(PluginInfo(name=module_name, distribution="agentclone", version=_version("agentclone")))

    infos = {info.name: info for info in builtin + installed}
    errors = _call_hooks(pm, registry, infos)
    for info in infos.values():
        if info.name in errors:
            hook_name, exc = errors[info.name]
            pm.unregister(name=info.name)
            failed(info, exc, where=f"{hook_name}: ")
        else:
            registry.plugins.append(info)
    return registry


def _call_hooks(
    pm: pluggy.PluginManager, registry: Registry, infos: dict[str, PluginInfo]
) -> dict[str, tuple[str, Exception]]:
    """Call every plugin's hooks in pluggy's order, then keep what each plugin whose hooks all
    succeeded registered; return the failing hook and its exception for each plugin that failed."""
    staged: list[tuple[str, str, str, Any]] = []  # (plugin, table, name, thing) in call order
    errors: dict[str, tuple[str, Exception]] = {}
    for hook_name, table in HOOK_TABLES.items():
        called: set[str] = set()
        # get_hookimpls() lists implementations in the reverse of the order pluggy calls them
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            plugin = impl.plugin_name
            if plugin in errors or plugin in called:
                continue
            called.add(plugin)
            if hook_name in DEPRECATED_HOOKS:
                note = f"plugin {plugin}: the {hook_name} hook is deprecated; rename it {DEPRECATED_HOOKS[hook_name]}"
                warnings.warn(note, DeprecationWarning, stacklevel=2)
                infos[plugin].notes.append(note)
            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            try:
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=_stager(staged, plugin, table))
            except Exception as exc:
                errors[plugin] = (hook_name, exc)
    owners: dict[tuple[str, str], str] = {}
    for plugin, table, name, thing in staged:
        if plugin in errors:
            continue
        owner = owners.get((table, name))
        if owner is not None:
            registry.conflicts.append(Conflict(table, name, plugin, kept_by=owner))
            continue
        owners[(table, name)] = plugin
        getattr(registry, table)[name] = thing
        infos[plugin].registered.setdefault(table, []).append(name)
    return errors


def _stager(staged: list, plugin: str, table: str) -> Callable[[str, Any], None]:
    def register(name: str, thing: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"register() takes a non-empty name string first, got {name!r}")
        if any(p == plugin and t == table and n == name for p, t, n, _ in staged):
            raise DuplicateRegistrationError(f"{plugin} registers {name!r} in {table} twice")
        staged.append((plugin, table, name, thing))

    return register


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The registry everything is made from, built on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = build_registry()
    return _REGISTRY


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one ``get_registry`` (and so ``create``) uses, inside the block."""
    global _REGISTRY
    previous, _REGISTRY = _REGISTRY, registry
    try:
        yield registry
    finally:
        _REGISTRY = previous


# -- making things by name -----------------------------------------------------------------------


def lookup(kind: str, name: str) -> Any:
    """The class or factory registered as ``name`` of ``kind``; ``UnknownNameError`` if there is none."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    table_name, label = KINDS[kind]
    registry = get_registry()
    table = getattr(registry, table_name)
    if name in table:
        return table[name]
    message = f"unknown {label} {name!r}; registered: {', '.join(sorted(table)) or 'none'}"
    if registry.failures:
        message += "; plugins that failed to load: " + ", ".join(f.name for f in registry.failures)
    raise UnknownNameError(kind, name, message)


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Make the registered ``name`` of ``kind`` (environment, builder, step_selector,
    policy_backend, objective, format) with ``options``.

    A class with a pydantic ``Config`` gets the options as one dict (validated by the
    Config); anything else gets them as keyword arguments (checked against its signature
    first). An unknown name raises ``UnknownNameError``, a bad option ``OptionError``:
    ``<kind> 'name': option 'key': message (allowed: ...)``.
    """
    factory = lookup(kind, name)
    check_options(kind, name, options)
    try:
        if _config_class(factory) is not None:
            return factory(options)
        return factory(**options)
    except UserError:
        raise
    except ValidationError as exc:
        raise _validation_error(kind, name, exc, _allowed(kind, factory)) from exc
    except TypeError as exc:
        raise _type_error(kind, name, exc, _allowed(kind, factory)) from exc
    except ValueError as exc:  # a constructor refusing a value: name the thing, keep its message
        raise OptionError(kind, name, f"{KINDS[kind][1]} {name!r}: {exc}") from exc


def check_options(kind: str, name: str, options: Mapping[str, Any]) -> None:
    """Check option names and simple types for ``create(kind, name, **options)`` without making
    anything: the Config validates for Config classes, the signature and its type hints otherwise."""
    factory = lookup(kind, name)
    config = _config_class(factory)
    if config is not None:
        try:
            config.model_validate(dict(options))
        except ValidationError as exc:
            raise _validation_error(kind, name, exc, list(config.model_fields)) from None
        return
    params, open_ended = _keyword_options(factory, follow_kwargs=kind == "environment")
    allowed = list(params)

    def bad(option: str, message: str) -> OptionError:
        return OptionError(kind, name, _option_message(kind, name, option, message, allowed), option)

    for key, value in options.items():
        if key not in params:
            if open_ended:
                continue
            raise bad(key, "unknown option")
        expected = params[key].annotation
        if _matches(value, expected) is False:
            raise bad(key, f"expected {_describe(expected)}, got {type(value).__name__} {value!r}")
    if not open_ended:
        for key, param in params.items():
            if param.default is inspect.Parameter.empty and key not in options:
                raise bad(key, "required, not given")


def _option_message(kind: str, name: str, option: str, message: str, allowed: list[str] | None) -> str:
    text = f"{KINDS[kind][1]} {name!r}: option '{option}': {message}"
    if allowed is not None:
        text += f" (allowed: {', '.join(allowed) or 'none'})"
    return text


def _validation_error(kind: str, name: str, exc: ValidationError, allowed: list[str] | None) -> OptionError:
    first = exc.errors()[0]
    option = ".".join(str(p) for p in first["loc"])
    if not option:  # a check of the whole config, not of one field
        return OptionError(kind, name, f"{KINDS[kind][1]} {name!r}: {first['msg']}")
    return OptionError(kind, name, _option_message(kind, name, option, first["msg"], allowed), option)


def _type_error(kind: str, name: str, exc: TypeError, allowed: list[str] | None) -> OptionError:
    text = str(exc)
    for pattern, message in ((r"unexpected keyword argument '(\w+)'", "unknown option"),
                             (r"missing \d+ required \S* ?arguments?: '(\w+)'", "required, not given")):
        m = re.search(pattern, text)
        if m:
            return OptionError(kind, name, _option_message(kind, name, m.group(1), message, allowed), m.group(1))
    return OptionError(kind, name, f"{KINDS[kind][1]} {name!r}: {text}")


def _config_class(factory: Any) -> type[BaseModel] | None:
    config = getattr(factory, "Config", None)
    if inspect.isclass(factory) and inspect.isclass(config) and issubclass(config, BaseModel):
        return config
    return None


def _allowed(kind: str, factory: Any) -> list[str] | None:
    config = _config_class(factory)
    if config is not None:
        return list(config.model_fields)
    params, open_ended = _keyword_options(factory, follow_kwargs=kind == "environment")
    return None if open_ended else list(params)


def _keyword_options(factory: Any, follow_kwargs: bool) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword options ``factory`` takes (name -> parameter, its annotation resolved) and
    whether it takes others too (a ``**kwargs`` that nothing further up resolves).

    With ``follow_kwargs`` (environments: ``TextEnv`` documents it), a ``**kwargs`` in a class's
    ``__init__`` is followed to the next ``__init__`` up the class hierarchy, as subclasses pass
    the options they do not know on to ``super().__init__``; a parameter without default up
    there is one the subclass fills itself, not an option. Otherwise ``**kwargs`` takes anything.
    """
    if inspect.isclass(factory):
        functions = [k.__dict__["__init__"] for k in factory.__mro__ if k is not object and "__init__" in k.__dict__]
        functions = functions if follow_kwargs else functions[:1]
        skip_first = True
    else:
        functions, skip_first = [factory], False
    params: dict[str, inspect.Parameter] = {}
    for depth, function in enumerate(functions):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin without a signature: cannot tell
            return params, True
        hints = _type_hints(function)
        more = False
        for i, param in enumerate(signature.parameters.values()):
            if skip_first and i == 0:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                more = True
            elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
                if depth and param.default is inspect.Parameter.empty:
                    continue
                params.setdefault(param.name, param.replace(annotation=hints.get(param.name, inspect.Parameter.empty)))
        if not more:
            return params, False
    return params, True


def _type_hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # a hint naming something not importable here: check names only
        return {}


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the type hint ``hint``: True, False, or None when we do not judge
    (anything but plain scalars, containers and their unions). None always fits: passing None
    commonly means "the default", whatever the hint says, and the constructor decides."""
    if hint is inspect.Parameter.empty or hint is Any or value is None:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, arg) for arg in typing.get_args(hint)]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is None or hint is type(None):
        return value is None
    base = origin or hint
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, (str, os.PathLike))
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    if base is dict:
        return isinstance(value, dict)
    return None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is None or hint is type(None):
        return "None"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))
