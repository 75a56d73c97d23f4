"""The JAX backend: custom_jvp ops under every JAX transform, against jnp.linalg and the oracles.

Runs where jax imports (``nox -s tests-jax``); skipped elsewhere. Enables
float64 (``jax_enable_x64``) at import, as the float64/complex128 references
need; the nox session also sets ``JAX_ENABLE_X64=1`` for the conformance kit
(``pytest --pyargs invad.testing --invad-backend jax``), which never switches
it on by itself. The two-device tests run ``tests/jax_devices.py`` in a
subprocess, because ``XLA_FLAGS`` must be set before jax is imported.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.linalg as jsl  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import invad  # noqa: E402
from invad.rules import RULES  # noqa: E402
from invad.testing import cases as C  # noqa: E402
from invad.testing.checks import values  # noqa: E402
from invad.testing.oracle import load_cases, replays  # noqa: E402

HERE = Path(__file__).parent
DTYPES = ("float64", "complex128")


@pytest.fixture(scope="module")
def ops() -> invad.Ops:
    return invad.install("jax")


@pytest.fixture(autouse=True)
def _drop_compiled_programs():
    """Each test compiles programs of its own shapes; keeping them all costs gigabytes."""
    yield
    jax.clear_caches()


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def numpy_inputs(op: str, shape: C.Shape, dtype: str, rng: np.random.Generator) -> tuple:
    """The op's inputs in NumPy; for ``lu_solve`` ``(LU, pivots, b)`` from
    ``jax.scipy.linalg.lu_factor``, the factorization JAX users hand to it."""
    xs = C.primals(op, shape, dtype, rng)
    if op != "lu_solve":
        return xs
    a, b = xs
    lu, pivots = jsl.lu_factor(jnp.asarray(a))
    return np.asarray(lu), np.asarray(pivots), b


def inputs(op: str, shape: C.Shape, dtype: str) -> tuple[jax.Array, ...]:
    rng = rng_for(op, shape.id, dtype)
    return tuple(jnp.asarray(x) for x in numpy_inputs(op, shape, dtype, rng))


def differentiable(op: str, out) -> object:
    """An op's result without what has no derivative (pivots, info): one array, or the tuple
    of several (slogdet's sign and logabsdet)."""
    picked = tuple(v for v, d in zip(values(op, out), RULES[op].differentiable) if d)
    return picked if len(picked) > 1 else picked[0]


def value_fn(ops: invad.Ops, op: str, params: dict) -> callable:
    """The op as a function of its inputs, returning its differentiable outputs."""
    fn = getattr(ops, op)
    return lambda *xs: differentiable(op, fn(*xs, **params))


def over_floats(op: str, f: callable, xs: tuple) -> tuple[callable, tuple]:
    """``f`` as a function of the floating inputs alone (pivots held fixed), and those inputs."""
    integer = RULES[op].integer
    if not any(integer):
        return f, xs

    def g(*floats):
        it = iter(floats)
        return f(*(x if is_int else next(it) for x, is_int in zip(xs, integer)))

    return g, tuple(x for x, is_int in zip(xs, integer) if not is_int)


def op_cotangent(op: str, ct) -> object:
    """A cotangent of the differentiable outputs, shaped as ``ops.vjp`` takes it."""
    rule = RULES[op]
    cts = iter(ct if isinstance(ct, tuple) else (ct,))
    per_value = tuple(next(cts) if d else None for d in rule.differentiable)
    if rule.returns_info:
        return (*per_value, None)
    return per_value if rule.multi else per_value[0]


def as_columns(b, lu, left: bool):
    """``b`` as matrices (a vector: one column; a right solve: transposed), batch broadcast
    with ``lu``'s, as the jax.scipy.linalg functions then read it."""
    m = b[..., None] if b.ndim == 1 else (b if left else jnp.matrix_transpose(b))
    batch = jnp.broadcast_shapes(lu.shape[:-2], m.shape[:-2])
    return jnp.broadcast_to(m, (*batch, *m.shape[-2:])), batch


def from_columns(x, b, left: bool):
    return x[..., 0] if b.ndim == 1 else (x if left else jnp.matrix_transpose(x))


def reference_lu_solve(lu, pivots, b, left=True, adjoint=False):
    """invad's lu_solve written with jax.scipy.linalg.lu_solve (left solves only)."""
    m, batch = as_columns(b, lu, left)
    factor = (
        jnp.broadcast_to(lu, (*batch, *lu.shape[-2:])),
        jnp.broadcast_to(pivots, (*batch, pivots.shape[-1])),
    )
    if left:  # op(A) x = b
        x = jsl.lu_solve(factor, m, trans=2 if adjoint else 0)
    elif adjoint:  # x A^H = b:  A x^H = b^H
        x = jnp.conj(jsl.lu_solve(factor, jnp.conj(m), trans=0))
    else:  # x A = b:  A^T x^T = b^T
        x = jsl.lu_solve(factor, m, trans=1)
    return from_columns(x, b, left)


def reference_solve_triangular(a, b, upper, left=True, unitriangular=False):
    m, _ = as_columns(b, a, left)
    x = jsl.solve_triangular(
        a, m, trans=0 if left else 1, lower=not upper, unit_diagonal=unitriangular
    )
    return from_columns(x, b, left)


def reference_determinant(fn):
    """``fn`` (jnp.linalg.det or slogdet), with the empty matrix's determinant 1 (and
    log 0) that jnp.linalg.det fails on."""

    def det(a):
        if a.shape[-1]:
            return fn(a)
        one = jnp.ones(a.shape[:-2], a.dtype) + 0 * jnp.sum(a, axis=(-2, -1))
        return one if fn is jnp.linalg.det else (one, jnp.real(one) - 1)

    return det


def reference_fn(op: str, params: dict) -> callable:
    """The same op written with jnp.linalg and jax.scipy.linalg, returning what value_fn does."""
    base = op.removesuffix("_ex")
    if base == "inv":
        return jnp.linalg.inv
    if base == "tensorinv":
        return lambda a: jnp.linalg.tensorinv(a, ind=params.get("ind", 2))
    if base == "tensorsolve":
        return lambda a, b: jnp.linalg.tensorsolve(a, b, axes=params.get("axes"))
    if base == "lu_factor":
        return lambda a: jsl.lu_factor(a)[0]
    if op == "lu_solve":
        return partial(reference_lu_solve, **params)
    if op == "solve_triangular":
        return partial(reference_solve_triangular, **params)
    if op == "det":
        return reference_determinant(jnp.linalg.det)
    if op == "slogdet":
        return reference_determinant(lambda a: tuple(jnp.linalg.slogdet(a)))
    if params.get("left", True):
        return jnp.linalg.solve

    def right(a, b):
        if b.ndim == 1:
            return jnp.linalg.solve(jnp.matrix_transpose(a), b)
        return jnp.matrix_transpose(
            jnp.linalg.solve(jnp.matrix_transpose(a), jnp.matrix_transpose(b))
        )

    return right


#: The LU family's shape families run here, those that take distinct paths (each costs
#: compilations; the kit runs every family on JAX: forward, jvp, vjp, native AD).
LU_FAMILIES = {
    "lu_factor": ("batched-tall", "no-columns"),
    "lu_factor_ex": ("empty-batch",),
    "lu_solve": ("broadcast", "adjoint", "right-adjoint-vector", "empty-rhs"),
    "solve_triangular": ("lower-broadcast", "right-upper", "unit-lower-right", "empty-matrix"),
    "det": ("batched-2d", "empty-matrix"),
    "slogdet": ("one-by-one", "empty-batch"),
}


#: Functions of Hermitian matrices (their tangents count by the Hermitian part, so the
#: generic checks here, with arbitrary directions, do not apply): the kit runs them on JAX
#: with Hermitian tangents, and tests/test_cholesky.py with every transform it needs.
HERMITIAN_OPS = ("cholesky", "cholesky_ex", "cholesky_solve")


def all_cases(dtypes=DTYPES, empty=True):
    """The kit's cases, less the rest of the solve grid (the kit runs those on JAX: jvp,
    vjp, native AD), the LU family's families not in LU_FAMILIES and the Hermitian ones
    (the Cholesky family, solve(assume_a="pos")); each shape here costs compilations."""
    grid = {shape.family for shape in C.SOLVE_GRID} | {shape.family for shape in C.SOLVE_POS}
    return [
        pytest.param(op, shape, dtype, id=f"{op}-{shape.id}-{dtype}")
        for op in RULES
        if op not in HERMITIAN_OPS
        for shape in C.SHAPES[op]
        for dtype in dtypes
        if (empty or "empty" not in shape.family)
        and shape.family not in grid
        and shape.family in LU_FAMILIES.get(op, (shape.family,))
    ]


def assert_close(got, ref, rtol=1e-10, atol=1e-10):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (
        got.shape,
        got.dtype,
        ref.shape,
        ref.dtype,
    )
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def tree_close(got, ref, **kw):
    for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref), strict=True):
        assert_close(g, r, **kw)


