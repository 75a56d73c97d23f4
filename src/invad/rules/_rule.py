"""The shape of a rule: its contract, its primal, its linearization and its adjoint."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ._linalg import Array

CONVENTION = (
    "VJP is the adjoint under the real Frobenius inner product <X, Y> = Re tr(X^H Y) "
    "(PyTorch's convention); JAX's linear transpose is its conjugate, "
    "jax_vjp(ct) = conj(vjp(conj(ct))). Real primals get real cotangents."
)

SUPPORTED_DTYPES = ("float32", "float64", "complex64", "complex128")

#: What the ``_ex`` twins of LU-based ops say about singular input.
GETRF_INFO = (
    "Never raises: `info` is an integer array of the batch shape, 0 where the matrix was "
    "factored, k > 0 where U[k-1, k-1] == 0 (LAPACK getrf); it has no derivative. Values "
    "for singular batch elements are not finite."
)

#: The singular-matrix error of an LU factorization, after ``invad.<op>: ``. Placeholders:
#: ``{where}`` (" at batch index (i, j)" or ""), ``{shape}``, ``{k}`` (info - 1), ``{order}``.
ZERO_PIVOT = (
    "singular matrix{where} (input shape {shape}): U[{k}, {k}] of its LU factorization is "
    "exactly zero"
)


@dataclass(frozen=True)
class Param:
    """A keyword parameter of an op; ``default=Param.REQUIRED`` for one without a default."""

    REQUIRED: ClassVar[Any] = inspect.Parameter.empty

    name: str
    default: Any
    meaning: str


@dataclass(frozen=True)
class Contract:
    """What an op promises: the facts that ``invad.rules()`` lists and the docs print."""

    name: str
    summary: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    differentiable_outputs: tuple[str, ...]
    params: tuple[Param, ...]
    forward: str
    linearization: str
    adjoint: str  # the VJP in the adjoint convention (PyTorch's, ``ops.vjp``)
    transpose: str  # the VJP as JAX's linear transpose: conj(adjoint(conj(ct)))
    domain: str
    singular: str
    shapes: str
    convention: str = CONVENTION
    dtypes: tuple[str, ...] = SUPPORTED_DTYPES
    #: Inputs that are integer arrays (``lu_solve``'s pivots): never differentiated.
    integer_inputs: tuple[str, ...] = ()
    #: What ``info = k > 0`` means, for the singular-matrix error (``{k}`` is k - 1).
    zero_pivot: str = ZERO_PIVOT
    #: Per input, how many trailing dimensions one problem takes (2 for a matrix, 1 for
    #: ``lu_solve``'s pivots); empty means 2 for every input. The dimensions before them are
    #: batch dimensions, broadcast between the inputs; an input with fewer dimensions
    #: (``solve``'s vector ``b``) belongs whole to every problem of the batch. Backends that
    #: split a batch into blocks (Dask) read it.
    core_ndim: tuple[int, ...] = ()
    #: False for the ops without batch dimensions (``tensorinv``, ``tensorsolve``: every
    #: index of every input belongs to the one matrix).
    batched: bool = True


@dataclass(frozen=True)
class Primal:
    """A rule's forward result: the value, LAPACK ``info``, and residuals.

    ``value`` is one array, or for an op with several outputs (``lu_factor``'s
    ``(LU, pivots)``, ``slogdet``'s ``(sign, logabsdet)``) a tuple of them in
    the contract's output order.

    ``residuals`` is a NamedTuple per rule, the least its derivatives need:
    arrays, which backends save with their own machinery
    (``ctx.save_for_backward``, extra outputs of a ``torch.autograd.Function``),
    and, for an input whose values no derivative reads, its
    :class:`~invad.rules.ArrayMeta` (shape and dtype, a field annotated
    ``ArrayMeta`` and named after the input), which backends keep as a plain
    Python value. ``rule.residuals(*fields)`` rebuilds it.
    """

    value: Any  # one array, or a tuple of them (several outputs)
    info: Array
    residuals: Any  # the rule's NamedTuple of arrays and ArrayMeta


Check = Callable[..., None]
PrimalFn = Callable[..., Primal]
JvpFn = Callable[..., Array]
VjpFn = Callable[..., tuple[Array | None, ...]]


@dataclass(frozen=True)
class Rule:
    """One op: its contract and the three functions that every backend installs.

    - ``check(xp, op, *inputs, **params)`` raises ``TypeError``/``ValueError`` on bad input,
      naming ``op`` (the rule's or its ``_ex`` twin's name);
    - ``primal(la, *inputs, **params) -> Primal``;
    - ``jvp(la, residuals, tangents, **params) -> output tangent``; ``tangents`` is a
      tuple in input order, ``None`` for a zero tangent (always for integer inputs);
    - ``vjp(la, residuals, cotangent, needs, **params) -> input cotangents``, a tuple in
      input order in the adjoint convention; ``needs[i]`` false lets the rule skip
      input ``i`` (and return ``None`` for it).

    For an op with several outputs the output tangent and the cotangent are
    tuples in output order, ``None`` for zero (and for the outputs that are
    not differentiable).

    ``returns_info`` marks the ``_ex`` variants, whose result ends with ``info``
    and which never raise on singular input. ``raises`` is false for the ops
    that never raise at all (``det``, ``slogdet``, ``lu_factor``): a singular
    matrix is in their domain.
    """

    contract: Contract
    check: Check
    primal: PrimalFn
    jvp: JvpFn
    vjp: VjpFn
    residuals: type
    returns_info: bool = False
    raises: bool = True
    #: ``info``'s meaning when it depends on a parameter (``solve(assume_a="pos")``).
    info_meaning: Callable[[dict[str, Any]], str] | None = None
    #: ``rederive(la, residuals, **params) -> residuals`` for a rule whose residuals hold a
    #: value the forward passes on the way (``lu_solve``'s half-way solution): the same
    #: residuals with that value recomputed from the inputs and outputs by ``la``'s
    #: differentiable kernels. Backends that save it as a plain array, cut from the inputs
    #: (torch's intermediates), call this where their derivative is differentiated in turn
    #: (double backward, forward over reverse, torch.func), so that every order holds.
    rederive: Callable[..., Any] | None = None
    #: ``check_values(la, op, *inputs, **params)`` for a rule whose inputs can be wrong in
    #: their values, not only their shapes (``lu_solve``'s pivots): raises ``ValueError``.
    #: Backends call it after ``check`` wherever the values can be read (eager calls; not
    #: under ``jit``, ``vmap`` or a lazy graph), and not cached by shape as ``check`` may be.
    check_values: Callable[..., None] | None = None
    signature: inspect.Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for n in self.contract.inputs
        ]
        params += [
            inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default)
            for p in self.contract.params
        ]
        object.__setattr__(self, "signature", inspect.Signature(params))

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def value_names(self) -> tuple[str, ...]:
        """The outputs that ``Primal.value`` holds: every output but ``info``."""
        outputs = self.contract.outputs
        return outputs[:-1] if self.returns_info else outputs

    @property
    def multi(self) -> bool:
        """Whether ``Primal.value`` is a tuple (the op has several outputs besides ``info``)."""
        return len(self.value_names) > 1

    @property
    def differentiable(self) -> tuple[bool, ...]:
        """Per value output: whether it carries a derivative."""
        diff = self.contract.differentiable_outputs
        return tuple(name in diff for name in self.value_names)

    @property
    def integer(self) -> tuple[bool, ...]:
        """Per input: whether it is an integer array (never differentiated)."""
        integer = self.contract.integer_inputs
        return tuple(name in integer for name in self.contract.inputs)

    @property
    def core_ndims(self) -> tuple[int, ...] | None:
        """Per input, the trailing dimensions of one problem (``Contract.core_ndim``);
        ``None`` for an op without batch dimensions."""
        c = self.contract
        if not c.batched:
            return None
        return c.core_ndim or (2,) * len(c.inputs)

    def zero_pivot(self, params: dict[str, Any]) -> str:
        """The error message for ``info != 0`` in a call with ``params`` (see ``ZERO_PIVOT``)."""
        if self.info_meaning is not None:
            return self.info_meaning(params)
        return self.contract.zero_pivot

    def values(self, primal: Primal) -> tuple[Array, ...]:
        """``primal.value`` as a tuple, one entry per value output."""
        return primal.value if self.multi else (primal.value,)

    def result(self, primal: Primal) -> Any:
        """What the op returns: the value (a tuple for several outputs), and ``info`` if ``_ex``."""
        if self.returns_info:
            return (*self.values(primal), primal.info)
        return primal.value

    def with_info(self, name: str, summary: str, singular: str = GETRF_INFO) -> Rule:
        """The ``_ex`` twin of this rule: same mathematics, result ``(value, info)``;
        ``singular`` says what ``info`` holds."""
        contract = replace(
            self.contract,
            name=name,
            summary=summary,
            outputs=(*self.contract.outputs, "info"),
            singular=singular,
        )
        return replace(self, contract=contract, returns_info=True)


def check_dtype(xp: Any, op: str, **arrays: Array) -> None:
    allowed = tuple(getattr(xp, name) for name in SUPPORTED_DTYPES)
    for arg, x in arrays.items():
        if x.dtype not in allowed:
            raise TypeError(
                f"invad.{op}: `{arg}` has dtype {x.dtype}; expected one of "
                f"{', '.join(SUPPORTED_DTYPES)}"
            )


def check_flag(op: str, **flags: Any) -> None:
    """Boolean keyword parameters (``left``, ``upper``) must be True or False."""
    for name, value in flags.items():
        if value is inspect.Parameter.empty:
            raise TypeError(f"invad.{op}: missing the required keyword argument `{name}`")
        if not isinstance(value, bool):
            raise TypeError(f"invad.{op}: `{name}` must be True or False; got {value!r}")


def check_square(op: str, a: Array, arg: str = "a") -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"invad.{op}: `{arg}` must be a square matrix or a batch of them, "
            f"shape (..., n, n); got shape {tuple(a.shape)}"
        )
