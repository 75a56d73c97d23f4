"""The NumPy backend, invad's embedded default: plain functions, derivatives via ``ops.jvp/vjp``.

Kernels. Every factorization is LAPACK ``getrf`` of ``A`` itself, so that
``info`` and the singular-matrix error are getrf's for ``A`` (an exact zero
pivot is not transpose-invariant: factoring ``A^T`` to spare a copy gives
other answers). Two paths:

- ``n >= LAPACK_MIN_N``: SciPy's ``getrf``/``getrs``, one call per matrix; the
  factors are kept so that a solve's derivatives reuse them.
- smaller ``n``: NumPy's batched LAPACK gufuncs (``solve``, ``inv``, one C loop
  over the batch, each factoring its matrix as given). SciPy has no batched
  LAPACK, and for a batch of small matrices a Python loop costs more than the
  arithmetic; there a fresh batched solve beats reusing factors, so the
  "factorization" kept is the matrix itself. The gufuncs run with their
  errors silenced: a singular matrix gives NaN in its own batch element, and
  only those elements (and any other non-finite ones) go to ``getrf`` to learn
  LAPACK's ``info``, so ``k`` singular matrices in a batch cost ``k`` extra
  small calls, not a loop over the batch. Measured here (n=16, batch 1000: a
  getrs loop 6.1 ms, a fresh batched solve 4.3 ms; n=24: 4.0 ms and 5.8 ms)
  the crossover is near n = 20.

NumPy's public ``numpy.linalg.solve`` computes float32 in float64 and raises
for the whole batch; the gufuncs of ``numpy.linalg._umath_linalg`` (which it
calls) take each dtype's own LAPACK routine and report per element.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number
from typing import Any

import array_api_compat.numpy
import numpy as np
from numpy.linalg import _umath_linalg

from ..backend import ZERO_PIVOT, Backend, not_accepted
from ..hookspecs import hookimpl
from ..rules import CholeskyFactor, Factor
from ..rules._linalg import (
    Trans,
    broadcast_batch,
    first_zero,
    portable_packed_outer,
    portable_solve_triangular,
)

#: The array API namespace over NumPy, for the portable kernels.
_XP = array_api_compat.numpy

#: Matrices at least this large are factored once with LAPACK and the factors reused.
LAPACK_MIN_N = 20

#: What numpy.linalg turns into an array itself: nested sequences and scalars.
_CONVERTIBLE = (list, tuple, Number, np.generic)

#: getrs's ``trans`` argument for op(A) = A, A^T, A^H.
_GETRS_TRANS = {"N": 0, "T": 1, "H": 2}

#: The gufunc type signatures: each dtype computed in itself.
_CHAR = {np.dtype(t): np.dtype(t).char for t in ("float32", "float64", "complex64", "complex128")}


def _op(a: np.ndarray, trans: str) -> np.ndarray:
    if trans == "N":
        return a
    at = np.swapaxes(a, -1, -2)
    return at.conj() if trans == "H" else at


def _quiet() -> Any:
    """Singular matrices in the ``_ex`` ops divide by zero on purpose."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _nonfinite(x: np.ndarray, batch_ndim: int) -> np.ndarray:
    """Per batch element of ``x`` (``(*batch, ...)``): whether any entry is NaN or infinite."""
    if x.size == 0:
        return np.zeros(x.shape[:batch_ndim], dtype=bool)
    return ~np.isfinite(x).reshape(*x.shape[:batch_ndim], -1).all(axis=-1)


def _reduce_to(flags: np.ndarray, batch: tuple[int, ...]) -> np.ndarray:
    """``flags`` of a broadcast batch, or-ed down to the batch shape ``batch`` it came from."""
    lead = flags.ndim - len(batch)
    if lead:
        flags = np.asarray(flags.any(axis=tuple(range(lead))))
    stretched = tuple(k for k, n in enumerate(batch) if n == 1 and flags.shape[k] != 1)
    return np.asarray(flags.any(axis=stretched, keepdims=True)) if stretched else flags