def random_like(x, rng):
    """Random data shaped as ``x`` (or as each array of a tuple of them)."""
    if isinstance(x, tuple):
        return tuple(random_like(y, rng) for y in x)
    return jnp.asarray(C.random_array(rng, x.shape, str(x.dtype)))


def real_loss(f, weights):
    """A real scalar of the op's value(s): Re sum(conj(w) * f(x)), summed over the outputs."""

    def loss(*xs):
        pairs = zip(jax.tree_util.tree_leaves(weights), jax.tree_util.tree_leaves(f(*xs)))
        return sum(jnp.sum(jnp.real(jnp.conj(w) * y)) for w, y in pairs)

    return loss


# -- the plugin ------------------------------------------------------------------------


def test_jax_is_a_builtin_native_backend(ops):
    info = {b.name: b for b in invad.backends()}["jax"]
    assert info.available and info.native_ad and info.plugin == "invad.backends.jax"
    assert info.version == jax.__version__
    assert info.devices == tuple(f"{d.platform}:{d.id}" for d in jax.devices())
    assert ops.name == "jax" and ops.xp is jnp and ops.device == jax.devices()[0]
    assert invad.install("jax") is ops
    assert invad.install("jax", device=jax.devices()[0]) is ops
    assert invad.install("jax", device="cpu:0") is ops
    assert not ops.backend.raises_on_singular


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="no device 'cpu:99'"):
        invad.install("jax", device="cpu:99")
    with pytest.raises(ValueError, match="no device 'tpu'"):
        invad.install("jax", device="tpu")


def test_top_level_ops_dispatch_to_jax_also_under_jit():
    a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    b = jnp.array([1.0, 2.0])
    assert_close(invad.solve(a, b), jnp.linalg.solve(a, b))
    assert_close(jax.jit(invad.inv)(a), jnp.linalg.inv(a))
    assert_close(
        jax.grad(lambda a: invad.inv(a).sum())(a), jax.grad(lambda a: jnp.linalg.inv(a).sum())(a)
    )


def test_invad_does_not_need_jax():
    """With jax unimportable: invad works, lists jax as unavailable, and install says why."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoJax(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.partition(".")[0] in ("jax", "jaxlib"):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoJax())
        import numpy as np, invad
        from invad.registry import REGISTRY
        REGISTRY.discover()
        assert not REGISTRY.entries["jax"].backend.owns(np.ones(2))
        info = {b.name: b for b in invad.backends()}["jax"]
        assert not info.available and "No module named 'jax'" in info.reason, info
        try:
            invad.install("jax")
        except invad.BackendNotFoundError as exc:
            assert "jax" in str(exc) and isinstance(exc.__cause__, ImportError)
        else:
            raise AssertionError("install('jax') worked without jax")
        np.testing.assert_allclose(invad.inv(np.eye(2)), np.eye(2))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_owns_does_not_import_jax():
    code = textwrap.dedent(
        """
        import sys, numpy as np, invad
        from invad.registry import REGISTRY
        REGISTRY.discover()
        assert not REGISTRY.entries["jax"].backend.owns(np.ones(2))
        assert invad.inv(np.eye(2)).shape == (2, 2)
        assert "jax" not in sys.modules, "invad imported jax"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- acceptance: check_grads at second order, forward and reverse -----------------------


GRAD_FAMILIES = {
    "inv": ("single", "batched"),
    "solve": ("single", "vector", "broadcast", "right", "right-vector"),
    "tensorinv": ("matrix", "3d"),
    "tensorsolve": ("matrix", "axes"),
    "inv_ex": ("batched",),
    "solve_ex": ("right",),
    # The LU family: one family each of the two ops whose rules are longest (the rest, at
    # second order, against JAX's own derivatives and the oracles' HVPs below).
    "lu_factor": ("batched-tall",),
    "lu_solve": ("right-adjoint-vector",),
}


