"""Plugin discovery and failure isolation, with throwaway plugin distributions made by the tests."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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
    "clash_a": """
        from invad.backends.numpy import NumpyBackend
        from invad.hookspecs import hookimpl

        class Shared(NumpyBackend):
            name = "shared"

        @hookimpl
        def invad_backends():
            return [Shared()]
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
PLUGINS["clash_b"] = PLUGINS["clash_a"]  # a second distribution claiming "shared"
# Two backends of different names that own the same array type.
for letter in "ab":
    PLUGINS[f"owner_{letter}"] = f"""
        from invad.backends.numpy import NumpyBackend
        from invad.hookspecs import hookimpl

        class Owner(NumpyBackend):
            name = "owner-{letter}"

            def owns(self, x):
                return type(x).__name__ == "SharedArray"

        @hookimpl
        def invad_backends():
            return [Owner()]
    """


def make_distribution(site: Path, plugin: str) -> None:
    """A throwaway installed distribution: a plugin module, a dist-info naming its entry point."""
    (site / f"{plugin}.py").write_text(textwrap.dedent(PLUGINS[plugin]))
    info = site / f"{plugin}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {plugin}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[invad]\n{plugin} = {plugin}\n")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A fresh registry that discovers the throwaway distributions a test names, and no others."""

    def make(*names: str) -> Registry:
        site = tmp_path / "site"
        site.mkdir()
        for name in names:
            make_distribution(site, name)
        monkeypatch.syspath_prepend(str(site))
        for name in PLUGINS:
            sys.modules.pop(name, None)
        found = importlib.metadata.entry_points(group="invad")
        ours = importlib.metadata.EntryPoints(ep for ep in found if ep.name in names)
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: ours)
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


def test_a_name_clash_between_plugins_is_reported_not_resolved(registry):
    reg = registry("clash_a", "clash_b")
    info = infos_by_name(reg)["shared"]
    assert not info.available
    assert info.reason == (
        "LookupError: backend name 'shared' is claimed by both plugin 'clash_a' and plugin "
        "'clash_b'; uninstall one of them"
    )
    with pytest.raises(BackendNotFoundError, match="claimed by both"):
        reg.backend("shared")
    assert reg.backend("numpy").name == "numpy"


def test_a_plugin_cannot_take_a_built_in_name(registry):
    reg = registry("clash_numpy")
    infos = infos_by_name(reg)
    assert infos["numpy"].available and infos["numpy"].plugin == "invad.backends.numpy"
    refused = infos["numpy (clash_numpy)"]
    assert not refused.available and "belongs to invad's built-in plugin" in refused.reason


def test_a_missing_framework_makes_the_backend_unavailable_with_its_reason(registry):
    reg = registry("missing_framework")
    info = infos_by_name(reg)["missing"]
    assert not info.available
    assert info.reason == "ModuleNotFoundError: No module named 'a_framework_that_is_not_installed'"
    with pytest.raises(BackendNotFoundError) as exc:
        reg.backend("missing")
    assert "available backends: numpy" in str(exc.value)
    assert isinstance(exc.value.__cause__, ModuleNotFoundError)


def test_invad_backends_shows_broken_plugins_and_numpy_still_installs(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("broken_import", "broken_hook", "clash_numpy"):
        make_distribution(site, name)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    script = "import invad, numpy; print(invad.install('numpy').inv(numpy.eye(2) * 2)[0, 0])"
    ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() == "0.5"
    listing = subprocess.run(
        [sys.executable, "-m", "invad", "backends"], env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[2:]}
    assert "no: ImportError: this plugin cannot import" in rows["broken_import"]
    assert "no: RuntimeError: this hook raised" in rows["broken_hook"]
    assert "belongs to invad's built-in plugin" in listing.stdout


class SharedArray:
    """An array type that both owner_a and owner_b claim."""


def test_two_backends_owning_one_array_type_warn_naming_both(registry):
    reg = registry("owner_b", "owner_a")
    with pytest.warns(UserWarning, match="owned by several backends") as record:
        chosen = reg.owner_of(SharedArray())
    assert chosen.name == "owner-a"  # the first registered: plugins by entry-point name
    (message,) = [str(w.message) for w in record]
    assert "'owner-a' (plugin 'owner_a')" in message and "'owner-b' (plugin 'owner_b')" in message
    assert "uses 'owner-a'" in message and "invad.install('owner-b')" in message


def test_one_owner_does_not_warn(registry, recwarn):
    reg = registry("owner_a")
    assert reg.owner_of(SharedArray()).name == "owner-a"
    assert reg.owner_of(np.ones(2)).name == "numpy"
    assert not [w for w in recwarn if "several backends" in str(w.message)]


def test_a_missing_framework_is_reported_without_importing_the_others():
    script = textwrap.dedent(
        """
        import sys, time
        import invad
        from invad.registry import REGISTRY

        REGISTRY.discover()
        start = time.perf_counter()
        try:
            invad.install("cupy")
        except invad.BackendNotFoundError as exc:
            message = str(exc)
        print(round(time.perf_counter() - start, 3))
        print(sorted(m for m in ("torch", "jax", "cupy") if m in sys.modules))
        print(message)
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    seconds, imported, *message = ran.stdout.splitlines()
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here")
    assert imported == "[]"  # listing torch and jax as available imported neither
    assert float(seconds) < 0.5, seconds
    assert message[0].startswith("backend 'cupy' is not available: ImportError: cupy is not")
    assert message[1].startswith("available backends: numpy")
