"""The CuPy backend's own paths: devices, singular errors, LU reuse, the Cholesky family.

The conformance suite runs on it with ``INVAD_TEST_BACKENDS=cupy`` (nox
session ``tests-cupy``). The tests here that need a GPU take the ``cupy``
fixture, which skips them, saying why, where cupy is not installed or no
CUDA device is visible. Only the checks of how the backend reports a
missing cupy or a missing GPU run without one.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import invad
from invad.backends import cupy as cupy_backend
from invad.ops import Ops
from invad.testing import Harness, checks
from invad.testing.cases import SHAPES, Shape, positive_definite, well_conditioned

#: Large enough for the per-matrix LU path on stacks of matrices: one more than CuPy's
#: default ``cupy.cublas.get_batched_gesv_limit()``, 256.
BIG = 257


def gpu_count(cupy) -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except cupy.cuda.runtime.CUDARuntimeError:  # no driver, or no device
        return 0


@pytest.fixture(scope="module")
def cupy():
    cupy = pytest.importorskip(
        "cupy", reason="cupy is not installed: these tests need cupy-cuda12x and a CUDA GPU"
    )
    if gpu_count(cupy) == 0:
        pytest.skip(
            "cupy is installed but no CUDA device is visible "
            "(cupy.cuda.runtime.getDeviceCount() is 0 or fails): these tests need a CUDA GPU"
        )
    return cupy


@pytest.fixture(scope="module")
def two_gpus(cupy):
    if gpu_count(cupy) < 2:
        pytest.skip("one CUDA device visible: device selection across GPUs needs two")
    return cupy


def on(cupy, k, x):
    """``x`` (NumPy) as a CuPy array on GPU ``k``."""
    with cupy.cuda.Device(k):
        return cupy.asarray(x)


# -- without a GPU: how the backend says what is missing --------------------------


def test_owns_does_not_import_cupy():
    had_cupy = "cupy" in sys.modules
    assert cupy_backend.CupyBackend().owns(np.ones(2)) is False
    assert had_cupy or "cupy" not in sys.modules


def test_load_says_cupy_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ModuleNotFoundError
    with pytest.raises(ImportError, match=r"cupy is not installed \(No module named 'cupy'\)"):
        cupy_backend.CupyBackend().load()


@pytest.mark.parametrize("count", [0, "error"])
def test_load_says_no_cuda_device_is_visible(monkeypatch, count):
    """A stand-in cupy module whose runtime sees no device: load() must say so, not crash."""

    def get_device_count():
        if count == "error":
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return count

    stub = types.ModuleType("cupy")
    stub.__version__ = "0.0-stub"
    stub.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count)
    )
    monkeypatch.setitem(sys.modules, "cupy", stub)
    with pytest.raises(RuntimeError, match=r"cupy 0\.0-stub is installed but no CUDA device"):
        cupy_backend.CupyBackend().load()


# -- devices ----------------------------------------------------------------------


def test_listed_available_with_every_gpu(cupy):
    (info,) = [i for i in invad.backends() if i.name == "cupy"]
    assert info.available and info.version == cupy.__version__ and not info.native_ad
    assert info.devices == tuple(f"cuda:{k}" for k in range(gpu_count(cupy)))


def test_default_device_is_the_current_one_and_cached(cupy):
    ops = invad.install("cupy")
    current = cupy.cuda.Device().id
    assert ops.device.id == current
    for same in (current, f"cuda:{current}", cupy.cuda.Device(current)):
        assert invad.install("cupy", device=same) is ops


@pytest.mark.parametrize("bad", ["cpu", "cuda:99", "gpu", -1, 99, 1.0])
def test_unknown_devices_are_rejected(cupy, bad):
    with pytest.raises(ValueError, match="backend 'cupy' has no device"):
        invad.install("cupy", device=bad)


def test_outputs_stay_on_the_input_gpu_whatever_gpu_is_current(cupy):
    count = gpu_count(cupy)
    ops = invad.install("cupy")
    rng = np.random.default_rng(0)
    a_np = well_conditioned(rng, (4,), 3, "float64")
    b_np = rng.standard_normal((4, 3, 2))
    for k in range(count):
        a, b = on(cupy, k, a_np), on(cupy, k, b_np)
        with cupy.cuda.Device((k + 1) % count):  # another GPU current, where there is one
            results = [ops.solve(a, b), *ops.inv_ex(a), ops.tensorinv(a[0], ind=1)]
            _, dx = ops.jvp("solve", (a, b), (a, b))
            _, (abar, bbar) = ops.vjp("solve", (a, b), b)
            results += [dx, abar, bbar]
        assert [r.device.id for r in results] == [k] * len(results)
        np.testing.assert_allclose(cupy.asnumpy(results[0]), np.linalg.solve(a_np, b_np))


def test_install_on_the_second_gpu(two_gpus):
    cupy = two_gpus
    ops = invad.install("cupy", device=1)
    assert ops.device.id == 1 and invad.install("cupy", device="cuda:1") is ops
    with cupy.cuda.Device(0):
        h = Harness("cupy", device=1)
        assert h.put(np.eye(2)).device.id == 1
        for op, shape in [
            ("solve", Shape("batched", ((4, 3, 3), (4, 3, 2)))),
            ("solve_ex", Shape("right", ((3, 3), (2, 4, 3)), {"left": False})),
            ("inv", Shape("batched", ((4, 3, 3),))),
        ]:
            for check in (checks.check_forward, checks.check_jvp, checks.check_vjp):
                result = check(h, op, shape, "float64", np.random.default_rng(5))
                assert result.passed, result


def test_arrays_on_two_gpus_are_rejected_naming_both(two_gpus):
    cupy = two_gpus
    ops = invad.install("cupy")
    a = on(cupy, 0, np.eye(3))
    b = on(cupy, 1, np.ones((3, 2)))
    message = r"invad\.solve: `a` is on device cuda:0 but `b` is on device cuda:1"
    with pytest.raises(ValueError, match=message):
        ops.solve(a, b)
    with pytest.raises(ValueError, match=message):
        ops.vjp("solve", (a, b), on(cupy, 0, np.ones((3, 2))))


def test_host_arrays_are_rejected_naming_both(cupy):
    ops = invad.install("cupy")
    with pytest.raises(ValueError, match="`a` is on device cuda:0 but `b` is on device cpu"):
        ops.solve(on(cupy, 0, np.eye(3)), np.ones((3, 2)))


# -- singular input ---------------------------------------------------------------


@pytest.mark.parametrize("n", [3, BIG])
def test_first_singular_matrix_of_a_batch_is_named(cupy, n):
    rng = np.random.default_rng(2)
    a_np = well_conditioned(rng, (40,), n, "float64")
    a_np[17, :, 1] = 0.0  # column 1 zero: U[1, 1] == 0
    a_np[30] = 0.0
    b_np = rng.standard_normal((40, n, 1))
    a, b = cupy.asarray(a_np), cupy.asarray(b_np)
    ops = invad.install("cupy")
    for call in (lambda: ops.solve(a, b), lambda: ops.inv(a)):
        with pytest.raises(
            np.linalg.LinAlgError,
            match=rf"invad\.(solve|inv): singular matrix at batch index \(17,\) "
            rf"\(input shape \(40, {n}, {n}\)\): U\[1, 1\]",
        ):
            call()
    expected = np.zeros(40, dtype=np.int32)
    expected[17], expected[30] = 2, 1
    x, info = ops.solve_ex(a, b)
    np.testing.assert_array_equal(cupy.asnumpy(info), expected)
    good = np.ones(40, bool)
    good[[17, 30]] = False
    np.testing.assert_allclose(
        cupy.asnumpy(x)[good], np.linalg.solve(a_np[good], b_np[good]), rtol=1e-10
    )
    _, info = ops.inv_ex(a)
    np.testing.assert_array_equal(cupy.asnumpy(info), expected)


def test_one_singular_matrix(cupy):
    a = cupy.asarray([[1.0, 2.0], [2.0, 4.0]])  # U[1, 1] == 0 exactly
    ops = invad.install("cupy")
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.inv: singular matrix \(input shape"):
        ops.inv(a)
    assert int(ops.solve_ex(a, cupy.ones((2, 1)))[1]) == 2
    assert int(ops.inv_ex(a)[1]) == 2


# -- kernels ------------------------------------------------------------------------


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("shape", [(8, 8), (2, BIG, BIG)], ids=["one-matrix", "big-batch"])
def test_vjp_of_solve_factors_once_and_forms_no_inverse(cupy, monkeypatch, shape, left):
    calls = []
    factor = cupy_backend.CupyKernels.lu_factor

    def counting_factor(self, a):
        calls.append(a.shape)
        return factor(self, a)

    def forbidden(*args, **kwargs):
        raise AssertionError("refactorization or explicit inverse")

    monkeypatch.setattr(cupy_backend.CupyKernels, "lu_factor", counting_factor)
    backend = invad.install("cupy").backend
    ops = Ops(backend, backend.resolve_device(None))  # built after the patch
    rng = np.random.default_rng(1)
    n = shape[-1]
    a_np = well_conditioned(rng, shape[:-2], n, "float64")
    b_np = rng.standard_normal((*shape[:-2], n, 4) if left else (*shape[:-2], 4, n))
    xbar_np = rng.standard_normal(b_np.shape)
    a, b, xbar = cupy.asarray(a_np), cupy.asarray(b_np), cupy.asarray(xbar_np)
    monkeypatch.setattr(cupy.linalg, "solve", forbidden)
    monkeypatch.setattr(cupy.linalg, "inv", forbidden)
    x, (abar, bbar) = ops.vjp("solve", (a, b), xbar, left=left)
    monkeypatch.undo()
    assert calls == [a.shape]
    # The adjoint from an explicit inverse, computed independently on the host.
    ainv_t = np.swapaxes(np.linalg.inv(a_np), -1, -2)
    x_t = np.swapaxes(cupy.asnumpy(x), -1, -2)
    g = ainv_t @ xbar_np if left else xbar_np @ ainv_t
    np.testing.assert_allclose(cupy.asnumpy(bbar), g, rtol=1e-9, atol=1e-12)
    expected_abar = -g @ x_t if left else -x_t @ g
    np.testing.assert_allclose(cupy.asnumpy(abar), expected_abar, rtol=1e-9, atol=1e-12)


LU_SHAPES = [
    Shape("batched", ((3, 5, 5), (3, 5, 2))),
    Shape("broadcast", ((2, 1, 5, 5), (3, 5, 1))),
    Shape("one-matrix-batched-rhs", ((5, 5), (4, 5, 2))),
    Shape("right", ((2, 5, 5), (2, 3, 5)), {"left": False}),
]


@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32", "complex64"])
@pytest.mark.parametrize("shape", LU_SHAPES, ids=lambda s: s.id)
@pytest.mark.parametrize("check", [checks.check_forward, checks.check_jvp, checks.check_vjp])
def test_per_matrix_lu_path_passes_the_checks(cupy, check, shape, dtype):
    """With CuPy's batched cut-off at 0 every stack goes through cuSOLVER getrf/getrs per matrix."""
    import cupy.cublas

    limit = cupy.cublas.get_batched_gesv_limit()
    cupy.cublas.set_batched_gesv_limit(0)
    try:
        h = Harness("cupy")
        for op in ("solve", "solve_ex"):
            result = check(h, op, shape, dtype, np.random.default_rng(3))
            assert result.passed, result
    finally:
        cupy.cublas.set_batched_gesv_limit(limit)