def grad_cases():
    """Every op, in float64 and complex128, on the shapes that exercise its distinct paths."""
    cases = all_cases(empty=False)
    return [p for p in cases if p.values[1].family in GRAD_FAMILIES.get(p.values[0], ())]


@pytest.mark.parametrize(("op", "shape", "dtype"), grad_cases())
def test_check_grads_order_2(ops, op, shape, dtype):
    f, xs = over_floats(op, value_fn(ops, op, shape.params), inputs(op, shape, dtype))
    check_grads(f, xs, order=2, modes=("fwd", "rev"))


def test_check_grads_order_3_of_solve_and_inv(ops):
    a, b = inputs("solve", C.SHAPES["solve"][2], "complex128")
    check_grads(ops.solve, (a, b), order=3, modes=("fwd", "rev"))
    check_grads(ops.inv, (a[:2],), order=3, modes=("fwd", "rev"))


# -- values and derivatives against jnp.linalg ---------------------------------------


def eager_and_jit(cases):
    """Each case under jit; the base ops' cases eagerly too (their twins share the rule)."""
    out = []
    for p in cases:
        op = p.values[0]
        for jit in (False, True) if op in ("inv", "solve") else (True,):
            out.append(pytest.param(*p.values, jit, id=f"{p.id}-{'jit' if jit else 'eager'}"))
    return out


