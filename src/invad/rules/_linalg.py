"""What a rule may call: the array namespace, the LU kernels, and a few matrix helpers.

Rules never import a framework. They receive a :class:`Linalg`, built once at
install time, that bundles the backend's array namespace with its kernels:

- ``lu_factor(a) -> (Factor, info)``: LAPACK ``getrf`` over a batch, square or
  rectangular ``(..., m, n)``; ``pivots`` of shape ``(..., min(m, n))`` in the
  framework's own convention (LAPACK's row interchanges, counted from
  ``pivot_base``: 1 for torch, 0 for SciPy, JAX and CuPy);
- ``lu_solve(factor, b, trans) -> x``: ``getrs``, solving ``op(A) x = b`` with
  ``op`` the identity (``"N"``), the transpose (``"T"``) or the adjoint (``"H"``),
  batch dimensions of the factor and of ``b`` broadcast. ``factor.a`` may be
  ``None`` (a factorization the user made: nothing differentiates it);
- ``inv(a) -> (inverse, info)``;
- ``solve(a, b, trans) -> (Factor, x, info)``: factor and solve in one call, for
  libraries whose fused solver beats a separate factor and solve; by default
  ``lu_factor`` then ``lu_solve``;
- ``solve_triangular(t, b, upper, trans, unit) -> x``: ``trtrs``, solving
  ``op(T) x = b`` reading only the triangle of ``T`` named by ``upper`` (and not
  its diagonal if ``unit``). Backends whose AD engine differentiates their
  triangular solve (torch, JAX) hand it in: the rules' derivatives that solve
  with ``L`` or ``U`` are then differentiable at every order;
- ``permute_rows(pivots, x, inverse) -> y``: ``P^T x`` (LAPACK's ``laswp``, the
  interchanges in order) for ``A = P L U``, or ``P x`` with ``inverse``;
- ``slogdet(a) -> (Factor, sign, logabsdet, info)`` and ``det(a) -> (Factor, det,
  info)``: from one LU (a backend whose fused kernel keeps no factor may return
  ``Factor(a, None, None)``, which its ``lu_solve`` understands);
- ``cholesky(a, upper) -> (c, info)``: LAPACK ``potrf``, ``a = c c^H`` (``c`` lower)
  or ``c^H c`` (``c`` upper), reading only that triangle of ``a``; ``info = k > 0``
  where the leading minor of order ``k`` is not positive definite (or not finite);
  the values of such batch elements are not finite;
- ``cholesky_solve(factor, b) -> x``: ``potrs``, ``A^-1 b`` for ``factor`` a
  :class:`CholeskyFactor` of ``A``; batch dimensions broadcast (``factor.a`` may be
  ``None``, as for ``lu_solve``);
- ``if_any(mask, then, otherwise)``: ``then()`` if any element of ``mask`` is
  true, else ``otherwise()``; ``then`` must be right for every element. It lets
  a rule skip work that no batch element needs (``det``'s adjugate at singular
  matrices): eagerly by reading ``mask``, under JAX with ``lax.cond``, and
  where the values cannot be read (``torch.func`` transforms) by calling ``then``.
  ``otherwise`` may return None ("nothing"): eager backends return it, and a
  ``lax.cond`` stands zeros shaped as ``then()``'s result for it;
- ``packed_outer(h, y, g, x) -> tril_-(h y^H) + triu(g x^H)`` of thin factors
  ``(..., n, k)``: a packed ``LU``'s cotangent (``lu_solve``'s, one per solve),
  column-major where the backend has layouts, as LAPACK's ``LU`` is, so that the
  cotangents of many solves add up in ``LU``'s own layout;
- ``factored_det(a, factor) -> det``: ``det(a)`` from ``factor``, a factorization
  of ``a``, with the derivatives of ``det(a)`` (every order) where the backend's
  derivatives are themselves differentiated; the factor's diagonal product
  otherwise (NumPy; a first-order backward). ``det``'s border uses it for a
  matrix whose factor it already has;
- ``constant(x) -> x`` without derivatives: the AD engine's stop-gradient
  (``detach``, ``lax.stop_gradient``), the identity without one. A rule marks
  with it values that it derives from a factorization and uses as constants
  (``det``'s border at singular matrices).

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
    at higher order) can differentiate a solve with respect to the matrix; it
    is ``None`` for a factorization the user passed in (``lu_solve``). ``lu``
    is LAPACK's packed layout (``L`` strictly below the diagonal, unit
    diagonal implied, ``U`` on and above it) and ``pivots`` its row
    interchanges in the framework's convention (see ``pivot_base``).
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


class CholeskyFactor(NamedTuple):
    """A Cholesky factorization ``a = c c^H`` (``upper`` false) or ``c^H c`` (``upper`` true).

    ``a`` is kept for backends that differentiate a solve with respect to the
    matrix (torch at higher order); ``None`` for a factor the user passed in.
    """

    a: Array
    c: Array
    upper: bool


LUFactor = Callable[[Array], tuple[Factor, Array]]
LUSolve = Callable[[Factor, Array, Trans], Array]
Inv = Callable[[Array], tuple[Array, Array]]
Solve = Callable[[Array, Array, Trans], tuple[Factor, Array, Array]]
SolveTriangular = Callable[[Array, Array, bool, Trans, bool], Array]
PermuteRows = Callable[[Array, Array, bool], Array]
Slogdet = Callable[[Array], tuple[Factor, Array, Array, Array]]
Det = Callable[[Array], tuple[Factor, Array, Array]]
Cholesky = Callable[[Array, bool], tuple[Array, Array]]
CholeskySolve = Callable[[CholeskyFactor, Array], Array]


@dataclass(frozen=True)
class Linalg:
    """The namespace and kernels of one installed backend, as the rules see them."""

    xp: Any
    lu_factor: LUFactor
    lu_solve: LUSolve
    inv: Inv
    solve: Solve
    solve_triangular: SolveTriangular
    permute_rows: PermuteRows
    slogdet: Slogdet
    det: Det
    cholesky: Cholesky
    cholesky_solve: CholeskySolve
    if_any: Callable[[Array, Callable[[], Any], Callable[[], Any]], Any]
    pivot_base: int = 0
    #: LAPACK-style ``info`` of a diagonal (:func:`first_zero`); a backend may look for a
    #: zero first and skip the formula, which costs more than a small solve.
    first_zero: Callable[[Array], Array] = None  # type: ignore[assignment]
    #: ``tril_-(h y^H) + triu(g x^H)`` (:func:`portable_packed_outer`).
    packed_outer: Callable[[Array, Array, Array, Array], Array] = None  # type: ignore[assignment]
    #: ``x`` without derivatives (a stop-gradient); the identity by default.
    constant: Callable[[Array], Array] = None  # type: ignore[assignment]
    #: ``det(a)`` from a factor of ``a``, differentiable where derivatives are differentiated.
    factored_det: Callable[[Array, Factor], Array] = None  # type: ignore[assignment]
    #: ``check_pivots(op, pivots, m)``: ``ValueError`` unless ``pivots`` are the row
    #: interchanges of an LU factorization of ``m`` rows (:func:`portable_check_pivots`);
    #: reads their values, so it runs on eager calls only (``Rule.check_values``).
    check_pivots: Callable[[str, Array, int], None] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # the portable defaults of the optional kernels, for Linalg.build and for plugins
        # that build a Linalg themselves
        xp = self.xp
        if self.first_zero is None:
            object.__setattr__(self, "first_zero", lambda d: first_zero(xp, d))
        if self.packed_outer is None:
            object.__setattr__(
                self, "packed_outer", lambda h, y, g, x: portable_packed_outer(xp, h, y, g, x)
            )
        if self.constant is None:
            object.__setattr__(self, "constant", _identity)
        base = self.pivot_base
        if self.factored_det is None:
            object.__setattr__(self, "factored_det", lambda a, f: det_of_lu(xp, f, base))
        if self.check_pivots is None:
            object.__setattr__(
                self,
                "check_pivots",
                lambda op, piv, m: portable_check_pivots(xp, op, piv, m, base),
            )

    @classmethod
    def build(cls, xp: Any, kernels: Any = None) -> Linalg:
        """Bundle ``xp`` with the kernels ``kernels`` has, portable ones for the rest."""

        def pick(name: str, portable: Callable[..., Any]) -> Any:
            native = getattr(kernels, name, None)
            return native if native is not None else portable

        base = int(getattr(kernels, "pivot_base", 0))
        la_st = pick(
            "solve_triangular",
            lambda t, b, upper, trans, unit: portable_solve_triangular(
                xp, t, b, upper, trans, unit
            ),
        )
        permute_rows = pick(
            "permute_rows", lambda piv, x, inverse: portable_permute_rows(xp, piv, x, inverse, base)
        )
        lu_factor = pick("lu_factor", lambda a: portable_lu_factor(xp, a))
        lu_solve = pick(
            "lu_solve", lambda f, b, trans: portable_lu_solve(xp, f, b, trans, permute_rows)
        )

        def factor_then_solve(a: Array, b: Array, trans: Trans) -> tuple[Factor, Array, Array]:
            factor, info = lu_factor(a)
            return factor, lu_solve(factor, b, trans), info

        def lu_slogdet(a: Array) -> tuple[Factor, Array, Array, Array]:
            factor, info = lu_factor(a)
            sign, logabsdet = slogdet_of_lu(xp, factor, base)
            return factor, sign, logabsdet, info

        def lu_det(a: Array) -> tuple[Factor, Array, Array]:
            factor, info = lu_factor(a)
            return factor, det_of_lu(xp, factor, base), info

        # the optional kernels the backend has: __post_init__ gives the portable ones
        optional: dict[str, Any] = {
            name: kernel
            for name in _OPTIONAL
            if (kernel := getattr(kernels, name, None)) is not None
        }
        return cls(
            xp=xp,
            lu_factor=lu_factor,
            lu_solve=lu_solve,
            inv=pick("inv", lambda a: portable_inv(xp, a)),
            solve=pick("solve", factor_then_solve),
            solve_triangular=la_st,
            permute_rows=permute_rows,
            slogdet=pick("slogdet", lu_slogdet),
            det=pick("det", lu_det),
            cholesky=pick("cholesky", lambda a, upper: portable_cholesky(xp, a, upper)),
            cholesky_solve=pick(
                "cholesky_solve", lambda f, b: portable_cholesky_solve(xp, f, b, la_st)
            ),
            if_any=pick(
                "if_any", lambda mask, then, otherwise: portable_if_any(xp, mask, then, otherwise)
            ),
            pivot_base=base,
            **optional,
        )


#: The Linalg fields that default to portable kernels in ``Linalg.__post_init__``.
_OPTIONAL = ("first_zero", "packed_outer", "constant", "factored_det", "check_pivots")


def _identity(x: Array) -> Array:
    return x


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


def device(x: Array) -> Any:
    """``x.device``, or ``None`` (the default device) for an array without one: a JAX
    tracer under ``jit`` has none, and its computation runs where the trace is placed."""
    return getattr(x, "device", None)


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


def hermitian_part(xp: Any, x: Array) -> Array:
    """``(x + x^H) / 2``: what a tangent of a Hermitian matrix counts by."""
    return (x + mH(xp, x)) / 2


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


def diagonal(xp: Any, x: Array) -> Array:
    """The main diagonal of the last two axes, ``(..., min(m, n))``."""
    return xp.linalg.diagonal(x)


def portable_if_any(
    xp: Any, mask: Array, then: Callable[[], Any], otherwise: Callable[[], Any]
) -> Any:
    """``then()`` if any element of ``mask`` is true or its values cannot be read, else
    ``otherwise()``."""
    try:
        found = bool(xp.any(mask))
    except Exception:  # a tracer, a functorch-wrapped tensor: no value to read
        found = True
    return then() if found else otherwise()


def portable_packed_outer(xp: Any, h: Array, y: Array, g: Array, x: Array) -> Array:
    """``tril_-(h y^H) + triu(g x^H)`` of thin factors ``(..., n, k)``, in one ``where``.

    Built as its transpose and returned as a transposed view: column-major where the
    namespace has layouts, LAPACK's layout of ``LU`` (NumPy adds a row-major array into a
    column-major one several times slower). One column each: broadcast products, no GEMM.
    """
    if is_complex(xp, y):
        y, x = xp.conj(y), xp.conj(x)
    if h.shape[-1] == 1:
        lower, upper = y * mT(xp, h), x * mT(xp, g)  # (h y^H)^T = conj(y) h^T
    else:
        lower, upper = y @ mT(xp, h), x @ mT(xp, g)
    r = xp.arange(upper.shape[-1], device=device(upper))
    return mT(xp, xp.where(r[:, None] < r[None, :], lower, upper))


def first_zero(xp: Any, d: Array) -> Array:
    """LAPACK-style ``info`` of a diagonal ``d`` (``(..., n)``): 1 + the index of its first
    exact zero, 0 where it has none."""
    n = d.shape[-1]
    if n == 0:
        return xp.zeros(d.shape[:-1], dtype=xp.int32, device=device(d))
    # Among the zeros the first has the largest weight n - j: info = n + 1 - that weight,
    # and where there is no zero (n + 1) mod (n + 1) = 0. Few operations: this runs on
    # every forward call of lu_solve and solve_triangular.
    weight = xp.arange(n, 0, -1, dtype=xp.int32, device=device(d))
    top = xp.max(xp.astype(d == 0, xp.int32) * weight, axis=-1)
    return (n + 1 - top) % (n + 1)


def pivot_sign(xp: Any, pivots: Array, base: int, dtype: Any) -> Array:
    """``det(P)``, +1 or -1 per batch element: -1 per row interchange that moves a row."""
    k = pivots.shape[-1]
    rows = xp.arange(base, base + k, dtype=pivots.dtype, device=device(pivots))
    swaps = xp.sum(xp.astype(pivots != rows, xp.int32), axis=-1)
    one = xp.ones(swaps.shape, dtype=dtype, device=device(pivots))
    return xp.where(swaps % 2 == 1, -one, one)


def slogdet_of_lu(xp: Any, factor: Factor, base: int) -> tuple[Array, Array]:
    """``(sign, logabsdet)`` from the diagonal of ``U`` and the parity of the interchanges;
    ``(0, -inf)`` where ``U`` has a zero on its diagonal."""
    d = diagonal(xp, factor.lu)
    absd = xp.abs(d)
    logabsdet = xp.sum(xp.log(absd), axis=-1)
    if is_complex(xp, d):
        zero = absd == 0
        unit = d / xp.astype(xp.where(zero, xp.ones_like(absd), absd), d.dtype)
        phase = xp.where(zero, xp.zeros_like(unit), unit)
    else:
        phase = xp.sign(d)
    sign = xp.prod(phase, axis=-1) * pivot_sign(xp, factor.pivots, base, d.dtype)
    return sign, logabsdet


def det_of_lu(xp: Any, factor: Factor, base: int) -> Array:
    """``det(A) = det(P) prod(diag(U))``."""
    d = diagonal(xp, factor.lu)
    return xp.prod(d, axis=-1) * pivot_sign(xp, factor.pivots, base, d.dtype)


# -- portable LU kernels ------------------------------------------------------
# Rows are selected and swapped with one-hot masks rather than scatter or
# take_along_axis: every array-API library has `where` and `sum`.


def _row_index(xp: Any, n: int, like: Array) -> Array:
    return xp.reshape(xp.arange(n, device=device(like)), (n, 1))


def _select_row(xp: Any, x: Array, onehot: Array) -> Array:
    """``x[..., p, :]`` with ``p`` given per batch element by a one-hot mask (..., m, 1)."""
    return xp.sum(xp.where(onehot, x, xp.zeros_like(x)), axis=-2, keepdims=True)


def _pivot_magnitude(xp: Any, x: Array) -> Array:
    """What LAPACK's ``i?amax`` compares: ``|x|`` for real, ``|Re x| + |Im x|`` for complex."""
    if is_complex(xp, x):
        return xp.abs(xp.real(x)) + xp.abs(xp.imag(x))
    return xp.abs(x)


