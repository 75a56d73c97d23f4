"""invad's JAX ops on a two-device mesh: inside ``jax.shard_map`` and sharded under ``jax.jit``.

Needs two JAX devices; on a CPU-only machine XLA makes them with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which must be set before
jax is imported, so ``nox -s tests-jax`` runs this module in a pytest process of
its own (with tests/test_devices.py):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_ENABLE_X64=1 \\
        INVAD_TEST_BACKENDS=jax pytest tests/test_jax_sharding.py

Skipped, saying why, with fewer devices or without jax.

- ``shard_map`` (default ``check_vma=True``): every op, with ``a`` and ``b`` both
  sharded over the batch, ``a`` replicated and ``b`` sharded, ``a`` sharded and
  ``b`` replicated; the forward, ``jax.grad`` of a scalar loss inside the mapped
  function and of one around it, and ``jax.jvp``, all equal to the same op
  without ``shard_map`` (and the forward to NumPy's).
- ``jit`` over arrays with a ``NamedSharding`` (``Auto`` and ``Explicit`` mesh
  axes): outputs and gradients keep the batch sharding, and the compiled
  program gathers nothing.

Each case compiles one program for everything it checks, and one reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import scipy.linalg  # noqa: E402

import invad  # noqa: E402
from invad.rules import RULES  # noqa: E402
from invad.testing import cases as C  # noqa: E402
from invad.testing.checks import values  # noqa: E402

if len(jax.devices()) < 2:
    pytest.skip(
        f"needs two JAX devices, found {len(jax.devices())}: set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=2 before jax is imported "
        "(nox -s tests-jax does)",
        allow_module_level=True,
    )
if not hasattr(jax, "shard_map") or not hasattr(jax.sharding, "AxisType"):
    pytest.skip(
        f"jax {jax.__version__} has no jax.shard_map / jax.sharding.AxisType",
        allow_module_level=True,
    )

from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

OPS = invad.install("jax")
S, R = P("x"), P()  # sharded over the batch (the leading axis), replicated
MESHES = {
    kind: jax.make_mesh((2,), ("x",), axis_types=(getattr(AxisType, kind),))
    for kind in ("Auto", "Explicit")
}
MESH = jax.make_mesh((2,), ("x",))  # shard_map on the default mesh, as users make it
TOL = {"rtol": 1e-10, "atol": 1e-12}  # float64 and complex128


@dataclass(frozen=True)
class Case:
    op: str
    shapes: tuple[tuple[int, ...], ...]  # the global shapes
    specs: tuple[Any, ...]  # one PartitionSpec per input
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    stacked: bool = False  # a tensor op vmapped over a leading axis of 2 (sharded)

    @property
    def id(self) -> str:
        pattern = "".join("S" if spec == S else "R" for spec in self.specs)
        extra = ",".join(f"{k}={v}" for k, v in self.params.items())
        shape = "x".join(str(len(s)) for s in self.shapes)
        return f"{self.op}-{pattern}-{shape}d{'-' + extra if extra else ''}-{self.dtype}"

    @property
    def out_spec(self) -> Any:
        return S if S in self.specs else R


B, N, K = 4, 3, 2
CASES = [
    Case("inv", ((B, N, N),), (S,)),
    Case("inv", ((B, N, N),), (S,), dtype="complex128"),
    Case("inv_ex", ((B, N, N),), (S,)),
    Case("tensorinv", ((2, 3, 6),), (R,), {"ind": 2}),
    Case("tensorinv", ((2, 2, 3, 6),), (S,), {"ind": 2}, stacked=True),
    # solve: the three sharding patterns, left and right, and a vector b
    Case("solve", ((B, N, N), (B, N, K)), (S, S)),
    Case("solve", ((B, N, N), (B, N, K)), (S, S), dtype="complex128"),
    Case("solve", ((N, N), (B, N, K)), (R, S)),
    Case("solve", ((B, N, N), (N, K)), (S, R)),
    Case("solve", ((B, N, N), (B, K, N)), (S, S), {"left": False}),
    Case("solve", ((N, N), (B, K, N)), (R, S), {"left": False}),
    Case("solve", ((B, N, N), (K, N)), (S, R), {"left": False}),
    Case("solve", ((B, N, N), (N,)), (S, R)),
    Case("solve", ((B, N, N), (N,)), (S, R), {"left": False}),
    Case("solve_ex", ((B, N, N), (B, N, K)), (S, S)),
    Case("solve_ex", ((N, N), (B, N, K)), (R, S)),
    Case("solve_ex", ((B, N, N), (N,)), (S, R), {"left": False}),
    Case("tensorsolve", ((2, 3, 6), (2, 3)), (R, R)),
    Case("tensorsolve", ((2, 2, 3, 6), (2, 2, 3)), (S, S), stacked=True),
    # the LU family; lu_solve's specs are those of LU, pivots and b
    Case("lu_factor", ((B, N, N),), (S,)),
    Case("lu_factor", ((B, N, N + 1),), (S,), dtype="complex128"),
    Case("lu_factor_ex", ((B, N + 1, N),), (S,)),
    Case("lu_solve", ((B, N, N), (B, N, K)), (S, S, S)),
    Case("lu_solve", ((B, N, N), (B, N, K)), (S, S, S), {"adjoint": True}, dtype="complex128"),
    Case("lu_solve", ((N, N), (B, N, K)), (R, R, S)),
    Case("lu_solve", ((B, N, N), (K, N)), (S, S, R), {"left": False}),
    Case("solve_triangular", ((B, N, N), (B, N, K)), (S, S), {"upper": True}),
    Case("solve_triangular", ((N, N), (B, K, N)), (R, S), {"upper": False, "left": False}),
    Case("solve_triangular", ((B, N, N), (N, K)), (S, R), {"upper": True, "unitriangular": True}),
    Case("det", ((B, N, N),), (S,)),
    Case("det", ((B, N, N),), (S,), dtype="complex128"),
    Case("slogdet", ((B, N, N),), (S,)),
    Case("slogdet", ((B, N, N),), (S,), dtype="complex128"),
]


def integer(case: Case) -> tuple[bool, ...]:
    """Per input: whether it is an integer array (lu_solve's pivots)."""
    return RULES[case.op].integer


def data(case: Case) -> tuple[tuple[np.ndarray, ...], tuple[Any, ...], Any]:
    """Primals (every matrix well conditioned), tangents (None for pivots) and the loss
    weights (one array per differentiable output), in NumPy."""
    rng = np.random.default_rng(sum(map(ord, case.id)))
    a_shape, *rest = case.shapes
    if case.op.startswith("tensor"):  # a (2, 3, 6) is a 6 x 6 matrix
        lead = a_shape[:-3] if case.stacked else ()
        a = C.well_conditioned(rng, lead, 6, case.dtype).reshape(a_shape)
    elif case.op.startswith("lu_factor"):
        a = C.well_conditioned_rectangular(rng, a_shape, case.dtype)
    elif case.op == "solve_triangular":
        a = C.triangular(rng, a_shape, case.dtype, case.params)
    else:
        a = C.well_conditioned(rng, a_shape[:-2], a_shape[-1], case.dtype)
    primals = (a, *(C.random_array(rng, s, case.dtype) for s in rest))
    if case.op == "lu_solve":  # (LU, pivots, b), pivots 0-based as JAX's own
        lu, pivots = lu_factor_numpy(a)
        primals = (lu, pivots, primals[1])
    tangents = tuple(
        None if is_int else C.random_array(rng, x.shape, case.dtype)
        for x, is_int in zip(primals, integer(case))
    )
    reference = numpy_reference(case, primals)
    weights = tuple(C.random_array(rng, r.shape, str(r.dtype)) for r in reference)
    return primals, tangents, weights if len(weights) > 1 else weights[0]


def lu_factor_numpy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy.linalg.lu_factor over a batch: LU and 0-based int32 pivots."""
    parts = [scipy.linalg.lu_factor(m) for m in a.reshape(-1, *a.shape[-2:])]
    lu = np.stack([p[0] for p in parts]).reshape(a.shape)
    pivots = np.stack([p[1] for p in parts]).astype(np.int32)
    return lu, pivots.reshape(*a.shape[:-2], pivots.shape[-1])


def numpy_reference(case: Case, primals: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The differentiable outputs of the op, computed in NumPy and SciPy: a tuple."""

    def one(*xs: np.ndarray) -> tuple[np.ndarray, ...]:
        if case.op in ("inv", "inv_ex"):
            return (np.linalg.inv(xs[0]),)
        if case.op == "tensorinv":
            return (np.linalg.tensorinv(xs[0], **case.params),)
        if case.op == "tensorsolve":
            return (np.linalg.tensorsolve(*xs),)
        if case.op.startswith("lu_factor"):
            return (lu_factor_numpy(xs[0])[0],)
        if case.op == "det":
            return (np.linalg.det(xs[0]),)
        if case.op == "slogdet":
            return tuple(np.linalg.slogdet(xs[0]))
        if case.op == "lu_solve":
            lu, pivots, b = xs
            return (per_matrix(lu_solve_one, lu, pivots, b, **case.params),)
        if case.op == "solve_triangular":
            return (per_matrix(triangular_one, *xs, **case.params),)
        a, b = xs
        if case.params.get("left", True):
            return (np.linalg.solve(a, b[..., None])[..., 0] if b.ndim == 1 else a_solve(a, b),)
        at = np.swapaxes(a, -1, -2)  # x a = b is a^T x^T = b^T
        if b.ndim == 1:
            return (np.linalg.solve(at, b[..., None])[..., 0],)
        return (np.swapaxes(a_solve(at, np.swapaxes(b, -1, -2)), -1, -2),)

    if case.stacked:
        return tuple(
            np.stack(part)
            for part in zip(*(one(*(x[i] for x in primals)) for i in range(primals[0].shape[0])))
        )
    return one(*primals)


def per_matrix(fn: Any, *xs: np.ndarray, **params: Any) -> np.ndarray:
    """``fn`` of one matrix problem over the broadcast batch (b: one batch of matrices or a
    vector; the first input is the square matrix, pivots next for lu_solve)."""
    a, b = xs[0], xs[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2] if b.ndim > 1 else ())
    out = []
    for index in np.ndindex(*batch):
        pick = [
            np.broadcast_to(x, (*batch, *x.shape[x.ndim - k :]))[index]
            for x, k in ((a, 2), *((x, 1) for x in xs[1:-1]))
        ]
        bb = b if b.ndim == 1 else np.broadcast_to(b, (*batch, *b.shape[-2:]))[index]
        out.append(fn(*pick, bb, **params))
    return np.stack(out).reshape(*batch, *out[0].shape) if batch else out[0]