@pytest.mark.parametrize(("op", "shape", "dtype", "jit"), eager_and_jit(all_cases()))
def test_values_and_derivatives_match_jnp_linalg(ops, op, shape, dtype, jit):
    """Value, jax.jvp, jax.vjp (JAX's convention) and an HVP equal those of jnp.linalg (and
    jax.scipy.linalg for the LU family; lu_solve gets jax.scipy.linalg.lu_factor's output)."""
    everything = inputs(op, shape, dtype)
    f, xs = over_floats(op, value_fn(ops, op, shape.params), everything)
    ref, _ = over_floats(op, reference_fn(op, shape.params), everything)
    rng = rng_for("derivatives", op, shape.id, dtype)
    ts = tuple(random_like(x, rng) for x in xs)
    ct = random_like(ref(*xs), rng)
    argnums = tuple(range(len(xs)))

    def derivatives(fn, xs, ts, ct):
        out, jv = jax.jvp(fn, xs, ts)
        cts = jax.vjp(fn, *xs)[1](ct)
        hvp = jax.jvp(jax.grad(real_loss(fn, ct), argnums), xs, ts)[1]
        return out, jv, cts, hvp

    ours = (jax.jit(partial(derivatives, f)) if jit else partial(derivatives, f))(xs, ts, ct)
    theirs = jax.jit(partial(derivatives, ref))(xs, ts, ct)
    for got, expected in zip(ours, theirs, strict=True):
        tree_close(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", ("float32", "complex64"))
def test_single_precision_keeps_its_dtype(ops, dtype):
    a, b = inputs("solve", C.SHAPES["solve"][2], dtype)
    x = ops.solve(a, b)
    assert x.dtype == dtype
    np.testing.assert_allclose(x, jnp.linalg.solve(a, b), rtol=1e-4, atol=1e-4)
    ga, gb = jax.grad(lambda a, b: jnp.sum(jnp.abs(ops.solve(a, b)) ** 2), (0, 1))(a, b)
    assert ga.dtype == dtype and gb.dtype == dtype
    assert ops.inv(a).dtype == dtype and ops.inv_ex(a)[1].dtype == jnp.int32


def test_mixed_dtypes_promote_and_cotangents_keep_the_input_dtype(ops):
    a, _ = inputs("solve", C.SHAPES["solve"][2], "float64")
    _, b = inputs("solve", C.SHAPES["solve"][2], "complex128")
    x = ops.solve(a, b)
    assert x.dtype == jnp.complex128
    assert_close(x, jnp.linalg.solve(a.astype(b.dtype), b))
    ga, gb = jax.grad(lambda a, b: jnp.sum(jnp.abs(ops.solve(a, b)) ** 2), (0, 1))(a, b)
    ra, rb = jax.grad(lambda a, b: jnp.sum(jnp.abs(jnp.linalg.solve(a, b)) ** 2), (0, 1))(a, b)
    assert ga.dtype == jnp.float64 and gb.dtype == jnp.complex128
    assert_close(ga, ra)
    assert_close(gb, rb)


# -- complex conventions --------------------------------------------------------------


@pytest.mark.parametrize(("op", "shape", "dtype"), all_cases(dtypes=("complex128",), empty=False))
def test_jax_vjp_is_the_conjugate_of_the_adjoint(ops, op, shape, dtype):
    """jax_vjp(ct) = conj(adjoint_vjp(conj(ct))); ops.vjp is the adjoint (PyTorch's) one."""
    everything = inputs(op, shape, dtype)
    f, xs = over_floats(op, value_fn(ops, op, shape.params), everything)
    floats = [i for i, is_int in enumerate(RULES[op].integer) if not is_int]
    out, pullback = jax.vjp(f, *xs)
    ct = random_like(out, rng_for("convention", op, shape.id))
    jax_cts = pullback(ct)
    conj_ct = jax.tree_util.tree_map(jnp.conj, ct)
    _, adjoint = ops.vjp(op, everything, op_cotangent(op, conj_ct), **shape.params)
    for got, i in zip(jax_cts, floats, strict=True):
        assert_close(got, jnp.conj(adjoint[i]))
    # The adjoint convention is the one of <ct, J v> = <J* ct, v> under Re tr(X^H Y).
    ts = tuple(random_like(x, rng_for("tangent", op, shape.id)) for x in xs)
    _, jv = jax.jvp(f, xs, ts)
    _, adjoint = ops.vjp(op, everything, op_cotangent(op, ct), **shape.params)
    pairs = zip(jax.tree_util.tree_leaves(ct), jax.tree_util.tree_leaves(jv), strict=True)
    lhs = sum(jnp.real(jnp.vdot(c, v)) for c, v in pairs)
    rhs = sum(jnp.real(jnp.vdot(adjoint[i], t)) for i, t in zip(floats, ts))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


def test_real_primals_get_real_cotangents_from_jax(ops):
    a, b = inputs("solve", C.SHAPES["solve"][4], "float64")
    _, pullback = jax.vjp(ops.solve, a, b)
    ga, gb = pullback(jnp.ones(jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + b.shape[-2:]))
    assert ga.dtype == a.dtype and ga.shape == a.shape and gb.shape == b.shape


# -- the oracles -------------------------------------------------------------------------


def _oracle_params():
    """Every replay of inv and solve (eagerly too), of their twins, det and slogdet; a third
    of lu_factor's, lu_solve's and cholesky's (every third case: both dtypes, every shape
    kind), whose cases are many and each a compilation. The kit replays every case's JVP
    and VJP on JAX (ops.jvp, ops.vjp); here they go through JAX's transforms, with the HVP."""
    seen: dict[str, int] = {}
    for case in load_cases():
        for replay in replays(case):
            if replay.op in ("lu_factor_ex", "cholesky_ex"):
                continue  # the same rule; the info output is covered by the transforms
            k = seen[replay.op] = seen.get(replay.op, -1) + 1
            if replay.op in ("lu_factor", "lu_solve", "cholesky") and k % 3:
                continue
            for jit in (False, True) if replay.op == case.op in ("inv", "solve") else (True,):
                name = f"{case.case_id}-{replay.op}-{'jit' if jit else 'eager'}"
                yield pytest.param(case, replay, jit, id=name)


ORACLE = list(_oracle_params())


def _differentiable_part(op: str, per_output):
    """An oracle's per-output tuple (None for pivots) reduced as value_fn returns outputs."""
    if not RULES[op].multi:
        return jnp.asarray(per_output)
    picked = tuple(
        jnp.asarray(x) for x, d in zip(per_output, RULES[op].differentiable, strict=True) if d
    )
    return picked if len(picked) > 1 else picked[0]


@pytest.mark.parametrize(("case", "replay", "jit"), ORACLE)
def test_oracle_replay_through_jax_transforms(ops, case, replay, jit):
    """JVP by jax.jvp; VJP by jax.vjp put in the adjoint convention; HVP by jax.jvp of jax.grad.

    lu_solve's pivots (0-based, as JAX's own) are held fixed: JAX differentiates with
    respect to LU and b only.
    """
    wrap = jax.jit if jit else (lambda f: f)
    primals = tuple(jnp.asarray(x) for x in replay.primals_for(ops.la.pivot_base))
    f, xs = over_floats(replay.op, value_fn(ops, replay.op, replay.params), primals)
    ts = tuple(jnp.asarray(t) for t in replay.tangents if t is not None)
    ct = _differentiable_part(replay.op, replay.cotangent)
    argnums = tuple(range(len(xs)))

    def derivatives(xs, ts, ct):
        _, jv = jax.jvp(f, xs, ts)
        _, pullback = jax.vjp(f, *xs)
        conj_ct = jax.tree_util.tree_map(jnp.conj, ct)
        adjoint = tuple(jnp.conj(g) for g in pullback(conj_ct))  # PyTorch's convention
        if replay.hvp is None:
            return jv, adjoint, None
        grad = jax.grad(real_loss(f, ct), argnums)  # JAX's convention
        return jv, adjoint, tuple(jnp.conj(h) for h in jax.jvp(grad, xs, ts)[1])

    jv, adjoint, hvp = wrap(derivatives)(xs, ts, ct)
    rtol, atol = case.first_order
    ref_jv = _differentiable_part(replay.op, replay.jvp)
    for got, ref in zip(jax.tree_util.tree_leaves(jv), jax.tree_util.tree_leaves(ref_jv)):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    for got, ref in zip(adjoint, [v for v in replay.vjp if v is not None], strict=True):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
    if replay.hvp is not None:
        rtol, atol = case.second_order
        for got, ref in zip(hvp, [h for h in replay.hvp if h is not None], strict=True):
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


# -- every transform and their nestings --------------------------------------------------


TRANSFORMS = (
    "jit",
    "vmap",
    "vmap-in-axes",
    "grad",
    "jvp",
    "vjp",
    "linearize",
    "jacfwd",
    "jacrev",
    "hessian",
    "grad-of-grad",
    "jit-vmap-grad",
    "vmap-hessian",
    "jit-jacrev-jacfwd",
)


def transform(name: str, f: callable, holomorphic: bool) -> callable:
    """``name`` applied to ``f(a, b)``, a function of ``(a, b)`` again.

    For complex inputs the derivatives are taken with ``holomorphic=True``
    (``inv`` and ``solve`` are holomorphic, and so is the loss then).
    """
    h = {"holomorphic": True} if holomorphic else {}

    def loss(a, b):
        out = jnp.sum(jnp.sin(f(a, b)))
        return out if holomorphic else jnp.real(out)

    def first(a, b):
        return f(a, b)[..., 0, :]

    return {
        "jit": lambda: jax.jit(f),
        "vmap": lambda: jax.vmap(f),
        "vmap-in-axes": lambda: lambda a, b: jax.vmap(f, in_axes=(None, 0))(a[0], b),
        "grad": lambda: jax.grad(loss, (0, 1), **h),
        "jvp": lambda: lambda a, b: jax.jvp(f, (a, b), (jnp.cos(a), jnp.sin(b))),
        "vjp": lambda: lambda a, b: jax.vjp(f, a, b)[1](jnp.cos(f(a, b))),
        "linearize": lambda: lambda a, b: jax.linearize(f, a, b)[1](jnp.cos(a), b),
        "jacfwd": lambda: jax.jacfwd(first, (0, 1), **h),
        "jacrev": lambda: jax.jacrev(first, (0, 1), **h),
        "hessian": lambda: lambda a, b: jax.hessian(loss, (0, 1), **h)(a[:2], b[:2]),
        "grad-of-grad": lambda: jax.grad(
            lambda a, b: jnp.sum(jax.grad(loss, **h)(a, b) ** 2), (0, 1), **h
        ),
        "jit-vmap-grad": lambda: jax.jit(jax.vmap(jax.grad(loss, (0, 1), **h))),
        "vmap-hessian": lambda: lambda a, b: jax.vmap(jax.hessian(loss, **h))(a[:2], b[:2]),
        "jit-jacrev-jacfwd": lambda: jax.jit(jax.jacrev(jax.jacfwd(loss, **h), (0, 1), **h)),
    }[name]()


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize(
    ("op", "dtype"),
    [(op, "float64") for op in ("inv", "solve", "solve-right")]
    + [(op, "complex128") for op in ("inv_ex", "solve_ex")],
)
def test_transforms_match_jnp_linalg(ops, op, name, dtype):
    rng = rng_for("transforms", op, name, dtype)
    a = jnp.asarray(C.well_conditioned(rng, (3,), 3, dtype))
    b = jnp.asarray(C.random_array(rng, (3, 3, 2), dtype))
    if op.startswith("inv"):
        ours = value_fn(ops, op, {})
        f, ref = (lambda a, b: ours(a) @ b), (lambda a, b: jnp.linalg.inv(a) @ b)
    elif op == "solve-right":
        ours, right = (
            value_fn(ops, "solve", {"left": False}),
            reference_fn("solve", {"left": False}),
        )
        b = jnp.matrix_transpose(b)
        f, ref = (lambda a, b: ours(a, b).mT), (lambda a, b: right(a, b).mT)
    else:
        f, ref = value_fn(ops, op, {}), jnp.linalg.solve
    holomorphic = dtype.startswith("complex")
    got = transform(name, f, holomorphic)(a, b)
    tree_close(got, transform(name, ref, holomorphic)(a, b), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("op", "shape", "dtype"), all_cases(dtypes=("float64",)))
def test_vmap_matches_a_loop(ops, op, shape, dtype):
    """vmap over a new leading axis of every input (lu_solve's pivots too) equals a Python
    loop, values and gradients."""
    rng = rng_for("vmap", op, shape.id)
    stacks = list(zip(*(numpy_inputs(op, shape, dtype, rng) for _ in range(3)), strict=True))
    xs = tuple(jnp.asarray(np.stack(s)) for s in stacks)
    f = value_fn(ops, op, shape.params)
    floats = tuple(i for i, is_int in enumerate(RULES[op].integer) if not is_int)

    def loss(*x):
        return sum(jnp.sum(jnp.sin(y)) for y in jax.tree_util.tree_leaves(f(*x)))

    grad = jax.grad(loss, floats)
    got, got_grad = jax.vmap(f)(*xs), jax.jit(jax.vmap(grad))(*xs)
    for i in range(3):
        row = tuple(x[i] for x in xs)
        tree_close(jax.tree_util.tree_map(lambda y, i=i: y[i], got), f(*row))
        tree_close(tuple(g[i] for g in got_grad), grad(*row))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (1, 2)])
