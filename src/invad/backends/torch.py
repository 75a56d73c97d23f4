"""The PyTorch backend: every rule becomes a ``torch.autograd.Function``.

``invad.install(backend="torch")`` gives ops that behave like ``torch.linalg``
functions under every PyTorch AD mechanism: ``.backward()``,
``torch.autograd.grad`` (``create_graph=True`` for higher order), forward-mode
dual tensors, and the ``torch.func`` transforms (``grad``, ``vjp``, ``jvp``,
``jacrev``, ``jacfwd``, ``hessian``, ``vmap``).

How a rule is installed (no formula is written here; the rules hold them):

- ``forward`` runs ``rule.primal`` with plain torch kernels
  (``lu_factor_ex``, ``lu_solve``, ``inv_ex``) and returns the value and
  LAPACK ``info`` (non-differentiable). The residuals are saved with
  ``ctx.save_for_backward``/``save_for_forward``: the inputs the rule keeps,
  the *output* value (the residual that holds it, ``inverse`` or ``x``, is
  rebuilt from it so that it carries the op's graph), and the LU
  factorization and its pivots.
- ``backward`` and ``jvp`` run ``rule.vjp`` and ``rule.jvp`` on those.
- The rules apply ``A^-1`` through the kernel ``lu_solve`` on the saved
  factorization. When the derivative must itself be differentiable (grad
  mode on, forward AD, ``torch.func``), that kernel is the ``autograd.Function``
  "solve with this factorization of ``a``" (``LUSolve``), differentiable with
  respect to ``a`` and ``b``, whose own derivatives solve with the same
  factorization again. Every order reuses the one forward LU; first-order
  backward costs one ``lu_solve`` on it.
- Each rule has two Function classes. Under ``torch.func`` transforms, a
  ``setup_context``-style class with a generated vmap rule, which returns the
  LU factorization as extra non-differentiable outputs (functorch saves
  inputs and outputs only). Elsewhere, a plain ``forward(ctx, ...)`` class
  that saves them as intermediates: fewer outputs, fewer Python calls.

- Inputs whose values no derivative reads (``solve``'s ``b``, an ``ArrayMeta``
  residual) are kept as shape and dtype on ``ctx``, never saved: the graph
  holds no more than ``torch.linalg``'s, and ``b`` may change in place.
- Under ``torch.compile`` (``torch.compiler.is_compiling()``) the op takes a
  third class, without ``jvp`` (Dynamo refuses Functions that define one), on
  aten kernels only, and checks for singular input with
  ``torch._linalg_check_errors`` inside the graph, as ``torch.linalg`` does.
  ``fullgraph=True`` works, forward and backward.

torch is imported by :meth:`TorchBackend.load` only: invad works without
torch, and lists this backend as unavailable.

Per-call cost matters for small matrices, so the hot path (checks, the
Function call, the singular check, the first-order backward) avoids every
Python step it can: ``Function.apply`` is called through its C entry point
outside ``torch.func`` transforms, input validation is memoized per input
signature, and the kernels take a direct path in the common case.
"""

from __future__ import annotations

import functools
import math
import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

from ..backend import Backend, type_name
from ..hookspecs import hookimpl
from ..ops import _check_same_device, op_docstring
from ..rules import ArrayMeta, Factor, Linalg, Rule
from ..rules._linalg import is_complex

torch: Any = None  # the torch module, bound by TorchBackend.load()
_forward_ad: Any = None  # torch.autograd.forward_ad
_LUSolve: Any = None  # the autograd.Function of a solve with a given factorization
_RawLUSolve: Any = None  # torch.linalg.lu_solve with a vmap rule of ours
_transforms_active: Any = None  # torch._C._are_functorch_transforms_active
_lu_solve_native: Any = None  # torch.linalg.lu_solve
_solve_ex: Any = None  # torch._linalg_solve_ex (aten): solution, LU, pivots, info
_solve_ex_keeps_lu = False  # whether its LU is lu_factor_ex's (see _check_solve_ex)


