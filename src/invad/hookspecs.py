"""The plugin API: the hooks that an invad plugin implements.

A plugin is any module or object registered with invad's pluggy plugin
manager (project name ``"invad"``). Built-in backends are registered that way;
third-party packages declare an entry point in the group ``invad``, whose
name should be the backend's name::

    [project.entry-points.invad]
    mybackend = "invad_mybackend.plugin"

and implement the hooks below, decorated with :data:`hookimpl`. What a
backend must provide is the :class:`invad.backend.Backend` class: subclass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import Backend

PROJECT = "invad"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def invad_backends() -> Sequence[Backend]:  # type: ignore[empty-body]
    """Return the backends that this plugin provides.

    Called once per process, the first time invad lists or installs
    backends, on each plugin separately: an exception raised here marks
    this plugin as failed (shown by ``invad backends`` with its reason) and
    leaves every other plugin working.

    Must be cheap and must not import the backend's framework: a backend
    whose framework is missing is still returned, and says so from
    :meth:`Backend.load <invad.backend.Backend.load>`. Two plugins that
    return backends of the same name are both reported as failed; invad
    never picks one silently.
    """
