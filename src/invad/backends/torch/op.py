"""The user-facing op: input checks, dispatch to a Function class, the singular error.

:func:`_torch_op` builds the callable ``invad.install("torch")`` returns for a
rule. Per call: the input check (``rule.check``, memoized per input signature),
the device check and dtype promotion, then one of three paths: under
``torch.func`` transforms the functorch class; while ``torch.compile`` traces,
the compile class with the singular check in the graph; else the plain class
through its C entry point, or the rule's primal alone when nothing is
differentiated. Then ``info`` is returned (``*_ex`` ops) or checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...backend import type_name
from ...ops import _check_same_device, op_docstring
from ...rules import Linalg, Rule
from . import _state as state
from .functions import _rule_functions

if TYPE_CHECKING:
    from .backend import TorchBackend


#: Input signatures (shapes, dtypes, parameters) that passed ``rule.check``, per op.
_CHECKED_LIMIT = 4096


def _not_a_tensor(op: str, arg: str, x: Any) -> TypeError:
    return TypeError(
        f"invad.{op}: `{arg}` is a {type_name(x)}; the 'torch' backend takes torch.Tensor"
    )


def _torch_op(
    rule: Rule, la: Linalg, la_diff: Linalg, la_compile: Linalg, backend: TorchBackend
) -> Callable[..., Any]:
    """The op users call: check, the Function, the singular-matrix error."""
    fn, plain, compile_class = _rule_functions(rule, la, la_diff, la_compile)
    fast = plain._c_apply
    compiling = state.torch.compiler.is_compiling
    check_errors, api_name = state.torch._linalg_check_errors, f"invad.{rule.name}"
    name, check, xp = rule.name, rule.check, la.xp
    inputs = rule.contract.inputs
    n_in = len(inputs)
    params = tuple(p.name for p in rule.contract.params)
    defaults = tuple(p.default for p in rule.contract.params)
    returns_info = rule.returns_info
    primal = rule.primal
    singular = backend.raise_if_singular
    unwrap = state.torch._C._functorch.unwrap_if_dead
    checked: set[Any] = set()

    def validate(args: tuple[Any, ...], pvals: tuple[Any, ...]) -> None:
        """``rule.check``, which depends on shapes, dtypes and parameters only: once per
        signature. Only tensors' signatures are remembered: anything else raises here."""
        for arg, x in zip(inputs, args):
            if not isinstance(x, state.torch.Tensor):
                raise _not_a_tensor(name, arg, x)
        try:
            key: Any = (*[(x.shape, x.dtype) for x in args], *pvals)
            if key in checked:
                return
        except (TypeError, AttributeError):  # unhashable parameters, or not arrays
            key = None
        check(xp, name, *args, **dict(zip(params, pvals)))
        if key is not None:
            if len(checked) >= _CHECKED_LIMIT:
                checked.clear()
            checked.add(key)

    def finish(out: tuple[Any, ...], a: Any) -> Any:
        """The op's result from the Function's outputs: ``info`` returned or checked."""
        if returns_info:
            return out[0], out[1]
        info = out[1]
        # A plain 0-d zero (one matrix, factored) needs no more: the common case.
        if info.ndim or state.transforms_active() or info.is_meta or info:
            singular(name, a.shape, info)
        return out[0]

    def traced(*args: Any, **kwargs: Any) -> Any:
        """The op while ``torch.compile`` traces it: the checks (shapes are static to the
        graph, so they cost nothing at run time), the compile class, and the singular
        check as torch.linalg makes it in a graph, by the aten op that raises
        ``torch.linalg.LinAlgError`` when the graph runs."""
        args, pvals = call(*args, **kwargs)
        for arg, x in zip(inputs, args):
            if not isinstance(x, state.torch.Tensor):
                raise _not_a_tensor(name, arg, x)
        check(xp, name, *args, **dict(zip(params, pvals)))
        if n_in == 2:
            a, b = args
            if a.device != b.device:
                _check_same_device(backend, name, args)
            if a.dtype != b.dtype:
                dtype = state.torch.promote_types(a.dtype, b.dtype)
                args = (a.to(dtype), b.to(dtype))
        value, info = compile_class.apply(*args, *pvals)
        if returns_info:
            return value, info
        # The message names the op and the batch index; the shape may be symbolic here.
        check_errors(info, api_name, is_matrix=info.ndim == 0)
        return value

    def call(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The inputs and parameter values of a call made some other way than the usual."""
        if len(args) == n_in and kwargs.keys() <= set(params):
            return args, tuple(kwargs.get(k, d) for k, d in zip(params, defaults))
        bound = rule.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments[k] for k in inputs), tuple(bound.arguments[k] for k in params)

    if n_in == 2:

        def op(*args: Any, **kwargs: Any) -> Any:
            if compiling():
                return traced(*args, **kwargs)
            if kwargs or len(args) != 2:
                args, pvals = call(*args, **kwargs)
            else:
                pvals = defaults
            a, b = args
            try:
                if ((a.shape, a.dtype), (b.shape, b.dtype), *pvals) not in checked:
                    validate(args, pvals)
            except (TypeError, AttributeError):
                validate(args, pvals)
            if a.device != b.device:
                _check_same_device(backend, name, args)
            if a.dtype != b.dtype:  # promote here: torch's matmul does not mix dtypes
                dtype = state.torch.promote_types(a.dtype, b.dtype)
                a, b = a.to(dtype), b.to(dtype)
            if state.transforms_active():
                return finish(fn.apply(a, b, *pvals), a)
            if (
                state.torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            ) or state.forward_ad._current_level >= 0:
                out = fast(unwrap(a), unwrap(b), *pvals)
            else:  # nothing to differentiate: the rule's primal alone
                p = primal(la, a, b, **dict(zip(params, pvals)))
                out = p.value, p.info
            return finish(out, a)

    else:

        def op(*args: Any, **kwargs: Any) -> Any:
            if compiling():
                return traced(*args, **kwargs)
            if kwargs or len(args) != 1:
                args, pvals = call(*args, **kwargs)
            else:
                pvals = defaults
            (a,) = args
            try:
                if ((a.shape, a.dtype), *pvals) not in checked:
                    validate(args, pvals)
            except (TypeError, AttributeError):
                validate(args, pvals)
            if state.transforms_active():
                return finish(fn.apply(a, *pvals), a)
            if (
                state.torch.is_grad_enabled() and a.requires_grad
            ) or state.forward_ad._current_level >= 0:
                out = fast(unwrap(a), *pvals)
            else:  # nothing to differentiate: the rule's primal alone
                p = primal(la, a, **dict(zip(params, pvals)))
                out = p.value, p.info
            return finish(out, a)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    # The autograd.Function classes, for the curious (and the tests).
    op.function = fn  # type: ignore[attr-defined]
    op.plain_function = plain  # type: ignore[attr-defined]
    op.compile_function = compile_class  # type: ignore[attr-defined]
    return op