def _check_solve_ex() -> bool:
    """Whether ``aten._linalg_solve_ex`` returns the LU factors of ``A`` itself.

    It is torch.linalg.solve's kernel; some torch versions factor ``A^T`` there
    instead (to spare a copy), which invad's derivatives could not reuse as they
    stand. Checked once, on a matrix whose LU and its transpose's differ.
    """
    a = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 2.0], [0.5, 4.0, 1.0]], dtype=torch.float64)
    try:
        _, lu, pivots, _ = _solve_ex(a, torch.ones(3, 1, dtype=a.dtype), left=True)
    except (AttributeError, RuntimeError, TypeError):
        return False
    expected, expected_pivots, _ = torch.linalg.lu_factor_ex(a)
    return bool(torch.equal(lu, expected) and torch.equal(pivots, expected_pivots))


# ---------------------------------------------------------------------------
# the LU solve kernel
# ---------------------------------------------------------------------------

#: The solve against op(A)^H that the derivatives of a solve against op(A) need:
#: (A)^H = A^H, (A^H)^H = A, (A^T)^H = conj(A), conj(A)^H = A^T.
_ADJOINT = {"N": "H", "H": "N", "T": "C", "C": "T"}


def _raw_lu_solve(lu: Any, pivots: Any, b: Any, trans: str, kernel: Any = None) -> Any:
    """``op(A)^-1 b`` from ``torch.linalg.lu_factor``'s ``(lu, pivots)``, no autograd of ours.

    ``trans`` is ``"N"`` (A), ``"T"`` (A^T), ``"H"`` (A^H) or, for the
    derivatives of ``"T"``, ``"C"`` (conj(A)). Batch dimensions broadcast.
    ``kernel(lu, pivots, b, left, adjoint)`` solves, :func:`_lu_solve_kernel`
    by default.
    """
    kernel = kernel or _lu_solve_kernel
    if b.dtype != lu.dtype:
        b = b.to(lu.dtype)
    if trans == "N" or (trans == "C" and not lu.is_complex()):
        return kernel(lu, pivots, b, True, False)
    if trans == "H" or not lu.is_complex():  # "H", or "T" of a real matrix
        return kernel(lu, pivots, b, True, True)
    if trans == "T":  # A^T x = b  <=>  x^T A = b^T
        return kernel(lu, pivots, b.mT, False, False).mT
    # "C": conj(A) x = b  <=>  x^T A^H = b^T
    return kernel(lu, pivots, b.mT, False, True).mT


def _lu_solve_kernel(lu: Any, pivots: Any, b: Any, left: bool, adjoint: bool) -> Any:
    """``torch.linalg.lu_solve``, correct under ``torch.vmap`` too (see :func:`_eager_lu_solve`)."""
    if _transforms_active():
        return _RawLUSolve.apply(lu, pivots, b, left, adjoint)
    return _eager_lu_solve(lu, pivots, b, left, adjoint)


def _eager_lu_solve(lu: Any, pivots: Any, b: Any, left: bool, adjoint: bool) -> Any:
    """``torch.linalg.lu_solve`` on plain tensors, around a torch bug.

    torch (2.13) reads the strides of size-1 batch dimensions of ``lu`` as if
    they meant something: an ``lu`` of shape (5, 1, n, n) whose size-1
    dimension has a stride other than n*n gives wrong solutions, broadcast or
    not. ``unsqueeze`` makes such strides, and torch's own vmap rule for
    ``lu_solve`` pads batch dimensions with it. Here batch dimensions are
    broadcast by hand and flattened into one, where no stride can mislead.
    """
    n = lu.shape[-1]
    if lu.shape[:-2] != b.shape[:-2]:
        batch = torch.broadcast_shapes(lu.shape[:-2], b.shape[:-2])
        lu = lu.expand(*batch, n, n)
        pivots = pivots.expand(*batch, n)
        b = b.expand(*batch, *b.shape[-2:])
    if lu.ndim <= 3:
        return _lu_solve_native(lu, pivots, b, left=left, adjoint=adjoint)
    batch = lu.shape[:-2]
    count = math.prod(batch)
    x = _lu_solve_native(
        lu.reshape(count, n, n),
        pivots.reshape(count, n),
        b.reshape(count, *b.shape[-2:]),
        left=left,
        adjoint=adjoint,
    )
    return x.reshape(*batch, *x.shape[-2:])


# RawLUSolve: the kernel under torch.func transforms. Its vmap rule aligns the batch
# dimensions itself, so that the solve at the bottom is always _eager_lu_solve.


