"""The torch backend under ``torch.compile(fullgraph=True)``: every op, forward and backward.

Compiling is slow (tens of seconds per graph on two cores), so the ops share
graphs: one function computes every op on small inputs and is compiled once
with gradients and once without; each test reuses them. Values and gradients
are compared with the eager ops; a singular input makes the compiled graph
raise ``torch.linalg.LinAlgError`` when it runs, as ``torch.linalg`` does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import invad  # noqa: E402

pytestmark = pytest.mark.skipif(
    "torch" not in os.environ.get("INVAD_TEST_BACKENDS", "torch").split(","),
    reason="torch backend not under test",
)

DTYPE = torch.float64
SINGULAR = r"invad\.(inv|solve|tensorinv|tensorsolve|lu_solve|solve_triangular): "  # the first


@pytest.fixture(scope="module")
def ops() -> Any:
    return invad.install("torch")


def _inputs(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, dtype=DTYPE, generator=g)

    eye = torch.eye(3, dtype=DTYPE)
    return {
        "a": randn(2, 3, 3) + 3 * eye,  # a batch of two 3x3 matrices
        "b": randn(2, 3, 2),  # left right-hand sides
        "c": randn(2, 2, 3),  # right-solve right-hand sides (x a = c)
        "v": randn(3),  # a vector right-hand side
        "t": randn(2, 3, 2, 3) + 3 * torch.eye(6, dtype=DTYPE).reshape(2, 3, 2, 3),
        "tb": randn(2, 3),  # tensorsolve: t x = tb, x of shape (2, 3)
    }


def every_op(ops: Any, a: Any, b: Any, c: Any, v: Any, t: Any, tb: Any) -> tuple[Any, ...]:
    """Every op and variant once; the ``_ex`` ops' ``info`` (and pivots) too."""
    inv_ex, inv_info = ops.inv_ex(a)
    solve_ex, solve_info = ops.solve_ex(a, c, left=False)
    # (a batched `a` with a vector `b` and left=False: a rule fix under way elsewhere)
    solve_ex_v, solve_info_v = ops.solve_ex(a[0], v, left=False)
    lu, pivots = ops.lu_factor(a)
    tall, tall_pivots, tall_info = ops.lu_factor_ex(a[..., :2])  # (2, 3, 2)
    sign, logabsdet = ops.slogdet(a)
    spd = a @ a.mT + torch.eye(3, dtype=a.dtype)  # positive definite
    chol, chol_info = ops.cholesky_ex(spd)
    return (
        ops.inv(a),
        inv_ex,
        ops.solve(a, b),
        ops.solve(a, c, left=False),
        ops.solve(a, v),
        solve_ex,
        solve_ex_v,
        ops.tensorinv(t, ind=2),
        ops.tensorsolve(t, tb),
        lu,
        tall,
        ops.lu_solve(lu, pivots, b),
        ops.lu_solve(lu, pivots, c, left=False, adjoint=True),
        ops.solve_triangular(a, b, upper=True),
        ops.solve_triangular(a, c, upper=False, left=False, unitriangular=True),
        ops.det(a),
        sign,
        logabsdet,
        ops.cholesky(spd, upper=True),
        chol,
        ops.cholesky_solve(chol, b),
        ops.solve(spd, c, left=False, assume_a="pos"),
        inv_info,
        solve_info,
        solve_info_v,
        pivots,
        tall_pivots,
        tall_info,
        chol_info,
    )


N_VALUES = 22  # the differentiable outputs of every_op, before the infos and pivots


@pytest.fixture(scope="module")
def compiled(ops: Any) -> Any:
    """every_op compiled with fullgraph=True; Dynamo's caches cleared before and after."""
    torch._dynamo.reset()
    yield torch.compile(lambda *args: every_op(ops, *args), fullgraph=True)
    torch._dynamo.reset()


def _weights(outputs: tuple[Any, ...]) -> list[Any]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(y.shape, dtype=y.dtype, generator=g) for y in outputs[:N_VALUES]]


def _values_and_grads(f: Any, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    args = [x.clone().requires_grad_() for x in inputs.values()]
    outputs = f(*args)
    loss = sum((y * w).sum() for y, w in zip(outputs, _weights(outputs)))
    grads = torch.autograd.grad(loss, args)
    return tuple(y.detach() for y in outputs), grads


def test_compiled_values_and_gradients_match_eager(ops: Any, compiled: Any) -> None:
    inputs = _inputs()
    values, grads = _values_and_grads(compiled, inputs)
    expected_values, expected_grads = _values_and_grads(lambda *a: every_op(ops, *a), inputs)
    assert len(values) == len(expected_values)
    for got, want in zip(values, expected_values):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want)
    for name, got, want in zip(inputs, grads, expected_grads):
        torch.testing.assert_close(got, want, msg=f"gradient of {name}")


