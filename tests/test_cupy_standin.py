"""Logic coverage of the CuPy backend on a CPU stand-in. This is not a GPU test.

No GPU runs here. The CuPy backend's own code (:mod:`invad.backends.cupy`:
its routing, kernels, ``info``, errors and warnings) runs with a stand-in
for the two modules that :meth:`CupyBackend.load` binds: a fake ``cupy``
built from NumPy, and a fake ``cupyx`` whose ``scipy.linalg`` is SciPy's
LAPACK ``getrf``/``getrs``. The stand-in copies what the backend relies on in
CuPy's source (v13.0.0, v14.2), not CuPy's numerics:

- which matrix each routine factors. ``cupy.linalg.solve`` on a stack with
  ``n <= get_batched_gesv_limit()`` (cuBLAS ``batched_gesv``) factors ``A``;
  above the limit it factors ``A^T`` (a C-ordered ``gesv`` per matrix); for
  one matrix it factors ``A``. ``cupy.linalg.inv`` factors ``A^T`` unless
  its input is a Fortran-ordered matrix.
- a zero pivot raises ``numpy.linalg.LinAlgError`` only under
  ``cupyx.errstate(linalg="raise")``, a thread-local setting; otherwise the
  result is non-finite in that batch element only.
- ``cupy.linalg.solve`` does not broadcast batch dimensions.
- ``cupyx.scipy.linalg.lu_factor`` takes one ``(m, n)`` matrix, copies it to
  Fortran order, returns ``min(m, n)`` 0-based int32 pivots and warns (from
  ``_lu_factor``, ``stacklevel=2``) on a zero pivot; ``lu_solve`` takes
  ``trans`` 0, 1, 2.
- ``cupyx.scipy.linalg.solve_triangular`` reads one triangle, computes in
  ``a``'s dtype (``b`` cast to it), divides by a zero on the diagonal
  without an error, and takes one matrix (CuPy 13) or also a stack whose
  batch equals ``b``'s (CuPy 14, ``trsmBatched``): the fake's ``__version__``
  says which.
- ``cupy.linalg.slogdet`` / ``det`` factor a C-ordered copy of their input
  read as column-major, i.e. each matrix's transpose, and give sign 0 and
  logdet -inf where ``getrf`` meets a zero pivot.
- ``cupy.linalg.cholesky`` is ``potrf`` (one matrix) or ``potrfBatched`` (a
  stack) reading the lower triangle, returning ``tril`` of what it left
  (where it stopped: a partial factor, finite), ``devInfo`` checked only
  under ``errstate(linalg="raise")``. The fake's ``potrf`` is SciPy's LAPACK
  (OpenBLAS), which does not report a NaN pivot: so the backend's own check
  of the factor's diagonal is what finds NaN here.
- ``cupy.cublas.get_batched_gesv_limit`` / ``set_batched_gesv_limit``.

The fake records each LAPACK-level call it makes, so the tests can say which
path a call took. cuBLAS and cuSOLVER themselves, devices, streams and
synchronization are tested only by ``tests/test_cupy.py``, on a machine with
a CUDA GPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any

import array_api_compat.numpy
import numpy as np
import pytest
from scipy.linalg import get_lapack_funcs

import invad
from invad.backends import cupy as cupy_backend
from invad.backends.cupy import _state as cupy_state
from invad.ops import Ops
from invad.rules import RULES, CholeskyFactor
from invad.testing import Harness, checks
from invad.testing import cases as C

# -- the stand-in -------------------------------------------------------------------


def getrf(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """LAPACK ``getrf`` of the matrix ``m`` as it reads (not of its memory layout)."""
    (fn,) = get_lapack_funcs(("getrf",), (m,))
    lu, piv, info = fn(np.array(m, order="F"))
    return lu, piv, int(info)


def getrs(lu: np.ndarray, piv: np.ndarray, b: np.ndarray, trans: int = 0) -> np.ndarray:
    (fn,) = get_lapack_funcs(("getrs",), (lu,))
    x, _ = fn(lu, piv, np.array(b, dtype=lu.dtype, order="F"), trans=trans)
    return x


class FakeCupyx:
    """``cupyx``: ``errstate(linalg=...)`` (thread-local, as CuPy's) and ``scipy.linalg``."""

    def __init__(self, calls: list[str]) -> None:
        self._config = threading.local()
        self.calls = calls
        self.batched_trsm = True  # CuPy 14 and later; the fake cupy's version says which
        decomp_lu = types.SimpleNamespace(_lu_factor=self._lu_factor)
        self.scipy = types.SimpleNamespace(
            linalg=types.SimpleNamespace(
                lu_factor=self.lu_factor,
                lu_solve=self.lu_solve,
                solve_triangular=self.solve_triangular,
                _decomp_lu=decomp_lu,
            )
        )

    def get_config_linalg(self) -> str:
        return getattr(self._config, "linalg", "ignore")

    @contextlib.contextmanager
    def errstate(self, *, linalg: str | None = None) -> Iterator[None]:
        old = self.get_config_linalg()
        if linalg is not None:
            self._config.linalg = linalg
        try:
            yield
        finally:
            self._config.linalg = old

    def check(self, info: list[int], routine: str) -> None:
        """CuPy's ``_check_*_info_if_synchronization_allowed``."""
        if self.get_config_linalg() == "raise" and any(info):
            raise np.linalg.LinAlgError(f"Error reported by {routine}: info = {info}")

    def _lu_factor(self, a: Any, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        self.calls.append("lu_factor")
        a = np.asarray(a)
        assert a.ndim == 2, "cupyx lu_factor takes one matrix"
        if check_finite and not np.isfinite(a).all():
            raise ValueError("array must not contain infs or NaNs")
        lu, piv, info = getrf(a)
        if info > 0:
            warnings.warn(
                f"Diagonal number {info} is exactly zero. Singular matrix.",
                RuntimeWarning,
                stacklevel=2,
            )
        return lu, piv.astype(np.int32)

    def lu_factor(self, a: Any, overwrite_a: bool = False, check_finite: bool = True) -> Any:
        return self._lu_factor(a, overwrite_a, check_finite)

    def lu_solve(
        self, lu_and_piv: Any, b: Any, trans: int = 0, overwrite_b: bool = False, check_finite=True
    ) -> Any:
        self.calls.append("lu_solve")
        lu, piv = lu_and_piv
        assert lu.ndim == 2 and lu.shape[0] == lu.shape[1] == b.shape[0]
        assert piv.dtype == np.int32 and trans in (0, 1, 2)
        if check_finite and not np.isfinite(lu).all():
            raise ValueError("array must not contain infs or NaNs")
        return getrs(np.asfortranarray(lu), piv, b, trans)

    def solve_triangular(
        self,
        a: Any,
        b: Any,
        trans: Any = 0,
        lower: bool = False,
        unit_diagonal: bool = False,
        overwrite_b: bool = False,
        check_finite: bool = False,
    ) -> Any:
        """cuBLAS ``trsm``: one matrix, or (CuPy 14) a stack whose batch equals ``b``'s."""
        if a.ndim == 2:
            self.calls.append("trsm")
            if a.shape[0] != a.shape[1] or len(a) != len(b):
                raise ValueError("expected square matrix / incompatible dimensions")
        elif not self.batched_trsm:  # CuPy 13: `len(a.shape) != 2` is refused
            raise ValueError("expected square matrix")
        else:
            self.calls.append("trsmBatched")
            if a.shape[:-2] != b.shape[: a.ndim - 2]:
                raise ValueError("incompatible batch count")
            assert b.ndim == a.ndim, "the backend always passes b as a matrix"
        # The computation is in a's dtype (made float): b is cast to it, as CuPy does.
        dtype = a.dtype if a.dtype.char in "fd" else np.promote_types(a.dtype.char, "f")
        code = {0: "N", 1: "T", 2: "C"}.get(trans, trans)
        assert code in ("N", "T", "C"), trans
        a = np.asarray(a, dtype=dtype)
        b = np.asarray(b).astype(dtype)
        x = np.empty(b.shape, dtype)
        (trtrs,) = get_lapack_funcs(("trtrs",), (a,))
        kw = {"lower": int(lower), "trans": "NTC".index(code), "unitdiag": int(unit_diagonal)}
        for i in np.ndindex(*a.shape[:-2]):  # LAPACK trtrs reads only the named triangle
            x[i], info = trtrs(a[i], b[i], **kw)
            if info > 0:  # a zero on the diagonal: trsm divides by it, no error
                x[i] = np.nan
        return x


class FakeLinalg:
    """``cupy.linalg.solve`` and ``inv``, factoring what CuPy's code factors."""

    def __init__(self, cupyx: FakeCupyx, limit: Any) -> None:
        self._cupyx = cupyx
        self._limit = limit

    def _solve_each(self, routine: str, ms: list[np.ndarray], bs: list[np.ndarray], trans: int):
        """Factor each ``m`` (the matrix the CuPy routine factors), check, then ``getrs``."""
        self._cupyx.calls.append(routine)
        factors = [getrf(m) for m in ms]
        self._cupyx.check([f[2] for f in factors], routine)
        return [getrs(lu, piv, b, trans) for (lu, piv, _), b in zip(factors, bs)]

    def solve(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        assert b.ndim > 1, "the backend always passes b as a matrix"
        if a.shape[:-1] != b.shape[:-1]:  # CuPy does not broadcast
            raise ValueError("a must have (..., M, M) shape and b must have (..., M, K)")
        dtype = np.result_type(a, b)
        a, b = a.astype(dtype), b.astype(dtype)
        x = np.empty(b.shape, dtype)
        if a.size == 0:
            return x
        batch = list(np.ndindex(*a.shape[:-2]))
        if a.ndim > 2 and a.shape[-1] <= self._limit():
            # batched_gesv: a column-major copy of A, getrfBatched(A), getrsBatched(N)
            xs = self._solve_each("batched_gesv", [a[i] for i in batch], [b[i] for i in batch], 0)
        elif a.ndim == 2:  # gesv on a Fortran-ordered copy: getrf(A), getrs(N)
            xs = self._solve_each("gesv", [a], [b], 0)
        else:  # gesv on each C-ordered matrix: getrf(A^T), getrs(T)
            xs = [self._solve_each("gesv", [a[i].T], [b[i]], 1)[0] for i in batch]
        for i, xi in zip(batch, xs):
            x[i] = xi
        return x

    def slogdet(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CuPy's slogdet: a C-ordered copy of ``a`` read column-major, so each matrix's
        transpose is factored; sign 0 and logdet -inf where getrf reports a zero pivot."""
        self._cupyx.calls.append("slogdet")
        a = np.asarray(a)
        sign = np.ones(a.shape[:-2], a.dtype)
        real = np.dtype(a.real.dtype)
        logdet = np.zeros(a.shape[:-2], real)
        for i in np.ndindex(*a.shape[:-2]):
            if a.shape[-1] == 0:
                continue
            lu, piv, info = getrf(a[i].T)
            d = np.diagonal(lu)
            swaps = np.count_nonzero(piv != np.arange(len(piv)))
            if info > 0:
                sign[i], logdet[i] = 0, -np.inf
                continue
            phase = d / np.abs(d) if a.dtype.kind == "c" else np.sign(d)
            sign[i] = (-1) ** swaps * np.prod(phase)
            logdet[i] = np.sum(np.log(np.abs(d)))
        return sign, logdet

    def det(self, a: np.ndarray) -> np.ndarray:
        sign, logdet = self.slogdet(a)
        return sign * np.exp(logdet)

    def cholesky(self, a: np.ndarray) -> np.ndarray:
        """CuPy's cholesky: cuSOLVER potrf / potrfBatched of a C-ordered copy read column-major
        with FILL_MODE_UPPER, i.e. of the lower triangle of ``a``; ``tril`` of the result."""
        assert a.ndim >= 2 and a.shape[-1] == a.shape[-2]
        routine = "potrfBatched" if a.ndim > 2 else "potrf"
        self._cupyx.calls.append(routine)
        x = np.array(a, order="C", copy=True)
        infos = []
        for i in np.ndindex(*x.shape[:-2]):
            if x.shape[-1] == 0:
                continue
            (potrf,) = get_lapack_funcs(("potrf",), (x[i],))
            x[i], info = potrf(x[i], lower=1)
            infos.append(int(info))
        self._cupyx.check(infos, routine)
        return np.tril(x)

    def inv(self, a: np.ndarray) -> np.ndarray:
        out = np.empty(a.shape, a.dtype)
        if a.size == 0:
            return out
        eye = np.eye(a.shape[-1], dtype=a.dtype)
        if a.ndim > 2:  # a C-ordered copy into column-major getrfBatched: A^T factored
            batch = list(np.ndindex(*a.shape[:-2]))
            xs = self._solve_each("getrfBatched", [a[i].T for i in batch], [eye] * len(batch), 0)
            for i, xi in zip(batch, xs):
                out[i] = xi.T
        elif a.flags.f_contiguous:  # gesv(a, I): A factored
            out[...] = self._solve_each("gesv", [a], [eye], 0)[0]
        else:  # gesv(a.T, I.T): A^T factored
            out[...] = self._solve_each("gesv", [a.T], [eye], 0)[0].T
        return out


class FakeDevice:
    """``cupy.cuda.Device``: one GPU, id 0."""

    def __init__(self, k: int | None = None) -> None:
        self.id = 0 if k is None else int(getattr(k, "id", k))

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


#: What the backend takes from the cupy namespace besides linalg, cublas and cuda:
#: NumPy functions with the same names and meaning in CuPy.
NUMPY_NAMES = (
    "argmax",
    "asarray",
    "asfortranarray",
    "broadcast_to",
    "diagonal",
    "empty",
    "eye",
    "int8",
    "int32",
    "moveaxis",
    "result_type",
    "take_along_axis",
    "where",
    "zeros",
    "zeros_like",
    "inf",
    "nan",
)


class FakeCupy(types.SimpleNamespace):
    """``cupy``: the NumPy functions of :data:`NUMPY_NAMES`, ``linalg``, ``cublas``, ``cuda``."""

    def __init__(self, cupyx: FakeCupyx) -> None:
        super().__init__(**{name: getattr(np, name) for name in NUMPY_NAMES})
        self.__version__ = "14.2.0"  # solve_triangular takes stacks (trsmBatched)
        self.limit = 256  # CuPy's default
        self.cublas = types.SimpleNamespace(
            get_batched_gesv_limit=lambda: self.limit,
            set_batched_gesv_limit=lambda n: setattr(self, "limit", n),
        )
        self.linalg = FakeLinalg(cupyx, self.cublas.get_batched_gesv_limit)
        self.cuda = types.SimpleNamespace(
            Device=FakeDevice, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)
        )
        self.asnumpy = np.asarray


class StandinBackend(cupy_backend.CupyBackend):
    """The real CuPy backend; only its namespace and array type are NumPy's."""

    def __init__(self) -> None:
        super().__init__()
        self._device_count = 1

    def namespace(self) -> Any:
        return array_api_compat.numpy

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)


class StandinHarness(Harness):
    """The conformance kit's harness around the stand-in's ops."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.backend = ops.backend
        self.device = ops.device


class Standin(types.SimpleNamespace):
    cupy: FakeCupy
    cupyx: FakeCupyx
    calls: list[str]
    ops: Ops
    kernels: cupy_backend.CupyKernels


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Standin:
    """The stand-in modules bound where ``CupyBackend.load`` binds cupy's, and ops built on them."""
    calls: list[str] = []
    cupyx = FakeCupyx(calls)
    cupy = FakeCupy(cupyx)
    monkeypatch.setattr(cupy_state, "cupy", cupy)
    monkeypatch.setattr(cupy_state, "cupyx", cupyx)
    backend = StandinBackend()
    ops = Ops(backend, backend.resolve_device(None))
    return Standin(cupy=cupy, cupyx=cupyx, calls=calls, ops=ops, kernels=backend.kernels(None))


# -- helpers ----------------------------------------------------------------------------


def op_of(a: np.ndarray, trans: str) -> np.ndarray:
    at = np.swapaxes(a, -1, -2)
    return {"N": a, "T": at, "H": at.conj()}[trans]


def lapack_info(a: np.ndarray) -> np.ndarray:
    """SciPy's LAPACK ``getrf`` info of each matrix of ``a`` itself."""
    info = np.zeros(a.shape[:-2], dtype=np.int32)
    for i in np.ndindex(*a.shape[:-2]):
        info[i] = getrf(a[i])[2]
    return info


def with_equal_rows(rng: np.random.Generator, batch, n: int, dtype: str, singular) -> np.ndarray:
    """Well-conditioned matrices, except those at ``singular``: the last row repeats the first.

    The first row holds the first pivot, 4, a power of two: every LU, unblocked
    (getf2, the portable LU) or blocked and recursive (OpenBLAS, cuSOLVER), dividing
    by the pivot or multiplying by its reciprocal, subtracts the first row from its
    copy with the multiplier 1 exactly, so that the copy and ``U[n-1, n-1]`` become
    exactly zero. Equal rows elsewhere need not: a blocked LU computes the two copies
    in different ways, their difference can round to a tiny nonzero pivot, and then
    ``info`` depends on the LAPACK build, as the contract says. For the same reason
    complex matrices are real ones times ``i`` (complex division by a general phase
    rounds); their pivot rows are the same whether pivots compare ``|z|`` or
    ``|Re z| + |Im z|``.
    """
    real = C.well_conditioned(rng, batch, n, "float64")
    for index in singular:
        real[index][0, 0] = 4.0  # above every other entry of the column
        real[index][n - 1] = real[index][0]
    return (real * 1j).astype(dtype) if dtype.startswith("complex") else real.astype(dtype)


def routes(standin: Standin) -> set[str]:
    """The CuPy routines called since the last look, and forget them."""
    seen = set(standin.calls)
    standin.calls.clear()
    return seen


#: The paths a stack of matrices can take, by the batched limit set for it.
PATHS = {"batched": 256, "per-matrix": 2}


# -- routing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "solve_route", "inv_route"),
    [
        ((3, 3), "lu_factor", "gesv"),
        ((2, 256, 256), "batched_gesv", "getrfBatched"),
        ((2, 257, 257), "lu_factor", "lu_factor"),
    ],
    ids=["one-matrix", "n=256", "n=257"],
)
def test_routing_around_cupys_batched_limit(standin, shape, solve_route, inv_route):
    rng = np.random.default_rng(0)
    n = shape[-1]
    a = C.well_conditioned(rng, shape[:-2], n, "float64")
    b = rng.standard_normal((*shape[:-2], n, 2))
    ops = standin.ops
    np.testing.assert_allclose(ops.solve(a, b), np.linalg.solve(a, b), rtol=1e-10)
    assert solve_route in routes(standin)
    np.testing.assert_allclose(ops.inv(a), np.linalg.inv(a), rtol=1e-10, atol=1e-13)
    assert inv_route in routes(standin)
    xbar = rng.standard_normal(b.shape)
    _, (abar, bbar) = ops.vjp("solve", (a, b), xbar)
    g = np.linalg.solve(np.swapaxes(a, -1, -2), xbar)
    np.testing.assert_allclose(bbar, g, rtol=1e-9)
    np.testing.assert_allclose(abar, -g @ np.swapaxes(np.linalg.solve(a, b), -1, -2), rtol=1e-9)
    reused = {"lu_solve"} if solve_route == "lu_factor" else set()  # the kept factors
    assert routes(standin) == {solve_route} | reused


@pytest.mark.parametrize("limit", [3, 4])
def test_the_limit_is_cupys_live_setting(standin, limit):
    """``cupy.cublas.set_batched_gesv_limit`` moves invad's cut-off with CuPy's."""
    standin.cupy.cublas.set_batched_gesv_limit(limit)
    rng = np.random.default_rng(1)
    a = C.well_conditioned(rng, (3,), 4, "float64")
    b = rng.standard_normal((3, 4, 1))
    np.testing.assert_allclose(standin.ops.solve(a, b), np.linalg.solve(a, b), rtol=1e-12)
    assert routes(standin) == ({"batched_gesv"} if limit >= 4 else {"lu_factor", "lu_solve"})


def test_empty_b_with_a_large_stack_makes_one_batched_call(standin):
    rng = np.random.default_rng(2)
    a = with_equal_rows(rng, (500,), 3, "float64", [(7,)])
    x, info = standin.ops.solve_ex(a, np.ones((500, 3, 0)))
    assert x.shape == (500, 3, 0) and x.dtype == np.float64
    np.testing.assert_array_equal(info, lapack_info(a))
    assert info[7] > 0 and standin.calls == ["batched_gesv"]


# -- every trans code, on every path ---------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize(
    ("path", "a_batch", "b_batch"),
    [
        ("one-matrix", (), (4,)),
        ("batched", (2, 1), (3,)),
        ("per-matrix", (2, 1), (3,)),
        ("per-matrix", (3,), ()),
    ],
)
def test_kernels_solve_every_trans_code(standin, path, a_batch, b_batch, trans, dtype):
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    rng = np.random.default_rng(3)
    n = 3
    a = C.well_conditioned(rng, a_batch, n, dtype)
    b = C.random_array(rng, (*b_batch, n, 2), dtype)
    kernels = standin.kernels
    expected = np.linalg.solve(op_of(a, trans), b)
    factor, x, info = kernels.solve(a, b, trans)
    np.testing.assert_allclose(x, expected, rtol=1e-12)
    assert not info.any() and info.shape == a_batch
    assert (factor.lu is None) == (path == "batched")
    for again in ("N", "T", "H"):  # the kept factorization, in every direction
        np.testing.assert_allclose(
            kernels.lu_solve(factor, b, again), np.linalg.solve(op_of(a, again), b), rtol=1e-12
        )
    assert "lu_solve" not in standin.calls or path != "batched"


# -- singular matrices: info is getrf's of A itself --------------------------------------

#: getrf(A) meets U[2, 2] == 0; getrf(A^T) meets no zero pivot (issue 15).
TRANSPOSE_HIDES_IT = np.array([[0.0, 0.9, -0.7], [0.9, -0.4, -0.2], [0.0, 0.9, -0.7]])


def test_the_issues_matrix_is_singular_for_a_but_not_for_its_transpose():
    assert getrf(TRANSPOSE_HIDES_IT)[2] == 3
    assert getrf(TRANSPOSE_HIDES_IT.T)[2] == 0


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("path", ["one-matrix", "batched", "per-matrix"])
def test_inv_and_solve_raise_on_the_issues_matrix(standin, path, order):
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    a = TRANSPOSE_HIDES_IT if path == "one-matrix" else np.stack([np.eye(3), TRANSPOSE_HIDES_IT])
    a = np.asarray(a, order=order)
    ops = standin.ops
    where = "" if path == "one-matrix" else r" at batch index \(1,\)"
    for op, call in [("inv", lambda: ops.inv(a)), ("solve", lambda: ops.solve(a, np.ones(3)))]:
        with pytest.raises(np.linalg.LinAlgError, match=rf"invad\.{op}: singular matrix{where}"):
            call()
    with pytest.raises(np.linalg.LinAlgError, match=r"U\[2, 2\]"):
        ops.solve(a, np.ones((*a.shape[:-2], 2, 3)), left=False)


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "complex64"])
@pytest.mark.parametrize("path", ["one-matrix", "batched", "per-matrix"])
def test_inv_ex_info_equals_solve_ex_info_equals_getrf_of_a(standin, path, dtype):
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    rng = np.random.default_rng(4)
    if path == "one-matrix":
        cases = [with_equal_rows(rng, (), 5, dtype, [()]), TRANSPOSE_HIDES_IT.astype(dtype)]
    else:
        a = with_equal_rows(rng, (6,), 5, dtype, [(1,), (4,)])
        a[2] = TRANSPOSE_HIDES_IT[[0, 1, 2, 2, 2]][:, [0, 1, 2, 0, 1]]  # U[2, 2] == 0
        cases = [a, np.asfortranarray(a), a.swapaxes(-1, -2).copy().swapaxes(-1, -2)]
    ops = standin.ops
    for a in cases:
        expected = lapack_info(a)
        assert expected.any(), "the case must hold a singular matrix"
        b = C.random_array(rng, (*a.shape[:-2], a.shape[-1], 2), dtype)
        np.testing.assert_array_equal(ops.inv_ex(a)[1], expected)
        np.testing.assert_array_equal(ops.solve_ex(a, b)[1], expected)
        right = ops.solve_ex(a, b.swapaxes(-1, -2), left=False)[1]
        np.testing.assert_array_equal(right, expected)
        assert ops.inv_ex(a)[1].dtype == np.int32


