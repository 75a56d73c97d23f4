"""The array namespace the rules get on torch: ``array_api_compat.torch``, with the
few functions they call in derivatives spelled as the aten ops that every torch
batching mechanism knows.

``array_api_compat`` writes ``matrix_transpose`` as ``torch.swapaxes``,
``linalg.diagonal`` as ``torch.linalg.diagonal`` and ``concat`` as
``torch.concat``: aliases that torch decomposes before batching under
``torch.func.vmap``, but not inside the ``jvp`` of a custom Function batched by
torch's other vmap (``torch.autograd.functional.jacobian(vectorize=True)``,
``grad(is_grads_batched=True)``, gradcheck's batched checks), which then fails
on them. ``transpose``, ``diagonal`` and ``cat`` are what they stand for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class _LinalgNamespace:
    """``xp.linalg``: the compat module's, with ``diagonal`` as ``torch.diagonal``."""

    def __init__(self, torch: Any, base: Any) -> None:
        self._torch = torch
        self._base = base

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._base, name)
        setattr(self, name, value)  # looked up once
        return value

    def diagonal(self, x: Any, /, *, offset: int = 0) -> Any:
        return self._torch.diagonal(x, offset, -2, -1)


class TorchNamespace:
    """``array_api_compat.torch`` with ``matrix_transpose``, ``concat`` and ``linalg.diagonal``
    on ``transpose``, ``cat`` and ``diagonal``; everything else is the compat module's."""

    def __init__(self, torch: Any, base: Any) -> None:
        self._torch = torch
        self._base = base
        self.linalg = _LinalgNamespace(torch, base.linalg)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._base, name)
        setattr(self, name, value)  # looked up once
        return value

    def __repr__(self) -> str:
        return f"<invad's torch namespace over {self._base.__name__}>"

    def matrix_transpose(self, x: Any, /) -> Any:
        if x.ndim < 2:
            raise ValueError("x must be at least 2-dimensional for matrix_transpose")
        return x.transpose(-1, -2)

    def concat(self, arrays: Sequence[Any], /, *, axis: int | None = 0) -> Any:
        if axis is None:
            return self._torch.cat([x.flatten() for x in arrays])
        return self._torch.cat(tuple(arrays), dim=axis)
