"""The autograd backend under autograd's own transforms, against finite differences.

autograd's VJP convention is the linear transpose (``grad`` of ``|z|^2`` is
``2 conj(z)``), so for a real loss ``L`` of a complex input the directional
derivative along ``v`` is ``Re sum(grad(L) * v)``; for real inputs that is
the usual ``sum(grad(L) * v)``.
"""

from __future__ import annotations

import math
import zlib

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import invad
from invad.rules import RULES
from invad.testing import cases as C

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


def value(ops, op, *args, **params):
    out = getattr(ops, op)(*args, **params)
    return out[0] if RULES[op].returns_info else out


def loss_of(ops, op, params, weight):
    """A real scalar, nonlinear in the op's output: Re sum(w y) + sum |y|^2 / 2."""

    def loss(*args):
        y = value(ops, op, *args, **params)
        return anp.real(anp.sum(weight * y)) + 0.5 * anp.sum(anp.real(anp.conj(y) * y))

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


# -- first order: grad, elementwise_grad, jacobian, make_jvp ------------------------------


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64", "complex128")))
def test_grad_matches_central_differences(ops, op, shape, dtype):
    rng = rng_for("grad", op, shape, dtype)
    args = C.primals(op, shape, dtype, rng)
    out = value(ops, op, *args, **shape.params)
    loss = loss_of(ops, op, shape.params, C.random_array(rng, out.shape, dtype))
    for i, x in enumerate(args):
        g = autograd.grad(loss, i)(*args)
        assert g.dtype == x.dtype and g.shape == x.shape
        v = C.random_array(rng, x.shape, dtype)
        got = float(np.real(np.sum(g * v)))
        fd = central(loss, args, i, v)
        assert abs(got - fd) <= FD_RTOL * max(abs(fd), 1.0), (i, got, fd)


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64",)))
def test_jacobian_matches_finite_differences(ops, op, shape, dtype):
    args = C.primals(op, shape, dtype, rng_for("jacobian", op, shape))
    for i, x in enumerate(args):

        def f(x, i=i):
            return value(ops, op, *replaced(args, i, x), **shape.params)

        assert rel(autograd.jacobian(f)(x), fd_jacobian(f, x)) < FD_RTOL


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(("float64", "complex128")))
def test_make_jvp_matches_central_differences(ops, op, shape, dtype):
    rng = rng_for("jvp", op, shape, dtype)
    args = C.primals(op, shape, dtype, rng)
    tangents = [C.random_array(rng, x.shape, dtype) for x in args]

    def f(*xs):
        return value(ops, op, *xs, **shape.params)

    for i, v in enumerate(tangents):
        fun = lambda x, i=i: f(*replaced(args, i, x))  # noqa: E731
        out, dout = autograd.make_jvp(fun)(args[i])(v)
        assert rel(out, f(*args)) == 0.0
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


@pytest.mark.parametrize(("op", "shape", "dtype"), cases(C.DTYPES, empty=True))
def test_agrees_with_ops_jvp_and_vjp(ops, op, shape, dtype):
    """autograd's forward and reverse mode against invad's functional jvp/vjp, every case.

    ``ops.vjp`` is the adjoint; autograd's is its conjugate transpose.
    """
    rng = rng_for("ops", op, shape, dtype)
    args = C.primals(op, shape, dtype, rng)
    tangents = tuple(C.random_array(rng, x.shape, dtype) for x in args)
    (out, dout_ref) = ops.jvp(op, args, tangents, **shape.params)
    out, dout_ref = (out[0], dout_ref[0]) if RULES[op].returns_info else (out, dout_ref)
    ybar = C.random_array(rng, out.shape, dtype)
    ct = (np.conj(ybar), None) if RULES[op].returns_info else np.conj(ybar)
    _, adjoint = ops.vjp(op, args, ct, **shape.params)
    tol = 100 * float(np.finfo(dtype).eps)
    total = 0
    for i, x in enumerate(args):
        fun = lambda x, i=i: value(ops, op, *replaced(args, i, x), **shape.params)  # noqa: E731
        _, dout = autograd.make_jvp(fun)(x)(tangents[i])
        assert dout.dtype == out.dtype
        total = total + dout
        pullback, _ = autograd.make_vjp(fun)(x)
        xbar = pullback(ybar)
        assert xbar.dtype == x.dtype and xbar.shape == x.shape
        assert rel(xbar, np.conj(adjoint[i])) < tol
    # the partial JVPs add up to ops.jvp with every tangent at once
    assert rel(total, dout_ref) < tol


