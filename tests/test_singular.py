"""Singular input on every backend: ``info`` is LAPACK getrf's for ``A`` itself, and the
raising ops raise exactly when it is nonzero.

An exact zero pivot is a fact about one factorization of one matrix: ``A`` and
``A^T`` can disagree (two equal rows of ``A`` give a zero pivot, two equal
columns usually do not), and so can two LAPACK builds, which round
differently (OpenBLAS in SciPy and NumPy, MKL in torch). The reference is
therefore the backend's own getrf, computed here independently of invad:

- NumPy, JAX and the autograd plugin: ``scipy.linalg.lapack.?getrf`` of ``A``
  (jaxlib's CPU kernels are SciPy's LAPACK);
- torch: ``torch.linalg.lu_factor_ex`` of ``A``, with the same batch layout
  (MKL's batched and single-matrix getrf round differently);
- the portable kernels (array-api-strict): LAPACK's unblocked ``getf2``,
  transcribed below one column at a time.

Zero rows and columns make a zero pivot in every build: there SciPy's getrf
is the reference on every backend.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.linalg.lapack

from invad.testing import Harness

KINDS = (
    "random",
    "equal-rows",
    "equal-columns",
    "zero-row",
    "zero-column",
    "scaled-column",
    "scaled-row",
    "rank-deficient-product",
)
#: Kinds whose zero pivot is structural: every getrf build reports the same info.
STRUCTURAL = ("zero-row", "zero-column")
DTYPES = ("float64", "complex128", "float32")


def structured_batch(n: int, dtype: str) -> np.ndarray:
    """One matrix of each kind in KINDS, stacked: shape (len(KINDS), n, n).

    Entries are multiples of 0.1 in [-1, 1], as users' hand-written matrices
    are: exact cancellations, the edge this test is about, are common there.
    """
    rng = np.random.default_rng(zlib.crc32(f"{n}-{dtype}".encode()))
    complex_ = dtype.startswith("complex")

    def entries(*shape: int) -> np.ndarray:
        x = np.round(rng.uniform(-1, 1, shape), 1)
        return x + 1j * np.round(rng.uniform(-1, 1, shape), 1) if complex_ else x

    out = []
    for kind in KINDS:
        a = entries(n, n)
        i, j = (int(k) for k in rng.choice(n, 2, replace=False)) if n > 1 else (0, 0)
        if kind == "equal-rows":
            a[j] = a[i]
        elif kind == "equal-columns":
            a[:, j] = a[:, i]
        elif kind == "zero-row":
            a[i] = 0
        elif kind == "zero-column":
            a[:, i] = 0
        elif kind == "scaled-column":
            a[:, j] = 2 * a[:, i]
        elif kind == "scaled-row":
            a[j] = 3 * a[i]
        elif kind == "rank-deficient-product" and n > 1:
            r = int(rng.integers(1, n))
            a = entries(n, r) @ entries(r, n)
        out.append(a)
    return np.stack(out).astype(dtype)


# -- references -------------------------------------------------------------------


def scipy_getrf_info(a: np.ndarray) -> np.ndarray:
    """``info`` of SciPy's LAPACK getrf, matrix by matrix (0 or k > 0)."""
    (getrf,) = scipy.linalg.lapack.get_lapack_funcs(("getrf",), dtype=a.dtype)
    info = np.zeros(a.shape[:-2], dtype=np.int64)
    for i in np.ndindex(*a.shape[:-2]):
        info[i] = max(int(getrf(a[i])[2]), 0)
    return info


def getf2_info(a: np.ndarray) -> int:
    """LAPACK's unblocked ``?getf2``, transcribed column by column: its ``info`` for ``a``."""
    a = np.array(a, copy=True)
    n = a.shape[-1]
    tiny = np.finfo(a.dtype).smallest_normal
    info = 0
    for j in range(n):
        col = a[j:, j]
        magnitude = np.abs(col.real) + np.abs(col.imag) if np.iscomplexobj(a) else np.abs(col)
        p = j + int(np.argmax(magnitude))  # i?amax: the first of the largest
        if a[p, j] != 0:
            a[[j, p]] = a[[p, j]]
            if abs(a[j, j]) >= tiny:
                a[j + 1 :, j] = a[j + 1 :, j] * (1 / a[j, j])
            else:
                a[j + 1 :, j] = a[j + 1 :, j] / a[j, j]
        elif info == 0:
            info = j + 1
        a[j + 1 :, j + 1 :] = a[j + 1 :, j + 1 :] - np.outer(a[j + 1 :, j], a[j, j + 1 :])
    return info


def reference_info(harness: Harness, a: np.ndarray) -> np.ndarray:
    """The backend's own getrf ``info`` for ``a`` (a matrix or a batch), computed without invad."""
    name = harness.backend.name
    if name == "torch":
        import torch

        return torch.linalg.lu_factor_ex(torch.from_numpy(a))[2].numpy().astype(np.int64)
    if name in ("numpy", "jax", "autograd", "cupy"):
        return scipy_getrf_info(a)
    info = np.zeros(a.shape[:-2], dtype=np.int64)  # the portable kernels: getf2
    for i in np.ndindex(*a.shape[:-2]):
        info[i] = getf2_info(a[i])
    return info


