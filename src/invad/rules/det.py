"""The determinants: ``det`` and ``slogdet``, both from one LU ``A = P L U``.

With ``w = tr(A^-1 dA)`` applied through the saved factorization (never an inverse)::

    det      dd = tr(adj(A) dA) = d w                  Abar = dbar adj(A)^H
                                                       (= dbar conj(d) A^-H if nonsingular)
    slogdet  dlogabsdet = Re w,  dsign = i Im(w) sign  Abar = g A^-H,
                                                       g = logabsdetbar - i Im(conj(signbar) sign)

(real input: the sign is locally constant, ``w`` real.) ``det`` is a
polynomial, and its derivative at a singular matrix is the adjugate, finite,
and differentiable again. ``det(A) A^-1`` gives it only where ``A`` is far
from singular: at a small pivot the products of the second derivative cancel
(0/0 at an exact zero). There ``A`` is bordered: with ``U'`` the ``U`` whose
small pivots (at most ``sqrt(eps)`` of the largest) are raised to the
largest, ``B = P L U' = A + X Y^T`` is nonsingular, ``Y`` the columns ``e_k``
of the small pivots and ``X = P L diag(U' - U) Y``, and for any such ``B``

    adj(A) = det(B) (det(C) B^-1 + B^-1 X adj(C) Y^T B^-1),  C = I - Y^T B^-1 X,

where ``det(B) det(C) = det(A)``: the first term is the generic formula with
``B``'s factor, and the second solves with two columns and takes ``det(B)``
from the same factor (``la.factored_det``: a fresh LU of ``B`` only where
the derivative is differentiated and the backend needs one for that). ``X``
and ``Y`` are constants (``la.constant``), so ``B``'s derivative is ``A``'s
and every order is right. Up to two small pivots (rank n-1 and n-2) are
taken; with more, ``adj(A)`` and its first derivative vanish and the second
term is dropped (derivatives of ``det`` of order three and more at rank <=
n-3 are then not exact). Backends whose fused determinant keeps no factor
(NumPy; no AD engine) take the bordered form at exact zeros only, found by
``det(A) == 0``. ``slogdet`` of a singular matrix is
``(0, -inf)``; its derivative there is not finite.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The LU and pivots of ``a`` as values (no derivative: ``la.constant``); a backend that
    kept no factor factors now (only for the rare path at (nearly) singular matrices)."""
    if res.lu is None:
        factor, _ = la.lu_factor(res.a)
        return la.constant(factor.lu), factor.pivots
    return la.constant(res.lu), res.pivots


def _small_pivots(xp: Any, d: Array) -> tuple[Array, Array]:
    """``(small, top)``: which pivots ``d`` (``(..., n)``, U's diagonal) are small, at most
    ``sqrt(eps)`` of the largest magnitude ``top`` (``(..., 1)``, real), and ``top``.

    A pivot that small makes ``A`` singular or nearly so. There the generic formula,
    through ``A^-1``, is right in value but its own derivative (det's second derivative)
    loses about eps/ratio of its accuracy to cancellation: all of it at rank n-1 to
    rounding, and 0/0 at an exact zero. Such matrices take the bordered form (module
    docstring): 2^-26 of the largest pivot in float64, 2^-11.5 in float32."""
    mag = xp.abs(d)
    top = xp.max(mag, axis=-1, keepdims=True)
    return mag <= float(xp.finfo(mag.dtype).eps) ** 0.5 * top, top


def _patch(xp: Any, lu: Array, small: Array, top: Array) -> Array:
    """``delta``, ``(..., n)``: what the small pivots need to become the largest magnitude
    (one where all are zero); zero elsewhere. ``U' = U + diag(delta)`` is nonsingular."""
    d = diagonal(xp, lu)
    r = xp.astype(xp.where(top == 0, xp.ones_like(top), top), d.dtype)
    return xp.where(small, r - d, xp.zeros_like(d))