def portable_lu_factor(xp: Any, a: Array) -> tuple[Factor, Array]:
    """Batched LU with partial pivoting of ``(..., m, n)`` input, in array-API operations only.

    Step for step LAPACK's unblocked ``getf2``: the pivot is the first entry of
    largest ``i?amax`` magnitude; a zero pivot sets ``info`` (the first one
    only) and is skipped; the column below the pivot is scaled by its
    reciprocal (divided, where the pivot is below the smallest normal number);
    then the rank-one update. Exact zero pivots come from rounding as much as
    from structure, so ``info`` is getf2's: blocked or recursive ``getrf``
    builds (OpenBLAS, MKL) round differently and can disagree on matrices that
    are singular only to rounding. Pivots are 0-based, ``min(m, n)`` of them.
    """
    m, n = a.shape[-2], a.shape[-1]
    batch = tuple(a.shape[:-2])
    lu = xp.asarray(a, copy=True)
    info = xp.zeros(batch, dtype=xp.int32, device=device(a))
    rows = _row_index(xp, m, a)
    tiny = xp.finfo(a.dtype).smallest_normal
    pivots = []
    for k in range(min(m, n)):
        sub = lu[..., k:, :]
        p = xp.argmax(_pivot_magnitude(xp, sub[..., k]), axis=-1)
        onehot = rows[: m - k, :] == xp.reshape(p, (*batch, 1, 1))
        row_p = _select_row(xp, sub, onehot)
        lu[..., k:, :] = xp.where(onehot, sub[..., :1, :], sub)
        lu[..., k : k + 1, :] = row_p
        pivot = row_p[..., 0, k]
        singular = pivot == 0
        info = xp.where(
            (info == 0) & singular, xp.asarray(k + 1, dtype=xp.int32, device=device(a)), info
        )
        if k + 1 < m:
            # A zero pivot means the column below is zero too: leave it, as getf2 does.
            safe = xp.where(singular, xp.ones_like(pivot), pivot)[..., None]
            below = lu[..., k + 1 :, k]
            scaled = xp.where(xp.abs(safe) >= tiny, below * (1 / safe), below / safe)
            lu[..., k + 1 :, k] = scaled
            lu[..., k + 1 :, k + 1 :] = (
                lu[..., k + 1 :, k + 1 :] - scaled[..., :, None] * lu[..., k : k + 1, k + 1 :]
            )
        pivots.append(p + k)
    if pivots:  # int32, as LAPACK's getrf returns them (argmax gives the default integer)
        piv = xp.astype(xp.stack(pivots, axis=-1), xp.int32)
    else:
        piv = xp.zeros((*batch, 0), dtype=xp.int32, device=device(a))
    return Factor(a, lu, piv), info