def test_batched_path_agrees_with_cupy_solve(cupy):
    rng = np.random.default_rng(0)
    a = cupy.asarray(well_conditioned(rng, (6,), 4, "complex128"))
    b = cupy.asarray(rng.standard_normal((6, 4, 2)) + 1j * rng.standard_normal((6, 4, 2)))
    ops = invad.install("cupy")
    np.testing.assert_allclose(
        cupy.asnumpy(ops.solve(a, b)), cupy.asnumpy(cupy.linalg.solve(a, b)), rtol=1e-12
    )
    bt = b.swapaxes(-1, -2)
    xt = cupy.linalg.solve(a.swapaxes(-1, -2), b).swapaxes(-1, -2)
    np.testing.assert_allclose(
        cupy.asnumpy(ops.solve(a, bt, left=False)), cupy.asnumpy(xt), rtol=1e-12
    )


# -- the LU family ------------------------------------------------------------------

#: The LU family's ops, whose kernels are cuSOLVER getrf/getrs, cuBLAS trsm and, for the
#: determinants, cupy.linalg.slogdet on stacks of small matrices.
LU_FAMILY = ("lu_factor", "lu_factor_ex", "lu_solve", "solve_triangular", "det", "slogdet")


@pytest.mark.parametrize("limit", [None, 0], ids=["default-limit", "per-matrix"])
@pytest.mark.parametrize("dtype", ["float64", "complex64"])
@pytest.mark.parametrize("op", LU_FAMILY)
def test_lu_family_passes_the_checks_on_both_paths(cupy, op, dtype, limit):
    """The kit's forward, JVP and VJP checks, every shape family; with the batched cut-off
    at 0 the determinants factor per matrix (cuSOLVER) and keep the factor."""
    import cupy.cublas

    default = cupy.cublas.get_batched_gesv_limit()
    cupy.cublas.set_batched_gesv_limit(default if limit is None else limit)
    try:
        h = Harness("cupy")
        failed = []
        for shape in SHAPES[op]:
            for check in (checks.check_forward, checks.check_jvp, checks.check_vjp):
                result = check(h, op, shape, dtype, np.random.default_rng(7))
                if not result.passed:
                    failed.append(result)
        assert not failed, failed
    finally:
        cupy.cublas.set_batched_gesv_limit(default)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (2, 4, 4), (2, 6, 4)])
