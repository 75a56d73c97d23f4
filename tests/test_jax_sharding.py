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

import invad  # noqa: E402
from invad.rules import RULES  # noqa: E402
from invad.testing import cases as C  # noqa: E402

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
]


def data(case: Case) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
    """Primals (``a`` well conditioned), tangents and the loss weights, in NumPy."""
    rng = np.random.default_rng(sum(map(ord, case.id)))
    a_shape, *rest = case.shapes
    if case.op.startswith("tensor"):  # a (2, 3, 6) is a 6 x 6 matrix
        lead = a_shape[:-3] if case.stacked else ()
        a = C.well_conditioned(rng, lead, 6, case.dtype).reshape(a_shape)
    else:
        a = C.well_conditioned(rng, a_shape[:-2], a_shape[-1], case.dtype)
    primals = (a, *(C.random_array(rng, s, case.dtype) for s in rest))
    tangents = tuple(C.random_array(rng, x.shape, case.dtype) for x in primals)
    weights = C.random_array(rng, numpy_reference(case, primals).shape, case.dtype)
    return primals, tangents, weights


def numpy_reference(case: Case, primals: tuple[np.ndarray, ...]) -> np.ndarray:
    def one(*xs: np.ndarray) -> np.ndarray:
        if case.op in ("inv", "inv_ex"):
            return np.linalg.inv(xs[0])
        if case.op == "tensorinv":
            return np.linalg.tensorinv(xs[0], **case.params)
        if case.op == "tensorsolve":
            return np.linalg.tensorsolve(*xs)
        a, b = xs
        if case.params.get("left", True):
            return np.linalg.solve(a, b[..., None])[..., 0] if b.ndim == 1 else a_solve(a, b)
        at = np.swapaxes(a, -1, -2)  # x a = b is a^T x^T = b^T
        if b.ndim == 1:
            return np.linalg.solve(at, b[..., None])[..., 0]
        return np.swapaxes(a_solve(at, np.swapaxes(b, -1, -2)), -1, -2)

    if case.stacked:
        return np.stack([one(*(x[i] for x in primals)) for i in range(primals[0].shape[0])])
    return one(*primals)


def references(case: Case, primals: tuple, tangents: tuple, weights: np.ndarray) -> tuple:
    """Outputs, ``jax.jvp``'s tangent and ``jax.grad`` of ``sum(Re(w * value))``, in NumPy.

    From the NumPy backend: the same rules without JAX or any sharding, and no
    compilation (each JAX program costs this module about a second on a small
    CPU). Its ``ops.vjp`` is the adjoint; JAX's pullback of ``w`` is
    ``conj(adjoint(conj(w)))``.
    """
    ops = invad.install("numpy")
    with_info = RULES[case.op].returns_info

    def one(xs: tuple, ts: tuple, w: np.ndarray) -> tuple:
        right_vector = not case.params.get("left", True) and xs[1].ndim == 1
        if right_vector:  # x a = b for a vector b is the one-row matrix problem
            rows = (*xs[0].shape[:-2], 1, xs[1].shape[0])
            xs, ts = (xs[0], np.broadcast_to(xs[1], rows)), (ts[0], np.broadcast_to(ts[1], rows))
            w = w[..., None, :]
        outputs, dout = ops.jvp(case.op, xs, ts, **case.params)
        _, grads = ops.vjp(
            case.op, xs, (np.conj(w), None) if with_info else np.conj(w), **case.params
        )
        grads = tuple(np.conj(g) for g in grads)
        if with_info:
            dout = dout[0]
        if right_vector:
            grads = (grads[0], grads[1].reshape(-1, grads[1].shape[-1]).sum(axis=0))
            dout = dout[..., 0, :]
            outputs = (outputs[0][..., 0, :], outputs[1]) if with_info else outputs[..., 0, :]
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
    """The op as a function of its inputs (all outputs), and its differentiable value."""
    op = partial(getattr(OPS, case.op), **case.params)
    full = jax.vmap(op) if case.stacked else op
    if RULES[case.op].returns_info:
        return full, lambda *xs: full(*xs)[0]
    return full, full


