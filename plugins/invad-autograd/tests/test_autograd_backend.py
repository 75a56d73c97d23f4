"""The autograd backend under autograd's own transforms, against finite differences.

autograd's VJP convention is the linear transpose (``grad`` of ``|z|^2`` is
``2 conj(z)``), so for a real loss ``L`` of a complex input the directional
derivative along ``v`` is ``Re sum(grad(L) * v)``; for real inputs that is
the usual ``sum(grad(L) * v)``.

The Cholesky family's Hermitian inputs (``cholesky``'s ``a``, ``solve``'s with
``assume_a="pos"``) are functions of Hermitian matrices: they read one
triangle and count a tangent by its Hermitian part. Directions along them are
Hermitian, and a Jacobian or Hessian over all their entries is taken of the
op composed with the Hermitian part (:func:`sym`), which every entry moves.
"""

from __future__ import annotations

import math
import zlib

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.linalg

import invad
from invad.rules import RULES
from invad.testing import cases as C
from invad.testing import checks

H = 1e-6  # central-difference step (float64)
FD_RTOL = 1e-6


@pytest.fixture(scope="module")
def ops():
    return invad.install("autograd")


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def nonempty(op: str) -> list[C.Shape]:
    return [s for s in C.SHAPES[op] if all(math.prod(x) for x in s.shapes)]


def cases(dtypes: tuple[str, ...], empty: bool = False) -> list:
    return [
        pytest.param(op, shape, dtype, id=f"{op}-{shape.id}-{dtype}")
        for op in RULES
        for shape in (C.SHAPES[op] if empty else nonempty(op))
        for dtype in dtypes
    ]


def inputs(ops, op, shape, dtype, rng):
    """An op's inputs; ``lu_solve``'s are ``(LU, pivots, b)`` from this backend's lu_factor."""
    args = C.primals(op, shape, dtype, rng)
    if op != "lu_solve":
        return args
    a, b = args
    return (*ops.lu_factor(a), b)


def floats(op):
    """The positions of an op's floating inputs: all but ``lu_solve``'s pivots."""
    return [i for i, integer in enumerate(RULES[op].integer) if not integer]


def sym(x):
    """The Hermitian part of the last two axes, traced by autograd."""
    return 0.5 * (x + anp.conj(anp.swapaxes(x, -1, -2)))


def direction(rng, op, params, i, shape, dtype):
    """A random tangent of input ``i``: Hermitian where the op takes a Hermitian matrix."""
    v = C.random_array(rng, shape, dtype)
    return C.hermitian(v) if i in C.hermitian_inputs(op, params) else v


def outputs(ops, op, *args, **params):
    """The op's differentiable outputs, a tuple: no pivots, no ``info``."""
    rule = RULES[op]
    out = getattr(ops, op)(*args, **params)
    values = checks.values(op, out)
    return tuple(v for v, diff in zip(values, rule.differentiable) if diff)


def value(ops, op, *args, **params):
    """The op's first differentiable output (the inverse, the solution, LU, ...)."""
    return outputs(ops, op, *args, **params)[0]


def weights(rng, ops, op, args, params, dtype):
    return [C.random_array(rng, np.shape(y), dtype) for y in outputs(ops, op, *args, **params)]


def loss_of(ops, op, params, weight):
    """A real scalar, nonlinear in each differentiable output y_k (``weight``: one per output,
    or one array for ops with one output): sum_k Re sum(w_k y_k) + sum |y_k|^2 / 2."""
    ws = weight if isinstance(weight, (list, tuple)) else [weight]

    def loss(*args):
        total = 0.0
        for w, y in zip(ws, outputs(ops, op, *args, **params)):
            total = total + anp.real(anp.sum(w * y)) + 0.5 * anp.sum(anp.real(anp.conj(y) * y))
        return total

    return loss


def replaced(args, i, x):
    return (*args[:i], x, *args[i + 1 :])


def central(f, args, i, v, h=H):
    """Central difference of ``f`` along ``v`` in argument ``i``."""
    x = args[i]
    return (f(*replaced(args, i, x + h * v)) - f(*replaced(args, i, x - h * v))) / (2 * h)


def fd_jacobian(f, x, h=H):
    """Jacobian of a real function of a real array, shaped ``out.shape + x.shape``."""
    cols = []
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    out_shape = np.shape(cols[0])
    return np.moveaxis(np.array(cols), 0, -1).reshape(*out_shape, *x.shape)


def rel(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref), initial=0.0) / max(np.max(np.abs(ref), initial=0), 1.0))


# -- the plugin -------------------------------------------------------------------------


def test_backend_is_registered_with_native_ad():
    row = next(b for b in invad.backends() if b.name == "autograd")
    assert row.available, row.reason
    assert row.native_ad
    assert row.plugin == "invad-autograd"


def test_top_level_ops_dispatch_boxes_to_autograd():
    rng = np.random.default_rng(0)
    a = C.well_conditioned(rng, (), 3, "float64")
    b = rng.standard_normal((3, 2))
    g = autograd.grad(lambda a: anp.sum(invad.solve(a, b)))(a)
    x = np.linalg.solve(a, b)
    expected = -np.linalg.solve(a.T, np.ones((3, 2))) @ x.T
    assert rel(g, expected) < 1e-12