@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("path", ["batched", "per-matrix"])
def test_derivatives_of_solve_ex_with_a_singular_matrix_in_the_batch(standin, path, left):
    """Finite, right values for the nonsingular matrices; the derivatives stay batched."""
    standin.cupy.cublas.set_batched_gesv_limit(PATHS[path])
    rng = np.random.default_rng(5)
    batch, n, k, bad = 50, 4, 2, 17
    a = with_equal_rows(rng, (batch,), n, "float64", [(bad,)])
    b = rng.standard_normal((batch, n, k) if left else (batch, k, n))
    da, db = rng.standard_normal(a.shape), rng.standard_normal(b.shape)
    xbar = rng.standard_normal(b.shape)
    good = np.arange(batch) != bad
    ag, bg, dag, dbg, xbarg = a[good], b[good], da[good], db[good], xbar[good]
    ops = standin.ops
    with np.errstate(all="ignore"):  # NumPy warns on inf - inf where CuPy does not
        (x, info), (dx, _) = ops.jvp("solve_ex", (a, b), (da, db), left=left)
        jvp_calls = routes(standin)
        _, (abar, bbar) = ops.vjp("solve_ex", (a, b), (xbar, None), left=left)
    expected_info = np.zeros(batch, np.int32)
    expected_info[bad] = lapack_info(a[bad])
    assert expected_info[bad] > 0
    np.testing.assert_array_equal(info, expected_info)
    ainv = np.linalg.inv(ag)
    xg = ainv @ bg if left else bg @ ainv
    np.testing.assert_allclose(x[good], xg, rtol=1e-10)
    expected_dx = ainv @ (dbg - dag @ xg) if left else (dbg - xg @ dag) @ ainv
    np.testing.assert_allclose(dx[good], expected_dx, rtol=1e-9)
    ainv_h = np.swapaxes(ainv, -1, -2)
    g = ainv_h @ xbarg if left else xbarg @ ainv_h
    np.testing.assert_allclose(bbar[good], g, rtol=1e-9)
    xg_h = np.swapaxes(xg, -1, -2)
    np.testing.assert_allclose(abar[good], -g @ xg_h if left else -xg_h @ g, rtol=1e-9)
    for out in (x, dx, abar, bbar):
        assert np.isfinite(out[good]).all()
    if path == "batched":  # no per-matrix solve at all, and a bounded number of calls
        assert jvp_calls == {"batched_gesv"} and set(standin.calls) == {"batched_gesv"}
        assert len(standin.calls) <= 3


