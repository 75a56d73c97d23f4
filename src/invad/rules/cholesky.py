"""The Cholesky family: ``cholesky``, ``cholesky_ex`` and ``cholesky_solve``.

``cholesky``: ``A = L L^H`` for Hermitian positive-definite ``A``, reading only its
lower triangle (``upper``: ``A = U^H U`` from the upper one, ``U = L^H``). The op
is a function of Hermitian matrices, so a tangent counts by its Hermitian part
``sym(dA) = (dA + dA^H) / 2`` and the cotangent is Hermitian (torch.linalg.cholesky's
convention). With ``phi(X) = tril(X) - diag(X) / 2``::

    linearization  dL = L phi(L^-1 sym(dA) L^-H)
    adjoint        Abar = L^-H sym(phi(L^H Lbar)) L^-1

``cholesky_solve``: ``x = A^-1 b`` with ``A = L L^H`` given by its factor ``c``
(``L = c``, or ``c^H`` if ``upper``), reading only that triangle of ``c``; with
``y = L^H x`` (``= L^-1 b``) and ``dL`` the tangent of ``c`` in that triangle::

    linearization  dx = A^-1 (db - dL y) - L^-H (dL^H x)
    adjoint        g = A^-1 xbar,  bbar = g,  Lbar = -(g y^H + x (L^H g)^H)

Only triangular solves with ``L``: no inverse is formed.
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
    hermitian_part,
    is_complex,
    mH,
    mT,
)
from ._rule import Contract, Param, Primal, Rule, check_dtype, check_flag, check_square
from .solve import NOT_POSITIVE_DEFINITE, as_matrix_rhs, check_rhs, from_matrix_rhs

# -- helpers: solves with L, whichever triangle holds it ------------------------------


def l_solve(la: Linalg, c: Array, upper: bool, y: Array) -> Array:
    """``L^-1 y`` for ``L = c`` (lower) or ``c^H`` (upper)."""
    return la.solve_triangular(c, y, upper, "H" if upper else "N", False)


def lh_solve(la: Linalg, c: Array, upper: bool, y: Array) -> Array:
    """``L^-H y`` for ``L = c`` (lower) or ``c^H`` (upper)."""
    return la.solve_triangular(c, y, upper, "N" if upper else "H", False)


def _phi(xp: Any, x: Array) -> Array:
    """The lower triangle of ``x`` with its diagonal halved: ``x`` times a constant mask,
    one pass over the batch (JAX transposes it to the same product, where a tril and a
    diagonal update would transpose to a diagonal gather and scatter)."""
    n = x.shape[-1]
    ones = xp.ones((n, n), dtype=x.dtype, device=device(x))
    return x * (xp.tril(ones) - xp.eye(n, dtype=x.dtype, device=device(x)) / 2)


def _sym_phi(xp: Any, x: Array) -> Array:
    """``sym(phi(x))``, the Hermitian matrix whose lower triangle is ``phi(x)``'s; for real
    ``x`` as ``(tril(x) + tril(x, -1)^T) / 2``, two passes over the matrix fewer."""
    if is_complex(xp, x):  # the diagonal of a Hermitian matrix is real
        return hermitian_part(xp, _phi(xp, x))
    return (xp.tril(x) + mT(xp, xp.tril(x, k=-1))) / 2


# -- cholesky -------------------------------------------------------------------------


class CholeskyResiduals(NamedTuple):
    c: Array  # the factor, the differentiable output


def _check_cholesky(xp: Any, op: str, a: Array, *, upper: bool = False) -> None:
    check_dtype(xp, op, a=a)
    check_square(op, a)
    check_flag(op, upper=upper)


def _cholesky_primal(la: Linalg, a: Array, *, upper: bool = False) -> Primal:
    c, info = la.cholesky(a, upper)
    return Primal(c, info, CholeskyResiduals(c))


def _cholesky_jvp(
    la: Linalg, res: CholeskyResiduals, tangents: tuple[Array | None], *, upper: bool = False
) -> Array | None:
    (da,) = tangents
    if da is None:
        return None
    xp = la.xp
    c = res.c
    y = l_solve(la, c, upper, hermitian_part(xp, da))  # L^-1 sym(dA)
    w = mH(xp, l_solve(la, c, upper, mH(xp, y)))  # L^-1 sym(dA) L^-H
    lower = mH(xp, c) if upper else c
    dl = lower @ _phi(xp, w)
    return mH(xp, dl) if upper else dl


def _cholesky_vjp(
    la: Linalg,
    res: CholeskyResiduals,
    cbar: Array,
    needs: tuple[bool, ...] = (True,),
    *,
    upper: bool = False,
) -> tuple[Array | None]:
    xp = la.xp
    c = res.c
    lower, lbar = (mH(xp, c), mH(xp, cbar)) if upper else (c, cbar)
    h = _sym_phi(xp, mH(xp, lower) @ lbar)
    z = lh_solve(la, c, upper, h)  # L^-H H
    abar = mH(xp, lh_solve(la, c, upper, mH(xp, z)))  # L^-H H L^-1 (Hermitian)
    return (cotangent_for(xp, abar, c),)


CHOLESKY = Rule(
    contract=Contract(
        name="cholesky",
        summary="Cholesky factor of a Hermitian positive-definite matrix: A = L L^H (or U^H U).",
        inputs=("a",),
        outputs=("c",),
        differentiable_outputs=("c",),
        params=(
            Param("upper", False, "return U with A = U^H U, reading the upper triangle, if true"),
        ),
        forward="A = L L^H, L lower triangular with a positive diagonal (upper: U = L^H)",
        linearization="dL = L phi(L^-1 sym(dA) L^-H), phi(X) = tril(X) - diag(X)/2",
        adjoint="Abar = L^-H sym(phi(L^H Lbar)) L^-1 (Hermitian)",
        transpose="Abar = L^-T sym(phi(L^T Lbar)) L^-1, conjugated as JAX transposes",
        domain=(
            "a Hermitian positive definite; only its lower triangle (upper if upper) is read, "
            "and a tangent counts by its Hermitian part"
        ),
        singular=(
            "A matrix that is not positive definite raises the framework's LinAlgError naming "
            "the op, the shape, the first batch index and the order of the leading minor that "
            "is not positive definite (as torch does); under JAX tracing: NaN."
        ),
        shapes="a: (..., n, n); c has a's shape, zeros in the triangle not returned.",
        zero_pivot=NOT_POSITIVE_DEFINITE,
    ),
    check=_check_cholesky,
    primal=_cholesky_primal,
    jvp=_cholesky_jvp,
    vjp=_cholesky_vjp,
    residuals=CholeskyResiduals,
)

CHOLESKY_EX = CHOLESKY.with_info(
    "cholesky_ex",
    "Cholesky factor with LAPACK's `info` (the order of the failing minor).",
    singular=(
        "Never raises: `info` is an integer array of the batch shape, 0 where the matrix was "
        "factored, k > 0 where the leading minor of order k is not positive definite (LAPACK "
        "potrf; a NaN counts as not positive); it has no derivative. The factor of such a "
        "batch element is not meaningful."
    ),
)

# -- cholesky_solve -------------------------------------------------------------------


class CholeskySolveResiduals(NamedTuple):
    c: Array
    b: ArrayMeta  # the right-hand side's shape and dtype: no derivative reads its values
    x: Array  # the solution as a matrix (..., n, k)
    # The forward's half-way solution L^-1 B (= L^H X): the derivatives need it, and
    # keeping it spares them a product with a masked L (see _rederive_cholesky_solve).
    y: Array


def _check_cholesky_solve(xp: Any, op: str, c: Array, b: Array, *, upper: bool = False) -> None:
    check_dtype(xp, op, c=c, b=b)
    check_square(op, c, "c")
    check_flag(op, upper=upper)
    check_rhs(op, c, b, True, "c")


def _cholesky_solve_primal(la: Linalg, c: Array, b: Array, *, upper: bool = False) -> Primal:
    xp = la.xp
    dtype = c.dtype if c.dtype == b.dtype else xp.result_type(c.dtype, b.dtype)
    t = c if c.dtype == dtype else xp.astype(c, dtype)
    vector = b.ndim == 1
    y = l_solve(la, t, upper, as_matrix_rhs(b, vector, True))  # L^-1 B
    x = lh_solve(la, t, upper, y)
    info = la.first_zero(diagonal(xp, c))
    return Primal(
        from_matrix_rhs(x, vector, True), info, CholeskySolveResiduals(c, ArrayMeta.of(b), x, y)
    )


def _rederive_cholesky_solve(
    la: Linalg, res: CholeskySolveResiduals, *, upper: bool = False
) -> CholeskySolveResiduals:
    """The half-way solution as a function of ``c`` and ``x``, ``y = L^H x`` (``Rule.rederive``)."""
    xp = la.xp
    c = res.c if res.c.dtype == res.x.dtype else xp.astype(res.c, res.x.dtype)
    lh = xp.triu(c) if upper else mH(xp, xp.tril(c))
    return res._replace(y=lh @ res.x)


def _as_lower(xp: Any, c: Array, upper: bool) -> Array:
    """L (or its tangent) from c (or its tangent): c's triangle, as L = c or c^H. The
    other triangle of a user's factor is never read, in the derivatives either."""
    return mH(xp, xp.triu(c)) if upper else xp.tril(c)