@pytest.mark.parametrize("shape", [(2, 3, 3), (3, 4)])
def test_namespace_diagonal_keeps_complex_cotangents(shape):
    """The rules' ``diagonal`` under autograd: the gradient of ``Re sum(w * diag(z))`` is
    ``w`` on the diagonal (autograd's convention: ``Re sum(grad * v)`` is the derivative
    along ``v``), imaginary part included; at second order too."""
    from invad_autograd._native import NAMESPACE

    rng = np.random.default_rng(2)
    z = C.random_array(rng, shape, "complex128")
    k = min(shape[-2:])
    w = C.random_array(rng, (*shape[:-2], k), "complex128")

    def f(z):
        return anp.real(anp.sum(w * NAMESPACE.linalg.diagonal(z)))

    expected = np.zeros(shape, complex)
    idx = np.arange(k)
    expected[..., idx, idx] = w
    assert rel(autograd.grad(f)(z), expected) == 0.0

    def g(z):  # quadratic: its Hessian along v is known too
        d = NAMESPACE.linalg.diagonal(z)
        return anp.real(anp.sum(w * d * d))

    v = C.random_array(rng, shape, "complex128")
    _, hvp = autograd.make_jvp(autograd.grad(g))(z)(v)
    expected = np.zeros(shape, complex)
    expected[..., idx, idx] = 2 * w * v[..., idx, idx]
    assert rel(hvp, expected) < 1e-15


# -- first order: grad, elementwise_grad, jacobian, make_jvp ------------------------------


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64", "complex128")))
def test_grad_matches_central_differences(ops, op, shape, dtype):
    rng = rng_for("grad", op, shape, dtype)
    args = inputs(ops, op, shape, dtype, rng)
    loss = loss_of(ops, op, shape.params, weights(rng, ops, op, args, shape.params, dtype))
    for i in floats(op):
        x = args[i]
        g = autograd.grad(loss, i)(*args)
        assert g.dtype == x.dtype and g.shape == x.shape
        v = direction(rng, op, shape.params, i, x.shape, dtype)
        got = float(np.real(np.sum(g * v)))
        fd = central(loss, args, i, v)
        assert abs(got - fd) <= FD_RTOL * max(abs(fd), 1.0), (i, got, fd)


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64",)))
def test_jacobian_matches_finite_differences(ops, op, shape, dtype):
    args = inputs(ops, op, shape, dtype, rng_for("jacobian", op, shape))
    hermitian = C.hermitian_inputs(op, shape.params)
    for i in floats(op):
        for k in range(len(outputs(ops, op, *args, **shape.params))):

            def f(x, i=i, k=k):
                x = sym(x) if i in hermitian else x
                return outputs(ops, op, *replaced(args, i, x), **shape.params)[k]

            assert rel(autograd.jacobian(f)(args[i]), fd_jacobian(f, args[i])) < FD_RTOL


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64", "complex128")))
def test_make_jvp_matches_central_differences(ops, op, shape, dtype):
    rng = rng_for("jvp", op, shape, dtype)
    args = inputs(ops, op, shape, dtype, rng)
    for i in floats(op):
        v = direction(rng, op, shape.params, i, args[i].shape, dtype)
        for k, y in enumerate(outputs(ops, op, *args, **shape.params)):

            def f(*xs, k=k):
                return outputs(ops, op, *xs, **shape.params)[k]

            out, dout = autograd.make_jvp(lambda x, i=i, f=f: f(*replaced(args, i, x)))(args[i])(v)
            assert rel(out, y) == 0.0
            assert dout.dtype == out.dtype
            assert rel(dout, central(f, args, i, v)) < FD_RTOL


def test_elementwise_grad(ops):
    rng = np.random.default_rng(1)
    a = C.well_conditioned(rng, (4,), 3, "float64")
    b = rng.standard_normal((4, 3, 2))
    # d/db of sum over the solution's entries: A^-T 1 per batch element
    got = autograd.elementwise_grad(lambda b: ops.solve(a, b))(b)
    assert rel(got, np.linalg.solve(np.swapaxes(a, -1, -2), np.ones_like(b))) < 1e-12
    # the same, by finite differences, for inv over a batch
    got = autograd.elementwise_grad(ops.inv)(a)
    fd = fd_jacobian(lambda a: np.sum(ops.inv(a)), a)
    assert rel(got, fd) < FD_RTOL


def packed(ys):
    """Several outputs as one that autograd traces (a plain tuple of boxes is not traced)."""
    return autograd.builtins.tuple(ys) if len(ys) > 1 else ys[0]