def test_vmap_in_axes_for_solve(ops, in_axes):
    rng = rng_for("in_axes", in_axes)
    a = jnp.asarray(C.well_conditioned(rng, (2,), 3, "float64"))
    b = jnp.asarray(C.random_array(rng, (2, 3, 4), "float64"))
    if in_axes == (0, None):
        b = b[0]
    elif in_axes == (None, 0):
        a = a[0]
    else:
        a, b = jnp.moveaxis(a, 0, 1), jnp.moveaxis(b, 0, 2)
    got = jax.vmap(ops.solve, in_axes=in_axes)(a, b)
    assert_close(got, jax.vmap(jnp.linalg.solve, in_axes=in_axes)(a, b))
    got_ex, info = jax.vmap(ops.solve_ex, in_axes=in_axes)(a, b)
    assert_close(got_ex, got)
    assert info.shape == (2,) and not info.any()


# -- the LU family: every transform, in one program per op and dtype ----------------------

#: Per op and dtype: input shapes (lu_solve's first one is the matrix it factors) and the
#: op's parameters; small, so that a Hessian over every input stays cheap.
LU_TRANSFORM_CASES = {
    ("lu_factor", "float64"): (((2, 4, 3),), {}),
    ("lu_factor", "complex128"): (((3, 4),), {}),
    ("lu_factor_ex", "float64"): (((3, 3),), {}),
    ("lu_solve", "float64"): (((2, 3, 3), (2, 3, 2)), {}),
    ("lu_solve", "complex128"): (((2, 3, 3), (3,)), {"left": False, "adjoint": True}),
    ("solve_triangular", "float64"): (((2, 3, 3), (2, 3, 2)), {"upper": True}),
    ("solve_triangular", "complex128"): (
        ((2, 3, 3), (2, 2, 3)),
        {"upper": False, "left": False, "unitriangular": True},
    ),
    ("det", "float64"): (((2, 3, 3),), {}),
    ("det", "complex128"): (((2, 3, 3),), {}),
    ("slogdet", "float64"): (((2, 3, 3),), {}),
    ("slogdet", "complex128"): (((2, 3, 3),), {}),
}


def as_real_function(f, xs):
    """``f`` over real arrays: each complex input given as its real and imaginary parts, each
    complex output returned as them (stacked last). Every transform then applies, whether or
    not ``f`` is holomorphic (slogdet is not), and sees both directions of each entry."""
    cplx = [jnp.iscomplexobj(x) for x in xs]

    def g(*parts):
        it = iter(parts)
        out = f(*(next(it) + 1j * next(it) if c else next(it) for c in cplx))
        return jax.tree_util.tree_map(
            lambda y: jnp.stack([y.real, y.imag], -1) if jnp.iscomplexobj(y) else y, out
        )

    return g, tuple(p for x, c in zip(xs, cplx) for p in ((x.real, x.imag) if c else (x,)))


def every_transform(g, parts):
    """jit (the caller's), vmap, grad, jacfwd, jacrev, hessian and vmap of grad of ``g``."""
    argnums = tuple(range(len(parts)))

    def loss(*p):
        return sum(jnp.sum(jnp.sin(y)) for y in jax.tree_util.tree_leaves(g(*p)))

    stacked = tuple(jnp.stack([p, 1.25 * p]) for p in parts)
    return {
        "value": g(*parts),
        "vmap": jax.vmap(g)(*stacked),
        "grad": jax.grad(loss, argnums)(*parts),
        "jacfwd": jax.jacfwd(g, argnums)(*parts),
        "jacrev": jax.jacrev(g, argnums)(*parts),
        "hessian": jax.hessian(loss, argnums)(*parts),
        "vmap-grad": jax.vmap(jax.grad(loss, argnums))(*stacked),
    }