# -- second order and beyond ------------------------------------------------------------

HESSIAN_CASES = [
    pytest.param("solve", C.Shape("single", ((3, 3), (3, 2))), id="solve-left"),
    pytest.param("solve", C.Shape("vector", ((3, 3), (3,))), id="solve-vector"),
    pytest.param("solve", C.Shape("right", ((2, 3, 3), (2, 2, 3)), {"left": False}), id="right"),
    pytest.param("solve", C.Shape("broadcast", ((2, 1, 3, 3), (3, 3, 1))), id="solve-broadcast"),
    pytest.param("solve_ex", C.Shape("batched", ((2, 3, 3), (2, 3, 2))), id="solve_ex"),
    pytest.param("inv", C.Shape("batched", ((2, 3, 3),)), id="inv-batched"),
    pytest.param("tensorinv", C.Shape("3d", ((2, 3, 6),), {"ind": 2}), id="tensorinv"),
    pytest.param("tensorsolve", C.Shape("axes", ((6, 2, 3), (2, 3)), {"axes": (0,)}), id="tsolve"),
]


def packed_loss(ops, op, shape, weight):
    """The loss as a function of one flat vector holding every input (mixed partials too)."""
    ends = np.cumsum([math.prod(s) for s in shape.shapes])
    loss = loss_of(ops, op, shape.params, weight)

    def f(theta):
        parts = (theta[end - math.prod(s) : end] for end, s in zip(ends, shape.shapes))
        return loss(*(anp.reshape(p, s) for p, s in zip(parts, shape.shapes)))

    return f


@pytest.mark.parametrize(("op", "shape"), HESSIAN_CASES)
def test_hessian_matches_central_differences_of_grad(ops, op, shape):
    """The acceptance point: autograd.hessian through the op = FD of autograd.grad."""
    rng = rng_for("hessian", op, shape)
    args = C.primals(op, shape, "float64", rng)
    out = value(ops, op, *args, **shape.params)
    f = packed_loss(ops, op, shape, rng.standard_normal(out.shape))
    theta = np.concatenate([x.ravel() for x in args])
    hess = autograd.hessian(f)(theta)
    fd = fd_jacobian(autograd.grad(f), theta)
    assert hess.shape == (theta.size, theta.size)
    assert rel(hess, fd) < FD_RTOL
    assert rel(hess, hess.T) < 1e-12


@pytest.mark.parametrize("op", ["inv", "solve", "tensorsolve"])
def test_complex_second_order(ops, op):
    """Forward-over-reverse and reverse-over-reverse on complex input, against FD of grad."""
    shape = nonempty(op)[1]
    rng = rng_for("complex2", op)
    args = C.primals(op, shape, "complex128", rng)
    out = value(ops, op, *args, **shape.params)
    loss = loss_of(ops, op, shape.params, C.random_array(rng, out.shape, "complex128"))
    a = args[0]
    grad = autograd.grad(lambda a: loss(a, *args[1:]))
    v, w = (C.random_array(rng, a.shape, "complex128") for _ in range(2))
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


def test_large_matrix_reuses_the_forward_factorization(ops, monkeypatch):
    """n >= 20 takes the LAPACK path: one getrf for the value, gradient and Hessian product."""
    from invad.backends.numpy import NumpyKernels

    calls = []
    original = NumpyKernels.lu_factor

    def counting(self, a):
        calls.append(a.shape)
        return original(self, a)

    monkeypatch.setattr(NumpyKernels, "lu_factor", counting)
    rng = np.random.default_rng(4)
    a = C.well_conditioned(rng, (), 24, "float64")
    b = rng.standard_normal((24, 2))
    v = rng.standard_normal(a.shape)

    def loss(a):
        return anp.sum(anp.sin(ops.solve(a, b)))

    grad = autograd.grad(loss)
    g = grad(a)
    assert len(calls) == 1
    _, hvp = autograd.make_jvp(grad)(a)(v)
    assert len(calls) == 2  # once for the value under forward-over-reverse, once only
    assert rel(g, fd_jacobian(loss, a)) < FD_RTOL
    assert rel(hvp, (grad(a + H * v) - grad(a - H * v)) / (2 * H)) < FD_RTOL


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


def test_singular_input_raises_linalg_error_under_grad(ops):
    a = np.ones((2, 3, 3))
    b = np.ones((2, 3, 1))
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.solve.*batch index \(0,\)"):
        autograd.grad(lambda a: anp.sum(ops.solve(a, b)))(a)
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.inv"):
        autograd.jacobian(ops.inv)(a)


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
