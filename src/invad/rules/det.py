"""The determinants: ``det`` and ``slogdet``, both from one LU ``A = P L U``.

With ``w = tr(A^-1 dA)`` applied through the saved factorization (never an inverse)::

    det      dd = tr(adj(A) dA) = d w                  Abar = dbar adj(A)^H
                                                       (= dbar conj(d) A^-H if nonsingular)
    slogdet  dlogabsdet = Re w,  dsign = i Im(w) sign  Abar = g A^-H,
                                                       g = logabsdetbar - i Im(conj(signbar) sign)

(real input: the sign is locally constant, ``w`` real.) ``det`` is a
polynomial, and its derivative at a singular matrix is the adjugate, which
the LU gives without the inverse that does not exist: with ``U'`` the ``U``
whose zero diagonal entries are replaced by ones and ``E`` the diagonal mask
of those entries,

    one zero on U's diagonal   adj(A) = det(P) prod(nonzero diag(U)) U'^-1 E U'^-1 L^-1 P^T
                                      = u v^T,  u = s U'^-1 e_k,  v = P L^-T U'^-T e_k
    two or more                adj(A) = 0   (rank <= n - 2)

(one zero, at ``k``: ``E = e_k e_k^T``, and the adjugate has rank one: three
solves with one column make it.) Matrices singular only to rounding (no exact
zero) take the generic formula, whose products cancel the small pivot:
``d A^-1`` stays accurate. ``slogdet``
of a singular matrix is ``(0, -inf)``; its derivative there is not finite.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._linalg import (
    Array,
    Factor,
    Linalg,
    cotangent_for,
    device,
    diagonal,
    is_complex,
    mH,
    mT,
    pivot_sign,
)
from ._rule import Contract, Primal, Rule, check_dtype, check_square


def _check(xp: Any, op: str, a: Array) -> None:
    check_dtype(xp, op, a=a)
    check_square(op, a)


def _trace(xp: Any, x: Array) -> Array:
    return xp.sum(diagonal(xp, x), axis=-1)


def _eye(xp: Any, like: Array) -> Array:
    n = like.shape[-1]
    return xp.eye(n, dtype=like.dtype, device=device(like))


def _scaled_eye(xp: Any, scale: Array, like: Array) -> Array:
    """``scale[..., None, None] * I``, a right-hand side of the derivatives' solves: given as
    its own transpose, whose view is the column-major layout LAPACK solves in place (torch
    would copy the other; measured 15% of slogdet's backward at n = 256)."""
    return mT(xp, scale[..., None, None] * _eye(xp, like))


# -- slogdet ------------------------------------------------------------------------


class SlogdetResiduals(NamedTuple):
    a: Array
    lu: Array  # the factorization, opaque to the rule (None: the backend refactors a)
    pivots: Array
    sign: Array


def _slogdet_primal(la: Linalg, a: Array) -> Primal:
    factor, sign, logabsdet, info = la.slogdet(a)
    return Primal((sign, logabsdet), info, SlogdetResiduals(a, factor.lu, factor.pivots, sign))


def _slogdet_jvp(
    la: Linalg, res: SlogdetResiduals, tangents: tuple[Array | None]
) -> tuple[Array | None, Array | None]:
    (da,) = tangents
    if da is None:
        return None, None
    xp = la.xp
    w = _trace(xp, la.lu_solve(Factor(res.a, res.lu, res.pivots), da, "N"))
    if not is_complex(xp, w):
        return None, w
    real = xp.real(w)
    return res.sign * (w - real), real  # i Im(w) sign, Re(w)


def _slogdet_vjp(
    la: Linalg,
    res: SlogdetResiduals,
    cotangents: tuple[Array | None, Array | None],
    needs: tuple[bool, ...] = (True,),
) -> tuple[Array | None]:
    xp = la.xp
    signbar, logbar = cotangents
    g = logbar
    if signbar is not None and is_complex(xp, res.sign):
        t = xp.conj(signbar) * res.sign
        g = -(t - xp.real(t)) if g is None else g - (t - xp.real(t))  # - i Im(conj(sbar) s)
    if g is None:
        return (None,)
    scaled = _scaled_eye(xp, xp.astype(g, res.a.dtype), res.a)
    abar = la.lu_solve(Factor(res.a, res.lu, res.pivots), scaled, "H")
    return (cotangent_for(xp, abar, res.a),)


_SQUARE = (
    "a: (..., n, n), any number of batch dimensions; the result has the batch shape. "
    "n = 0 gives det 1, slogdet (1, 0)."
)

SLOGDET = Rule(
    contract=Contract(
        name="slogdet",
        summary="Sign and log of the absolute value of the determinant, from one LU.",
        inputs=("a",),
        outputs=("sign", "logabsdet"),
        differentiable_outputs=("sign", "logabsdet"),
        params=(),
        forward="sign = det(A) / |det(A)|, logabsdet = log |det(A)|, from A = P L U",
        linearization="w = tr(A^-1 dA) (with A's LU): dlogabsdet = Re w, dsign = i Im(w) sign",
        adjoint="Abar = g A^-H, g = logabsdetbar - i Im(conj(signbar) sign) (A's LU reused)",
        transpose="Abar = g A^-T, g = logabsdetbar + i Im(signbar sign)",
        domain="a nonsingular for the derivative; any a for the value",
        singular=(
            "Never raises: a singular matrix gives sign 0 and logabsdet -inf (the array API's "
            "convention); the derivative there is not finite. Real input: the sign's "
            "derivative is zero."
        ),
        shapes=_SQUARE,
    ),
    check=_check,
    primal=_slogdet_primal,
    jvp=_slogdet_jvp,
    vjp=_slogdet_vjp,
    residuals=SlogdetResiduals,
    raises=False,
)

# -- det ----------------------------------------------------------------------------


class DetResiduals(NamedTuple):
    a: Array
    lu: Array  # the factorization, opaque to the rule (None: the backend refactors a)
    pivots: Array
    det: Array


def _factor_of(la: Linalg, res: DetResiduals) -> tuple[Array, Array]:
    """The LU and pivots of ``a``; a backend that kept no factor factors now (only for the
    rare path at singular matrices)."""
    if res.lu is None:
        factor, _ = la.lu_factor(res.a)
        return factor.lu, factor.pivots
    return res.lu, res.pivots


def _adjugate_factors(la: Linalg, res: DetResiduals) -> tuple[Array, Array]:
    """``(u, v)``, columns ``(..., n, 1)``, with ``adj(A) = u v^T``.

    With one zero on U's diagonal, at ``k``, ``E = e_k e_k^T`` and the adjugate is of rank
    one: ``u = s U'^-1 e_k``, ``v = P L^-T U'^-T e_k``, ``s`` = det(P) prod(nonzero
    diag(U)); with two or more zeros (rank <= n - 2) ``s = 0``: adj(A) = 0. Three solves
    with one column each, no n x n matrix.
    """
    xp = la.xp
    lu, piv = _factor_of(la, res)
    d = diagonal(xp, lu)
    zero = d == 0
    count = xp.sum(xp.astype(zero, xp.int32), axis=-1)
    nonzero_product = xp.prod(xp.where(zero, xp.ones_like(d), d), axis=-1)
    scale = pivot_sign(xp, piv, la.pivot_base, lu.dtype) * nonzero_product
    scale = xp.where(count == 1, scale, xp.zeros_like(scale))
    patched = _patched(xp, lu)
    e = xp.astype(zero, lu.dtype)[..., None]
    u = scale[..., None, None] * la.solve_triangular(patched, e, True, "N", False)
    v = la.solve_triangular(lu, la.solve_triangular(patched, e, True, "T", False), False, "T", True)
    return u, la.permute_rows(piv, v, True)


def _patched(xp: Any, lu: Array) -> Array:
    """``U'``: the factor with U's zero diagonal entries set to one, so that nothing divides
    by zero, in the branch of a select not taken either (JAX transposes both)."""
    mask = xp.astype(diagonal(xp, lu) == 0, lu.dtype)[..., None, :]
    return lu + mask * _eye(xp, lu)


def _with_adjugate(la: Linalg, res: DetResiduals, generic: Any, adjugate_term: Any) -> Array:
    """``generic(factor)``, the derivative through ``A^-1``, plus ``adjugate_term(u, v)`` for
    ``adj(A) = u v^T`` where some matrix of the batch is singular (a zero on U's diagonal;
    det == 0 exactly).

    Both derivatives scale ``generic`` by det(A), so it is zero at exactly singular matrices,
    where it solves with ``U'`` (finite); the adjugate is zero at the others. The adjugate's
    factors are made only if some matrix needs them (``la.if_any``: under JAX a
    ``lax.cond`` of values the forward knows, so that the derivative itself is linear,
    without a branch)."""
    factors = la.if_any(res.det == 0, lambda: _adjugate_factors(la, res), lambda: None)
    if factors is None:
        return generic(Factor(res.a, res.lu, res.pivots))
    lu, piv = _factor_of(la, res)
    return generic(Factor(res.a, _patched(la.xp, lu), piv)) + adjugate_term(*factors)


def _det_jvp(la: Linalg, res: DetResiduals, tangents: tuple[Array | None]) -> Array | None:
    (da,) = tangents
    if da is None:
        return None
    xp = la.xp

    def generic(factor: Factor) -> Array:
        return res.det * _trace(xp, la.lu_solve(factor, da, "N"))

    def adjugate(u: Array, v: Array) -> Array:
        return xp.sum(v * (da @ u), axis=(-2, -1))  # tr(u v^T dA) = v^T dA u

    return _with_adjugate(la, res, generic, adjugate)


def _det_vjp(
    la: Linalg, res: DetResiduals, dbar: Array, needs: tuple[bool, ...] = (True,)
) -> tuple[Array | None]:
    xp = la.xp
    conj = xp.conj if is_complex(xp, res.det) else (lambda x: x)

    def generic(factor: Factor) -> Array:
        return la.lu_solve(factor, _scaled_eye(xp, dbar * conj(res.det), res.a), "H")

    def adjugate(u: Array, v: Array) -> Array:
        return dbar[..., None, None] * conj(v) * mH(xp, u)  # dbar adj(A)^H = dbar conj(v) u^H

    return (cotangent_for(xp, _with_adjugate(la, res, generic, adjugate), res.a),)


def _det_primal(la: Linalg, a: Array) -> Primal:
    factor, det, info = la.det(a)
    return Primal(det, info, DetResiduals(a, factor.lu, factor.pivots, det))


DET = Rule(
    contract=Contract(
        name="det",
        summary="Determinant of a square matrix or a batch of them, from one LU.",
        inputs=("a",),
        outputs=("det",),
        differentiable_outputs=("det",),
        params=(),
        forward="det(A) = det(P) prod(diag(U)), A = P L U",
        linearization="dd = tr(adj(A) dA) = d tr(A^-1 dA) (A's LU; the adjugate where singular)",
        adjoint="Abar = dbar adj(A)^H = dbar conj(d) A^-H (A's LU; the adjugate where singular)",
        transpose="Abar = dbar adj(A)^T = dbar d A^-T",
        domain="any square a: the derivative is the adjugate, finite at singular matrices too",
        singular=(
            "Never raises: a singular matrix has det 0, and its derivative is the adjugate "
            "(rank n-1: rank one; rank <= n-2: zero), computed from the LU without an inverse."
        ),
        shapes=_SQUARE,
    ),
    check=_check,
    primal=_det_primal,
    jvp=_det_jvp,
    vjp=_det_vjp,
    residuals=DetResiduals,
    raises=False,
)
