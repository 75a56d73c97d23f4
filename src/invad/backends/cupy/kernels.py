"""The CuPy kernels: which CuPy routine runs where, and what it factors.

What CuPy offers, read from its source (v13.0.0, v14.0 to v14.2, and the
development branch, 15.0.0a1):

- ``cupyx.scipy.linalg.lu_factor`` / ``lu_solve`` (cuSOLVER ``getrf`` /
  ``getrs``) take one matrix, not a batch. ``lu_factor`` takes an ``(m, n)``
  matrix, square or not, and copies it to Fortran order, so it factors ``A``
  itself; it returns ``min(m, n)`` 0-based int32 pivots and no ``info``, and
  warns on a zero pivot. ``lu_solve`` takes ``trans`` 0, 1 or 2 (``A``,
  ``A^T``, ``A^H``).
- ``cupyx.scipy.linalg.solve_triangular`` (cuBLAS ``trsm``) reads one
  triangle (``lower``, ``unit_diagonal``), takes ``trans`` ``'N'``, ``'T'``
  or ``'C'``, and computes in ``a``'s dtype (``b`` is cast to it). CuPy 13
  takes one matrix; CuPy 14 also a stack (``trsmBatched``), whose batch
  dimensions must equal ``b``'s (no broadcasting).
- ``cupy.linalg.solve`` on a stack of matrices with ``n`` at most
  ``cupy.cublas.get_batched_gesv_limit()`` (256 unless the user sets it) is
  one cuBLAS ``getrfBatched``/``getrsBatched`` call on a column-major copy
  of ``A``: it factors ``A`` itself. Above the limit it loops over the batch.
- ``cupy.linalg.inv`` factors ``A^T`` whenever its input is C-ordered: the
  2-D case solves ``gesv(a.T, I)``, a stack goes C-ordered into the
  column-major ``getrfBatched``. Given ``A`` Fortran-ordered (2-D), or
  ``A^T`` as a view (a stack: ``inv(a.mT).mT``), it factors ``A``.
- ``cupy.linalg.slogdet`` (and ``det``, ``sign * exp(logdet)``) factors a
  C-ordered copy of its input as column-major, i.e. its transpose, with
  ``getrfBatched`` (or cuSOLVER ``getrf`` per matrix for few large ones):
  given ``a.mT`` it factors ``A``. It keeps no factor and returns sign 0,
  logdet -inf where a pivot is zero.
- ``cupy.linalg.cholesky`` is cuSOLVER ``potrf`` for one matrix and
  ``potrfBatched`` for a stack (one call), on a C-ordered copy handed over
  as column-major with ``FILL_MODE_UPPER``: it reads the lower triangle of
  its input (whatever its memory order) and returns ``tril`` of the result,
  ``L`` with ``A = L L^H``. It has no ``upper`` and returns no ``info``.
  cuSOLVER's ``devInfo`` is read only under ``errstate(linalg="raise")``,
  which raises if some matrix is not positive definite; otherwise the
  factor of such a matrix is whatever ``potrf`` left (not necessarily
  non-finite). LAPACK builds differ on whether a NaN pivot sets ``info``
  (OpenBLAS's ``potrf`` does not); cuSOLVER's documentation does not say.
- CuPy has no ``cho_solve`` (``cupyx.scipy.linalg`` has none); ``cupyx.lapack
  .potrs`` exists from CuPy 14 only, needs equal batch dimensions and, for a
  stack, solves one right-hand side per call.
- These routines check for a zero pivot only under
  ``cupyx.errstate(linalg="raise")`` (thread-local), and then raise
  ``numpy.linalg.LinAlgError``; otherwise a singular matrix gives
  non-finite values in its own batch element only.

Paths. ``limit`` is ``cupy.cublas.get_batched_gesv_limit()``, read at each
call, so ``set_batched_gesv_limit`` moves both CuPy's and invad's cut-off:

- one matrix (``a.ndim == 2``), and stacks with ``n > limit``: each matrix
  factored with ``lu_factor`` (a Python loop over the batch; each call
  synchronizes, as ``lu_factor`` reads cuSOLVER's ``info``), the factors
  kept, and every solve of a derivative made from them with ``lu_solve``
  (one call for a single matrix, all right-hand sides packed as columns; one
  call per matrix otherwise). ``info`` is read off ``U``'s diagonal: exactly
  cuSOLVER ``getrf``'s for ``A``. ``inv`` of one matrix is
  ``cupy.linalg.inv`` on a Fortran-ordered ``A`` (cuSOLVER ``getrf`` of
  ``A``); of a stack above the limit, ``lu_factor`` and ``lu_solve`` per
  matrix, as ``solve``. ``det`` and ``slogdet`` come from that LU (the
  product of ``U``'s diagonal and the parity of the interchanges), the
  factor kept for their derivatives.
- stacks with ``n <= limit``: batched calls only. ``solve`` is one
  ``cupy.linalg.solve`` under ``errstate(linalg="raise")``; the "factor" kept
  is the matrix itself, and each derivative solve is one more batched
  ``cupy.linalg.solve`` (a loop of cuSOLVER calls over a large batch of
  small matrices costs more than factoring them again in one call). A right
  solve (``left=False``) hands CuPy ``A^T``, so a second batched call on
  ``A`` with one right-hand side decides whether ``getrf(A)`` meets a zero
  pivot: twice the factorization work of a left solve, in the forward only.
  An empty ``b`` makes that one check call. ``inv`` is
  ``cupy.linalg.inv(a.mT).mT`` under ``errstate(linalg="raise")``. ``det``
  and ``slogdet`` are one ``cupy.linalg.det(a.mT)`` / ``slogdet(a.mT)``;
  their derivatives solve with ``A`` afresh, batched, as ``solve``'s.
- where a batched call raises (or a determinant is zero), some matrix is
  singular: the values are computed again without the check (the other
  matrices' results are the same as without the singular one), and
  ``info`` comes from invad's portable LU
  (:func:`~invad.rules._linalg.portable_lu_factor`), vectorised over the
  batch. Derivatives stay batched calls.
- ``lu_factor`` (the op, square or rectangular) is ``lu_factor`` per matrix
  on every path; ``lu_solve`` with a user's factor is ``lu_solve`` per
  matrix. ``solve_triangular`` is one ``trsm`` for one matrix (every
  right-hand side packed as columns), one ``trsmBatched`` for a stack on
  CuPy 14 and later, a loop of ``trsm`` on CuPy 13. The row interchanges
  (``permute_rows``) become a permutation on the host (one copy of the
  pivots there) and one gather on the GPU.

The Cholesky family. ``cholesky`` is one ``cupy.linalg.cholesky`` call
(``potrf``, or ``potrfBatched`` for a stack) under ``errstate(linalg="raise")``
on ``a`` (lower), or on ``a^H``, whose lower triangle is ``a``'s upper one
conjugated, the result conjugate-transposed back (upper). Then the
factor's diagonal is checked on the device: every entry real positive
(NaN fails). If CuPy raised or the check failed, ``info`` (the order of
the first leading minor not positive definite) comes from invad's portable
Cholesky (:func:`~invad.rules._linalg.portable_cholesky`, LAPACK's
unblocked ``potf2`` vectorised over the batch; a NaN pivot counts), the
values are computed again without the check, and the factor of each
failing matrix is set to NaN, as NumPy's. A pivot that is not positive
only through rounding can be judged differently by the two, as between
two LAPACK builds; where the portable algorithm finds none but the
factor's diagonal has a pivot that is not positive, ``info`` is the order
of the first such pivot. Two synchronizations per call (``devInfo``, the
diagonal check). ``cholesky_solve`` is two triangular solves with the
factor, ``solve_triangular`` above (cuBLAS ``trsm``; one ``trsmBatched`` per
solve for a stack on CuPy 14, every right-hand side at once, batch
dimensions broadcast), which is ``potrs``'s own algorithm. The derivatives
solve with the kept factor the same way: nothing is factored again.

``info`` and the errors. ``info`` is LAPACK ``getrf``'s for ``A`` itself,
never for ``A^T``; ``inv``/``solve`` raise exactly where it is nonzero, and
``inv_ex`` and ``solve_ex`` give the same ``info``. On the per-matrix paths
it is cuSOLVER's own. On the batched paths CuPy decides *whether* a batch
holds a singular matrix (cuBLAS ``getrfBatched`` of ``A``), the portable LU
*which* and at which step: it runs LAPACK's unblocked algorithm, so on
exact zero pivots that any elimination order produces (a zero column, two
equal rows) it agrees with cuBLAS; a pivot that is zero only through
rounding can come out differently, as between two LAPACK builds, and for
complex matrices the two agree on the pivot row only where the portable LU
compares ``|Re| + |Im|``, as LAPACK does.

Nothing here is timed: no GPU was at hand when this was written, and the
GPU path is tested only by ``tests/test_cupy.py`` on a machine with one.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import array_api_compat.numpy
import numpy as np

from ...rules import CholeskyFactor, Factor
from ...rules._linalg import (
    Trans,
    broadcast_batch,
    det_of_lu,
    portable_check_pivots,
    portable_cholesky,
    portable_lu_factor,
    slogdet_of_lu,
)

_TRANS = {"N": 0, "T": 1, "H": 2}
#: cupyx.scipy.linalg.solve_triangular's ``trans`` for op(T) = T, T^T, T^H.
_TRSM_TRANS = {"N": "N", "T": "T", "H": "C"}


def _op(a: Any, trans: Trans) -> Any:
    if trans == "N":
        return a
    at = a.swapaxes(-1, -2)
    return at.conj() if trans == "H" else at


# -- cuSOLVER's zero-pivot warning ------------------------------------------------
# lu_factor warns "Diagonal number k is exactly zero" on a singular matrix; the
# _ex ops expect singular input and report it in info. warnings.catch_warnings
# swaps the process-wide filter list, which races with other threads (one thread
# per GPU is common with CuPy). Instead, invad calls the function that warns
# (cupyx's _lu_factor, whose warning is attributed to its caller) and keeps one
# filter in place that matches only warnings attributed to this module: users'
# own lu_factor calls still warn.

_ZERO_PIVOT_MESSAGE = r"Diagonal number \d+ is exactly zero"
_ZERO_PIVOT_FILTER = (
    "ignore",
    re.compile(_ZERO_PIVOT_MESSAGE, re.IGNORECASE),
    RuntimeWarning,
    re.compile(re.escape(__name__) + r"\Z"),
    0,
)


def _quiet_zero_pivots() -> None:
    """Put the filter first (again, if a ``catch_warnings`` elsewhere dropped or buried it)."""
    if not warnings.filters or warnings.filters[0] != _ZERO_PIVOT_FILTER:
        _, message, category, module, _ = _ZERO_PIVOT_FILTER
        warnings.filterwarnings("ignore", message.pattern, category, module.pattern)


def _getrf_info(cupy: Any, lu: Any) -> Any:
    """LAPACK ``info`` of packed LU factors: the first ``k`` with ``U[k-1, k-1] == 0``, else 0."""
    batch = lu.shape[:-2]
    if lu.size == 0:
        return cupy.zeros(batch, dtype=cupy.int32)
    zero = cupy.diagonal(lu, axis1=-2, axis2=-1) == 0
    first = cupy.argmax(zero.astype(cupy.int8), axis=-1).astype(cupy.int32) + 1
    return cupy.where(zero.any(axis=-1), first, 0).astype(cupy.int32)


def _permutation(pivots: np.ndarray, m: int, inverse: bool) -> np.ndarray:
    """On the host: the row order of ``P^T x`` (LAPACK's interchanges ``pivots``, 0-based,
    applied in order to the rows ``0..m-1``), or of ``P x``: ``(*pivots.shape[:-1], m)``."""
    batch, k = pivots.shape[:-1], pivots.shape[-1]
    count = math.prod(batch)
    flat = pivots.reshape(count, k).astype(np.intp)
    perm = np.tile(np.arange(m), (count, 1))
    rows = np.arange(count)
    for j in range(k):  # one swap per step, over the whole batch at once
        p = flat[:, j]
        swapped = perm[rows, p]
        perm[rows, p] = perm[rows, j]
        perm[rows, j] = swapped
    if inverse:
        perm = np.argsort(perm, axis=-1)
    return perm.reshape(*batch, m)


class CupyKernels:
    """The LU-family kernels over CuPy arrays (module docstring).

    ``xp`` is the array API namespace (for the portable LU and the
    determinants of a kept factor), ``cupy`` and ``cupyx`` the modules (or
    stand-ins with the same attributes).
    """

    #: cupyx.scipy.linalg.lu_factor's pivots are 0-based, as SciPy's.
    pivot_base = 0

    def __init__(self, xp: Any, cupy: Any, cupyx: Any) -> None:
        self._xp = xp
        self._cupy = cupy
        self._cupyx = cupyx
        linalg = cupyx.scipy.linalg
        self._lu_solve = linalg.lu_solve
        self._trsm = linalg.solve_triangular
        # cupyx's lu_factor is `return _lu_factor(a, overwrite_a, check_finite)`; calling
        # _lu_factor directly puts this module at the warning's stack level (see above).
        # Should a CuPy release drop it, the public lu_factor's warning goes through.
        private = getattr(getattr(linalg, "_decomp_lu", None), "_lu_factor", None)
        self._getrf: Callable[[Any, bool, bool], tuple[Any, Any]] = (
            private if callable(private) else linalg.lu_factor
        )
        # CuPy 14 added stacks of matrices to solve_triangular (trsmBatched).
        major = re.match(r"\d+", str(getattr(cupy, "__version__", "")))
        self._batched_trsm = major is not None and int(major.group()) >= 14

    # -- routing ------------------------------------------------------------------

    def batched_limit(self) -> int:
        """CuPy's cut-off for its batched solver, ``cupy.cublas.get_batched_gesv_limit()``."""
        return int(self._cupy.cublas.get_batched_gesv_limit())

    def _batched(self, a: Any) -> bool:
        return a.ndim > 2 and a.shape[-1] <= self.batched_limit()

    def _linalg_errors(self, check: bool) -> AbstractContextManager[Any]:
        """``errstate(linalg="raise")`` to detect a zero pivot; ``"ignore"`` elsewhere.

        Explicit both ways: a user's ``cupyx.seterr(linalg="raise")`` must not make
        a derivative raise, nor synchronize each call to read ``info``.
        """
        return self._cupyx.errstate(linalg="raise" if check else "ignore")

    # -- one matrix at a time: cuSOLVER getrf / getrs ---------------------------------

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        """cuSOLVER ``getrf`` of each ``(m, n)`` matrix ``A`` of the batch; ``info`` from
        ``U``'s diagonal."""
        cupy = self._cupy
        batch, (m, n) = a.shape[:-2], a.shape[-2:]
        # Each factor column-major, as cuSOLVER stores it, so lu_solve need not copy it.
        lu = cupy.empty((*batch, n, m), dtype=a.dtype).swapaxes(-1, -2)
        piv = cupy.empty((*batch, min(m, n)), dtype=cupy.int32)
        if a.size:
            getrf = self._getrf
            _quiet_zero_pivots()
            for i in np.ndindex(*batch):
                lu[i], piv[i] = getrf(a[i], False, False)  # (a, overwrite_a, check_finite)
        return Factor(a, lu, piv), _getrf_info(cupy, lu)

    def lu_solve(self, factor: Factor, b: Any, trans: Trans = "N") -> Any:
        """``op(A)^-1 b`` from the factors, or by a batched solve where ``a`` was not factored."""
        cupy = self._cupy
        if factor.lu is None:
            return self._batched_solve(factor.a, b, trans)
        lu, piv = factor.lu, factor.pivots.astype(cupy.int32, copy=False)
        n = lu.shape[-1]
        dtype = cupy.result_type(lu.dtype, b.dtype)
        batch = broadcast_batch(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
        if b.size == 0 or lu.size == 0:
            return cupy.zeros((*batch, *b.shape[-2:]), dtype=dtype)
        lu_solve = self._lu_solve
        code = _TRANS[trans]
        lu = lu.astype(dtype, copy=False)
        b = b.astype(dtype, copy=False)
        with self._linalg_errors(check=False):
            if lu.ndim == 2:  # one matrix: every right-hand side of the batch in one call
                cols = cupy.moveaxis(b, -2, 0).reshape(n, -1)
                x = lu_solve((lu, piv), cols, trans=code, check_finite=False)
                return cupy.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
            lu = cupy.broadcast_to(lu, (*batch, n, n))
            piv = cupy.broadcast_to(piv, (*batch, n))
            b = cupy.broadcast_to(b, (*batch, *b.shape[-2:]))
            x = cupy.empty(b.shape, dtype=dtype)
            for i in np.ndindex(*batch):
                x[i] = lu_solve((lu[i], piv[i]), b[i], trans=code, check_finite=False)
        return x

    # -- triangular solves and row interchanges ----------------------------------------

    def solve_triangular(
        self, t: Any, b: Any, upper: bool, trans: Trans = "N", unit: bool = False
    ) -> Any:
        """``op(T)^-1 b`` reading one triangle of ``t``: cuBLAS ``trsm`` (module docstring)."""
        cupy = self._cupy
        n = t.shape[-1]
        dtype = cupy.result_type(t.dtype, b.dtype)
        batch = broadcast_batch(tuple(t.shape[:-2]), tuple(b.shape[:-2]))
        if b.size == 0 or t.size == 0:
            return cupy.zeros((*batch, *b.shape[-2:]), dtype=dtype)
        # cupyx computes in t's dtype and casts b to it: both in the common dtype first.
        t = t.astype(dtype, copy=False)
        b = b.astype(dtype, copy=False)
        trsm = self._trsm
        kw = {"trans": _TRSM_TRANS[trans], "lower": not upper, "unit_diagonal": unit}
        if t.ndim == 2:  # one matrix: every right-hand side of the batch in one call
            cols = cupy.moveaxis(b, -2, 0).reshape(n, -1)
            x = trsm(t, cols, **kw)
            return cupy.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
        t = cupy.broadcast_to(t, (*batch, n, n))
        b = cupy.broadcast_to(b, (*batch, *b.shape[-2:]))
        if self._batched_trsm:  # batch dimensions equal, as trsmBatched needs them
            return trsm(t, b, **kw)
        x = cupy.empty(b.shape, dtype=dtype)
        for i in np.ndindex(*batch):
            x[i] = trsm(t[i], b[i], **kw)
        return x

    def check_pivots(self, op: str, pivots: Any, m: int) -> None:
        """The portable check on the host: one copy of the pivots (``k`` integers)."""
        pivots = np.asarray(self._cupy.asnumpy(pivots))
        portable_check_pivots(array_api_compat.numpy, op, pivots, m, 0)

    def permute_rows(self, pivots: Any, x: Any, inverse: bool = False) -> Any:
        """``P^T x`` (LAPACK's row interchanges in order), or ``P x``: a permutation made on
        the host from the pivots (one copy there), then one gather on the GPU."""
        cupy = self._cupy
        m = x.shape[-2]
        index = cupy.asarray(_permutation(np.asarray(cupy.asnumpy(pivots)), m, inverse))
        if pivots.ndim == 1:  # one permutation for every matrix of x
            return x[..., index, :]
        batch = broadcast_batch(tuple(pivots.shape[:-1]), tuple(x.shape[:-2]))
        x = cupy.broadcast_to(x, (*batch, *x.shape[-2:]))
        index = index.reshape((1,) * (len(batch) + 1 - index.ndim) + index.shape)
        return cupy.take_along_axis(x, index[..., :, None], axis=-2)

    # -- Cholesky: cuSOLVER potrf / potrfBatched, then trsm ------------------------------

    def cholesky(self, a: Any, upper: bool = False) -> tuple[Any, Any]:
        """``cupy.linalg.cholesky`` of ``a`` (or of ``a^H``, for the upper triangle), which
        reads the lower triangle; ``info`` as the module docstring says."""
        cupy = self._cupy
        info = cupy.zeros(a.shape[:-2], dtype=cupy.int32)
        if a.size == 0:
            return cupy.zeros_like(a), info
        m = _op(a, "H") if upper else a  # its lower triangle is a's upper one, conjugated

        def factor(check: bool) -> Any:
            with self._linalg_errors(check):
                return cupy.linalg.cholesky(m)

        try:
            c = factor(check=True)
        except np.linalg.LinAlgError:  # some matrix is not positive definite
            c, failed = factor(check=False), True
        else:
            failed = False
        d = cupy.diagonal(c, axis1=-2, axis2=-1).real
        bad = ~(d > 0)  # a NaN pivot too, which potrf may leave unreported
        if failed or bool(bad.any()):
            info = portable_cholesky(self._xp, a, upper)[1]
            # Where the portable potf2 finds none, the first pivot the factor shows failing.
            first = cupy.argmax(bad.astype(cupy.int8), axis=-1).astype(cupy.int32) + 1
            info = cupy.where(info > 0, info, cupy.where(bad.any(axis=-1), first, 0))
            info = info.astype(cupy.int32, copy=False)
            c = cupy.where((info > 0)[..., None, None], cupy.nan, c).astype(c.dtype, copy=False)
        return (_op(c, "H") if upper else c), info

    def cholesky_solve(self, factor: CholeskyFactor, b: Any) -> Any:
        """``A^-1 b`` from ``A = L L^H``: two triangular solves with the factor (cuBLAS
        ``trsm``, batched on CuPy 14), as ``potrs`` does; ``factor.a`` is not read."""
        c, upper = factor.c, factor.upper
        y = self.solve_triangular(c, b, upper, "H" if upper else "N", False)
        return self.solve_triangular(c, y, upper, "N" if upper else "H", False)

    # -- determinants -------------------------------------------------------------------

    def slogdet(self, a: Any) -> tuple[Factor, Any, Any, Any]:
        """Per-matrix path: from ``lu_factor`` (kept). Batched: ``cupy.linalg.slogdet(a.mT)``
        (``getrfBatched`` of ``A``), no factor kept."""
        cupy = self._cupy
        if not self._batched(a):
            factor, info = self.lu_factor(a)
            sign, logabsdet = slogdet_of_lu(self._xp, factor, self.pivot_base)
            # Where U[k-1, k-1] == 0, what getrf leaves below it does not matter (as
            # cupy.linalg.slogdet, which reads info too): sign 0, logabsdet -inf.
            singular = info > 0
            sign = cupy.where(singular, cupy.zeros_like(sign), sign)
            logabsdet = cupy.where(singular, -cupy.inf, logabsdet).astype(logabsdet.dtype)
            return factor, sign, logabsdet, info
        with self._linalg_errors(check=False):
            sign, logabsdet = cupy.linalg.slogdet(a.swapaxes(-1, -2))
        return Factor(a, None, None), sign, logabsdet, self._info_where(a, sign == 0)

    def det(self, a: Any) -> tuple[Factor, Any, Any]:
        """As :meth:`slogdet`: ``det(P) prod(diag(U))``, or ``cupy.linalg.det(a.mT)``."""
        cupy = self._cupy
        if not self._batched(a):
            factor, info = self.lu_factor(a)
            det = det_of_lu(self._xp, factor, self.pivot_base)
            return factor, cupy.where(info > 0, cupy.zeros_like(det), det), info
        with self._linalg_errors(check=False):
            det = cupy.linalg.det(a.swapaxes(-1, -2))
        return Factor(a, None, None), det, self._info_where(a, det == 0)

    def _info_where(self, a: Any, zero: Any) -> Any:
        """``info`` where a batched determinant came out zero (one reduction and one sync)."""
        if a.size == 0 or not bool(zero.any()):
            return self._cupy.zeros(a.shape[:-2], dtype=self._cupy.int32)
        return self._portable_info(a)

    # -- stacks of small matrices: cuBLAS batched calls ------------------------------

    def _batched_solve(self, a: Any, b: Any, trans: Trans, *, check: bool = False) -> Any:
        """``op(a)^-1 b`` by one ``cupy.linalg.solve``; ``check``: raise on a zero pivot."""
        cupy = self._cupy
        dtype = cupy.result_type(a.dtype, b.dtype)
        n = a.shape[-1]
        batch = broadcast_batch(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        shape = (*batch, *b.shape[-2:])
        if a.size == 0 or b.size == 0:
            return cupy.zeros(shape, dtype=dtype)
        a = cupy.broadcast_to(_op(a, trans).astype(dtype, copy=False), (*batch, n, n))
        b = cupy.broadcast_to(b.astype(dtype, copy=False), shape)
        with self._linalg_errors(check):
            return cupy.linalg.solve(a, b)

    def _has_zero_pivot(self, a: Any) -> bool:
        """Whether cuBLAS ``getrfBatched`` of ``A`` itself meets a zero pivot (one batched call)."""
        cupy = self._cupy
        try:
            self._batched_solve(a, cupy.zeros((*a.shape[:-1], 1), dtype=a.dtype), "N", check=True)
        except np.linalg.LinAlgError:
            return True
        return False

    def _portable_info(self, a: Any) -> Any:
        """Which matrices are singular, and at which step: the portable LU over the batch."""
        return portable_lu_factor(self._xp, a)[1]

    def solve(self, a: Any, b: Any, trans: Trans = "N") -> tuple[Factor, Any, Any]:
        cupy = self._cupy
        if not self._batched(a):
            factor, info = self.lu_factor(a)
            return factor, self.lu_solve(factor, b, trans), info
        factor = Factor(a, None, None)  # not factored: each derivative solve is batched too
        info = cupy.zeros(a.shape[:-2], dtype=cupy.int32)
        if a.size == 0:
            return factor, self._batched_solve(a, b, trans), info
        if trans == "N" and b.size:
            try:  # cuBLAS factors A itself here: its zero pivots are getrf(A)'s
                return factor, self._batched_solve(a, b, "N", check=True), info
            except np.linalg.LinAlgError:
                singular = True
        else:  # CuPy would factor op(A), or nothing (empty b): ask about A itself
            singular = self._has_zero_pivot(a)
        if singular:
            info = self._portable_info(a)
        return factor, self._batched_solve(a, b, trans), info

    def inv(self, a: Any) -> tuple[Any, Any]:
        cupy = self._cupy
        batch, n = a.shape[:-2], a.shape[-1]
        info = cupy.zeros(batch, dtype=cupy.int32)
        if a.size == 0:
            return cupy.zeros(a.shape, dtype=a.dtype), info
        if a.ndim > 2 and not self._batched(a):  # as solve: cuSOLVER per matrix, factors kept
            factor, info = self.lu_factor(a)
            return self.lu_solve(factor, cupy.eye(n, dtype=a.dtype), "N"), info
        if a.ndim == 2:

            def inverse(check: bool) -> Any:  # Fortran order: cuSOLVER getrf of A, not A^T
                with self._linalg_errors(check):
                    return cupy.linalg.inv(cupy.asfortranarray(a))

        else:

            def inverse(check: bool) -> Any:  # A^T C-ordered is A column-major: getrfBatched(A)
                with self._linalg_errors(check):
                    return cupy.linalg.inv(a.swapaxes(-1, -2)).swapaxes(-1, -2)

        try:
            return inverse(check=True), info
        except np.linalg.LinAlgError:
            pass  # some matrix is singular: say which, as getrf of A would
        if a.ndim == 2:
            factor, info = self.lu_factor(a)
            return self.lu_solve(factor, cupy.eye(n, dtype=a.dtype), "N"), info
        return inverse(check=False), self._portable_info(a)
