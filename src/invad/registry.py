"""The plugin manager: finds backend plugins, isolates their failures, installs backends."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .backend import Backend, type_name
from .errors import BackendNotFoundError

#: Built-in backends, registered as plugins like any third-party one, each with the
#: top-level modules its ``load`` imports (what ``Backend.requires`` says for a plugin):
#: telling that one is missing then costs a file-system look-up, not an import.
BUILTIN_PLUGINS: dict[str, tuple[str, ...]] = {
    "invad.backends.numpy": ("numpy", "scipy"),
    "invad.backends.torch": ("torch",),
    "invad.backends.jax": ("jax",),
    "invad.backends.cupy": ("cupy",),
    "invad.backends.dask": ("dask",),
}


@dataclass(frozen=True)
class BackendInfo:
    """One row of ``invad.backends()``."""

    name: str
    plugin: str
    plugin_version: str | None
    available: bool
    reason: str | None
    version: str | None
    native_ad: bool
    devices: tuple[str, ...]


@dataclass
class _Entry:
    """A backend name and what provides it: a backend object, or the failure that stands for it."""

    name: str
    plugin: str
    plugin_version: str | None
    backend: Backend | None = None
    error: BaseException | None = None
    loaded: bool = False
    #: The modules the backend's ``load`` imports (``Backend.requires``); may be empty.
    requires: tuple[str, ...] = ()


@dataclass
class Registry:
    """Backends by name. Safe under concurrent first use: discovery and each backend's
    ``load`` run once, under :attr:`lock`, and their results are published (the flags
    read without the lock) only once complete."""

    pm: pluggy.PluginManager = field(
        default_factory=lambda: pluggy.PluginManager(hookspecs.PROJECT)
    )
    entries: dict[str, _Entry] = field(default_factory=dict)
    _discovered: bool = False
    #: Reentrant: a plugin's import or ``load`` may ask the registry for another backend.
    lock: threading.RLock = field(default_factory=threading.RLock)

    def discover(self) -> None:
        """Register the built-in plugins and the entry points of group ``invad``, once."""
        if self._discovered:
            return
        with self.lock:
            if not self._discovered:
                self._discover()
                self._discovered = True

    def _discover(self) -> None:
        self.pm.add_hookspecs(hookspecs)
        from . import __version__

        for module in BUILTIN_PLUGINS:
            self._register(
                module.rsplit(".", 1)[-1],
                module,
                __version__,
                lambda m=module: importlib.import_module(m),
            )
        # Sorted, so that which plugin is named first in a clash does not depend on sys.path order.
        for ep in sorted(
            importlib.metadata.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name
        ):
            version = ep.dist.version if ep.dist is not None else None
            plugin = ep.dist.name if ep.dist is not None else ep.value
            self._register(ep.name, plugin, version, ep.load)

    def _register(self, entry_name: str, plugin: str, version: str | None, load: Any) -> None:
        try:
            obj = load()
            if self.pm.is_registered(obj):
                return
            self.pm.register(
                obj, name=plugin if self.pm.get_plugin(plugin) is None else f"{plugin}:{entry_name}"
            )
            impls = [i for i in self.pm.hook.invad_backends.get_hookimpls() if i.plugin is obj]
            backends: list[Backend] = [b for impl in impls for b in impl.function()]  # type: ignore[attr-defined]
        except Exception as exc:
            self._add(_Entry(entry_name, plugin, version, error=exc))
            return
        for backend in backends:
            requires = tuple(backend.requires) or BUILTIN_PLUGINS.get(plugin, ())
            self._add(_Entry(backend.name, plugin, version, backend=backend, requires=requires))

    def _add(self, entry: _Entry) -> None:
        """Record a backend; a second claim on its name is reported, never resolved silently.

        A built-in backend keeps its name and the plugin that claimed it is
        listed as failed; two third-party plugins claiming one name both lose it.
        """
        other = self.entries.get(entry.name)
        if other is None:
            self.entries[entry.name] = entry
            return
        if other.plugin in BUILTIN_PLUGINS:
            refused = LookupError(
                f"backend name {entry.name!r} belongs to invad's built-in plugin {other.plugin!r}; "
                f"plugin {entry.plugin!r} cannot claim it"
            )
            key = f"{entry.name} ({entry.plugin})"
            self.entries[key] = _Entry(key, entry.plugin, entry.plugin_version, error=refused)
            return
        clash = LookupError(
            f"backend name {entry.name!r} is claimed by both plugin {other.plugin!r} and plugin "
            f"{entry.plugin!r}; uninstall one of them"
        )
        self.entries[entry.name] = _Entry(
            entry.name, f"{other.plugin}, {entry.plugin}", None, error=clash
        )

    def _load(self, entry: _Entry) -> None:
        if entry.loaded or entry.backend is None:
            return
        with self.lock:
            if entry.loaded:
                return
            try:
                entry.backend.load()
            except Exception as exc:
                entry.error = exc
            entry.loaded = True

    def infos(self) -> list[BackendInfo]:
        self.discover()
        rows = []
        for entry in self.entries.values():
            self._load(entry)
            backend = entry.backend
            ok = backend is not None and entry.error is None
            rows.append(
                BackendInfo(
                    name=entry.name,
                    plugin=entry.plugin,
                    plugin_version=entry.plugin_version,
                    available=ok,
                    reason=None if ok else _reason(entry.error),
                    version=backend.version() if ok and backend is not None else None,
                    native_ad=backend.native_ad if backend is not None else False,
                    devices=tuple(backend.devices()) if ok and backend is not None else (),
                )
            )
        return rows

    def backend(self, name: str) -> Backend:
        """The loaded backend called ``name``, or BackendNotFoundError."""
        self.discover()
        entry = self.entries.get(name)
        if entry is not None:
            self._load(entry)
            if entry.backend is not None and entry.error is None:
                return entry.backend
        raise BackendNotFoundError(self._not_found_message(name)) from (
            entry.error if entry else None
        )

    def owner_of(self, x: Any) -> Backend:
        """The backend that top-level dispatch sends ``x`` to: the first that owns it.

        Backends are asked in the order they were registered: the built-in ones
        (numpy, torch, jax, cupy), then third-party plugins by entry-point name.
        When more than one owns ``x``, a ``UserWarning`` names them all and the one
        chosen; ``invad.install(name)`` gives the ops of any of them.
        """
        self.discover()
        owners = [
            entry
            for entry in self.entries.values()
            if entry.backend is not None and entry.error is None and entry.backend.owns(x)
        ]
        chosen = None
        for entry in owners:
            self._load(entry)
            if entry.error is None:
                chosen = entry
                break
        if chosen is None:
            raise TypeError(
                "invad: no installed backend owns arrays of type "
                f"{type(x).__module__}.{type(x).__qualname__}"
            )
        if len(owners) > 1:
            others = [e for e in owners if e is not chosen]
            listed = ", ".join(f"{e.name!r} (plugin {e.plugin!r})" for e in owners)
            warnings.warn(
                f"invad: arrays of type {type_name(x)} are owned by several backends: {listed}; "
                f"top-level dispatch (invad.solve(...), ...) uses {chosen.name!r}, the first "
                "registered (built-in "
                "backends first, then plugins by entry-point name). For another, call its ops: "
                f"invad.install({others[0].name!r}).solve(...)",
                UserWarning,
                stacklevel=4,  # the caller of invad.solve(...)
            )
        assert chosen.backend is not None
        return chosen.backend

    def _not_found_message(self, name: str) -> str:
        entry = self.entries.get(name)
        head = (
            f"backend {name!r} is not available: {_reason(entry.error)}"
            if entry is not None and entry.error is not None
            else f"no backend named {name!r}"
        )
        available, failed = [], []
        for other in self.entries.values():
            reason = self._unavailable_without_import(other)
            if reason is None:
                available.append(other.name)
            elif other.name != name:
                failed.append(f"{other.name} ({reason})")
        lines = [head, f"available backends: {', '.join(available) or 'none'}"]
        if failed:
            lines.append("unavailable: " + "; ".join(failed))
        return "\n".join(lines)

    def _unavailable_without_import(self, entry: _Entry) -> str | None:
        """Why ``entry`` cannot be installed, or ``None``, importing no framework if possible.

        A backend not loaded yet that declares the modules it needs counts as
        available when they are all installed: importing torch and jax just to
        list them would make an error about a missing CuPy take seconds. Without
        that declaration the backend is loaded to find out.
        """
        if not entry.loaded and entry.backend is not None and entry.requires:
            for module in entry.requires:
                try:
                    found = importlib.util.find_spec(module) is not None
                except (ImportError, ValueError):
                    found = False
                if not found:
                    return f"{module} is not installed"
            return None
        self._load(entry)
        if entry.backend is not None and entry.error is None:
            return None
        return _reason(entry.error)


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "unknown"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


REGISTRY = Registry()
