"""Operands of one kernel call made to agree on a mesh: varying axes and batch sharding.

Two situations make a kernel's operands disagree in type, not in value:

- inside ``jax.shard_map`` (``check_vma=True``) a value's type records the
  manual mesh axes it varies over, and a replicated operand (an identity, a
  replicated ``b``) does not vary where a sharded one does;
- under ``jit`` over a mesh with ``Explicit`` axes (``jax.make_mesh``'s default
  in recent JAX) an array's type carries its sharding, and operands must be
  sharded alike.

:func:`same_varying_axes` and :func:`same_batch_sharding` cast them to agree
before a solve, as ``jnp.linalg.solve`` does; outside a mesh they return the
operands as they are.
"""

from __future__ import annotations

from typing import Any

from . import _state as state


def varying_axes(x: Any) -> frozenset[Any]:
    """The manual mesh axes (``jax.shard_map``) that ``x`` varies over; empty outside one."""
    typeof = getattr(state.jax, "typeof", None)
    if typeof is None:  # jax without varying-axis types
        return frozenset()
    aval = typeof(x)
    mat = getattr(aval, "mat", None)  # jax >= 0.10: aval.mat.varying
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def _to_varying(x: Any, axes: tuple[Any, ...]) -> Any:
    """``x`` made to vary over the manual mesh ``axes`` as well (no data moves)."""
    lax = state.jax.lax
    pcast = getattr(lax, "pcast", None)
    if pcast is not None:
        return pcast(x, axes, to="varying")
    return lax.pvary(x, axes)  # jax < 0.8.2


def same_varying_axes(*xs: Any) -> tuple[Any, ...]:
    """``xs``, each cast to vary over every manual mesh axis that any of them varies over.

    ``jax.lax.custom_linear_solve`` traces its matvec, its solves and the
    matvec's transpose for the right-hand side's type, so all must agree; the
    transpose of the cast (a ``psum``) sums a replicated operand's cotangent
    over the devices, as its use on each of them asks. Outside ``shard_map``
    nothing varies and ``xs`` come back as they are.
    """
    varying = [varying_axes(x) for x in xs]
    union = frozenset().union(*varying)
    if not union:
        return xs
    order = sorted(union, key=str)
    return tuple(
        _to_varying(x, tuple(axis for axis in order if axis not in v)) if union - v else x
        for x, v in zip(xs, varying)
    )


def explicit_spec(x: Any) -> tuple[Any, ...]:
    """The part of ``x``'s sharding over ``Explicit`` mesh axes that its type carries.

    Empty (``()``) when nothing is sharded explicitly: no mesh, ``Auto`` axes, or a
    JAX without sharding in types. Otherwise one entry per leading dimension,
    ``None`` where that dimension is not sharded.
    """
    jax = state.jax
    typeof = getattr(jax, "typeof", None)
    if typeof is None or getattr(jax.sharding, "reshard", None) is None:
        return ()
    spec = getattr(getattr(typeof(x), "sharding", None), "spec", None)
    if spec is None or all(axes is None for axes in spec):
        return ()
    return tuple(spec)


def same_batch_sharding(nbatch: int, *operands: tuple[Any, int]) -> tuple[Any, ...]:
    """Operands ``(x, trailing)`` of one kernel, resharded to one batch sharding.

    Every ``x`` has the same ``nbatch`` leading batch dimensions (already
    broadcast) and ``trailing`` more (2 for a matrix, 1 for a permutation),
    which are kept whole. Each batch dimension takes the mesh axes of the first
    operand sharded there (list the factor first: its batch decides). A
    replicated operand is only sliced; nothing is gathered. Without explicit
    axes (no mesh, ``Auto`` axes, inside ``shard_map``) every spec is empty and
    nothing changes.
    """
    specs = [explicit_spec(x) for x, _ in operands]
    if not any(specs):
        return tuple(x for x, _ in operands)
    padded = [(*spec, *(None,) * (nbatch - len(spec)))[:nbatch] for spec in specs]
    batch = tuple(
        next((axes[d] for axes in padded if axes[d] is not None), None) for d in range(nbatch)
    )
    jax = state.jax
    mesh = next(jax.typeof(x).sharding.mesh for (x, _), spec in zip(operands, specs) if spec)
    P, NamedSharding = jax.sharding.PartitionSpec, jax.sharding.NamedSharding

    def fit(x: Any, trailing: int) -> Any:
        target = (*batch, *(None,) * trailing)
        current = explicit_spec(x)
        if tuple((*current, *(None,) * (x.ndim - len(current)))) == target:
            return x
        return jax.sharding.reshard(x, NamedSharding(mesh, P(*target)))

    return tuple(fit(x, trailing) for x, trailing in operands)
