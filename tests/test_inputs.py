"""What an op does with inputs that are not its backend's arrays.

- ``ops.*`` of a backend takes its own arrays, and converts what its
  framework's linalg converts (NumPy: lists and scalars; JAX: NumPy arrays);
  another framework's array, or a list where the framework refuses one, is a
  ``TypeError`` naming the type expected, never an AttributeError or a
  message about dtypes.
- Top-level ``invad.solve(...)`` dispatches to the first non-NumPy array's
  backend and converts NumPy operands to it.
"""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest

import invad
from invad.testing import Harness

#: Whether each backend's ops take NumPy arrays and lists as their framework's linalg does.
TAKES_NUMPY = {"numpy": True, "jax": True, "autograd": True, "dask": True}
TAKES_LISTS = {"numpy": True, "autograd": True}


def foreign_arrays(harness: Harness) -> list:
    """Arrays of frameworks other than the backend's own, that it does not convert."""
    out = []
    if not TAKES_NUMPY.get(harness.backend.name, False):
        out.append(np.eye(2))
    if harness.backend.name != "array-api-strict":
        out.append(array_api_strict.eye(2, dtype=array_api_strict.float64))
    return out


def expected_type_message(harness: Harness, name: str, x) -> str:
    kind = "list" if isinstance(x, list) else f"{type(x).__module__}.{type(x).__qualname__}"
    return rf"invad\.solve: `{name}` is a {kind}; the '{harness.backend.name}' backend takes"


def test_another_frameworks_array_is_a_type_error_naming_the_expected_type(harness: Harness):
    own = harness.put(np.eye(2))
    for x in foreign_arrays(harness):
        with pytest.raises(TypeError, match=expected_type_message(harness, "a", x)):
            harness.ops.solve(x, own)
        with pytest.raises(TypeError, match=expected_type_message(harness, "b", x)):
            harness.ops.solve(own, x)
        with pytest.raises(TypeError, match=r"invad\.inv: `a` is a "):
            harness.ops.inv(x)


