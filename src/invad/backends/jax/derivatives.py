"""``ops.jvp`` and ``ops.vjp`` on JAX: the input checks eagerly, then one jitted program.

Run eagerly, a rule's derivative is dozens of small JAX operations, each dispatched
(and, at a new shape, compiled) on its own; jitted, it is one program, compiled once
per shape and parameter combination and dispatched once per call. Same checks,
arguments and results as the generic :class:`~invad.ops.Ops` path
(:func:`~invad.ops.jvp_of_primal`, :func:`~invad.ops.vjp_of_primal`): JAX never
raises on a singular matrix, so nothing there needs a value read on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...backend import Derivatives
from ...ops import (
    accepted_cotangents,
    accepted_tangents,
    check_cotangents,
    check_inputs,
    check_primals,
    check_tangents,
    jvp_of_primal,
    vjp_of_primal,
)
from ...rules import Linalg, Rule
from . import _state as state
from .op import _static

if TYPE_CHECKING:
    from .backend import JaxBackend


def jitted_derivatives(backend: JaxBackend, rule: Rule, la: Linalg) -> Derivatives:
    """``ops.jvp`` and ``ops.vjp`` of ``rule``, each jitted per static parameter combination."""
    _register_number()
    programs: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def checked(primals: tuple[Any, ...], params: dict[str, Any]) -> tuple[Any, ...]:
        check_primals(rule, primals)
        primals = backend.accept(rule.name, rule.contract.inputs, primals)
        check_inputs(rule, la, backend, primals, params)
        return primals

    def program(body: Callable[..., Any], params: dict[str, Any]) -> Callable[..., Any]:
        """``body`` jitted for these parameters, which it takes as static values."""
        static = {k: _static(v) for k, v in params.items()}
        key = (body.__name__, *sorted(static.items()))
        fn = programs.get(key)
        if fn is None:
            fn = programs[key] = state.jax.jit(lambda *args: body(*args, static))
        return fn

    def jvp_program(primals: Any, tangents: Any, params: dict[str, Any]) -> Any:
        return jvp_of_primal(rule, la, rule.primal(la, *primals, **params), tangents, params)

    def vjp_program(primals: Any, cotangents: Any, params: dict[str, Any]) -> Any:
        primal = rule.primal(la, *primals, **params)
        fitted = check_cotangents(rule, la.xp, rule.values(primal), cotangents, _number, (_Number,))
        return vjp_of_primal(rule, la, primals, primal, fitted, params)

    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...], params: dict[str, Any]) -> Any:
        primals = checked(tuple(primals), params)
        tangents = accepted_tangents(rule, backend, tangents)
        tangents = tuple(check_tangents(rule, la.xp, primals, tangents))
        return program(jvp_program, params)(primals, tangents)

    def vjp(primals: tuple[Any, ...], cotangents: Any, params: dict[str, Any]) -> Any:
        primals = checked(tuple(primals), params)
        cotangents = accepted_cotangents(rule, backend, cotangents)
        return program(vjp_program, params)(primals, _numbers_marked(cotangents))

    return Derivatives(jvp, vjp)


class _Number:
    """A Python number given as a cotangent (of a 0-d output), on its way through ``jit``:
    a pytree node whose one leaf is the number as a NumPy scalar. Inside the program it
    becomes an array of the output's dtype, as on the eager path, without a compilation
    per value (static data would be) or a weakly typed argument (the bare number)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


@functools.cache  # once: on the first install, when jax is loaded
def _register_number() -> None:
    state.jax.tree_util.register_pytree_node(
        _Number, lambda n: ((n.value,), None), lambda _, leaves: _Number(leaves[0])
    )


def _numbers_marked(cotangents: Any) -> Any:
    if isinstance(cotangents, complex):
        return _Number(np.asarray(cotangents))
    if isinstance(cotangents, (int, float)):  # int and float alike: one program for both
        return _Number(np.asarray(float(cotangents)))
    if isinstance(cotangents, (tuple, list)):
        return type(cotangents)(_numbers_marked(ct) for ct in cotangents)
    return cotangents


def _number(ct: _Number, like: Any) -> Any:
    return ct.value.astype(like.dtype)