def test_lu_factor_is_cupyx_lu_factor(cupy, shape):
    """invad's factor and pivots are cupyx.scipy.linalg.lu_factor's, matrix by matrix, and
    each goes into the other's lu_solve."""
    import cupyx.scipy.linalg

    rng = np.random.default_rng(8)
    a_np = rng.standard_normal(shape)
    a = cupy.asarray(a_np)
    ops = invad.install("cupy")
    lu, pivots = ops.lu_factor(a)
    assert pivots.dtype == np.int32 and pivots.shape == (*shape[:-2], min(shape[-2:]))
    for i in np.ndindex(*shape[:-2]):
        ref_lu, ref_piv = cupyx.scipy.linalg.lu_factor(a[i])
        np.testing.assert_array_equal(cupy.asnumpy(pivots[i]), cupy.asnumpy(ref_piv))
        np.testing.assert_allclose(cupy.asnumpy(lu[i]), cupy.asnumpy(ref_lu), rtol=1e-12)
        if shape[-1] == shape[-2]:
            b = cupy.asarray(rng.standard_normal((shape[-1], 2)))
            x = ops.lu_solve(ref_lu, ref_piv, b)
            y = cupyx.scipy.linalg.lu_solve((lu[i], pivots[i]), b)
            expected = np.linalg.solve(a_np[i], cupy.asnumpy(b))
            np.testing.assert_allclose(cupy.asnumpy(x), expected, rtol=1e-10)
            np.testing.assert_allclose(cupy.asnumpy(y), expected, rtol=1e-10)