def _raw_forward(lu: Any, pivots: Any, b: Any, left: bool, adjoint: bool) -> Any:
    return _eager_lu_solve(lu, pivots, b, left, adjoint)


def _raw_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.mark_non_differentiable(output)


def _raw_backward(ctx: Any, *grads: Any) -> tuple[None, ...]:
    return None, None, None, None, None


def _raw_vmap(
    info: Any, in_dims: tuple[Any, ...], lu: Any, pivots: Any, b: Any, left: bool, adjoint: bool
) -> tuple[Any, int]:
    size = info.batch_size

    def batched(x: Any, dim: int | None, core: int, rank: int) -> Any:
        x = x.movedim(dim, 0) if dim is not None else x.expand(size, *x.shape)
        pad = rank - (x.ndim - 1 - core)  # batch dimensions to add after the vmapped one
        return x.reshape(size, *(1,) * pad, *x.shape[1:]) if pad else x

    rank = max(lu.ndim - (in_dims[0] is not None) - 2, b.ndim - (in_dims[2] is not None) - 2)
    lu = batched(lu, in_dims[0], 2, rank)
    pivots = batched(pivots, in_dims[1], 1, rank)
    b = batched(b, in_dims[2], 2, rank)
    return _lu_solve_kernel(lu, pivots, b, left, adjoint), 0


# LUSolve: x = op(A)^-1 b with A's factorization (lu, pivots) given; a is an input only
# to receive a gradient. Derivatives, by the solve rule on op(A):
#   dx = op(A)^-1 (db - op(dA) x);   bbar = op(A)^-H xbar;   abar from bbar and x,
# all solves with the same factorization through this same Function: any order works.


def _op(trans: str, m: Any) -> Any:
    """``op(m)`` for ``trans`` in N, T, H, C."""
    if trans == "N":
        return m
    if trans == "T":
        return m.mT
    if trans == "H":
        return m.mH
    return m.conj()


def _fit(x: Any, shape: Any, complex_: bool, dtype: Any) -> Any:
    """A cotangent fitted to its primal: summed over broadcast dimensions to ``shape``,
    real if the primal is real, of the primal's dtype."""
    if x.shape != shape:
        lead = x.ndim - len(shape)
        if lead:
            x = x.sum(dim=tuple(range(lead)))
        stretched = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
        if stretched:
            x = x.sum(dim=stretched, keepdim=True)
    if x.is_complex() and not complex_:
        x = x.real
    return x if x.dtype == dtype else x.to(dtype)


def _lu_solve_forward(a: Any, lu: Any, pivots: Any, b: Any, trans: str) -> Any:
    return _raw_lu_solve(lu, pivots, b, trans)


def _lu_solve_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    a, lu, pivots, b, trans = inputs
    ctx.trans = trans
    ctx.b_meta = (b.shape, b.is_complex(), b.dtype)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(a, lu, pivots, output)
    if _needs_forward_saves():
        ctx.save_for_forward(a, lu, pivots, output)


def _lu_solve_backward(ctx: Any, xbar: Any) -> tuple[Any, ...]:
    if xbar is None:
        return None, None, None, None, None
    a, lu, pivots, x = ctx.saved_tensors
    trans = ctx.trans
    need_a, _, _, need_b = ctx.needs_input_grad[:4]
    bbar = _lu_solve(a, lu, pivots, xbar, _ADJOINT[trans])
    abar = None
    if need_a:
        if trans == "N":
            abar = -(bbar @ x.mH)
        elif trans == "H":
            abar = -(x @ bbar.mH)
        elif trans == "T":
            abar = -(x.conj() @ bbar.mT)
        else:  # "C"
            abar = -(bbar.conj() @ x.mT)
        abar = _fit(abar, a.shape, a.is_complex(), a.dtype)
    bbar = _fit(bbar, *ctx.b_meta) if need_b else None
    return abar, None, None, bbar, None


def _lu_solve_jvp(ctx: Any, da: Any, dlu: Any, dpivots: Any, db: Any, _trans: Any) -> Any:
    a, lu, pivots, x = ctx.saved_tensors
    return _in_jvp(functools.partial(_lu_solve_tangent, ctx.trans), a, lu, pivots, x, da, db)