def test_compiled_without_grad(ops: Any, compiled: Any) -> None:
    inputs = _inputs(2)
    with torch.no_grad():
        got = compiled(*inputs.values())
    want = every_op(ops, *inputs.values())
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("which", ["a", "t"])
def test_compiled_singular_raises(compiled: Any, which: str) -> None:
    inputs = _inputs(3)
    singular = inputs[which].clone()
    singular[1] = 0  # batch element 1 of `a`; the second row block of the tensor
    inputs[which] = singular
    with pytest.raises(torch.linalg.LinAlgError, match=SINGULAR):
        _values_and_grads(compiled, inputs)
    with pytest.raises(torch.linalg.LinAlgError), torch.no_grad():
        compiled(*inputs.values())


def test_compiled_solve_alone_raises_on_singular_input(ops: Any) -> None:
    """The check of each op is in the graph: a solve (right, here) raises by itself."""
    torch._dynamo.reset()
    f = torch.compile(lambda a, c: ops.solve(a, c, left=False), fullgraph=True)
    inputs = _inputs(4)
    a, c = inputs["a"], inputs["c"]
    torch.testing.assert_close(f(a, c), ops.solve(a, c, left=False))
    a = a.clone()
    a[1, :, 2] = 0
    with pytest.raises(torch.linalg.LinAlgError, match=r"invad\.solve: \(Batch element 1\)"):
        f(a, c)
    torch._dynamo.reset()


def test_compiled_ex_ops_report_info(ops: Any) -> None:
    """The ``_ex`` ops and lu_factor, det, slogdet never raise in a graph either: ``info``
    says where; det is 0 and slogdet (0, -inf) there."""
    torch._dynamo.reset()
    f = torch.compile(
        lambda a, b: (
            ops.inv_ex(a)[1],
            ops.solve_ex(a, b)[1],
            ops.lu_factor_ex(a)[2],
            ops.lu_factor(a)[0],
            ops.det(a),
            *ops.slogdet(a),
        ),
        fullgraph=True,
    )
    a = _inputs()["a"]
    a[1] = 0  # singular: info 1
    inv_info, solve_info, lu_info, lu, det, sign, logabsdet = f(a, torch.ones(2, 3, 1, dtype=DTYPE))
    assert inv_info[0] == 0 and inv_info[1] > 0 and solve_info[1] > 0 and lu_info.tolist() == [0, 1]
    torch.testing.assert_close(lu, torch.linalg.lu_factor_ex(a)[0])
    assert det[1] == 0 and sign[1] == 0 and logabsdet[1] == -math.inf and det[0] != 0
    torch._dynamo.reset()


def test_compiled_cholesky_raises_where_not_positive_definite(ops: Any) -> None:
    """cholesky and solve(assume_a="pos") raise in a graph as eagerly, naming the batch index
    and the order of the leading minor; cholesky_ex reports that order as info."""
    torch._dynamo.reset()
    f = torch.compile(lambda a, b: ops.solve(a, b, assume_a="pos"), fullgraph=True)
    g = torch.compile(lambda a: ops.cholesky_ex(a)[1], fullgraph=True)
    inputs = _inputs(5)
    a = inputs["a"] @ inputs["a"].mT + torch.eye(3, dtype=DTYPE)
    b = inputs["b"]
    torch.testing.assert_close(f(a, b), torch.linalg.solve(a, b))
    a = a.clone()
    a[1, 1, 1] = -1.0  # the leading minor of order 2 of batch element 1 is not positive
    not_positive_definite = (
        r"\(Batch element 1\): .* not positive-definite \(the leading minor of order 2"
    )
    with pytest.raises(
        torch.linalg.LinAlgError,
        match=r"cholesky \(left=True, assume_a='pos'\): " + not_positive_definite,
    ):
        f(a, b)
    h = torch.compile(ops.cholesky, fullgraph=True)
    with pytest.raises(
        torch.linalg.LinAlgError, match=r"cholesky \(upper=False\): " + not_positive_definite
    ):
        h(a)
    assert g(a).tolist() == [0, 2]
    torch._dynamo.reset()