@pytest.mark.parametrize("n", [4, BIG])
def test_solve_triangular_is_cupyx_solve_triangular(cupy, n):
    """A stack broadcast against one right-hand side, every combination of the flags, against
    cupyx.scipy.linalg.solve_triangular matrix by matrix; the other triangle never read."""
    import cupyx.scipy.linalg

    rng = np.random.default_rng(9)
    t_np = well_conditioned(rng, (3,), n, "complex128")
    b_np = rng.standard_normal((n, 2)) + 1j * rng.standard_normal((n, 2))
    t, b = cupy.asarray(t_np), cupy.asarray(b_np)
    ops = invad.install("cupy")
    for upper in (True, False):
        for unit in (False, True):
            keep = np.triu(np.ones((n, n), bool)) if upper else np.tril(np.ones((n, n), bool))
            if unit:
                keep &= ~np.eye(n, dtype=bool)
            hidden = cupy.asarray(np.where(keep, t_np, np.nan))
            x = ops.solve_triangular(hidden, b, upper=upper, unitriangular=unit)
            assert x.shape == (3, n, 2)
            for i in range(3):
                ref = cupyx.scipy.linalg.solve_triangular(
                    t[i], b, lower=not upper, unit_diagonal=unit
                )
                np.testing.assert_allclose(cupy.asnumpy(x[i]), cupy.asnumpy(ref), rtol=1e-9)


def cofactors(a: np.ndarray) -> np.ndarray:
    """d det(A) / dA, the cofactor matrix, from minors (on the host)."""
    out = np.empty_like(a)
    for index in np.ndindex(*a.shape):
        *batch, i, j = index
        minor = np.delete(np.delete(a[tuple(batch)], i, axis=0), j, axis=1)
        out[index] = (-1) ** (i + j) * np.linalg.det(minor)
    return out