def _lu_solve_tangent(trans: str, a: Any, lu: Any, pivots: Any, x: Any, da: Any, db: Any) -> Any:
    rhs = db
    if da is not None:
        op_da_x = _op(trans, da) @ x
        rhs = -op_da_x if rhs is None else rhs - op_da_x
    if rhs is None:
        return None
    return _lu_solve(a, lu, pivots, rhs, trans)


def _lu_solve(a: Any, lu: Any, pivots: Any, b: Any, trans: str) -> Any:
    """A solve that is differentiable w.r.t. ``a`` and ``b`` whenever anything may need it.

    The plain kernel serves first-order backward (grad mode off) and tensors
    that track nothing; the Function serves the rest: ``create_graph``,
    forward AD (a dual level is open) and torch.func transforms.
    """
    if _transforms_active():
        return _LUSolve.apply(a, lu, pivots, b, trans)
    if (
        torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    ) or _forward_ad._current_level >= 0:
        return _apply_fast(_LUSolve, a, lu, pivots, b, trans)
    return _raw_lu_solve(lu, pivots, b, trans)


def _needs_forward_saves() -> bool:
    """Whether a jvp may follow: a forward-AD dual level is open, or a torch.func transform."""
    return _forward_ad._current_level >= 0 or _transforms_active()


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
    if not _transforms_active():
        return compute(*tensors)
    functorch = torch._C._functorch
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
    with _forward_ad._set_fwd_grad_enabled(True), interpreter.lower():
        out = compute(*args)
    return None if out is None else functorch._wrap_for_grad(out, level)


class TorchKernels:
    """The kernels of the forward pass: torch.linalg's LAPACK wrappers, no autograd of ours.

    ``pivots`` are torch's own (1-based, int32); only ``lu_solve`` reads them.
    """

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        lu, pivots, info = torch.linalg.lu_factor_ex(a)
        return Factor(a, lu, pivots), info

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        lu = factor.lu
        if (
            trans == "N"
            and lu.ndim <= 3
            and b.dtype == lu.dtype
            and lu.shape[:-2] == b.shape[:-2]
            and not _transforms_active()
        ):
            return _lu_solve_native(lu, factor.pivots, b)
        return _raw_lu_solve(lu, factor.pivots, b, trans)

    def solve(self, a: Any, b: Any, trans: str = "N") -> tuple[Factor, Any, Any]:
        if (
            _solve_ex_keeps_lu
            and trans == "N"
            and b.dtype == a.dtype
            and ((a.ndim == 2 and b.ndim == 2) or a.shape[:-2] == b.shape[:-2])
            and not _transforms_active()
        ):
            # One kernel call for the factorization and the solve, as torch.linalg.solve
            # makes: for small matrices the call, not the arithmetic, is the cost.
            x, lu, pivots, info = _solve_ex(a, b, left=True, check_errors=False)
            return Factor(a, lu, pivots), x, info
        lu, pivots, info = torch.linalg.lu_factor_ex(a)
        factor = Factor(a, lu, pivots)
        return factor, self.lu_solve(factor, b, trans), info

    def inv(self, a: Any) -> tuple[Any, Any]:
        return torch.linalg.inv_ex(a)


class DifferentiableKernels(TorchKernels):
    """The kernels of ``backward``/``jvp``: ``lu_solve`` differentiable w.r.t. ``a`` and ``b``."""

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        lu = factor.lu
        if (
            # first-order backward: nothing to differentiate, the plain kernel will do
            not torch.is_grad_enabled()
            and _forward_ad._current_level < 0
            and (trans == "N" or trans == "H")
            and b.dtype == lu.dtype
            and ((lu.ndim == 2 and b.ndim == 2) or (lu.ndim == 3 and lu.shape[:-2] == b.shape[:-2]))
            and not _transforms_active()
        ):
            return _lu_solve_native(lu, factor.pivots, b, adjoint=trans == "H")
        return _lu_solve(factor.a, lu, factor.pivots, b, trans)