def n_values(harness: Harness) -> list[int]:
    """Every n from 1 to 40 where a LAPACK call per size is cheap. JAX compiles each op once
    per shape and the portable kernels take a Python step per column; their info comes
    from one shape-generic kernel, so a spread of sizes stands for all of them there."""
    if harness.backend.name in ("numpy", "torch", "autograd", "cupy"):
        return list(range(1, 41))
    if harness.backend.name == "jax":  # six compilations per size and dtype
        return [1, 3, 8, 25]
    return [1, 2, 3, 4, 5, 7, 8, 13, 20, 40]


def calls(harness: Harness, a: np.ndarray) -> Iterator[tuple[str, dict, tuple]]:
    """Every way of asking for ``info`` of ``a``: inverse, left and right solves, vector b."""
    n = a.shape[-1]
    batch = a.shape[:-2]
    ones = np.ones((*batch, n, 2), dtype=a.dtype)
    yield "inv_ex", {}, (a,)
    yield "solve_ex", {}, (a, ones)
    yield "solve_ex", {"left": False}, (a, np.swapaxes(ones, -1, -2))
    yield "solve_ex", {}, (a, np.ones(n, dtype=a.dtype))


# -- the tests ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_the_reported_matrices(harness: Harness):
    """Two equal rows: getrf(A) says 3 (getrf(A^T) says 0). Column 1 = 2 x column 0 in a
    25x25 matrix: getrf(A) says 0 (getrf(A^T) says 25)."""
    ops = harness.ops
    equal_rows = np.array([[-0.7, 0.9, -0.1], [-0.7, 0.9, -0.1], [0.2, 1.1, -0.8]])
    scaled = np.random.default_rng(0).standard_normal((25, 25))
    scaled[:, 1] = 2 * scaled[:, 0]
    for a in (equal_rows, scaled):
        expected = int(reference_info(harness, a))
        assert expected == int(scipy_getrf_info(a)) or harness.backend.name == "torch"
        for op, params, args in calls(harness, a):
            _, info = getattr(ops, op)(*(harness.put(x) for x in args), **params)
            assert int(harness.get(info)) == expected, (op, params)
        singular = expected != 0
        for op, args in (("inv", (a,)), ("solve", (a, np.array([1.0] * len(a))))):
            if not harness.backend.raises_on_singular:
                continue
            if singular:
                with pytest.raises(harness.backend.linalg_error, match=f"invad.{op}: singular"):
                    getattr(ops, op)(*(harness.put(x) for x in args))
            else:
                getattr(ops, op)(*(harness.put(x) for x in args))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # singular solves divide by zero
@pytest.mark.parametrize("dtype", DTYPES)
def test_info_is_getrf_of_a_itself(harness: Harness, dtype: str):
    """A seeded sweep of structured matrices, n = 1 ... 40, one batch per n (every kind)
    and each matrix alone: every op's info equals the reference, the raising ops raise
    exactly when some info is nonzero and name the first such batch index, and the
    values of singular batch elements are not finite."""
    ops = harness.ops
    checked = singular_seen = 0
    sizes = n_values(harness)
    for n in sizes:
        batch = structured_batch(n, dtype)
        expected = reference_info(harness, batch)
        structural = [KINDS.index(k) for k in STRUCTURAL]
        np.testing.assert_array_equal(expected[structural], scipy_getrf_info(batch[structural]))
        for op, params, args in calls(harness, batch):
            value, info = getattr(ops, op)(*(harness.put(x) for x in args), **params)
            info, value = harness.get(info), harness.get(value)
            np.testing.assert_array_equal(info, expected, err_msg=f"{op} {params} n={n}")
            assert info.shape == batch.shape[:-2]
            for k in np.flatnonzero(expected):
                assert not np.isfinite(value[k]).all(), f"{op} {params} n={n}: finite at {k}"
            checked += 1
        singular_seen += int(np.count_nonzero(expected))
        if harness.backend.raises_on_singular:
            first = int(np.flatnonzero(expected)[0]) if expected.any() else None
            for op, args in (("inv", (batch,)), ("solve", (batch, np.ones(n, dtype=dtype)))):
                put = [harness.put(x) for x in args]
                if first is None:
                    getattr(ops, op)(*put)
                    continue
                with pytest.raises(harness.backend.linalg_error, match=rf"index \({first},\)"):
                    getattr(ops, op)(*put)
        for k in range(len(KINDS)):  # each matrix alone: the unbatched paths
            alone = batch[k]
            expected_alone = int(reference_info(harness, alone))
            for op, params, args in list(calls(harness, alone))[:2]:
                _, info = getattr(ops, op)(*(harness.put(x) for x in args), **params)
                assert int(harness.get(info)) == expected_alone, (op, params, n, KINDS[k])
    # Every size had its zero row and zero column, and more: the sweep saw singular matrices.
    assert checked == 4 * len(sizes) and singular_seen > 2 * len(sizes)
