"""invad's rules as autograd primitives, differentiable to any order.

How it fits together
--------------------
Each op is one autograd primitive. Its value comes from the rule's
``primal``, run once on the plain NumPy arrays inside the boxes; its
derivatives are the rule's ``jvp`` (``defjvp``) and ``vjp`` (``defvjp``).
The primitive's output is the op's differentiable outputs: one array, or a
tuple for ``slogdet``'s ``(sign, logabsdet)``. What is not differentiable
(``lu_factor``'s pivots, the ``info`` of the ``_ex`` ops) is handed back as
plain integer arrays beside it, and integer inputs (``lu_solve``'s pivots)
are never traced.

autograd differentiates a derivative again (``hessian``, ``grad`` of
``grad``, ``make_jvp`` of ``grad``, ...) only if it is built from operations
autograd can trace. So the rules' ``jvp`` and ``vjp`` run on a
:class:`~invad.rules.Linalg` (see :func:`differentiable`) made of:

- :data:`NAMESPACE`, the array-API functions the rules call, as
  autograd.numpy functions;
- kernel primitives, each computed by the backend's own kernel and
  differentiated by one of invad's rules on the same Linalg, so that every
  order is differentiable and the rules stay the only place with derivative
  formulas:

  ============================  ==============================================
  kernel                        primitive, differentiated by the rule
  ============================  ==============================================
  ``lu_solve`` (A's factor)     :func:`lu_solve`, ``solve`` (in ``A``, ``b``)
  ``inv``                       :func:`inverse`, ``inv``
  ``solve_triangular``          :func:`triangular`, ``solve_triangular``
  ``permute_rows``              :func:`permute`, linear (its own transpose)
  ``lu_factor``                 :func:`factored`, ``lu_factor`` (the ``LU``)
  ``det``, ``slogdet``          :func:`determinant`, :func:`log_determinant`
  ============================  ==============================================

  A solve with a factor alone (``lu_solve``'s, whose ``A`` is not known) is
  two :func:`triangular` solves and a :func:`permute`.

Residuals
---------
At first order (inputs not boxed) the residuals of the forward run are used
as they are: the VJP of ``solve`` reuses the forward LU factorization. At
higher order they must be differentiable functions of the boxed inputs, so
the rule's ``primal`` runs again on the boxes with the differentiable Linalg,
whose kernels replay the results recorded in the forward run: nothing is
factored again.

Convention
----------
The rules' VJP is the adjoint under ``Re tr(X^H Y)``; autograd's is the
linear transpose, like JAX's (``grad`` of ``|z|^2`` is ``2 conj(z)``):
``autograd_vjp(g) = conj(adjoint_vjp(conj(g)))``. Real arrays pass unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, NamedTuple

import array_api_compat.numpy
import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defjvp_argnums, defvjp, defvjp_argnums, primitive
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.tracer import getval, isbox

from invad.backend import Backend
from invad.ops import checked_primal, op_docstring
from invad.rules import RULES, ArrayMeta, Factor, Linalg, Primal, Rule

#: array_api_compat's NumPy namespace (its functions are made at import: typed as Any).
npx: Any = array_api_compat.numpy

__all__ = [
    "NAMESPACE",
    "determinant",
    "differentiable",
    "factored",
    "getval",
    "inverse",
    "log_determinant",
    "lu_solve",
    "native_op",
    "permute",
    "triangular",
]

Array = Any
SOLVE = RULES["solve"]
INV = RULES["inv"]
LU_FACTOR = RULES["lu_factor"]
SOLVE_TRIANGULAR = RULES["solve_triangular"]
DET = RULES["det"]
SLOGDET = RULES["slogdet"]

# autograd's boxes answer `shape`, `ndim` and `dtype` as the array API says, but not
# `device`, which invad's rules read to create arrays next to their inputs (an identity
# matrix beside `a`). A boxed array is a NumPy array, on the CPU. (Only where autograd
# has no `device` of its own.)
if not hasattr(ArrayBox, "device"):
    ArrayBox.device = property(lambda self: "cpu")


def _is_complex(x: Array) -> bool:
    return np.dtype(x.dtype).kind == "c"


def _conj(x: Array | None) -> Array | None:
    """Complex conjugate, differentiable; real arrays and ``None`` unchanged."""
    return anp.conj(x) if x is not None and _is_complex(x) else x


def _zeros_like(x: Array) -> Array:
    """A zero tangent or cotangent for ``x`` (a plain array, whatever boxes ``x``)."""
    value = getval(x)
    return np.zeros(np.shape(value), dtype=np.result_type(value))


def _sum_to(x: Array, shape: tuple[int, ...]) -> Array:
    """``x`` summed over the axes that broadcasting added to reach it from ``shape``."""
    lead = anp.ndim(x) - len(shape)
    if lead:
        x = anp.sum(x, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and anp.shape(x)[i] != 1)
    return anp.sum(x, axis=stretched, keepdims=True) if stretched else x


# -- the array namespace the rules see -------------------------------------------


@primitive
def astype(x: Array, dtype: Any) -> Array:
    """``x`` cast to ``dtype``; a cast from complex to real keeps the real part.

    (``autograd.numpy.astype`` has a VJP but no JVP, and warns on complex to real.)
    """
    if np.iscomplexobj(x) and np.dtype(dtype).kind != "c":
        x = x.real
    return x.astype(dtype)


defvjp(astype, lambda ans, x, dtype: lambda g: astype(g, x.dtype))
defjvp(astype, lambda g, ans, x, dtype: astype(g, dtype))


def _matrix_transpose(x: Array) -> Array:
    return anp.swapaxes(x, -1, -2)


def _diagonal(x: Array) -> Array:
    """The main diagonal of the last two axes, ``(..., min(m, n))``.

    autograd's VJP of ``diagonal`` (``make_diagonal``) takes only ``axis1=-1,
    axis2=-2``, on a square block: the diagonal read there is the same.
    """
    m, n = anp.shape(x)[-2:]
    if m != n:
        k = min(m, n)
        x = x[..., :k, :k]
    return anp.diagonal(x, axis1=-1, axis2=-2)


def _concat(arrays: Any, axis: int = 0) -> Array:
    return anp.concatenate(arrays, axis=axis)


#: Exactly the array-API functions that invad's rules call from their ``primal``,
#: ``jvp`` and ``vjp`` (besides the operators ``@``, ``-``, comparisons and indexing,
#: which autograd's boxes provide), as functions autograd can differentiate. Dtype
#: queries take dtypes, and functions that create arrays from shapes or that only
#: read integer or boolean values (``any``, ``min``, ``zeros_like``) need no derivative.
NAMESPACE = SimpleNamespace(
    # differentiable
    astype=astype,
    concat=_concat,
    conj=anp.conj,
    matrix_transpose=_matrix_transpose,
    permute_dims=anp.transpose,
    prod=anp.prod,
    real=anp.real,
    reshape=anp.reshape,
    sum=anp.sum,
    tril=anp.tril,
    triu=anp.triu,
    where=anp.where,
    linalg=SimpleNamespace(diagonal=_diagonal),
    # no derivative
    any=anp.any,
    min=anp.min,
    ones_like=anp.ones_like,
    zeros_like=anp.zeros_like,
    arange=npx.arange,
    asarray=npx.asarray,
    eye=npx.eye,
    ones=npx.ones,
    zeros=npx.zeros,
    int32=np.int32,
    int64=np.int64,
    isdtype=npx.isdtype,
    result_type=np.result_type,
)

# -- kernel primitives ---------------------------------------------------------------

_FLIP: dict[str, Callable[[Array], Array]] = {
    "N": lambda x: x,
    "T": _matrix_transpose,
    "H": lambda x: _conj(_matrix_transpose(x)),
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
        abar, bbar = SOLVE.vjp(la, res, flip(_conj(g)), needs, left=left)
        cts = (abar, None if bbar is None else flip(bbar))
        return tuple(_conj(cts[i]) for i in argnums)

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
    return lambda g: (_conj(INV.vjp(la, res, _conj(g), (True,))[0]),)


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
        tbar, bbar = SOLVE_TRIANGULAR.vjp(la, res, flip(_conj(g)), needs, **params)
        cts = (tbar, None if bbar is None else flip(bbar))
        return tuple(_conj(cts[i]) for i in argnums)

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
        lambda g: _sum_to(permute(g, pivots, not inverse, la), tuple(anp.shape(x)))
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
        (abar,) = LU_FACTOR.vjp(differentiable(la), res, (_conj(g), None), (True,))
        return _conj(abar)

    return vjp


def _factored_jvp(g: Array, ans: Array, a: Array, lu: Array, pivots: Array, la: Linalg) -> Array:
    return LU_FACTOR.jvp(differentiable(la), LU_FACTOR.residuals(ans, pivots), (g,))[0]


defjvp(factored, _factored_jvp)
defvjp(factored, _factored_vjp)


@primitive
def determinant(a: Array, value: Array, la: Linalg) -> Array:
    """``det(a)`` (computed already: ``value``) as a function of ``a``: differentiable by
    the det rule, which factors ``a`` again (differentiably) only where ``det(a) == 0``."""
    return value


def _det_vjp(ans: Array, a: Array, value: Array, la: Linalg) -> Any:
    res = DET.residuals(a, None, None, ans)
    return lambda g: _conj(DET.vjp(differentiable(la), res, _conj(g), (True,))[0])


def _det_jvp(g: Array, ans: Array, a: Array, value: Array, la: Linalg) -> Array:
    return DET.jvp(differentiable(la), DET.residuals(a, None, None, ans), (g,))


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
    return (_zeros_like(ans[0]) if dsign is None else dsign, dlog)


def _slogdet_vjp(ans: Any, a: Array, value: Any, lu: Array, pivots: Array, la: Linalg) -> Any:
    res = _slogdet_residuals(a, ans, lu, pivots)

    def vjp(g: Any) -> Array:
        cts = (_conj(g[0]), _conj(g[1]))
        (abar,) = SLOGDET.vjp(differentiable(la), res, cts, (True,))
        return _zeros_like(a) if abar is None else _conj(abar)

    return vjp


defjvp(log_determinant, _slogdet_jvp)
defvjp(log_determinant, _slogdet_vjp)


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
RECORDED = ("lu_factor", "inv", "solve", "solve_triangular", "slogdet", "det")

Tape = dict[str, list[Any]]


def _recording(la: Linalg, tape: Tape) -> Linalg:
    """``la``, appending the result of each call of a :data:`RECORDED` kernel to ``tape``."""

    def record(name: str) -> Callable[..., Any]:
        kernel = getattr(la, name)

        def run(*args: Any) -> Any:
            out = kernel(*args)
            tape.setdefault(name, []).append(out)
            return out

        return run

    return dataclasses.replace(la, **{name: record(name) for name in RECORDED})


def _traceable(la: Linalg, recorded: dict[str, Iterator[Any]]) -> Linalg:
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
        _, value, info = replayed("det") or la.det(getval(a))
        # No factor: where det(a) == 0 the det rule factors a again, differentiably.
        return Factor(a, None, None), determinant(a, value, la), info

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
        if_any=if_any,
        pivot_base=la.pivot_base,
    )


@functools.cache
def differentiable(la: Linalg) -> Linalg:
    """The Linalg the rules' derivatives run on: ``la``'s kernels, traceable by autograd."""
    return _traceable(la, {})


# -- the ops ---------------------------------------------------------------------------


class _Forward(NamedTuple):
    """What an op's forward run hands its derivatives: the primal and the kernel tape."""

    primal: Primal
    tape: Tape


