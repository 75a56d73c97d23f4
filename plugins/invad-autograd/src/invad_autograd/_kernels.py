"""Kernel primitives, and the Linalgs made of them that the rules run on under autograd.

Each kernel primitive is computed by the backend's own kernel and
differentiated by one of invad's rules on the differentiable Linalg
(:func:`differentiable`), so every order is differentiable and the rules stay
the only place with derivative formulas. :mod:`invad_autograd._native` tells
how the pieces fit together.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defjvp_argnums, defvjp, defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from invad.rules import RULES, ArrayMeta, CholeskyFactor, Factor, Linalg

from ._namespace import NAMESPACE, Array, conj, matrix_transpose, sum_to, zeros_like

SOLVE = RULES["solve"]
INV = RULES["inv"]
LU_FACTOR = RULES["lu_factor"]
SOLVE_TRIANGULAR = RULES["solve_triangular"]
DET = RULES["det"]
SLOGDET = RULES["slogdet"]
CHOLESKY = RULES["cholesky"]
CHOLESKY_SOLVE = RULES["cholesky_solve"]

# -- kernel primitives ---------------------------------------------------------------

_FLIP: dict[str, Callable[[Array], Array]] = {
    "N": lambda x: x,
    "T": matrix_transpose,
    "H": lambda x: conj(matrix_transpose(x)),
}


def _flipped(x: Array, trans: str) -> ArrayMeta:
    """Shape and dtype of ``_FLIP[trans](x)``."""
    shape = tuple(anp.shape(x))
    if trans != "N":
        shape = (*shape[:-2], shape[-1], shape[-2])
    return ArrayMeta(shape, x.dtype)


@primitive
def lu_solve(
    a: Array,
    rhs: Array,
    lu: Array,
    pivots: Array,
    trans: str,
    la: Linalg,
    known: Array | None = None,
) -> Array:
    """``op(a)^-1 rhs``, ``op`` the identity, transpose or adjoint (``trans`` N, T, H).

    ``lu`` and ``pivots`` factor ``a`` (as ``la``'s kernels store it) and are
    reused at every order; ``known``, when given, is the result itself (a
    replayed forward). Differentiable in ``a`` and ``rhs`` by the solve rule.
    """
    if known is not None:
        return known
    return la.lu_solve(Factor(a, lu, pivots), rhs, trans)


def _as_solve_rule(args: tuple[Any, ...], x: Array) -> tuple[Any, bool, Callable[[Array], Array]]:
    """``x = op(A)^-1 rhs`` as a problem of the solve rule, and the map between the two.

    ``A x = rhs`` (N) is the left solve; ``x^T A = rhs^T`` (T) and
    ``x^H A = rhs^H`` (H) are right solves of the flipped ``x`` and ``rhs``.
    The flip is its own inverse and its own adjoint.
    """
    a, rhs, lu, pivots, trans = args[:5]
    flip = _FLIP[trans]
    return SOLVE.residuals(a, lu, pivots, _flipped(rhs, trans), flip(x)), trans == "N", flip


def _lu_solve_jvp(argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, kwargs: Any) -> Array:
    res, left, flip = _as_solve_rule(args, ans)
    tangents = dict(zip(argnums, gs))
    db = tangents.get(1)
    dx = SOLVE.jvp(
        differentiable(args[5]),
        res,
        (tangents.get(0), None if db is None else flip(db)),
        left=left,
    )
    return flip(dx)


def _lu_solve_vjp(argnums: tuple[int, ...], ans: Array, args: Any, kwargs: Any) -> Any:
    res, left, flip = _as_solve_rule(args, ans)
    la = differentiable(args[5])
    needs = (0 in argnums, 1 in argnums)

    def vjp(g: Array) -> tuple[Array, ...]:
        abar, bbar = SOLVE.vjp(la, res, flip(conj(g)), needs, left=left)
        cts = (abar, None if bbar is None else flip(bbar))
        return tuple(conj(cts[i]) for i in argnums)

    return vjp


defjvp_argnums(lu_solve, _lu_solve_jvp)
defvjp_argnums(lu_solve, _lu_solve_vjp)


@primitive
def inverse(a: Array, la: Linalg, known: Array | None = None) -> Array:
    """``a^-1`` by ``la``'s kernel (or ``known``); differentiable by the inv rule."""
    if known is not None:
        return known
    return la.inv(a)[0]


def _inverse_jvp(argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, kwargs: Any) -> Array:
    return INV.jvp(differentiable(args[1]), INV.residuals(ans), (gs[0],))


def _inverse_vjp(argnums: tuple[int, ...], ans: Array, args: Any, kwargs: Any) -> Any:
    la, res = differentiable(args[1]), INV.residuals(ans)
    return lambda g: (conj(INV.vjp(la, res, conj(g), (True,))[0]),)


defjvp_argnums(inverse, _inverse_jvp)
defvjp_argnums(inverse, _inverse_vjp)


@primitive
def triangular(
    t: Array,
    b: Array,
    upper: bool,
    trans: str,
    unit: bool,
    la: Linalg,
    known: Array | None = None,
) -> Array:
    """``op(T)^-1 b``, ``T`` the triangle of ``t`` that ``upper`` names (unit diagonal if
    ``unit``), by ``la``'s kernel (or ``known``); differentiable in ``t`` and ``b`` by the
    solve_triangular rule: ``T x = b`` is its left solve, ``x^T T = b^T`` and
    ``x^H T = b^H`` its right solves."""
    if known is not None:
        return known
    return la.solve_triangular(t, b, upper, trans, unit)


def _as_triangular_rule(args: tuple[Any, ...], x: Array) -> tuple[Any, dict[str, bool], Any]:
    t, b, upper, trans, unit = args[:5]
    flip = _FLIP[trans]
    res = SOLVE_TRIANGULAR.residuals(t, _flipped(b, trans), flip(x))
    return res, {"upper": upper, "left": trans == "N", "unitriangular": unit}, flip


def _triangular_jvp(argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, kwargs: Any) -> Array:
    res, params, flip = _as_triangular_rule(args, ans)
    tangents = dict(zip(argnums, gs))
    db = tangents.get(1)
    dx = SOLVE_TRIANGULAR.jvp(
        differentiable(args[5]), res, (tangents.get(0), None if db is None else flip(db)), **params
    )
    return flip(dx)


def _triangular_vjp(argnums: tuple[int, ...], ans: Array, args: Any, kwargs: Any) -> Any:
    res, params, flip = _as_triangular_rule(args, ans)
    la = differentiable(args[5])
    needs = (0 in argnums, 1 in argnums)

    def vjp(g: Array) -> tuple[Array, ...]:
        tbar, bbar = SOLVE_TRIANGULAR.vjp(la, res, flip(conj(g)), needs, **params)
        cts = (tbar, None if bbar is None else flip(bbar))
        return tuple(conj(cts[i]) for i in argnums)

    return vjp


defjvp_argnums(triangular, _triangular_jvp)
defvjp_argnums(triangular, _triangular_vjp)


@primitive
def permute(x: Array, pivots: Array, inverse: bool, la: Linalg) -> Array:
    """``P^T x`` (or ``P x``) by ``la``'s row interchanges: linear in ``x``, a real
    permutation, whose adjoint and transpose are the inverse permutation."""
    return la.permute_rows(pivots, x, inverse)


defjvp(permute, lambda g, ans, x, pivots, inverse, la: permute(g, pivots, inverse, la))
defvjp(
    permute,
    lambda ans, x, pivots, inverse, la: (
        lambda g: sum_to(permute(g, pivots, not inverse, la), tuple(anp.shape(x)))
    ),
)


@primitive
def factored(a: Array, lu: Array, pivots: Array, la: Linalg) -> Array:
    """``lu``, the packed LU factor of ``a`` (computed already, with ``pivots``), as a
    function of ``a``: differentiable by the lu_factor rule."""
    return lu


def _factored_vjp(ans: Array, a: Array, lu: Array, pivots: Array, la: Linalg) -> Any:
    res = LU_FACTOR.residuals(ans, pivots)

    def vjp(g: Array) -> Array:
        (abar,) = LU_FACTOR.vjp(differentiable(la), res, (conj(g), None), (True,))
        return conj(abar)

    return vjp


def _factored_jvp(g: Array, ans: Array, a: Array, lu: Array, pivots: Array, la: Linalg) -> Array:
    return LU_FACTOR.jvp(differentiable(la), LU_FACTOR.residuals(ans, pivots), (g,))[0]


defjvp(factored, _factored_jvp)
defvjp(factored, _factored_vjp)


@primitive
def determinant(a: Array, value: Array, lu: Array, pivots: Array, la: Linalg) -> Array:
    """``det(a)`` (computed already: ``value``, from ``a``'s factor ``lu``, ``pivots``) as a
    function of ``a``: differentiable by the det rule."""
    return value


def _det_vjp(ans: Array, a: Array, value: Array, lu: Array, pivots: Array, la: Linalg) -> Any:
    res = DET.residuals(a, lu, pivots, ans)
    return lambda g: conj(DET.vjp(differentiable(la), res, conj(g), (True,))[0])


def _det_jvp(
    g: Array, ans: Array, a: Array, value: Array, lu: Array, pivots: Array, la: Linalg
) -> Array:
    return DET.jvp(differentiable(la), DET.residuals(a, lu, pivots, ans), (g,))


defjvp(determinant, _det_jvp)
defvjp(determinant, _det_vjp)


@primitive
def log_determinant(
    a: Array, value: tuple[Array, Array], lu: Array, pivots: Array, la: Linalg
) -> tuple[Array, Array]:
    """``slogdet(a)`` (computed already: ``value``, from ``a``'s factor ``lu``, ``pivots``)
    as a function of ``a``: a pair, differentiable by the slogdet rule."""
    return value


def _slogdet_residuals(a: Array, ans: Any, lu: Array, pivots: Array) -> Any:
    return SLOGDET.residuals(a, lu, pivots, ans[0])


def _slogdet_jvp(
    g: Array, ans: Any, a: Array, value: Any, lu: Array, pivots: Array, la: Linalg
) -> tuple[Array, Array]:
    dsign, dlog = SLOGDET.jvp(differentiable(la), _slogdet_residuals(a, ans, lu, pivots), (g,))
    # The sign of a real determinant is locally constant: its tangent is zero.
    return (zeros_like(ans[0]) if dsign is None else dsign, dlog)


def _slogdet_vjp(ans: Any, a: Array, value: Any, lu: Array, pivots: Array, la: Linalg) -> Any:
    res = _slogdet_residuals(a, ans, lu, pivots)

    def vjp(g: Any) -> Array:
        cts = (conj(g[0]), conj(g[1]))
        (abar,) = SLOGDET.vjp(differentiable(la), res, cts, (True,))
        return zeros_like(a) if abar is None else conj(abar)

    return vjp


defjvp(log_determinant, _slogdet_jvp)
defvjp(log_determinant, _slogdet_vjp)


@primitive
def cholesky_factor(a: Array, c: Array, upper: bool, la: Linalg) -> Array:
    """``c``, the Cholesky factor of ``a`` (computed already), as a function of ``a``:
    differentiable by the cholesky rule (one triangle of ``a`` read, a tangent counted
    by its Hermitian part, a Hermitian cotangent)."""
    return c


def _cholesky_jvp(g: Array, ans: Array, a: Array, c: Array, upper: bool, la: Linalg) -> Array:
    return CHOLESKY.jvp(differentiable(la), CHOLESKY.residuals(ans), (g,), upper=upper)


def _cholesky_vjp(ans: Array, a: Array, c: Array, upper: bool, la: Linalg) -> Any:
    res = CHOLESKY.residuals(ans)
    return lambda g: conj(CHOLESKY.vjp(differentiable(la), res, conj(g), (True,), upper=upper)[0])


defjvp(cholesky_factor, _cholesky_jvp)
defvjp(cholesky_factor, _cholesky_vjp)


@primitive
def positive_solve(a: Array, rhs: Array, c: Array, la: Linalg, known: Array | None = None) -> Array:
    """``A^-1 rhs`` for the Hermitian positive-definite ``A`` whose lower triangle ``a``
    holds, ``c`` its lower Cholesky factor, reused at every order (``known``, when given,
    is the result: a replayed forward). Differentiable in ``a`` and ``rhs`` by the solve
    rule with ``assume_a="pos"``, whose residuals carry no pivots."""
    if known is not None:
        return known
    return la.cholesky_solve(CholeskyFactor(a, c, False), rhs)


def _as_positive_solve(args: tuple[Any, ...], x: Array) -> Any:
    a, rhs, c = args[:3]
    return SOLVE.residuals(a, c, None, ArrayMeta(tuple(anp.shape(rhs)), rhs.dtype), x)


def _positive_solve_jvp(
    argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, kwargs: Any
) -> Array:
    tangents = dict(zip(argnums, gs))
    return SOLVE.jvp(
        differentiable(args[3]),
        _as_positive_solve(args, ans),
        (tangents.get(0), tangents.get(1)),
        assume_a="pos",
    )


def _positive_solve_vjp(argnums: tuple[int, ...], ans: Array, args: Any, kwargs: Any) -> Any:
    res, la = _as_positive_solve(args, ans), differentiable(args[3])
    needs = (0 in argnums, 1 in argnums)

    def vjp(g: Array) -> tuple[Array, ...]:
        cts = SOLVE.vjp(la, res, conj(g), needs, assume_a="pos")
        return tuple(conj(cts[i]) for i in argnums)

    return vjp


defjvp_argnums(positive_solve, _positive_solve_jvp)
defvjp_argnums(positive_solve, _positive_solve_vjp)


@primitive
def factor_solve(c: Array, b: Array, upper: bool, la: Linalg, known: Array | None = None) -> Array:
    """``A^-1 b`` from the Cholesky factor ``c`` alone (``A = c c^H``, or ``c^H c`` if
    ``upper``; ``A`` unknown), by ``la``'s kernel (or ``known``): differentiable in ``c``
    (its triangle) and ``b`` by the cholesky_solve rule."""
    if known is not None:
        return known
    return la.cholesky_solve(CholeskyFactor(None, c, upper), b)


def _as_factor_solve(args: tuple[Any, ...], x: Array) -> Any:
    c, b = args[:2]
    return CHOLESKY_SOLVE.residuals(c, ArrayMeta(tuple(anp.shape(b)), b.dtype), x)


def _factor_solve_jvp(
    argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, kwargs: Any
) -> Array:
    tangents = dict(zip(argnums, gs))
    return CHOLESKY_SOLVE.jvp(
        differentiable(args[3]),
        _as_factor_solve(args, ans),
        (tangents.get(0), tangents.get(1)),
        upper=args[2],
    )


def _factor_solve_vjp(argnums: tuple[int, ...], ans: Array, args: Any, kwargs: Any) -> Any:
    res, la = _as_factor_solve(args, ans), differentiable(args[3])
    needs = (0 in argnums, 1 in argnums)

    def vjp(g: Array) -> tuple[Array, ...]:
        cts = CHOLESKY_SOLVE.vjp(la, res, conj(g), needs, upper=args[2])
        return tuple(conj(cts[i]) for i in argnums)

    return vjp


defjvp_argnums(factor_solve, _factor_solve_jvp)
defvjp_argnums(factor_solve, _factor_solve_vjp)


def _solve_with_lu(lu: Array, pivots: Array, b: Array, trans: str, la: Linalg) -> Array:
    """``op(A)^-1 b`` from ``A = P L U`` given by its factor alone (``A`` unknown):
    differentiable in ``lu`` and ``b`` through its triangular solves and interchanges."""
    if trans == "N":  # x = U^-1 L^-1 P^T b
        y = triangular(lu, permute(b, pivots, False, la), False, "N", True, la)
        return triangular(lu, y, True, "N", False, la)
    # op(A) = op(U) op(L) P^T:  x = P op(L)^-1 op(U)^-1 b
    y = triangular(lu, b, True, trans, False, la)
    y = triangular(lu, y, False, trans, True, la)
    return permute(y, pivots, True, la)


# -- Linalgs: recording the forward, and the differentiable one ------------------------

#: The kernels whose results a forward run records and higher orders replay: those
#: that a rule's ``primal`` calls (the others are never called there on these Linalgs).
RECORDED = (
    "lu_factor",
    "inv",
    "solve",
    "solve_triangular",
    "slogdet",
    "det",
    "cholesky",
    "cholesky_solve",
)

Tape = dict[str, list[Any]]


def recording(la: Linalg, tape: Tape) -> Linalg:
    """``la``, appending the result of each call of a :data:`RECORDED` kernel to ``tape``."""

    def record(name: str) -> Callable[..., Any]:
        kernel = getattr(la, name)

        def run(*args: Any) -> Any:
            out = kernel(*args)
            tape.setdefault(name, []).append(out)
            return out

        return run

    return dataclasses.replace(la, **{name: record(name) for name in RECORDED})


def replaying(la: Linalg, recorded: dict[str, Iterator[Any]]) -> Linalg:
    """:data:`NAMESPACE` and the kernel primitives over ``la``'s kernels.

    Each call of a :data:`RECORDED` kernel takes the next result of that
    kernel from ``recorded`` (a forward run's tape, on the same values) while
    there is one, else computes it.
    """

    def replayed(name: str) -> Any:
        tape = recorded.get(name)
        return None if tape is None else next(tape, None)

    def lu_factor(a: Array) -> tuple[Factor, Array]:
        factor, info = replayed("lu_factor") or la.lu_factor(getval(a))
        return Factor(a, factored(a, factor.lu, factor.pivots, la), factor.pivots), info

    def solve_with(factor: Factor, b: Array, trans: str) -> Array:
        if factor.a is not None:  # A's own factor: differentiable in A, by the solve rule
            lu = None if factor.lu is None else getval(factor.lu)
            return lu_solve(factor.a, b, lu, factor.pivots, trans, la)
        if not (isbox(factor.lu) or isbox(b)):
            return la.lu_solve(factor, b, trans)
        return _solve_with_lu(factor.lu, factor.pivots, b, trans, la)

    def inv(a: Array) -> tuple[Array, Array]:
        value, info = replayed("inv") or la.inv(getval(a))
        return inverse(a, la, value), info

    def solve(a: Array, b: Array, trans: str) -> tuple[Factor, Array, Array]:
        factor, x, info = replayed("solve") or la.solve(getval(a), getval(b), trans)
        x = lu_solve(a, b, factor.lu, factor.pivots, trans, la, x)
        return Factor(a, factor.lu, factor.pivots), x, info

    def solve_triangular(t: Array, b: Array, upper: bool, trans: str, unit: bool) -> Array:
        return triangular(t, b, upper, trans, unit, la, replayed("solve_triangular"))

    def permute_rows(pivots: Array, x: Array, inverse: bool) -> Array:
        return permute(x, pivots, inverse, la)

    def slogdet(a: Array) -> tuple[Factor, Array, Array, Array]:
        factor, sign, logabsdet, info = replayed("slogdet") or la.slogdet(getval(a))
        pair = log_determinant(a, (sign, logabsdet), factor.lu, factor.pivots, la)
        return Factor(a, factor.lu, factor.pivots), pair[0], pair[1], info

    def det(a: Array) -> tuple[Factor, Array, Array]:
        factor, value, info = replayed("det") or la.det(getval(a))
        if factor.lu is None:  # a fused kernel kept no factor: factor now, for the derivative
            factor, _ = la.lu_factor(getval(a))
        value = determinant(a, value, factor.lu, factor.pivots, la)
        return Factor(a, factor.lu, factor.pivots), value, info

    def factored_det(a: Array, factor: Factor) -> Array:
        lu = getval(factor.lu)
        value = la.factored_det(getval(a), Factor(None, lu, factor.pivots))
        return determinant(a, value, lu, factor.pivots, la)

    def cholesky(a: Array, upper: bool) -> tuple[Array, Array]:
        c, info = replayed("cholesky") or la.cholesky(getval(a), upper)
        return cholesky_factor(a, c, upper, la), info

    def cholesky_solve(factor: CholeskyFactor, b: Array) -> Array:
        known = replayed("cholesky_solve")
        if factor.a is None:  # the user's factor: differentiable in it, by cholesky_solve's rule
            return factor_solve(factor.c, b, factor.upper, la, known)
        # A's own factor (solve with assume_a="pos"): differentiable in A, by the solve rule.
        c = getval(factor.c)
        lower = np.conj(np.swapaxes(c, -1, -2)) if factor.upper else c
        return positive_solve(factor.a, b, lower, la, known)

    def if_any(mask: Array, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        return then() if np.any(getval(mask)) else otherwise()

    return Linalg(
        xp=NAMESPACE,
        lu_factor=lu_factor,
        lu_solve=solve_with,
        inv=inv,
        solve=solve,
        solve_triangular=solve_triangular,
        permute_rows=permute_rows,
        slogdet=slogdet,
        det=det,
        cholesky=cholesky,
        cholesky_solve=cholesky_solve,
        if_any=if_any,
        pivot_base=la.pivot_base,
        constant=getval,  # a value without its box: no derivative flows through it
        factored_det=factored_det,
    )


@functools.cache
def differentiable(la: Linalg) -> Linalg:
    """The Linalg the rules' derivatives run on: ``la``'s kernels, traceable by autograd."""
    return replaying(la, {})
