"""The NumPy backend, invad's embedded default: plain functions, derivatives via ``ops.jvp/vjp``.

Kernels. SciPy's LAPACK ``getrf``/``getrs``, one call per matrix, keep the
factorization so that a solve's derivatives reuse it. SciPy has no batched
LAPACK, and for a batch of small matrices a Python loop costs more than
the arithmetic; there NumPy's batched ``solve`` (one C loop) is faster even
when it factors again, so small batched matrices are solved that way and
their "factorization" is the matrix itself. Measured here (n=16, batch
1000: a getrs loop 6.1 ms, a fresh batched solve 4.3 ms; n=24: 4.0 ms and
5.8 ms) the crossover is near n = 20.
"""

from __future__ import annotations

import warnings
from typing import Any

import array_api_compat.numpy
import numpy as np

from ..backend import Backend
from ..hookspecs import hookimpl
from ..rules import Factor
from ..rules._linalg import broadcast_batch

#: Matrices at least this large are factored once with LAPACK and the factors reused.
LAPACK_MIN_N = 20

_TRANS = {"N": 0, "T": 1, "H": 2}


def _op(a: np.ndarray, trans: str) -> np.ndarray:
    if trans == "N":
        return a
    at = np.swapaxes(a, -1, -2)
    return at.conj() if trans == "H" else at


def _quiet() -> Any:
    """Singular matrices in the ``_ex`` ops divide by zero on purpose."""
    return np.errstate(divide="ignore", invalid="ignore")


class NumpyKernels:
    """``lu_factor``, ``lu_solve``, ``solve`` and ``inv`` over NumPy arrays."""

    def __init__(self) -> None:
        from scipy.linalg import get_lapack_funcs

        self._get_lapack_funcs = get_lapack_funcs
        self._cache: dict[tuple[str, np.dtype], Any] = {}

    def _lapack(self, name: str, dtype: np.dtype) -> Any:
        key = (name, dtype)
        fn = self._cache.get(key)
        if fn is None:
            (fn,) = self._get_lapack_funcs((name,), dtype=dtype)
            self._cache[key] = fn
        return fn

    def lu_factor(self, a: np.ndarray) -> tuple[Factor, np.ndarray]:
        """LAPACK ``getrf`` on each matrix of the batch."""
        batch, n = a.shape[:-2], a.shape[-1]
        lu = np.empty_like(a)
        piv = np.empty((*batch, n), dtype=np.int32)
        info = np.zeros(batch, dtype=np.int32)
        if a.size:
            getrf = self._lapack("getrf", a.dtype)
            for i in np.ndindex(*batch):
                lu[i], piv[i], info[i] = getrf(a[i])
        # info < 0 flags an illegal argument, which getrf never gets here.
        return Factor(a, lu, piv), np.maximum(info, 0)

    def lu_solve(self, factor: Factor, b: np.ndarray, trans: str = "N") -> np.ndarray:
        """``op(A)^-1 b`` from LAPACK factors, or by NumPy's solve where ``a`` was not factored."""
        if factor.lu is None:
            with _quiet():
                return np.linalg.solve(_op(factor.a, trans), b)
        lu, piv = factor.lu, factor.pivots
        n = lu.shape[-1]
        dtype = np.result_type(lu, b)
        if b.size == 0 or n == 0:
            return np.zeros(np.broadcast_shapes(lu.shape[:-2], b.shape[:-2]) + b.shape[-2:], dtype)
        getrs = self._lapack("getrs", dtype)
        code = _TRANS[trans]
        if lu.ndim == 2:  # one matrix: every right-hand side of the batch in one call
            cols = np.moveaxis(b, -2, 0).reshape(n, -1)
            x, _ = getrs(
                lu.astype(dtype, copy=False), piv, cols.astype(dtype, copy=False), trans=code
            )
            return np.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
        batch = broadcast_batch(lu.shape[:-2], b.shape[:-2])
        lu = np.broadcast_to(lu.astype(dtype, copy=False), (*batch, n, n))
        piv = np.broadcast_to(piv, (*batch, n))
        b = np.broadcast_to(b.astype(dtype, copy=False), (*batch, *b.shape[-2:]))
        x = np.empty(b.shape, dtype=dtype)
        for i in np.ndindex(*batch):
            x[i], _ = getrs(lu[i], piv[i], b[i], trans=code)
        return x

    def solve(
        self, a: np.ndarray, b: np.ndarray, trans: str = "N"
    ) -> tuple[Factor, np.ndarray, np.ndarray]:
        if a.shape[-1] < LAPACK_MIN_N:
            try:
                x = np.linalg.solve(_op(a, trans), b)
            except np.linalg.LinAlgError:
                pass  # some matrix is singular: factor them all to say which, as getrf would
            else:
                return Factor(a, None, None), x, np.zeros(a.shape[:-2], dtype=np.int32)
        factor, info = self.lu_factor(a)
        with _quiet():
            return factor, self.lu_solve(factor, b, trans), info

    def inv(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return np.linalg.inv(a), np.zeros(a.shape[:-2], dtype=np.int32)
        except np.linalg.LinAlgError:
            pass
        factor, info = self.lu_factor(a)
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.lu_solve(factor, np.eye(a.shape[-1], dtype=a.dtype), "N"), info


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
