"""The LU family's promises, on every backend under test (INVAD_TEST_BACKENDS).

- ``det``'s derivative at a singular matrix is the adjugate: rank n-1 (with an
  exact zero pivot, or singular only to rounding) and rank <= n-2, against
  central differences and the adjugate from cofactors;
- ``lu_solve(*lu_factor(a), b)`` has the derivatives of ``solve``;
- ``solve_triangular`` reads one triangle only, and its cotangent lies there;
- singular input: which ops raise, and what the others return.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from invad.testing import Harness
from invad.testing.plugin import env_backends

BACKENDS = env_backends()


@pytest.fixture(scope="module", params=BACKENDS)
def h(request: pytest.FixtureRequest) -> Harness:
    return Harness(request.param)


def adjugate(a: np.ndarray) -> np.ndarray:
    """adj(A) = C^T from the cofactors C_ij = (-1)^(i+j) det(A without row i, column j)."""
    n = a.shape[-1]
    cof = np.empty_like(a)
    for i, j in itertools.product(range(n), range(n)):
        minor = np.delete(np.delete(a, i, axis=0), j, axis=1)
        cof[i, j] = (-1) ** (i + j) * np.linalg.det(minor)
    return cof.T


def _complex(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    x = rng.standard_normal(shape)
    if dtype == "complex128":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def singular_matrix(kind: str, dtype: str, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    if kind == "zero-row":  # rank n-1, an exact zero pivot
        a = _complex(rng, (n, n), dtype)
        a[1] = 0
    elif kind == "zero-column":  # rank n-1, the zero pivot in the middle of U
        a = _complex(rng, (n, n), dtype)
        a[:, 1] = 0
    elif kind == "repeated-row":  # rank n-1, an exact zero pivot after elimination
        a = _complex(rng, (n, n), dtype)
        a[2] = a[0]
    elif kind == "rank-n-1":  # singular only to rounding
        a = _complex(rng, (n, n - 1), dtype) @ _complex(rng, (n - 1, n), dtype)
    elif kind == "rank-n-2":
        a = _complex(rng, (n, n - 2), dtype) @ _complex(rng, (n - 2, n), dtype)
    elif kind == "two-zero-rows":  # rank n-2, two exact zero pivots: adjugate zero
        a = _complex(rng, (n, n), dtype)
        a[0] = a[3] = 0
    elif kind == "three-zero-rows":  # rank n-3: the adjugate and its derivative zero
        a = _complex(rng, (n, n), dtype)
        a[0] = a[2] = a[3] = 0
    else:
        raise ValueError(kind)
    return a


SINGULAR = ("zero-row", "zero-column", "repeated-row", "rank-n-1", "rank-n-2", "two-zero-rows")


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("kind", SINGULAR)
def test_det_derivative_at_singular_matrices_is_the_adjugate(h, kind, dtype):
    rng = np.random.default_rng(abs(hash((kind, dtype))) % 2**32)
    single = singular_matrix(kind, dtype, rng)
    a = np.stack([single, singular_matrix("zero-row", dtype, rng), 2 * np.eye(4, dtype=dtype)])
    da = _complex(rng, a.shape, dtype)
    adj = np.stack([adjugate(m) for m in a])
    # Five-point central differences of the polynomial det (error O(step^4)).
    step = 1e-3

    def det_at(t: float) -> np.ndarray:
        return np.linalg.det(a + t * step * da)

    fd = (8 * (det_at(1) - det_at(-1)) - (det_at(2) - det_at(-2))) / (12 * step)
    exact = np.einsum("bij,bji->b", adj, da)
    np.testing.assert_allclose(exact, fd, rtol=1e-6, atol=1e-8)
    _, tangent = h.ops.jvp("det", (h.put(a),), (h.put(da),))
    np.testing.assert_allclose(h.get(tangent), exact, rtol=1e-9, atol=1e-10)
    dbar = _complex(rng, a.shape[:1], dtype)
    _, (abar,) = h.ops.vjp("det", (h.put(a),), h.put(dbar))
    expected = dbar[:, None, None] * np.conj(np.swapaxes(adj, -1, -2))  # dbar adj(A)^H
    np.testing.assert_allclose(h.get(abar), expected, rtol=1e-9, atol=1e-10)
    if h.backend.native_ad:
        native = h.backend.native_vjp(h.ops.det, (h.put(a),), h.put(dbar))
        np.testing.assert_allclose(h.get(native[0]), expected, rtol=1e-9, atol=1e-10)


def _five_point(f, step: float = 1e-3) -> np.ndarray:
    """d/dt f(t) at 0 by five-point central differences (exact for degree <= 4 in t)."""
    return (8 * (f(step) - f(-step)) - (f(2 * step) - f(-2 * step))) / (12 * step)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("kind", (*SINGULAR, "three-zero-rows"))
def test_det_second_derivatives_at_singular_matrices(h, kind, dtype):
    """The derivative of the adjugate, through the framework's own AD at second order:
    forward over reverse (an HVP) and forward over forward, against central differences
    of the adjugate from cofactors (a polynomial of degree n-1 = 3: the differences are
    exact up to rounding). Exact zero pivots once gave 0/0 (NaN) or dropped terms, and
    rank n-1 to rounding lost every digit to cancellation."""
    if not h.backend.native_ad:
        pytest.skip(f"{h.backend.name}: no AD engine (ops.jvp and ops.vjp are first order)")
    rng = np.random.default_rng(abs(hash((kind, dtype, "second"))) % 2**32)
    a = np.stack([singular_matrix(kind, dtype, rng), 2 * np.eye(4, dtype=dtype)])
    e, f = _complex(rng, a.shape, dtype), _complex(rng, a.shape, dtype)
    dbar = _complex(rng, a.shape[:1], dtype)

    def adj(t: float) -> np.ndarray:
        return np.stack([adjugate(m) for m in a + t * e])

    dadj = _five_point(adj)  # d adj(A)[E]
    hvp = dbar[:, None, None] * np.conj(np.swapaxes(dadj, -1, -2))  # d (dbar adj(A)^H)[E]
    second = np.einsum("bij,bji->b", dadj, f)  # d2 det(A)[E, F]
    ops, put = h.ops, h.put

    def vjp(m):
        return h.backend.native_vjp(ops.det, (m,), put(dbar))[0]

    def jvp(m):
        return h.backend.native_jvp(ops.det, (m,), (put(f),))

    native_hvp = h.backend.native_jvp(vjp, (put(a),), (put(e),))
    np.testing.assert_allclose(h.get(native_hvp), hvp, rtol=1e-8, atol=1e-9)
    native_second = h.backend.native_jvp(jvp, (put(a),), (put(e),))
    np.testing.assert_allclose(h.get(native_second), second, rtol=1e-8, atol=1e-9)


def test_slogdet_of_a_singular_matrix_is_zero_and_minus_infinity(h):
    a = np.stack([np.eye(3), np.zeros((3, 3))])
    sign, logabsdet = h.ops.slogdet(h.put(a))
    np.testing.assert_array_equal(h.get(sign), [1.0, 0.0])
    np.testing.assert_array_equal(h.get(logabsdet), [0.0, -np.inf])
    np.testing.assert_allclose(h.get(h.ops.det(h.put(a))), [1.0, 0.0], rtol=1e-14)


def _chain_jvp(h, a, b, da, db, left, adjoint):
    """The tangent of lu_solve(*lu_factor(a), b): lu_factor's JVP fed into lu_solve's."""
    (lu, piv), (dlu, dpiv) = h.ops.jvp("lu_factor", (h.put(a),), (h.put(da),))
    assert dpiv is None
    x, dx = h.ops.jvp(
        "lu_solve", (lu, piv, h.put(b)), (dlu, None, h.put(db)), left=left, adjoint=adjoint
    )
    return h.get(x), h.get(dx)


def _chain_vjp(h, a, b, xbar, left, adjoint):
    lu, piv = h.ops.lu_factor(h.put(a))
    _, (lubar, pivbar, bbar) = h.ops.vjp(
        "lu_solve", (lu, piv, h.put(b)), h.put(xbar), left=left, adjoint=adjoint
    )
    assert pivbar is None
    _, (abar,) = h.ops.vjp("lu_factor", (h.put(a),), (lubar, None))
    return h.get(abar), h.get(bbar)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize(("left", "adjoint"), [(True, False), (False, False), (True, True)])
def test_lu_solve_of_lu_factor_has_the_derivatives_of_solve(h, dtype, left, adjoint):
    rng = np.random.default_rng(3)
    n = 4
    a = (3 * np.eye(n) + _complex(rng, (2, n, n), dtype)).astype(dtype)
    b = _complex(rng, (2, n, 3) if left else (2, 3, n), dtype)
    da, db = _complex(rng, a.shape, dtype), _complex(rng, b.shape, dtype)
    # solve with op(A): adjoint solves are solves with A^H, whose tangent is dA^H.
    op_a = np.conj(np.swapaxes(a, -1, -2)) if adjoint else a
    op_da = np.conj(np.swapaxes(da, -1, -2)) if adjoint else da
    x_ref, dx_ref = h.ops.jvp(
        "solve", (h.put(op_a), h.put(b)), (h.put(op_da), h.put(db)), left=left
    )
    x, dx = _chain_jvp(h, a, b, da, db, left, adjoint)
    np.testing.assert_allclose(x, h.get(x_ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, h.get(dx_ref), rtol=1e-9, atol=1e-11)
    xbar = _complex(rng, x.shape, dtype)
    _, (op_abar, bbar_ref) = h.ops.vjp("solve", (h.put(op_a), h.put(b)), h.put(xbar), left=left)
    abar_ref = h.get(op_abar)
    if adjoint:
        abar_ref = np.conj(np.swapaxes(abar_ref, -1, -2))
    abar, bbar = _chain_vjp(h, a, b, xbar, left, adjoint)
    np.testing.assert_allclose(abar, abar_ref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(bbar, h.get(bbar_ref), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("unitriangular", [False, True])
@pytest.mark.parametrize(("upper", "left"), [(True, True), (False, True), (True, False)])
def test_solve_triangular_reads_one_triangle_and_its_cotangent_lies_there(
    h, upper, left, unitriangular
):
    rng = np.random.default_rng(5)
    n = 4
    a = 3 * np.eye(n) + rng.standard_normal((2, n, n))
    b = rng.standard_normal((2, n, 2) if left else (2, 2, n))
    keep = np.triu(np.ones((n, n), bool)) if upper else np.tril(np.ones((n, n), bool))
    if unitriangular:
        keep &= ~np.eye(n, dtype=bool)
    other = np.where(keep, a, 1e3 * rng.standard_normal(a.shape))  # same triangle, junk elsewhere
    params = {"upper": upper, "left": left, "unitriangular": unitriangular}
    da, db = rng.standard_normal(a.shape), rng.standard_normal(b.shape)
    xbar = rng.standard_normal(b.shape)
    results = []
    for m in (a, other):
        x, dx = h.ops.jvp(
            "solve_triangular", (h.put(m), h.put(b)), (h.put(da), h.put(db)), **params
        )
        _, (abar, bbar) = h.ops.vjp("solve_triangular", (h.put(m), h.put(b)), h.put(xbar), **params)
        results.append([h.get(v) for v in (x, dx, abar, bbar)])
    for first, second in zip(*results):
        np.testing.assert_allclose(first, second, rtol=1e-12, atol=1e-12)
    t = np.where(keep, a, 0) + (np.eye(n) if unitriangular else 0)
    x_ref = (
        np.linalg.solve(t, b)
        if left
        else np.linalg.solve(np.swapaxes(t, -1, -2), np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    )
    np.testing.assert_allclose(results[0][0], x_ref, rtol=1e-12, atol=1e-12)
    abar = results[0][2]
    assert not abar[:, ~keep].any()  # zero outside the triangle read
    assert np.abs(abar[:, keep]).min() > 0


def test_singular_input_raises_in_lu_solve_and_solve_triangular_only(h):
    a = 2 * np.eye(3) + np.zeros((3, 3, 3))
    a[1] = np.diag([1.0, 0.0, 2.0])  # batch element 1: U[1, 1] == 0, its diagonal has a zero
    b = np.ones((3, 3, 2))
    lu, piv = h.ops.lu_factor(h.put(a))  # never raises
    _, _, info = h.ops.lu_factor_ex(h.put(a))
    np.testing.assert_array_equal(h.get(info), [0, 2, 0])
    np.testing.assert_allclose(h.get(h.ops.det(h.put(a))), [8.0, 0.0, 8.0], rtol=1e-14)
    if not h.backend.raises_on_singular:
        x = h.get(h.ops.lu_solve(lu, piv, h.put(b)))
        assert np.isfinite(x[0]).all() and not np.isfinite(x[1]).all()
        return
    error = h.backend.linalg_error  # raised by the op, or by a lazy backend's (Dask) compute
    with pytest.raises(error, match=r"invad\.lu_solve: singular matrix at batch index \(1,\)"):
        h.get(h.ops.lu_solve(lu, piv, h.put(b)))
    with pytest.raises(error, match=r"invad\.solve_triangular: .*\(1,\).*\(3, 3, 3\).*a\[1, 1\]"):
        h.get(h.ops.solve_triangular(h.put(a), h.put(b), upper=True))
    # unitriangular never reads the diagonal: nothing singular to find
    x = h.ops.solve_triangular(h.put(a), h.put(b), upper=True, unitriangular=True)
    np.testing.assert_allclose(h.get(x), b)


def test_bad_factor_inputs_name_the_shapes(h):
    a = 2 * np.eye(3) + np.zeros((2, 3, 3))
    lu, piv = h.ops.lu_factor(h.put(a))
    b = h.put(np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=r"invad\.lu_solve: `pivots` of shape \(2, 2\)"):
        h.ops.lu_solve(lu, h.put(h.get(piv)[:, :2]), b)
    with pytest.raises(ValueError, match=r"invad\.det: `a` must be a square .* \(2, 3, 4\)"):
        h.ops.det(h.put(np.ones((2, 3, 4))))
    with pytest.raises(ValueError, match=r"invad\.slogdet: `a` must be a square"):
        h.ops.slogdet(h.put(np.ones((3, 4))))
    with pytest.raises(ValueError, match=r"invad\.lu_solve: `LU` must be a square"):
        h.ops.lu_solve(h.put(np.ones((3, 4))), h.put(np.zeros(3, np.int32)), h.put(np.ones(3)))


def test_pivots_that_are_no_row_interchanges_raise_naming_the_first(h):
    """LAPACK swaps row i with a row at or below it: ``base + i <= pivots[..., i] <= base +
    m - 1``. Other pivots (those of a framework that counts rows from the other base, say)
    are a ValueError naming the first one, never a silent wrong solution (nor, on NumPy,
    LAPACK reading and writing outside the arrays, as laswp and getrs do not check)."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((2, 4, 4)) + 4 * np.eye(4)
    lu, piv = h.ops.lu_factor(h.put(a))
    base, good = h.ops.la.pivot_base, h.get(piv)
    assert good.dtype == np.int32  # as LAPACK's getrf gives them, on every backend
    b, xbar = h.put(np.ones((2, 4, 1))), h.put(np.ones((2, 4, 1)))
    np.testing.assert_allclose(
        h.get(h.ops.lu_solve(lu, piv, b)), np.linalg.solve(a, np.ones((2, 4, 1)))
    )
    too_big, below, other_base = good.copy(), good.copy(), good + (1 if base == 0 else -1)
    too_big[1, 2] = base + 4
    below[1, 3] = base + 2
    cases = (
        (too_big, rf"pivots\[1, 2\] = {base + 4}, expected {base + 2} to {base + 3}\."),
        (below, rf"pivots\[1, 3\] = {base + 2}, expected {base + 3}\."),
        (other_base, rf"counting rows from {base} "),
    )
    if h.backend.name == "dask":  # a block's own batch index, and where the block starts
        block = r".*the block that starts at batch index \(1,\)"
        cases = tuple((bad, m.replace("[1, ", "[0, ") + block) for bad, m in cases[:2]) + cases[2:]
    for bad, message in cases:
        expected = r"invad\.lu_solve: `pivots` are not the row interchanges .*" + message
        with pytest.raises(ValueError, match=expected):
            h.get(h.ops.lu_solve(lu, h.put(bad), b))
        with pytest.raises(ValueError, match=expected):
            h.get(h.ops.vjp("lu_solve", (lu, h.put(bad), b), xbar)[1][2])
