"""invad's rules as autograd primitives, differentiable to any order.

How it fits together
--------------------
Each op is one autograd primitive. Its value comes from the rule's
``primal``, run once on the plain NumPy arrays inside the boxes; its
derivatives are the rule's ``jvp`` (``defjvp``) and ``vjp`` (``defvjp``).

autograd differentiates a derivative again (``hessian``, ``grad`` of
``grad``, ``make_jvp`` of ``grad``, ...) only if it is built from operations
autograd can trace. So the rules' ``jvp`` and ``vjp`` run on a
:class:`~invad.rules.Linalg` (see :func:`differentiable`) made of:

- :data:`NAMESPACE`, the few array-API functions the rules call, as
  autograd.numpy functions;
- two kernel primitives, :func:`lu_solve` (``op(A)^-1 rhs`` with A's LU
  factors) and :func:`inverse`. Their own derivatives are again the ``solve``
  and ``inv`` rules on the same Linalg, so every order is differentiable and
  the rules stay the only place with derivative formulas.

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

import functools
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, NamedTuple

import array_api_compat.numpy as npx
import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defjvp_argnums, defvjp, defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from invad.backend import Backend
from invad.ops import checked_primal, op_docstring
from invad.rules import RULES, ArrayMeta, Factor, Linalg, Primal, Rule

__all__ = ["NAMESPACE", "differentiable", "getval", "inverse", "lu_solve", "native_op"]

Array = Any
SOLVE = RULES["solve"]
INV = RULES["inv"]


def _is_complex(x: Array) -> bool:
    return np.dtype(x.dtype).kind == "c"


def _conj(x: Array | None) -> Array | None:
    """Complex conjugate, differentiable; real arrays and ``None`` unchanged."""
    return anp.conj(x) if x is not None and _is_complex(x) else x


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


#: Exactly the array-API functions that invad's rules call from their ``primal``,
#: ``jvp`` and ``vjp`` (besides the operators ``@``, ``-`` and indexing, which
#: autograd's boxes provide), as functions autograd can differentiate. Dtype
#: queries take dtypes, not arrays, and need no derivative.
NAMESPACE = SimpleNamespace(
    astype=astype,
    conj=anp.conj,
    matrix_transpose=_matrix_transpose,
    permute_dims=anp.transpose,
    real=anp.real,
    reshape=anp.reshape,
    sum=anp.sum,
    isdtype=npx.isdtype,
    result_type=np.result_type,
)

# -- kernel primitives ---------------------------------------------------------------


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


_FLIP: dict[str, Callable[[Array], Array]] = {
    "N": lambda x: x,
    "T": _matrix_transpose,
    "H": lambda x: _conj(_matrix_transpose(x)),
}


def _as_solve_rule(args: tuple[Any, ...], x: Array) -> tuple[Any, bool, Callable[[Array], Array]]:
    """``x = op(A)^-1 rhs`` as a problem of the solve rule, and the map between the two.

    ``A x = rhs`` (N) is the left solve; ``x^T A = rhs^T`` (T) and
    ``x^H A = rhs^H`` (H) are right solves of the flipped ``x`` and ``rhs``.
    The flip is its own inverse and its own adjoint.
    """
    a, rhs, lu, pivots, trans = args[:5]
    flip = _FLIP[trans]
    return SOLVE.residuals(a, lu, pivots, ArrayMeta.of(flip(rhs)), flip(x)), trans == "N", flip


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

# -- Linalgs: recording the forward, and the differentiable one ------------------------


def _recording(la: Linalg, tape: list[Any]) -> Linalg:
    """``la``, appending the result of each kernel call to ``tape``."""

    def record(kernel: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            out = kernel(*args)
            tape.append(out)
            return out

        return run

    return Linalg(la.xp, record(la.lu_factor), la.lu_solve, record(la.inv), record(la.solve))


def _traceable(la: Linalg, recorded: Iterator[Any]) -> Linalg:
    """:data:`NAMESPACE` and the kernel primitives over ``la``'s kernels.

    Each kernel call takes the next result from ``recorded`` (a forward run's
    tape, on the same values) while there is one, else computes it.
    """

    def lu_factor(a: Array) -> tuple[Factor, Array]:
        factor, info = next(recorded, None) or la.lu_factor(getval(a))
        return Factor(a, factor.lu, factor.pivots), info

    def solve_with(factor: Factor, b: Array, trans: str) -> Array:
        return lu_solve(factor.a, b, factor.lu, factor.pivots, trans, la)

    def inv(a: Array) -> tuple[Array, Array]:
        value, info = next(recorded, None) or la.inv(getval(a))
        return inverse(a, la, value), info

    def solve(a: Array, b: Array, trans: str) -> tuple[Factor, Array, Array]:
        factor, x, info = next(recorded, None) or la.solve(getval(a), getval(b), trans)
        x = lu_solve(a, b, factor.lu, factor.pivots, trans, la, x)
        return Factor(a, factor.lu, factor.pivots), x, info

    return Linalg(NAMESPACE, lu_factor, solve_with, inv, solve)


@functools.cache
def differentiable(la: Linalg) -> Linalg:
    """The Linalg the rules' derivatives run on: ``la``'s kernels, traceable by autograd."""
    return _traceable(la, iter(()))


# -- the ops ---------------------------------------------------------------------------


class _Forward(NamedTuple):
    """What an op's forward run hands its derivatives: the primal and the kernel tape."""

    primal: Primal
    tape: tuple[Any, ...]


def native_op(rule: Rule, la: Linalg, backend: Backend) -> Callable[..., Any]:
    """``rule`` as an autograd primitive over ``la``'s kernels."""
    n = len(rule.contract.inputs)
    traceable = differentiable(la)

    def residuals(inputs: tuple[Array, ...], forward: _Forward, params: dict[str, Any]) -> Any:
        if any(isbox(x) for x in inputs):  # higher order: rebuild them differentiably
            return rule.primal(_traceable(la, iter(forward.tape)), *inputs, **params).residuals
        return forward.primal.residuals

    @primitive
    def value(*args: Any, **params: Any) -> Array:  # args: the inputs, then the _Forward
        return args[n].primal.value

    def jvp(argnums: tuple[int, ...], gs: Any, ans: Array, args: Any, params: Any) -> Array:
        res = residuals(args[:n], args[n], params)
        tangents: list[Array | None] = [None] * n
        for i, g in zip(argnums, gs):
            tangents[i] = g
        return rule.jvp(traceable, res, tuple(tangents), **params)

    def vjp(argnums: tuple[int, ...], ans: Array, args: Any, params: Any) -> Any:
        res = residuals(args[:n], args[n], params)
        needs = tuple(i in argnums for i in range(n))

        def pullback(g: Array) -> tuple[Array, ...]:
            cts = rule.vjp(traceable, res, _conj(g), needs, **params)
            return tuple(_conj(cts[i]) for i in argnums)

        return pullback

    defjvp_argnums(value, jvp)
    defvjp_argnums(value, vjp)

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n:  # inputs passed by keyword: the slow, general path
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in rule.contract.inputs)
            kwargs = bound.arguments
        tape: list[Any] = []
        plain = backend.accept(rule.name, rule.contract.inputs, tuple(getval(x) for x in args))
        primal = checked_primal(rule, _recording(la, tape), backend, plain, kwargs)
        out = value(*args, _Forward(primal, tuple(tape)), **kwargs)
        return (out, primal.info) if rule.returns_info else out

    op.__name__ = op.__qualname__ = rule.name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op