def native_op(rule: Rule, la: Linalg, backend: Backend) -> Callable[..., Any]:
    """``rule`` as an autograd primitive over ``la``'s kernels.

    The primitive's value is the op's differentiable outputs: one array, or a
    tuple of them when there are several (``slogdet``). The op returns them
    with its other outputs (pivots, ``info``) as plain arrays, in the op's order.
    """
    names, integer = rule.contract.inputs, rule.integer
    n = len(names)
    diffs = tuple(k for k, d in enumerate(rule.differentiable) if d)
    several = len(diffs) > 1
    traceable = differentiable(la)

    def residuals(inputs: tuple[Array, ...], forward: _Forward, params: dict[str, Any]) -> Any:
        if any(isbox(x) for x in inputs):  # higher order: rebuild them differentiably
            tape = {name: iter(results) for name, results in forward.tape.items()}
            return rule.primal(_traceable(la, tape), *inputs, **params).residuals
        return forward.primal.residuals

    @primitive
    def value(*args: Any, **params: Any) -> Any:  # args: the inputs, then the _Forward
        values = rule.values(args[n].primal)
        return tuple(values[k] for k in diffs) if several else values[diffs[0]]

    def jvp(argnums: tuple[int, ...], gs: Any, ans: Any, args: Any, params: Any) -> Any:
        res = residuals(args[:n], args[n], params)
        tangents: list[Array | None] = [None] * n
        for i, g in zip(argnums, gs):
            tangents[i] = g
        out = rule.jvp(traceable, res, tuple(tangents), **params)
        outs = out if rule.multi else (out,)
        if not several:
            return _zeros_like(ans) if outs[diffs[0]] is None else outs[diffs[0]]
        return tuple(
            _zeros_like(ans[j]) if outs[k] is None else outs[k] for j, k in enumerate(diffs)
        )

    def vjp(argnums: tuple[int, ...], ans: Any, args: Any, params: Any) -> Any:
        res = residuals(args[:n], args[n], params)
        needs = tuple(i in argnums for i in range(n))

        def pullback(g: Any) -> tuple[Array, ...]:
            if rule.multi:
                cts: list[Array | None] = [None] * len(rule.value_names)
                for j, k in enumerate(diffs):
                    cts[k] = _conj(g[j] if several else g)
                xbars = rule.vjp(traceable, res, tuple(cts), needs, **params)
            else:
                xbars = rule.vjp(traceable, res, _conj(g), needs, **params)
            return tuple(
                _zeros_like(args[i]) if xbars[i] is None else _conj(xbars[i]) for i in argnums
            )

        return pullback

    defjvp_argnums(value, jvp)
    defvjp_argnums(value, vjp)

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n:  # inputs passed by keyword: the slow, general path
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in names)
            kwargs = bound.arguments
        tape: Tape = {}
        plain = backend.accept(rule.name, names, tuple(getval(x) for x in args))
        primal = checked_primal(rule, _recording(la, tape), backend, plain, kwargs)
        # Boxes are traced; integer inputs (pivots) never are.
        traced = tuple(x if isbox(x) and not i else p for x, p, i in zip(args, plain, integer))
        out = value(*traced, _Forward(primal, tape), **kwargs)
        outs = list(rule.values(primal))
        for j, k in enumerate(diffs):
            outs[k] = out[j] if several else out
        result = tuple(outs) if rule.multi else outs[0]
        if rule.returns_info:
            return (*outs, primal.info)
        return result

    op.__name__ = op.__qualname__ = rule.name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op