def _cholesky_solve_jvp(
    la: Linalg,
    res: CholeskySolveResiduals,
    tangents: tuple[Array | None, Array | None],
    *,
    upper: bool = False,
) -> Array | None:
    xp = la.xp
    dc, db = tangents
    if dc is None and db is None:
        return None
    vector = res.b.ndim == 1
    # The solves read c's own triangle only, and so does the tangent: the derivatives
    # must not read (nor feed) the other one.
    c, y = res.c, res.y
    rhs = None if db is None else as_matrix_rhs(db, vector, True)
    dl = None if dc is None else _as_lower(xp, dc, upper)
    if dl is not None:
        rhs = -(dl @ y) if rhs is None else rhs - dl @ y
    z = l_solve(la, c, upper, rhs)
    if dl is not None:  # A^-1 rhs - L^-H dL^H X = L^-H (L^-1 rhs - dL^H X)
        z = z - mH(xp, dl) @ res.x
    return from_matrix_rhs(lh_solve(la, c, upper, z), vector, True)


def _cholesky_solve_vjp(
    la: Linalg,
    res: CholeskySolveResiduals,
    xbar: Array,
    needs: tuple[bool, bool] = (True, True),
    *,
    upper: bool = False,
) -> tuple[Array | None, Array | None]:
    xp = la.xp
    vector = res.b.ndim == 1
    c, x, y = res.c, res.x, res.y  # the solves read c's triangle only
    s = l_solve(la, c, upper, as_matrix_rhs(xbar, vector, True))  # L^-1 Xbar = L^H G
    g = lh_solve(la, c, upper, s)
    cbar = None
    if needs[0]:
        # Lbar = -(G (L^H X)^H + X (L^H G)^H) = -[G X] [y s]^H: one product of thin factors
        lbar = xp.concat([-g, -x], axis=-1) @ mH(xp, xp.concat([y, s], axis=-1))
        cbar = cotangent_for(xp, xp.triu(mH(xp, lbar)) if upper else xp.tril(lbar), c)
    if not needs[1]:
        return cbar, None
    return cbar, cotangent_for(xp, from_matrix_rhs(g, vector, True), res.b)