def _patched(xp: Any, lu: Array, delta: Array) -> Array:
    """The packed ``L U'``: ``lu`` with ``delta`` added to U's diagonal."""
    return lu + delta[..., None, :] * _eye(xp, lu)


class _Bordered(NamedTuple):
    """``A = B - X Y^T`` with ``B = A + P L diag(delta)`` nonsingular, and what the adjugate
    of ``A`` takes of ``B`` (module docstring): at most two small pivots (``exact``) make
    ``X Y^T`` all of ``P L diag(delta)``; more make ``adj(A)`` vanish to second order."""

    factor: Factor  # B's: the patched LU, solves differentiable in A (B - A is a constant)
    det: Array  # det(B), zero where not exact
    y: Array  # (..., n, 2): e_k of the first two small pivots (zero columns if fewer)
    bx: Array  # B^-1 X, (..., n, 2)
    adj_c: Array  # adj(C), C = I - Y^T B^-1 X, (..., 2, 2)


def _bordered(
    la: Linalg, a: Array, lu: Array, pivots: Array, small: Array, delta: Array
) -> _Bordered:
    xp = la.xp
    n = lu.shape[-1]
    unit_lower = xp.tril(lu, k=-1) + _eye(xp, lu)
    d = la.constant(la.permute_rows(pivots, unit_lower * delta[..., None, :], True))
    b = a + d  # nonsingular, with A's derivative; P L U' factors it
    factor = Factor(b, _patched(xp, lu, delta), pivots)
    det_b = la.factored_det(b, factor)
    # The first two small pivots, one-hot: argmax finds the first true entry.
    rows = xp.arange(n, device=device(lu))
    first = small & (rows == xp.argmax(xp.astype(small, xp.int32), axis=-1)[..., None])
    rest = small & ~first
    second = rest & (rows == xp.argmax(xp.astype(rest, xp.int32), axis=-1)[..., None])
    y = xp.stack([xp.astype(first, lu.dtype), xp.astype(second, lu.dtype)], axis=-1)
    bx = la.lu_solve(factor, d @ y, "N")
    c = xp.eye(2, dtype=bx.dtype, device=device(bx)) - mT(xp, y) @ bx  # det(C) det(B) = det(A)
    adj_c = xp.stack(
        [
            xp.stack([c[..., 1, 1], -c[..., 0, 1]], axis=-1),
            xp.stack([-c[..., 1, 0], c[..., 0, 0]], axis=-1),
        ],
        axis=-2,
    )
    exact = xp.sum(xp.astype(small, xp.int32), axis=-1) <= 2
    return _Bordered(factor, xp.where(exact, det_b, xp.zeros_like(det_b)), y, bx, adj_c)


def _with_adjugate(
    la: Linalg,
    res: DetResiduals,
    generic: Callable[[Factor], Array],
    bordered: Callable[[_Bordered], Any],
    finish: Callable[[Any], Array] = lambda term: term,
) -> Array:
    """``generic(factor)``, the derivative through ``det(A) A^-1``, where no pivot is small;
    where some matrix of the batch has one, ``generic`` with ``B``'s factor (``A``'s LU with
    its small pivots raised) plus ``finish(bordered(parts))``, the term of ``det(B) B^-1 X
    adj(C) Y^T B^-1``.

    ``bordered`` returns thin factors: it runs under ``la.if_any`` only where some matrix
    needs it (under JAX a ``lax.cond`` of values the forward knows, whose untaken branch
    gives zeros), and ``finish`` makes the matrix of them. Every piece is a derivative of
    ``A`` through ``B = A + const`` or the output ``det(A)``, so the result can be
    differentiated again, at every order."""
    if res.a.shape[-1] == 0:
        return generic(Factor(res.a, res.lu, res.pivots))
    if res.lu is None:
        # A fused determinant kept no factor (NumPy's gufunc, whose backends differentiate
        # no derivative): no pivots to read, so the exact zeros that det shows. To first
        # order the generic formula is accurate near singular matrices; at them it is 0/0.
        full = la.if_any(
            res.det == 0, lambda: _from_pivots(la, res, generic, bordered, finish), lambda: None
        )
        return generic(Factor(res.a, None, None)) if full is None else full
    return _from_pivots(la, res, generic, bordered, finish)


