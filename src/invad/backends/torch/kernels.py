"""The kernels: torch's LU solve, and the kernel sets the rules run on.

- The LU solve kernel (``_raw_lu_solve``, around a torch stride bug in
  ``_eager_lu_solve``), ``RawLUSolve`` (that kernel under ``torch.func``
  transforms, with a vmap rule of ours) and ``LUSolve`` ("solve with this
  factorization of ``a``", differentiable w.r.t. ``a`` and ``b``, whose own
  derivatives solve with the same factorization again). Both classes are made
  by :meth:`TorchBackend.load` and live in :mod:`._state`.
- The kernel sets a :class:`~invad.rules.Linalg` is built from:
  :class:`TorchKernels` (the forward pass), :class:`DifferentiableKernels`
  (``backward``/``jvp``) and :class:`CompileKernels` (inside ``torch.compile``).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

from ...rules import CholeskyFactor, Factor
from ...rules._linalg import portable_check_pivots
from . import _state as state
from .functions import _apply_fast, _differentiated, _function_class, _in_jvp


def _check_solve_ex() -> bool:
    """Whether ``aten._linalg_solve_ex`` returns the LU factors of ``A`` itself.

    It is torch.linalg.solve's kernel; some torch versions factor ``A^T`` there
    instead (to spare a copy), which invad's derivatives could not reuse as they
    stand. Checked once, on a matrix whose LU and its transpose's differ.
    """
    torch = state.torch
    a = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 2.0], [0.5, 4.0, 1.0]], dtype=torch.float64)
    try:
        _, lu, pivots, _ = state.solve_ex(a, torch.ones(3, 1, dtype=a.dtype), left=True)
    except (AttributeError, RuntimeError, TypeError):
        return False
    expected, expected_pivots, _ = torch.linalg.lu_factor_ex(a)
    return bool(torch.equal(lu, expected) and torch.equal(pivots, expected_pivots))


# ---------------------------------------------------------------------------
# the LU solve kernel
# ---------------------------------------------------------------------------

#: The solve against op(A)^H that the derivatives of a solve against op(A) need:
#: (A)^H = A^H, (A^H)^H = A, (A^T)^H = conj(A), conj(A)^H = A^T. "P" is a solve with a
#: Hermitian positive-definite A from its lower Cholesky factor (in place of ``lu``,
#: ``pivots`` None): A^H = A.
_ADJOINT = {"N": "H", "H": "N", "T": "C", "C": "T", "P": "P"}


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
    if trans == "P":  # lu is the lower Cholesky factor of A
        return _cholesky_solve_with(lu, b, False)
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
    if state.transforms_active():
        return state.RawLUSolve.apply(lu, pivots, b, left, adjoint)
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
        batch = state.torch.broadcast_shapes(lu.shape[:-2], b.shape[:-2])
        lu = lu.expand(*batch, n, n)
        pivots = pivots.expand(*batch, n)
        b = b.expand(*batch, *b.shape[-2:])
    if lu.ndim <= 3:
        return state.lu_solve_native(lu, pivots, b, left=left, adjoint=adjoint)
    batch = lu.shape[:-2]
    count = math.prod(batch)
    x = state.lu_solve_native(
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
    """``op(m)`` for ``trans`` in N, T, H, C (and P: A itself)."""
    if trans in ("N", "P"):
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
        if trans in ("N", "P"):
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
    if state.transforms_active():
        return state.LUSolve.apply(a, lu, pivots, b, trans)
    if (
        state.torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    ) or state.forward_ad._current_level >= 0:
        return _apply_fast(state.LUSolve, a, lu, pivots, b, trans)
    return _raw_lu_solve(lu, pivots, b, trans)


def _needs_forward_saves() -> bool:
    """Whether a jvp may follow: a forward-AD dual level is open, or a torch.func transform."""
    return state.forward_ad._current_level >= 0 or state.transforms_active()


def _lu_solve_functions() -> tuple[Any, Any]:
    """The ``autograd.Function`` classes ``LUSolve`` and ``RawLUSolve`` (bound by
    :meth:`TorchBackend.load` as ``state.LUSolve`` and ``state.RawLUSolve``)."""
    lu_solve = _function_class(
        "LUSolve",
        forward=_lu_solve_forward,
        setup_context=_lu_solve_setup_context,
        backward=_lu_solve_backward,
        jvp=_lu_solve_jvp,
    )
    raw_lu_solve = _function_class(
        "RawLUSolve",
        vmap_rule=_raw_vmap,
        forward=_raw_forward,
        setup_context=_raw_setup_context,
        backward=_raw_backward,
    )
    return lu_solve, raw_lu_solve


# ---------------------------------------------------------------------------
# the triangular solve, the row interchanges, the determinants
# ---------------------------------------------------------------------------
# torch's own differentiable ops: in the derivative kernels they make every order of
# the rules built from them (lu_factor, lu_solve, solve_triangular, det) follow by
# torch's autograd, forward mode and functorch batching rules.


def _solve_triangular(t: Any, b: Any, upper: bool, trans: str, unit: bool) -> Any:
    """``op(T)^-1 b`` with ``torch.linalg.solve_triangular``, which reads only the triangle
    named (not its diagonal if ``unit``); ``op(T)`` is the other triangle of ``T^T`` or
    ``T^H``, views that torch hands to BLAS as transposed (and conjugated) operands."""
    if t.dtype != b.dtype:
        dtype = state.torch.promote_types(t.dtype, b.dtype)
        t, b = t.to(dtype), b.to(dtype)
    if trans != "N":
        t = t.mH if trans == "H" else t.mT
        upper = not upper
    return state.torch.linalg.solve_triangular(t, b, upper=upper, unitriangular=unit)


#: What was derived eagerly from the last pivots tensor: ``(key, weak reference to the
#: pivots, {what: value})``: its row sources, both directions (a solve's forward reads
#: ``P^T``, its backward ``P``), and whether its values were checked. One entry: "factor
#: once, solve many" reuses it in every solve. It keeps nothing alive but two index
#: vectors; the pivots' own identity and version are checked.
_last_pivots: tuple[Any, Any, dict[Any, Any]] | None = None


def _pivots_memo(pivots: Any, m: int) -> dict[Any, Any] | None:
    """What is remembered of the last plain (eager, not inference) pivots tensor while it
    lives unchanged, for ``m`` rows; ``None`` where nothing may be remembered."""
    global _last_pivots
    torch = state.torch
    if (
        type(pivots) is not torch.Tensor
        or state.transforms_active()
        or torch.compiler.is_compiling()
        or pivots.is_inference()
    ):
        return None
    key = (pivots._version, m)
    last = _last_pivots
    if last is None or last[0] != key or last[1]() is not pivots:
        last = _last_pivots = (key, weakref.ref(pivots), {})
    return last[2]


def _row_source(pivots: Any, m: int, inverse: bool) -> Any:
    """:func:`_derive_row_source`, remembered (:func:`_pivots_memo`)."""
    memo = _pivots_memo(pivots, m)
    if memo is None:
        return _derive_row_source(pivots, m, inverse)
    source = memo.get(inverse)
    if source is None:
        source = memo[inverse] = _derive_row_source(pivots, m, inverse)
    return source


def _derive_row_source(pivots: Any, m: int, inverse: bool) -> Any:
    """The row of ``x`` each row of ``P^T x`` (or of ``P x``, ``inverse``) comes from, for
    ``A = P L U`` with torch's 1-based LAPACK row interchanges ``pivots``; ``(..., m)``.

    ``torch.lu_unpack`` applies the interchanges in C++ and writes ``P``, here as
    float32 zeros and ones (``L U`` is not unpacked: the factor it is given is a
    broadcast scalar of the right shape); one matrix-vector product with
    ``0, 1, ..., m - 1`` reads the row indices off it, exactly (integers below
    2**24). A Python loop over the interchanges would cost one kernel call each.
    """
    torch = state.torch
    k = pivots.shape[-1]
    if pivots.dtype != torch.int32:
        pivots = pivots.to(torch.int32)
    dtype = torch.float32 if m < 2**24 else torch.float64
    shape = torch.zeros((), dtype=dtype, device=pivots.device).expand(*pivots.shape[:-1], m, k)
    p = torch.lu_unpack(shape, pivots, unpack_data=False)[
        0
    ]  # P[i, j] = 1: row i of A is row j of LU
    rows = torch.arange(m, dtype=dtype, device=pivots.device)
    # (P^T x)[j] = x[i] where P[i, j] = 1;  (P x)[i] = x[j] where P[i, j] = 1.
    source = p @ rows if inverse else rows @ p
    return source.to(torch.int64)


def _permute_rows(pivots: Any, x: Any, inverse: bool) -> Any:
    """``P^T x`` (LAPACK's laswp: the interchanges in order) or ``P x``, by one gather:
    differentiable with respect to ``x`` at every order, batched by torch.func."""
    m, k = x.shape[-2], x.shape[-1]
    source = _row_source(pivots, m, inverse)
    if source.ndim == 1:  # one permutation for the whole batch
        return x.index_select(-2, source)
    batch = source.shape[:-1]
    if batch != x.shape[:-2]:  # torch.broadcast_shapes costs tens of microseconds
        batch = state.torch.broadcast_shapes(batch, x.shape[:-2])
        x = x.expand(*batch, m, k)
    return x.gather(-2, source[..., None].expand(*batch, m, k))


def _check_pivots(op: str, pivots: Any, m: int) -> None:
    """:func:`~invad.rules._linalg.portable_check_pivots` (1-based), read once per pivots
    tensor while it is unchanged (:func:`_pivots_memo`); nothing where values cannot be
    read."""
    if pivots.is_meta or state.transforms_active() or state.torch.compiler.is_compiling():
        return
    memo = _pivots_memo(pivots, m)
    if memo is not None and memo.get("checked"):
        return
    import array_api_compat.torch

    portable_check_pivots(array_api_compat.torch, op, pivots, m, 1)
    if memo is not None:
        memo["checked"] = True


#: Strictly upper triangles' masks by (n, device), for the last few sizes: a constant of
#: every lu_solve's backward, which costs two aranges and a comparison to make.
_upper_masks: dict[tuple[int, Any], Any] = {}


def _strictly_upper(n: int, device: Any) -> Any:
    torch = state.torch
    if torch.compiler.is_compiling():
        return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    mask = _upper_masks.get((n, device))
    if mask is None:
        if len(_upper_masks) >= 8:
            _upper_masks.clear()
        mask = _upper_masks[n, device] = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)
    return mask


def _packed_outer(h: Any, y: Any, g: Any, x: Any) -> Any:
    """``tril_-(h y^H) + triu(g x^H)``: the portable formula (rules._linalg) on a cached mask.
    Built as its transpose, so that the result is column-major, as torch's ``LU`` is.

    Written out in torch, not by calling the portable one: that one's cached dtype test
    (``is_complex``) writes a module dict, a side effect that torch.compile refuses inside
    an autograd.Function."""
    if y.is_complex():
        y, x = y.conj(), x.conj()
    if h.shape[-1] == 1:
        lower, upper = y * h.mT, x * g.mT  # (h y^H)^T = conj(y) h^T
    else:
        lower, upper = y @ h.mT, x @ g.mT
    return state.torch.where(_strictly_upper(h.shape[-2], h.device), lower, upper).mT


def _det_of_lu(lu: Any, pivots: Any) -> tuple[Any, Any]:
    """The diagonal of ``U`` and ``det(P)`` (+1 or -1, of ``lu``'s dtype) from torch's LU."""
    torch = state.torch
    d = lu.diagonal(dim1=-2, dim2=-1)
    n = pivots.shape[-1]
    moved = pivots != torch.arange(1, n + 1, dtype=pivots.dtype, device=pivots.device)
    odd = moved.sum(-1, dtype=torch.int32).remainder(2).to(d.dtype)
    return d, 1 - 2 * odd


def _slogdet(a: Any) -> tuple[Factor, Any, Any, Any]:
    """``(Factor, sign, logabsdet, info)`` from one ``lu_factor_ex``.

    Not ``aten._linalg_slogdet``: for a real, contiguous input it factors
    ``A^T`` (which LAPACK reads without a copy), and its LU is then no
    factorization ``A = P L U`` that the rules could reuse; ``lu_factor_ex``
    costs the same (measured).
    """
    lu, pivots, info = state.torch.linalg.lu_factor_ex(a)
    d, parity = _det_of_lu(lu, pivots)
    absd = d.abs()
    logabsdet = absd.log().sum(-1)
    # The phase of each pivot: 0 where it is 0 (then sign 0, logabsdet -inf).
    phase = d / absd.masked_fill(absd == 0, 1) if d.is_complex() else d.sign()
    return Factor(a, lu, pivots), phase.prod(-1) * parity, logabsdet, info


def _det(a: Any) -> tuple[Factor, Any, Any]:
    """``(Factor, det, info)`` from one ``lu_factor_ex`` (see :func:`_slogdet`)."""
    lu, pivots, info = state.torch.linalg.lu_factor_ex(a)
    d, parity = _det_of_lu(lu, pivots)
    return Factor(a, lu, pivots), d.prod(-1) * parity, info


def _lu_factor(a: Any) -> tuple[Factor, Any]:
    lu, pivots, info = state.torch.linalg.lu_factor_ex(a)
    return Factor(a, lu, pivots), info


def _detached(x: Any) -> Any:
    """``Linalg.constant``: ``x`` without a graph, at every level of torch.func too."""
    return x.detach()


def _int32(pivots: Any) -> Any:
    """Pivots as torch's LAPACK wrappers take them (a user may pass int64)."""
    return pivots if pivots.dtype == state.torch.int32 else pivots.to(state.torch.int32)


# ---------------------------------------------------------------------------
# the kernel sets

# ---------------------------------------------------------------------------


def _fused_solve_fits(a: Any, b: Any, trans: str) -> bool:
    """Whether ``aten._linalg_solve_ex`` can factor and solve in one call, keeping A's LU."""
    return (
        state.solve_ex_keeps_lu
        and trans == "N"
        and b.dtype == a.dtype
        and ((a.ndim == 2 and b.ndim == 2) or a.shape[:-2] == b.shape[:-2])
    )


def _cholesky(a: Any, upper: bool) -> tuple[Any, Any]:
    """``torch.linalg.cholesky_ex`` (it reads one triangle), with ``info`` also where a pivot
    came out NaN: LAPACK builds differ on whether ``potrf`` looks for it."""
    torch = state.torch
    if not state.transforms_active() and a.is_contiguous():
        # LAPACK reads a row-major ``a`` as ``a^T`` without a copy. The triangle of ``a^T``
        # that stands for ``a``'s is the other one, and its factor is this one's transpose
        # (``a^T``'s Hermitian matrix is ``conj(A)``, whose factor is ``conj(c)``): measured
        # 1.35x faster than ``cholesky_ex(a)`` at n = 256 (MKL's lower potrf is the slow one).
        c, info = torch.linalg.cholesky_ex(a.mT, upper=not upper)
        c = c.mT
    else:
        c, info = torch.linalg.cholesky_ex(a, upper=upper)
    d = torch.diagonal(c, dim1=-2, dim2=-1)
    failed = ~(torch.isfinite(d) & (d.real > 0))
    if d.shape[-1] == 0:
        return c, info
    return c, torch.where(info == 0, _first_true(failed).to(info.dtype), info)


def _first_true(mask: Any) -> Any:
    """LAPACK-style ``info`` of a boolean ``(..., n)`` mask: 1 + the index of its first true
    entry, 0 where it has none (int32)."""
    torch = state.torch
    first = torch.argmax(mask.to(torch.int32), dim=-1).to(torch.int32) + 1
    return torch.where(mask.any(dim=-1), first, 0).to(torch.int32)


def _cholesky_solve(factor: CholeskyFactor, b: Any) -> Any:
    """``A^-1 b`` from ``A``'s Cholesky factor by two triangular solves (batches broadcast),
    differentiable by torch with respect to the factor and ``b`` at every order.

    Not ``torch.cholesky_solve``: it copies a factor that is not column-major
    (the one :func:`_cholesky` makes is row-major), and even given its own
    layout it is slower than the two solves (measured: n = 256 batch 16, one
    right-hand side, 1.2 ms against 1.6 ms).
    """
    return _cholesky_solve_with(factor.c, b, factor.upper)


def _cholesky_solve_with(c: Any, b: Any, upper: bool) -> Any:
    """``(c c^H)^-1 b``, or ``(c^H c)^-1 b`` if ``upper``."""
    if upper:  # A = U^H U
        return _solve_triangular(c, _solve_triangular(c, b, True, "H", False), True, "N", False)
    return _solve_triangular(c, _solve_triangular(c, b, False, "N", False), False, "H", False)


class TorchKernels:
    """The kernels of the forward pass: torch.linalg's LAPACK wrappers, no autograd of ours.

    ``pivots`` are torch's own: 1-based int32, as ``torch.linalg.lu_factor``
    returns them and ``torch.linalg.lu_solve`` takes them.
    """

    pivot_base = 1

    @staticmethod
    def lu_factor(a: Any) -> tuple[Factor, Any]:
        return _lu_factor(a)

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        lu, pivots = factor.lu, _int32(factor.pivots)
        if (
            trans == "N"
            and lu.ndim <= 3
            and b.dtype == lu.dtype
            and lu.shape[:-2] == b.shape[:-2]
            and not state.transforms_active()
        ):
            return state.lu_solve_native(lu, pivots, b)
        return _raw_lu_solve(lu, pivots, b, trans)

    def solve(self, a: Any, b: Any, trans: str = "N") -> tuple[Factor, Any, Any]:
        if _fused_solve_fits(a, b, trans) and not state.transforms_active():
            # One kernel call for the factorization and the solve, as torch.linalg.solve
            # makes: for small matrices the call, not the arithmetic, is the cost.
            x, lu, pivots, info = state.solve_ex(a, b, left=True, check_errors=False)
            return Factor(a, lu, pivots), x, info
        lu, pivots, info = state.torch.linalg.lu_factor_ex(a)
        factor = Factor(a, lu, pivots)
        return factor, self.lu_solve(factor, b, trans), info

    @staticmethod
    def inv(a: Any) -> tuple[Any, Any]:
        return state.torch.linalg.inv_ex(a)

    solve_triangular = staticmethod(_solve_triangular)
    permute_rows = staticmethod(_permute_rows)
    check_pivots = staticmethod(_check_pivots)
    packed_outer = staticmethod(_packed_outer)
    constant = staticmethod(_detached)
    slogdet = staticmethod(_slogdet)
    det = staticmethod(_det)
    cholesky = staticmethod(_cholesky)
    cholesky_solve = staticmethod(_cholesky_solve)

    @staticmethod
    def first_zero(d: Any) -> Any:
        """``info`` of a diagonal: one comparison and one read when there is no zero (every
        call of lu_solve, solve_triangular and cholesky_solve, where the formula would cost
        as much as the solve itself at n = 256, k = 1)."""
        torch = state.torch
        if d.shape[-1] == 0 or (not state.transforms_active() and not d.is_meta and bool(d.all())):
            return torch.zeros(d.shape[:-1], dtype=torch.int32, device=d.device)
        return _first_true(d == 0)

    @staticmethod
    def if_any(mask: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        """``then()`` if any element of ``mask`` is true, read eagerly; ``then()`` where no
        value can be read (torch.func transforms, the meta device), as it is right for
        every element."""
        if state.transforms_active() or mask.is_meta:
            return then()
        return then() if bool(mask.any()) else otherwise()


class DifferentiableKernels(TorchKernels):
    """The kernels of ``backward``/``jvp``: ``lu_solve`` differentiable w.r.t. ``a`` and ``b``
    (with a user's factor, ``factor.a`` None: w.r.t. ``LU`` and ``b``); the triangular
    solve and the row interchanges are torch's differentiable ops already."""

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        lu = factor.lu
        if (
            # first-order backward: nothing to differentiate, the plain kernel will do
            not state.torch.is_grad_enabled()
            and state.forward_ad._current_level < 0
            and (trans == "N" or trans == "H")
            and b.dtype == lu.dtype
            and ((lu.ndim == 2 and b.ndim == 2) or (lu.ndim == 3 and lu.shape[:-2] == b.shape[:-2]))
            and not state.transforms_active()
        ):
            return state.lu_solve_native(lu, _int32(factor.pivots), b, adjoint=trans == "H")
        if factor.a is None:
            return _triangular_lu_solve(factor, b, trans)
        return _lu_solve(factor.a, lu, _int32(factor.pivots), b, trans)

    @staticmethod
    def factored_det(a: Any, factor: Factor) -> Any:
        """``det(a)`` from ``factor``; differentiable (a fresh LU of ``a``) only where this
        derivative is differentiated in turn: a first-order backward needs the value alone."""
        if _differentiated():
            return _det(a)[1]
        d, parity = _det_of_lu(factor.lu, factor.pivots)
        return d.prod(-1) * parity

    @staticmethod
    def cholesky_solve(factor: CholeskyFactor, b: Any) -> Any:
        """With the matrix (``solve(assume_a="pos")``): differentiable w.r.t. ``a`` and ``b``
        as ``lu_solve`` is, through the same Function; with a user's factor, torch's own
        derivative of ``cholesky_solve`` w.r.t. the factor and ``b``."""
        if factor.a is None or factor.upper:
            return _cholesky_solve(factor, b)
        a = factor.a
        if _differentiated():
            # The solve is differentiated w.r.t. a as a general matrix; a Hermitian a's
            # cotangent (at the next order too) is the Hermitian part of that.
            a = (a + a.mH) / 2
        return _lu_solve(a, factor.c, None, b, "P")


def _triangular_lu_solve(factor: Factor, b: Any, trans: str) -> Any:
    """``op(A)^-1 b`` from ``A = P L U`` by torch's differentiable triangular solves and a
    gather: differentiable with respect to ``LU`` and ``b`` at every order (``getrs``
    step for step)."""
    lu, pivots = factor.lu, factor.pivots
    if trans == "N":
        y = _solve_triangular(lu, _permute_rows(pivots, b, False), False, "N", True)
        return _solve_triangular(lu, y, True, "N", False)
    # op(A) = op(U) op(L) P^T
    y = _solve_triangular(lu, b, True, trans, False)
    return _permute_rows(pivots, _solve_triangular(lu, y, False, trans, True), True)


class CompileKernels:
    """The kernels inside ``torch.compile``: aten ops only, no question about transforms or
    forward AD (Dynamo traces none of that; AOTAutograd differentiates the graph)."""

    pivot_base = 1

    @staticmethod
    def lu_factor(a: Any) -> tuple[Factor, Any]:
        return _lu_factor(a)

    @staticmethod
    def lu_solve(factor: Factor, b: Any, trans: str = "N") -> Any:
        return _raw_lu_solve(factor.lu, _int32(factor.pivots), b, trans, _eager_lu_solve)

    def solve(self, a: Any, b: Any, trans: str = "N") -> tuple[Factor, Any, Any]:
        if _fused_solve_fits(a, b, trans):
            x, lu, pivots, info = state.solve_ex(a, b, left=True, check_errors=False)
            return Factor(a, lu, pivots), x, info
        factor, info = self.lu_factor(a)
        return factor, self.lu_solve(factor, b, trans), info

    @staticmethod
    def inv(a: Any) -> tuple[Any, Any]:
        return state.torch.linalg.inv_ex(a)

    solve_triangular = staticmethod(_solve_triangular)
    permute_rows = staticmethod(_permute_rows)
    check_pivots = staticmethod(_check_pivots)
    packed_outer = staticmethod(_packed_outer)
    constant = staticmethod(_detached)
    slogdet = staticmethod(_slogdet)
    det = staticmethod(_det)
    cholesky = staticmethod(_cholesky)
    cholesky_solve = staticmethod(_cholesky_solve)

    @staticmethod
    def if_any(mask: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        """``then()``, right for every element: a graph cannot branch on values."""
        return then()
