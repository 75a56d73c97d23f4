"""The user-facing op: checks, then a jitted ``jax.custom_jvp`` built from the rule.

One ``custom_jvp`` per combination of the op's static parameters (``left``,
``ind``, ``axes``, ``upper``, ...):

- its primal is ``rule.primal``, returning ``rule.result`` (one array, or a
  tuple for ``lu_factor``'s ``(LU, pivots)``, ``slogdet``'s ``(sign,
  logabsdet)`` and the ``_ex`` ops' trailing ``info``);
- its JVP rule runs ``rule.primal`` and ``rule.jvp``. Integer inputs
  (``lu_solve``'s pivots) get JAX's ``float0`` symbolic-zero tangents and pass
  ``None`` to the rule; integer outputs (pivots, ``info``) and outputs whose
  tangent the rule leaves ``None`` (a real ``slogdet``'s sign) get symbolic
  zeros of their tangent type. The rules' linearizations are linear in the
  tangents and built from operations JAX can transpose (matmuls, triangular
  solves, row gathers, the LU solve, ``lax.cond``), so JAX derives reverse mode
  itself, in its own convention (the linear transpose), and every higher
  order by differentiating the JVP rule again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...ops import _check_same_device, op_docstring
from ...rules import Linalg, Rule
from . import _state as state

if TYPE_CHECKING:
    from .backend import JaxBackend


def native_op(backend: JaxBackend, rule: Rule, la: Linalg) -> Callable[..., Any]:
    """The op as users call it: checks, then the jitted ``custom_jvp`` for its parameters."""
    name, check, check_values, xp = rule.name, rule.check, rule.check_values, la.xp
    inputs = rule.contract.inputs
    n_inputs = len(inputs)
    param_names = tuple(p.name for p in rule.contract.params)
    defaults = {p.name: p.default for p in rule.contract.params}
    cache: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n_inputs or not kwargs.keys() <= defaults.keys():
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in inputs)
            kwargs = bound.arguments
        args = backend.accept(name, inputs, args)
        params = {**defaults, **kwargs}
        check(xp, name, *args, **params)
        if n_inputs > 1:
            _check_same_device(backend, name, args, inputs)
        if check_values is not None and backend.readable(args):
            check_values(la, name, *args, **params)
        key = tuple(_static(params[p]) for p in param_names)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = _custom_jvp_op(rule, la, dict(zip(param_names, key)))
        return fn(*args)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op


def _static(value: Any) -> Any:
    """A parameter as a hashable static value (``axes`` may come as a list)."""
    return tuple(value) if isinstance(value, list) else value


def _custom_jvp_op(rule: Rule, la: Linalg, params: dict[str, Any]) -> Callable[..., Any]:
    """``rule`` for fixed ``params`` as a jitted ``jax.custom_jvp`` function of the inputs."""
    jax = state.jax
    from jax.custom_derivatives import SymbolicZero, zero_from_primal

    primal, linearization = rule.primal, rule.jvp
    integer, differentiable = rule.integer, rule.differentiable
    several = rule.multi or rule.returns_info

    def fn(*inputs: Any) -> Any:
        return rule.result(primal(la, *inputs, **params))

    def output_tangent(value: Any, tangent: Any, diff: bool) -> Any:
        if not diff or tangent is None:
            # A symbolic zero of the output's tangent type (float0 for integers, varying
            # over the mesh axes that the output varies over inside jax.shard_map).
            return zero_from_primal(value, symbolic_zeros=True)
        return tangent if tangent.dtype == value.dtype else tangent.astype(value.dtype)

    def fn_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        p = primal(la, *primals, **params)
        nonzero = tuple(
            None if is_int or type(t) is SymbolicZero else t for t, is_int in zip(tangents, integer)
        )
        out = linearization(la, p.residuals, nonzero, **params)
        values = rule.values(p)
        douts = tuple(
            output_tangent(v, d, diff)
            for v, d, diff in zip(values, out if rule.multi else (out,), differentiable)
        )
        if rule.returns_info:
            douts = (*douts, zero_from_primal(p.info, symbolic_zeros=True))
        return rule.result(p), douts if several else douts[0]

    fn.__name__ = fn.__qualname__ = f"invad_{rule.name}"
    custom = jax.custom_jvp(fn)
    custom.defjvp(fn_jvp, symbolic_zeros=True)
    return jax.jit(custom)
