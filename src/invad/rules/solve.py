"""The solve family: ``solve``, ``solve_ex`` and ``tensorsolve``.

Left solve, ``A X = B``, with the factorization of ``A`` kept from the forward::

    forward        X = A^-1 B
    linearization  dX = A^-1 (dB - dA X)
    adjoint        G = A^-H Xbar,  Bbar = G,  Abar = -G X^H

Right solve, ``X A = B`` (``left=False``)::

    forward        X = B A^-1
    linearization  dX = (dB - X dA) A^-1
    adjoint        Bbar = Xbar A^-H,  Abar = -X^H Bbar

``b`` is a vector only when ``b.ndim == 1`` (the array API rule); it then
stands for a one-column (left) or one-row (right) matrix.

``assume_a="pos"`` (Hermitian positive-definite ``a``, as scipy.linalg.solve):
Cholesky instead of LU, reading only the lower triangle of ``a``; the same
rules with ``A^-1`` applied through the Cholesky factor, ``dA`` counted by its
Hermitian part and ``Abar`` projected to Hermitian (``sym(X) = (X + X^H) / 2``). ``tensorsolve`` is
the left rule on the matrix and vector that NumPy's index reshape makes.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

from ._linalg import (
    Array,
    ArrayMeta,
    CholeskyFactor,
    Factor,
    Linalg,
    broadcast_batch,
    cotangent_for,
    hermitian_part,
    mH,
    mT,
)
from ._rule import (
    GETRF_INFO,
    ZERO_PIVOT,
    Contract,
    Param,
    Primal,
    Rule,
    check_dtype,
    check_flag,
    check_square,
)

#: ``assume_a``'s values, as scipy.linalg.solve names them.
ASSUME_A = ("gen", "pos")
#: What ``info = k`` means for a Cholesky factorization.
NOT_POSITIVE_DEFINITE = (
    "matrix not positive-definite{where} (input shape {shape}): the leading minor of order "
    "{order} is not positive-definite"
)


class SolveResiduals(NamedTuple):
    a: Array  # the matrix as given
    lu: Array  # its factorization, opaque to the rule: LU, or the Cholesky factor (pos)
    pivots: Array  # the LU's row interchanges; None for a Cholesky factor
    b: ArrayMeta  # the right-hand side's shape and dtype: no derivative reads its values
    x: Array  # the solution as a matrix: (..., n, k) left, (..., k, n) right


# -- the applications of A^-1 that the rules need ----------------------------


def _apply_inverse(
    la: Linalg, res: SolveResiduals, rhs: Array, left: bool, assume_a: str = "gen"
) -> Array:
    """``A^-1 rhs`` (left) or ``rhs A^-1`` (right), with the factorization kept."""
    xp = la.xp
    if assume_a == "pos":  # Cholesky: A^-1 is Hermitian, rhs A^-1 = (A^-1 rhs^H)^H
        cholesky = CholeskyFactor(res.a, res.lu, False)
        if left:
            return la.cholesky_solve(cholesky, rhs)
        return mH(xp, la.cholesky_solve(cholesky, mH(xp, rhs)))
    factor = Factor(res.a, res.lu, res.pivots)
    if left:
        return la.lu_solve(factor, rhs, "N")
    return mT(xp, la.lu_solve(factor, mT(xp, rhs), "T"))


def _apply_inverse_adjoint(
    la: Linalg, res: SolveResiduals, rhs: Array, left: bool, assume_a: str = "gen"
) -> Array:
    """``A^-H rhs`` (left) or ``rhs A^-H`` (right)."""
    if assume_a == "pos":  # A Hermitian: A^-H = A^-1
        return _apply_inverse(la, res, rhs, left, assume_a)
    factor = Factor(res.a, res.lu, res.pivots)
    if left:
        return la.lu_solve(factor, rhs, "H")
    return mH(la.xp, la.lu_solve(factor, mH(la.xp, rhs), "N"))


def as_matrix_rhs(b: Array, vector: bool, left: bool) -> Array:
    """A vector right-hand side (or its tangent, or the solution's cotangent, which carry the
    batch of ``a``) as the one column (left) or one row (right) it stands for."""
    if not vector:
        return b
    return b[..., None] if left else b[..., None, :]


def from_matrix_rhs(x: Array, vector: bool, left: bool) -> Array:
    if not vector:
        return x
    return x[..., 0] if left else x[..., 0, :]


# -- solve --------------------------------------------------------------------


def _check_solve(
    xp: Any, op: str, a: Array, b: Array, *, left: bool = True, assume_a: str = "gen"
) -> None:
    check_dtype(xp, op, a=a, b=b)
    check_square(op, a)
    check_flag(op, left=left)
    if assume_a not in ASSUME_A:
        raise ValueError(
            f"invad.{op}: `assume_a` must be one of {', '.join(map(repr, ASSUME_A))}; "
            f"got {assume_a!r}"
        )
    check_rhs(op, a, b, left)


def check_rhs(op: str, a: Array, b: Array, left: bool, a_name: str = "a") -> None:
    """``b`` fits the square ``a`` as a right-hand side (the array API rule), or ValueError."""
    if b.ndim == 0:
        raise ValueError(f"invad.{op}: `b` must have at least one dimension; got a 0-d array")
    n = a.shape[-1]
    if b.ndim == 1:
        rows, batch, where = b.shape[0], (), "b.shape[0]"
    else:
        rows, batch = (b.shape[-2], b.shape[:-2]) if left else (b.shape[-1], b.shape[:-2])
        where = "b.shape[-2]" if left else "b.shape[-1]"
    if rows != n:
        hint = (
            " (b is a vector only when b.ndim == 1; for a batch of vectors pass b[..., None])"
            if left and b.ndim == a.ndim - 1
            else ""
        )
        raise ValueError(
            f"invad.{op}: `b` of shape {tuple(b.shape)} does not fit `{a_name}` of shape "
            f"{tuple(a.shape)}: {where} = {rows}, expected {n}{hint}"
        )
    try:
        broadcast_batch(tuple(a.shape[:-2]), tuple(batch))
    except ValueError:
        raise ValueError(
            f"invad.{op}: the batch dimensions of `{a_name}` {tuple(a.shape)} and `b` "
            f"{tuple(b.shape)} do not broadcast"
        ) from None


def _solve_primal(
    la: Linalg, a: Array, b: Array, *, left: bool = True, assume_a: str = "gen"
) -> Primal:
    xp = la.xp
    dtype = a.dtype if a.dtype == b.dtype else xp.result_type(a.dtype, b.dtype)
    a_ = a if a.dtype == dtype else xp.astype(a, dtype)
    vector = b.ndim == 1
    rhs = as_matrix_rhs(b, vector, left)
    if assume_a == "pos":
        c, info = la.cholesky(a_, False)
        res = SolveResiduals(a, c, None, ArrayMeta.of(b), rhs)
        x = _apply_inverse(la, res._replace(a=a_), rhs, left, assume_a)
        return Primal(from_matrix_rhs(x, vector, left), info, res._replace(x=x))
    if left:
        factor, x, info = la.solve(a_, rhs, "N")
    else:  # X A = B is A^T X^T = B^T
        factor, xt, info = la.solve(a_, mT(xp, rhs), "T")
        x = mT(xp, xt)
    residuals = SolveResiduals(a, factor.lu, factor.pivots, ArrayMeta.of(b), x)
    return Primal(from_matrix_rhs(x, vector, left), info, residuals)


def _solve_jvp(
    la: Linalg,
    res: SolveResiduals,
    tangents: tuple[Array | None, Array | None],
    *,
    left: bool = True,
    assume_a: str = "gen",
) -> Array | None:
    da, db = tangents
    vector = res.b.ndim == 1
    X = res.x
    rhs = None if db is None else as_matrix_rhs(db, vector, left)
    if da is not None:
        if assume_a == "pos":
            da = hermitian_part(la.xp, da)
        dA_X = da @ X if left else X @ da
        rhs = -dA_X if rhs is None else rhs - dA_X
    if rhs is None:
        return None
    return from_matrix_rhs(_apply_inverse(la, res, rhs, left, assume_a), vector, left)


def _solve_vjp(
    la: Linalg,
    res: SolveResiduals,
    Xbar: Array,
    needs: tuple[bool, bool] = (True, True),
    *,
    left: bool = True,
    assume_a: str = "gen",
) -> tuple[Array | None, Array | None]:
    xp = la.xp
    vector = res.b.ndim == 1
    Xbar = as_matrix_rhs(Xbar, vector, left)
    Bbar = _apply_inverse_adjoint(la, res, Xbar, left, assume_a)  # G for the left solve
    Abar = None
    if needs[0]:
        if assume_a == "pos":
            Abar = _hermitian_outer(xp, Bbar, res.x, left)
        else:
            Abar = -(Bbar @ mH(xp, res.x) if left else mH(xp, res.x) @ Bbar)
        Abar = cotangent_for(xp, Abar, res.a)
    if not needs[1]:
        return Abar, None
    return Abar, cotangent_for(xp, from_matrix_rhs(Bbar, vector, left), res.b)


def _hermitian_outer(xp: Any, g: Array, x: Array, left: bool) -> Array:
    """``sym(-G X^H)`` (left) or ``sym(-X^H G)`` (right): with few right-hand sides, one
    product of thin factors, ``sym(G X^H) = [G X] [X G]^H / 2``, where the sum of the
    product and its adjoint would take three more passes over an ``n x n`` matrix."""
    n, k = (x.shape[-2], x.shape[-1]) if left else (x.shape[-1], x.shape[-2])
    if 4 * k > n:  # the product of the thick factors costs more than the passes
        return hermitian_part(xp, -(g @ mH(xp, x)) if left else -(mH(xp, x) @ g))
    if left:
        return (-0.5 * xp.concat([g, x], axis=-1)) @ mH(xp, xp.concat([x, g], axis=-1))
    return mH(xp, xp.concat([x, g], axis=-2)) @ (-0.5 * xp.concat([g, x], axis=-2))


SOLVE = Rule(
    contract=Contract(
        name="solve",
        summary="Solution of A X = B (or X A = B with left=False) for square A.",
        inputs=("a", "b"),
        outputs=("x",),
        differentiable_outputs=("x",),
        params=(
            Param("left", True, "solve A X = B if true, X A = B if false"),
            Param(
                "assume_a",
                "gen",
                "'gen': any nonsingular a (LU); 'pos': Hermitian positive definite a (Cholesky, "
                "reading its lower triangle; derivatives projected to Hermitian)",
            ),
        ),
        forward="left: X = A^-1 B;  right: X = B A^-1",
        linearization="left: dX = A^-1 (dB - dA X);  right: dX = (dB - X dA) A^-1",
        adjoint=(
            "left: G = A^-H Xbar, Bbar = G, Abar = -G X^H;  "
            "right: Bbar = Xbar A^-H, Abar = -X^H Bbar  (A's LU factorization is reused)"
        ),
        transpose=(
            "left: G = A^-T Xbar, Bbar = G, Abar = -G X^T;  "
            "right: Bbar = Xbar A^-T, Abar = -X^T Bbar"
        ),
        domain="a nonsingular",
        singular=(
            "Raises the framework's LinAlgError naming the op, the shape and the first "
            "singular batch index (under JAX tracing: JAX's non-finite values)."
        ),
        shapes=(
            "a: (..., n, n). b: (n,) is a vector, the result (..., n); otherwise b is "
            "(..., n, k) (left) or (..., k, n) (right) and the batch dimensions of a and b "
            "broadcast. Unlike torch.linalg.solve, b of shape (..., n) with ndim > 1 is never "
            "taken for a batch of vectors: pass b[..., None] and read x[..., 0]. Mixed dtypes "
            "promote; each cotangent has its input's dtype."
        ),
    ),
    check=_check_solve,
    primal=_solve_primal,
    jvp=_solve_jvp,
    vjp=_solve_vjp,
    residuals=SolveResiduals,
    info_meaning=lambda params: (
        NOT_POSITIVE_DEFINITE if params.get("assume_a") == "pos" else ZERO_PIVOT
    ),
)

SOLVE_EX = SOLVE.with_info(
    "solve_ex",
    "Solve with LAPACK-style `info` instead of an error.",
    singular=GETRF_INFO
    + " With assume_a='pos', k > 0 is the order of the leading minor that is not positive "
    "definite (LAPACK potrf).",
)

# -- tensorsolve: solve on NumPy's index reshape ------------------------------


def _tensorsolve_layout(
    a_shape: tuple[int, ...], b_ndim: int, axes: tuple[int, ...] | None
) -> tuple[list[int], tuple[int, ...]]:
    """The permutation that moves ``axes`` of ``a`` last, and the shape of ``x``.

    NumPy's rule, step for step: each axis named is moved last in turn (an axis
    named twice ends where its last mention puts it), and ``x`` has the trailing
    ``a.ndim - b.ndim`` axes of the moved ``a`` (all of them when the two have
    as many axes).
    """
    perm = list(range(len(a_shape)))
    for k in axes or ():
        perm.remove(k)
        perm.append(k)
    moved = tuple(a_shape[i] for i in perm)
    return perm, moved[-(len(a_shape) - b_ndim) :]


def _is_axis(k: Any, ndim: int) -> bool:
    try:
        return 0 <= operator.index(k) < ndim
    except TypeError:
        return False


def _check_tensorsolve(
    xp: Any, op: str, a: Array, b: Array, *, axes: tuple[int, ...] | None = None
) -> None:
    check_dtype(xp, op, a=a, b=b)
    if axes is not None:
        axes = tuple(axes)
        if any(isinstance(k, bool) or not _is_axis(k, a.ndim) for k in axes):
            raise ValueError(
                f"invad.{op}: `axes` {axes!r} must be axes of `a` (ndim {a.ndim}) counted "
                "from 0, as numpy.linalg.tensorsolve takes them"
            )
    _, x_shape = _tensorsolve_layout(tuple(a.shape), b.ndim, axes)
    p = math.prod(x_shape)
    if math.prod(a.shape) != p * p or math.prod(b.shape) != p:
        raise ValueError(
            f"invad.{op}: `a` of shape {tuple(a.shape)} (axes={axes!r}) does not fit `b` of "
            f"shape {tuple(b.shape)}: x takes the last a.ndim - b.ndim axes of `a` (after "
            f"moving `axes` last), shape {x_shape} with {p} elements, so `a` must have "
            f"{p}**2 = {p * p} elements (it has {math.prod(a.shape)}) and `b` {p} "
            f"(it has {math.prod(b.shape)})"
        )


def _tensorsolve_matrix(
    la: Linalg, a: Array, b_ndim: int, axes: tuple[int, ...] | None
) -> tuple[Array, tuple[int, ...], list[int]]:
    perm, x_shape = _tensorsolve_layout(tuple(a.shape), b_ndim, axes)
    p = math.prod(x_shape)
    return la.xp.reshape(la.xp.permute_dims(a, tuple(perm)), (p, p)), x_shape, perm


def _matrix_residuals(
    la: Linalg, res: SolveResiduals, axes: tuple[int, ...] | None
) -> SolveResiduals:
    m, _, _ = _tensorsolve_matrix(la, res.a, res.b.ndim, axes)
    return res._replace(a=m, b=ArrayMeta((math.prod(res.b.shape),), res.b.dtype))


def _tensorsolve_primal(
    la: Linalg, a: Array, b: Array, *, axes: tuple[int, ...] | None = None
) -> Primal:
    m, x_shape, _ = _tensorsolve_matrix(la, a, b.ndim, axes)
    inner = _solve_primal(la, m, la.xp.reshape(b, (-1,)))
    residuals = inner.residuals._replace(a=a, b=ArrayMeta.of(b))
    return Primal(la.xp.reshape(inner.value, x_shape), inner.info, residuals)


def _tensorsolve_jvp(
    la: Linalg,
    res: SolveResiduals,
    tangents: tuple[Array | None, Array | None],
    *,
    axes: tuple[int, ...] | None = None,
) -> Array | None:
    xp = la.xp
    da, db = tangents
    dm = None if da is None else _tensorsolve_matrix(la, da, res.b.ndim, axes)[0]
    dbv = None if db is None else xp.reshape(db, (-1,))
    dx = _solve_jvp(la, _matrix_residuals(la, res, axes), (dm, dbv))
    _, x_shape = _tensorsolve_layout(tuple(res.a.shape), res.b.ndim, axes)
    return None if dx is None else xp.reshape(dx, x_shape)


def _tensorsolve_vjp(
    la: Linalg,
    res: SolveResiduals,
    Xbar: Array,
    needs: tuple[bool, bool] = (True, True),
    *,
    axes: tuple[int, ...] | None = None,
) -> tuple[Array | None, Array | None]:
    xp = la.xp
    Mbar, bbar = _solve_vjp(la, _matrix_residuals(la, res, axes), xp.reshape(Xbar, (-1,)), needs)
    Abar = None
    if Mbar is not None:
        perm, _ = _tensorsolve_layout(tuple(res.a.shape), res.b.ndim, axes)
        permuted = xp.reshape(Mbar, tuple(res.a.shape[i] for i in perm))
        Abar = xp.permute_dims(permuted, tuple(perm.index(i) for i in range(len(perm))))
    return Abar, None if bbar is None else xp.reshape(bbar, tuple(res.b.shape))


TENSORSOLVE = Rule(
    contract=Contract(
        name="tensorsolve",
        summary="Solve tensordot(a, x, axes=x.ndim) = b for x, as numpy.linalg.tensorsolve.",
        inputs=("a", "b"),
        outputs=("x",),
        differentiable_outputs=("x",),
        params=(Param("axes", None, "axes of `a` moved to the end before the reshape, or None"),),
        forward="x = reshape(solve(reshape(A', (P, P)), ravel(b)), x_shape), A' = a with axes last",
        linearization="the solve linearization on the reshaped matrix and vector",
        adjoint="the solve adjoint on the reshaped matrix and vector, reshaped and permuted back",
        transpose="the solve transpose on the reshaped matrix and vector, reshaped and permuted",
        domain=(
            "after moving `axes` last, x_shape is the trailing a.ndim - b.ndim axes of a, "
            "P = prod(x_shape), a.size == P**2, b.size == P (NumPy's rule: the leading axes "
            "need not equal b.shape), and the P x P matrix nonsingular"
        ),
        singular=SOLVE.contract.singular,
        shapes=(
            "No batch dimensions: NumPy's index rule, x.shape = a.shape[-(a.ndim - b.ndim):] "
            "after the move; `axes` are non-negative, as NumPy takes them."
        ),
        batched=False,
    ),
    check=_check_tensorsolve,
    primal=_tensorsolve_primal,
    jvp=_tensorsolve_jvp,
    vjp=_tensorsolve_vjp,
    residuals=SolveResiduals,
)