def test_derivatives_do_not_raise_under_a_users_errstate(standin):
    """A user's ``cupyx.errstate(linalg="raise")`` governs CuPy's calls, not invad's ``_ex``."""
    rng = np.random.default_rng(6)
    a = with_equal_rows(rng, (4,), 3, "float64", [(2,)])
    b = rng.standard_normal((4, 3, 1))
    with standin.cupyx.errstate(linalg="raise"), np.errstate(all="ignore"):
        (_, info), (dx, _) = standin.ops.jvp("solve_ex", (a, b), (a, b))
        standin.ops.vjp("solve_ex", (a, b), (b, None))
    assert info[2] > 0 and np.isfinite(dx[[0, 1, 3]]).all()


# -- layouts -----------------------------------------------------------------------------


def layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """``a`` C-ordered, Fortran-ordered, as a transposed view, and strided inside a larger array."""
    big = np.zeros((*a.shape[:-2], 2 * a.shape[-2], 3 * a.shape[-1]), a.dtype)
    big[..., ::2, ::3] = a
    return {
        "C": np.ascontiguousarray(a),
        "F": np.asfortranarray(a),
        "transposed-view": np.swapaxes(np.swapaxes(a, -1, -2).copy(), -1, -2),
        "strided": big[..., ::2, ::3],
    }