def lu_solve_one(lu, pivots, b, left=True, adjoint=False):
    if left:
        return scipy.linalg.lu_solve((lu, pivots), b, trans=2 if adjoint else 0)
    bt = b.T if b.ndim > 1 else b  # x op(A) = b:  op(A)^T x^T = b^T
    if adjoint:  # A^H^T = conj(A)
        x = np.conj(scipy.linalg.lu_solve((lu, pivots), np.conj(bt), trans=0))
    else:
        x = scipy.linalg.lu_solve((lu, pivots), bt, trans=1)
    return x.T if b.ndim > 1 else x


def triangular_one(a, b, upper, left=True, unitriangular=False):
    if left:
        return scipy.linalg.solve_triangular(a, b, lower=not upper, unit_diagonal=unitriangular)
    bt = b.T if b.ndim > 1 else b
    x = scipy.linalg.solve_triangular(a, bt, trans=1, lower=not upper, unit_diagonal=unitriangular)
    return x.T if b.ndim > 1 else x


def differentiable(op: str, out: Any) -> Any:
    """An op's result without what has no derivative (pivots, info): one array or a tuple."""
    picked = tuple(v for v, d in zip(values(op, out), RULES[op].differentiable) if d)
    return picked if len(picked) > 1 else picked[0]


def op_cotangent(op: str, ct: Any) -> Any:
    """A cotangent of the differentiable outputs, shaped as ``ops.vjp`` takes it."""
    rule = RULES[op]
    cts = iter(ct if isinstance(ct, tuple) else (ct,))
    per_value = tuple(next(cts) if d else None for d in rule.differentiable)
    if rule.returns_info:
        return (*per_value, None)
    return per_value if rule.multi else per_value[0]