def quantities(case: Case, primals: tuple, tangents: tuple, weights: Any) -> tuple:
    """Forward (all outputs), ``grad`` of ``sum(Re(w * value))`` and ``jvp`` of the value."""
    full, value = op_fns(case)
    argnums = tuple(range(len(primals)))

    def loss(*xs: Any) -> Any:
        return jnp.sum(jnp.real(weights * value(*xs)))

    outputs = full(*primals)
    grads = jax.grad(loss, argnums)(*primals)
    _, dout = jax.jvp(full, primals, tangents)  # the _ex ops' info gets a float0 tangent
    if RULES[case.op].returns_info:
        dout = dout[0]
    return outputs, grads, dout


@pytest.fixture(scope="module", autouse=True)
def _drop_compiled_programs():
    yield
    jax.clear_caches()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_shard_map(case: Case) -> None:
    primals, tangents, weights = data(case)
    specs, out_spec = case.specs, case.out_spec
    # info has the batch shape of `a` alone (the factored matrix), sharded as `a` is.
    outputs_spec = (out_spec, specs[0]) if RULES[case.op].returns_info else out_spec
    _, value = op_fns(case)
    argnums = tuple(range(len(primals)))

    @jax.jit
    def sharded(primals: tuple, tangents: tuple, weights: Any) -> tuple:
        inside = jax.shard_map(
            partial(quantities, case),
            mesh=MESH,
            in_specs=(specs, specs, out_spec),
            out_specs=(outputs_spec, specs, out_spec),
        )(primals, tangents, weights)
        mapped = jax.shard_map(value, mesh=MESH, in_specs=specs, out_specs=out_spec)

        def loss(*xs: Any) -> Any:
            return jnp.sum(jnp.real(weights * mapped(*xs)))

        return inside, jax.grad(loss, argnums)(*primals)  # grad around shard_map

    def put(x: np.ndarray, spec: Any) -> Any:
        return jax.device_put(x, NamedSharding(MESH, spec))

    (outputs, grads, dout), outer_grads = sharded(
        tuple(map(put, primals, specs)), tuple(map(put, tangents, specs)), put(weights, out_spec)
    )
    ref_outputs, ref_dout, ref_grads = references(case, primals, tangents, weights)

    tol = TOL
    if RULES[case.op].returns_info:
        (value_out, info), (ref_value, ref_info) = outputs, ref_outputs
        np.testing.assert_array_equal(info, ref_info)
        assert info.dtype == ref_info.dtype and info.shape == ref_info.shape
    else:
        value_out, ref_value = outputs, ref_outputs
    np.testing.assert_allclose(value_out, ref_value, **tol)
    np.testing.assert_allclose(value_out, numpy_reference(case, primals), **tol)
    np.testing.assert_allclose(dout, ref_dout, **tol)
    for g, g_outer, ref, x in zip(grads, outer_grads, ref_grads, primals):
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
]


@pytest.mark.parametrize("kind", list(MESHES))
def test_jit_keeps_the_batch_sharded(kind: str) -> None:
    """Under ``jit`` the output and the gradient of a batch-sharded input stay sharded alike."""
    mesh = MESHES[kind]
    for op, shapes, specs, params in JIT_CASES:
        case = Case(op, shapes, specs, params)
        primals, _, weights = data(case)
        full, value = op_fns(case)

        def program(*xs: Any, full: Any = full, value: Any = value, weights: Any = weights):
            def loss(*xs: Any) -> Any:
                return jnp.sum(weights * value(*xs))

            return full(*xs), jax.grad(loss, tuple(range(len(xs))))(*xs)

        inputs = [jax.device_put(x, NamedSharding(mesh, spec)) for x, spec in zip(primals, specs)]
        compiled = jax.jit(program).lower(*inputs).compile()
        hlo = compiled.as_text()
        assert "all-gather" not in hlo and "all-to-all" not in hlo, (kind, case.id)
        outputs, grads = compiled(*inputs)

        batch = NamedSharding(mesh, S)
        for out in outputs if RULES[op].returns_info else (outputs,):  # info too
            assert out.sharding.is_equivalent_to(batch, out.ndim), (kind, case.id, out.sharding)
        out = outputs[0] if RULES[op].returns_info else outputs
        for g, x in zip(grads, inputs):
            # A batch-sharded input's gradient is sharded alike; a replicated one's is summed.
            assert g.sharding.is_equivalent_to(x.sharding, x.ndim), (kind, case.id, g.sharding)
        np.testing.assert_allclose(out, numpy_reference(case, primals), **TOL)