@pytest.mark.parametrize("path", ["one-matrix", "batched", "per-matrix"])
def test_fortran_ordered_and_strided_inputs(standin, path):
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    rng = np.random.default_rng(8)
    batch = () if path == "one-matrix" else (3,)
    singular = [()] if path == "one-matrix" else [(1,)]
    a0 = C.well_conditioned(rng, batch, 4, "complex128")
    s0 = with_equal_rows(rng, batch, 4, "complex128", singular)
    b0 = C.random_array(rng, (*batch, 4, 2), "complex128")
    ops = standin.ops
    for name, a in layouts(a0).items():
        for b in layouts(b0).values():
            np.testing.assert_allclose(ops.solve(a, b), np.linalg.solve(a0, b0), rtol=1e-12)
            xt = ops.solve(a, np.swapaxes(b, -1, -2), left=False)
            np.testing.assert_allclose(
                xt, np.swapaxes(np.linalg.solve(np.swapaxes(a0, -1, -2), b0), -1, -2), rtol=1e-12
            )
        np.testing.assert_allclose(ops.inv(a), np.linalg.inv(a0), rtol=1e-12, err_msg=name)
    expected = lapack_info(s0)
    for name, s in layouts(s0).items():
        np.testing.assert_array_equal(ops.inv_ex(s)[1], expected, err_msg=name)
        np.testing.assert_array_equal(ops.solve_ex(s, b0)[1], expected, err_msg=name)