@pytest.mark.parametrize(("op", "dtype"), list(LU_TRANSFORM_CASES))
def test_lu_family_transforms_match_jax(ops, op, dtype):
    """Every transform of the op equals that of jnp.linalg / jax.scipy.linalg (complex input
    through its real and imaginary parts), all in one compiled program each."""
    shapes, params = LU_TRANSFORM_CASES[op, dtype]
    shape = C.Shape("transforms", shapes, params)
    everything = inputs(op, shape, dtype)
    f, xs = over_floats(op, value_fn(ops, op, params), everything)
    ref, _ = over_floats(op, reference_fn(op, params), everything)
    ours, parts = as_real_function(f, xs)
    theirs, _ = as_real_function(ref, xs)
    got = jax.jit(partial(every_transform, ours))(parts)
    expected = jax.jit(partial(every_transform, theirs))(parts)
    for name in expected:
        tree_close(got[name], expected[name], rtol=1e-9, atol=1e-9)


def derivatives(fn, xs, ts, ct):
    """Value, jax.jvp, jax.vjp (JAX's convention) and an HVP of ``fn`` at ``xs``."""
    out, jv = jax.jvp(fn, xs, ts)
    cts = jax.vjp(fn, *xs)[1](ct)
    hvp = jax.jvp(jax.grad(real_loss(fn, ct), tuple(range(len(xs)))), xs, ts)[1]
    return out, jv, cts, hvp


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("left", [True, False], ids=["left", "right"])
def test_lu_solve_of_lu_factor_has_the_derivatives_of_solve(ops, left, dtype):
    rng = rng_for("lu_solve of lu_factor", left, dtype)
    a = jnp.asarray(C.well_conditioned(rng, (4,), 3, dtype))
    b = jnp.asarray(C.random_array(rng, (4, 3, 2) if left else (4, 2, 3), dtype))
    xs = (a, b)
    ts = tuple(random_like(x, rng) for x in xs)
    ct = random_like(b, rng)

    def ours(a, b):
        return ops.lu_solve(*ops.lu_factor(a), b, left=left)

    got = jax.jit(partial(derivatives, ours))(xs, ts, ct)
    expected = jax.jit(partial(derivatives, reference_fn("solve", {"left": left})))(xs, ts, ct)
    for g, e in zip(got, expected, strict=True):
        tree_close(g, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 5), (2, 5, 3), (3, 0)], ids=str)
def test_lu_factor_returns_jax_scipys_pivots_without_a_tangent(ops, shape):
    """lu_factor's pivots are jax.scipy.linalg.lu_factor's (0-based int32) and have a float0
    tangent; lu_factor_ex's info is that of getrf."""
    a = jnp.asarray(C.well_conditioned_rectangular(rng_for("pivots", shape), shape, "float64"))
    lu, pivots = ops.lu_factor(a)
    ref_lu, ref_pivots = jsl.lu_factor(a)
    assert_close(lu, ref_lu)
    assert pivots.dtype == jnp.int32 and np.array_equal(pivots, ref_pivots)
    (_, pivots_out), (dlu, dpivots) = jax.jvp(ops.lu_factor, (a,), (jnp.ones_like(a),))
    assert np.array_equal(pivots_out, pivots)
    assert dpivots.dtype == jax.dtypes.float0 and dpivots.shape == pivots.shape
    assert_close(dlu, jax.jvp(lambda a: jsl.lu_factor(a)[0], (a,), (jnp.ones_like(a),))[1])
    _, _, info = ops.lu_factor_ex(a)
    assert info.dtype == jnp.int32 and info.shape == shape[:-2] and not info.any()


def test_pivots_that_are_no_row_interchanges_give_nan_under_jit(ops):
    """Under jit the pivots' values cannot be read, and no error raised: a batch element whose
    pivots are no row interchanges (torch's 1-based ones, say) is NaN, as for a singular
    factor, its derivatives too; the others are right. Eagerly it is a ValueError."""
    a = jnp.asarray(C.well_conditioned(rng_for("bad pivots"), (2,), 4, "float64"))
    b = jnp.ones((2, 4, 1))
    lu, pivots = jsl.lu_factor(a)
    bad = pivots.at[1].add(1)  # 1-based: the last pivot is 4, past the last row
    x = jax.jit(ops.lu_solve)(lu, bad, b)
    assert_close(x[0], jnp.linalg.solve(a[0], b[0]))
    assert np.isnan(x[1]).all()
    grad = jax.jit(jax.grad(lambda lu, b: ops.lu_solve(lu, bad, b).sum(), (0, 1)))(lu, b)
    assert all(np.isfinite(g[0]).all() and np.isnan(g[1]).all() for g in grad)
    with pytest.raises(ValueError, match=r"invad\.lu_solve: .*pivots\[1, 3\] = 4, expected 3\."):
        ops.lu_solve(lu, bad, b)


def test_real_slogdet_sign_has_a_zero_tangent(ops):
    a = jnp.asarray(C.well_conditioned(rng_for("slogdet sign"), (3,), 4, "float64"))
    da = jnp.ones_like(a)
    (sign, _), (dsign, dlog) = jax.jvp(ops.slogdet, (a,), (da,))
    assert dsign.dtype == sign.dtype and not dsign.any()
    assert_close(dlog, jax.jvp(lambda a: jnp.linalg.slogdet(a)[1], (a,), (da,))[1])


# -- det at singular matrices: the adjugate, against finite differences --------------------


def singular_matrices(dtype: str) -> dict[str, np.ndarray]:
    """4 x 4 matrices where det's derivative is the adjugate."""
    rng = np.random.default_rng(11)
    a = C.well_conditioned(rng, (), 4, dtype)
    zero_row, two_zero_rows = a.copy(), a.copy()
    zero_row[2] = 0  # rank 3: one exact zero on U's diagonal
    two_zero_rows[[0, 3]] = 0  # rank 2: two exact zeros, the adjugate is zero

    def product(k):  # rank k, singular only to rounding: no exact zero pivot
        return C.random_array(rng, (4, k), dtype) @ C.random_array(rng, (k, 4), dtype)

    return {
        "rank-3-zero-row": zero_row,
        "rank-3-generic": product(3),
        "rank-2-zero-rows": two_zero_rows,
        "rank-2-generic": product(2),
    }