def references(case: Case, primals: tuple, tangents: tuple, weights: Any) -> tuple:
    """Outputs, ``jax.jvp``'s tangent and ``jax.grad`` of ``sum(Re(w * value))``, in NumPy.

    From the NumPy backend: the same rules without JAX or any sharding, and no
    compilation (each JAX program costs this module about a second on a small
    CPU). Its ``ops.vjp`` is the adjoint; JAX's pullback of ``w`` is
    ``conj(adjoint(conj(w)))``. Gradients of the floating inputs only.
    """
    ops = invad.install("numpy")

    def one(xs: tuple, ts: tuple, w: Any) -> tuple:
        right_vector = not case.params.get("left", True) and xs[-1].ndim == 1
        if right_vector:  # x a = b for a vector b is the one-row matrix problem
            rows = (*xs[0].shape[:-2], 1, xs[-1].shape[0])
            xs = (*xs[:-1], np.broadcast_to(xs[-1], rows))
            ts = (*ts[:-1], np.broadcast_to(ts[-1], rows))
            w = w[..., None, :]
        outputs, dout = ops.jvp(case.op, xs, ts, **case.params)
        conj_w = tuple(np.conj(x) for x in w) if isinstance(w, tuple) else np.conj(w)
        _, grads = ops.vjp(case.op, xs, op_cotangent(case.op, conj_w), **case.params)
        grads = tuple(np.conj(g) for g, is_int in zip(grads, integer(case)) if not is_int)
        dout = differentiable(case.op, dout)
        if right_vector:
            grads = (*grads[:-1], grads[-1].reshape(-1, grads[-1].shape[-1]).sum(axis=0))
            dout = dout[..., 0, :]
            outputs = (
                (outputs[0][..., 0, :], outputs[1])
                if isinstance(outputs, tuple)
                else (outputs[..., 0, :])
            )
        return outputs, dout, grads

    if not case.stacked:
        return one(primals, tangents, weights)
    parts = [
        one(tuple(x[i] for x in primals), tuple(t[i] for t in tangents), weights[i])
        for i in range(primals[0].shape[0])
    ]
    return tuple(
        np.stack(part) if j < 2 else tuple(map(np.stack, zip(*part)))
        for j, part in enumerate(zip(*parts))
    )


