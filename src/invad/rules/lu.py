"""The LU family: ``lu_factor``, ``lu_factor_ex`` and ``lu_solve``.

``lu_factor``: LAPACK's packed ``A = P L U`` of an ``(m, n)`` matrix, ``K = min(m, n)``,
``L`` unit lower ``(m, K)``, ``U`` upper ``(K, n)``, both in one array ``LU``. With
``A1``, ``L1``, ``U1`` the leading ``K x K`` blocks and ``L2``, ``U2`` the rest (tall:
rows below ``K``; wide: columns right of ``K``)::

    linearization  D = P^T dA,  Y = L1^-1 D[:K],  F = Y[:, :K] U1^-1
                   dL1 = L1 tril_-(F),  dU1 = triu(F) U1
                   dU2 = Y[:, K:] - tril_-(F) U2           (wide)
                   dL2 = D[K:] U1^-1 - L2 triu(F)           (tall)
    adjoint        Fbar = tril_-(L1^H L1bar - U2bar U2^H) + triu(U1bar U1^H - L2^H L2bar)
                   Ybar = [Fbar U1^-H | U2bar],  Dbar = [L1^-H Ybar ; L2bar U1^-H]
                   Abar = P Dbar

``lu_solve``: ``op(A) X = B`` (left) or ``X op(A) = B`` (right) from the factor,
``op`` the identity or the adjoint. Each case is one left solve ``A x = r`` or
``A^H x = r`` (``x = X^H`` and ``r = B^H`` for right solves). With
``dA = P (dL U + L dU)``, ``dL = tril_-(dLU)``, ``dU = triu(dLU)``::

    A x = r     dx = U^-1 (L^-1 (P^T dr - dL y) - dU x),  y = U x = L^-1 P^T r
                g = U^-H xbar,  h = L^-H g:  rbar = P h,
                LUbar = -tril_-(h y^H) - triu(g x^H)
    A^H x = r   dx = P L^-H (U^-H (dr - dU^H w) - dL^H z),  z = P^T x,  w = L^H z = U^-H r
                s = L^-1 P^T xbar,  q = U^-1 s:  rbar = q,
                LUbar = -tril_-(z s^H) - triu(w q^H)

``y`` and ``w`` are the forward's half-way solutions (it solves as getrs does,
in two triangular solves), kept for the derivatives. Only triangular solves
with the factor's own triangles, and the row interchanges: no matrix is
rebuilt or inverted, and where the backend's triangular solve is
differentiable every order follows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._linalg import (
    Array,
    ArrayMeta,
    Factor,
    Linalg,
    Trans,
    cotangent_for,
    device,
    diagonal,
    mH,
)
from ._rule import Contract, Param, Primal, Rule, check_dtype, check_flag, check_square
from .solve import as_matrix_rhs, check_rhs, from_matrix_rhs

# -- helpers: the triangles of a packed factor -----------------------------------


def _lead(x: Array, rows: int, cols: int) -> Array:
    """``x[..., :rows, :cols]``, or ``x`` itself where that is all of it: a slice that
    keeps everything is still a view (torch's ``alias``), which torch's legacy vmap
    (``jacobian(vectorize=True)``, ``grad(is_grads_batched=True)``) cannot batch."""
    if x.shape[-2] == rows and x.shape[-1] == cols:
        return x
    return x[..., :rows, :cols]


def _unit_lower(xp: Any, square: Array) -> Array:
    """``L1``: the strictly lower triangle of a square block, with ones on the diagonal."""
    n = square.shape[-1]
    return xp.tril(square, k=-1) + xp.eye(n, dtype=square.dtype, device=device(square))


def _times_inv_upper(la: Linalg, square: Array, x: Array) -> Array:
    """``x U^-1``, ``U`` the upper triangle of ``square``."""
    xp = la.xp
    return xp.matrix_transpose(
        la.solve_triangular(square, xp.matrix_transpose(x), True, "T", False)
    )


def _times_inv_upper_adjoint(la: Linalg, square: Array, x: Array) -> Array:
    """``x U^-H``, ``U`` the upper triangle of ``square``."""
    xp = la.xp
    return mH(xp, la.solve_triangular(square, mH(xp, x), True, "N", False))


# -- lu_factor ---------------------------------------------------------------------


class LUFactorResiduals(NamedTuple):
    LU: Array  # the packed factor, the differentiable output
    pivots: Array


def _check_lu_factor(xp: Any, op: str, a: Array) -> None:
    check_dtype(xp, op, a=a)
    if a.ndim < 2:
        raise ValueError(
            f"invad.{op}: `a` must be a matrix or a batch of them, shape (..., m, n); "
            f"got shape {tuple(a.shape)}"
        )


def _lu_factor_primal(la: Linalg, a: Array) -> Primal:
    factor, info = la.lu_factor(a)
    return Primal((factor.lu, factor.pivots), info, LUFactorResiduals(factor.lu, factor.pivots))


def _lu_factor_jvp(
    la: Linalg, res: LUFactorResiduals, tangents: tuple[Array | None]
) -> tuple[Array | None, None]:
    (da,) = tangents
    if da is None:
        return None, None
    xp = la.xp
    lu = res.LU
    m, n = lu.shape[-2], lu.shape[-1]
    k = min(m, n)
    square = _lead(lu, k, k)
    d = la.permute_rows(res.pivots, da, False)  # P^T dA: the rows in the order of L U
    y = la.solve_triangular(square, _lead(d, k, n), False, "N", True)
    f = _times_inv_upper(la, square, _lead(y, k, k))
    lower, upper = xp.tril(f, k=-1), xp.triu(f)
    top = _unit_lower(xp, square) @ lower + upper @ xp.triu(square)
    if n > k:  # wide: dU2
        top = xp.concat([top, y[..., :, k:] - lower @ lu[..., :k, k:]], axis=-1)
    if m > k:  # tall: dL2
        bottom = _times_inv_upper(la, square, d[..., k:, :]) - lu[..., k:, :] @ upper
        return xp.concat([top, bottom], axis=-2), None
    return top, None


def _lu_factor_vjp(
    la: Linalg,
    res: LUFactorResiduals,
    cotangents: tuple[Array | None, Any],
    needs: tuple[bool, ...] = (True,),
) -> tuple[Array | None]:
    lubar = cotangents[0]
    if lubar is None:
        return (None,)
    xp = la.xp
    lu = res.LU
    m, n = lu.shape[-2], lu.shape[-1]
    k = min(m, n)
    square = _lead(lu, k, k)
    corner = _lead(lubar, k, k)
    fbar_lower = mH(xp, _unit_lower(xp, square)) @ xp.tril(corner, k=-1)
    fbar_upper = xp.triu(corner) @ mH(xp, xp.triu(square))
    if n > k:
        u2bar = lubar[..., :k, k:]
        fbar_lower = fbar_lower - u2bar @ mH(xp, lu[..., :k, k:])
    if m > k:
        l2bar = lubar[..., k:, :]
        fbar_upper = fbar_upper - mH(xp, lu[..., k:, :]) @ l2bar
    fbar = xp.tril(fbar_lower, k=-1) + xp.triu(fbar_upper)
    ybar = _times_inv_upper_adjoint(la, square, fbar)
    if n > k:
        ybar = xp.concat([ybar, u2bar], axis=-1)
    dbar = la.solve_triangular(square, ybar, False, "H", True)
    if m > k:
        dbar = xp.concat([dbar, _times_inv_upper_adjoint(la, square, l2bar)], axis=-2)
    return (la.permute_rows(res.pivots, dbar, True),)


_LU_SHAPES = (
    "a: (..., m, n), square or rectangular, any number of batch dimensions. LU has a's "
    "shape (L strictly below the diagonal, its unit diagonal implied; U on and above it); "
    "pivots (..., min(m, n)) are LAPACK's row interchanges in the framework's convention: "
    "1-based int32 on torch (torch.linalg.lu_factor), 0-based int32 on NumPy, JAX, CuPy "
    "(scipy.linalg.lu_factor, jax.scipy.linalg.lu_factor) and the portable kernels "
    "(array-api-strict)."
)

LU_FACTOR = Rule(
    contract=Contract(
        name="lu_factor",
        summary="LU factorization with partial pivoting, packed as LAPACK's getrf: A = P L U.",
        inputs=("a",),
        outputs=("LU", "pivots"),
        differentiable_outputs=("LU",),
        params=(),
        forward="P^T A = L U, L unit lower (m, K), U upper (K, n), K = min(m, n), packed in LU",
        linearization=(
            "D = P^T dA, Y = L1^-1 D[:K], F = Y[:, :K] U1^-1; dLU = L1 tril_-(F) + triu(F) U1, "
            "wide: dU2 = Y[:, K:] - tril_-(F) U2, tall: dL2 = D[K:] U1^-1 - L2 triu(F)"
        ),
        adjoint=(
            "Fbar = tril_-(L1^H L1bar - U2bar U2^H) + triu(U1bar U1^H - L2^H L2bar); "
            "Abar = P [L1^-H [Fbar U1^-H | U2bar] ; L2bar U1^-H]"
        ),
        transpose=(
            "Fbar = tril_-(L1^T L1bar - U2bar U2^T) + triu(U1bar U1^T - L2^T L2bar); "
            "Abar = P [L1^-T [Fbar U1^-T | U2bar] ; L2bar U1^-T]"
        ),
        domain="any a; the derivative needs U1 nonsingular (and pivots that do not change)",
        singular=(
            "Never raises: a singular matrix has an LU factorization (LAPACK's getrf sets info; "
            "lu_factor_ex returns it). U then has a zero on its diagonal and the derivative "
            "is not finite."
        ),
        shapes=_LU_SHAPES,
    ),
    check=_check_lu_factor,
    primal=_lu_factor_primal,
    jvp=_lu_factor_jvp,
    vjp=_lu_factor_vjp,
    residuals=LUFactorResiduals,
    raises=False,
)

LU_FACTOR_EX = LU_FACTOR.with_info(
    "lu_factor_ex", "LU factorization with LAPACK's `info`: (LU, pivots, info)."
)

# -- lu_solve -------------------------------------------------------------------------


class LUSolveResiduals(NamedTuple):
    LU: Array
    pivots: Array
    b: ArrayMeta  # the right-hand side's shape and dtype: no derivative reads its values
    x: Array  # the solution as a matrix: (..., n, k) left, (..., k, n) right
    # The half-way solution of the core solve, (..., n, k): y = U x for A x = r, w = L^H P^T x
    # for A^H x = r. The derivatives need it; keeping it spares them a product with a
    # masked triangle of LU (see _rederive_lu_solve).
    y: Array


def _check_lu_solve(
    xp: Any,
    op: str,
    LU: Array,
    pivots: Array,
    b: Array,
    *,
    left: bool = True,
    adjoint: bool = False,
) -> None:
    check_dtype(xp, op, LU=LU, b=b)
    check_square(op, LU, "LU")
    check_flag(op, left=left, adjoint=adjoint)
    if not xp.isdtype(pivots.dtype, "integral"):
        raise ValueError(
            f"invad.{op}: `pivots` must be an integer array (as lu_factor returns them); "
            f"got dtype {pivots.dtype}"
        )
    if tuple(pivots.shape) != tuple(LU.shape[:-1]):
        raise ValueError(
            f"invad.{op}: `pivots` of shape {tuple(pivots.shape)} does not fit `LU` of shape "
            f"{tuple(LU.shape)}: expected shape {tuple(LU.shape[:-1])}"
        )
    check_rhs(op, LU, b, left, "LU")


def _check_lu_solve_pivots(
    la: Linalg, op: str, LU: Array, pivots: Array, b: Array, **_: Any
) -> None:
    """The pivots' values (``Rule.check_values``): row interchanges within ``LU``."""
    la.check_pivots(op, pivots, LU.shape[-2])


def _core_trans(left: bool, adjoint: bool) -> Trans:
    """The left solve every case reduces to: with A ("N") or with A^H ("H")."""
    return "H" if adjoint == left else "N"


def _core(xp: Any, m: Array, left: bool) -> Array:
    """A right-hand side, solution or cotangent of a right solve (rows) as its core solve's
    (columns): ``X op(A) = B`` is ``op(A)^H X^H = B^H``."""
    return m if left else mH(xp, m)


def _solve_in_halves(la: Linalg, lu: Array, pivots: Array, r: Array, trans: Trans) -> Any:
    """``(half-way, x)`` of the core solve, by the two triangular solves LAPACK's getrs
    makes: ``A x = r`` as ``y = L^-1 P^T r``, ``x = U^-1 y``; ``A^H x = r`` as
    ``w = U^-H r``, ``x = P L^-H w``."""
    if trans == "N":
        y = la.solve_triangular(lu, la.permute_rows(pivots, r, False), False, "N", True)
        return y, la.solve_triangular(lu, y, True, "N", False)
    w = la.solve_triangular(lu, r, True, "H", False)
    return w, la.permute_rows(pivots, la.solve_triangular(lu, w, False, "H", True), True)


def _lu_solve_primal(
    la: Linalg, LU: Array, pivots: Array, b: Array, *, left: bool = True, adjoint: bool = False
) -> Primal:
    xp = la.xp
    dtype = LU.dtype if LU.dtype == b.dtype else xp.result_type(LU.dtype, b.dtype)
    lu = LU if LU.dtype == dtype else xp.astype(LU, dtype)
    vector = b.ndim == 1
    r = _core(xp, as_matrix_rhs(b, vector, left), left)
    r = r if r.dtype == dtype else xp.astype(r, dtype)
    y, x = _solve_in_halves(la, lu, pivots, r, _core_trans(left, adjoint))
    x = _core(xp, x, left)
    info = la.first_zero(diagonal(xp, LU))
    residuals = LUSolveResiduals(LU, pivots, ArrayMeta.of(b), x, y)
    return Primal(from_matrix_rhs(x, vector, left), info, residuals)


def _rederive_lu_solve(
    la: Linalg, res: LUSolveResiduals, *, left: bool = True, adjoint: bool = False
) -> LUSolveResiduals:
    """The half-way solution as a function of ``LU``, the pivots and ``x`` (``Rule.rederive``)."""
    xp = la.xp
    x = _core(xp, res.x, left)
    lu = res.LU if res.LU.dtype == x.dtype else xp.astype(res.LU, x.dtype)
    if _core_trans(left, adjoint) == "N":
        return res._replace(y=xp.triu(lu) @ x)
    return res._replace(y=mH(xp, _unit_lower(xp, lu)) @ la.permute_rows(res.pivots, x, False))


def _lu_solve_jvp(
    la: Linalg,
    res: LUSolveResiduals,
    tangents: tuple[Array | None, Any, Array | None],
    *,
    left: bool = True,
    adjoint: bool = False,
) -> Array | None:
    xp = la.xp
    dlu, _, db = tangents
    if dlu is None and db is None:
        return None
    vector = res.b.ndim == 1
    lu, piv, y = res.LU, res.pivots, res.y
    x = _core(xp, res.x, left)
    dr = None if db is None else _core(xp, as_matrix_rhs(db, vector, left), left)
    if dlu is None:
        dx = la.lu_solve(Factor(None, lu, piv), dr, _core_trans(left, adjoint))
    else:
        dL, dU = xp.tril(dlu, k=-1), xp.triu(dlu)
        if _core_trans(left, adjoint) == "N":  # y = U x
            rhs = -(dL @ y)
            if dr is not None:
                rhs = rhs + la.permute_rows(piv, dr, False)
            t = la.solve_triangular(lu, rhs, False, "N", True)
            dx = la.solve_triangular(lu, t - dU @ x, True, "N", False)
        else:  # y = w = L^H z, z = P^T x
            rhs = -(mH(xp, dU) @ y)
            if dr is not None:
                rhs = rhs + dr
            z = la.permute_rows(piv, x, False)
            t = la.solve_triangular(lu, rhs, True, "H", False) - mH(xp, dL) @ z
            dx = la.permute_rows(piv, la.solve_triangular(lu, t, False, "H", True), True)
    return from_matrix_rhs(_core(xp, dx, left), vector, left)


def _lu_solve_vjp(
    la: Linalg,
    res: LUSolveResiduals,
    Xbar: Array,
    needs: tuple[bool, ...] = (True, False, True),
    *,
    left: bool = True,
    adjoint: bool = False,
) -> tuple[Array | None, None, Array | None]:
    xp = la.xp
    vector = res.b.ndim == 1
    lu, piv, y = res.LU, res.pivots, res.y
    x = _core(xp, res.x, left)
    xbar = _core(xp, as_matrix_rhs(Xbar, vector, left), left)
    lubar = None
    if _core_trans(left, adjoint) == "N":
        g = la.solve_triangular(lu, xbar, True, "H", False)
        h = la.solve_triangular(lu, g, False, "H", True)
        rbar = la.permute_rows(piv, h, True)
        if needs[0]:  # the signs on the thin factors: one pass over the matrix fewer
            lubar = la.packed_outer(-h, y, -g, x)
    else:
        s = la.solve_triangular(lu, la.permute_rows(piv, xbar, False), False, "N", True)
        rbar = la.solve_triangular(lu, s, True, "N", False)
        if needs[0]:  # y = w = L^H z
            z = la.permute_rows(piv, x, False)
            lubar = la.packed_outer(-z, s, -y, rbar)
    lubar = None if lubar is None else cotangent_for(xp, lubar, lu)
    if not needs[2]:
        return lubar, None, None
    bbar = _core(xp, rbar, left)
    return lubar, None, cotangent_for(xp, from_matrix_rhs(bbar, vector, left), res.b)


LU_SOLVE = Rule(
    contract=Contract(
        name="lu_solve",
        summary="Solve op(A) X = B (or X op(A) = B) with A = P L U given by lu_factor.",
        inputs=("LU", "pivots", "b"),
        outputs=("x",),
        differentiable_outputs=("x",),
        params=(
            Param("left", True, "solve op(A) X = B if true, X op(A) = B if false"),
            Param("adjoint", False, "op(A) = A^H if true, A if false"),
        ),
        forward="left: X = op(A)^-1 B;  right: X = B op(A)^-1;  A = P L U from (LU, pivots)",
        linearization=(
            "A x = r: dx = U^-1 (L^-1 (P^T dr - dL U x) - dU x);  A^H x = r: dx = P L^-H "
            "(U^-H (dr - dU^H L^H P^T x) - dL^H P^T x);  dL = tril_-(dLU), dU = triu(dLU); "
            "right solves are these on x = X^H, r = B^H"
        ),
        adjoint=(
            "A x = r: g = U^-H xbar, h = L^-H g, rbar = P h, LUbar = -tril_-(h (U x)^H) - "
            "triu(g x^H);  A^H x = r: s = L^-1 P^T xbar, rbar = U^-1 s, LUbar = "
            "-tril_-(P^T x s^H) - triu(L^H P^T x rbar^H)"
        ),
        transpose=(
            "the conjugate of the adjoint of the conjugated cotangent (JAX transposes the "
            "linearization itself)"
        ),
        domain=(
            "U nonsingular; pivots as the framework's lu_factor returns them (no derivative): "
            "LAPACK's row interchanges, base + i <= pivots[..., i] <= base + n - 1 (base 1 on "
            "torch, 0 elsewhere), else ValueError naming the first one (under JAX tracing, "
            "where values cannot be read: NaN in that batch element)"
        ),
        singular=(
            "Raises the framework's LinAlgError naming the op, the shape and the first batch "
            "index where U has a zero on its diagonal (under JAX tracing: JAX's non-finite values)."
        ),
        shapes=(
            "LU: (..., n, n), pivots: (..., n) (LU's batch shape), b as in solve: (n,) is a "
            "vector; otherwise (..., n, k) (left) or (..., k, n) (right), the batch dimensions "
            "of LU and b broadcast. Mixed dtypes promote; each cotangent has its input's dtype."
        ),
        integer_inputs=("pivots",),
        core_ndim=(2, 1, 2),
    ),
    check=_check_lu_solve,
    primal=_lu_solve_primal,
    jvp=_lu_solve_jvp,
    vjp=_lu_solve_vjp,
    residuals=LUSolveResiduals,
    rederive=_rederive_lu_solve,
    check_values=_check_lu_solve_pivots,
)