# -- cuSOLVER's zero-pivot warning -----------------------------------------------------


def test_singular_input_does_not_warn_but_a_users_lu_factor_does(standin):
    a = TRANSPOSE_HIDES_IT
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert int(standin.ops.solve_ex(a, np.ones(3))[1]) == 3
        assert int(standin.ops.inv_ex(a)[1]) == 3
        assert not seen, [str(w.message) for w in seen]
        standin.cupyx.scipy.linalg.lu_factor(a)  # the user's own call
    assert [str(w.message) for w in seen] == ["Diagonal number 3 is exactly zero. Singular matrix."]


def test_threads_neither_warn_nor_disturb_each_others_filters(standin):
    """No ``catch_warnings`` in the backend: the process-wide filter list is never swapped."""
    a = np.stack([np.eye(3), TRANSPOSE_HIDES_IT])
    standin.cupy.cublas.set_batched_gesv_limit(2)  # per-matrix cuSOLVER path: lu_factor
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                info = standin.ops.solve_ex(a, np.ones(3))[1]
                assert info.tolist() == [0, 3]
        except BaseException as exc:
            errors.append(exc)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        mine = warnings.filters[1:]
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert not seen, [str(w.message) for w in seen]
        assert warnings.filters[0][0] == "ignore" and warnings.filters[-len(mine) :] == mine


# -- the LU family: factors, triangular solves, row interchanges, determinants -----------


def batch_of(path: str) -> tuple[int, ...]:
    return () if path == "one-matrix" else (3,)


def cupy_13(standin: Standin) -> cupy_backend.CupyKernels:
    """Kernels over the stand-in as CuPy 13: solve_triangular takes one matrix only."""
    standin.cupy.__version__ = "13.0.0"
    standin.cupyx.batched_trsm = False
    return cupy_backend.CupyKernels(array_api_compat.numpy, standin.cupy, standin.cupyx)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 3, 5), (2, 5, 3), (3, 4, 4), (0, 3, 3)])
def test_lu_factor_is_cupyxs_per_matrix_and_rectangular(standin, shape):
    """LU and 0-based pivots are getrf's of each matrix (cupyx lu_factor); info 0."""
    rng = np.random.default_rng(20)
    a = rng.standard_normal(shape)
    lu, pivots, info = standin.ops.lu_factor_ex(a)
    k = min(shape[-2:])
    assert lu.shape == shape and pivots.shape == (*shape[:-2], k) and pivots.dtype == np.int32
    for i in np.ndindex(*shape[:-2]):
        ref_lu, ref_piv, _ = getrf(a[i])
        np.testing.assert_array_equal(lu[i], ref_lu)
        np.testing.assert_array_equal(pivots[i], ref_piv)
    assert not info.any() and info.shape == shape[:-2]
    assert routes(standin) == ({"lu_factor"} if a.size else set())