def a_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^-1 b`` with the array API's broadcasting (NumPy 2 agrees for matrix ``b``)."""
    return np.linalg.solve(a, b)


def op_fns(case: Case) -> tuple[Any, Any]:
    """The op as a function of its inputs (all outputs), and its differentiable outputs."""
    op = partial(getattr(OPS, case.op), **case.params)
    full = jax.vmap(op) if case.stacked else op
    return full, lambda *xs: differentiable(case.op, full(*xs))


def floats_of(case: Case, xs: tuple) -> tuple:
    return tuple(x for x, is_int in zip(xs, integer(case)) if not is_int)


def with_floats(case: Case, fn: Any, xs: tuple) -> Any:
    """``fn`` of the floating inputs only, the integer ones (pivots) taken from ``xs``."""

    def g(*floats: Any) -> Any:
        it = iter(floats)
        return fn(*(x if is_int else next(it) for x, is_int in zip(xs, integer(case))))

    return g


def real_loss(weights: Any, out: Any) -> Any:
    """sum(Re(w * value)) over the differentiable outputs."""
    leaves = jax.tree_util.tree_leaves
    return sum(jnp.sum(jnp.real(w * y)) for w, y in zip(leaves(weights), leaves(out)))


def quantities(case: Case, primals: tuple, tangents: tuple, weights: Any) -> tuple:
    """Forward (all outputs), ``grad`` of ``sum(Re(w * value))`` and ``jvp`` of the value."""
    full, value = op_fns(case)
    floats = floats_of(case, primals)
    of_floats = with_floats(case, value, primals)

    def loss(*xs: Any) -> Any:
        return real_loss(weights, of_floats(*xs))

    outputs = full(*primals)
    grads = jax.grad(loss, tuple(range(len(floats))))(*floats)
    _, dout = jax.jvp(of_floats, floats, floats_of(case, tangents))
    return outputs, grads, dout


@pytest.fixture(scope="module", autouse=True)
def _drop_compiled_programs():
    yield
    jax.clear_caches()