def as_tuple(y):
    return tuple(y) if isinstance(y, tuple) else (y,)


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(C.DTYPES, empty=True))
def test_agrees_with_ops_jvp_and_vjp(ops, op, shape, dtype):
    """autograd's forward and reverse mode against invad's functional jvp/vjp, every case.

    ``ops.vjp`` is the adjoint; autograd's is its conjugate transpose.
    """
    rule = RULES[op]
    rng = rng_for("ops", op, shape, dtype)
    args = inputs(ops, op, shape, dtype, rng)
    tangents = tuple(
        None if integer else direction(rng, op, shape.params, i, x.shape, dtype)
        for i, (x, integer) in enumerate(zip(args, rule.integer))
    )
    out, dout_ref = ops.jvp(op, args, tangents, **shape.params)
    values, douts = checks.values(op, out), checks.values(op, dout_ref)
    diffs = [k for k, diff in enumerate(rule.differentiable) if diff]
    ybars = [C.random_array(rng, values[k].shape, str(values[k].dtype)) for k in diffs]
    cts = [None] * len(values)
    for k, y in zip(diffs, ybars):
        cts[k] = np.conj(y)
    ct = (*cts, None) if rule.returns_info else tuple(cts) if rule.multi else cts[0]
    _, adjoint = ops.vjp(op, args, ct, **shape.params)
    tol = 100 * float(np.finfo(dtype).eps)
    total = [0] * len(diffs)
    for i in floats(op):
        x = args[i]

        def fun(x, i=i):
            return packed(outputs(ops, op, *replaced(args, i, x), **shape.params))

        _, dout = autograd.make_jvp(fun)(x)(tangents[i])
        for j, (k, d) in enumerate(zip(diffs, as_tuple(dout))):
            assert d.dtype == values[k].dtype
            total[j] = total[j] + d
        pullback, _ = autograd.make_vjp(fun)(x)
        xbar = pullback(packed(ybars))
        assert xbar.dtype == x.dtype and xbar.shape == x.shape
        assert rel(xbar, np.conj(adjoint[i])) < tol
    # the partial JVPs add up to ops.jvp with every tangent at once
    for j, k in enumerate(diffs):
        assert rel(total[j], douts[k]) < tol


# -- second order and beyond ------------------------------------------------------------


def hessian_case(op, family, shapes, **params):
    return pytest.param(op, C.Shape(family, shapes, params), id=f"{op}-{family}")


HESSIAN_CASES = [
    hessian_case("solve", "left", ((3, 3), (3, 2))),
    hessian_case("solve", "vector", ((3, 3), (3,))),
    hessian_case("solve", "right", ((2, 3, 3), (2, 2, 3)), left=False),
    hessian_case("solve", "broadcast", ((2, 1, 3, 3), (3, 3, 1))),
    hessian_case("solve_ex", "batched", ((2, 3, 3), (2, 3, 2))),
    hessian_case("inv", "batched", ((2, 3, 3),)),
    hessian_case("tensorinv", "3d", ((2, 3, 6),), ind=2),
    hessian_case("tensorsolve", "axes", ((6, 2, 3), (2, 3)), axes=(0,)),
    hessian_case("lu_factor", "square", ((3, 3),)),
    hessian_case("lu_factor", "wide", ((3, 4),)),
    hessian_case("lu_factor", "batched-tall", ((2, 4, 3),)),
    hessian_case("lu_factor_ex", "batched", ((2, 3, 3),)),
    hessian_case("lu_solve", "left", ((3, 3), (3, 2))),
    hessian_case("lu_solve", "right", ((2, 3, 3), (2, 2, 3)), left=False),
    hessian_case("lu_solve", "adjoint-vector", ((3, 3), (3,)), adjoint=True),
    hessian_case("lu_solve", "right-adjoint", ((3, 3), (2, 2, 3)), left=False, adjoint=True),
    hessian_case("solve_triangular", "upper", ((3, 3), (3, 2)), upper=True),
    hessian_case(
        "solve_triangular", "lower-right", ((2, 3, 3), (2, 2, 3)), upper=False, left=False
    ),
    hessian_case(
        "solve_triangular", "unit-vector", ((3, 3), (3,)), upper=False, unitriangular=True
    ),
    hessian_case("solve_triangular", "broadcast", ((2, 1, 3, 3), (3, 3, 1)), upper=True),
    hessian_case("det", "single", ((3, 3),)),
    hessian_case("det", "batched", ((2, 3, 3),)),
    hessian_case("det", "one-by-one", ((2, 1, 1),)),
    hessian_case("slogdet", "batched", ((2, 3, 3),)),
    hessian_case("cholesky", "lower", ((3, 3),)),
    hessian_case("cholesky", "batched-upper", ((2, 3, 3),), upper=True),
    hessian_case("cholesky_ex", "batched", ((2, 3, 3),)),
    hessian_case("cholesky_solve", "left", ((3, 3), (3, 2))),
    hessian_case("cholesky_solve", "upper-vector", ((2, 3, 3), (3,)), upper=True),
    hessian_case("cholesky_solve", "broadcast", ((2, 1, 3, 3), (3, 3, 1))),
    hessian_case("solve", "pos", ((2, 3, 3), (2, 3, 2)), assume_a="pos"),
    hessian_case("solve", "pos-right-vector", ((3, 3), (3,)), left=False, assume_a="pos"),
    hessian_case("solve_ex", "pos-broadcast", ((2, 1, 3, 3), (3, 3, 1)), assume_a="pos"),
]


