"""What a rule may call: the array namespace, the LU kernels, and a few matrix helpers.

Rules never import a framework. They receive a :class:`Linalg`, built once at
install time, that bundles the backend's array namespace with three kernels:

- ``lu_factor(a) -> (Factor, info)``: LAPACK ``getrf`` over a batch;
- ``lu_solve(factor, b, trans) -> x``: ``getrs``, solving ``op(A) x = b`` with
  ``op`` the identity (``"N"``), the transpose (``"T"``) or the adjoint (``"H"``),
  batch dimensions of the factor and of ``b`` broadcast;
- ``inv(a) -> (inverse, info)``;
- ``solve(a, b, trans) -> (Factor, x, info)``: factor and solve in one call, for
  libraries whose fused solver beats a separate factor and solve; by default
  ``lu_factor`` then ``lu_solve``.

A backend may hand in faster native kernels; whatever it leaves out is filled
from the portable versions below, written only in array-API operations. Those
are vectorised over the batch and loop over the ``n`` columns in Python, so
they suit the small matrices of large batches (and any array-API library);
large matrices want a native kernel.

``info`` follows LAPACK: an integer array of the batch shape, 0 where the
matrix was factored, ``k > 0`` where ``U[k-1, k-1]`` is exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

Array = Any
Trans = Literal["N", "T", "H"]


class Factor(NamedTuple):
    """An LU factorization ``a = P L U`` as the backend's kernels store it.

    ``a`` is kept so that a backend whose kernels are differentiable (torch
    at higher order) can differentiate a solve with respect to the matrix.
    ``lu`` and ``pivots`` are opaque to the rules; the portable kernels use
    LAPACK's packed layout with 0-based pivot rows.
    """

    a: Array
    lu: Array
    pivots: Array


class ArrayMeta:
    """What a derivative needs of an array whose values it never reads: shape and dtype.

    A rule keeps one among its residuals in place of such an array (``solve``
    keeps ``b``'s), so that the array is neither kept alive nor pinned against
    in-place changes after the forward pass. Backends save it as a plain
    Python value, not as an array. It answers ``shape``, ``ndim`` and
    ``dtype`` as the array did, which is all :func:`cotangent_for` asks.
    """

    __slots__ = ("dtype", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape = shape
        self.dtype = dtype

    @classmethod
    def of(cls, x: Array) -> ArrayMeta:
        return cls(x.shape, x.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"ArrayMeta(shape={tuple(self.shape)}, dtype={self.dtype})"


LUFactor = Callable[[Array], tuple[Factor, Array]]
LUSolve = Callable[[Factor, Array, Trans], Array]
Inv = Callable[[Array], tuple[Array, Array]]
Solve = Callable[[Array, Array, Trans], tuple[Factor, Array, Array]]


@dataclass(frozen=True)
class Linalg:
    """The namespace and kernels of one installed backend, as the rules see them."""

    xp: Any
    lu_factor: LUFactor
    lu_solve: LUSolve
    inv: Inv
    solve: Solve

    @classmethod
    def build(cls, xp: Any, kernels: Any = None) -> Linalg:
        """Bundle ``xp`` with the kernels ``kernels`` has, portable ones for the rest."""

        def pick(name: str, portable: Callable[..., Any]) -> Any:
            native = getattr(kernels, name, None)
            return native if native is not None else portable

        lu_factor = pick("lu_factor", lambda a: portable_lu_factor(xp, a))
        lu_solve = pick("lu_solve", lambda f, b, trans: portable_lu_solve(xp, f, b, trans))

        def factor_then_solve(a: Array, b: Array, trans: Trans) -> tuple[Factor, Array, Array]:
            factor, info = lu_factor(a)
            return factor, lu_solve(factor, b, trans), info

        return cls(
            xp=xp,
            lu_factor=lu_factor,
            lu_solve=lu_solve,
            inv=pick("inv", lambda a: portable_inv(xp, a)),
            solve=pick("solve", factor_then_solve),
        )


# -- matrix helpers ---------------------------------------------------------


#: ``is_complex`` per (namespace, dtype): it runs on every derivative call, and
#: ``xp.isdtype`` through array_api_compat costs more than the small solve it guards.
_COMPLEX: dict[tuple[int, Any], bool] = {}


def is_complex(xp: Any, x: Array) -> bool:
    key = (id(xp), x.dtype)
    try:
        return _COMPLEX[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable dtype object
        return bool(xp.isdtype(x.dtype, "complex floating"))
    result = _COMPLEX[key] = bool(xp.isdtype(x.dtype, "complex floating"))
    return result


def mT(xp: Any, x: Array) -> Array:
    """Transpose of the last two axes."""
    # The array API's `x.mT` costs a fraction of `matrix_transpose` through array_api_compat;
    # NumPy < 2 lacks it.
    t = getattr(x, "mT", None)
    return t if t is not None else xp.matrix_transpose(x)


def mH(xp: Any, x: Array) -> Array:
    """Conjugate transpose of the last two axes (a plain transpose for real ``x``)."""
    xt = mT(xp, x)
    return xp.conj(xt) if is_complex(xp, x) else xt


def broadcast_batch(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast batch shapes as the array API standard does, or raise ValueError."""
    ndim = max([len(s) for s in shapes], default=0)  # a list: torch.compile traces it
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            raise ValueError(f"batch shapes {' and '.join(map(str, shapes))} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def sum_to_shape(xp: Any, x: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``x`` over the axes that broadcasting added to reach ``x.shape`` from ``shape``."""
    if tuple(x.shape) == tuple(shape):
        return x
    lead = x.ndim - len(shape)
    if lead:
        x = xp.sum(x, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if stretched:
        x = xp.sum(x, axis=stretched, keepdims=True)
    return x


def cotangent_for(xp: Any, ct: Array, primal: Array) -> Array:
    """Fit a cotangent to its primal: summed to its shape, real if the primal is real."""
    if ct.dtype == primal.dtype and ct.shape == primal.shape:
        return ct  # the common case, on every backward pass: nothing to fit
    ct = sum_to_shape(xp, ct, tuple(primal.shape))
    if is_complex(xp, ct) and not is_complex(xp, primal):
        ct = xp.real(ct)
    return ct if ct.dtype == primal.dtype else xp.astype(ct, primal.dtype)


# -- portable LU kernels ------------------------------------------------------
# Rows are selected and swapped with one-hot masks rather than scatter or
# take_along_axis: every array-API library has `where` and `sum`.


def _row_index(xp: Any, n: int, like: Array) -> Array:
    return xp.reshape(xp.arange(n, device=like.device), (n, 1))


def _select_row(xp: Any, x: Array, onehot: Array) -> Array:
    """``x[..., p, :]`` with ``p`` given per batch element by a one-hot mask (..., m, 1)."""
    return xp.sum(xp.where(onehot, x, xp.zeros_like(x)), axis=-2, keepdims=True)


def _pivot_magnitude(xp: Any, x: Array) -> Array:
    """What LAPACK's ``i?amax`` compares: ``|x|`` for real, ``|Re x| + |Im x|`` for complex."""
    if is_complex(xp, x):
        return xp.abs(xp.real(x)) + xp.abs(xp.imag(x))
    return xp.abs(x)


def portable_lu_factor(xp: Any, a: Array) -> tuple[Factor, Array]:
    """Batched LU with partial pivoting, in array-API operations only.

    Step for step LAPACK's unblocked ``getf2``: the pivot is the first entry of
    largest ``i?amax`` magnitude; a zero pivot sets ``info`` (the first one
    only) and is skipped; the column below the pivot is scaled by its
    reciprocal (divided, where the pivot is below the smallest normal number);
    then the rank-one update. Exact zero pivots come from rounding as much as
    from structure, so ``info`` is getf2's: blocked or recursive ``getrf``
    builds (OpenBLAS, MKL) round differently and can disagree on matrices that
    are singular only to rounding.
    """
    n = a.shape[-1]
    batch = tuple(a.shape[:-2])
    lu = xp.asarray(a, copy=True)
    info = xp.zeros(batch, dtype=xp.int32, device=a.device)
    rows = _row_index(xp, n, a)
    tiny = xp.finfo(a.dtype).smallest_normal
    pivots = []
    for k in range(n):
        sub = lu[..., k:, :]
        p = xp.argmax(_pivot_magnitude(xp, sub[..., k]), axis=-1)
        onehot = rows[: n - k, :] == xp.reshape(p, (*batch, 1, 1))
        row_p = _select_row(xp, sub, onehot)
        lu[..., k:, :] = xp.where(onehot, sub[..., :1, :], sub)
        lu[..., k : k + 1, :] = row_p
        pivot = row_p[..., 0, k]
        singular = pivot == 0
        info = xp.where(
            (info == 0) & singular, xp.asarray(k + 1, dtype=xp.int32, device=a.device), info
        )
        if k + 1 < n:
            # A zero pivot means the column below is zero too: leave it, as getf2 does.
            safe = xp.where(singular, xp.ones_like(pivot), pivot)[..., None]
            below = lu[..., k + 1 :, k]
            scaled = xp.where(xp.abs(safe) >= tiny, below * (1 / safe), below / safe)
            lu[..., k + 1 :, k] = scaled
            lu[..., k + 1 :, k + 1 :] = (
                lu[..., k + 1 :, k + 1 :] - scaled[..., :, None] * lu[..., k : k + 1, k + 1 :]
            )
        pivots.append(p + k)
    if pivots:
        piv = xp.stack(pivots, axis=-1)
    else:
        piv = xp.zeros((*batch, 0), dtype=xp.int64, device=a.device)
    return Factor(a, lu, piv), info


def _swap_rows(xp: Any, x: Array, k: int, p: Array) -> Array:
    """Swap row ``k`` of ``x`` with row ``p`` (per batch element)."""
    n = x.shape[-2]
    onehot = _row_index(xp, n, x) == p[..., None, None]
    row_p = _select_row(xp, x, onehot)
    x = xp.where(onehot, x[..., k : k + 1, :], x)
    x[..., k : k + 1, :] = row_p
    return x


def portable_lu_solve(xp: Any, factor: Factor, b: Array, trans: Trans = "N") -> Array:
    """Solve ``op(A) x = b`` from ``A = P L U`` (``getrs``), in array-API operations only."""
    lu, piv = factor.lu, factor.pivots
    n = lu.shape[-1]
    batch = broadcast_batch(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
    dtype = xp.result_type(lu.dtype, b.dtype)
    x = xp.asarray(xp.broadcast_to(xp.astype(b, dtype), (*batch, *b.shape[-2:])), copy=True)
    if trans == "N":
        for k in range(n):  # x = P^T b
            x = _swap_rows(xp, x, k, piv[..., k])
        for j in range(n - 1):  # L y = x, unit lower
            x[..., j + 1 :, :] = (
                x[..., j + 1 :, :] - lu[..., j + 1 :, j : j + 1] * x[..., j : j + 1, :]
            )
        for j in reversed(range(n)):  # U x = y
            x[..., j : j + 1, :] = x[..., j : j + 1, :] / lu[..., j : j + 1, j : j + 1]
            x[..., :j, :] = x[..., :j, :] - lu[..., :j, j : j + 1] * x[..., j : j + 1, :]
        return x
    ut = mH(xp, lu) if trans == "H" else mT(xp, lu)  # op(U) lower, op(L) unit upper
    for j in range(n):  # op(U) y = b
        x[..., j : j + 1, :] = x[..., j : j + 1, :] / ut[..., j : j + 1, j : j + 1]
        x[..., j + 1 :, :] = x[..., j + 1 :, :] - ut[..., j + 1 :, j : j + 1] * x[..., j : j + 1, :]
    for j in reversed(range(n)):  # op(L) z = y
        x[..., :j, :] = x[..., :j, :] - ut[..., :j, j : j + 1] * x[..., j : j + 1, :]
    for k in reversed(range(n)):  # x = P z
        x = _swap_rows(xp, x, k, piv[..., k])
    return x


def portable_inv(xp: Any, a: Array) -> tuple[Array, Array]:
    factor, info = portable_lu_factor(xp, a)
    eye = xp.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return portable_lu_solve(xp, factor, eye, "N"), info