def output_specs(case: Case) -> tuple[Any, Any]:
    """The specs of the op's result and of its differentiable outputs (and their weights)."""
    rule, out_spec = RULES[case.op], case.out_spec
    n_values, n_diff = len(rule.value_names), sum(rule.differentiable)
    result = (out_spec,) * n_values
    # info has the batch shape of `a` alone (the factored matrix), sharded as `a` is.
    if rule.returns_info:
        result = (*result, case.specs[0])
    diff = (out_spec,) * n_diff
    return result if len(result) > 1 else result[0], diff if n_diff > 1 else diff[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_shard_map(case: Case) -> None:
    primals, tangents, weights = data(case)
    specs = case.specs
    float_specs = floats_of(case, specs)
    result_spec, diff_spec = output_specs(case)
    _, value = op_fns(case)

    @jax.jit
    def sharded(primals: tuple, tangents: tuple, weights: Any) -> tuple:
        inside = jax.shard_map(
            lambda p, t, w: quantities(case, p, t, w),
            mesh=MESH,
            in_specs=(specs, float_specs, diff_spec),
            out_specs=(result_spec, float_specs, diff_spec),
        )(primals, tangents, weights)
        mapped = jax.shard_map(value, mesh=MESH, in_specs=specs, out_specs=diff_spec)
        of_floats = with_floats(case, mapped, primals)

        def loss(*xs: Any) -> Any:
            return real_loss(weights, of_floats(*xs))

        floats = floats_of(case, primals)
        return inside, jax.grad(loss, tuple(range(len(floats))))(*floats)  # around shard_map

    def put(x: np.ndarray, spec: Any) -> Any:
        return jax.device_put(x, NamedSharding(MESH, spec))

    put_weights = jax.tree_util.tree_map(put, weights, diff_spec)
    (outputs, grads, dout), outer_grads = sharded(
        tuple(map(put, primals, specs)),
        tuple(map(put, floats_of(case, tangents), float_specs)),
        put_weights,
    )
    ref_outputs, ref_dout, ref_grads = references(case, primals, tangents, weights)

    tol = TOL
    for got, ref in zip(values(case.op, outputs), values(case.op, ref_outputs), strict=True):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, **tol)  # exact for the pivots
    if RULES[case.op].returns_info:
        np.testing.assert_array_equal(outputs[-1], ref_outputs[-1])
        assert outputs[-1].dtype == ref_outputs[-1].dtype
    expected = numpy_reference(case, primals)
    value_out = differentiable(case.op, outputs)
    for got, ref in zip(jax.tree_util.tree_leaves(value_out), expected, strict=True):
        np.testing.assert_allclose(got, ref, **tol)
    for got, ref in zip(jax.tree_util.tree_leaves(dout), jax.tree_util.tree_leaves(ref_dout)):
        np.testing.assert_allclose(got, ref, **tol)
    floats = floats_of(case, primals)
    for g, g_outer, ref, x in zip(grads, outer_grads, ref_grads, floats, strict=True):
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g, ref, **tol)
        np.testing.assert_allclose(g_outer, ref, **tol)


# -- jit over sharded arrays ------------------------------------------------------

JIT_CASES = [
    ("inv_ex", ((B, N, N),), (S,), {}),
    ("solve", ((B, N, N), (B, N, K)), (S, S), {}),
    ("solve", ((N, N), (B, N, K)), (R, S), {}),
    ("solve", ((B, N, N), (N, K)), (S, R), {}),
    ("solve_ex", ((B, N, N), (B, K, N)), (S, S), {"left": False}),
    ("lu_factor_ex", ((B, N, N),), (S,), {}),
    ("lu_solve", ((B, N, N), (B, N, K)), (S, S, S), {}),
    ("lu_solve", ((N, N), (B, N, K)), (R, R, S), {"adjoint": True}),
    ("solve_triangular", ((B, N, N), (B, N, K)), (S, S), {"upper": True}),
    ("solve_triangular", ((N, N), (B, K, N)), (R, S), {"upper": False, "left": False}),
    ("det", ((B, N, N),), (S,), {}),
    ("slogdet", ((B, N, N),), (S,), {}),
]


@pytest.mark.parametrize("kind", list(MESHES))
def test_jit_keeps_the_batch_sharded(kind: str) -> None:
    """Under ``jit`` the outputs and the gradient of a batch-sharded input stay sharded alike,
    and the compiled program gathers nothing."""
    mesh = MESHES[kind]
    for op, shapes, specs, params in JIT_CASES:
        case = Case(op, shapes, specs, params)
        primals, _, weights = data(case)
        full, value = op_fns(case)
        float_positions = tuple(i for i, is_int in enumerate(integer(case)) if not is_int)

        def program(
            *xs: Any,
            full: Any = full,
            value: Any = value,
            weights: Any = weights,
            argnums: tuple[int, ...] = float_positions,
        ) -> tuple:
            def loss(*xs: Any) -> Any:
                return real_loss(weights, value(*xs))

            return full(*xs), jax.grad(loss, argnums)(*xs)

        inputs = [jax.device_put(x, NamedSharding(mesh, spec)) for x, spec in zip(primals, specs)]
        compiled = jax.jit(program).lower(*inputs).compile()
        hlo = compiled.as_text()
        assert "all-gather" not in hlo and "all-to-all" not in hlo, (kind, case.id)
        outputs, grads = compiled(*inputs)

        batch = NamedSharding(mesh, S)
        for out in jax.tree_util.tree_leaves(outputs):  # pivots and info too
            assert out.sharding.is_equivalent_to(batch, out.ndim), (kind, case.id, out.sharding)
        for g, i in zip(grads, float_positions, strict=True):
            # A batch-sharded input's gradient is sharded alike; a replicated one's is summed.
            x = inputs[i]
            assert g.sharding.is_equivalent_to(x.sharding, x.ndim), (kind, case.id, g.sharding)
        expected = numpy_reference(case, primals)
        got = jax.tree_util.tree_leaves(differentiable(op, outputs))
        for g, ref in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, ref, **TOL)
