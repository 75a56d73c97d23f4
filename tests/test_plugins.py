"""Plugin discovery and failure isolation: throwaway plugin modules behind fake entry points."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

from invad import BackendNotFoundError
from invad.registry import Registry

PLUGINS = {
    "broken_import": "raise ImportError('this plugin cannot import')",
    "broken_hook": """
        from invad.hookspecs import hookimpl

        @hookimpl
        def invad_backends():
            raise RuntimeError('this hook raised')
    """,
    "clash_numpy": """
        from invad.backends.numpy import NumpyBackend
        from invad.hookspecs import hookimpl

        @hookimpl
        def invad_backends():
            return [NumpyBackend()]
    """,
    "good_plugin": """
        from invad.backends.numpy import NumpyBackend
        from invad.hookspecs import hookimpl

        class Second(NumpyBackend):
            name = "second-numpy"

        @hookimpl
        def invad_backends():
            return [Second()]
    """,
    "missing_framework": """
        from invad.backend import Backend
        from invad.hookspecs import hookimpl

        class Missing(Backend):
            name = "missing"

            def load(self):
                import a_framework_that_is_not_installed

        @hookimpl
        def invad_backends():
            return [Missing()]
    """,
}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A fresh registry that discovers the throwaway plugins named in the test's parameters."""
    for name, source in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in PLUGINS:
        sys.modules.pop(name, None)

    def make(*names: str) -> Registry:
        eps = importlib.metadata.EntryPoints(
            importlib.metadata.EntryPoint(name=n, value=n, group="invad") for n in names
        )
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)
        return Registry()

    return make


def infos_by_name(registry: Registry) -> dict:
    return {i.name: i for i in registry.infos()}


def test_a_good_third_party_plugin_is_found(registry):
    reg = registry("good_plugin")
    info = infos_by_name(reg)["second-numpy"]
    assert info.available and info.plugin == "good_plugin"
    assert reg.backend("second-numpy").name == "second-numpy"


def test_a_plugin_that_fails_to_import_is_reported_and_isolated(registry):
    reg = registry("broken_import", "good_plugin")
    infos = infos_by_name(reg)
    assert not infos["broken_import"].available
    assert infos["broken_import"].reason == "ImportError: this plugin cannot import"
    assert infos["numpy"].available and infos["second-numpy"].available
    with pytest.raises(BackendNotFoundError, match="this plugin cannot import") as exc:
        reg.backend("broken_import")
    assert isinstance(exc.value.__cause__, ImportError)
    assert reg.backend("numpy").name == "numpy"


def test_a_plugin_whose_hook_raises_is_reported_and_isolated(registry):
    reg = registry("broken_hook")
    infos = infos_by_name(reg)
    assert infos["broken_hook"].reason == "RuntimeError: this hook raised"
    assert infos["numpy"].available


def test_a_name_clash_is_reported_not_resolved(registry):
    reg = registry("clash_numpy")
    info = infos_by_name(reg)["numpy"]
    assert not info.available and "claimed by both plugin" in info.reason
    with pytest.raises(BackendNotFoundError, match="claimed by both"):
        reg.backend("numpy")


def test_a_missing_framework_makes_the_backend_unavailable_with_its_reason(registry):
    reg = registry("missing_framework")
    info = infos_by_name(reg)["missing"]
    assert not info.available
    assert info.reason == "ModuleNotFoundError: No module named 'a_framework_that_is_not_installed'"
    with pytest.raises(BackendNotFoundError) as exc:
        reg.backend("missing")
    assert "available backends: numpy" in str(exc.value)
    assert isinstance(exc.value.__cause__, ModuleNotFoundError)