def finite_differences(a: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """d det / d a_ij by central differences in NumPy (along real directions: for complex
    input the holomorphic derivative)."""
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        e = np.zeros_like(a)
        e[index] = step
        grad[index] = (np.linalg.det(a + e) - np.linalg.det(a - e)) / (2 * step)
    return grad


@functools.cache
def det_derivatives(dtype: str):
    """jax.grad, jacfwd and jacrev of det at one 4 x 4 matrix, and grad over a batch (each
    vmapped and of a sum), compiled once for every matrix of the tests below."""
    ops = invad.install("jax")
    h = {"holomorphic": True} if dtype.startswith("complex") else {}

    def program(a, batch):
        return (
            ops.det(a),
            jax.grad(ops.det, **h)(a),
            jax.jacfwd(ops.det, **h)(a),
            jax.jacrev(ops.det, **h)(a),
            jax.vmap(jax.grad(ops.det, **h))(batch),
            jax.grad(lambda b: jnp.sum(ops.det(b)), **h)(batch),
        )

    specs = (jax.ShapeDtypeStruct((4, 4), dtype), jax.ShapeDtypeStruct((3, 4, 4), dtype))
    return jax.jit(program).lower(*specs).compile()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(singular_matrices("float64")))
def test_det_derivative_at_singular_matrices_is_the_adjugate(kind, dtype):
    """First order (grad, jacfwd, jacrev; alone, vmapped, and next to a regular matrix in a
    batch, where lax.cond takes the adjugate's branch for all) is finite and right."""
    m = singular_matrices(dtype)[kind]
    regular = C.well_conditioned(np.random.default_rng(5), (), 4, dtype)
    batch = np.stack([m, regular, m])
    det, grad, jacfwd, jacrev, vmapped, summed = det_derivatives(dtype)(m, batch)
    assert abs(complex(det)) < 1e-12
    expected = finite_differences(m)
    scale = max(np.abs(expected).max(), 1.0)
    for got in (grad, jacfwd, jacrev, vmapped[0], vmapped[2], summed[0], summed[2]):
        assert np.isfinite(np.asarray(got)).all()
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7 * scale)
    for got in (vmapped[1], summed[1]):
        np.testing.assert_allclose(got, finite_differences(regular), rtol=1e-7, atol=1e-7)


# -- _ex ops and singular input ----------------------------------------------------------


def singular_batch(dtype="float64"):
    """Four 3x3 matrices: 1 is zero (info 1), 2 has a zero pivot at U[1, 1] (info 2)."""
    a = C.well_conditioned(np.random.default_rng(3), (4,), 3, dtype)
    a[1] = 0
    a[2] = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [0.0, 0.0, 1.0]])
    return jnp.asarray(a)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_ex_ops_report_lapack_info_and_never_raise(ops, jit):
    import scipy.linalg

    wrap = jax.jit if jit else (lambda f: f)
    a = singular_batch()
    expected = [scipy.linalg.lapack.dgetrf(np.asarray(m))[2] for m in a]
    assert expected == [0, 1, 2, 0]
    inverse, info = wrap(ops.inv_ex)(a)
    assert info.dtype == jnp.int32 and info.shape == (4,)
    assert info.tolist() == expected
    b = jnp.ones((4, 3, 2))
    x, info = wrap(ops.solve_ex)(a, b)
    assert info.tolist() == expected
    for k in (0, 3):
        assert_close(inverse[k], jnp.linalg.inv(a[k]))
        assert_close(x[k], jnp.linalg.solve(a[k], b[k]))
    assert not np.isfinite(np.asarray(inverse[1])).all() and not np.isfinite(np.asarray(x[1])).all()
    _, info = wrap(lambda a: ops.solve_ex(a, jnp.ones(3), left=False))(a)
    assert info.tolist() == expected


def test_singular_inv_and_solve_keep_jax_non_finite_values(ops):
    a = singular_batch()
    for got in (ops.inv(a), jax.jit(ops.inv)(a), ops.solve(a, jnp.ones((4, 3, 1)))):
        got = np.asarray(got)
        assert np.isfinite(got[[0, 3]]).all()
        assert not np.isfinite(got[1]).all() and not np.isfinite(got[2]).all()
    assert not np.isfinite(np.asarray(jnp.linalg.inv(a[1]))).all()  # JAX's own behaviour
    assert ops.tensorinv(jnp.zeros((2, 2)), ind=1).shape == (2, 2)


def test_info_has_no_tangent_and_does_not_block_differentiation(ops):
    a, b = inputs("solve", C.SHAPES["solve"][2], "float64")
    (_, info), (dx, dinfo) = jax.jvp(ops.solve_ex, (a, b), (jnp.ones_like(a), jnp.ones_like(b)))
    assert dinfo.dtype == jax.dtypes.float0 and dinfo.shape == info.shape
    assert_close(dx, jax.jvp(jnp.linalg.solve, (a, b), (jnp.ones_like(a), jnp.ones_like(b)))[1])
    (_, info), pullback = jax.vjp(ops.inv_ex, a)
    (ga,) = pullback((jnp.ones_like(a), np.zeros(info.shape, jax.dtypes.float0)))
    assert_close(ga, jax.grad(lambda a: jnp.linalg.inv(a).sum())(a))
    ga = jax.grad(lambda a: jnp.sum(ops.inv_ex(a)[0]) + jnp.sum(ops.inv_ex(a)[1]))(a)
    assert_close(ga, jax.grad(lambda a: jnp.linalg.inv(a).sum())(a))
    jac = jax.jacrev(lambda a: ops.inv_ex(a)[0])(a[0])
    assert_close(jac, jax.jacrev(jnp.linalg.inv)(a[0]))


def test_gradient_at_a_nonsingular_element_is_finite_next_to_a_singular_one(ops):
    a = singular_batch()
    g = jax.grad(lambda a: jnp.sum(ops.inv_ex(a)[0][0]))(a)
    assert_close(g[0], jax.grad(lambda m: jnp.sum(jnp.linalg.inv(m)))(a[0]))


# -- errors, parameters, shapes -------------------------------------------------------


