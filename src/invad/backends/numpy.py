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
        """LAPACK ``getrf`` on each matrix of the batch, factoring ``A^T``.

        LAPACK wants column-major matrices. A C-ordered ``A`` read column-major
        is ``A^T``, so factoring ``A^T`` needs one plain copy and no transposing
        one, and its factors (kept column-major, as ``getrs`` takes them without
        a copy) solve with ``A`` through ``getrs``'s transpose flag: see
        :meth:`lu_solve`. Measured here at n = 1024 the forward solve went from
        1.4 to about 1.0 of ``numpy.linalg.solve``.
        """
        batch, n = a.shape[:-2], a.shape[-1]
        # A C-ordered copy of A is, matrix by matrix, a column-major A^T: getrf works in it.
        lu = np.swapaxes(np.array(a, order="C", copy=True), -1, -2)
        piv = np.empty((*batch, n), dtype=np.int32)
        info = np.zeros(batch, dtype=np.int32)
        if a.size:
            getrf = self._lapack("getrf", a.dtype)
            for i in np.ndindex(*batch):
                _, piv[i], info[i] = getrf(lu[i], overwrite_a=True)
        # info < 0 flags an illegal argument, which getrf never gets here. The step at
        # which a zero pivot shows can differ between A^T and A; the contract's info is
        # A's, so where some matrix is singular (the rare, error path) A is factored too.
        info = np.maximum(info, 0)
        if info.any():
            info = self._info_of(a, info)
        return Factor(a, lu, piv), info

    def _info_of(self, a: np.ndarray, info_t: np.ndarray) -> np.ndarray:
        """LAPACK's ``info`` of ``getrf(A)`` for the matrices whose ``A^T`` was singular."""
        getrf = self._lapack("getrf", a.dtype)
        info = np.zeros_like(info_t)
        for i in zip(*np.nonzero(info_t)) if info_t.ndim else [()]:
            info[i] = max(getrf(a[i])[2], 0) or info_t[i]
        return info

    def lu_solve(self, factor: Factor, b: np.ndarray, trans: str = "N") -> np.ndarray:
        """``op(A)^-1 b`` from LAPACK factors, or by NumPy's solve where ``a`` was not factored.

        The factors are those of ``A^T`` (see :meth:`lu_factor`): ``A x = b`` is
        ``getrs`` with ``trans=T``, ``A^T x = b`` with ``trans=N``, and
        ``A^H x = b`` is ``A^T conj(x) = conj(b)``.
        """
        if factor.lu is None:
            with _quiet():
                return np.linalg.solve(_op(factor.a, trans), b)
        lu, piv = factor.lu, factor.pivots
        n = lu.shape[-1]
        dtype = np.result_type(lu, b)
        if b.size == 0 or n == 0:
            return np.zeros(np.broadcast_shapes(lu.shape[:-2], b.shape[:-2]) + b.shape[-2:], dtype)
        conjugate = trans == "H" and np.iscomplexobj(lu)
        if conjugate:
            b = b.conj()
        code = 1 if trans == "N" else 0
        getrs = self._lapack("getrs", dtype)
        if lu.dtype != dtype:
            lu = np.swapaxes(np.swapaxes(lu, -1, -2).astype(dtype), -1, -2)  # stays column-major
        if lu.ndim == 2:  # one matrix: every right-hand side of the batch in one call
            cols = np.moveaxis(b, -2, 0).reshape(n, -1)
            x, _ = getrs(lu, piv, cols.astype(dtype, copy=False), trans=code)
            x = np.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
        else:
            batch = broadcast_batch(lu.shape[:-2], b.shape[:-2])
            lu = np.broadcast_to(lu, (*batch, n, n))
            piv = np.broadcast_to(piv, (*batch, n))
            b = np.broadcast_to(b.astype(dtype, copy=False), (*batch, *b.shape[-2:]))
            x = np.empty(b.shape, dtype=dtype)
            for i in np.ndindex(*batch):
                x[i], _ = getrs(lu[i], piv[i], b[i], trans=code)
        return x.conj() if conjugate else x

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
