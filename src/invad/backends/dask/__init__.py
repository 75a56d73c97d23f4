"""The Dask backend: invad's ops on chunked Dask arrays, computed by ``dask.distributed``.

Nothing here schedules anything: an op builds a Dask task graph and returns
lazy Dask arrays; Dask's schedulers (threads, processes, or a
``dask.distributed`` cluster) run it. Each task computes one block of the
batch with the rule and the kernels of the block's framework: NumPy's for
NumPy chunks, CuPy's for CuPy chunks (:mod:`._chunks`). How a call becomes a
graph is in :mod:`._graph`:

- the batch dimensions keep the user's chunks, aligned between the inputs
  and broadcast as ``dask.array.blockwise`` aligns them;
- the dimensions of one problem (the matrix, ``pivots``' row, solve's
  vector ``b``; every dimension for ``tensorinv`` and ``tensorsolve``, which
  have no batch) are brought into one chunk (``rechunk``) when they are not;
- shapes, dtypes and metas of the results are found at call time by running
  the rule on empty blocks, so nothing is computed then; bad shapes and dtypes
  raise then, by the rule's own check;
- a singular matrix raises ``numpy.linalg.LinAlgError`` when the block that
  holds it is computed, naming the batch index in the whole array;
- ``ops.jvp`` and ``ops.vjp`` (:meth:`DaskBackend.derivatives`) add to the
  forward graph one task per block that evaluates the rule's ``jvp`` or
  ``vjp`` with that block's residuals: the factorization is made once per
  block, however many of the results are computed together.

Detection is cheap: ``dask`` is looked up, not imported, until the backend
is installed (``invad backends`` must not pay for ``import dask.array``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...backend import Backend, Derivatives, not_accepted
from ...hookspecs import hookimpl
from ...rules import Linalg, Rule

INSTALL_HINT = "install it with: pip install 'invad[dask]'"


class DaskBackend(Backend):
    name = "dask"
    native_ad = False
    raises_on_singular = True
    array_type = "dask.array.Array (or a numpy.ndarray, taken as one chunk)"
    requires = ("dask",)

    def load(self) -> None:
        # find_spec, not import: listing backends must stay fast, and ``import dask.array``
        # costs most of a second. A broken dask shows when the backend is installed.
        if importlib.util.find_spec("dask") is None:
            raise ImportError(f"dask is not installed (No module named 'dask'); {INSTALL_HINT}")

    def version(self) -> str | None:
        try:
            return importlib.metadata.version("dask")
        except importlib.metadata.PackageNotFoundError:
            return None

    def owns(self, x: Any) -> bool:
        # A Dask array exists only once dask.array is imported: no import here.
        module = sys.modules.get("dask.array")
        return module is not None and isinstance(x, module.Array)

    def namespace(self) -> Any:
        try:
            import array_api_compat.dask.array as xp
        except ImportError as exc:
            raise ImportError(
                f"dask is installed but dask.array cannot be imported ({exc}); {INSTALL_HINT}"
            ) from exc
        return xp

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError  # what each block's NumPy or CuPy kernels raise

    def readable(self, arrays: Sequence[Any]) -> bool:
        return False  # lazy: each block's values are checked where it is computed

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """Dask arrays as they are; a NumPy (or CuPy) array as a Dask array of one chunk,
        as ``dask.array`` functions take them; anything else is a TypeError."""
        import dask.array as da

        out = []
        for name, x in zip(names, args):
            if not isinstance(x, da.Array):
                if not hasattr(x, "__array_function__") or not hasattr(x, "shape"):
                    raise TypeError(not_accepted(self, op, name, x))
                x = da.from_array(x, chunks=-1)
            out.append(x)
        return tuple(out)

    def adopt(self, x: Any, like: Any) -> Any:
        import dask.array as da

        return da.from_array(x, chunks=-1)

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        from ._graph import lazy_op

        return lazy_op(rule, self)

    def derivatives(self, rule: Rule, la: Linalg) -> Derivatives:
        from ._graph import lazy_derivatives

        return lazy_derivatives(rule, self)

    def to_numpy(self, x: Any) -> Any:
        value = x.compute() if self.owns(x) else x
        return np.asarray(value.get() if hasattr(value, "get") else value)

    def from_numpy(self, x: Any, device: Any) -> Any:
        """A Dask array of ``x`` in two chunks along each dimension of two or more elements,
        so that the conformance checks see blocks (and the rechunking of matrix dimensions)."""
        import dask.array as da

        x = np.asarray(x)
        return da.from_array(x, chunks=tuple(max(1, -(-n // 2)) for n in x.shape))


@hookimpl
def invad_backends() -> list[Backend]:
    return [DaskBackend()]
