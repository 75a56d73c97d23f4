"""What :meth:`JaxBackend.load` binds once jax is imported, in one place.

The package's modules read ``state.jax`` as an attribute of this module, never
as a copy of their own, so that ``load()`` binds it for all. invad imports
without jax: until ``load()``, it is ``None``.
"""

from __future__ import annotations

from typing import Any

jax: Any = None  # the jax module, bound by JaxBackend.load()