def test_a_tangent_or_cotangent_of_another_framework_is_a_type_error_naming_it(harness: Harness):
    """``ops.jvp``'s tangents and ``ops.vjp``'s cotangents are converted as the inputs are, and
    refused as they are: a ``TypeError`` that says which tangent, not an AttributeError from
    inside a rule."""
    a = harness.put(np.eye(2) * 2)
    for x in foreign_arrays(harness):
        kind = f"{type(x).__module__}.{type(x).__qualname__}"
        with pytest.raises(TypeError, match=rf"invad\.inv: the tangent of `a` is a {kind}"):
            harness.ops.jvp("inv", (a,), (x,))
        with pytest.raises(TypeError, match=rf"invad\.inv: the cotangent of `inverse` is a {kind}"):
            harness.ops.vjp("inv", (a,), x)
        with pytest.raises(TypeError, match=r"invad\.slogdet: the cotangent of `logabsdet` is a"):
            harness.ops.vjp("slogdet", (a,), (None, x))
    if not TAKES_NUMPY.get(harness.backend.name, False):
        return
    # Where the framework converts NumPy arrays, a NumPy tangent is as good as its own.
    # inv's JVP is -A^-1 t A^-1 and its VJP -A^-H t A^-H: both -t / 4 at A = 2 I.
    t = np.array([[1.0, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(harness.get(harness.ops.jvp("inv", (a,), (t,))[1]), -t / 4)
    np.testing.assert_allclose(harness.get(harness.ops.vjp("inv", (a,), t)[1][0]), -t / 4)


def test_lists_follow_the_frameworks_own_linalg(harness: Harness):
    a, b = [[2.0, 1.0], [1.0, 3.0]], [1.0, 2.0]
    if TAKES_LISTS.get(harness.backend.name, False):
        np.testing.assert_allclose(harness.get(harness.ops.solve(a, b)), np.linalg.solve(a, b))
        np.testing.assert_allclose(harness.get(harness.ops.inv(a)), np.linalg.inv(a))
        return
    with pytest.raises(TypeError, match=expected_type_message(harness, "a", a)):
        harness.ops.solve(a, harness.put(np.array(b)))
    with pytest.raises(TypeError, match=r"invad\.inv: `a` is a list"):
        harness.ops.inv(a)


def test_top_level_dispatch_converts_numpy_operands(harness: Harness):
    a, b = np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0])
    expected = np.linalg.solve(a, b)
    for args in ((a, harness.put(b)), (harness.put(a), b), (harness.put(a), harness.put(b))):
        x = invad.solve(*args)
        # autograd's arrays are NumPy arrays outside a trace: NumPy's ops take them there.
        assert harness.backend.owns(x) or (
            type(x) is np.ndarray and harness.backend.name in ("numpy", "autograd")
        )
        np.testing.assert_allclose(harness.get(x), expected, rtol=1e-6)


def test_top_level_dispatch_of_lists_goes_to_numpy():
    np.testing.assert_allclose(invad.solve([[2.0, 0.0], [0.0, 4.0]], [1.0, 1.0]), [0.5, 0.25])
    with pytest.raises(TypeError, match=r"no installed backend owns arrays of type builtins\.set"):
        invad.inv({1.0})


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_a_python_number_is_the_cotangent_of_a_0d_output(harness: Harness, dtype: str):
    """``ops.vjp`` takes a Python number for a 0-d output (det, slogdet's logabsdet) as an
    array of that output's dtype: the same cotangents as the array, in the input's dtype."""
    if harness.unsupported().get(dtype):
        pytest.skip(harness.unsupported()[dtype])
    rng = np.random.default_rng(5)
    a_np = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    if dtype == "complex128":
        a_np = a_np + 1j * rng.standard_normal((3, 3))
    a = harness.put(a_np)
    ops = harness.ops
    for number in (2, 1.5, 0.5j) if dtype == "complex128" else (2, 1.5):
        (got,) = ops.vjp("det", (a,), number)[1]
        (expected,) = ops.vjp("det", (a,), harness.put(np.asarray(number, dtype=dtype)))[1]
        np.testing.assert_allclose(harness.get(got), harness.get(expected), rtol=1e-13)
        assert str(harness.get(got).dtype) == dtype
        # d det = tr(adj(A) dA): in the adjoint convention Abar = number conj(adj(A))^T
        adjugate = np.linalg.det(a_np) * np.linalg.inv(a_np)
        np.testing.assert_allclose(
            harness.get(got), number * adjugate.conj().T, rtol=1e-10, atol=1e-12
        )
    (got,) = ops.vjp("slogdet", (a,), (None, 1.0))[1]
    np.testing.assert_allclose(harness.get(got), np.linalg.inv(a_np).conj().T, rtol=1e-10)


def test_a_tangent_or_cotangent_takes_its_arrays_dtype_but_never_drops_an_imaginary_part(
    harness: Harness,
):
    """``ops.jvp``/``ops.vjp`` cast a tangent (cotangent) to the dtype of its input (output),
    as torch casts the gradients it is given: the same derivatives as of the cast array, in
    the op's dtype. A complex one of a real array is a ValueError: the cast would keep only
    its real part, the derivative along another direction than the one asked."""
    for dtype in ("float32", "float64", "complex128"):
        if harness.unsupported().get(dtype):
            pytest.skip(harness.unsupported()[dtype])
    rng = np.random.default_rng(8)
    a_np = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    t_np = rng.standard_normal((3, 3))
    ops, put, get = harness.ops, harness.put, harness.get
    a, a_complex = put(a_np), put(a_np.astype(np.complex128))
    cases = (  # (primal, the tangent given, the same tangent in the primal's dtype)
        (a, put(t_np.astype(np.float32)), put(t_np.astype(np.float32).astype(np.float64))),
        (a_complex, put(t_np), put(t_np.astype(np.complex128))),
    )
    for primal, given, cast in cases:
        for got, expected in (
            (ops.jvp("inv", (primal,), (given,))[1], ops.jvp("inv", (primal,), (cast,))[1]),
            (ops.vjp("inv", (primal,), given)[1][0], ops.vjp("inv", (primal,), cast)[1][0]),
        ):
            assert str(get(got).dtype) == str(get(expected).dtype) == str(get(primal).dtype)
            np.testing.assert_array_equal(get(got), get(expected))
    # A real matrix with a complex right-hand side: the tangent of the real input, real,
    # gives solve's tangent as of the complex matrix it is promoted to.
    b_np = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    got = ops.jvp("solve", (a, put(b_np)), (put(t_np), None))[1]
    expected = ops.jvp("solve", (a_complex, put(b_np)), (put(t_np.astype(np.complex128)), None))[1]
    assert str(get(got).dtype) == "complex128"
    np.testing.assert_allclose(get(got), get(expected), rtol=1e-12)
    complex_t = put(t_np + 1j * t_np)
    real = r"invad\.inv: the tangent of `a` is complex .* but `a` is real"
    with pytest.raises(ValueError, match=real):
        ops.jvp("inv", (a,), (complex_t,))
    with pytest.raises(ValueError, match=r"invad\.inv: the cotangent of `inverse` is complex"):
        ops.vjp("inv", (a,), complex_t)
    with pytest.raises(ValueError, match=r"invad\.det: the cotangent of `det` is complex"):
        ops.vjp("det", (a,), 1 + 2j)
