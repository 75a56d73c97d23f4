"""Ops: one backend's installed ops, built once from the rules at install time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backend import Backend, Derivatives, type_name
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
    lu_factor: Callable[..., tuple[Array, Array]]
    lu_factor_ex: Callable[..., tuple[Array, Array, Array]]
    lu_solve: Callable[..., Array]
    solve_triangular: Callable[..., Array]
    det: Callable[..., Array]
    slogdet: Callable[..., tuple[Array, Array]]
    cholesky: Callable[..., Array]
    cholesky_ex: Callable[..., tuple[Array, Array]]
    cholesky_solve: Callable[..., Array]

    def __init__(self, backend: Backend, device: Any) -> None:
        self.backend = backend
        self.name: str = backend.name
        self.device: Any = device
        self.xp: Any = backend.namespace()
        self.la = Linalg.build(self.xp, backend.kernels(device))
        #: The backend's own ``jvp``/``vjp`` per op (:meth:`Backend.derivatives`), if any.
        self._derivatives: dict[str, Derivatives] = {}
        for rule in RULES.values():
            functional = _functional_op(rule, self.la, backend)
            native = backend.native_op(rule, self.la, functional)
            setattr(self, rule.name, native if native is not None else functional)
            own = backend.derivatives(rule, self.la)
            if own is not None:
                self._derivatives[rule.name] = own

    def __repr__(self) -> str:
        return f"<invad.Ops backend={self.name!r} device={self.device!r}>"

    def _rule(self, op: str) -> Rule:
        try:
            return RULES[op]
        except KeyError:
            raise ValueError(f"invad: unknown op {op!r}; ops are {', '.join(RULES)}") from None

    def _primal(self, rule: Rule, primals: Sequence[Array], params: dict[str, Any]) -> Any:
        primals = tuple(primals)
        check_primals(rule, primals)
        primals = self.backend.accept(rule.name, rule.contract.inputs, primals)
        return checked_primal(rule, self.la, self.backend, primals, params)

    def jvp(
        self, op: str, primals: Sequence[Array], tangents: Sequence[Array | None], **params: Any
    ) -> tuple[Any, Any]:
        """Outputs of ``op`` at ``primals`` and their tangents along ``tangents``.

        ``tangents`` is a tuple in the op's input order (``None`` for zero, and
        always for integer inputs such as ``pivots``). Both results have the
        shape of the op's result: for the ``_ex`` ops and the ops with several
        outputs a tuple, with ``None`` for the tangents of ``info`` and ``pivots``.
        """
        rule = self._rule(op)
        primals = tuple(primals)
        own = self._derivatives.get(op)
        if own is not None:
            return own.jvp(primals, tuple(tangents), params)
        with self.backend.on_device_of(primals[0] if primals else None):
            return self._jvp(rule, primals, tuple(tangents), params)

    def _jvp(
        self, rule: Rule, primals: tuple[Array, ...], tangents: tuple[Any, ...], params: Any
    ) -> tuple[Any, Any]:
        primal = self._primal(rule, primals, params)
        tangents = accepted_tangents(rule, self.backend, tangents)
        fitted = check_tangents(rule, self.xp, primals, tangents)
        return jvp_of_primal(rule, self.la, primal, tuple(fitted), params)

    def vjp(
        self, op: str, primals: Sequence[Array], cotangents: Any, **params: Any
    ) -> tuple[Any, tuple[Array, ...]]:
        """Outputs of ``op`` at ``primals`` and the input cotangents of ``cotangents``.

        ``cotangents`` has the shape of the op's result (a tuple, with ``None``
        for ``info`` and ``pivots``, for the ``_ex`` ops and the ops with several
        outputs; ``None`` for a zero cotangent). The input cotangents are a
        tuple in input order, in the adjoint convention ``Re tr(X^H Y)``;
        ``None`` for integer inputs.
        """
        rule = self._rule(op)
        primals = tuple(primals)
        own = self._derivatives.get(op)
        if own is not None:
            return own.vjp(primals, cotangents, params)
        with self.backend.on_device_of(primals[0] if primals else None):
            return self._vjp(rule, primals, cotangents, params)

    def _number(self, ct: Any, like: Array) -> Array:
        return self.xp.asarray(ct, dtype=like.dtype, device=self.backend.device_of(like))

    def _vjp(
        self, rule: Rule, primals: tuple[Array, ...], cotangents: Any, params: Any
    ) -> tuple[Any, tuple[Array, ...]]:
        primal = self._primal(rule, primals, params)
        cotangents = accepted_cotangents(rule, self.backend, cotangents)
        fitted = check_cotangents(rule, self.xp, rule.values(primal), cotangents, self._number)
        return vjp_of_primal(rule, self.la, primals, primal, fitted, params)


def jvp_of_primal(
    rule: Rule, la: Linalg, primal: Primal, tangents: tuple[Any, ...], params: Any
) -> tuple[Any, Any]:
    """What ``ops.jvp`` returns, from the op's checked primal and checked tangents."""
    out = rule.jvp(la, primal.residuals, tangents, **params)
    values = rule.values(primal)
    douts = out if rule.multi else (out,)
    douts = tuple(
        None if not diff else la.xp.zeros_like(v) if d is None else d
        for v, d, diff in zip(values, douts, rule.differentiable)
    )
    if rule.returns_info:
        return rule.result(primal), (*douts, None)
    return rule.result(primal), douts if rule.multi else douts[0]


