"""Ops: one backend's installed ops, built once from the rules at install time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .backend import Backend
from .rules import RULES, Linalg, Primal, Rule

Array = Any


class Ops:
    """The ops of one backend and device, as ``invad.install`` returns them.

    Every op is resolved here, once: calling ``ops.solve`` goes straight to
    the rule and the backend's kernels (or to the framework's native AD
    wrapper), with no plugin lookup on the way.
    """

    inv: Callable[..., Array]
    inv_ex: Callable[..., tuple[Array, Array]]
    solve: Callable[..., Array]
    solve_ex: Callable[..., tuple[Array, Array]]
    tensorinv: Callable[..., Array]
    tensorsolve: Callable[..., Array]

    def __init__(self, backend: Backend, device: Any) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.device: Any = device
        self.xp: Any = backend.namespace()
        self.la = Linalg.build(self.xp, backend.kernels(device))
        for rule in RULES.values():
            functional = _functional_op(rule, self.la, backend)
            native = backend.native_op(rule, self.la, functional)
            setattr(self, rule.name, native if native is not None else functional)

    def __repr__(self) -> str:
        return f"<invad.Ops backend={self.name!r} device={self.device!r}>"

    def _rule(self, op: str) -> Rule:
        try:
            return RULES[op]
        except KeyError:
            raise ValueError(f"invad: unknown op {op!r}; ops are {', '.join(RULES)}") from None

    def _primal(self, rule: Rule, primals: Sequence[Array], params: dict[str, Any]) -> Any:
        primals = tuple(primals)
        if len(primals) != len(rule.contract.inputs):
            raise TypeError(
                f"invad.{rule.name}: expected {len(rule.contract.inputs)} primals "
                f"({', '.join(rule.contract.inputs)}), got {len(primals)}"
            )
        primals = self.backend.accept(rule.name, rule.contract.inputs, primals)
        return checked_primal(rule, self.la, self.backend, primals, params)

    def jvp(
        self, op: str, primals: Sequence[Array], tangents: Sequence[Array | None], **params: Any
    ) -> tuple[Any, Any]:
        """Outputs of ``op`` at ``primals`` and their tangents along ``tangents``.

        ``tangents`` is a tuple in the op's input order (``None`` for zero).
        For the ``_ex`` ops both results are pairs ``(value, info)``, with
        ``None`` for the tangent of ``info``.
        """
        rule = self._rule(op)
        primals = tuple(primals)
        with self.backend.on_device_of(primals[0] if primals else None):
            return self._jvp(rule, primals, tuple(tangents), params)

    def _jvp(
        self, rule: Rule, primals: tuple[Array, ...], tangents: tuple[Any, ...], params: Any
    ) -> tuple[Any, Any]:
        op = rule.name
        primal = self._primal(rule, primals, params)
        for name, x, t in zip(rule.contract.inputs, primals, tangents):
            if t is not None and tuple(t.shape) != tuple(x.shape):
                raise ValueError(
                    f"invad.{op}: the tangent of `{name}` has shape {tuple(t.shape)}, "
                    f"expected {tuple(x.shape)}"
                )
        dvalue = rule.jvp(self.la, primal.residuals, tangents, **params)
        if dvalue is None:
            dvalue = self.xp.zeros_like(primal.value)
        if rule.returns_info:
            return (primal.value, primal.info), (dvalue, None)
        return primal.value, dvalue

    def vjp(
        self, op: str, primals: Sequence[Array], cotangents: Any, **params: Any
    ) -> tuple[Any, tuple[Array, ...]]:
        """Outputs of ``op`` at ``primals`` and the input cotangents of ``cotangents``.

        ``cotangents`` has the shape of the op's result (a pair
        ``(value, None)`` for the ``_ex`` ops). The input cotangents are a
        tuple in input order, in the adjoint convention ``Re tr(X^H Y)``.
        """
        rule = self._rule(op)
        primals = tuple(primals)
        with self.backend.on_device_of(primals[0] if primals else None):
            return self._vjp(rule, primals, cotangents, params)

    def _vjp(
        self, rule: Rule, primals: tuple[Array, ...], cotangents: Any, params: Any
    ) -> tuple[Any, tuple[Array, ...]]:
        op = rule.name
        primal = self._primal(rule, primals, params)
        ct = cotangents[0] if rule.returns_info else cotangents
        if tuple(ct.shape) != tuple(primal.value.shape):
            raise ValueError(
                f"invad.{op}: the cotangent has shape {tuple(ct.shape)}, expected "
                f"{tuple(primal.value.shape)}"
            )
        needs = (True,) * len(rule.contract.inputs)
        cts = rule.vjp(self.la, primal.residuals, ct, needs, **params)
        outputs = (primal.value, primal.info) if rule.returns_info else primal.value
        return outputs, tuple(cts)


def _check_same_device(backend: Backend, op: str, arrays: Sequence[Array]) -> None:
    if len(arrays) < 2:
        return
    first = backend.device_of(arrays[0])
    for arg, x in zip(("b",), arrays[1:]):
        other = backend.device_of(x)
        if first is None or other is None:  # not known (a JAX tracer): nothing to check
            continue
        if other != first:
            raise ValueError(
                f"invad.{op}: `a` is on device {first} but `{arg}` is on device {other}"
            )


def checked_primal(
    rule: Rule, la: Linalg, backend: Backend, args: Sequence[Array], params: dict[str, Any]
) -> Primal:
    """Check the input, run the primal, and raise on a singular matrix unless ``_ex``."""
    rule.check(la.xp, rule.name, *args, **params)
    _check_same_device(backend, rule.name, args)
    primal = rule.primal(la, *args, **params)
    if not rule.returns_info:
        backend.raise_if_singular(rule.name, tuple(args[0].shape), primal.info)
    return primal


def _functional_op(rule: Rule, la: Linalg, backend: Backend) -> Callable[..., Any]:
    """The plain op: :func:`checked_primal`, returning the value (and ``info`` for ``_ex``)."""
    name, inputs = rule.name, rule.contract.inputs
    n_inputs = len(inputs)
    accept = backend.accept

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n_inputs:  # inputs passed by keyword: the slow, general path
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in inputs)
            kwargs = bound.arguments
        result = checked_primal(rule, la, backend, accept(name, inputs, args), kwargs)
        return (result.value, result.info) if rule.returns_info else result.value

    op.__name__ = op.__qualname__ = rule.name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op


def op_docstring(rule: Rule) -> str:
    c = rule.contract
    return (
        f"{c.summary}\n\n"
        f"Forward: {c.forward}\n"
        f"Linearization: {c.linearization}\n"
        f"Adjoint: {c.adjoint}\n\n"
        f"Shapes: {c.shapes}\n"
        f"Singular input: {c.singular}\n"
    )