def _from_pivots(
    la: Linalg,
    res: DetResiduals,
    generic: Callable[[Factor], Array],
    bordered: Callable[[_Bordered], Any],
    finish: Callable[[Any], Array],
) -> Array:
    """:func:`_with_adjugate` where the pivots can be read (factored now if none were kept)."""
    xp = la.xp
    lu, pivots = _factor_of(la, res)
    small, top = _small_pivots(xp, diagonal(xp, lu))
    delta = _patch(xp, lu, small, top)
    term = la.if_any(
        xp.any(small, axis=-1),
        lambda: bordered(_bordered(la, res.a, lu, pivots, small, delta)),
        lambda: None,
    )
    if term is None:
        return generic(Factor(res.a, res.lu, res.pivots))
    return generic(Factor(res.a, _patched(xp, lu, delta), pivots)) + finish(term)


def _det_jvp(la: Linalg, res: DetResiduals, tangents: tuple[Array | None]) -> Array | None:
    (da,) = tangents
    if da is None:
        return None
    xp = la.xp

    def generic(factor: Factor) -> Array:
        return res.det * _trace(xp, la.lu_solve(factor, da, "N"))

    def bordered(b: _Bordered) -> tuple[Array, Array]:
        # tr(det(B) B^-1 X adj(C) Y^T B^-1 dA) = sum((dA B^-1 X) * (Q (det(B) adj(C))^T)),
        # Q = B^-T Y: thin factors, free of dA (no tangent inside the branch)
        q = la.lu_solve(b.factor, b.y, "T")
        return q @ mT(xp, b.det[..., None, None] * b.adj_c), b.bx

    def finish(term: tuple[Array, Array]) -> Array:
        # sum(dA * (G (B^-1 X)^T)), the rank-two matrix as two broadcast products: XLA
        # fuses them into the sum (and into the cotangent, the transpose), where a matrix
        # product with two columns is a kernel call of its own
        g, bx = term
        outer = g[..., :, :1] * mT(xp, bx[..., :, :1]) + g[..., :, 1:] * mT(xp, bx[..., :, 1:])
        return xp.sum(da * outer, axis=(-2, -1))

    return _with_adjugate(la, res, generic, bordered, finish)


def _det_vjp(
    la: Linalg, res: DetResiduals, dbar: Array, needs: tuple[bool, ...] = (True,)
) -> tuple[Array | None]:
    xp = la.xp
    conj = xp.conj if is_complex(xp, res.det) else (lambda x: x)

    def generic(factor: Factor) -> Array:
        return la.lu_solve(factor, _scaled_eye(xp, dbar * conj(res.det), res.a), "H")

    def bordered(b: _Bordered) -> tuple[Array, Array]:
        # (det(B) B^-1 X adj(C) Q^T)^H = conj(det(B)) B^-H Y adj(C)^H (B^-1 X)^H
        w = la.lu_solve(b.factor, b.y, "H")
        return w @ (conj(b.det)[..., None, None] * mH(xp, b.adj_c)), b.bx

    def finish(term: tuple[Array, Array]) -> Array:
        return dbar[..., None, None] * (term[0] @ mH(xp, term[1]))

    return (cotangent_for(xp, _with_adjugate(la, res, generic, bordered, finish), res.a),)


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
            "(rank n-1: rank one; rank <= n-2: zero), computed from the LU without an inverse. "
            "Near and at singular matrices (a pivot at most sqrt(eps) of the largest) the "
            "derivative comes from the LU with its small pivots raised, bordered by a rank-two "
            "correction, so that it can be differentiated again: second derivatives are exact "
            "at rank n-1 and n-2, and at rank <= n-3 (where they are zero)."
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
