"""The public API: install, dispatch, rules(), ops.jvp/vjp argument handling, the layout rule."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import invad
from invad.rules import RULES

RULES_DIR = Path(invad.__file__).parent / "rules"
FRAMEWORKS = {"numpy", "scipy", "torch", "jax", "jaxlib", "cupy", "cupyx"}


def test_install_defaults_to_numpy_and_is_cached():
    ops = invad.install()
    assert ops.name == "numpy" and ops.device == "cpu"
    assert invad.install("numpy") is ops
    assert invad.install(backend="numpy", device="cpu") is ops


def test_unknown_backend_lists_what_is_available():
    with pytest.raises(invad.BackendNotFoundError, match="no backend named 'nope'") as info:
        invad.install("nope")
    assert isinstance(info.value, LookupError)
    assert "available backends: " in str(info.value) and "numpy" in str(info.value)


def test_numpy_rejects_other_devices():
    with pytest.raises(ValueError, match="only the device 'cpu'"):
        invad.install("numpy", device="cuda:0")


def test_top_level_ops_dispatch_on_the_array_type():
    a = np.array([[2.0, 1.0], [1.0, 3.0]])
    b = np.array([1.0, 2.0])
    np.testing.assert_allclose(invad.solve(a, b), np.linalg.solve(a, b))
    np.testing.assert_allclose(invad.inv(a), np.linalg.inv(a))
    x, info = invad.solve_ex(a, b, left=False)
    np.testing.assert_allclose(x @ a, b)
    assert info.shape == () and info == 0


def test_rules_lists_every_contract():
    contracts = invad.rules()
    assert [c.name for c in contracts] == [
        "inv",
        "inv_ex",
        "solve",
        "solve_ex",
        "tensorinv",
        "tensorsolve",
        "lu_factor",
        "lu_factor_ex",
        "lu_solve",
        "solve_triangular",
        "det",
        "slogdet",
        "cholesky",
        "cholesky_ex",
        "cholesky_solve",
    ]
    solve = contracts[2]
    assert solve.inputs == ("a", "b") and [p.name for p in solve.params] == ["left", "assume_a"]
    assert "A^-H" in solve.adjoint and "Re tr(X^H Y)" in solve.convention
    assert contracts[3].outputs == ("x", "info") and contracts[3].differentiable_outputs == ("x",)


def test_ops_carry_the_rule_signature_and_docs():
    ops = invad.install()
    assert str(inspect.signature(ops.solve)) == "(a, b, *, left=True, assume_a='gen')"
    assert str(inspect.signature(ops.tensorsolve)) == "(a, b, *, axes=None)"
    assert "dX = A^-1 (dB - dA X)" in ops.solve.__doc__
    a = np.eye(2) * 2
    np.testing.assert_allclose(ops.solve(a=a, b=np.ones(2)), np.full(2, 0.5))


@pytest.mark.parametrize("path", sorted(RULES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_rules_import_no_framework(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FRAMEWORKS


def test_jvp_and_vjp_reject_bad_arguments():
    ops = invad.install()
    a, b = np.eye(3) * 2, np.ones((3, 2))
    with pytest.raises(ValueError, match="unknown op 'eig'"):
        ops.jvp("eig", (a,), (a,))
    with pytest.raises(TypeError, match="expected 2 primals"):
        ops.vjp("solve", (a,), b)
    with pytest.raises(ValueError, match=r"tangent of `b` has shape \(3,\), expected \(3, 2\)"):
        ops.jvp("solve", (a, b), (None, np.ones(3)))
    with pytest.raises(ValueError, match=r"cotangent of `x` has shape \(2,\), expected \(3, 2\)"):
        ops.vjp("solve", (a, b), np.ones(2))


def test_zero_tangents_give_zero_output_tangent():
    ops = invad.install()
    a, b = np.eye(3) * 2, np.ones((3, 2))
    (x, _), (dx, dinfo) = ops.jvp("solve_ex", (a, b), (None, None))
    assert dinfo is None and np.array_equal(dx, np.zeros_like(x))


def test_real_primals_get_real_cotangents_even_from_complex_rhs():
    ops = invad.install()
    a = np.eye(3) * 2
    b = np.ones((3, 1)) * (1 + 1j)
    x, (abar, bbar) = ops.vjp("solve", (a, b), np.ones((3, 1), complex))
    assert abar.dtype == np.float64 and bbar.dtype == np.complex128
    np.testing.assert_allclose(x, b / 2)


def test_every_op_has_a_rule_and_an_attribute():
    ops = invad.install()
    for name in RULES:
        assert callable(getattr(ops, name)) and callable(getattr(invad, name))


def test_dispatch_prefers_a_framework_array_over_a_numpy_constant(monkeypatch):
    class Traced:  # stands for a framework's array type (a tracer, a box)
        pass

    class Adopted:  # a NumPy operand converted to the framework
        pass

    class FrameworkBackend:
        def adopt(self, x, like):
            assert type(x) is np.ndarray and type(like) is Traced
            return Adopted()

    class FrameworkOps:
        name = "framework"
        backend = FrameworkBackend()

        def solve(self, a, b):
            return "framework solve", type(a), type(b)

    monkeypatch.setitem(invad._ops_by_type, Traced, FrameworkOps())
    assert invad.solve(np.eye(2), Traced()) == ("framework solve", Adopted, Traced)
    assert invad.solve(b=Traced(), a=np.eye(2)) == ("framework solve", Adopted, Traced)