def _swap_rows(xp: Any, x: Array, k: int, p: Array) -> Array:
    """Swap row ``k`` of ``x`` with row ``p`` (per batch element)."""
    n = x.shape[-2]
    onehot = _row_index(xp, n, x) == p[..., None, None]
    row_p = _select_row(xp, x, onehot)
    x = xp.where(onehot, x[..., k : k + 1, :], x)
    x[..., k : k + 1, :] = row_p
    return x


def _broadcast_copy(xp: Any, x: Array, batch: tuple[int, ...], dtype: Any) -> Array:
    """A fresh, writable ``x`` of dtype ``dtype``, its batch dimensions broadcast to ``batch``."""
    x = x if x.dtype == dtype else xp.astype(x, dtype)
    return xp.asarray(xp.broadcast_to(x, (*batch, *x.shape[-2:])), copy=True)


def portable_permute_rows(
    xp: Any, pivots: Array, x: Array, inverse: bool = False, base: int = 0
) -> Array:
    """``P^T x`` for ``A = P L U`` (LAPACK's ``laswp``: the interchanges in order), or ``P x``."""
    batch = broadcast_batch(tuple(pivots.shape[:-1]), tuple(x.shape[:-2]))
    x = _broadcast_copy(xp, x, batch, x.dtype)
    steps = range(pivots.shape[-1])
    for k in reversed(steps) if inverse else steps:
        x = _swap_rows(xp, x, k, pivots[..., k] - base)
    return x


