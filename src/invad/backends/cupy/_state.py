"""What :meth:`CupyBackend.load` binds once cupy is imported: the ``cupy`` and ``cupyx``
modules. The backend reads them here, as attributes of this module, so that tests without
a GPU can bind stand-ins in their place (``tests/test_cupy_standin.py``). The kernels take
the modules as parameters. invad imports without cupy: until ``load()``, they are ``None``.
"""

from __future__ import annotations

from typing import Any

cupy: Any = None
cupyx: Any = None