def packed_loss(ops, op, params, args, weight):
    """The loss as a function of one flat vector holding every floating input (mixed
    partials too), integer inputs (pivots) held fixed; and that vector at ``args``.
    A Hermitian input is the Hermitian part of its entries (equal to it at ``args``)."""
    positions = floats(op)
    sizes = [args[i].size for i in positions]
    ends = np.cumsum(sizes)
    loss = loss_of(ops, op, params, weight)
    hermitian = C.hermitian_inputs(op, params)

    def f(theta):
        full = list(args)
        for i, end, size in zip(positions, ends, sizes):
            full[i] = anp.reshape(theta[end - size : end], args[i].shape)
            if i in hermitian:
                full[i] = sym(full[i])
        return loss(*full)

    return f, np.concatenate([args[i].ravel() for i in positions])


@pytest.mark.parametrize(("op", "shape"), HESSIAN_CASES)
def test_hessian_matches_central_differences_of_grad(ops, op, shape):
    """The acceptance point: autograd.hessian through the op = FD of autograd.grad."""
    rng = rng_for("hessian", op, shape)
    args = inputs(ops, op, shape, "float64", rng)
    w = weights(rng, ops, op, args, shape.params, "float64")
    f, theta = packed_loss(ops, op, shape.params, args, w)
    hess = autograd.hessian(f)(theta)
    fd = fd_jacobian(autograd.grad(f), theta)
    assert hess.shape == (theta.size, theta.size)
    assert rel(hess, fd) < FD_RTOL
    assert rel(hess, hess.T) < 1e-12


SECOND_ORDER_COMPLEX = [
    pytest.param(op, nonempty(op)[1], id=op)
    for op in (
        "inv",
        "solve",
        "tensorsolve",
        "lu_factor",
        "lu_solve",
        "solve_triangular",
        "det",
        "slogdet",
        "cholesky",
        "cholesky_solve",
    )
] + [
    pytest.param("cholesky", C.Shape("upper", ((2, 3, 3),), {"upper": True}), id="cholesky-upper"),
    pytest.param("solve", C.SOLVE_POS[0], id="solve-pos"),
    pytest.param("solve", C.SOLVE_POS[3], id="solve-pos-right"),
]


@pytest.mark.parametrize(("op", "shape"), SECOND_ORDER_COMPLEX)
def test_complex_second_order(ops, op, shape):
    """Forward-over-reverse and reverse-over-reverse on complex input, against FD of grad."""
    rng = rng_for("complex2", op, shape)
    args = inputs(ops, op, shape, "complex128", rng)
    loss = loss_of(ops, op, shape.params, weights(rng, ops, op, args, shape.params, "complex128"))
    a = args[0]
    grad = autograd.grad(lambda a: loss(a, *args[1:]))
    v, w = (direction(rng, op, shape.params, 0, a.shape, "complex128") for _ in range(2))
    fd = (grad(a + H * v) - grad(a - H * v)) / (2 * H)
    _, hvp = autograd.make_jvp(grad)(a)(v)
    assert rel(hvp, fd) < FD_RTOL

    def directional(a):  # D_v loss at a
        return anp.real(anp.sum(grad(a) * v))

    got = float(np.real(np.sum(autograd.grad(directional)(a) * w)))
    expected = (directional(a + H * w) - directional(a - H * w)) / (2 * H)
    assert abs(got - expected) <= FD_RTOL * max(abs(expected), 1.0)
    # and both second derivatives agree: <w, H v> = <v, H w>
    assert abs(float(np.real(np.sum(hvp * w))) - got) <= 1e-10 * max(abs(got), 1.0)


@pytest.mark.parametrize(
    "params",
    [{}, {"left": False}, {"adjoint": True}, {"left": False, "adjoint": True}],
    ids=["left", "right", "adjoint", "right-adjoint"],
)
def test_lu_solve_of_lu_factor_has_the_second_derivatives_of_solve(ops, params):
    """``lu_solve(*lu_factor(a), b)`` and ``solve(op(a), b)``: the same Hessian in (a, b)."""
    rng = rng_for("lu-solve-is-solve", tuple(params))
    a = C.well_conditioned(rng, (2,), 3, "float64")
    left = params.get("left", True)
    b = rng.standard_normal((2, 3, 2) if left else (2, 2, 3))
    w = rng.standard_normal(b.shape)

    def through_lu(a, b):
        return ops.lu_solve(*ops.lu_factor(a), b, **params)

    def through_solve(a, b):
        op_a = anp.swapaxes(a, -1, -2) if params.get("adjoint") else a
        return ops.solve(op_a, b, left=left)

    hessians = []
    for solve in (through_lu, through_solve):

        def f(theta, solve=solve):
            x = solve(anp.reshape(theta[: a.size], a.shape), anp.reshape(theta[a.size :], b.shape))
            return anp.sum(w * x) + 0.5 * anp.sum(x * x)

        hessians.append(autograd.hessian(f)(np.concatenate([a.ravel(), b.ravel()])))
    assert rel(hessians[0], hessians[1]) < 1e-12
    assert np.abs(hessians[0]).max() > 0.1  # not trivially zero