def portable_check_pivots(xp: Any, op: str, pivots: Array, m: int, base: int = 0) -> None:
    """``ValueError`` unless ``pivots`` (``(..., k)``) are LAPACK's row interchanges of an
    LU factorization of ``m`` rows, counting rows from ``base``: ``getrf`` swaps row ``i``
    with a row at or below it, so ``base + i <= pivots[..., i] <= base + m - 1``.

    Out of that range, row interchanges read or write outside the matrix (LAPACK's
    ``laswp`` and ``getrs`` do not check) or give a silently wrong solution; it is also
    where pivots counted from the other base land (torch counts from 1; SciPy, JAX and
    CuPy from 0), as the last pivot of a square factor is always its last row.
    """
    k = pivots.shape[-1]
    if k == 0 or any(n == 0 for n in pivots.shape):
        return
    first = xp.arange(base, base + k, dtype=pivots.dtype, device=device(pivots))
    bad = (pivots < first) | (pivots > base + m - 1)
    if not bool(xp.any(bad)):
        return
    index = tuple(int(i[0]) for i in xp.nonzero(bad))
    low, high = base + index[-1], base + m - 1
    expected = f"{low}" if low == high else f"{low} to {high}"
    raise ValueError(
        f"invad.{op}: `pivots` are not the row interchanges of an LU factorization "
        f"(LAPACK's, counting rows from {base} as this framework's lu_factor does): "
        f"pivots[{', '.join(map(str, index))}] = {int(pivots[index])}, expected {expected}. "
        "torch's lu_factor counts rows from 1; SciPy's, JAX's and CuPy's from 0."
    )


