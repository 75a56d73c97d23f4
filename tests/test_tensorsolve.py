"""tensorsolve accepts exactly what numpy.linalg.tensorsolve accepts, and agrees with it.

NumPy's rule: after ``axes`` move to the end, ``x`` has the trailing
``a.ndim - b.ndim`` axes of ``a``, ``a.size == prod(x.shape) ** 2`` and
``b.size == prod(x.shape)``; the leading axes of ``a`` need not equal
``b.shape``. A seeded sweep builds shapes that satisfy it (in every layout
and order of ``axes``) and shapes one step away from it, and asks both.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from invad.testing import Harness
from invad.testing.cases import well_conditioned


def factorizations(rng: np.random.Generator, p: int, ndim: int) -> tuple[int, ...]:
    """A random shape with ``ndim`` axes and ``p`` elements."""
    shape = [1] * ndim
    if ndim == 0:
        return ()
    for prime in (f for f in range(2, p + 1) for _ in range(20) if p % f == 0):
        while p % prime == 0:
            shape[int(rng.integers(ndim))] *= prime
            p //= prime
    return tuple(shape)


def layout(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], tuple | None]:
    """``a``'s shape, ``b``'s shape and ``axes`` that NumPy accepts."""
    x_shape = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(1, 3))))
    p = math.prod(x_shape)
    b_shape = factorizations(rng, p, int(rng.integers(0, 3)))
    lead = factorizations(rng, p, len(b_shape))  # need not be b_shape
    moved = lead + x_shape
    ndim = len(moved)
    axes = None
    if rng.random() < 0.6:
        axes = tuple(int(k) for k in rng.permutation(ndim)[: int(rng.integers(1, ndim + 1))])
    perm = list(range(ndim))
    for k in axes or ():
        perm.remove(k)
        perm.append(k)
    a_shape = [0] * ndim
    for i, k in enumerate(perm):
        a_shape[k] = moved[i]
    return tuple(a_shape), b_shape, axes


def one_step_away(rng: np.random.Generator, a_shape, b_shape, axes):
    """The same layout with one thing changed: an axis longer, ``axes`` negative or repeated
    (NumPy takes a repeated axis: its last mention decides where it goes)."""
    kind = int(rng.integers(4))
    if kind == 0:
        i = int(rng.integers(len(a_shape)))
        return (*a_shape[:i], a_shape[i] + 1, *a_shape[i + 1 :]), b_shape, axes
    if kind == 1 and b_shape:
        i = int(rng.integers(len(b_shape)))
        return a_shape, (*b_shape[:i], b_shape[i] + 1, *b_shape[i + 1 :]), axes
    if kind == 2:
        return a_shape, b_shape, (-1,)
    return a_shape, b_shape, (0, 0)


def cases(count: int) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple | None]]:
    rng = np.random.default_rng(2024)
    out = []
    for i in range(count):
        case = layout(rng)
        out.append(case if i % 3 else one_step_away(rng, *case))
    out.append(((2, 3, 6), (2, 3), (0, 2)))  # the example: x has shape (6,)
    return out


def well_conditioned_tensor(rng: np.random.Generator, a_shape, b_ndim: int, axes) -> np.ndarray:
    """A random ``a``; one whose P x P matrix (NumPy's reshape) is well conditioned where the
    layout fits."""
    try:
        perm = list(range(len(a_shape)))
        for k in axes or ():
            perm.remove(k)
            perm.append(k)
    except ValueError:  # negative or repeated axes: NumPy refuses them anyway
        return rng.standard_normal(a_shape)
    moved = tuple(a_shape[i] for i in perm)
    p = math.prod(moved[-(len(a_shape) - b_ndim) :])
    if math.prod(a_shape) != p * p:
        return rng.standard_normal(a_shape)
    m = well_conditioned(rng, (), p, "float64").reshape(moved)
    return np.ascontiguousarray(np.transpose(m, np.argsort(perm)))


def numpy_answer(a: np.ndarray, b: np.ndarray, axes) -> np.ndarray | None:
    try:
        return np.linalg.tensorsolve(a, b, axes=axes)
    except (ValueError, np.linalg.LinAlgError):
        return None


def test_the_reported_example(harness: Harness):
    rng = np.random.default_rng(1)
    a = well_conditioned(rng, (), 6, "float64").reshape(2, 3, 6)  # moved: (2, 6, 3)
    a = np.ascontiguousarray(a)
    b = rng.standard_normal((2, 3))
    x = harness.get(harness.ops.tensorsolve(harness.put(a), harness.put(b), axes=(0, 2)))
    expected = np.linalg.tensorsolve(a, b, axes=(0, 2))
    assert x.shape == (6,) == expected.shape
    np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-10)


def test_accepts_exactly_what_numpy_accepts(harness: Harness):
    rng = np.random.default_rng(5)
    accepted = rejected = 0
    for a_shape, b_shape, axes in cases(60):
        a = well_conditioned_tensor(rng, a_shape, len(b_shape), axes)
        b = rng.standard_normal(b_shape)
        expected = numpy_answer(a, b, axes)
        call = harness.ops.tensorsolve
        where = f"a {a_shape}, b {b_shape}, axes={axes}"
        if expected is None:
            with pytest.raises(ValueError, match=r"invad\.tensorsolve"):
                call(harness.put(a), harness.put(b), axes=axes)
            rejected += 1
            continue
        x = harness.get(call(harness.put(a), harness.put(b), axes=axes))
        assert x.shape == expected.shape, where
        np.testing.assert_allclose(x, expected, rtol=1e-8, atol=1e-8, err_msg=where)
        accepted += 1
    assert accepted >= 30 and rejected >= 10
