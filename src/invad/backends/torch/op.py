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
from ...rules.solve import NOT_POSITIVE_DEFINITE
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
    check_errors = state.torch._linalg_check_errors
    zero_pivot_of = rule.zero_pivot

    def compiled_api_name(pvals: tuple[Any, ...]) -> str:
        """The name torch's in-graph check puts first. torch picks its message by substrings
        of that name ("inv", then "solve", then "cholesky"), so a failed Cholesky
        factorization is named "cholesky (the call's parameters)", without "invad" or the
        op's name: torch then says "not positive-definite (the leading minor of order k
        ...)" rather than "the inversion could not be completed"."""
        if zero_pivot_of(dict(zip(params, pvals))) != NOT_POSITIVE_DEFINITE:
            return f"invad.{rule.name}"
        return "cholesky (" + ", ".join(f"{k}={v!r}" for k, v in zip(params, pvals)) + ")"

    name, check, xp = rule.name, rule.check, la.xp
    inputs = rule.contract.inputs
    n_in = len(inputs)
    #: The floating inputs: dtype promotion, device and grad checks (never pivots).
    floats = tuple(i for i, integer in enumerate(rule.integer) if not integer)
    params = tuple(p.name for p in rule.contract.params)
    defaults = tuple(p.default for p in rule.contract.params)
    returns_info = rule.returns_info
    raises = rule.raises and not returns_info
    zero_pivot = rule.contract.zero_pivot
    multi = rule.multi
    n_val = len(rule.value_names)
    primal = rule.primal
    singular = backend.raise_if_singular
    unwrap = state.torch._C._functorch.unwrap_if_dead
    checked: set[Any] = set()
    #: The check of input values (lu_solve's pivots): on every eager call, not cached.
    check_values = rule.check_values

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

    def finish(out: tuple[Any, ...], a: Any, pvals: tuple[Any, ...]) -> Any:
        """The op's result from the Function's outputs ``(*values, info, ...)``: ``info``
        returned or checked (the message may depend on a parameter: ``assume_a``)."""
        if returns_info:
            return out[: n_val + 1]
        if raises:
            info = out[n_val]
            # A plain 0-d zero (one matrix, factored) needs no more: the common case.
            if info.ndim or state.transforms_active() or info.is_meta or info:
                what = rule.zero_pivot(dict(zip(params, pvals))) if params else zero_pivot
                singular(name, a.shape, info, what)
        return out[:n_val] if multi else out[0]

    def without_grad(args: tuple[Any, ...], pvals: tuple[Any, ...]) -> tuple[Any, ...]:
        """Nothing to differentiate: the rule's primal alone."""
        p = primal(la, *args, **dict(zip(params, pvals))) if params else primal(la, *args)
        return (*p.value, p.info) if multi else (p.value, p.info)

    def promoted(args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The floating inputs in one dtype (torch's matmul does not mix them); the
        integer inputs (pivots) as they are."""
        dtype = args[floats[0]].dtype
        if all(args[i].dtype == dtype for i in floats):
            return args
        for i in floats[1:]:
            dtype = state.torch.promote_types(dtype, args[i].dtype)
        return tuple(x.to(dtype) if i in floats else x for i, x in enumerate(args))

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
        if n_in > 1:
            if any(x.device != args[0].device for x in args[1:]):
                _check_same_device(backend, name, args, inputs)
            args = promoted(args)
        out = compile_class.apply(*args, *pvals)
        if returns_info:
            return out[: n_val + 1]
        if raises:
            # The message names the op and the batch index; the shape may be symbolic here.
            info = out[n_val]
            check_errors(info, compiled_api_name(pvals), is_matrix=info.ndim == 0)
        return out[:n_val] if multi else out[0]

    def call(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The inputs and parameter values of a call made some other way than the usual."""
        if len(args) == n_in and kwargs.keys() <= set(params):
            return args, tuple(kwargs.get(k, d) for k, d in zip(params, defaults))
        bound = rule.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return tuple(bound.arguments[k] for k in inputs), tuple(bound.arguments[k] for k in params)

    # solve, solve_triangular, tensorsolve: the hot path
    if n_in == 2 and len(floats) == 2 and check_values is None:

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
                _check_same_device(backend, name, args, inputs)
            if a.dtype != b.dtype:  # promote here: torch's matmul does not mix dtypes
                dtype = state.torch.promote_types(a.dtype, b.dtype)
                a, b = a.to(dtype), b.to(dtype)
            if state.transforms_active():
                return finish(fn.apply(a, b, *pvals), a, pvals)
            if (
                state.torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            ) or state.forward_ad._current_level >= 0:
                out = fast(unwrap(a), unwrap(b), *pvals)
            else:
                out = without_grad((a, b), pvals)
            return finish(out, a, pvals)

    elif n_in == 1 and check_values is None:  # inv, tensorinv, lu_factor, det, slogdet

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
                return finish(fn.apply(a, *pvals), a, pvals)
            if (
                state.torch.is_grad_enabled() and a.requires_grad
            ) or state.forward_ad._current_level >= 0:
                out = fast(unwrap(a), *pvals)
            else:
                out = without_grad(args, pvals)
            return finish(out, a, pvals)

    else:  # any other number of inputs, integer ones among them (lu_solve)

        def op(*args: Any, **kwargs: Any) -> Any:
            if compiling():
                return traced(*args, **kwargs)
            if kwargs or len(args) != n_in:
                args, pvals = call(*args, **kwargs)
            else:
                pvals = defaults
            try:
                if (*[(x.shape, x.dtype) for x in args], *pvals) not in checked:
                    validate(args, pvals)
            except (TypeError, AttributeError):
                validate(args, pvals)
            device = args[0].device
            if any(x.device != device for x in args[1:]):
                _check_same_device(backend, name, args, inputs)
            args = promoted(args)
            if state.transforms_active():
                return finish(fn.apply(*args, *pvals), args[0], pvals)
            if check_values is not None:
                check_values(la, name, *args, **dict(zip(params, pvals)))
            if (
                state.torch.is_grad_enabled() and any(args[i].requires_grad for i in floats)
            ) or state.forward_ad._current_level >= 0:
                out = fast(*[unwrap(x) for x in args], *pvals)
            else:
                out = without_grad(args, pvals)
            return finish(out, args[0], pvals)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    # The autograd.Function classes, for the curious (and the tests).
    op.function = fn  # type: ignore[attr-defined]
    op.plain_function = plain  # type: ignore[attr-defined]
    op.compile_function = compile_class  # type: ignore[attr-defined]
    return op