def portable_lu_solve(
    xp: Any,
    factor: Factor,
    b: Array,
    trans: Trans = "N",
    permute_rows: PermuteRows | None = None,
) -> Array:
    """Solve ``op(A) x = b`` from ``A = P L U`` (``getrs``), in array-API operations only."""
    lu = factor.lu
    if permute_rows is None:

        def permute_rows(piv: Array, x: Array, inverse: bool) -> Array:
            return portable_permute_rows(xp, piv, x, inverse)

    dtype = xp.result_type(lu.dtype, b.dtype)
    lu = lu if lu.dtype == dtype else xp.astype(lu, dtype)
    b = b if b.dtype == dtype else xp.astype(b, dtype)
    if trans == "N":  # x = U^-1 L^-1 P^T b
        y = portable_solve_triangular(
            xp, lu, permute_rows(factor.pivots, b, False), False, "N", True
        )
        return portable_solve_triangular(xp, lu, y, True, "N", False)
    # op(A) = op(U) op(L) P^T:  x = P op(L)^-1 op(U)^-1 b
    y = portable_solve_triangular(xp, lu, b, True, trans, False)
    y = portable_solve_triangular(xp, lu, y, False, trans, True)
    return permute_rows(factor.pivots, y, True)


def portable_solve_triangular(
    xp: Any, t: Array, b: Array, upper: bool, trans: Trans = "N", unit: bool = False
) -> Array:
    """Solve ``op(T) x = b`` (``trtrs``) reading only the triangle of ``T`` that ``upper``
    names, and not its diagonal if ``unit``; batch dimensions broadcast."""
    n = t.shape[-1]
    batch = broadcast_batch(tuple(t.shape[:-2]), tuple(b.shape[:-2]))
    dtype = xp.result_type(t.dtype, b.dtype)
    x = _broadcast_copy(xp, b, batch, dtype)
    m = t if t.dtype == dtype else xp.astype(t, dtype)
    if trans != "N":  # op(T) is the other triangle of T^T (or T^H)
        m = mH(xp, m) if trans == "H" else mT(xp, m)
        upper = not upper
    if upper:  # back substitution
        for j in reversed(range(n)):
            if not unit:
                x[..., j : j + 1, :] = x[..., j : j + 1, :] / m[..., j : j + 1, j : j + 1]
            x[..., :j, :] = x[..., :j, :] - m[..., :j, j : j + 1] * x[..., j : j + 1, :]
    else:  # forward substitution
        for j in range(n):
            if not unit:
                x[..., j : j + 1, :] = x[..., j : j + 1, :] / m[..., j : j + 1, j : j + 1]
            x[..., j + 1 :, :] = (
                x[..., j + 1 :, :] - m[..., j + 1 :, j : j + 1] * x[..., j : j + 1, :]
            )
    return x