class CompileKernels:
    """The kernels inside ``torch.compile``: aten ops only, no question about transforms or
    forward AD (Dynamo traces none of that; AOTAutograd differentiates the graph)."""

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        lu, pivots, info = torch.linalg.lu_factor_ex(a)
        return Factor(a, lu, pivots), info

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        return _raw_lu_solve(factor.lu, factor.pivots, b, trans, _eager_lu_solve)

    def solve(self, a: Any, b: Any, trans: str = "N") -> tuple[Factor, Any, Any]:
        if (
            _solve_ex_keeps_lu
            and trans == "N"
            and b.dtype == a.dtype
            and ((a.ndim == 2 and b.ndim == 2) or a.shape[:-2] == b.shape[:-2])
        ):
            x, lu, pivots, info = _solve_ex(a, b, left=True, check_errors=False)
            return Factor(a, lu, pivots), x, info
        factor, info = self.lu_factor(a)
        return factor, self.lu_solve(factor, b, trans), info

    def inv(self, a: Any) -> tuple[Any, Any]:
        return torch.linalg.inv_ex(a)


# ---------------------------------------------------------------------------
# autograd.Function classes
# ---------------------------------------------------------------------------


def _apply_fast(cls: Any, *args: Any) -> Any:
    """``cls.apply(*args)`` with every argument positional, outside torch.func transforms.

    ``Function.apply`` binds the arguments with ``inspect.signature`` on every
    call, tens of microseconds; the C entry point it ends in does the work.
    """
    unwrap = torch._C._functorch.unwrap_if_dead
    return cls._c_apply(*(unwrap(x) if isinstance(x, torch.Tensor) else x for x in args))


def _function_class(name: str, vmap_rule: Callable[..., Any] | None = None, **methods: Any) -> Any:
    """An ``autograd.Function`` subclass: a given vmap rule, else a generated one."""
    body: dict[str, Any] = {"__module__": __name__}
    if vmap_rule is None:
        body["generate_vmap_rule"] = True
    else:
        methods["vmap"] = vmap_rule
    body.update({k: staticmethod(f) for k, f in methods.items()})
    cls: Any = type(name, (torch.autograd.Function,), body)
    cls._c_apply = torch._C._FunctionBase.__dict__["apply"].__get__(None, cls)
    return cls


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
        if _forward_ad._current_level >= 0:
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


# ---------------------------------------------------------------------------
# the user-facing op
# ---------------------------------------------------------------------------

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
    compiling = torch.compiler.is_compiling
    check_errors, api_name = torch._linalg_check_errors, f"invad.{rule.name}"
    name, check, xp = rule.name, rule.check, la.xp
    inputs = rule.contract.inputs
    n_in = len(inputs)
    params = tuple(p.name for p in rule.contract.params)
    defaults = tuple(p.default for p in rule.contract.params)
    returns_info = rule.returns_info
    primal = rule.primal
    singular = backend.raise_if_singular
    unwrap = torch._C._functorch.unwrap_if_dead
    checked: set[Any] = set()

    def validate(args: tuple[Any, ...], pvals: tuple[Any, ...]) -> None:
        """``rule.check``, which depends on shapes, dtypes and parameters only: once per
        signature. Only tensors' signatures are remembered: anything else raises here."""
        for arg, x in zip(inputs, args):
            if not isinstance(x, torch.Tensor):
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
        if info.ndim or _transforms_active() or info.is_meta or info:
            singular(name, a.shape, info)
        return out[0]

    def traced(*args: Any, **kwargs: Any) -> Any:
        """The op while ``torch.compile`` traces it: the checks (shapes are static to the
        graph, so they cost nothing at run time), the compile class, and the singular
        check as torch.linalg makes it in a graph, by the aten op that raises
        ``torch.linalg.LinAlgError`` when the graph runs."""
        args, pvals = call(*args, **kwargs)
        for arg, x in zip(inputs, args):
            if not isinstance(x, torch.Tensor):
                raise _not_a_tensor(name, arg, x)
        check(xp, name, *args, **dict(zip(params, pvals)))
        if n_in == 2:
            a, b = args
            if a.device != b.device:
                _check_same_device(backend, name, args)
            if a.dtype != b.dtype:
                dtype = torch.promote_types(a.dtype, b.dtype)
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
                dtype = torch.promote_types(a.dtype, b.dtype)
                a, b = a.to(dtype), b.to(dtype)
            if _transforms_active():
                return finish(fn.apply(a, b, *pvals), a)
            if (
                torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            ) or _forward_ad._current_level >= 0:
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
            if _transforms_active():
                return finish(fn.apply(a, *pvals), a)
            if (torch.is_grad_enabled() and a.requires_grad) or _forward_ad._current_level >= 0:
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