@pytest.mark.parametrize("limit", [None, 0], ids=["batched", "per-matrix"])
def test_determinants_agree_with_cupy_and_are_right_at_singular_matrices(cupy, limit):
    """det and slogdet equal cupy.linalg's; at singular matrices (a repeated row: rank n-1;
    two zero rows: rank n-2) det is 0, slogdet (0, -inf), and the derivative of det the
    adjugate, against the cofactors computed on the host."""
    import cupy.cublas

    rng = np.random.default_rng(10)
    a_np = well_conditioned(rng, (4,), 4, "float64")
    a_np[1, 0, 0] = 4.0  # the first pivot, a power of two: the copy cancels exactly
    a_np[1, 3] = a_np[1, 0]
    a_np[2, 1:3] = 0.0
    a = cupy.asarray(a_np)
    default = cupy.cublas.get_batched_gesv_limit()
    cupy.cublas.set_batched_gesv_limit(default if limit is None else limit)
    try:
        ops = invad.install("cupy")
        det = cupy.asnumpy(ops.det(a))
        sign, logabsdet = (cupy.asnumpy(x) for x in ops.slogdet(a))
        ref_sign, ref_log = (cupy.asnumpy(x) for x in cupy.linalg.slogdet(a))
        _, (abar,) = ops.vjp("det", (a,), cupy.ones(4))
    finally:
        cupy.cublas.set_batched_gesv_limit(default)
    assert (det[[1, 2]] == 0).all() and (sign[[1, 2]] == 0).all()
    assert (logabsdet[[1, 2]] == -np.inf).all()
    good = [0, 3]
    np.testing.assert_allclose(det[good], np.linalg.det(a_np[good]), rtol=1e-12)
    np.testing.assert_allclose(sign[good], ref_sign[good])
    np.testing.assert_allclose(logabsdet[good], ref_log[good], rtol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(abar), cofactors(a_np), rtol=1e-9, atol=1e-12)
    assert not cupy.asnumpy(abar)[2].any()


def test_factor_once_solve_many_factors_once(cupy, monkeypatch):
    """lu_solve's derivatives with respect to LU and b never factor anything again."""
    calls = []
    factor = cupy_backend.CupyKernels.lu_factor

    def counting_factor(self, a):
        calls.append(a.shape)
        return factor(self, a)

    monkeypatch.setattr(cupy_backend.CupyKernels, "lu_factor", counting_factor)
    backend = invad.install("cupy").backend
    ops = Ops(backend, backend.resolve_device(None))  # built after the patch
    rng = np.random.default_rng(11)
    a_np = well_conditioned(rng, (2,), 8, "float64")
    a = cupy.asarray(a_np)
    lu, pivots = ops.lu_factor(a)
    xbar_np = rng.standard_normal((2, 8, 3))
    for _ in range(3):
        b = cupy.asarray(rng.standard_normal((2, 8, 3)))
        _, (lubar, _, bbar) = ops.vjp("lu_solve", (lu, pivots, b), cupy.asarray(xbar_np))
        np.testing.assert_allclose(
            cupy.asnumpy(bbar), np.linalg.solve(a_np.swapaxes(-1, -2), xbar_np), rtol=1e-9
        )
        assert lubar.shape == lu.shape
    assert calls == [a.shape]


# -- the Cholesky family ----------------------------------------------------------------

