"""How one op call on Dask arrays becomes a task graph (see the package's docstring).

A call's :class:`Plan` lays the inputs on a *grid*: the broadcast batch
shape, tiled by the inputs' chunks (aligned by :func:`dask.array.core.unify_chunks`,
as ``blockwise`` aligns them). Each array of the call, input or output, has a
:class:`Layout` on that grid: its batch dimensions are the last ones of the
grid, and on each it either spans the grid (chunked like it) or has size 1
(one block, broadcast). The rest of its dimensions, the problem's, are in one
chunk.

The graph of an op is one ``blockwise`` layer, ``invad-<op>``, whose task per
grid block runs the rule (:func:`._chunks.forward`) and returns the block's
outputs and residuals; each output is a layer of ``getitem`` tasks on it.
``ops.jvp`` and ``ops.vjp`` add one layer, ``invad-<op>-jvp`` or
``invad-<op>-vjp``, whose task per block reads that block's residuals: computed
together with the outputs, the forward task runs once. Input cotangents of
inputs broadcast over the grid (a single matrix against a batch of right-hand
sides) are summed over the blocks by Dask's tree reduction.

Which dimensions of each *output* are batch dimensions is not declared
anywhere: the plan runs the rule's primal twice on empty stand-ins of the
inputs (a leading dimension of size 0, so no kernel computes anything), the
second time with other batch sizes, and the dimensions that change are the
batch dimensions. The stand-ins are made from each input's meta (``x._meta``),
so the outputs' metas are NumPy or CuPy arrays as the chunks will be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy
import dask.array as da
import numpy as np
from dask.array.core import unify_chunks
from dask.layers import ArraySliceDep

from ...backend import Backend, Derivatives
from ...ops import (
    accepted_cotangents,
    accepted_tangents,
    check_cotangents,
    check_primals,
    check_tangents,
    op_docstring,
)
from ...rules import Linalg, Rule
from ...rules._linalg import ArrayMeta, broadcast_batch
from . import _chunks

#: The checks run on zero-strided NumPy stand-ins: they read shapes and dtypes only.
_NP = array_api_compat.numpy


@dataclass(frozen=True)
class Layout:
    """One array of a call on the grid of batch blocks.

    Its first ``k`` dimensions are batch dimensions, the last ``k`` of the grid's;
    ``spans[d]`` says, per grid dimension ``d``, whether the array has it with the
    grid's size (and is then chunked like the grid), rather than lacking it or
    having size 1 there. The other dimensions, ``core``, are in one chunk.
    """

    shape: tuple[int, ...]
    k: int
    spans: tuple[bool, ...]
    dtype: Any
    meta: Any

    @property
    def core(self) -> tuple[int, ...]:
        return self.shape[self.k :]


def _zeros(meta: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """Zeros of ``meta``'s array type (NumPy's, CuPy's: NumPy dispatches on it)."""
    return np.zeros_like(meta, shape=shape, dtype=dtype)