def test_third_order_of_the_determinants(ops):
    """Along a line A(t) = A0 + t E: det is a cubic, d^3/dt^3 det = 6 det(E) exactly, and
    d^3/dt^3 log|det| = 2 tr((A^-1 E)^3); reverse mode thrice and forward over reverse."""
    rng = np.random.default_rng(11)
    a0 = C.well_conditioned(rng, (), 3, "float64")
    e = rng.standard_normal((3, 3))
    t = 0.3

    def det(t):
        return ops.det(a0 + t * e)

    def logabsdet(t):
        return ops.slogdet(a0 + t * e)[1]

    m = np.linalg.solve(a0 + t * e, e)
    for f, expected in ((det, 6 * np.linalg.det(e)), (logabsdet, 2 * np.trace(m @ m @ m))):
        second = autograd.grad(autograd.grad(f))
        got = autograd.grad(second)(t)
        assert abs(got - expected) <= 1e-10 * max(abs(expected), 1.0), (f.__name__, got, expected)
        _, forward = autograd.make_jvp(second)(t)(1.0)
        assert abs(forward - expected) <= 1e-10 * max(abs(expected), 1.0)


def test_third_order(ops):
    a = 1.7
    third = autograd.grad(
        autograd.grad(autograd.grad(lambda a: ops.inv(anp.reshape(a, (1, 1)))[0, 0]))
    )
    assert abs(third(a) - (-6 / a**4)) < 1e-12

    rng = np.random.default_rng(3)
    a0 = C.well_conditioned(rng, (), 3, "float64")
    e, b, w = rng.standard_normal((3, 3)), rng.standard_normal((3, 2)), rng.standard_normal((2, 3))

    def f(t):  # along a line through matrix space, right solve
        return anp.sum(w * ops.solve(a0 + t * e, b.T, left=False))

    second = autograd.grad(autograd.grad(f))
    got = autograd.grad(second)(0.3)
    fd = (second(0.3 + 1e-5) - second(0.3 - 1e-5)) / 2e-5
    assert abs(got - fd) <= 1e-6 * max(abs(fd), 1.0)
    _, forward = autograd.make_jvp(second)(0.3)(1.0)
    assert abs(forward - got) <= 1e-10 * max(abs(got), 1.0)


THROUGH = {
    "solve": ("lu_factor", lambda ops, a, b: ops.solve(a, b)),
    "lu_factor+lu_solve": ("lu_factor", lambda ops, a, b: ops.lu_solve(*ops.lu_factor(a), b)),
    "solve-pos": ("cholesky", lambda ops, a, b: ops.solve(a, b, assume_a="pos")),
    "cholesky+cholesky_solve": (
        "cholesky",
        lambda ops, a, b: ops.cholesky_solve(ops.cholesky(a, upper=True), b, upper=True),
    ),
}


@pytest.mark.parametrize("through", list(THROUGH))
def test_large_matrix_reuses_the_forward_factorization(ops, monkeypatch, through):
    """n >= 20 takes the LAPACK path: one getrf (potrf) for the value, gradient and Hessian
    product."""
    from invad.backends.numpy import NumpyKernels
    from invad.ops import Ops

    kernel, solve = THROUGH[through]
    calls = []
    original = getattr(NumpyKernels, kernel)

    def counting(self, a, *args):
        calls.append(a.shape)
        return original(self, a, *args)

    monkeypatch.setattr(NumpyKernels, kernel, counting)
    ops = Ops(ops.backend, ops.device)  # kernels bound after the patch
    rng = np.random.default_rng(4)
    if kernel == "cholesky":  # a Hermitian matrix, a Hermitian direction
        a = C.positive_definite(rng, (), 24, "float64")
        v = C.hermitian(rng.standard_normal(a.shape))
    else:
        a = C.well_conditioned(rng, (), 24, "float64")
        v = rng.standard_normal(a.shape)
    b = rng.standard_normal((24, 2))

    def loss(a):
        return anp.sum(anp.sin(solve(ops, a, b)))

    grad = autograd.grad(loss)
    g = grad(a)
    assert len(calls) == 1
    _, hvp = autograd.make_jvp(grad)(a)(v)
    assert len(calls) == 2  # once for the value under forward-over-reverse, once only
    fd = central(loss, (a,), 0, v)  # along v: one difference, not 2 * 576
    assert abs(np.sum(g * v) - fd) <= FD_RTOL * max(abs(fd), 1.0)
    assert rel(hvp, (grad(a + H * v) - grad(a - H * v)) / (2 * H)) < FD_RTOL


# -- the Cholesky family at higher order -------------------------------------------------


def along_a_line():
    """``A(t) = A0 + t E`` (Hermitian positive definite near t = 0.3), ``b``, ``w``, and
    the third derivatives there: of ``<w, x>``, ``x = A^-1 b``, by ``d^3 A^-1 / dt^3 =
    -6 (A^-1 E)^3 A^-1``; of ``log det A``, ``2 tr((A^-1 E)^3)``."""
    rng = np.random.default_rng(21)
    a0 = C.positive_definite(rng, (), 4, "float64")
    e = C.hermitian(rng.standard_normal((4, 4))) / 4
    b, w = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    a = a0 + 0.3 * e
    m = np.linalg.solve(a, e)
    third = -6 * m @ m @ m @ np.linalg.solve(a, b)
    return a0, e, b, w, float(np.sum(w * third)), 2 * float(np.trace(m @ m @ m))


