"""The ``autograd.Function`` classes built from the rules, and their helpers.

Each rule gets three classes (:func:`_rule_functions`): a ``setup_context``-style
class with a generated vmap rule for ``torch.func`` transforms, a plain
``forward(ctx, ...)`` class for everything else, and a class without ``jvp``
for ``torch.compile``. Also here: :func:`_function_class` (which makes every
Function class of the package, ``LUSolve`` included), :func:`_apply_fast`
(``Function.apply`` through its C entry point) and :func:`_in_jvp` (the body
of a ``jvp`` that keeps outer forward-mode levels).
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ...rules import ArrayMeta, Linalg, Rule
from . import _state as state

#: The module the generated classes name: the package, as when it was one module.
_MODULE = __name__.rpartition(".")[0]


def _apply_fast(cls: Any, *args: Any) -> Any:
    """``cls.apply(*args)`` with every argument positional, outside torch.func transforms.

    ``Function.apply`` binds the arguments with ``inspect.signature`` on every
    call, tens of microseconds; the C entry point it ends in does the work.
    """
    torch = state.torch
    unwrap = torch._C._functorch.unwrap_if_dead
    return cls._c_apply(*(unwrap(x) if isinstance(x, torch.Tensor) else x for x in args))


def _function_class(name: str, vmap_rule: Callable[..., Any] | None = None, **methods: Any) -> Any:
    """An ``autograd.Function`` subclass: a given vmap rule, else a generated one."""
    body: dict[str, Any] = {"__module__": _MODULE}
    if vmap_rule is None:
        body["generate_vmap_rule"] = True
    else:
        methods["vmap"] = vmap_rule
    body.update({k: staticmethod(f) for k, f in methods.items()})
    torch = state.torch
    cls: Any = type(name, (torch.autograd.Function,), body)
    cls._c_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, cls)
    return cls


def _in_jvp(compute: Callable[..., Any], *tensors: Any) -> Any:
    """``compute(*tensors)``, the body of an autograd.Function's ``jvp``, such that
    nested forward mode works.

    PyTorch runs ``jvp`` with forward AD switched off, which drops the tangents
    of *outer* forward-mode levels: ``jacfwd(jacfwd(f))`` comes out wrong for
    any custom Function (torch 2.13). When an outer ``torch.func`` jvp level
    exists, the body runs one level down, as the forward of a generated
    Function does: the tensors unwrapped from the current level (which keeps
    their outer tangents), forward AD on, the result wrapped back. ``compute``
    returns a tensor or None.
    """
    if not state.transforms_active():
        return compute(*tensors)
    functorch = state.torch._C._functorch
    stack = functorch.get_interpreter_stack() or ()
    jvp = functorch.TransformType.Jvp
    # The level whose tangent is computed is the innermost jvp level; above it there
    # can only be the vmap levels of a generated vmap rule.
    levels = [k for k, i in enumerate(stack) if i.key() == jvp]
    if len(levels) < 2:
        return compute(*tensors)  # no outer forward-mode level to keep
    if levels[-1] != len(stack) - 1:
        raise NotImplementedError(
            "invad (torch): forward mode nested twice around a vmapped derivative "
            "(e.g. jacfwd(jacfwd(jacrev(f))) or jacfwd^3) is not supported; "
            "use jacrev for one of the outer derivatives"
        )
    from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

    interpreter = retrieve_current_functorch_interpreter()
    level = interpreter.level()
    args = [None if t is None else functorch._unwrap_for_grad(t, level) for t in tensors]
    with state.forward_ad._set_fwd_grad_enabled(True), interpreter.lower():
        out = compute(*args)
    return None if out is None else functorch._wrap_for_grad(out, level)


# ---------------------------------------------------------------------------
# the Function classes of a rule
# ---------------------------------------------------------------------------

_INPUT, _VALUE, _EXTRA, _META = 0, 1, 2, 3


def _residual_roles(rule: Rule) -> tuple[list[tuple[int, int]], list[int], list[int], int]:
    """Where each residual of ``rule`` comes from, ``(role, k)`` per field.

    ``_INPUT``: the k-th saved input; ``_VALUE``: the output value; ``_EXTRA``:
    the k-th extra tensor (LU, pivots); ``_META``: the :class:`ArrayMeta` of
    the input ``meta_inputs[k]``, kept on ``ctx`` as a Python value, so that the
    input itself is neither saved nor pinned against in-place changes.
    Returns the roles, the saved inputs' and the meta inputs' positions, and the
    number of extras.
    """
    inputs = rule.contract.inputs
    hints = typing.get_type_hints(rule.residuals)
    roles: list[tuple[int, int]] = []
    saved_inputs: list[int] = []
    meta_inputs: list[int] = []
    n_extra = 0
    fields: tuple[str, ...] = rule.residuals._fields  # type: ignore[attr-defined]
    for field in fields:
        if hints.get(field) is ArrayMeta:
            if field not in inputs:
                raise TypeError(
                    f"invad.{rule.name}: the ArrayMeta residual {field!r} must name an input"
                )
            roles.append((_META, len(meta_inputs)))
            meta_inputs.append(inputs.index(field))
        elif field in inputs:
            roles.append((_INPUT, len(saved_inputs)))
            saved_inputs.append(inputs.index(field))
        elif field in rule.contract.differentiable_outputs:
            roles.append((_VALUE, 0))
        else:
            roles.append((_EXTRA, n_extra))
            n_extra += 1
    if sum(role == _VALUE for role, _ in roles) != 1:
        raise TypeError(f"invad.{rule.name}: expected exactly one residual holding the value")
    return roles, saved_inputs, meta_inputs, n_extra


def _rule_functions(
    rule: Rule, la: Linalg, la_diff: Linalg, la_compile: Linalg
) -> tuple[Any, Any, Any]:
    """The three ``autograd.Function`` classes of one rule: for torch.func, plain, and
    for ``torch.compile``.

    All compute ``(value, info, ...) = apply(*inputs, *params)`` with the rule,
    only ``value`` differentiable, and share ``backward`` (and ``jvp``), which
    rebuild the rule's residuals from the saved tensors: the inputs the rule
    keeps, the *output* value (reshaped to the residual that holds it, so that
    derivatives are differentiable in turn), and the extras (LU and pivots).

    - The functorch class (``setup_context`` style, generated vmap rule) returns
      ``(value, info, *extras[, carrier])``: functorch needs every saved tensor
      to be an input or an output. ``carrier`` is the residual holding the
      value in another shape (the solution as a matrix when ``b`` is a vector),
      present when it is not the value itself, read for its shape.
    - The plain class (``forward(ctx, ...)``), used outside torch.func
      transforms, returns ``(value, info)`` and saves the extras as
      intermediates, which they may be: nothing differentiates them. Fewer
      outputs and one Python call fewer per op call.
    - The compile class, used while ``torch.compile`` traces, is the plain class
      without ``jvp`` (Dynamo refuses Functions that define one) on the kernels
      ``la_compile``; AOTAutograd traces its backward into the compiled graph.

    Inputs whose values no derivative reads (``solve``'s ``b``) are kept as their
    shape and dtype on ``ctx``, never saved: the graph holds what torch.linalg's
    own would, and the input may be changed in place after the forward.
    """
    n_in = len(rule.contract.inputs)
    params = tuple(p.name for p in rule.contract.params)
    # Where each residual comes from: an input, the value, an extra output, or metadata.
    roles, saved_inputs, meta_inputs, n_extra = _residual_roles(rule)
    value_field = next(i for i, (role, _) in enumerate(roles) if role == _VALUE)
    extra_fields = tuple(i for i, (role, _) in enumerate(roles) if role == _EXTRA)
    n_saved_in = len(saved_inputs)
    n_saved = n_saved_in + 1 + n_extra
    saved_in = tuple(saved_inputs)
    meta_in = tuple(meta_inputs)
    # Positions in (*ctx.saved_tensors, *ctx.meta) = (*saved inputs, value, *extras,
    # *metadata); -1 for the value.
    order = tuple(
        k
        if role == _INPUT
        else -1
        if role == _VALUE
        else n_saved_in + 1 + k
        if role == _EXTRA
        else n_saved + k
        for role, k in roles
    )
    n_plain = 2 + n_extra  # outputs of the functorch class without the carrier
    Residuals = rule.residuals
    primal, rule_jvp, rule_vjp = rule.primal, rule.jvp, rule.vjp
    no_grads = (None,) * len(params)

    def run_primal(args: tuple[Any, ...]) -> Any:
        if params:
            return primal(la, *args[:n_in], **dict(zip(params, args[n_in:])))
        return primal(la, *args)

    # The residuals from ctx.saved_tensors in one C call where the value needs no reshape.
    pick = operator.itemgetter(*[n_saved_in if k < 0 else k for k in order])
    several = len(order) > 1

    def residuals(saved: tuple[Any, ...], value_shape: Any) -> Any:
        """The rule's residuals from the saved tensors followed by the metadata."""
        if value_shape is None and several:
            return Residuals(*pick(saved))
        value = saved[n_saved_in]
        if value_shape is not None:
            value = value.reshape(value_shape)
        return Residuals(*[value if k < 0 else saved[k] for k in order])

    def metadata(args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``ArrayMeta`` residuals, from the inputs: ``ctx.meta``."""
        if not meta_in:
            return ()
        if len(meta_in) == 1:  # solve's b: no generator on the hot path
            x = args[meta_in[0]]
            return (ArrayMeta(x.shape, x.dtype),)
        return tuple(ArrayMeta(args[i].shape, args[i].dtype) for i in meta_in)

    def backward(ctx: Any, value_bar: Any, *_: Any) -> tuple[Any, ...]:
        if value_bar is None:
            return (None,) * n_in + no_grads
        res = residuals(ctx.saved_tensors + ctx.meta, ctx.value_shape)
        cts = rule_vjp(la_diff, res, value_bar, ctx.needs_input_grad[:n_in], **ctx.params)
        return (*cts, *no_grads) if no_grads else cts

    def jvp(ctx: Any, *tangents: Any) -> tuple[Any, ...]:
        value_shape, kwargs, meta = ctx.value_shape, ctx.params, ctx.meta
        saved = ctx.saved_tensors

        def tangent(*tensors: Any) -> Any:
            res = residuals(tensors[:n_saved] + meta, value_shape)
            return rule_jvp(la_diff, res, tensors[n_saved:], **kwargs)

        dvalue = _in_jvp(tangent, *saved, *tangents[:n_in])
        return (dvalue, *(None,) * (ctx.n_out - 1))

    # -- the functorch class ------------------------------------------------

    def forward(*args: Any) -> tuple[Any, ...]:
        p = run_primal(args)
        res = p.residuals
        value, carrier = _own(p.value), res[value_field]
        if carrier.shape == value.shape:
            return (value, p.info, *[res[i] for i in extra_fields])
        return (value, p.info, *[res[i] for i in extra_fields], carrier)

    def setup_context(ctx: Any, args: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*output[1:])
        ctx.params = dict(zip(params, args[n_in:])) if params else {}
        ctx.n_out = len(output)
        ctx.value_shape = output[n_plain].shape if ctx.n_out > n_plain else None
        ctx.meta = metadata(args)
        saved = (*[args[i] for i in saved_in], output[0], *output[2:n_plain])
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    functorch_class = _function_class(
        f"{rule.name}_function",
        forward=forward,
        setup_context=setup_context,
        backward=backward,
        jvp=jvp,
    )

    # -- the plain class --------------------------------------------------

    default_kwargs = {p.name: p.default for p in rule.contract.params}
    defaults = tuple(default_kwargs.values())

    def plain_forward(ctx: Any, *args: Any) -> tuple[Any, Any]:
        if params:
            pvals = args[n_in:]
            # Shared, never mutated: the rules take it as **kwargs, a copy.
            kwargs = default_kwargs if pvals == defaults else dict(zip(params, pvals))
            p = primal(la, *args[:n_in], **kwargs)
        else:
            kwargs = {}
            p = primal(la, *args)
        res = p.residuals
        value, shape = _own(p.value), res[value_field].shape
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(p.info)
        ctx.params = kwargs
        ctx.n_out = 2
        ctx.value_shape = None if shape == value.shape else shape
        ctx.meta = metadata(args)
        saved = (*[args[i] for i in saved_in], value, *[res[i] for i in extra_fields])
        ctx.save_for_backward(*saved)
        if state.forward_ad._current_level >= 0:
            ctx.save_for_forward(*saved)
        return value, p.info

    plain_class = _function_class(
        f"{rule.name}_plain_function",
        vmap_rule=_no_vmap,
        forward=plain_forward,
        backward=backward,
        jvp=jvp,
    )
    # -- the compile class ------------------------------------------------
    # Dynamo traces autograd.Functions without a custom jvp only, and no functorch or
    # forward-AD state: inside torch.compile, a class with backward alone, on kernels
    # that are aten ops only (la_compile), with materialized gradients.

    def compile_forward(ctx: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
        kwargs = dict(zip(params, args[n_in:]))
        p = primal(la_compile, *args[:n_in], **kwargs)
        res = p.residuals
        value, shape = p.value, res[value_field].shape
        ctx.mark_non_differentiable(p.info)
        ctx.params = kwargs
        ctx.value_shape = None if shape == value.shape else shape
        ctx.meta = tuple((args[i].shape, args[i].dtype) for i in meta_in)  # plain for Dynamo
        ctx.save_for_backward(*[args[i] for i in saved_in], value, *[res[i] for i in extra_fields])
        return value, p.info

    def compile_backward(ctx: Any, value_bar: Any, _info_bar: Any) -> tuple[Any, ...]:
        saved = [*ctx.saved_tensors, *[ArrayMeta(shape, dtype) for shape, dtype in ctx.meta]]
        value = saved[n_saved_in]
        if ctx.value_shape is not None:
            value = value.reshape(ctx.value_shape)
        res = Residuals(*[value if k < 0 else saved[k] for k in order])
        cts = rule_vjp(la_compile, res, value_bar, ctx.needs_input_grad[:n_in], **ctx.params)
        return (*cts, *no_grads)

    compile_class = _function_class(
        f"{rule.name}_compile_function",
        vmap_rule=_no_vmap,
        forward=_explicit_arguments(compile_forward, n_in + len(params)),
        backward=compile_backward,
    )
    return functorch_class, plain_class, compile_class


def _explicit_arguments(body: Callable[[Any, tuple[Any, ...]], Any], n: int) -> Callable[..., Any]:
    """``forward(ctx, x0, ..., x{n-1})`` calling ``body(ctx, (x0, ...))``: Dynamo (torch
    2.13) binds the arguments of a ``forward(ctx, *args)`` wrongly."""
    if n == 1:
        return lambda ctx, x0: body(ctx, (x0,))
    if n == 2:
        return lambda ctx, x0, x1: body(ctx, (x0, x1))
    if n == 3:
        return lambda ctx, x0, x1, x2: body(ctx, (x0, x1, x2))
    raise NotImplementedError(f"invad (torch): no compile class for {n} arguments")


def _own(value: Any) -> Any:
    """``value``, or a copy of it if it is a view (the transposed solution of a right solve,
    the reshaped inverse of tensorinv): an output that is a view of an intermediate makes
    forward-mode AD demand tangents of the same memory layout, which vmap cannot promise."""
    return value.clone() if value._is_view() else value


def _no_vmap(*args: Any) -> Any:
    raise RuntimeError("invad (torch): internal error: the plain Function ran under vmap")