def test_lu_solve_takes_cupyxs_own_factor(standin):
    rng = np.random.default_rng(21)
    a = C.well_conditioned(rng, (), 4, "complex128")
    b = C.random_array(rng, (2, 4, 3), "complex128")
    factor = standin.cupyx.scipy.linalg.lu_factor(a)
    for adjoint in (False, True):
        op_a = a.conj().T if adjoint else a
        np.testing.assert_allclose(
            standin.ops.lu_solve(*factor, b, adjoint=adjoint),
            np.linalg.solve(op_a, b),
            rtol=1e-12,
        )
    # lu_solve solves in two triangular halves (trsm), as getrs does, and keeps the half-way
    # solution for its derivatives: cupyx's factor is used as it is, never refactored.
    assert routes(standin) == {"lu_factor", "trsm"}


@pytest.mark.parametrize("cupy_version", ["14", "13"])
@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float64", "complex128")])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize(("t_batch", "b_batch"), [((), (4,)), ((2, 1), (3,)), ((3,), ())])
def test_solve_triangular_kernel(standin, cupy_version, dtypes, trans, t_batch, b_batch):
    """One trsm for one matrix; a stack in one trsmBatched (CuPy 14) or one trsm per matrix
    (CuPy 13); only the named triangle read; b's dtype kept (cupyx casts b to a's)."""
    kernels = standin.kernels if cupy_version == "14" else cupy_13(standin)
    rng = np.random.default_rng(22)
    n = 3
    t = C.well_conditioned(rng, t_batch, n, dtypes[0])
    b = C.random_array(rng, (*b_batch, n, 2), dtypes[1])
    batch = np.broadcast_shapes(t_batch, b_batch)
    for upper in (True, False):
        for unit in (False, True):
            triangle = np.triu(t) if upper else np.tril(t)
            if unit:
                triangle = np.where(np.eye(n, dtype=bool), 1.0, triangle)
            expected = np.linalg.solve(op_of(triangle, trans), b)
            keep = np.triu(np.ones((n, n), bool)) if upper else np.tril(np.ones((n, n), bool))
            if unit:
                keep &= ~np.eye(n, dtype=bool)
            hidden = np.where(keep, t, np.nan).astype(t.dtype)  # NaN where nothing is read
            x = kernels.solve_triangular(hidden, b, upper, trans, unit)
            assert x.dtype == np.result_type(t, b) and x.shape == (*batch, n, 2)
            np.testing.assert_allclose(x, expected, rtol=1e-12)
    calls = standin.calls
    if not t_batch:
        assert calls == ["trsm"] * 4
    elif cupy_version == "14":
        assert calls == ["trsmBatched"] * 4
    else:
        assert calls == ["trsm"] * 4 * math.prod(batch)


def laswp(pivots: np.ndarray, x: np.ndarray, inverse: bool) -> np.ndarray:
    """LAPACK's laswp transcribed: rows j and pivots[j] swapped, j in order (reversed for P x)."""
    batch = np.broadcast_shapes(pivots.shape[:-1], x.shape[:-2])
    pivots = np.broadcast_to(pivots, (*batch, pivots.shape[-1]))
    out = np.array(np.broadcast_to(x, (*batch, *x.shape[-2:])))
    for i in np.ndindex(*batch):
        steps = range(pivots.shape[-1])
        for j in reversed(steps) if inverse else steps:
            p = int(pivots[(*i, j)])
            out[(*i, j)], out[(*i, p)] = out[(*i, p)].copy(), out[(*i, j)].copy()
    return out


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize(
    ("p_batch", "x_batch"), [((), (3,)), ((2, 1), (4,)), ((3,), ()), ((0,), ())]
)
def test_permute_rows_is_laswp(standin, inverse, p_batch, x_batch):
    rng = np.random.default_rng(23)
    m, k = 5, 3  # more rows than interchanges: a tall factor's
    pivots = np.stack([rng.integers(j, m, size=p_batch) for j in range(k)], axis=-1).astype(
        np.int32
    )
    x = rng.standard_normal((*x_batch, m, 2))
    got = standin.kernels.permute_rows(pivots, x, inverse)
    np.testing.assert_array_equal(got, laswp(pivots, x, inverse))
    back = standin.kernels.permute_rows(pivots, got, not inverse)
    np.testing.assert_array_equal(back, np.broadcast_to(x, back.shape))


def cofactors(a: np.ndarray) -> np.ndarray:
    """d det(A) / dA, the cofactor matrix (the adjugate's transpose), from minors."""
    out = np.empty_like(a)
    for index in np.ndindex(*a.shape):
        *batch, i, j = index
        minor = np.delete(np.delete(a[tuple(batch)], i, axis=0), j, axis=1)
        out[index] = (-1) ** (i + j) * np.linalg.det(minor)
    return out


#: The determinants' routes: CuPy's batched slogdet on stacks of small matrices, else the
#: per-matrix LU kept for the derivatives (which then solve with it, getrs).
DET_ROUTES = {
    "one-matrix": ({"lu_factor"}, {"lu_solve"}),
    "batched": ({"slogdet"}, {"batched_gesv"}),
    "per-matrix": ({"lu_factor"}, {"lu_solve"}),
}


@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
@pytest.mark.parametrize("path", ["one-matrix", "batched", "per-matrix"])
def test_determinants_and_their_derivatives(standin, path, dtype):
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    rng = np.random.default_rng(24)
    a = C.well_conditioned(rng, batch_of(path), 4, dtype)
    ops = standin.ops
    forward, derivative = DET_ROUTES[path]
    sign, logabsdet = ops.slogdet(a)
    ref_sign, ref_log = np.linalg.slogdet(a)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(sign, ref_sign, rtol=rtol)
    np.testing.assert_allclose(logabsdet, ref_log, rtol=rtol)
    assert sign.dtype == np.dtype(dtype) and logabsdet.dtype == np.dtype(a.real.dtype)
    np.testing.assert_allclose(ops.det(a), np.linalg.det(a), rtol=rtol)
    assert routes(standin) == forward
    # d logabsdet = Re tr(A^-1 dA): the cotangent of logabsdet is A^-H
    ones = np.ones(a.shape[:-2], dtype=a.real.dtype)
    _, (abar,) = ops.vjp("slogdet", (a,), (None, ones))
    np.testing.assert_allclose(abar, np.linalg.inv(a).conj().swapaxes(-1, -2), rtol=100 * rtol)
    assert routes(standin) == forward | derivative


