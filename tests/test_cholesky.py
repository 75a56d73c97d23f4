"""The Cholesky family's promises, on every backend under test (INVAD_TEST_BACKENDS).

- one triangle of ``a`` is read: changing the other changes neither the factor
  nor the derivatives, and the cotangent of ``a`` is Hermitian;
- ``solve(assume_a="pos")`` has ``solve``'s derivatives, projected to Hermitian;
- ``cholesky_solve(cholesky(a), b)`` is ``solve(a, b)``, derivatives included;
- a matrix that is not positive definite: the error names the op, the shape,
  the batch index and the order of the failing minor; NaN gives ``info``.
"""

from __future__ import annotations

import numpy as np
import pytest

from invad.testing import Harness
from invad.testing import cases as C
from invad.testing.plugin import env_backends

BACKENDS = env_backends()


@pytest.fixture(scope="module", params=BACKENDS)
def h(request: pytest.FixtureRequest) -> Harness:
    return Harness(request.param)


def _unread(n: int, upper: bool) -> np.ndarray:
    """The strict triangle that an op reading the lower one (upper, if ``upper``) must not read."""
    return np.tril(np.ones((n, n), bool), -1) if upper else np.triu(np.ones((n, n), bool), 1)


def _junk_elsewhere(a: np.ndarray, upper: bool, rng: np.random.Generator) -> np.ndarray:
    """``a`` with the triangle the op must not read (strictly) replaced by junk."""
    unread = _unread(a.shape[-1], upper)
    return np.where(unread, 1e3 * C.random_array(rng, a.shape, str(a.dtype)), a)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_reads_one_triangle_and_its_cotangent_is_hermitian(h, upper, dtype):
    rng = np.random.default_rng(11)
    a = C.positive_definite(rng, (2,), 4, dtype)
    da = C.hermitian(C.random_array(rng, a.shape, dtype))
    cbar = C.random_array(rng, a.shape, dtype)
    results = []
    for m in (a, _junk_elsewhere(a, upper, rng)):
        c, dc = h.ops.jvp("cholesky", (h.put(m),), (h.put(da),), upper=upper)
        _, (abar,) = h.ops.vjp("cholesky", (h.put(m),), h.put(cbar), upper=upper)
        results.append([h.get(v) for v in (c, dc, abar)])
    for first, second in zip(*results):
        np.testing.assert_allclose(first, second, rtol=1e-12, atol=1e-12)
    c, dc, abar = results[0]
    reference = np.linalg.cholesky(a)
    np.testing.assert_allclose(c, np.conj(np.swapaxes(reference, -1, -2)) if upper else reference)
    np.testing.assert_allclose(abar, np.conj(np.swapaxes(abar, -1, -2)), atol=1e-13)
    # The tangent against central differences along the Hermitian direction.
    step = 1e-6
    plus = np.linalg.cholesky(a + step * da)
    minus = np.linalg.cholesky(a - step * da)
    fd = (plus - minus) / (2 * step)
    np.testing.assert_allclose(dc, np.conj(np.swapaxes(fd, -1, -2)) if upper else fd, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_reads_one_triangle_of_the_factor(h, upper, dtype):
    """Junk in the other triangle of ``c`` changes neither ``x`` nor its derivatives (the
    derivatives use ``L``, not ``c``), and ``c``'s cotangent is zero there."""
    rng = np.random.default_rng(14)
    lower = np.linalg.cholesky(C.positive_definite(rng, (2,), 4, dtype))
    c = np.conj(np.swapaxes(lower, -1, -2)) if upper else lower
    b = C.random_array(rng, (2, 4, 3), dtype)
    dc, db, xbar = (C.random_array(rng, s, dtype) for s in (c.shape, b.shape, b.shape))
    results = []
    for m in (c, _junk_elsewhere(c, upper, rng)):
        primals = (h.put(m), h.put(b))
        x, dx = h.ops.jvp("cholesky_solve", primals, (h.put(dc), h.put(db)), upper=upper)
        _, (cbar, bbar) = h.ops.vjp("cholesky_solve", primals, h.put(xbar), upper=upper)
        results.append([h.get(v) for v in (x, dx, cbar, bbar)])
    for first, second in zip(*results):
        np.testing.assert_allclose(second, first, rtol=1e-12, atol=1e-12)
    x, dx, cbar, _ = results[0]
    np.testing.assert_allclose(x, np.linalg.solve(lower @ np.conj(lower.swapaxes(-1, -2)), b))
    assert not cbar[..., _unread(4, upper)].any()
    # dx against central differences (the tangent of c counts by its read triangle)
    step = 1e-6
    fd = (
        h.get(h.ops.cholesky_solve(h.put(c + step * dc), h.put(b + step * db), upper=upper))
        - h.get(h.ops.cholesky_solve(h.put(c - step * dc), h.put(b - step * db), upper=upper))
    ) / (2 * step)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("left", [True, False])
def test_positive_definite_solve_has_solves_derivatives_projected_to_hermitian(h, left, dtype):
    rng = np.random.default_rng(12)
    a = C.positive_definite(rng, (3,), 4, dtype)
    b = C.random_array(rng, (3, 4, 2) if left else (3, 2, 4), dtype)
    da = C.hermitian(C.random_array(rng, a.shape, dtype))
    db = C.random_array(rng, b.shape, dtype)
    xbar = C.random_array(rng, b.shape, dtype)
    out = {}
    for assume_a in ("gen", "pos"):
        primals = (h.put(a), h.put(b))
        x, dx = h.ops.jvp("solve", primals, (h.put(da), h.put(db)), left=left, assume_a=assume_a)
        _, (abar, bbar) = h.ops.vjp("solve", primals, h.put(xbar), left=left, assume_a=assume_a)
        out[assume_a] = [h.get(v) for v in (x, dx, abar, bbar)]
    general, positive = out["gen"], out["pos"]
    for got, ref in zip(positive[:2] + positive[3:], general[:2] + general[3:]):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    abar_gen = general[2]
    np.testing.assert_allclose(
        positive[2], (abar_gen + np.conj(np.swapaxes(abar_gen, -1, -2))) / 2, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_of_cholesky_has_the_derivatives_of_solve(h, upper):
    rng = np.random.default_rng(13)
    a = C.positive_definite(rng, (2,), 5, "float64")
    b = rng.standard_normal((2, 5, 3))
    da = C.hermitian(rng.standard_normal(a.shape))
    db, xbar = rng.standard_normal(b.shape), rng.standard_normal(b.shape)
    c, dc = h.ops.jvp("cholesky", (h.put(a),), (h.put(da),), upper=upper)
    x, dx = h.ops.jvp("cholesky_solve", (c, h.put(b)), (dc, h.put(db)), upper=upper)
    x_ref, dx_ref = h.ops.jvp("solve", (h.put(a), h.put(b)), (h.put(da), h.put(db)))
    np.testing.assert_allclose(h.get(x), h.get(x_ref), rtol=1e-12)
    np.testing.assert_allclose(h.get(dx), h.get(dx_ref), rtol=1e-10, atol=1e-12)
    _, (cbar, bbar) = h.ops.vjp("cholesky_solve", (c, h.put(b)), h.put(xbar), upper=upper)
    _, (abar,) = h.ops.vjp("cholesky", (h.put(a),), cbar, upper=upper)
    _, (abar_ref, bbar_ref) = h.ops.vjp("solve", (h.put(a), h.put(b)), h.put(xbar))
    abar_ref = h.get(abar_ref)
    np.testing.assert_allclose(h.get(bbar), h.get(bbar_ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.get(abar), (abar_ref + abar_ref.swapaxes(-1, -2)) / 2, atol=1e-11)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("cholesky", {}),
        ("cholesky", {"upper": True}),
        ("solve", {"assume_a": "pos"}),
        ("solve", {"assume_a": "pos", "left": False}),
    ],
)
def test_second_order_of_a_hermitian_input_is_hermitian(h, op, params, dtype):
    """The Hessian of a real loss of a Hermitian matrix is self-adjoint: along a Hermitian
    direction, reverse over reverse equals forward over reverse, and both are Hermitian
    (as the first-order cotangent is). The AD engine's own derivative of a one-triangle
    Cholesky once gave reverse over reverse a skew part (JAX cholesky, torch and JAX
    solve(pos))."""
    if not h.backend.native_ad:
        pytest.skip(f"{h.backend.name}: no AD engine (ops.jvp and ops.vjp are first order)")
    rng = np.random.default_rng(23)
    a = C.positive_definite(rng, (2,), 3, dtype)
    v = C.hermitian(C.random_array(rng, a.shape, dtype))
    b = C.random_array(rng, (2, 3, 2), dtype)
    if op == "solve":
        w = C.random_array(rng, (2, 2, 3) if params.get("left") is False else b.shape, dtype)
        b = np.swapaxes(b, -1, -2) if params.get("left") is False else b
        fn = lambda m: getattr(h.ops, op)(m, h.put(b), **params)  # noqa: E731
    else:
        w = C.random_array(rng, a.shape, dtype)
        fn = lambda m: getattr(h.ops, op)(m, **params)  # noqa: E731

    def gradient(m):
        return h.backend.native_vjp(fn, (m,), h.put(w))[0]

    forward = h.get(h.backend.native_jvp(gradient, (h.put(a),), (h.put(v),)))
    reverse = h.get(h.backend.native_vjp(gradient, (h.put(a),), h.put(v))[0])
    step = 1e-4
    fd = (
        8 * (h.get(gradient(h.put(a + step * v))) - h.get(gradient(h.put(a - step * v))))
        - (h.get(gradient(h.put(a + 2 * step * v))) - h.get(gradient(h.put(a - 2 * step * v))))
    ) / (12 * step)
    np.testing.assert_allclose(forward, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(reverse, forward, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(reverse, np.conj(np.swapaxes(reverse, -1, -2)), atol=1e-11)


def test_not_positive_definite_names_the_failing_minor_and_nan_gives_info(h):
    a = np.stack([np.eye(3), np.diag([1.0, 2.0, -1.0]), np.eye(3)])
    a[2, 1, 0] = np.nan  # read (lower triangle): the second pivot is NaN
    _, info = h.ops.cholesky_ex(h.put(a))
    np.testing.assert_array_equal(h.get(info), [0, 3, 2])
    _, info_pos = h.ops.solve_ex(h.put(a), h.put(np.ones(3)), assume_a="pos")
    np.testing.assert_array_equal(h.get(info_pos), [0, 3, 2])
    if not h.backend.raises_on_singular:
        return
    error = h.backend.linalg_error  # raised by the op, or by a lazy backend's (Dask) compute
    pattern = (
        r"invad\.{op}: matrix not positive-definite at batch index \(1,\) \(input shape "
        r"\(3, 3, 3\)\): the leading minor of order 3 is not positive-definite"
    )
    with pytest.raises(error, match=pattern.format(op="cholesky")):
        h.get(h.ops.cholesky(h.put(a.take([0, 1, 0], axis=0))))
    with pytest.raises(error, match=pattern.format(op="solve")):
        h.get(h.ops.solve(h.put(a.take([0, 1, 0], axis=0)), h.put(np.ones(3)), assume_a="pos"))
    with pytest.raises(ValueError, match=r"invad\.cholesky: `a` must be a square .*\(3, 4\)"):
        h.ops.cholesky(h.put(np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"invad\.solve: `assume_a` must be one of 'gen', 'pos'"):
        h.ops.solve(h.put(np.eye(3)), h.put(np.ones(3)), assume_a="her")
