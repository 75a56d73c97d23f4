"""The NumPy backend, invad's embedded default: plain functions, derivatives via ``ops.jvp/vjp``.

Kernels: LAPACK ``getrf``/``getrs`` from SciPy, one call per matrix, so that
a solve's derivatives reuse the forward factorization. SciPy has no batched
LAPACK, and a Python loop over a large batch of small matrices costs more
than the arithmetic; below :data:`LAPACK_MIN_N` such batches go to the
portable kernels, which vectorise over the batch instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import array_api_compat.numpy
import numpy as np

from ..backend import Backend
from ..hookspecs import hookimpl
from ..rules import Factor
from ..rules._linalg import broadcast_batch, portable_lu_factor, portable_lu_solve

#: Matrices at least this large always go to LAPACK, one call per matrix.
LAPACK_MIN_N = 24
#: Batches at most this large go to LAPACK whatever the matrix size.
LAPACK_MAX_LOOP = 16

_TRANS = {"N": 0, "T": 1, "H": 2}


def _use_lapack(n: int, count: int) -> bool:
    return n >= LAPACK_MIN_N or count <= LAPACK_MAX_LOOP


class NumpyKernels:
    """``lu_factor``, ``lu_solve`` and ``inv`` over NumPy arrays."""

    def __init__(self) -> None:
        from scipy.linalg import get_lapack_funcs

        self._lapack = get_lapack_funcs
        self._xp = array_api_compat.numpy

    def lu_factor(self, a: np.ndarray) -> tuple[Factor, np.ndarray]:
        batch, n = a.shape[:-2], a.shape[-1]
        count = int(np.prod(batch))
        if a.size == 0 or not _use_lapack(n, count):
            return portable_lu_factor(self._xp, a)
        (getrf,) = self._lapack(("getrf",), (a,))
        lu = np.empty_like(a)
        piv = np.empty((*batch, n), dtype=np.int32)
        info = np.empty(batch, dtype=np.int32)
        for i in np.ndindex(*batch):
            lu[i], piv[i], info[i] = getrf(a[i])
        # LAPACK reports an illegal argument as info < 0; getrf's arguments here are always legal.
        return Factor(a, lu, piv), np.maximum(info, 0)

    def lu_solve(self, factor: Factor, b: np.ndarray, trans: str = "N") -> np.ndarray:
        lu, piv = factor.lu, factor.pivots
        n = lu.shape[-1]
        batch = broadcast_batch(lu.shape[:-2], b.shape[:-2])
        count = int(np.prod(batch))
        if lu.size == 0 or b.size == 0 or not _use_lapack(n, count):
            with np.errstate(divide="ignore", invalid="ignore"):
                return portable_lu_solve(self._xp, factor, b, trans)  # type: ignore[arg-type]
        dtype = np.result_type(lu, b)
        lu = np.broadcast_to(lu.astype(dtype, copy=False), (*batch, n, n))
        piv = np.broadcast_to(piv, (*batch, n))
        b = np.broadcast_to(b.astype(dtype, copy=False), (*batch, *b.shape[-2:]))
        (getrs,) = self._lapack(("getrs",), (lu,))
        x = np.empty(b.shape, dtype=dtype)
        code = _TRANS[trans]
        for i in np.ndindex(*batch):
            x[i], _ = getrs(lu[i], piv[i], b[i], trans=code)
        return x

    def inv(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            inverse = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            # Some matrix is singular: factor them all to say which, as getrf would.
            factor, info = self.lu_factor(a)
            with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inverse = self.lu_solve(factor, np.eye(a.shape[-1], dtype=a.dtype), "N")
            return inverse, info
        return inverse, np.zeros(a.shape[:-2], dtype=np.int32)


class NumpyBackend(Backend):
    name = "numpy"
    native_ad = False

    def load(self) -> None:
        import scipy.linalg  # noqa: F401  (the kernels need it)

    def version(self) -> str | None:
        return np.__version__

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def namespace(self) -> Any:
        return array_api_compat.numpy

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError

    def kernels(self, device: Any) -> NumpyKernels:
        return NumpyKernels()

    def raise_if_singular(self, op: str, shape: tuple[int, ...], info: Any) -> None:
        if info.any():  # fast exit first: this runs on every call
            super().raise_if_singular(op, shape, info)


@hookimpl
def invad_backends() -> list[Backend]:
    return [NumpyBackend()]