@pytest.mark.parametrize("path", ["one-matrix", "batched", "per-matrix"])
def test_determinants_of_singular_matrices(standin, path):
    """det 0 and slogdet (0, -inf) exactly; the derivative of det is the adjugate (finite),
    rank n-1 and rank n-2; the kernels' info is getrf's of A."""
    standin.cupy.cublas.set_batched_gesv_limit(PATHS.get(path, 256))
    rng = np.random.default_rng(25)
    batch = batch_of(path)
    singular = [()] if path == "one-matrix" else [(0,), (2,)]
    a = with_equal_rows(rng, batch, 4, "float64", singular)
    if path != "one-matrix":
        a[2, 1] = 0.0  # and a zero row: rank n-2
    ops = standin.ops
    with np.errstate(divide="ignore"):  # NumPy warns on log(0), where CuPy does not
        det = ops.det(a)
        sign, logabsdet = ops.slogdet(a)
    zero = np.zeros(batch, bool)
    for i in singular:
        zero[i] = True
    assert (det[zero] == 0).all() and (sign[zero] == 0).all()
    assert (logabsdet[zero] == -np.inf).all()
    np.testing.assert_allclose(det[~zero], np.linalg.det(a[~zero]), rtol=1e-12)
    for kernel in (standin.kernels.det, standin.kernels.slogdet):
        with np.errstate(divide="ignore"):
            info = kernel(a)[-1]
        np.testing.assert_array_equal(info, lapack_info(a))
    _, (abar,) = ops.vjp("det", (a,), np.ones(batch))
    np.testing.assert_allclose(abar, cofactors(a), rtol=1e-10, atol=1e-12)
    if path != "one-matrix":
        assert not abar[2].any()  # rank n-2: the adjugate is zero
    da = rng.standard_normal(a.shape)
    _, ddet = ops.jvp("det", (a,), (da,))
    np.testing.assert_allclose(
        ddet, np.sum(cofactors(a) * da, axis=(-2, -1)), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("op", ["lu_factor", "lu_solve", "solve_triangular", "cholesky_solve"])
def test_conformance_checks_on_cupy_13(standin, op):
    """The kit's checks with CuPy 13's solve_triangular (one matrix per call) in every rule."""
    kernels = cupy_13(standin)
    ops = Ops(standin.ops.backend, standin.ops.device)
    assert not kernels._batched_trsm and not ops.la.solve_triangular.__self__._batched_trsm
    h = StandinHarness(ops)
    failed = []
    for shape in C.SHAPES[op]:
        for check in (checks.check_forward, checks.check_jvp, checks.check_vjp):
            result = check(h, op, shape, "float64", np.random.default_rng(26))
            if not result.passed:
                failed.append(result)
    assert not failed, failed
    assert "trsmBatched" not in standin.calls


# -- the Cholesky family: potrf, potrfBatched, trsm ---------------------------------------


def junk_outside(x: np.ndarray, upper: bool) -> np.ndarray:
    """``x`` with NaN in the strict triangle that an op reading the lower triangle (the
    upper one, if ``upper``) must not read."""
    n = x.shape[-1]
    unread = np.tril(np.ones((n, n), bool), -1) if upper else np.triu(np.ones((n, n), bool), 1)
    return np.where(unread, np.nan, x).astype(x.dtype)


def potrf_route(batch: tuple[int, ...]) -> str:
    return "potrfBatched" if batch else "potrf"


def trsm_route(batch: tuple[int, ...]) -> str:
    return "trsmBatched" if batch else "trsm"


@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("batch", [(), (3,), (2, 1)], ids=["one-matrix", "stack", "stack-2d"])
def test_cholesky_is_cupys_potrf_reading_one_triangle(standin, batch, upper, dtype):
    """One ``cupy.linalg.cholesky`` call (potrf, or potrfBatched for a stack) whatever the
    layout, NaN in the other triangle never read; the derivative solves with the kept
    factor (trsm) and equals the NumPy backend's."""
    rng = np.random.default_rng(30)
    a = C.positive_definite(rng, batch, 4, dtype)
    lower = np.linalg.cholesky(a)
    expected = np.conj(np.swapaxes(lower, -1, -2)) if upper else lower
    rtol = 1e-5 if dtype == "float32" else 1e-12
    ops = standin.ops
    for name, m in layouts(junk_outside(a, upper)).items():
        c, info = ops.cholesky_ex(m, upper=upper)
        assert c.dtype == np.dtype(dtype) and info.dtype == np.int32 and info.shape == batch
        np.testing.assert_allclose(c, expected, rtol=rtol, atol=rtol, err_msg=name)
        assert not info.any()
        assert standin.calls == [potrf_route(batch)], name
        standin.calls.clear()
    cbar = C.random_array(rng, a.shape, dtype)
    _, (abar,) = ops.vjp("cholesky", (junk_outside(a, upper),), cbar, upper=upper)
    assert routes(standin) == {potrf_route(batch), trsm_route(batch)}
    _, (expected_abar,) = invad.install("numpy").vjp("cholesky", (a,), cbar, upper=upper)
    np.testing.assert_allclose(abar, expected_abar, rtol=100 * rtol, atol=100 * rtol)


def potrf_info(a: np.ndarray) -> np.ndarray:
    """LAPACK ``potrf``'s info of each matrix (its lower triangle)."""
    info = np.zeros(a.shape[:-2], np.int32)
    for i in np.ndindex(*a.shape[:-2]):
        (potrf,) = get_lapack_funcs(("potrf",), (a[i],))
        info[i] = potrf(a[i], lower=1)[1]
    return info


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_info_is_the_order_of_the_failing_minor(standin, upper):
    """Not positive definite at order k: info k, LAPACK potrf's; a NaN pivot counts, which
    the fake's potrf (OpenBLAS) does not report: the diagonal check finds it, without a
    second call. The failing matrices' factors are NaN, the others exact."""
    rng = np.random.default_rng(31)
    a = C.positive_definite(rng, (5,), 4, "float64")
    a[1, 2, 2] = -3.0  # the leading minor of order 3
    a[3, 0, 0] = 0.0  # order 1
    a[4, 1, 3] = a[4, 3, 1] = np.nan  # read from either triangle: the pivot of order 4
    lapack = potrf_info(a[:4])
    np.testing.assert_array_equal(lapack, [0, 3, 0, 1])
    ops = standin.ops
    for batch in ([0, 1, 2, 3, 4], [2, 4]):
        stack = a[batch]
        standin.calls.clear()
        c, info = ops.cholesky_ex(stack, upper=upper)
        # CuPy's check raises on a minor that is not positive definite (a second call then
        # computes the values); a NaN pivot alone, which it misses, costs no second call.
        assert standin.calls == ["potrfBatched"] * (2 if 1 in batch else 1)
        expected = np.array([[*lapack, 4][i] for i in batch], np.int32)
        np.testing.assert_array_equal(info, expected)
        good = expected == 0
        assert np.isnan(c[~good]).all()
        reference = np.linalg.cholesky(stack[good])
        reference = np.conj(np.swapaxes(reference, -1, -2)) if upper else reference
        np.testing.assert_allclose(c[good], reference, rtol=1e-12)
        x, info_pos = ops.solve_ex(stack, np.ones(4), assume_a="pos")
        np.testing.assert_array_equal(info_pos, expected)
        np.testing.assert_allclose(x[good], np.linalg.solve(stack[good], np.ones(4)), rtol=1e-12)


def test_cholesky_info_on_one_matrix_and_the_errors(standin):
    """One matrix (potrf): its info, and the errors of cholesky and solve(assume_a="pos"),
    which name the first failing matrix of a stack and the order of its minor."""
    ops = standin.ops
    a = np.diag([2.0, 1.0, -1.0])
    c, info = ops.cholesky_ex(a)
    assert int(info) == 3 and np.isnan(c).all()
    assert routes(standin) == {"potrf"}
    nan = np.eye(3)
    nan[1, 1] = np.nan
    assert int(ops.cholesky_ex(nan)[1]) == 2
    with pytest.raises(np.linalg.LinAlgError, match=r"invad\.cholesky: matrix not positive"):
        ops.cholesky(a)
    stack = np.stack([np.eye(3), np.eye(3), a, np.diag([1.0, -1.0, 1.0])])
    pattern = r"invad\.{op}: .* at batch index \(2,\) \(input shape \(4, 3, 3\)\): .* order 3"
    with pytest.raises(np.linalg.LinAlgError, match=pattern.format(op="cholesky")):
        ops.cholesky(stack, upper=True)
    with pytest.raises(np.linalg.LinAlgError, match=pattern.format(op="solve")):
        ops.solve(stack, np.ones((3, 1)), assume_a="pos")
    # a user's errstate(linalg="raise") governs CuPy's calls, not invad's _ex ops
    with standin.cupyx.errstate(linalg="raise"):
        np.testing.assert_array_equal(ops.cholesky_ex(stack)[1], [0, 0, 3, 2])


@pytest.mark.parametrize("cupy_version", ["14", "13"])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize(("c_batch", "b_batch"), [((), (4,)), ((2, 1), (3,)), ((3,), ())])
def test_cholesky_solve_is_two_trsm(standin, cupy_version, upper, c_batch, b_batch):
    """Two triangular solves with the factor, reading its triangle only: two trsm for one
    matrix (every right-hand side at once), two trsmBatched for a stack on CuPy 14 (batch
    dimensions broadcast), one trsm per matrix and solve on CuPy 13."""
    kernels = standin.kernels if cupy_version == "14" else cupy_13(standin)
    rng = np.random.default_rng(32)
    a = C.positive_definite(rng, c_batch, 3, "complex128")
    lower = np.linalg.cholesky(a)
    c = np.conj(np.swapaxes(lower, -1, -2)) if upper else lower
    b = C.random_array(rng, (*b_batch, 3, 2), "complex128")
    x = kernels.cholesky_solve(CholeskyFactor(None, junk_outside(c, upper), upper), b)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-12)
    batch = np.broadcast_shapes(c_batch, b_batch)
    if not c_batch:
        assert standin.calls == ["trsm"] * 2
    elif cupy_version == "14":
        assert standin.calls == ["trsmBatched"] * 2
    else:
        assert standin.calls == ["trsm"] * 2 * math.prod(batch)


