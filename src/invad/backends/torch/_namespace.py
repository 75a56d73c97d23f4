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


def _copy_public(target: Any, base: Any) -> None:
    """Every public name of ``base`` as an attribute of ``target``, set once: plain attributes
    that Dynamo reads like a module's (a ``__getattr__`` it would trace on every access)."""
    for name in dir(base):
        if not name.startswith("_"):
            setattr(target, name, getattr(base, name))


class _LinalgNamespace:
    """``xp.linalg``: the compat module's, with ``diagonal`` as ``torch.diagonal``."""

    def __init__(self, torch: Any, base: Any) -> None:
        _copy_public(self, base)
        self.diagonal = lambda x, /, *, offset=0: torch.diagonal(x, offset, -2, -1)


class TorchNamespace:
    """``array_api_compat.torch`` with ``matrix_transpose``, ``concat`` and ``linalg.diagonal``
    on ``transpose``, ``cat`` and ``diagonal``; everything else is the compat module's."""

    def __init__(self, torch: Any, base: Any) -> None:
        _copy_public(self, base)
        self.linalg = _LinalgNamespace(torch, base.linalg)
        self.matrix_transpose = _matrix_transpose

        def concat(arrays: Sequence[Any], /, *, axis: int | None = 0) -> Any:
            if axis is None:
                return torch.cat([x.flatten() for x in arrays])
            return torch.cat(tuple(arrays), dim=axis)

        self.concat = concat
        self._name = base.__name__

    def __repr__(self) -> str:
        return f"<invad's torch namespace over {self._name}>"


def _matrix_transpose(x: Any, /) -> Any:
    if x.ndim < 2:
        raise ValueError("x must be at least 2-dimensional for matrix_transpose")
    return x.transpose(-1, -2)