def vjp_of_primal(
    rule: Rule,
    la: Linalg,
    primals: tuple[Array, ...],
    primal: Primal,
    fitted: Sequence[Any],
    params: Any,
) -> tuple[Any, tuple[Array, ...]]:
    """What ``ops.vjp`` returns, from the op's checked primal and the cotangents as
    :func:`check_cotangents` fits them."""
    needs = tuple(not integer for integer in rule.integer)
    if rule.multi:
        xbars = rule.vjp(la, primal.residuals, tuple(fitted), needs, **params)
    elif fitted[0] is None:
        xbars = (None,) * len(primals)
    else:
        xbars = rule.vjp(la, primal.residuals, fitted[0], needs, **params)
    xbars = tuple(
        None if integer else la.xp.zeros_like(x) if xb is None else xb
        for x, xb, integer in zip(primals, xbars, rule.integer)
    )
    return rule.result(primal), xbars


def check_primals(rule: Rule, primals: Sequence[Array]) -> None:
    """``ops.jvp``'s and ``ops.vjp``'s primals: one per input."""
    if len(primals) != len(rule.contract.inputs):
        raise TypeError(
            f"invad.{rule.name}: expected {len(rule.contract.inputs)} primals "
            f"({', '.join(rule.contract.inputs)}), got {len(primals)}"
        )


#: What ``ops.vjp`` takes as the cotangent of a 0-d output besides an array.
NUMBERS: tuple[type, ...] = (int, float, complex, np.generic)


def accepted_tangents(rule: Rule, backend: Backend, tangents: Sequence[Any]) -> tuple[Any, ...]:
    """``ops.jvp``'s tangents as the backend's arrays, converted as it converts the inputs
    (:meth:`Backend.accept`: NumPy takes lists, JAX NumPy arrays), or a ``TypeError`` that
    names the tangent; before :func:`check_tangents`."""
    given = tuple(tangents)
    names = rule.contract.inputs
    fitted = [_accepted(rule.name, backend, "tangent", n, t) for n, t in zip(names, given)]
    return (*fitted, *given[len(fitted) :])  # too many: check_tangents says so


def accepted_cotangents(rule: Rule, backend: Backend, cotangents: Any) -> Any:
    """``ops.vjp``'s cotangents as :func:`accepted_tangents` takes tangents, in the structure
    given (numbers for 0-d outputs kept: :func:`check_cotangents` makes them arrays)."""
    op, names = rule.name, rule.value_names
    if not (rule.returns_info or rule.multi):
        return _accepted(op, backend, "cotangent", names[0], cotangents)
    if not isinstance(cotangents, (tuple, list)):
        return cotangents  # check_cotangents says what is wrong with it
    given = tuple(cotangents)
    fitted = [_accepted(op, backend, "cotangent", n, ct) for n, ct in zip(names, given)]
    return (*fitted, *given[len(fitted) :])


def _accepted(op: str, backend: Backend, what: str, name: str, x: Any) -> Any:
    if x is None or (what == "cotangent" and isinstance(x, NUMBERS)):
        return x
    try:
        (x,) = backend.accept(op, (name,), (x,))
    except TypeError:
        raise TypeError(
            f"invad.{op}: the {what} of `{name}` is a {type_name(x)}; the {backend.name!r} "
            f"backend takes {backend.array_type}"
        ) from None
    return x


def check_tangents(
    rule: Rule, xp: Any, primals: Sequence[Array], tangents: Sequence[Any]
) -> list[Any]:
    """``ops.jvp``'s tangents: one per input, ``None`` for integer inputs, the inputs' shapes;
    returned in the inputs' dtypes (:func:`_fitted`)."""
    op = rule.name
    if len(tangents) != len(primals):
        raise TypeError(
            f"invad.{op}: expected {len(primals)} tangents "
            f"({', '.join(rule.contract.inputs)}), got {len(tangents)}"
        )
    fitted: list[Any] = []
    for name, x, t, integer in zip(rule.contract.inputs, primals, tangents, rule.integer):
        if t is None:
            fitted.append(None)
            continue
        if integer:
            raise ValueError(f"invad.{op}: `{name}` is an integer input; its tangent is None")
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(
                f"invad.{op}: the tangent of `{name}` has shape {tuple(t.shape)}, "
                f"expected {tuple(x.shape)}"
            )
        fitted.append(_fitted(xp, op, "tangent", name, t, x))
    floats = [x.dtype for x, integer in zip(primals, rule.integer) if not integer]
    if len(set(floats)) > 1:
        # Mixed inputs (a real matrix, a complex right-hand side) are computed in their
        # promoted dtype, and so are the tangents: torch's matmul does not mix dtypes.
        common = xp.result_type(*floats)
        fitted = [t if t is None or t.dtype == common else xp.astype(t, common) for t in fitted]
    return fitted