def _logdet(ops, a, upper):
    return 2 * anp.sum(anp.log(anp.diagonal(ops.cholesky(a, upper=upper), axis1=-1, axis2=-2)))


PATHS = {
    "logdet-lower": lambda ops, a, b, w: _logdet(ops, a, False),
    "logdet-upper": lambda ops, a, b, w: _logdet(ops, a, True),
    "solve-pos": lambda ops, a, b, w: anp.sum(w * ops.solve(a, b, assume_a="pos")),
    "solve-pos-right": lambda ops, a, b, w: anp.sum(
        w.T * ops.solve(a, b.T, left=False, assume_a="pos")
    ),
    "cholesky_solve": lambda ops, a, b, w: anp.sum(w * ops.cholesky_solve(ops.cholesky(a), b)),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_third_order_of_the_cholesky_family(ops, path):
    """Along a Hermitian line A(t), the closed-form third derivatives: of log det A from the
    factor's diagonal, and of the positive-definite solves; reverse mode thrice, and
    forward over reverse twice."""
    a0, e, b, w, solve_third, logdet_third = along_a_line()
    expected = logdet_third if path.startswith("logdet") else solve_third

    def f(t):
        return PATHS[path](ops, a0 + t * e, b, w)

    second = autograd.grad(autograd.grad(f))
    got = autograd.grad(second)(0.3)
    assert abs(got - expected) <= 1e-10 * max(abs(expected), 1.0), (got, expected)
    _, forward = autograd.make_jvp(second)(0.3)(1.0)
    assert abs(forward - expected) <= 1e-10 * max(abs(expected), 1.0)


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_of_cholesky_has_the_second_derivatives_of_solve(ops, upper):
    """``cholesky_solve(cholesky(a), b)``, ``solve(a, b, assume_a="pos")`` and ``solve(a, b)``:
    one Hessian in (a, b), a Hermitian (the Hermitian part of its entries)."""
    rng = rng_for("cholesky-solve-is-solve", upper)
    a = C.positive_definite(rng, (2,), 3, "float64")
    b, w = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 3, 2))
    paths = (
        lambda a, b: ops.cholesky_solve(ops.cholesky(a, upper=upper), b, upper=upper),
        lambda a, b: ops.solve(a, b, assume_a="pos"),
        ops.solve,
    )
    hessians = []
    for solve in paths:

        def f(theta, solve=solve):
            m = sym(anp.reshape(theta[: a.size], a.shape))
            x = solve(m, anp.reshape(theta[a.size :], b.shape))
            return anp.sum(w * x) + 0.5 * anp.sum(x * x)

        hessians.append(autograd.hessian(f)(np.concatenate([a.ravel(), b.ravel()])))
    for other in hessians[1:]:
        assert rel(hessians[0], other) < 1e-11
    assert np.abs(hessians[0]).max() > 0.1  # not trivially zero


def _unread(n, upper):
    """The strict triangle an op reading the lower (upper, if ``upper``) one must not read."""
    return np.tril(np.ones((n, n), bool), -1) if upper else np.triu(np.ones((n, n), bool), 1)


ONE_TRIANGLE = {
    "cholesky-lower": (False, lambda ops, a, b: ops.cholesky(a)),
    "cholesky-upper": (True, lambda ops, a, b: ops.cholesky(a, upper=True)),
    "solve-pos": (False, lambda ops, a, b: ops.solve(a, b, assume_a="pos")),
    "cholesky_solve-lower": (False, lambda ops, c, b: ops.cholesky_solve(c, b)),
    "cholesky_solve-upper": (True, lambda ops, c, b: ops.cholesky_solve(c, b, upper=True)),
}


@pytest.mark.parametrize("case", list(ONE_TRIANGLE))
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_second_order_reads_one_triangle(ops, case, dtype):
    """Junk in the triangle an op does not read changes neither its gradient nor its
    Hessian-vector products (forward over reverse, reverse over reverse), which are the
    derivative of the gradient and symmetric."""
    upper, fn = ONE_TRIANGLE[case]
    rng = rng_for("one-triangle-2", case, dtype)
    a = C.positive_definite(rng, (2,), 3, dtype)
    hermitian = not case.startswith("cholesky_solve")
    if not hermitian:  # the factor
        a = np.linalg.cholesky(a)
        a = np.conj(np.swapaxes(a, -1, -2)) if upper else a
    junk = np.where(_unread(3, upper), 100 * C.random_array(rng, a.shape, dtype), a)
    b = C.random_array(rng, (2, 3, 2), dtype)
    wt = C.random_array(rng, np.shape(fn(ops, a, b)), dtype)
    v, u = (C.random_array(rng, a.shape, dtype) for _ in range(2))
    if hermitian:
        v, u = C.hermitian(v), C.hermitian(u)

    def loss(a):
        y = fn(ops, a, b)
        return anp.real(anp.sum(wt * y)) + 0.5 * anp.sum(anp.real(anp.conj(y) * y))

    grad = autograd.grad(loss)

    def directional(a):
        return anp.real(anp.sum(grad(a) * v))

    results = []
    for m in (a, junk):
        _, hvp = autograd.make_jvp(grad)(m)(v)
        results.append((grad(m), hvp, autograd.grad(directional)(m)))
    for got, ref in zip(results[1], results[0]):
        assert rel(got, ref) < 1e-12
    _, hvp, reverse = results[0]
    assert rel(hvp, (grad(a + H * v) - grad(a - H * v)) / (2 * H)) < FD_RTOL
    along_u = float(np.real(np.sum(reverse * u)))
    assert abs(float(np.real(np.sum(hvp * u))) - along_u) <= 1e-10 * max(abs(along_u), 1.0)