def test_input_checks_still_run_under_jit_and_vmap(ops):
    with pytest.raises(TypeError, match=r"invad\.inv: `a` has dtype int"):
        jax.jit(ops.inv)(jnp.ones((3, 3), dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"invad\.solve_ex: .*does not fit"):
        jax.jit(ops.solve_ex)(jnp.eye(3), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"invad\.inv: .*square"):
        jax.vmap(ops.inv)(jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"invad\.tensorinv: .*ind"):
        jax.jit(lambda a: ops.tensorinv(a, ind=0))(jnp.eye(4))
    with pytest.raises(TypeError, match=r"invad\.solve: `left` must be True or False"):
        ops.solve(jnp.eye(2), jnp.ones(2), left=1)


def test_parameters_by_keyword_and_axes_as_a_list(ops):
    a, b = inputs("tensorsolve", C.SHAPES["tensorsolve"][2], "float64")  # axes=(0,)
    x = ops.tensorsolve(a, b, axes=[0])
    assert_close(x, jnp.linalg.tensorsolve(a, b, axes=(0,)))
    assert_close(ops.tensorsolve(a=a, b=b, axes=(0,)), x)
    assert_close(jax.jit(lambda a, b: ops.tensorsolve(a, b, axes=[0]))(a, b), x)
    a, b = inputs("solve", C.SHAPES["solve"][5], "float64")  # left=False
    assert_close(ops.solve(a, b=b, left=False), ops.solve_ex(a, b, left=False)[0])


def test_host_arrays_are_accepted(ops):
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    x = ops.solve(a, np.array([1.0, 2.0]))
    assert isinstance(x, jax.Array)
    assert_close(x, jnp.linalg.solve(a, jnp.array([1.0, 2.0])))


def test_empty_shapes_under_jit_and_grad(ops):
    for a, b in [
        (jnp.ones((0, 3, 3)), jnp.ones((0, 3, 2))),
        (jnp.ones((2, 0, 0)), jnp.ones((2, 0, 1))),
    ]:
        x, info = jax.jit(ops.solve_ex)(a, b)
        assert x.shape == b.shape and info.shape == a.shape[:-2] and info.dtype == jnp.int32
        ga, gb = jax.grad(lambda a, b: jnp.sum(ops.solve(a, b)), (0, 1))(a, b)
        assert ga.shape == a.shape and gb.shape == b.shape
        assert jax.jit(jax.grad(lambda a: jnp.sum(ops.inv(a))))(a).shape == a.shape


# -- performance structure: one factorization, reused by reverse mode --------------------


def _count(jaxpr, name: str) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _count(inner, name)
    return count


@pytest.mark.parametrize("op", ["inv", "solve", "solve_ex", "tensorsolve", "det", "slogdet"])
def test_reverse_mode_reuses_the_one_factorization(ops, op):
    shape = {
        "inv": C.SHAPES["inv"][1],
        "solve": C.SHAPES["solve"][2],
        "solve_ex": C.SHAPES["solve"][5],
        "det": C.SHAPES["det"][1],
        "slogdet": C.SHAPES["slogdet"][1],
    }.get(op, C.SHAPES["tensorsolve"][1])
    xs = inputs(op, shape, "float64")
    f = value_fn(ops, op, shape.params)
    grad = jax.grad(
        lambda *x: sum(jnp.sum(jnp.sin(y)) for y in jax.tree_util.tree_leaves(f(*x))),
        tuple(range(len(xs))),
    )
    jaxpr = jax.make_jaxpr(grad)(*xs).jaxpr
    # det's derivative at small pivots (a lax.cond branch) reuses it too, with its pivots
    # raised.
    assert _count(jaxpr, "lu") == 1
    # The interchanges become a permutation once, in lu itself.
    assert _count(jaxpr, "lu_pivots_to_permutation") == 0
    if op not in ("det", "slogdet"):  # whose traces transpose into (small) diagonal scatters
        # And no scatter: the transposed solve is a solve, not a transposed row gather.
        assert _count(jaxpr, "scatter-add") == 0


def compilations(calls) -> list[str]:
    """JAX's log lines announcing a compilation while ``calls()`` runs."""
    import logging

    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("jax")
    handler = Catch()
    with jax.log_compiles(True):
        logger.addHandler(handler)
        try:
            calls()
        finally:
            logger.removeHandler(handler)
    return [r for r in records if "Compiling" in r]


def test_ops_are_compiled_once_per_parameter_combination(ops):
    a, b = inputs("solve", C.SHAPES["solve"][5], "float64")
    first = ops.solve(a, b, left=False)

    def again():
        for _ in range(3):
            assert_close(ops.solve(a, b, left=False), first)

    assert not compilations(again)


def test_ops_jvp_and_vjp_are_one_program_compiled_once(ops):
    """ops.jvp / ops.vjp: one jitted program per op and parameters, compiled on the first
    call only; a Python number as a cotangent is data, not a reason to compile again."""
    a, b = inputs("solve", C.SHAPES["solve"][5], "float64")
    det_input = a[0]
    jvp = ops.jvp("solve", (a, b), (a, b), left=False)
    vjp = ops.vjp("det", (det_input,), 1.0)

    def again():
        for number in (2.0, -0.5, 3):
            out = ops.jvp("solve", (a, b), (a, b), left=False)
            assert_close(out[1], jvp[1])
            got = ops.vjp("det", (det_input,), number)
            assert_close(got[1][0], number * np.asarray(vjp[1][0]))

    assert not compilations(again)


# -- devices --------------------------------------------------------------------------


def test_device_of_is_none_for_tracers_so_mixed_tracers_and_arrays_work(ops):
    a, b = inputs("solve", C.SHAPES["solve"][2], "float64")
    assert ops.backend.device_of(a) == jax.devices()[0]
    seen = []

    def f(a):
        seen.append(ops.backend.device_of(a))
        return ops.solve(a, b)  # a tracer and a concrete array

    assert_close(jax.jit(f)(a), jnp.linalg.solve(a, b))
    assert seen == [None]


def test_outputs_stay_on_the_input_device(ops):
    device = jax.devices()[0]
    a, b = (jax.device_put(x, device) for x in inputs("solve", C.SHAPES["solve"][2], "float64"))
    for out in (ops.solve(a, b), *ops.inv_ex(a), jax.grad(lambda a: ops.inv(a).sum())(a)):
        assert out.devices() == {device}


def test_two_host_devices():
    """Placement and the mixed-device error, with XLA forced to expose two CPU devices."""
    env = {
        **os.environ,
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip(),
        "JAX_ENABLE_X64": "1",
        "JAX_PLATFORMS": "cpu",
    }
    run = subprocess.run(
        [sys.executable, str(HERE / "jax_devices.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "two-device checks passed" in run.stdout