# ---------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------


class TorchBackend(Backend):
    """PyTorch: ops as ``torch.autograd.Function``s, errors as ``torch.linalg.LinAlgError``."""

    name = "torch"
    native_ad = True
    array_type = "torch.Tensor"

    def load(self) -> None:
        global torch, _forward_ad, _LUSolve, _RawLUSolve, _transforms_active, _lu_solve_native
        global _solve_ex, _solve_ex_keeps_lu
        try:
            import torch as torch_module
        except ImportError as exc:
            raise ImportError(
                f"torch is not installed ({exc}); install it with: pip install 'invad[torch]'"
            ) from exc
        import torch.autograd.forward_ad as forward_ad

        torch, _forward_ad = torch_module, forward_ad
        _transforms_active = torch._C._are_functorch_transforms_active
        _lu_solve_native = torch.linalg.lu_solve
        _solve_ex = getattr(torch, "_linalg_solve_ex", None)
        _solve_ex_keeps_lu = _check_solve_ex()
        _LUSolve = _function_class(
            "LUSolve",
            forward=_lu_solve_forward,
            setup_context=_lu_solve_setup_context,
            backward=_lu_solve_backward,
            jvp=_lu_solve_jvp,
        )
        _RawLUSolve = _function_class(
            "RawLUSolve",
            vmap_rule=_raw_vmap,
            forward=_raw_forward,
            setup_context=_raw_setup_context,
            backward=_raw_backward,
        )

    def version(self) -> str | None:
        return str(torch.__version__)

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_torch_array(x))

    def namespace(self) -> Any:
        import array_api_compat.torch

        return array_api_compat.torch

    @property
    def linalg_error(self) -> type[Exception]:
        return torch.linalg.LinAlgError

    def devices(self) -> Sequence[str]:
        names = ["cpu"]
        if torch.cuda.is_available():
            names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            names.append("mps")
        return tuple(names)

    def resolve_device(self, device: Any) -> Any:
        if device is None:
            default = getattr(torch, "get_default_device", None)
            return default() if default is not None else torch.device("cpu")
        try:
            resolved = torch.device(device)
            torch.empty(0, device=resolved)  # raises if this torch cannot use it
        except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
            raise ValueError(
                f"backend 'torch' cannot use device {device!r}: {exc}; "
                f"available devices: {', '.join(self.devices())}"
            ) from None
        return resolved

    def device_of(self, x: Any) -> Any:
        return x.device

    def kernels(self, device: Any) -> TorchKernels:
        return TorchKernels()

    def raise_if_singular(self, op: str, shape: tuple[int, ...], info: Any) -> None:
        if _transforms_active() and _under_vmap():
            return  # no data-dependent error under vmap: non-finite values, as linalg.*_ex
        if info.is_meta:
            return  # no values to look at
        if not (bool(info) if info.ndim == 0 else bool(info.any())):
            return
        super().raise_if_singular(op, tuple(shape), info)

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        xp = la.xp
        # The rules' dtype cache filled now: torch.compile traces a lookup, not a mutation.
        for dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            is_complex(xp, ArrayMeta((), dtype))
        kernels = Linalg.build(xp, DifferentiableKernels()), Linalg.build(xp, CompileKernels())
        return _torch_op(rule, la, *kernels, self)

    # -- native AD (the conformance kit's check of the installed ops) ------------

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        return torch.func.jvp(fn, tuple(primals), tuple(tangents))[1]

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """PyTorch's reverse mode is already the adjoint (conjugate) convention."""
        _, pullback = torch.func.vjp(fn, *primals)
        return tuple(pullback(cotangent))

    def to_numpy(self, x: Any) -> Any:
        return x.detach().cpu().resolve_conj().resolve_neg().numpy()

    def from_numpy(self, x: Any, device: Any) -> Any:
        return torch.as_tensor(x, device=device)


def _under_vmap() -> bool:
    vmap = torch._C._functorch.TransformType.Vmap
    return any(i.key() == vmap for i in torch._C._functorch.get_interpreter_stack() or ())


@hookimpl
def invad_backends() -> list[Backend]:
    return [TorchBackend()]