# -- dtypes, info, errors -----------------------------------------------------------------


def test_mixed_dtypes_give_real_cotangents_for_real_inputs(ops):
    rng = np.random.default_rng(5)
    a = C.well_conditioned(rng, (), 3, "float64")
    b = C.random_array(rng, (3, 2), "complex128")
    loss = loss_of(ops, "solve", {}, C.random_array(rng, (3, 2), "complex128"))
    g = autograd.grad(loss)(a, b)
    assert g.dtype == np.float64
    v = rng.standard_normal(a.shape)
    assert abs(np.sum(g * v) - central(loss, (a, b), 0, v)) < FD_RTOL
    hess = autograd.hessian(lambda a: loss(a, b))(a)
    fd = fd_jacobian(autograd.grad(lambda a: loss(a, b)), a)
    assert hess.dtype == np.float64 and rel(hess, fd) < FD_RTOL


@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_single_precision_stays_single(ops, dtype):
    rng = np.random.default_rng(6)
    a = C.well_conditioned(rng, (2,), 3, dtype)
    b = C.random_array(rng, (2, 3, 1), dtype)
    w = C.random_array(rng, (2, 3, 1), dtype)
    loss = loss_of(ops, "solve", {}, w)
    g = autograd.grad(loss)(a, b)
    assert g.dtype == np.dtype(dtype)
    wide = "complex128" if dtype.startswith("complex") else "float64"
    ref = autograd.grad(loss_of(ops, "solve", {}, w.astype(wide)))(a.astype(wide), b.astype(wide))
    assert rel(g, ref) < 1e-4


def test_info_is_a_plain_integer_array(ops):
    rng = np.random.default_rng(7)
    a = C.well_conditioned(rng, (3,), 3, "float64")
    a[1] = 0.0
    seen = {}

    def f(a):
        x, info = ops.inv_ex(a)
        seen["info"] = info
        return anp.sum(x[0])

    g = autograd.grad(f)(a)
    info = seen["info"]
    assert type(info) is np.ndarray and info.dtype.kind == "i"
    assert info.tolist() == [0, 1, 0]
    assert np.isfinite(g[0]).all() and not g[2].any()  # g[1]: not finite, as the value


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_pivots_and_info_are_plain_integer_arrays(ops):
    """lu_factor_ex under reverse and forward mode: LU traced, pivots and info plain, as
    scipy.linalg.lu_factor gives them (0-based); a singular matrix is reported, not raised."""
    rng = np.random.default_rng(7)
    a = C.well_conditioned(rng, (3,), 4, "float64")
    a[1, :, 2] = 0.0  # column 2 zero: U[2, 2] == 0
    seen = {}

    def f(a):
        lu, pivots, info = ops.lu_factor_ex(a)
        seen.update(pivots=pivots, info=info)
        return anp.sum(lu[0] ** 2)

    with np.errstate(invalid="ignore", divide="ignore"):  # the singular element's tangents
        g = autograd.grad(f)(a)
        _, dlu = autograd.make_jvp(lambda a: ops.lu_factor(a)[0])(a)(np.ones_like(a))
    pivots, info = seen["pivots"], seen["info"]
    for x in (pivots, info):
        assert type(x) is np.ndarray and x.dtype == np.int32
    assert info.tolist() == [0, 3, 0]
    for i in range(3):
        np.testing.assert_array_equal(pivots[i], scipy.linalg.lu_factor(a[i])[1])
    assert np.isfinite(g[0]).all() and not g[2].any()  # g[1]: not finite, as U^-1
    assert np.isfinite(dlu[[0, 2]]).all()