def _map_arrays(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every array in ``obj`` (nested tuples and NamedTuples kept)."""
    if isinstance(obj, tuple):
        items = [_map_arrays(o, fn) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, ArrayMeta):
        return fn(obj)
    return obj


class ShapeOnly:
    """Kernels that give the shapes and dtypes of their results without computing them.

    Each call runs the real kernel on an empty batch (a leading dimension of
    size 0 on every array) and returns zeros of the shapes the call would have
    given. With them the primal of an op without batch dimensions (one block,
    perhaps a large matrix) runs without factoring anything.
    """

    def __init__(self, la: Linalg) -> None:
        self._la = la
        self.pivot_base = la.pivot_base

    def __getattr__(self, name: str) -> Any:
        kernel = getattr(self._la, name)
        if name == "if_any" or not callable(kernel):
            return kernel

        def shapes_only(*args: Any) -> Any:
            out = kernel(*_map_arrays(args, lambda x: x[None][:0]))
            return _map_arrays(out, lambda y: _zeros(y, y.shape[1:], y.dtype))

        return shapes_only


def _as_dask(x: Any) -> Any:
    return x if isinstance(x, da.Array) else da.from_array(x, chunks=-1)


class Plan:
    """One call of ``rule`` on Dask arrays: the inputs aligned on the grid, every layout."""

    def __init__(self, rule: Rule, args: Sequence[Any], params: dict[str, Any]) -> None:
        op = rule.name
        self.rule, self.params = rule, params
        for name, x in zip(rule.contract.inputs, args):
            if any(math.isnan(n) for n in x.shape):
                raise ValueError(
                    f"invad.{op}: `{name}` has unknown chunk sizes (shape {x.shape}); "
                    "call its compute_chunk_sizes() first"
                )
        # Bad shapes, dtypes and parameters raise here, by the rule's own check, as on NumPy.
        stand_ins = (np.broadcast_to(np.zeros((), x.dtype), x.shape) for x in args)  # no memory
        rule.check(_NP, op, *stand_ins, **params)

        cores = rule.core_ndims
        # Per input: the number of its problem's dimensions, and whether it has a batch.
        core = [x.ndim if cores is None else min(c, x.ndim) for x, c in zip(args, cores or args)]
        self.batchable = tuple(
            cores is not None and x.ndim >= c for x, c in zip(args, cores or args)
        )
        self.grid_shape = broadcast_batch(
            *(tuple(x.shape[: x.ndim - c]) for x, c, b in zip(args, core, self.batchable) if b)
        )
        nb = self.nb = len(self.grid_shape)
        self.grid = tuple(f"g{d}" for d in range(nb))

        pairs: list[Any] = []
        self.inds = []
        for i, (x, c) in enumerate(zip(args, core)):
            problem = range(x.ndim - c, x.ndim)
            if any(len(x.chunks[ax]) > 1 for ax in problem):
                x = x.rechunk({ax: -1 for ax in problem})  # one problem, one chunk
            ind = self.grid[nb - (x.ndim - c) :] + tuple(f"i{i}_{j}" for j in range(c))
            self.inds.append(ind)
            pairs += [x, ind]
        chunkss, aligned = unify_chunks(*pairs)
        self.inputs: tuple[Any, ...] = tuple(aligned)
        self.grid_chunks = tuple(chunkss[g] for g in self.grid)
        self.in_layouts = tuple(
            self._layout(tuple(x.shape), x.ndim - c, x.dtype, None)
            for x, c in zip(self.inputs, core)
        )
        self.out_layouts = self._output_layouts()

    # -- layouts -----------------------------------------------------------------

    def _layout(self, shape: tuple[int, ...], k: int, dtype: Any, meta: Any) -> Layout:
        lead = self.nb - k
        spans = tuple(d >= lead and shape[d - lead] == self.grid_shape[d] for d in range(self.nb))
        return Layout(shape, k, spans, dtype, meta)

    def _output_layouts(self) -> tuple[Layout, ...]:
        """The layout of each output (values, then ``info``), from the rule's primal run on
        stand-ins of the inputs, twice, computing nothing.

        - ranks: each input as it is, its batch sizes made 0, and the kernels
          shapes-only (:class:`ShapeOnly`): each output's number of dimensions;
        - padded (with batch dimensions only): each input with batch dimensions
          gets a leading dimension of size 0 and 1s up to the grid's number of
          batch dimensions, so that every output has the grid's too, then its
          own (its core): the kernels run on empty arrays. Dtypes and metas
          come from here, in the chunks' array type (``x._meta``).

        An output's batch dimensions are the ones the first run has beyond its core.
        """
        rule, nb = self.rule, self.nb
        names = (*rule.value_names, "info")
        ranks = [len(o.shape) for o in self._run(padded=False)]
        padded = self._run(padded=True) if nb else self._run(padded=False)
        layouts = []
        for name, rank, o in zip(names, ranks, padded):
            full = tuple(o.shape)
            if nb:
                core = full[1 + nb :]
                k = rank - len(core)
                lead = 1 + nb - k
                shape = full[lead:]
                ok = full[0] == 0 and 0 <= k <= nb and all(n == 1 for n in full[1:lead])
            else:
                k, shape, ok = 0, full, True
            if not ok or any(
                n not in (1, self.grid_shape[nb - k + j]) for j, n in enumerate(shape[:k])
            ):
                raise RuntimeError(  # a rule whose outputs are not batched like its inputs
                    f"invad.{rule.name}: cannot lay output `{name}` (shapes {full}, rank {rank}) "
                    f"on the batch {self.grid_shape} for Dask"
                )
            meta = np.empty_like(o, shape=(0,) * len(shape))
            layouts.append(self._layout(shape, k, o.dtype, meta))
        return tuple(layouts)

    def _run(self, padded: bool) -> list[Any]:
        """The rule's outputs (values, then ``info``) on stand-ins of the inputs (see
        :meth:`_output_layouts`); an input without batch dimensions (one problem's
        size) stands in as zeros of its shape."""
        rule, nb = self.rule, self.nb
        stand_ins = []
        for x, ind, batch in zip(self.inputs, self.inds, self.batchable):
            k = sum(1 for name in ind if name in self.grid)
            shape = tuple(x.shape)
            if not batch or (not padded and k == 0):
                stand_ins.append(_zeros(x._meta, shape, x.dtype))
                continue
            # padded: an empty leading dimension, then 1s up to the grid's batch dimensions;
            # else: the batch sizes made 0.
            shape = (0,) + (1,) * (nb - k) + shape if padded else (0,) * k + shape[k:]
            stand_ins.append(np.empty_like(x._meta, shape=shape, dtype=x.dtype))
        ops = _chunks.install(_chunks.kernels_for(stand_ins[0]))
        la = ops.la if padded else Linalg.build(ops.xp, ShapeOnly(ops.la))
        with ops.backend.on_device_of(stand_ins[0]):
            primal = rule.primal(la, *stand_ins, **self.params)
        return [*rule.values(primal), primal.info]

    # -- graphs --------------------------------------------------------------------

    def _where(self) -> list[Any]:
        """The ``blockwise`` argument that hands each task its block's place in the grid."""
        return [ArraySliceDep(self.grid_chunks), self.grid] if self.nb else [None, None]

    def forward(self) -> Any:
        """The layer of forward tasks: per block, ``(outputs, residuals, kernels)``."""
        rule = self.rule
        singular = None
        if rule.raises and not rule.returns_info:
            info = self.out_layouts[-1]
            singular = _chunks.Singular(tuple(self.inputs[0].shape), info.shape, self.nb)
        args = self._where()
        for x, ind in zip(self.inputs, self.inds):
            args += [x, ind]
        return da.blockwise(
            _chunks.forward,
            self.grid,
            *args,
            token=f"invad-{rule.name}",
            dtype=object,
            meta=np.empty((0,) * self.nb, dtype=object),
            align_arrays=False,
            concatenate=False,  # one chunk per problem: unwrapped, never copied
            op=rule.name,
            params=self.params,
            singular=singular,
        )

    def _extract(
        self, tasks: Any, path: tuple[int, ...], layout: Layout, label: str, every: bool = False
    ) -> Any:
        """One array out of a layer of tasks that return several, laid out as ``layout``.

        Along the grid dimensions that ``layout`` does not span, the array is the
        same in every block: it is read from the first block, unless ``every``
        (an input's cotangent, one partial sum per block, summed afterwards).
        """
        nb, lead = self.nb, self.nb - layout.k
        core = tuple(f"o{j}" for j in range(len(layout.core)))
        if not every:
            first = tuple(
                slice(None) if d >= lead and layout.spans[d] else slice(0, 1) for d in range(nb)
            )
            if any(s != slice(None) for s in first):
                tasks = tasks.blocks[first]
        args: list[Any] = [tasks, self.grid]
        for k in path:
            args += [k, None]
        adjust = {self.grid[d]: 1 for d in range(lead, nb) if not layout.spans[d]}
        return da.blockwise(
            _chunks.item,
            self.grid[lead:] + core,
            *args,
            token=f"invad-{self.rule.name}-{label}",
            new_axes=dict(zip(core, layout.core)),
            adjust_chunks=adjust or None,
            concatenate=False,
            align_arrays=False,
            dtype=layout.dtype,
            meta=layout.meta,
        )

    def outputs(self, forward: Any) -> list[Any]:
        """The values, then ``info``, as Dask arrays."""
        names = (*self.rule.value_names, "info")
        return [
            self._extract(forward, (0, j), lay, name)
            for j, (lay, name) in enumerate(zip(self.out_layouts, names))
        ]

    def result(self, outputs: list[Any]) -> Any:
        """What the op returns, from :meth:`outputs`."""
        rule = self.rule
        values = outputs[: len(rule.value_names)]
        if rule.returns_info:
            return (*values, outputs[-1])
        return tuple(values) if rule.multi else values[0]

    def jvp(self, forward: Any, tangents: Sequence[Any]) -> list[Any]:
        """The output tangents (``None`` for outputs without one), one task per block."""
        rule = self.rule
        args: list[Any] = [forward, self.grid]
        for x, ind, t in zip(self.inputs, self.inds, tangents):
            if t is not None:
                args += [_as_dask(t).rechunk(x.chunks), ind]
        tasks = da.blockwise(
            _chunks.jvp,
            self.grid,
            *args,
            token=f"invad-{rule.name}-jvp",
            dtype=object,
            meta=np.empty((0,) * self.nb, dtype=object),
            align_arrays=False,
            concatenate=False,  # one chunk per problem: unwrapped, never copied
            op=rule.name,
            params=self.params,
            present=tuple(t is not None for t in tangents),
        )
        return [
            self._extract(tasks, (j,), lay, f"jvp-{name}") if diff else None
            for j, (lay, diff, name) in enumerate(
                zip(self.out_layouts, rule.differentiable, rule.value_names)
            )
        ]

    def vjp(self, forward: Any, values: Sequence[Any], cotangents: Sequence[Any]) -> list[Any]:
        """The input cotangents (``None`` for integer inputs), one task per block, then the
        sums over the blocks of the inputs that the grid broadcasts."""
        rule, nb = self.rule, self.nb
        args: list[Any] = [forward, self.grid, *self._where()]
        for j, (v, lay, ct) in enumerate(zip(values, self.out_layouts, cotangents)):
            if ct is None:
                continue
            if not all(lay.spans[d] or self.grid_shape[d] == 1 for d in range(nb)):
                raise NotImplementedError(  # no op's differentiable output is broadcast
                    f"invad.{rule.name}: output {j} is broadcast over the batch blocks"
                )
            core = tuple(f"c{j}_{m}" for m in range(len(lay.core)))
            args += [_as_dask(ct).rechunk(v.chunks), self.grid[nb - lay.k :] + core]
        partials = tuple(
            None if integer else _chunks.Partial(lay.spans, lay.core, x.dtype)
            for x, lay, integer in zip(self.inputs, self.in_layouts, rule.integer)
        )
        tasks = da.blockwise(
            _chunks.vjp,
            self.grid,
            *args,
            token=f"invad-{rule.name}-vjp",
            dtype=object,
            meta=np.empty((0,) * nb, dtype=object),
            align_arrays=False,
            concatenate=False,  # one chunk per problem: unwrapped, never copied
            op=rule.name,
            params=self.params,
            present=tuple(ct is not None for ct in cotangents),
            partials=partials,
        )
        xbars: list[Any] = []
        for i, (x, lay, part, name) in enumerate(
            zip(self.inputs, self.in_layouts, partials, rule.contract.inputs)
        ):
            if part is None:
                xbars.append(None)
                continue
            meta = np.empty_like(x._meta, shape=(0,) * (nb + len(lay.core)), dtype=x.dtype)
            per_block = Layout((*self.grid_shape, *lay.core), nb, lay.spans, x.dtype, meta)
            xbar = self._extract(tasks, (i,), per_block, f"vjp-{name}", every=True)
            summed = tuple(d for d in range(nb) if not lay.spans[d])
            if summed:
                xbar = xbar.sum(axis=summed, keepdims=True, dtype=x.dtype)
            if nb > lay.k:
                xbar = xbar.squeeze(axis=tuple(range(nb - lay.k)))
            xbars.append(xbar)
        return xbars


