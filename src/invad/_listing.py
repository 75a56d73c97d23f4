"""``invad.backends()`` and ``invad.rules()``, re-exported by ``invad``.

They are defined here rather than in ``invad/__init__.py`` because their names
are also those of the subpackages ``invad.backends`` and ``invad.rules``: the
API reference (griffe) resolves ``invad.backends`` to the subpackage, and
``invad._listing.backends`` names the function without ambiguity.
"""

from __future__ import annotations

from .registry import REGISTRY, BackendInfo
from .rules import RULES, Contract


def backends() -> list[BackendInfo]:
    """Every known backend: name, plugin and version, available or why not, AD kind, devices.

    Built-in backends first (numpy, torch, jax, cupy), then third-party plugins
    by entry-point name. Listing loads each backend, importing its framework.
    """
    return REGISTRY.infos()


def rules() -> list[Contract]:
    """The contract of every rule, in the order invad installs them."""
    return [rule.contract for rule in RULES.values()]