def test_cholesky_info_is_a_plain_integer_array(ops):
    """cholesky_ex and solve_ex(assume_a="pos") under grad: info plain (the order of the
    failing minor, NaN counting), the derivatives of the good elements exact."""
    rng = np.random.default_rng(9)
    a = C.positive_definite(rng, (3,), 3, "float64")
    a[1, 1, 1] = -5.0  # the leading minor of order 2 is not positive definite
    a[2, 2, 0] = np.nan  # read (lower triangle): the third pivot is NaN
    seen = {}

    def f(a):
        c, info = ops.cholesky_ex(a)
        x, info_pos = ops.solve_ex(a, np.ones(3), assume_a="pos")
        seen.update(info=info, info_pos=info_pos)
        return anp.sum(c[0] ** 2) + anp.sum(x[0])

    with np.errstate(invalid="ignore"):
        g = autograd.grad(f)(a)
    for info in seen.values():
        assert type(info) is np.ndarray and info.dtype.kind == "i"
        assert info.tolist() == [0, 2, 3]
    # |L|_F^2 = tr(A): its gradient is the identity; that of 1^T A^-1 1 is -z z^T, z = A^-1 1
    z = np.linalg.solve(a[0], np.ones(3))
    assert rel(g[0], np.eye(3) - np.outer(z, z)) < 1e-12  # (g[1], g[2]: from NaN factors)


def test_not_positive_definite_raises_linalg_error_under_grad(ops):
    a = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0])])
    b = np.ones((2, 3, 1))
    pattern = r"invad\.{op}: matrix not positive-definite at batch index \(1,\).*order 2"
    with pytest.raises(np.linalg.LinAlgError, match=pattern.format(op="cholesky")):
        autograd.grad(lambda a: anp.sum(ops.cholesky(a)))(a)
    with pytest.raises(np.linalg.LinAlgError, match=pattern.format(op="solve")):
        autograd.hessian(lambda a: anp.sum(ops.solve(a, b, assume_a="pos")))(a)
    c = 2 * np.eye(3)
    c[2, 2] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.cholesky_solve.*c\[2, 2\]"):
        autograd.grad(lambda c: anp.sum(ops.cholesky_solve(c, b[0])))(c)


def rank_deficient(rank: int) -> np.ndarray:
    """A 3x3 matrix of rank ``rank`` whose LU meets exact zero pivots (rows repeated or zero,
    the pivot 4 a power of two: the elimination cancels exactly)."""
    a = np.array([[4.0, 1.0, 2.0], [1.0, 3.0, 0.5], [4.0, 1.0, 2.0]])
    if rank == 1:
        a[1] = 0.0
    return a


def cofactors(a: np.ndarray) -> np.ndarray:
    """d det(A) / dA = the cofactor matrix (the adjugate's transpose), from 2x2 minors."""
    n = a.shape[-1]
    out = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(a, i, axis=0), j, axis=1)
            out[i, j] = (-1) ** (i + j) * np.linalg.det(minor)
    return out


@pytest.mark.parametrize("rank", [2, 1], ids=["rank-n-1", "rank-n-2"])
def test_det_derivative_at_a_singular_matrix_is_the_adjugate(ops, rank):
    """In a batch with a nonsingular matrix: grad is the cofactor matrix, make_jvp its
    contraction with the tangent, and both match central differences of det (a cubic)."""
    rng = np.random.default_rng(12)
    a = np.stack([rank_deficient(rank), C.well_conditioned(rng, (), 3, "float64")])
    assert ops.det(a)[0] == 0.0
    w = np.array([1.0, -0.5])
    g = autograd.grad(lambda a: anp.sum(w * ops.det(a)))(a)
    expected = w[:, None, None] * np.stack([cofactors(x) for x in a])
    assert rel(g, expected) < 1e-12
    if rank == 1:
        assert not g[0].any()
    assert rel(g, fd_jacobian(lambda a: np.sum(w * ops.det(a)), a)) < FD_RTOL
    v = rng.standard_normal(a.shape)
    _, dd = autograd.make_jvp(ops.det)(a)(v)
    assert rel(dd, np.sum(expected / w[:, None, None] * v, axis=(-2, -1))) < 1e-12


def test_singular_input_raises_linalg_error_under_grad(ops):
    a = np.ones((2, 3, 3))
    b = np.ones((2, 3, 1))
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.solve.*batch index \(0,\)"):
        autograd.grad(lambda a: anp.sum(ops.solve(a, b)))(a)
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.inv"):
        autograd.jacobian(ops.inv)(a)
    lu, pivots = ops.lu_factor(a)  # a singular matrix is factored, not refused
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.lu_solve.*batch index \(0,\)"):
        autograd.grad(lambda lu: anp.sum(ops.lu_solve(lu, pivots, b)))(lu)
    t = np.triu(np.ones((3, 3)))
    t[1, 1] = 0.0
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.solve_triangular.*a\[1, 1\]"):
        autograd.grad(lambda t: anp.sum(ops.solve_triangular(t, b[0], upper=True)))(t)


def test_inputs_by_keyword(ops):
    rng = np.random.default_rng(8)
    a = C.well_conditioned(rng, (), 3, "float64")
    b = rng.standard_normal((2, 3))

    def loss(a):
        return anp.sum(ops.solve(b=b, a=a, left=False))

    g = autograd.grad(loss)(a)
    assert rel(g, fd_jacobian(loss, a)) < FD_RTOL


def test_bad_input_raises_before_tracing(ops):
    with pytest.raises(TypeError, match=r"invad\.inv"):
        autograd.grad(lambda a: anp.sum(ops.inv(a)))(np.ones((3, 3), dtype=np.float16))