class NumpyKernels:
    """``lu_factor``, ``lu_solve``, ``solve`` and ``inv`` over NumPy arrays."""

    def __init__(self) -> None:
        from scipy.linalg import get_lapack_funcs

        self._get_lapack_funcs = get_lapack_funcs
        self._cache: dict[tuple[str, np.dtype], Any] = {}
        self._masks: dict[int, np.ndarray] = {}

    def _lapack(self, name: str, dtype: np.dtype) -> Any:
        key = (name, dtype)
        fn = self._cache.get(key)
        if fn is None:
            (fn,) = self._get_lapack_funcs((name,), dtype=dtype)
            self._cache[key] = fn
        return fn

    # -- LAPACK, one matrix at a time ---------------------------------------------

    def lu_factor(self, a: np.ndarray) -> tuple[Factor, np.ndarray]:
        """LAPACK ``getrf`` of each matrix of the batch, in a column-major copy of ``A``."""
        batch, k = a.shape[:-2], min(a.shape[-2:])
        # A C-ordered copy of A^T is, matrix by matrix, a column-major A: getrf works in it.
        lu = np.swapaxes(np.array(np.swapaxes(a, -1, -2), order="C", copy=True), -1, -2)
        piv = np.empty((*batch, k), dtype=np.int32)
        info = np.zeros(batch, dtype=np.int32)
        if a.size:
            getrf = self._lapack("getrf", a.dtype)
            for i in np.ndindex(*batch):
                _, piv[i], info[i] = getrf(lu[i], overwrite_a=True)
        # info < 0 flags an illegal argument, which getrf never gets here.
        return Factor(a, lu, piv), np.maximum(info, 0)

    def lu_solve(self, factor: Factor, b: np.ndarray, trans: str = "N") -> np.ndarray:
        """``op(A)^-1 b`` from LAPACK factors, or by NumPy's batched solve where ``a`` was
        not factored (a singular matrix then gives NaN in its batch element)."""
        if factor.lu is None:
            return self._batched_solve(_op(factor.a, trans), b)
        lu, piv = factor.lu, factor.pivots
        n = lu.shape[-1]
        dtype = np.result_type(lu, b)
        if b.size == 0 or n == 0:
            return np.zeros(np.broadcast_shapes(lu.shape[:-2], b.shape[:-2]) + b.shape[-2:], dtype)
        code = _GETRS_TRANS[trans]
        getrs = self._lapack("getrs", dtype)
        if lu.dtype != dtype:
            lu = np.swapaxes(np.swapaxes(lu, -1, -2).astype(dtype), -1, -2)  # stays column-major
        with _quiet():
            if lu.ndim == 2:  # one matrix: every right-hand side of the batch in one call
                cols = np.moveaxis(b, -2, 0).reshape(n, -1)
                x, _ = getrs(lu, piv, cols.astype(dtype, copy=False), trans=code)
                return np.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
            batch = broadcast_batch(lu.shape[:-2], b.shape[:-2])
            lu = np.broadcast_to(lu, (*batch, n, n))
            piv = np.broadcast_to(piv, (*batch, n))
            b = np.broadcast_to(b.astype(dtype, copy=False), (*batch, *b.shape[-2:]))
            x = np.empty(b.shape, dtype=dtype)
            for i in np.ndindex(*batch):
                x[i], _ = getrs(lu[i], piv[i], b[i], trans=code)
            return x

    def solve_triangular(
        self, t: np.ndarray, b: np.ndarray, upper: bool, trans: Trans = "N", unit: bool = False
    ) -> np.ndarray:
        """``op(T)^-1 b`` reading one triangle: LAPACK ``trtrs`` per matrix for large ``n``,
        the portable substitution (vectorised over the batch) for small ``n``."""
        n = t.shape[-1]
        dtype = np.result_type(t, b)
        if n < LAPACK_MIN_N or b.size == 0:
            with _quiet():
                return portable_solve_triangular(_XP, t, b, upper, trans, unit)
        trtrs = self._lapack("trtrs", dtype)
        kw = {"lower": int(not upper), "trans": _GETRS_TRANS[trans], "unitdiag": int(unit)}
        t = t.astype(dtype, copy=False)
        with _quiet():
            if t.ndim == 2 and b.ndim == 2:  # the common call, without the reshaping below
                return trtrs(t, b.astype(dtype, copy=False), **kw)[0]
            if t.ndim == 2:  # one matrix: every right-hand side of the batch in one call
                cols = np.moveaxis(b, -2, 0).reshape(n, -1).astype(dtype, copy=False)
                x, _ = trtrs(t, cols, **kw)
                return np.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
            batch = broadcast_batch(t.shape[:-2], b.shape[:-2])
            t = np.broadcast_to(t, (*batch, n, n))
            b = np.broadcast_to(b.astype(dtype, copy=False), (*batch, *b.shape[-2:]))
            x = np.empty(b.shape, dtype=dtype)
            for i in np.ndindex(*batch):
                x[i], _ = trtrs(t[i], b[i], **kw)
            return x

    def permute_rows(self, pivots: np.ndarray, x: np.ndarray, inverse: bool = False) -> np.ndarray:
        """``P^T x`` (LAPACK's row interchanges in order), or ``P x``: one gather."""
        m = x.shape[-2]
        if pivots.ndim == 1 and x.ndim == 2 and x.size:
            # LAPACK's laswp applies the interchanges (in reverse order for P x): one call
            laswp = self._lapack("laswp", x.dtype)
            return laswp(x, pivots, inc=-1 if inverse else 1)
        if pivots.ndim == 1:  # one permutation: the interchanges in plain Python
            order = list(range(m))
            for k, p in enumerate(pivots.tolist()):
                order[k], order[p] = order[p], order[k]
            index = np.argsort(order) if inverse else np.asarray(order, dtype=np.intp)
            return x[..., index, :]
        batch = pivots.shape[:-1]
        perm = np.array(np.broadcast_to(np.arange(m), (*batch, m)))
        for k in range(pivots.shape[-1]):
            p = pivots[..., k : k + 1].astype(np.intp)
            at_p = np.take_along_axis(perm, p, axis=-1)
            np.put_along_axis(perm, p, perm[..., k : k + 1], axis=-1)
            perm[..., k : k + 1] = at_p
        if inverse:
            perm = np.argsort(perm, axis=-1)
        full = broadcast_batch(batch, x.shape[:-2])
        x = np.broadcast_to(x, (*full, *x.shape[-2:]))
        perm = perm.reshape((1,) * (len(full) - len(batch)) + perm.shape)
        return np.take_along_axis(x, perm[..., :, None], axis=-2)

    @staticmethod
    def first_zero(d: np.ndarray) -> np.ndarray:
        """``info`` of a diagonal: one pass when no entry is zero (every lu_solve,
        solve_triangular and cholesky_solve call), the formula where one is."""
        if d.shape[-1] and np.all(d):
            return np.zeros(d.shape[:-1], dtype=np.int32)
        return first_zero(_XP, d)

    def packed_outer(
        self, h: np.ndarray, y: np.ndarray, g: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """``tril_-(h y^H) + triu(g x^H)``, column-major (``LU``'s layout), in one array: the
        second product writes only below the diagonal (a ufunc's ``where``), so no
        temporaries of the matrix's size are made, each of which costs its page faults."""
        dtype = np.result_type(h, y, g, x)
        n, k = h.shape[-2], h.shape[-1]
        if k != 1 or n == 0:
            return portable_packed_outer(_XP, h, y, g, x)
        shape = np.broadcast_shapes(h.shape[:-2], y.shape[:-2], g.shape[:-2], x.shape[:-2])
        # The transpose, row-major (a masked ufunc is fast only along contiguous rows):
        # (g x^H)^T = conj(x) g^T, and (h y^H)^T above the diagonal.
        t = np.empty((*shape, n, n), dtype=dtype)
        np.multiply(np.conj(x), np.swapaxes(g, -1, -2), out=t)
        np.multiply(np.conj(y), np.swapaxes(h, -1, -2), out=t, where=self._strictly_upper(n))
        return np.swapaxes(t, -1, -2)

    def _strictly_upper(self, n: int) -> np.ndarray:
        """The strictly upper triangle's mask of an ``n x n`` matrix, kept for the last sizes."""
        mask = self._masks.get(n)
        if mask is None:
            if len(self._masks) >= 8:
                self._masks.clear()
            mask = self._masks[n] = ~np.tri(n, n, 0, dtype=bool)
        return mask

    # -- Cholesky -------------------------------------------------------------------

    def cholesky(self, a: np.ndarray, upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """NumPy's batched Cholesky gufunc (potrf per matrix, one C loop), errors silenced:
        a matrix that is not positive definite gives NaN in its batch element, and only
        those elements go to ``potrf`` for LAPACK's ``info``."""
        info = np.zeros(a.shape[:-2], dtype=np.int32)
        if a.size == 0:
            return np.zeros_like(a), info
        c = _CHAR[a.dtype]
        gufunc = _umath_linalg.cholesky_up if upper else _umath_linalg.cholesky_lo
        with _quiet():
            factor = gufunc(a, signature=f"{c}->{c}")
        bad = _nonfinite(factor, a.ndim - 2)
        if bad.any():
            potrf = self._lapack("potrf", a.dtype)
            for i in zip(*np.nonzero(bad)) if bad.ndim else [()]:
                with _quiet():
                    partial, k = potrf(a[i], lower=int(not upper))
                if k <= 0:  # NaN input: OpenBLAS's potrf does not look; its pivots tell
                    d = np.diagonal(partial)
                    failed = ~(np.isfinite(d) & (d.real > 0))
                    k = int(np.argmax(failed)) + 1 if failed.any() else a.shape[-1]
                info[i] = k
        return factor, info

    def cholesky_solve(self, factor: CholeskyFactor, b: np.ndarray) -> np.ndarray:
        """``A^-1 b`` from ``A = L L^H``: two triangular solves (``trtrs``, or the portable
        substitution for small ``n``)."""
        c, upper = factor.c, factor.upper
        first: Trans = "H" if upper else "N"
        second: Trans = "N" if upper else "H"
        y = self.solve_triangular(c, b, upper, first, False)
        return self.solve_triangular(c, y, upper, second, False)

    # -- determinants: NumPy's batched gufuncs, no factor kept ------------------------

    def slogdet(self, a: np.ndarray) -> tuple[Factor, np.ndarray, np.ndarray, np.ndarray]:
        """``numpy.linalg.slogdet``'s gufunc (getrf inside, one C loop). The derivatives then
        solve with ``a`` itself (``Factor(a, None, None)``, as the small solves do)."""
        c, r = _CHAR[a.dtype], np.dtype(a.real.dtype).char
        with _quiet():
            sign, logabsdet = _umath_linalg.slogdet(a, signature=f"{c}->{c}{r}")
        return Factor(a, None, None), sign, logabsdet, self._info_where(a, sign == 0)

    def det(self, a: np.ndarray) -> tuple[Factor, np.ndarray, np.ndarray]:
        c = _CHAR[a.dtype]
        with _quiet():
            det = _umath_linalg.det(a, signature=f"{c}->{c}")
        return Factor(a, None, None), det, self._info_where(a, det == 0)

    def _info_where(self, a: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """getrf's ``info`` where a determinant came out zero (only those are factored)."""
        if not zero.any():
            return np.zeros(a.shape[:-2], dtype=np.int32)
        return self._getrf_info(a, zero)

    # -- NumPy's batched gufuncs, singular elements looked at one by one ------------

    def _batched_solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a^-1 b`` over a batch in one C loop; NaN in the elements where ``a`` is singular."""
        dtype = np.result_type(a, b)
        if b.size == 0 or a.size == 0:
            batch = broadcast_batch(a.shape[:-2], b.shape[:-2])
            return np.zeros((*batch, *b.shape[-2:]), dtype)
        c = _CHAR[dtype]
        with _quiet():
            return _umath_linalg.solve(a, b, signature=f"{c}{c}->{c}")

    def _getrf_info(self, a: np.ndarray, where: np.ndarray) -> np.ndarray:
        """``info`` of ``getrf(A)`` for the matrices of ``a`` flagged in ``where``, 0 elsewhere."""
        info = np.zeros(a.shape[:-2], dtype=np.int32)
        getrf = self._lapack("getrf", a.dtype)
        for i in zip(*np.nonzero(where)) if where.ndim else [()]:
            info[i] = max(int(getrf(a[i])[2]), 0)
        return info

    def _redo_with_getrf(
        self, a: np.ndarray, b: np.ndarray, x: np.ndarray, trans: str, where: np.ndarray
    ) -> None:
        """Solve the flagged batch elements of ``x`` again from getrf of ``A`` itself."""
        batch = x.shape[:-2]
        a, b = np.broadcast_to(a, (*batch, *a.shape[-2:])), np.broadcast_to(b, x.shape)
        for i in zip(*np.nonzero(where)) if where.ndim else [()]:
            factor, _ = self.lu_factor(a[i])
            x[i] = self.lu_solve(factor, np.array(b[i]), trans)  # a copy: f2py is slow on views

    def solve(
        self, a: np.ndarray, b: np.ndarray, trans: str = "N"
    ) -> tuple[Factor, np.ndarray, np.ndarray]:
        if a.shape[-1] >= LAPACK_MIN_N:
            factor, info = self.lu_factor(a)
            return factor, self.lu_solve(factor, b, trans), info
        x = self._batched_solve(_op(a, trans), b)
        if trans == "N" and np.isfinite(x).all():  # the common case: nothing singular
            return Factor(a, None, None), x, np.zeros(a.shape[:-2], dtype=np.int32)
        bad_x = _nonfinite(x, x.ndim - 2)
        singular = _reduce_to(bad_x, a.shape[:-2])
        if trans != "N" and a.size:
            # The gufunc factored op(A), whose exact zero pivots can differ from A's: ask
            # getrf of A itself through slogdet's sign, 0 exactly where getrf reports info > 0.
            c, r = _CHAR[a.dtype], np.dtype(a.real.dtype).char
            with _quiet():
                sign, _ = _umath_linalg.slogdet(a, signature=f"{c}->{c}{r}")
            singular = singular | (sign == 0)
        if not singular.any():
            return Factor(a, None, None), x, np.zeros(a.shape[:-2], dtype=np.int32)
        info = self._getrf_info(a, singular)
        self._redo_with_getrf(a, b, x, trans, bad_x | np.broadcast_to(info != 0, bad_x.shape))
        return Factor(a, None, None), x, info

    def inv(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = a.shape[-1]
        if a.size == 0:
            return np.zeros(a.shape, a.dtype), np.zeros(a.shape[:-2], dtype=np.int32)
        if n >= LAPACK_MIN_N:
            factor, info = self.lu_factor(a)
            eye = np.eye(n, dtype=a.dtype)
            return self.lu_solve(factor, np.broadcast_to(eye, a.shape), "N"), info
        c = _CHAR[a.dtype]
        with _quiet():
            inverse = _umath_linalg.inv(a, signature=f"{c}->{c}")
        if np.isfinite(inverse).all():  # the common case: nothing singular
            return inverse, np.zeros(a.shape[:-2], dtype=np.int32)
        bad = _nonfinite(inverse, a.ndim - 2)
        info = self._getrf_info(a, bad)
        self._redo_with_getrf(a, np.eye(n, dtype=a.dtype), inverse, "N", bad)
        return inverse, info


class NumpyBackend(Backend):
    name = "numpy"
    native_ad = False
    array_type = "numpy.ndarray (or nested lists and scalars, as numpy.linalg does)"

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """NumPy arrays as they are; lists, tuples and scalars converted, as numpy.linalg
        converts them; another framework's array is a TypeError, not a silent copy."""
        if all(type(x) is np.ndarray for x in args):  # the common case, on every call
            return tuple(args)
        out = []
        for name, x in zip(names, args):
            if not isinstance(x, np.ndarray):
                if not isinstance(x, _CONVERTIBLE):
                    raise TypeError(not_accepted(self, op, name, x))
                x = np.asarray(x)
            out.append(x)
        return tuple(out)

    def load(self) -> None:
        import scipy.linalg  # noqa: F401  (the kernels need it)

    def version(self) -> str | None:
        return np.__version__

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def namespace(self) -> Any:
        return _XP

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError

    def kernels(self, device: Any) -> NumpyKernels:
        return NumpyKernels()

    def raise_if_singular(
        self, op: str, shape: tuple[int, ...], info: Any, what: str = ZERO_PIVOT
    ) -> None:
        if info.any():  # fast exit first: this runs on every call
            super().raise_if_singular(op, shape, info, what)


@hookimpl
def invad_backends() -> list[Backend]:
    return [NumpyBackend()]
