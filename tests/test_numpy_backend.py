"""The NumPy backend's own paths.

LAPACK factor reuse for large matrices, NumPy's batched solve for small ones.
"""

from __future__ import annotations

import numpy as np
import pytest

import invad
from invad.backends import numpy as numpy_backend
from invad.ops import Ops
from invad.testing import Harness, checks
from invad.testing.cases import Shape, well_conditioned

N = numpy_backend.LAPACK_MIN_N + 5  # large enough for the LAPACK path

LAPACK_SHAPES = [
    Shape("single", ((N, N), (N, 3))),
    Shape("vector", ((N, N), (N,))),
    Shape("batched", ((3, N, N), (3, N, 2))),
    Shape("one-matrix-batched-rhs", ((N, N), (4, N, 2))),
    Shape("broadcast", ((2, 1, N, N), (3, N, 1))),
    Shape("right", ((2, N, N), (2, 3, N)), {"left": False}),
    Shape("right-one-matrix", ((N, N), (4, 3, N)), {"left": False}),
]


@pytest.fixture(scope="module")
def numpy_harness() -> Harness:
    return Harness("numpy")


@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
@pytest.mark.parametrize("shape", LAPACK_SHAPES, ids=lambda s: s.id)
@pytest.mark.parametrize("check", [checks.check_forward, checks.check_jvp, checks.check_vjp])
def test_lapack_path_passes_the_checks(numpy_harness, check, shape, dtype):
    for op in ("solve", "solve_ex"):
        result = check(numpy_harness, op, shape, dtype, np.random.default_rng(3))
        assert result.passed, result


def test_lapack_path_agrees_with_numpy_solve():
    rng = np.random.default_rng(0)
    a = well_conditioned(rng, (3,), N, "complex128")
    b = rng.standard_normal((3, N, 2)) + 1j * rng.standard_normal((3, N, 2))
    ops = invad.install()
    np.testing.assert_allclose(ops.solve(a, b), np.linalg.solve(a, b), rtol=1e-12, atol=1e-12)
    xt = np.linalg.solve(np.swapaxes(a, -1, -2), b)
    bt = np.swapaxes(b, -1, -2)
    np.testing.assert_allclose(
        ops.solve(a, bt, left=False), np.swapaxes(xt, -1, -2), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("left", [True, False])
def test_vjp_of_a_large_solve_factors_once_and_forms_no_inverse(monkeypatch, left):
    calls = []
    factor = numpy_backend.NumpyKernels.lu_factor

    def counting_factor(self, a):
        calls.append(a.shape)
        return factor(self, a)

    def forbidden(*args, **kwargs):
        raise AssertionError("refactorization or explicit inverse")

    monkeypatch.setattr(numpy_backend.NumpyKernels, "lu_factor", counting_factor)
    ops = Ops(invad.install().backend, "cpu")  # built after the patch
    rng = np.random.default_rng(1)
    a = well_conditioned(rng, (2,), N, "float64")
    b = rng.standard_normal((2, 4, N) if not left else (2, N, 4))
    xbar = rng.standard_normal(b.shape)
    monkeypatch.setattr(np.linalg, "solve", forbidden)
    monkeypatch.setattr(np.linalg, "inv", forbidden)
    x, (abar, bbar) = ops.vjp("solve", (a, b), xbar, left=left)
    monkeypatch.undo()
    assert calls == [a.shape]
    # The adjoint from an explicit inverse, computed independently.
    ainv = np.linalg.inv(a)
    if left:
        g = np.swapaxes(ainv, -1, -2) @ xbar
        np.testing.assert_allclose(bbar, g, rtol=1e-10)
        np.testing.assert_allclose(abar, -g @ np.swapaxes(x, -1, -2), rtol=1e-10)
    else:
        g = xbar @ np.swapaxes(ainv, -1, -2)
        np.testing.assert_allclose(bbar, g, rtol=1e-10)
        np.testing.assert_allclose(abar, -np.swapaxes(x, -1, -2) @ g, rtol=1e-10)


@pytest.mark.parametrize("n", [3, N])
def test_first_singular_matrix_of_a_batch_is_named(n):
    rng = np.random.default_rng(2)
    a = well_conditioned(rng, (40,), n, "float64")
    a[17, :, 1] = 0.0  # column 1 zero: U[1, 1] == 0
    a[30] = 0.0
    b = rng.standard_normal((40, n, 1))
    ops = invad.install()
    for call in (lambda: ops.solve(a, b), lambda: ops.inv(a)):
        with pytest.raises(
            np.linalg.LinAlgError,
            match=r"invad\.(solve|inv): singular matrix at batch index \(17,\)",
        ):
            call()
    x, info = ops.solve_ex(a, b)
    expected = np.zeros(40, dtype=np.int32)
    expected[17], expected[30] = 2, 1
    np.testing.assert_array_equal(info, expected)
    good = np.ones(40, bool)
    good[[17, 30]] = False
    np.testing.assert_allclose(x[good], np.linalg.solve(a[good], b[good]), rtol=1e-10)
    _, info = ops.inv_ex(a)
    np.testing.assert_array_equal(info, expected)


@pytest.mark.parametrize(
    "op, params", [("solve_ex", {}), ("solve_ex", {"left": False}), ("inv_ex", {})]
)
def test_singular_matrices_in_a_small_batch_cost_getrf_calls_for_them_alone(
    monkeypatch, op, params
):
    """One singular matrix used to send the whole batch into a loop of getrf calls; now only
    the singular ones (here 3 of 5000) get LAPACK calls of their own, and their info is
    getrf(A)'s: the first zero pivot of a zero row is at the last step."""
    lapack_calls = []
    original = numpy_backend.NumpyKernels._lapack

    def counting(self, name, dtype):
        fn = original(self, name, dtype)

        def call(*args, **kwargs):
            lapack_calls.append(name)
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(numpy_backend.NumpyKernels, "_lapack", counting)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5000, 4, 4))
    a[[10, 2000, 4999], 1] = 0
    ops = Ops(invad.install().backend, "cpu")
    args = (a,) if op == "inv_ex" else (a, rng.standard_normal((5000, 4, 2)))
    if params.get("left") is False:
        args = (a, np.swapaxes(args[1], -1, -2))
    value, info = getattr(ops, op)(*args, **params)
    assert np.flatnonzero(info).tolist() == [10, 2000, 4999]
    assert info[[10, 2000, 4999]].tolist() == [4, 4, 4]
    assert lapack_calls.count("getrf") <= 2 * 3 and len(lapack_calls) <= 3 * 3
    fine = np.ones(5000, dtype=bool)
    fine[[10, 2000, 4999]] = False
    assert (~np.isfinite(value[~fine])).any(axis=(-2, -1)).all()
    if op == "inv_ex":
        expected = np.linalg.inv(a[fine])
    elif params.get("left") is False:  # x a = b is a^T x^T = b^T
        at, bt = np.swapaxes(a[fine], -1, -2), np.swapaxes(args[1][fine], -1, -2)
        expected = np.swapaxes(np.linalg.solve(at, bt), -1, -2)
    else:
        expected = np.linalg.solve(a[fine], args[1][fine])
    np.testing.assert_allclose(value[fine], expected, rtol=1e-10, atol=1e-10)
