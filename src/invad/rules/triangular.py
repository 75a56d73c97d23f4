"""``solve_triangular``: ``T X = B`` (or ``X T = B``) for ``T`` the triangle of ``a``.

Only the triangle that ``upper`` names is read (without its diagonal when
``unitriangular``, which is then taken as ones), so the derivative lives in
that triangle too: ``proj`` keeps it (strictly, if ``unitriangular``)::

    left   X = T^-1 B     dX = T^-1 (dB - proj(dA) X)     G = T^-H Xbar, Bbar = G,
                                                          Abar = -proj(G X^H)
    right  X = B T^-1     dX = (dB - X proj(dA)) T^-1     Bbar = Xbar T^-H,
                                                          Abar = -proj(X^H Bbar)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._linalg import (
    Array,
    ArrayMeta,
    Linalg,
    cotangent_for,
    device,
    diagonal,
    mH,
)
from ._rule import Contract, Param, Primal, Rule, check_dtype, check_flag, check_square
from .solve import as_matrix_rhs, check_rhs, from_matrix_rhs


class TriangularResiduals(NamedTuple):
    a: Array
    b: ArrayMeta  # the right-hand side's shape and dtype: no derivative reads its values
    x: Array  # the solution as a matrix: (..., n, k) left, (..., k, n) right


def _project(xp: Any, x: Array, upper: bool, unitriangular: bool) -> Array:
    """The part of ``x`` in the triangle that the op reads."""
    if upper:
        return xp.triu(x, k=1 if unitriangular else 0)
    return xp.tril(x, k=-1 if unitriangular else 0)


def _check(
    xp: Any,
    op: str,
    a: Array,
    b: Array,
    *,
    upper: bool = Param.REQUIRED,  # missing: check_flag says so, naming the op
    left: bool = True,
    unitriangular: bool = False,
) -> None:
    check_dtype(xp, op, a=a, b=b)
    check_square(op, a)
    check_flag(op, upper=upper, left=left, unitriangular=unitriangular)
    check_rhs(op, a, b, left)


def _solve(la: Linalg, t: Array, rhs: Array, upper: bool, left: bool, unit: bool) -> Array:
    """``T^-1 rhs`` (left) or ``rhs T^-1`` (right)."""
    if left:
        return la.solve_triangular(t, rhs, upper, "N", unit)
    xp = la.xp
    return xp.matrix_transpose(la.solve_triangular(t, xp.matrix_transpose(rhs), upper, "T", unit))


def _primal(
    la: Linalg, a: Array, b: Array, *, upper: bool, left: bool = True, unitriangular: bool = False
) -> Primal:
    xp = la.xp
    dtype = a.dtype if a.dtype == b.dtype else xp.result_type(a.dtype, b.dtype)
    t = a if a.dtype == dtype else xp.astype(a, dtype)
    vector = b.ndim == 1
    x = _solve(la, t, as_matrix_rhs(b, vector, left), upper, left, unitriangular)
    if unitriangular:
        info = xp.zeros(tuple(a.shape[:-2]), dtype=xp.int32, device=device(a))
    else:
        info = la.first_zero(diagonal(xp, a))
    return Primal(
        from_matrix_rhs(x, vector, left), info, TriangularResiduals(a, ArrayMeta.of(b), x)
    )


def _jvp(
    la: Linalg,
    res: TriangularResiduals,
    tangents: tuple[Array | None, Array | None],
    *,
    upper: bool,
    left: bool = True,
    unitriangular: bool = False,
) -> Array | None:
    da, db = tangents
    vector = res.b.ndim == 1
    rhs = None if db is None else as_matrix_rhs(db, vector, left)
    if da is not None:
        dt = _project(la.xp, da, upper, unitriangular)
        dT_X = dt @ res.x if left else res.x @ dt
        rhs = -dT_X if rhs is None else rhs - dT_X
    if rhs is None:
        return None
    return from_matrix_rhs(_solve(la, res.a, rhs, upper, left, unitriangular), vector, left)


def _vjp(
    la: Linalg,
    res: TriangularResiduals,
    Xbar: Array,
    needs: tuple[bool, bool] = (True, True),
    *,
    upper: bool,
    left: bool = True,
    unitriangular: bool = False,
) -> tuple[Array | None, Array | None]:
    xp = la.xp
    vector = res.b.ndim == 1
    xbar = as_matrix_rhs(Xbar, vector, left)
    if left:  # G = T^-H Xbar
        bbar = la.solve_triangular(res.a, xbar, upper, "H", unitriangular)
    else:  # Xbar T^-H
        bbar = mH(xp, la.solve_triangular(res.a, mH(xp, xbar), upper, "N", unitriangular))
    abar = None
    if needs[0]:
        # -G X^H with the sign on the thin factor: one pass over the matrix fewer
        outer = (-bbar) @ mH(xp, res.x) if left else mH(xp, res.x) @ (-bbar)
        abar = cotangent_for(xp, _project(xp, outer, upper, unitriangular), res.a)
    if not needs[1]:
        return abar, None
    return abar, cotangent_for(xp, from_matrix_rhs(bbar, vector, left), res.b)


SOLVE_TRIANGULAR = Rule(
    contract=Contract(
        name="solve_triangular",
        summary="Solve T X = B (or X T = B) for T the upper or lower triangle of a.",
        inputs=("a", "b"),
        outputs=("x",),
        differentiable_outputs=("x",),
        params=(
            Param("upper", Param.REQUIRED, "read the upper triangle of a if true, else the lower"),
            Param("left", True, "solve T X = B if true, X T = B if false"),
            Param("unitriangular", False, "take T's diagonal as ones (and never read it)"),
        ),
        forward="left: X = T^-1 B;  right: X = B T^-1;  T = triu(a) or tril(a)",
        linearization="left: dX = T^-1 (dB - proj(dA) X);  right: dX = (dB - X proj(dA)) T^-1",
        adjoint=(
            "left: G = T^-H Xbar, Bbar = G, Abar = -proj(G X^H);  right: Bbar = Xbar T^-H, "
            "Abar = -proj(X^H Bbar);  proj keeps the triangle read (strictly if unitriangular)"
        ),
        transpose=(
            "left: G = T^-T Xbar, Bbar = G, Abar = -proj(G X^T);  right: Bbar = Xbar T^-T, "
            "Abar = -proj(X^T Bbar)"
        ),
        domain="no zero on T's diagonal (always, if unitriangular)",
        singular=(
            "An exact zero on the diagonal raises the framework's LinAlgError naming the op, "
            "the shape and the first batch index (under JAX tracing: JAX's non-finite values)."
        ),
        shapes=(
            "a: (..., n, n); b as in solve: (n,) is a vector, otherwise (..., n, k) (left) or "
            "(..., k, n) (right), batch dimensions broadcast. Only the triangle of a that upper "
            "names is read; the cotangent of a lies in it. torch.linalg.solve_triangular's "
            "signature (upper is required)."
        ),
        zero_pivot=(
            "singular matrix{where} (input shape {shape}): a[{k}, {k}] (on the diagonal of the "
            "triangle) is exactly zero"
        ),
    ),
    check=_check,
    primal=_primal,
    jvp=_jvp,
    vjp=_vjp,
    residuals=TriangularResiduals,
)
