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

- :data:`NAMESPACE` (:mod:`._namespace`), the array-API functions the rules
  call, as autograd.numpy functions;
- kernel primitives (:mod:`._kernels`), each computed by the backend's own
  kernel and differentiated by one of invad's rules on the same Linalg, so
  that every order is differentiable and the rules stay the only place with
  derivative formulas:

  ============================  ==============================================
  kernel                        primitive, differentiated by the rule
  ============================  ==============================================
  ``lu_solve`` (A's factor)     :func:`lu_solve`, ``solve`` (in ``A``, ``b``)
  ``inv``                       :func:`inverse`, ``inv``
  ``solve_triangular``          :func:`triangular`, ``solve_triangular``
  ``permute_rows``              :func:`permute`, linear (its own transpose)
  ``lu_factor``                 :func:`factored`, ``lu_factor`` (the ``LU``)
  ``det``, ``slogdet``          :func:`determinant`, :func:`log_determinant`
  ``cholesky``                  :func:`cholesky_factor`, ``cholesky``
  ``cholesky_solve`` (A's)      :func:`positive_solve`, ``solve`` with
                                ``assume_a="pos"`` (in ``A``, ``b``)
  ``cholesky_solve`` (factor)   :func:`factor_solve`, ``cholesky_solve``
  ============================  ==============================================

  A solve with an LU factor alone (``lu_solve``'s, whose ``A`` is not known)
  is two :func:`triangular` solves and a :func:`permute`.

Residuals
---------
At first order (inputs not boxed) the residuals of the forward run are used
as they are: the VJP of ``solve`` reuses the forward LU (or Cholesky)
factorization. At higher order they must be differentiable functions of the
boxed inputs, so the rule's ``primal`` runs again on the boxes with the
differentiable Linalg, whose kernels replay the results recorded in the
forward run: nothing is factored again.

The Cholesky family's Hermitian inputs (``cholesky``'s ``a``, ``solve``'s
with ``assume_a="pos"``) are differentiated as the rules say, at every
order: a tangent counts by its Hermitian part, a cotangent is Hermitian. A
primitive solving with ``A``'s Cholesky factor is differentiated in ``A``
by the solve rule (``assume_a="pos"``, whose residuals carry no pivots), as
one solving with its LU factor is by the general solve rule.

Convention
----------
The rules' VJP is the adjoint under ``Re tr(X^H Y)``; autograd's is the
linear transpose, like JAX's (``grad`` of ``|z|^2`` is ``2 conj(z)``):
``autograd_vjp(g) = conj(adjoint_vjp(conj(g)))``. Real arrays pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from autograd.extend import defjvp_argnums, defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from invad.backend import Backend
from invad.ops import checked_primal, op_docstring
from invad.rules import Linalg, Primal, Rule

from ._kernels import (
    Tape,
    cholesky_factor,
    determinant,
    differentiable,
    factor_solve,
    factored,
    inverse,
    log_determinant,
    lu_solve,
    permute,
    positive_solve,
    recording,
    replaying,
    triangular,
)
from ._namespace import NAMESPACE, Array, conj, zeros_like

__all__ = [
    "NAMESPACE",
    "cholesky_factor",
    "determinant",
    "differentiable",
    "factor_solve",
    "factored",
    "getval",
    "inverse",
    "log_determinant",
    "lu_solve",
    "native_op",
    "permute",
    "positive_solve",
    "triangular",
]

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
            return rule.primal(replaying(la, tape), *inputs, **params).residuals
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
            return zeros_like(ans) if outs[diffs[0]] is None else outs[diffs[0]]
        return tuple(
            zeros_like(ans[j]) if outs[k] is None else outs[k] for j, k in enumerate(diffs)
        )

    def vjp(argnums: tuple[int, ...], ans: Any, args: Any, params: Any) -> Any:
        res = residuals(args[:n], args[n], params)
        needs = tuple(i in argnums for i in range(n))

        def pullback(g: Any) -> tuple[Array, ...]:
            if rule.multi:
                cts: list[Array | None] = [None] * len(rule.value_names)
                for j, k in enumerate(diffs):
                    cts[k] = conj(g[j] if several else g)
                xbars = rule.vjp(traceable, res, tuple(cts), needs, **params)
            else:
                xbars = rule.vjp(traceable, res, conj(g), needs, **params)
            return tuple(
                zeros_like(args[i]) if xbars[i] is None else conj(xbars[i]) for i in argnums
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
        primal = checked_primal(rule, recording(la, tape), backend, plain, kwargs)
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