CHOLESKY_SOLVE = Rule(
    contract=Contract(
        name="cholesky_solve",
        summary="Solve A X = B with A = c c^H (or c^H c if upper) given its Cholesky factor c.",
        inputs=("c", "b"),
        outputs=("x",),
        differentiable_outputs=("x",),
        params=(Param("upper", False, "A = c^H c with c upper triangular, if true"),),
        forward="X = A^-1 B, A = L L^H, L = c (or c^H if upper)",
        linearization="dX = A^-1 (dB - dL L^H X) - L^-H dL^H X, dL in c's triangle",
        adjoint=(
            "G = A^-1 Xbar, Bbar = G, Lbar = -(G (L^H X)^H + X (L^H G)^H), cbar its triangle "
            "(conjugate-transposed if upper); L^H X and L^H G are the half-way solutions"
        ),
        transpose="the conjugate of the adjoint of the conjugated cotangent",
        domain="c triangular with a nonzero diagonal; only its triangle is read",
        singular=(
            "A zero on c's diagonal raises the framework's LinAlgError naming the op, the shape "
            "and the first batch index (under JAX tracing: JAX's non-finite values)."
        ),
        shapes=(
            "c: (..., n, n); b as in solve (left): (n,) is a vector, otherwise (..., n, k), batch "
            "dimensions broadcast. torch.cholesky_solve takes (b, c); invad takes (c, b), as "
            "lu_solve takes the factor first."
        ),
        zero_pivot="singular factor{where} (input shape {shape}): c[{k}, {k}] is exactly zero",
    ),
    check=_check_cholesky_solve,
    primal=_cholesky_solve_primal,
    jvp=_cholesky_solve_jvp,
    vjp=_cholesky_solve_vjp,
    residuals=CholeskySolveResiduals,
    rederive=_rederive_cholesky_solve,
)