# The kit's checks of these ops (and of solve with assume_a="pos") run on the GPU in
# `nox -s tests-cupy` (the conformance kit): here, what is CuPy's own.


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("batch", [(), (3,)], ids=["potrf", "potrfBatched"])
def test_cholesky_is_cupy_linalg_cholesky_reading_one_triangle(cupy, batch, upper):
    """invad's factor is cupy.linalg.cholesky's (its conjugate transpose, upper), with NaN
    in the triangle not read; cholesky_solve with it is cupy.linalg.solve."""
    rng = np.random.default_rng(13)
    n = 5
    a_np = positive_definite(rng, batch, n, "complex128")
    unread = np.tril(np.ones((n, n), bool), -1) if upper else np.triu(np.ones((n, n), bool), 1)
    a = cupy.asarray(a_np)
    ops = invad.install("cupy")
    c, info = ops.cholesky_ex(cupy.asarray(np.where(unread, np.nan, a_np)), upper=upper)
    reference = cupy.linalg.cholesky(a)
    if upper:
        reference = reference.swapaxes(-1, -2).conj()
    np.testing.assert_allclose(cupy.asnumpy(c), cupy.asnumpy(reference), rtol=1e-12, atol=1e-14)
    assert not cupy.asnumpy(info).any() and info.dtype == np.int32
    b = cupy.asarray(rng.standard_normal((*batch, n, 2)))
    hidden = cupy.asarray(np.where(unread, np.nan, cupy.asnumpy(c)))
    np.testing.assert_allclose(
        cupy.asnumpy(ops.cholesky_solve(hidden, b, upper=upper)),
        cupy.asnumpy(cupy.linalg.solve(a, b.astype(a.dtype))),
        rtol=1e-10,
    )


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_info_on_cusolver(cupy, upper):
    """What cuSOLVER does with a matrix that is not positive definite, and with NaN, gives
    the order of the failing minor as info, NaN factors there, and the error naming it."""
    rng = np.random.default_rng(14)
    a_np = positive_definite(rng, (4,), 4, "float64")
    a_np[1, 2, 2] = -3.0  # the leading minor of order 3
    a_np[2, 1, 3] = a_np[2, 3, 1] = np.nan  # the pivot of order 4
    a = cupy.asarray(a_np)
    ops = invad.install("cupy")
    c, info = ops.cholesky_ex(a, upper=upper)
    np.testing.assert_array_equal(cupy.asnumpy(info), [0, 3, 4, 0])
    c = cupy.asnumpy(c)
    assert np.isnan(c[[1, 2]]).all()
    good = np.linalg.cholesky(a_np[[0, 3]])
    good = np.conj(np.swapaxes(good, -1, -2)) if upper else good
    np.testing.assert_allclose(c[[0, 3]], good, rtol=1e-12)
    one = cupy.asarray(np.diag([1.0, 0.0, 1.0]))
    assert int(ops.cholesky_ex(one)[1]) == 2
    with pytest.raises(
        np.linalg.LinAlgError,
        match=r"invad\.cholesky: matrix not positive-definite at batch index \(1,\) "
        r"\(input shape \(4, 4, 4\)\): the leading minor of order 3",
    ):
        ops.cholesky(a, upper=upper)
    _, info_pos = ops.solve_ex(a, cupy.ones((4, 1)), assume_a="pos")
    np.testing.assert_array_equal(cupy.asnumpy(info_pos), [0, 3, 4, 0])


def test_positive_definite_solve_factors_once(cupy, monkeypatch):
    """solve(assume_a="pos") and its VJP: one Cholesky factorization, no LU, no inverse."""
    calls = []
    factor = cupy_backend.CupyKernels.cholesky

    def counting(self, a, upper=False):
        calls.append(a.shape)
        return factor(self, a, upper)

    def forbidden(*args, **kwargs):
        raise AssertionError("an LU factorization or an explicit inverse")

    monkeypatch.setattr(cupy_backend.CupyKernels, "cholesky", counting)
    monkeypatch.setattr(cupy_backend.CupyKernels, "lu_factor", forbidden)
    backend = invad.install("cupy").backend
    ops = Ops(backend, backend.resolve_device(None))  # built after the patch
    rng = np.random.default_rng(15)
    a_np = positive_definite(rng, (3,), 6, "float64")
    b_np, xbar_np = rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 6, 2))
    a, b, xbar = cupy.asarray(a_np), cupy.asarray(b_np), cupy.asarray(xbar_np)
    monkeypatch.setattr(cupy.linalg, "solve", forbidden)
    monkeypatch.setattr(cupy.linalg, "inv", forbidden)
    x, (abar, bbar) = ops.vjp("solve", (a, b), xbar, assume_a="pos")
    monkeypatch.undo()
    assert calls == [a.shape]
    g = np.linalg.solve(a_np, xbar_np)  # A Hermitian: A^-H = A^-1
    np.testing.assert_allclose(cupy.asnumpy(x), np.linalg.solve(a_np, b_np), rtol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(bbar), g, rtol=1e-9, atol=1e-12)
    full = -g @ np.swapaxes(np.linalg.solve(a_np, b_np), -1, -2)
    expected = (full + np.swapaxes(full, -1, -2)) / 2
    np.testing.assert_allclose(cupy.asnumpy(abar), expected, rtol=1e-9, atol=1e-12)
