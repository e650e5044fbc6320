"""The plugin manager: loads built-in and installed plugins and collects what they register.

``AGENTCLONE_LOAD_PLUGINS`` restricts which installed plugins load: a comma
separated list of entry point names or distribution names (empty string: none).
Built-in pieces always load; they register through the same hooks.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from agentclone import hookspecs

ENTRY_POINT_GROUP = "agentclone"
LOAD_ENV_VAR = "AGENTCLONE_LOAD_PLUGINS"
KINDS = ("environments", "trainers", "step_selectors", "policy_backends", "models")
DEFAULT_PLUGINS = (
    "agentclone.builtins",
)


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class LoadFailure:
    name: str
    distribution: str | None
    error: str


class DuplicateRegistrationError(ValueError):
    pass


class Registry:
    """What all loaded plugins registered, by kind, plus where each came from."""

    def __init__(self) -> None:
        self.environments: dict[str, Callable[..., Any]] = {}
        self.trainers: dict[str, Any] = {}
        self.step_selectors: dict[str, Any] = {}
        self.policy_backends: dict[str, Any] = {}
        self.models: dict[str, Callable[..., Any]] = {}
        self.plugins: list[PluginInfo] = []
        self.failures: list[LoadFailure] = []

    def to_json(self) -> dict:
        return {
            "plugins": [vars(p) for p in self.plugins],
            "failures": [vars(f) for f in self.failures],
        }


def _registrar(registry: Registry, info: PluginInfo, kind: str):
    table = getattr(registry, kind)

    def register(name: str, obj: Any) -> None:
        if name in table:
            raise DuplicateRegistrationError(f"{kind[:-1]} {name!r} is registered twice (second by {info.name})")
        table[name] = obj
        info.registered.setdefault(kind, []).append(name)

    return register


def _collect(registry: Registry, plugin: object, info: PluginInfo) -> None:
    for kind in KINDS:
        hook = getattr(plugin, f"register_{kind}", None)
        if hook is not None:
            hook(register=_registrar(registry, info, kind))


def _allowed_entry_points() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV_VAR)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def build_registry() -> Registry:
    """Load built-ins and every installed plugin; a broken plugin is reported, not fatal."""
    pm = pluggy.PluginManager("agentclone")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        info = PluginInfo(name=module_name, distribution="agentclone", version=_version("agentclone"))
        _collect(registry, module, info)
        registry.plugins.append(info)

    allowed = _allowed_entry_points()
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if allowed is not None and ep.name not in allowed and (dist or "") not in allowed:
            continue
        if ep.name in seen:
            continue
        seen.add(ep.name)
        info = PluginInfo(name=ep.name, distribution=dist, version=ep.dist.version if ep.dist else None)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
            _collect(registry, module, info)
        except Exception as exc:  # a broken plugin must not take the others down
            registry.failures.append(
                LoadFailure(name=ep.name, distribution=dist, error=f"{type(exc).__name__}: {exc}")
            )
            if os.environ.get("AGENTCLONE_DEBUG"):
                traceback.print_exc(file=sys.stderr)
            continue
        registry.plugins.append(info)
    return registry


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = build_registry()
    return _REGISTRY