# -- the ops ----------------------------------------------------------------------------


def lazy_op(rule: Rule, backend: Backend) -> Callable[..., Any]:
    """The op on Dask arrays: checks now, the graph of :meth:`Plan.forward` returned."""
    name, inputs = rule.name, rule.contract.inputs
    n_inputs = len(inputs)

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n_inputs:  # inputs passed by keyword
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in inputs)
            kwargs = bound.arguments
        plan = Plan(rule, backend.accept(name, inputs, args), kwargs)
        return plan.result(plan.outputs(plan.forward()))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = op_docstring(rule) + (
        "\nDask: returns Dask arrays and computes nothing; batch dimensions keep their "
        "chunks, the problem's dimensions are put in one chunk.\n"
    )
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op


def lazy_derivatives(rule: Rule, backend: Backend) -> Derivatives:
    """``ops.jvp`` and ``ops.vjp`` of ``rule`` as graphs on the forward graph's blocks."""
    name, inputs = rule.name, rule.contract.inputs

    def plan_for(primals: tuple[Any, ...], params: dict[str, Any]) -> Plan:
        check_primals(rule, primals)
        return Plan(rule, backend.accept(name, inputs, primals), params)

    def jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...], params: dict[str, Any]) -> Any:
        plan = plan_for(primals, params)
        tangents = accepted_tangents(rule, backend, tangents)
        tangents = tuple(check_tangents(rule, backend.namespace(), primals, tangents))
        forward = plan.forward()
        result = plan.result(plan.outputs(forward))
        douts = plan.jvp(forward, tangents)[: len(rule.value_names)]
        if rule.returns_info:
            return result, (*douts, None)
        return result, tuple(douts) if rule.multi else douts[0]

    def vjp(primals: tuple[Any, ...], cotangents: Any, params: dict[str, Any]) -> Any:
        plan = plan_for(primals, params)
        forward = plan.forward()
        outputs = plan.outputs(forward)
        values = outputs[: len(rule.value_names)]
        cts = check_cotangents(
            rule,
            backend.namespace(),
            values,
            accepted_cotangents(rule, backend, cotangents),
            lambda ct, v: da.asarray(np.asarray(ct, dtype=v.dtype)),
        )
        if all(ct is None for ct in cts):
            xbars = [
                None if integer else da.zeros_like(x)
                for x, integer in zip(plan.inputs, rule.integer)
            ]
        else:
            xbars = plan.vjp(forward, values, cts)
        return plan.result(outputs), tuple(xbars)

    return Derivatives(jvp, vjp)