def portable_cholesky(xp: Any, a: Array, upper: bool = False) -> tuple[Array, Array]:
    """Batched Cholesky (``potf2``, left-looking by columns) in array-API operations only.

    Reads only the lower triangle of ``a`` (the upper one, transposed, if
    ``upper``). A pivot that is not positive, or NaN, sets ``info`` to its order
    (the first one only) and makes the rest of that batch element NaN, so that
    nothing downstream looks finite.
    """
    m = mH(xp, a) if upper else a  # the lower triangle of m is the one to read
    n = a.shape[-1]
    batch = tuple(a.shape[:-2])
    c = xp.zeros_like(m)
    info = xp.zeros(batch, dtype=xp.int32, device=device(a))
    for j in range(n):
        row = c[..., j : j + 1, :j]  # L[j, :j]
        d = m[..., j, j] - xp.sum(
            row * xp.conj(row) if is_complex(xp, m) else row * row, axis=(-2, -1)
        )
        d = xp.real(d) if is_complex(xp, d) else d
        bad = ~(d > 0)  # NaN too
        info = xp.where(
            (info == 0) & bad, xp.asarray(j + 1, dtype=xp.int32, device=device(a)), info
        )
        pivot = xp.sqrt(xp.where(bad, xp.full_like(d, float("nan")), d))
        pivot = xp.astype(pivot, m.dtype)
        c[..., j, j] = pivot
        if j + 1 < n:
            below = m[..., j + 1 :, j : j + 1] - c[..., j + 1 :, :j] @ mH(xp, row)
            c[..., j + 1 :, j : j + 1] = below / pivot[..., None, None]
    return (mH(xp, c) if upper else c), info


def portable_cholesky_solve(
    xp: Any, factor: CholeskyFactor, b: Array, solve_triangular: SolveTriangular | None = None
) -> Array:
    """``A^-1 b`` from ``A = L L^H`` by two triangular solves (``L = c``, or ``c^H`` if upper),
    the backend's ``solve_triangular`` if given."""
    if solve_triangular is None:

        def solve_triangular(t: Array, y: Array, upper: bool, trans: Trans, unit: bool) -> Array:
            return portable_solve_triangular(xp, t, y, upper, trans, unit)

    c, upper = factor.c, factor.upper
    if upper:  # A = c^H c: c^-1 c^-H b
        return solve_triangular(c, solve_triangular(c, b, True, "H", False), True, "N", False)
    return solve_triangular(c, solve_triangular(c, b, False, "N", False), False, "H", False)


def portable_inv(xp: Any, a: Array) -> tuple[Array, Array]:
    factor, info = portable_lu_factor(xp, a)
    eye = xp.eye(a.shape[-1], dtype=a.dtype, device=device(a))
    return portable_lu_solve(xp, factor, eye, "N"), info