def _fitted(xp: Any, op: str, what: str, name: str, t: Array, like: Array) -> Array:
    """A tangent or cotangent ``t`` in the dtype of the array ``like`` it belongs to, as torch
    casts the gradients it is given. Not a complex one of a real array: a real function's
    derivative is real-linear, and keeping only the real part (what a cast does) would
    answer for another direction than the one asked."""
    if t.dtype == like.dtype:
        return t
    if xp.isdtype(t.dtype, "complex floating") and not xp.isdtype(like.dtype, "complex floating"):
        raise _complex_for_real(op, what, name, t.dtype, like.dtype)
    return xp.astype(t, like.dtype)


def _complex_for_real(op: str, what: str, name: str, given: Any, real: Any) -> ValueError:
    return ValueError(
        f"invad.{op}: the {what} of `{name}` is complex ({given}) but `{name}` is real "
        f"({real}); give a real {what} (for a complex one, take its real and imaginary "
        "parts separately)"
    )


def check_cotangents(
    rule: Rule,
    xp: Any,
    values: Sequence[Array],
    cotangents: Any,
    number: Callable[[Any, Array], Array],
    numbers: tuple[type, ...] = NUMBERS,
) -> list[Any]:
    """``ops.vjp``'s cotangents, one per value output of shape ``values``' (``info``'s dropped),
    as a list with ``None`` for zero and for the outputs that are not differentiable, in the
    outputs' dtypes (:func:`_fitted`). ``number(ct, v)`` makes an array like ``v`` of a
    Python or NumPy number (for a 0-d output), or of an instance of another of the types
    ``numbers`` (whose ``value`` is then an array)."""
    op = rule.name
    several = rule.returns_info or rule.multi
    cts = tuple(cotangents)[: len(values)] if several else (cotangents,)
    if len(cts) != len(values):
        raise ValueError(
            f"invad.{op}: expected {len(values)} cotangents "
            f"({', '.join(rule.value_names)}), got {len(cts)}"
        )
    fitted: list[Any] = []
    for name, v, ct, diff in zip(rule.value_names, values, cts, rule.differentiable):
        if ct is None or not diff:
            fitted.append(None)
            continue
        if isinstance(ct, numbers):  # a number for a 0-d output
            value: Any = getattr(ct, "value", ct)  # a number, or a ``numbers`` node's array
            if np.iscomplexobj(value) and not xp.isdtype(v.dtype, "complex floating"):
                given = getattr(value, "dtype", None) or np.asarray(value).dtype
                raise _complex_for_real(op, "cotangent", name, given, v.dtype)
            ct = number(ct, v)
        if tuple(ct.shape) != tuple(v.shape):
            raise ValueError(
                f"invad.{op}: the cotangent of `{name}` has shape {tuple(ct.shape)}, "
                f"expected {tuple(v.shape)}"
            )
        fitted.append(_fitted(xp, op, "cotangent", name, ct, v))
    return fitted


def _check_same_device(
    backend: Backend, op: str, arrays: Sequence[Array], names: Sequence[str] = ("a", "b")
) -> None:
    if len(arrays) < 2:
        return
    first = backend.device_of(arrays[0])
    if first is None:  # not known (a JAX tracer): nothing to check
        return
    for arg, x in zip(names[1:], arrays[1:]):
        other = backend.device_of(x)
        if other is None:
            continue
        if other != first:
            raise ValueError(
                f"invad.{op}: `{names[0]}` is on device {first} but `{arg}` is on device {other}"
            )


def check_inputs(
    rule: Rule, la: Linalg, backend: Backend, args: Sequence[Array], params: dict[str, Any]
) -> None:
    """The op's checks of its accepted inputs: dtypes, shapes, parameters, one device; and
    their values (``Rule.check_values``: ``lu_solve``'s pivots) where they can be read."""
    rule.check(la.xp, rule.name, *args, **params)
    _check_same_device(backend, rule.name, args, rule.contract.inputs)
    if rule.check_values is not None and backend.readable(args):
        rule.check_values(la, rule.name, *args, **params)


def checked_primal(
    rule: Rule, la: Linalg, backend: Backend, args: Sequence[Array], params: dict[str, Any]
) -> Primal:
    """Check the input, run the primal, and raise on a singular matrix unless ``_ex``."""
    check_inputs(rule, la, backend, args, params)
    primal = rule.primal(la, *args, **params)
    if rule.raises and not rule.returns_info:
        backend.raise_if_singular(
            rule.name, tuple(args[0].shape), primal.info, rule.zero_pivot(params)
        )
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
        return rule.result(checked_primal(rule, la, backend, accept(name, inputs, args), kwargs))

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
