"""What a Dask task runs: one block of one op, with the kernels of the block's framework.

These functions are what the task graphs of :mod:`._graph` name; they are
pickled by reference (module and name), so a task carries only its op's name,
its parameters and a few shapes. On a worker they run the rule
(:mod:`invad.rules`) with the installed NumPy ops' kernels, or CuPy's when the
block is a CuPy array (:func:`kernels_for`), exactly as the NumPy and CuPy
backends run it: the block is an ordinary batch to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

from ...backend import singular_message
from ...rules import RULES

#: Whether a block is a CuPy array (a module attribute, so tests can put a stand-in here).
is_cupy_array = array_api_compat.is_cupy_array


def install(name: str) -> Any:
    """``invad.install(name)``, imported late: this module is imported by invad itself."""
    from ... import install

    return install(name)


def kernels_for(block: Any) -> str:
    """The backend whose kernels compute ``block``: ``"cupy"`` for a CuPy array (on the
    block's device, see :func:`forward`), ``"numpy"`` for anything else."""
    return "cupy" if is_cupy_array(block) else "numpy"


@dataclass(frozen=True)
class Singular:
    """What a block needs to name a singular matrix as the whole array does.

    ``shape`` is the shape of the op's first input; ``info_shape`` that of the
    whole ``info`` array (the first input's batch shape), whose dimensions are
    the last ``len(info_shape)`` of the ``grid`` dimensions the blocks tile.
    """

    shape: tuple[int, ...]
    info_shape: tuple[int, ...]
    grid: int


def unwrap(block: Any) -> Any:
    """A block that ``blockwise`` passes in one-element lists, one per dimension that it
    contracts (the problem's dimensions, in one chunk; ``concatenate=False``: Dask's
    concatenation would copy even a single block)."""
    while isinstance(block, list):
        (block,) = block
    return block


def item(block: Any, *path: int) -> Any:
    """One output of a task that returns several: ``block[path[0]][path[1]]...``."""
    block = unwrap(block)
    for k in path:
        block = block[k]
    return block


def forward(where: Any, *blocks: Any, op: str, params: dict[str, Any], singular: Any) -> Any:
    """The op on one block: ``(outputs, residuals, kernels)``, ``outputs`` the values (and
    ``info`` for the ``_ex`` ops), ``kernels`` the backend whose kernels made them (and
    compute the block's derivatives). Raises on a singular matrix when ``singular`` is given.

    ``where`` is the block's place in the grid of batch blocks (a slice per grid
    dimension, ``None`` without batch dimensions).
    """
    rule = RULES[op]
    blocks = tuple(unwrap(b) for b in blocks)
    kernels = kernels_for(blocks[0])
    ops = install(kernels)
    if rule.check_values is not None:  # the block's values, here where they are computed
        try:
            rule.check_values(ops.la, op, *blocks, **params)
        except ValueError as exc:
            if not where:
                raise
            start = tuple(s.start or 0 for s in where)
            raise ValueError(
                f"{exc} (Batch indices within the block that starts at batch index {start}.)"
            ) from None
    with ops.backend.on_device_of(blocks[0]):
        primal = rule.primal(ops.la, *blocks, **params)
    if singular is not None:
        raise_if_singular(ops, op, primal.info, where, singular, rule.zero_pivot(params))
    outputs = rule.values(primal)
    if rule.returns_info:
        outputs = (*outputs, primal.info)
    return outputs, primal.residuals, kernels


def raise_if_singular(
    ops: Any, op: str, info: Any, where: Any, singular: Singular, what: str
) -> None:
    """The NumPy backend's error for the first singular matrix of this block, with its
    batch index in the whole array: the block's offset added on each dimension that
    ``info`` spans (a dimension of size 1 is broadcast: its index stays 0)."""
    if info.size == 0 or not bool(info.any()):
        return
    xp = ops.xp
    local = tuple(int(i[0]) for i in xp.nonzero(info != 0)) if info.ndim else ()
    k = int(info[local])
    lead = singular.grid - len(singular.info_shape)
    index = tuple(
        i + (where[lead + j].start if n != 1 else 0)
        for j, (i, n) in enumerate(zip(local, singular.info_shape))
    )
    raise ops.backend.linalg_error(singular_message(op, singular.shape, index, k, what))


def jvp(fwd: Any, *blocks: Any, op: str, params: dict[str, Any], present: tuple[bool, ...]) -> Any:
    """The output tangents of one block: the rule's ``jvp`` with the block's residuals.
    ``blocks`` are the tangents given (``present``), in input order; ``None`` for the
    outputs that are not differentiable, zeros where the rule says the tangent is zero."""
    rule = RULES[op]
    outputs, residuals, kernels = unwrap(fwd)
    given = (unwrap(b) for b in blocks)
    tangents = tuple(next(given) if p else None for p in present)
    values = outputs[: len(rule.value_names)]
    ops = install(kernels)
    with ops.backend.on_device_of(values[0]):
        out = rule.jvp(ops.la, residuals, tangents, **params)
        douts = out if rule.multi else (out,)
        return tuple(
            None if not diff else ops.xp.zeros_like(v) if d is None else d
            for v, d, diff in zip(values, douts, rule.differentiable)
        )


@dataclass(frozen=True)
class Partial:
    """How one input's cotangent of one block is laid out: the block's part of it, with a
    dimension per grid dimension (``spans``: the input's batch dimension that the blocks
    tile; otherwise of size 1, summed over the blocks afterwards) and then ``core``."""

    spans: tuple[bool, ...]
    core: tuple[int, ...]
    dtype: Any


def vjp(
    fwd: Any,
    where: Any,
    *blocks: Any,
    op: str,
    params: dict[str, Any],
    present: tuple[bool, ...],
    partials: tuple[Partial | None, ...],
) -> Any:
    """The input cotangents of one block: the rule's ``vjp`` with the block's residuals,
    each laid out as its :class:`Partial` says (``None`` for integer inputs). ``blocks``
    are the cotangents given (``present``), in output order."""
    rule = RULES[op]
    outputs, residuals, kernels = unwrap(fwd)
    given = (unwrap(b) for b in blocks)
    cts = tuple(next(given) if p else None for p in present)
    values = outputs[: len(rule.value_names)]
    ops = install(kernels)
    needs = tuple(not integer for integer in rule.integer)
    with ops.backend.on_device_of(values[0]):
        if rule.multi:
            xbars = rule.vjp(ops.la, residuals, cts, needs, **params)
        elif cts[0] is None:
            xbars = (None,) * len(partials)
        else:
            xbars = rule.vjp(ops.la, residuals, cts[0], needs, **params)
        out: list[Any] = []
        for xb, part in zip(xbars, partials):
            if part is None:
                out.append(None)
            elif xb is None:
                batch = tuple(
                    (w.stop - w.start) if span else 1 for w, span in zip(where or (), part.spans)
                )
                out.append(ops.xp.zeros((*batch, *part.core), dtype=part.dtype))
            else:  # the input's block, with a leading 1 for each grid dimension it lacks
                out.append(
                    ops.xp.reshape(
                        xb, (1,) * (len(part.spans) + len(part.core) - xb.ndim) + tuple(xb.shape)
                    )
                )
        return tuple(out)