@pytest.mark.parametrize("left", [True, False])
def test_positive_definite_solve_factors_once(standin, left):
    """solve(assume_a="pos") and its derivatives: one potrfBatched, then trsmBatched only
    (no LU, no second factorization), against the general solve's values and derivatives
    (projected to Hermitian)."""
    rng = np.random.default_rng(33)
    a = C.positive_definite(rng, (4,), 5, "float64")
    b = rng.standard_normal((4, 5, 2) if left else (4, 2, 5))
    da = C.hermitian(rng.standard_normal(a.shape))
    db, xbar = rng.standard_normal(b.shape), rng.standard_normal(b.shape)
    ops = standin.ops
    x, dx = ops.jvp("solve", (a, b), (da, db), left=left, assume_a="pos")
    _, (abar, bbar) = ops.vjp("solve", (a, b), xbar, left=left, assume_a="pos")
    assert set(standin.calls) == {"potrfBatched", "trsmBatched"}
    assert standin.calls.count("potrfBatched") == 2  # one per call: jvp, vjp
    numpy_ops = invad.install("numpy")
    ref_x, ref_dx = numpy_ops.jvp("solve", (a, b), (da, db), left=left)
    _, (ref_abar, ref_bbar) = numpy_ops.vjp("solve", (a, b), xbar, left=left)
    ref_abar = (ref_abar + np.swapaxes(ref_abar, -1, -2)) / 2
    for got, ref in ((x, ref_x), (dx, ref_dx), (abar, ref_abar), (bbar, ref_bbar)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


# -- the conformance checks, on both paths -----------------------------------------------


@pytest.mark.parametrize("path", ["batched", "per-matrix"])
@pytest.mark.parametrize("op", list(RULES))
def test_conformance_checks_on_the_standin(standin, op, path):
    """The kit's forward, JVP, VJP and error checks, every dtype and shape family."""
    standin.cupy.cublas.set_batched_gesv_limit(PATHS[path])
    h = StandinHarness(standin.ops)
    failed = []
    for dtype in C.DTYPES:
        for shape in C.SHAPES[op]:
            for check in (checks.check_forward, checks.check_jvp, checks.check_vjp):
                result = check(h, op, shape, dtype, np.random.default_rng(9))
                if not result.passed:
                    failed.append(result)
    with np.errstate(all="ignore"):
        failed += [r for r in checks.check_errors(h, op) if not r.passed]
    assert not failed, failed
