"""The JAX backend: every op a ``jax.custom_jvp`` whose JVP is the rule's linearization.

Each op is installed as a jitted ``jax.custom_jvp`` function, one per
combination of the op's static parameters (``left``, ``ind``, ``axes``):

- its primal is ``rule.primal``;
- its JVP rule runs ``rule.primal`` and ``rule.jvp``. The linearization is
  linear in the tangents and built only from operations JAX can transpose
  (matmuls, reshapes and the LU solve below), so JAX derives reverse mode
  itself, in its own convention (the linear transpose, see the docs), and
  every higher order by differentiating the JVP rule again;
- ``info`` of the ``_ex`` ops is an integer output with a symbolic-zero
  (``float0``) tangent;
- inside ``jax.shard_map`` (``check_vma=True``) the operands of each LU solve
  are first cast to vary over the same mesh axes, as ``jnp.linalg.solve``
  does, so that replicated and sharded inputs mix; under ``jit`` over a mesh
  with ``Explicit`` axes they get one batch sharding, so a sharded batch stays
  sharded (no gather).

Kernels: the LU factorization is ``jax.lax.linalg.lu`` (LAPACK ``getrf`` on
CPU), kept as the packed factor and the row permutation. Solves with it are
two triangular solves wrapped in ``jax.lax.custom_linear_solve``, as
``jnp.linalg.solve`` does: reverse mode then solves the transposed system with
the same factorization instead of transposing a row gather into a scatter,
and differentiating a solve with respect to the matrix (second order) uses
implicit differentiation rather than the derivative of the LU factorization.

Nothing raises on a singular matrix: under tracing nothing can. ``inv`` and
``solve`` give JAX's non-finite values, ``inv_ex`` and ``solve_ex`` say where
in ``info``. jax is imported only in :meth:`JaxBackend.load`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import numpy as np

from ..backend import Backend, not_accepted
from ..hookspecs import hookimpl
from ..ops import _check_same_device, op_docstring
from ..rules import Factor, Linalg, Rule

_jax: Any = None  # the jax module, after JaxBackend.load()


class JaxKernels:
    """``lu_factor``, ``lu_solve`` and ``inv`` over JAX arrays, traceable and differentiable."""

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        self._jax = jax
        self._jnp = jnp
        self._lax = jax.lax

    # -- factor ---------------------------------------------------------------

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        """``a = P L U`` (``getrf``); ``Factor.pivots`` holds the row permutation, not the swaps.

        The factors are not differentiated: :meth:`lu_solve` differentiates
        with respect to ``Factor.a`` implicitly, as ``jnp.linalg.solve`` does.
        """
        jnp, lax = self._jnp, self._lax
        batch, n = tuple(a.shape[:-2]), a.shape[-1]
        if a.size == 0:
            perm = jnp.zeros((*batch, n), dtype=jnp.int32)
            return Factor(a, lax.stop_gradient(a), perm), jnp.zeros(batch, dtype=jnp.int32)
        lu, _, perm = lax.linalg.lu(lax.stop_gradient(a))
        return Factor(a, lu, perm), self._info(lu)

    def _info(self, lu: Any) -> Any:
        """LAPACK's ``info``: the first k with ``U[k-1, k-1] == 0``, else 0, per batch element."""
        jnp = self._jnp
        zero = jnp.diagonal(lu, axis1=-2, axis2=-1) == 0
        first = jnp.argmax(zero, axis=-1).astype(jnp.int32) + 1
        return jnp.where(jnp.any(zero, axis=-1), first, jnp.zeros_like(first))

    # -- solve ----------------------------------------------------------------

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        """Solve ``op(A) x = b``, batch dimensions of the factor and ``b`` broadcast.

        ``b`` is always a matrix (``(..., n, k)``); the rules make vectors
        into one-column matrices before they get here.
        """
        jnp, lax = self._jnp, self._lax
        a, lu, perm = factor
        dtype = jnp.result_type(lu.dtype, b.dtype)
        if lu.dtype != dtype:
            a, lu = a.astype(dtype), lu.astype(dtype)
        if b.dtype != dtype:
            b = b.astype(dtype)
        n, k = b.shape[-2], b.shape[-1]
        batch = jnp.broadcast_shapes(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
        b = jnp.broadcast_to(b, (*batch, n, k))
        if b.size == 0:
            return b  # nothing to solve; no dependence on the factor
        lu = jnp.broadcast_to(lu, (*batch, n, n))
        perm = jnp.broadcast_to(perm, (*batch, n))
        a = jnp.broadcast_to(a, (*batch, n, n))
        # Inside jax.shard_map every operand of the linear solve must vary over the same
        # mesh axes: an unvarying right-hand side (inv's identity, a replicated b) or an
        # unvarying matrix would make the solve's traced transpose and constants disagree.
        a, lu, perm, b = self._same_varying_axes(a, lu, perm, b)
        # Under a mesh with Explicit axes, the batch sharding is part of the type: give
        # every operand the batch sharding of the factor (or of b), the matrices whole.
        a, lu, perm, b = self._same_batch_sharding(a, lu, perm, b)
        if trans == "N":
            forward, backward = "N", "T"

            def matvec(x: Any) -> Any:
                return a @ x
        elif trans == "T":
            forward, backward = "T", "N"

            def matvec(x: Any) -> Any:
                return jnp.matrix_transpose(a) @ x
        elif trans == "H":
            forward, backward = "H", "C"

            def matvec(x: Any) -> Any:
                return jnp.conj(jnp.matrix_transpose(a)) @ x
        else:
            raise ValueError(f"invad: trans must be 'N', 'T' or 'H'; got {trans!r}")
        return lax.custom_linear_solve(
            matvec,
            b,
            solve=lambda _, rhs: self._getrs(lu, perm, rhs, forward),
            transpose_solve=lambda _, rhs: self._getrs(lu, perm, rhs, backward),
        )

    def _same_varying_axes(self, *xs: Any) -> tuple[Any, ...]:
        """``xs``, each cast to vary over every manual mesh axis that any of them varies over.

        Under ``jax.shard_map`` (``check_vma=True``) a value's type records the mesh
        axes it varies over. ``jax.lax.custom_linear_solve`` traces its matvec, its
        solves and the matvec's transpose for the right-hand side's type, so they must
        all agree; this is what ``jnp.linalg.solve`` does too. Outside ``shard_map``
        nothing varies and ``xs`` come back as they are.
        """
        varying = [_varying_axes(x) for x in xs]
        union = frozenset().union(*varying)
        if not union:
            return xs
        order = sorted(union, key=str)
        return tuple(
            _to_varying(x, tuple(axis for axis in order if axis not in v)) if union - v else x
            for x, v in zip(xs, varying)
        )

    def _same_batch_sharding(self, a: Any, lu: Any, perm: Any, b: Any) -> tuple[Any, ...]:
        """The operands of a solve, resharded to one batch sharding (Explicit mesh axes only).

        With ``Explicit`` mesh axes (``jax.make_mesh``'s default in recent JAX) an
        array's type carries its sharding, and the matmuls and solves inside
        ``custom_linear_solve`` need their operands sharded alike. Each batch
        dimension takes the mesh axes that the factor is sharded over there, else
        those of ``b``; the two matrix dimensions are kept whole. A replicated
        operand is only sliced; nothing is gathered. Without explicit axes (no mesh,
        ``Auto`` axes, inside ``shard_map``) every spec is empty and nothing changes.
        """
        specs = [_explicit_spec(x) for x in (lu, b)]
        if not any(specs):
            return a, lu, perm, b
        nbatch = b.ndim - 2
        padded = [(*spec, *(None,) * (b.ndim - len(spec))) for spec in specs]
        batch = tuple(
            lu_axes if lu_axes is not None else b_axes
            for lu_axes, b_axes in zip(padded[0][:nbatch], padded[1][:nbatch])
        )
        mesh = next(_jax.typeof(x).sharding.mesh for x, spec in zip((lu, b), specs) if spec)
        P, NamedSharding = _jax.sharding.PartitionSpec, _jax.sharding.NamedSharding

        def fit(x: Any, *matrix: None) -> Any:
            target = (*batch, *matrix)
            current = _explicit_spec(x)
            if tuple((*current, *(None,) * (x.ndim - len(current)))) == target:
                return x
            return _jax.sharding.reshard(x, NamedSharding(mesh, P(*target)))

        return fit(a, None, None), fit(lu, None, None), fit(perm, None), fit(b, None, None)

    def _getrs(self, lu: Any, perm: Any, b: Any, trans: str) -> Any:
        """``op(A)^-1 b`` from ``A = P L U``: ``op`` is N, T, H, or C (the conjugate)."""
        jnp, lax = self._jnp, self._lax
        tri = lax.linalg.triangular_solve
        if trans == "C":  # conj(A)^-1 b = conj(A^-1 conj(b))
            return jnp.conj(self._getrs(lu, perm, jnp.conj(b), "N"))
        if trans == "N":
            x = jnp.take_along_axis(b, perm[..., :, None], axis=-2)  # P^T b
            x = tri(lu, x, left_side=True, lower=True, unit_diagonal=True)
            return tri(lu, x, left_side=True, lower=False)
        conj = trans == "H"
        x = tri(lu, b, left_side=True, lower=False, transpose_a=True, conjugate_a=conj)
        x = tri(
            lu,
            x,
            left_side=True,
            lower=True,
            unit_diagonal=True,
            transpose_a=True,
            conjugate_a=conj,
        )
        inverse = jnp.argsort(perm, axis=-1)
        return jnp.take_along_axis(x, inverse[..., :, None], axis=-2)  # P x

    # -- inverse --------------------------------------------------------------

    def inv(self, a: Any) -> tuple[Any, Any]:
        jnp = self._jnp
        factor, info = self.lu_factor(a)
        eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        return self.lu_solve(factor, eye, "N"), info


class JaxBackend(Backend):
    name = "jax"
    native_ad = True
    raises_on_singular = False
    array_type = "jax.Array (or NumPy arrays and scalars, as jax.numpy does)"

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """JAX arrays (tracers too) as they are, NumPy arrays and scalars converted as
        ``jnp.linalg`` converts them; lists, as there, and other frameworks' arrays refuse."""
        jax = _jax
        out = []
        for name, x in zip(names, args):
            if not isinstance(x, jax.Array):
                if not isinstance(x, (np.ndarray, np.generic, int, float, complex)):
                    raise TypeError(not_accepted(self, op, name, x))
                x = jax.numpy.asarray(x)
            out.append(x)
        return tuple(out)

    def adopt(self, x: Any, like: Any) -> Any:
        return _jax.numpy.asarray(x)  # as jax.numpy takes a NumPy operand next to a JAX one

    def load(self) -> None:
        global _jax
        try:
            import jax
            import jax.numpy
        except ImportError as exc:
            raise ImportError(
                f"jax is not installed ({exc}); install it with: pip install 'invad[jax]'"
            ) from exc

        _jax = jax

    def version(self) -> str | None:
        return str(_jax.__version__)

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_jax_array(x))

    def namespace(self) -> Any:
        return _jax.numpy

    @property
    def linalg_error(self) -> type[Exception]:
        # Never raised (raises_on_singular is false); JAX has no LinAlgError of its own.
        return np.linalg.LinAlgError

    # -- devices --------------------------------------------------------------

    def devices(self) -> Sequence[str]:
        return tuple(f"{d.platform}:{d.id}" for d in _jax.devices())

    def resolve_device(self, device: Any) -> Any:
        """``None`` (the default device), a ``jax.Device``, an index, ``"cpu"`` or ``"cpu:1"``."""
        jax = _jax
        if device is None:
            return jax.devices()[0]
        if isinstance(device, jax.Device):
            return device
        try:
            if isinstance(device, int) and not isinstance(device, bool):
                return jax.devices()[device]
            if isinstance(device, str):
                platform, _, index = device.partition(":")
                return jax.devices(platform)[int(index) if index else 0]
        except (IndexError, ValueError, RuntimeError):
            pass
        raise ValueError(
            f"backend 'jax' has no device {device!r}; devices are {', '.join(self.devices())}"
        )

    def device_of(self, x: Any) -> Any:
        """The device of a concrete JAX array; ``None`` (no check) for tracers and host data."""
        if not array_api_compat.is_jax_array(x) or isinstance(x, _jax.core.Tracer):
            return None
        devices = x.devices()
        return next(iter(devices)) if len(devices) == 1 else frozenset(devices)

    def kernels(self, device: Any) -> JaxKernels:
        return JaxKernels()

    def to_numpy(self, x: Any) -> Any:
        return np.asarray(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        x = np.asarray(x)
        wide = x.dtype in (np.float64, np.complex128)
        if wide and not _jax.config.jax_enable_x64:
            # JAX would silently make it 32-bit; the conformance kit needs the real thing.
            raise TypeError(
                f"invad (jax): {x.dtype} data needs 64-bit JAX: set JAX_ENABLE_X64=1 or call "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
        return _jax.device_put(x, device)

    # -- native AD ------------------------------------------------------------

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        return _jax.jvp(fn, tuple(primals), tuple(tangents))[1]

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """``jax.vjp`` is the linear transpose; conjugating around it gives the adjoint."""
        jnp = _jax.numpy
        _, pullback = _jax.vjp(fn, *primals)
        return tuple(jnp.conj(g) for g in pullback(jnp.conj(cotangent)))

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        return _native_op(self, rule, la)


def _native_op(backend: JaxBackend, rule: Rule, la: Linalg) -> Callable[..., Any]:
    """The op as users call it: checks, then the jitted ``custom_jvp`` for its parameters."""
    name, check, xp = rule.name, rule.check, la.xp
    inputs = rule.contract.inputs
    n_inputs = len(inputs)
    param_names = tuple(p.name for p in rule.contract.params)
    defaults = {p.name: p.default for p in rule.contract.params}
    cache: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def op(*args: Any, **kwargs: Any) -> Any:
        if len(args) != n_inputs or not kwargs.keys() <= defaults.keys():
            bound = rule.signature.bind(*args, **kwargs)
            args = tuple(bound.arguments.pop(i) for i in inputs)
            kwargs = bound.arguments
        args = backend.accept(name, inputs, args)
        params = {**defaults, **kwargs}
        check(xp, name, *args, **params)
        if n_inputs > 1:
            _check_same_device(backend, name, args)
        key = tuple(_static(params[p]) for p in param_names)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = _custom_jvp_op(rule, la, dict(zip(param_names, key)))
        return fn(*args)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = op_docstring(rule)
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op


def _static(value: Any) -> Any:
    """A parameter as a hashable static value (``axes`` may come as a list)."""
    return tuple(value) if isinstance(value, list) else value


def _custom_jvp_op(rule: Rule, la: Linalg, params: dict[str, Any]) -> Callable[..., Any]:
    """``rule`` for fixed ``params`` as a jitted ``jax.custom_jvp`` function of the inputs."""
    jax = _jax
    from jax.custom_derivatives import SymbolicZero, zero_from_primal

    primal, linearization, with_info = rule.primal, rule.jvp, rule.returns_info

    def fn(*inputs: Any) -> Any:
        p = primal(la, *inputs, **params)
        return (p.value, p.info) if with_info else p.value

    def fn_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        p = primal(la, *primals, **params)
        nonzero = tuple(None if type(t) is SymbolicZero else t for t in tangents)
        dvalue = linearization(la, p.residuals, nonzero, **params)
        if dvalue is None:  # JAX calls this rule only with some nonzero tangent
            dvalue = jax.numpy.zeros_like(p.value)
        elif dvalue.dtype != p.value.dtype:
            dvalue = dvalue.astype(p.value.dtype)
        if with_info:
            # A symbolic zero of info's tangent type (float0, varying over the mesh axes
            # that info varies over inside jax.shard_map).
            return (p.value, p.info), (dvalue, zero_from_primal(p.info, symbolic_zeros=True))
        return p.value, dvalue

    fn.__name__ = fn.__qualname__ = f"invad_{rule.name}"
    custom = jax.custom_jvp(fn)
    custom.defjvp(fn_jvp, symbolic_zeros=True)
    return jax.jit(custom)


def _varying_axes(x: Any) -> frozenset[Any]:
    """The manual mesh axes (``jax.shard_map``) that ``x`` varies over; empty outside one."""
    typeof = getattr(_jax, "typeof", None)
    if typeof is None:  # jax without varying-axis types
        return frozenset()
    aval = typeof(x)
    mat = getattr(aval, "mat", None)  # jax >= 0.10: aval.mat.varying
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def _explicit_spec(x: Any) -> tuple[Any, ...]:
    """The part of ``x``'s sharding over ``Explicit`` mesh axes that its type carries.

    Empty (``()``) when nothing is sharded explicitly: no mesh, ``Auto`` axes, or a
    JAX without sharding in types. Otherwise one entry per leading dimension,
    ``None`` where that dimension is not sharded.
    """
    typeof = getattr(_jax, "typeof", None)
    if typeof is None or getattr(_jax.sharding, "reshard", None) is None:
        return ()
    spec = getattr(getattr(typeof(x), "sharding", None), "spec", None)
    if spec is None or all(axes is None for axes in spec):
        return ()
    return tuple(spec)


def _to_varying(x: Any, axes: tuple[Any, ...]) -> Any:
    """``x`` made to vary over the manual mesh ``axes`` as well (no data moves)."""
    lax = _jax.lax
    pcast = getattr(lax, "pcast", None)
    if pcast is not None:
        return pcast(x, axes, to="varying")
    return lax.pvary(x, axes)  # jax < 0.8.2


@hookimpl
def invad_backends() -> list[Backend]:
    return [JaxBackend()]
