"""Singular input warns nothing: invad's kernels divide by zero pivots on purpose.

Runs on every backend's session (``EVERY_BACKEND`` in the noxfile); the
NumPy-based backends without kernels of their own (array-api-strict) run the
portable kernels, where NumPy would print "divide by zero" warnings.
"""

from __future__ import annotations

import warnings

import array_api_compat.numpy
import numpy as np
import pytest

from invad.backend import PortableKernels


def singular_batch() -> np.ndarray:
    return np.stack([np.eye(3), np.diag([1.0, 0.0, 1.0]), 2 * np.eye(3)])  # zero U[1, 1]


@pytest.fixture
def no_runtime_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@pytest.mark.usefixtures("no_runtime_warnings")
def test_singular_input_warns_nothing_on_the_backend(harness):
    a = harness.put(singular_batch())
    b = harness.put(np.ones((3, 3, 2)))
    ops = harness.ops
    info = harness.get(ops.inv_ex(a)[1])
    assert info.tolist() == [0, 2, 0]
    assert harness.get(ops.solve_ex(a, b)[1]).tolist() == [0, 2, 0]
    if harness.backend.raises_on_singular:
        for call in (lambda: ops.inv(a), lambda: ops.solve(a, b)):
            with pytest.raises(harness.backend.linalg_error, match="singular"):
                harness.get(call())  # a lazy backend (Dask) raises when computing
    ops.jvp("inv_ex", (a,), (a,))
    ops.vjp("solve_ex", (a, b), (b, None))


@pytest.mark.usefixtures("no_runtime_warnings")
def test_portable_kernels_are_quiet_and_leave_numpys_settings_alone():
    kernels = PortableKernels(array_api_compat.numpy)
    before = np.geterr()
    factor, info = kernels.lu_factor(singular_batch())
    assert info.tolist() == [0, 2, 0]
    x = kernels.lu_solve(factor, np.ones((3, 3, 1)), "N")
    assert np.isfinite(x[0]).all() and not np.isfinite(x[1]).all()
    _, info = kernels.inv(singular_batch())
    assert info.tolist() == [0, 2, 0]
    assert np.geterr() == before
    with pytest.raises(RuntimeWarning):  # the same division outside invad does warn
        np.ones(1) / np.zeros(1)


def test_portable_kernels_offer_only_what_rules_define():
    kernels = PortableKernels(array_api_compat.numpy)
    assert getattr(kernels, "solve", None) is None  # Linalg composes it from the two above
    assert getattr(kernels, "__deepcopy__", None) is None
