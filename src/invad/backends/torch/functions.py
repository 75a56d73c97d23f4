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


def _differentiated() -> bool:
    """Whether the ``backward`` running now is differentiated in turn: it runs with grad mode
    on (``create_graph=True``), under forward mode (forward over reverse) or under torch.func
    transforms. Only then do the residuals saved as plain intermediates need their derivatives
    (``Rule.rederive``); a first-order backward reads them as they are."""
    return (
        state.torch.is_grad_enabled()
        or state.forward_ad._current_level >= 0
        or state.transforms_active()
    )


def _in_jvp(compute: Callable[..., Any], *tensors: Any) -> Any:
    """``compute(*tensors)``, the body of an autograd.Function's ``jvp``, such that
    nested forward mode works.

    PyTorch runs ``jvp`` with forward AD switched off, which drops the tangents
    of *outer* forward-mode levels: ``jacfwd(jacfwd(f))`` comes out wrong for
    any custom Function (torch 2.13). When an outer ``torch.func`` jvp level
    exists, the body runs one level down, as the forward of a generated
    Function does: the tensors unwrapped from the current level (which keeps
    their outer tangents), forward AD on, the result wrapped back. ``compute``
    returns a tensor or None, or a tuple of them (an op with several outputs).
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
    if isinstance(out, tuple):
        return tuple(None if t is None else functorch._wrap_for_grad(t, level) for t in out)
    return None if out is None else functorch._wrap_for_grad(out, level)


# ---------------------------------------------------------------------------
# the Function classes of a rule
# ---------------------------------------------------------------------------

_INPUT, _VALUE, _EXTRA, _META = 0, 1, 2, 3


class _Layout:
    """Where each residual of a rule comes from, and where the Function keeps it.

    Each residual field has a role: ``_INPUT`` (an input the Function saves),
    ``_VALUE`` (a value output: the *output* tensor is saved, so that
    derivatives built from it are differentiable in turn), ``_EXTRA`` (a
    tensor of the primal that is no output, LU and pivots: an extra,
    non-differentiable output of the functorch class, an intermediate of the
    others) or ``_META`` (the :class:`ArrayMeta` of an input, kept on ``ctx``
    as a Python value, so that the input is neither saved nor pinned against
    in-place changes).

    The saved tensors are ``(*saved inputs, *saved values, *extras)``, then the
    metadata: ``order`` gives each field's position in that tuple. At most one
    saved value, ``carrier``, that of the first differentiable output
    (the solution), may have another shape than the output (a vector
    right-hand side's solution is kept as a matrix): it is reshaped on use.
    """

    def __init__(self, rule: Rule) -> None:
        inputs = rule.contract.inputs
        values = rule.value_names
        hints = typing.get_type_hints(rule.residuals)
        fields: tuple[str, ...] = rule.residuals._fields  # type: ignore[attr-defined]
        roles: list[tuple[int, int]] = []
        saved_inputs: list[int] = []
        saved_values: list[int] = []
        meta_inputs: list[int] = []
        n_extra = 0
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
            elif field in values:
                roles.append((_VALUE, len(saved_values)))
                saved_values.append(values.index(field))
            else:
                roles.append((_EXTRA, n_extra))
                n_extra += 1
        self.saved_inputs = tuple(saved_inputs)
        self.saved_values = tuple(saved_values)
        self.meta_inputs = tuple(meta_inputs)
        self.n_extra = n_extra
        self.extra_fields = tuple(i for i, (role, _) in enumerate(roles) if role == _EXTRA)
        n_in, n_val = len(saved_inputs), len(saved_values)
        self.n_saved = n_in + n_val + n_extra
        base = {_INPUT: 0, _VALUE: n_in, _EXTRA: n_in + n_val, _META: self.n_saved}
        self.order = tuple(base[role] + k for role, k in roles)
        diff = rule.differentiable
        carriers = [
            i for i, (role, k) in enumerate(roles) if role == _VALUE and diff[saved_values[k]]
        ]
        #: The residual field holding the first differentiable output, the index of that
        #: output and the field's position among the saved tensors; None if no field does.
        self.carrier: tuple[int, int, int] | None = None
        if carriers:
            i = carriers[0]
            self.carrier = (i, saved_values[roles[i][1]], self.order[i])


def _rule_functions(
    rule: Rule, la: Linalg, la_diff: Linalg, la_compile: Linalg
) -> tuple[Any, Any, Any]:
    """The three ``autograd.Function`` classes of one rule: for torch.func, plain, and
    for ``torch.compile``.

    All compute ``(*values, info, ...) = apply(*inputs, *params)`` with the
    rule: ``values`` are the op's value outputs (one array, or ``lu_factor``'s
    ``(LU, pivots)``, ``slogdet``'s ``(sign, logabsdet)``), those the rule says
    are not differentiable (pivots) and ``info`` marked so. They share
    ``backward`` (and ``jvp``), which rebuild the rule's residuals from the
    saved tensors (see :class:`_Layout`). Integer inputs (pivots) get no
    gradient and no tangent.

    - The functorch class (``setup_context`` style, generated vmap rule) returns
      ``(*values, info, *extras[, carrier])``: functorch needs every saved tensor
      to be an input or an output. ``carrier`` is the residual holding the
      solution in another shape (the solution as a matrix when ``b`` is a
      vector), present when it is not the value itself, read for its shape.
    - The plain class (``forward(ctx, ...)``), used outside torch.func
      transforms, returns ``(*values, info)`` and saves the extras as
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
    layout = _Layout(rule)
    saved_in, saved_val, meta_in = layout.saved_inputs, layout.saved_values, layout.meta_inputs
    extra_fields, n_saved = layout.extra_fields, layout.n_saved
    has_carrier = layout.carrier is not None
    carrier_field, carrier_value, carrier_slot = layout.carrier or (-1, -1, -1)
    multi = rule.multi
    n_val = len(rule.value_names)
    differentiable = rule.differentiable
    # The value outputs that are not differentiable (pivots), by index.
    frozen = tuple(j for j, d in enumerate(differentiable) if not d)
    n_plain = n_val + 1 + layout.n_extra  # outputs of the functorch class without the carrier
    Residuals = rule.residuals
    primal, rule_jvp, rule_vjp, rederive = rule.primal, rule.jvp, rule.vjp, rule.rederive
    no_grads = (None,) * len(params)
    no_input_grads = (None,) * (n_in + len(params))
    values_of = rule.values

    def run_primal(args: tuple[Any, ...]) -> Any:
        if params:
            return primal(la, *args[:n_in], **dict(zip(params, args[n_in:])))
        return primal(la, *args)

    # The residuals from the saved tensors in one C call (itemgetter).
    pick = operator.itemgetter(*layout.order)
    several = len(layout.order) > 1

    def residuals(saved: tuple[Any, ...], value_shape: Any) -> Any:
        """The rule's residuals from the saved tensors followed by the metadata."""
        if value_shape is not None:
            saved = (
                *saved[:carrier_slot],
                saved[carrier_slot].reshape(value_shape),
                *saved[carrier_slot + 1 :],
            )
        return Residuals(*pick(saved)) if several else Residuals(saved[layout.order[0]])

    def metadata(args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``ArrayMeta`` residuals, from the inputs: ``ctx.meta``."""
        if not meta_in:
            return ()
        if len(meta_in) == 1:  # solve's b: no generator on the hot path
            x = args[meta_in[0]]
            return (ArrayMeta(x.shape, x.dtype),)
        return tuple(ArrayMeta(args[i].shape, args[i].dtype) for i in meta_in)

    def cotangent(bars: tuple[Any, ...]) -> Any:
        """The rule's cotangent from the gradients of the value outputs; None if all zero."""
        if not multi:
            return bars[0]
        ct = tuple(g if d else None for g, d in zip(bars, differentiable))
        return None if all(g is None for g in ct) else ct

    def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        ct = cotangent(grads[:n_val])
        if ct is None:
            return no_input_grads
        res = residuals(ctx.saved_tensors + ctx.meta, ctx.value_shape)
        if rederive is not None and _differentiated():
            res = rederive(la_diff, res, **ctx.params)
        cts = rule_vjp(la_diff, res, ct, ctx.needs_input_grad[:n_in], **ctx.params)
        return (*cts, *no_grads) if no_grads else cts

    def jvp(ctx: Any, *tangents: Any) -> tuple[Any, ...]:
        value_shape, kwargs, meta = ctx.value_shape, ctx.params, ctx.meta
        saved = ctx.saved_tensors

        def tangent(*tensors: Any) -> Any:
            res = residuals(tensors[:n_saved] + meta, value_shape)
            if rederive is not None:  # the tangent may be differentiated in turn
                res = rederive(la_diff, res, **kwargs)
            return rule_jvp(la_diff, res, tensors[n_saved:], **kwargs)

        dvalues = _in_jvp(tangent, *saved, *tangents[:n_in])
        if not multi:
            return (dvalues, *(None,) * (ctx.n_out - 1))
        if any(d is None for d in dvalues):
            # torch (2.13) takes None from the jvp of a Function with several outputs for
            # an integer tangent: a zero for each differentiable output (real slogdet's sign).
            dvalues = tuple(
                state.torch.zeros(shape, dtype=dtype, device=device) if d is None and diff else d
                for d, diff, (shape, dtype, device) in zip(dvalues, differentiable, ctx.value_meta)
            )
        return (*dvalues, *(None,) * (ctx.n_out - n_val))

    def reshaped(res: Any, values: Sequence[Any]) -> Any:
        """The shape of the residual holding an output, where it is not the output's; else
        None (``ctx.value_shape``)."""
        if not has_carrier:
            return None
        shape = res[carrier_field].shape
        return None if shape == values[carrier_value].shape else shape

    def mark(ctx: Any, values: Sequence[Any], rest: Sequence[Any]) -> None:
        """Mark the outputs that carry no derivative: pivots, info, extras, the carrier (an
        extra may be None: solve(assume_a="pos") keeps no pivots)."""
        rest = [x for x in rest if x is not None]
        if frozen:
            ctx.mark_non_differentiable(*[values[j] for j in frozen], *rest)
        else:
            ctx.mark_non_differentiable(*rest)

    # -- the functorch class ------------------------------------------------

    def forward(*args: Any) -> tuple[Any, ...]:
        p = run_primal(args)
        res = p.residuals
        values = tuple(_own(v) for v in values_of(p))
        out = (*values, p.info, *[res[i] for i in extra_fields])
        if not has_carrier:
            return out
        carrier = res[carrier_field]
        if carrier.shape == values[carrier_value].shape:
            return out
        return (*out, carrier)

    def setup_context(ctx: Any, args: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        ctx.set_materialize_grads(False)
        mark(ctx, output[:n_val], output[n_val:])
        if multi:
            ctx.value_meta = [(v.shape, v.dtype, v.device) for v in output[:n_val]]
        ctx.params = dict(zip(params, args[n_in:])) if params else {}
        ctx.n_out = len(output)
        ctx.value_shape = output[n_plain].shape if ctx.n_out > n_plain else None
        ctx.meta = metadata(args)
        saved = (
            *[args[i] for i in saved_in],
            *[output[j] for j in saved_val],
            *output[n_val + 1 : n_plain],
        )
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

    def plain_forward(ctx: Any, *args: Any) -> tuple[Any, ...]:
        if params:
            pvals = args[n_in:]
            # Shared, never mutated: the rules take it as **kwargs, a copy.
            kwargs = default_kwargs if pvals == defaults else dict(zip(params, pvals))
            p = primal(la, *args[:n_in], **kwargs)
        else:
            kwargs = {}
            p = primal(la, *args)
        res = p.residuals
        values = (_own(p.value),) if not multi else tuple(_own(v) for v in p.value)
        ctx.set_materialize_grads(False)
        mark(ctx, values, (p.info,))
        if multi:
            ctx.value_meta = [(v.shape, v.dtype, v.device) for v in values]
        ctx.params = kwargs
        ctx.n_out = n_val + 1
        ctx.value_shape = reshaped(res, values)
        ctx.meta = metadata(args)
        saved = (
            *[args[i] for i in saved_in],
            *[values[j] for j in saved_val],
            *[res[i] for i in extra_fields],
        )
        ctx.save_for_backward(*saved)
        if state.forward_ad._current_level >= 0:
            ctx.save_for_forward(*saved)
        return (*values, p.info)

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

    def compile_forward(ctx: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kwargs = dict(zip(params, args[n_in:]))
        p = primal(la_compile, *args[:n_in], **kwargs)
        res = p.residuals
        values = values_of(p)
        mark(ctx, values, (p.info,))
        ctx.params = kwargs
        ctx.value_shape = reshaped(res, values)
        ctx.meta = tuple((args[i].shape, args[i].dtype) for i in meta_in)  # plain for Dynamo
        ctx.save_for_backward(
            *[args[i] for i in saved_in],
            *[values[j] for j in saved_val],
            *[res[i] for i in extra_fields],
        )
        return (*values, p.info)

    def compile_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
        saved = (*ctx.saved_tensors, *[ArrayMeta(shape, dtype) for shape, dtype in ctx.meta])
        ct = cotangent(grads[:n_val])
        if ct is None:
            return no_input_grads
        if ctx.value_shape is not None:
            carried = saved[carrier_slot].reshape(ctx.value_shape)
            saved = (*saved[:carrier_slot], carried, *saved[carrier_slot + 1 :])
        res = Residuals(*[saved[k] for k in layout.order])  # no itemgetter: Dynamo traces it
        cts = rule_vjp(la_compile, res, ct, ctx.needs_input_grad[:n_in], **ctx.params)
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
    2.13) binds the arguments of a ``forward(ctx, *args)`` wrongly, so the signature is
    spelled out, for any number of arguments."""
    names = ", ".join(f"x{i}" for i in range(n))
    namespace: dict[str, Any] = {"body": body}
    exec(f"def forward(ctx, {names}):\n    return body(ctx, ({names},))\n", namespace)
    return typing.cast(Callable[..., Any], namespace["forward"])


def _own(value: Any) -> Any:
    """``value``, or a copy of it if it is a view (the transposed solution of a right solve,
    the reshaped inverse of tensorinv): an output that is a view of an intermediate makes
    forward-mode AD demand tangents of the same memory layout, which vmap cannot promise."""
    return value.clone() if value._is_view() else value


def _no_vmap(*args: Any) -> Any:
    raise RuntimeError("invad (torch): internal error: the plain Function ran under vmap")
